//! The admin web UI in a real browser: headless Chromium driven through chromedriver against
//! the server running in-process on a fresh SQLite database (see `browser/harness.rs`).
//!
//! Each step saves a screenshot into `target/browser-screenshots/`. Without Chromium and
//! chromedriver the tests are skipped with a note, except under CI, where they must run.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

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

        // Until the site exists, the editors send the admin to create it.
        b.goto("/doors").await;
        if b.text("main h2").await == "No site yet" {
            b.shot("no-site-yet").await;
            b.click("main a[href='/site']").await;
        } else {
            b.goto("/site").await;
        }
        b.wait_path("/site").await;
        assert_eq!(b.text("main h2").await, "Set up the site");
        b.fill("#name", "Head office").await;
        b.fill("#timezone", "Europe/Berlin").await;
        b.shot("site-form").await;
        b.click("#save-site").await;
        b.wait_text("main h2", "Site").await;
        assert!(b.text("main").await.contains("Now in Europe/Berlin"));
        b.shot("site-created").await;

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
        assert!(b.text("main").await.contains("1 card(s)"));
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
