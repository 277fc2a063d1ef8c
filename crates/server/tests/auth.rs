//! Admin access through the HTTP API, on SQLite and PostgreSQL: first-run setup, sessions,
//! CSRF, cross-site refusal, login, logout.
#![allow(clippy::unwrap_used)] // test helpers: a failed request should fail the test loudly

mod common;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use chronolock_server::{router, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .uri(uri)
        .header(header::HOST, "localhost");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post_form(uri: &str, body: &str, cookie: Option<&str>, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn text(r: Response<Body>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn location(r: &Response<Body>) -> &str {
    r.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn session_cookie(r: &Response<Body>) -> String {
    let set = r
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

async fn csrf(app: &Router, cookie: &str) -> String {
    let r = send(app, get("/api/me", Some(cookie))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
    v["csrf_token"].as_str().unwrap().to_string()
}

async fn admins(state: &AppState) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admins")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn first_run_setup_login_and_logout() {
    for (label, state) in common::states("auth").await {
        let app = router(state.clone());
        // Before setup, everything leads to the setup page; APIs say 401.
        assert_eq!(
            location(&send(&app, get("/", None)).await),
            "/setup",
            "{label}"
        );
        assert_eq!(location(&send(&app, get("/login", None)).await), "/setup");
        assert_eq!(
            send(&app, get("/api/me", None)).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, get("/healthz", None)).await.status(),
            StatusCode::OK
        );

        // Bad input: the message stands beside the field, and nothing is saved.
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=boss&password=short&confirm=short",
                None,
                None,
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = text(r).await;
        assert!(
            page.contains("id=\"password-error\"") && page.contains("at least 10"),
            "{page}"
        );
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=b%20oss&password=long+enough+1&confirm=long+enough+1",
                None,
                None,
            ),
        )
        .await;
        assert!(text(r).await.contains("id=\"username-error\""));
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=boss&password=long+enough+1&confirm=long+enough+2",
                None,
                None,
            ),
        )
        .await;
        assert!(text(r).await.contains("id=\"confirm-error\""));
        assert_eq!(admins(&state).await, 0);

        // A cross-site POST is refused even before any session exists.
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=evil&password=long+enough+1&confirm=long+enough+1",
                None,
                Some("http://evil.example"),
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(admins(&state).await, 0);

        // Setup makes the admin and logs in.
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=boss&password=long+enough+1&confirm=long+enough+1",
                None,
                Some("http://localhost"),
            ),
        )
        .await;
        assert_eq!(location(&r), "/");
        let cookie = session_cookie(&r);
        let r = send(&app, get("/", Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(text(r).await.contains("boss"));

        // Setup cannot run twice.
        let r = send(
            &app,
            post_form(
                "/setup",
                "username=other&password=long+enough+1&confirm=long+enough+1",
                None,
                None,
            ),
        )
        .await;
        assert_eq!(location(&r), "/login");
        assert_eq!(admins(&state).await, 1);
        assert_eq!(location(&send(&app, get("/setup", None)).await), "/login");

        // Logout needs the session's CSRF token.
        let r = send(
            &app,
            post_form("/logout", "csrf=guess", Some(&cookie), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let token = csrf(&app, &cookie).await;
        let r = send(
            &app,
            post_form("/logout", &format!("csrf={token}"), Some(&cookie), None),
        )
        .await;
        assert_eq!(location(&r), "/login");
        assert!(r
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        assert_eq!(
            send(&app, get("/api/me", Some(&cookie))).await.status(),
            StatusCode::UNAUTHORIZED,
            "the session is gone"
        );
        assert_eq!(
            location(&send(&app, get("/", Some(&cookie))).await),
            "/login"
        );

        // Login: wrong password, unknown user, then right.
        let r = send(
            &app,
            post_form(
                "/login",
                "username=boss&password=wrong+password",
                None,
                None,
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(text(r).await.contains("wrong username or password"));
        let r = send(
            &app,
            post_form(
                "/login",
                "username=nobody&password=long+enough+1",
                None,
                None,
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = send(
            &app,
            post_form("/login", "username=boss&password=long+enough+1", None, None),
        )
        .await;
        assert_eq!(location(&r), "/");
        let again = session_cookie(&r);
        assert_ne!(again, cookie);
        assert_eq!(
            send(&app, get("/api/me", Some(&again))).await.status(),
            StatusCode::OK
        );

        // A forged cookie gets nowhere.
        assert_eq!(
            send(&app, get("/api/me", Some("chronolock_session=forged")))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

/// Sets up the first admin, `boss`, with the password `long enough 1`.
async fn create_boss(app: &Router) {
    let body = "username=boss&password=long+enough+1&confirm=long+enough+1";
    send(app, post_form("/setup", body, None, None)).await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2_hashes() {
    for (_, state) in common::states("hash").await {
        let app = router(state.clone());
        create_boss(&app).await;
        let (hash,): (String,) = sqlx::query_as("SELECT password_hash FROM admins")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("long enough"));
    }
}

/// Guessing is throttled: after five wrong passwords for a name, the next attempt is refused with
/// 429 and `Retry-After` before any hash is computed (the right password included), and the
/// delay grows; another name is not held up.
#[tokio::test]
async fn repeated_wrong_logins_are_throttled() {
    for (label, state) in common::states("throttle").await {
        let app = router(state.clone());
        create_boss(&app).await;
        let wrong = "username=boss&password=not+the+one+1";
        for _ in 0..chronolock_server::throttle::FREE_FAILURES {
            let r = send(&app, post_form("/login", wrong, None, None)).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{label}");
        }
        let right = "username=boss&password=long+enough+1";
        let r = send(&app, post_form("/login", right, None, None)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{label}");
        let retry: i64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(text(r).await.contains("too many failed logins"));
        // Another name is heard at once (and is simply wrong).
        let other = "username=someone&password=whatever+it+is";
        let r = send(&app, post_form("/login", other, None, None)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{label}");
        // Once the delay has passed, the right password works and clears the count.
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let r = send(&app, post_form("/login", right, None, None)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{label}");
    }
}

/// Logs `username` in and returns the session cookie.
async fn log_in(app: &Router, username: &str, password: &str) -> Response<Body> {
    let body = format!(
        "username={username}&password={}",
        password.replace(' ', "+")
    );
    send(app, post_form("/login", &body, None, None)).await
}

async fn usernames(state: &AppState) -> Vec<String> {
    sqlx::query_scalar("SELECT username FROM admins ORDER BY username")
        .fetch_all(state.db.pool())
        .await
        .unwrap()
}

/// Several admins: one adds another (bad names and passwords refused beside their field, a
/// taken name refused, the CSRF token required); nobody removes themselves or the last admin;
/// a removed admin's sessions end at once; changing one's password needs the current one, ends
/// one's other sessions and keeps this one.
#[tokio::test]
async fn admins_add_remove_and_change_their_password() {
    for (label, state) in common::states("admins").await {
        let app = router(state.clone());
        create_boss(&app).await;
        let boss = session_cookie(&log_in(&app, "boss", "long enough 1").await);
        let token = csrf(&app, &boss).await;
        let r = send(&app, get("/admins", Some(&boss))).await;
        assert_eq!(r.status(), StatusCode::OK, "{label}");
        let page = text(r).await;
        assert!(page.contains("boss") && page.contains("(you)"), "{page}");
        assert!(
            !page.contains("/delete"),
            "the only admin has no Remove button"
        );

        let add = |body: &str| format!("csrf={token}&{body}");
        for (body, field) in [
            (
                "username=al%20ice&password=long+enough+2&confirm=long+enough+2",
                "username",
            ),
            ("username=alice&password=short&confirm=short", "password"),
            (
                "username=alice&password=long+enough+2&confirm=long+enough+3",
                "confirm",
            ),
            (
                "username=boss&password=long+enough+2&confirm=long+enough+2",
                "username",
            ),
        ] {
            let r = send(&app, post_form("/admins", &add(body), Some(&boss), None)).await;
            assert_eq!(
                r.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{label} {body}"
            );
            let page = text(r).await;
            assert!(
                page.contains(&format!("id=\"{field}-error\"")),
                "{body}: {page}"
            );
        }
        let body = "csrf=guess&username=alice&password=long+enough+2&confirm=long+enough+2";
        let r = send(&app, post_form("/admins", body, Some(&boss), None)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body = add("username=alice&password=long+enough+2&confirm=long+enough+2");
        let r = send(
            &app,
            post_form("/admins", &body, Some(&boss), Some("http://evil.example")),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site");
        assert_eq!(usernames(&state).await, ["boss"]);
        let r = send(&app, post_form("/admins", &body, Some(&boss), None)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(text(r).await.contains("alice can now log in"));
        assert_eq!(usernames(&state).await, ["alice", "boss"]);
        let (hash,): (String,) =
            sqlx::query_as("SELECT password_hash FROM admins WHERE username = 'alice'")
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        assert!(hash.starts_with("$argon2id$"));

        // Alice logs in (twice: a laptop and a phone).
        let alice = session_cookie(&log_in(&app, "alice", "long enough 2").await);
        let alice_phone = session_cookie(&log_in(&app, "alice", "long enough 2").await);
        let alice_token = csrf(&app, &alice).await;
        let id = |name: &'static str| {
            let state = state.clone();
            async move {
                let (id,): (i64,) = sqlx::query_as("SELECT id FROM admins WHERE username = $1")
                    .bind(name)
                    .fetch_one(state.db.pool())
                    .await
                    .unwrap();
                id
            }
        };
        let (boss_id, alice_id) = (id("boss").await, id("alice").await);

        // Nobody removes themselves.
        let uri = format!("/admins/{alice_id}/delete");
        let r = send(
            &app,
            post_form(&uri, &format!("csrf={alice_token}"), Some(&alice), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // Alice removes boss: boss's session ends at once, his password no longer logs in.
        let uri = format!("/admins/{boss_id}/delete");
        let r = send(&app, post_form(&uri, "csrf=guess", Some(&alice), None)).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "the CSRF token is needed"
        );
        // First the confirmation page; nobody is removed yet.
        let r = send(
            &app,
            post_form(&uri, &format!("csrf={alice_token}"), Some(&alice), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{label}");
        assert!(text(r).await.contains("Remove boss?"));
        assert_eq!(usernames(&state).await, ["alice", "boss"]);
        let r = send(
            &app,
            post_form(
                &uri,
                &format!("csrf={alice_token}&confirm=yes"),
                Some(&alice),
                None,
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{label}");
        assert!(text(r)
            .await
            .contains("boss is removed and logged out everywhere."));
        assert_eq!(usernames(&state).await, ["alice"]);
        assert_eq!(
            send(&app, get("/api/me", Some(&boss))).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            log_in(&app, "boss", "long enough 1").await.status(),
            StatusCode::UNAUTHORIZED
        );
        let r = send(
            &app,
            post_form(&uri, &format!("csrf={alice_token}"), Some(&alice), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "already gone");

        // Changing the password: the current one is needed; the phone's session ends.
        let change = |current: &str, new: &str, confirm: &str| {
            format!(
                "csrf={alice_token}&current={}&password={}&confirm={}",
                current.replace(' ', "+"),
                new.replace(' ', "+"),
                confirm.replace(' ', "+")
            )
        };
        let body = change("not it at all", "brand new pass", "brand new pass");
        let r = send(
            &app,
            post_form("/admins/password", &body, Some(&alice), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(text(r).await.contains("id=\"current-error\""));
        let body = change("long enough 2", "brand new pass", "brand new past");
        let r = send(
            &app,
            post_form("/admins/password", &body, Some(&alice), None),
        )
        .await;
        assert!(text(r).await.contains("id=\"confirm-error\""));
        assert_eq!(
            log_in(&app, "alice", "long enough 2").await.status(),
            StatusCode::SEE_OTHER
        );
        let body = change("long enough 2", "brand new pass", "brand new pass");
        let r = send(
            &app,
            post_form("/admins/password", &body, Some(&alice), None),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{label}");
        assert!(text(r).await.contains("Your password is changed"));
        assert_eq!(
            send(&app, get("/api/me", Some(&alice))).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&app, get("/api/me", Some(&alice_phone)))
                .await
                .status(),
            StatusCode::UNAUTHORIZED,
            "the other session ended"
        );
        assert_eq!(
            log_in(&app, "alice", "long enough 2").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            log_in(&app, "alice", "brand new pass").await.status(),
            StatusCode::SEE_OTHER
        );
    }
}
