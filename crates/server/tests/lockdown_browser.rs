//! Lockdown in a real browser: headless Chromium driven through chromedriver against the server
//! running in-process on a fresh SQLite database (the harness of the admin UI's browser tests,
//! `crates/chronolock/tests/browser/harness.rs`).
//!
//! Each step saves a screenshot into `target/browser-screenshots/`. Without Chromium and
//! chromedriver the test is skipped with a note, except under CI, where it must run.
#![allow(clippy::unwrap_used)] // test code: a failed step should fail the test loudly

mod common;
#[allow(dead_code)] // the harness serves several test files; this one uses part of it
#[path = "../../chronolock/tests/browser/harness.rs"]
mod harness;

use std::time::Duration;

use chronolock_server::model;
use harness::Browser;

/// What the whole test may take, start-up included.
const LIMIT: Duration = Duration::from_secs(180);

/// The admin presses Lockdown on the dashboard, is asked to confirm, confirms, and sees the
/// lockdown on the dashboard; cancelling the lift changes nothing; lifting it the same way
/// clears the banner; the lockdown page lists both orders with the admin's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_from_the_dashboard() {
    harness::bounded(LIMIT, async {
        let Some(mut b) = Browser::start("lockdown").await else {
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
        model::create_door(&b.state, site, "Front door")
            .await
            .unwrap();
        b.goto("/").await;
        assert!(!b.has("#lockdown-banner").await);
        b.shot("dashboard").await;

        b.click("#lockdown-start").await;
        b.wait_path("/lockdown/confirm").await;
        assert_eq!(b.text("main h2").await, "Put the site into lockdown?");
        b.shot("confirm").await;
        b.click("#lockdown-confirm").await;
        b.wait_path("/").await;
        let banner = b.text("#lockdown-banner").await;
        assert!(banner.starts_with("LOCKDOWN"), "{banner}");
        assert!(banner.contains("ordered by boss"), "{banner}");
        b.shot("in-lockdown").await;
        let (seq, active): (i64, i32) =
            sqlx::query_as("SELECT seq, active FROM lockdown_orders ORDER BY seq DESC")
                .fetch_one(b.state.db.pool())
                .await
                .unwrap();
        assert_eq!((seq, active), (1, 1));

        // Cancelling the lift leaves it in force.
        b.click("#lockdown-lift").await;
        b.wait_path("/lockdown/confirm").await;
        assert_eq!(b.text("main h2").await, "Lift the lockdown?");
        b.click("#lockdown-cancel").await;
        b.wait_path("/").await;
        assert!(b.has("#lockdown-banner").await);

        b.click("#lockdown-lift").await;
        b.wait_path("/lockdown/confirm").await;
        b.click("#lockdown-confirm").await;
        b.wait_path("/").await;
        b.find("#lockdown-start").await;
        assert!(!b.has("#lockdown-banner").await);
        b.shot("lifted").await;

        b.click("header nav a[href='/lockdown']").await;
        b.wait_path("/lockdown").await;
        assert!(b
            .text("#lockdown-state")
            .await
            .starts_with("Not in lockdown; the last one was lifted"));
        let rows = b.text("#lockdown-history tbody").await;
        assert_eq!(rows.matches("boss").count(), 2, "{rows}");
        b.shot("orders").await;
        b.close().await;
    })
    .await;
}
