//! The channels between the tasks. Each is a `static` with one reader:
//!
//! - [`INPUTS`]: everything that happened, for the door task, which owns the shared
//!   [`Door`](chronolock_device::door::Door) and hands each input to it with `now`;
//! - [`NET`]: the exchanges the door asked of the backend, with their bodies, one at a time;
//! - [`WATCH`]: the watch (long poll), which runs beside them on a connection of its own;
//! - [`NTP`]: NTP packets, for the NTP task (one UDP socket);
//! - [`RTC`]: reads and writes for the DS3231 task;
//! - [`LOCK`], [`FEEDBACK`] and [`ALERT`]: the relay, and the LEDs/buzzer's patterns and
//!   standing state (alarm, lockdown), each with its own task.
//!
//! No task makes a decision: the door task passes inputs in and carries requests out; the others
//! only move bytes and pins.

use core::future::Future;

use chronolock_core::config::HostName;
use chronolock_core::controller::Feedback;
use chronolock_core::ntp::PACKET_LEN;
use chronolock_core::protocol::WATCH_REQUEST_LEN;
use chronolock_core::{Instant, RtcReading, UnixTime};
use chronolock_device::door::{Exchange, Failure};
use chronolock_device::setup::SetupForm;
use chronolock_device::wiegand::Card;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;

/// The monotonic clock the door sees: microseconds since boot.
pub fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

/// Bytes of an answer passed to the door task at a time.
pub const ANSWER_CHUNK: usize = 256;

/// Largest request body the backend task sends (a sync carries as many events as fit).
pub const BODY: usize = 2048;

/// The watch's request body (it has one length).
pub const WATCH_BODY: usize = WATCH_REQUEST_LEN;

/// Something that happened, for the door task.
pub enum Input {
    /// A card at the reader.
    Card(Card),
    /// A key on the reader's keypad.
    Key(u8),
    /// The RTC's answer to a read.
    Rtc(RtcReading, Instant),
    /// Wi-Fi and an IP address came or went.
    Network(bool),
    /// An NTP answer from server `server`, received at `at`.
    Ntp {
        /// Index into the configured servers.
        server: u8,
        /// The packet.
        packet: [u8; PACKET_LEN],
        /// Its length.
        len: usize,
        /// When it arrived.
        at: Instant,
    },
    /// The next bytes of the answer to an exchange.
    Answer(Exchange, heapless::Vec<u8, ANSWER_CHUNK>),
    /// The answer to an exchange is complete.
    AnswerEnd(Exchange),
    /// An exchange failed.
    Failed(Exchange, Failure),
    /// The setup page was submitted (setup mode), received at `at`.
    Setup(SetupForm, Instant),
    /// The door contact reads open (`true`) or closed: once at start, then at every
    /// (debounced) change.
    DoorContact(bool),
    /// The request-to-exit button was pressed (debounced; once per press).
    Rex,
    /// The PN532 found a card that speaks APDUs (ISO-DEP), with this UID: a secure card's
    /// check may start.
    SecureCard(heapless::Vec<u8, 10>),
    /// The PN532 found a card that does not (its UID is all it has).
    NfcCard(heapless::Vec<u8, 10>),
    /// The card's answer to the door's last APDU.
    CardResponse(heapless::Vec<u8, { crate::nfc::RESPONSE_MAX }>),
    /// The card did not answer (it left the field, or there is no PN532).
    CardLost,
}

/// Inputs for the door task.
pub static INPUTS: Channel<CriticalSectionRawMutex, Input, 8> = Channel::new();

/// Exchanges for the backend task: what to POST, and where the answer goes.
pub static NET: Channel<CriticalSectionRawMutex, (Exchange, heapless::Vec<u8, BODY>), 2> =
    Channel::new();

/// The watch for the watch task: what to POST, and where the answer goes. One at a time (the
/// door keeps at most one watch), beside whatever [`NET`] carries.
pub static WATCH: Channel<CriticalSectionRawMutex, (Exchange, heapless::Vec<u8, WATCH_BODY>), 1> =
    Channel::new();

/// An NTP request for the NTP task: server index and packet.
pub static NTP: Channel<CriticalSectionRawMutex, (u8, HostName, [u8; PACKET_LEN]), 4> =
    Channel::new();

/// What the RTC task is asked.
#[derive(Clone, Copy)]
pub enum RtcRequest {
    /// Read, at the next tick of the seconds register if `at_tick`.
    Read {
        /// Wait for the tick.
        at_tick: bool,
    },
    /// Write `utc`, which was the time at `at`, and clear the oscillator-stop flag.
    Write {
        /// The time.
        utc: UnixTime,
        /// When it was that time.
        at: Instant,
    },
}

/// Requests for the RTC task.
pub static RTC: Channel<CriticalSectionRawMutex, RtcRequest, 4> = Channel::new();

/// Open the lock for this many milliseconds.
pub static LOCK: Signal<CriticalSectionRawMutex, u32> = Signal::new();

/// Show this on the LEDs and buzzer.
pub static FEEDBACK: Signal<CriticalSectionRawMutex, Feedback> = Signal::new();

/// What the LEDs and buzzer show between (and under) feedback patterns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alert {
    /// The door's alarm sounds (forced or held open): buzzer pulsing, red LED on.
    pub alarm: bool,
    /// The site's lockdown holds: a slow red blink while nothing else shows.
    pub lockdown: bool,
}

/// The standing state for the feedback task; the door task signals it when it changes (the
/// latest wins: it is a state, not a queue of events).
pub static ALERT: Signal<CriticalSectionRawMutex, Alert> = Signal::new();

/// Sends an input; when the door task is far behind (8 inputs queued) the input waits. The
/// channel's own future, not an `async fn` around it: that would keep a second copy of the
/// input (a few hundred bytes) in the static state of every task that sends one.
pub fn input(i: Input) -> impl Future<Output = ()> {
    INPUTS.send(i)
}
