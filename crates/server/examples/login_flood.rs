//! Device-API latency with and without a flood of wrong admin logins, against a real
//! `chronolock serve` on loopback.
//!
//! ```text
//! cargo build --release -p chronolock
//! cargo run --release -p chronolock-server --example login_flood -- [SECONDS] [DOORS]
//! ```
//!
//! (or `scripts/bench-login-flood.sh`, which builds both). Seeds a site with DOORS doors
//! (default 16) in a fresh SQLite data directory and pairs each through the device API, starts
//! `target/release/chronolock serve` (`CHRONOLOCK_BIN` names another binary) behind
//! `--public-url`, as if a reverse proxy on this host stood in front, and runs three phases of
//! SECONDS each (default 10):
//!
//! 1. **baseline**: every door syncs (a fresh, authenticated request each time, unchanged list)
//!    back to back with 20 ms between answers;
//! 2. **flood, one source**: the same, while 64 connections post wrong passwords for `admin`
//!    as fast as they are answered (the throttle answers 429 after five);
//! 3. **flood, 64 sources**: the same, but every attempt names another client address and user
//!    (`X-Forwarded-For`, as a proxy would for a distributed attacker), so the throttle never
//!    holds and every attempt costs an argon2 hash.
//!
//! Prints the device requests' p50, p99 and maximum per phase, the login attempts and their
//! answers, and the p99 ratios to the baseline. Bounded: each phase stops at its deadline and
//! every request has a 10 s timeout; the server is killed when this ends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chronolock_core::protocol::{DeviceStatus, Enrolment, SyncRequestWriter};
use chronolock_server::{device, model, AppState, ServeConfig};
use http_body_util::BodyExt;
use rand::{Rng, RngCore};
use tower::ServiceExt;

const FLOOD_CONNECTIONS: usize = 64;
const PAUSE: Duration = Duration::from_millis(20);

/// A paired door as the load generator plays it.
struct Door {
    id: u64,
    key: [u8; 32],
    generation: u64,
    counter: u64,
}

impl Door {
    /// A fresh sync request: a new nonce and the next counter.
    fn request(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let status = DeviceStatus {
            wall_us: Some(chronolock_server::now_micros()),
            uptime_us: self.counter * 1_000_000,
            generation: self.generation,
            source: Some(chronolock_core::Source::Ntp),
            error_us: 10_000,
            battery_mv: 3700,
            partial_list: None,
            list_capacity: 0,
            firmware_version: 0,
            partial_firmware: None,
        };
        let mut buf = vec![0u8; 256];
        let w = SyncRequestWriter::new(&mut buf, self.id, nonce, self.counter, &status).unwrap();
        let n = w.finish(&self.key);
        buf.truncate(n);
        buf
    }
}

/// Kills the server when the benchmark ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy)]
enum Flood {
    None,
    OneSource,
    ManySources,
}

