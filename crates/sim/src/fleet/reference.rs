//! The reference model of access decisions, written apart from the core: its own UTC calendar
//! arithmetic, the list as the backend meant it (not the bytes the door reads), and jiff for the
//! site's local time.
//!
//! - [`at_secs`]: what a door must decide at a UTC second with a valid clock.
//! - [`unsynced`]: ADR-011's fail-safe table, for a door whose clock is not valid.
//! - [`local_intent`]: whether the admin's rule (local-time slots in the site's zone) lets the
//!   person in at a UTC second: the intent the compiled UTC slots must follow across DST.
//! - [`any_in`]: whether a predicate holds at some second of an interval, checking every second
//!   at which a decision can change (minute starts, range bounds, slot bounds).

use chronolock_core::access::Decision;
use chronolock_core::allowlist::{AccessType, Slot};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::schedule::LocalSlot;
use super::world::RefEntry;

/// What the reference says: a decision, or "ask the backend" (CONDITIONAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Decided(Decision),
    Ask,
}

/// ADR-011 with `now = 0`: no time check for UNRESTRICTED and EMERGENCY; SCHEDULED with slots
/// is a time restriction; SCHEDULED without slots is granted unless it has a `valid_from`.
pub(crate) fn unsynced(e: &RefEntry) -> Want {
    Want::Decided(match e.access {
        AccessType::Unrestricted => Decision::Granted,
        AccessType::Emergency => Decision::GrantedEmergency,
        AccessType::Conditional => return Want::Ask,
        AccessType::Scheduled if !e.slots.is_empty() => Decision::DeniedTimeRestriction,
        AccessType::Scheduled if e.valid_from > 0 => Decision::DeniedNotYetValid,
        AccessType::Scheduled => Decision::Granted,
    })
}

/// Monday = 0 … Sunday = 6 for a Unix day (1970-01-01 was a Thursday).
fn weekday(day: i64) -> u8 {
    (day + 3).rem_euclid(7) as u8
}

fn in_weekly(days: u8, start: u16, end: u16, today: u8, minute: u16) -> bool {
    let yesterday = (today + 6) % 7;
    let on = |d: u8| days & (1 << d) != 0;
    if start < end {
        on(today) && start <= minute && minute < end
    } else {
        (on(today) && minute >= start) || (on(yesterday) && minute < end)
    }
}

fn utc_slot_open(s: &Slot, secs: i64) -> bool {
    if (s.from != 0 && secs < s.from) || (s.until != 0 && secs >= s.until) {
        return false;
    }
    let day = secs.div_euclid(86_400);
    let minute = (secs.rem_euclid(86_400) / 60) as u16;
    in_weekly(s.days, s.start_min, s.end_min, weekday(day), minute)
}

/// The date range, inclusive at both ends (0: unbounded).
fn range_decision(e: &RefEntry, secs: i64) -> Option<Decision> {
    if e.valid_from != 0 && secs < e.valid_from {
        return Some(Decision::DeniedNotYetValid);
    }
    if e.valid_until != 0 && secs > e.valid_until {
        return Some(Decision::DeniedExpired);
    }
    None
}

/// The decision at a UTC second, with a valid clock.
pub(crate) fn at_secs(e: &RefEntry, secs: i64) -> Want {
    if let Some(d) = range_decision(e, secs) {
        return Want::Decided(d);
    }
    Want::Decided(match e.access {
        AccessType::Unrestricted => Decision::Granted,
        AccessType::Emergency => Decision::GrantedEmergency,
        AccessType::Conditional => return Want::Ask,
        AccessType::Scheduled if e.slots.is_empty() => Decision::Granted,
        AccessType::Scheduled if e.slots.iter().any(|s| utc_slot_open(s, secs)) => {
            Decision::Granted
        }
        AccessType::Scheduled => Decision::DeniedTimeRestriction,
    })
}

/// Whether the reference grants at `secs` (CONDITIONAL never grants without the backend).
pub(crate) fn grants(e: &RefEntry, secs: i64) -> bool {
    matches!(at_secs(e, secs), Want::Decided(d) if d.is_granted())
}

/// Whether the admin's rule lets the person in at `secs`: date range, then the local slots
/// read in the site's zone. `None` for entries without local slots.
pub(crate) fn local_intent(e: &RefEntry, zone: &TimeZone, secs: i64) -> Option<bool> {
    if e.local.is_empty() {
        return None;
    }
    if range_decision(e, secs).is_some() {
        return Some(false);
    }
    let z = Timestamp::from_second(secs).ok()?.to_zoned(zone.clone());
    let minute = z.hour() as u16 * 60 + z.minute() as u16;
    let today = z.weekday().to_monday_zero_offset() as u8;
    Some(
        e.local
            .iter()
            .any(|s: &LocalSlot| in_weekly(s.days, s.start_min, s.end_min, today, minute)),
    )
}

