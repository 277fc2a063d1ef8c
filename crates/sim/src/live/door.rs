//! One virtual door: the shared [`Door`] (the code the firmware runs, from the controller to
//! the flash layout and the device protocol) in a task, with a file for its flash and one for
//! its RTC, real UDP for NTP and real HTTP for the backend. This shell only moves bytes: it
//! carries out the door's requests and hands back what came of them.
//!
//! A power cut drops the door and everything in flight (RAM) and keeps the data directory
//! (flash, RTC); the next boot starts from there, as the firmware does.

use std::net::SocketAddr;
use std::time::Duration;

use chronolock_core::protocol::SYNC_RESPONSE_LEN;
use chronolock_core::{Config, Event, Instant, RtcReading};
use chronolock_device::door::{BootConfig, Door, Exchange, Failure, Notice, Request, BODY_MAX};
use chronolock_device::flash::FileFlash;
use chronolock_device::setup::SetupForm;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::net::{self, Backend};
use super::store::{self, RtcState, Store};
use super::Output;
use crate::runner::event_json;

/// What a door can be told to do (the stdin commands, the admin UI's buttons).
#[derive(Clone, Debug)]
pub enum Command {
    /// Present a card to the UID-only (Wiegand) reader.
    Card(Vec<u8>),
    /// Present a secure card (7-byte UID) to the PN532: one personalised for the site, or
    /// (`clone`) a card that gives its UID without holding its key.
    SecureCard {
        /// Its UID.
        uid: [u8; chronolock_core::card::UID_LEN],
        /// A copy of the UID only.
        clone: bool,
    },
    /// Press keypad keys.
    Keys(String),
    /// Switch the power on (boot) or off (a cut: RAM is lost).
    Power(bool),
    /// Cut the power, then switch it back on.
    PowerCycle,
    /// Connect or cut the network.
    Network(bool),
    /// Let NTP through or block it (the network stays up).
    Ntp(bool),
    /// Set the battery voltage the ADC reads.
    Battery(u16),
    /// Cut the power after the first chunk of the next allow-list download.
    CutPowerDuringListDownload,
    /// The setup page was submitted.
    Setup(Box<SetupForm>),
    /// Open (`true`) or close the door: its position contact reports it.
    Door(bool),
    /// Press the request-to-exit button.
    Rex,
    /// Print the clock, list and outbox now (a `status` event, with the host's UTC beside the
    /// door's for comparison).
    Status,
}

/// What the admin UI shows of a door.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DoorView {
    /// Door name (its data directory).
    pub name: String,
    /// Powered on.
    pub powered: bool,
    /// Network connected.
    pub network: bool,
    /// NTP let through (the panel's switch; `false`: blocked).
    pub ntp: bool,
    /// What the latest NTP request came to: `answered by HOST`, `no answer from HOST …`, or
    /// `None` before the first one.
    pub ntp_last: Option<String>,
    /// Door id at the backend, once paired.
    pub door_id: Option<u64>,
    /// In setup mode (not paired yet).
    pub setup_mode: bool,
    /// The setup page's address while in setup mode.
    pub setup_url: Option<String>,
    /// Whether the clock is valid.
    pub clock_valid: bool,
    /// Its source.
    pub clock_source: Option<String>,
    /// The door's UTC, RFC 3339.
    pub clock_utc: Option<String>,
    /// Its error bound, milliseconds.
    pub clock_error_ms: Option<u64>,
    /// The lock is open.
    pub unlocked: bool,
    /// What the LEDs and buzzer last showed.
    pub feedback: Option<String>,
    /// The last decision: credential and outcome.
    pub last_decision: Option<(String, String)>,
    /// Installed list generation.
    pub generation: u64,
    /// Events waiting for the backend.
    pub outbox: usize,
    /// Battery millivolts.
    pub battery_mv: u16,
    /// Last sync outcome.
    pub last_sync: Option<String>,
    /// The door stands open.
    pub door_open: bool,
    /// Whether the door reads its contact (the site says one is fitted).
    pub contact: bool,
    /// The alarm sounding, if any (`door_forced`, `door_held_open`).
    pub alarm: Option<String>,
    /// The door holds a lockdown.
    pub lockdown: bool,
}

