//! Test helpers shared by the core's unit tests: one virtual clock, declared once.

use crate::clock::{Sample, Source};
use crate::time::{Instant, UnixTime};

/// True UTC at boot in the tests: 2026-11-24T08:59:00Z, a Tuesday.
pub const T0: UnixTime = UnixTime::from_secs(1_795_510_740);

/// A sample from `source` at `at`, off from true time (`T0` + monotonic time) by `offset_us`.
pub fn sample(source: Source, server: u8, at: Instant, offset_us: i64, error_us: u64) -> Sample {
    Sample {
        source,
        server,
        at,
        utc: T0.offset_micros(at.as_micros() as i64 + offset_us),
        error_us,
    }
}
