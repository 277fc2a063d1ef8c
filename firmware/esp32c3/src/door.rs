//! The door task: the only owner of the [`Controller`]. It hands every input to the controller
//! with the monotonic `now`, carries out every action it returns, and sleeps until
//! [`Controller::poll_timeout`]. It decides nothing itself: grants, clock trust, report days and
//! retry times all come from the core.

use chronolock_core::allowlist::AllowList;
use chronolock_core::protocol::{self, DeviceStatus, EventBody, WireEvent};
use chronolock_core::{Action, Controller, Event, Instant};
use chronolock_device::slots::Download;
use embassy_futures::select::{select, Either};
use embassy_time::Timer;
use log::{info, warn};

use crate::board::Battery;
use crate::bus::{self, Input, NetRequest, RtcRequest, FEEDBACK, INPUTS, LOCK, NET, NTP, RTC};
use crate::store::{SharedStore, EVENT_MAX};

/// Largest allow-list the door holds in RAM (bytes): about 2500 cards at 16 bytes each.
pub const LIST_RAM: usize = 40 * 1024;

/// Everything the door task owns.
pub struct Door {
    ctl: Controller,
    store: &'static SharedStore,
    /// The active list's bytes (checked when installed), the first `list_len` of them.
    list: &'static mut [u8; LIST_RAM],
    list_len: Option<usize>,
    battery: Battery,
    last_battery_mv: u16,
    /// Event ids: this boot's number in the high half, a counter in the low half.
    boot: u32,
    next_event: u32,
}

impl Door {
    /// A door around a booted controller, with the list already in `list[..list_len]`.
    pub fn new(
        ctl: Controller,
        store: &'static SharedStore,
        list: &'static mut [u8; LIST_RAM],
        list_len: Option<usize>,
        battery: Battery,
        boot: u32,
    ) -> Self {
        Door {
            ctl,
            store,
            list,
            list_len,
            battery,
            last_battery_mv: 0,
            boot,
            next_event: 0,
        }
    }

    /// Runs the door for ever.
    pub async fn run(mut self) -> ! {
        loop {
            self.carry_out_actions().await;
            let input = match self.ctl.poll_timeout() {
                Some(due) => {
                    let at = embassy_time::Instant::from_micros(due.as_micros());
                    match select(INPUTS.receive(), Timer::at(at)).await {
                        Either::First(input) => Some(input),
                        Either::Second(()) => None,
                    }
                }
                None => Some(INPUTS.receive().await),
            };
            let now = bus::now();
            match input {
                Some(input) => self.handle(input, now).await,
                None => self.ctl.handle_timeout(now),
            }
        }
    }

