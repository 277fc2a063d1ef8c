//! One virtual door: the core [`Controller`] in a task, with files for flash and RTC, real UDP
//! for NTP and real HTTP for the backend. It carries out the controller's actions and nothing
//! more; every decision is the core's.
//!
//! A power cut drops the controller and everything in flight (RAM) and keeps the data directory
//! (flash, RTC); the next boot starts from there, as the firmware does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chronolock_core::allowlist::AllowList;
use chronolock_core::controller::Credential;
use chronolock_core::protocol::{self, DeviceStatus, EventBody, WireEvent};
use chronolock_core::{Action, Config, Controller, Event, Instant, RtcReading, UnixTime};
use chronolock_device::setup::SetupForm;
use chronolock_device::slots::{Download, Slots};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::net::{self, Backend, StoredCredential, SyncJob, SyncOutcome};
use super::store::{self, DeviceCredential, Outbox, RtcState, Store, OUTBOX_MAX};
use super::Output;
use crate::runner::event_json;

/// What a door can be told to do (the stdin commands, the admin UI's buttons).
#[derive(Clone, Debug)]
pub enum Command {
    /// Present a card.
    Card(Vec<u8>),
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
    /// NTP reachable.
    pub ntp: bool,
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

/// Results of background exchanges, tagged with the boot they belong to.
enum Input {
    Ntp {
        boot: u64,
        server: u8,
        packet: [u8; chronolock_core::ntp::PACKET_LEN],
        at: tokio::time::Instant,
    },
    Rtc {
        boot: u64,
        reading: RtcReading,
    },
    Synced {
        boot: u64,
        outcome: SyncOutcome,
    },
    Enrolled {
        boot: u64,
        result: Result<protocol::Enrolled, String>,
    },
    Conditional {
        boot: u64,
        request: u32,
        granted: Option<bool>,
    },
    Relock {
        boot: u64,
    },
}

struct Running {
    ctl: Controller,
    boot: u64,
    started: tokio::time::Instant,
    tasks: JoinSet<()>,
    setup_server: Option<tokio::task::JoinHandle<()>>,
    enrolling: bool,
}

/// Starts a door; it boots at once.
pub fn spawn(opts: DoorOptions, store: Store, out: Output) -> std::io::Result<DoorHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(DoorView {
        name: opts.name.clone(),
        ..DoorView::default()
    });
    let mut settings = store.settings();
    if let Some(server) = &opts.server {
        settings.server = server.clone();
    }
    if settings.device.is_none() {
        if let Some(code) = &opts.pairing_code {
            settings.pairing_code = Some(code.clone());
        }
    }
    store.save_settings(&settings)?;
    let slots = Slots::new(store.flash()?, 0, store::SLOT_SIZE)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let outbox = store.outbox();
    let door = Door {
        opts,
        store,
        settings,
        outbox,
        backend: None,
        out,
        slots: Arc::new(Mutex::new(slots)),
        list: None,
        running: None,
        boots: Arc::new(AtomicU64::new(0)),
        network: true,
        ntp_up: true,
        battery_mv: 3700,
        cut_during_download: Arc::default(),
        inputs_tx,
        view: view_tx,
        commands_tx: tx.clone(),
        unlocked: false,
        feedback: None,
        last_decision: None,
        last_sync: None,
    };
    tokio::spawn(door.run(rx, inputs_rx));
    let name = view_rx.borrow().name.clone();
    Ok(DoorHandle {
        name,
        commands: tx,
        view: view_rx,
    })
}

struct Door {
    opts: DoorOptions,
    store: Store,
    /// The stored settings, kept in memory; [`Door::save_settings`] writes them through.
    settings: store::Settings,
    /// The stored event outbox, kept in memory; [`Door::save_outbox`] writes it through.
    outbox: Outbox,
    /// The HTTP client for the configured server, kept so that connections are reused.
    backend: Option<Backend>,
    out: Output,
    slots: Arc<Mutex<Slots<store::FileFlash>>>,
    /// The active list's bytes, read from its slot at boot and after each install.
    list: Option<Vec<u8>>,
    running: Option<Running>,
    boots: Arc<AtomicU64>,
    network: bool,
    ntp_up: bool,
    battery_mv: u16,
    /// Armed by [`Command::CutPowerDuringListDownload`]; the next list download takes it.
    cut_during_download: Arc<std::sync::atomic::AtomicBool>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    view: watch::Sender<DoorView>,
    commands_tx: mpsc::UnboundedSender<Command>,
    unlocked: bool,
    feedback: Option<String>,
    last_decision: Option<(String, String)>,
    last_sync: Option<String>,
}

