//! Live virtual doors: the same core [`Controller`](chronolock_core::Controller) as the firmware,
//! against the real server over HTTP and a real NTP server over UDP, in real time.
//!
//! Each door keeps its flash and RTC in its own data directory, so stopping and starting the
//! process is a power cycle. Doors print JSON Lines in the scenario contract's vocabulary, with
//! `t` (milliseconds since start) and `door` added, plus their own: `boot`, `power_off`,
//! `pairing`, `sync`, `list_installed`, `list_rejected`, `setup_page`, `setup`, `network`,
//! `ntp_reachable`, `lock`, `power_cut`, `outbox_full`, `error`.
//!
//! Commands come as JSON Lines too (stdin for `chronolock sim live`, buttons in the admin UI):
//! `{"door": 0, "do": "card", "uid": "04A1B2C3"}`, `keys` (`"keys": "1234#"`), `power`
//! (`"on": bool`), `power_cycle`, `network` (`"up": bool`), `ntp` (`"up": bool`), `battery`
//! (`"mv": 3700`), `door` (`"open": bool`: the door moves, its contact reports it), `rex` (the
//! exit button), `cut_power_during_list_download`, `status`.

pub mod bench;
pub mod door;
pub mod net;
pub mod setup;
pub mod store;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Map, Value};

pub use door::{Command, DoorHandle, DoorOptions, DoorView};

/// Where doors' JSON Lines go.
#[derive(Clone)]
pub struct Output {
    start: tokio::time::Instant,
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Output {
    /// Lines to stdout.
    pub fn stdout() -> Output {
        Output::to(Box::new(std::io::stdout()))
    }

    /// Lines to any writer.
    pub fn to(sink: Box<dyn Write + Send>) -> Output {
        Output {
            start: tokio::time::Instant::now(),
            sink: Arc::new(Mutex::new(sink)),
        }
    }

    /// Writes one event: `t`, `door`, then the event's fields.
    pub fn emit(&self, door: &str, event: Value) {
        let mut line = Map::new();
        line.insert("t".into(), (self.start.elapsed().as_millis() as u64).into());
        line.insert("door".into(), door.into());
        if let Value::Object(fields) = event {
            line.extend(fields);
        }
        // One write per line, so a reader that takes whole writes sees whole lines.
        let text = format!("{}\n", Value::Object(line));
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.write_all(text.as_bytes());
            let _ = sink.flush();
        }
    }
}

/// A log file that starts afresh when it passes `max_bytes`, keeping the previous one as
/// `<name>.1`: a long-running demo's door events never fill the disk.
pub struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
}

impl RotatingFile {
    /// Opens `path` for appending.
    pub fn open(path: &std::path::Path, max_bytes: u64) -> std::io::Result<RotatingFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `chronolock sim live`'s options.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Backend URL.
    pub server: Option<String>,
    /// NTP servers, `host:port`.
    pub ntp: Vec<String>,
    /// How many doors.
    pub doors: u32,
    /// Data directory (one subdirectory per door).
    pub data: PathBuf,
    /// Pairing codes, one per door in order.
    pub codes: Vec<String>,
    /// Doors have a DS3231.
    pub rtc: bool,
    /// Seconds between syncs, overriding the backend's.
    pub sync_interval_s: Option<u32>,
    /// First door's setup page port (door i gets port + i; 0: any free port).
    pub setup_port: u16,
}

