//! Weekly schedules entered in the site's local time, compiled into the device's UTC slots.
//!
//! ADR-011 keeps the device in UTC and leaves local time to the backend. A UTC slot is only right
//! while the zone's UTC offset stays the same, so the compiler splits the horizon at every offset
//! change (DST transitions) and emits, for each constant-offset stretch, the slot converted with
//! that offset and bounded by `from`/`until` at the stretch's ends. A door that stays offline
//! across a DST change therefore still opens at the right local hour until the horizon ends; the
//! first stretch is unbounded before and the last unbounded after, so a door offline even longer
//! keeps the last known offset rather than locking everyone out.

use chronolock_core::allowlist::Slot;
use jiff::tz::TimeZone;
use jiff::Timestamp;

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
        let offset_min = zone.to_offset(probe).seconds() / 60;
        let (from_s, until_s) = (
            stretch_start.map_or(0, |t| t.as_second()),
            stretch_end.map_or(0, |t| t.as_second()),
        );
        for s in slots {
            for mut utc in to_utc(s, offset_min) {
                utc.from = from_s;
                utc.until = until_s;
                out.push(utc);
            }
        }
        stretch_start = stretch_end;
    }
    Ok(out)
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
