//! What doors' watches cost the server: memory and CPU with DOORS doors each holding a watch
//! (`POST /device/v1/watch`, the long poll), and how long a lockdown takes to reach them all.
//!
//! ```text
//! cargo run --release -p chronolock-server --example watch_load -- [DOORS] [WINDOW_S]
//! ```
//!
//! DOORS defaults to 1,000 (at most 10,000), WINDOW_S to 20 (at most 120). The server runs in
//! this process on loopback with a fresh SQLite database in a temporary directory; DOORS doors
//! are created and given device keys directly in the database (as a pairing would), and their
//! lists compiled. The watches come from a child process (this example run as `client`), so the
//! clients' memory and CPU are not counted as the server's. Steps, each measured from this
//! process's `/proc/self/status` (VmRSS) and `/proc/self/stat` (user + system CPU time):
//!
//! 1. baseline: the server idle for WINDOW_S seconds, no watch held;
//! 2. DOORS watches opened at once and held (the hold is set to 120 s, longer than the window),
//!    then WINDOW_S seconds with every one held;
//! 3. a lockdown order; the time until every watch has its "sync now" answer (the client
//!    checks each answer's seal and says when the last one came).
//!
//! Bounded: every wait has a limit and the run stops by itself (about 2 × WINDOW_S + 10 s).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use chronolock_core::protocol;
use chronolock_server::watch::{WatchConfig, Watches};
use chronolock_server::{lockdown, model, AppState, ServeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any single wait may take.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = |threads: Option<usize>| {
        let mut b = match threads {
            Some(_) => tokio::runtime::Builder::new_multi_thread(),
            None => tokio::runtime::Builder::new_current_thread(),
        };
        if let Some(n) = threads {
            b.worker_threads(n);
        }
        b.enable_all().build().unwrap()
    };
    if args.get(1).map(String::as_str) == Some("client") {
        let addr = args[2].clone();
        let file = args[3].clone();
        runtime(None).block_on(client(addr, file));
        return;
    }
    let doors: usize = args.get(1).map_or(1000, |s| s.parse().unwrap());
    let window_s: u64 = args.get(2).map_or(20, |s| s.parse().unwrap());
    assert!((1..=10_000).contains(&doors), "DOORS: 1 to 10,000");
    assert!((1..=120).contains(&window_s), "WINDOW_S: 1 to 120");
    // As `chronolock serve` runs: tokio's default, one worker per core.
    runtime(Some(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ))
    .block_on(server(doors, Duration::from_secs(window_s)));
}