/// Starts the doors.
pub fn start(opts: &LiveOptions, out: &Output) -> std::io::Result<Vec<DoorHandle>> {
    let mut doors = Vec::new();
    for i in 0..opts.doors {
        let name = format!("door-{i}");
        let store = store::Store::open(&opts.data.join(&name))?;
        let port = if opts.setup_port == 0 {
            0
        } else {
            opts.setup_port.saturating_add(i as u16)
        };
        let d = door::spawn(
            DoorOptions {
                name,
                server: opts.server.clone(),
                pairing_code: opts.codes.get(i as usize).cloned(),
                ntp: opts.ntp.clone(),
                rtc: opts.rtc,
                sync_interval_s: opts.sync_interval_s,
                setup_listen: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            store,
            out.clone(),
        )?;
        doors.push(d);
    }
    Ok(doors)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandLine {
    #[serde(default)]
    door: usize,
    #[serde(rename = "do")]
    what: String,
    uid: Option<String>,
    #[serde(default)]
    clone: bool,
    keys: Option<String>,
    on: Option<bool>,
    up: Option<bool>,
    open: Option<bool>,
    mv: Option<u16>,
}

/// Parses one command line into the door index and the command, or says what is wrong.
pub fn parse_command(line: &str) -> Result<(usize, Command), String> {
    let c: CommandLine = serde_json::from_str(line).map_err(|e| format!("not a command: {e}"))?;
    let need = |v: Option<bool>, name: &str| v.ok_or(format!("\"{}\" needs \"{name}\"", c.what));
    let command = match c.what.as_str() {
        "card" => {
            let uid = c.uid.as_deref().ok_or("\"card\" needs \"uid\"")?;
            let bytes = data_encoding::HEXUPPER_PERMISSIVE
                .decode(uid.as_bytes())
                .map_err(|_| format!("uid {uid:?} is not hex"))?;
            if bytes.is_empty() || bytes.len() > 10 {
                return Err(format!("uid {uid:?} must be 1 to 10 bytes"));
            }
            Command::Card(bytes)
        }
        "secure_card" => {
            let uid = c.uid.as_deref().ok_or("\"secure_card\" needs \"uid\"")?;
            let bytes = data_encoding::HEXUPPER_PERMISSIVE
                .decode(uid.as_bytes())
                .map_err(|_| format!("uid {uid:?} is not hex"))?;
            let uid = bytes
                .try_into()
                .map_err(|_| format!("uid {uid:?}: secure cards have 7-byte UIDs"))?;
            Command::SecureCard {
                uid,
                clone: c.clone,
            }
        }
        "keys" => {
            let keys = c.keys.clone().ok_or("\"keys\" needs \"keys\"")?;
            if let Some(k) = keys.chars().find(|k| !matches!(k, '0'..='9' | '*' | '#')) {
                return Err(format!("key {k:?} is not on a keypad"));
            }
            Command::Keys(keys)
        }
        "power" => Command::Power(need(c.on, "on")?),
        "power_cycle" => Command::PowerCycle,
        "door" => Command::Door(need(c.open, "open")?),
        "rex" => Command::Rex,
        "network" => Command::Network(need(c.up, "up")?),
        "ntp" => Command::Ntp(need(c.up, "up")?),
        "battery" => Command::Battery(c.mv.ok_or("\"battery\" needs \"mv\"")?),
        "cut_power_during_list_download" => Command::CutPowerDuringListDownload,
        "status" => Command::Status,
        other => return Err(format!("unknown command {other:?}")),
    };
    Ok((c.door, command))
}

/// Pairing codes from a server started with `--demo`, one per demo door, fresh each call. A new
/// code replaces the door's device, so this logs in as the admin named by
/// `CHRONOLOCK_ADMIN_USER` (default `admin`) with `CHRONOLOCK_ADMIN_PASSWORD`.
pub async fn demo_codes(server: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct DemoDoor {
        code: String,
    }
    #[derive(Deserialize)]
    struct Me {
        csrf_token: String,
    }
    let base = server.trim_end_matches('/');
    let user = std::env::var("CHRONOLOCK_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    let password = std::env::var("CHRONOLOCK_ADMIN_PASSWORD")
        .map_err(|_| "--demo logs in to the server: set CHRONOLOCK_ADMIN_PASSWORD (and CHRONOLOCK_ADMIN_USER if not `admin`)".to_string())?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let login = format!("{base}/login");
    let response = client
        .post(&login)
        .form(&[("username", user.as_str()), ("password", password.as_str())])
        .send()
        .await
        .map_err(|e| format!("{login}: {e}"))?;
    let cookie = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("chronolock_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("{login}: {} (wrong user or password?)", response.status()))?;
    let me = format!("{base}/api/me");
    let body = client
        .get(&me)
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .map_err(|e| format!("{me}: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("{me}: {e}"))?;
    let me: Me = serde_json::from_slice(&body).map_err(|e| format!("{me}: {e}"))?;
    let url = format!("{base}/demo/pairing-codes");
    let response = client
        .post(&url)
        .header(reqwest::header::COOKIE, &cookie)
        .header("x-csrf-token", me.csrf_token)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "{url}: {} (is the server running with --demo?)",
            response.status()
        ));
    }
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let doors: Vec<DemoDoor> = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    Ok(doors.into_iter().map(|d| d.code).collect())
}

/// Runs `chronolock sim live`: starts the doors, takes commands from stdin, and stops on
/// Ctrl-C, SIGTERM or after `duration`.
pub async fn run(
    mut opts: LiveOptions,
    demo: bool,
    duration: Option<std::time::Duration>,
) -> Result<(), String> {
    if demo {
        let server = opts
            .server
            .clone()
            .ok_or("--demo needs --server, the demo server's address")?;
        opts.codes = demo_codes(&server).await?;
        if opts.doors == 0 {
            opts.doors = opts.codes.len() as u32;
        }
    }
    let out = Output::stdout();
    let doors = start(&opts, &out).map_err(|e| format!("{}: {e}", opts.data.display()))?;
    let commands = async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim().is_empty() {
                continue;
            }
            match parse_command(&line) {
                Ok((i, c)) => match doors.get(i) {
                    Some(d) => {
                        d.send(c);
                    }
                    None => eprintln!("no door {i} (there are {})", doors.len()),
                },
                Err(e) => eprintln!("{e}: {line}"),
            }
        }
        // Stdin closed: keep running until stopped.
        std::future::pending::<()>().await;
    };
    let stop = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = commands => {}
        () = stop => {}
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for d in &doors {
        d.send(Command::Power(false));
    }
    // Let the doors write their last state.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_keeps_one_old_file() {
        let dir = std::env::temp_dir().join(format!("chronolock-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("events.jsonl");
        let out = Output::to(Box::new(RotatingFile::open(&path, 200).expect("open")));
        for i in 0..20 {
            out.emit("d", serde_json::json!({"event": "x", "i": i}));
        }
        let now = std::fs::read_to_string(&path).expect("current");
        let old = std::fs::read_to_string(dir.join("events.jsonl.1")).expect("previous");
        assert!(now.len() <= 200 && old.len() <= 200, "{now}\n{old}");
        assert!(
            now.contains("\"i\":19"),
            "the newest line is in the current file"
        );
        for line in now.lines().chain(old.lines()) {
            serde_json::from_str::<Value>(line).expect("whole lines only");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        assert!(matches!(
            parse_command(r#"{"door": 2, "do": "card", "uid": "04a1b2c3"}"#),
            Ok((2, Command::Card(uid))) if uid == [0x04, 0xa1, 0xb2, 0xc3]
        ));
        assert!(matches!(
            parse_command(r#"{"do": "network", "up": false}"#),
            Ok((0, Command::Network(false)))
        ));
        for (line, says) in [
            ("not json", "not a command"),
            (r#"{"do": "card"}"#, "needs \"uid\""),
            (r#"{"do": "card", "uid": "xyz"}"#, "not hex"),
            (r#"{"do": "keys", "keys": "12a"}"#, "not on a keypad"),
            (r#"{"do": "network"}"#, "needs \"up\""),
            (r#"{"do": "fly"}"#, "unknown command"),
            (r#"{"do": "status", "colour": 1}"#, "unknown field"),
        ] {
            let e = parse_command(line).expect_err(line);
            assert!(e.contains(says), "{line}: {e}");
        }
    }
}
