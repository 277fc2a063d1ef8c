//! Real processes for the end-to-end tests: chronyd serving time on a loopback port (never
//! touching this machine's clock), `chronolock serve`, `chronolock sim live`, and a spoofing
//! NTP server. Every process is killed when its handle drops; every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chronolock_core::ntp::{ServerReply, PACKET_LEN};
use chronolock_core::UnixTime;
use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "chronolock-e2e-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// A port free on 127.0.0.1 for UDP (`udp`) or TCP.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("udp port")
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("tcp port")
            .port()
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// chronyd serving its local clock (this machine's) on a loopback port, with `-x`: it never
/// adjusts the system clock.
pub struct Chrony {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Chrony {
    pub fn start() -> Chrony {
        Chrony::start_on(free_port(true))
    }

    pub fn start_on(port: u16) -> Chrony {
        let dir = TempDir::new("chrony");
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nlocal stratum 8\nallow 127.0.0.1\ncmdport 0\n\
                 pidfile {}\n",
                dir.path().join("chronyd.pid").display()
            ),
        )
        .expect("chrony.conf");
        let chronyd = ["/usr/sbin/chronyd", "/usr/bin/chronyd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chronyd is installed (Debian package chrony; scripts/test.sh installs it)");
        let mut cmd = Command::new(chronyd);
        cmd.args(["-x", "-d", "-f"]).arg(&conf);
        if running_as_root() {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chronyd starts");
        let chrony = Chrony {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while query_ntp(chrony.addr()).is_none() {
            assert!(Instant::now() < deadline, "chronyd answers on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        chrony
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SNTP query; the server's transmit time in Unix microseconds.
pub fn query_ntp(addr: SocketAddr) -> Option<i64> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let mut p = [0u8; PACKET_LEN];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&0x1234_5678_0000_0001u64.to_be_bytes());
    s.send_to(&p, addr).ok()?;
    let mut buf = [0u8; 128];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    if n < PACKET_LEN {
        return None;
    }
    let secs = u32::from_be_bytes(buf[40..44].try_into().ok()?) as i64 - 2_208_988_800;
    let frac = u32::from_be_bytes(buf[44..48].try_into().ok()?) as i64;
    Some(secs * 1_000_000 + ((frac * 1_000_000) >> 32))
}

/// An NTP server that lies: it answers every request with the time `offset_s` away from this
/// machine's, claiming stratum 2. Stops when dropped.
pub struct Spoofer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spoofer {
    pub fn start_on(port: u16, offset_s: i64) -> Spoofer {
        let socket = UdpSocket::bind(("127.0.0.1", port)).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < PACKET_LEN {
                    continue;
                }
                let mut request = [0u8; PACKET_LEN];
                request.copy_from_slice(&buf[..PACKET_LEN]);
                let now = host_utc_us() + offset_s * 1_000_000;
                let reply = ServerReply::synced(
                    UnixTime::from_micros(now),
                    UnixTime::from_micros(now + 20),
                )
                .encode(&request);
                let _ = socket.send_to(&reply, from);
            }
        });
        Spoofer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn host_utc_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `chronolock serve` on a loopback port with its data directory.
pub struct Server {
    child: Child,
    pub url: String,
    pub port: u16,
    data: PathBuf,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        Server::start_on(data, free_port(false))
    }

    pub fn start_on(data: &Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_chronolock"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server starts");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data: data.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new process on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        *self = Server::start_on(&self.data.clone(), self.port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `chronolock sim live`: commands on its stdin, events from its stdout.
pub struct Doors {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Value>,
    /// Every event read so far.
    pub seen: Vec<Value>,
}

impl Doors {
    pub fn start(args: &[String]) -> Doors {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chronolock"))
            .args(["sim", "live"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sim live starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("sim live printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        Doors {
            child,
            stdin,
            events,
            seen: Vec::new(),
        }
    }

    pub fn send(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("command written");
        self.stdin.flush().expect("flushed");
    }

    /// Waits for an event matching `pred` (looking only at events not yet waited past).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no {what} within {timeout:?}; events so far:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "sim live ended while waiting for {what}; events: {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Like [`wait_for`](Self::wait_for), but an event already seen counts too.
    pub fn wait_seen(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        self.wait_for(what, timeout, pred)
    }

    /// Waits for an event of kind `event` from door 0.
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        self.wait_for(event, timeout, |v| v["event"] == event)
    }

    /// The door's status now.
    pub fn status(&mut self) -> Value {
        self.send(serde_json::json!({"do": "status"}));
        self.wait_event("status", Duration::from_secs(10))
    }

    /// Presents a card and returns the decision.
    pub fn card(&mut self, uid: &str) -> String {
        self.send(serde_json::json!({"do": "card", "uid": uid}));
        let d = self.wait_event("decision", Duration::from_secs(10));
        d["decision"].as_str().unwrap_or_default().to_string()
    }

    /// Stops the process (a power cut for every door).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Doors {
    fn drop(&mut self) {
        self.kill();
    }
}
