//! The reference model of access decisions, written apart from the core and from the list
//! compiler: its own calendar arithmetic, the list as the backend meant it (not the bytes the
//! door reads), and jiff for the site's local time. A weekly schedule is never turned into UTC
//! slots here: the reference reads the admin's local slots at the local time jiff gives for the
//! instant, with the one rule a list has beyond its DST horizon (the offset at the horizon's
//! nearer end holds).
//!
//! - [`at_secs`]: what a door must decide at a UTC second with a valid clock.
//! - [`unsynced`]: ADR-011's fail-safe table, for a door whose clock is not valid.
//! - [`local_intent`]: whether the admin's rule (local-time slots in the site's zone) lets the
//!   person in at a UTC second: the intent the compiled UTC slots must follow across DST.
//! - [`any_in`]: whether a predicate holds at some second of an interval, checking every second
//!   at which a decision can change (minute starts, range bounds, slot bounds).

use chronolock_core::access::Decision;
use chronolock_core::allowlist::AccessType;
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
        AccessType::Scheduled if !e.local.is_empty() => Decision::DeniedTimeRestriction,
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

/// Whether the weekly local slots are open at `local_secs` (seconds of the local wall clock
/// counted as if it were UTC).
fn local_open(slots: &[LocalSlot], local_secs: i64) -> bool {
    let today = weekday(local_secs.div_euclid(86_400));
    let minute = (local_secs.rem_euclid(86_400) / 60) as u16;
    slots
        .iter()
        .any(|s| in_weekly(s.days, s.start_min, s.end_min, today, minute))
}

/// The UTC offset (seconds) a list compiled for `e` applies at `secs`: the zone's own within
/// the span its slots follow, the offset at the span's nearer end outside it.
fn list_offset(e: &RefEntry, secs: i64) -> i64 {
    let (first, last) = e.follows;
    let at = secs.clamp(first, last - 1);
    Timestamp::from_second(at).map_or(0, |t| i64::from(e.zone.to_offset(t).seconds()))
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
        AccessType::Scheduled if e.local.is_empty() => Decision::Granted,
        AccessType::Scheduled if local_open(&e.local, secs + list_offset(e, secs)) => {
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

/// Whether the zone's offset has changed between the start of the span the entry's list
/// follows and `secs`: a door deciding then relies on the list's later stretches.
pub(crate) fn offset_changed_since_compiled(e: &RefEntry, secs: i64) -> bool {
    let Ok(first) = Timestamp::from_second(e.follows.0) else {
        return false;
    };
    e.zone
        .following(first)
        .next()
        .is_some_and(|t| t.timestamp().as_second() <= secs)
}

/// Longest interval [`any_in`] judges; a door whose error bound is wider than this is not
/// judged at all (it is counted instead).
pub(crate) const MAX_JUDGED_SECS: i64 = 7 * 86_400;

/// Whether `pred` holds at some second in `[lo, hi]` (Unix seconds), trying every second at
/// which an entry's decision can change: the ends, each minute start, the date range's bounds,
/// the zone's offset changes. `None` when the interval is too wide to judge.
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
    if !e.local.is_empty() {
        if let Ok(from) = Timestamp::from_second(lo) {
            edges.extend(
                e.zone
                    .following(from)
                    .map(|t| t.timestamp().as_second())
                    .take_while(|&t| t < hi)
                    .flat_map(|t| [t - 1, t]),
            );
        }
        edges.extend([e.follows.0, e.follows.1 - 1, e.follows.1]);
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

    fn scheduled(zone: &str, local: Vec<LocalSlot>, follows: (i64, i64)) -> RefEntry {
        RefEntry {
            access: AccessType::Scheduled,
            valid_from: 0,
            valid_until: 0,
            local,
            zone: TimeZone::get(zone).expect("zone"),
            follows,
        }
    }

    #[test]
    fn calendar_and_night_slots() {
        assert_eq!(weekday(TUE / 86_400), 1);
        // Tuesday 22:00 → Wednesday 06:00 UTC.
        let night = LocalSlot {
            days: 0b10,
            start_min: 22 * 60,
            end_min: 6 * 60,
        };
        let e = scheduled("UTC", vec![night], (TUE - 86_400, TUE + 30 * 86_400));
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
        let nine = LocalSlot {
            days: 0b10,
            start_min: 9 * 60,
            end_min: 10 * 60,
        };
        let e = scheduled("UTC", vec![nine], (TUE - 86_400, TUE + 30 * 86_400));
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

    /// 08:00–18:00 on weekdays in Berlin, for a list compiled on 2026-03-02: it follows the
    /// switch to summer time on 2026-03-29 (01:00 UTC), and beyond its span keeps the offset of
    /// the span's end.
    #[test]
    fn weekly_slots_follow_the_zone_within_the_span_and_hold_its_end_offset_after() {
        let office = LocalSlot {
            days: 0b001_1111,
            start_min: 8 * 60,
            end_min: 18 * 60,
        };
        let compiled = 1_772_409_600; // 2026-03-02 00:00 UTC, a Monday
        let span = (compiled - 86_400, compiled + 56 * 86_400);
        let e = scheduled("Europe/Berlin", vec![office], span);
        // Tuesday 2026-03-03: CET, 08:00 local is 07:00 UTC.
        let tue = compiled + 86_400;
        assert!(!grants(&e, tue + 7 * 3600 - 1));
        assert!(grants(&e, tue + 7 * 3600));
        // Tuesday 2026-03-31: CEST, 08:00 local is 06:00 UTC.
        let later = compiled + 29 * 86_400;
        assert!(grants(&e, later + 6 * 3600));
        assert!(!grants(&e, later + 16 * 3600));
        assert!(offset_changed_since_compiled(&e, later));
        assert!(!offset_changed_since_compiled(&e, tue));
        // A list compiled in summer with a span ending before the switch back (2026-10-25)
        // keeps summer time after the span; the zone itself has moved on to CET.
        let august = 1_785_542_400; // 2026-08-01 00:00 UTC
        let e = scheduled(
            "Europe/Berlin",
            vec![office],
            (august - 86_400, august + 56 * 86_400),
        );
        let tue_nov = 1_795_478_400; // 2026-11-24, a Tuesday: CET in Berlin
        assert!(grants(&e, tue_nov + 6 * 3600), "08:00 CEST is 06:00 UTC");
        assert!(!grants(&e, tue_nov + 16 * 3600));
        assert_eq!(local_intent(&e, &e.zone, tue_nov + 6 * 3600), Some(false));
    }

    #[test]
    fn local_intent_follows_berlin_summer_time() {
        let office = LocalSlot {
            days: 0b001_1111,
            start_min: 8 * 60,
            end_min: 18 * 60,
        };
        let e = scheduled("Europe/Berlin", vec![office], (0, 1));
        let zone = e.zone.clone();
        // 2026-06-02 (Tuesday) 06:30 UTC is 08:30 in Berlin (CEST); 2026-11-24 07:30 UTC is
        // 08:30 (CET).
        let june = 1_780_358_400 + 6 * 3600 + 1800;
        assert_eq!(local_intent(&e, &zone, june), Some(true));
        assert_eq!(local_intent(&e, &zone, june - 3600), Some(false));
        assert_eq!(local_intent(&e, &zone, TUE + 7 * 3600 + 1800), Some(true));
        assert_eq!(local_intent(&e, &zone, TUE + 6 * 3600 + 1800), Some(false));
    }
}
