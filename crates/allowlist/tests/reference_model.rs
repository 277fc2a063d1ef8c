//! Decisions through the whole pipeline (builder → binary → in-place lookup → `access::evaluate`)
//! against a reference model written separately, with jiff for the calendar, over random
//! entries and instants.

use chronolock_core::access::{self, Decision, Verdict};
use chronolock_core::allowlist::{AccessType, AllowList, Builder, CardEntry, Policy, Slot};
use chronolock_core::{UnixTime, WallTime};
use ed25519_dalek::SigningKey;
use jiff::{tz::TimeZone, Timestamp};
use proptest::prelude::*;

/// What the reference model says: a decision, or "ask the backend".
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Decided(&'static str),
    Ask,
}

fn reference(access: AccessType, from: i64, until: i64, slots: &[Slot], now: Option<i64>) -> Want {
    let Some(now) = now else {
        // ADR-011 with now = 0.
        return match access {
            AccessType::Unrestricted => Want::Decided("GRANTED"),
            AccessType::Emergency => Want::Decided("GRANTED_EMERGENCY"),
            AccessType::Conditional => Want::Ask,
            AccessType::Scheduled if !slots.is_empty() => Want::Decided("DENIED_TIME_RESTRICTION"),
            AccessType::Scheduled if from > 0 => Want::Decided("DENIED_NOT_YET_VALID"),
            AccessType::Scheduled => Want::Decided("GRANTED"),
        };
    };
    if from != 0 && now < from {
        return Want::Decided("DENIED_NOT_YET_VALID");
    }
    if until != 0 && now > until {
        return Want::Decided("DENIED_EXPIRED");
    }
    match access {
        AccessType::Unrestricted => Want::Decided("GRANTED"),
        AccessType::Emergency => Want::Decided("GRANTED_EMERGENCY"),
        AccessType::Conditional => Want::Ask,
        AccessType::Scheduled if slots.is_empty() => Want::Decided("GRANTED"),
        AccessType::Scheduled => {
            let zoned = Timestamp::from_second(now)
                .expect("in range")
                .to_zoned(TimeZone::UTC);
            let minute = i32::from(zoned.hour()) * 60 + i32::from(zoned.minute());
            // jiff: Monday = 1 … Sunday = 7.
            let today = zoned.weekday().to_monday_one_offset() - 1;
            let yesterday = zoned
                .yesterday()
                .expect("in range")
                .weekday()
                .to_monday_one_offset()
                - 1;
            let open = slots.iter().any(|s| {
                let applies = (s.from == 0 || now >= s.from) && (s.until == 0 || now < s.until);
                let on = |day: i8| s.days & (1 << day) != 0;
                let (start, end) = (i32::from(s.start_min), i32::from(s.end_min));
                applies
                    && if start < end {
                        on(today) && start <= minute && minute < end
                    } else {
                        (on(today) && minute >= start) || (on(yesterday) && minute < end)
                    }
            });
            Want::Decided(if open {
                "GRANTED"
            } else {
                "DENIED_TIME_RESTRICTION"
            })
        }
    }
}

// Instants in 2026–2027, and bounds around them, so that ranges and slot bounds both bite.
const LO: i64 = 1_767_225_600;
const HI: i64 = 1_830_297_600;

fn arb_slot() -> impl Strategy<Value = Slot> {
    (
        1u8..128,
        0u16..1440,
        1u16..=1440,
        prop_oneof![Just(0i64), LO..HI],
        prop_oneof![Just(0i64), LO..HI],
    )
        .prop_filter("start != end", |(_, s, e, _, _)| s != e)
        .prop_map(|(days, start_min, end_min, from, until)| Slot {
            days,
            start_min,
            end_min,
            from,
            until,
        })
}

fn arb_access() -> impl Strategy<Value = AccessType> {
    prop_oneof![
        1 => Just(AccessType::Unrestricted),
        1 => Just(AccessType::Emergency),
        1 => Just(AccessType::Conditional),
        4 => Just(AccessType::Scheduled),
    ]
}

type EntrySpec = (AccessType, i64, i64, Vec<Slot>);

fn arb_entry() -> impl Strategy<Value = EntrySpec> {
    (
        arb_access(),
        prop_oneof![Just(0i64), LO..HI],
        prop_oneof![Just(0i64), LO..HI],
        prop::collection::vec(arb_slot(), 0..4),
    )
        .prop_map(|(access, from, until, slots)| {
            let slots = if access == AccessType::Scheduled {
                slots
            } else {
                vec![]
            };
            (access, from, until, slots)
        })
}

