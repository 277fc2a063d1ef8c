//! The scripted simulator: one door controller in a simulated world, in virtual time.
//!
//! Everything the controller could observe is simulated honestly and deterministically: the
//! device's oscillator and the RTC drift as configured, NTP answers arrive after their delay
//! carrying their server's (possibly wrong) time, a power cycle loses RAM but keeps flash and the
//! RTC, and every random choice comes from the scenario's seed. Virtual time advances from event
//! to event; nothing sleeps, so a month-long scenario runs in milliseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chronolock_core::allowlist::AllowList;
use chronolock_core::controller::NONCE_LEN;
use chronolock_core::ntp::{ServerReply, PACKET_LEN};
use chronolock_core::{
    Action, BackendTime, Config, Controller, Event, Instant, Persisted, RtcReading, UnixTime,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value};

use crate::scenario::{self, NtpSpec, Scenario, Step};

/// Most internal events handled at one virtual instant before the run is declared stuck.
const MAX_EVENTS_PER_INSTANT: u32 = 10_000;

/// A run that could not complete: a controller that keeps asking to be woken at the same
/// instant. This is a bug, not a bad scenario.
#[derive(Debug, thiserror::Error)]
#[error("simulation stuck at t={t_s}s: the controller asked to be woken at the same instant {MAX_EVENTS_PER_INSTANT} times")]
pub struct Stuck {
    /// Virtual seconds since the start.
    pub t_s: f64,
}

/// What the scenario asked for that this simulator does not act on; reported on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes(pub Vec<String>);

/// Something in flight in the simulated world.
#[derive(Clone, Debug)]
enum Delivery {
    NtpReply {
        boot: u64,
        server: u8,
        packet: [u8; PACKET_LEN],
    },
    BackendReply {
        boot: u64,
        time: BackendTime,
    },
    BackendFailed {
        boot: u64,
    },
    Conditional {
        boot: u64,
        request: u32,
        granted: Option<bool>,
    },
    RtcTick {
        boot: u64,
    },
}

#[derive(Clone, Debug)]
struct SimRtc {
    /// True simulation time (µs) of the last set.
    base_t: i64,
    /// What the registers said then (µs); `None` for garbage registers.
    base_utc: Option<i64>,
    osf: bool,
    drift_ppm: f64,
}

impl SimRtc {
    fn utc_at(&self, t: i64) -> Option<i64> {
        self.base_utc
            .map(|u| u + scale(t - self.base_t, self.drift_ppm))
    }

    /// True time of the next tick of the seconds register after `t`.
    fn next_tick(&self, t: i64) -> Option<i64> {
        let utc = self.utc_at(t)?;
        let target = (utc.div_euclid(1_000_000) + 1) * 1_000_000;
        let mut at = t + ((target - utc) as f64 / (1.0 + self.drift_ppm * 1e-6)).floor() as i64;
        while self.utc_at(at).is_some_and(|u| u < target) {
            at += 1;
        }
        Some(at)
    }

    fn read(&self, t: i64) -> RtcReading {
        match self.utc_at(t) {
            None => RtcReading::Invalid,
            Some(utc) => RtcReading::from_registers(UnixTime::from_micros(utc).civil(), self.osf),
        }
    }
}

struct Device {
    ctl: Controller,
    boot_t: i64,
    boot: u64,
}

/// Elapsed true microseconds as counted by an oscillator `ppm` fast.
fn scale(us: i64, ppm: f64) -> i64 {
    (us as f64 * (1.0 + ppm * 1e-6)).round() as i64
}

/// The simulated world and the device in it.
pub struct Sim {
    start: UnixTime,
    /// True time, µs since the start.
    now: i64,
    device_drift_ppm: f64,
    network_up: bool,
    ntp: Vec<NtpSpec>,
    backend: scenario::BackendSpec,
    rtc: Option<SimRtc>,
    device: Option<Device>,
    /// The device's flash: the persisted record's bytes.
    flash: Option<Vec<u8>>,
    /// The device's flash: the allow-list slot.
    list: Option<Vec<u8>>,
    /// Whether the list in flash has been checked by a device (first boot).
    list_checked: bool,
    /// The device's flash: keypad users' code usage.
    keypad_uses: std::collections::BTreeMap<Vec<u8>, chronolock_core::keypad::KeypadUse>,
    /// The battery's voltage now.
    battery_mv: u16,
    cfg: Config,
    setup_button: bool,
    rng: ChaCha8Rng,
    boots: u64,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    pending: std::collections::HashMap<u64, Delivery>,
    seq: u64,
    out: Vec<Value>,
}

