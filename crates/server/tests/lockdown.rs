//! Lockdown, door contacts and alarms through the admin UI and the device API, on SQLite and
//! PostgreSQL: the lockdown button and its confirmation, the signed order a sync hands out, who
//! gave it on record; the door's contact settings (validated) reaching its device; alarms shown
//! on the dashboard and the door page until cleared, the log's alarm and lockdown filters, and
//! webhooks for the new kinds.
#![allow(clippy::unwrap_used)] // test helpers: a failed step should fail the test loudly

mod common;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use chronolock_core::controller::AlarmKind;
use chronolock_core::lockdown::LockdownOrder;
use chronolock_core::protocol::{
    DeviceStatus, DoorPosition, Enrolled, Enrolment, EventBody, SyncRequestWriter, SyncResponse,
    WireEvent, SYNC_RESPONSE_LEN,
};
use chronolock_server::{device, router, AppState};
use ed25519_dalek::VerifyingKey;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

/// An admin's browser, logged in.
struct Admin {
    app: Router,
    cookie: String,
    csrf: String,
}

impl Admin {
    async fn new(state: &AppState) -> Admin {
        let app = router(state.clone());
        let (_, headers, _) = send(
            &app,
            Request::post("/setup")
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "username=boss&password=long+enough+1&confirm=long+enough+1",
                ))
                .unwrap(),
        )
        .await;
        let cookie = headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut admin = Admin {
            app,
            cookie,
            csrf: String::new(),
        };
        let me: serde_json::Value = serde_json::from_str(&admin.get("/api/me").await.body).unwrap();
        admin.csrf = me["csrf_token"].as_str().unwrap().to_string();
        admin
    }

    async fn get(&self, uri: &str) -> Answer {
        let (status, headers, body) = send(
            &self.app,
            Request::get(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    /// Posts a form with the session's CSRF token (unless `csrf` is false).
    async fn post_with(&self, uri: &str, fields: &[(&str, &str)], csrf: bool) -> Answer {
        let mut all: Vec<(&str, &str)> = Vec::new();
        if csrf {
            all.push(("csrf", &self.csrf));
        }
        all.extend_from_slice(fields);
        let (status, headers, body) = send(
            &self.app,
            Request::post(uri)
                .header(header::HOST, "localhost")
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(serde_urlencoded::to_string(&all).unwrap()))
                .unwrap(),
        )
        .await;
        Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    async fn post(&self, uri: &str, fields: &[(&str, &str)]) -> Answer {
        self.post_with(uri, fields, true).await
    }

    /// The site and one door, made through the UI.
    async fn site_and_door(&self, state: &AppState) -> (i64, i64) {
        let r = self
            .post(
                "/site",
                &[("name", "Makerspace"), ("timezone", "Europe/Berlin")],
            )
            .await;
        assert_eq!(r.location(), "/doors", "{}", r.body);
        let r = self.post("/doors", &[("name", "Front door")]).await;
        let door: i64 = r.location().rsplit('/').next().unwrap().parse().unwrap();
        let (site,): (i64,) = sqlx::query_as("SELECT id FROM sites")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        (site, door)
    }
}

async fn pair(state: &AppState, door: i64) -> Enrolled {
    let code = device::new_pairing_code(state, door).await.unwrap();
    let device = Enrolment::new([0x11; 32], [0x22; 16], &code);
    let (status, _, body) = send(
        &router(state.clone()),
        Request::post("/device/v1/enrol")
            .body(Body::from(device.request().to_vec()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    device.finish(&body).unwrap()
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A sync carrying `events`; the answer as the door reads it.
async fn sync(state: &AppState, device: &Enrolled, events: &[WireEvent]) -> SyncResponse {
    let status = DeviceStatus {
        wall_us: Some(chronolock_server::now_micros()),
        uptime_us: 1,
        generation: 0,
        source: None,
        error_us: 20_000,
        battery_mv: 3650,
        partial_list: None,
        list_capacity: 0,
        firmware_version: 0,
        partial_firmware: None,
    };
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = vec![0u8; 4096];
    let mut w =
        SyncRequestWriter::new(&mut buf, device.door_id, [9; 16], counter, &status).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    let n = w.finish(&device.device_key);
    buf.truncate(n);
    let (code, _, body) = send(
        &router(state.clone()),
        Request::post("/device/v1/sync")
            .body(Body::from(buf))
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let site = VerifyingKey::from_bytes(&device.site_key).unwrap();
    let mut fixed = body[..SYNC_RESPONSE_LEN].to_vec();
    SyncResponse::parse(
        &mut fixed,
        &device.device_key,
        &site,
        device.door_id,
        &[9; 16],
    )
    .unwrap()
}

fn event(id: u64, body: EventBody) -> WireEvent {
    WireEvent {
        id,
        device_us: Some(chronolock_server::now_micros()),
        body,
    }
}

async fn count(state: &AppState, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn lockdown_is_ordered_and_lifted_behind_a_confirmation() {
    for (label, state) in common::states("lockdown_ui").await {
        let admin = Admin::new(&state).await;
        let (_, door) = admin.site_and_door(&state).await;
        let device = pair(&state, door).await;
        let first = sync(&state, &device, &[]).await;
        assert_eq!(first.lockdown, None, "{label}: never ordered");
        assert_eq!(
            first.position,
            Some(DoorPosition {
                contact: false,
                held_open_s: 30
            }),
            "{label}: the defaults"
        );

        let dashboard = admin.get("/").await;
        assert!(dashboard.body.contains("id=\"lockdown-start\""), "{label}");
        assert!(!dashboard.body.contains("id=\"lockdown-banner\""));

        // Only the confirmation's form orders it: a post without `confirm` asks first.
        let r = admin.post("/lockdown", &[("state", "on")]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.location(), "/lockdown/confirm?state=on");
        assert_eq!(
            count(&state, "SELECT COUNT(*) FROM lockdown_orders").await,
            0
        );
        let confirm = admin.get("/lockdown/confirm?state=on").await;
        assert_eq!(confirm.status, StatusCode::OK);
        assert!(
            confirm.body.contains("Put the site into lockdown?"),
            "{label}"
        );
        assert!(confirm.body.contains("id=\"lockdown-confirm\""));
        // Without the session's token: refused.
        let r = admin
            .post_with("/lockdown", &[("state", "on"), ("confirm", "yes")], false)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}");
        assert_eq!(
            count(&state, "SELECT COUNT(*) FROM lockdown_orders").await,
            0
        );

        let r = admin
            .post("/lockdown", &[("state", "on"), ("confirm", "yes")])
            .await;
        assert_eq!(r.location(), "/", "{label}: {}", r.body);
        let dashboard = admin.get("/").await;
        assert!(dashboard.body.contains("id=\"lockdown-banner\""), "{label}");
        assert!(dashboard.body.contains("ordered by boss"));
        assert!(dashboard.body.contains("id=\"lockdown-lift\""));
        // Who and when, on record.
        let (seq, active, by, issued): (i64, i32, String, i64) = sqlx::query_as(
            "SELECT seq, active, admin_name, issued_at FROM lockdown_orders ORDER BY seq DESC",
        )
        .fetch_one(state.db.pool())
        .await
        .unwrap();
        assert_eq!((seq, active, by.as_str()), (1, 1, "boss"), "{label}");
        assert!((chronolock_server::now_unix() - issued).abs() < 60);

        // The door's next sync carries the order, signed by the site.
        let synced = sync(&state, &device, &[]).await;
        let site = VerifyingKey::from_bytes(&state.site_public_key).unwrap();
        let order = LockdownOrder::verify(&synced.lockdown.unwrap(), &site).unwrap();
        assert_eq!((order.seq, order.on, order.issued_unix), (1, true, issued));

        // Ordering it again changes nothing.
        admin
            .post("/lockdown", &[("state", "on"), ("confirm", "yes")])
            .await;
        assert_eq!(
            count(&state, "SELECT COUNT(*) FROM lockdown_orders").await,
            1
        );

        // Lifted the same way.
        let confirm = admin.get("/lockdown/confirm?state=off").await;
        assert!(confirm.body.contains("Lift the lockdown?"), "{label}");
        let r = admin
            .post("/lockdown", &[("state", "off"), ("confirm", "yes")])
            .await;
        assert_eq!(r.location(), "/");
        let dashboard = admin.get("/").await;
        assert!(
            !dashboard.body.contains("id=\"lockdown-banner\""),
            "{label}"
        );
        assert!(dashboard.body.contains("id=\"lockdown-start\""));
        let synced = sync(&state, &device, &[]).await;
        let order = LockdownOrder::verify(&synced.lockdown.unwrap(), &site).unwrap();
        assert_eq!((order.seq, order.on), (2, false), "{label}");

        let page = admin.get("/lockdown").await;
        assert!(page
            .body
            .contains("Not in lockdown; the last one was lifted"));
        assert_eq!(page.body.matches("<td>boss</td>").count(), 2, "{label}");
        // The JSON API's overview says it too.
        let overview: serde_json::Value =
            serde_json::from_str(&admin.get("/api/doors").await.body).unwrap();
        assert_eq!(overview["lockdowns"][0]["on"], false, "{label}");
        assert_eq!(overview["lockdowns"][0]["seq"], 2);
        assert_eq!(overview["lockdowns"][0]["admin"], "boss");
    }
}

#[tokio::test]
async fn door_contact_settings_are_checked_and_reach_the_door() {
    for (label, state) in common::states("lockdown_position").await {
        let admin = Admin::new(&state).await;
        let (_, door) = admin.site_and_door(&state).await;
        let device = pair(&state, door).await;
        let path = format!("/doors/{door}/position");
        for bad in ["0", "3601", "-3", "ten", "", "1.5"] {
            let r = admin
                .post(&path, &[("contact_fitted", "1"), ("held_open_s", bad)])
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{label}: {bad:?}"
            );
            assert!(
                r.body.contains("id=\"held_open_s-error\"")
                    && r.body.contains("a whole number of seconds from 1 to 3600"),
                "{label}: {bad:?}"
            );
            // The form keeps what the admin typed.
            assert!(r.body.contains(&format!("value=\"{bad}\"")), "{label}");
        }
        let page = admin.get(&format!("/doors/{door}")).await;
        assert!(
            page.body.contains("id=\"contact-state\">unknown"),
            "{label}"
        );
        assert!(page.body.contains("no contact fitted"));

        let r = admin
            .post(&path, &[("contact_fitted", "1"), ("held_open_s", " 90 ")])
            .await;
        assert_eq!(
            r.location(),
            format!("/doors/{door}"),
            "{label}: {}",
            r.body
        );
        let synced = sync(&state, &device, &[]).await;
        assert_eq!(
            synced.position,
            Some(DoorPosition {
                contact: true,
                held_open_s: 90
            }),
            "{label}"
        );
        // Unticked: no contact.
        admin.post(&path, &[("held_open_s", "45")]).await;
        let synced = sync(&state, &device, &[]).await;
        assert_eq!(
            synced.position,
            Some(DoorPosition {
                contact: false,
                held_open_s: 45
            }),
            "{label}"
        );
        // Another site's door, or none: not found.
        let r = admin
            .post("/doors/999999/position", &[("held_open_s", "45")])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{label}");
    }
}

#[tokio::test]
async fn alarms_show_until_cleared_filter_in_the_log_and_go_to_webhooks() {
    for (label, state) in common::states("lockdown_alarms").await {
        let admin = Admin::new(&state).await;
        let (_, door) = admin.site_and_door(&state).await;
        let r = admin
            .post(
                "/webhooks",
                &[
                    ("url", "https://hooks.example.org/doors"),
                    ("kinds", "alarm"),
                    ("kinds", "alarm_cleared"),
                    ("kinds", "lockdown"),
                ],
            )
            .await;
        assert_eq!(r.location(), "/webhooks", "{label}: {}", r.body);
        let page = admin.get("/webhooks").await;
        for kind in ["alarm", "alarm_cleared", "lockdown"] {
            assert!(
                page.body.contains(&format!("value=\"{kind}\"")),
                "{label}: {kind}"
            );
        }
        let device = pair(&state, door).await;
        admin
            .post(
                &format!("/doors/{door}/position"),
                &[("contact_fitted", "1"), ("held_open_s", "30")],
            )
            .await;

        // The door is forced.
        sync(
            &state,
            &device,
            &[
                event(1, EventBody::Door { open: true }),
                event(
                    2,
                    EventBody::Alarm {
                        kind: AlarmKind::DoorForced,
                    },
                ),
            ],
        )
        .await;
        let dashboard = admin.get("/").await;
        assert!(
            dashboard.body.contains(&format!("id=\"alarm-{door}\"")),
            "{label}"
        );
        assert!(dashboard.body.contains("door forced open"));
        assert!(dashboard.body.contains("1 active alarm<"), "{label}");
        let page = admin.get(&format!("/doors/{door}")).await;
        assert!(page.body.contains("id=\"door-alarm\""), "{label}");
        assert!(page.body.contains("id=\"contact-state\">open"), "{label}");
        let overview: serde_json::Value =
            serde_json::from_str(&admin.get("/api/doors").await.body).unwrap();
        assert_eq!(overview["alarms"][0]["kind"], "door_forced", "{label}");
        assert_eq!(overview["alarms"][0]["door_id"], door);

        let payload: (String,) = sqlx::query_as("SELECT payload FROM webhook_deliveries")
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        let payload: serde_json::Value = serde_json::from_str(&payload.0).unwrap();
        assert_eq!(payload["kind"], "alarm", "{label}");
        assert_eq!(payload["detail"]["kind"], "door_forced");

        // Closed again: cleared; the door says lockdown now too.
        sync(
            &state,
            &device,
            &[
                event(3, EventBody::Door { open: false }),
                event(
                    4,
                    EventBody::AlarmCleared {
                        kind: AlarmKind::DoorForced,
                    },
                ),
                event(5, EventBody::Lockdown { on: true }),
            ],
        )
        .await;
        let dashboard = admin.get("/").await;
        assert!(!dashboard.body.contains("active alarm"), "{label}");
        let page = admin.get(&format!("/doors/{door}")).await;
        assert!(!page.body.contains("id=\"door-alarm\""), "{label}");
        assert!(page.body.contains("id=\"contact-state\">closed"), "{label}");

        let log = admin.get("/log?kind=alarms").await;
        assert_eq!(log.status, StatusCode::OK);
        assert_eq!(
            log.body.matches("<td>alarm").count(),
            2,
            "{label}: raised and cleared"
        );
        assert!(log.body.contains("id=\"filter-lockdown\""));
        let log = admin.get("/log?kind=lockdown").await;
        assert_eq!(log.body.matches("<td>lockdown</td>").count(), 1, "{label}");
        let api: serde_json::Value =
            serde_json::from_str(&admin.get("/api/events?kind=alarms").await.body).unwrap();
        assert_eq!(
            api["events"].as_array().map(Vec::len),
            Some(2),
            "{label}: {api}"
        );

        // Deliveries: alarm, alarm_cleared, lockdown; the door's open/close were not asked for.
        let kinds: Vec<(String,)> = sqlx::query_as(
            "SELECT e.kind FROM webhook_deliveries d JOIN events e ON e.id = d.event_id ORDER BY e.id",
        )
        .fetch_all(state.db.pool())
        .await
        .unwrap();
        let kinds: Vec<&str> = kinds.iter().map(|(k,)| k.as_str()).collect();
        assert_eq!(kinds, ["alarm", "alarm_cleared", "lockdown"], "{label}");

        // A door closing ends a held-open alarm even without `alarm_cleared`.
        sync(
            &state,
            &device,
            &[
                event(6, EventBody::Door { open: true }),
                event(
                    7,
                    EventBody::Alarm {
                        kind: AlarmKind::DoorHeldOpen,
                    },
                ),
            ],
        )
        .await;
        assert!(
            admin.get("/").await.body.contains("door held open"),
            "{label}"
        );
        sync(
            &state,
            &device,
            &[event(8, EventBody::Door { open: false })],
        )
        .await;
        assert!(
            !admin.get("/").await.body.contains("active alarm"),
            "{label}"
        );
    }
}
