//! When the watchdog may be fed: only while every task that must keep running has shown signs
//! of life recently. Plain code with no hardware, so that `firmware/host-tests` tests it.

/// Longest the door task may go without a heartbeat: it wakes at least every
/// [`DOOR_BEAT_EVERY_MS`], and its longest step (a list slot's erase) takes a few seconds.
pub const DOOR_SILENCE_MS: u64 = 10_000;

/// How often the door task beats while it has nothing to do.
pub const DOOR_BEAT_EVERY_MS: u64 = 2_000;

/// Longest the network task may go without a heartbeat: one exchange may take up to a minute
/// (its own timeout), and it beats between exchanges.
pub const NETWORK_SILENCE_MS: u64 = 75_000;

/// The last heartbeats, in milliseconds since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beats {
    /// The door task's.
    pub door_ms: u64,
    /// The network task's (`None`: no network task must run, as in setup mode).
    pub network_ms: Option<u64>,
}

/// Whether the tasks are alive at `now_ms`: the watchdog is fed only then, so that a task that
/// hangs (or an executor that stops) resets the door.
pub fn alive(beats: Beats, now_ms: u64) -> bool {
    let fresh = |at: u64, silence: u64| now_ms.saturating_sub(at) <= silence;
    fresh(beats.door_ms, DOOR_SILENCE_MS)
        && beats
            .network_ms
            .is_none_or(|at| fresh(at, NETWORK_SILENCE_MS))
}
