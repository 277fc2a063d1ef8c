//! The admin web UI in a real browser: headless Chromium driven through chromedriver against
//! the server running in-process on a fresh SQLite database (see `browser/harness.rs`).
//!
//! Each step saves a screenshot into `target/browser-screenshots/`. Without Chromium and
//! chromedriver the tests are skipped with a note, except under CI, where they must run.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

mod common;
#[path = "browser/harness.rs"]
mod harness;

use std::time::Duration;

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

/// The admins' names in the server's database.
async fn admins(b: &Browser) -> Vec<String> {
    sqlx::query_scalar("SELECT username FROM admins ORDER BY id")
        .fetch_all(b.state.db.pool())
        .await
        .unwrap()
}
