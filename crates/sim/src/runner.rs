//! The scripted simulator: one door in a simulated world, in virtual time.
//!
//! The door is the one that ships ([`chronolock_device::door::Door`]) over an in-memory NOR
//! flash, paired before the scenario starts with a backend that answers with the server's own
//! device-protocol logic (`chronolock-backend`): backend time and CONDITIONAL checks cross the
//! wire as protocol bytes, signed and MACed as on a wall.
//!
//! Everything the controller could observe is simulated honestly and deterministically: the
//! device's oscillator and the RTC drift as configured, NTP answers arrive after their delay
//! carrying their server's (possibly wrong) time, a power cycle loses RAM but keeps flash and the
//! RTC, and every random choice comes from the scenario's seed. Virtual time advances from event
//! to event; nothing sleeps, so a month-long scenario runs in milliseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chronolock_backend::memory::MemoryDevices;
use chronolock_core::ntp::{ServerReply, PACKET_LEN};
use chronolock_core::protocol::Enrolled;
use chronolock_core::{Config, Event, Instant, Persisted, RtcReading, UnixTime};
use chronolock_device::door::{
    BootConfig, Door, Exchange, Failure, Layout, Notice, Request, Store, BODY_MAX,
};
use chronolock_device::flash::{block_on, MemFlash};
use chronolock_device::setup::SetupForm;
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value};

use crate::card::SoftCard;
use crate::scenario::{self, NtpSpec, Scenario, Step};

/// Most internal events handled at one virtual instant before the run is declared stuck.
const MAX_EVENTS_PER_INSTANT: u32 = 10_000;

/// The scenario's door at its backend: paired before the scenario starts, with this id and key.
const DOOR_ID: u64 = 1;
pub(crate) const DEVICE_KEY: [u8; 32] = *b"chronolock scenario device key!!";

/// Room for events the backend has not acknowledged yet (about 7,000 of them).
const OUTBOX_BYTES: u32 = 256 * 1024;

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
    /// The backend's answer to an exchange reaches the door (if it is still online).
    Answer {
        boot: u64,
        exchange: Exchange,
        body: Vec<u8>,
    },
    /// The exchange failed: the connection was refused.
    Failed {
        boot: u64,
        exchange: Exchange,
        failure: Failure,
    },
    RtcTick {
        boot: u64,
    },
    /// The backend's wait for a watch ends: it answers "nothing new" if it still holds it.
    WatchTimeout {
        exchange: Exchange,
    },
}

/// How long the simulated backend holds a watch before it answers "nothing new" (as the
/// server does).
const WATCH_HOLD_US: i64 = 25_000_000;

