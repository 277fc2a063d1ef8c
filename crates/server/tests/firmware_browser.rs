//! The firmware page in a real browser: headless Chromium driven through chromedriver against
//! the server running in-process on a fresh SQLite database (the harness of the admin UI's
//! browser tests, `crates/chronolock/tests/browser/harness.rs`).
//!
//! Each step saves a screenshot into `target/browser-screenshots/`. Without Chromium and
//! chromedriver the test is skipped with a note, except under CI, where it must run.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

mod common;
#[allow(dead_code)] // the harness serves several test files; this one uses part of it
#[path = "../../chronolock/tests/browser/harness.rs"]
mod harness;

use std::time::Duration;

use chronolock_core::firmware::Version;
use chronolock_server::device_api::DoorStatus;
use chronolock_server::model;
use ed25519_dalek::SigningKey;
use harness::Browser;

/// What the whole test may take, start-up included.
const LIMIT: Duration = Duration::from_secs(180);

/// The admin finds the firmware page in the menu; a file that is not a signed image is refused
/// beside the field; a signed one is listed with its version, flash size and key id. Two doors
/// are picked at once and assigned it; the door's page shows the update waiting, then the
/// download's progress and the running version the door reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_upload_and_assignment() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("firmware").await else {
            return;
        };
        b.goto("/setup").await;
        b.fill("#username", "boss").await;
        b.fill("#password", "correct horse battery").await;
        b.fill("#confirm", "correct horse battery").await;
        b.click("main form button[type=submit]").await;
        b.wait_path("/").await;
        let site = model::create_site(&b.state, "Head office", "Europe/Berlin")
            .await
            .unwrap();
        let front = model::create_door(&b.state, site, "Front door")
            .await
            .unwrap();
        let back = model::create_door(&b.state, site, "Back door")
            .await
            .unwrap();
        model::create_door(&b.state, site, "Store room")
            .await
            .unwrap();

        b.click("header nav a[href='/firmware']").await;
        b.wait_path("/firmware").await;
        assert_eq!(b.text("main h2").await, "Firmware");
        assert_eq!(b.text("#no-images").await, "No images uploaded yet.");
        b.shot("empty").await;

        // Files the browser uploads: one that is not an image, and a signed one.
        let dir = std::env::temp_dir().join(format!("chronolock-firmware-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("notes.txt");
        std::fs::write(&junk, "these are notes, not firmware\n".repeat(20)).unwrap();
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let key = SigningKey::from_bytes(&[0x5a; 32]);
        let version = Version::new(1, 2, 0);
        let file = chronolock_core::firmware::sign(&image, version, 4, &key).unwrap();
        let good = dir.join("door-1.2.0.bin");
        std::fs::write(&good, &file).unwrap();

        b.find("#image")
            .await
            .send_keys(&junk.display().to_string())
            .await
            .unwrap();
        b.click("#upload").await;
        assert_eq!(
            b.text("#image-error").await,
            "not a signed chronolock firmware image"
        );
        b.shot("not-an-image").await;

        b.find("#image")
            .await
            .send_keys(&good.display().to_string())
            .await
            .unwrap();
        b.click("#upload").await;
        let row = b.text("#images tbody tr").await;
        let key_id = data_encoding::HEXLOWER.encode(&key.verifying_key().as_bytes()[..4]);
        for part in ["1.2.0", "4 MB", "300,128 bytes", key_id.as_str(), "by boss"] {
            assert!(row.contains(part), "{part} missing from {row:?}");
        }
        assert!(!b.has("#image-error").await);
        b.shot("uploaded").await;
        let (image_id,): (i64,) = sqlx::query_as("SELECT id FROM firmware_images")
            .fetch_one(b.state.db.pool())
            .await
            .unwrap();

        // Two doors at once; the store room keeps no update.
        b.click(&format!("#door-{front}")).await;
        b.click(&format!("#door-{back}")).await;
        b.select_value("#firmware", &image_id.to_string()).await;
        b.shot("doors-chosen").await;
        b.click("#assign").await;
        let waiting = "1.2.0 (4 MB) · waiting for the door's next sync";
        b.wait_text(&format!("#firmware-door-{front} td.update"), waiting)
            .await;
        assert_eq!(
            b.text(&format!("#firmware-door-{back} td.update")).await,
            waiting
        );
        let (assigned,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM doors WHERE firmware_id = $1")
                .bind(image_id)
                .fetch_one(b.state.db.pool())
                .await
                .unwrap();
        assert_eq!(assigned, 2);
        assert!(
            !b.has(&format!("#image-{image_id} form")).await,
            "an assigned image offers no delete button"
        );
        b.shot("assigned").await;

        // The door's page: the update waits for the door.
        b.goto(&format!("/doors/{front}")).await;
        assert_eq!(b.text("#firmware-running").await, "—");
        assert_eq!(
            b.text("#firmware-state").await,
            "waiting for the door's next sync"
        );
        b.shot("door-waiting").await;

        // The door reports running 1.0.0 and holding 42% of the update.
        let held = file.len() as u32 * 42 / 100 + 1;
        b.state.door_status.record(
            front,
            DoorStatus {
                at: chronolock_server::now_unix(),
                generation: 0,
                clock_valid: false,
                source: None,
                offset_us: None,
                error_us: 0,
                battery_mv: 0,
                list_capacity: 0,
                firmware_version: i64::from(Version::new(1, 0, 0).0),
                firmware_partial: Some((i64::from(version.0), i64::from(held))),
            },
        );
        b.state.door_status.flush(&b.state.db).await.unwrap();
        b.goto(&format!("/doors/{front}")).await;
        assert_eq!(b.text("#firmware-running").await, "1.0.0");
        assert_eq!(b.text("#firmware-state").await, "downloading 42%");
        b.shot("door-downloading").await;
        b.goto("/").await;
        assert!(b
            .text(&format!("#door-{front} td.firmware"))
            .await
            .contains("downloading 42%"));
        b.shot("dashboard").await;

        let _ = std::fs::remove_dir_all(&dir);
        b.close().await;
    })
    .await;
}
