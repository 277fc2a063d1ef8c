//! The admin web UI in a real browser: headless Chromium driven through chromedriver against
//! the server running in-process on a fresh SQLite database (see `browser/harness.rs`).
//!
//! Each step saves a screenshot into `target/browser-screenshots/`. Without Chromium and
//! chromedriver the tests are skipped with a note, except under CI, where they must run.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

#[path = "../../server/tests/common/mod.rs"]
mod common;
#[path = "browser/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use chronolock_core::otp::{self, OtpParams};
use harness::Browser;

const ADMIN: &str = "boss";
const PASSWORD: &str = "correct horse battery";

/// What one whole browser test may take, start-up included.
const LIMIT: Duration = Duration::from_secs(180);

/// First run in the browser: the setup page makes the first admin and logs in; logging out
/// ends the session; a wrong password is refused with a message beside the field; the right
/// one leads back to the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_setup_logout_and_login() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("setup_login").await else {
            return;
        };

        // Before any admin exists, every page leads to the setup page.
        b.goto("/").await;
        b.wait_path("/setup").await;
        assert_eq!(b.text("main h2").await, "Set up chronolock");
        assert!(!b.has("header nav").await, "no menu before login");
        b.shot("setup-page").await;

        // A password that is too short is refused beside its field, and nothing is made.
        b.fill("#username", ADMIN).await;
        b.fill("#password", "short").await;
        b.fill("#confirm", "short").await;
        b.shot("setup-filled-short").await;
        b.click("main form button[type=submit]").await;
        assert!(b.text("#password-error").await.contains("at least 10"));
        assert_eq!(admins(&b).await, Vec::<String>::new());
        b.shot("setup-short-password").await;

        b.fill("#username", ADMIN).await;
        b.fill("#password", PASSWORD).await;
        b.fill("#confirm", PASSWORD).await;
        b.click("main form button[type=submit]").await;
        b.wait_path("/").await;
        assert_eq!(b.text("main h2").await, "Dashboard");
        assert!(b.text("header").await.contains(ADMIN));
        assert!(b.text("main").await.contains("Site public key"));
        assert_eq!(admins(&b).await, [ADMIN]);
        b.shot("dashboard-after-setup").await;

        // Logging out ends the session: the dashboard now sends to the login page.
        b.click("header form button[type=submit]").await;
        b.wait_path("/login").await;
        assert!(!b.has("header nav").await, "no menu after logout");
        b.shot("logged-out").await;
        b.goto("/").await;
        b.wait_path("/login").await;
        // Setup is done: its page sends to the login page too.
        b.goto("/setup").await;
        b.wait_path("/login").await;

        // A wrong password: refused, the message beside the field, the name kept.
        b.fill("#username", ADMIN).await;
        b.fill("#password", "not the password").await;
        b.click("main form button[type=submit]").await;
        assert_eq!(
            b.text("#password-error").await,
            "wrong username or password"
        );
        b.wait_path("/login").await;
        assert_eq!(
            b.find("#username").await.prop("value").await.unwrap(),
            Some(ADMIN.to_string())
        );
        assert!(
            !b.has("header nav").await,
            "a wrong password logs nobody in"
        );
        b.shot("wrong-password").await;

        b.fill("#password", PASSWORD).await;
        b.click("main form button[type=submit]").await;
        b.wait_path("/").await;
        assert_eq!(b.text("main h2").await, "Dashboard");
        assert!(b.has("header nav").await);
        b.shot("dashboard-after-login").await;

        b.close().await;
    })
    .await;
}

