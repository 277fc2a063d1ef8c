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

/// A change that reaches many doors compiles the whole site at once (its data read once, the
/// lists built on every core); each door's list is the one its own rules give, as the
/// door-by-door path reads them, and a second pass that changes nothing stores nothing.
#[tokio::test]
async fn a_whole_site_compiles_at_once_as_door_by_door() {
    use sha2::{Digest, Sha256};
    for (label, state) in common::states("site_compile").await {
        let site = model::create_site(&state, "Offices", "Europe/Berlin")
            .await
            .unwrap();
        let hours = model::create_schedule(
            &state,
            site,
            "Office hours",
            &[LocalSlot {
                days: 0b001_1111,
                start_min: 8 * 60,
                end_min: 19 * 60,
            }],
        )
        .await
        .unwrap();
        let staff = model::create_group(&state, site, "Staff").await.unwrap();
        let mut people = Vec::new();
        for i in 0..30 {
            let p = model::create_person(&state, site, &format!("Person {i}"))
                .await
                .unwrap();
            model::add_card(&state, p, &format!("04{:06X}", 0xA000 + i))
                .await
                .unwrap();
            if i % 3 == 0 {
                model::add_member(&state, staff, p).await.unwrap();
            }
            people.push(p);
        }
        let keypad = KeypadSpec {
            code: "2468".into(),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            digits: 6,
            period_s: 30,
            ..KeypadSpec::default()
        };
        model::add_keypad_user(&state, people[3], &keypad)
            .await
            .unwrap();
        // One person's last day has passed: left out everywhere.
        sqlx::query("UPDATE people SET expires_on = '2020-01-01' WHERE id = $1")
            .bind(people[6])
            .execute(state.db.pool())
            .await
            .unwrap();
        let mut doors = Vec::new();
        for d in 0..12 {
            let door = model::create_door(&state, site, &format!("Door {d}"))
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
                &rule(Subject::Group(staff), AccessType::Scheduled, Some(hours)),
            )
            .await
            .unwrap();
            // A person's own rule beats their group's.
            model::add_rule(
                &state,
                &rule(
                    Subject::Person(people[d % 30]),
                    AccessType::Unrestricted,
                    None,
                ),
            )
            .await
            .unwrap();
            // A third policy, so that the list's policy table has an order to keep.
            model::add_rule(
                &state,
                &rule(
                    Subject::Person(people[(d + 1) % 30]),
                    AccessType::Conditional,
                    None,
                ),
            )
            .await
            .unwrap();
            doors.push(door);
        }
        // Everything due at once: the site path.
        let n = model::site_changed(&state, site).await.unwrap();
        assert!(n >= 12, "{label}: {n}");
        let stored = |door: i64| {
            let state = state.clone();
            async move {
                let (generation, digest): (i64, Option<String>) =
                    sqlx::query_as("SELECT generation, list_digest FROM doors WHERE id = $1")
                        .bind(door)
                        .fetch_one(state.db.pool())
                        .await
                        .unwrap();
                (generation, digest.unwrap_or_default())
            }
        };
        let mut generations = Vec::new();
        for &door in &doors {
            let entries = model::door_entries(&state, door, NOW).await.unwrap();
            let canonical =
                chronolock_allowlist::compile(&entries, 0, 0, &state.signing_key).unwrap();
            let digest =
                data_encoding::HEXLOWER.encode(&Sha256::digest(&canonical[..canonical.len() - 64]));
            let (generation, stored_digest) = stored(door).await;
            assert_eq!(stored_digest, digest, "{label}: door {door}");
            assert!(generation >= 1, "{label}");
            let (_, bytes) = model::door_list(&state, door).await.unwrap().unwrap();
            let list = AllowList::verify(&bytes, &state.signing_key.verifying_key()).unwrap();
            assert!(
                list.find_card(&[4, 0, 0xA0, 6]).is_none(),
                "{label}: expired"
            );
            assert!(list.find_card(&[4, 0, 0xA0, 0]).is_some(), "{label}: staff");
            generations.push(generation);
        }
        // Passes that change nothing store nothing, through either path.
        for _ in 0..3 {
            model::site_changed(&state, site).await.unwrap();
            model::refresh_door(&state, doors[0], NOW).await.unwrap();
        }
        for (&door, &generation) in doors.iter().zip(&generations) {
            assert_eq!(stored(door).await.0, generation, "{label}: door {door}");
        }
    }
}