impl Sim {
    /// A world as the scenario's first line describes it, the device still off.
    pub fn new(scenario: &Scenario) -> Self {
        let w = &scenario.world;
        let ntp = w.ntp.clone().into_vec();
        let mut cfg = Config::default();
        cfg.ntp_servers.clear();
        for i in 0..ntp.len() {
            let _ = cfg.ntp_servers.push(
                format!("ntp{i}.sim")
                    .as_str()
                    .try_into()
                    .unwrap_or_default(),
            );
        }
        if let Some(floor) = w.time_floor_utc {
            cfg.time_floor = floor.0;
        }
        cfg.site_key = Some(scenario::test_site_key().verifying_key().to_bytes());
        let rtc = w.rtc.as_ref().map(|r| SimRtc {
            base_t: 0,
            base_utc: match r.utc {
                None => Some(w.start_utc.0.as_micros()),
                Some(None) => None,
                Some(Some(u)) => Some(u.0.as_micros()),
            },
            osf: r.osf,
            drift_ppm: r.drift_ppm,
        });
        let flash = w.provisioned.then(|| {
            Persisted {
                provisioned: true,
                ..Persisted::default()
            }
            .encode()
            .to_vec()
        });
        Sim {
            start: w.start_utc.0,
            now: 0,
            device_drift_ppm: w.device_drift_ppm,
            network_up: w.network,
            ntp,
            backend: w.backend.clone(),
            rtc,
            device: None,
            flash,
            list: scenario.list.clone(),
            list_checked: false,
            keypad_uses: std::collections::BTreeMap::new(),
            battery_mv: w.battery_mv.min(u32::from(u16::MAX)) as u16,
            cfg,
            setup_button: w.setup_button,
            rng: ChaCha8Rng::seed_from_u64(w.seed),
            boots: 0,
            queue: BinaryHeap::new(),
            pending: std::collections::HashMap::new(),
            seq: 0,
            out: Vec::new(),
        }
    }

    /// Runs a whole scenario and returns its events, with notes on what was not simulated.
    pub fn run(scenario: &Scenario) -> Result<(Vec<Value>, Notes), Stuck> {
        let mut sim = Sim::new(scenario);
        let mut notes = Notes::default();
        let credentials = scenario.steps.iter().any(|s| {
            matches!(
                s.action,
                scenario::Action::Card(_) | scenario::Action::Keys(_)
            )
        });
        if scenario.list.is_none() && credentials {
            notes.0.push(
                "world: no `allowlist`: every card and keypad entry will be DENIED_UNKNOWN".into(),
            );
        }
        for step in &scenario.steps {
            sim.advance_to(step.t_us)?;
            sim.apply(step, &mut notes);
        }
        Ok((sim.out, notes))
    }

