//! Weekly schedules entered in the site's local time, compiled into the device's UTC slots.
//!
//! ADR-011 keeps the device in UTC and leaves local time to the backend. A UTC slot is only right
//! while the zone's UTC offset stays the same, so the compiler splits the horizon at every offset
//! change (DST transitions) and emits, for each constant-offset stretch, the slot converted with
//! that offset and bounded by `from`/`until` at the stretch's ends. A door that stays offline
//! across a DST change therefore still opens at the right local hour until the horizon ends; the
//! first stretch is unbounded before and the last unbounded after, so a door offline even longer
//! keeps the last known offset rather than locking everyone out.
//!
//! Holidays on the site calendar close a schedule on whole local days. The compiler cuts each
//! stretch further, around each holiday inside the horizon, so that the UTC slots' `from`/`until`
//! leave the holiday out: from local midnight of its first day to local midnight after its last,
//! converted with the offset in force (so the cut lands on the right instant on a DST change
//! day). The rule for slots that cross midnight:
//!
//! - A slot that *starts* on a holiday is closed for its whole length, also the part after
//!   midnight that falls on the next, ordinary, day (the night shift of Christmas Day does not
//!   happen). This matches the days mask, which names the days a slot starts on.
//! - A slot that starts the evening before a holiday runs until midnight and closes there: the
//!   holiday is closed from its first minute.
//!
//! A holiday outside the horizon is left out; the list is recompiled well before it comes into
//! reach. One that has begun at the horizon's end is compiled whole, with the last known offset.

use chronolock_core::allowlist::Slot;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// A weekly slot in local time, as the admin enters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalSlot {
    /// Days the slot starts on: bit 0 Monday … bit 6 Sunday.
    pub days: u8,
    /// Local start, minutes after midnight (0–1439).
    pub start_min: u16,
    /// Local end, minutes after midnight (1–1440); before `start_min` it runs past midnight.
    pub end_min: u16,
}

/// Why a schedule cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// No day, or a time out of range, or start equal to end.
    #[error(
        "a slot needs at least one day, times within the day, and an end different from its start"
    )]
    BadSlot,
    /// The zone's transitions could not be read.
    #[error("time zone: {0}")]
    Zone(String),
    /// A holiday whose last day is before its first.
    #[error("a holiday's last day ({last}) is before its first ({first})")]
    HolidayBackwards {
        /// Its first day.
        first: Date,
        /// Its last day.
        last: Date,
    },
    /// A yearly holiday that lasts a year or more, so that it would overlap itself.
    #[error("a yearly holiday must be shorter than a year ({first} to {last} is not)")]
    HolidayTooLong {
        /// Its first day.
        first: Date,
        /// Its last day.
        last: Date,
    },
    /// The compiled schedule has more slots than one policy of the device's list can hold.
    #[error(
        "the schedule compiles to {count} slots with its holidays, more than the {max} one \
         allow-list policy can hold: use fewer slots or fewer holidays"
    )]
    TooManySlots {
        /// Slots the schedule would need.
        count: usize,
        /// The most a policy holds.
        max: usize,
    },
}

/// The most slots one policy of the device's list holds: its record counts them in a `u16`
/// (`chronolock_core::allowlist::Policy::slot_count`).
pub const MAX_SLOTS_PER_POLICY: usize = u16::MAX as usize;

/// A day or run of days on the site calendar on which the schedules it names are closed.
///
/// `first` and `last` are local dates and both included. A yearly holiday repeats every year
/// from `first`'s year on, on the same month and day; `last` may fall in the next year (Dec 24 –
/// Jan 2). A yearly holiday that starts on Feb 29 happens only in leap years; one that ends on
/// Feb 29 ends on Feb 28 in the other years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Holiday {
    /// First closed day.
    pub first: Date,
    /// Last closed day (inclusive).
    pub last: Date,
    /// Whether it repeats every year.
    pub yearly: bool,
}

impl Holiday {
    /// Checks that the holiday makes sense: not backwards, and a yearly one shorter than a year.
    pub fn check(&self) -> Result<(), ScheduleError> {
        let (first, last) = (self.first, self.last);
        if last < first {
            return Err(ScheduleError::HolidayBackwards { first, last });
        }
        if self.yearly {
            let too_long = first
                .checked_add(1.year())
                .ok()
                .is_none_or(|next_year| last >= next_year);
            if too_long {
                return Err(ScheduleError::HolidayTooLong { first, last });
            }
        }
        Ok(())
    }

