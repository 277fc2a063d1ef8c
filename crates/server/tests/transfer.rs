//! Import, export, backup and restore, on SQLite and PostgreSQL: an esp-rfid backup in and out,
//! re-imports that change nothing, bad rows that import nothing, round trips through CSV, JSON
//! and backups (a SQLite backup restored onto PostgreSQL too), people's expiry in the compiled
//! lists, and the import page's preview over HTTP.
#![allow(clippy::unwrap_used)] // tests: a failure should fail loudly

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chronolock_allowlist::Entry;
use chronolock_core::allowlist::AccessType;
use chronolock_server::directory::{self, PersonDetails, Site};
use chronolock_server::model::{self, RuleSpec, Subject};
use chronolock_server::schedule::LocalSlot;
use chronolock_server::transfer::{self, TransferError};
use chronolock_server::{router, AppState, Db};
use http_body_util::BodyExt;
use tower::ServiceExt;

const ESP_RFID: &str = r#"{
  "type": "esp-rfid-userbackup",
  "version": "v0.6",
  "list": [
    {"uid": "04a1b2c3", "pincode": "1234", "username": "Ada Lovelace", "acctype": 1, "acctype2": 0,
     "acctype3": 0, "acctype4": 0, "validsince": 0, "validuntil": 1893456000, "extra": "ignored"},
    {"uid": "8899aabbccddee", "pincode": "", "username": "Grace Hopper", "acctype": 99,
     "validsince": 0, "validuntil": 0},
    {"uid": "deadbeef", "username": "Former Member", "acctype": 0, "validuntil": 1700000000}
  ]
}"#;

async fn site(state: &AppState, zone: &str) -> Site {
    model::create_site(state, "Makerspace", zone).await.unwrap();
    directory::first_site(state).await.unwrap().unwrap()
}

