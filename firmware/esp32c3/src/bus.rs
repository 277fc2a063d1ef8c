//! The channels between the tasks. Each is a `static` with one reader:
//!
//! - [`INPUTS`]: everything that happened, for the door task, which owns the
//!   [`Controller`](chronolock_core::Controller) and hands each input to it with `now`;
//! - [`NET`]: what the controller asked of the network (NTP packets, backend syncs and checks);
//! - [`NTP`]: NTP packets, for the NTP task (one UDP socket);
//! - [`RTC`]: reads and writes for the DS3231 task;
//! - [`LOCK`] and [`FEEDBACK`]: the relay and the LEDs/buzzer, each with its own task.
//!
//! No task makes a decision: the door task passes inputs in and carries actions out; the others
//! only do I/O.

use chronolock_core::controller::{Credential, Feedback, NONCE_LEN};
use chronolock_core::ntp::PACKET_LEN;
use chronolock_core::protocol::{DeviceStatus, Enrolled, SyncResponse};
use chronolock_core::{BackendTime, Instant, RtcReading, UnixTime};
use chronolock_device::slots::Download;
use chronolock_device::wiegand::Card;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;

/// The monotonic clock the controller sees: microseconds since boot.
pub fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

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
    /// A sync answer's authenticated times (already checked by the protocol layer).
    BackendTime(BackendTime, Instant),
    /// A sync exchange failed.
    BackendFailed,
    /// The backend's answer about a CONDITIONAL credential (`None`: no answer).
    Conditional {
        /// The controller's request id.
        request: u32,
        /// Granted or not.
        granted: Option<bool>,
    },
    /// A new list lies in the spare slot, announced by this sync answer.
    ListStaged(Download, SyncResponse),
    /// Pairing succeeded: the site key verifies lists from now on, the device key opens their
    /// keypad secrets.
    Enrolled(Enrolled),
    /// The phone sent its time (setup mode), received at `at`.
    PhoneTime(UnixTime, Instant),
    /// The door contact opened (`true`) or closed.
    DoorContact(bool),
}

/// Inputs for the door task.
pub static INPUTS: Channel<CriticalSectionRawMutex, Input, 16> = Channel::new();

/// What the controller asks of the backend.
pub enum NetRequest {
    /// A sync exchange with this nonce and status.
    Sync {
        /// The controller's nonce.
        nonce: [u8; NONCE_LEN],
        /// The door's status now.
        status: DeviceStatus,
    },
    /// A CONDITIONAL check.
    Check {
        /// The controller's request id.
        request: u32,
        /// Who.
        credential: Credential,
        /// Device UTC now, if valid.
        wall_us: Option<i64>,
    },
}

/// Requests for the backend task.
pub static NET: Channel<CriticalSectionRawMutex, NetRequest, 4> = Channel::new();

/// An NTP request for the NTP task: server index and packet.
pub static NTP: Channel<CriticalSectionRawMutex, (u8, [u8; PACKET_LEN]), 4> = Channel::new();

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

/// Sends an input; when the door task is far behind (16 inputs queued) the input waits.
pub async fn input(i: Input) {
    INPUTS.send(i).await;
}
