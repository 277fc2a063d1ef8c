//! chronolock-core: the door controller's decisions, sans IO.
//!
//! Everything here is pure: the shell (firmware, simulator) passes the monotonic time and what
//! happened in through `handle_*` calls, and takes actions out with `poll_action()` and
//! `poll_timeout()`. Nothing in this crate reads a clock, a socket, flash or an RNG, and nothing
//! on the clock or decision paths allocates.
//!
//! - [`time`]: monotonic [`Instant`] and wall [`UnixTime`], the UTC calendar.
//! - [`ntp`]: SNTP request and answer validation (RFC 4330, RFC 5905).
//! - [`clock`]: the wall clock, its error bound, and the trust rules between sources.
//! - [`rtc`]: DS3231 semantics (oscillator-stop flag, 2000–2099).
//! - [`persist`]: the state kept across power cycles.
//! - [`controller`]: the state machine that composes them.
//! - [`protocol`]: the device protocol's messages (pairing, sync, CONDITIONAL checks).
//! - [`firmware`]: signed firmware images and the trial-boot rule.
//! - [`card`]: secure cards (NTAG 424 DNA, DESFire EV2/EV3): AES authentication as an APDU
//!   exchange, key diversification, SUN messages.
#![cfg_attr(not(test), no_std)]

pub mod access;
pub mod allowlist;
pub mod card;
pub mod clock;
pub mod config;
pub mod controller;
pub mod firmware;
pub mod keypad;
pub mod lockdown;
pub mod ntp;
pub mod otp;
pub mod persist;
pub mod protocol;
pub mod report;
pub mod rtc;
#[cfg(test)]
pub mod testing;
pub mod time;

pub use clock::{Clock, Sample, Source};
pub use config::Config;
pub use controller::{Action, BackendTime, Controller, Event, TimeRejection};
pub use persist::Persisted;
pub use rtc::RtcReading;
pub use time::{Instant, UnixTime, WallTime, Weekday};
