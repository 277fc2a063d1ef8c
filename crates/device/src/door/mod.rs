//! The door, sans IO: everything a door controller keeps and does between the core
//! [`Controller`] and its hardware, once, for every shell (the ESP32-C3 firmware, the virtual
//! doors, the fleet simulation).
//!
//! A [`Door`] owns the controller, its flash ([`Store`]: the A/B allow-list slots, the settings,
//! the identity from pairing, the core's persisted record, keypad code use, and the event outbox
//! with the one event-id scheme), and the device protocol's exchanges with the backend: pairing,
//! sync (status and events up, sealed time, acknowledgements and a new list down, streamed into
//! the spare slot and installed only if it is the list the answer announced and the core accepts
//! it) and CONDITIONAL checks.
//!
//! Flash is reached directly through `embedded-storage`'s blocking [`NorFlash`]. Everything else
//! goes out as a [`Request`] ([`Door::poll_request`]) — send this NTP datagram, POST this
//! exchange's body, read or write the RTC, open the lock, show this feedback, wake me at
//! ([`Door::poll_timeout`]) — and comes back in through a `handle_*` call with the monotonic
//! `now`, as in the core. The shell never decides anything.
//!
//! Event ids: every event gets the next id when it is written to the outbox; the outbox and the
//! id of the newest acknowledged event (kept before the outbox is popped) give the next id at
//! boot. Ids never repeat on a door, so the backend stores a resent event once.

mod store;

use chronolock_core::allowlist::{AllowList, ListBytes, ListCheck, ListError, ListInfo};
use chronolock_core::controller::{Credential, Feedback, NONCE_LEN};
use chronolock_core::firmware::Version;
use chronolock_core::ntp::PACKET_LEN;
use chronolock_core::protocol::{
    self, DeviceStatus, Enrolled, Enrolment, EventBody, ListStream, PartialFirmware, PartialList,
    ProtocolError, SyncRequestWriter, SyncResponse, WireEvent, CHECK_RESPONSE_LEN,
    ENROL_RESPONSE_LEN, EVENT_HEAD_LEN, MAX_COUNTER, MAX_EVENT_PAYLOAD, SYNC_REQUEST_FIXED,
    SYNC_RESPONSE_LEN, TAG_LEN, WATCH_RESPONSE_LEN,
};
use chronolock_core::{Action, Config, Controller, Event, Instant, RtcReading, UnixTime};
use core::time::Duration;
use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};
use heapless::{Deque, Vec};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};

pub use store::{Layout, OtaNote, PartialDownload, Settings, Store, StoreError, EVENT_MAX};

use crate::ota::{FirmwareBoot, OtaDownload, OtaError};
use crate::setup::SetupForm;
use crate::slots::{Download, FlashList, SlotInfo};

/// Events carried by one sync at most; the rest wait for the next.
pub const SYNC_EVENTS_MAX: usize = 64;

/// A buffer this large holds any request body [`Door::write_body`] writes.
pub const BODY_MAX: usize =
    SYNC_REQUEST_FIXED + TAG_LEN + SYNC_EVENTS_MAX * (EVENT_HEAD_LEN + MAX_EVENT_PAYLOAD);

/// A download in progress is noted in flash each time this many more bytes are in, so that a
/// power cut costs at most this much (plus an erase sector) of it.
const CHECKPOINT_BYTES: u32 = 32 * 1024;

/// Bytes of a downloaded list checked per step ([`Door::handle_timeout`]): the check of a
/// 100,000-card list (1.6 MB) runs in steps this large, with cards read between them.
pub const INSTALL_STEP: u32 = 1024;

/// Requests waiting for the shell at most; the shell drains them after every call.
pub const REQUEST_QUEUE_LEN: usize = 32;

/// CONDITIONAL checks in flight at most (as many as the controller keeps).
const CHECKS_MAX: usize = 4;

/// Request counters reserved in flash at a time: one flash write per this many requests.
const COUNTER_BLOCK: u64 = 256;

/// An exchange the shell has not finished after this long is given up (its late answer is
/// ignored), so that a lost report never stops the door's exchanges.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// First wait before pairing again after the backend could not be reached; it doubles up to
/// [`ENROL_RETRY_MAX`].
const ENROL_RETRY_INITIAL: Duration = Duration::from_secs(5);
const ENROL_RETRY_MAX: Duration = Duration::from_secs(300);

/// A watch the server has not answered within this long is given up and sent again (the server
/// holds one for at most 30 s).
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// After a watch said "sync now", the next one waits this long, so that a server that keeps
/// saying so cannot make the door sync in a loop.
const WATCH_GAP: Duration = Duration::from_secs(1);
/// First wait before watching again after the backend could not be reached; it doubles up to
/// [`WATCH_RETRY_MAX`].
const WATCH_RETRY_INITIAL: Duration = Duration::from_secs(2);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(60);

/// An exchange with the backend. Each carries an id, so that an answer or a failure that comes
/// after the door has given up on its exchange (and started another) is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Pairing with a one-time code.
    Enrol {
        /// This attempt's id.
        id: u32,
    },
    /// The periodic sync.
    Sync {
        /// This exchange's id.
        id: u32,
    },
    /// A CONDITIONAL credential's check, by the controller's request id.
    Check {
        /// The controller's request id.
        request: u32,
    },
    /// The long poll the server answers as soon as something for this door changes (a list, a
    /// lockdown), so that the door hears of it within seconds, not at the next sync. It runs
    /// beside the other exchanges (one more connection), not after them.
    Watch {
        /// This watch's id.
        id: u32,
    },
}

impl Exchange {
    /// The path under the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Exchange::Enrol { .. } => "/device/v1/enrol",
            Exchange::Sync { .. } => "/device/v1/sync",
            Exchange::Check { .. } => "/device/v1/check",
            Exchange::Watch { .. } => "/device/v1/watch",
        }
    }
}

/// How an exchange failed, as the shell saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer: the server could not be reached, the connection broke, or it took too long.
    Unreachable,
    /// The server answered with an error status (e.g. a spent pairing code).
    Refused {
        /// The HTTP status.
        status: u16,
    },
}

/// What the door asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read the RTC and call [`Door::handle_rtc_read`]; with `at_tick`, at the next tick of its
    /// seconds register (at most a second).
    ReadRtc {
        /// Read at the next tick.
        at_tick: bool,
    },
    /// Write this time to the RTC (aligned to the second) and clear its oscillator-stop flag.
    WriteRtc {
        /// The time at the moment the request is taken.
        utc: UnixTime,
    },
    /// Send this datagram to NTP server `server` (an index into the configured servers) and
    /// hand any answer to [`Door::handle_ntp_response`] with the moment it arrived.
    SendNtp {
        /// Index of the server.
        server: u8,
        /// The request.
        packet: [u8; PACKET_LEN],
    },
    /// POST the body [`Door::write_body`] writes for this exchange to the server's base URL
    /// ([`Door::server_url`]) plus [`Exchange::path`]; hand the answer's bytes to
    /// [`Door::handle_answer`] as they arrive, then call [`Door::handle_answer_end`], or
    /// [`Door::handle_exchange_failed`].
    Post(Exchange),
    /// Measure the battery and call [`Door::handle_battery`].
    ReadBattery,
    /// Open the lock for this long.
    Unlock {
        /// Milliseconds.
        ms: u32,
    },
    /// Show this on the LEDs and buzzer.
    Feedback(Feedback),
    /// Sound the alarm (buzzer pulsing, red light) until told otherwise: the door was forced
    /// or held open.
    Alarm {
        /// On or off.
        sounding: bool,
    },
    /// Flash work is waiting (events for the outbox, the core's record): call
    /// [`Door::store_pending`] once the requests before this one are carried out. The lock
    /// opens first; nothing is written between a decision and its [`Request::Unlock`] but a
    /// keypad code's use, which reaches flash before the decision is made (a code must never
    /// open twice, even across a power cut). A shell whose flash stalls the CPU waits until no
    /// reader frame is arriving. Until then the work waits in RAM (a power cut loses it); any
    /// other input stores it first.
    Store,
    /// Boot app slot `slot` from now on (the bootloader's `otadata`) and restart: a checked
    /// update is ready, or an update on trial failed and the previous slot comes back.
    BootFirmware {
        /// 0 (`ota_0`) or 1 (`ota_1`).
        slot: u8,
    },
    /// Send this APDU to the card in the reader's field (a PN532's InDataExchange) and hand
    /// its answer to [`Door::handle_card_response`], or call [`Door::handle_card_lost`].
    CardApdu(chronolock_core::card::Apdu),
    /// Something to log or show; what must be kept is stored or waits for [`Request::Store`].
    Notice(Notice),
}

/// What the door tells the outside world (logs, the virtual door's panel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The site named other NTP servers (kept in flash): [`Request::SendNtp`]'s `server`
    /// indexes [`Door::ntp_servers`], which are these from now on. (The names stay in the
    /// door: a request queue of notices that each held four host names would cost kilobytes
    /// of RAM.)
    NtpServers {
        /// How many.
        count: u8,
    },
    /// A controller event, now in the outbox under this id.
    Event {
        /// Its outbox id.
        id: u64,
        /// The event.
        event: Event,
    },
    /// The RTC was written (also in the outbox, under this id).
    RtcWritten {
        /// Its outbox id.
        id: u64,
        /// The time written.
        utc: UnixTime,
    },
    /// Paired with a backend.
    Paired {
        /// The door's id there.
        door_id: u64,
        /// Whether the site key changed (a new site: its lists start afresh).
        new_site: bool,
    },
    /// Pairing failed.
    PairingFailed(ExchangeError),
    /// A sync answer checked out.
    Synced {
        /// Events the backend stored and the door dropped from its outbox.
        acked: u16,
        /// The door's list generation on the server.
        generation: u64,
        /// Length of the list announced (0: none).
        list_len: u32,
        /// Where the bytes that follow start in it (non-zero: an interrupted download goes on).
        list_offset: u32,
    },
    /// A sync failed.
    SyncFailed(ExchangeError),
    /// A new list is active.
    ListInstalled {
        /// Its generation.
        generation: u64,
        /// The slot (0: A, 1: B).
        slot: u8,
        /// Its length in bytes.
        len: u32,
    },
    /// A list was not installed (a downloaded one), or not used (the one in flash at boot).
    ListRejected(ListRejection),
    /// The outbox was full: the oldest events were dropped, this many this boot.
    OutboxFull {
        /// Events dropped since boot.
        dropped: u64,
    },
    /// Requests could not be queued for the shell (it did not drain them): this many.
    RequestsDropped {
        /// How many.
        count: u32,
    },
    /// A flash operation failed.
    Storage(StoreError),
    /// A lockdown order from the backend was not taken.
    LockdownRefused(chronolock_core::lockdown::LockdownError),
    /// A firmware update was refused; the running firmware stays.
    FirmwareRefused(OtaError),
    /// A firmware update is checked in flash; the door restarts into it (on trial).
    FirmwareReady {
        /// Its version.
        version: Version,
        /// Its app slot.
        slot: u8,
    },
    /// The firmware on trial completed a signed sync with a loaded list: it is kept.
    FirmwareConfirmed {
        /// Its version.
        version: Version,
    },
    /// The firmware on trial did not prove itself (or never started): the previous slot boots.
    FirmwareRolledBack {
        /// The version given up.
        version: Version,
        /// Boots it had.
        boots: u8,
    },
}

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeError {
    /// The shell could not complete it.
    Failed(Failure),
    /// The answer did not check out.
    Answer(ProtocolError),
    /// The answer ended early.
    Truncated,
    /// The door is not paired, or not online.
    NotReady,
}