    /// The days it closes in the occurrence that starts in `year`, if there is one.
    pub fn in_year(&self, year: i16) -> Option<(Date, Date)> {
        if !self.yearly {
            return (self.first.year() == year).then_some((self.first, self.last));
        }
        if year < self.first.year() {
            return None;
        }
        let first = Date::new(year, self.first.month(), self.first.day()).ok()?;
        let last_year = year.checked_add(self.last.year() - self.first.year())?;
        let last = Date::new(last_year, self.last.month(), self.last.day())
            .or_else(|_| Date::new(last_year, self.last.month(), self.last.day() - 1))
            .ok()?;
        Some((first, last))
    }
}

/// Default horizon: how far ahead DST changes are compiled in.
pub const DEFAULT_HORIZON_DAYS: i64 = 8 * 7;

/// Compiles local slots into UTC slots for `zone`, correct from `from` until `from + horizon`.
pub fn compile(
    zone: &TimeZone,
    slots: &[LocalSlot],
    from: Timestamp,
    horizon_days: i64,
) -> Result<Vec<Slot>, ScheduleError> {
    compile_with_holidays(zone, slots, &[], from, horizon_days)
}

/// Compiles local slots into UTC slots for `zone` that are closed on `holidays` (see the module
/// documentation for slots that cross midnight), correct from `from` until `from + horizon`.
pub fn compile_with_holidays(
    zone: &TimeZone,
    slots: &[LocalSlot],
    holidays: &[Holiday],
    from: Timestamp,
    horizon_days: i64,
) -> Result<Vec<Slot>, ScheduleError> {
    for h in holidays {
        h.check()?;
    }
    if slots.iter().any(|s| {
        s.days == 0
            || s.days & 0x80 != 0
            || s.start_min >= 1440
            || !(1..=1440).contains(&s.end_min)
            || s.start_min == s.end_min
    }) {
        return Err(ScheduleError::BadSlot);
    }
    // Start a day early: a slot that began yesterday (local) may still be running.
    let start = from
        .checked_sub(jiff::SignedDuration::from_hours(24))
        .map_err(|e| ScheduleError::Zone(e.to_string()))?;
    let end = from
        .checked_add(jiff::SignedDuration::from_hours(24 * horizon_days))
        .map_err(|e| ScheduleError::Zone(e.to_string()))?;
    // Stretches of constant offset: [bound_i, bound_{i+1}), the first unbounded before, the last after.
    let mut bounds: Vec<Timestamp> = zone
        .following(start)
        .take_while(|t| t.timestamp() < end)
        .map(|t| t.timestamp())
        .collect();
    bounds.dedup();
    let runs = holiday_runs(zone, holidays, start, end)?;
    let mut out = Vec::new();
    let mut stretch_start: Option<Timestamp> = None;
    for i in 0..=bounds.len() {
        let stretch_end = bounds.get(i).copied();
        // The offset in force within the stretch.
        let probe = match (stretch_start, stretch_end) {
            (Some(s), _) => s,
            (None, Some(e)) => e
                .checked_sub(jiff::SignedDuration::from_secs(1))
                .map_err(|e| ScheduleError::Zone(e.to_string()))?,
            (None, None) => from,
        };
        let offset = zone.to_offset(probe);
        let offset_min = offset.seconds() / 60;
        let stretch = (
            stretch_start.map_or(i64::MIN, |t| t.as_second()),
            stretch_end.map_or(i64::MAX, |t| t.as_second()),
        );
        for s in slots {
            let windows = open_windows(s, offset, stretch, &runs)?;
            for utc in to_utc(s, offset_min) {
                for &(from_s, until_s) in &windows {
                    out.push(Slot {
                        // i64::MIN and i64::MAX stand for unbounded, which the list writes as 0.
                        from: if from_s == i64::MIN { 0 } else { from_s },
                        until: if until_s == i64::MAX { 0 } else { until_s },
                        ..utc
                    });
                }
            }
            if out.len() > MAX_SLOTS_PER_POLICY {
                break;
            }
        }
        stretch_start = stretch_end;
    }
    if out.len() > MAX_SLOTS_PER_POLICY {
        return Err(ScheduleError::TooManySlots {
            count: out.len(),
            max: MAX_SLOTS_PER_POLICY,
        });
    }
    Ok(out)
}

