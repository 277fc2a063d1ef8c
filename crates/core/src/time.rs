//! Time types: the device's monotonic [`Instant`], wall-clock [`UnixTime`], and the civil
//! (UTC calendar) view the access rules use.
//!
//! Monotonic time and wall time are different types on purpose (the quinn-proto habit): the
//! monotonic clock starts at zero at every boot and never jumps, the wall clock is only an
//! estimate derived from it. Nothing here reads a clock; the shell passes instants in.

use core::ops::{Add, Sub};
use core::time::Duration;

/// Unix seconds of 2020-01-01T00:00:00Z. ADR-011: the wall clock counts as valid only above this,
/// which rules out the epoch-start false positive after boot and 1970s answers from a misconfigured
/// server.
pub const VALIDITY_THRESHOLD_SECS: i64 = 1_577_836_800;

const MICROS_PER_SEC: i64 = 1_000_000;

/// A reading of the device's monotonic clock, in microseconds since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// Boot.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after boot.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after boot.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1000))
    }

    /// An instant `secs` seconds after boot.
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since boot.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Signed microseconds from `earlier` to `self`.
    pub fn micros_since(self, earlier: Instant) -> i64 {
        (self.0 as i64).saturating_sub(earlier.0 as i64)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_micros(rhs)))
    }
}

/// A point in UTC, in microseconds since 1970-01-01T00:00:00Z (leap seconds not counted, as in
/// POSIX and NTP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i64);

impl UnixTime {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixTime = UnixTime(0);
    /// The ADR-011 validity threshold, 2020-01-01T00:00:00Z.
    pub const VALIDITY_THRESHOLD: UnixTime = UnixTime(VALIDITY_THRESHOLD_SECS * MICROS_PER_SEC);

    /// From whole Unix seconds.
    pub const fn from_secs(secs: i64) -> Self {
        UnixTime(secs.saturating_mul(MICROS_PER_SEC))
    }

    /// From Unix microseconds.
    pub const fn from_micros(micros: i64) -> Self {
        UnixTime(micros)
    }

    /// Unix microseconds.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whole Unix seconds, rounded towards minus infinity.
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SEC)
    }

    /// This time moved by a signed number of microseconds.
    pub const fn offset_micros(self, micros: i64) -> Self {
        UnixTime(self.0.saturating_add(micros))
    }

    /// Signed microseconds from `other` to `self`.
    pub const fn micros_since(self, other: UnixTime) -> i64 {
        self.0.saturating_sub(other.0)
    }

    /// Whether ADR-011 would call a clock showing this time valid.
    pub const fn is_plausible(self) -> bool {
        self.0 > Self::VALIDITY_THRESHOLD.0
    }

    /// The UTC calendar fields of this time.
    pub fn civil(self) -> CivilDateTime {
        CivilDateTime::from_unix_secs(self.secs())
    }
}

impl Add<Duration> for UnixTime {
    type Output = UnixTime;
    fn add(self, rhs: Duration) -> UnixTime {
        self.offset_micros(duration_micros(rhs) as i64)
    }
}

impl Sub<Duration> for UnixTime {
    type Output = UnixTime;
    fn sub(self, rhs: Duration) -> UnixTime {
        self.offset_micros(-(duration_micros(rhs) as i64))
    }
}

/// A duration in whole microseconds, saturating at `u64::MAX / 2` so it fits an `i64` too.
pub fn duration_micros(d: Duration) -> u64 {
    let micros = d.as_micros();
    if micros > (i64::MAX as u128) {
        i64::MAX as u64
    } else {
        micros as u64
    }
}

/// Day of the week, Monday first (ISO 8601).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Weekday {
    /// Monday.
    Mon = 0,
    /// Tuesday.
    Tue = 1,
    /// Wednesday.
    Wed = 2,
    /// Thursday.
    Thu = 3,
    /// Friday.
    Fri = 4,
    /// Saturday.
    Sat = 5,
    /// Sunday.
    Sun = 6,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The weekday of a day counted from 1970-01-01, which was a Thursday.
    pub fn from_unix_days(days: i64) -> Weekday {
        Self::ALL[(days + 3).rem_euclid(7) as usize]
    }

    /// Monday = 0 … Sunday = 6.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// Three-letter lower-case name, as in the allow-list source (`mon` … `sun`).
    pub fn as_str(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self as usize]
    }
}

/// A UTC calendar date and time of day, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilDateTime {
    /// Year (proleptic Gregorian).
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
}

/// Why calendar fields do not name a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CivilError {
    /// A field is outside its range (month 13, 31 April, hour 24 …).
    FieldOutOfRange,
}

