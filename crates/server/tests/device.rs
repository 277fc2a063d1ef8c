//! The device protocol against the server, on SQLite and PostgreSQL: pairing, syncs (events
//! stored once, lists only when stale, sealed time), CONDITIONAL checks, and the webhook an
//! EMERGENCY card sets off.
#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chronolock_core::access::Decision;
use chronolock_core::allowlist::{AccessType, AllowList};
use chronolock_core::controller::Credential;
use chronolock_core::protocol::{
    self, DeviceStatus, Enrolled, Enrolment, EventBody, ListStream, PartialList, SyncRequestWriter,
    SyncResponse, WireEvent, SYNC_RESPONSE_LEN,
};
use chronolock_core::Source;
use chronolock_server::model::{self, RuleSpec, Subject};
use chronolock_server::{device, webhooks, AppState};
use ed25519_dalek::VerifyingKey;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn post(state: &AppState, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let app = chronolock_server::router(state.clone());
    let r = app
        .oneshot(
            Request::post(path)
                .header("content-type", "application/octet-stream")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    (
        status,
        r.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

struct Site {
    site: i64,
    door: i64,
    alice: i64,
}

/// A site with one door; Alice has an UNRESTRICTED card, Victor a CONDITIONAL one, Fire an
/// EMERGENCY one.
async fn site(state: &AppState) -> Site {
    let site = model::create_site(state, "Makerspace", "Europe/Berlin")
        .await
        .unwrap();
    let door = model::create_door(state, site, "Front door").await.unwrap();
    let mut people = Vec::new();
    for (name, uid, access) in [
        ("Alice", "04A1B2C3", AccessType::Unrestricted),
        ("Victor", "04C0FFEE", AccessType::Conditional),
        ("Fire brigade", "04F1F1F1", AccessType::Emergency),
    ] {
        let p = model::create_person(state, site, name).await.unwrap();
        model::add_card(state, p, uid).await.unwrap();
        model::add_rule(
            state,
            &RuleSpec {
                door_id: door,
                subject: Subject::Person(p),
                access,
                valid_from: 0,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        people.push(p);
    }
    model::site_changed(state, site).await.unwrap();
    Site {
        site,
        door,
        alice: people[0],
    }
}

async fn pair(state: &AppState, door: i64) -> Enrolled {
    let code = device::new_pairing_code(state, door).await.unwrap();
    let device = Enrolment::new([0x11; 32], [0x22; 16], &code);
    let (status, body) = post(state, "/device/v1/enrol", device.request().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let enrolled = device.finish(&body).unwrap();
    // The code is spent.
    let (status, _) = post(state, "/device/v1/enrol", device.request().to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    enrolled
}

struct Synced {
    response: SyncResponse,
    list: Vec<u8>,
    len: usize,
    /// The request and the answer as they travelled.
    request: Vec<u8>,
    answer: Vec<u8>,
}

/// Request counters: they only ever grow (one sequence for every door of every test).
static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_counter() -> u64 {
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn sync(
    state: &AppState,
    device: &Enrolled,
    generation: u64,
    events: &[WireEvent],
    nonce: u8,
) -> Synced {
    sync_resuming(state, device, generation, events, nonce, None).await
}

/// A sync from a door that holds the start of a list from an interrupted download.
async fn sync_resuming(
    state: &AppState,
    device: &Enrolled,
    generation: u64,
    events: &[WireEvent],
    nonce: u8,
    partial_list: Option<PartialList>,
) -> Synced {
    let status = DeviceStatus {
        wall_us: Some(chronolock_server::now_micros() + 150_000),
        uptime_us: 1,
        generation,
        source: Some(Source::Ntp),
        error_us: 20_000,
        battery_mv: 3650,
        partial_list,
        list_capacity: 0,
        firmware_version: 0,
        partial_firmware: None,
    };
    sync_reporting(state, device, &status, events, nonce).await
}

/// A sync with this status.
async fn sync_reporting(
    state: &AppState,
    device: &Enrolled,
    status: &DeviceStatus,
    events: &[WireEvent],
    nonce: u8,
) -> Synced {
    let mut buf = vec![0u8; 4096];
    let counter = next_counter();
    let mut w =
        SyncRequestWriter::new(&mut buf, device.door_id, [nonce; 16], counter, status).unwrap();
    for e in events {
        w.push(e).unwrap();
    }
    let n = w.finish(&device.device_key);
    buf.truncate(n);
    let request = buf.clone();
    let (code, body) = post(state, "/device/v1/sync", buf).await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let site = VerifyingKey::from_bytes(&device.site_key).unwrap();
    let mut fixed = body[..SYNC_RESPONSE_LEN].to_vec();
    let response = SyncResponse::parse(
        &mut fixed,
        &device.device_key,
        &site,
        device.door_id,
        &[nonce; 16],
    )
    .unwrap();
    let mut list = body[SYNC_RESPONSE_LEN..].to_vec();
    ListStream::new(&device.device_key, &[nonce; 16], response.list_offset).apply(&mut list);
    let resumed = response.list_offset > 0;
    assert!(response.list_len == 0 || resumed || response.list_matches(&list));
    Synced {
        response,
        list,
        len: body.len(),
        request,
        answer: body.to_vec(),
    }
}

fn decision(id: u64, uid: &[u8], decision: Decision) -> WireEvent {
    WireEvent {
        id,
        device_us: Some(chronolock_server::now_micros()),
        body: EventBody::Decision {
            credential: Credential::card(uid),
            decision,
        },
    }
}

async fn count(state: &AppState, sql: &str, door: i64) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(door)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn pairing_sync_events_and_lists() {
    for (label, state) in common::states("device").await {
        let s = site(&state).await;
        let (status, _) = post(
            &state,
            "/device/v1/enrol",
            Enrolment::new([1; 32], [2; 16], "AAAA-BBBB-CCCC")
                .request()
                .to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{label}: unknown code");
        let device = pair(&state, s.door).await;
        assert_eq!(device.door_id, s.door as u64);
        assert_eq!(device.site_key, state.site_public_key);

        // First sync: the list comes, signed by the site, keypad secrets sealed to this device.
        let before = chronolock_server::now_micros();
        let first = sync(&state, &device, 0, &[], 1).await;
        let after = chronolock_server::now_micros();
        let t = first.response.time;
        assert!(before <= t.receive.as_micros() && t.transmit.as_micros() <= after);
        let site = VerifyingKey::from_bytes(&device.site_key).unwrap();
        let list = AllowList::verify(&first.list, &site).unwrap();
        assert!(list.info().sealed, "{label}");
        assert_eq!(list.info().generation, first.response.generation);
        assert!(list.find_card(&[4, 0xA1, 0xB2, 0xC3]).is_some());

        // A door that holds the first 100 bytes of this list gets the rest; the answer still
        // announces the whole list. One that holds another generation's start gets it all.
        let generation = first.response.generation;
        let partial = |generation, offset| Some(PartialList { generation, offset });
        let rest = sync_resuming(&state, &device, 0, &[], 5, partial(generation, 100)).await;
        assert_eq!(rest.response.list_offset, 100, "{label}");
        assert_eq!(rest.response.list_digest, first.response.list_digest);
        assert_eq!(rest.list, first.list[100..], "{label}");
        let other = sync_resuming(&state, &device, 0, &[], 6, partial(generation + 7, 100)).await;
        assert_eq!(other.response.list_offset, 0, "{label}");
        assert_eq!(other.list, first.list, "{label}");

        // Unchanged: no list, a few hundred bytes (protocol v4's lockdown order and door
        // settings made the fixed part 452).
        let generation = first.response.generation;
        let again = sync(&state, &device, generation, &[], 2).await;
        assert_eq!(again.response.list_len, 0);
        assert_eq!(again.len, SYNC_RESPONSE_LEN);
        assert!(again.len < 500);

        // Events are acknowledged and stored once, however often they are resent.
        let events = [
            decision(1, &[4, 0xA1, 0xB2, 0xC3], Decision::Granted),
            decision(2, &[9, 9, 9, 9], Decision::DeniedUnknown),
        ];
        let r = sync(&state, &device, generation, &events, 3).await;
        assert_eq!(r.response.acked, 2);
        let r = sync(&state, &device, generation, &events, 4).await;
        assert_eq!(r.response.acked, 2);
        let stored = count(
            &state,
            "SELECT COUNT(*) FROM events WHERE door_id = $1",
            s.door,
        )
        .await;
        assert_eq!(stored, 2, "{label}: resent events stored once");
        let granted = count(
            &state,
            "SELECT COUNT(*) FROM events WHERE door_id = $1 AND decision = 'GRANTED' AND credential = 'card:04A1B2C3'",
            s.door,
        )
        .await;
        assert_eq!(granted, 1);

        // The dashboard's view of the door (written behind, in batches).
        state.door_status.flush(&state.db).await.unwrap();
        let (last_sync, dev_gen, offset, battery): (Option<i64>, Option<i64>, Option<i64>, Option<i32>) =
            sqlx::query_as("SELECT last_sync, device_generation, clock_offset_us, battery_mv FROM doors WHERE id = $1")
                .bind(s.door)
                .fetch_one(state.db.pool())
                .await
                .unwrap();
        assert!(last_sync.is_some());
        assert_eq!(dev_gen, Some(generation as i64));
        let offset = offset.unwrap();
        assert!(
            (100_000..200_000).contains(&offset),
            "{label}: offset {offset}"
        );
        assert_eq!(battery, Some(3650));

        // A stale generation gets the new list after a change.
        model::add_card(&state, s.alice, "04AAAAAA").await.unwrap();
        model::site_changed(&state, s.site).await.unwrap();
        let stale = sync(&state, &device, generation, &[], 5).await;
        assert!(stale.response.generation > generation);
        let list = AllowList::verify(&stale.list, &site).unwrap();
        assert!(list.find_card(&[4, 0xAA, 0xAA, 0xAA]).is_some());
    }
}

#[tokio::test]
async fn forged_or_garbled_requests_are_refused() {
    for (label, state) in common::states("device_bad").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let mut buf = vec![0u8; 512];
        let status = DeviceStatus::default();
        let w = SyncRequestWriter::new(&mut buf, device.door_id, [1; 16], next_counter(), &status)
            .unwrap();
        let n = w.finish(&[0x55; 32]); // not the device key
        let (status, body) = post(&state, "/device/v1/sync", buf[..n].to_vec()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
        assert_eq!(
            String::from_utf8_lossy(&body).trim(),
            "authentication failed"
        );

        let w = SyncRequestWriter::new(
            &mut buf,
            999_999,
            [1; 16],
            next_counter(),
            &DeviceStatus::default(),
        )
        .unwrap();
        let n = w.finish(&device.device_key);
        let (status, body) = post(&state, "/device/v1/sync", buf[..n].to_vec()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(String::from_utf8_lossy(&body).trim(), "unknown device");

        let (status, body) = post(&state, "/device/v1/sync", b"hello".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            String::from_utf8_lossy(&body).trim(),
            "not a chronolock device message"
        );
        let (status, _) = post(&state, "/device/v1/check", vec![]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Nothing was stored by any of it.
        let stored = count(
            &state,
            "SELECT COUNT(*) FROM events WHERE door_id = $1",
            s.door,
        )
        .await;
        assert_eq!(stored, 0);
    }
}

/// What an attacker on the path captured is of no use: a replayed request, an older one sent
/// after a newer, or a cut-off one is refused and changes nothing; the traffic shows no card
/// and no list; an answer captured for one door means nothing to another.
#[tokio::test]
async fn captured_traffic_is_refused_when_replayed_and_unreadable() {
    for (label, state) in common::states("device_replay").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let first = sync(&state, &device, 0, &[], 1).await;
        assert!(first.response.list_len > 0);
        let card = [4, 0xA1, 0xB2, 0xC3];
        let list = AllowList::open(&first.list).unwrap();
        assert!(list.find_card(&card).is_some());
        let clear = first.answer.windows(4).any(|w| w == card);
        assert!(!clear, "{label}: the list is encrypted");
        let events = [decision(1, &card, Decision::Granted)];
        let older = sync(&state, &device, 0, &events, 2).await;
        let clear = older.request.windows(4).any(|w| w == card);
        assert!(!clear, "{label}: events are encrypted");
        let newer = sync(&state, &device, first.response.generation, &[], 3).await;
        let stored = "SELECT COUNT(*) FROM events WHERE door_id = $1";
        let battery = "SELECT COALESCE(battery_mv, 0) FROM doors WHERE id = $1";
        let before = (
            count(&state, stored, s.door).await,
            count(&state, battery, s.door).await,
        );
        for (what, request) in [
            ("replayed", newer.request.clone()),
            ("reordered", older.request.clone()),
            ("cut off", newer.request[..newer.request.len() - 1].to_vec()),
        ] {
            let (status, body) = post(&state, "/device/v1/sync", request).await;
            let expected = if what == "cut off" { 401 } else { 409 };
            assert_eq!(status.as_u16(), expected, "{label}: {what}");
            if expected == 409 {
                let reason = String::from_utf8_lossy(&body);
                assert_eq!(reason.trim(), "replayed or reordered request", "{label}");
            }
        }
        let after = (
            count(&state, stored, s.door).await,
            count(&state, battery, s.door).await,
        );
        assert_eq!(before, after, "{label}: nothing changed");
        // Another door cannot open this door's answer.
        let site_key = VerifyingKey::from_bytes(&device.site_key).unwrap();
        let mut fixed = first.answer[..SYNC_RESPONSE_LEN].to_vec();
        let other = [0x42; 32];
        let opened = SyncResponse::parse(&mut fixed, &other, &site_key, device.door_id, &[1; 16]);
        assert_eq!(opened.err(), Some(protocol::ProtocolError::BadMac));
    }
}

/// A device may report any numbers at all: the extremes are taken without wrapping arithmetic,
/// and a generation the server could not keep is refused.
#[tokio::test]
async fn extreme_numbers_from_a_device_do_not_wrap() {
    for (label, state) in common::states("device_extreme").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        for (wall_us, generation, expected) in [
            (i64::MIN, 0, StatusCode::OK),
            (i64::MAX, u64::MAX >> 1, StatusCode::OK),
            (0, u64::MAX, StatusCode::BAD_REQUEST),
        ] {
            let status = DeviceStatus {
                wall_us: Some(wall_us),
                uptime_us: u64::MAX,
                generation,
                source: Some(Source::Ntp),
                error_us: u64::MAX,
                battery_mv: u16::MAX,
                partial_list: None,
                list_capacity: 0,
                firmware_version: 0,
                partial_firmware: None,
            };
            let mut buf = vec![0u8; 512];
            let w =
                SyncRequestWriter::new(&mut buf, device.door_id, [3; 16], next_counter(), &status)
                    .unwrap();
            let n = w.finish(&device.device_key);
            let (code, body) = post(&state, "/device/v1/sync", buf[..n].to_vec()).await;
            assert_eq!(
                code,
                expected,
                "{label}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test]
async fn conditional_credentials_are_decided_online() {
    for (label, state) in common::states("device_check").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let ask = |uid: &'static [u8], nonce: u8| {
            let state = state.clone();
            async move {
                let req = protocol::check_request(
                    device.door_id,
                    [nonce; 16],
                    next_counter(),
                    None,
                    &Credential::card(uid),
                    &device.device_key,
                );
                let (status, body) = post(&state, "/device/v1/check", req.to_vec()).await;
                assert_eq!(status, StatusCode::OK);
                protocol::check_response(&body, &device.device_key, device.door_id, &[nonce; 16])
                    .unwrap()
            }
        };
        assert!(
            ask(&[4, 0xC0, 0xFF, 0xEE], 1).await,
            "{label}: CONDITIONAL granted"
        );
        assert!(!ask(&[4, 0xA1, 0xB2, 0xC3], 2).await, "not CONDITIONAL");
        assert!(!ask(&[1, 2, 3, 4], 3).await, "unknown");
        // Revoked: the rule is gone, and the answer changes at once.
        sqlx::query("DELETE FROM rules WHERE access = 'CONDITIONAL'")
            .execute(state.db.pool())
            .await
            .unwrap();
        assert!(!ask(&[4, 0xC0, 0xFF, 0xEE], 4).await, "{label}: revoked");
    }
}

/// A webhook receiver on loopback that fails its first `fail` requests.
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                let calls = calls.clone();
                async move {
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    if *n <= fail {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let h = |k: &str| headers[k].to_str().unwrap().to_string();
                    seen.lock().unwrap().push((
                        h("x-chronolock-timestamp"),
                        h("x-chronolock-signature"),
                        body,
                    ));
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

/// Runs the webhook sender once at `now`, which must deliver nothing, and returns the error the
/// (only) delivery was left with.
async fn failed_delivery(state: &AppState, clients: &webhooks::Outbound, now: i64) -> String {
    assert_eq!(webhooks::deliver_due(state, clients, now).await.unwrap(), 0);
    let (error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM webhook_deliveries")
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    error.unwrap_or_default()
}

#[tokio::test]
async fn emergency_cards_reach_webhooks_signed_and_retried() {
    for (label, state) in common::states("device_hook").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let (url, seen) = receiver(1).await;
        sqlx::query("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, 'sekrit', 'notify', 0)")
            .bind(&url)
            .execute(state.db.pool())
            .await
            .unwrap();
        let fire = [4u8, 0xF1, 0xF1, 0xF1];
        let events = [
            decision(10, &fire, Decision::GrantedEmergency),
            WireEvent {
                id: 11,
                device_us: None,
                body: EventBody::Notify {
                    credential: Credential::card(&fire),
                },
            },
        ];
        sync(&state, &device, 0, &events, 1).await;
        sync(&state, &device, 0, &events, 2).await; // a resend queues nothing more
        let client = webhooks::Outbound::new().unwrap();
        let now = chronolock_server::now_unix();
        // The receiver is on loopback: refused until the admin allows local targets.
        let error = failed_delivery(&state, &client, now).await;
        assert!(error.contains("not a public address"), "{label}: {error}");
        assert!(seen.lock().unwrap().is_empty(), "{label}: nothing sent");
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, '1')")
            .bind(webhooks::ALLOW_LOCAL_SETTING)
            .execute(state.db.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE webhook_deliveries SET attempts = 0, next_attempt = 0")
            .execute(state.db.pool())
            .await
            .unwrap();
        assert_eq!(
            webhooks::deliver_due(&state, &client, now).await.unwrap(),
            0
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "{label}: first attempt refused"
        );
        // Not due again before the backoff has passed; then delivered.
        assert_eq!(
            webhooks::deliver_due(&state, &client, now + 1)
                .await
                .unwrap(),
            0
        );
        let later = now + webhooks::backoff_s(0) + 1;
        assert_eq!(
            webhooks::deliver_due(&state, &client, later).await.unwrap(),
            1
        );
        assert_eq!(
            webhooks::deliver_due(&state, &client, later + 100)
                .await
                .unwrap(),
            0
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (timestamp, signature, body) = &seen[0];
        assert_eq!(
            *signature,
            webhooks::signature("sekrit", timestamp.parse().unwrap(), body)
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["kind"], "emergency");
        assert_eq!(json["credential"], "card:04F1F1F1");
        assert_eq!(json["door"]["name"], "Front door");
    }
}

/// A webhook receiver that redirects elsewhere is a failed attempt: the redirect is not
/// followed (it could point inside the network the server sits in).
#[tokio::test]
async fn webhook_redirects_are_not_followed() {
    for (label, state) in common::states("device_hook_redirect").await {
        let (target, seen) = receiver(0).await;
        let app = axum::Router::new().route(
            "/moved",
            axum::routing::post(move || {
                let target = target.clone();
                async move { axum::response::Redirect::temporary(&target) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, '1')")
            .bind(webhooks::ALLOW_LOCAL_SETTING)
            .execute(state.db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO webhooks (url, secret, kinds, created_at) VALUES ($1, 'sekrit', 'notify', 0)")
            .bind(format!("http://{addr}/moved"))
            .execute(state.db.pool())
            .await
            .unwrap();
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let fire = [4u8, 0xF1, 0xF1, 0xF1];
        let events = [WireEvent {
            id: 1,
            device_us: None,
            body: EventBody::Notify {
                credential: Credential::card(&fire),
            },
        }];
        sync(&state, &device, 0, &events, 1).await;
        let clients = webhooks::Outbound::new().unwrap();
        let now = chronolock_server::now_unix();
        let error = failed_delivery(&state, &clients, now).await;
        assert!(
            error.contains("redirects are not followed"),
            "{label}: {error}"
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "{label}: the target got nothing"
        );
    }
}

/// A door reports the largest list its device can install. A list larger than that is not
/// sent (the door would fetch and refuse it at every sync), is not compiled for it after a
/// change, and the door page's data and the dashboard say why; a device with room gets it.
#[tokio::test]
async fn a_list_too_large_for_the_device_is_not_sent_and_the_admin_is_told() {
    for (label, state) in common::states("capacity").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let status = |list_capacity: u32| DeviceStatus {
            wall_us: Some(chronolock_server::now_micros()),
            uptime_us: 1,
            generation: 0,
            source: Some(Source::Ntp),
            error_us: 20_000,
            battery_mv: 3650,
            partial_list: None,
            list_capacity,
            firmware_version: 0,
            partial_firmware: None,
        };
        let (server_generation, list) = model::door_list(&state, s.door).await.unwrap().unwrap();
        assert!(list.len() > 100, "{label}: {}", list.len());
        let small = sync_reporting(&state, &device, &status(100), &[], 61).await;
        assert_eq!(small.response.generation, server_generation);
        assert_eq!(small.response.list_len, 0, "{label}: not sent");
        assert!(small.list.is_empty());

        // The capacity is kept; the recompile it causes says why the door is not updated.
        state.door_status.flush(&state.db).await.unwrap();
        model::refresh_due(&state, chronolock_server::now_unix())
            .await
            .unwrap();
        let now = chronolock_server::now_unix();
        let d = chronolock_server::monitor::door(&state, s.door, now)
            .await
            .unwrap();
        assert_eq!(d.list_capacity, Some(100), "{label}");
        let error = d.list_error.expect("the admin is told");
        assert!(
            error.contains("larger than its device holds (100 bytes)")
                && error.contains("revocations"),
            "{error}"
        );
        let door = chronolock_server::directory::door(&state, s.site, s.door)
            .await
            .unwrap();
        assert_eq!(door.list_error.as_deref(), Some(error.as_str()));

        // A change is not compiled for this device either.
        let bob = model::create_person(&state, s.site, "Bob").await.unwrap();
        model::add_card(&state, bob, "04B0B0B0").await.unwrap();
        model::add_rule(
            &state,
            &RuleSpec {
                door_id: s.door,
                subject: Subject::Person(bob),
                access: AccessType::Unrestricted,
                valid_from: 0,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        model::site_changed(&state, s.site).await.unwrap();
        let (generation, _) = model::door_list(&state, s.door).await.unwrap().unwrap();
        assert_eq!(generation, server_generation, "{label}: nothing stored");

        // The device with room (say, 8 MB of flash) reports it, and gets the newest list.
        let roomy = sync_reporting(&state, &device, &status(1 << 20), &[], 62).await;
        assert_eq!(roomy.response.generation, server_generation);
        assert!(roomy.response.list_len > 0, "the stored list fits now");
        state.door_status.flush(&state.db).await.unwrap();
        model::refresh_due(&state, chronolock_server::now_unix())
            .await
            .unwrap();
        let d = chronolock_server::monitor::door(&state, s.door, now)
            .await
            .unwrap();
        assert_eq!(d.list_error, None, "{label}");
        assert!(d.generation as u64 > server_generation);
        let newer = DeviceStatus {
            generation: server_generation,
            ..status(1 << 20)
        };
        let synced = sync_reporting(&state, &device, &newer, &[], 63).await;
        assert!(synced.response.list_len > 0);
        let list = AllowList::open(&synced.list).unwrap();
        assert!(
            list.find_card(&[0x04, 0xB0, 0xB0, 0xB0]).is_some(),
            "Bob is in"
        );
    }
}

/// The site's NTP servers, as the admin names them, reach its doors in the authenticated sync
/// answer; bad names are refused with what is wrong; none named leaves the doors their own.
#[tokio::test]
async fn the_sites_ntp_servers_reach_its_doors_in_the_sync_answer() {
    for (label, state) in common::states("site_ntp").await {
        let s = site(&state).await;
        let device = pair(&state, s.door).await;
        let synced = sync(&state, &device, 0, &[], 71).await;
        assert_eq!(synced.response.ntp_servers(), None, "{label}: none named");
        let e = chronolock_server::directory::set_site_ntp_servers(&state, s.site, "ntp/evil")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ntp_servers") && e.contains("letters, digits"),
            "{e}"
        );
        chronolock_server::directory::set_site_ntp_servers(
            &state,
            s.site,
            " ntp1.internal, 10.0.0.5:123 ",
        )
        .await
        .unwrap();
        let site = chronolock_server::directory::first_site(&state)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            site.ntp_servers.as_deref(),
            Some("ntp1.internal 10.0.0.5:123")
        );
        let synced = sync(&state, &device, 0, &[], 72).await;
        let servers = synced.response.ntp_servers().expect("named");
        let names: Vec<&str> = servers.iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["ntp1.internal", "10.0.0.5:123"], "{label}");
        // Back to the defaults.
        chronolock_server::directory::set_site_ntp_servers(&state, s.site, "")
            .await
            .unwrap();
        let synced = sync(&state, &device, 0, &[], 73).await;
        assert_eq!(synced.response.ntp_servers(), None);
    }
}

/// The group-committing writer: of many requests racing for the same doors, each counter is
/// accepted once, only above the door's last, whichever batches they land in, and events come
/// in only with an accepted counter.
#[tokio::test]
async fn racing_counters_are_accepted_once_each() {
    for (label, state) in common::states("link_writer").await {
        let site = model::create_site(&state, "Site", "UTC").await.unwrap();
        let mut doors = Vec::new();
        for d in 0..4 {
            doors.push(
                model::create_door(&state, site, &format!("Door {d}"))
                    .await
                    .unwrap(),
            );
        }
        let event = |id: u64| WireEvent {
            id,
            device_us: None,
            body: EventBody::Rex,
        };
        // Every door: counters 1..=20, each sent three times at once (two replays racing the
        // original), all in flight together.
        let mut tasks = Vec::new();
        for &door in &doors {
            for counter in 1..=20u64 {
                for copy in 0..3 {
                    let state = state.clone();
                    let events = if copy == 0 {
                        vec![event(counter)]
                    } else {
                        vec![]
                    };
                    tasks.push(tokio::spawn(async move {
                        let ok = state
                            .link_writer
                            .accept(&state.db, &state.webhook_wake, door, counter, events, 1)
                            .await
                            .unwrap();
                        (door, counter, ok)
                    }));
                }
            }
        }
        let mut accepted = std::collections::HashMap::<(i64, u64), usize>::new();
        for t in tasks {
            let (door, counter, ok) = t.await.unwrap();
            *accepted.entry((door, counter)).or_default() += usize::from(ok);
        }
        assert!(
            accepted.values().all(|&n| n <= 1),
            "{label}: a counter twice"
        );
        for &door in &doors {
            let (counter,): (i64,) = sqlx::query_as("SELECT link_counter FROM doors WHERE id = $1")
                .bind(door)
                .fetch_one(state.db.pool())
                .await
                .unwrap();
            assert_eq!(counter, 20, "{label}: the highest counter is kept");
            // Nothing at or below the door's counter passes afterwards.
            for stale in [1, 20] {
                let ok = state
                    .link_writer
                    .accept(&state.db, &state.webhook_wake, door, stale, vec![], 1)
                    .await
                    .unwrap();
                assert!(!ok, "{label}: {stale} replayed");
            }
        }
    }
}