/// How a door is set up at start.
#[derive(Clone, Debug)]
pub struct DoorOptions {
    /// Name shown in output.
    pub name: String,
    /// Backend URL (overrides the stored one when given).
    pub server: Option<String>,
    /// Pairing code to use if not paired.
    pub pairing_code: Option<String>,
    /// NTP servers, `host:port`.
    pub ntp: Vec<String>,
    /// A DS3231 is fitted.
    pub rtc: bool,
    /// Seconds between backend syncs (overrides what the backend asked for).
    pub sync_interval_s: Option<u32>,
    /// Address for the setup page (port 0: any).
    pub setup_listen: SocketAddr,
}

/// A running door as seen from outside.
#[derive(Clone)]
pub struct DoorHandle {
    /// Its name.
    pub name: String,
    commands: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<DoorView>,
}

impl DoorHandle {
    /// Sends a command; false when the door task has ended.
    pub fn send(&self, c: Command) -> bool {
        self.commands.send(c).is_ok()
    }

    /// What the door shows now.
    pub fn view(&self) -> DoorView {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn watch(&self) -> watch::Receiver<DoorView> {
        self.view.clone()
    }
}

/// Results of background work, tagged with the boot they belong to.
enum Input {
    Ntp {
        boot: u64,
        server: u8,
        host: String,
        packet: [u8; chronolock_core::ntp::PACKET_LEN],
        at: tokio::time::Instant,
    },
    /// An NTP request that got no answer (the core's round times out by itself).
    NtpLost {
        boot: u64,
        why: String,
    },
    Rtc {
        boot: u64,
        reading: RtcReading,
    },
    Answer {
        boot: u64,
        exchange: Exchange,
        bytes: Vec<u8>,
    },
    AnswerEnd {
        boot: u64,
        exchange: Exchange,
    },
    Failed {
        boot: u64,
        exchange: Exchange,
        failure: Failure,
        error: String,
    },
    Relock {
        boot: u64,
    },
}

impl Input {
    fn boot(&self) -> u64 {
        match self {
            Input::Ntp { boot, .. }
            | Input::NtpLost { boot, .. }
            | Input::Rtc { boot, .. }
            | Input::Answer { boot, .. }
            | Input::AnswerEnd { boot, .. }
            | Input::Failed { boot, .. }
            | Input::Relock { boot } => *boot,
        }
    }
}

struct Running {
    door: Door<FileFlash>,
    boot: u64,
    started: tokio::time::Instant,
    tasks: JoinSet<()>,
    setup_server: Option<tokio::task::JoinHandle<()>>,
    /// Bytes of the current sync answer received (for the injected power cut).
    sync_bytes: usize,
    /// The list length the current sync answer announced.
    list_len: u32,
    /// When the network last came up, on the door's clock (`None`: it is down).
    network_up: Option<Instant>,
}

/// Starts a door; it boots at once.
pub fn spawn(opts: DoorOptions, store: Store, out: Output) -> std::io::Result<DoorHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(DoorView {
        name: opts.name.clone(),
        ..DoorView::default()
    });
    store.configure(opts.server.as_deref(), opts.pairing_code.as_deref())?;
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let door = Shell {
        opts,
        store,
        backend: None,
        out,
        running: None,
        boots: 0,
        network: true,
        ntp_up: true,
        ntp_last: None,
        battery_mv: 3700,
        cut_during_download: false,
        inputs_tx,
        view: view_tx,
        commands_tx: tx.clone(),
        unlocked: false,
        feedback: None,
        last_decision: None,
        last_sync: None,
        door_open: false,
        card: None,
    };
    tokio::spawn(door.run(rx, inputs_rx));
    let name = view_rx.borrow().name.clone();
    Ok(DoorHandle {
        name,
        commands: tx,
        view: view_rx,
    })
}

struct Shell {
    opts: DoorOptions,
    store: Store,
    /// The HTTP client for the configured server, kept so that connections are reused.
    backend: Option<Backend>,
    out: Output,
    running: Option<Running>,
    boots: u64,
    network: bool,
    ntp_up: bool,
    /// The latest NTP request's outcome, for the panel.
    ntp_last: Option<String>,
    battery_mv: u16,
    /// Armed by [`Command::CutPowerDuringListDownload`]; the next list download takes it.
    cut_during_download: bool,
    inputs_tx: mpsc::UnboundedSender<Input>,
    view: watch::Sender<DoorView>,
    commands_tx: mpsc::UnboundedSender<Command>,
    unlocked: bool,
    feedback: Option<String>,
    last_decision: Option<(String, String)>,
    last_sync: Option<String>,
    /// The door stands open (physical: it stays as it is while the controller is off).
    door_open: bool,
    /// The secure card in the PN532's field (it answers the door's APDUs at once).
    card: Option<crate::card::SoftCard>,
}