/// How an instant is drawn: anywhere, or within a few seconds of an edge where an off-by-one
/// would show.
#[derive(Clone, Copy, Debug)]
enum Draw {
    /// Anywhere in the years sampled.
    Anywhere(i64),
    /// An entry's `valid_from` or `valid_until` (inclusive), give or take `jitter` seconds.
    DateEdge {
        entry: usize,
        until: bool,
        jitter: i64,
    },
    /// A slot's start or end minute on the UTC day of `day_of`, or its `from`/`until`.
    SlotEdge {
        entry: usize,
        slot: usize,
        which: u8,
        day_of: i64,
        jitter: i64,
    },
}

fn arb_draw() -> impl Strategy<Value = Option<Draw>> {
    let draw = prop_oneof![
        2 => (LO..HI).prop_map(Draw::Anywhere),
        1 => (0usize..20, any::<bool>(), -2i64..=2)
            .prop_map(|(entry, until, jitter)| Draw::DateEdge { entry, until, jitter }),
        2 => (0usize..20, 0usize..4, 0u8..4, LO..HI, -2i64..=2).prop_map(
            |(entry, slot, which, day_of, jitter)| Draw::SlotEdge { entry, slot, which, day_of, jitter }
        ),
    ];
    prop::option::weighted(0.9, draw)
}

/// The instant a draw stands for, among these entries.
fn instant(entries: &[EntrySpec], draw: Draw) -> i64 {
    match draw {
        Draw::Anywhere(t) => t,
        Draw::DateEdge {
            entry,
            until,
            jitter,
        } => {
            let (_, from, to, _) = &entries[entry % entries.len()];
            let edge = if until { *to } else { *from };
            if edge == 0 {
                LO
            } else {
                edge + jitter
            }
        }
        Draw::SlotEdge {
            entry,
            slot,
            which,
            day_of,
            jitter,
        } => {
            let (_, _, _, slots) = &entries[entry % entries.len()];
            let Some(s) = slots.get(slot % slots.len().max(1)) else {
                return day_of;
            };
            let day = day_of.div_euclid(86_400) * 86_400;
            let edge = match which {
                0 => day + i64::from(s.start_min) * 60,
                1 => day + i64::from(s.end_min) * 60,
                2 if s.from != 0 => s.from,
                3 if s.until != 0 => s.until,
                _ => day,
            };
            edge + jitter
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every entry at instants drawn anywhere and, more often, a couple of seconds around date
    /// and slot edges; an instant may also be "clock not valid" (ADR-011).
    #[test]
    fn decisions_match_the_reference_model(
        entries in prop::collection::vec(arb_entry(), 1..20),
        draws in prop::collection::vec(arb_draw(), 1..20),
    ) {
        let instants: Vec<Option<i64>> = draws
            .iter()
            .map(|d| d.map(|d| instant(&entries, d)))
            .collect();
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut b = Builder::new();
        for (i, (access, from, until, slots)) in entries.iter().enumerate() {
            let uid = (0x0100_0000u32 + i as u32).to_be_bytes().to_vec();
            let policy = Policy::new(*access, *from, *until);
            b.card(&CardEntry { uid, policy, slots: slots.clone() }).unwrap();
        }
        let bytes = b.build(1, LO, &key).unwrap();
        let list = AllowList::verify(&bytes, &key.verifying_key()).unwrap();
        for (i, (access, from, until, slots)) in entries.iter().enumerate() {
            let uid = (0x0100_0000u32 + i as u32).to_be_bytes();
            let policy = list.policy(list.find_card(&uid).unwrap()).unwrap();
            for now in &instants {
                let wall = now.map(|s| WallTime::new(UnixTime::from_secs(s), 0));
                let got = match access::evaluate(&policy, list.slots_of(&policy), wall.as_ref()) {
                    Verdict::Decided(d) => Want::Decided(d.as_str()),
                    Verdict::AskBackend => Want::Ask,
                };
                prop_assert_eq!(got, reference(*access, *from, *until, slots, *now), "entry {} at {:?}", i, now);
            }
        }
        // Cards that are not in the list are unknown.
        prop_assert!(list.find_card(&0x0200_0000u32.to_be_bytes()).is_none());
        let _ = Decision::DeniedUnknown;
    }
}