/// A secure card reaches a paired door's list flagged secure, with the site's card master key
/// sealed to that door; a door without secure cards, and an unpaired door, get no key; a
/// rotation is a new list carrying both keys.
#[tokio::test]
async fn secure_cards_carry_the_sealed_master_key_to_paired_doors_only() {
    for (label, state) in common::states("secure_cards").await {
        let site = model::create_site(&state, "Office", "UTC").await.unwrap();
        let door = model::create_door(&state, site, "Front").await.unwrap();
        let side = model::create_door(&state, site, "Side").await.unwrap();
        let ada = model::create_person(&state, site, "Ada").await.unwrap();
        let bob = model::create_person(&state, site, "Bob").await.unwrap();
        let e = model::add_card_kind(&state, ada, "04DE5F1EAC", true)
            .await
            .unwrap_err();
        assert_eq!(
            field_of(e),
            "uid",
            "{label}: a secure card has a 7-byte UID"
        );
        model::add_card_kind(&state, ada, "04de5f1eacc040", true)
            .await
            .unwrap();
        model::add_card(&state, bob, "04B0B0B0").await.unwrap();
        for (d, who) in [(door, ada), (side, bob)] {
            model::add_rule(
                &state,
                &RuleSpec {
                    door_id: d,
                    subject: Subject::Person(who),
                    access: AccessType::Unrestricted,
                    valid_from: 0,
                    valid_until: 0,
                    schedule_id: None,
                },
            )
            .await
            .unwrap();
        }
        let device_key = [7u8; 32];
        let list_key = chronolock_core::protocol::list_key(&device_key);
        let site_key = ed25519_dalek::VerifyingKey::from_bytes(&state.site_public_key).unwrap();
        let list_of = |d: i64| {
            let state = state.clone();
            async move { model::door_list(&state, d).await.unwrap().unwrap().1 }
        };
        // Unpaired: the list is not sealed to any device, so it carries no key.
        model::refresh_door(&state, door, NOW).await.unwrap();
        let bytes = list_of(door).await;
        let list = AllowList::verify(&bytes, &site_key).unwrap();
        assert!(
            list.card(&[4, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40])
                .unwrap()
                .secure
        );
        assert!(!list.info().card_keys, "{label}: unpaired door");
        // Paired: sealed, with the key the server keeps.
        for d in [door, side] {
            sqlx::query("UPDATE doors SET device_key = $1 WHERE id = $2")
                .bind(device_key.to_vec())
                .bind(d)
                .execute(state.db.pool())
                .await
                .unwrap();
            model::refresh_door(&state, d, NOW).await.unwrap();
        }
        let keys = chronolock_server::card_keys::keys(&state.db).await.unwrap();
        let bytes = list_of(door).await;
        let list = AllowList::verify(&bytes, &site_key).unwrap();
        assert_eq!(list.card_master_keys(&list_key), Some(keys), "{label}");
        assert_ne!(
            list.card_master_keys(&[8; 32]),
            Some(keys),
            "{label}: sealed"
        );
        let clear = bytes.windows(16).any(|w| w == keys.current.0);
        assert!(
            !clear,
            "{label}: the master key is never in the list in clear"
        );
        let side_bytes = list_of(side).await;
        let side_list = AllowList::verify(&side_bytes, &site_key).unwrap();
        assert!(
            !side_list.info().card_keys,
            "{label}: no secure card at this door"
        );
        // Rotation: a new list with both keys.
        let before = list.info().generation;
        chronolock_server::card_keys::rotate(&state.db)
            .await
            .unwrap();
        model::site_changed(&state, site).await.unwrap();
        model::refresh_door(&state, door, NOW).await.unwrap();
        let bytes = list_of(door).await;
        let list = AllowList::verify(&bytes, &site_key).unwrap();
        assert!(list.info().generation > before, "{label}");
        let rotated = list.card_master_keys(&list_key).unwrap();
        assert_eq!(rotated.previous, Some(keys.current), "{label}");
        assert_eq!(rotated.current.1, keys.current.1 + 1, "{label}");
    }
}