/// The editors as an admin first meets them: the site (Europe/Berlin) is asked for, then a
/// door, a schedule in local time, a person with a card and a SCHEDULED rule for the door, whose
/// list's generation rises; then a TOTP enrolment whose secret, as shown, gives the codes the
/// reference `oathtool` gives (what an authenticator app would show), and whose QR code reads
/// back as the same `otpauth://` URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editors_door_person_schedule_rule_and_totp() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("editors").await else {
            return;
        };
        create_admin(&b).await;

        // The first run's path starts on the dashboard: the site, then a door, then pairing.
        b.goto("/").await;
        assert!(b.text("#getting-started").await.contains("Create the site"));
        b.shot("getting-started").await;
        b.click("#step-site a").await;
        b.wait_path("/site").await;
        assert_eq!(b.text("main h2").await, "Set up the site");
        b.fill("#name", "Head office").await;
        b.select_value("#timezone", "Europe/Berlin").await;
        b.shot("site-form").await;
        b.click("#save-site").await;
        b.wait_path("/doors").await;
        b.goto("/").await;
        assert!(b.text("#step-site").await.starts_with("✓"));
        b.goto("/site").await;
        b.wait_text("main h2", "Site").await;
        assert!(b.text("main").await.contains("Now in Europe/Berlin"));
        b.shot("site-created").await;

        // The site's NTP servers: a bad name is refused beside the field, a good list kept.
        b.fill("#ntp_servers", "ntp/evil").await;
        b.click("#save-site").await;
        assert!(b
            .text("#ntp_servers-error")
            .await
            .contains("letters, digits"));
        b.fill("#ntp_servers", "ntp1.internal 10.0.0.5:123").await;
        b.click("#save-site").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let site = chronolock_server::directory::first_site(&b.state)
                .await
                .unwrap()
                .unwrap();
            if site.ntp_servers.as_deref() == Some("ntp1.internal 10.0.0.5:123") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not saved: {site:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b.goto("/site").await;
        assert_eq!(b.value("#ntp_servers").await, "ntp1.internal 10.0.0.5:123");
        b.shot("site-ntp-servers").await;

        // A door: it gets its (empty) list at once.
        b.goto("/doors").await;
        assert!(b.text("main").await.contains("No doors yet."));
        b.fill("#name", "Front door").await;
        b.click("#add-door").await;
        let door_page = b.wait_path_under("/doors/").await;
        assert_eq!(b.text("main h2").await, "Door: Front door");
        let empty_generation = generation(&b).await;
        b.shot("door-added").await;

        // A schedule in the site's local time.
        b.goto("/schedules").await;
        assert!(b.text("#timezone-note").await.contains("Europe/Berlin"));
        b.fill("#name", "Office hours").await;
        for day in ["mon", "tue", "wed", "thu", "fri"] {
            b.click(&format!("#day-{day}")).await;
        }
        b.fill("#start", "08:00").await;
        b.fill("#end", "18:00").await;
        b.shot("schedule-form").await;
        b.click("#add-schedule").await;
        b.wait_path_under("/schedules/").await;
        assert!(
            b.text("#slots").await.contains("Mon–Fri 08:00–18:00"),
            "{}",
            b.text("#slots").await
        );
        b.shot("schedule-created").await;

        // A person with a card, typed as a reader prints it.
        b.goto("/people").await;
        b.fill("#name", "Alice Example").await;
        b.click("#add-person").await;
        let person_page = b.wait_path_under("/people/").await;
        let person_id = person_page.rsplit('/').next().unwrap().to_string();
        assert_eq!(b.text("main h2").await, "Person: Alice Example");
        b.fill("#uid", "04 a1 b2 c3").await;
        b.click("#add-card").await;
        assert!(b.text("#cards").await.contains("04A1B2C3"));
        assert!(
            b.text("#cards").await.contains("UID only: can be cloned"),
            "a UID-only card is marked cloneable"
        );
        // A secure card (personalised elsewhere), marked as such.
        b.fill("#uid", "04DE5F1EACC040").await;
        b.click("#secure").await;
        b.click("#add-card").await;
        let cards = b.wait_text_containing("#cards", "04DE5F1EACC040").await;
        assert!(cards.contains("secure card"), "{cards}");
        b.shot("person-with-card").await;

        // A SCHEDULED rule for the door, from the person's page (which fills in the person).
        b.click("a#add-rule").await;
        b.wait_path("/rules/new").await;
        assert_eq!(b.value("#subject").await, format!("person:{person_id}"));
        b.select_label("#door", "Front door").await;
        b.select_value("#access", "SCHEDULED").await;
        b.select_label("#schedule", "Office hours").await;
        b.shot("rule-form").await;
        b.click("button#add-rule").await;
        b.wait_path(&person_page).await;
        let rules = b.text("table.rules").await;
        for part in ["Front door", "SCHEDULED", "Office hours"] {
            assert!(
                rules.contains(part),
                "{part} missing from the rules: {rules}"
            );
        }
        b.shot("person-with-rule").await;

        // The door's list now holds the card: a newer generation.
        b.goto(&door_page).await;
        let with_card = generation(&b).await;
        assert!(
            with_card > empty_generation,
            "generation {with_card} after the rule, {empty_generation} before"
        );
        assert!(b.text("main").await.contains("2 card(s)"));
        b.shot("door-generation-risen").await;

        // TOTP enrolment: the secret is shown once, as a QR code and as text.
        b.goto(&person_page).await;
        b.fill("#code", "1234").await;
        b.click("#enrol-totp").await;
        let secret = b.text("#totp-secret").await;
        let uri = b
            .find("#totp-uri")
            .await
            .attr("href")
            .await
            .unwrap()
            .unwrap();
        b.shot("totp-enrolled").await;
        check_totp_secret(&secret);
        assert!(uri.contains(&format!("secret={secret}&")), "{uri}");
        let qr = b.element_png("#totp-qr svg").await;
        assert_eq!(read_qr(&qr), uri, "the QR code says what the link says");

        // The keypad code reaches the door too.
        b.goto(&door_page).await;
        assert!(generation(&b).await > with_card);
        assert!(b.text("main").await.contains("1 keypad code(s)"));
        b.shot("door-with-keypad-code").await;

        b.close().await;
    })
    .await;
}

