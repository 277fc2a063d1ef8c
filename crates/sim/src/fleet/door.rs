//! One door of the fleet from the first boot to the end of the run: the shared door that ships
//! ([`chronolock_device::door::Door`], with the real core controller, flash layout, outbox and
//! device protocol), its hardware (oscillator, RTC, NOR flash in memory, network link,
//! battery), its share of the backend (the server's own device-protocol logic,
//! [`chronolock_backend`], over this door's records in memory), and the checks made after every
//! step.
//!
//! The door and the backend exchange real protocol bytes: pairing with a one-time code at the
//! first boot, syncs (events up, sealed time, acknowledgements and lists down) and CONDITIONAL
//! checks. Flash is the door's own: a power cut keeps exactly what the door wrote to it, and a
//! torn write (the power failing during a flash operation) leaves what NOR flash would.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chronolock_backend::{DeviceError, Devices, DoorList, Pairing, Watch};
use chronolock_core::access::Decision;
use chronolock_core::allowlist::{keypad_key, AccessType, ListError};
use chronolock_core::controller::Credential;
use chronolock_core::keypad::KeypadUse;
use chronolock_core::lockdown::LockdownOrder;
use chronolock_core::ntp::{ServerReply, PACKET_LEN};
use chronolock_core::otp::{self, OtpParams};
use chronolock_core::protocol::{
    pairing_code_hash, CheckRequest, DeviceStatus, DoorPosition, EventBody, WireEvent,
    SYNC_RESPONSE_LEN,
};
use chronolock_core::report::Basis;
use chronolock_core::{Config, Event, Instant, RtcReading, UnixTime};
use chronolock_device::door::{
    BootConfig, Door, Exchange, ExchangeError, Failure, Layout, ListRejection, Notice, Request,
    Settings, Store, BODY_MAX,
};
use chronolock_device::flash::{block_on, MemFlash};
use jiff::civil::Time;
use jiff::Timestamp;

use super::position::{PositionCheck, LEARN_QUIET_US, LEARN_WITHIN_US};
use super::reference::{self, Want};
use super::rng::Rng;
use super::world::{
    CredKey, Intervals, RefEntry, Site, World, DAY, HOUR, LOCAL_EDGES_MIN, MIN, SEC,
};
use super::{FleetConfig, Plant, Violation};

/// The door's flash: two 64 KiB list slots, the settings map, and a 256 KiB outbox (about 4,000
/// events: the longest backend outage the fault model draws, 36 h, at the busiest door, fits
/// with room to spare).
const LAYOUT: Layout = Layout::packed(64 * 1024, 256 * 1024);
/// Most steps at one instant before the door is declared stuck.
const MAX_STEPS_PER_INSTANT: u32 = 10_000;
/// Events emitted this close to the end may still be waiting for the next sync.
const IN_FLIGHT_AT_END: i64 = 15 * MIN;
/// Slack on the clock's error bound for the simulator's microsecond rounding.
const BOUND_SLACK_US: i64 = 5;
/// How close a misled clock's error must be to a lie the door was told for the lie to explain it.
const LIE_MATCH_US: i64 = SEC;
/// How long the door's HTTP client waits for an answer before it gives up.
const HTTP_TIMEOUT: i64 = 15 * SEC;
/// The pairing code each door is installed with.
const PAIRING_CODE: &str = "FLEE-TDOO-RSIM";
/// The backend's URL in the door's settings (the fleet routes it to the in-memory backend).
const SERVER_URL: &str = "http://backend.fleet";
/// How long the backend holds a watch before it answers "nothing new" (as the server does).
const WATCH_HOLD: i64 = 25 * SEC;
/// Watches the backend holds for one door at most (the door keeps one; a broken connection's
/// may linger until its wait ends).
const WATCHES_HELD_MAX: usize = 4;

/// Figures of one door's run, summed into the fleet report.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub decisions: u64,
    pub grants: u64,
    pub keypad_decisions: u64,
    pub keypad_grants: u64,
    pub unlocks: u64,
    pub unlocks_opened_first: u64,
    pub events_emitted: u64,
    pub events_delivered: u64,
    pub resent_events: u64,
    pub reports: u64,
    pub uptime_reports: u64,
    pub duplicate_reports: u64,
    pub missed_reports: u64,
    pub wrong_grants: u64,
    pub misled_grants: u64,
    pub decision_mismatches: u64,
    pub intent_mismatches: u64,
    pub intent_checks: u64,
    pub intent_checks_across_dst: u64,
    pub lost_events: u64,
    pub clock_bound_violations: u64,
    pub misled_clock_steps: u64,
    pub unjudged_decisions: u64,
    pub stale_list_decisions: u64,
    pub unsynced_grants_denied_at_true_time: u64,
    pub boots: u64,
    pub syncs: u64,
    pub list_installs: u64,
    pub list_resumes: u64,
    pub max_outbox: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub misled_examples: Vec<Violation>,
    /// Keypad grants whose code use was in flash when the lock opened.
    pub keypad_uses_kept_first: u64,
    pub rex_presses: u64,
    pub watches_held: u64,
    pub watches_woken: u64,
    pub lockdown_denials: u64,
    pub emergency_grants_in_lockdown: u64,
    /// Genuine secure cards presented to the door's PN532, and how many were let in.
    pub secure_presentations: u64,
    pub secure_grants: u64,
    /// Copies of a secure card's UID presented (on the PN532 or a UID-only reader), and how
    /// many were refused `DENIED_CARD_AUTH` (the rest: before a list, `DENIED_UNKNOWN`).
    pub clones_presented: u64,
    pub clones_refused: u64,
    pub position: super::position::PositionTally,
}

/// What a keypad user typed after the user code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Typed {
    /// The TOTP code of this time step (by true time).
    Totp(u64),
    /// The HOTP code of this counter.
    Hotp(u64),
    /// A wrong code.
    Wrong(u32),
}

/// An event as emitted, and as the backend must store it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    t: i64,
    body: EventBody,
}

#[derive(Clone, Debug)]
enum Ev {
    Card(Vec<u8>),
    /// A keypad user types an entry.
    Keypad(usize),
    PowerCut {
        until: i64,
    },
    Reboot,
    PowerOn,
    Network(bool),
    Drift(i64),
    Battery(u16),
    ReportProbe {
        day: i64,
    },
    FaultEnd,
    NtpReply {
        boot: u64,
        server: u8,
        packet: [u8; PACKET_LEN],
        lie: Option<i64>,
    },
    /// A request reaches the backend.
    Serve {
        boot: u64,
        exchange: Exchange,
        body: Vec<u8>,
    },
    /// Bytes of an answer reach the door (`end`: the last of them).
    Answer {
        boot: u64,
        exchange: Exchange,
        bytes: Vec<u8>,
        end: bool,
    },
    /// The door's HTTP client gives up on an exchange.
    Failed {
        boot: u64,
        exchange: Exchange,
        failure: Failure,
    },
    RtcTick {
        boot: u64,
    },
    /// The installer enters a fresh pairing code on the setup page (the answer to the first
    /// pairing was lost, and the code is spent).
    Reinstall,
    /// Someone presses the exit button.
    Rex,
    /// Someone opens the door (if closed) and holds it open this long.
    DoorOpen {
        hold: i64,
    },
    DoorClose,
    /// Something for this door changes on the backend (a list, a lockdown): the watches it
    /// holds are answered.
    BackendChange,
    /// The backend goes down: the connections it held break.
    BackendDown,
    /// The site's admin gives lockdown order `seq`.
    LockdownOrder {
        seq: u64,
    },
    /// Two seconds after lockdown order `seq`.
    LockdownDeadline {
        seq: u64,
    },
}

/// A watch the backend holds for the door.
struct HeldWatch {
    boot: u64,
    exchange: Exchange,
    watch: Watch,
    /// When the wait ends, and where in the queue the "nothing new" answer sent then is
    /// (taken out if the watch is answered or broken before).
    ends: i64,
    timeout_answer: (i64, u64),
}

/// The DS3231: a free-running counter from its last write, with its own drift.
#[derive(Clone, Debug)]
struct Rtc {
    base_t: i64,
    base_utc: i64,
    drift_ppb: i64,
    osf: bool,
}

impl Rtc {
    fn utc_at(&self, t: i64) -> i64 {
        let dt = t - self.base_t;
        self.base_utc + dt + mul_ppb(dt, self.drift_ppb)
    }

    fn read(&self, t: i64) -> RtcReading {
        RtcReading::from_registers(UnixTime::from_micros(self.utc_at(t)).civil(), self.osf)
    }

    /// True time of the next tick of the seconds register after `t`.
    fn next_tick(&self, t: i64) -> i64 {
        let target = (self.utc_at(t).div_euclid(SEC) + 1) * SEC;
        let mut at = t + inv_ppb(target - self.utc_at(t), self.drift_ppb);
        while self.utc_at(at) < target {
            at += 1;
        }
        at
    }
}

/// `dt` × `ppb` / 10⁹, rounded down.
fn mul_ppb(dt: i64, ppb: i64) -> i64 {
    (i128::from(dt) * i128::from(ppb)).div_euclid(1_000_000_000) as i64
}

/// About the true duration an oscillator `ppb` fast counts as `d`.
fn inv_ppb(d: i64, ppb: i64) -> i64 {
    (i128::from(d) * 1_000_000_000).div_euclid(1_000_000_000 + i128::from(ppb)) as i64
}

/// A site's list as the backend hands it out (shared between the site's doors).
#[derive(Clone, Debug)]
struct SharedList(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedList {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// This door's records at the backend, for the server's own device-protocol logic: its pairing
/// code, its device key once paired, the events it stored, and the site's lists by time.
struct SimBackend<'w> {
    site: &'w Site,
    world: &'w World,
    door_id: i64,
    plant: Option<Plant>,
    /// The site's signing key (expanded once: every sync answer is signed).
    signing: ed25519_dalek::SigningKey,
    /// The time the backend handles the current request at (virtual, since the start).
    now_t: Cell<i64>,
    pairing: RefCell<Option<Pairing>>,
    key: Cell<Option<[u8; 32]>>,
    /// The highest request counter accepted from the door.
    counter: Cell<u64>,
    stored: RefCell<BTreeMap<u64, Stored>>,
    resent: Cell<u64>,
    /// The credential and verdict of the last CONDITIONAL check answered.
    last_check: RefCell<Option<(CredKey, bool)>>,
    /// Verdicts of checks whose answers are on their way, by the door's request id.
    verdicts: RefCell<BTreeMap<u32, (CredKey, bool)>>,
    /// The door's contact and held-open time, as the site set them.
    position: DoorPosition,
    /// The site's list as compiled for this door (sealed to it, with the card master key),
    /// by generation.
    sealed: RefCell<Option<(u64, Arc<Vec<u8>>)>>,
}

impl SimBackend<'_> {
    /// The list of `v`'s generation for this door: sealed to its device key and carrying the
    /// site's card master key, as the server compiles it (once per generation).
    fn door_copy(&self, v: &super::world::ListVersion) -> Arc<Vec<u8>> {
        if let Some((g, bytes)) = &*self.sealed.borrow() {
            if *g == v.generation {
                return bytes.clone();
            }
        }
        let Some(device_key) = self.key.get() else {
            return v.bytes.clone();
        };
        let keys = chronolock_core::allowlist::CardMasterKeys {
            current: (self.site.card_master, 1),
            previous: None,
        };
        let bytes = chronolock_allowlist::compile_for_door(
            &v.source,
            v.generation,
            v.created_secs,
            &self.signing,
            Some(chronolock_core::protocol::list_key(&device_key)),
            Some(keys),
        )
        .map(Arc::new)
        // The site's list compiled once already: it compiles for a door too.
        .unwrap_or_else(|_| v.bytes.clone());
        *self.sealed.borrow_mut() = Some((v.generation, bytes.clone()));
        bytes
    }
}