impl Shell {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inputs: mpsc::UnboundedReceiver<Input>,
    ) {
        self.boot();
        loop {
            self.carry_out();
            self.publish();
            let deadline = self.running.as_ref().and_then(|r| {
                r.door
                    .poll_timeout()
                    .map(|at| r.started + Duration::from_micros(at.as_micros()))
            });
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(i) = inputs.recv() => self.input(i),
                () = sleep => {
                    if let Some(r) = &mut self.running {
                        let now = instant(r.started);
                        r.door.handle_timeout(now);
                    }
                }
            }
        }
        self.power_off();
    }

    fn emit(&self, mut v: Value) {
        if let (Some(r), Value::Object(fields)) = (&self.running, &mut v) {
            fields.insert("uptime_us".into(), instant(r.started).as_micros().into());
            if let Some(up) = r.network_up {
                fields.insert("network_up_us".into(), up.as_micros().into());
            }
        }
        self.out.emit(&self.opts.name, v);
    }

    fn boot(&mut self) {
        if self.running.is_some() {
            return;
        }
        self.boots += 1;
        let boot = self.boots;
        let store = match self.store.flash() {
            Ok(s) => s,
            Err(e) => {
                self.emit(json!({"event": "error", "error": format!("flash: {e}")}));
                return;
            }
        };
        let core = match Config::with_ntp_servers(self.opts.ntp.iter().map(String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                self.emit(json!({"event": "error", "error": format!("ntp servers: {e:?}")}));
                Config::default()
            }
        };
        let config = BootConfig {
            core,
            sync_interval_s: self.opts.sync_interval_s,
            setup_button: false,
            firmware: None,
        };
        let started = tokio::time::Instant::now();
        let door = Door::boot(store, config, rand::random(), Instant::ZERO);
        let setup = door.setup_mode();
        self.running = Some(Running {
            door,
            boot,
            started,
            tasks: JoinSet::new(),
            setup_server: None,
            sync_bytes: 0,
            list_len: 0,
            network_up: None,
        });
        self.emit(json!({"event": "boot", "boot": boot, "paired": !setup}));
        if setup {
            self.start_setup_page();
        }
        let open = self.door_open;
        if let Some(r) = &mut self.running {
            // The contact is read at boot; the network is up from the start, so the first NTP
            // request is queued behind the RTC read (the door holds flash work until its answer).
            r.door.handle_door(open, Instant::ZERO);
            if self.network {
                // Up once the door has booted (a real door's Wi-Fi joins long after).
                let up = instant(r.started);
                r.network_up = Some(up);
                r.door.handle_network(true, up);
            }
        }
        self.carry_out();
    }

    fn power_off(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.tasks.abort_all();
            if let Some(s) = r.setup_server.take() {
                s.abort();
            }
            self.unlocked = false;
            self.feedback = None;
            self.emit(json!({"event": "power_off"}));
        }
    }

    fn start_setup_page(&mut self) {
        let Some(r) = &mut self.running else { return };
        let listen = self.opts.setup_listen;
        let commands = self.commands_tx.clone();
        let out = self.out.clone();
        let name = self.opts.name.clone();
        let view = self.view.clone();
        r.setup_server = Some(tokio::spawn(async move {
            match tokio::net::TcpListener::bind(listen).await {
                Ok(listener) => {
                    let url = listener
                        .local_addr()
                        .map(|a| format!("http://{a}/"))
                        .unwrap_or_default();
                    out.emit(&name, json!({"event": "setup_page", "url": url}));
                    view.send_modify(|v| v.setup_url = Some(url));
                    super::setup::serve(listener, commands).await;
                }
                Err(e) => out.emit(
                    &name,
                    json!({"event": "error", "error": format!("setup page on {listen}: {e}")}),
                ),
            }
        }));
    }

    fn command(&mut self, c: Command) {
        let Some(r) = &mut self.running else {
            match c {
                Command::Power(true) | Command::PowerCycle => self.boot(),
                Command::Network(up) => self.network = up,
                Command::Ntp(up) => self.ntp_up = up,
                Command::Battery(mv) => self.battery_mv = mv,
                Command::Door(open) => {
                    self.door_open = open;
                    self.emit(json!({"event": "door_moved", "open": open}));
                }
                other => self.emit(json!({"event": "ignored", "reason": "powered off", "command": format!("{other:?}")})),
            }
            return;
        };
        let now = instant(r.started);
        match c {
            Command::Card(uid) => r.door.handle_card(&uid, now),
            Command::SecureCard { uid, clone } => {
                // A genuine card is one the site personalised: its keys come from the site's
                // card master key (which this simulated card may know); a clone has its own.
                let seed =
                    u64::from_le_bytes([uid[0], uid[1], uid[2], uid[3], uid[4], uid[5], uid[6], 0]);
                let card = match r.door.card_master_keys() {
                    Some(keys) if !clone => {
                        crate::card::SoftCard::genuine(uid, &keys.current.0, seed)
                    }
                    _ => crate::card::SoftCard::clone_of(uid, seed),
                };
                self.card = Some(card);
                r.door.handle_secure_card(&uid, now);
            }
            Command::Keys(keys) => r.door.handle_keys(keys.as_bytes(), now),
            Command::Door(open) => {
                self.door_open = open;
                r.door.handle_door(open, now);
            }
            Command::Rex => r.door.handle_rex(now),
            Command::Power(true) => {}
            Command::Power(false) => self.power_off(),
            Command::PowerCycle => {
                self.power_off();
                self.boot();
            }
            Command::Network(up) => {
                self.network = up;
                r.network_up = up.then_some(now);
                r.door.handle_network(up, now);
                self.emit(json!({"event": "network", "up": up}));
            }
            Command::Ntp(up) => {
                self.ntp_up = up;
                self.emit(json!({"event": "ntp_reachable", "up": up}));
            }
            Command::Battery(mv) => self.battery_mv = mv,
            Command::CutPowerDuringListDownload => self.cut_during_download = true,
            Command::Setup(form) => {
                r.door.handle_setup(&form, now);
                let server = r.door.server_url().to_string();
                self.emit(json!({"event": "setup", "server": server}));
            }
            Command::Status => {
                let ctl = r.door.controller();
                let wall = ctl.wall_time(now);
                let status = json!({
                    "event": "status",
                    "valid": wall.is_some(),
                    "source": ctl.clock_source().map(|s| s.as_str()),
                    "utc_us": wall.map(|w| w.utc.as_micros()),
                    "error_us": wall.map(|w| w.error_bound_ms * 1000),
                    "host_utc_us": store::host_utc_us(),
                    "generation": ctl.persisted().list_generation,
                    "outbox": r.door.outbox_len(),
                    "paired": r.door.identity().is_some(),
                });
                self.emit(status);
            }
        }
    }

    /// The HTTP client for the configured server (made again only when the address changes).
    fn backend(&mut self, base: &str) -> Result<Backend, String> {
        match &self.backend {
            Some(b) if b.serves(base) => Ok(b.clone()),
            _ => {
                let b = Backend::new(base)?;
                self.backend = Some(b.clone());
                Ok(b)
            }
        }
    }

    fn input(&mut self, i: Input) {
        let Some(r) = &mut self.running else { return };
        if r.boot != i.boot() {
            return; // An answer to a door that has since lost power.
        }
        let now = instant(r.started);
        match i {
            Input::Ntp {
                server,
                host,
                packet,
                at,
                ..
            } => {
                self.ntp_last = Some(format!("answered by {host}"));
                r.door
                    .handle_ntp_response(server, &packet, instant_at(r.started, at));
            }
            Input::NtpLost { why, .. } => {
                if self.ntp_last.as_deref() != Some(why.as_str()) {
                    self.emit(json!({"event": "ntp_lost", "error": why}));
                }
                self.ntp_last = Some(why);
            }
            Input::Rtc { reading, .. } => r.door.handle_rtc_read(reading, now),
            Input::Answer {
                exchange, bytes, ..
            } => {
                if !matches!(exchange, Exchange::Sync { .. }) || !self.cut_during_download {
                    return r.door.handle_answer(exchange, &bytes, now);
                }
                // The injected cut strikes once the first 4 KiB of a list are in flash.
                let before = r.sync_bytes;
                r.sync_bytes += bytes.len();
                let cut_at = SYNC_RESPONSE_LEN + 4096;
                if r.sync_bytes < cut_at || r.list_len == 0 && before >= SYNC_RESPONSE_LEN {
                    return r.door.handle_answer(exchange, &bytes, now);
                }
                let take = cut_at.saturating_sub(before).min(bytes.len());
                r.door.handle_answer(exchange, &bytes[..take], now);
                self.carry_out();
                let Some(r) = &self.running else { return };
                if r.list_len == 0 {
                    return;
                }
                let (written, len) = (cut_at - SYNC_RESPONSE_LEN, r.list_len);
                self.cut_during_download = false;
                self.emit(json!({"event": "power_cut", "during": "list_download", "written": written, "len": len}));
                self.power_off();
            }
            Input::AnswerEnd { exchange, .. } => r.door.handle_answer_end(exchange, now),
            Input::Failed {
                exchange,
                failure,
                error,
                ..
            } => {
                r.door.handle_exchange_failed(exchange, failure, now);
                if matches!(exchange, Exchange::Enrol { .. }) {
                    self.emit(json!({"event": "pairing", "ok": false, "error": error}));
                } else if matches!(exchange, Exchange::Sync { .. }) {
                    self.last_sync = Some(format!("failed: {error}"));
                    self.emit(json!({"event": "sync", "ok": false, "error": error}));
                }
            }
            Input::Relock { .. } => {
                self.unlocked = false;
                self.emit(json!({"event": "lock", "locked": true}));
            }
        }
    }

    /// Carries out what the door asked for.
    fn carry_out(&mut self) {
        loop {
            let Some(r) = &mut self.running else { return };
            let Some(request) = r.door.poll_request() else {
                return;
            };
            let now = instant(r.started);
            let boot = r.boot;
            match request {
                Request::ReadRtc { at_tick } => {
                    let rtc = match self.store.rtc(self.opts.rtc) {
                        Ok(rtc) => rtc,
                        Err(e) => {
                            self.emit(json!({"event": "error", "error": format!("rtc: {e}")}));
                            None
                        }
                    };
                    let Some(r) = &mut self.running else { return };
                    let tx = self.inputs_tx.clone();
                    match rtc {
                        None => r.door.handle_rtc_read(RtcReading::Absent, now),
                        Some(rtc) if !at_tick => r.door.handle_rtc_read(rtc.read(), now),
                        Some(rtc) => {
                            // Wait for the seconds register to tick, then read.
                            let into_second = rtc.utc_us().rem_euclid(1_000_000);
                            let wait = Duration::from_micros((1_000_000 - into_second) as u64);
                            r.tasks.spawn(async move {
                                tokio::time::sleep(wait).await;
                                let reading = rtc.read().at_tick();
                                let _ = tx.send(Input::Rtc { boot, reading });
                            });
                        }
                    }
                }
                Request::WriteRtc { utc } => {
                    if self.opts.rtc {
                        let state = RtcState {
                            offset_us: utc.as_micros() - store::host_utc_us(),
                            osf: false,
                        };
                        if let Err(e) = self.store.save_rtc(&state) {
                            self.emit(json!({"event": "error", "error": format!("rtc: {e}")}));
                        }
                    }
                }
                Request::SendNtp { server, packet } => {
                    if !(self.network && self.ntp_up) {
                        continue; // Lost on the way; the core's round times out.
                    }
                    // The site's servers once it named them, else those from the options.
                    let Some(host) = r.door.ntp_servers().get(usize::from(server)) else {
                        continue;
                    };
                    let host = host.as_str().to_owned();
                    let tx = self.inputs_tx.clone();
                    let timeout = Duration::from_secs(5);
                    r.tasks.spawn(async move {
                        let Some(addr) = resolve(&host).await else {
                            let why = format!("no answer: cannot resolve {host}");
                            let _ = tx.send(Input::NtpLost { boot, why });
                            return;
                        };
                        match net::ntp_exchange(addr, packet, timeout).await {
                            Ok((packet, at)) => {
                                let _ = tx.send(Input::Ntp {
                                    boot,
                                    server,
                                    host,
                                    packet,
                                    at,
                                });
                            }
                            Err(e) => {
                                let why = format!("no answer from {host}: {e}");
                                let _ = tx.send(Input::NtpLost { boot, why });
                            }
                        }
                    });
                }
                Request::Post(exchange) => self.post(exchange, now),
                Request::ReadBattery => {
                    let mv = self.battery_mv;
                    r.door.handle_battery(mv, now);
                }
                Request::Unlock { ms } => {
                    self.unlocked = true;
                    let tx = self.inputs_tx.clone();
                    r.tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                        let _ = tx.send(Input::Relock { boot });
                    });
                    self.emit(json!({"event": "unlock", "ms": ms}));
                }
                Request::Alarm { sounding } => {
                    self.emit(json!({"event": "sounder", "on": sounding}));
                }
                Request::Feedback(f) => {
                    self.feedback = Some(f.as_str().to_string());
                    self.emit(json!({"event": "feedback", "pattern": f.as_str()}));
                }
                // The file is written after the unlock above was carried out.
                Request::Store => r.door.store_pending(),
                // A virtual door runs no firmware image: it has no app slots to boot.
                Request::BootFirmware { slot } => self.emit(json!({
                    "event": "error",
                    "error": format!("asked to boot app slot {slot}: a virtual door has none"),
                })),
                Request::Notice(n) => self.notice(n),
                Request::CardApdu(apdu) => {
                    let Some(r) = &mut self.running else { return };
                    crate::card::carry(&mut r.door, self.card.as_mut(), &apdu, now);
                }
            }
        }
    }

    /// Posts an exchange's body; its answer streams back as inputs.
    fn post(&mut self, exchange: Exchange, now: Instant) {
        let Some(r) = &mut self.running else { return };
        let mut body = vec![0u8; BODY_MAX];
        let Some(n) = r.door.write_body(exchange, &mut body, now) else {
            return;
        };
        body.truncate(n);
        if matches!(exchange, Exchange::Sync { .. }) {
            r.sync_bytes = 0;
            r.list_len = 0;
        }
        let boot = r.boot;
        let tx = self.inputs_tx.clone();
        let base = r.door.server_url().to_string();
        let backend = if self.network {
            self.backend(&base)
        } else {
            Err("network cut".to_string())
        };
        let Some(r) = &mut self.running else { return };
        r.tasks.spawn(async move {
            let failed = |failure, error| Input::Failed {
                boot,
                exchange,
                failure,
                error,
            };
            let backend = match backend {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(failed(Failure::Unreachable, e));
                    return;
                }
            };
            let mut response = match backend.post(exchange.path(), body).await {
                Ok(r) => r,
                Err((failure, error)) => {
                    let _ = tx.send(failed(failure, error));
                    return;
                }
            };
            loop {
                match response.chunk().await {
                    Ok(Some(bytes)) => {
                        let _ = tx.send(Input::Answer {
                            boot,
                            exchange,
                            bytes: bytes.to_vec(),
                        });
                    }
                    Ok(None) => {
                        let _ = tx.send(Input::AnswerEnd { boot, exchange });
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(failed(Failure::Unreachable, net::without_url(&e)));
                        return;
                    }
                }
            }
        });
    }

    /// Shows what the door said, in the scenario contract's vocabulary where it has one.
    fn notice(&mut self, n: Notice) {
        match n {
            Notice::Event { event, .. } => {
                if let Event::Decision {
                    credential,
                    decision,
                } = event
                {
                    self.last_decision =
                        Some((credential.to_string(), decision.as_str().to_string()));
                }
                self.emit(event_json(&event));
            }
            Notice::RtcWritten { utc, .. } => {
                self.emit(json!({"event": "rtc_write", "utc": crate::scenario::format_utc(utc)}))
            }
            Notice::NtpServers { .. } => {
                let servers: Vec<String> = self
                    .running
                    .as_ref()
                    .map(|r| r.door.ntp_servers().iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                self.emit(json!({"event": "ntp_servers", "servers": servers}));
            }
            Notice::Paired { door_id, new_site } => {
                if let Some(r) = &mut self.running {
                    if let Some(s) = r.setup_server.take() {
                        s.abort();
                    }
                }
                self.view.send_modify(|v| v.setup_url = None);
                self.emit(json!({"event": "pairing", "ok": true, "door_id": door_id, "new_site": new_site}));
            }
            Notice::PairingFailed(e) => {
                // Transport failures are reported with their detail by the input that saw them.
                if !matches!(e, chronolock_device::door::ExchangeError::Failed(_)) {
                    self.emit(json!({"event": "pairing", "ok": false, "error": e.to_string()}));
                }
            }
            Notice::Synced {
                acked,
                generation,
                list_len,
                list_offset,
            } => {
                if let Some(r) = &mut self.running {
                    r.list_len = list_len;
                }
                self.last_sync = Some(format!("ok; events acknowledged: {acked}"));
                self.emit(json!({
                    "event": "sync", "ok": true, "acked": acked, "generation": generation,
                    "list_bytes": list_len, "resumed_at": list_offset,
                }));
            }
            Notice::SyncFailed(e) => {
                if !matches!(e, chronolock_device::door::ExchangeError::Failed(_)) {
                    self.last_sync = Some(format!("failed: {e}"));
                    self.emit(json!({"event": "sync", "ok": false, "error": e.to_string()}));
                }
            }
            Notice::ListInstalled {
                generation,
                slot,
                len,
            } => self.emit(json!({
                "event": "list_installed", "generation": generation,
                "slot": if slot == 0 { "A" } else { "B" }, "bytes": len,
            })),
            Notice::ListRejected(reason) => {
                self.emit(json!({"event": "list_rejected", "reason": reason.to_string()}))
            }
            Notice::OutboxFull { dropped } => {
                self.emit(json!({"event": "outbox_full", "dropped": dropped}))
            }
            Notice::RequestsDropped { count } => {
                self.emit(json!({"event": "requests_dropped", "count": count}))
            }
            Notice::LockdownRefused(e) => {
                self.emit(json!({"event": "error", "error": format!("lockdown order: {e}")}))
            }
            Notice::Storage(e) => {
                self.emit(json!({"event": "error", "error": format!("flash: {e}")}))
            }
            Notice::FirmwareRefused(e) => {
                self.emit(json!({"event": "firmware_refused", "reason": e.to_string()}))
            }
            Notice::FirmwareReady { version, slot } => self.emit(
                json!({"event": "firmware_ready", "version": version.to_string(), "slot": slot}),
            ),
            Notice::FirmwareConfirmed { version } => {
                self.emit(json!({"event": "firmware_confirmed", "version": version.to_string()}))
            }
            Notice::FirmwareRolledBack { version, boots } => self.emit(json!({
                "event": "firmware_rolled_back",
                "version": version.to_string(),
                "boots": boots,
            })),
        }
    }

    fn publish(&mut self) {
        let (powered, clock, generation, setup, outbox, door_id) = match &self.running {
            Some(r) => {
                let now = instant(r.started);
                let ctl = r.door.controller();
                (
                    true,
                    ctl.wall_time(now).map(|w| (w, ctl.clock_source())),
                    ctl.persisted().list_generation,
                    r.door.setup_mode(),
                    r.door.outbox_len(),
                    r.door.identity().map(|i| i.door_id),
                )
            }
            None => (false, None, 0, false, 0, None),
        };
        let network = self.network;
        let ntp = self.ntp_up;
        let ntp_last = self.ntp_last.clone();
        let unlocked = self.unlocked;
        let feedback = self.feedback.clone();
        let last_decision = self.last_decision.clone();
        let last_sync = self.last_sync.clone();
        let battery_mv = self.battery_mv;
        let door_open = self.door_open;
        let (contact, alarm, lockdown) = self.running.as_ref().map_or((false, None, false), |r| {
            let ctl = r.door.controller();
            (
                ctl.config().door_contact,
                ctl.alarm().map(|a| a.as_str().to_string()),
                ctl.lockdown(),
            )
        });
        self.view.send_if_modified(|v| {
            let new = DoorView {
                name: v.name.clone(),
                powered,
                network,
                ntp,
                ntp_last,
                door_id: door_id.or(if powered { None } else { v.door_id }),
                setup_mode: setup,
                setup_url: if setup { v.setup_url.clone() } else { None },
                clock_valid: clock.is_some(),
                clock_source: clock.and_then(|(_, s)| s.map(|s| s.as_str().to_string())),
                clock_utc: clock.map(|(w, _)| crate::scenario::format_utc(w.utc)),
                clock_error_ms: clock.map(|(w, _)| w.error_bound_ms),
                unlocked,
                feedback,
                last_decision,
                generation,
                outbox,
                battery_mv,
                last_sync,
                door_open,
                contact,
                alarm,
                lockdown,
            };
            let changed = new != *v;
            *v = new;
            changed
        });
    }
}

/// Monotonic microseconds since this boot.
fn instant(started: tokio::time::Instant) -> Instant {
    instant_at(started, tokio::time::Instant::now())
}

fn instant_at(started: tokio::time::Instant, at: tokio::time::Instant) -> Instant {
    Instant::from_micros(at.saturating_duration_since(started).as_micros() as u64)
}

async fn resolve(host: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(host).await.ok()?.next()
}