/// Several admins in the browser: the first adds a second from the Admins page; the second logs
/// in, removes the first, and changes her own password, which a wrong current password cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_page_adds_removes_and_changes_passwords() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("admins").await else {
            return;
        };
        create_admin(&b).await;
        b.click("header nav a[href='/admins']").await;
        b.wait_path("/admins").await;
        assert_eq!(b.text("main h2").await, "Administrators");
        assert!(b.text("main table").await.contains("(you)"));
        b.fill("#username", "alice").await;
        b.fill("#password", "alices own phrase").await;
        b.fill("#confirm", "alices own phrase").await;
        b.click("form[action='/admins'] button[type=submit]").await;
        b.wait_text("main [role=status]", "alice can now log in.")
            .await;
        assert_eq!(admins(&b).await, [ADMIN, "alice"]);
        b.shot("admin-added").await;

        // Alice logs in and removes boss.
        b.click("header form button[type=submit]").await;
        b.wait_path("/login").await;
        b.fill("#username", "alice").await;
        b.fill("#password", "alices own phrase").await;
        b.click("main form button[type=submit]").await;
        b.wait_path("/").await;
        b.goto("/admins").await;
        b.click(&format!("button[aria-label='Remove {ADMIN}']"))
            .await;
        // The removal asks first.
        b.wait_text("main h2", &format!("Remove {ADMIN}?")).await;
        b.shot("admin-remove-confirm").await;
        b.click("#confirm-delete").await;
        b.wait_text(
            "main [role=status]",
            "boss is removed and logged out everywhere.",
        )
        .await;
        assert_eq!(admins(&b).await, ["alice"]);
        b.shot("admin-removed").await;
        assert!(
            !b.has("main table button").await,
            "the last admin cannot be removed"
        );

        // A wrong current password changes nothing; the right one does.
        b.fill("#current", "not my phrase at all").await;
        b.fill("#new-password", "alices newer phrase").await;
        b.fill("#new-confirm", "alices newer phrase").await;
        b.click("form[action='/admins/password'] button[type=submit]")
            .await;
        assert_eq!(
            b.text("#current-error").await,
            "that is not your current password"
        );
        b.shot("wrong-current-password").await;
        b.fill("#current", "alices own phrase").await;
        b.fill("#new-password", "alices newer phrase").await;
        b.fill("#new-confirm", "alices newer phrase").await;
        b.click("form[action='/admins/password'] button[type=submit]")
            .await;
        b.wait_text(
            "main [role=status]",
            "Your password is changed; your other sessions have ended.",
        )
        .await;
        b.shot("password-changed").await;
        b.click("header form button[type=submit]").await;
        b.wait_path("/login").await;
        b.fill("#username", "alice").await;
        b.fill("#password", "alices newer phrase").await;
        b.click("main form button[type=submit]").await;
        b.wait_path("/").await;
        b.close().await;
    })
    .await;
}

