//! The door task: the only owner of the shared [`Door`] (the controller, its flash and its
//! exchanges with the backend, the same code the virtual doors and the fleet simulation run).
//! It hands every input to the door with the monotonic `now`, carries out every request by
//! passing it to the task that owns that piece of hardware, and sleeps until
//! [`Door::poll_timeout`]. It decides nothing itself.
//!
//! Open first: the door asks for the unlock before any flash write a decision causes
//! ([`Request::Store`] comes after it). This task signals the lock, yields so that the lock task
//! drives the relay, and only then stores. No door step that may erase or write the flash
//! starts while a reader frame is arriving, and a step long enough to have hidden the reader's
//! pulses is reported to the reader, which drops the frame it overlapped.

use chronolock_core::Event;
use chronolock_device::door::{Door, Exchange, Failure, Notice, Request};
use embassy_futures::select::{select, Either};
use embassy_time::{Duration, Timer};
use esp_storage::FlashStorage;
use log::{info, warn};

use crate::board::Battery;
use crate::bus::{
    self, Alert, Input, RtcRequest, ALERT, BODY, FEEDBACK, INPUTS, LOCK, NET, NTP, RTC, WATCH,
};
use crate::{reader, watchdog};

/// A door step longer than this may have hidden a reader pulse (they come ~2 ms apart; one
/// edge per line is latched even with interrupts off).
const STALL_US: u64 = 1_500;
/// Longest wait for a reader frame to end before touching the flash anyway.
const QUIET_WAIT: Duration = Duration::from_millis(200);

/// The door as this firmware runs it: the active list is searched in flash where it lies, so
/// its size is bounded by the list slots of the partition table, not by RAM.
pub type FirmwareDoor = Door<FlashStorage<'static>>;

/// Runs the door for ever.
pub async fn run(door: &'static mut FirmwareDoor, mut battery: Battery) -> ! {
    // What the LEDs and buzzer show between patterns, as last asked and as last signalled.
    let mut alert = Alert::default();
    let mut shown = Alert::default();
    loop {
        watchdog::door_beat();
        carry_out(door, &mut battery, &mut alert).await;
        // The lockdown is the controller's state (no request says it changed): read after
        // every step, signalled only when something changed.
        alert.lockdown = door.controller().lockdown();
        if alert != shown {
            ALERT.signal(alert);
            shown = alert;
        }
        // Awake at least every few seconds, to show the watchdog this task lives.
        let beat = embassy_time::Instant::now()
            + Duration::from_millis(crate::liveness::DOOR_BEAT_EVERY_MS);
        let due = door
            .poll_timeout()
            .map(|due| embassy_time::Instant::from_micros(due.as_micros()));
        let wake = due.map_or(beat, |d| d.min(beat));
        let input = match select(INPUTS.receive(), Timer::at(wake)).await {
            Either::First(input) => Some(input),
            Either::Second(()) if due.is_some_and(|d| d <= wake) => None,
            Either::Second(()) => continue,
        };
        // Cards and keys come from the reader after their frame ended; anything else may touch
        // the flash, so it waits for the reader's line to be quiet.
        if !matches!(input, Some(Input::Card(_) | Input::Key(_))) {
            reader_quiet().await;
        }
        let now = bus::now();
        watched(|| match input {
            Some(input) => handle(door, input, now),
            None => door.handle_timeout(now),
        });
    }
}

/// Waits until no reader frame is arriving (at most [`QUIET_WAIT`]).
async fn reader_quiet() {
    let deadline = embassy_time::Instant::now() + QUIET_WAIT;
    while reader::frame_arriving() && embassy_time::Instant::now() < deadline {
        Timer::after(Duration::from_millis(2)).await;
    }
}

/// Runs a door step; if it took long enough to have hidden reader pulses (a flash erase or
/// write runs with interrupts off), tells the reader.
fn watched<T>(step: impl FnOnce() -> T) -> T {
    let from = embassy_time::Instant::now().as_micros();
    let r = step();
    let until = embassy_time::Instant::now().as_micros();
    if until.saturating_sub(from) > STALL_US {
        reader::report_stall(from, until);
    }
    r
}

fn handle(door: &mut FirmwareDoor, input: Input, now: chronolock_core::Instant) {
    match input {
        Input::Card(card) => door.handle_card(&card.uid, now),
        Input::Key(key) => door.handle_keys(&[key], now),
        Input::Rtc(reading, at) => door.handle_rtc_read(reading, at),
        Input::Network(up) => {
            info!("network {}", if up { "up" } else { "down" });
            door.handle_network(up, now);
        }
        Input::Ntp {
            server,
            packet,
            len,
            at,
        } => door.handle_ntp_response(server, &packet[..len.min(packet.len())], at),
        Input::Answer(exchange, bytes) => door.handle_answer(exchange, &bytes, now),
        Input::AnswerEnd(exchange) => door.handle_answer_end(exchange, now),
        Input::Failed(exchange, failure) => door.handle_exchange_failed(exchange, failure, now),
        Input::Setup(form, at) => door.handle_setup(&form, at),
        Input::DoorContact(open) => {
            info!("door {}", if open { "open" } else { "closed" });
            door.handle_door(open, now);
        }
        Input::Rex => {
            info!("exit button pressed");
            door.handle_rex(now);
        }
        Input::SecureCard(uid) => door.handle_secure_card(&uid, now),
        Input::NfcCard(uid) => door.handle_card(&uid, now),
        Input::CardResponse(r) => door.handle_card_response(&r, now),
        Input::CardLost => door.handle_card_lost(now),
    }
}