    /// Handles everything due up to and including `t`.
    pub fn advance_to(&mut self, t: i64) -> Result<(), Stuck> {
        let mut same_instant = 0u32;
        let mut last = self.now;
        loop {
            let next_delivery = self.queue.peek().map(|Reverse((at, _))| *at);
            let next_timer = self.device_timer();
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(n) => n,
                    None => break,
                },
            };
            if next > t {
                break;
            }
            self.now = next.max(self.now);
            if self.now == last {
                same_instant += 1;
                if same_instant > MAX_EVENTS_PER_INSTANT {
                    return Err(Stuck {
                        t_s: self.now as f64 / 1e6,
                    });
                }
            } else {
                same_instant = 0;
                last = self.now;
            }
            if next_delivery == Some(next) {
                if let Some(Reverse((_, id))) = self.queue.pop() {
                    if let Some(d) = self.pending.remove(&id) {
                        self.deliver(d);
                    }
                }
            } else {
                let now = self.instant();
                if let Some(dev) = &mut self.device {
                    dev.ctl.handle_timeout(now);
                }
            }
            self.drain();
        }
        self.now = t.max(self.now);
        Ok(())
    }

    /// The device's monotonic clock now.
    fn instant(&self) -> Instant {
        self.device.as_ref().map_or(Instant::ZERO, |d| {
            Instant::from_micros(scale(self.now - d.boot_t, self.device_drift_ppm).max(0) as u64)
        })
    }

    /// True time at which the device's next timer fires.
    fn device_timer(&self) -> Option<i64> {
        let dev = self.device.as_ref()?;
        let due = dev.ctl.poll_timeout()?.as_micros() as i64;
        // Invert the oscillator, then step forward until the device really sees `due`.
        let mut t = dev.boot_t + (due as f64 / (1.0 + self.device_drift_ppm * 1e-6)).floor() as i64;
        while scale(t - dev.boot_t, self.device_drift_ppm) < due {
            t += 1;
        }
        Some(t.max(self.now))
    }

    fn schedule(&mut self, at: i64, d: Delivery) {
        self.seq += 1;
        self.pending.insert(self.seq, d);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn emit(&mut self, mut fields: Value) {
        let t_ms = (self.now as f64 / 1000.0).round() / 1000.0;
        if let Value::Object(map) = &mut fields {
            let mut ordered = serde_json::Map::new();
            ordered.insert("t".into(), json!(t_ms));
            ordered.append(map);
            fields = Value::Object(ordered);
        }
        self.out.push(fields);
    }

    /// Carries out one step at the current time (after [`advance_to`](Self::advance_to)).
    pub fn apply(&mut self, step: &Step, notes: &mut Notes) {
        use scenario::Action as A;
        match &step.action {
            A::Boot => self.boot(),
            A::PowerOff => self.device = None,
            A::Network(up) => {
                self.network_up = *up;
                let now = self.instant();
                if let Some(dev) = &mut self.device {
                    dev.ctl.handle_network(*up, now);
                }
            }
            A::Ntp(change) => {
                let c = change;
                if let Some(s) = self.ntp.get_mut(c.server) {
                    if let Some(v) = c.reachable {
                        s.reachable = v;
                    }
                    if let Some(v) = c.offset_s {
                        s.offset_s = v;
                    }
                    if let Some(v) = c.delay_ms {
                        s.delay_ms = v;
                    }
                    if let Some(v) = c.stratum {
                        s.stratum = v;
                    }
                    if let Some(v) = c.leap {
                        s.leap = v;
                    }
                    if let Some(k) = &c.kiss {
                        s.kiss = (!k.is_empty()).then(|| k.clone());
                    }
                } else {
                    notes.0.push(format!(
                        "line {}: there is no NTP server {}; the step does nothing",
                        step.line, c.server
                    ));
                }
            }
            A::Backend(change) => {
                let c = change;
                if let Some(v) = c.reachable {
                    self.backend.reachable = v;
                }
                if let Some(v) = c.delay_ms {
                    self.backend.delay_ms = v;
                }
                if let Some(v) = c.offset_s {
                    self.backend.offset_s = v;
                }
            }
            A::PhoneTime(utc) => {
                let now = self.instant();
                match &mut self.device {
                    Some(dev) => dev.ctl.handle_phone_time(*utc, now),
                    None => notes.0.push(format!(
                        "line {}: `phone_time` while the device is off does nothing",
                        step.line
                    )),
                }
            }
            A::Card(uid) => {
                let now = self.instant();
                let list = self.list.as_deref().and_then(|b| AllowList::open(b).ok());
                match &mut self.device {
                    Some(dev) => dev.ctl.handle_card(uid, list.as_ref(), now),
                    None => notes.0.push(format!(
                        "line {}: `card` while the device is off does nothing",
                        step.line
                    )),
                }
            }
            A::Keys(keys) => {
                let now = self.instant();
                let list = self.list.as_deref().and_then(|b| AllowList::open(b).ok());
                match &mut self.device {
                    Some(dev) => {
                        for key in keys.bytes() {
                            dev.ctl.handle_key(key, list.as_ref(), now);
                        }
                    }
                    None => notes.0.push(format!(
                        "line {}: `keys` while the device is off does nothing",
                        step.line
                    )),
                }
            }
            A::Battery(mv) => self.battery_mv = (*mv).min(u32::from(u16::MAX)) as u16,
            A::End => {}
        }
        self.drain();
    }

    /// The events so far.
    pub fn events(&self) -> &[Value] {
        &self.out
    }

    /// True UTC now.
    pub fn true_utc(&self) -> UnixTime {
        self.start.offset_micros(self.now)
    }

    /// What the device's `get_wall_time()` says now, if it is on and its clock is valid.
    pub fn device_wall_time(&self) -> Option<chronolock_core::WallTime> {
        let now = self.instant();
        self.device.as_ref()?.ctl.wall_time(now)
    }

    fn boot(&mut self) {
        self.boots += 1;
        let persisted = self
            .flash
            .as_deref()
            .and_then(|b| Persisted::decode(b).ok())
            .unwrap_or_default();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let mut ctl = Controller::new(self.cfg.clone(), persisted, seed, Instant::ZERO);
        if self.setup_button {
            ctl.set_setup_mode(true);
        }
        for used in self.keypad_uses.values() {
            ctl.restore_keypad_use(*used);
        }
        // The list in flash: fully checked the first time a device sees it, opened after that.
        let opened = self.list.as_deref().map(|bytes| {
            let list = if self.list_checked {
                AllowList::open(bytes)
            } else {
                ctl.check_allowlist(bytes)
            };
            list.map(|l| l.info())
        });
        match opened {
            Some(Ok(info)) => {
                ctl.allowlist_installed(info, Instant::ZERO);
                self.list_checked = true;
            }
            Some(Err(e)) => {
                self.emit(json!({"event": "list_rejected", "reason": e.as_str()}));
                self.list = None;
            }
            None => {}
        }
        self.device = Some(Device {
            ctl,
            boot_t: self.now,
            boot: self.boots,
        });
        self.drain();
        if self.network_up {
            if let Some(dev) = &mut self.device {
                dev.ctl.handle_network(true, Instant::ZERO);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.instant();
        let online = self.network_up;
        let Some(dev) = &mut self.device else { return };
        match d {
            Delivery::NtpReply {
                boot,
                server,
                packet,
            } if boot == dev.boot && online => {
                dev.ctl.handle_ntp_response(server, &packet, now);
            }
            Delivery::BackendReply { boot, time } if boot == dev.boot && online => {
                dev.ctl.handle_backend_time(&time, now);
            }
            Delivery::BackendFailed { boot } if boot == dev.boot => {
                dev.ctl.handle_backend_failed(now)
            }
            Delivery::Conditional {
                boot,
                request,
                granted,
            } if boot == dev.boot => match granted {
                Some(granted) if online => dev.ctl.handle_conditional_answer(request, granted, now),
                _ => dev.ctl.handle_conditional_failed(request, now),
            },
            Delivery::RtcTick { boot } if boot == dev.boot => {
                let reading = self
                    .rtc
                    .as_ref()
                    .map_or(RtcReading::Absent, |r| r.read(self.now).at_tick());
                dev.ctl.handle_rtc_read(reading, now);
            }
            _ => {}
        }
    }

    /// Carries out every action the controller has queued.
    fn drain(&mut self) {
        while let Some(action) = self.device.as_mut().and_then(|d| d.ctl.poll_action()) {
            let now = self.instant();
            match action {
                Action::ReadRtc { at_tick } => {
                    let tick = at_tick
                        .then(|| self.rtc.as_ref().and_then(|r| r.next_tick(self.now)))
                        .flatten();
                    match (tick, &mut self.device) {
                        (Some(at), Some(dev)) => {
                            let boot = dev.boot;
                            self.schedule(at, Delivery::RtcTick { boot });
                        }
                        (None, Some(dev)) => {
                            let reading = self
                                .rtc
                                .as_ref()
                                .map_or(RtcReading::Absent, |r| r.read(self.now));
                            dev.ctl.handle_rtc_read(reading, now);
                        }
                        (_, None) => {}
                    }
                }
                Action::WriteRtc { utc } => {
                    if let Some(rtc) = &mut self.rtc {
                        rtc.base_t = self.now;
                        rtc.base_utc = Some(utc.as_micros());
                        rtc.osf = false;
                    }
                    self.emit(json!({"event": "rtc_write", "utc": scenario::format_utc(utc)}));
                }
                Action::SendNtp { server, packet } => self.send_ntp(server, packet),
                Action::SyncBackend { nonce } => self.send_backend(nonce),
                Action::PersistKeypadUse(used) => {
                    self.keypad_uses.insert(used.user.to_vec(), used);
                }
                Action::Unlock { ms } => self.emit(json!({"event": "unlock", "ms": ms})),
                Action::Feedback(pattern) => {
                    self.emit(json!({"event": "feedback", "pattern": pattern.as_str()}))
                }
                Action::AskBackend {
                    request,
                    credential,
                } => self.ask_backend(request, credential.to_string()),
                Action::ReadBattery => {
                    let mv = self.battery_mv;
                    if let Some(dev) = &mut self.device {
                        dev.ctl.handle_battery(mv, now);
                    }
                }
                Action::Persist(p) => self.flash = Some(p.encode().to_vec()),
                Action::Event(e) => self.emit_event(e),
            }
        }
    }

    fn send_ntp(&mut self, server: u8, request: [u8; PACKET_LEN]) {
        let Some(spec) = self.ntp.get(usize::from(server)).cloned() else {
            return;
        };
        let boot = self.device.as_ref().map_or(0, |d| d.boot);
        if !self.network_up || !spec.reachable {
            return;
        }
        let delay = (spec.delay_ms * 1000.0).round() as i64;
        let arrive = self.now + delay / 2;
        let server_time = self
            .start
            .offset_micros(arrive + (spec.offset_s * 1e6).round() as i64);
        let mut reply = ServerReply::synced(server_time, server_time.offset_micros(10));
        reply.stratum = spec.stratum;
        reply.leap = spec.leap;
        if let Some(kiss) = &spec.kiss {
            reply.stratum = 0;
            let mut code = [b' '; 4];
            code[..kiss.len()].copy_from_slice(kiss.as_bytes());
            reply.reference_id = code;
        }
        let packet = reply.encode(&request);
        self.schedule(
            self.now + delay + 10,
            Delivery::NtpReply {
                boot,
                server,
                packet,
            },
        );
    }

    fn send_backend(&mut self, nonce: [u8; NONCE_LEN]) {
        let boot = self.device.as_ref().map_or(0, |d| d.boot);
        if !self.network_up {
            return;
        }
        let delay = (self.backend.delay_ms * 1000.0).round() as i64;
        if !self.backend.reachable {
            // Connection refused after the round trip of a TCP handshake.
            self.schedule(self.now + delay, Delivery::BackendFailed { boot });
            return;
        }
        let arrive = self.now + delay / 2;
        let receive = self
            .start
            .offset_micros(arrive + (self.backend.offset_s * 1e6).round() as i64);
        let time = BackendTime {
            nonce,
            receive,
            transmit: receive.offset_micros(100),
        };
        self.schedule(
            self.now + delay + 100,
            Delivery::BackendReply { boot, time },
        );
    }

    /// The backend answers a CONDITIONAL check after its round trip: granted if the credential
    /// is in `conditional_grant`; unreachable, the connection fails.
    fn ask_backend(&mut self, request: u32, credential: String) {
        let boot = self.device.as_ref().map_or(0, |d| d.boot);
        if !self.network_up {
            return;
        }
        let delay = (self.backend.delay_ms * 1000.0).round() as i64;
        let granted = self.backend.reachable.then(|| {
            self.backend
                .conditional_grant
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&credential))
        });
        self.schedule(
            self.now + delay,
            Delivery::Conditional {
                boot,
                request,
                granted,
            },
        );
    }

    fn emit_event(&mut self, e: Event) {
        self.emit(event_json(&e));
    }
}

/// An event in the scenario contract's vocabulary (without its time).
pub fn event_json(e: &Event) -> Value {
    match *e {
        Event::Clock {
            valid, source, utc, ..
        } => json!({
            "event": "clock",
            "valid": valid,
            "source": source.map(|s| s.as_str()),
            "utc": utc.map(scenario::format_utc),
        }),
        Event::Decision {
            credential,
            decision,
        } => json!({
            "event": "decision",
            "credential": credential.to_string(),
            "decision": decision.as_str(),
        }),
        Event::Notify { credential } => json!({
            "event": "notify",
            "kind": "emergency",
            "credential": credential.to_string(),
        }),
        Event::Report { mv, basis } => json!({
            "event": "report",
            "kind": "battery",
            "mv": mv,
            "basis": basis.as_str(),
        }),
        Event::ActionsDropped { count } => json!({
            "event": "actions_dropped",
            "count": count,
        }),
        Event::TimeRejected {
            source,
            server,
            reason,
        } => json!({
            "event": "time_rejected",
            "source": source.as_str(),
            "server": server,
            "reason": reason.as_str(),
        }),
    }
}
