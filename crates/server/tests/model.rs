//! The site model and per-door allow-lists, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use chronolock_core::access::{evaluate, Decision, Verdict};
use chronolock_core::allowlist::{AccessType, AllowList};
use chronolock_core::{UnixTime, WallTime};
use chronolock_server::model::{self, KeypadSpec, ModelError, RuleSpec, Subject};
use chronolock_server::schedule::LocalSlot;

/// Tuesday 2026-11-24, 12:00 UTC.
const NOW: i64 = 1_795_521_600;

fn decide(list: &AllowList<&[u8]>, uid: &[u8], at: i64) -> Option<Verdict> {
    let policy = list.policy(list.find_card(uid)?)?;
    Some(evaluate(
        &policy,
        list.slots_of(&policy),
        Some(&WallTime::new(UnixTime::from_secs(at), 0)),
    ))
}

fn field_of(e: ModelError) -> &'static str {
    match e {
        ModelError::Invalid { field, .. } => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[tokio::test]
async fn door_lists_follow_the_model() {
    for (label, state) in common::states("model").await {
        let site = model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let door = model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        let alice = model::create_person(&state, site, "Alice").await.unwrap();
        let bob = model::create_person(&state, site, "Bob").await.unwrap();
        model::add_card(&state, alice, "04a1b2c3").await.unwrap();
        let keypad = KeypadSpec {
            code: "1234".into(),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            digits: 6,
            period_s: 30,
            ..KeypadSpec::default()
        };
        model::add_keypad_user(&state, alice, &keypad)
            .await
            .unwrap();
        model::add_card(&state, bob, "04B0B0B0").await.unwrap();
        let staff = model::create_group(&state, site, "Staff").await.unwrap();
        model::add_member(&state, staff, bob).await.unwrap();
        let workdays = LocalSlot {
            days: 0b001_1111,
            start_min: 9 * 60,
            end_min: 18 * 60,
        };
        let hours = model::create_schedule(&state, site, "Office hours", &[workdays])
            .await
            .unwrap();
        let rule = |subject, access, schedule_id| RuleSpec {
            door_id: door,
            subject,
            access,
            valid_from: 0,
            valid_until: 0,
            schedule_id,
        };
        model::add_rule(
            &state,
            &rule(Subject::Person(alice), AccessType::Unrestricted, None),
        )
        .await
        .unwrap();
        model::add_rule(
            &state,
            &rule(Subject::Group(staff), AccessType::Scheduled, Some(hours)),
        )
        .await
        .unwrap();

        assert_eq!(
            model::refresh_door(&state, door, NOW).await.unwrap(),
            1,
            "{label}"
        );
        assert_eq!(
            model::refresh_door(&state, door, NOW + 60).await.unwrap(),
            1,
            "no change, same generation"
        );
        let (generation, bytes) = model::door_list(&state, door).await.unwrap().unwrap();
        assert_eq!(generation, 1);
        let key = ed25519_dalek::VerifyingKey::from_bytes(&state.site_public_key).unwrap();
        let list = AllowList::verify(&bytes, &key).unwrap();
        assert_eq!(
            (
                list.info().generation,
                list.info().cards,
                list.info().keypad_users
            ),
            (1, 2, 1)
        );
        assert_eq!(
            decide(&list, &[0x04, 0xA1, 0xB2, 0xC3], NOW),
            Some(Verdict::Decided(Decision::Granted))
        );
        // Bob: 09:00–18:00 Berlin time (CET, UTC+1) on weekdays.
        let bob_uid = [0x04, 0xB0, 0xB0, 0xB0];
        assert_eq!(
            decide(&list, &bob_uid, NOW),
            Some(Verdict::Decided(Decision::Granted)),
            "13:00 CET"
        );
        assert_eq!(
            decide(&list, &bob_uid, NOW - 4 * 3600 - 60),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction)),
            "08:59 CET"
        );
        assert_eq!(
            decide(&list, &bob_uid, NOW + 5 * 3600),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction)),
            "18:00 CET"
        );
        assert!(list
            .find_keypad_user(b"1234", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());

        // A change that affects the door raises the generation.
        model::add_card(&state, bob, "04B0B0B1").await.unwrap();
        assert_eq!(model::refresh_door(&state, door, NOW).await.unwrap(), 2);
        // A rule for the person beats the group's.
        model::add_rule(
            &state,
            &rule(Subject::Person(bob), AccessType::Conditional, None),
        )
        .await
        .unwrap();
        assert_eq!(model::refresh_door(&state, door, NOW).await.unwrap(), 3);
        let (_, bytes) = model::door_list(&state, door).await.unwrap().unwrap();
        let list = AllowList::verify(&bytes, &key).unwrap();
        assert_eq!(decide(&list, &bob_uid, NOW), Some(Verdict::AskBackend));

        // Bad input is refused, naming the field, and nothing is stored.
        assert_eq!(
            field_of(
                model::create_site(&state, "X", "Mars/Olympus")
                    .await
                    .unwrap_err()
            ),
            "timezone"
        );
        assert_eq!(
            field_of(model::add_card(&state, bob, "04B0").await.unwrap_err()),
            "uid"
        );
        assert_eq!(
            field_of(model::add_card(&state, bob, "zz").await.unwrap_err()),
            "uid"
        );
        assert_eq!(
            field_of(
                model::add_card(&state, alice, "04B0B0B0")
                    .await
                    .unwrap_err()
            ),
            "uid",
            "taken"
        );
        let bad = KeypadSpec {
            code: "12a4".into(),
            ..keypad.clone()
        };
        assert_eq!(
            field_of(
                model::add_keypad_user(&state, alice, &bad)
                    .await
                    .unwrap_err()
            ),
            "code"
        );
        assert_eq!(
            field_of(
                model::add_keypad_user(&state, bob, &keypad)
                    .await
                    .unwrap_err()
            ),
            "code",
            "taken"
        );
        let empty = LocalSlot {
            days: 1,
            start_min: 60,
            end_min: 60,
        };
        assert_eq!(
            field_of(
                model::create_schedule(&state, site, "Never", &[empty])
                    .await
                    .unwrap_err()
            ),
            "slots"
        );
        assert_eq!(
            field_of(model::create_person(&state, site, "   ").await.unwrap_err()),
            "name"
        );
        assert_eq!(
            model::refresh_door(&state, door, NOW).await.unwrap(),
            3,
            "failed edits changed nothing"
        );
    }
}