/// Resident memory, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// User and system CPU time of the whole process, seconds.
fn cpu_s(ticks_per_s: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / ticks_per_s
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The client process, stopped when the benchmark ends, however it ends.
struct Client(std::process::Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A measured window: RSS at its end, CPU used during it.
struct Window {
    rss_kib: u64,
    cpu_s: f64,
    wall_s: f64,
}

async fn measure(window: Duration, ticks: f64) -> Window {
    let (cpu0, t0) = (cpu_s(ticks), Instant::now());
    tokio::time::sleep(window).await;
    Window {
        rss_kib: rss_kib(),
        cpu_s: cpu_s(ticks) - cpu0,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_LIMIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn server(doors: usize, window: Duration) {
    let ticks = clock_ticks();
    let dir = std::env::temp_dir().join(format!("chronolock-watch-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut state = AppState::open(&ServeConfig {
        data_dir: dir.clone(),
        ..ServeConfig::default()
    })
    .await
    .unwrap();
    state.watches = Arc::new(Watches::new(WatchConfig {
        hold: Duration::from_secs(120),
        max_held: doors + 100,
        ..WatchConfig::default()
    }));

    let t = Instant::now();
    let site = model::create_site(&state, "Load", "Europe/Berlin")
        .await
        .unwrap();
    let mut keys = Vec::with_capacity(doors);
    for n in 0..doors {
        let door = model::create_door(&state, site, &format!("Door {n:05}"))
            .await
            .unwrap();
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(door as u64).to_le_bytes());
        key[8] = 0xd0;
        sqlx::query("UPDATE doors SET device_key = $1, paired_at = $2 WHERE id = $3")
            .bind(key.to_vec())
            .bind(chronolock_server::now_unix())
            .bind(door)
            .execute(state.db.pool())
            .await
            .unwrap();
        keys.push((door, key));
    }
    model::site_changed(&state, site).await.unwrap();
    let mut lines = String::new();
    for (door, key) in &keys {
        let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM doors WHERE id = $1")
            .bind(door)
            .fetch_one(state.db.pool())
            .await
            .unwrap();
        lines += &format!(
            "{door} {} {generation}\n",
            data_encoding::HEXLOWER.encode(key)
        );
    }
    let file = dir.join("doors.txt");
    std::fs::write(&file, lines).unwrap();
    println!(
        "{doors} doors created, keyed and compiled in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The server, as `serve` runs it (with its database poll for other processes' changes).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chronolock_server::router(state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let poller = tokio::spawn(chronolock_server::watch::poll_database(state.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!("baseline: idle for {:?} …", window);
    let baseline = measure(window, ticks).await;

    let mut child = Client(
        std::process::Command::new(std::env::current_exe().unwrap())
            .arg("client")
            .arg(addr.to_string())
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The client's one report line, read on a thread of its own.
    let (report_tx, report_rx) = tokio::sync::oneshot::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = report_tx.send(line.trim().to_string());
    });
    let opening = Instant::now();
    let open_cpu0 = cpu_s(ticks);
    until("every watch held", || {
        let held = state.watches.held();
        held == doors
    })
    .await;
    let open_s = opening.elapsed().as_secs_f64();
    let open_cpu = cpu_s(ticks) - open_cpu0;
    println!("{doors} watches held after {open_s:.2} s; holding for {window:?} …");
    let held = measure(window, ticks).await;
    assert_eq!(state.watches.held(), doors, "a watch ended early");

    let cpu0 = cpu_s(ticks);
    let ordered = Instant::now();
    lockdown::give(&state, site, true, None).await.unwrap();
    let report = tokio::time::timeout(WAIT_LIMIT, report_rx)
        .await
        .expect("the client answers")
        .expect("a report line");
    let all_answered = ordered.elapsed().as_secs_f64();
    let burst_cpu = cpu_s(ticks) - cpu0;
    until("every slot given back", || state.watches.held() == 0).await;
    drop(child);
    poller.abort();
    served.abort();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_watch_kib = (held.rss_kib as f64 - baseline.rss_kib as f64) / doors as f64;
    println!();
    println!("| | RSS (MiB) | CPU (s) over the window | CPU share of one core |");
    println!("|---|---|---|---|");
    for (name, w) in [
        ("baseline: idle, no watch".to_string(), &baseline),
        (format!("{doors} watches held"), &held),
    ] {
        println!(
            "| {name} | {:.1} | {:.2} in {:.1} s | {:.2} % |",
            mib(w.rss_kib),
            w.cpu_s,
            w.wall_s,
            100.0 * w.cpu_s / w.wall_s
        );
    }
    println!();
    println!("memory per held watch: {per_watch_kib:.1} KiB");
    println!("opening {doors} watches: {open_s:.2} s (server CPU {open_cpu:.2} s)");
    println!(
        "lockdown → every watch answered: {:.0} ms (server CPU {:.2} s); client: {report}",
        all_answered * 1000.0,
        burst_cpu
    );
    assert!(report.contains(&format!("changed={doors} ")), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The doors: one watch each, all at once, over plain HTTP/1.1. Prints one line when every
/// answer is in: how many said "sync now", how many "nothing new", how many failed.
async fn client(addr: String, file: String) {
    let text = std::fs::read_to_string(&file).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let opening = Arc::new(tokio::sync::Semaphore::new(32));
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let door: u64 = parts.next().unwrap().parse().unwrap();
        let key: [u8; 32] = data_encoding::HEXLOWER
            .decode(parts.next().unwrap().as_bytes())
            .unwrap()
            .try_into()
            .unwrap();
        let generation: u64 = parts.next().unwrap().parse().unwrap();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&(n as u64).to_le_bytes());
        let body = protocol::watch_request(door, nonce, generation, 0, &key);
        let addr = addr.clone();
        let opening = opening.clone();
        tasks.spawn(async move {
            // Connections are opened a few dozen at a time (a burst of a thousand overflows the
            // listen queue, and refused connects would be retried anyway); each is held open.
            let mut socket = {
                let _turn = opening.acquire().await.ok()?;
                let mut tries = 0;
                let mut socket = loop {
                    match tokio::net::TcpStream::connect(&addr).await {
                        Ok(s) => break s,
                        Err(e) if tries < 20 => {
                            tries += 1;
                            if tries == 1 {
                                eprintln!("connect: {e}; trying again");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            eprintln!("connect: {e}");
                            return None;
                        }
                    }
                };
                let head = format!(
                    "POST /device/v1/watch HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
                     content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                // One write: head and body in one segment (two would wait for a delayed ACK).
                let mut request = head.into_bytes();
                request.extend_from_slice(&body);
                socket.write_all(&request).await.ok()?;
                socket
            };
            let mut answer = Vec::new();
            if let Err(e) = socket.read_to_end(&mut answer).await {
                eprintln!("read: {e}");
                return None;
            }
            let split = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            if !answer.starts_with(b"HTTP/1.1 200") {
                eprintln!("watch refused: {}", String::from_utf8_lossy(&answer));
                return None;
            }
            let changed = protocol::watch_response(&answer[split..], &key, door, &nonce).ok()?;
            Some((changed, Instant::now()))
        });
    }
    let (mut changed, mut quiet, mut failed) = (0, 0, 0);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    let all = async {
        while let Some(done) = tasks.join_next().await {
            match done.ok().flatten() {
                Some((true, at)) => {
                    changed += 1;
                    first = Some(first.map_or(at, |f: Instant| f.min(at)));
                    last = Some(last.map_or(at, |l: Instant| l.max(at)));
                }
                Some((false, _)) => quiet += 1,
                None => failed += 1,
            }
        }
    };
    if tokio::time::timeout(WAIT_LIMIT + Duration::from_secs(60), all)
        .await
        .is_err()
    {
        println!("timed out");
        return;
    }
    let spread = first
        .zip(last)
        .map_or(0.0, |(f, l)| (l - f).as_secs_f64() * 1000.0);
    println!(
        "changed={changed} nothing_new={quiet} failed={failed} first→last answer {spread:.0} ms"
    );
}