struct Phase {
    name: &'static str,
    latencies_us: Vec<u64>,
    failed: u64,
    attempts: u64,
    unauthorized: u64,
    throttled: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn run_phase(
    name: &'static str,
    base: &str,
    doors: &mut Vec<Door>,
    flood: Flood,
    seconds: u64,
) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let attempts = Arc::new(AtomicU64::new(0));
    let unauthorized = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    if !matches!(flood, Flood::None) {
        for c in 0..FLOOD_CONNECTIONS {
            let (attempts, unauthorized, throttled) =
                (attempts.clone(), unauthorized.clone(), throttled.clone());
            let url = format!("{base}/login");
            flooders.push(tokio::spawn(async move {
                let http = client();
                let mut n = 0u32;
                while Instant::now() < deadline {
                    n += 1;
                    let mut request = http.post(&url);
                    let user = match flood {
                        Flood::ManySources => {
                            let ip = rand::thread_rng().gen::<u32>() | 0x0a00_0000;
                            let ip = std::net::Ipv4Addr::from(ip & 0x0aff_ffff);
                            request = request.header("x-forwarded-for", ip.to_string());
                            format!("guess-{c}-{n}")
                        }
                        _ => "admin".to_string(),
                    };
                    let sent = request
                        .form(&[
                            ("username", user.as_str()),
                            ("password", "not the password"),
                        ])
                        .send()
                        .await;
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(401) => unauthorized.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => throttled.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            }));
        }
    }
    let url = format!("{base}/device/v1/sync");
    let mut tasks = Vec::new();
    for mut door in doors.drain(..) {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let body = door.request();
                let t = Instant::now();
                let answer = http.post(&url).body(body).send().await;
                let ok = match answer {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    failed += 1;
                }
                tokio::time::sleep(PAUSE).await;
            }
            (door, latencies, failed)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (door, l, f) = task.await.unwrap();
        doors.push(door);
        latencies_us.extend(l);
        failed += f;
    }
    for f in flooders {
        f.await.unwrap();
    }
    latencies_us.sort_unstable();
    Phase {
        name,
        latencies_us,
        failed,
        attempts: attempts.load(Ordering::Relaxed),
        unauthorized: unauthorized.load(Ordering::Relaxed),
        throttled: throttled.load(Ordering::Relaxed),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).map_or(10, |s| s.parse().expect("SECONDS"));
    let door_count: usize = args.get(2).map_or(16, |s| s.parse().expect("DOORS"));
    let bin =
        std::env::var("CHRONOLOCK_BIN").unwrap_or_else(|_| "target/release/chronolock".into());
    let dir = std::env::temp_dir().join(format!("chronolock-login-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // A site, its doors, the admin; each door paired through the device API in-process.
    let state = AppState::open(&ServeConfig {
        data_dir: dir.clone(),
        ..ServeConfig::default()
    })
    .await
    .unwrap();
    chronolock_server::auth::create_first_admin(&state, "admin", "the right password")
        .await
        .unwrap();
    let site = model::create_site(&state, "Flood", "Europe/Berlin")
        .await
        .unwrap();
    let app = chronolock_server::router(state.clone());
    let mut doors = Vec::new();
    for d in 0..door_count {
        let door_id = model::create_door(&state, site, &format!("Door {d}"))
            .await
            .unwrap();
        let code = device::new_pairing_code(&state, door_id).await.unwrap();
        let mut random = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut random);
        let enrolment = Enrolment::new(random, [d as u8; 16], &code);
        let r = app
            .clone()
            .oneshot(
                Request::post("/device/v1/enrol")
                    .body(Body::from(enrolment.request().to_vec()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let enrolled = enrolment.finish(&body).expect("paired");
        let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
            .bind(door_id)
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        doors.push(Door {
            id: enrolled.door_id,
            key: enrolled.device_key,
            generation: generation as u64,
            counter: 0,
        });
    }
    state.db.close().await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server(
        Command::new(&bin)
            .args(["serve", "--data"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--public-url", "https://doors.example.org"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin}: {e} (build it: cargo build --release -p chronolock)")
            }),
    );
    let up = client();
    for _ in 0..100 {
        if up.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm up (connections, the database's caches), unmeasured.
    run_phase("warm-up", &base, &mut doors, Flood::None, 1).await;

    let mut phases = Vec::new();
    for (name, flood) in [
        ("baseline, no flood", Flood::None),
        ("flood, one source", Flood::OneSource),
        ("flood, 64 sources", Flood::ManySources),
    ] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        phases.push(run_phase(name, &base, &mut doors, flood, seconds).await);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{door_count} doors syncing (20 ms between answers), {FLOOD_CONNECTIONS} flood connections, {seconds} s per phase"
    );
    println!(
        "{:<22} {:>9} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
        "phase", "syncs", "failed", "p50 ms", "p99 ms", "max ms", "logins/s", "401", "429"
    );
    for p in &phases {
        println!(
            "{:<22} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>7} {:>7}",
            p.name,
            p.latencies_us.len(),
            p.failed,
            percentile(&p.latencies_us, 0.5),
            percentile(&p.latencies_us, 0.99),
            p.latencies_us
                .last()
                .map_or(f64::NAN, |&m| m as f64 / 1000.0),
            p.attempts as f64 / seconds as f64,
            p.unauthorized,
            p.throttled,
        );
    }
    let base_p99 = percentile(&phases[0].latencies_us, 0.99);
    for p in &phases[1..] {
        println!(
            "p99 ratio, {} / baseline: {:.2}",
            p.name,
            percentile(&p.latencies_us, 0.99) / base_p99
        );
    }
}
