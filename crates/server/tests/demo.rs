//! `serve --demo`'s seed, on SQLite and PostgreSQL: a site whose doors have signed lists with
//! the demo credentials, pairing codes for the doors, and no duplicates when seeded again.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use chronolock_core::access::{evaluate, Decision, Verdict};
use chronolock_core::allowlist::{AccessType, AllowList};
use chronolock_core::{UnixTime, WallTime};
use chronolock_server::{demo, device, model, now_unix, AppState};

fn uid(hex: &str) -> Vec<u8> {
    data_encoding::HEXUPPER.decode(hex.as_bytes()).unwrap()
}

/// What the list says about a card at `at` (`None`: not on the list).
fn verdict(list: &AllowList<&[u8]>, card: &str, at: i64) -> Option<Verdict> {
    let policy = list.policy(list.find_card(&uid(card))?)?;
    Some(evaluate(
        &policy,
        list.slots_of(&policy),
        Some(&WallTime::new(UnixTime::from_secs(at), 0)),
    ))
}

fn access(list: &AllowList<&[u8]>, card: &str) -> Option<AccessType> {
    list.policy(list.find_card(&uid(card))?).map(|p| p.access)
}

async fn count(state: &AppState, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn demo_seed_makes_a_working_site_once() {
    for (label, state) in common::states("demo").await {
        let seeded = demo::seed(&state).await.unwrap().expect("seeded");
        let (name, zone): (String, String) =
            sqlx::query_as("SELECT name, timezone FROM sites WHERE id = $1")
                .bind(seeded.site_id)
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        assert_eq!(
            (name.as_str(), zone.as_str()),
            ("Demo Makerspace", "Europe/Berlin"),
            "{label}"
        );
        let names: Vec<&str> = seeded.doors.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["Front door", "Workshop", "Server room"]);

        let key = ed25519_dalek::VerifyingKey::from_bytes(&state.site_public_key).unwrap();
        let now = now_unix();
        let mut lists = Vec::new();
        for (name, id, code) in &seeded.doors {
            let (generation, bytes) = model::door_list(&state, *id).await.unwrap().unwrap();
            assert!(generation >= 1, "{label}: {name}");
            let list = AllowList::open(&bytes).unwrap();
            assert_eq!(list.info().generation, generation);
            assert!(
                AllowList::verify(&bytes, &key).is_ok(),
                "signed by the site"
            );
            // One pairing code per door, stored as its hash only.
            let (hash,): (Option<String>,) =
                sqlx::query_as("SELECT pairing_hash FROM doors WHERE id = $1")
                    .bind(*id)
                    .fetch_one(state.db.pool())
                    .await
                    .unwrap();
            assert_eq!(hash, Some(device::code_hash(code)), "{name}");
            assert_eq!(code.len(), 14, "{code}");
            lists.push(bytes);
        }
        let front = AllowList::open(&lists[0]).unwrap();
        let workshop = AllowList::open(&lists[1]).unwrap();
        let server_room = AllowList::open(&lists[2]).unwrap();

        // Staff (4- and 7-byte cards) everywhere, unrestricted.
        for list in [&front, &workshop, &server_room] {
            assert_eq!(access(list, "04A1B2C3"), Some(AccessType::Unrestricted));
            assert_eq!(
                access(list, "04B2C3D4E5F607"),
                Some(AccessType::Unrestricted)
            );
        }
        // Members on weekdays at the front door and the workshop, not in the server room.
        assert_eq!(access(&front, "1A2B3C4D"), Some(AccessType::Scheduled));
        assert_eq!(
            access(&workshop, "04C3D4E5F60718"),
            Some(AccessType::Scheduled)
        );
        assert_eq!(access(&server_room, "1A2B3C4D"), None);
        // Tuesday 2026-11-24 12:00 UTC is 13:00 in Berlin: inside; 20:30 local is not.
        let (tuesday_noon, tuesday_late) = (1_795_521_600, 1_795_521_600 + 7 * 3600 + 1800);
        assert_eq!(
            verdict(&front, "1A2B3C4D", tuesday_noon),
            Some(Verdict::Decided(Decision::Granted))
        );
        assert_eq!(
            verdict(&front, "1A2B3C4D", tuesday_late),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction))
        );
        // The night shift crosses midnight: 23:30 local passes, noon does not.
        assert_eq!(
            verdict(&server_room, "6A7B8C9D", tuesday_late + 3 * 3600),
            Some(Verdict::Decided(Decision::Granted))
        );
        assert_eq!(
            verdict(&server_room, "6A7B8C9D", tuesday_noon),
            Some(Verdict::Decided(Decision::DeniedTimeRestriction))
        );
        // The visitor is asked about; the fire brigade opens the front door only.
        assert_eq!(verdict(&front, "2C3D4E5F", now), Some(Verdict::AskBackend));
        assert_eq!(
            access(&front, "04F1E2D3C4B5A6"),
            Some(AccessType::Emergency)
        );
        assert_eq!(access(&workshop, "04F1E2D3C4B5A6"), None);
        // One rule has expired, one has not started yet.
        assert_eq!(
            verdict(&workshop, "7B8C9DAE", now),
            Some(Verdict::Decided(Decision::DeniedExpired))
        );
        assert_eq!(
            verdict(&front, "04D4E5F6071829", now),
            Some(Verdict::Decided(Decision::DeniedNotYetValid))
        );
        // Keypad users: Ada (TOTP and HOTP) everywhere, Linus (TOTP) where members go.
        assert!(front
            .find_keypad_user(b"1234", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());
        assert!(server_room
            .find_keypad_user(b"1234", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());
        assert!(workshop
            .find_keypad_user(b"4711", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_some());
        assert!(server_room
            .find_keypad_user(b"4711", &mut [0; chronolock_core::allowlist::KEYPAD_LEN])
            .is_none());

        // Seeding again leaves the site as it is.
        let before = (
            count(&state, "sites").await,
            count(&state, "doors").await,
            count(&state, "people").await,
            count(&state, "rules").await,
        );
        assert!(demo::seed(&state).await.unwrap().is_none());
        let after = (
            count(&state, "sites").await,
            count(&state, "doors").await,
            count(&state, "people").await,
            count(&state, "rules").await,
        );
        assert_eq!(before, after);
        assert_eq!(after.0, 1);
        assert_eq!(after.1, 3);
    }
}