impl Devices for SimBackend<'_> {
    type List = SharedList;

    async fn pending_pairings(&self, _now_unix: i64) -> Result<Vec<Pairing>, DeviceError> {
        Ok(self.pairing.borrow().iter().cloned().collect())
    }

    async fn claim_pairing(
        &self,
        pairing: &Pairing,
        device_key: [u8; 32],
        _now_unix: i64,
    ) -> Result<bool, DeviceError> {
        let mut p = self.pairing.borrow_mut();
        if p.as_ref() != Some(pairing) {
            return Ok(false);
        }
        *p = None;
        self.key.set(Some(device_key));
        self.counter.set(0);
        Ok(true)
    }

    async fn advance_counter(&self, door_id: i64, counter: u64) -> Result<bool, DeviceError> {
        // Planted: the backend forgets to refuse requests that are not newer.
        if self.plant == Some(Plant::BackendIgnoresCounter) {
            self.counter.set(counter);
            return Ok(true);
        }
        let newer = door_id == self.door_id && counter > self.counter.get();
        if newer {
            self.counter.set(counter);
        }
        Ok(newer)
    }

    async fn device_key(&self, door_id: i64) -> Result<Option<[u8; 32]>, DeviceError> {
        Ok(self.key.get().filter(|_| door_id == self.door_id))
    }

    async fn store_events(
        &self,
        _door_id: i64,
        events: &[WireEvent],
        _received_us: i64,
    ) -> Result<(), DeviceError> {
        let mut stored = self.stored.borrow_mut();
        for e in events {
            // Planted: the backend acknowledges every 50th event without keeping it.
            if self.plant == Some(Plant::BackendLosesEvent) && e.id % 50 == 0 {
                continue;
            }
            match stored.entry(e.id) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    self.resent.set(self.resent.get() + 1);
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Stored {
                        t: self.now_t.get(),
                        body: e.body.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn record_status(&self, _door_id: i64, _status: &DeviceStatus, _received_us: i64) {}

    async fn door_list(
        &self,
        _door_id: i64,
        device_generation: u64,
    ) -> Result<DoorList<SharedList>, DeviceError> {
        let current = self.site.version_at(self.now_t.get());
        Ok(DoorList {
            generation: current.map_or(0, |v| v.generation),
            sync_interval_s: 300,
            list: current
                .filter(|v| v.generation > device_generation)
                .map(|v| SharedList(self.door_copy(v))),
            // The fleet's doors keep the servers they were built with.
            ntp_servers: String::new(),
            lockdown: self.site.lockdown_at(self.now_t.get()).map(|c| c.order),
            position: Some(self.position),
        })
    }

    async fn conditional_granted(
        &self,
        _door_id: i64,
        credential: &Credential,
        _now_unix: i64,
    ) -> Result<bool, DeviceError> {
        let t = self.now_t.get();
        let key = cred_key(*credential);
        let secs = self.world.unix_secs(t);
        let granted = self
            .site
            .version_at(t)
            .and_then(|v| v.entries.get(&key))
            .is_some_and(|e| {
                e.access == AccessType::Conditional && reference::at_secs(e, secs) == Want::Ask
            });
        *self.last_check.borrow_mut() = Some((key, granted));
        Ok(granted)
    }
}

/// The running device: one door per boot, and its monotonic clock as a piecewise-linear
/// function of true time (the oscillator's rate changes with temperature).
struct Dev {
    door: Door<MemFlash>,
    boot: u64,
    seg_t: i64,
    seg_mono: i64,
    boot_t: i64,
    /// Since when (true time) the clock has been valid and within its bound, this boot.
    good_clock_since: Option<i64>,
    /// Booted with an RTC this door wrote from network time, running since: its clock counts
    /// as network-set, and one lying NTP server must not step it.
    trusted_rtc_boot: bool,
}

/// One door's whole run.
pub(crate) struct DoorRun<'w> {
    w: &'w World,
    cfg: &'w FleetConfig,
    door: u32,
    site: &'w Site,
    ctl_cfg: Config,
    rng: Rng,
    t: i64,
    queue: BTreeMap<(i64, u64), Ev>,
    seq: u64,
    dev: Option<Dev>,
    boots: u64,
    osc_ppb: i64,
    network_up: bool,
    mains_off_until: i64,
    rtc: Option<Rtc>,
    battery_mv: u16,
    /// The flash and list RAM while the door is off.
    flash: Option<MemFlash>,
    backend: SimBackend<'w>,
    // Checker state.
    emitted: BTreeMap<u64, Stored>,
    report_days: BTreeMap<i64, u32>,
    /// Errors of lies told to this boot's clock (NTP answers off by these).
    lies_seen: Vec<(i64, &'static str)>,
    /// The RTC's error when it last became wrong beyond its bounds (written by a misled
    /// clock, or its registers corrupted).
    rtc_taint: Option<i64>,
    /// The RTC holds time this door wrote (after a network sync: the fleet has no phone).
    rtc_written_by_door: bool,
    /// An attacker on this door's path answers for one NTP server with a lie until then:
    /// (server, offset µs, until).
    hijacked_ntp: Option<(u8, i64, i64)>,
    /// While handling a CONDITIONAL answer: the card and the backend's verdict.
    conditional_ctx: Option<(CredKey, bool)>,
    /// CONDITIONAL cards the door asked the backend about and has not decided yet: their
    /// decision follows the answer (or its absence), not the list installed when it comes.
    asked: Vec<CredKey>,
    /// While a keypad entry is being handled: the user code, what was typed, and whether it is
    /// a new code (not the last entry typed again).
    typing: Option<(Vec<u8>, Typed, bool)>,
    /// While a card or keys are being handled: the flash's erases and writes, and the events in
    /// the outbox, before the door saw them, to check that the unlock comes before any of its
    /// writes (but a keypad code's use, which must come before it).
    decided_at_changes: Option<(u64, usize)>,
    /// The secure card in the PN532's field while it is presented (it answers the door's
    /// APDUs), and whether the card being decided is a copy of a secure card's UID.
    card: Option<crate::card::SoftCard>,
    clone_presented: bool,
    /// Per keypad user: the next HOTP counter of the user's token, and the last entry typed.
    hotp_token: BTreeMap<usize, u64>,
    last_typed: BTreeMap<usize, Typed>,
    /// Codes that opened this door: none may open it twice.
    granted_codes: BTreeSet<(Vec<u8>, Typed)>,
    max_installed: u64,
    /// Ids of events emitted since a torn flash write was armed: those that never reached
    /// flash before the power failed did not happen.
    armed: Option<Vec<u64>>,
    /// List generations the backend announced to this door: the only ones it may use.
    announced: BTreeSet<u64>,
    /// A list swapped in on the way, not yet refused: its bytes.
    swapped: Option<Vec<u8>>,
    /// A swapped list ended early: the door keeps its bytes as the start of the announced list,
    /// and a sync that goes on with them finds the whole not the one announced.
    swapped_start_kept: bool,
    /// The door leaf: open or closed, whether the controller is on or not.
    door_open: bool,
    /// The checks of the door's contact, alarms and lockdown.
    pos: PositionCheck,
    /// Watches the backend holds for this door.
    watches: Vec<HeldWatch>,
    /// The last fault that touched this door's link to the backend (power, network, a lost,
    /// slow or refused answer): a door is held to learning a lockdown in two seconds only when
    /// none came near.
    disturbed_at: i64,
    /// The exit button was just pressed (its unlock is on its way).
    rex_pressed: bool,
    pub(crate) tally: Tally,
    pub(crate) violations: Vec<Violation>,
}

impl<'w> DoorRun<'w> {
    pub(crate) fn new(w: &'w World, cfg: &'w FleetConfig, door: u32, mut rng: Rng) -> Self {
        let site = &w.sites[(door / super::world::DOORS_PER_SITE) as usize % w.sites.len()];
        let mut ctl_cfg = Config::default();
        ctl_cfg.ntp_servers.clear();
        for i in 0..w.ntp.len() {
            let name = format!("ntp{i}.sim");
            let _ = ctl_cfg
                .ntp_servers
                .push(name.as_str().try_into().unwrap_or_default());
        }
        // The site key comes from pairing, as on a real door.
        ctl_cfg.site_key = None;
        // The firmware's build time: before any start date the fleet draws.
        ctl_cfg.time_floor = UnixTime::from_secs(1_767_225_600);
        let rtc = rng.chance(600_000).then(|| Rtc {
            base_t: 0,
            // Set at the factory to within a second and a half.
            base_utc: w.start_utc_us + rng.range(-1_500_000, 1_500_000),
            drift_ppb: rng.range(-1_900, 1_900),
            osf: rng.chance(150_000),
        });
        // Installed with the server's address and a pairing code, as the setup page leaves it.
        let mut flash = MemFlash::new(LAYOUT.end() as usize);
        if let Ok(mut store) = Store::new(&mut flash, LAYOUT) {
            let mut settings = Settings::default();
            let _ = settings.server_url.push_str(SERVER_URL);
            let _ = settings.pairing_code.push_str(PAIRING_CODE);
            let _ = store.set_settings(&settings);
        }
        let osc_ppb = rng.range(-9_500, 9_500);
        // Most doors have a door-position contact; the installer enters it and the held-open
        // time at setup, and the site's settings say the same.
        let position = DoorPosition {
            contact: rng.chance(850_000),
            held_open_s: rng.range(10, 61) as u16,
        };
        ctl_cfg.door_contact = position.contact;
        ctl_cfg.held_open = std::time::Duration::from_secs(u64::from(position.held_open_s));
        let backend = SimBackend {
            site,
            world: w,
            door_id: i64::from(door) + 1,
            plant: cfg.plant,
            signing: ed25519_dalek::SigningKey::from_bytes(&site.key),
            now_t: Cell::new(0),
            pairing: RefCell::new(Some(Pairing {
                door_id: i64::from(door) + 1,
                code_hash: pairing_code_hash(PAIRING_CODE),
                sync_interval_s: 300,
            })),
            key: Cell::new(None),
            counter: Cell::new(0),
            stored: RefCell::new(BTreeMap::new()),
            resent: Cell::new(0),
            last_check: RefCell::new(None),
            verdicts: RefCell::new(BTreeMap::new()),
            position,
            sealed: RefCell::new(None),
        };
        let mut run = DoorRun {
            w,
            cfg,
            door,
            site,
            ctl_cfg,
            rng,
            t: 0,
            queue: BTreeMap::new(),
            seq: 0,
            dev: None,
            boots: 0,
            osc_ppb,
            network_up: true,
            mains_off_until: 0,
            rtc,
            battery_mv: 3_700,
            flash: Some(flash),
            backend,
            emitted: BTreeMap::new(),
            report_days: BTreeMap::new(),
            lies_seen: Vec::new(),
            rtc_taint: None,
            rtc_written_by_door: false,
            hijacked_ntp: None,
            conditional_ctx: None,
            asked: Vec::new(),
            typing: None,
            decided_at_changes: None,
            card: None,
            clone_presented: false,
            hotp_token: BTreeMap::new(),
            last_typed: BTreeMap::new(),
            granted_codes: BTreeSet::new(),
            max_installed: 0,
            armed: None,
            announced: BTreeSet::new(),
            swapped: None,
            swapped_start_kept: false,
            door_open: false,
            pos: PositionCheck::new(position.contact, position.held_open_s),
            watches: Vec::new(),
            disturbed_at: 0,
            rex_pressed: false,
            tally: Tally::default(),
            violations: Vec::new(),
        };
        run.script();
        run
    }

    fn fault(&mut self, kind: &'static str) {
        *self.tally.faults.entry(kind).or_default() += 1;
    }

    fn schedule(&mut self, at: i64, ev: Ev) {
        self.schedule_keyed(at, ev);
    }

    /// Schedules `ev` and returns its place in the queue.
    fn schedule_keyed(&mut self, at: i64, ev: Ev) -> (i64, u64) {
        self.seq += 1;
        let key = (at.max(self.t), self.seq);
        self.queue.insert(key, ev);
        key
    }

    /// The door's scripted life: presentations, power, network, temperature, battery, and a
    /// probe after each day's report hour.
    fn script(&mut self) {
        let end = self.w.fault_end;
        let mean_gap = DAY / i64::from(self.cfg.presentations_per_day.max(1));
        let mut t = self.rng.range(0, 2 * mean_gap);
        while t < end {
            let ev = if self.rng.chance(150_000) {
                let mut uid = vec![0u8; 4];
                self.rng.fill(&mut uid);
                Ev::Card(uid)
            } else if !self.site.keypad.is_empty() && self.rng.chance(200_000) {
                Ev::Keypad(self.rng.below(self.site.keypad.len() as u64) as usize)
            } else {
                let i = self.rng.below(self.site.people.len() as u64) as usize;
                Ev::Card(self.site.people[i].clone())
            };
            let at = if self.rng.chance(300_000) {
                self.near_local_edge(t)
            } else if self.rng.chance(150_000) {
                self.near_date_edge(t, &ev)
            } else if self.rng.chance(100_000) {
                self.near_dst_switch(t)
            } else {
                t
            };
            if (0..end).contains(&at) {
                self.schedule(at, ev);
            }
            t += self.rng.range(1, 2 * mean_gap);
        }
        let cuts = Intervals::draw(&mut self.rng, end, 4 * DAY, 5 * SEC, 4 * HOUR);
        for (start, stop) in cuts.iter() {
            self.schedule(start, Ev::PowerCut { until: stop });
        }
        let mut t = self.rng.range(0, 10 * DAY);
        while t < end {
            self.schedule(t, Ev::Reboot);
            t += self.rng.range(HOUR, 10 * DAY);
        }
        let outages = Intervals::draw(&mut self.rng, end, 3 * DAY, 10 * SEC, 8 * HOUR);
        for (start, stop) in outages.iter() {
            // One in ten lasts days (a broken access point nobody notices): long enough for the
            // uptime-based report and for the RTC to carry the clock.
            let stop = if self.rng.chance(100_000) {
                self.fault("long_network_outage");
                (stop + self.rng.range(DAY, 3 * DAY)).min(end)
            } else {
                stop
            };
            self.schedule(start, Ev::Network(false));
            self.schedule(stop, Ev::Network(true));
        }
        let mut t = self.rng.range(0, DAY);
        while t < end {
            let ppb = self.rng.range(-9_500, 9_500);
            self.schedule(t, Ev::Drift(ppb));
            t += self.rng.range(HOUR, 2 * DAY);
        }
        let mut t = DAY / 2;
        let mut mv = 3_700i64;
        while t < end {
            mv = (mv - self.rng.range(0, 4)).max(2_900);
            self.schedule(t, Ev::Battery(mv as u16));
            t += DAY;
        }
        // 04:00:30 true UTC of every day.
        let first_day = (self.w.start_utc_us).div_euclid(DAY);
        let last_day = (self.w.start_utc_us + self.w.end).div_euclid(DAY);
        for day in first_day..=last_day {
            let at = day * DAY + 4 * HOUR + 30 * SEC - self.w.start_utc_us;
            if (0..self.w.end).contains(&at) {
                self.schedule(at, Ev::ReportProbe { day });
            }
        }
        // The exit button: four presses a day, at any moment (before the clock is valid, before
        // any list, offline, under lockdown).
        let mut t = self.rng.range(0, DAY / 2);
        while t < end {
            self.schedule(t, Ev::Rex);
            t += self.rng.range(1, DAY / 2);
        }
        // Now and then the door is forced (or someone leaves it ajar and pushes it open).
        let mut t = self.rng.range(0, 6 * DAY);
        while t < end {
            let hold = self.rng.range(3 * SEC, 10 * MIN);
            self.schedule(t, Ev::DoorOpen { hold });
            t += self.rng.range(HOUR, 6 * DAY);
        }
        // The backend: lists and lockdown orders for this door's site, and its outages.
        let site = self.site;
        for v in site.versions.iter().filter(|v| v.at > 0) {
            self.schedule(v.at, Ev::BackendChange);
        }
        for c in &site.lockdowns {
            self.schedule(c.at, Ev::LockdownOrder { seq: c.seq });
            self.schedule(c.at + LEARN_WITHIN_US, Ev::LockdownDeadline { seq: c.seq });
        }
        let outages: Vec<i64> = self.w.backend_outages.iter().map(|(a, _)| a).collect();
        for start in outages {
            self.schedule(start, Ev::BackendDown);
        }
        self.schedule(end, Ev::FaultEnd);
        self.schedule(0, Ev::PowerOn);
    }

    /// Half a second into the first or last second of the card's date range (`valid_from`,
    /// `valid_until`, inclusive) in the list current at `t`, when it lies in the run: where an
    /// off-by-one in the range shows.
    fn near_date_edge(&mut self, t: i64, ev: &Ev) -> i64 {
        let Ev::Card(uid) = ev else { return t };
        let Some(e) = self
            .site
            .version_at(t)
            .and_then(|v| v.entries.get(&CredKey::Card(uid.clone())))
        else {
            return t;
        };
        // Edges in the coming day, while the rule likely still stands.
        let now = (self.w.start_utc_us + t).div_euclid(SEC);
        let edges: Vec<i64> = [e.valid_from, e.valid_until, e.valid_until + 1]
            .into_iter()
            .filter(|&x| x > 1 && (now..now + 86_400).contains(&x))
            .collect();
        if edges.is_empty() {
            return t;
        }
        let edge = edges[self.rng.below(edges.len() as u64) as usize];
        edge * SEC + SEC / 2 - self.w.start_utc_us
    }

    /// A moment near the site zone's offset change nearest after `t` − 7 days, if it lies within
    /// a week of `t`: within three hours of the switch itself, or near a local schedule edge on
    /// the local day of the switch, where a list that missed it is an hour off.
    fn near_dst_switch(&mut self, t: i64) -> i64 {
        let Ok(from) = Timestamp::from_microsecond(self.w.start_utc_us + t - 7 * DAY) else {
            return t;
        };
        let Some(switch) = self.site.zone.following(from).next() else {
            return t;
        };
        let switch = switch.timestamp().as_microsecond() - self.w.start_utc_us;
        if (switch - t).abs() > 7 * DAY {
            return t;
        }
        if self.rng.chance(500_000) {
            switch + self.rng.range(-3 * HOUR, 3 * HOUR)
        } else {
            self.near_local_edge(switch + 12 * HOUR)
        }
    }

    /// A moment within two minutes of a local schedule edge on the local day of `t`.
    fn near_local_edge(&mut self, t: i64) -> i64 {
        let edge = LOCAL_EDGES_MIN[self.rng.below(LOCAL_EDGES_MIN.len() as u64) as usize];
        let jitter = self.rng.range(-120 * SEC, 120 * SEC);
        let Ok(ts) = Timestamp::from_microsecond(self.w.start_utc_us + t) else {
            return t;
        };
        let date = ts.to_zoned(self.site.zone.clone()).date();
        let Ok(time) = Time::new((edge / 60) as i8, (edge % 60) as i8, 0, 0) else {
            return t;
        };
        match date.to_datetime(time).to_zoned(self.site.zone.clone()) {
            Ok(z) => z.timestamp().as_microsecond() - self.w.start_utc_us + jitter,
            Err(_) => t,
        }
    }

    // ----- clocks --------------------------------------------------------------------------

    fn mono_at(dev: &Dev, ppb: i64, t: i64) -> i64 {
        let dt = t - dev.seg_t;
        dev.seg_mono + dt + mul_ppb(dt, ppb)
    }

    fn mono(&self) -> Instant {
        self.dev.as_ref().map_or(Instant::ZERO, |d| {
            Instant::from_micros(Self::mono_at(d, self.osc_ppb, self.t).max(0) as u64)
        })
    }

    /// True time at which the controller's next timer fires.
    fn timer_at(&self) -> Option<i64> {
        let dev = self.dev.as_ref()?;
        let due = dev.door.poll_timeout()?.as_micros() as i64;
        if due <= Self::mono_at(dev, self.osc_ppb, self.t) {
            return Some(self.t);
        }
        let mut t = dev.seg_t + inv_ppb(due - dev.seg_mono, self.osc_ppb);
        while Self::mono_at(dev, self.osc_ppb, t) < due {
            t += 1;
        }
        while t > self.t && Self::mono_at(dev, self.osc_ppb, t - 1) >= due {
            t -= 1;
        }
        Some(t.max(self.t))
    }

    fn true_utc_us(&self) -> i64 {
        self.w.start_utc_us + self.t
    }

    /// The clock's error against true time and its bound (µs), if it is valid.
    fn clock_error(&self) -> Option<(i64, i64)> {
        let dev = self.dev.as_ref()?;
        let wall = dev.door.controller().wall_time(self.mono())?;
        Some((
            wall.utc.as_micros() - self.true_utc_us(),
            wall.error_bound_ms as i64 * 1000,
        ))
    }

    /// Whether a clock error outside the bound is explained by a lie the door was told.
    fn explained_by_lie(&self, error: i64, bound: i64) -> bool {
        self.lie_source(error, bound).is_some()
    }

    /// Which kind of source told the lie that explains a clock error, if any.
    fn lie_source(&self, error: i64, bound: i64) -> Option<&'static str> {
        self.lies_seen
            .iter()
            .find(|&&(lie, _)| (error - lie).abs() <= bound + LIE_MATCH_US)
            .map(|&(_, source)| source)
    }

    // ----- the run -------------------------------------------------------------------------

    pub(crate) fn run(&mut self) {
        let mut same = 0u32;
        loop {
            let next_ev = self.queue.keys().next().map(|&(t, _)| t);
            let next_timer = self.timer_at();
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(n) => n,
                    None => break,
                },
            };
            if next > self.w.end {
                break;
            }
            if next == self.t {
                same += 1;
                if same > MAX_STEPS_PER_INSTANT {
                    self.violate(
                        "progress",
                        "the controller keeps asking to be woken now".into(),
                    );
                    break;
                }
            } else {
                same = 0;
            }
            self.t = next.max(self.t);
            if next_ev == Some(next) {
                if let Some((_, ev)) = self.queue.pop_first() {
                    self.handle(ev);
                }
            } else {
                let now = self.mono();
                if let Some(dev) = &mut self.dev {
                    dev.door.handle_timeout(now);
                }
            }
            self.drain();
            self.check_step();
        }
        self.t = self.w.end;
        self.finish();
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.mono();
        let online = self.network_up;
        let boot = self.dev.as_ref().map(|d| d.boot);
        match ev {
            Ev::Card(uid) => {
                let secure = self.present_secure(&uid);
                if let Some(dev) = &mut self.dev {
                    self.decided_at_changes =
                        Some((dev.door.store().flash().changes(), dev.door.outbox_len()));
                    if secure {
                        dev.door.handle_secure_card(&uid, now);
                    } else {
                        dev.door.handle_card(&uid, now);
                    }
                    if self.cfg.plant == Some(Plant::StoreBeforeUnlock) {
                        dev.door.store_pending();
                    }
                }
                self.drain();
                self.decided_at_changes = None;
                // The card leaves the field (a door that was off saw nothing of it).
                self.card = None;
                self.clone_presented = false;
            }
            Ev::Keypad(user) => self.type_entry(user),
            Ev::PowerCut { until } => {
                self.mains_off_until = self.mains_off_until.max(until);
                if self.dev.is_some() {
                    self.power_down("power_cut");
                    if self.rng.chance(30_000) {
                        if let Some(rtc) = &mut self.rtc {
                            // The coin cell gave out: the oscillator stopped.
                            rtc.osf = true;
                            self.fault("rtc_oscillator_stop");
                        }
                    } else if self.rng.chance(20_000) {
                        let jump = self.rng.range(10 * SEC, 2 * HOUR)
                            * if self.rng.below(2) == 0 { 1 } else { -1 };
                        if let Some(rtc) = &mut self.rtc {
                            // A brown-out corrupts the registers without stopping the
                            // oscillator: the RTC lies, and its flag says nothing.
                            rtc.base_utc += jump;
                            let error = rtc.utc_at(self.t) - self.true_utc_us();
                            self.rtc_taint = Some(error);
                            self.fault("rtc_glitch");
                        }
                    }
                }
                self.schedule(until, Ev::PowerOn);
            }
            Ev::Reboot => {
                if self.dev.is_some() {
                    self.power_down("reboot");
                    let back = self.t + self.rng.range(SEC, 3 * SEC);
                    self.schedule(back, Ev::PowerOn);
                }
            }
            Ev::PowerOn => {
                if self.dev.is_none() && self.t >= self.mains_off_until {
                    self.boot();
                }
            }
            Ev::Network(up) => {
                if self.network_up && !up {
                    self.fault("network_outage");
                }
                if self.network_up != up {
                    self.disturbed_at = self.t;
                }
                if !up {
                    // The connections the backend held for the door break.
                    self.drop_watches();
                }
                self.network_up = up;
                if let Some(dev) = &mut self.dev {
                    dev.door.handle_network(up, now);
                }
            }
            Ev::Drift(ppb) => {
                if let Some(dev) = &mut self.dev {
                    dev.seg_mono = Self::mono_at(dev, self.osc_ppb, self.t);
                    dev.seg_t = self.t;
                }
                // Planted: a crystal three times worse than the controller is told.
                let out_of_spec = self.cfg.plant == Some(Plant::OscillatorOutOfSpec);
                self.osc_ppb = if out_of_spec { ppb * 3 } else { ppb };
                self.fault("oscillator_drift_change");
            }
            Ev::Battery(mv) => self.battery_mv = mv,
            Ev::ReportProbe { day } => self.probe_report(day),
            Ev::FaultEnd => {
                self.mains_off_until = self.t;
                if !self.network_up {
                    self.disturbed_at = self.t;
                    self.network_up = true;
                    if let Some(dev) = &mut self.dev {
                        dev.door.handle_network(true, now);
                    }
                }
                if self.dev.is_none() {
                    self.boot();
                }
            }
            Ev::NtpReply {
                boot: b,
                server,
                packet,
                lie,
            } => {
                if boot == Some(b) && online {
                    if let Some(lie) = lie {
                        self.lies_seen.push((lie, "ntp"));
                        self.fault("ntp_lie_delivered");
                    }
                    if let Some(dev) = &mut self.dev {
                        dev.door.handle_ntp_response(server, &packet, now);
                    }
                }
            }
            Ev::Serve {
                boot: b,
                exchange,
                body,
            } => self.serve(b, exchange, body),
            Ev::Answer {
                boot: b,
                exchange,
                bytes,
                end,
            } => {
                if let Exchange::Watch { .. } = exchange {
                    // The backend has answered this watch: it holds it no more.
                    self.watches
                        .retain(|w| !(w.boot == b && w.exchange == exchange));
                    if self.rng.chance(10_000) {
                        // Lost on the way: the door's client gives up on it after a minute.
                        self.fault("watch_answer_lost");
                        self.disturbed_at = self.t;
                        return;
                    }
                }
                if boot != Some(b) {
                    return;
                }
                if !online {
                    // The connection broke with the network: the client reports it.
                    if let Some(dev) = &mut self.dev {
                        dev.door
                            .handle_exchange_failed(exchange, Failure::Unreachable, now);
                    }
                    return;
                }
                if let Exchange::Check { request } = exchange {
                    self.conditional_ctx = self.backend.verdicts.borrow_mut().remove(&request);
                }
                // A watch's answer writes nothing (the sync it may start is torn in its turn).
                if !matches!(exchange, Exchange::Watch { .. }) {
                    self.tear_flash_maybe();
                }
                if let Some(dev) = &mut self.dev {
                    dev.door.handle_answer(exchange, &bytes, now);
                    if end {
                        dev.door.handle_answer_end(exchange, now);
                    }
                }
                self.drain();
                self.conditional_ctx = None;
            }
            Ev::Failed {
                boot: b,
                exchange,
                failure,
            } => {
                if boot == Some(b) {
                    if let Some(dev) = &mut self.dev {
                        dev.door.handle_exchange_failed(exchange, failure, now);
                    }
                }
            }
            Ev::Reinstall => {
                *self.backend.pairing.borrow_mut() = Some(Pairing {
                    door_id: self.backend.door_id,
                    code_hash: pairing_code_hash(PAIRING_CODE),
                    sync_interval_s: 300,
                });
                if let Some(dev) = &mut self.dev {
                    let mut form = chronolock_device::setup::SetupForm::default();
                    let _ = form.server_url.push_str(SERVER_URL);
                    let _ = form.pairing_code.push_str(PAIRING_CODE);
                    dev.door.handle_setup(&form, now);
                } else {
                    self.schedule(self.t + HOUR, Ev::Reinstall);
                }
            }
            Ev::Rex => self.press_exit(),
            Ev::DoorOpen { hold } => {
                if !self.door_open {
                    self.door_open = true;
                    self.report_contact(false);
                    self.schedule(self.t + hold, Ev::DoorClose);
                }
            }
            Ev::DoorClose => {
                if self.door_open {
                    self.door_open = false;
                    self.report_contact(false);
                }
            }
            Ev::BackendChange => self.wake_watches(),
            Ev::BackendDown => {
                for w in self.drop_watches() {
                    self.fault("watch_broken");
                    let failure = Failure::Unreachable;
                    self.schedule(
                        self.t,
                        Ev::Failed {
                            boot: w.boot,
                            exchange: w.exchange,
                            failure,
                        },
                    );
                }
            }
            Ev::LockdownOrder { seq } => {
                self.pos.order_given(seq, self.t);
                self.wake_watches();
            }
            Ev::LockdownDeadline { seq } => {
                let given = self.t - LEARN_WITHIN_US;
                let undisturbed = self.undisturbed_since(given - LEARN_QUIET_US);
                self.pos.learn_deadline(seq, undisturbed);
            }
            Ev::RtcTick { boot: b } => {
                if boot == Some(b) {
                    let reading = self
                        .rtc
                        .as_ref()
                        .map_or(RtcReading::Absent, |r| r.read(self.t).at_tick());
                    if let Some(dev) = &mut self.dev {
                        dev.door.handle_rtc_read(reading, now);
                    }
                }
            }
        }
    }

    /// Now and then the power fails in the middle of a flash operation: the door's next writes
    /// (the answer about to arrive) get a budget of bytes, and the door dies where it runs out.
    fn tear_flash_maybe(&mut self) {
        if self.t >= self.w.fault_end || !self.rng.chance(2_000) {
            return;
        }
        let budget = self.rng.below(4_096) as usize;
        if let Some(dev) = &mut self.dev {
            dev.door.store().flash().cut_after(Some(budget));
            self.armed.get_or_insert_with(Vec::new);
            self.fault("torn_flash_write_armed");
        }
    }

    /// The list generation the door has in use (none while it is off).
    fn installed_generation(&self) -> Option<u64> {
        self.dev
            .as_ref()
            .and_then(|d| d.door.list_info())
            .map(|i| i.generation)
    }

    fn power_down(&mut self, kind: &'static str) {
        if let Some(dev) = self.dev.take() {
            if self
                .queue
                .values()
                .any(|e| matches!(e, Ev::Answer { boot, end: false, .. } | Ev::Answer { boot, end: true, .. } if *boot == dev.boot))
            {
                self.fault("power_cut_during_list_download");
            }
            let store = dev.door.into_store();
            let mut flash = store.into_flash();
            flash.cut_after(None);
            if self.cfg.plant == Some(Plant::ForgetKeypadUse) {
                // Planted: the keypad's code use is lost with the power (as if the shell kept
                // it in RAM only).
                if let Ok(mut store) = Store::new(&mut flash, LAYOUT) {
                    for k in &self.site.keypad {
                        if let Some(user) = keypad_key(&k.code) {
                            let _ = store.set_keypad_use(&KeypadUse {
                                user,
                                last_totp_step: None,
                                hotp_next: 0,
                            });
                        }
                    }
                }
            }
            if self.cfg.plant == Some(Plant::ForgetLockdown) {
                self.forget_lockdown(&mut flash);
            }
            self.flash = Some(flash);
        }
        self.asked.clear();
        // A swapped list cut off by the power: the door may keep its first bytes as the start
        // of the announced list (seed 2, door 11), as when the connection breaks.
        if self.swapped.take().is_some() {
            self.swapped_start_kept = true;
        }
        self.pos.power_down();
        // The connections the backend held for this boot are gone with it.
        self.drop_watches();
        self.disturbed_at = self.t;
        self.fault(kind);
    }

    /// Planted: a shell that keeps the lockdown in RAM only. At power-down the flash gets the
    /// site's order before the one in force (or that one lifted), so the door boots knowing of
    /// no lockdown.
    fn forget_lockdown(&self, flash: &mut MemFlash) {
        let Ok(mut store) = Store::new(flash, LAYOUT) else {
            return;
        };
        let site = self.backend.signing.verifying_key();
        let held = store
            .lockdown()
            .ok()
            .flatten()
            .and_then(|o| LockdownOrder::verify(&o, &site).ok());
        let Some(held) = held.filter(|o| o.on) else {
            return;
        };
        let previous = self
            .site
            .lockdowns
            .iter()
            .find(|c| c.seq + 1 == held.seq)
            .map(|c| c.order);
        let lifted = LockdownOrder { on: false, ..held }.sign(&self.backend.signing);
        let _ = store.set_lockdown(&previous.unwrap_or(lifted));
    }

    fn boot(&mut self) {
        let Some(flash) = self.flash.take() else {
            return;
        };
        let store = match Store::new(flash, LAYOUT) {
            Ok(s) => s,
            Err(e) => {
                self.violate("flash_opens", format!("{e}"));
                return;
            }
        };
        self.boots += 1;
        self.tally.boots += 1;
        let seed = self.rng.seed32();
        let config = BootConfig {
            core: self.ctl_cfg.clone(),
            sync_interval_s: None,
            setup_button: false,
            firmware: None,
        };
        let mut store = store;
        if self.cfg.plant == Some(Plant::ForgetRtcProvenance) {
            // Planted: a shell that loses where the RTC's time came from.
            if let Ok(mut p) = store.persisted() {
                p.rtc_written_from_network = false;
                let _ = store.set_persisted(&p);
            }
        }
        let trusted_rtc_boot = self.rtc_written_by_door
            && self.rtc_taint.is_none()
            && self.rtc.as_ref().is_some_and(|r| !r.osf);
        if trusted_rtc_boot && self.t < self.w.fault_end && self.rng.chance(100_000) {
            // Right after this boot, an attacker on the door's path forges one NTP server's
            // answers (an hour off, either way) and drops the other servers' and the backend's
            // for ten minutes: the clock the RTC set must not follow the lie.
            self.fault("ntp_hijacked_after_reboot");
            let server = self.rng.below(self.w.ntp.len().max(1) as u64) as u8;
            let sign = if self.rng.below(2) == 0 { 1 } else { -1 };
            self.hijacked_ntp = Some((server, sign * HOUR, self.t + 10 * 60 * SEC));
        }
        let door = Door::boot(store, config, seed, Instant::ZERO);
        self.lies_seen.clear();
        if self.rtc.is_some() {
            if let Some(lie) = self.rtc_taint {
                self.lies_seen.push((lie, "rtc"));
            }
        }
        if let Some(info) = door.list_info() {
            self.check_announced(info.generation);
        }
        self.dev = Some(Dev {
            door,
            boot: self.boots,
            seg_t: self.t,
            seg_mono: 0,
            boot_t: self.t,
            good_clock_since: None,
            trusted_rtc_boot,
        });
        self.disturbed_at = self.t;
        self.drain();
        // The shell reads the contact at boot: the door learns where it stands.
        self.report_contact(true);
        if self.network_up {
            let now = self.mono();
            if let Some(dev) = &mut self.dev {
                dev.door.handle_network(true, now);
            }
        }
        if self.t < self.w.fault_end && self.rng.chance(300_000) {
            // Someone at the door as it comes up, before any clock source answered: ADR-011's
            // table decides.
            let i = self.rng.below(self.site.people.len() as u64) as usize;
            let at = self.t + self.rng.range(0, 5_000);
            self.schedule(at, Ev::Card(self.site.people[i].clone()));
        }
        if self.t < self.w.fault_end && self.rng.chance(100_000) {
            // Someone leaving as the door comes up: egress before any clock source, and
            // before any list at the first boot.
            let at = self.t + self.rng.range(0, 5_000);
            self.schedule(at, Ev::Rex);
        }
    }

    /// The contact's state goes to the door (at boot, `first`, or on a change), with the
    /// checker told first what the door must make of it.
    fn report_contact(&mut self, first: bool) {
        let open = self.door_open;
        let now = self.mono();
        let Some(dev) = &mut self.dev else { return };
        let boot = dev.boot;
        self.pos.contact_begin(open, first, now.as_micros() as i64);
        dev.door.handle_door(open, now);
        self.drain();
        let alive = self.dev.as_ref().is_some_and(|d| d.boot == boot);
        self.pos.contact_end(alive);
    }

    /// Someone presses the exit button: egress is never refused (a door without power stays
    /// as it is; its handle opens it from inside).
    fn press_exit(&mut self) {
        self.tally.rex_presses += 1;
        let now = self.mono();
        let Some(dev) = &mut self.dev else { return };
        let boot = dev.boot;
        let unlocks = self.tally.unlocks;
        self.rex_pressed = true;
        dev.door.handle_rex(now);
        self.drain();
        self.rex_pressed = false;
        let alive = self.dev.as_ref().is_some_and(|d| d.boot == boot);
        if alive && self.tally.unlocks == unlocks {
            let lockdown = if self.pos.lockdown_on() {
                " (under lockdown)"
            } else {
                ""
            };
            self.violate(
                "egress_never_refused",
                format!("the exit button was pressed and the lock did not open{lockdown}"),
            );
        }
    }

    /// After an unlock of `ms`, someone (usually) goes through: mostly while it is in force,
    /// now and then too late (a forced opening), mostly briefly, now and then held open too
    /// long.
    fn walk_through(&mut self, ms: u32) {
        let chance = if self.rex_pressed { 900_000 } else { 700_000 };
        if !self.rng.chance(chance) {
            return;
        }
        let unlock = i64::from(ms) * 1_000;
        let delay = if self.rng.chance(900_000) {
            self.rng.range(200_000, unlock - 200_000)
        } else {
            unlock + self.rng.range(100_000, 20 * SEC)
        };
        let held_open = i64::from(self.backend.position.held_open_s) * SEC;
        let hold = if self.rng.chance(850_000) {
            self.rng.range(SEC, 12 * SEC)
        } else {
            held_open + self.rng.range(SEC, 3 * MIN)
        };
        self.schedule(self.t + delay, Ev::DoorOpen { hold });
    }

    /// Carries out everything the door asked for; a door whose flash lost power mid-write dies.
    fn drain(&mut self) {
        loop {
            // The power may have failed inside the door's last step: then nothing it asked for
            // since happened.
            if self.flash_cut() {
                self.torn_power_cut();
            }
            let Some(request) = self.dev.as_mut().and_then(|d| d.door.poll_request()) else {
                break;
            };
            let now = self.mono();
            match request {
                Request::Alarm { .. } => {}
                Request::ReadRtc { at_tick } => {
                    let boot = self.dev.as_ref().map_or(0, |d| d.boot);
                    match &self.rtc {
                        Some(rtc) if at_tick && !rtc.osf => {
                            let at = rtc.next_tick(self.t);
                            self.schedule(at, Ev::RtcTick { boot });
                        }
                        rtc => {
                            let reading =
                                rtc.as_ref().map_or(RtcReading::Absent, |r| r.read(self.t));
                            if let Some(dev) = &mut self.dev {
                                dev.door.handle_rtc_read(reading, now);
                            }
                        }
                    }
                }
                Request::WriteRtc { utc } => {
                    let taint = self
                        .clock_error()
                        .filter(|&(e, b)| e.abs() > b + BOUND_SLACK_US)
                        .map(|(e, _)| e);
                    if let Some(rtc) = &mut self.rtc {
                        rtc.base_t = self.t;
                        rtc.base_utc = utc.as_micros();
                        rtc.osf = false;
                        self.rtc_taint = taint;
                        self.rtc_written_by_door = true;
                    }
                }
                Request::SendNtp { server, packet } => self.send_ntp(server, packet),
                Request::Post(exchange) => self.post(exchange),
                Request::Feedback(_) => {}
                Request::CardApdu(apdu) => {
                    if let Some(dev) = &mut self.dev {
                        crate::card::carry(&mut dev.door, self.card.as_mut(), &apdu, now);
                    }
                }
                Request::Unlock { ms } => {
                    let refused = self.cfg.plant == Some(Plant::RefuseExitInLockdown)
                        && self.rex_pressed
                        && self
                            .dev
                            .as_ref()
                            .is_some_and(|d| d.door.controller().lockdown());
                    if refused {
                        // Planted: a shell that keeps the lock shut for the exit button under
                        // lockdown.
                        continue;
                    }
                    self.tally.unlocks += 1;
                    self.check_opened_first();
                    // Planted: a lock driver that holds the lock open three times as long as
                    // the door asked.
                    let ms = match self.cfg.plant {
                        Some(Plant::LockHeldLonger) => ms.saturating_mul(3),
                        _ => ms,
                    };
                    self.pos.unlocked(now.as_micros() as i64, ms);
                    self.walk_through(ms);
                }
                Request::Store => {
                    if let Some(dev) = &mut self.dev {
                        dev.door.store_pending();
                    }
                }
                Request::ReadBattery => {
                    let mv = self.battery_mv;
                    let ignored = self.cfg.plant == Some(Plant::IgnoreBatteryRead);
                    if let Some(dev) = self.dev.as_mut().filter(|_| !ignored) {
                        dev.door.handle_battery(mv, now);
                    }
                }
                // The fleet's doors run no firmware updates.
                Request::BootFirmware { slot } => {
                    self.violate("firmware", format!("asked to boot app slot {slot}"))
                }
                Request::Notice(n) => self.notice(n),
            }
        }
        if let Some(dev) = &mut self.dev {
            let len = dev.door.outbox_len() as u64;
            self.tally.max_outbox = self.tally.max_outbox.max(len);
        }
    }

    fn notice(&mut self, n: Notice) {
        match n {
            Notice::Event { id, event } => self.record(id, event),
            Notice::LockdownRefused(e) => self.violate(
                "lockdown_refused",
                format!("the door refused the site's lockdown order: {e}"),
            ),
            // The fleet's backend names no NTP servers.
            Notice::NtpServers { .. } => self.violate(
                "ntp_servers",
                "the door took NTP servers the backend never named".into(),
            ),
            Notice::RtcWritten { id, utc } => self.emit(
                id,
                EventBody::RtcWrite {
                    utc_us: utc.as_micros(),
                },
            ),
            Notice::ListInstalled { generation, .. } => {
                self.tally.list_installs += 1;
                self.check_announced(generation);
                if generation < self.max_installed {
                    self.violate(
                        "list_rollback",
                        format!("installed {generation} after {}", self.max_installed),
                    );
                }
                self.max_installed = self.max_installed.max(generation);
            }
            Notice::ListRejected(ListRejection::Digest) if self.swapped_start_kept => {
                self.swapped_start_kept = false;
            }
            Notice::ListRejected(
                reason @ (ListRejection::Digest | ListRejection::Incomplete { .. }),
            ) if self.swapped.is_some() => {
                self.swapped_start_kept = matches!(reason, ListRejection::Incomplete { .. });
                let swapped = self.swapped.take().unwrap_or_default();
                if self.cfg.plant == Some(Plant::SkipDigestCheck) {
                    self.install_behind_the_doors_back(&swapped);
                }
            }
            // A sync that answered while an older list was still on its way.
            Notice::ListRejected(ListRejection::List(ListError::StaleGeneration { .. })) => {}
            // The power failed during the download's flash writes: the old list stays.
            Notice::ListRejected(ListRejection::Store(_)) if self.flash_cut() => {}
            Notice::ListRejected(reason) => {
                self.violate("list_refused", format!("{reason}"));
            }
            n @ (Notice::FirmwareRefused(_)
            | Notice::FirmwareReady { .. }
            | Notice::FirmwareConfirmed { .. }
            | Notice::FirmwareRolledBack { .. }) => {
                self.violate("firmware", format!("{n:?}"));
            }
            Notice::OutboxFull { dropped } => {
                self.violate("outbox_full", format!("{dropped} events dropped"));
            }
            Notice::RequestsDropped { count } => {
                self.violate("dropped_actions", format!("{count} requests dropped"));
            }
            Notice::Storage(e) if !self.flash_cut() => {
                self.violate("flash_works", format!("{e}"));
            }
            Notice::PairingFailed(e) if !matches!(e, ExchangeError::Failed(_)) => {
                self.violate("pairing", format!("{e}"));
            }
            Notice::Synced {
                list_len,
                list_offset,
                ..
            } if list_len > 0 => {
                if list_offset > 0 {
                    self.tally.list_resumes += 1;
                } else {
                    // A fresh download: whatever the door held of an earlier one is gone.
                    self.swapped_start_kept = false;
                }
            }
            // A fresh pairing: the door's watch starts now.
            Notice::Paired { .. } => self.disturbed_at = self.t,
            Notice::Storage(_)
            | Notice::PairingFailed(_)
            | Notice::Synced { .. }
            | Notice::SyncFailed(_) => {}
        }
    }

    /// The power failed in the middle of a flash write: the door dies there. What it still had
    /// to say is void, except events that had reached flash; events it announced that had not
    /// did not happen.
    fn torn_power_cut(&mut self) {
        self.fault("torn_flash_write");
        let mut late = Vec::new();
        let mut lockdown_unsaid = false;
        while let Some(r) = self.dev.as_mut().and_then(|d| d.door.poll_request()) {
            match r {
                Request::Notice(Notice::Event { id, event }) => {
                    lockdown_unsaid |= matches!(event, Event::Lockdown { .. });
                    late.push((id, EventBody::from_event(&event)))
                }
                Request::Notice(Notice::RtcWritten { id, utc }) => late.push((
                    id,
                    EventBody::RtcWrite {
                        utc_us: utc.as_micros(),
                    },
                )),
                _ => {}
            }
        }
        self.power_down("power_cut");
        if lockdown_unsaid {
            // The door took a lockdown order and died before it said so: the order it kept (or
            // not) decides where it stands at the next boot.
            let site = self.backend.signing.verifying_key();
            let kept = self
                .flash
                .as_mut()
                .and_then(|f| Store::new(f, LAYOUT).ok())
                .and_then(|mut store| store.lockdown().ok().flatten())
                .and_then(|order| LockdownOrder::verify(&order, &site).ok());
            self.pos.lockdown_kept_in_flash(kept.is_some_and(|o| o.on));
        }
        let in_flash = self.outbox_ids();
        let stored: BTreeSet<u64> = self.backend.stored.borrow().keys().copied().collect();
        for id in self.armed.take().unwrap_or_default() {
            if !in_flash.contains(&id)
                && !stored.contains(&id)
                && self.emitted.remove(&id).is_some()
            {
                self.tally.events_emitted -= 1;
            }
        }
        for (id, body) in late {
            if in_flash.contains(&id) {
                self.emit(id, body);
            }
        }
        let until = self.t + self.rng.range(SEC, 10 * SEC);
        self.mains_off_until = self.mains_off_until.max(until);
        self.schedule(until, Ev::PowerOn);
    }

    /// The reference's entry as a planted bug in the reference bends it (subtle differences the
    /// exact checker must notice): an exclusive `valid_until`, slots ending a minute late.
    fn planted_entry(&self, entry: &RefEntry) -> RefEntry {
        let mut e = entry.clone();
        match self.cfg.plant {
            Some(Plant::ReferenceExclusiveUntil) if e.valid_until != 0 => e.valid_until -= 1,
            Some(Plant::ReferenceSlotMinuteLate) => {
                for s in &mut e.local {
                    s.end_min = s.end_min % 1440 + 1;
                }
            }
            _ => {}
        }
        e
    }

    /// ADR-011's table in the reference, or (planted) with the SCHEDULED-with-slots row wrong.
    fn planted_unsynced(&self, entry: &RefEntry) -> Want {
        match self.cfg.plant {
            Some(Plant::ReferenceWrongAdr011Row)
                if entry.access == AccessType::Scheduled && !entry.local.is_empty() =>
            {
                Want::Decided(Decision::Granted)
            }
            _ => reference::unsynced(entry),
        }
    }

    /// A door uses only lists the backend announced to it (the digest in the signed answer).
    fn check_announced(&mut self, generation: u64) {
        if !self.announced.contains(&generation) {
            self.violate(
                "list_as_announced",
                format!("list generation {generation} in use, never announced to this door"),
            );
        }
    }

    /// Planted: a shell that installs downloaded lists itself, without the digest check (as
    /// one of the four shells once did), then restarts the door.
    fn install_behind_the_doors_back(&mut self, list: &[u8]) {
        let Some(dev) = &mut self.dev else { return };
        let store = dev.door.store();
        let installed = store.begin_list(list.len() as u32).and_then(|mut d| {
            store.write_list(&mut d, list)?;
            store.commit_list(d)
        });
        if installed.is_ok() {
            self.power_down("reboot");
            self.schedule(self.t + SEC, Ev::PowerOn);
        }
    }

    fn flash_cut(&mut self) -> bool {
        self.dev
            .as_mut()
            .is_some_and(|d| d.door.store().flash().is_cut())
    }

    /// An event the door wrote to its outbox: kept for the lost-event check, then checked.
    fn record(&mut self, id: u64, event: Event) {
        self.emit(id, EventBody::from_event(&event));
        let mono = self.mono().as_micros() as i64;
        self.pos.event(&event, mono);
        match event {
            Event::Decision {
                credential,
                decision,
            } => self.check_decision(credential, decision),
            Event::Report { basis, .. } => {
                self.check_report(basis);
                if matches!(self.cfg.plant, Some(Plant::DuplicateReport)) {
                    self.check_report(basis);
                }
            }
            Event::ActionsDropped { count } => {
                self.violate("dropped_actions", format!("{count} actions dropped"));
            }
            _ => {}
        }
    }

    fn emit(&mut self, id: u64, body: EventBody) {
        self.tally.events_emitted += 1;
        if let Some(armed) = &mut self.armed {
            armed.push(id);
        }
        if self
            .emitted
            .insert(id, Stored { t: self.t, body })
            .is_some()
        {
            self.violate("event_ids_unique", format!("event id {id} used twice"));
        }
    }

    fn send_ntp(&mut self, server: u8, request: [u8; PACKET_LEN]) {
        let Some(spec) = self.w.ntp.get(usize::from(server)) else {
            return;
        };
        if !self.network_up || spec.outages.contains(self.t) {
            return;
        }
        let boot = self.dev.as_ref().map_or(0, |d| d.boot);
        let (out, back) = if self.rng.chance(10_000) {
            // A congested path: the answer comes too late to be plausible.
            (
                self.rng.range(500_000, 900_000),
                self.rng.range(500_000, 900_000),
            )
        } else {
            (self.rng.range(2_000, 40_000), self.rng.range(2_000, 40_000))
        };
        let arrive = self.t + out;
        let hijack = self.hijacked_ntp.filter(|&(_, _, until)| self.t < until);
        if hijack.is_some_and(|(s, _, _)| s != server) {
            return; // the attacker drops the other servers' answers
        }
        let hijacked = hijack.map(|(_, offset, _)| offset);
        let lie = hijacked.or(spec.offset_at(self.t));
        // An honest server is within its stated accuracy (root distance 1.5 ms).
        let offset = lie.unwrap_or_else(|| self.rng.range(-400, 400));
        let receive = UnixTime::from_micros(self.w.start_utc_us + arrive + offset);
        let reply = ServerReply::synced(receive, receive.offset_micros(20));
        let packet = reply.encode(&request);
        self.schedule(
            arrive + 20 + back,
            Ev::NtpReply {
                boot,
                server,
                packet,
                lie,
            },
        );
    }

    /// The door POSTs an exchange: its bytes reach the backend after the uplink's delay (or
    /// never, and the client gives up).
    fn post(&mut self, exchange: Exchange) {
        let now = self.mono();
        let Some(dev) = &mut self.dev else { return };
        let boot = dev.boot;
        let mut body = vec![0u8; BODY_MAX];
        let Some(n) = dev.door.write_body(exchange, &mut body, now) else {
            return;
        };
        body.truncate(n);
        if let Exchange::Check { .. } = exchange {
            // What the door asks about, read with its key (the traffic itself is encrypted).
            let mut clear = body.clone();
            let key = self.backend.key.get().unwrap_or_default();
            if let Ok(n) = chronolock_core::protocol::open_request(&mut clear, &key) {
                if let Ok(c) = CheckRequest::parse(&clear[..n]) {
                    self.asked.push(cred_key(c.credential));
                }
            }
        }
        if !self.network_up {
            let failure = Failure::Unreachable;
            self.schedule(
                self.t + 3 * SEC,
                Ev::Failed {
                    boot,
                    exchange,
                    failure,
                },
            );
            return;
        }
        let out = if matches!(exchange, Exchange::Sync { .. }) && self.rng.chance(20_000) {
            // A congested uplink: some answers come close to or after the controller's 10 s
            // deadline (a late answer's time is refused; its acknowledgement still counts).
            self.fault("slow_sync");
            self.disturbed_at = self.t;
            self.rng.range(10_000, 9_000_000)
        } else {
            self.rng.range(10_000, 150_000)
        };
        self.schedule(
            self.t + out,
            Ev::Serve {
                boot,
                exchange,
                body,
            },
        );
    }

    /// How long an answer takes to come back: mostly a fraction of a second, now and then
    /// (a congested path) up to nine seconds.
    fn answer_delay(&mut self) -> i64 {
        if self.rng.chance(20_000) {
            self.disturbed_at = self.t;
            self.rng.range(10_000, 9_000_000)
        } else {
            self.rng.range(10_000, 150_000)
        }
    }

    /// Whether the backend answers this door now (up, and no attacker on the path).
    fn backend_reachable(&self) -> bool {
        let hijacked = self
            .hijacked_ntp
            .is_some_and(|(_, _, until)| self.t < until);
        self.w.backend_up(self.t) && !hijacked
    }

    /// The backend takes a watch (the server's own logic): answered at once if it holds
    /// something newer than the door has heard of, else held until it does or its wait ends.
    fn watch(&mut self, boot: u64, exchange: Exchange, body: &[u8]) {
        let delay = self.answer_delay();
        if !self.backend_reachable() {
            self.disturbed_at = self.t;
            let failure = Failure::Unreachable;
            let at = self.t + delay;
            return self.schedule(
                at,
                Ev::Failed {
                    boot,
                    exchange,
                    failure,
                },
            );
        }
        self.backend.now_t.set(self.t);
        let watch = match block_on(chronolock_backend::open_watch(&self.backend, body)) {
            Ok(Ok(w)) => w,
            refused => {
                self.disturbed_at = self.t;
                let status = match refused {
                    Ok(Err(e)) => e.status,
                    _ => 0,
                };
                self.violate(
                    "backend_accepts",
                    format!("{}: refused with HTTP {status}", exchange.path()),
                );
                let failure = Failure::Refused { status };
                let at = self.t + delay;
                return self.schedule(
                    at,
                    Ev::Failed {
                        boot,
                        exchange,
                        failure,
                    },
                );
            }
        };
        if matches!(block_on(watch.due(&self.backend)), Ok(Ok(true))) {
            self.answer_watch(boot, exchange, watch.answer(true), self.t + delay);
            return;
        }
        self.tally.watches_held += 1;
        if self.watches.len() >= WATCHES_HELD_MAX {
            let oldest = self.watches.remove(0);
            self.queue.remove(&oldest.timeout_answer);
        }
        // Unless something changes first, the wait ends in "nothing new": its answer is queued
        // now (one step fewer per watch; a watch every 25 s is most of what a door does).
        let ends = self.t + WATCH_HOLD;
        let at = ends + self.answer_delay();
        let timeout_answer = self.answer_watch(boot, exchange, watch.answer(false), at);
        self.watches.push(HeldWatch {
            boot,
            exchange,
            watch,
            ends,
            timeout_answer,
        });
    }

    /// The answer to a watch is on its way to the door, to arrive at `at`; returns its place
    /// in the queue.
    fn answer_watch(
        &mut self,
        boot: u64,
        exchange: Exchange,
        bytes: Vec<u8>,
        at: i64,
    ) -> (i64, u64) {
        self.schedule_keyed(
            at,
            Ev::Answer {
                boot,
                exchange,
                bytes,
                end: true,
            },
        )
    }

    /// The backend lets go of every watch it holds for the door (their queued answers with
    /// them) and returns them.
    fn drop_watches(&mut self) -> Vec<HeldWatch> {
        let held = std::mem::take(&mut self.watches);
        for w in &held {
            self.queue.remove(&w.timeout_answer);
        }
        held
    }

    /// Something for the door changed on the backend: every watch it holds that the change
    /// concerns is answered "sync now" (the push that lets an online door learn a lockdown
    /// within two seconds).
    fn wake_watches(&mut self) {
        // Planted: a backend that lets held watches wait out their 25 s.
        if self.cfg.plant == Some(Plant::BackendNoPush) || !self.w.backend_up(self.t) {
            return;
        }
        self.backend.now_t.set(self.t);
        for w in std::mem::take(&mut self.watches) {
            // A watch whose wait has ended is answered already ("nothing new" is on its way).
            let waiting = self.t < w.ends;
            if waiting && matches!(block_on(w.watch.due(&self.backend)), Ok(Ok(true))) {
                self.tally.watches_woken += 1;
                self.queue.remove(&w.timeout_answer);
                let at = self.t + self.answer_delay();
                self.answer_watch(w.boot, w.exchange, w.watch.answer(true), at);
            } else {
                self.watches.push(w);
            }
        }
    }

    /// Whether the running door (of boot `boot`) is still carrying out `exchange`.
    fn in_flight(&self, boot: u64, exchange: Exchange) -> bool {
        self.dev
            .as_ref()
            .is_some_and(|d| d.boot == boot && d.door.exchange_in_flight() == Some(exchange))
    }

    /// An attacker on the path sends a request the backend has just handled once more: it must
    /// be refused before anything changes (the door's events and status stay as they are).
    fn replay(&mut self, exchange: Exchange, body: &[u8], receive_us: i64) {
        self.fault("request_replayed");
        let b = &self.backend;
        let stored = b.stored.borrow().len();
        let answer = block_on(async {
            match exchange {
                Exchange::Sync { .. } => {
                    chronolock_backend::sync(b, &b.signing, body, receive_us, || receive_us).await
                }
                _ => chronolock_backend::check(b, body, receive_us / 1_000_000).await,
            }
        });
        let refused = matches!(&answer, Ok(Err(e)) if e.status == 409);
        let unchanged = b.stored.borrow().len() == stored;
        if !refused || !unchanged {
            let what = exchange.path();
            self.violate(
                "replay_refused",
                format!("a replayed {what} request was not refused before any change"),
            );
        }
    }

    /// The backend handles a request with the server's own logic, at the time it arrives.
    fn serve(&mut self, boot: u64, exchange: Exchange, body: Vec<u8>) {
        if let Exchange::Watch { .. } = exchange {
            return self.watch(boot, exchange, &body);
        }
        let back = self.answer_delay();
        if !self.backend_reachable() {
            self.disturbed_at = self.t;
            let failure = Failure::Unreachable;
            self.schedule(
                self.t + back,
                Ev::Failed {
                    boot,
                    exchange,
                    failure,
                },
            );
            return;
        }
        if matches!(exchange, Exchange::Sync { .. }) {
            self.tally.syncs += 1;
        }
        let held = self.rng.range(100, 3_000);
        let receive_us = self.w.start_utc_us + self.t;
        let b = &self.backend;
        b.now_t.set(self.t);
        let site_key = &b.signing;
        let answer = block_on(async {
            match exchange {
                Exchange::Enrol { .. } => {
                    let public = site_key.verifying_key().to_bytes();
                    let random = [self.door as u8; 32];
                    chronolock_backend::enrol(b, &public, &body, receive_us / 1_000_000, random)
                        .await
                        .map(|(a, _)| a)
                }
                Exchange::Sync { .. } => {
                    chronolock_backend::sync(b, site_key, &body, receive_us, || receive_us + held)
                        .await
                }
                Exchange::Check { .. } => {
                    chronolock_backend::check(b, &body, receive_us / 1_000_000).await
                }
                // Answered before it gets here (above).
                Exchange::Watch { .. } => Err(chronolock_backend::DeviceError::internal("watch")),
            }
        });
        if !matches!(exchange, Exchange::Enrol { .. }) && self.rng.chance(10_000) {
            self.replay(exchange, &body, receive_us);
        }
        let at = self.t + held + back;
        if let Exchange::Check { request } = exchange {
            if let Some(v) = self.backend.last_check.borrow_mut().take() {
                self.backend.verdicts.borrow_mut().insert(request, v);
            }
        }
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) if e.status == 409 && !self.in_flight(boot, exchange) => {
                // A request the door had already given up on (the network dropped while it
                // travelled) arrived after a newer one: rightly refused, and nobody waits for it.
                self.fault("stale_request_refused");
                self.disturbed_at = self.t;
                return;
            }
            Ok(Err(e)) => {
                let failure = Failure::Refused { status: e.status };
                let paired_before = self.backend.key.get().is_some();
                if matches!(exchange, Exchange::Enrol { .. }) && e.status == 403 && paired_before {
                    // The answer to the pairing that spent the code was lost on its way.
                    self.fault("pairing_answer_lost");
                    let later = self.t + self.rng.range(HOUR, 4 * HOUR);
                    self.schedule(later, Ev::Reinstall);
                } else {
                    self.violate("backend_accepts", format!("{}: {e}", exchange.path()));
                }
                self.schedule(
                    at,
                    Ev::Failed {
                        boot,
                        exchange,
                        failure,
                    },
                );
                return;
            }
            Err(_) => {
                self.violate("backend_accepts", "the backend's future waited".into());
                return;
            }
        };
        if self.rng.chance(10_000) {
            // The answer is lost on the way back: whatever the backend stored stays stored,
            // and the door's client gives up.
            self.fault("answer_lost");
            self.disturbed_at = self.t;
            let failure = Failure::Unreachable;
            self.schedule(
                self.t + HTTP_TIMEOUT,
                Ev::Failed {
                    boot,
                    exchange,
                    failure,
                },
            );
            return;
        }
        let mut answer = answer;
        if matches!(exchange, Exchange::Sync { .. }) && answer.len() > SYNC_RESPONSE_LEN {
            if let Some(v) = self.site.version_at(self.t) {
                self.announced.insert(v.generation);
            }
            // Now and then an attacker on the path swaps in another list the site signed (in
            // the field: another door's): only the digest in the authenticated answer tells.
            let later = self
                .site
                .version_at(self.t)
                .and_then(|v| self.site.version(v.generation + 1));
            if let Some(other) = later.filter(|_| self.rng.chance(20_000)) {
                self.fault("list_swapped_in_transit");
                answer.truncate(SYNC_RESPONSE_LEN);
                answer.extend_from_slice(&other.bytes);
                self.swapped = Some(other.bytes.to_vec());
            }
            // Planted: a resumed download's bytes start one byte too late.
            if self.cfg.plant == Some(Plant::BackendResumesOffByOne)
                && u32::from_le_bytes([answer[164], answer[165], answer[166], answer[167]]) > 0
            {
                answer[SYNC_RESPONSE_LEN..].rotate_left(1);
            }
            // Downloading and writing the new list to the spare slot takes a while; a power
            // cut meanwhile loses what is not in flash yet, and the door keeps the old list.
            let split = SYNC_RESPONSE_LEN + (answer.len() - SYNC_RESPONSE_LEN) / 2;
            let done = at + self.rng.range(20_000, 800_000);
            let rest = answer[split..].to_vec();
            let first = answer[..split].to_vec();
            self.schedule(
                at,
                Ev::Answer {
                    boot,
                    exchange,
                    bytes: first,
                    end: false,
                },
            );
            if self.t < self.w.fault_end && self.rng.chance(40_000) {
                // The connection breaks halfway: the next sync goes on from there.
                self.fault("download_interrupted");
                self.disturbed_at = self.t;
                let failure = Failure::Unreachable;
                self.schedule(
                    done,
                    Ev::Failed {
                        boot,
                        exchange,
                        failure,
                    },
                );
                return;
            }
            self.schedule(
                done,
                Ev::Answer {
                    boot,
                    exchange,
                    bytes: rest,
                    end: true,
                },
            );
            if self.t < self.w.fault_end && self.rng.chance(30_000) {
                // Aim a short power cut at the download.
                let cut = self.rng.range(at, done + 1);
                let until = cut + self.rng.range(SEC, 30 * SEC);
                self.schedule(cut, Ev::PowerCut { until });
            }
        } else {
            self.schedule(
                at,
                Ev::Answer {
                    boot,
                    exchange,
                    bytes: answer,
                    end: true,
                },
            );
        }
    }

    // ----- checks --------------------------------------------------------------------------

    /// Open first: a card's unlock comes before any flash write the decision causes (its
    /// event, the core's record), so a valid card never waits for the flash. A keypad entry's
    /// unlock comes after exactly one: its code's use, so that no power cut can let the code
    /// open twice (seed 7); its event still waits.
    fn check_opened_first(&mut self) {
        let Some((before, outbox_before)) = self.decided_at_changes else {
            return;
        };
        let typed = self.typing.as_ref().map(|(code, t, _)| (code.clone(), *t));
        let Some(dev) = self.dev.as_mut() else { return };
        let now = dev.door.store().flash().changes();
        let outbox = dev.door.outbox_len();
        let Some((code, typed)) = typed else {
            if now == before {
                self.tally.unlocks_opened_first += 1;
            } else {
                self.violate(
                    "open_first",
                    format!(
                        "{} flash writes between a decision and its unlock",
                        now - before
                    ),
                );
            }
            return;
        };
        let user = keypad_key(&code);
        let mut kept = None;
        let _ = dev.door.store().keypad_uses(|u| {
            if Some(u.user) == user {
                kept = Some(u);
            }
        });
        let spent = kept.is_some_and(|u| match typed {
            Typed::Hotp(c) => u.hotp_next > c,
            Typed::Totp(step) => u.last_totp_step.is_some_and(|s| s >= step),
            Typed::Wrong(_) => true,
        });
        if outbox != outbox_before {
            self.violate(
                "open_first",
                format!(
                    "{} flash writes between a decision and its unlock (events written before a keypad entry's unlock)",
                    outbox - outbox_before
                ),
            );
        } else if !spent {
            self.violate(
                "code_use_kept_first",
                format!(
                    "keypad:{} {typed:?} opened the lock before its use was in flash",
                    String::from_utf8_lossy(&code)
                ),
            );
        } else {
            self.tally.keypad_uses_kept_first += 1;
        }
    }

    pub(crate) fn violate(&mut self, invariant: &'static str, detail: String) {
        if self.violations.len() < 16 {
            self.violations.push(Violation {
                door: self.door,
                t_us: self.t,
                utc: format_utc(self.true_utc_us()),
                invariant,
                detail,
            });
        }
    }

    /// After every step: the clock's error bound contains true time (unless a lie the door was
    /// told explains it). (Dropped actions and requests are reported as they happen.)
    fn check_step(&mut self) {
        let t = self.t;
        let err = self.clock_error();
        let mut good = false;
        if let Some((e, b)) = err {
            if e.abs() <= b + BOUND_SLACK_US {
                good = true;
            } else if self.explained_by_lie(e, b) {
                self.tally.misled_clock_steps += 1;
                let trusted = self.dev.as_ref().is_some_and(|d| d.trusted_rtc_boot);
                if trusted && self.lie_source(e, b) == Some("ntp") {
                    self.violate(
                        "one_liar_after_reboot",
                        format!(
                            "a clock set from the RTC this door wrote after a network sync was stepped by a lying NTP server (off by {e} µs)"
                        ),
                    );
                }
            } else {
                self.tally.clock_bound_violations += 1;
                self.violate(
                    "clock_within_bound",
                    format!("clock off by {e} µs, bound {b} µs"),
                );
            }
        }
        if let Some(dev) = &mut self.dev {
            dev.good_clock_since = if good {
                Some(dev.good_clock_since.unwrap_or(t))
            } else {
                None
            };
        }
        let mono = self.mono().as_micros() as i64;
        if let Some(dev) = &self.dev {
            self.pos.step(mono);
            self.pos.door_holds(dev.door.controller().lockdown_seq(), t);
        }
        for (invariant, detail) in self.pos.take_findings() {
            self.violate(invariant, detail);
        }
    }

    /// Whether no fault touched the door's link to the backend since `from` (and the door has
    /// been on, paired and online all along, with the backend up).
    fn undisturbed_since(&self, from: i64) -> bool {
        let on = self
            .dev
            .as_ref()
            .is_some_and(|d| d.boot_t < from && d.door.identity().is_some());
        let backend_down = self
            .w
            .backend_outages
            .iter()
            .any(|(a, b)| a <= self.t && b > from);
        on && self.network_up && !backend_down && self.disturbed_at < from
    }

    /// A card of the site's secure cards is presented: mostly the genuine card to the
    /// PN532, one time in eight a copy of its UID on a card without the key (the PN532 reads
    /// it), one in sixteen a copy read by a UID-only reader. Chosen from the moment, not
    /// drawn: the door's draws stay as they were. Returns whether the PN532 reads it (the
    /// card in its field is set up).
    fn present_secure(&mut self, uid: &[u8]) -> bool {
        self.card = None;
        self.clone_presented = false;
        let Ok(uid7) = <[u8; chronolock_core::card::UID_LEN]>::try_from(uid) else {
            return false;
        };
        if !self.site.secure.contains(uid) {
            return false;
        }
        let pick = (self.t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
        let seed = self.t as u64 ^ u64::from(self.door);
        match pick {
            0 | 1 => {
                self.clone_presented = true;
                self.card = Some(crate::card::SoftCard::clone_of(uid7, seed));
                true
            }
            2 => {
                self.clone_presented = true;
                false
            }
            _ => {
                self.card = Some(crate::card::SoftCard::genuine(
                    uid7,
                    &self.site.card_master,
                    seed,
                ));
                true
            }
        }
    }

    /// A copy of a secure card's UID is never let in; with the secure entry in the door's
    /// list it is refused `DENIED_CARD_AUTH`, without one `DENIED_UNKNOWN` (`no_clone_granted`).
    fn check_clone(&mut self, credential: Credential, decision: Decision) {
        self.tally.clones_presented += 1;
        let held = self
            .installed_generation()
            .and_then(|g| self.site.version(g))
            .is_some_and(|v| v.entries.contains_key(&cred_key(credential)));
        let want = if held {
            Decision::DeniedCardAuth
        } else {
            Decision::DeniedUnknown
        };
        if decision == Decision::DeniedCardAuth {
            self.tally.clones_refused += 1;
        }
        if decision.is_granted() {
            self.tally.wrong_grants += 1;
        }
        if decision != want {
            self.violate(
                "no_clone_granted",
                format!(
                    "a copy of {credential}'s UID without its key: {}, want {}",
                    decision.as_str(),
                    want.as_str()
                ),
            );
        }
    }

    fn check_decision(&mut self, credential: Credential, decision: Decision) {
        self.tally.decisions += 1;
        if decision.is_granted() {
            self.tally.grants += 1;
        }
        if std::mem::take(&mut self.clone_presented) {
            return self.check_clone(credential, decision);
        }
        if matches!(credential, Credential::SecureCard { .. }) {
            self.tally.secure_presentations += 1;
            if decision.is_granted() {
                self.tally.secure_grants += 1;
            }
        }
        let key = cred_key(credential);
        let backed = self
            .conditional_ctx
            .as_ref()
            .is_some_and(|(k, g)| *k == key && *g);
        if let Some(i) = self.asked.iter().position(|a| *a == key) {
            self.asked.remove(i);
            // Asked before the door learned of a lockdown, decided after: refused all the same
            // (how the answer is worded does not matter; a grant does).
            if !self.pos.lockdown_on() {
                self.check_conditional(credential, decision, backed);
            } else if decision.is_granted() {
                self.tally.decision_mismatches += 1;
                self.tally.wrong_grants += 1;
                self.violate(
                    "lockdown_honoured",
                    format!(
                        "{credential} {} on the backend's answer after the door announced a lockdown",
                        decision.as_str()
                    ),
                );
            }
            return;
        }
        // A CONDITIONAL check that waited behind another exchange past its deadline was never
        // sent: the controller decided offline without asking.
        let conditional = self
            .installed_generation()
            .and_then(|g| self.site.version(g))
            .and_then(|v| v.entries.get(&key))
            .is_some_and(|e| e.access == AccessType::Conditional);
        if conditional && decision == Decision::DeniedOffline {
            return;
        }
        if let CredKey::Keypad(code) = &key {
            self.tally.keypad_decisions += 1;
            if decision.is_granted() {
                self.tally.keypad_grants += 1;
            }
            if self.check_keypad(code, decision) {
                return;
            }
        }
        let version = self
            .installed_generation()
            .and_then(|g| self.site.version(g));
        if let (Some(v), Some(now)) = (version, self.site.version_at(self.t)) {
            if v.generation < now.generation {
                self.tally.stale_list_decisions += 1;
            }
        }
        let entry = version.and_then(|v| v.entries.get(&key));
        let wall = self
            .dev
            .as_ref()
            .and_then(|d| d.door.controller().wall_time(self.mono()));
        let Some(entry) = entry else {
            if decision != Decision::DeniedUnknown {
                self.tally.decision_mismatches += 1;
                self.violate(
                    "decision_matches_reference",
                    format!(
                        "{credential} is not in the list, decided {}",
                        decision.as_str()
                    ),
                );
            }
            if decision.is_granted() {
                self.tally.wrong_grants += 1;
            }
            return;
        };
        // 0. Lockdown, as the door announced it: every known credential is refused but
        // EMERGENCY entries, which the rules below judge as always.
        let emergency = entry.access == AccessType::Emergency;
        if self.pos.lockdown_on() && !emergency {
            if decision == Decision::DeniedLockdown {
                self.tally.lockdown_denials += 1;
            } else {
                self.tally.decision_mismatches += 1;
                if decision.is_granted() {
                    self.tally.wrong_grants += 1;
                }
                self.violate(
                    "lockdown_honoured",
                    format!(
                        "{credential} {} after the door announced a lockdown",
                        decision.as_str()
                    ),
                );
            }
            return;
        }
        if decision == Decision::DeniedLockdown {
            self.tally.decision_mismatches += 1;
            self.violate(
                "lockdown_honoured",
                format!("{credential} DENIED_LOCKDOWN by a door that announced no lockdown"),
            );
            return;
        }
        if self.pos.lockdown_on() && decision == Decision::GrantedEmergency {
            self.tally.emergency_grants_in_lockdown += 1;
        }
        // 1. The door's own reading of the clock: the decision must be exactly the reference's.
        let want = match &wall {
            None => self.planted_unsynced(entry),
            Some(w) => reference::at_secs(&self.planted_entry(entry), w.unix_secs),
        };
        let true_us = self.true_utc_us();
        match want {
            Want::Ask => return self.check_conditional(credential, decision, backed),
            Want::Decided(d) if d != decision => {
                self.tally.decision_mismatches += 1;
                self.violate(
                    "decision_matches_reference",
                    format!(
                        "{credential}: door decided {}, reference {} at the door's time {:?}",
                        decision.as_str(),
                        d.as_str(),
                        wall.map(|w| format_utc(w.utc.as_micros()))
                    ),
                );
            }
            Want::Decided(_) => {}
        }
        let Some(w) = wall else {
            if decision.is_granted() && !reference::grants(entry, true_us.div_euclid(SEC)) {
                self.tally.unsynced_grants_denied_at_true_time += 1;
            }
            return;
        };
        // 2. True time, within the door's stated error bound.
        let bound = w.error_bound_ms as i64 * 1000;
        let shift = match self.cfg.plant {
            Some(Plant::ReferenceHourAhead) => HOUR,
            _ => 0,
        };
        let lo = (true_us - bound + shift).div_euclid(SEC);
        let hi = (true_us + bound + shift).div_euclid(SEC);
        let err = w.utc.as_micros() - true_us;
        let honest = err.abs() <= bound + BOUND_SLACK_US;
        if decision.is_granted() {
            match reference::any_in(entry, lo, hi, |s| reference::grants(entry, s)) {
                None => self.tally.unjudged_decisions += 1,
                Some(true) => {}
                Some(false) if !honest && self.explained_by_lie(err, bound) => {
                    self.tally.misled_grants += 1;
                    if self.tally.misled_examples.len() < 4 {
                        let source = self.lie_source(err, bound).unwrap_or("?");
                        let backend = if self.w.backend_up(self.t) {
                            "backend up"
                        } else {
                            "backend down"
                        };
                        let network = if self.network_up {
                            "network up"
                        } else {
                            "network down"
                        };
                        let rtc = if self.rtc.is_some() { "RTC" } else { "no RTC" };
                        self.tally.misled_examples.push(Violation {
                            door: self.door,
                            t_us: self.t,
                            utc: format_utc(true_us),
                            invariant: "misled_grant",
                            detail: format!(
                                "{credential} {} by a clock off by {err} µs (bound {bound} µs), set from a lying {source} ({network}, {backend}, {rtc})",
                                decision.as_str()
                            ),
                        });
                    }
                }
                Some(false) => {
                    self.tally.wrong_grants += 1;
                    self.violate(
                        "no_wrong_grant",
                        format!(
                            "{credential} granted; the reference denies at true time ± {bound} µs (clock off by {err} µs)"
                        ),
                    );
                }
            }
        }
        // 3. The admin's local-time intent, while the list's DST horizon holds.
        let intent = |s: i64| reference::local_intent(entry, &self.site.zone, s);
        let within_horizon = version.is_some_and(|v| hi < v.horizon_end);
        if honest && within_horizon && intent(lo).is_some() {
            self.tally.intent_checks += 1;
            // The list was compiled before a DST change that has happened since: the door is
            // on the slots of a later stretch.
            if reference::offset_changed_since_compiled(entry, lo) {
                self.tally.intent_checks_across_dst += 1;
            }
            let judged = if decision.is_granted() {
                reference::any_in(entry, lo, hi, |s| intent(s) == Some(true))
            } else if decision == Decision::DeniedTimeRestriction {
                reference::any_in(entry, lo, hi, |s| intent(s) == Some(false))
            } else {
                Some(true)
            };
            if judged == Some(false) {
                self.tally.intent_mismatches += 1;
                self.violate(
                    "local_schedule_intent",
                    format!(
                        "{credential} {} but the local schedule in {} says otherwise",
                        decision.as_str(),
                        self.site.zone_name
                    ),
                );
            }
        }
    }

    /// A keypad user types `<user code>*<otp>#`: the TOTP code of the true time step, the
    /// token's next HOTP code, the last entry again (a replay), or a wrong code.
    fn type_entry(&mut self, user: usize) {
        let Some(k) = self.site.keypad.get(user) else {
            return;
        };
        let secs = self.w.unix_secs(self.t);
        let mut choice = self.rng.below(10);
        // Six digits collide now and then: a replayed TOTP code that happens to be one of the
        // user's HOTP codes still ahead is a fresh HOTP code to the door, rightly accepted once.
        // Such a replay is not typed.
        if let (0, Some(Typed::Totp(step))) = (choice, self.last_typed.get(&user)) {
            let code = otp::totp(&k.totp, *step as i64 * 30, OtpParams::default());
            let hotp_end = self.hotp_token.get(&user).copied().unwrap_or(0) + 12;
            if (0..hotp_end).any(|c| otp::hotp(&k.hotp, c, 6) == code) {
                choice = 9;
            }
        }
        let again = choice == 0 && self.last_typed.contains_key(&user);
        let typed = match (choice, self.last_typed.get(&user)) {
            (0, Some(last)) => *last,
            (1, _) => {
                // Six digits collide now and then: a "wrong" code must be none that any door
                // could accept for this user (TOTP within two steps, any HOTP counter up to
                // the token's plus the look-ahead).
                let step = otp::totp_step(secs, 30).unwrap_or(0);
                let hotp_end = self.hotp_token.get(&user).copied().unwrap_or(0) + 12;
                let valid = |v: u32| {
                    (step.saturating_sub(2)..=step + 2)
                        .any(|s| otp::totp(&k.totp, s as i64 * 30, OtpParams::default()) == Ok(v))
                        || (0..hotp_end).any(|c| otp::hotp(&k.hotp, c, 6) == Ok(v))
                };
                let mut v = self.rng.below(1_000_000) as u32;
                while valid(v) {
                    v = self.rng.below(1_000_000) as u32;
                }
                Typed::Wrong(v)
            }
            (2..=4, _) => {
                let next = self.hotp_token.entry(user).or_default();
                let c = *next;
                *next += 1;
                Typed::Hotp(c)
            }
            _ => Typed::Totp(otp::totp_step(secs, 30).unwrap_or(0)),
        };
        let code = match typed {
            Typed::Totp(step) => otp::totp(&k.totp, step as i64 * 30, OtpParams::default()),
            Typed::Hotp(c) => otp::hotp(&k.hotp, c, 6),
            Typed::Wrong(v) => Ok(v),
        };
        let Ok(code) = code else { return };
        self.last_typed.insert(user, typed);
        let mut keys = k.code.clone();
        keys.push(b'*');
        keys.extend(format!("{code:06}").bytes());
        keys.push(b'#');
        let now = self.mono();
        self.typing = Some((k.code.clone(), typed, !again));
        if let Some(dev) = &mut self.dev {
            self.decided_at_changes =
                Some((dev.door.store().flash().changes(), dev.door.outbox_len()));
            dev.door.handle_keys(&keys, now);
            if self.cfg.plant == Some(Plant::StoreBeforeUnlock) {
                dev.door.store_pending();
            }
        }
        self.drain();
        self.decided_at_changes = None;
        self.typing = None;
    }

    /// The keypad's own part of a decision: a grant needs a right code never granted before;
    /// TOTP is refused as unsynced only while the clock cannot check it, and a fresh TOTP code
    /// is accepted by a clock within its bound. Returns true when the decision was the
    /// keypad's alone (no policy was applied).
    fn check_keypad(&mut self, code: &[u8], decision: Decision) -> bool {
        let typed = self
            .typing
            .as_ref()
            .filter(|(c, _, _)| c.as_slice() == code)
            .map(|(_, t, _)| *t);
        let new_code = self.typing.as_ref().is_some_and(|(_, _, new)| *new);
        let clock = self.clock_error();
        let totp_ready = clock.is_some_and(|(_, b)| b <= 15 * SEC);
        let honest = clock.is_some_and(|(e, b)| e.abs() <= b + BOUND_SLACK_US);
        let fail = match (decision, typed) {
            (_, None) => Some("a keypad decision without an entry".to_string()),
            (d, Some(Typed::Wrong(_))) if d.is_granted() => Some("a wrong code opened".into()),
            (d, Some(t)) if d.is_granted() => (!self.granted_codes.insert((code.to_vec(), t)))
                .then(|| format!("{t:?} opened the door a second time")),
            (Decision::DeniedClockUnsynced, _) if totp_ready => {
                Some("clock-unsynced feedback with a clock fit for TOTP".into())
            }
            (Decision::DeniedBadCode, Some(Typed::Totp(_))) if totp_ready && honest && new_code => {
                Some("a fresh TOTP code refused by a clock within its bound".into())
            }
            _ => None,
        };
        if let Some(detail) = fail {
            if decision.is_granted() {
                self.tally.wrong_grants += 1;
            }
            self.tally.decision_mismatches += 1;
            self.violate(
                "keypad_codes",
                format!(
                    "keypad:{} {}: {detail}",
                    String::from_utf8_lossy(code),
                    decision.as_str()
                ),
            );
        }
        !matches!(
            decision,
            Decision::Granted
                | Decision::GrantedEmergency
                | Decision::DeniedLockdown
                | Decision::DeniedNotYetValid
                | Decision::DeniedExpired
                | Decision::DeniedTimeRestriction
                | Decision::DeniedOffline
                | Decision::DeniedUnknown
        )
    }

    /// A CONDITIONAL decision: granted only on the backend's "granted", else denied.
    fn check_conditional(&mut self, credential: Credential, decision: Decision, backed: bool) {
        let ok = match decision {
            Decision::Granted => backed,
            Decision::DeniedUnknown | Decision::DeniedOffline => !backed,
            _ => false,
        };
        if !ok {
            self.tally.decision_mismatches += 1;
            if decision.is_granted() {
                self.tally.wrong_grants += 1;
            }
            self.violate(
                "conditional_follows_backend",
                format!("{credential} decided {}", decision.as_str()),
            );
        }
    }

    fn check_report(&mut self, basis: Basis) {
        self.tally.reports += 1;
        if basis == Basis::Uptime {
            self.tally.uptime_reports += 1;
        }
        let day = self.true_utc_us().div_euclid(DAY);
        let n = {
            let n = self.report_days.entry(day).or_default();
            *n += 1;
            *n
        };
        if n > 1 {
            let misled = self
                .clock_error()
                .is_some_and(|(e, b)| e.abs() > b + BOUND_SLACK_US && self.explained_by_lie(e, b));
            if misled {
                self.fault("misled_duplicate_report");
            } else {
                self.tally.duplicate_reports += 1;
                self.violate(
                    "one_report_per_utc_day",
                    format!("report #{} of UTC day {day} ({})", n, basis.as_str()),
                );
            }
        }
    }

    /// An hour after the report hour: a door that was on with a good clock through the whole
    /// hour must have reported that UTC day.
    fn probe_report(&mut self, day: i64) {
        let hour_start = day * DAY + 3 * HOUR - self.w.start_utc_us;
        let Some(dev) = &self.dev else { return };
        let good_since = dev.good_clock_since.unwrap_or(i64::MAX);
        let bound_ok = self.clock_error().is_some_and(|(_, b)| b < MIN);
        if dev.boot_t < hour_start - MIN
            && good_since < hour_start - MIN
            && bound_ok
            && !self.report_days.contains_key(&day)
        {
            self.tally.missed_reports += 1;
            self.violate(
                "daily_report",
                format!("no report for UTC day {day} though on with a good clock"),
            );
        }
    }

    /// After the quiet period: every event emitted is stored by the backend exactly as emitted,
    /// or (emitted in the last minutes) still waits in the door's outbox.
    fn finish(&mut self) {
        self.tally.position = self.pos.tally.clone();
        let outbox = self.outbox_ids();
        let stored = self.backend.stored.take();
        self.tally.events_delivered = stored.len() as u64;
        self.tally.resent_events = self.backend.resent.get();
        let mut lost = 0u64;
        let mut first = None;
        for (id, e) in &self.emitted {
            let ok = match stored.get(id) {
                Some(s) => s.body == e.body,
                None => e.t >= self.w.end - IN_FLIGHT_AT_END && outbox.contains(id),
            };
            if !ok {
                lost += 1;
                first.get_or_insert((*id, e.clone()));
            }
        }
        let phantom = stored
            .keys()
            .filter(|id| !self.emitted.contains_key(id))
            .count();
        self.tally.lost_events = lost;
        if let Some((id, e)) = first {
            self.violate(
                "no_lost_event",
                format!(
                    "{lost} events never reached the backend, first id {id} at {}: {:?}",
                    format_utc(self.w.start_utc_us + e.t),
                    e.body
                ),
            );
        }
        if phantom > 0 {
            self.violate(
                "no_phantom_event",
                format!("{phantom} stored events were never emitted"),
            );
        }
    }

    /// The ids waiting in the door's outbox, read from its flash.
    fn outbox_ids(&mut self) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        let mut collect = |bytes: &[u8]| {
            if let Ok((e, _)) = WireEvent::read(bytes) {
                ids.insert(e.id);
            }
            true
        };
        match (&mut self.dev, &mut self.flash) {
            (Some(dev), _) => {
                let _ = dev.door.store().peek_events(&mut collect);
            }
            (None, Some(flash)) => {
                if let Ok(mut store) = Store::new(flash, LAYOUT) {
                    let _ = store.peek_events(&mut collect);
                }
            }
            (None, None) => {}
        }
        ids
    }
}

/// A credential as the list's key.
fn cred_key(credential: Credential) -> CredKey {
    match credential {
        Credential::Card { uid, len } | Credential::SecureCard { uid, len } => {
            CredKey::Card(uid[..usize::from(len)].to_vec())
        }
        Credential::Keypad { code, len } => CredKey::Keypad(code[..usize::from(len)].to_vec()),
    }
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn format_utc(us: i64) -> String {
    Timestamp::from_microsecond(us)
        .map(|t| t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string())
        .unwrap_or_else(|_| format!("{us}µs"))
}