impl Door {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inputs: mpsc::UnboundedReceiver<Input>,
    ) {
        self.boot();
        loop {
            self.drain();
            self.publish();
            let deadline = self.running.as_ref().and_then(|r| {
                r.ctl
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
                        r.ctl.handle_timeout(now);
                    }
                }
            }
        }
        self.power_off();
    }

    fn emit(&self, mut v: Value) {
        if let (Some(r), Value::Object(fields)) = (&self.running, &mut v) {
            fields.insert("uptime_us".into(), instant(r.started).as_micros().into());
        }
        self.out.emit(&self.opts.name, v);
    }

    fn boot(&mut self) {
        if self.running.is_some() {
            return;
        }
        let boot = self.boots.fetch_add(1, Ordering::SeqCst) + 1;
        // RAM starts from what flash kept.
        self.settings = self.store.settings();
        self.outbox = self.store.outbox();
        let settings = &self.settings;
        let credential = settings.device.as_ref().and_then(stored_credential);
        let mut cfg = match Config::with_ntp_servers(self.opts.ntp.iter().map(String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                self.emit(json!({"event": "error", "error": format!("ntp servers: {e:?}")}));
                Config::default()
            }
        };
        if let Some(s) = self
            .opts
            .sync_interval_s
            .or(settings.device.as_ref().map(|d| d.sync_interval_s))
        {
            cfg.backend_sync_interval = Duration::from_secs(u64::from(s.max(1)));
        }
        if let Some(c) = &credential {
            cfg.site_key = Some(c.site_key);
        }
        let started = tokio::time::Instant::now();
        let mut ctl = Controller::new(cfg, self.store.persisted(), rand::random(), Instant::ZERO);
        if let Some(c) = &credential {
            ctl.set_list_key(Some(protocol::list_key(&c.device_key)));
        }
        for u in self.store.keypad_uses() {
            ctl.restore_keypad_use(u);
        }
        let setup = credential.is_none();
        ctl.set_setup_mode(setup);
        // The list in the active slot: checked in full (signature, records) once per boot.
        self.list = None;
        let active = self.slots.lock().ok().and_then(|mut s| {
            let info = s.active().ok()??;
            let mut bytes = vec![0u8; info.len as usize];
            s.read(info.data_offset, &mut bytes).ok()?;
            Some(bytes)
        });
        if let Some(bytes) = active {
            let key = credential
                .as_ref()
                .and_then(|c| ed25519_dalek::VerifyingKey::from_bytes(&c.site_key).ok());
            let checked = match key {
                Some(k) => AllowList::verify(&bytes, &k).map(|l| l.info()),
                None => Err(chronolock_core::allowlist::ListError::BadSignature),
            };
            match checked {
                Ok(info) => {
                    ctl.allowlist_installed(info, Instant::ZERO);
                    self.list = Some(bytes);
                }
                Err(e) => self.emit(json!({"event": "list_rejected", "reason": e.as_str()})),
            }
        }
        self.emit(json!({"event": "boot", "boot": boot, "paired": !setup}));
        self.running = Some(Running {
            ctl,
            boot,
            started,
            tasks: JoinSet::new(),
            setup_server: None,
            enrolling: false,
        });
        if setup {
            self.start_setup_page();
        }
        self.drain();
        if self.network {
            if let Some(r) = &mut self.running {
                r.ctl.handle_network(true, Instant::ZERO);
            }
            self.maybe_enrol();
        }
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
                other => self.emit(json!({"event": "ignored", "reason": "powered off", "command": format!("{other:?}")})),
            }
            return;
        };
        let now = instant(r.started);
        match c {
            Command::Card(uid) => {
                let list = self.list.as_deref().and_then(|b| AllowList::open(b).ok());
                r.ctl.handle_card(&uid, list.as_ref(), now);
            }
            Command::Keys(keys) => {
                let list = self.list.as_deref().and_then(|b| AllowList::open(b).ok());
                for k in keys.bytes() {
                    r.ctl.handle_key(k, list.as_ref(), now);
                }
            }
            Command::Power(true) => {}
            Command::Power(false) => self.power_off(),
            Command::PowerCycle => {
                self.power_off();
                self.boot();
            }
            Command::Network(up) => {
                self.network = up;
                r.ctl.handle_network(up, now);
                self.emit(json!({"event": "network", "up": up}));
                if up {
                    self.maybe_enrol();
                }
            }
            Command::Ntp(up) => {
                self.ntp_up = up;
                self.emit(json!({"event": "ntp_reachable", "up": up}));
            }
            Command::Battery(mv) => self.battery_mv = mv,
            Command::CutPowerDuringListDownload => {
                self.cut_during_download.store(true, Ordering::SeqCst);
            }
            Command::Setup(form) => self.setup(*form),
            Command::Status => {
                let wall = r.ctl.wall_time(now);
                let host_utc_us = store::host_utc_us();
                let status = json!({
                    "event": "status",
                    "valid": wall.is_some(),
                    "source": r.ctl.clock_source().map(|s| s.as_str()),
                    "utc_us": wall.map(|w| w.utc.as_micros()),
                    "error_us": wall.map(|w| w.error_bound_ms * 1000),
                    "host_utc_us": host_utc_us,
                    "generation": r.ctl.persisted().list_generation,
                    "outbox": self.outbox.events.len(),
                    "paired": self.settings.device.is_some(),
                });
                self.emit(status);
            }
        }
    }

    /// Writes the settings through to flash; false (and an `error` event) if that failed.
    fn save_settings(&self) -> bool {
        let saved = self.store.save_settings(&self.settings);
        if let Err(e) = &saved {
            self.emit(json!({"event": "error", "error": format!("settings: {e}")}));
        }
        saved.is_ok()
    }

    /// The HTTP client for the configured server (made again only when the address changes).
    fn backend(&mut self) -> Result<Backend, String> {
        match &self.backend {
            Some(b) if b.serves(&self.settings.server) => Ok(b.clone()),
            _ => {
                let b = Backend::new(&self.settings.server)?;
                self.backend = Some(b.clone());
                Ok(b)
            }
        }
    }

    /// Writes the outbox through to flash.
    fn save_outbox(&self) {
        if let Err(e) = self.store.save_outbox(&self.outbox) {
            self.emit(json!({"event": "error", "error": format!("outbox: {e}")}));
        }
    }

    fn setup(&mut self, form: SetupForm) {
        let Some(r) = &mut self.running else { return };
        let now = instant(r.started);
        let utc = UnixTime::from_micros(form.phone_time_ms as i64 * 1000);
        r.ctl.handle_phone_time(utc, now);
        self.settings.ssid = form.ssid.to_string();
        self.settings.server = form.server_url.to_string();
        self.settings.pairing_code = Some(form.pairing_code.to_string());
        self.save_settings();
        self.emit(json!({"event": "setup", "server": self.settings.server}));
        self.maybe_enrol();
    }

    /// Pairs when the door has a code and a server but no credential, and the network is up.
    fn maybe_enrol(&mut self) {
        if self.running.as_ref().is_none_or(|r| r.enrolling) || !self.network {
            return;
        }
        let settings = &self.settings;
        if settings.device.is_some() {
            return;
        }
        let (Some(code), false) = (settings.pairing_code.clone(), settings.server.is_empty())
        else {
            return;
        };
        let backend = match self.backend() {
            Ok(b) => b,
            Err(e) => {
                self.emit(json!({"event": "error", "error": e}));
                return;
            }
        };
        let Some(r) = &mut self.running else { return };
        r.enrolling = true;
        let boot = r.boot;
        let tx = self.inputs_tx.clone();
        r.tasks.spawn(async move {
            let result = backend.enrol(&code).await;
            let _ = tx.send(Input::Enrolled { boot, result });
        });
    }

    fn input(&mut self, i: Input) {
        let boot = match &i {
            Input::Ntp { boot, .. }
            | Input::Rtc { boot, .. }
            | Input::Synced { boot, .. }
            | Input::Enrolled { boot, .. }
            | Input::Conditional { boot, .. }
            | Input::Relock { boot } => *boot,
        };
        let Some(r) = &mut self.running else { return };
        if r.boot != boot {
            return; // An answer to a door that has since lost power.
        }
        match i {
            Input::Ntp {
                server, packet, at, ..
            } => {
                let at = instant_at(r.started, at);
                r.ctl.handle_ntp_response(server, &packet, at);
            }
            Input::Rtc { reading, .. } => {
                let now = instant(r.started);
                r.ctl.handle_rtc_read(reading, now);
            }
            Input::Enrolled { result, .. } => {
                r.enrolling = false;
                self.enrolled(result);
            }
            Input::Synced { outcome, .. } => self.synced(outcome),
            Input::Conditional {
                request, granted, ..
            } => {
                let now = instant(r.started);
                match granted {
                    Some(g) => r.ctl.handle_conditional_answer(request, g, now),
                    None => r.ctl.handle_conditional_failed(request, now),
                }
            }
            Input::Relock { .. } => {
                self.unlocked = false;
                self.emit(json!({"event": "lock", "locked": true}));
            }
        }
    }

    fn enrolled(&mut self, result: Result<protocol::Enrolled, String>) {
        let enrolled = match result {
            Ok(e) => e,
            Err(e) => {
                self.emit(json!({"event": "pairing", "ok": false, "error": e}));
                // A spent or wrong code will not get better by retrying: setup is needed again.
                return;
            }
        };
        self.settings.pairing_code = None;
        self.settings.device = Some(DeviceCredential {
            door_id: enrolled.door_id,
            device_key: data_encoding::HEXLOWER.encode(&enrolled.device_key),
            site_key: data_encoding::HEXLOWER.encode(&enrolled.site_key),
            sync_interval_s: enrolled.sync_interval_s,
        });
        if !self.save_settings() {
            return;
        }
        self.emit(json!({"event": "pairing", "ok": true, "door_id": enrolled.door_id}));
        let Some(r) = &mut self.running else { return };
        r.ctl.set_site_key(enrolled.site_key);
        r.ctl
            .set_list_key(Some(protocol::list_key(&enrolled.device_key)));
        r.ctl.set_setup_mode(false);
        if let Some(s) = r.setup_server.take() {
            s.abort();
        }
        self.view.send_modify(|v| v.setup_url = None);
        r.ctl.handle_backend_configured(instant(r.started));
    }

    fn synced(&mut self, outcome: SyncOutcome) {
        let Some(r) = &mut self.running else { return };
        let now = instant(r.started);
        match outcome {
            SyncOutcome::Failed(e) => {
                r.ctl.handle_backend_failed(now);
                self.last_sync = Some(format!("failed: {e}"));
                self.emit(json!({"event": "sync", "ok": false, "error": e}));
            }
            SyncOutcome::PowerCut { written, len } => {
                self.emit(json!({"event": "power_cut", "during": "list_download", "written": written, "len": len}));
                self.power_off();
            }
            SyncOutcome::Done {
                answer,
                sent,
                download,
            } => {
                r.ctl.handle_backend_time(&answer.time, now);
                let acked = usize::from(answer.acked.min(sent));
                let acked = acked.min(self.outbox.events.len());
                self.outbox.events.drain(..acked);
                self.save_outbox();
                self.last_sync = Some(format!("ok; events acknowledged: {acked}"));
                self.emit(json!({
                    "event": "sync", "ok": true, "acked": acked, "generation": answer.generation,
                    "list_bytes": answer.list_len,
                }));
                if let Some(d) = download {
                    self.install(d);
                }
            }
        }
    }

    /// Checks the staged list with the core and switches slots only if it passes.
    fn install(&mut self, mut d: Download) {
        let Some(r) = &mut self.running else { return };
        let now = instant(r.started);
        let staged = {
            let Ok(mut s) = self.slots.lock() else { return };
            s.staged(&mut d).and_then(|info| {
                let mut bytes = vec![0u8; info.len as usize];
                s.read(info.data_offset, &mut bytes).map(|()| bytes)
            })
        };
        let bytes = match staged {
            Ok(b) => b,
            Err(e) => {
                self.emit(json!({"event": "list_rejected", "reason": e.to_string()}));
                return;
            }
        };
        let info = match r.ctl.check_allowlist(&bytes) {
            Ok(list) => list.info(),
            Err(e) => {
                self.emit(json!({"event": "list_rejected", "reason": e.as_str()}));
                return;
            }
        };
        let committed = self
            .slots
            .lock()
            .map_err(|_| "flash lock poisoned".to_string())
            .and_then(|mut s| s.commit(d).map_err(|e| e.to_string()));
        match committed {
            Ok(slot) => {
                r.ctl.allowlist_installed(info, now);
                self.list = Some(bytes);
                self.emit(json!({
                    "event": "list_installed", "generation": info.generation,
                    "slot": if slot.index == 0 { "A" } else { "B" }, "bytes": slot.len,
                }));
            }
            Err(e) => self.emit(json!({"event": "list_rejected", "reason": e})),
        }
    }

    /// Carries out what the controller asked for.
    fn drain(&mut self) {
        loop {
            let Some(r) = &mut self.running else { return };
            let Some(action) = r.ctl.poll_action() else {
                return;
            };
            let now = instant(r.started);
            let boot = r.boot;
            let (out, name) = (&self.out, self.opts.name.as_str());
            let emit = |v: Value| out.emit(name, v);
            match action {
                Action::ReadRtc { at_tick } => {
                    let rtc = match self.store.rtc(self.opts.rtc) {
                        Ok(rtc) => rtc,
                        Err(e) => {
                            emit(json!({"event": "error", "error": format!("rtc: {e}")}));
                            None
                        }
                    };
                    let tx = self.inputs_tx.clone();
                    match rtc {
                        None => r.ctl.handle_rtc_read(RtcReading::Absent, now),
                        Some(rtc) if !at_tick => r.ctl.handle_rtc_read(rtc.read(), now),
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
                Action::WriteRtc { utc } => {
                    if self.opts.rtc {
                        let state = RtcState {
                            offset_us: utc.as_micros() - store::host_utc_us(),
                            osf: false,
                        };
                        if let Err(e) = self.store.save_rtc(&state) {
                            self.emit(json!({"event": "error", "error": format!("rtc: {e}")}));
                        }
                        self.emit(
                            json!({"event": "rtc_write", "utc": crate::scenario::format_utc(utc)}),
                        );
                        self.queue(EventBody::RtcWrite {
                            utc_us: utc.as_micros(),
                        });
                    }
                }
                Action::SendNtp { server, packet } => {
                    if !(self.network && self.ntp_up) {
                        continue; // Lost on the way; the core's round times out.
                    }
                    let Some(host) = self.opts.ntp.get(usize::from(server)).cloned() else {
                        continue;
                    };
                    let tx = self.inputs_tx.clone();
                    let timeout = Duration::from_secs(5);
                    r.tasks.spawn(async move {
                        let Some(addr) = resolve(&host).await else {
                            return;
                        };
                        if let Ok((packet, at)) = net::ntp_exchange(addr, packet, timeout).await {
                            let _ = tx.send(Input::Ntp {
                                boot,
                                server,
                                packet,
                                at,
                            });
                        }
                    });
                }
                Action::SyncBackend { nonce } => self.start_sync(nonce),
                Action::Persist(p) => {
                    if let Err(e) = self.store.save_persisted(&p) {
                        self.emit(json!({"event": "error", "error": format!("persist: {e}")}));
                    }
                }
                Action::PersistKeypadUse(u) => {
                    if let Err(e) = self.store.save_keypad_use(&u) {
                        self.emit(json!({"event": "error", "error": format!("keypad: {e}")}));
                    }
                }
                Action::Unlock { ms } => {
                    self.unlocked = true;
                    emit(json!({"event": "unlock", "ms": ms}));
                    let tx = self.inputs_tx.clone();
                    r.tasks.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                        let _ = tx.send(Input::Relock { boot });
                    });
                }
                Action::Feedback(f) => {
                    self.feedback = Some(f.as_str().to_string());
                    self.emit(json!({"event": "feedback", "pattern": f.as_str()}));
                }
                Action::AskBackend {
                    request,
                    credential,
                } => self.ask(request, credential),
                Action::ReadBattery => {
                    let mv = self.battery_mv;
                    r.ctl.handle_battery(mv, now);
                }
                Action::Event(e) => {
                    if let Event::Decision {
                        credential,
                        decision,
                    } = e
                    {
                        self.last_decision =
                            Some((credential.to_string(), decision.as_str().to_string()));
                    }
                    // Into the outbox before anything else: an event is never lost to a cut.
                    self.queue(EventBody::from_event(&e));
                    self.emit(event_json(&e));
                }
            }
        }
    }

    fn queue(&mut self, body: EventBody) {
        let device_us = self.running.as_ref().and_then(|r| {
            r.ctl
                .wall_time(instant(r.started))
                .map(|w| w.utc.as_micros())
        });
        let outbox = &mut self.outbox;
        let full = outbox.events.len() >= OUTBOX_MAX;
        if full {
            outbox.events.remove(0);
            outbox.dropped += 1;
        }
        outbox.events.push(WireEvent {
            id: outbox.next_id,
            device_us,
            body,
        });
        outbox.next_id += 1;
        let dropped = outbox.dropped;
        self.save_outbox();
        if full {
            self.emit(json!({"event": "outbox_full", "dropped": dropped}));
        }
    }

    fn start_sync(&mut self, nonce: [u8; chronolock_core::controller::NONCE_LEN]) {
        let backend = self.backend();
        let Some(r) = &mut self.running else { return };
        let now = instant(r.started);
        let credential = self.settings.device.as_ref().and_then(stored_credential);
        let (Some(credential), Ok(backend), true) = (credential, backend, self.network) else {
            // Not paired yet, or offline: the exchange fails at once.
            r.ctl.handle_backend_failed(now);
            return;
        };
        let wall = r.ctl.wall_time(now);
        let status = DeviceStatus {
            wall_us: wall.map(|w| w.utc.as_micros()),
            uptime_us: now.as_micros(),
            generation: r.ctl.persisted().list_generation,
            source: r.ctl.clock_source(),
            error_us: wall.map_or(0, |w| w.error_bound_ms * 1000),
            battery_mv: self.battery_mv,
        };
        let job = SyncJob {
            credential,
            nonce,
            status,
            events: self
                .outbox
                .events
                .iter()
                .take(net::EVENTS_PER_SYNC)
                .cloned()
                .collect(),
            slots: self.slots.clone(),
            cut_after_first_chunk: self.cut_during_download.clone(),
        };
        let tx = self.inputs_tx.clone();
        let boot = r.boot;
        r.tasks.spawn(async move {
            let outcome = backend.sync(job).await;
            let _ = tx.send(Input::Synced { boot, outcome });
        });
    }

    fn ask(&mut self, request: u32, who: Credential) {
        let backend = self.backend();
        let Some(r) = &mut self.running else { return };
        let credential = self.settings.device.as_ref().and_then(stored_credential);
        let tx = self.inputs_tx.clone();
        let boot = r.boot;
        let wall_us = r
            .ctl
            .wall_time(instant(r.started))
            .map(|w| w.utc.as_micros());
        let (Some(credential), Ok(backend), true) = (credential, backend, self.network) else {
            let _ = tx.send(Input::Conditional {
                boot,
                request,
                granted: None,
            });
            return;
        };
        r.tasks.spawn(async move {
            let granted = backend.check(&credential, wall_us, who).await.ok();
            let _ = tx.send(Input::Conditional {
                boot,
                request,
                granted,
            });
        });
    }

    fn publish(&mut self) {
        let outbox = self.outbox.events.len();
        let door_id = self.settings.device.as_ref().map(|d| d.door_id);
        let (powered, clock, generation, setup) = match &self.running {
            Some(r) => {
                let now = instant(r.started);
                (
                    true,
                    r.ctl.wall_time(now).map(|w| (w, r.ctl.clock_source())),
                    r.ctl.persisted().list_generation,
                    r.ctl.setup_mode(),
                )
            }
            None => (false, None, 0, false),
        };
        let network = self.network;
        let ntp = self.ntp_up;
        let unlocked = self.unlocked;
        let feedback = self.feedback.clone();
        let last_decision = self.last_decision.clone();
        let last_sync = self.last_sync.clone();
        let battery_mv = self.battery_mv;
        self.view.send_if_modified(|v| {
            let new = DoorView {
                name: v.name.clone(),
                powered,
                network,
                ntp,
                door_id,
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
            };
            let changed = new != *v;
            *v = new;
            changed
        });
    }
}

fn stored_credential(d: &DeviceCredential) -> Option<StoredCredential> {
    Some(StoredCredential {
        door_id: d.door_id,
        device_key: d.device_key()?,
        site_key: d.site_key()?,
    })
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