/// Carries out every queued request.
async fn carry_out(door: &mut FirmwareDoor, battery: &mut Battery, alert: &mut Alert) {
    while let Some(request) = door.poll_request() {
        let now = bus::now();
        match request {
            Request::ReadRtc { at_tick } => {
                if RTC.try_send(RtcRequest::Read { at_tick }).is_err() {
                    warn!("RTC busy: read dropped");
                }
            }
            Request::WriteRtc { utc } => {
                if RTC.try_send(RtcRequest::Write { utc, at: now }).is_err() {
                    warn!("RTC busy: write dropped");
                }
            }
            Request::SendNtp { server, packet } => {
                // The site's servers once it named them (they may change at any sync).
                let Some(host) = door.ntp_servers().get(usize::from(server)).cloned() else {
                    continue;
                };
                if NTP.try_send((server, host, packet)).is_err() {
                    warn!("NTP queue full: request {server} dropped");
                }
            }
            Request::Post(exchange) => {
                reader_quiet().await;
                watched(|| post(door, exchange, now));
            }
            Request::ReadBattery => {
                let mv = battery.read_mv();
                reader_quiet().await;
                watched(|| door.handle_battery(mv, now));
            }
            Request::Unlock { ms } => {
                LOCK.signal(ms);
                // The lock task drives the relay before this task goes on to the flash.
                embassy_futures::yield_now().await;
            }
            Request::Store => {
                reader_quiet().await;
                watched(|| door.store_pending());
            }
            Request::Feedback(pattern) => FEEDBACK.signal(pattern),
            Request::Alarm { sounding } => {
                if sounding != alert.alarm {
                    if sounding {
                        warn!("alarm sounding");
                    } else {
                        info!("alarm silenced");
                    }
                }
                alert.alarm = sounding;
            }
            Request::BootFirmware { slot } => {
                // What the door kept (the trial, events) is in flash already.
                door.store_pending();
                crate::ota::boot_slot(door.store().flash(), slot);
            }
            Request::Notice(n) => log_notice(&n),
            // To the PN532 task, which answers with the card's response (or the card's loss).
            Request::CardApdu(apdu) => {
                let sent = heapless::Vec::from_slice(&apdu)
                    .ok()
                    .is_some_and(|a| crate::nfc::APDU.try_send(a).is_ok());
                if !sent {
                    door.handle_card_lost(now);
                }
            }
        }
    }
}

/// Hands an exchange's body to the task that carries it: the watch to the watch task (its own
/// connection, beside the others), the rest to the backend task. If that task's queue is full
/// (two exchanges, or a watch), the exchange fails at once (the door retries on its own
/// schedule).
fn post(door: &mut FirmwareDoor, exchange: Exchange, now: chronolock_core::Instant) {
    let busy = match exchange {
        Exchange::Watch { .. } => body::<{ bus::WATCH_BODY }>(door, exchange, now)
            .is_some_and(|b| WATCH.try_send((exchange, b)).is_err()),
        _ => {
            body::<BODY>(door, exchange, now).is_some_and(|b| NET.try_send((exchange, b)).is_err())
        }
    };
    if busy {
        warn!("backend busy: {} dropped", exchange.path());
        door.handle_exchange_failed(exchange, Failure::Unreachable, now);
    }
}

/// The body the door writes for `exchange`, or `None` if it no longer wants it.
fn body<const N: usize>(
    door: &mut FirmwareDoor,
    exchange: Exchange,
    now: chronolock_core::Instant,
) -> Option<heapless::Vec<u8, N>> {
    let mut body = heapless::Vec::new();
    let _ = body.resize(N, 0);
    let n = door.write_body(exchange, &mut body, now)?;
    body.truncate(n);
    Some(body)
}

fn log_notice(n: &Notice) {
    match n {
        Notice::Event {
            id,
            event:
                Event::Decision {
                    credential,
                    decision,
                },
        } => info!("event {id}: {credential} {}", decision.as_str()),
        Notice::Event { id, event } => info!("event {id}: {event:?}"),
        Notice::ListRejected(reason) => warn!("list refused: {reason}"),
        Notice::SyncFailed(e) => warn!("sync failed: {e}"),
        Notice::PairingFailed(e) => warn!("pairing failed: {e}"),
        Notice::Storage(e) => warn!("flash: {e}"),
        Notice::NtpServers { count } => info!("{count} NTP server(s) from the site"),
        Notice::FirmwareRefused(e) => warn!("firmware update refused: {e}"),
        Notice::LockdownRefused(e) => warn!("lockdown order refused: {e}"),
        other => info!("{other:?}"),
    }
}

/// The door lives in a static cell (it is large; the task keeps only a reference).
#[embassy_executor::task]
pub async fn door_task(door: &'static mut FirmwareDoor, battery: Battery) -> ! {
    run(door, battery).await
}
