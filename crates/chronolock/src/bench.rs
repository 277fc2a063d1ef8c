//! `chronolock bench sync`: how many unchanged device syncs a server answers per second.
//!
//! It seeds a site (PEOPLE people with a card each, in one group that every one of DOORS doors
//! admits, through the importer), starts `chronolock serve` as a child process on a free
//! loopback port, pairs every door through the device API over HTTP, lets each door download its
//! list once, and then, for SECONDS, drives the doors' polls from CONNECTIONS concurrent
//! connections: each poll a fresh, authenticated protocol request with the door's next counter
//! and its current generation, so the server has nothing to send but the authenticated time.
//! Answers are checked like a door checks them (AEAD, door, nonce, and the site's signature when
//! the answer carries one) for each door's first poll and one in [`VERIFY_EVERY`] after that;
//! every answer's status and length are checked. The last line on stdout is one JSON object
//! with the figures.
//!
//! With `--baseline-url` the same client then drives a reference server (nginx answering 304,
//! `scripts/bench-sync-nginx.sh`) with sync-sized posts over as many connections for as long,
//! so the figures carry their own baseline from the same run.
//!
//! The load generator shares the machine with the server, so the figures are a floor for a
//! server with the machine to itself.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chronolock_core::protocol::{
    DeviceStatus, Enrolment, SyncRequestWriter, SyncResponse, SYNC_REQUEST_FIXED, SYNC_RESPONSE_LEN,
};
use chronolock_server::transfer::{self, ExportDoc, GroupRecord, PersonRecord, RuleRecord};
use chronolock_server::{device, directory, AppState, ServeConfig};
use rand::RngCore;

/// Every answer's status and length are checked; one in this many is also opened and its
/// signature verified (as every door does), which would otherwise cost the load generator as
/// much as the server.
pub const VERIFY_EVERY: u64 = 64;

/// `chronolock bench sync`'s settings.
#[derive(Clone, Debug)]
pub struct SyncBench {
    /// People (one card each), all admitted at every door.
    pub people: usize,
    /// Doors, each paired and polling.
    pub doors: usize,
    /// How long the measured polls run.
    pub seconds: f64,
    /// Concurrent connections.
    pub connections: usize,
    /// A PostgreSQL database to seed and serve from (empty; default: a fresh SQLite in a
    /// temporary directory).
    pub database_url: Option<String>,
    /// A reference server to drive the same way after the syncs (see [`baseline`]).
    pub baseline_url: Option<String>,
}

/// A paired door as the load generator keeps it.
struct BenchDoor {
    id: u64,
    key: [u8; 32],
    counter: u64,
    generation: u64,
    polls: u64,
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    downloads: u64,
    first_error: Option<String>,
}