impl core::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExchangeError::Failed(Failure::Unreachable) => f.write_str("backend unreachable"),
            ExchangeError::Failed(Failure::Refused { status }) => {
                write!(f, "backend refused: HTTP {status}")
            }
            ExchangeError::Answer(e) => write!(f, "answer refused: {e}"),
            ExchangeError::Truncated => f.write_str("answer ends early"),
            ExchangeError::NotReady => f.write_str("not paired or offline"),
        }
    }
}

/// Why a list was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListRejection {
    /// The bytes are not the list the sync answer announced (length and SHA-256).
    Digest,
    /// The download ended before the announced length.
    Incomplete {
        /// Bytes received.
        written: u32,
        /// Bytes announced.
        len: u32,
    },
    /// The core refused it (signature, records, generation).
    List(ListError),
    /// Flash refused it (a flash error).
    Store(StoreError),
    /// Larger than a list slot of this door.
    TooLarge {
        /// Its length.
        len: u32,
    },
    /// The answer goes on with a download this door does not hold (another list, or another
    /// offset).
    Resume,
}

impl core::fmt::Display for ListRejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ListRejection::Digest => f.write_str("not the list the answer announced"),
            ListRejection::Incomplete { written, len } => {
                write!(f, "list ends after {written} of {len} bytes")
            }
            ListRejection::List(e) => f.write_str(e.as_str()),
            ListRejection::Store(e) => write!(f, "{e}"),
            ListRejection::TooLarge { len } => write!(f, "list of {len} bytes is too large"),
            ListRejection::Resume => {
                f.write_str("answer resumes a download this door does not hold")
            }
        }
    }
}

/// How a door boots: the shell's part of its configuration.
#[derive(Clone, Debug)]
pub struct BootConfig {
    /// The controller's configuration (NTP servers, intervals, build-time floor). The site key
    /// and, unless `sync_interval_s` is set, the sync interval come from the stored identity.
    pub core: Config,
    /// Seconds between syncs, overriding what the backend asked for at pairing.
    pub sync_interval_s: Option<u32>,
    /// The setup button is held: the phone may set the time, and a new pairing is possible.
    pub setup_button: bool,
    /// The running firmware and its app slots, where the shell can update itself (`None`: no
    /// over-the-air update).
    pub firmware: Option<FirmwareBoot>,
}

struct SyncExchange {
    id: u32,
    nonce: [u8; NONCE_LEN],
    /// Decrypts the list as it arrives.
    stream: Option<ListStream>,
    /// How many events the request carried, and the newest one's id.
    sent: usize,
    newest_sent: u64,
    fixed: Vec<u8, SYNC_RESPONSE_LEN>,
    answer: Option<SyncResponse>,
    download: Option<Download>,
    /// The list the answer announced cannot be taken (its bytes are ignored).
    refused: bool,
    /// Bytes of the list still to come in this answer; a firmware piece follows them.
    list_left: u32,
    /// The firmware piece: its keystream, bytes still to come, the image offset of the next
    /// one, and whether this door takes it.
    fw_stream: Option<ListStream>,
    fw_left: u32,
    fw_at: u32,
    fw_taking: bool,
    /// A new update's signed header, gathered before its check.
    fw_header: Vec<u8, { chronolock_core::firmware::HEADER_LEN }>,
}

struct CheckExchange {
    request: u32,
    nonce: [u8; NONCE_LEN],
    credential: Credential,
    wall_us: Option<i64>,
    answer: Vec<u8, CHECK_RESPONSE_LEN>,
}

struct WatchExchange {
    id: u32,
    nonce: [u8; NONCE_LEN],
    since: Instant,
    answer: Vec<u8, WATCH_RESPONSE_LEN>,
}

struct EnrolExchange {
    id: u32,
    enrolment: Enrolment,
    answer: Vec<u8, ENROL_RESPONSE_LEN>,
}

/// A downloaded list being checked where it lies, a step at a time, before the slots switch.
struct Installing {
    download: Download,
    staged: SlotInfo,
    answer: SyncResponse,
    /// The check (`None` once it failed, or if it could not start).
    check: Option<ListCheck>,
    /// SHA-256 of the bytes read so far, against the digest the answer announced.
    digest: Sha256,
    /// The check failed: the rest is only hashed, to tell a list that is not the announced
    /// one from a bad list.
    failed: Option<ListError>,
    /// Bytes hashed.
    hashed: u32,
}

/// One door, from boot to power-off. A power cut drops it; the next boot starts from its flash.
pub struct Door<F> {
    store: Store<F>,
    ctl: Controller,
    settings: Settings,
    identity: Option<Enrolled>,
    /// The site's key from the identity, decompressed once (every sync answer is checked
    /// against it).
    site: Option<ed25519_dalek::VerifyingKey>,
    /// The slot whose list is in use (searched in place), and its header.
    active: Option<(SlotInfo, ListInfo)>,
    /// A downloaded list being checked.
    installing: Option<Installing>,
    /// Flash reads the last card or keypad decision took.
    list_reads: u32,
    rng: ChaCha8Rng,
    requests: Deque<Request, REQUEST_QUEUE_LEN>,
    dropped_requests: u32,
    next_event_id: u64,
    outbox_len: usize,
    outbox_dropped: u64,
    battery_mv: u16,
    network_up: bool,
    enrol: Option<EnrolExchange>,
    enrol_at: Option<Instant>,
    enrol_backoff: Duration,
    sync: Option<SyncExchange>,
    /// How far an interrupted list download got (as in flash).
    partial: Option<PartialDownload>,
    checks: Vec<CheckExchange, CHECKS_MAX>,
    /// The id the next enrolment or sync exchange gets.
    next_exchange: u32,
    /// The exchange the shell is carrying out, and since when: one at a time, so that the
    /// request counters reach the server in order.
    in_flight: Option<(Exchange, Instant)>,
    /// Exchanges waiting for it (CONDITIONAL checks first).
    waiting: Deque<Exchange, 8>,
    /// The next request counter, and the first not yet reserved in flash.
    next_counter: u64,
    counter_reserved: u64,
    last_now: Instant,
    /// Flash writes that wait until the lock has opened ([`Request::Store`]), in order.
    deferred: Deque<Deferred, DEFERRED_MAX>,
    /// The network came up with the clock invalid: until the first NTP answer, a valid clock
    /// or this instant, flash work waits ([`Door::flush`]) so that nothing (a write takes
    /// milliseconds, an erase tens) stands between network-up and the first NTP exchange.
    flash_hold: Option<Instant>,
    /// Whether the shell may open the setup access point at this boot.
    setup_access_point: bool,
    /// The running firmware, an update being written, and a new image on trial.
    firmware: Option<FirmwareBoot>,
    ota: Option<OtaDownload>,
    /// The update `ota` belongs to, as the backend announced it.
    ota_offer: Option<Offer>,
    /// An update this door refused: it says it holds all of it, so that the backend stops
    /// sending it.
    ota_refused: Option<Offer>,
    trial: Option<chronolock_core::firmware::Trial>,
    /// The watch (long poll) in flight, when the next one goes, and the wait after failures.
    watch: Option<WatchExchange>,
    watch_at: Option<Instant>,
    watch_backoff: Duration,
    /// What the last sync answer said the backend holds: the list generation and the lockdown
    /// order's sequence. A watch asks to hear of anything newer.
    heard_generation: u64,
    heard_lockdown: u64,
}

/// A firmware update as a sync answer announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Offer {
    version: u32,
    len: u32,
    digest: [u8; 32],
}

/// Flash writes that wait for [`Request::Store`]. (A keypad code's use never waits: see
/// [`Door::keep_keypad_use`].)
enum Deferred {
    /// An event for the outbox, its id assigned, as written.
    Event(Vec<u8, EVENT_MAX>),
    /// The core's record.
    Persist(chronolock_core::persist::Persisted),
}

/// Deferred writes held at most; beyond, they are written at once.
const DEFERRED_MAX: usize = 8;

/// How long flash work may wait for the first NTP answer after network-up (an NTP round's
/// deadline: the answer or its loss is known by then).
const FLASH_HOLD: Duration = Duration::from_secs(2);

