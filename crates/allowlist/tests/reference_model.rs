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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_match_the_reference_model(
        entries in prop::collection::vec(arb_entry(), 1..20),
        instants in prop::collection::vec(prop::option::weighted(0.9, LO..HI), 1..20),
    ) {
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