/// The server child process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary data directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The resident memory of a process and its peak, KiB (`VmRSS`, `VmHWM`; 0 where unknown).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs the benchmark; the text to print, its last line the JSON figures.
pub fn sync(args: &SyncBench) -> Result<String, String> {
    if args.people == 0 || args.doors == 0 || args.connections == 0 || args.seconds <= 0.0 {
        return Err("--people, --doors, --connections and --seconds must be above 0".into());
    }
    if args.seconds > 3600.0 {
        return Err("--seconds: at most 3600".into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(run(args))
}

async fn run(args: &SyncBench) -> Result<String, String> {
    let mut out = String::new();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "chronolock-bench-{}-{}",
        std::process::id(),
        chronolock_server::now_micros()
    )));
    let config = ServeConfig {
        data_dir: dir.0.clone(),
        database_url: args.database_url.clone(),
        ..ServeConfig::default()
    };
    let database = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };

    // Seed through the importer: one group admitted at every door.
    let t = Instant::now();
    let state = AppState::open(&config).await.map_err(|e| e.to_string())?;
    if directory::first_site(&state)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err("the database holds a site already: bench sync needs an empty one".into());
    }
    let doors: Vec<String> = (1..=args.doors).map(|i| format!("Door {i}")).collect();
    let doc = ExportDoc {
        format: transfer::EXPORT_FORMAT.to_string(),
        version: 1,
        site: None,
        doors: doors.clone(),
        schedules: Vec::new(),
        groups: vec![GroupRecord {
            name: "Members".into(),
            rules: doors
                .iter()
                .map(|door| RuleRecord {
                    door: door.clone(),
                    access: "UNRESTRICTED".into(),
                    schedule: None,
                    valid_from: 0,
                    valid_until: 0,
                })
                .collect(),
        }],
        people: (0..args.people)
            .map(|i| PersonRecord {
                name: format!("Member {i}"),
                cards: vec![format!("{:08X}", 0x0400_0000 + i)],
                groups: vec!["Members".into()],
                ..PersonRecord::default()
            })
            .collect(),
    };
    let text = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
    transfer::import_text(&state, &text, "UTC", true)
        .await
        .map_err(|e| format!("seeding: {e}"))?;
    let site = directory::first_site(&state)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("seeding made no site")?;
    let mut codes = Vec::new();
    for door in directory::doors(&state, site.id)
        .await
        .map_err(|e| e.to_string())?
    {
        let code = device::new_pairing_code(&state, door.id)
            .await
            .map_err(|e| e.to_string())?;
        codes.push(code);
    }
    state.db.close().await;
    out.push_str(&format!(
        "seeded {} people and {} doors on {database} in {:.1} s\n",
        args.people,
        args.doors,
        t.elapsed().as_secs_f64()
    ));

    // The server, as a child process on a free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(&dir.0)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(url) = &args.database_url {
        command.arg("--database-url").arg(url);
    }
    let server = Server(
        command
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?,
    );
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("the server did not answer /healthz within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss_idle, _) = rss_kib(pid);

    // Pair every door over HTTP, as a device does.
    let t = Instant::now();
    let mut doors = Vec::new();
    let mut site_key = None;
    for code in &codes {
        let mut random = [0u8; 32];
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut random);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let enrolment = Enrolment::new(random, nonce, code);
        let answer = client
            .post(format!("{base}/device/v1/enrol"))
            .body(enrolment.request().to_vec())
            .send()
            .await
            .map_err(|e| format!("pairing: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("pairing: {e}"))?;
        let enrolled = enrolment
            .finish(&answer)
            .map_err(|e| format!("pairing: {e:?}"))?;
        site_key = Some(enrolled.site_key);
        doors.push(BenchDoor {
            id: enrolled.door_id,
            key: enrolled.device_key,
            counter: 0,
            generation: 0,
            polls: 0,
        });
    }
    let site_key = ed25519_dalek::VerifyingKey::from_bytes(&site_key.ok_or("no doors")?)
        .map_err(|e| format!("the site key: {e}"))?;
    out.push_str(&format!(
        "paired {} doors over HTTP in {:.1} s\n",
        doors.len(),
        t.elapsed().as_secs_f64()
    ));

    // Each door's first poll downloads its list; then every poll is unchanged.
    let t = Instant::now();
    let mut warm = Tally::default();
    for door in &mut doors {
        poll(&client, &base, &site_key, door, &mut warm).await;
    }
    if warm.errors > 0 {
        return Err(format!(
            "the first polls failed: {}",
            warm.first_error.unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "first polls: {} lists downloaded in {:.1} s\n",
        warm.downloads,
        t.elapsed().as_secs_f64()
    ));

    // The measured run: the doors dealt out to the connections.
    let mut shares: Vec<Vec<BenchDoor>> = (0..args.connections).map(|_| Vec::new()).collect();
    for (i, door) in doors.into_iter().enumerate() {
        shares[i % args.connections].push(door);
    }
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut share in shares.into_iter().filter(|s| !s.is_empty()) {
        let (client, base, sent) = (client.clone(), base.clone(), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = 0;
            while Instant::now() < stop_at {
                let n = share.len();
                poll(&client, &base, &site_key, &mut share[i % n], &mut tally).await;
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.map_err(|e| e.to_string())?;
        total.latencies_us.extend(t.latencies_us);
        total.errors += t.errors;
        total.downloads += t.downloads;
        total.first_error = total.first_error.or(t.first_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_s = cpu_ticks(pid).saturating_sub(cpu_before) as f64 / 100.0;
    let (rss, peak) = rss_kib(pid);
    drop(server);
    let reference = match &args.baseline_url {
        Some(url) => Some(baseline(&client, url, args.connections, args.seconds).await?),
        None => None,
    };

    total.latencies_us.sort_unstable();
    let pct = |p: f64| percentile_ms(&total.latencies_us, p);
    let ok = total.latencies_us.len() as f64;
    let mut figures = serde_json::json!({
        "syncs_per_s": (ok / elapsed).round(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": total.errors,
        "list_downloads_per_s": total.downloads as f64 / elapsed,
        "server_rss_kib": rss,
        "server_rss_idle_kib": rss_idle,
        "server_peak_rss_kib": peak,
        "server_cpu_s": cpu_s,
        "syncs": total.latencies_us.len(),
        "seconds": elapsed,
        "people": args.people,
        "doors": args.doors,
        "connections": args.connections,
        "database": database,
    });
    if let Some(r) = &reference {
        let ratio = if r.per_s > 0.0 {
            ok / elapsed / r.per_s
        } else {
            0.0
        };
        figures["baseline_url"] = args.baseline_url.clone().into();
        figures["baseline_per_s"] = r.per_s.round().into();
        figures["baseline_p50_ms"] = r.p50_ms.into();
        figures["baseline_p99_ms"] = r.p99_ms.into();
        figures["baseline_errors"] = r.errors.into();
        figures["ratio_to_baseline"] = ((ratio * 1000.0).round() / 1000.0).into();
    }
    if let Some(e) = &total.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out.push_str(&format!(
        "{} unchanged syncs in {elapsed:.1} s over {} connections: {:.0}/s, p50 {:.2} ms, p99 \
         {:.2} ms, {} errors; server RSS {rss} KiB (idle {rss_idle}, peak {peak}), CPU {cpu_s:.1} s\n",
        total.latencies_us.len(),
        args.connections,
        ok / elapsed,
        pct(0.50),
        pct(0.99),
        total.errors,
    ));
    if let Some(r) = &reference {
        out.push_str(&format!(
            "baseline {}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors; syncs at {} of it\n",
            args.baseline_url.as_deref().unwrap_or(""),
            r.per_s,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            figures["ratio_to_baseline"],
        ));
    }
    out.push_str(&figures.to_string());
    out.push('\n');
    Ok(out)
}

/// The CPU time a process has used, in clock ticks (user + system; 0 where unknown).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    field(11) + field(12)
}

/// One poll of `door`: a fresh request, the answer checked, the figures noted.
async fn poll(
    client: &reqwest::Client,
    base: &str,
    site_key: &ed25519_dalek::VerifyingKey,
    door: &mut BenchDoor,
    tally: &mut Tally,
) {
    let started = Instant::now();
    match poll_once(client, base, site_key, door).await {
        Ok(downloaded) => {
            let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            tally.latencies_us.push(us);
            tally.downloads += u64::from(downloaded);
        }
        Err(e) => {
            tally.errors += 1;
            tally.first_error.get_or_insert(e);
        }
    }
}

async fn poll_once(
    client: &reqwest::Client,
    base: &str,
    site_key: &ed25519_dalek::VerifyingKey,
    door: &mut BenchDoor,
) -> Result<bool, String> {
    door.counter += 1;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let status = DeviceStatus {
        wall_us: Some(chronolock_server::now_micros()),
        uptime_us: door.counter * 1_000_000,
        generation: door.generation,
        source: Some(chronolock_core::Source::Ntp),
        error_us: 10_000,
        battery_mv: 3700,
        partial_list: None,
        list_capacity: 0,
        firmware_version: 0,
        partial_firmware: None,
    };
    let mut buf = [0u8; 256];
    let writer = SyncRequestWriter::new(&mut buf, door.id, nonce, door.counter, &status)
        .map_err(|e| format!("request: {e:?}"))?;
    let n = writer.finish(&door.key);
    let answer = client
        .post(format!("{base}/device/v1/sync"))
        .body(buf[..n].to_vec())
        .send()
        .await
        .map_err(|e| format!("sync: {e}"))?;
    let code = answer.status();
    let mut body = answer
        .bytes()
        .await
        .map_err(|e| format!("sync: {e}"))?
        .to_vec();
    if !code.is_success() {
        return Err(format!("sync answered {code}"));
    }
    if body.len() < SYNC_RESPONSE_LEN {
        return Err(format!("sync answer of {} bytes", body.len()));
    }
    let verify = door.polls % VERIFY_EVERY == 0 || door.generation == 0;
    door.polls += 1;
    if verify {
        let response = SyncResponse::parse(
            &mut body[..SYNC_RESPONSE_LEN],
            &door.key,
            site_key,
            door.id,
            &nonce,
        )
        .map_err(|e| format!("sync answer: {e:?}"))?;
        let downloaded = response.list_len > 0 && response.generation != door.generation;
        door.generation = response.generation;
        return Ok(downloaded);
    }
    // Unverified: an unchanged answer is the fixed part alone.
    Ok(body.len() > SYNC_RESPONSE_LEN)
}

/// What the reference server did.
struct Reference {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Drives `url` with the syncs' client: `connections` tasks, each posting a sync-sized body
/// one request after another for `seconds`. Any answer below 400 counts (nginx's `return
/// 304`, say); the body is read like a sync answer's.
async fn baseline(
    client: &reqwest::Client,
    url: &str,
    connections: usize,
    seconds: f64,
) -> Result<Reference, String> {
    let body = vec![0u8; SYNC_REQUEST_FIXED + 16];
    client
        .post(url)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| format!("the baseline server at {url}: {e}"))?;
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < stop_at {
                let t = Instant::now();
                let ok = match client.post(&url).body(body.clone()).send().await {
                    Ok(answer) => answer.status().as_u16() < 400 && answer.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    tally.latencies_us.push(us);
                } else {
                    tally.errors += 1;
                }
            }
            tally
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let t = task.await.map_err(|e| e.to_string())?;
        latencies.extend(t.latencies_us);
        errors += t.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Reference {
        per_s: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        errors,
    })
}

/// The `p` quantile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    f64::from(sorted_us[((sorted_us.len() - 1) as f64 * p).round() as usize]) / 1000.0
}