/// The holidays that touch the local days of `[start, end)`, as sorted runs of consecutive
/// closed days (first, last), overlapping or adjacent holidays merged.
fn holiday_runs(
    zone: &TimeZone,
    holidays: &[Holiday],
    start: Timestamp,
    end: Timestamp,
) -> Result<Vec<(Date, Date)>, ScheduleError> {
    if holidays.is_empty() {
        return Ok(Vec::new());
    }
    let zone_err = |e: jiff::Error| ScheduleError::Zone(e.to_string());
    // A day's margin either side covers any offset; a slot's tail past a holiday is under a day.
    let lo = start
        .to_zoned(zone.clone())
        .date()
        .yesterday()
        .map_err(zone_err)?;
    let hi = end
        .to_zoned(zone.clone())
        .date()
        .tomorrow()
        .map_err(zone_err)?;
    let mut found = Vec::new();
    for h in holidays {
        if !h.yearly {
            if h.last >= lo && h.first <= hi {
                found.push((h.first, h.last));
            }
            continue;
        }
        // A yearly occurrence lasts under a year, so one starting the year before may reach in.
        for year in lo.year().saturating_sub(1)..=hi.year() {
            if let Some((first, last)) = h.in_year(year) {
                if last >= lo && first <= hi {
                    found.push((first, last));
                }
            }
        }
    }
    found.sort_unstable();
    let mut runs: Vec<(Date, Date)> = Vec::with_capacity(found.len());
    for (first, last) in found {
        match runs.last_mut() {
            Some(run) if run.1.tomorrow().ok().is_none_or(|next| first <= next) => {
                run.1 = run.1.max(last);
            }
            _ => runs.push((first, last)),
        }
    }
    Ok(runs)
}

/// The windows `[from, until)` of `stretch` (Unix seconds, `i64::MIN`/`i64::MAX` unbounded) in
/// which slot `s` is open, at the stretch's fixed `offset`: the stretch minus, for each run of
/// holidays, local midnight of its first day until local midnight after its last day, plus the
/// slot's part after midnight if it crosses midnight (it started on the holiday).
fn open_windows(
    s: &LocalSlot,
    offset: Offset,
    stretch: (i64, i64),
    runs: &[(Date, Date)],
) -> Result<Vec<(i64, i64)>, ScheduleError> {
    let zone_err = |e: jiff::Error| ScheduleError::Zone(e.to_string());
    let tail_s = if s.end_min < s.start_min {
        i64::from(s.end_min) * 60
    } else {
        0
    };
    let (mut cursor, stretch_end) = stretch;
    let mut windows = Vec::new();
    for &(first, last) in runs {
        let closed_from = offset
            .to_timestamp(first.to_datetime(jiff::civil::Time::midnight()))
            .map_err(zone_err)?
            .as_second();
        let closed_until = offset
            .to_timestamp(
                last.tomorrow()
                    .map_err(zone_err)?
                    .to_datetime(jiff::civil::Time::midnight()),
            )
            .map_err(zone_err)?
            .as_second()
            + tail_s;
        if closed_until <= cursor {
            continue;
        }
        if closed_from >= stretch_end {
            break;
        }
        if closed_from > cursor {
            windows.push((cursor, closed_from));
        }
        cursor = closed_until;
    }
    if cursor < stretch_end {
        windows.push((cursor, stretch_end));
    }
    Ok(windows)
}

/// Rotates a days mask by `shift` days (positive: later).
fn rotate(days: u8, shift: i32) -> u8 {
    let shift = shift.rem_euclid(7) as u32;
    let d = u16::from(days & 0x7f);
    (((d << shift) | (d >> (7 - shift))) & 0x7f) as u8
}