impl<F: NorFlash + MultiwriteNorFlash> Door<F> {
    /// Boots a door at `now` (normally zero) from what its flash holds, with 32 bytes from the
    /// hardware RNG. The active list is checked in full where it lies before it is used. The
    /// first request asks for the RTC.
    pub fn boot(mut store: Store<F>, config: BootConfig, rng_seed: [u8; 32], now: Instant) -> Self {
        let mut notices: Vec<Notice, 4> = Vec::new();
        let mut note = |r: Result<(), StoreError>| {
            if let Err(e) = r {
                let _ = notices.push(Notice::Storage(e));
            }
        };
        let mut unreadable = false;
        let settings = store.settings().unwrap_or_else(|e| {
            unreadable = true;
            note(Err(e));
            None
        });
        let identity = store.identity().unwrap_or_else(|e| {
            unreadable = true;
            note(Err(e));
            None
        });
        let persisted = store.persisted().unwrap_or_else(|e| {
            note(Err(e));
            Default::default()
        });
        let mut cfg = config.core;
        if let Some(id) = &identity {
            cfg.site_key = Some(id.site_key);
        }
        // The site's NTP servers, once it has named them, replace the built-in ones.
        match store.ntp_servers() {
            Ok(Some(servers)) => cfg.ntp_servers = servers,
            Ok(None) => {}
            Err(e) => note(Err(e)),
        }
        if let Some(s) = config
            .sync_interval_s
            .or(identity.as_ref().map(|i| i.sync_interval_s))
        {
            cfg.backend_sync_interval = Duration::from_secs(u64::from(s.max(1)));
        }
        // The door's contact and held-open time, once the site has set them.
        match store.position() {
            Ok(Some(p)) => {
                cfg.door_contact = p.contact;
                cfg.held_open = held_open(&p);
            }
            Ok(None) => {}
            Err(e) => note(Err(e)),
        }
        let mut ctl = Controller::new(cfg, persisted, rng_seed, now);
        if let Some(id) = &identity {
            ctl.set_list_key(Some(protocol::list_key(&id.device_key)));
        }
        // A lockdown outlives a reboot: the order kept is checked again against the site key.
        let mut lockdown_refused = None;
        match store.lockdown() {
            Ok(Some(order)) => lockdown_refused = ctl.restore_lockdown(&order).err(),
            Ok(None) => {}
            Err(e) => note(Err(e)),
        }
        note(store.keypad_uses(|u| ctl.restore_keypad_use(u)));
        // Setup mode: not paired, or the button held; otherwise the core's own rule (a door
        // that has never completed a sync is still being set up).
        if identity.is_none() || config.setup_button {
            ctl.set_setup_mode(true);
        }
        // The outbox and the last acknowledged id give the next event id.
        let mut newest = store.acked().unwrap_or_else(|e| {
            note(Err(e));
            0
        });
        let partial = store.partial_download().unwrap_or_else(|e| {
            note(Err(e));
            None
        });
        // Counters below what flash says may have been sent before this boot.
        let counter_spent = store.counter_spent().unwrap_or_else(|e| {
            note(Err(e));
            // Unknown: the door cannot send a request it knows to be fresh.
            MAX_COUNTER + 1
        });
        let mut outbox_len = 0;
        note(store.peek_events(|bytes| {
            if let Ok((e, _)) = WireEvent::read(bytes) {
                newest = newest.max(e.id);
            }
            outbox_len += 1;
            true
        }));
        let mut rng = ChaCha8Rng::from_seed(rng_seed);
        // A stream of its own: the controller's nonces and the door's never coincide.
        rng.set_stream(1);
        let settings_missing = settings.as_ref().is_none_or(|s| s.ssid.is_empty());
        let trial = match &config.firmware {
            Some(_) => store.trial().unwrap_or_else(|e| {
                note(Err(e));
                None
            }),
            None => None,
        };
        let mut door = Door {
            store,
            ctl,
            settings: settings.unwrap_or_default(),
            site: identity
                .as_ref()
                .and_then(|i| ed25519_dalek::VerifyingKey::from_bytes(&i.site_key).ok()),
            identity,
            active: None,
            installing: None,
            list_reads: 0,
            rng,
            requests: Deque::new(),
            dropped_requests: 0,
            next_event_id: newest + 1,
            outbox_len,
            outbox_dropped: 0,
            battery_mv: 0,
            network_up: false,
            enrol: None,
            enrol_at: None,
            enrol_backoff: ENROL_RETRY_INITIAL,
            sync: None,
            partial,
            checks: Vec::new(),
            next_exchange: 0,
            in_flight: None,
            waiting: Deque::new(),
            next_counter: counter_spent.max(1),
            counter_reserved: counter_spent.max(1),
            last_now: now,
            deferred: Deque::new(),
            flash_hold: None,
            setup_access_point: !unreadable && (config.setup_button || settings_missing),
            firmware: config.firmware,
            ota: None,
            ota_offer: None,
            ota_refused: None,
            trial,
            watch: None,
            watch_at: None,
            watch_backoff: WATCH_RETRY_INITIAL,
            heard_generation: 0,
            heard_lockdown: 0,
        };
        door.heard_lockdown = door.ctl.lockdown_seq();
        for n in notices {
            door.push(Request::Notice(n));
        }
        if let Some(e) = lockdown_refused {
            door.push(Request::Notice(Notice::LockdownRefused(e)));
        }
        door.load_active_list(now);
        door.trial_at_boot();
        door.resume_firmware();
        door.drain(now);
        door
    }

    // ----- firmware updates ----------------------------------------------------------------

    /// The running firmware's version, if the shell updates itself.
    pub fn firmware_version(&self) -> Option<Version> {
        self.firmware.as_ref().map(|f| f.version)
    }

    /// The image on trial, if one is.
    pub fn firmware_trial(&self) -> Option<chronolock_core::firmware::Trial> {
        self.trial
    }

    /// A signed image's header arrived: checked (firmware key, newer, for this flash, fits a
    /// slot); if good, the spare app slot is made ready for its bytes. A download under way is
    /// abandoned.
    pub fn begin_firmware(&mut self, header: &[u8], now: Instant) {
        self.store_pending();
        self.ota = None;
        let Some(fw) = &self.firmware else {
            return self.push(Request::Notice(Notice::FirmwareRefused(OtaError::Geometry)));
        };
        match fw.begin(self.store.flash(), header) {
            Ok(d) => self.ota = Some(d),
            Err(e) => self.push(Request::Notice(Notice::FirmwareRefused(e))),
        }
        self.drain(now);
    }

    /// The next bytes of the image being downloaded.
    pub fn firmware_bytes(&mut self, bytes: &[u8], now: Instant) {
        self.store_pending();
        if let (Some(fw), Some(d)) = (&self.firmware, &mut self.ota) {
            if let Err(e) = fw.write(self.store.flash(), d, bytes) {
                self.ota = None;
                self.push(Request::Notice(Notice::FirmwareRefused(e)));
            }
        }
        self.drain(now);
    }

    /// The image is all in: checked in flash, the trial is kept, and the shell is asked to
    /// boot the new slot. Refused, the running firmware stays.
    pub fn end_firmware(&mut self, now: Instant) {
        self.store_pending();
        let (Some(fw), Some(d)) = (&self.firmware, self.ota.take()) else {
            return;
        };
        let slot = d.slot();
        let running = fw.running_slot;
        let offer = self.ota_offer.take();
        // The download is over, whatever the check says.
        let r = self.store.set_ota_note(None);
        self.stored(r);
        let Some(fw) = &self.firmware else { return };
        match fw.finish(self.store.flash(), d) {
            Ok(header) => {
                let trial = chronolock_core::firmware::Trial {
                    slot,
                    version: header.version,
                    previous: running,
                    boots: 0,
                };
                // The trial reaches flash before the boot slot changes: a power cut between
                // boots the old firmware, which finds a trial for a slot that never ran.
                match self.store.set_trial(Some(&trial)) {
                    Ok(()) => {
                        self.trial = Some(trial);
                        self.push(Request::Notice(Notice::FirmwareReady {
                            version: header.version,
                            slot,
                        }));
                        self.push(Request::BootFirmware { slot });
                    }
                    Err(e) => self.stored(Err(e)),
                }
            }
            Err(e) => {
                if let OtaError::Image(_) = e {
                    self.ota_refused = offer;
                }
                self.push(Request::Notice(Notice::FirmwareRefused(e)))
            }
        }
        self.drain(now);
    }

    /// Counts a boot of an image on trial; after too many without a confirmation, or if the
    /// bootloader did not start it, the previous slot comes back.
    fn trial_at_boot(&mut self) {
        use chronolock_core::firmware::{Trial, TrialBoot};
        let Some(fw) = &self.firmware else { return };
        let verdict = Trial::at_boot(self.trial, fw.running_slot, fw.version);
        match verdict {
            TrialBoot::None => {}
            TrialBoot::Running(t) => {
                let r = self.store.set_trial(Some(&t));
                self.stored(r);
                self.trial = Some(t);
            }
            TrialBoot::RollBack(t) => {
                let r = self.store.set_trial(None);
                self.stored(r);
                self.trial = None;
                self.push(Request::Notice(Notice::FirmwareRolledBack {
                    version: t.version,
                    boots: t.boots - 1,
                }));
                self.push(Request::BootFirmware { slot: t.previous });
            }
            TrialBoot::DidNotStart(t) => {
                let r = self.store.set_trial(None);
                self.stored(r);
                self.trial = None;
                self.push(Request::Notice(Notice::FirmwareRolledBack {
                    version: t.version,
                    boots: t.boots,
                }));
            }
        }
    }

    /// A firmware download a power cut interrupted goes on from its note in flash (the backend
    /// sends from where this door says it stands); one that no longer checks out is forgotten.
    fn resume_firmware(&mut self) {
        let Some(fw) = &self.firmware else { return };
        let note = match self.store.ota_note() {
            Ok(Some(note)) => note,
            Ok(None) => return,
            Err(e) => return self.stored(Err(e)),
        };
        match fw.resume::<F>(&note.header, note.flushed) {
            Ok(d) => {
                self.ota_offer = Some(Offer {
                    version: d.header().version.0,
                    len: note.len,
                    digest: note.digest,
                });
                self.ota = Some(d);
            }
            Err(_) => {
                let r = self.store.set_ota_note(None);
                self.stored(r);
            }
        }
    }

    /// Notes in flash how far the firmware download got (or that none is under way).
    fn note_firmware(&mut self) {
        let note = match (&self.ota, self.ota_offer) {
            (Some(d), Some(offer)) => Some(OtaNote {
                header: *d.raw_header(),
                len: offer.len,
                digest: offer.digest,
                flushed: d.flushed(),
            }),
            _ => None,
        };
        let r = self.store.set_ota_note(note.as_ref());
        self.stored(r);
    }

    /// A signed sync answer checked out: with a list loaded, the image on trial has shown it
    /// can do its work, and is kept.
    fn confirm_trial(&mut self) {
        if self.active.is_none() {
            return;
        }
        if let Some(t) = self.trial.take() {
            let r = self.store.set_trial(None);
            if r.is_err() {
                self.trial = Some(t);
                return self.stored(r);
            }
            self.push(Request::Notice(Notice::FirmwareConfirmed {
                version: t.version,
            }));
        }
    }

    // ----- inputs -------------------------------------------------------------------------

