//! Holidays through the schedule compiler, checked the way the device decides: the compiled UTC
//! slots, matched by the core's `slot_contains` at random instants, against a reference written
//! directly in the site's local time with jiff.
//!
//! The reference's rule (the compiler's module documentation gives the same): a slot occurrence
//! belongs to the local day it starts on. It is closed if that day is a holiday, also after
//! midnight; and an occurrence that started the day before is closed from the midnight at which
//! a holiday begins.

use chronolock_allowlist::schedule::{compile_with_holidays, Holiday, LocalSlot};
use chronolock_core::access::slot_contains;
use chronolock_core::allowlist::Slot;
use chronolock_core::{UnixTime, WallTime};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use proptest::prelude::*;

const HORIZON_DAYS: i64 = 56;

/// Whether `day` is closed by `h`, from the holiday's own words: a one-off covers first..=last;
/// a yearly one covers, in each year from its first on, the same month-days (a Feb 29 start only
/// in leap years, a Feb 29 end on Feb 28 otherwise), the range possibly running into next year.
fn closes(h: &Holiday, day: Date) -> bool {
    if !h.yearly {
        return h.first <= day && day <= h.last;
    }
    let span_years = h.last.year() - h.first.year();
    // The occurrence that covers `day` starts this year or the year before.
    [day.year() - 1, day.year()].into_iter().any(|year| {
        if year < h.first.year() {
            return false;
        }
        let Ok(first) = Date::new(year, h.first.month(), h.first.day()) else {
            return false;
        };
        let end_year = year + span_years;
        let last = match Date::new(end_year, h.last.month(), h.last.day()) {
            Ok(d) => d,
            Err(_) => Date::new(end_year, 2, 28).expect("Feb 28 exists"),
        };
        first <= day && day <= last
    })
}

/// Open at `t` by the local schedule with holidays, worked out in local civil time.
fn reference_open(
    zone: &TimeZone,
    slots: &[LocalSlot],
    holidays: &[Holiday],
    t: Timestamp,
) -> bool {
    let z = t.to_zoned(zone.clone());
    let minute = i32::from(z.hour()) * 60 + i32::from(z.minute());
    let today = z.date();
    let yesterday = today.yesterday().expect("in range");
    let holiday = |d: Date| holidays.iter().any(|h| closes(h, d));
    let weekday = |d: Date| d.weekday().to_monday_zero_offset();
    if holiday(today) {
        return false;
    }
    slots.iter().any(|s| {
        let on = |d: Date| s.days & (1 << weekday(d)) != 0;
        let (a, b) = (i32::from(s.start_min), i32::from(s.end_min));
        if a < b {
            on(today) && a <= minute && minute < b
        } else {
            // Started today; or started yesterday, still running, and yesterday was no holiday.
            (on(today) && minute >= a) || (on(yesterday) && minute < b && !holiday(yesterday))
        }
    })
}

fn device_open(compiled: &[Slot], t: Timestamp) -> bool {
    let wall = WallTime::new(UnixTime::from_secs(t.as_second()), 0);
    compiled.iter().any(|s| slot_contains(s, &wall))
}

fn plus_days(d: Date, n: i64) -> Date {
    d.checked_add(n.days()).expect("in range")
}

/// How a holiday is drawn, relative to the start of the horizon.
#[derive(Clone, Copy, Debug)]
enum HolidayDraw {
    /// `at` days after the horizon's first local day, `len` more days, maybe yearly and entered
    /// `years_back` years earlier.
    Near {
        at: i64,
        len: i64,
        yearly: bool,
        years_back: i16,
    },
    /// On (or around) the local day of the zone's `switch`-th offset change in the horizon.
    OnSwitch {
        switch: usize,
        before: i64,
        len: i64,
    },
    /// A yearly range across the year end: December `dec` to January `jan`, entered for
    /// `years_back` years before the horizon.
    YearEnd { dec: i8, jan: i8, years_back: i16 },
}

fn arb_holiday() -> impl Strategy<Value = HolidayDraw> {
    prop_oneof![
        3 => (-3i64..HORIZON_DAYS, 0i64..6, any::<bool>(), 0i16..3).prop_map(
            |(at, len, yearly, years_back)| HolidayDraw::Near { at, len, yearly, years_back }
        ),
        2 => (0usize..4, 0i64..2, 0i64..3)
            .prop_map(|(switch, before, len)| HolidayDraw::OnSwitch { switch, before, len }),
        1 => (20i8..32, 1i8..5, 0i16..3)
            .prop_map(|(dec, jan, years_back)| HolidayDraw::YearEnd { dec, jan, years_back }),
    ]
}