/// A card a door refused is given to a person from the access log, its UID never typed; the
/// People page lists recently refused cards; deleting asks first. Then, at a phone's 390 px, the
/// dashboard, the log and the other pages fit without sideways scrolling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_a_refused_card_and_pages_at_phone_width() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("learn").await else {
            return;
        };
        create_admin(&b).await;
        let state = b.state.clone();
        let site = chronolock_server::model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let door = chronolock_server::model::create_door(&state, site, "Workshop door with a long name")
            .await
            .unwrap();
        let alice = chronolock_server::model::create_person(&state, site, "Alice Example")
            .await
            .unwrap();
        chronolock_server::model::add_card(&state, alice, "04A1B2C3")
            .await
            .unwrap();
        // The door reports an unknown card refused (twice) and Alice's card granted, plus the
        // clock bookkeeping the log hides by default.
        let now_us = chronolock_server::now_micros();
        for (i, (kind, credential, decision)) in [
            ("decision", Some("card:04C0FFEE"), Some("DENIED_UNKNOWN")),
            ("rtc_write", None, None),
            ("decision", Some("card:04A1B2C3"), Some("GRANTED")),
            ("decision", Some("card:04C0FFEE"), Some("DENIED_UNKNOWN")),
        ]
        .into_iter()
        .enumerate()
        {
            sqlx::query(
                "INSERT INTO events (door_id, device_event_id, kind, device_us, received_us, \
                 credential, decision, detail) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
            )
            .bind(door)
            .bind(i as i64 + 1)
            .bind(kind)
            .bind(now_us - 60_000_000 + i as i64 * 1_000_000)
            .bind(credential)
            .bind(decision)
            .bind((kind == "rtc_write").then_some(r#"{"utc_us":1}"#))
            .execute(state.db.pool())
            .await
            .unwrap();
        }

        b.goto("/log").await;
        let log = b.text("#log").await;
        assert!(!log.contains("rtc_write"), "hidden by default: {log}");
        assert!(log.contains("Alice Example"), "{log}");
        assert!(b.has("#log a.person[href='/people/1']").await || b.has("#log a.person").await);
        b.shot("log").await;
        b.click("#log a.learn").await;
        b.wait_path("/cards/learn").await;
        assert_eq!(b.text("main h2").await, "Add card 04C0FFEE");
        assert!(b.text("#card-refusals").await.contains("Refused 2 time(s)"));
        b.shot("learn-picker").await;
        b.click("button[aria-label='Add to Alice Example']").await;
        b.wait_path(&format!("/people/{alice}")).await;
        assert!(b.text("main").await.contains("04C0FFEE"));
        b.shot("learned").await;
        let owner: (i64,) = sqlx::query_as("SELECT person_id FROM cards WHERE uid = '04C0FFEE'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        assert_eq!(owner.0, alice);
        // The log now names her for that card, and the People page lists no refused card.
        b.goto("/people").await;
        assert!(!b.has("#refused-cards").await);

        // The same from the People page, for a new person.
        sqlx::query(
            "INSERT INTO events (door_id, device_event_id, kind, device_us, received_us, \
             credential, decision) VALUES ($1, 10, 'decision', $2, $2, 'card:04BADBAD771122', 'DENIED_UNKNOWN')",
        )
        .bind(door)
        .bind(now_us)
        .execute(state.db.pool())
        .await
        .unwrap();
        b.goto("/people").await;
        assert!(b.text("#refused-cards").await.contains("04BADBAD771122"));
        b.shot("people-refused").await;
        b.click("#refused-cards a.learn").await;
        b.wait_path("/cards/learn").await;
        b.fill("#name", "Bob New").await;
        b.click("#add-new-person").await;
        b.wait_path_under("/people/").await;
        assert!(b.text("main h2").await.contains("Bob New"));
        assert!(b.text("main").await.contains("04BADBAD771122"));

        // Deleting the rule-less person's card asks first.
        b.click("form[action$='/delete'] button").await;
        b.wait_text("main h2", "Delete card 04BADBAD771122?").await;
        b.shot("delete-confirm").await;
        b.click("#keep").await;
        b.wait_path_under("/people/").await;
        assert!(b.text("main").await.contains("04BADBAD771122"), "kept");

        // A phone: nothing scrolls sideways.
        b.set_window(390, 844).await;
        for path in [
            "/".to_string(),
            "/log".to_string(),
            "/log?kind=all".to_string(),
            "/people".to_string(),
            format!("/people/{alice}"),
            "/doors".to_string(),
            format!("/doors/{door}"),
            "/rules".to_string(),
            "/schedules".to_string(),
            "/site".to_string(),
            "/lockdown".to_string(),
            "/webhooks".to_string(),
            "/admins".to_string(),
            "/tokens".to_string(),
        ] {
            b.goto(&path).await;
            let (page, viewport) = b.widths().await;
            assert!(
                viewport <= 400 && page <= viewport,
                "{path}: page {page} px wide in a {viewport} px viewport"
            );
            if path == "/" || path == "/log" {
                b.shot(if path == "/" { "phone-dashboard" } else { "phone-log" })
                    .await;
            }
        }

        // An API token, made on the phone: shown once, then listed by its first characters.
        b.goto("/tokens").await;
        b.fill("#name", "member system").await;
        b.click("#make-token").await;
        b.wait_text("main h2", "Your new API token").await;
        let token = b.text("#new-token").await;
        assert!(token.starts_with("clk_") && token.len() > 40, "{token}");
        b.shot("phone-token").await;
        b.goto("/tokens").await;
        let listed = b.text("#tokens").await;
        assert!(listed.contains("member system") && !listed.contains(&token), "{listed}");
        b.close().await;
    })
    .await;
}