    /// A card was presented. The active list is searched in flash, where it lies.
    pub fn handle_card(&mut self, uid: &[u8], now: Instant) {
        self.with_list(|ctl, list| ctl.handle_card(uid, list, now));
        self.drain(now);
    }

    /// A card that speaks APDUs (ISO 14443-4, e.g. NTAG 424 DNA or DESFire) came into the
    /// reader's field announcing `uid`: a secure card's entry starts its check
    /// ([`Request::CardApdu`]).
    pub fn handle_secure_card(&mut self, uid: &[u8], now: Instant) {
        self.with_list(|ctl, list| ctl.handle_secure_card(uid, list, now));
        self.drain(now);
    }

    /// The card's answer (data and status word) to the last [`Request::CardApdu`].
    pub fn handle_card_response(&mut self, response: &[u8], now: Instant) {
        self.with_list(|ctl, list| ctl.handle_card_response(response, list, now));
        self.drain(now);
    }

    /// The site's card master keys in the active list, unsealed. Only a simulator needs them
    /// (to make a card personalised for the site); a door derives each card's key inside the
    /// controller.
    pub fn card_master_keys(&mut self) -> Option<chronolock_core::allowlist::CardMasterKeys> {
        let (slot, info) = self.active?;
        let key = protocol::list_key(&self.identity.as_ref()?.device_key);
        let source = FlashList::new(self.store.flash(), slot.data_offset, slot.len);
        AllowList::trusted(source, info).card_master_keys(&key)
    }

    /// The card left the field, or the reader failed, during a check.
    pub fn handle_card_lost(&mut self, now: Instant) {
        self.ctl.handle_card_lost(now);
        self.drain(now);
    }

    /// Keypad keys were pressed (`0`–`9`, `*`, `#`).
    pub fn handle_keys(&mut self, keys: &[u8], now: Instant) {
        self.with_list(|ctl, list| {
            for &k in keys {
                ctl.handle_key(k, list, now);
            }
        });
        self.drain(now);
    }

    /// Runs `decide` with the active list read in place, counts its flash reads and reports a
    /// flash that failed (the lookup that could not read denied).
    fn with_list(
        &mut self,
        decide: impl FnOnce(&mut Controller, Option<&AllowList<FlashList<'_, F>>>),
    ) {
        let (reads, failed) = match self.active {
            Some((slot, info)) => {
                let source = FlashList::new(self.store.flash(), slot.data_offset, slot.len);
                let list = AllowList::trusted(source, info);
                decide(&mut self.ctl, Some(&list));
                (list.source().reads(), list.source().failed())
            }
            None => {
                decide(&mut self.ctl, None);
                (0, None)
            }
        };
        self.list_reads = reads;
        if let Some(kind) = failed {
            self.push(Request::Notice(Notice::Storage(StoreError::Flash(kind))));
        }
    }

    /// The door-position contact reads open (`true`) or closed: at boot, and at every change.
    pub fn handle_door(&mut self, open: bool, now: Instant) {
        self.ctl.handle_door(open, now);
        self.drain(now);
    }

    /// The request-to-exit button was pressed: the lock opens, whatever else holds.
    pub fn handle_rex(&mut self, now: Instant) {
        self.ctl.handle_rex(now);
        self.drain(now);
    }

    /// The RTC's answer to [`Request::ReadRtc`].
    pub fn handle_rtc_read(&mut self, reading: RtcReading, now: Instant) {
        self.flush(now);
        self.ctl.handle_rtc_read(reading, now);
        self.drain(now);
    }

    /// The network came up or went down. Going down abandons every exchange in flight (a
    /// partly downloaded list is dropped; the active one is untouched).
    pub fn handle_network(&mut self, up: bool, now: Instant) {
        self.network_up = up;
        if up && self.ctl.wall_time(now).is_none() {
            // The first NTP request goes out before anything is written.
            self.flash_hold = Some(now + FLASH_HOLD);
        }
        self.flush(now);
        if !up {
            self.enrol = None;
            if let Some(sync) = self.sync.take() {
                self.keep_partial(sync);
            }
            // The shell's requests die with the network; what it reports of them later is
            // ignored.
            self.in_flight = None;
            self.watch = None;
            self.watch_at = None;
        } else {
            self.enrol_backoff = ENROL_RETRY_INITIAL;
            self.enrol_at = Some(now);
            self.watch_backoff = WATCH_RETRY_INITIAL;
            self.watch_at = Some(now);
        }
        self.ctl.handle_network(up, now);
        self.enrol_if_due(now);
        self.drain(now);
    }

    /// An NTP answer from server `server` arrived at `at`.
    pub fn handle_ntp_response(&mut self, server: u8, packet: &[u8], at: Instant) {
        // What waits is written after the clock is set (drain asks for it last).
        self.flush(at);
        self.ctl.handle_ntp_response(server, packet, at);
        self.flash_hold = None;
        self.drain(at);
    }

    /// The battery voltage (after [`Request::ReadBattery`], or whenever the shell measures it).
    pub fn handle_battery(&mut self, mv: u16, now: Instant) {
        self.store_pending();
        self.battery_mv = mv;
        self.ctl.handle_battery(mv, now);
        self.drain(now);
    }

    /// The setup page was submitted: the phone's time (heard only in setup mode) and the
    /// settings; a pairing code starts pairing (again, for a door already paired).
    pub fn handle_setup(&mut self, form: &SetupForm, now: Instant) {
        self.store_pending();
        let utc = UnixTime::from_micros((form.phone_time_ms as i64).saturating_mul(1000));
        self.ctl.handle_phone_time(utc, now);
        self.settings = Settings {
            ssid: form.ssid.clone(),
            password: form.password.clone(),
            server_url: form.server_url.clone(),
            pairing_code: form.pairing_code.clone(),
        };
        let saved = self.store.set_settings(&self.settings);
        self.stored(saved);
        // NTP servers for a site without internet; the site's, if it names any, win later.
        if let Ok(servers) = chronolock_core::config::parse_ntp_servers(&form.ntp_servers) {
            let kept = self.store.set_ntp_servers(&servers);
            self.stored(kept);
            self.ctl.set_ntp_servers(servers);
        }
        self.enrol = None;
        self.enrol_backoff = ENROL_RETRY_INITIAL;
        self.enrol_at = Some(now);
        self.handle_timeout(now);
    }

    /// Runs every timer that is due, and the next step of checking a downloaded list.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush(now);
        self.install_step(now);
        if let Some((exchange, since)) = self.in_flight {
            if now >= since + EXCHANGE_TIMEOUT {
                self.handle_exchange_failed(exchange, Failure::Unreachable, now);
            }
        }
        if self
            .watch
            .as_ref()
            .is_some_and(|w| now >= w.since + WATCH_TIMEOUT)
        {
            self.watch = None;
            self.watch_at = Some(now);
        }
        self.ctl.handle_timeout(now);
        self.enrol_if_due(now);
        self.watch_if_due(now);
        self.drain(now);
    }

