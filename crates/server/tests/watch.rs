//! The doors' long poll, `POST /device/v1/watch`, on SQLite and PostgreSQL: a held watch is
//! answered "sync now" within 2 s of a lockdown or a card deletion, "nothing new" when its hold
//! ends, at once when the door is behind already; bad bodies get a clear 4xx; the limits hold;
//! a watch whose client went away gives its slot back; a change made through another server
//! process sharing the database reaches a watch held here.
#![allow(clippy::unwrap_used)] // test helpers: a failed step should fail the test loudly

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chronolock_core::allowlist::AccessType;
use chronolock_core::protocol::{self, Enrolled, Enrolment};
use chronolock_server::lockdown;
use chronolock_server::model::{self, RuleSpec, Subject};
use chronolock_server::watch::{WatchConfig, Watches};
use chronolock_server::{device, directory, AppState, ServeConfig};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The bound the contract sets: an online door learns a lockdown within 2 s.
const PUSH_BOUND: Duration = Duration::from_secs(2);

async fn post(state: &AppState, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let r = chronolock_server::router(state.clone())
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

/// `state` with watches held as `config` says.
fn with_watches(state: &AppState, config: WatchConfig) -> AppState {
    let mut state = state.clone();
    state.watches = Arc::new(Watches::new(config));
    state
}

fn hold(hold: Duration) -> WatchConfig {
    WatchConfig {
        hold,
        ..WatchConfig::default()
    }
}

struct Site {
    site: i64,
    doors: Vec<i64>,
    /// Alice's card, which opens every door.
    card: i64,
    alice: i64,
}

async fn site(state: &AppState, doors: usize) -> Site {
    let site = model::create_site(state, "Makerspace", "Europe/Berlin")
        .await
        .unwrap();
    let alice = model::create_person(state, site, "Alice").await.unwrap();
    let card = model::add_card(state, alice, "04A1B2C3").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..doors {
        let door = model::create_door(state, site, &format!("Door {n}"))
            .await
            .unwrap();
        model::add_rule(
            state,
            &RuleSpec {
                door_id: door,
                subject: Subject::Person(alice),
                access: AccessType::Unrestricted,
                valid_from: 0,
                valid_until: 0,
                schedule_id: None,
            },
        )
        .await
        .unwrap();
        ids.push(door);
    }
    model::site_changed(state, site).await.unwrap();
    Site {
        site,
        doors: ids,
        card,
        alice,
    }
}

async fn pair(state: &AppState, door: i64) -> Enrolled {
    let code = device::new_pairing_code(state, door).await.unwrap();
    let device = Enrolment::new([0x11; 32], [0x22; 16], &code);
    let (status, body) = post(state, "/device/v1/enrol", device.request().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    device.finish(&body).unwrap()
}

async fn generation(state: &AppState, door: i64) -> u64 {
    let (g,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
        .bind(door)
        .fetch_one(state.db.pool())
        .await
        .unwrap();
    g as u64
}

/// A door's watch request, as the door writes it: what it holds.
fn request(device: &Enrolled, nonce: u8, generation: u64, lockdown_seq: u64) -> Vec<u8> {
    protocol::watch_request(
        device.door_id,
        [nonce; 16],
        generation,
        lockdown_seq,
        &device.device_key,
    )
    .to_vec()
}

/// Sends a watch and reads the answer: sync now (`true`) or nothing new.
async fn watch(state: &AppState, device: &Enrolled, nonce: u8, body: Vec<u8>) -> bool {
    let (status, answer) = post(state, "/device/v1/watch", body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    protocol::watch_response(&answer, &device.device_key, device.door_id, &[nonce; 16]).unwrap()
}

/// Waits until the state holds `n` watches.
async fn until_held(state: &AppState, n: usize) {
    let start = Instant::now();
    while state.watches.held() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} watches held, waiting for {n}",
            state.watches.held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_watch_hears_of_a_lockdown_and_a_revoked_card_at_once() {
    for (label, state) in common::states("watch_push").await {
        let state = with_watches(&state, hold(Duration::from_secs(20)));
        let s = site(&state, 1).await;
        let door = s.doors[0];
        let device = pair(&state, door).await;
        let g = generation(&state, door).await;

        // Behind already: answered at once, nothing held.
        let start = Instant::now();
        assert!(
            watch(&state, &device, 1, request(&device, 1, 0, 0)).await,
            "{label}"
        );
        assert!(start.elapsed() < PUSH_BOUND, "{label}");
        assert_eq!(state.watches.held(), 0);

        // A lockdown: the held watch says "sync now" within 2 s.
        let held = tokio::spawn({
            let (state, device) = (state.clone(), device);
            async move { watch(&state, &device, 2, request(&device, 2, g, 0)).await }
        });
        until_held(&state, 1).await;
        let start = Instant::now();
        let order = lockdown::give(&state, s.site, true, None).await.unwrap();
        assert_eq!(order.seq, 1);
        assert!(held.await.unwrap(), "{label}: sync now");
        let took = start.elapsed();
        assert!(
            took < PUSH_BOUND,
            "{label}: lockdown answered after {took:?}"
        );
        assert_eq!(state.watches.held(), 0, "{label}: slot given back");

        // The door synced and holds order 1: a card deletion wakes it.
        let held = tokio::spawn({
            let (state, device) = (state.clone(), device);
            async move { watch(&state, &device, 3, request(&device, 3, g, 1)).await }
        });
        until_held(&state, 1).await;
        let start = Instant::now();
        directory::delete_card(&state, s.alice, s.card)
            .await
            .unwrap();
        model::site_changed(&state, s.site).await.unwrap();
        assert!(held.await.unwrap(), "{label}: sync now");
        let took = start.elapsed();
        assert!(
            took < PUSH_BOUND,
            "{label}: deletion answered after {took:?}"
        );
        let g = generation(&state, door).await;

        // Up to date: a change to another site's door or to nothing leaves it waiting.
        let other = model::create_site(&state, "Elsewhere", "UTC")
            .await
            .unwrap();
        let held = tokio::spawn({
            let (state, device) = (state.clone(), device);
            async move { watch(&state, &device, 4, request(&device, 4, g, 1)).await }
        });
        until_held(&state, 1).await;
        let elsewhere = model::create_door(&state, other, "Gate").await.unwrap();
        model::refresh_door(&state, elsewhere, chronolock_server::now_unix())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "{label}: not this door's change");
        // Lifting the lockdown is news again.
        lockdown::give(&state, s.site, false, None).await.unwrap();
        assert!(held.await.unwrap(), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_answers_nothing_new_when_its_hold_ends() {
    for (label, state) in common::states("watch_quiet").await {
        let state = with_watches(&state, hold(Duration::from_secs(1)));
        let s = site(&state, 1).await;
        let device = pair(&state, s.doors[0]).await;
        let g = generation(&state, s.doors[0]).await;
        let start = Instant::now();
        assert!(
            !watch(&state, &device, 1, request(&device, 1, g, 0)).await,
            "{label}"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "{label}: held {took:?}"
        );
        assert_eq!(state.watches.held(), 0);
        // A stopping server answers its held watches at once.
        let held = tokio::spawn({
            let state = with_watches(&state, hold(Duration::from_secs(20)));
            async move {
                let answered = watch(&state, &device, 2, request(&device, 2, g, 0));
                let closing = async {
                    until_held(&state, 1).await;
                    state.watches.close();
                };
                let (answer, ()) = tokio::join!(answered, closing);
                answer
            }
        });
        let start = Instant::now();
        assert!(!held.await.unwrap(), "{label}: nothing new");
        assert!(start.elapsed() < Duration::from_secs(5), "{label}");
    }
}

#[tokio::test]
async fn bad_watch_bodies_get_a_clear_4xx() {
    for (label, state) in common::states("watch_bad").await {
        let s = site(&state, 1).await;
        let device = pair(&state, s.doors[0]).await;
        let good = request(&device, 1, 0, 0);
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut unknown = device;
        unknown.door_id = 999_999;
        let mut wrong_key = device;
        wrong_key.device_key = [7; 32];
        let sync_body = {
            let mut buf = vec![0u8; 1024];
            let status = protocol::DeviceStatus {
                wall_us: None,
                uptime_us: 1,
                generation: 0,
                source: None,
                error_us: 0,
                battery_mv: 0,
                partial_list: None,
                list_capacity: 0,
                firmware_version: 0,
                partial_firmware: None,
            };
            let w = protocol::SyncRequestWriter::new(&mut buf, device.door_id, [1; 16], 1, &status)
                .unwrap();
            let n = w.finish(&device.device_key);
            buf.truncate(n);
            buf
        };
        for (what, body, expected) in [
            ("empty", Vec::new(), StatusCode::BAD_REQUEST),
            ("junk", b"hello, server".to_vec(), StatusCode::BAD_REQUEST),
            // Its tag no longer covers what is left.
            (
                "truncated",
                good[..good.len() - 5].to_vec(),
                StatusCode::UNAUTHORIZED,
            ),
            ("a sync request", sync_body, StatusCode::BAD_REQUEST),
            ("tampered", tampered, StatusCode::UNAUTHORIZED),
            (
                "an unknown door",
                request(&unknown, 1, 0, 0),
                StatusCode::UNAUTHORIZED,
            ),
            (
                "the wrong key",
                request(&wrong_key, 1, 0, 0),
                StatusCode::UNAUTHORIZED,
            ),
        ] {
            let (status, answer) = post(&state, "/device/v1/watch", body).await;
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(status, expected, "{label}: {what}: {text}");
            assert!(
                text.ends_with('\n') && text.trim().len() > 5 && !text.contains("internal"),
                "{label}: {what}: a one-line reason, got {text:?}"
            );
        }
        assert_eq!(state.watches.held(), 0, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_hold_and_a_due_door_is_never_refused() {
    for (label, state) in common::states("watch_limits").await {
        let state = with_watches(
            &state,
            WatchConfig {
                hold: Duration::from_secs(20),
                max_held: 2,
                per_door: 1,
                ..WatchConfig::default()
            },
        );
        let s = site(&state, 3).await;
        let mut devices = Vec::new();
        for &door in &s.doors {
            let device = pair(&state, door).await;
            let g = generation(&state, door).await;
            devices.push((device, g));
        }
        let mut held = Vec::new();
        for (device, g) in devices.iter().take(2).copied() {
            let state = state.clone();
            held.push(tokio::spawn(async move {
                watch(&state, &device, 1, request(&device, 1, g, 0)).await
            }));
        }
        until_held(&state, 2).await;
        // A second watch of a door that holds one: 429.
        let (first, g0) = &devices[0];
        let (status, text) = post(&state, "/device/v1/watch", request(first, 2, *g0, 0)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{label}");
        assert!(String::from_utf8_lossy(&text).contains("too many watches"));
        // A third door while two are held: 503, with a time to come back.
        let (third, g2) = &devices[2];
        let r = chronolock_server::router(state.clone())
            .oneshot(
                Request::post("/device/v1/watch")
                    .body(Body::from(request(third, 1, *g2, 0)))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{label}");
        assert_eq!(r.headers()["retry-after"], "5");
        // …but a door that is behind is told so, full or not.
        assert!(
            watch(&state, third, 3, request(third, 3, 0, 0)).await,
            "{label}"
        );
        assert_eq!(state.watches.held(), 2);
        // The lockdown wakes both held watches.
        lockdown::give(&state, s.site, true, None).await.unwrap();
        for h in held {
            assert!(h.await.unwrap(), "{label}");
        }
        assert_eq!(state.watches.held(), 0);
    }
}

/// The server on a loopback port, as `serve` runs it.
async fn serve(state: &AppState) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chronolock_server::router(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_client_goes_away_gives_its_slot_back() {
    use tokio::io::AsyncWriteExt;
    let state = AppState::open(&common::sqlite_config("watch_gone"))
        .await
        .unwrap();
    let state = with_watches(&state, hold(Duration::from_secs(20)));
    let s = site(&state, 1).await;
    let device = pair(&state, s.doors[0]).await;
    let g = generation(&state, s.doors[0]).await;
    let (addr, server) = serve(&state).await;
    let body = request(&device, 1, g, 0);
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /device/v1/watch HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    until_held(&state, 1).await;
    let start = Instant::now();
    drop(socket);
    until_held(&state, 0).await;
    assert!(
        start.elapsed() < PUSH_BOUND,
        "the slot came back after {:?}",
        start.elapsed()
    );
    server.abort();
}

/// Configurations of one fresh database on every available backend.
async fn configs(name: &str) -> Vec<(&'static str, ServeConfig)> {
    let mut out = vec![("sqlite", common::sqlite_config(name))];
    if let Some(cfg) = common::postgres_config(name).await {
        out.push(("postgres", cfg));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_another_server_process_reaches_a_held_watch() {
    for (label, config) in configs("watch_replica").await {
        // Two servers on one database: `here` holds the watch, `there` takes the admin's edits.
        let here = AppState::open(&config).await.unwrap();
        let here = with_watches(&here, hold(Duration::from_secs(20)));
        let there = AppState::open(&config).await.unwrap();
        let poller = tokio::spawn(chronolock_server::watch::poll_database(here.clone()));
        let s = site(&there, 1).await;
        let device = pair(&there, s.doors[0]).await;
        let g = generation(&there, s.doors[0]).await;
        // The poller has its baseline (it looks every second).
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let held = tokio::spawn({
            let (state, device) = (here.clone(), device);
            async move { watch(&state, &device, 1, request(&device, 1, g, 0)).await }
        });
        until_held(&here, 1).await;
        let start = Instant::now();
        lockdown::give(&there, s.site, true, None).await.unwrap();
        assert!(held.await.unwrap(), "{label}");
        let took = start.elapsed();
        assert!(
            took < PUSH_BOUND,
            "{label}: lockdown via the other process after {took:?}"
        );

        let held = tokio::spawn({
            let (state, device) = (here.clone(), device);
            async move { watch(&state, &device, 2, request(&device, 2, g, 1)).await }
        });
        until_held(&here, 1).await;
        let start = Instant::now();
        directory::delete_card(&there, s.alice, s.card)
            .await
            .unwrap();
        model::site_changed(&there, s.site).await.unwrap();
        assert!(held.await.unwrap(), "{label}");
        let took = start.elapsed();
        assert!(
            took < PUSH_BOUND,
            "{label}: deletion via the other process after {took:?}"
        );
        poller.abort();
    }
}