async fn count(state: &AppState, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

async fn import_text(
    state: &AppState,
    site: &Site,
    text: &str,
) -> Result<transfer::ImportSummary, TransferError> {
    let doc = transfer::parse(text, &site.zone())?;
    transfer::import(state, site, &doc, true).await
}

/// Card UIDs (upper-case hex) in a door's compiled entries, with their policy's end.
async fn door_cards(state: &AppState, door: i64, now: i64) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = model::door_entries(state, door, now)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Card(c) | Entry::SecureCard(c) => {
                Some((data_encoding::HEXUPPER.encode(&c.uid), c.policy.valid_until))
            }
            Entry::Keypad(_) => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn esp_rfid_backup_imports_once_and_exports() {
    for (db, state) in common::states("transfer_esp").await {
        let site = site(&state, "Europe/Berlin").await;
        let front = model::create_door(&state, site.id, "Front").await.unwrap();
        model::create_door(&state, site.id, "Back").await.unwrap();
        let s = import_text(&state, &site, ESP_RFID).await.unwrap();
        assert_eq!((s.added, s.updated, s.unchanged), (3, 0, 0), "{db}: {s}");
        assert_eq!((s.cards, s.groups, s.rules), (3, 1, 2), "{db}: {s}");
        assert!(s.notes.iter().any(|n| n.contains("PIN")), "{db}: {s:?}");

        let doc = transfer::export(&state, &site).await.unwrap();
        let names: Vec<&str> = doc.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["Ada Lovelace", "Former Member", "Grace Hopper"],
            "{db}"
        );
        let ada = &doc.people[0];
        assert_eq!(
            ada.cards,
            ["04A1B2C3"],
            "{db}: esp-rfid UIDs become upper-case"
        );
        assert_eq!(ada.expiry.as_deref(), Some("2030-01-01"), "{db}");
        assert_eq!(ada.groups, [transfer::ESP_RFID_GROUP], "{db}");
        let grace = &doc.people[2];
        assert_eq!(grace.note.as_deref(), Some("esp-rfid admin"), "{db}");
        assert_eq!(grace.expiry, None, "{db}");
        assert_eq!(grace.groups, [transfer::ESP_RFID_GROUP], "{db}");
        let former = &doc.people[1];
        assert!(
            former.groups.is_empty() && former.rules.is_empty(),
            "{db}: acctype 0 has no access"
        );
        let group = doc
            .groups
            .iter()
            .find(|g| g.name == transfer::ESP_RFID_GROUP)
            .unwrap();
        let doors: Vec<(&str, &str)> = group
            .rules
            .iter()
            .map(|r| (r.door.as_str(), r.access.as_str()))
            .collect();
        assert_eq!(
            doors,
            [("Back", "UNRESTRICTED"), ("Front", "UNRESTRICTED")],
            "{db}"
        );

        // The doors were recompiled: the two with access are on the list, the disabled one not.
        let now = 1_795_000_000;
        let cards: Vec<String> = door_cards(&state, front, now)
            .await
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(cards, ["04A1B2C3", "8899AABBCCDDEE"], "{db}");
        let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
            .bind(front)
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        assert!(generation > 0, "{db}: the import recompiled the door");

        // Again: nothing changes.
        let again = import_text(&state, &site, ESP_RFID).await.unwrap();
        assert_eq!(
            (
                again.added,
                again.updated,
                again.unchanged,
                again.cards,
                again.rules,
                again.groups
            ),
            (0, 0, 3, 0, 0, 0),
            "{db}: {again}"
        );
        assert_eq!(transfer::export(&state, &site).await.unwrap(), doc, "{db}");
        assert_eq!(count(&state, "people").await, 3, "{db}");

        // What the admin wrote since stays: a note, an e-mail and a member number esp-rfid
        // does not know.
        let (grace,): (i64,) = sqlx::query_as("SELECT id FROM people WHERE name = 'Grace Hopper'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let details = PersonDetails::parse("grace@example.org", "G-1", "keyholder", "").unwrap();
        directory::set_person_details(&state, site.id, grace, &details)
            .await
            .unwrap();
        let again = import_text(&state, &site, ESP_RFID).await.unwrap();
        assert_eq!(
            (again.added, again.updated, again.unchanged),
            (0, 0, 3),
            "{db}: {again}"
        );
        let person = directory::person(&state, site.id, grace).await.unwrap();
        assert_eq!(person.details, details, "{db}");
    }
}

#[tokio::test]
async fn a_bad_row_names_row_and_field_and_imports_nothing() {
    for (db, state) in common::states("transfer_bad").await {
        let site = site(&state, "Europe/Berlin").await;
        model::create_door(&state, site.id, "Front").await.unwrap();
        let bad_acctype = ESP_RFID.replace("\"acctype\": 99", "\"acctype\": 7");
        let bad_uid = ESP_RFID.replace("deadbeef", "deadbe");
        let bad_until = ESP_RFID.replace("1700000000", "\"soon\"");
        let csv_date = "name,email,expiry\nAda,ada@example.org,2026-12-31\nBob,,2026-02-30\n";
        let csv_email = "name,email\nAda,ada@example.org\nBob,not an address\n";
        let csv_card = "name,cards\nAda,04A1B2C3\nBob,04A1B2C3 zz\n";
        let csv_access = "name,access\nAda,Front=UNRESTRICTED\nBob,Front=SOMETIMES\n";
        let csv_schedule = "name,access\nAda,Front=SCHEDULED/Nope\n";
        // Caught only against the database, after rows 2 and 3 were written: all rolled back.
        let csv_owner =
            "name,member_number,cards\nAda,1,04A1B2C3\nBob,2,11223344\nCyd,3,04A1B2C3\n";
        let csv_numbers = "name,member_number\nAda,7\nBob,7\n";
        for (text, at, field) in [
            (bad_acctype.as_str(), "row 2", "acctype"),
            (bad_uid.as_str(), "row 3", "uid"),
            (bad_until.as_str(), "row 3", "validuntil"),
            (csv_date, "row 3", "expiry"),
            (csv_email, "row 3", "email"),
            (csv_card, "row 3", "cards"),
            (csv_access, "row 3", "access"),
            (csv_schedule, "row 2", "access"),
            (csv_owner, "row 4", "cards"),
            (csv_numbers, "row 3", "name"),
        ] {
            match import_text(&state, &site, text).await {
                Err(TransferError::Row {
                    at: a,
                    field: f,
                    message,
                }) => {
                    assert_eq!(
                        (a.as_str(), f.as_str()),
                        (at, field),
                        "{db}: {message}\n{text}"
                    );
                }
                other => panic!("{db}: {other:?} for\n{text}"),
            }
            assert_eq!(
                count(&state, "people").await,
                0,
                "{db}: nothing imported\n{text}"
            );
            assert_eq!(count(&state, "cards").await, 0, "{db}");
            assert_eq!(count(&state, "groups").await, 0, "{db}");
        }
        // Malformed files: a clear error, never a panic.
        for (text, needle) in [
            (
                "{\"type\": \"esp-rfid-userbackup\", \"list\": [",
                "not valid JSON",
            ),
            ("{\"type\": \"esp-rfid-userbackup\"}", "list"),
            ("{\"hello\": 1}", "unknown JSON"),
            (
                "{\"format\": \"chronolock-export\", \"version\": 9}",
                "version",
            ),
            ("", "empty"),
            ("nom,prenom\nA,B\n", "unknown column"),
            ("name\n\"Ada\n", "never ends"),
            ("email\nada@example.org\n", "name"),
        ] {
            match transfer::parse(text, &site.zone()) {
                Err(e @ TransferError::Format(_)) => {
                    assert!(e.to_string().contains(needle), "{db}: {e} for {text:?}")
                }
                other => panic!("{db}: {other:?} for {text:?}"),
            }
        }
        assert_eq!(count(&state, "people").await, 0, "{db}");
    }
}

/// A site with every kind of thing an export holds.
async fn furnished(state: &AppState) -> Site {
    let site = site(state, "Europe/Berlin").await;
    let front = model::create_door(state, site.id, "Front door")
        .await
        .unwrap();
    let lab = model::create_door(state, site.id, "Lab").await.unwrap();
    let hours = model::create_schedule(
        state,
        site.id,
        "Office hours",
        &[LocalSlot {
            days: 0x1f,
            start_min: 540,
            end_min: 1080,
        }],
    )
    .await
    .unwrap();
    let staff = model::create_group(state, site.id, "Staff").await.unwrap();
    model::add_rule(
        state,
        &RuleSpec {
            door_id: front,
            subject: Subject::Group(staff),
            access: AccessType::Scheduled,
            valid_from: 0,
            valid_until: 0,
            schedule_id: Some(hours),
        },
    )
    .await
    .unwrap();
    let people = [
        (
            "Ada, \"the first\"",
            "ada@example.org",
            "M-1",
            "line one\nline two",
            "2030-06-30",
        ),
        ("Bob", "", "M-2", "", ""),
        ("Bob", "bob2@example.org", "", "", ""),
    ];
    for (i, (name, email, number, note, expiry)) in people.iter().enumerate() {
        let id = model::create_person(state, site.id, name).await.unwrap();
        let details = PersonDetails::parse(email, number, note, expiry).unwrap();
        directory::set_person_details(state, site.id, id, &details)
            .await
            .unwrap();
        model::add_card(state, id, &format!("0{i}A1B2C3"))
            .await
            .unwrap();
        if i == 0 {
            model::add_card(state, id, "04112233445566").await.unwrap();
            model::add_member(state, staff, id).await.unwrap();
            // 2026-01-01 00:00 to 2026-12-31 23:59:59 in Berlin, as the rule form stores it.
            model::add_rule(
                state,
                &RuleSpec {
                    door_id: lab,
                    subject: Subject::Person(id),
                    access: AccessType::Unrestricted,
                    valid_from: 1_767_222_000,
                    valid_until: 1_798_758_000 - 1,
                    schedule_id: None,
                },
            )
            .await
            .unwrap();
        }
        if i == 1 {
            model::add_rule(
                state,
                &RuleSpec {
                    door_id: lab,
                    subject: Subject::Person(id),
                    access: AccessType::Scheduled,
                    valid_from: 0,
                    valid_until: 0,
                    schedule_id: Some(hours),
                },
            )
            .await
            .unwrap();
        }
    }
    site
}

#[tokio::test]
async fn exports_round_trip_into_a_fresh_database() {
    for (db, state) in common::states("transfer_round").await {
        let site = furnished(&state).await;
        let json = transfer::export_json(&state, &site).await.unwrap();
        let csv = transfer::export_csv(&state, &site).await.unwrap();
        assert!(
            csv.starts_with("name,email,member_number,note,expiry,cards,groups,access\r\n"),
            "{csv}"
        );
        assert!(
            csv.contains("\"Ada, \"\"the first\"\"\""),
            "{db}: quoted: {csv}"
        );
        assert!(
            csv.contains("Lab=UNRESTRICTED 2026-01-01..2026-12-31"),
            "{db}: {csv}"
        );
        assert!(csv.contains("Lab=SCHEDULED/Office hours"), "{db}: {csv}");

        // JSON: doors, schedules, groups and their rules come along.
        let fresh = common::states(&format!("transfer_round_json_{db}")).await;
        let (_, other) = fresh.into_iter().find(|(d, _)| *d == db).unwrap();
        let other_site = site_in(&other, "Europe/Berlin").await;
        let s = import_text(&other, &other_site, &json).await.unwrap();
        assert_eq!((s.added, s.doors, s.schedules), (3, 2, 1), "{db}: {s}");
        assert_eq!(
            transfer::export_json(&other, &other_site).await.unwrap(),
            json.replace("Makerspace", "Site"),
            "{db}"
        );
        let again = import_text(&other, &other_site, &json).await.unwrap();
        assert_eq!(
            (again.added, again.updated, again.unchanged, again.rules),
            (0, 0, 3, 0),
            "{db}: {again}"
        );

        // CSV: people with their own rules (the schedule must exist: CSV names it).
        let fresh = common::states(&format!("transfer_round_csv_{db}")).await;
        let (_, third) = fresh.into_iter().find(|(d, _)| *d == db).unwrap();
        let third_site = site_in(&third, "Europe/Berlin").await;
        model::create_schedule(
            &third,
            third_site.id,
            "Office hours",
            &[LocalSlot {
                days: 0x1f,
                start_min: 540,
                end_min: 1080,
            }],
        )
        .await
        .unwrap();
        let s = import_text(&third, &third_site, &csv).await.unwrap();
        assert_eq!(
            (s.added, s.cards, s.rules, s.doors),
            (3, 4, 2, 1),
            "{db}: {s}"
        );
        assert_eq!(
            transfer::export_csv(&third, &third_site).await.unwrap(),
            csv,
            "{db}"
        );
        let again = import_text(&third, &third_site, &csv).await.unwrap();
        assert_eq!(
            (again.added, again.updated, again.unchanged),
            (0, 0, 3),
            "{db}: {again}"
        );
    }
}

async fn site_in(state: &AppState, zone: &str) -> Site {
    transfer::site_or_create(state, zone).await.unwrap()
}

#[tokio::test]
async fn backups_restore_into_an_empty_database_and_across_databases() {
    let mut backups = Vec::new();
    for (db, state) in common::states("transfer_backup").await {
        let site = furnished(&state).await;
        let export = transfer::export_json(&state, &site).await.unwrap();
        let bytes = transfer::backup(&state.db).await.unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("site_signing_key"),
            "{db}: the key is in the backup"
        );
        assert!(!text.contains("\"sessions\""), "{db}: sessions are not");

        let cfg = common::sqlite_config(&format!("transfer_restore_{db}"));
        let target = AppState::open(&cfg).await.unwrap();
        let summary = transfer::restore(&target.db, &bytes, false).await.unwrap();
        assert!(summary.to_string().contains("people 3"), "{db}: {summary}");
        target.db.close().await;
        let restored = AppState::open(&cfg).await.unwrap();
        assert_eq!(
            restored.site_public_key, state.site_public_key,
            "{db}: same site key"
        );
        let restored_site = directory::first_site(&restored).await.unwrap().unwrap();
        assert_eq!(
            transfer::export_json(&restored, &restored_site)
                .await
                .unwrap(),
            export,
            "{db}"
        );
        // New rows get fresh ids after the restored ones.
        model::create_person(&restored, restored_site.id, "After")
            .await
            .unwrap();
        // A database with data is refused unless forced.
        match transfer::restore(&restored.db, &bytes, false).await {
            Err(TransferError::NotEmpty(what)) => assert!(what.contains("people"), "{db}: {what}"),
            other => panic!("{db}: {other:?}"),
        }
        assert_eq!(
            count(&restored, "people").await,
            4,
            "{db}: refused, nothing changed"
        );
        transfer::restore(&restored.db, &bytes, true).await.unwrap();
        assert_eq!(count(&restored, "people").await, 3, "{db}: forced");
        // Garbage is refused with the data kept.
        for bad in [&b"{"[..], &b"{\"format\": \"other\"}"[..], &b"[]"[..]] {
            assert!(
                matches!(
                    transfer::restore(&restored.db, bad, true).await,
                    Err(TransferError::Format(_))
                ),
                "{db}"
            );
        }
        assert_eq!(count(&restored, "people").await, 3, "{db}");
        backups.push((db, bytes, export, state.site_public_key));
    }
    // Every backup restores onto PostgreSQL too (SQLite → PostgreSQL is how sites move).
    for (db, bytes, export, key) in backups {
        let Some(cfg) = common::postgres_config(&format!("transfer_to_pg_{db}")).await else {
            continue;
        };
        let url = cfg.database_url.clone().unwrap();
        let pg = Db::open(&url).await.unwrap();
        transfer::restore(&pg, &bytes, false).await.unwrap();
        pg.close().await;
        let state = AppState::open(&cfg).await.unwrap();
        assert_eq!(state.site_public_key, key, "{db} → postgres");
        let site = directory::first_site(&state).await.unwrap().unwrap();
        assert_eq!(
            transfer::export_json(&state, &site).await.unwrap(),
            export,
            "{db} → postgres"
        );
        // The sequences moved past the restored ids.
        model::create_person(&state, site.id, "After")
            .await
            .unwrap();
        model::create_door(&state, site.id, "New door")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_expired_person_opens_no_door() {
    for (db, state) in common::states("transfer_expiry").await {
        let site = site(&state, "Europe/Berlin").await;
        let door = model::create_door(&state, site.id, "Front").await.unwrap();
        let group = model::create_group(&state, site.id, "All").await.unwrap();
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: door,
                subject: Subject::Group(group),
                access: AccessType::Unrestricted,
                valid_from: 0,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        for (name, uid, expiry) in [
            ("Past", "01010101", "2026-11-23"),
            ("Future", "02020202", "2027-03-28"),
            ("Never", "03030303", ""),
        ] {
            let id = model::create_person(&state, site.id, name).await.unwrap();
            model::add_card(&state, id, uid).await.unwrap();
            model::add_member(&state, group, id).await.unwrap();
            let details = PersonDetails::parse("", "", "", expiry).unwrap();
            directory::set_person_details(&state, site.id, id, &details)
                .await
                .unwrap();
            ids.push(id);
        }
        // 2026-11-24 10:00 UTC: "Past" ended at 2026-11-23 23:59:59 CET.
        let now = 1_795_514_400;
        let cards = door_cards(&state, door, now).await;
        // 2027-03-28 is the day DST starts in Berlin: its end is 23:59:59 CEST (UTC+2).
        let future_end = 1_806_271_200 - 1;
        assert_eq!(
            cards,
            [
                ("02020202".to_string(), future_end),
                ("03030303".to_string(), 0)
            ],
            "{db}: the expired person is absent, the future one bounded"
        );
        // The last second of the day still opens; a moment before, "Past" was on the list.
        let cards = door_cards(&state, door, 1_795_474_800 - 1).await;
        assert_eq!(
            cards[0],
            ("01010101".to_string(), 1_795_474_800 - 1),
            "{db}"
        );
        // A rule that ends earlier keeps its own end; one that starts after the expiry grants nothing.
        let person = ids[1];
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: door,
                subject: Subject::Person(person),
                access: AccessType::Unrestricted,
                valid_from: 0,
                valid_until: 1_800_000_000,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            door_cards(&state, door, now).await[0],
            ("02020202".to_string(), 1_800_000_000),
            "{db}"
        );
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: door,
                subject: Subject::Person(ids[2]),
                access: AccessType::Emergency,
                valid_from: 1_900_000_000,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        let details = PersonDetails::parse("", "", "", "2027-01-01").unwrap();
        directory::set_person_details(&state, site.id, ids[2], &details)
            .await
            .unwrap();
        let cards = door_cards(&state, door, now).await;
        assert_eq!(cards.len(), 1, "{db}: {cards:?}");
        // The online check of a CONDITIONAL credential refuses after the expiry too, even for a
        // door whose list was compiled before it.
        let conditional = model::create_door(&state, site.id, "Lab").await.unwrap();
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: conditional,
                subject: Subject::Group(group),
                access: AccessType::Conditional,
                valid_from: 0,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        let card = |hex: &str| {
            let mut uid = [0u8; chronolock_core::allowlist::MAX_UID_LEN];
            uid[..4].copy_from_slice(&data_encoding::HEXUPPER.decode(hex.as_bytes()).unwrap());
            chronolock_core::controller::Credential::Card { uid, len: 4 }
        };
        let granted = |hex: &'static str, at: i64| {
            let state = state.clone();
            async move {
                chronolock_server::device_api::conditional_granted(
                    &state,
                    conditional,
                    &card(hex),
                    at,
                )
                .await
                .unwrap()
            }
        };
        assert!(!granted("01010101", now).await, "{db}: expired");
        assert!(
            granted("01010101", 1_795_474_800 - 1).await,
            "{db}: its last second"
        );
        assert!(
            granted("03030303", now).await,
            "{db}: no expiry (group rule wins at Lab)"
        );
        // Member numbers are unique within the site.
        let numbered = PersonDetails::parse("", "M-7", "", "").unwrap();
        directory::set_person_details(&state, site.id, ids[0], &numbered)
            .await
            .unwrap();
        match directory::set_person_details(&state, site.id, ids[1], &numbered).await {
            Err(model::ModelError::Invalid { field, .. }) => {
                assert_eq!(field, "member_number", "{db}")
            }
            other => panic!("{db}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The import page over HTTP.

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Browser {
    app: Router,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn new(state: &AppState) -> Browser {
        let app = router(state.clone());
        let r = send(
            &app,
            Request::builder()
                .method("POST")
                .uri("/setup")
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "username=boss&password=long+enough+1&confirm=long+enough+1",
                ))
                .unwrap(),
        )
        .await;
        let cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let mut b = Browser {
            app,
            cookie,
            csrf: String::new(),
        };
        let me: serde_json::Value = serde_json::from_str(&b.get("/api/me").await.body).unwrap();
        b.csrf = me["csrf_token"].as_str().unwrap().to_string();
        b
    }

    async fn get(&self, uri: &str) -> Answer {
        send(
            &self.app,
            Request::builder()
                .uri(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn post(&self, uri: &str, fields: &[(&str, &str)], csrf: bool) -> Answer {
        let mut all = Vec::new();
        if csrf {
            all.push(("csrf", self.csrf.as_str()));
        }
        all.extend_from_slice(fields);
        let body: Vec<String> = all
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        send(
            &self.app,
            Request::builder()
                .method("POST")
                .uri(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body.join("&")))
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn the_import_page_previews_then_imports() {
    for (db, state) in common::states("transfer_http").await {
        let b = Browser::new(&state).await;
        let site = site(&state, "Europe/Berlin").await;
        model::create_door(&state, site.id, "Front").await.unwrap();
        let people = b.get("/people").await;
        assert!(
            people.body.contains("href=\"/import\""),
            "{db}: linked from People"
        );
        let page = b.get("/import").await;
        assert_eq!(page.status, StatusCode::OK, "{db}");
        assert!(page.body.contains("src=\"/static/import.js\""), "{db}");
        assert_eq!(
            b.get("/static/import.js").await.status,
            StatusCode::OK,
            "{db}"
        );

        // The preview stores nothing.
        let preview = b.post("/import", &[("data", ESP_RFID)], true).await;
        assert_eq!(preview.status, StatusCode::OK, "{db}: {}", preview.body);
        assert!(
            preview.body.contains("<strong id=\"added\">3</strong>"),
            "{db}: {}",
            preview.body
        );
        assert!(preview.body.contains("Ada Lovelace"), "{db}");
        assert!(preview.body.contains("id=\"confirm-import\""), "{db}");
        assert_eq!(
            count(&state, "people").await,
            0,
            "{db}: a preview imports nothing"
        );
        // A bad row: 422, the row and field, nothing stored, the text kept.
        let bad = ESP_RFID.replace("\"acctype\": 99", "\"acctype\": 5");
        let r = b.post("/import", &[("data", &bad)], true).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        assert!(r.body.contains("row 2, acctype"), "{db}: {}", r.body);
        assert!(r.body.contains("Grace Hopper"), "{db}: the text is kept");
        let r = b.post("/import", &[("data", "{oops")], true).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        assert!(r.body.contains("not valid JSON"), "{db}");
        // Without the CSRF token: refused.
        let r = b
            .post("/import", &[("data", ESP_RFID), ("confirm", "yes")], false)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{db}");
        assert_eq!(count(&state, "people").await, 0, "{db}");
        // Confirmed: imported, and the list shows the details.
        let r = b
            .post("/import", &[("data", ESP_RFID), ("confirm", "yes")], true)
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{db}: {}", r.body);
        assert_eq!(count(&state, "people").await, 3, "{db}");
        let list = b.get("/people").await.body;
        assert!(list.contains("2030-01-01"), "{db}: expiry in the list");
        assert!(list.contains("(expired)"), "{db}: the 2023 one is expired");
        // Previewed again: nothing would change.
        let preview = b.post("/import", &[("data", ESP_RFID)], true).await;
        assert!(
            preview.body.contains("<strong id=\"unchanged\">3</strong>"),
            "{db}: {}",
            preview.body
        );

        // Downloads.
        let csv = b.get("/export.csv").await;
        assert_eq!(csv.status, StatusCode::OK, "{db}");
        assert!(csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        assert!(
            csv.body
                .contains("Ada Lovelace,,,,2030-01-01,04A1B2C3,esp-rfid: always,"),
            "{db}: {}",
            csv.body
        );
        let json = b.get("/export.json").await;
        assert!(
            json.body.contains("\"format\": \"chronolock-export\""),
            "{db}"
        );
        let backup = b.get("/backup").await;
        assert_eq!(backup.status, StatusCode::OK, "{db}");
        assert!(backup.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("attachment"));
        assert!(backup.body.contains("chronolock-backup"), "{db}");

        // The person page edits the details; a taken member number is refused beside the field.
        let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM people ORDER BY id")
            .fetch_all(state.db.pool())
            .await
            .unwrap();
        let fields = [
            ("email", "ada@example.org"),
            ("member_number", "42"),
            ("note", "hi"),
            ("expiry", "2031-01-31"),
        ];
        let r = b
            .post(&format!("/people/{}/details", ids[0].0), &fields, true)
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{db}: {}", r.body);
        let page = b.get(&format!("/people/{}", ids[0].0)).await.body;
        assert!(
            page.contains("value=\"2031-01-31\"") && page.contains("value=\"42\""),
            "{db}"
        );
        let r = b
            .post(&format!("/people/{}/details", ids[1].0), &fields, true)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        assert!(r.body.contains("member number"), "{db}: {}", r.body);
        let r = b
            .post(
                &format!("/people/{}/details", ids[1].0),
                &[("expiry", "31.01.2031")],
                true,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{db}");
        // Delete still asks first.
        let r = b.get(&format!("/people/{}/delete", ids[1].0)).await;
        assert!(r.body.contains("Delete the person"), "{db}");
    }
}