/// One local slot as UTC slot(s) under a fixed offset (UTC = local − offset).
fn to_utc(s: &LocalSlot, offset_min: i32) -> Vec<Slot> {
    let duration = if s.end_min > s.start_min {
        i32::from(s.end_min - s.start_min)
    } else {
        i32::from(s.end_min) + 1440 - i32::from(s.start_min)
    };
    let start = i32::from(s.start_min) - offset_min;
    let day_shift = start.div_euclid(1440);
    let start = start.rem_euclid(1440);
    let days = rotate(s.days, day_shift);
    let slot = |days: u8, start_min: i32, end_min: i32| Slot {
        days,
        start_min: start_min as u16,
        end_min: end_min as u16,
        from: 0,
        until: 0,
    };
    if duration >= 1440 {
        // A whole day: [start, 24:00) then [00:00, start) of the next day.
        return if start == 0 {
            vec![slot(days, 0, 1440)]
        } else {
            vec![slot(days, start, 1440), slot(rotate(days, 1), 0, start)]
        };
    }
    let end = start + duration;
    vec![if end <= 1440 {
        slot(days, start, end)
    } else {
        slot(days, start, end - 1440)
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronolock_core::access::slot_contains;
    use chronolock_core::{UnixTime, WallTime};
    use proptest::prelude::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    /// Whether local time at `t` in `zone` falls in a local slot, computed by jiff directly.
    fn local_open(zone: &TimeZone, slots: &[LocalSlot], t: Timestamp) -> bool {
        let z = t.to_zoned(zone.clone());
        let minute = i32::from(z.hour()) * 60 + i32::from(z.minute());
        let today = (z.weekday().to_monday_zero_offset()) as u8;
        let yesterday = (today + 6) % 7;
        slots.iter().any(|s| {
            let on = |d: u8| s.days & (1 << d) != 0;
            let (a, b) = (i32::from(s.start_min), i32::from(s.end_min));
            if a < b {
                on(today) && a <= minute && minute < b
            } else {
                (on(today) && minute >= a) || (on(yesterday) && minute < b)
            }
        })
    }

    fn utc_open(compiled: &[Slot], t: Timestamp) -> bool {
        let wall = WallTime::new(UnixTime::from_secs(t.as_second()), 0);
        compiled.iter().any(|s| slot_contains(s, &wall))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Tuesday (and every other weekday) 09:00–18:00 local.
    const WORKDAYS: LocalSlot = LocalSlot {
        days: 0b001_1111,
        start_min: 540,
        end_min: 1080,
    };

    #[test]
    fn berlin_spring_forward_keeps_local_hours() {
        // DST starts Sunday 2027-03-28 at 01:00 UTC (02:00 CET → 03:00 CEST).
        let zone = tz("Europe/Berlin");
        let compiled = compile(&zone, &[WORKDAYS], ts("2027-03-20T12:00:00Z"), 56).unwrap();
        // Friday before: 09:00 CET = 08:00 UTC.
        assert!(!utc_open(&compiled, ts("2027-03-26T07:59:00Z")));
        assert!(utc_open(&compiled, ts("2027-03-26T08:00:00Z")));
        // Monday after: 09:00 CEST = 07:00 UTC.
        assert!(utc_open(&compiled, ts("2027-03-29T07:00:00Z")));
        assert!(
            !utc_open(&compiled, ts("2027-03-29T16:00:00Z")),
            "18:00 CEST = 16:00 UTC is closed"
        );
    }

    #[test]
    fn berlin_fall_back_and_the_repeated_hour() {
        // DST ends Sunday 2026-10-25 at 01:00 UTC (03:00 CEST → 02:00 CET); 02:00–03:00 happens twice.
        let zone = tz("Europe/Berlin");
        let night = LocalSlot {
            days: 0b100_0000,
            start_min: 120,
            end_min: 180,
        }; // Sunday 02:00–03:00
        let compiled = compile(&zone, &[night, WORKDAYS], ts("2026-10-20T00:00:00Z"), 56).unwrap();
        assert!(
            utc_open(&compiled, ts("2026-10-25T00:30:00Z")),
            "first 02:30 (CEST)"
        );
        assert!(
            utc_open(&compiled, ts("2026-10-25T01:30:00Z")),
            "second 02:30 (CET)"
        );
        assert!(
            !utc_open(&compiled, ts("2026-10-25T02:00:00Z")),
            "03:00 CET"
        );
        assert!(
            utc_open(&compiled, ts("2026-10-26T08:00:00Z")),
            "Monday 09:00 CET"
        );
        assert!(!utc_open(&compiled, ts("2026-10-26T07:30:00Z")));
    }

    #[test]
    fn new_york_and_a_zone_without_dst() {
        let ny = tz("America/New_York");
        let compiled = compile(&ny, &[WORKDAYS], ts("2026-10-30T00:00:00Z"), 56).unwrap();
        // EDT until 2026-11-01: 09:00 = 13:00 UTC; EST after: 09:00 = 14:00 UTC.
        assert!(utc_open(&compiled, ts("2026-10-30T13:00:00Z")));
        assert!(!utc_open(&compiled, ts("2026-11-02T13:30:00Z")));
        assert!(utc_open(&compiled, ts("2026-11-02T14:00:00Z")));
        let tokyo = tz("Asia/Tokyo");
        let compiled = compile(&tokyo, &[WORKDAYS], ts("2026-10-30T00:00:00Z"), 56).unwrap();
        assert_eq!(compiled.len(), 1, "no transitions: one slot, unbounded");
        assert_eq!((compiled[0].from, compiled[0].until), (0, 0));
        // 09:00 JST Monday = 00:00 UTC Monday.
        assert_eq!(
            (compiled[0].start_min, compiled[0].end_min, compiled[0].days),
            (0, 540, 0b001_1111)
        );
    }

    #[test]
    fn slots_shift_across_midnight_and_weekdays() {
        // 00:30–01:30 local Monday at UTC+2 is Sunday 22:30–23:30 UTC.
        let s = to_utc(
            &LocalSlot {
                days: 0b1,
                start_min: 30,
                end_min: 90,
            },
            120,
        );
        assert_eq!(
            s,
            vec![Slot {
                days: 0b100_0000,
                start_min: 1350,
                end_min: 1410,
                from: 0,
                until: 0
            }]
        );
        // 22:00–02:00 local at UTC−5 is 03:00–07:00 UTC the next day.
        let s = to_utc(
            &LocalSlot {
                days: 0b1,
                start_min: 1320,
                end_min: 120,
            },
            -300,
        );
        assert_eq!(
            s,
            vec![Slot {
                days: 0b10,
                start_min: 180,
                end_min: 420,
                from: 0,
                until: 0
            }]
        );
        // A whole local day at UTC+1 becomes two UTC pieces.
        let s = to_utc(
            &LocalSlot {
                days: 0b1,
                start_min: 0,
                end_min: 1440,
            },
            60,
        );
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(Slot::is_well_formed));
    }

    fn date(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn holiday(first: &str, last: &str, yearly: bool) -> Holiday {
        Holiday {
            first: date(first),
            last: date(last),
            yearly,
        }
    }

    /// Every day, all day.
    const ALWAYS: LocalSlot = LocalSlot {
        days: 0b111_1111,
        start_min: 0,
        end_min: 1440,
    };

    #[test]
    fn christmas_yearly_in_berlin() {
        // Entered for 2025; 2026-12-25 is a Friday, CET (UTC+1).
        let zone = tz("Europe/Berlin");
        let christmas = [holiday("2025-12-25", "2025-12-25", true)];
        let from = ts("2026-12-21T00:00:00Z");
        let compiled = compile_with_holidays(&zone, &[WORKDAYS], &christmas, from, 56).unwrap();
        assert!(compiled.iter().all(Slot::is_well_formed));
        assert!(
            utc_open(&compiled, ts("2026-12-24T08:00:00Z")),
            "Thursday 09:00"
        );
        assert!(
            !utc_open(&compiled, ts("2026-12-25T08:00:00Z")),
            "Christmas 09:00"
        );
        assert!(
            !utc_open(&compiled, ts("2026-12-25T16:59:00Z")),
            "Christmas 17:59"
        );
        assert!(
            utc_open(&compiled, ts("2026-12-28T08:00:00Z")),
            "Monday after"
        );
        // The cut lies on local midnight, not UTC midnight.
        let compiled = compile_with_holidays(&zone, &[ALWAYS], &christmas, from, 56).unwrap();
        assert!(utc_open(&compiled, ts("2026-12-24T22:59:59Z")));
        assert!(!utc_open(&compiled, ts("2026-12-24T23:00:00Z")));
        assert!(!utc_open(&compiled, ts("2026-12-25T22:59:59Z")));
        assert!(utc_open(&compiled, ts("2026-12-25T23:00:00Z")));
        // Outside the horizon nothing is cut, and the ends stay unbounded.
        assert_eq!(compiled.first().map(|s| s.from), Some(0));
        assert_eq!(compiled.last().map(|s| s.until), Some(0));
    }

    #[test]
    fn range_across_a_dst_change() {
        // Saturday 2027-03-27 to Monday 2027-03-29; DST starts Sunday 01:00 UTC.
        let zone = tz("Europe/Berlin");
        let closed = [holiday("2027-03-27", "2027-03-29", false)];
        let compiled =
            compile_with_holidays(&zone, &[ALWAYS], &closed, ts("2027-03-20T00:00:00Z"), 56)
                .unwrap();
        assert!(
            utc_open(&compiled, ts("2027-03-26T22:59:59Z")),
            "Friday 23:59:59 CET"
        );
        assert!(
            !utc_open(&compiled, ts("2027-03-26T23:00:00Z")),
            "Saturday 00:00 CET"
        );
        assert!(
            !utc_open(&compiled, ts("2027-03-28T01:30:00Z")),
            "Sunday 03:30 CEST"
        );
        assert!(
            !utc_open(&compiled, ts("2027-03-29T21:59:59Z")),
            "Monday 23:59:59 CEST"
        );
        assert!(
            utc_open(&compiled, ts("2027-03-29T22:00:00Z")),
            "Tuesday 00:00 CEST"
        );
    }

    #[test]
    fn slots_across_midnight_belong_to_the_day_they_start() {
        // Thursday and Friday 22:00–06:00; Friday 2026-12-25 is a holiday (CET, UTC+1).
        let zone = tz("Europe/Berlin");
        let night = LocalSlot {
            days: 0b001_1000,
            start_min: 1320,
            end_min: 360,
        };
        let christmas = [holiday("2026-12-25", "2026-12-25", false)];
        let compiled =
            compile_with_holidays(&zone, &[night], &christmas, ts("2026-12-21T00:00:00Z"), 56)
                .unwrap();
        assert!(
            utc_open(&compiled, ts("2026-12-24T22:30:00Z")),
            "Thursday 23:30"
        );
        assert!(
            !utc_open(&compiled, ts("2026-12-24T23:30:00Z")),
            "Thursday's slot stops at the holiday's midnight"
        );
        assert!(
            !utc_open(&compiled, ts("2026-12-25T21:30:00Z")),
            "Christmas 22:30"
        );
        assert!(
            !utc_open(&compiled, ts("2026-12-26T04:00:00Z")),
            "Christmas's slot stays closed after midnight"
        );
        assert!(
            utc_open(&compiled, ts("2027-01-01T04:00:00Z")),
            "next Thursday's night"
        );
    }

    #[test]
    fn february_29_and_year_ends() {
        let leap = holiday("2028-02-29", "2028-02-29", true);
        assert_eq!(leap.in_year(2029), None);
        assert_eq!(leap.in_year(2027), None, "not before its first year");
        assert_eq!(
            leap.in_year(2032),
            Some((date("2032-02-29"), date("2032-02-29")))
        );
        let february = holiday("2028-02-01", "2028-02-29", true);
        assert_eq!(
            february.in_year(2029),
            Some((date("2029-02-01"), date("2029-02-28")))
        );
        let winter = holiday("2026-12-24", "2027-01-02", true);
        assert_eq!(winter.check(), Ok(()));
        assert_eq!(
            winter.in_year(2030),
            Some((date("2030-12-24"), date("2031-01-02")))
        );
        // The occurrence that began the year before closes the first days of January.
        let zone = tz("America/New_York");
        let compiled =
            compile_with_holidays(&zone, &[ALWAYS], &[winter], ts("2030-12-30T00:00:00Z"), 56)
                .unwrap();
        assert!(!utc_open(&compiled, ts("2031-01-02T12:00:00Z")));
        assert!(utc_open(&compiled, ts("2031-01-03T12:00:00Z")));
    }

    #[test]
    fn bad_holidays_and_too_many_slots_are_refused() {
        let zone = tz("Europe/Berlin");
        let from = ts("2026-12-21T00:00:00Z");
        let backwards = holiday("2026-12-26", "2026-12-25", false);
        assert!(matches!(
            compile_with_holidays(&zone, &[WORKDAYS], &[backwards], from, 56),
            Err(ScheduleError::HolidayBackwards { .. })
        ));
        let whole_year = holiday("2026-01-01", "2027-01-01", true);
        assert!(matches!(
            whole_year.check(),
            Err(ScheduleError::HolidayTooLong { .. })
        ));
        assert_eq!(holiday("2026-01-01", "2026-12-31", true).check(), Ok(()));
        assert_eq!(holiday("2026-01-01", "2030-01-01", false).check(), Ok(()));
        // Every other day a holiday: each slot splits into thirty windows.
        let many: Vec<Holiday> = (0..28)
            .map(|i| {
                let d = date("2026-12-22").checked_add((2 * i).days()).unwrap();
                Holiday {
                    first: d,
                    last: d,
                    yearly: false,
                }
            })
            .collect();
        let slots = vec![WORKDAYS; 3000];
        let err = compile_with_holidays(&zone, &slots, &many, from, 56).unwrap_err();
        assert!(matches!(
            err,
            ScheduleError::TooManySlots { max: 65_535, .. }
        ));
        assert!(err.to_string().contains("65535"), "{err}");
        assert!(compile_with_holidays(&zone, &slots[..10], &many, from, 56).is_ok());
    }

    /// A probe at `offset_s` after `start`, or near the zone's offset changes and the slots'
    /// local edges: `near` picks a switch (modulo how many lie in the window) and `jitter_s`
    /// (within ±3 h) lands around it, on either side of the local hour that moved.
    fn probe(
        zone: &TimeZone,
        slots: &[LocalSlot],
        start: Timestamp,
        switches: &[Timestamp],
        (kind, near, jitter_s, offset_s): (u8, usize, i64, i64),
    ) -> Timestamp {
        let at = |t: Timestamp, s: i64| t.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        match (kind, switches.get(near % switches.len().max(1))) {
            // Around the switch itself.
            (0, Some(&switch)) => at(switch, jitter_s),
            // A slot's local start or end on the local day of the switch (or the next),
            // a second either side.
            (1, Some(&switch)) => {
                let s = &slots[near % slots.len()];
                let edge = if jitter_s >= 0 {
                    s.start_min
                } else {
                    s.end_min % 1440
                };
                let day = switch.to_zoned(zone.clone()).date();
                let day = if jitter_s.rem_euclid(2) == 0 {
                    day
                } else {
                    day.tomorrow().unwrap()
                };
                let local = day.at((edge / 60) as i8, (edge % 60) as i8, 0, 0);
                let t = local.to_zoned(zone.clone()).unwrap().timestamp();
                at(t, (jitter_s / 3600).signum())
            }
            _ => at(start, offset_s),
        }
    }

    proptest! {
        /// For random local schedules, zones and instants within the horizon, the compiled UTC
        /// slots open exactly when the local schedule (evaluated by jiff) does. Half the windows
        /// start shortly before one of the zone's offset changes, and most probes lie at a switch
        /// or at a slot's edge on the day of one, where an hour's error would show.
        #[test]
        fn compiled_slots_match_local_time(
            zone in prop::sample::select(vec!["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Tokyo", "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham", "Europe/London", "Australia/Lord_Howe"]),
            slots in prop::collection::vec((1u8..128, 0u16..1440, 1u16..=1440), 1..4),
            start in 1_767_225_600i64..1_830_000_000,
            before_switch in prop::option::of(0i64..(40 * 86_400)),
            probes in prop::collection::vec((0u8..3, 0usize..8, -3 * 3600i64..3 * 3600, 0i64..(50 * 86_400)), 1..40),
        ) {
            let zone = tz(zone);
            let slots: Vec<LocalSlot> = slots
                .into_iter()
                .filter(|(_, s, e)| s != e)
                .map(|(days, start_min, end_min)| LocalSlot { days, start_min, end_min })
                .collect();
            prop_assume!(!slots.is_empty());
            let mut from = Timestamp::from_second(start).unwrap();
            if let (Some(lead), Some(next)) = (before_switch, zone.following(from).next()) {
                from = next.timestamp().checked_sub(jiff::SignedDuration::from_secs(lead)).unwrap();
            }
            let horizon_end = from.checked_add(jiff::SignedDuration::from_hours(24 * 56)).unwrap();
            let switches: Vec<Timestamp> = zone
                .following(from)
                .map(|t| t.timestamp())
                .take_while(|t| *t < horizon_end)
                .collect();
            let compiled = compile(&zone, &slots, from, 56).unwrap();
            prop_assert!(compiled.iter().all(Slot::is_well_formed));
            for p in probes {
                let t = probe(&zone, &slots, from, &switches, p);
                if t < from || t >= horizon_end {
                    continue;
                }
                prop_assert_eq!(utc_open(&compiled, t), local_open(&zone, &slots, t), "at {}", t);
            }
        }
    }
}