    /// Writes the body of `exchange` (just asked for by [`Request::Post`]) into `buf`, at least
    /// [`BODY_MAX`] bytes; returns its length, or `None` if the exchange is no longer wanted.
    pub fn write_body(
        &mut self,
        exchange: Exchange,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<usize> {
        self.store_pending();
        match exchange {
            Exchange::Enrol { id } => {
                let request = self
                    .enrol
                    .as_ref()
                    .filter(|e| e.id == id)?
                    .enrolment
                    .request();
                let out = buf.get_mut(..request.len())?;
                out.copy_from_slice(&request);
                Some(request.len())
            }
            Exchange::Sync { id } => self.write_sync(id, buf, now),
            Exchange::Watch { id } => {
                let ident = self.identity.as_ref()?;
                let w = self.watch.as_ref().filter(|w| w.id == id)?;
                let body = protocol::watch_request(
                    ident.door_id,
                    w.nonce,
                    self.heard_generation,
                    self.heard_lockdown,
                    &ident.device_key,
                );
                let out = buf.get_mut(..body.len())?;
                out.copy_from_slice(&body);
                Some(body.len())
            }
            Exchange::Check { request } => {
                let id = *self.identity.as_ref()?;
                self.checks.iter().find(|c| c.request == request)?;
                if !self.ctl.conditional_pending(request) {
                    return None;
                }
                let counter = self.take_counter()?;
                let c = self.checks.iter().find(|c| c.request == request)?;
                let body = protocol::check_request(
                    id.door_id,
                    c.nonce,
                    counter,
                    c.wall_us,
                    &c.credential,
                    &id.device_key,
                );
                let out = buf.get_mut(..body.len())?;
                out.copy_from_slice(&body);
                Some(body.len())
            }
        }
    }

    /// The next bytes of the answer to `exchange`.
    pub fn handle_answer(&mut self, exchange: Exchange, bytes: &[u8], now: Instant) {
        self.store_pending();
        match exchange {
            Exchange::Enrol { id } => {
                if let Some(e) = self.enrol.as_mut().filter(|e| e.id == id) {
                    take_into(&mut e.answer, bytes);
                }
            }
            Exchange::Check { request } => {
                if let Some(c) = self.checks.iter_mut().find(|c| c.request == request) {
                    take_into(&mut c.answer, bytes);
                }
            }
            Exchange::Sync { id } => self.sync_answer(id, bytes, now),
            Exchange::Watch { id } => {
                if let Some(w) = self.watch.as_mut().filter(|w| w.id == id) {
                    take_into(&mut w.answer, bytes);
                }
            }
        }
        self.drain(now);
    }

    /// The answer to `exchange` is complete.
    pub fn handle_answer_end(&mut self, exchange: Exchange, now: Instant) {
        self.store_pending();
        match exchange {
            Exchange::Enrol { id } => {
                if let Some(e) = self.take_enrol(id) {
                    match e.enrolment.finish(&e.answer) {
                        Ok(enrolled) => self.pair(enrolled, now),
                        Err(err) => {
                            // A wrong or spent code will not get better by retrying: setup is
                            // needed again.
                            self.push(Request::Notice(Notice::PairingFailed(
                                ExchangeError::Answer(err),
                            )));
                        }
                    }
                }
            }
            Exchange::Check { request } => {
                if let Some(c) = self.take_check(request) {
                    let verdict = self.identity.as_ref().map(|id| {
                        protocol::check_response(&c.answer, &id.device_key, id.door_id, &c.nonce)
                    });
                    match verdict {
                        Some(Ok(granted)) => {
                            self.ctl.handle_conditional_answer(request, granted, now)
                        }
                        _ => self.ctl.handle_conditional_failed(request, now),
                    }
                }
            }
            Exchange::Sync { id } => self.sync_end(id, now),
            Exchange::Watch { id } => self.watch_end(id, now),
        }
        self.exchange_over(exchange);
        self.drain(now);
    }

    /// `exchange` failed.
    pub fn handle_exchange_failed(&mut self, exchange: Exchange, failure: Failure, now: Instant) {
        self.store_pending();
        match exchange {
            Exchange::Enrol { id } => {
                if self.take_enrol(id).is_some() {
                    self.push(Request::Notice(Notice::PairingFailed(
                        ExchangeError::Failed(failure),
                    )));
                    if failure == Failure::Unreachable {
                        self.enrol_at = Some(now + self.enrol_backoff);
                        self.enrol_backoff = (self.enrol_backoff * 2).min(ENROL_RETRY_MAX);
                    }
                }
            }
            Exchange::Check { request } => {
                if self.take_check(request).is_some() {
                    self.ctl.handle_conditional_failed(request, now);
                }
            }
            Exchange::Sync { id } => {
                if let Some(sync) = self.take_sync(id) {
                    self.keep_partial(sync);
                    self.sync_failed(ExchangeError::Failed(failure), now);
                }
            }
            Exchange::Watch { id } => {
                if self.watch.as_ref().is_some_and(|w| w.id == id) {
                    self.watch = None;
                    self.watch_failed(now);
                }
            }
        }
        self.exchange_over(exchange);
        self.drain(now);
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next thing the shell should do.
    pub fn poll_request(&mut self) -> Option<Request> {
        let r = self.requests.pop_front();
        if self.dropped_requests > 0 && self.requests.is_empty() {
            let count = core::mem::take(&mut self.dropped_requests);
            self.push(Request::Notice(Notice::RequestsDropped { count }));
        }
        r
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let enrol = self.enrol_at.filter(|_| self.network_up);
        let give_up = self.in_flight.map(|(_, since)| since + EXCHANGE_TIMEOUT);
        // A list being checked goes on at once (between other inputs).
        let install = self.installing.as_ref().map(|_| self.last_now);
        let watch = match &self.watch {
            Some(w) => Some(w.since + WATCH_TIMEOUT),
            None => self
                .watch_at
                .filter(|_| self.network_up && self.identity.is_some()),
        };
        let hold = self.flash_hold.filter(|_| !self.deferred.is_empty());
        [
            self.ctl.poll_timeout(),
            enrol,
            give_up,
            install,
            watch,
            hold,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The exchange the shell is carrying out for the door, if any (the door sends one at a
    /// time; one it has given up on is not in flight any more).
    pub fn exchange_in_flight(&self) -> Option<Exchange> {
        self.in_flight.map(|(e, _)| e)
    }

    /// The controller, to read its clock and state.
    pub fn controller(&self) -> &Controller {
        &self.ctl
    }

    /// The NTP servers [`Request::SendNtp`]'s `server` indexes: the site's, once it named
    /// them, else those the shell booted with.
    pub fn ntp_servers(&self) -> &[chronolock_core::config::HostName] {
        self.ctl.ntp_servers()
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The server's base URL.
    pub fn server_url(&self) -> &str {
        self.settings.server_url.as_str()
    }

    /// The identity from pairing, if paired.
    pub fn identity(&self) -> Option<&Enrolled> {
        self.identity.as_ref()
    }

    /// Whether the door is in setup mode (not paired, or the setup button held).
    pub fn setup_mode(&self) -> bool {
        self.ctl.setup_mode()
    }

    /// Whether the shell may open its setup access point at this boot: only for a door with no
    /// settings yet, or with the setup button held at power-up, and never when the flash could
    /// not be read (a read error is no reason to let anyone in range reconfigure the door).
    pub fn setup_access_point(&self) -> bool {
        self.setup_access_point
    }

    /// Events waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox_len
    }

    /// The active list's header, if a list is in use.
    pub fn list_info(&self) -> Option<ListInfo> {
        self.active.map(|(_, info)| info)
    }

    /// Flash reads the last card or keypad decision took (header counts are kept in RAM; a
    /// card is found in at most ⌈log2(cards + 1)⌉ reads, then its policy and slots).
    pub fn list_reads(&self) -> u32 {
        self.list_reads
    }

    /// Whether a downloaded list is being checked (it is installed when the check ends).
    pub fn installing(&self) -> bool {
        self.installing.is_some()
    }

    /// The largest list this door can install, in bytes: what a slot holds (the list is
    /// searched in place, so RAM sets no limit). Reported at every sync.
    pub fn list_capacity(&self) -> u32 {
        self.store.list_capacity()
    }

    /// The last battery reading, millivolts (0: none yet).
    pub fn battery_mv(&self) -> u16 {
        self.battery_mv
    }

    /// The store, for the shell's own reads (e.g. a status page), tests and simulations. Work
    /// waiting for [`Request::Store`] is not in it yet.
    pub fn store(&mut self) -> &mut Store<F> {
        &mut self.store
    }

    /// Writes the flash work that waits since [`Request::Store`]: events into the outbox and the
    /// core's record, in the order they were made.
    pub fn store_pending(&mut self) {
        while let Some(work) = self.deferred.pop_front() {
            match work {
                Deferred::Event(bytes) => self.write_event(&bytes),
                Deferred::Persist(p) => {
                    let r = self.store.set_persisted(&p);
                    self.stored(r);
                }
            }
        }
    }

    /// Whether flash work waits for [`Door::store_pending`].
    pub fn store_due(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Writes what waits, unless the first NTP exchange after network-up is under way
    /// ([`Door::flash_hold`]): then it waits on, in order, until the answer, a valid clock or
    /// the hold's end (a power cut meanwhile loses it, as it loses any work waiting for
    /// [`Request::Store`]; none of it was sent anywhere yet).
    fn flush(&mut self, now: Instant) {
        if !self.holding(now) {
            self.store_pending();
        }
    }

    /// Whether flash work is held for the first NTP exchange; ends the hold once it is over.
    fn holding(&mut self, now: Instant) -> bool {
        let held = self.flash_hold.is_some_and(|until| {
            self.network_up && now < until && self.ctl.wall_time(now).is_none()
        });
        if !held {
            self.flash_hold = None;
        }
        held
    }

    /// Ends this boot and gives the flash back (what a power cut keeps).
    pub fn into_store(self) -> Store<F> {
        self.store
    }

    // ----- internals ----------------------------------------------------------------------

    fn push(&mut self, r: Request) {
        if self.requests.push_back(r).is_err() {
            self.dropped_requests = self.dropped_requests.saturating_add(1);
        }
    }

    fn stored(&mut self, r: Result<(), StoreError>) {
        if let Err(e) = r {
            self.push(Request::Notice(Notice::Storage(e)));
        }
    }

    /// Carries out what the controller asked for: flash here, the rest to the shell.
    fn drain(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        while let Some(action) = self.ctl.poll_action() {
            match action {
                Action::ReadRtc { at_tick } => self.push(Request::ReadRtc { at_tick }),
                Action::WriteRtc { utc } => {
                    let body = EventBody::RtcWrite {
                        utc_us: utc.as_micros(),
                    };
                    let id = self.record(body, now);
                    self.push(Request::WriteRtc { utc });
                    self.push(Request::Notice(Notice::RtcWritten { id, utc }));
                }
                Action::SendNtp { server, packet } => {
                    self.push(Request::SendNtp { server, packet })
                }
                Action::SyncBackend { nonce } => self.start_sync(nonce, now),
                Action::Persist(p) => self.defer(Deferred::Persist(p)),
                Action::PersistKeypadUse(u) => self.keep_keypad_use(&u),
                Action::Unlock { ms } => self.push(Request::Unlock { ms }),
                Action::Feedback(f) => self.push(Request::Feedback(f)),
                Action::CardApdu(apdu) => self.push(Request::CardApdu(apdu)),
                Action::Alarm { sounding } => self.push(Request::Alarm { sounding }),
                Action::PersistLockdown(order) => {
                    let kept = self.store.set_lockdown(&order);
                    self.stored(kept);
                }
                Action::AskBackend {
                    request,
                    credential,
                } => self.start_check(request, credential, now),
                Action::ReadBattery => self.push(Request::ReadBattery),
                Action::Event(event) => {
                    let id = self.record(EventBody::from_event(&event), now);
                    self.push(Request::Notice(Notice::Event { id, event }));
                }
            }
        }
        // One Store request, last: after this input's unlock even if an earlier one is still
        // queued. None while the first NTP exchange is held for.
        if !self.deferred.is_empty()
            && !self.holding(now)
            && self.requests.back() != Some(&Request::Store)
        {
            for _ in 0..self.requests.len() {
                if let Some(r) = self.requests.pop_front() {
                    if r != Request::Store {
                        let _ = self.requests.push_back(r);
                    }
                }
            }
            self.push(Request::Store);
        }
    }

    /// A keypad code was accepted: its use reaches flash now, before the decision it leads to
    /// (the core asks for it first) and so before the lock opens. Written after the unlock, as
    /// the rest of a decision's work is, a power cut in between would let the same HOTP code
    /// (or TOTP step) open the door again after the reboot (fleet seed 7, door 17). One small
    /// write to the settings map — a millisecond or so, an erase of 4 KiB now and then — comes
    /// after a keypad entry that took seconds to type; cards still open before any write.
    fn keep_keypad_use(&mut self, u: &chronolock_core::keypad::KeypadUse) {
        let r = self.store.set_keypad_use(u);
        self.stored(r);
    }

    /// Queues work for [`Door::store_pending`]; [`Door::drain`] asks the shell for it after
    /// everything else the controller asked for (the unlock first).
    fn defer(&mut self, work: Deferred) {
        if self.deferred.is_full() {
            self.store_pending();
        }
        // Not full: emptied above if it was.
        let _ = self.deferred.push_back(work);
    }

    /// Gives an event its id and queues it for the outbox; returns the id.
    fn record(&mut self, body: EventBody, now: Instant) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        let wire = WireEvent {
            id,
            device_us: self.ctl.wall_time(now).map(|w| w.utc.as_micros()),
            body,
        };
        let mut buf = [0u8; EVENT_MAX];
        match wire.write(&mut buf) {
            Ok(n) => {
                let mut bytes = Vec::new();
                // `n` is at most EVENT_MAX.
                let _ = bytes.extend_from_slice(&buf[..n]);
                self.defer(Deferred::Event(bytes));
            }
            Err(_) => self.stored(Err(StoreError::Full)),
        }
        id
    }

    /// Writes an event into the outbox. A full outbox gives up its oldest events (the backend
    /// has been unreachable for very long; the newest matter most then).
    fn write_event(&mut self, bytes: &[u8]) {
        let mut dropped = 0;
        let result = loop {
            match self.store.push_event(bytes) {
                Err(StoreError::Full) if dropped < 64 && self.outbox_len > 0 => {
                    if let Err(e) = self.store.drop_oldest(1) {
                        break Err(e);
                    }
                    self.outbox_len -= 1;
                    dropped += 1;
                }
                other => break other,
            }
        };
        if dropped > 0 {
            self.outbox_dropped += dropped;
            self.push(Request::Notice(Notice::OutboxFull {
                dropped: self.outbox_dropped,
            }));
        }
        match result {
            Ok(()) => self.outbox_len += 1,
            Err(e) => self.stored(Err(e)),
        }
    }

    /// Checks the active slot's list in full where it lies, against the site key, before it is
    /// used (at boot: before any card can be presented).
    fn load_active_list(&mut self, now: Instant) {
        self.active = None;
        let slot = match self.store.active_list() {
            Ok(Some(slot)) => slot,
            Ok(None) => return,
            Err(e) => return self.stored(Err(e)),
        };
        if self.identity.is_none() {
            return; // Not paired: no key to check it with, and no site to serve.
        }
        let checked = self.site.ok_or(ListError::BadSignature).and_then(|key| {
            let source = FlashList::new(self.store.flash(), slot.data_offset, slot.len);
            AllowList::verify_in(source, &key).map(|l| l.info())
        });
        match checked {
            Ok(info) => {
                self.ctl.allowlist_installed(info, now);
                self.heard_generation = self.heard_generation.max(info.generation);
                self.active = Some((slot, info));
            }
            Err(e) => self.push(Request::Notice(Notice::ListRejected(ListRejection::List(
                e,
            )))),
        }
    }

    fn enrol_if_due(&mut self, now: Instant) {
        if self.enrol_at.is_some_and(|t| t <= now) {
            self.enrol_at = None;
            self.start_enrol();
        }
    }

    fn start_enrol(&mut self) {
        if !self.network_up
            || self.enrol.is_some()
            || self.settings.pairing_code.is_empty()
            || self.settings.server_url.is_empty()
        {
            return;
        }
        let mut secret = [0u8; 32];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut secret);
        self.rng.fill_bytes(&mut nonce);
        let id = self.exchange_id();
        self.enrol = Some(EnrolExchange {
            id,
            enrolment: Enrolment::new(secret, nonce, &self.settings.pairing_code),
            answer: Vec::new(),
        });
        self.post(Exchange::Enrol { id });
    }

    /// The enrolment answer checked out: keep the identity, forget the code, and sync at once.
    /// Paired to another site, the door stops using the old site's list at once, and its list
    /// generation floor starts again with the new site's key.
    fn pair(&mut self, enrolled: Enrolled, now: Instant) {
        let new_site = self
            .identity
            .as_ref()
            .is_none_or(|old| old.site_key != enrolled.site_key);
        // The new site's generation floor reaches flash before its identity does, so a power
        // cut between never leaves the new site held to the old site's generations.
        self.ctl.set_site_key(enrolled.site_key);
        self.drain(now);
        let saved = self.store.set_identity(&enrolled);
        if saved.is_err() {
            return self.stored(saved);
        }
        self.settings.pairing_code.clear();
        let saved = self.store.set_settings(&self.settings);
        self.stored(saved);
        self.identity = Some(enrolled);
        self.site = ed25519_dalek::VerifyingKey::from_bytes(&enrolled.site_key).ok();
        if self.sync.take().is_some() {
            // A sync under the old identity was under way: it is void.
            self.ctl.handle_backend_failed(now);
        }
        // So is a download the old pairing began.
        self.forget_partial();
        self.ctl
            .set_list_key(Some(protocol::list_key(&enrolled.device_key)));
        self.ctl.set_setup_mode(false);
        if new_site {
            self.active = None;
        }
        // A list of the old pairing still being checked is not installed.
        self.installing = None;
        // A watch of the old pairing is void; the new one starts from what the door holds.
        self.watch = None;
        self.watch_at = Some(now);
        self.heard_generation = self.active.map_or(0, |(_, info)| info.generation);
        self.heard_lockdown = self.ctl.lockdown_seq();
        self.push(Request::Notice(Notice::Paired {
            door_id: enrolled.door_id,
            new_site,
        }));
        self.ctl.handle_backend_configured(now);
    }

    fn start_sync(&mut self, nonce: [u8; NONCE_LEN], now: Instant) {
        if self.identity.is_none() || !self.network_up {
            // Not paired yet, or offline: the exchange fails at once.
            self.ctl.handle_backend_failed(now);
            return;
        }
        if let Some(old) = self.sync.take() {
            self.keep_partial(old);
        }
        let id = self.exchange_id();
        self.sync = Some(SyncExchange {
            id,
            nonce,
            stream: None,
            sent: 0,
            newest_sent: 0,
            fixed: Vec::new(),
            answer: None,
            download: None,
            refused: false,
            list_left: 0,
            fw_stream: None,
            fw_left: 0,
            fw_at: 0,
            fw_taking: false,
            fw_header: Vec::new(),
        });
        self.post(Exchange::Sync { id });
    }

    /// Asks the shell to carry out `exchange` now, or once the one in flight is over.
    fn post(&mut self, exchange: Exchange) {
        if self.in_flight.is_none() {
            self.in_flight = Some((exchange, self.last_now));
            return self.push(Request::Post(exchange));
        }
        let queued = match exchange {
            Exchange::Check { .. } => self.waiting.push_front(exchange),
            _ => self.waiting.push_back(exchange),
        };
        if queued.is_err() {
            // Only exchanges no longer wanted can fill the queue: drop the oldest of them.
            self.waiting.pop_back();
            let _ = self.waiting.push_back(exchange);
        }
    }

    /// The shell is done with `exchange`: the next waiting one that is still wanted goes.
    fn exchange_over(&mut self, exchange: Exchange) {
        if self.in_flight.is_some_and(|(e, _)| e == exchange) {
            self.in_flight = None;
        }
        if self.in_flight.is_some() {
            return;
        }
        while let Some(next) = self.waiting.pop_front() {
            let wanted = match next {
                Exchange::Enrol { id } => self.enrol.as_ref().is_some_and(|e| e.id == id),
                Exchange::Sync { id } => self.sync.as_ref().is_some_and(|s| s.id == id),
                // A check the controller has given up on (its deadline passed while it
                // waited) is not sent.
                Exchange::Check { request } => {
                    let pending = self.ctl.conditional_pending(request);
                    if !pending {
                        self.take_check(request);
                    }
                    pending && self.checks.iter().any(|c| c.request == request)
                }
                // A watch never waits in the queue.
                Exchange::Watch { .. } => false,
            };
            if wanted {
                self.in_flight = Some((next, self.last_now));
                return self.push(Request::Post(next));
            }
        }
    }

    /// The next request counter, reserved in flash first when its block is used up; `None`
    /// when flash cannot keep the reservation (a request that might repeat a counter is not
    /// sent).
    fn take_counter(&mut self) -> Option<u64> {
        if self.next_counter > MAX_COUNTER {
            return None;
        }
        if self.next_counter >= self.counter_reserved {
            let until = self
                .next_counter
                .saturating_add(COUNTER_BLOCK)
                .min(MAX_COUNTER + 1);
            let saved = self.store.set_counter_spent(until);
            if saved.is_err() {
                self.stored(saved);
                return None;
            }
            self.counter_reserved = until;
        }
        let c = self.next_counter;
        self.next_counter += 1;
        Some(c)
    }

    fn exchange_id(&mut self) -> u32 {
        let id = self.next_exchange;
        self.next_exchange = self.next_exchange.wrapping_add(1);
        id
    }

    fn take_enrol(&mut self, id: u32) -> Option<EnrolExchange> {
        self.enrol.take_if(|e| e.id == id)
    }

    fn take_sync(&mut self, id: u32) -> Option<SyncExchange> {
        self.sync.take_if(|s| s.id == id)
    }

    fn write_sync(&mut self, exchange: u32, buf: &mut [u8], now: Instant) -> Option<usize> {
        let id = self.identity?;
        self.sync.as_ref().filter(|s| s.id == exchange)?;
        // An interrupted download: the answer may carry only the rest of that list.
        let partial_list = match self.partial {
            Some(p) => match self.store.resume_point(&p) {
                Ok(0) => None,
                Ok(offset) => Some(PartialList {
                    generation: p.generation,
                    offset,
                }),
                Err(e) => {
                    self.push(Request::Notice(Notice::Storage(e)));
                    None
                }
            },
            None => None,
        };
        let wall = self.ctl.wall_time(now);
        let status = DeviceStatus {
            wall_us: wall.map(|w| w.utc.as_micros()),
            uptime_us: now.as_micros(),
            generation: self.ctl.persisted().list_generation,
            source: self.ctl.clock_source(),
            error_us: wall.map_or(0, |w| w.error_bound_ms.saturating_mul(1000)),
            battery_mv: self.battery_mv,
            partial_list,
            list_capacity: self.list_capacity(),
            firmware_version: self.firmware.as_ref().map_or(0, |f| f.version.0),
            partial_firmware: match (&self.ota, self.ota_offer, self.ota_refused) {
                (_, _, Some(refused)) => Some(PartialFirmware {
                    version: refused.version,
                    offset: refused.len,
                }),
                (Some(d), Some(offer), None) => Some(PartialFirmware {
                    version: offer.version,
                    offset: (chronolock_core::firmware::HEADER_LEN as u32 + d.written()),
                }),
                _ => None,
            },
        };
        let counter = self.take_counter()?;
        let sync = self.sync.as_mut().filter(|s| s.id == exchange)?;
        let mut w = SyncRequestWriter::new(buf, id.door_id, sync.nonce, counter, &status).ok()?;
        sync.sent = 0;
        let (sent, newest) = (&mut sync.sent, &mut sync.newest_sent);
        let peeked = self.store.peek_events(|bytes| {
            let Ok((event, _)) = WireEvent::read(bytes) else {
                return false;
            };
            if *sent == SYNC_EVENTS_MAX || w.push(&event).is_err() {
                return false;
            }
            *sent += 1;
            *newest = event.id;
            true
        });
        if let Err(e) = peeked {
            self.push(Request::Notice(Notice::Storage(e)));
        }
        Some(w.finish(&id.device_key))
    }

    fn sync_answer(&mut self, exchange: u32, mut bytes: &[u8], now: Instant) {
        let Some(id) = self.identity else { return };
        let Some(sync) = self.sync.as_mut().filter(|s| s.id == exchange) else {
            return;
        };
        if sync.answer.is_none() {
            bytes = take_into(&mut sync.fixed, bytes);
            if !sync.fixed.is_full() {
                return;
            }
            let parsed = self
                .site
                .ok_or(ProtocolError::BadSignature)
                .and_then(|site| {
                    SyncResponse::parse(
                        &mut sync.fixed,
                        &id.device_key,
                        &site,
                        id.door_id,
                        &sync.nonce,
                    )
                });
            let answer = match parsed {
                Ok(a) => a,
                Err(e) => {
                    self.sync = None;
                    return self.sync_failed(ExchangeError::Answer(e), now);
                }
            };
            sync.answer = Some(answer);
            self.confirm_trial();
            let Some(sync) = self.sync.as_mut().filter(|s| s.id == exchange) else {
                return;
            };
            sync.stream = Some(ListStream::new(
                &id.device_key,
                &sync.nonce,
                answer.list_offset,
            ));
            sync.list_left = answer.list_len.saturating_sub(answer.list_offset);
            let (sent, newest) = (core::mem::take(&mut sync.sent), sync.newest_sent);
            self.ctl.handle_backend_time(&answer.time, now);
            self.heard_generation = answer.generation;
            if let Some(order) = &answer.lockdown {
                self.heard_lockdown = chronolock_core::lockdown::LockdownOrder::peek_seq(order);
                if let Err(e) = self.ctl.handle_lockdown_order(order, now) {
                    self.push(Request::Notice(Notice::LockdownRefused(e)));
                }
            }
            if let Some(p) = answer.position {
                self.set_position(p);
            }
            if let Some(servers) = answer.ntp_servers() {
                if servers[..] != *self.ctl.ntp_servers() {
                    let kept = self.store.set_ntp_servers(&servers);
                    self.stored(kept);
                    let count = servers.len() as u8;
                    self.ctl.set_ntp_servers(servers);
                    self.push(Request::Notice(Notice::NtpServers { count }));
                }
            }
            let acked = usize::from(answer.acked).min(sent);
            if acked > 0 {
                // The server stores all of a request's events or none; should it ever take
                // fewer, keeping the newest sent id as acknowledged only skips some ids.
                match self.store.pop_events(acked, newest) {
                    Ok(()) => self.outbox_len = self.outbox_len.saturating_sub(acked),
                    Err(e) => self.stored(Err(e)),
                }
            }
            self.push(Request::Notice(Notice::Synced {
                acked: acked as u16,
                generation: answer.generation,
                list_len: answer.list_len,
                list_offset: answer.list_offset,
            }));
            if answer.list_len > 0 {
                self.begin_download(&answer, now);
            }
            self.offer_firmware(&answer, &id.device_key);
        }
        let Some(sync) = self.sync.as_mut().filter(|s| s.id == exchange) else {
            return;
        };
        // The list's bytes come first, then the firmware piece.
        let n = (sync.list_left as usize).min(bytes.len());
        let (list, firmware) = bytes.split_at(n);
        sync.list_left -= n as u32;
        self.list_bytes(list);
        self.firmware_piece(firmware);
    }

    /// Bytes of the list the answer carries, into the spare slot.
    fn list_bytes(&mut self, bytes: &[u8]) {
        let Some(sync) = &mut self.sync else { return };
        if bytes.is_empty() || sync.refused {
            return;
        }
        let (Some(d), Some(stream)) = (&mut sync.download, &mut sync.stream) else {
            return;
        };
        let before = d.flushed();
        // Decrypted a piece at a time into a small buffer on the way to flash.
        let mut written = Ok(());
        for piece in bytes.chunks(256) {
            let mut clear = [0u8; 256];
            let clear = &mut clear[..piece.len()];
            clear.copy_from_slice(piece);
            stream.apply(clear);
            written = self.store.write_list(d, clear);
            if written.is_err() {
                break;
            }
        }
        match written {
            Ok(()) if d.flushed() / CHECKPOINT_BYTES > before / CHECKPOINT_BYTES => {
                // A power cut from here on costs at most the bytes since this note.
                let partial = sync.answer.map(|a| partial_of(&a, d, false));
                if let Some(p) = partial {
                    self.set_partial(p);
                }
            }
            Ok(()) => {}
            Err(e) => {
                sync.refused = true;
                sync.download = None;
                let reason = match e {
                    // More bytes than the signed answer announced: not the announced list.
                    StoreError::Slots(crate::slots::SlotError::Overrun) => ListRejection::Digest,
                    e => ListRejection::Store(e),
                };
                self.forget_partial();
                self.push(Request::Notice(Notice::ListRejected(reason)));
            }
        }
    }

    /// The answer offers a piece of a firmware update: taken if this door updates itself and
    /// the piece starts a new download or goes on exactly where its own download stands.
    fn offer_firmware(&mut self, answer: &SyncResponse, device_key: &[u8; 32]) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if answer.firmware_piece == 0 {
            return;
        }
        sync.fw_left = answer.firmware_piece;
        sync.fw_at = answer.firmware_offset;
        sync.fw_stream = Some(ListStream::firmware(
            device_key,
            &sync.nonce,
            answer.firmware_offset,
        ));
        let offer = Offer {
            version: answer.firmware_version,
            len: answer.firmware_len,
            digest: answer.firmware_digest,
        };
        let header_len = chronolock_core::firmware::HEADER_LEN as u32;
        let goes_on = self.ota_offer == Some(offer)
            && self
                .ota
                .as_ref()
                .is_some_and(|d| header_len + d.written() == answer.firmware_offset);
        sync.fw_taking = self.firmware.is_some()
            && self.ota_refused != Some(offer)
            && (answer.firmware_offset == 0 || goes_on);
        if sync.fw_taking && answer.firmware_offset == 0 {
            // A new download (or the same one again from its start): the note of an older
            // one no longer says what the spare slot holds.
            self.ota = None;
            self.note_firmware();
            self.ota_offer = Some(offer);
            self.ota_refused = None;
        }
    }

    /// Bytes of the firmware piece the answer carries: the signed header is gathered and
    /// checked, then the image goes into the spare app slot.
    fn firmware_piece(&mut self, bytes: &[u8]) {
        let header_len = chronolock_core::firmware::HEADER_LEN;
        let Some(sync) = &mut self.sync else { return };
        let n = (sync.fw_left as usize).min(bytes.len());
        sync.fw_left -= n as u32;
        let Some(stream) = sync.fw_stream.as_mut().filter(|_| sync.fw_taking) else {
            return;
        };
        let Some(fw) = &self.firmware else { return };
        let mut failed = None;
        for piece in bytes[..n].chunks(256) {
            let mut clear = [0u8; 256];
            let clear = &mut clear[..piece.len()];
            clear.copy_from_slice(piece);
            stream.apply(clear);
            let mut rest = &clear[..];
            if (sync.fw_at as usize) < header_len {
                rest = take_into(&mut sync.fw_header, rest);
                sync.fw_at += (clear.len() - rest.len()) as u32;
                if sync.fw_header.is_full() && self.ota.is_none() {
                    match fw.begin(self.store.flash(), &sync.fw_header) {
                        Ok(d) => self.ota = Some(d),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            if let (Some(d), false) = (&mut self.ota, rest.is_empty()) {
                if let Err(e) = fw.write(self.store.flash(), d, rest) {
                    failed = Some(e);
                    break;
                }
                sync.fw_at += rest.len() as u32;
            }
        }
        let piece_done = sync.fw_left == 0;
        if let Some(e) = failed {
            sync.fw_taking = false;
            self.ota = None;
            if let OtaError::Image(_) = e {
                // The backend would send it again and again: say it is all here.
                self.ota_refused = self.ota_offer.take();
            }
            self.note_firmware();
            self.push(Request::Notice(Notice::FirmwareRefused(e)));
        } else if piece_done
            && self
                .ota
                .as_ref()
                .is_some_and(|d| d.written() < d.header().len)
        {
            // A power cut from here on costs at most the next piece.
            self.note_firmware();
        }
    }

    /// Starts the download the answer announced, or goes on with the interrupted one it
    /// resumes.
    fn begin_download(&mut self, answer: &SyncResponse, now: Instant) {
        // A list still being checked lies in the slot this download would erase: it is
        // finished first.
        while self.installing.is_some() {
            self.install_step(now);
        }
        let len = answer.list_len;
        let started = if len > self.store.list_capacity() {
            Err(ListRejection::TooLarge { len })
        } else if answer.list_offset == 0 {
            self.forget_partial();
            self.store.begin_list(len).map_err(ListRejection::Store)
        } else {
            self.resume_download(answer)
        };
        match started {
            Ok(d) => {
                if let Some(s) = &mut self.sync {
                    s.download = Some(d);
                }
            }
            Err(r) => {
                if let Some(s) = &mut self.sync {
                    s.refused = true;
                }
                self.push(Request::Notice(Notice::ListRejected(r)));
            }
        }
    }

    /// Goes on with the interrupted download, if the answer resumes exactly that one (same
    /// list, from where this door said it would go on).
    fn resume_download(&mut self, answer: &SyncResponse) -> Result<Download, ListRejection> {
        let partial = self.partial.filter(|p| {
            p.generation == answer.generation
                && p.len == answer.list_len
                && p.digest == answer.list_digest
        });
        let resumed = partial.ok_or(ListRejection::Resume).and_then(|p| {
            match self.store.resume_point(&p) {
                Ok(at) if at == answer.list_offset => {}
                Ok(_) => return Err(ListRejection::Resume),
                Err(e) => return Err(ListRejection::Store(e)),
            }
            // From now on bytes are written past the note: it no longer says exactly where
            // the download stopped.
            let inexact = PartialDownload { exact: false, ..p };
            self.store
                .set_partial_download(&inexact)
                .map_err(ListRejection::Store)?;
            self.partial = Some(inexact);
            self.store.resume_list(&p).map_err(|e| match e {
                StoreError::Slots(crate::slots::SlotError::Resume) => ListRejection::Resume,
                e => ListRejection::Store(e),
            })
        });
        if resumed.is_err() {
            self.forget_partial();
        }
        resumed
    }

    /// An exchange with a download under way ends early: note exactly how far it got, so that
    /// the next sync goes on from there.
    fn keep_partial(&mut self, sync: SyncExchange) {
        if let (Some(answer), Some(d), false) = (sync.answer, &sync.download, sync.refused) {
            if d.flushed() > 0 {
                self.set_partial(partial_of(&answer, d, true));
            }
        }
    }

    fn set_partial(&mut self, p: PartialDownload) {
        let saved = self.store.set_partial_download(&p);
        self.partial = saved.is_ok().then_some(p);
        self.stored(saved);
    }

    fn forget_partial(&mut self) {
        if self.partial.take().is_some() {
            let r = self.store.clear_partial_download();
            self.stored(r);
        }
    }

    fn sync_end(&mut self, exchange: u32, now: Instant) {
        let Some(sync) = self.take_sync(exchange) else {
            return;
        };
        if sync.answer.is_none() {
            return self.sync_failed(ExchangeError::Truncated, now);
        }
        if let Some(d) = sync.download {
            self.install(d, sync.answer, now);
        }
        // A firmware update: booted once complete, else the next piece is asked for at once.
        match &self.ota {
            Some(d) if d.written() == d.header().len => self.end_firmware(now),
            Some(_) if sync.answer.is_some_and(|a| a.firmware_piece > 0) => {
                self.ctl.handle_backend_configured(now)
            }
            _ => {}
        }
    }

    /// The site set the door's contact and held-open time: kept in flash if they changed.
    fn set_position(&mut self, p: protocol::DoorPosition) {
        let held = held_open(&p);
        let cfg = self.ctl.config();
        if cfg.door_contact == p.contact && cfg.held_open == held {
            return;
        }
        let kept = self.store.set_position(&p);
        self.stored(kept);
        self.ctl.set_door_position(p.contact, held);
    }

    fn watch_if_due(&mut self, now: Instant) {
        if !self.network_up
            || self.identity.is_none()
            || self.watch.is_some()
            || self.watch_at.is_none_or(|t| t > now)
        {
            return;
        }
        self.watch_at = None;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let id = self.exchange_id();
        self.watch = Some(WatchExchange {
            id,
            nonce,
            since: now,
            answer: Vec::new(),
        });
        self.push(Request::Post(Exchange::Watch { id }));
    }

    /// The watch's answer is complete: "sync now" starts a sync (the next watch waits a
    /// moment); "nothing new" (the server's wait ended) watches again at once.
    fn watch_end(&mut self, id: u32, now: Instant) {
        let Some(w) = self.watch.take_if(|w| w.id == id) else {
            return;
        };
        let verdict = self.identity.as_ref().map(|ident| {
            protocol::watch_response(&w.answer, &ident.device_key, ident.door_id, &w.nonce)
        });
        match verdict {
            Some(Ok(changed)) => {
                self.watch_backoff = WATCH_RETRY_INITIAL;
                if changed {
                    self.ctl.sync_soon(now);
                    self.watch_at = Some(now + WATCH_GAP);
                } else {
                    self.watch_at = Some(now);
                }
            }
            _ => self.watch_failed(now),
        }
    }

    fn watch_failed(&mut self, now: Instant) {
        self.watch_at = Some(now + self.watch_backoff);
        self.watch_backoff = (self.watch_backoff * 2).min(WATCH_RETRY_MAX);
    }

    fn sync_failed(&mut self, e: ExchangeError, now: Instant) {
        self.ctl.handle_backend_failed(now);
        self.push(Request::Notice(Notice::SyncFailed(e)));
    }

    /// A download is over: if complete, its check starts (carried on by
    /// [`install_step`](Self::install_step) until the slots switch or the list is refused).
    fn install(&mut self, mut d: Download, answer: Option<SyncResponse>, now: Instant) {
        if d.written() != d.len() {
            let reason = ListRejection::Incomplete {
                written: d.written(),
                len: d.len(),
            };
            // The answer ended early: the next sync goes on from here.
            if let (Some(a), true) = (answer, d.flushed() > 0) {
                self.set_partial(partial_of(&a, &d, true));
            }
            return self.push(Request::Notice(Notice::ListRejected(reason)));
        }
        // Complete: installed or refused, this download is over.
        self.forget_partial();
        let Some(answer) = answer else { return };
        let started = self
            .store
            .staged_list(&mut d)
            .map_err(ListRejection::Store)
            .and_then(|staged| {
                let key = self
                    .ctl
                    .site_key()
                    .ok_or(ListRejection::List(ListError::BadSignature))?;
                let source = FlashList::new(self.store.flash(), staged.data_offset, staged.len);
                let check = ListCheck::start(&source, &key);
                Ok((staged, check))
            });
        match started {
            Ok((staged, check)) => {
                self.installing = Some(Installing {
                    download: d,
                    staged,
                    answer,
                    failed: check.as_ref().err().copied(),
                    check: check.ok(),
                    digest: Sha256::new(),
                    hashed: 0,
                });
                self.install_step(now);
            }
            Err(reason) => self.refuse_list(reason),
        }
    }

    /// Checks the next [`INSTALL_STEP`] bytes of the list being installed; at the end, installs
    /// it if it is the list the answer announced (length and SHA-256), its signature and
    /// records check out and it is newer than the active one.
    fn install_step(&mut self, now: Instant) {
        let Some(mut inst) = self.installing.take() else {
            return;
        };
        let source = FlashList::new(self.store.flash(), inst.staged.data_offset, inst.staged.len);
        let step = match (&mut inst.check, inst.failed) {
            (Some(check), None) => {
                let digest = &mut inst.digest;
                let hashed = &mut inst.hashed;
                check.step(&source, INSTALL_STEP, |bytes| {
                    digest.update(bytes);
                    *hashed += bytes.len() as u32;
                })
            }
            // The check failed: only the hash goes on.
            (_, failed) => {
                let e = failed.unwrap_or(ListError::BadLayout);
                let mut buf = [0u8; 512];
                let mut spent = 0;
                while inst.hashed < inst.staged.len && spent < INSTALL_STEP {
                    let n = (inst.staged.len - inst.hashed).min(buf.len() as u32) as usize;
                    if let Err(e) = source.read(inst.hashed, &mut buf[..n]) {
                        inst.failed = Some(e);
                        break;
                    }
                    inst.digest.update(&buf[..n]);
                    inst.hashed += n as u32;
                    spent += n as u32;
                }
                if inst.hashed < inst.staged.len && source.failed().is_none() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        };
        if let Some(kind) = source.failed() {
            return self.refuse_list(ListRejection::Store(StoreError::Flash(kind)));
        }
        let result = match step {
            Ok(None) => {
                self.installing = Some(inst);
                return;
            }
            Err(e) if inst.failed.is_none() && inst.hashed < inst.staged.len => {
                // Finish hashing before saying why.
                inst.failed = Some(e);
                inst.check = None;
                self.installing = Some(inst);
                return;
            }
            Ok(Some(info)) => Ok(info),
            Err(e) => Err(e),
        };
        let announced = inst.staged.len == inst.answer.list_len
            && inst.digest.finalize()[..] == inst.answer.list_digest;
        let outcome = if !announced {
            Err(ListRejection::Digest)
        } else {
            result
                .and_then(|info| self.ctl.check_generation(&info).map(|()| info))
                .map_err(ListRejection::List)
        };
        let outcome = outcome.and_then(|info| {
            self.store
                .commit_list(inst.download)
                .map(|slot| (info, slot))
                .map_err(ListRejection::Store)
        });
        match outcome {
            Ok((info, slot)) => {
                self.active = Some((slot, info));
                self.ctl.allowlist_installed(info, now);
                self.push(Request::Notice(Notice::ListInstalled {
                    generation: info.generation,
                    slot: slot.index,
                    len: slot.len,
                }));
            }
            Err(reason) => self.refuse_list(reason),
        }
        self.drain(now);
    }

    /// A downloaded list is not installed; the active one stays.
    fn refuse_list(&mut self, reason: ListRejection) {
        self.installing = None;
        self.push(Request::Notice(Notice::ListRejected(reason)));
    }

    fn start_check(&mut self, request: u32, credential: Credential, now: Instant) {
        if self.identity.is_none() || !self.network_up {
            self.ctl.handle_conditional_failed(request, now);
            return;
        }
        if self.checks.is_full() {
            // The controller gave up on the oldest long ago (its deadline is 3 s).
            let old = self.checks.remove(0);
            self.ctl.handle_conditional_failed(old.request, now);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let check = CheckExchange {
            request,
            nonce,
            credential,
            wall_us: self.ctl.wall_time(now).map(|w| w.utc.as_micros()),
            answer: Vec::new(),
        };
        if self.checks.push(check).is_ok() {
            self.post(Exchange::Check { request });
        }
    }

    fn take_check(&mut self, request: u32) -> Option<CheckExchange> {
        let i = self.checks.iter().position(|c| c.request == request)?;
        Some(self.checks.remove(i))
    }
}

/// The note of how far download `d` of the list `answer` announced got.
fn partial_of(answer: &SyncResponse, d: &Download, exact: bool) -> PartialDownload {
    PartialDownload {
        generation: answer.generation,
        len: answer.list_len,
        digest: answer.list_digest,
        target: d.target(),
        flushed: d.flushed(),
        exact,
    }
}

/// Appends as much of `bytes` as fits; returns the rest.
fn take_into<'b, const N: usize>(buf: &mut Vec<u8, N>, bytes: &'b [u8]) -> &'b [u8] {
    let n = (N - buf.len()).min(bytes.len());
    let _ = buf.extend_from_slice(&bytes[..n]);
    &bytes[n..]
}

#[cfg(test)]
mod tests;

/// The held-open time a site's setting gives (0: the default 30 s).
fn held_open(p: &protocol::DoorPosition) -> Duration {
    Duration::from_secs(u64::from(if p.held_open_s == 0 {
        30
    } else {
        p.held_open_s
    }))
}