    async fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Card(card) => {
                let list = self
                    .list_len
                    .and_then(|n| AllowList::open(&self.list[..n]).ok());
                self.ctl.handle_card(&card.uid, list.as_ref(), now);
            }
            Input::Key(key) => {
                let list = self
                    .list_len
                    .and_then(|n| AllowList::open(&self.list[..n]).ok());
                self.ctl.handle_key(key, list.as_ref(), now);
            }
            Input::Rtc(reading, at) => self.ctl.handle_rtc_read(reading, at),
            Input::Network(up) => {
                info!("network {}", if up { "up" } else { "down" });
                self.ctl.handle_network(up, now);
            }
            Input::Ntp {
                server,
                packet,
                len,
                at,
            } => self
                .ctl
                .handle_ntp_response(server, &packet[..len.min(packet.len())], at),
            Input::BackendTime(time, at) => self.ctl.handle_backend_time(&time, at),
            Input::BackendFailed => self.ctl.handle_backend_failed(now),
            Input::Conditional { request, granted } => match granted {
                Some(granted) => self.ctl.handle_conditional_answer(request, granted, now),
                None => self.ctl.handle_conditional_failed(request, now),
            },
            Input::ListStaged(download, answer) => self.install(download, answer, now).await,
            Input::Enrolled(identity) => {
                self.ctl.set_site_key(identity.site_key);
                self.ctl
                    .set_list_key(Some(protocol::list_key(&identity.device_key)));
            }
            Input::PhoneTime(utc, at) => self.ctl.handle_phone_time(utc, at),
            Input::DoorContact(open) => {
                // The core has no use for it yet; the log shows it for installers.
                info!("door {}", if open { "opened" } else { "closed" });
            }
        }
    }

    /// Checks a staged list against the sync answer and the core, then switches slots. The
    /// RAM copy of the active list is reused to check it; on refusal the active list is read
    /// back, so cards keep working either way.
    async fn install(&mut self, mut d: Download, answer: protocol::SyncResponse, now: Instant) {
        let store = self.store;
        let mut store = store.lock().await;
        let accepted = match store.staged_list(&mut d) {
            Ok(staged) => match store.read_list(&staged, &mut self.list[..]) {
                Ok(bytes) if answer.list_matches(bytes) => match self.ctl.check_allowlist(bytes) {
                    Ok(list) => Some((list.info(), staged.len as usize)),
                    Err(e) => {
                        warn!("list refused: {}", e.as_str());
                        None
                    }
                },
                Ok(_) => {
                    warn!("list refused: not the one the answer announced");
                    None
                }
                Err(e) => {
                    warn!("list unreadable: {e:?}");
                    None
                }
            },
            Err(e) => {
                warn!("staged list: {e:?}");
                None
            }
        };
        // A refused list stays in the spare slot until the next download erases it.
        if let Some((info, len)) = accepted {
            match store.commit_list(d) {
                Ok(slot) => {
                    info!(
                        "list generation {} installed in slot {} ({} cards, {} keypad users)",
                        info.generation, slot.index, info.cards, info.keypad_users
                    );
                    self.list_len = Some(len);
                    self.ctl.allowlist_installed(info, now);
                    return;
                }
                Err(e) => warn!("list commit failed: {e:?}"),
            }
        }
        // Back to the list that is still active.
        self.list_len = match store.active_list() {
            Ok(Some(active)) => store
                .read_list(&active, &mut self.list[..])
                .ok()
                .map(|b| b.len()),
            _ => None,
        };
    }

    /// Carries out every queued action.
    async fn carry_out_actions(&mut self) {
        while let Some(action) = self.ctl.poll_action() {
            let now = bus::now();
            match action {
                Action::ReadRtc { at_tick } => {
                    if RTC.try_send(RtcRequest::Read { at_tick }).is_err() {
                        warn!("RTC busy: read dropped");
                    }
                }
                Action::WriteRtc { utc } => {
                    if RTC.try_send(RtcRequest::Write { utc, at: now }).is_err() {
                        warn!("RTC busy: write dropped");
                    }
                }
                Action::SendNtp { server, packet } => {
                    if NTP.try_send((server, packet)).is_err() {
                        warn!("NTP queue full: request {server} dropped");
                    }
                }
                Action::SyncBackend { nonce } => {
                    let status = self.status(now);
                    if NET.try_send(NetRequest::Sync { nonce, status }).is_err() {
                        self.ctl.handle_backend_failed(now);
                    }
                }
                Action::AskBackend {
                    request,
                    credential,
                } => {
                    let wall_us = self.ctl.wall_time(now).map(|w| w.utc.as_micros());
                    let ask = NetRequest::Check {
                        request,
                        credential,
                        wall_us,
                    };
                    if NET.try_send(ask).is_err() {
                        self.ctl.handle_conditional_failed(request, now);
                    }
                }
                Action::Persist(p) => {
                    if let Err(e) = self.store.lock().await.set_persisted(&p).await {
                        warn!("persist failed: {e:?}");
                    }
                }
                Action::PersistKeypadUse(used) => {
                    if let Err(e) = self.store.lock().await.set_keypad_use(&used).await {
                        warn!("keypad use not stored: {e:?}");
                    }
                }
                Action::Unlock { ms } => LOCK.signal(ms),
                Action::Feedback(pattern) => FEEDBACK.signal(pattern),
                Action::ReadBattery => {
                    let mv = self.battery.read_mv();
                    self.last_battery_mv = mv;
                    self.ctl.handle_battery(mv, now);
                }
                Action::Event(event) => self.record(event, now).await,
            }
        }
    }

    /// Logs an event and queues it for the backend (in flash, until acknowledged).
    async fn record(&mut self, event: Event, now: Instant) {
        let body = EventBody::from_event(&event);
        info!("event {}: {:?}", body.kind_name(), event);
        let wire = WireEvent {
            id: (u64::from(self.boot) << 32) | u64::from(self.next_event),
            device_us: self.ctl.wall_time(now).map(|w| w.utc.as_micros()),
            body,
        };
        self.next_event = self.next_event.wrapping_add(1);
        let mut buf = [0u8; EVENT_MAX];
        match wire.write(&mut buf) {
            Ok(n) => {
                if let Err(e) = self.store.lock().await.push_event(&buf[..n]).await {
                    warn!("event not queued: {e:?}");
                }
            }
            Err(e) => warn!("event not encoded: {e}"),
        }
    }

    fn status(&self, now: Instant) -> DeviceStatus {
        let wall = self.ctl.wall_time(now);
        DeviceStatus {
            wall_us: wall.map(|w| w.utc.as_micros()),
            uptime_us: now.as_micros(),
            generation: self.ctl.persisted().list_generation,
            source: self.ctl.clock_source(),
            error_us: wall.map_or(0, |w| w.error_bound_ms.saturating_mul(1000)),
            battery_mv: self.last_battery_mv,
        }
    }
}

#[embassy_executor::task]
pub async fn door_task(door: Door) -> ! {
    door.run().await
}