/// An esp-rfid user backup pasted into the import page: a preview that says what would change
/// (and stores nothing), then the import, then an error that names the row and field.
#[tokio::test]
async fn importing_an_esp_rfid_backup_with_a_preview() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("import").await else {
            return;
        };
        create_admin(&b).await;
        let state = b.state.clone();
        let site = chronolock_server::model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        chronolock_server::model::create_door(&state, site, "Front door")
            .await
            .unwrap();
        b.goto("/people").await;
        b.click("a[href='/import']").await;
        b.wait_path("/import").await;
        let backup = r#"{"type": "esp-rfid-userbackup", "version": "v0.6", "list": [
 {"uid": "0a1b2c3d", "pincode": "1234", "username": "Erika Muster", "acctype": 1, "validsince": 0, "validuntil": 1893456000},
 {"uid": "0a1b2c3e", "username": "Max Admin", "acctype": 99, "validsince": 0, "validuntil": 1893456000},
 {"uid": "0a1b2c3f", "username": "Former Member", "acctype": 0, "validsince": 0, "validuntil": 0}]}"#;
        b.fill("#data", backup).await;
        b.shot("pasted").await;
        b.click("#preview").await;
        b.wait_text("main h2", "Import preview").await;
        assert_eq!(b.text("#added").await, "3");
        b.shot("preview").await;
        let people: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM people")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        assert_eq!(people, 0, "a preview stores nothing");
        b.click("#confirm-import").await;
        b.wait_path("/people").await;
        let listed = b.text("main").await;
        for name in ["Erika Muster", "Max Admin", "Former Member"] {
            assert!(listed.contains(name), "{name} in {listed}");
        }
        b.shot("imported").await;

        // A bad row: nothing is imported, and the message names the row and the field.
        b.goto("/import").await;
        b.fill("#data", "name,cards\nGood Person,04AABBCC\nBad Card,XYZ\n").await;
        b.click("#preview").await;
        let error = b.text("#import-error").await;
        assert!(error.contains("row 3") && error.contains("cards"), "{error}");
        b.shot("bad-row").await;
        b.close().await;
    })
    .await;
}