impl CivilDateTime {
    /// The calendar fields of a Unix second.
    pub fn from_unix_secs(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        CivilDateTime {
            year,
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
        }
    }

    /// The Unix second these fields name, after checking every field's range.
    pub fn to_unix_secs(&self) -> Result<i64, CivilError> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return Err(CivilError::FieldOutOfRange);
        }
        let days = days_from_civil(self.year, self.month, self.day);
        Ok(days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second))
    }
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in a month of the proleptic Gregorian calendar.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms (public domain description at
// howardhinnant.github.io/date_algorithms.html): exact over the whole i32 year range, no tables.
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// What ADR-011's `get_wall_time()` fills in, plus how far off it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallTime {
    /// The current UTC time.
    pub utc: UnixTime,
    /// Whole Unix seconds of `utc`.
    pub unix_secs: i64,
    /// Day of the week in UTC.
    pub weekday: Weekday,
    /// Hour of day in UTC, 0–23.
    pub hour: u8,
    /// Minute of the hour, 0–59.
    pub minute: u8,
    /// Bound on the distance between `utc` and true time, in milliseconds.
    pub error_bound_ms: u64,
}

impl WallTime {
    /// The civil view of `utc`, with the given error bound.
    pub fn new(utc: UnixTime, error_bound_ms: u64) -> Self {
        let unix_secs = utc.secs();
        let civil = CivilDateTime::from_unix_secs(unix_secs);
        WallTime {
            utc,
            unix_secs,
            weekday: Weekday::from_unix_days(unix_secs.div_euclid(86_400)),
            hour: civil.hour,
            minute: civil.minute,
            error_bound_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_known_dates() {
        // (unix seconds, y, m, d, h, mi, s, weekday)
        type Row = (i64, i32, u8, u8, u8, u8, u8, Weekday);
        let table: &[Row] = &[
            (0, 1970, 1, 1, 0, 0, 0, Weekday::Thu),
            (VALIDITY_THRESHOLD_SECS, 2020, 1, 1, 0, 0, 0, Weekday::Wed),
            (951_782_400, 2000, 2, 29, 0, 0, 0, Weekday::Tue),
            (1_795_510_740, 2026, 11, 24, 8, 59, 0, Weekday::Tue),
            (2_085_978_496, 2036, 2, 7, 6, 28, 16, Weekday::Thu),
            (4_102_444_799, 2099, 12, 31, 23, 59, 59, Weekday::Thu),
            (-1, 1969, 12, 31, 23, 59, 59, Weekday::Wed),
        ];
        for &(secs, y, mo, d, h, mi, s, wd) in table {
            let c = CivilDateTime::from_unix_secs(secs);
            assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second),
                (y, mo, d, h, mi, s),
                "{secs}"
            );
            assert_eq!(c.to_unix_secs(), Ok(secs));
            assert_eq!(
                Weekday::from_unix_days(secs.div_euclid(86_400)),
                wd,
                "{secs}"
            );
        }
    }

    #[test]
    fn civil_rejects_impossible_fields() {
        let ok = CivilDateTime {
            year: 2026,
            month: 2,
            day: 28,
            hour: 23,
            minute: 59,
            second: 59,
        };
        assert!(ok.to_unix_secs().is_ok());
        for bad in [
            CivilDateTime { day: 29, ..ok },
            CivilDateTime { month: 13, ..ok },
            CivilDateTime { month: 0, ..ok },
            CivilDateTime { day: 0, ..ok },
            CivilDateTime { hour: 24, ..ok },
            CivilDateTime { minute: 60, ..ok },
            CivilDateTime { second: 60, ..ok },
        ] {
            assert_eq!(
                bad.to_unix_secs(),
                Err(CivilError::FieldOutOfRange),
                "{bad:?}"
            );
        }
        assert!(CivilDateTime {
            year: 2028,
            ..CivilDateTime { day: 29, ..ok }
        }
        .to_unix_secs()
        .is_ok());
    }

    #[test]
    fn wall_time_fields() {
        let w = WallTime::new(UnixTime::from_secs(1_795_510_740), 5);
        assert_eq!(
            (w.weekday, w.hour, w.minute, w.error_bound_ms),
            (Weekday::Tue, 8, 59, 5)
        );
    }

    #[test]
    fn threshold_is_strict() {
        assert!(!UnixTime::VALIDITY_THRESHOLD.is_plausible());
        assert!(UnixTime::VALIDITY_THRESHOLD.offset_micros(1).is_plausible());
    }
}