/// Longest interval [`any_in`] judges; a door whose error bound is wider than this is not
/// judged at all (it is counted instead).
pub(crate) const MAX_JUDGED_SECS: i64 = 7 * 86_400;

/// Whether `pred` holds at some second in `[lo, hi]` (Unix seconds), trying every second at
/// which an entry's decision can change: the ends, each minute start, the date range's bounds,
/// the slots' `from`/`until`. `None` when the interval is too wide to judge.
pub(crate) fn any_in(
    e: &RefEntry,
    lo: i64,
    hi: i64,
    mut pred: impl FnMut(i64) -> bool,
) -> Option<bool> {
    if hi - lo > MAX_JUDGED_SECS {
        return None;
    }
    if pred(lo) || pred(hi) {
        return Some(true);
    }
    let mut m = (lo.div_euclid(60) + 1) * 60;
    while m <= hi {
        if pred(m) {
            return Some(true);
        }
        m += 60;
    }
    let mut edges = vec![e.valid_from, e.valid_until, e.valid_until + 1];
    for s in &e.slots {
        edges.extend([s.from, s.until, s.until - 1]);
    }
    Some(
        edges
            .into_iter()
            .filter(|&x| x != 0 && lo < x && x < hi)
            .any(pred),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-24 is a Tuesday.
    const TUE: i64 = 1_795_478_400;

    fn scheduled(slots: Vec<Slot>, local: Vec<LocalSlot>) -> RefEntry {
        RefEntry {
            access: AccessType::Scheduled,
            valid_from: 0,
            valid_until: 0,
            slots,
            local,
        }
    }

    #[test]
    fn calendar_and_night_slots() {
        assert_eq!(weekday(TUE / 86_400), 1);
        // Tuesday 22:00 → Wednesday 06:00 UTC.
        let night = Slot {
            days: 0b10,
            start_min: 22 * 60,
            end_min: 6 * 60,
            from: 0,
            until: 0,
        };
        let e = scheduled(vec![night], vec![]);
        assert!(!grants(&e, TUE + 21 * 3600 + 3599));
        assert!(grants(&e, TUE + 22 * 3600));
        assert!(grants(&e, TUE + 29 * 3600 + 3599));
        assert!(!grants(&e, TUE + 30 * 3600));
        assert_eq!(
            at_secs(&e, TUE + 12 * 3600),
            Want::Decided(Decision::DeniedTimeRestriction)
        );
        assert_eq!(unsynced(&e), Want::Decided(Decision::DeniedTimeRestriction));
    }

    #[test]
    fn any_in_finds_an_edge_inside_the_interval() {
        let nine = Slot {
            days: 0b10,
            start_min: 9 * 60,
            end_min: 10 * 60,
            from: 0,
            until: 0,
        };
        let e = scheduled(vec![nine], vec![]);
        let edge = TUE + 9 * 3600;
        // Neither end is open, the minute start between them is.
        assert_eq!(
            any_in(&e, edge - 2, edge - 1, |s| grants(&e, s)),
            Some(false)
        );
        assert_eq!(
            any_in(&e, edge - 30, edge - 1, |s| grants(&e, s)),
            Some(false)
        );
        assert_eq!(
            any_in(&e, edge - 30, edge + 1, |s| grants(&e, s)),
            Some(true)
        );
        assert_eq!(any_in(&e, 0, MAX_JUDGED_SECS + 1, |_| false), None);
    }

    #[test]
    fn local_intent_follows_berlin_summer_time() {
        let zone = TimeZone::get("Europe/Berlin").expect("zone");
        let office = LocalSlot {
            days: 0b001_1111,
            start_min: 8 * 60,
            end_min: 18 * 60,
        };
        let e = scheduled(vec![], vec![office]);
        // 2026-06-02 (Tuesday) 06:30 UTC is 08:30 in Berlin (CEST); 2026-11-24 07:30 UTC is
        // 08:30 (CET).
        let june = 1_780_358_400 + 6 * 3600 + 1800;
        assert_eq!(local_intent(&e, &zone, june), Some(true));
        assert_eq!(local_intent(&e, &zone, june - 3600), Some(false));
        assert_eq!(local_intent(&e, &zone, TUE + 7 * 3600 + 1800), Some(true));
        assert_eq!(local_intent(&e, &zone, TUE + 6 * 3600 + 1800), Some(false));
    }
}