/// Makes the first admin on the setup page, which logs in.
async fn create_admin(b: &Browser) {
    b.goto("/setup").await;
    b.fill("#username", ADMIN).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#confirm", PASSWORD).await;
    b.click("main form button[type=submit]").await;
    b.wait_path("/").await;
}

/// The generation a door page shows.
async fn generation(b: &Browser) -> u64 {
    let text = b.text("#generation").await;
    text.parse()
        .unwrap_or_else(|_| panic!("generation {text:?} is not a number"))
}

/// The secret as shown is RFC 4648 base32 of 160 bits, and `oathtool` (the OATH Toolkit, what
/// an authenticator app does) computes from it the codes `chronolock_core::otp::totp` does,
/// at fixed times and now.
fn check_totp_secret(secret: &str) {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap_or_else(|e| panic!("the secret {secret:?} is not base32: {e}"));
    assert_eq!(bytes.len(), 20, "RFC 4226 §4 recommends 160 bits");
    if std::env::var("CHRONOLOCK_SKIP_OATHTOOL").is_ok_and(|v| v == "1") {
        eprintln!("CHRONOLOCK_SKIP_OATHTOOL=1: not cross-checking the secret against oathtool");
        return;
    }
    let ours = |t: i64| format!("{:06}", otp::totp(&bytes, t, OtpParams::default()).unwrap());
    // 2026-11-24T08:59:00Z and the RFC 6238 appendix B times.
    for t in [59, 1_111_111_109, 1_234_567_890, 1_795_510_740] {
        assert_eq!(
            oathtool(&[&format!("--now=@{t}"), secret]),
            ours(t),
            "at {t}"
        );
    }
    // And now, as an app would show it (the step may turn between the two clock reads).
    let before = chronolock_server::now_unix();
    let code = oathtool(&[secret]);
    let after = chronolock_server::now_unix();
    assert!(
        code == ours(before) || code == ours(after),
        "oathtool says {code} now, chronolock {} or {}",
        ours(before),
        ours(after)
    );
}