/// A watch the backend holds.
struct ParkedWatch {
    boot: u64,
    exchange: Exchange,
    watch: chronolock_backend::Watch,
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

/// The door that ships, over an in-memory NOR flash.
type SimDoor = Door<MemFlash>;

struct Device {
    door: SimDoor,
    boot_t: i64,
    boot: u64,
}

fn sync_interval_s() -> u32 {
    Config::default()
        .backend_sync_interval
        .as_secs()
        .try_into()
        .unwrap_or(u32::MAX)
}

/// Elapsed true microseconds as counted by an oscillator `ppm` fast.
fn scale(us: i64, ppm: f64) -> i64 {
    (us as f64 * (1.0 + ppm * 1e-6)).round() as i64
}

/// The door's flash before its first boot: paired with the scenario's backend, the world's
/// persisted record, and the world's list in the active slot.
fn provision(scenario: &Scenario) -> Store<MemFlash> {
    let list = scenario.list.as_deref();
    let slot = list
        .map_or(0, |l| l.len() as u32)
        .next_multiple_of(4096)
        .max(64 * 1024);
    let layout = Layout::packed(slot, OUTBOX_BYTES);
    let flash = MemFlash::new(layout.end() as usize);
    // The layout is this function's own: a fresh flash of its size always opens.
    let mut store = Store::new(flash, layout).expect("a packed layout fits its own flash");
    let identity = Enrolled {
        door_id: DOOR_ID,
        device_key: DEVICE_KEY,
        site_key: scenario::test_site_key().verifying_key().to_bytes(),
        sync_interval_s: sync_interval_s(),
    };
    let written = store.set_identity(&identity).and_then(|()| {
        if scenario.world.provisioned {
            let p = Persisted {
                provisioned: true,
                ..Persisted::default()
            };
            store.set_persisted(&p)?;
        }
        if let Some(bytes) = list {
            let mut d = store.begin_list(bytes.len() as u32)?;
            store.write_list(&mut d, bytes)?;
            store.commit_list(d)?;
        }
        Ok(())
    });
    written.expect("fresh in-memory flash takes the provisioning");
    store
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
    /// The backend's store: the door paired, the CONDITIONAL credentials it lets in.
    devices: MemoryDevices,
    site: SigningKey,
    rtc: Option<SimRtc>,
    device: Option<Device>,
    /// The door's flash and list RAM while it is off.
    off: Option<Store<MemFlash>>,
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
    /// Whether the door stands open (the contact's state, kept across power cuts).
    door_open: bool,
    /// Watches the backend holds until something for the door changes.
    watches: Vec<ParkedWatch>,
    /// The secure card in the reader's field, during a `secure_card` step.
    card: Option<SoftCard>,
    /// The site's card master key (genuine cards are personalised with it).
    card_master_key: [u8; 16],
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
        cfg.door_contact = w.door.contact;
        cfg.held_open = std::time::Duration::from_secs_f64(w.door.held_open_s);
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
        Sim {
            start: w.start_utc.0,
            now: 0,
            device_drift_ppm: w.device_drift_ppm,
            network_up: w.network,
            ntp,
            backend: w.backend.clone(),
            devices: {
                let devices = MemoryDevices::new(sync_interval_s());
                devices.paired(DOOR_ID as i64, DEVICE_KEY);
                devices.set_grants(w.backend.conditional_grant.clone());
                if w.backend.lockdown {
                    devices.set_lockdown(true, w.start_utc.0.secs(), &scenario::test_site_key());
                }
                devices
            },
            site: scenario::test_site_key(),
            rtc,
            device: None,
            off: Some(provision(scenario)),
            battery_mv: w.battery_mv.min(u32::from(u16::MAX)) as u16,
            cfg,
            setup_button: w.setup_button,
            rng: ChaCha8Rng::seed_from_u64(w.seed),
            boots: 0,
            queue: BinaryHeap::new(),
            pending: std::collections::HashMap::new(),
            seq: 0,
            out: Vec::new(),
            door_open: false,
            watches: Vec::new(),
            card: None,
            card_master_key: w.card_master_key(),
        }
    }

