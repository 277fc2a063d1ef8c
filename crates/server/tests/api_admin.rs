//! The JSON API's admin actions with API tokens, on SQLite and PostgreSQL: every action a
//! script or member system needs, tokens' scopes and revocation, sessions' CSRF header, and the
//! OpenAPI document checked against the routes the server really serves.
#![allow(clippy::unwrap_used)] // test helpers: a failed request should fail the test loudly

mod common;
mod session;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chronolock_server::{model, tokens, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// Who calls: a bearer token, or a session cookie with (or without) its CSRF token.
#[derive(Clone)]
enum Auth {
    None,
    Token(String),
    Session {
        cookie: String,
        csrf: Option<String>,
    },
}

async fn call(
    app: &Router,
    auth: &Auth,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost");
    match auth {
        Auth::None => {}
        Auth::Token(t) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
        Auth::Session { cookie, csrf } => {
            b = b.header(header::COOKIE, cookie);
            if let Some(c) = csrf {
                b = b.header("x-csrf-token", c);
            }
        }
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, v)
}

/// The app, an admin's session cookie and its CSRF token.
async fn login(state: &AppState) -> (Router, String, String) {
    let (app, cookie) = session::login(state, PASSWORD).await;
    let session = Auth::Session {
        cookie: cookie.clone(),
        csrf: None,
    };
    let (_, me) = call(&app, &session, Method::GET, "/api/me", None).await;
    let csrf = me["csrf_token"].as_str().unwrap().to_string();
    (app, cookie, csrf)
}

async fn admin_id(state: &AppState) -> i64 {
    let (id,): (i64,) = sqlx::query_as("SELECT id FROM admins WHERE username = 'admin'")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn tokens_have_scopes_and_end_when_revoked() {
    for (label, state) in common::states("api_tokens").await {
        let (app, cookie, csrf) = login(&state).await;
        model::create_site(&state, "Makerspace", "Europe/Berlin")
            .await
            .unwrap();
        let admin = admin_id(&state).await;
        let read = Auth::Token(
            tokens::create(&state, admin, "dashboard", tokens::Scope::Read)
                .await
                .unwrap(),
        );
        let write = Auth::Token(
            tokens::create(&state, admin, "member sync", tokens::Scope::Write)
                .await
                .unwrap(),
        );
        let person = json!({"name": "Ana"});

        assert_eq!(
            call(&app, &Auth::None, Method::GET, "/api/people", None)
                .await
                .0,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
        let (status, _) = call(&app, &read, Method::GET, "/api/people", None).await;
        assert_eq!(status, StatusCode::OK, "{label}: a read token reads");
        let (status, body) = call(
            &app,
            &read,
            Method::POST,
            "/api/people",
            Some(person.clone()),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{label}: a read token may not write"
        );
        assert!(
            body["error"].as_str().unwrap().contains("only read"),
            "{body}"
        );
        let (status, body) = call(
            &app,
            &write,
            Method::POST,
            "/api/people",
            Some(person.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {body}");

        // A wrong or malformed bearer token is refused, never taken as the session.
        for bad in ["clk_not-a-token", "Basic abc", "clk_"] {
            let auth = Auth::Token(bad.to_string());
            assert_eq!(
                call(&app, &auth, Method::GET, "/api/people", None).await.0,
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
        let r = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/api/people")
                    .header(header::HOST, "localhost")
                    .header(header::COOKIE, &cookie)
                    .header(header::AUTHORIZATION, "Bearer clk_wrong")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{label}: a bad token with a good cookie"
        );

        // A session reads freely, but changes only with its CSRF token in the header.
        let bare = Auth::Session {
            cookie: cookie.clone(),
            csrf: None,
        };
        assert_eq!(
            call(&app, &bare, Method::GET, "/api/people", None).await.0,
            StatusCode::OK
        );
        let (status, body) = call(
            &app,
            &bare,
            Method::POST,
            "/api/people",
            Some(json!({"name": "Ben"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{label}: {body}");
        let forged = Auth::Session {
            cookie: cookie.clone(),
            csrf: Some("forged".into()),
        };
        assert_eq!(
            call(
                &app,
                &forged,
                Method::POST,
                "/api/people",
                Some(json!({"name": "Ben"}))
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        let session = Auth::Session {
            cookie: cookie.clone(),
            csrf: Some(csrf.clone()),
        };
        assert_eq!(
            call(
                &app,
                &session,
                Method::POST,
                "/api/people",
                Some(json!({"name": "Ben"}))
            )
            .await
            .0,
            StatusCode::CREATED
        );

        // Only the digest is stored, and use is noted.
        let rows: Vec<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT token_hash, prefix, last_used_at FROM api_tokens ORDER BY id")
                .fetch_all(state.db.pool())
                .await
                .unwrap();
        let Auth::Token(write_token) = &write else {
            unreachable!()
        };
        assert!(rows
            .iter()
            .all(|(hash, prefix, _)| !hash.contains(write_token.as_str())
                && hash.len() == 64
                && prefix.len() == 10));
        assert!(
            rows.iter().all(|(_, _, used)| used.is_some()),
            "{label}: last use noted"
        );

        // The tokens page lists them without the secret, makes one shown once, revokes after a
        // confirmation.
        let page = |uri: &str, form: Option<String>| {
            let mut b = Request::builder()
                .uri(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &cookie);
            let body = match form {
                Some(f) => {
                    b = b
                        .method("POST")
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                    Body::from(f)
                }
                None => Body::empty(),
            };
            app.clone().oneshot(b.body(body).unwrap())
        };
        let r = page("/tokens", None).await.unwrap();
        let html =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(
            html.contains("member sync") && !html.contains(write_token.as_str()),
            "{label}"
        );
        let r = page(
            "/tokens",
            Some(format!("csrf={csrf}&name=door+script&scope=write")),
        )
        .await
        .unwrap();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let html =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        let shown = html
            .split("id=\"new-token\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_string();
        assert!(shown.starts_with("clk_"), "{html}");
        let fresh = Auth::Token(shown.clone());
        assert_eq!(
            call(&app, &fresh, Method::GET, "/api/site", None).await.0,
            StatusCode::OK
        );
        let r = page("/tokens", Some(format!("csrf={csrf}&name=&scope=write")))
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{label}: a token needs a name"
        );
        let (id,): (i64,) = sqlx::query_as("SELECT id FROM api_tokens WHERE name = 'door script'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let r = page(
            &format!("/tokens/{id}/revoke"),
            Some(format!("csrf={csrf}")),
        )
        .await
        .unwrap();
        let html =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(
            html.contains("confirm-delete") && html.contains("door script"),
            "{label}: asks first"
        );
        assert_eq!(
            call(&app, &fresh, Method::GET, "/api/site", None).await.0,
            StatusCode::OK,
            "not yet revoked"
        );
        let r = page(
            &format!("/tokens/{id}/revoke"),
            Some(format!("csrf={csrf}&confirm=yes")),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            call(&app, &fresh, Method::GET, "/api/site", None).await.0,
            StatusCode::UNAUTHORIZED,
            "{label}: revoked"
        );
        let r = page(
            &format!("/tokens/{id}/revoke"),
            Some(format!("csrf={csrf}&confirm=yes")),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // A token ends with the admin who made it.
        sqlx::query(
            "INSERT INTO admins (username, password_hash, created_at) VALUES ('other', 'x', 0)",
        )
        .execute(state.db.pool())
        .await
        .unwrap();
        let (other,): (i64,) = sqlx::query_as("SELECT id FROM admins WHERE username = 'other'")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let theirs = Auth::Token(
            tokens::create(&state, other, "theirs", tokens::Scope::Read)
                .await
                .unwrap(),
        );
        assert_eq!(
            call(&app, &theirs, Method::GET, "/api/site", None).await.0,
            StatusCode::OK
        );
        sqlx::query("DELETE FROM admins WHERE id = $1")
            .bind(other)
            .execute(state.db.pool())
            .await
            .unwrap();
        assert_eq!(
            call(&app, &theirs, Method::GET, "/api/site", None).await.0,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
    }
}

/// The generation of a door's compiled list: it rises when the list's content changes.
async fn generation(state: &AppState, door: i64) -> i64 {
    let (g,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
        .bind(door)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    g
}

#[tokio::test]
async fn every_admin_action_works_with_a_token() {
    for (label, state) in common::states("api_actions").await {
        let (app, _, _) = login(&state).await;
        let admin = admin_id(&state).await;
        let t = Auth::Token(
            tokens::create(&state, admin, "member sync", tokens::Scope::Write)
                .await
                .unwrap(),
        );
        let go = |m: Method, uri: &str, body: Option<Value>| {
            let (app, t, uri) = (app.clone(), t.clone(), uri.to_string());
            async move { call(&app, &t, m, &uri, body).await }
        };

        // Site: none yet, then made, then changed.
        let (status, body) = go(Method::GET, "/api/site", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{label}: {body}");
        let (status, body) = go(
            Method::PUT,
            "/api/site",
            Some(json!({"name": "Makerspace", "timezone": "Mars/Olympus"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("timezone")),
            "{label}: {body}"
        );
        let (status, body) = go(Method::PUT, "/api/site", Some(json!({"name": "Makerspace", "timezone": "Europe/Berlin", "ntp_servers": ["ntp.example.org"]}))).await;
        assert_eq!(status, StatusCode::OK, "{label}: {body}");
        assert_eq!(body["ntp_servers"], json!(["ntp.example.org"]));
        let (status, body) = go(
            Method::PUT,
            "/api/site",
            Some(json!({"name": "Makerspace", "timezone": "Europe/Berlin", "colour": "red"})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{label}: unknown fields are refused"
        );
        assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");

        // Doors.
        let (status, door) = go(
            Method::POST,
            "/api/doors",
            Some(json!({"name": "Front door"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {door}");
        let door_id = door["id"].as_i64().unwrap();
        let (status, body) = go(
            Method::POST,
            "/api/doors",
            Some(json!({"name": "Front door"})),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{label}: {body}");
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/doors/{door_id}"),
            Some(json!({"contact_fitted": true, "held_open_s": 45})),
        )
        .await;
        assert_eq!(
            (
                status,
                body["held_open_s"].as_i64(),
                body["contact_fitted"].as_bool()
            ),
            (StatusCode::OK, Some(45), Some(true)),
            "{label}: {body}"
        );
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/doors/{door_id}"),
            Some(json!({"held_open_s": 0})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("held_open_s")),
            "{label}: {body}"
        );
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/doors/{door_id}"),
            Some(json!({"name": "Main entrance"})),
        )
        .await;
        assert_eq!(body["name"], "Main entrance", "{label}: {status} {body}");
        let (status, code) = go(
            Method::POST,
            &format!("/api/doors/{door_id}/pairing-code"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {code}");
        assert!(
            code["code"].as_str().unwrap().len() >= 8 && code["expires_at"].as_i64().unwrap() > 0
        );
        assert_eq!(
            go(
                Method::PATCH,
                "/api/doors/999999",
                Some(json!({"name": "x"}))
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );

        // Groups, people with cards, keypad codes.
        let (status, group) = go(
            Method::POST,
            "/api/groups",
            Some(json!({"name": "Members"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {group}");
        let group_id = group["id"].as_i64().unwrap();
        let (status, ana) = go(
            Method::POST,
            "/api/people",
            Some(json!({"name": "Ana", "cards": ["04a1b2c3"], "groups": [group_id]})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {ana}");
        let ana_id = ana["id"].as_i64().unwrap();
        assert_eq!(ana["cards"][0]["uid"], "04A1B2C3");
        assert_eq!(ana["groups"][0]["name"], "Members");
        // All or nothing: a bad card leaves no person behind.
        let (status, body) = go(
            Method::POST,
            "/api/people",
            Some(json!({"name": "Half", "cards": ["04AABBCC", "XYZ"]})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("uid")),
            "{label}: {body}"
        );
        let (_, list) = go(Method::GET, "/api/people?search=half", None).await;
        assert_eq!(list, json!([]), "{label}");
        let (status, body) = go(
            Method::POST,
            "/api/people",
            Some(json!({"name": "Dup", "cards": ["04A1B2C3"]})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{label}: someone holds the card: {body}"
        );
        let (status, card) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/cards"),
            Some(json!({"uid": "04D4E5F6"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {card}");
        let (status, totp) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/keypad"),
            Some(json!({"code": "1234", "kind": "totp"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {totp}");
        assert!(totp["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/"));
        let (status, hotp) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/keypad"),
            Some(json!({"code": "1234", "kind": "hotp"})),
        )
        .await;
        assert_eq!(
            (status, hotp["backup_codes"].as_array().map(Vec::len)),
            (StatusCode::CREATED, Some(10)),
            "{label}: {hotp}"
        );
        let (status, body) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/keypad"),
            Some(json!({"code": "1234", "kind": "totp"})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{label}: replacing needs replace: {body}"
        );
        let (status, _) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/keypad"),
            Some(json!({"code": "1234", "kind": "totp", "replace": true})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = go(
            Method::POST,
            &format!("/api/people/{ana_id}/keypad"),
            Some(json!({"code": "12a", "kind": "totp"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("code")),
            "{label}: {body}"
        );
        let (_, ana) = go(Method::GET, &format!("/api/people/{ana_id}"), None).await;
        assert_eq!(ana["cards"].as_array().unwrap().len(), 2, "{label}: {ana}");
        assert_eq!(ana["keypad_codes"][0]["totp"], true);
        assert!(
            ana.to_string()
                .find(totp["secret"].as_str().unwrap())
                .is_none(),
            "secrets are never read back"
        );
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/people/{ana_id}"),
            Some(json!({"name": "Ana Lima"})),
        )
        .await;
        assert_eq!(
            (status, body["name"].as_str()),
            (StatusCode::OK, Some("Ana Lima")),
            "{label}"
        );
        let (_, ben) = go(Method::POST, "/api/people", Some(json!({"name": "Ben"}))).await;
        let ben_id = ben["id"].as_i64().unwrap();
        assert_eq!(
            go(
                Method::PUT,
                &format!("/api/groups/{group_id}/members/{ben_id}"),
                None
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
        let (_, g) = go(Method::GET, &format!("/api/groups/{group_id}"), None).await;
        assert_eq!(g["members"].as_array().unwrap().len(), 2, "{label}: {g}");
        assert_eq!(
            go(
                Method::DELETE,
                &format!("/api/groups/{group_id}/members/{ben_id}"),
                None
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            go(
                Method::PATCH,
                &format!("/api/groups/{group_id}"),
                Some(json!({"name": "Keyholders"}))
            )
            .await
            .1["name"],
            "Keyholders"
        );
        let (_, groups) = go(Method::GET, "/api/groups", None).await;
        assert_eq!(groups[0]["members"], 1, "{label}: {groups}");

        // Schedules, holidays, rules; the door's list follows.
        let (status, body) = go(Method::POST, "/api/schedules", Some(json!({"name": "Daytime", "slots": [{"days": ["mon", "funday"], "start": "09:00", "end": "18:00"}]}))).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("slots[0].days")),
            "{label}: {body}"
        );
        let (status, sched) = go(Method::POST, "/api/schedules", Some(json!({"name": "Daytime", "slots": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}]}))).await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {sched}");
        assert_eq!(sched["slots"][0]["days"].as_array().unwrap().len(), 5);
        let sched_id = sched["id"].as_i64().unwrap();
        let (status, sched) = go(
            Method::POST,
            &format!("/api/schedules/{sched_id}/slots"),
            Some(json!({"days": ["sat"], "start": "10:00", "end": "14:00"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {sched}");
        let slot_id = sched["slots"][1]["id"].as_i64().unwrap();
        assert_eq!(
            go(
                Method::DELETE,
                &format!("/api/schedules/{sched_id}/slots/{slot_id}"),
                None
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
        let only = sched["slots"][0]["id"].as_i64().unwrap();
        let (status, body) = go(
            Method::DELETE,
            &format!("/api/schedules/{sched_id}/slots/{only}"),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{label}: the last slot stays: {body}"
        );
        assert_eq!(
            go(
                Method::PATCH,
                &format!("/api/schedules/{sched_id}"),
                Some(json!({"name": "Weekdays"}))
            )
            .await
            .1["name"],
            "Weekdays"
        );
        let (status, hol) = go(Method::POST, "/api/holidays", Some(json!({"name": "Christmas", "first": "2026-12-24", "last": "2026-12-26", "yearly": true, "schedules": [sched_id]}))).await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {hol}");
        let (status, body) = go(
            Method::POST,
            "/api/holidays",
            Some(json!({"name": "Bad", "first": "2026-13-01", "schedules": [sched_id]})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("first")),
            "{label}: {body}"
        );

        let (status, body) = go(
            Method::POST,
            "/api/rules",
            Some(json!({"door_id": door_id, "group_id": group_id, "access": "SCHEDULED"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("schedule_id")),
            "{label}: {body}"
        );
        let (status, body) = go(
            Method::POST,
            "/api/rules",
            Some(json!({"door_id": door_id, "access": "UNRESTRICTED"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("person_id")),
            "{label}: {body}"
        );
        let before = generation(&state, door_id).await;
        let (status, rule) = go(Method::POST, "/api/rules", Some(json!({"door_id": door_id, "group_id": group_id, "access": "SCHEDULED", "schedule_id": sched_id, "valid_from": "2026-01-01"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {rule}");
        let with_rule = generation(&state, door_id).await;
        assert!(
            with_rule > before,
            "{label}: the door's list follows the rule at once"
        );
        let (status, body) = go(Method::DELETE, &format!("/api/schedules/{sched_id}"), None).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{label}: a rule uses it: {body}"
        );
        let rule_id = rule["id"].as_i64().unwrap();
        assert_eq!(
            go(Method::GET, &format!("/api/rules/{rule_id}"), None)
                .await
                .1["access"],
            "SCHEDULED"
        );
        assert_eq!(
            go(Method::GET, "/api/rules", None)
                .await
                .1
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let card_id = card["id"].as_i64().unwrap();
        assert_eq!(
            go(
                Method::DELETE,
                &format!("/api/people/{ana_id}/cards/{card_id}"),
                None
            )
            .await
            .0,
            StatusCode::NO_CONTENT
        );
        assert!(
            generation(&state, door_id).await > with_rule,
            "{label}: a deleted card leaves the list at once"
        );

        // Webhooks and lockdown.
        let (status, body) = go(
            Method::POST,
            "/api/webhooks",
            Some(json!({"url": "ftp://x", "kinds": ["alarm"]})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("url")),
            "{label}: {body}"
        );
        let (status, hook) = go(
            Method::POST,
            "/api/webhooks",
            Some(json!({"url": "https://hooks.example.org/door", "kinds": ["alarm", "lockdown"]})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {hook}");
        assert_eq!(hook["secret"].as_str().unwrap().len(), 48);
        assert_eq!(
            go(Method::GET, "/api/webhooks", None).await.1[0]["kinds"],
            json!(["alarm", "lockdown"])
        );
        let (status, lock) = go(Method::POST, "/api/lockdown", Some(json!({"on": true}))).await;
        assert_eq!(
            (status, lock["on"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{label}: {lock}"
        );
        assert_eq!(
            lock["order"]["admin"], "admin (token \"member sync\")",
            "{label}: who gave it"
        );
        assert_eq!(go(Method::GET, "/api/lockdown", None).await.1["on"], true);
        assert_eq!(
            go(Method::POST, "/api/lockdown", Some(json!({"on": false})))
                .await
                .1["on"],
            false
        );

        // A member system: people with details, found again by member number, and a file
        // imported (previewed first) and exported.
        let (status, cara) = go(
            Method::POST,
            "/api/people",
            Some(json!({"name": "Cara", "email": "cara@example.org", "member_number": "M-17", "expiry": "2030-06-30", "note": "night shift"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{label}: {cara}");
        assert_eq!(
            (cara["member_number"].as_str(), cara["expiry"].as_str()),
            (Some("M-17"), Some("2030-06-30"))
        );
        let (status, body) = go(
            Method::POST,
            "/api/people",
            Some(json!({"name": "Dora", "member_number": "M-17"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("member_number")),
            "{label}: {body}"
        );
        let (_, found) = go(Method::GET, "/api/people?member_number=M-17", None).await;
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{label}: {found}");
        assert_eq!(found[0]["email"], "cara@example.org");
        let (_, found) = go(Method::GET, "/api/people?search=dora", None).await;
        assert_eq!(found, json!([]), "{label}: a refused person leaves nothing");
        let cara_id = cara["id"].as_i64().unwrap();
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/people/{cara_id}"),
            Some(json!({"expiry": "2031-13-01"})),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("expiry")),
            "{label}: {body}"
        );
        let (status, body) = go(
            Method::PATCH,
            &format!("/api/people/{cara_id}"),
            Some(json!({"expiry": "", "note": "day shift"})),
        )
        .await;
        assert_eq!(
            (
                status,
                body["expiry"].clone(),
                body["note"].as_str(),
                body["email"].as_str()
            ),
            (
                StatusCode::OK,
                Value::Null,
                Some("day shift"),
                Some("cara@example.org")
            ),
            "{label}: {body}"
        );

        let esp = json!({"type": "esp-rfid-userbackup", "version": "v0.6", "list": [
            {"uid": "0a0b0c0d", "username": "Eve", "acctype": 1, "validuntil": 1893456000},
            {"uid": "0a0b0c0e", "username": "Finn", "acctype": 0, "validuntil": 1893456000}
        ]})
        .to_string();
        let import = |uri: &str, text: String| {
            let (app, uri) = (app.clone(), uri.to_string());
            let Auth::Token(token) = t.clone() else {
                unreachable!()
            };
            async move {
                let r = tower::ServiceExt::oneshot(
                    app,
                    Request::builder()
                        .method("POST")
                        .uri(uri)
                        .header(header::HOST, "localhost")
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .header(header::CONTENT_TYPE, "text/plain")
                        .body(Body::from(text))
                        .unwrap(),
                )
                .await
                .unwrap();
                let status = r.status();
                let bytes = r.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };
        let (status, preview) = import("/api/import?dry_run=true", esp.clone()).await;
        assert_eq!(
            (
                status,
                preview["imported"].as_bool(),
                preview["added"].as_u64()
            ),
            (StatusCode::OK, Some(false), Some(2)),
            "{label}: {preview}"
        );
        assert_eq!(
            go(Method::GET, "/api/people?search=eve", None).await.1,
            json!([]),
            "{label}: a preview stores nothing"
        );
        let (status, done) = import("/api/import", esp.clone()).await;
        assert_eq!(
            (status, done["added"].as_u64()),
            (StatusCode::OK, Some(2)),
            "{label}: {done}"
        );
        let (_, again) = import("/api/import", esp).await;
        assert_eq!(
            (again["added"].as_u64(), again["updated"].as_u64()),
            (Some(0), Some(0)),
            "{label}: re-import changes nothing: {again}"
        );
        let (status, body) = import("/api/import", "name,cards\nGil,ZZZZ\n".into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{label}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("row 2"),
            "{label}: {body}"
        );
        let (status, body) = import("/api/import", "{ not json".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {body}");
        let r = tower::ServiceExt::oneshot(
            app.clone(),
            Request::builder()
                .uri("/api/export?format=csv")
                .header(header::HOST, "localhost")
                .header(
                    header::AUTHORIZATION,
                    format!(
                        "Bearer {}",
                        match &t {
                            Auth::Token(x) => x.clone(),
                            _ => unreachable!(),
                        }
                    ),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let csv =
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(
            csv.starts_with("name,")
                && csv.contains("Eve")
                && csv.contains("0A0B0C0D")
                && csv.contains("M-17"),
            "{label}: {csv}"
        );
        let (status, exported) = go(Method::GET, "/api/export", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            exported["people"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Finn"),
            "{label}: {exported}"
        );
        assert_eq!(
            go(Method::GET, "/api/export?format=xml", None).await.0,
            StatusCode::BAD_REQUEST
        );

        // Everything can go again.
        let hook_id = hook["id"].as_i64().unwrap();
        let hol_id = hol["id"].as_i64().unwrap();
        let code_id = ana["keypad_codes"][0]["id"].as_i64().unwrap();
        for uri in [
            format!("/api/webhooks/{hook_id}"),
            format!("/api/rules/{rule_id}"),
            format!("/api/holidays/{hol_id}"),
            format!("/api/schedules/{sched_id}"),
            format!("/api/people/{ana_id}/keypad/{code_id}"),
            format!("/api/people/{ben_id}"),
            format!("/api/groups/{group_id}"),
            format!("/api/doors/{door_id}"),
        ] {
            assert_eq!(
                go(Method::DELETE, &uri, None).await.0,
                StatusCode::NO_CONTENT,
                "{label}: {uri}"
            );
            assert_eq!(
                go(Method::DELETE, &uri, None).await.0,
                StatusCode::NOT_FOUND,
                "{label}: {uri} again"
            );
        }
        assert_eq!(
            go(Method::DELETE, "/api/people/x", None).await.0,
            StatusCode::NOT_FOUND
        );
        let (status, body) = go(Method::POST, "/api/people", Some(json!("not an object"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {body}");
    }
}

/// The `.route("/api/…", …)` registrations in the server's sources, with their methods.
fn served_routes() -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut out = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for chunk in text.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let (route, rest) = rest.split_once('"').unwrap();
            if !route.starts_with("/api/") {
                continue;
            }
            // The method router runs to the closing parenthesis of `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let methods = &rest[..end];
            for m in ["get", "post", "put", "patch", "delete"] {
                let called = methods.match_indices(&format!("{m}(")).any(|(i, _)| {
                    i == 0
                        || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && methods.as_bytes()[i - 1] != b'_'
                });
                if called {
                    out.push((m.to_string(), route.to_string()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn the_document_describes_exactly_the_served_routes() {
    let doc = serde_json::to_value(chronolock_server::api::openapi_document()).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .filter(|(_, p)| p != "/healthz")
        .collect();
    documented.sort();
    let served = served_routes();
    assert!(served.len() > 40, "found only {served:?}");
    assert_eq!(documented, served, "the document and the routes differ");

    // Every documented operation reaches a handler: with a write token and ids that name
    // nothing, no answer is the router's own 404 or 405.
    let state = AppState::open(&common::sqlite_config("api_routes"))
        .await
        .unwrap();
    let (app, _, _) = login(&state).await;
    model::create_site(&state, "Makerspace", "Europe/Berlin")
        .await
        .unwrap();
    let token = Auth::Token(
        tokens::create(
            &state,
            admin_id(&state).await,
            "probe",
            tokens::Scope::Write,
        )
        .await
        .unwrap(),
    );
    for (method, path) in &documented {
        let uri = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "999999" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let (status, answer) = call(&app, &token, method.clone(), &uri, body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(
            answer.is_object() || answer.is_array() || answer.is_null(),
            "{method} {uri}: not a JSON answer: {answer}"
        );
        assert!(
            status != StatusCode::NOT_FOUND || answer["error"] == "not found",
            "{method} {uri}: {answer}"
        );
    }
}