/// Runs `oathtool --totp -b ARGS…` and returns the code it printed.
fn oathtool(args: &[&str]) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run oathtool (Debian package oathtool, which scripts/test.sh installs; \
                 CHRONOLOCK_SKIP_OATHTOOL=1 skips this check): {e}"
            )
        });
    assert!(
        out.status.success(),
        "oathtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The text of the one QR code in a PNG screenshot.
fn read_qr(png_bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let (width, height) = (frame.width as usize, frame.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let at = y * frame.line_size + x * channels;
        // The green channel is luminance enough for black on white.
        pixels[at + usize::from(channels >= 3)]
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    let (_, text) = grids[0].decode().unwrap();
    text
}

/// The admins' names in the server's database.
async fn admins(b: &Browser) -> Vec<String> {
    sqlx::query_scalar("SELECT username FROM admins ORDER BY id")
        .fetch_all(b.state.db.pool())
        .await
        .unwrap()
}

/// Lines a virtual door prints, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(v) = serde_json::from_slice(line) {
                self.0.lock().unwrap().push(v);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    async fn wait(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.0.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what}: {:?}",
                self.0.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `serve --demo`'s virtual doors in the admin UI: the door page links to the panel; a tapped
/// staff card is granted (green) and an unknown one denied; cutting the network and a power
/// cycle show on the panel. Then the phone setup page of a new, unpaired virtual door, as the
/// ESP32 serves it from its access point: the browser's time sets the door's clock and the
/// door pairs with the code from the admin UI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_door_panel_and_phone_setup() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("virtual_doors").await else {
            return;
        };
        create_admin(&b).await;
        let seeded = chronolock_server::demo::seed(&b.state).await.unwrap();
        let config = chronolock_server::ServeConfig {
            data_dir: common::sqlite_config("virtual_doors_data").data_dir,
            ntp: vec![],
            door_host: Some(chronolock::virtual_doors::host()),
            ..chronolock_server::ServeConfig::default()
        };
        let addr: std::net::SocketAddr = b.url("").trim_start_matches("http://").parse().unwrap();
        chronolock_server::demo::start_virtual_doors(
            &b.state,
            addr,
            &b.url(""),
            &config,
            seeded.as_ref(),
        )
        .await
        .unwrap();
        let front = chronolock_server::demo::doors(&b.state).await.unwrap()[0].1;

        b.goto(&format!("/doors/{front}")).await;
        b.click("#virtual-panel").await;
        b.wait_path(&format!("/doors/{front}/virtual")).await;
        // Paired over HTTP, the list installed, the clock set from the backend's sealed time.
        b.wait_text("#generation", "2").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !b.text("#clock").await.contains("from backend") {
            assert!(
                std::time::Instant::now() < deadline,
                "clock: {}",
                b.text("#clock").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        b.shot("panel-ready").await;

        b.fill("#uid", "04A1B2C3").await;
        b.click("#tap").await;
        b.wait_text("#decision", "card:04A1B2C3 → GRANTED").await;
        assert!(b.has("#led-green.green").await, "green LED on");
        b.shot("card-granted").await;

        b.fill("#uid", "DEADBEEF").await;
        b.click("#tap").await;
        b.wait_text("#decision", "card:DEADBEEF → DENIED_UNKNOWN")
            .await;
        assert!(b.has("#led-red.red").await, "red LED on");
        b.shot("card-denied").await;

        // Grace's secure card: the genuine card proves its key; a copy of its UID does not.
        b.fill("#secure-uid", "04B2C3D4E5F607").await;
        b.click("#present-secure").await;
        b.wait_text("#decision", "secure_card:04B2C3D4E5F607 → GRANTED")
            .await;
        b.shot("secure-card-granted").await;
        b.fill("#secure-uid", "04B2C3D4E5F607").await;
        b.click("#present-clone").await;
        b.wait_text("#decision", "secure_card:04B2C3D4E5F607 → DENIED_CARD_AUTH")
            .await;
        b.shot("secure-card-clone-refused").await;

        // Ada's keypad code: her user code, then the TOTP code an authenticator shows now.
        let secret = data_encoding::BASE32_NOPAD
            .decode(b"JBSWY3DPEHPK3PXP")
            .unwrap();
        let code = otp::totp(&secret, chronolock_server::now_unix(), OtpParams::default()).unwrap();
        b.fill("#keys", &format!("1234*{code:06}#")).await;
        b.click("#type-keys").await;
        b.wait_text("#decision", "keypad:1234 → GRANTED").await;
        b.shot("keypad-granted").await;

        b.click("button[value=network_down]").await;
        b.wait_text("#network", "cut").await;
        b.click("button[value=power_cycle]").await;
        b.wait_text("#power", "on").await;
        // Back from the cut: the RTC written at the first sync gives the time at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !b.text("#clock").await.contains("from rtc") {
            assert!(
                std::time::Instant::now() < deadline,
                "clock: {}",
                b.text("#clock").await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        b.shot("offline-after-power-cycle").await;

        // A new door, and a virtual device for it in setup mode.
        let site = chronolock_server::demo::doors(&b.state).await.unwrap();
        let site_id: (i64,) = sqlx::query_as("SELECT site_id FROM doors WHERE id = $1")
            .bind(site[0].1)
            .fetch_one(b.state.db.pool())
            .await
            .unwrap();
        let back = chronolock_server::model::create_door(&b.state, site_id.0, "Back door")
            .await
            .unwrap();
        let code = chronolock_server::device::new_pairing_code(&b.state, back)
            .await
            .unwrap();
        let events = Captured::default();
        let door = chronolock_sim::live::door::spawn(
            chronolock_sim::live::DoorOptions {
                name: "back".into(),
                server: None,
                pairing_code: None,
                ntp: vec![],
                rtc: true,
                sync_interval_s: Some(5),
                setup_listen: "127.0.0.1:0".parse().unwrap(),
            },
            chronolock_sim::live::store::Store::open(&config.data_dir.join("back")).unwrap(),
            chronolock_sim::live::Output::to(Box::new(events.clone())),
        )
        .unwrap();
        let page = events
            .wait("setup page", |v| v["event"] == "setup_page")
            .await;
        let setup_url = page["url"].as_str().unwrap().to_string();
        assert!(door.view().setup_mode, "unpaired: setup mode");
        // A bad form is refused and names the field (the page's script fills the time itself).
        let bad = reqwest_post(
            &setup_url,
            "time_ms=12&ssid=x&server=http://x&code=ABCDEFGHJKMN",
        )
        .await;
        assert!(bad.contains("time_ms is not the phone"), "{bad}");
        assert!(door.view().setup_mode, "still in setup mode");
        b.client.goto(&setup_url).await.unwrap();
        assert_eq!(b.text("h1").await, "Door setup");
        b.shot("phone-setup-page").await;
        b.fill("#ssid", "Makerspace").await;
        b.fill("#password", "wifi password").await;
        b.fill("#server", &b.url("")).await;
        b.fill("#code", &code.to_lowercase()).await;
        b.shot("phone-setup-filled").await;
        let before = chronolock_server::now_micros();
        b.click("#save").await;
        b.wait_text("#result", "Saved").await;
        b.shot("phone-setup-saved").await;
        // The phone's clock set the door's: valid at once, from the phone, within a second.
        let clock = events
            .wait("the phone's time", |v| {
                v["event"] == "clock" && v["source"] == "phone"
            })
            .await;
        assert_eq!(clock["valid"], true);
        let after = chronolock_server::now_micros();
        let utc: jiff::Timestamp = clock["utc"].as_str().unwrap().parse().unwrap();
        let utc_us = utc.as_microsecond();
        assert!(
            utc_us > before - 1_000_000 && utc_us < after + 1_000_000,
            "{clock}"
        );
        // And the door paired with the code typed on the phone.
        let paired = events.wait("pairing", |v| v["event"] == "pairing").await;
        assert_eq!(paired["ok"], true, "{paired}");
        assert_eq!(paired["door_id"], back);
        events
            .wait("its list", |v| v["event"] == "list_installed")
            .await;
        // Paired: the setup page is gone, as the door's access point would be.
        let gone = reqwest::Client::new().get(&setup_url).send().await;
        assert!(gone.is_err(), "the setup page closes after pairing");
        assert!(!door.view().setup_mode);
    })
    .await;
}

/// Posts a form body with a plain HTTP client (no browser), returning the page.
async fn reqwest_post(base: &str, body: &str) -> String {
    reqwest::Client::new()
        .post(format!("{base}setup"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