fn holiday_of(
    draw: HolidayDraw,
    zone: &TimeZone,
    from: Timestamp,
    switches: &[Timestamp],
) -> Holiday {
    let day0 = from.to_zoned(zone.clone()).date();
    match draw {
        HolidayDraw::Near {
            at,
            len,
            yearly,
            years_back,
        } => {
            let first = plus_days(day0, at);
            let last = plus_days(first, len);
            let back = |d: Date| {
                d.checked_sub(i64::from(years_back).years())
                    .expect("in range")
            };
            if yearly && years_back > 0 {
                // Entered in an earlier year: same month-days (Feb 29 clamps to Feb 28).
                let (f, l) = (back(first), back(last));
                Holiday {
                    first: f,
                    last: l.max(f),
                    yearly,
                }
            } else {
                Holiday {
                    first,
                    last,
                    yearly,
                }
            }
        }
        HolidayDraw::OnSwitch {
            switch,
            before,
            len,
        } => {
            let day = switches
                .get(switch % switches.len().max(1))
                .map_or(day0, |t| t.to_zoned(zone.clone()).date());
            let first = plus_days(day, -before);
            Holiday {
                first,
                last: plus_days(first, len),
                yearly: false,
            }
        }
        HolidayDraw::YearEnd {
            dec,
            jan,
            years_back,
        } => {
            let year = day0.year() - years_back;
            Holiday {
                first: Date::new(year, 12, dec.min(31)).expect("a December day"),
                last: Date::new(year + 1, 1, jan).expect("a January day"),
                yearly: true,
            }
        }
    }
}

/// An instant to probe: anywhere in the horizon, or near a local midnight that begins or ends a
/// holiday, or near a slot's local edge on such a day.
fn probe(
    zone: &TimeZone,
    from: Timestamp,
    slots: &[LocalSlot],
    holidays: &[Holiday],
    (kind, pick, jitter_s, offset_s): (u8, usize, i64, i64),
) -> Option<Timestamp> {
    let at = |t: Timestamp, s: i64| t.checked_add(SignedDuration::from_secs(s)).ok();
    if kind == 0 || holidays.is_empty() {
        return at(from, offset_s);
    }
    let h = holidays[pick % holidays.len()];
    // The occurrence near the horizon: shift a yearly holiday into the horizon's year(s).
    let year = from.to_zoned(zone.clone()).date().year();
    let (first, last) = if h.yearly {
        h.in_year(year - (pick as i16 / 7) % 2)
            .unwrap_or((h.first, h.last))
    } else {
        (h.first, h.last)
    };
    let day = if pick % 2 == 0 {
        first
    } else {
        last.tomorrow().ok()?
    };
    let minute = match kind {
        1 => 0,
        _ => {
            let s = slots[pick % slots.len()];
            if jitter_s >= 0 {
                s.start_min
            } else {
                s.end_min % 1440
            }
        }
    };
    let local = day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
    let t = local.to_zoned(zone.clone()).ok()?.timestamp();
    at(t, jitter_s.signum() * (jitter_s.abs() % 3))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Compiled slots with holidays, as the device matches them, agree with the local-time
    /// reference at every probed instant within the horizon.
    #[test]
    fn compiled_holidays_match_local_time(
        zone in prop::sample::select(vec!["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC"]),
        slots in prop::collection::vec((1u8..128, 0u16..1440, 1u16..=1440), 1..4),
        start in 1_767_225_600i64..1_893_456_000,
        december in any::<bool>(),
        before_switch in prop::option::of(0i64..(20 * 86_400)),
        holidays in prop::collection::vec(arb_holiday(), 0..5),
        probes in prop::collection::vec((0u8..3, 0usize..64, -3i64..=3, 0i64..(HORIZON_DAYS * 86_400)), 1..60),
    ) {
        let zone = TimeZone::get(zone).expect("a known zone");
        let slots: Vec<LocalSlot> = slots
            .into_iter()
            .filter(|(_, s, e)| s != e)
            .map(|(days, start_min, end_min)| LocalSlot { days, start_min, end_min })
            .collect();
        prop_assume!(!slots.is_empty());
        let mut from = Timestamp::from_second(start).expect("in range");
        if december {
            // Some horizons begin in mid-December, so that the year end falls inside.
            let year = from.to_zoned(TimeZone::UTC).year();
            from = Date::new(year, 12, 10).expect("a date").to_zoned(TimeZone::UTC).expect("UTC").timestamp();
        } else if let (Some(lead), Some(next)) = (before_switch, zone.following(from).next()) {
            from = next.timestamp().checked_sub(SignedDuration::from_secs(lead)).expect("in range");
        }
        let horizon_end = from.checked_add(SignedDuration::from_hours(24 * HORIZON_DAYS)).expect("in range");
        let switches: Vec<Timestamp> = zone
            .following(from)
            .map(|t| t.timestamp())
            .take_while(|t| *t < horizon_end)
            .collect();
        let holidays: Vec<Holiday> = holidays.into_iter().map(|d| holiday_of(d, &zone, from, &switches)).collect();
        let compiled = compile_with_holidays(&zone, &slots, &holidays, from, HORIZON_DAYS).expect("compiles");
        prop_assert!(compiled.iter().all(Slot::is_well_formed));
        prop_assert!(!compiled.is_empty(), "a schedule never compiles to no slots (that would mean always open)");
        for p in probes {
            let Some(t) = probe(&zone, from, &slots, &holidays, p) else { continue };
            if t < from || t >= horizon_end {
                continue;
            }
            prop_assert_eq!(
                device_open(&compiled, t),
                reference_open(&zone, &slots, &holidays, t),
                "at {} ({})", t, t.to_zoned(zone.clone())
            );
        }
    }
}