    /// Runs a whole scenario and returns its events, with notes on what was not simulated.
    pub fn run(scenario: &Scenario) -> Result<(Vec<Value>, Notes), Stuck> {
        let mut sim = Sim::new(scenario);
        let mut notes = Notes::default();
        let credentials = scenario.steps.iter().any(|s| {
            matches!(
                s.action,
                scenario::Action::Card(_)
                    | scenario::Action::Keys(_)
                    | scenario::Action::SecureCard { .. }
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
                    dev.door.handle_timeout(now);
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
        let due = dev.door.poll_timeout()?.as_micros() as i64;
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
        let now = self.instant();
        let off = |what: &str| {
            format!(
                "line {}: `{what}` while the device is off does nothing",
                step.line
            )
        };
        match &step.action {
            A::Boot => self.boot(),
            A::PowerOff => self.power_off(),
            A::Network(up) => {
                self.network_up = *up;
                if let Some(dev) = &mut self.device {
                    dev.door.handle_network(*up, now);
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
                if c.reachable == Some(false) {
                    // The connections it held break.
                    for w in std::mem::take(&mut self.watches) {
                        let (boot, exchange) = (w.boot, w.exchange);
                        let failure = Failure::Unreachable;
                        self.schedule(
                            self.now,
                            Delivery::Failed {
                                boot,
                                exchange,
                                failure,
                            },
                        );
                    }
                }
                if let Some(on) = c.lockdown {
                    let unix = self.true_utc().secs();
                    self.devices.set_lockdown(on, unix, &self.site);
                    self.wake_watches();
                }
            }
            A::PhoneTime(utc) => match &mut self.device {
                // The phone submits the door's setup page with its time and nothing else.
                Some(dev) => {
                    let form = SetupForm {
                        phone_time_ms: u64::try_from(utc.as_micros().div_euclid(1000)).unwrap_or(0),
                        ..SetupForm::default()
                    };
                    dev.door.handle_setup(&form, now);
                }
                None => notes.0.push(off("phone_time")),
            },
            A::Card(uid) => match &mut self.device {
                Some(dev) => dev.door.handle_card(uid, now),
                None => notes.0.push(off("card")),
            },
            A::SecureCard { uid, clone } => match &mut self.device {
                Some(dev) => {
                    let uid: [u8; chronolock_core::card::UID_LEN] =
                        uid.as_slice().try_into().unwrap_or_default();
                    let seed = self.rng.next_u64();
                    // The card in the field answers the door's APDUs (at once: the runner's
                    // reader is ideal) until the step is over.
                    self.card = Some(if *clone {
                        SoftCard::clone_of(uid, seed)
                    } else {
                        SoftCard::genuine(uid, &self.card_master_key, seed)
                    });
                    dev.door.handle_secure_card(&uid, now);
                    self.drain();
                    self.card = None;
                }
                None => notes.0.push(off("secure_card")),
            },
            A::Keys(keys) => match &mut self.device {
                Some(dev) => dev.door.handle_keys(keys.as_bytes(), now),
                None => notes.0.push(off("keys")),
            },
            A::Battery(mv) => self.battery_mv = (*mv).min(u32::from(u16::MAX)) as u16,
            A::Door(open) => {
                // The door moves whether or not the controller is on to see it.
                self.door_open = *open;
                if let Some(dev) = &mut self.device {
                    dev.door.handle_door(*open, now);
                }
            }
            A::Rex => match &mut self.device {
                Some(dev) => dev.door.handle_rex(now),
                None => notes.0.push(off("rex")),
            },
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
        self.device.as_ref()?.door.controller().wall_time(now)
    }

    fn boot(&mut self) {
        if self.device.is_some() {
            // Booting a running door resets it: RAM is lost, flash kept.
            self.power_off();
        }
        let Some(store) = self.off.take() else {
            return;
        };
        self.boots += 1;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let config = BootConfig {
            core: self.cfg.clone(),
            sync_interval_s: None,
            setup_button: self.setup_button,
            firmware: None,
        };
        let door = Door::boot(store, config, seed, Instant::ZERO);
        self.device = Some(Device {
            door,
            boot_t: self.now,
            boot: self.boots,
        });
        self.drain();
        // The contact is read at boot.
        let open = self.door_open;
        if let Some(dev) = &mut self.device {
            dev.door.handle_door(open, Instant::ZERO);
        }
        self.drain();
        if self.network_up {
            if let Some(dev) = &mut self.device {
                dev.door.handle_network(true, Instant::ZERO);
            }
        }
    }

    /// Power is cut: RAM is lost; the flash keeps what the door stored.
    fn power_off(&mut self) {
        if let Some(dev) = self.device.take() {
            self.off = Some(dev.door.into_store());
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.instant();
        let online = self.network_up;
        let Some(dev) = &mut self.device else { return };
        let door = &mut dev.door;
        match d {
            Delivery::NtpReply {
                boot,
                server,
                packet,
            } if boot == dev.boot && online => {
                door.handle_ntp_response(server, &packet, now);
            }
            Delivery::Answer {
                boot,
                exchange,
                body,
            } if boot == dev.boot => {
                if online {
                    door.handle_answer(exchange, &body, now);
                    door.handle_answer_end(exchange, now);
                } else if let Exchange::Check { .. } = exchange {
                    door.handle_exchange_failed(exchange, Failure::Unreachable, now);
                }
            }
            Delivery::Failed {
                boot,
                exchange,
                failure,
            } if boot == dev.boot => door.handle_exchange_failed(exchange, failure, now),
            Delivery::WatchTimeout { exchange } => {
                if let Some(i) = self.watches.iter().position(|w| w.exchange == exchange) {
                    let w = self.watches.swap_remove(i);
                    let body = w.watch.answer(false);
                    if w.boot == dev.boot && online {
                        door.handle_answer(exchange, &body, now);
                        door.handle_answer_end(exchange, now);
                    }
                }
            }
            Delivery::RtcTick { boot } if boot == dev.boot => {
                let reading = self
                    .rtc
                    .as_ref()
                    .map_or(RtcReading::Absent, |r| r.read(self.now).at_tick());
                door.handle_rtc_read(reading, now);
            }
            _ => {}
        }
    }

    /// Carries out every request the door has queued.
    fn drain(&mut self) {
        while let Some(request) = self.device.as_mut().and_then(|d| d.door.poll_request()) {
            let now = self.instant();
            match request {
                Request::ReadRtc { at_tick } => {
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
                            dev.door.handle_rtc_read(reading, now);
                        }
                        (_, None) => {}
                    }
                }
                Request::WriteRtc { utc } => {
                    if let Some(rtc) = &mut self.rtc {
                        rtc.base_t = self.now;
                        rtc.base_utc = Some(utc.as_micros());
                        rtc.osf = false;
                    }
                }
                Request::SendNtp { server, packet } => self.send_ntp(server, packet),
                Request::Post(exchange) => self.post(exchange),
                Request::Unlock { ms } => self.emit(json!({"event": "unlock", "ms": ms})),
                Request::Store => {
                    if let Some(d) = self.device.as_mut() {
                        d.door.store_pending();
                    }
                }
                Request::Feedback(pattern) => {
                    self.emit(json!({"event": "feedback", "pattern": pattern.as_str()}))
                }
                Request::ReadBattery => {
                    let mv = self.battery_mv;
                    if let Some(dev) = &mut self.device {
                        dev.door.handle_battery(mv, now);
                    }
                }
                // The scenario's door runs no firmware updates (no app slots).
                Request::BootFirmware { .. } => {}
                // The buzzer: the contract's `alarm` events say what it sounds for.
                Request::Alarm { .. } => {}
                Request::Notice(notice) => self.notice(notice),
                Request::CardApdu(apdu) => {
                    if let Some(dev) = &mut self.device {
                        crate::card::carry(&mut dev.door, self.card.as_mut(), &apdu, now);
                    }
                }
            }
        }
    }

    /// What the door reports that the scenario contract has an event for.
    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Event { event, .. } => self.emit_event(event),
            Notice::RtcWritten { utc, .. } => {
                self.emit(json!({"event": "rtc_write", "utc": scenario::format_utc(utc)}))
            }
            Notice::ListRejected(reason) => {
                self.emit(json!({"event": "list_rejected", "reason": reason.to_string()}))
            }
            _ => {}
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

    /// The door POSTs an exchange. The backend, reachable, answers it with the server's own
    /// device-protocol logic, its clock `offset_s` off: a sync after the round trip (the time
    /// read halfway), a CONDITIONAL check after the round trip. Unreachable, the connection is
    /// refused after the round trip.
    fn post(&mut self, exchange: Exchange) {
        if !self.network_up {
            return;
        }
        let now = self.instant();
        let Some(dev) = &mut self.device else { return };
        let boot = dev.boot;
        let mut body = vec![0u8; BODY_MAX];
        let Some(n) = dev.door.write_body(exchange, &mut body, now) else {
            return;
        };
        body.truncate(n);
        let delay = (self.backend.delay_ms * 1000.0).round() as i64;
        if !self.backend.reachable {
            let failure = Failure::Unreachable;
            return self.schedule(
                self.now + delay,
                Delivery::Failed {
                    boot,
                    exchange,
                    failure,
                },
            );
        }
        let receive_us = self
            .start
            .offset_micros(self.now + delay / 2 + (self.backend.offset_s * 1e6).round() as i64)
            .as_micros();
        if let Exchange::Watch { .. } = exchange {
            return self.watch(boot, exchange, &body, delay);
        }
        let backend = &self.devices;
        let (answer, at) = match exchange {
            Exchange::Watch { .. } => return,
            Exchange::Sync { .. } => {
                let answer =
                    chronolock_backend::sync(backend, &self.site, &body, receive_us, || {
                        receive_us + 100
                    });
                (block_on(answer), self.now + delay + 100)
            }
            Exchange::Check { .. } => {
                let unix = receive_us.div_euclid(1_000_000);
                let answer = chronolock_backend::check(backend, &body, unix);
                (block_on(answer), self.now + delay)
            }
            Exchange::Enrol { .. } => {
                let public = self.site.verifying_key().to_bytes();
                let unix = receive_us.div_euclid(1_000_000);
                let answer = chronolock_backend::enrol(backend, &public, &body, unix, [0; 32]);
                (
                    block_on(answer).map(|r| r.map(|(a, _)| a)),
                    self.now + delay,
                )
            }
        };
        let delivery = match answer {
            Ok(Ok(body)) => Delivery::Answer {
                boot,
                exchange,
                body,
            },
            Ok(Err(e)) => Delivery::Failed {
                boot,
                exchange,
                failure: Failure::Refused { status: e.status },
            },
            Err(_) => Delivery::Failed {
                boot,
                exchange,
                failure: Failure::Unreachable,
            },
        };
        self.schedule(at, delivery);
    }

    /// The backend takes a watch: answered at once if it holds something new for the door,
    /// else held until it does (a lockdown step) or its wait ends.
    fn watch(&mut self, boot: u64, exchange: Exchange, body: &[u8], delay: i64) {
        let opened = block_on(chronolock_backend::open_watch(&self.devices, body));
        let watch = match opened {
            Ok(Ok(w)) => w,
            refused => {
                let failure = match refused {
                    Ok(Err(e)) => Failure::Refused { status: e.status },
                    _ => Failure::Unreachable,
                };
                return self.schedule(
                    self.now + delay,
                    Delivery::Failed {
                        boot,
                        exchange,
                        failure,
                    },
                );
            }
        };
        if matches!(block_on(watch.due(&self.devices)), Ok(Ok(true))) {
            let body = watch.answer(true);
            return self.schedule(
                self.now + delay,
                Delivery::Answer {
                    boot,
                    exchange,
                    body,
                },
            );
        }
        self.watches.push(ParkedWatch {
            boot,
            exchange,
            watch,
        });
        self.schedule(
            self.now + delay / 2 + WATCH_HOLD_US,
            Delivery::WatchTimeout { exchange },
        );
    }

    /// Something changed on the backend: every watch it holds that it concerns is answered.
    fn wake_watches(&mut self) {
        let half = (self.backend.delay_ms * 500.0).round() as i64;
        let mut held = Vec::new();
        for w in std::mem::take(&mut self.watches) {
            if matches!(block_on(w.watch.due(&self.devices)), Ok(Ok(true))) {
                let body = w.watch.answer(true);
                let (boot, exchange) = (w.boot, w.exchange);
                self.schedule(
                    self.now + half,
                    Delivery::Answer {
                        boot,
                        exchange,
                        body,
                    },
                );
            } else {
                held.push(w);
            }
        }
        self.watches = held;
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
        Event::Door { open } => json!({"event": "door", "open": open}),
        Event::Rex => json!({"event": "rex"}),
        Event::Alarm { kind } => json!({"event": "alarm", "kind": kind.as_str()}),
        Event::AlarmCleared { kind } => json!({"event": "alarm_cleared", "kind": kind.as_str()}),
        Event::Lockdown { on } => json!({"event": "lockdown", "on": on}),
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
