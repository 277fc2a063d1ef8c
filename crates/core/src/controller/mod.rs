//! The door controller's state machine, sans IO.
//!
//! The shell creates one [`Controller`] per boot, feeds it what happened (`handle_*`, always with
//! the monotonic `now`), carries out what it asks for ([`poll_action`](Controller::poll_action))
//! and calls [`handle_timeout`](Controller::handle_timeout) when
//! [`poll_timeout`](Controller::poll_timeout) comes due. It owns the time-sync flows of both seeds:
//!
//! - seed 000, boot: read the RTC; a valid reading makes the clock valid at once;
//! - seed 000, online: NTP rounds at every network-up and then periodically, each good network
//!   sync written back to the RTC (which clears its oscillator-stop flag); the backend's
//!   authenticated time at every sync;
//! - seed 000, offline: re-read the RTC periodically while no network source keeps the clock;
//! - seed 000, initial setup offline: the phone sets the clock, the clock sets the RTC;
//! - ADR-011: without an RTC the clock is invalid until the first network answer; NTP is asked
//!   the moment the network is up and retried with a bounded backoff until it answers.

use core::time::Duration;

use heapless::Deque;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

mod door;
mod position;
mod secure_card;

pub use door::{Credential, Feedback};
pub use position::AlarmKind;

use crate::access::Decision;
use crate::clock::{Clock, ClockPolicy, Outcome, Refusal, Sample, Source};
use crate::config::{Config, MAX_NTP_SERVERS};
use crate::keypad::{Keypad, KeypadUse};
use crate::ntp::{self, NtpLimits, NtpReject, NtpRequest, NtpSample, PACKET_LEN};
use crate::persist::Persisted;
use crate::report::{Basis, ReportScheduler};
use crate::rtc::{self, RtcReading};
use crate::time::{duration_micros, Instant, UnixTime, WallTime};

/// How many actions can wait for the shell. One input produces at most a handful; the shell
/// drains the queue after every call.
pub const ACTION_QUEUE_LEN: usize = 32;

/// Length of the nonce that binds a backend sync's timestamps to its request.
pub const NONCE_LEN: usize = 16;

/// What the controller asks the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the RTC and call [`Controller::handle_rtc_read`]. With `at_tick`, wait (at most a
    /// second) for the seconds register to tick and read then, for millisecond precision; the
    /// boot read does not wait, so that the time is valid at once.
    ReadRtc {
        /// Read at the next tick of the seconds register.
        at_tick: bool,
    },
    /// Write this time to the RTC and clear its oscillator-stop flag. `utc` is the time at the
    /// moment the action is taken (the shell aligns the write to the second boundary).
    WriteRtc {
        /// The time to write.
        utc: UnixTime,
    },
    /// Send this packet by UDP to NTP server `server` (an index into `Config::ntp_servers`)
    /// and hand any answer to [`Controller::handle_ntp_response`].
    SendNtp {
        /// Index of the server.
        server: u8,
        /// The request bytes.
        packet: [u8; PACKET_LEN],
    },
    /// Run a sync exchange with the backend carrying this nonce; hand its authenticated
    /// timestamps to [`Controller::handle_backend_time`], or report
    /// [`Controller::handle_backend_failed`].
    SyncBackend {
        /// Fresh random nonce for this exchange.
        nonce: [u8; NONCE_LEN],
    },
    /// Store this record; hand it back at the next boot.
    Persist(Persisted),
    /// Store this keypad user's code usage (replay protection); hand it back at the next boot
    /// through [`Controller::restore_keypad_use`].
    PersistKeypadUse(KeypadUse),
    /// Open the lock for this long.
    Unlock {
        /// Milliseconds.
        ms: u32,
    },
    /// Show this on the LEDs and buzzer.
    Feedback(Feedback),
    /// Ask the backend whether this CONDITIONAL credential may enter; answer with
    /// [`Controller::handle_conditional_answer`] or [`Controller::handle_conditional_failed`].
    AskBackend {
        /// Request id to answer with.
        request: u32,
        /// The credential.
        credential: Credential,
    },
    /// Measure the battery and call [`Controller::handle_battery`].
    ReadBattery,
    /// Sound the alarm (buzzer and red light) until told otherwise.
    Alarm {
        /// On or off.
        sounding: bool,
    },
    /// Store this signed lockdown order; hand it back at the next boot through
    /// [`Controller::restore_lockdown`].
    PersistLockdown([u8; crate::lockdown::ORDER_LEN]),
    /// Send this APDU to the card in the reader's field and hand its answer to
    /// [`Controller::handle_card_response`] (or report [`Controller::handle_card_lost`]).
    CardApdu(crate::card::Apdu),
    /// Something to log or report.
    Event(Event),
}

/// Things worth telling the outside world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The clock's validity or source changed, or it was stepped.
    Clock {
        /// Whether the clock is valid now.
        valid: bool,
        /// Its source, when valid.
        source: Option<Source>,
        /// UTC now, when valid.
        utc: Option<UnixTime>,
        /// Error bound now in microseconds (0 when invalid).
        error_us: u64,
    },
    /// An access decision.
    Decision {
        /// Who.
        credential: Credential,
        /// What was decided.
        decision: Decision,
    },
    /// An EMERGENCY credential was used: tell the backend at once.
    Notify {
        /// Who.
        credential: Credential,
    },
    /// The daily battery report.
    Report {
        /// Battery voltage in millivolts.
        mv: u16,
        /// Whether it fired by the wall clock or by uptime.
        basis: Basis,
    },
    /// The shell did not drain the action queue and this many actions were lost (reported as
    /// soon as there is room again).
    ActionsDropped {
        /// How many.
        count: u32,
    },
    /// The door-position contact changed.
    Door {
        /// Open now.
        open: bool,
    },
    /// The request-to-exit button was pressed (an unlock follows).
    Rex,
    /// An alarm started.
    Alarm {
        /// Which.
        kind: AlarmKind,
    },
    /// An alarm ended: the door closed.
    AlarmCleared {
        /// Which.
        kind: AlarmKind,
    },
    /// The door's lockdown state changed.
    Lockdown {
        /// In lockdown now.
        on: bool,
    },
    /// A time from a source was not used.
    TimeRejected {
        /// The source.
        source: Source,
        /// Which server of that kind.
        server: u8,
        /// Why.
        reason: TimeRejection,
    },
}

/// Why a time was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeRejection {
    /// The NTP answer failed validation.
    Ntp(NtpReject),
    /// The clock's trust rules refused it.
    Clock(Refusal),
    /// It disagrees with a network-set clock and waits for a second, independent source.
    AwaitingSecondSource,
    /// A phone may set the time only in setup mode.
    NotInSetupMode,
    /// A backend answer whose nonce is not the one we sent, or that took implausibly long.
    BackendMismatch,
}

impl TimeRejection {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeRejection::Ntp(r) => r.as_str(),
            TimeRejection::Clock(r) => r.as_str(),
            TimeRejection::AwaitingSecondSource => "awaiting_second_source",
            TimeRejection::NotInSetupMode => "not_in_setup_mode",
            TimeRejection::BackendMismatch => "backend_mismatch",
        }
    }
}

/// The backend's timestamps from one sync exchange, after the shell's protocol layer has checked
/// the server's signature over them and the nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendTime {
    /// The nonce the device sent (and the server signed).
    pub nonce: [u8; NONCE_LEN],
    /// Server UTC when the request arrived.
    pub receive: UnixTime,
    /// Server UTC when the answer left.
    pub transmit: UnixTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RtcState {
    /// Boot: not read yet.
    Unknown,
    /// Nothing on the bus.
    Absent,
    /// Fitted; `trusted` is false while its oscillator-stop flag is set or its registers are bad.
    Present { trusted: bool },
}

#[derive(Clone, Debug, Default)]
struct NtpState {
    requests: [Option<NtpRequest>; MAX_NTP_SERVERS],
    /// Servers that sent a DENY or RSTR kiss: never asked again this boot (RFC 4330 §8).
    denied: [bool; MAX_NTP_SERVERS],
    /// Good answers of the running round, best first once the round ends.
    samples: heapless::Vec<(u8, NtpSample, bool), MAX_NTP_SERVERS>,
    round_deadline: Option<Instant>,
    next_round: Option<Instant>,
    backoff: Duration,
}

#[derive(Clone, Debug, Default)]
struct BackendState {
    pending: Option<([u8; NONCE_LEN], Instant)>,
    next_sync: Option<Instant>,
    backoff: Duration,
    /// Something came up during the sync under way: sync again as soon as it ends.
    again: bool,
}

/// One door controller, from boot to power-off.
pub struct Controller {
    cfg: Config,
    clock: Clock,
    rng: ChaCha8Rng,
    actions: Deque<Action, ACTION_QUEUE_LEN>,
    persisted: Persisted,
    setup_mode: bool,
    network_up: bool,
    rtc: RtcState,
    next_rtc_read: Option<Instant>,
    rtc_written_this_boot: Option<Instant>,
    last_network_sync: Option<Instant>,
    ntp: NtpState,
    backend: BackendState,
    dropped_actions: u32,
    /// The latest `now` the shell has given: `poll_timeout` projects from it.
    last_now: Instant,
    keypad: Keypad,
    report: ReportScheduler,
    pending_report: Option<Basis>,
    conditional: heapless::Vec<(u32, Credential, Instant), 4>,
    next_request: u32,
    /// Creation time of the installed allow-list: signed, so no earlier time can be true.
    list_created: Option<UnixTime>,
    /// Opens keypad secrets sealed to this device (from its device key).
    list_key: Option<[u8; 32]>,
    /// The door's contact, unlock, alarm and lockdown.
    position: position::Position,
    /// A secure card being checked.
    card_check: Option<secure_card::CardCheck>,
}

impl Controller {
    /// Boots a controller at `now` (normally zero) with the state persisted by the previous boot
    /// and 32 bytes from the shell's hardware RNG. The first action asks for the RTC.
    pub fn new(cfg: Config, persisted: Persisted, rng_seed: [u8; 32], now: Instant) -> Self {
        let clock = Clock::new(ClockPolicy {
            drift_ppm_max: cfg.drift_ppm_max,
            backend_fresh_for: cfg.backend_fresh_for,
        });
        let mut c = Controller {
            persisted,
            ntp: NtpState {
                backoff: cfg.ntp_retry_initial,
                ..NtpState::default()
            },
            backend: BackendState {
                backoff: cfg.backend_retry_initial,
                ..BackendState::default()
            },
            cfg,
            clock,
            rng: ChaCha8Rng::from_seed(rng_seed),
            actions: Deque::new(),
            setup_mode: !persisted.provisioned,
            network_up: false,
            rtc: RtcState::Unknown,
            next_rtc_read: None,
            rtc_written_this_boot: None,
            last_network_sync: None,
            dropped_actions: 0,
            last_now: now,
            keypad: Keypad::default(),
            report: ReportScheduler::new(persisted.last_report_day),
            pending_report: None,
            conditional: heapless::Vec::new(),
            list_key: None,
            next_request: 0,
            list_created: None,
            position: position::Position::default(),
            card_check: None,
        };
        c.push(Action::ReadRtc { at_tick: false });
        c
    }

    // ----- inputs -------------------------------------------------------------------------

    /// The RTC's answer to [`Action::ReadRtc`].
    pub fn handle_rtc_read(&mut self, reading: RtcReading, now: Instant) {
        self.tick(now);
        let first = self.rtc == RtcState::Unknown;
        match reading {
            RtcReading::Absent => {
                self.rtc = RtcState::Absent;
                self.next_rtc_read = None;
            }
            RtcReading::Invalid => self.rtc = RtcState::Present { trusted: false },
            RtcReading::Valid { unix_secs, at_tick } => {
                self.rtc = RtcState::Present { trusted: true };
                // Registers hold whole seconds: read at the tick, the time is the second itself;
                // read at any moment, it is somewhere within the second.
                let (within_us, read_error_us) = if at_tick {
                    (0, duration_micros(self.cfg.rtc_tick_error))
                } else {
                    (500_000, 500_000)
                };
                let sample = Sample {
                    source: Source::Rtc,
                    server: 0,
                    at: now,
                    utc: UnixTime::from_secs(unix_secs).offset_micros(within_us),
                    error_us: read_error_us + self.rtc_accumulated_error_us(unix_secs),
                };
                self.offer(sample, now);
                // An RTC this device wrote from network time, still running since (oscillator
                // flag clear, not behind the write): the clock it sets counts as network-set.
                let from_network = self.persisted.rtc_written_from_network
                    && self
                        .persisted
                        .rtc_written_at
                        .is_some_and(|w| unix_secs >= w.secs());
                if from_network && self.clock.source() == Some(Source::Rtc) {
                    self.clock.vouch_for_network_time();
                }
            }
        }
        if matches!(self.rtc, RtcState::Present { .. }) {
            self.next_rtc_read = Some(now + self.cfg.rtc_resync_interval);
        }
        if first && self.clock.utc(now).is_none() {
            self.emit_clock(now);
        }
    }

    /// The network came up or went down.
    pub fn handle_network(&mut self, up: bool, now: Instant) {
        self.tick(now);
        if up == self.network_up {
            return;
        }
        self.network_up = up;
        if up {
            // ADR-011 waits for nothing: ask at once.
            self.ntp.backoff = self.cfg.ntp_retry_initial;
            self.ntp.next_round = Some(now);
            self.backend.backoff = self.cfg.backend_retry_initial;
            self.backend.next_sync = Some(now);
            self.handle_timeout(now);
        } else {
            self.conditional_offline();
            self.ntp.requests = [None; MAX_NTP_SERVERS];
            self.ntp.samples.clear();
            self.ntp.round_deadline = None;
            self.ntp.next_round = None;
            self.backend = BackendState {
                backoff: self.cfg.backend_retry_initial,
                ..BackendState::default()
            };
        }
    }

    /// An answer from NTP server `server` arrived at `now`.
    pub fn handle_ntp_response(&mut self, server: u8, packet: &[u8], now: Instant) {
        self.tick(now);
        let idx = usize::from(server);
        let Some(request) = self.ntp.requests.get(idx).copied().flatten() else {
            return; // Nothing asked, or already answered: not worth an event.
        };
        let limits = NtpLimits {
            max_delay: self.cfg.ntp_max_delay,
            max_root_distance: self.cfg.ntp_max_root_distance,
            floor: self.ntp_floor(),
            era_anchor: self.era_anchor(now),
        };
        match ntp::parse_response(packet, &request, now, &limits) {
            Ok(sample) => {
                self.ntp.requests[idx] = None;
                let offered = self.clock.utc(now).is_none();
                if offered {
                    // The first answer makes an unset clock valid at once; the round's best
                    // sample refines it when the round ends.
                    self.offer(ntp_clock_sample(server, &sample), now);
                }
                let _ = self.ntp.samples.push((server, sample, offered));
            }
            Err(reason) => {
                // A packet that does not echo our cookie proves nothing about the server: keep
                // waiting for the real answer.
                if !matches!(
                    reason,
                    NtpReject::ZeroOrigin
                        | NtpReject::OriginMismatch
                        | NtpReject::TooShort
                        | NtpReject::NotAServerReply
                ) {
                    self.ntp.requests[idx] = None;
                }
                if reason.stop_querying() {
                    self.ntp.denied[idx] = true;
                }
                self.reject(Source::Ntp, server, TimeRejection::Ntp(reason));
            }
        }
        if self.ntp.round_deadline.is_some() && self.ntp.requests.iter().all(Option::is_none) {
            self.finish_ntp_round(now);
        }
    }

    /// The backend's authenticated timestamps for the sync carrying `time.nonce`.
    pub fn handle_backend_time(&mut self, time: &BackendTime, now: Instant) {
        self.tick(now);
        let Some((nonce, sent_at)) = self.backend.pending else {
            return;
        };
        if nonce != time.nonce {
            self.reject(Source::Backend, 0, TimeRejection::BackendMismatch);
            return;
        }
        self.backend.pending = None;
        // NTP's on-wire arithmetic (RFC 5905 §8) against the monotonic clock.
        let held_us = time.transmit.micros_since(time.receive);
        let delay_us = now.micros_since(sent_at) - held_us;
        if held_us < 0
            || delay_us < 0
            || delay_us as u64 > duration_micros(self.cfg.backend_response_timeout)
        {
            self.reject(Source::Backend, 0, TimeRejection::BackendMismatch);
            self.schedule_backend_retry(now);
            return;
        }
        let sample = Sample {
            source: Source::Backend,
            server: 0,
            at: now,
            utc: time.transmit.offset_micros(delay_us / 2),
            // Half the round trip, plus a millisecond for the server's own clock reading.
            error_us: delay_us as u64 / 2 + 1_000,
        };
        self.offer(sample, now);
        self.backend.backoff = self.cfg.backend_retry_initial;
        let again = core::mem::take(&mut self.backend.again);
        self.backend.next_sync = Some(if again {
            now
        } else {
            now + self.cfg.backend_sync_interval
        });
        if !self.persisted.provisioned {
            self.persisted.provisioned = true;
            self.setup_mode = false;
            self.push(Action::Persist(self.persisted));
        }
    }

    /// The backend sync could not be completed (unreachable, refused, bad signature).
    pub fn handle_backend_failed(&mut self, now: Instant) {
        self.tick(now);
        if self.backend.pending.take().is_some() {
            self.schedule_backend_retry(now);
        }
    }

    /// A phone at setup sent its time.
    pub fn handle_phone_time(&mut self, utc: UnixTime, now: Instant) {
        self.tick(now);
        if !self.setup_mode {
            self.reject(Source::Phone, 0, TimeRejection::NotInSetupMode);
            return;
        }
        let sample = Sample {
            source: Source::Phone,
            server: 0,
            at: now,
            utc,
            error_us: duration_micros(self.cfg.phone_error),
        };
        self.offer(sample, now);
    }

    /// The NTP servers rounds ask, by index ([`Action::SendNtp`]'s `server`).
    pub fn ntp_servers(&self) -> &[crate::config::HostName] {
        &self.cfg.ntp_servers
    }

    /// Replaces the NTP servers (the site named others in an authenticated sync answer, or
    /// setup did). The next round asks them; answers to a round already sent still count, as
    /// the same validation applies to every answer.
    pub fn set_ntp_servers(
        &mut self,
        servers: heapless::Vec<crate::config::HostName, { crate::config::MAX_NTP_SERVERS }>,
    ) {
        self.cfg.ntp_servers = servers;
    }

    /// Enters or leaves setup mode (the setup button held at boot). An unprovisioned device is
    /// in setup mode from boot.
    pub fn set_setup_mode(&mut self, on: bool) {
        self.setup_mode = on;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether a phone may set the time now.
    pub fn setup_mode(&self) -> bool {
        self.setup_mode
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.door_timeouts(now);
        self.position_timeouts(now);
        if self.ntp.round_deadline.is_some_and(|d| d <= now) {
            self.finish_ntp_round(now);
        }
        if self.network_up
            && self.ntp.round_deadline.is_none()
            && self.ntp.next_round.is_some_and(|t| t <= now)
        {
            self.start_ntp_round(now);
        }
        if self.backend.pending.is_some_and(|(_, sent)| {
            now.saturating_since(sent) >= self.cfg.backend_response_timeout
        }) {
            self.backend.pending = None;
            self.schedule_backend_retry(now);
        }
        if self.network_up
            && self.backend.pending.is_none()
            && self.backend.next_sync.is_some_and(|t| t <= now)
        {
            let mut nonce = [0u8; NONCE_LEN];
            self.rng.fill_bytes(&mut nonce);
            self.backend.pending = Some((nonce, now));
            self.backend.next_sync = None;
            self.push(Action::SyncBackend { nonce });
        }
        if self.next_rtc_read.is_some_and(|t| t <= now) {
            self.next_rtc_read = Some(now + self.cfg.rtc_resync_interval);
            // Offline (no network sync within the interval), the RTC drifts less than we do.
            let network_keeps_time = self
                .last_network_sync
                .is_some_and(|t| now.saturating_since(t) < self.cfg.rtc_resync_interval);
            if !network_keeps_time {
                self.push(Action::ReadRtc { at_tick: true });
            }
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next thing the shell should do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if self.dropped_actions > 0 && self.actions.is_empty() {
            let count = core::mem::take(&mut self.dropped_actions);
            self.push(Action::Event(Event::ActionsDropped { count }));
        }
        action
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let backend_deadline = self
            .backend
            .pending
            .map(|(_, sent)| sent + self.cfg.backend_response_timeout);
        let when_online = |t: Option<Instant>| if self.network_up { t } else { None };
        [
            self.ntp.round_deadline,
            when_online(self.ntp.next_round),
            backend_deadline,
            when_online(self.backend.next_sync),
            self.next_rtc_read,
            self.door_timeout(),
            self.position_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// ADR-011's `get_wall_time()`: `None` until the clock is valid.
    pub fn wall_time(&self, now: Instant) -> Option<WallTime> {
        self.clock.wall_time(now)
    }

    /// The clock's current source, if valid.
    pub fn clock_source(&self) -> Option<Source> {
        self.clock.source()
    }

    /// The state to persist, as last emitted.
    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    /// Actions dropped because the shell did not drain the queue, not yet reported by an
    /// [`Event::ActionsDropped`] (should stay zero).
    pub fn dropped_actions(&self) -> u32 {
        self.dropped_actions
    }

    // ----- internals ----------------------------------------------------------------------

    fn push(&mut self, action: Action) {
        if self.actions.push_back(action).is_err() {
            self.dropped_actions = self.dropped_actions.saturating_add(1);
        }
    }

    fn reject(&mut self, source: Source, server: u8, reason: TimeRejection) {
        self.push(Action::Event(Event::TimeRejected {
            source,
            server,
            reason,
        }));
    }

    fn emit_clock(&mut self, now: Instant) {
        let utc = self.clock.utc(now);
        self.push(Action::Event(Event::Clock {
            valid: utc.is_some(),
            source: self.clock.source(),
            utc,
            error_us: self.clock.error_us(now).unwrap_or(0),
        }));
    }

    /// The latest time known to have passed: the NTP era is chosen around it.
    /// Remembers the latest time the shell has told us about.
    fn tick(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// No NTP answer can be true below the build time or the signed list's creation time.
    fn ntp_floor(&self) -> UnixTime {
        self.list_created
            .map_or(self.cfg.time_floor, |c| c.max(self.cfg.time_floor))
    }

    fn era_anchor(&self, now: Instant) -> UnixTime {
        let known = self
            .clock
            .utc(now)
            .filter(|_| self.clock.network_set())
            .or(self.persisted.latest_known);
        known.map_or(self.ntp_floor(), |k| k.max(self.ntp_floor()))
    }

    /// The RTC's error since this device last wrote it, or the configured guess if it never did.
    fn rtc_accumulated_error_us(&self, rtc_secs: i64) -> u64 {
        match self.persisted.rtc_written_at {
            Some(written) if rtc_secs >= written.secs() => {
                let age_us = (rtc_secs - written.secs()) as u64 * 1_000_000;
                self.persisted.rtc_written_error_us
                    + (age_us * u64::from(self.cfg.rtc_drift_ppm_max)).div_ceil(1_000_000)
            }
            _ => duration_micros(self.cfg.rtc_unknown_error),
        }
    }

    fn offer(&mut self, sample: Sample, now: Instant) {
        let outcome = self.clock.offer(sample, now);
        let network = sample.source.is_network();
        match outcome {
            Outcome::Set {
                became_valid,
                source_changed,
                step_us,
            } => {
                let stepped = step_us.unsigned_abs() >= duration_micros(self.cfg.step_threshold);
                if became_valid || source_changed || stepped {
                    self.emit_clock(now);
                }
                if became_valid && self.report.clock_became_valid(&self.clock, now) {
                    self.persisted.last_report_day = self.report.last_day();
                    self.push(Action::Persist(self.persisted));
                }
                if network {
                    self.network_synced(now, stepped);
                } else if sample.source == Source::Phone {
                    // Seed 000, initial setup offline: phone → ESP → RTC.
                    self.write_rtc(now);
                }
            }
            Outcome::Consistent if network => self.network_synced(now, false),
            Outcome::Consistent => {}
            Outcome::Held => self.reject(
                sample.source,
                sample.server,
                TimeRejection::AwaitingSecondSource,
            ),
            Outcome::Rejected(r) => {
                self.reject(sample.source, sample.server, TimeRejection::Clock(r))
            }
        }
    }

    /// A network source agrees with the clock now: remember it, and pass the time on to the RTC
    /// when it needs it (seed 000: NTP → ESP → ext. RTC).
    fn network_synced(&mut self, now: Instant, stepped: bool) {
        self.last_network_sync = Some(now);
        if let Some(utc) = self.clock.utc(now) {
            let day_us = 86_400_000_000;
            if self
                .persisted
                .latest_known
                .is_none_or(|k| utc.micros_since(k) >= day_us)
            {
                self.persisted.latest_known = Some(utc);
                self.push(Action::Persist(self.persisted));
            }
        }
        let due = match self.rtc {
            RtcState::Present { trusted: false } => true,
            RtcState::Present { trusted: true } => {
                stepped
                    || self
                        .rtc_written_this_boot
                        .is_none_or(|t| now.saturating_since(t) >= self.cfg.rtc_writeback_interval)
            }
            RtcState::Absent | RtcState::Unknown => false,
        };
        if due {
            self.write_rtc(now);
        }
    }

    fn write_rtc(&mut self, now: Instant) {
        if matches!(self.rtc, RtcState::Absent | RtcState::Unknown) {
            return;
        }
        let (Some(utc), Some(err)) = (self.clock.utc(now), self.clock.error_us(now)) else {
            return;
        };
        if rtc::registers_for(utc).is_err() {
            return;
        }
        self.rtc = RtcState::Present { trusted: true };
        self.rtc_written_this_boot = Some(now);
        self.persisted.rtc_written_at = Some(utc);
        self.persisted.rtc_written_error_us = err;
        self.persisted.rtc_written_from_network = self.clock.network_set();
        self.push(Action::WriteRtc { utc });
        self.push(Action::Persist(self.persisted));
    }

    fn start_ntp_round(&mut self, now: Instant) {
        self.ntp.next_round = None;
        self.ntp.samples.clear();
        let servers = self.cfg.ntp_servers.len().min(MAX_NTP_SERVERS);
        let mut sent = false;
        for idx in 0..servers {
            if self.ntp.denied[idx] {
                continue;
            }
            let cookie = NtpRequest::cookie_from_random(self.rng.next_u64());
            let request = NtpRequest {
                cookie,
                sent_at: now,
            };
            self.ntp.requests[idx] = Some(request);
            self.push(Action::SendNtp {
                server: idx as u8,
                packet: request.packet(),
            });
            sent = true;
        }
        if sent {
            self.ntp.round_deadline = Some(now + self.cfg.ntp_response_timeout);
        }
    }

    /// Offers the round's answers best first, then schedules the next round: the poll interval
    /// after a usable answer, a doubling backoff otherwise.
    ///
    /// Best first is lowest delay first, except while the clock holds a time no network source
    /// has confirmed this boot (from the RTC or the phone): then answers that agree with it go
    /// first. Otherwise one lying server that happens to answer fastest would set the clock (NTP
    /// may correct an RTC) and leave the honest servers, which agree with the RTC, held as the
    /// ones awaiting a second source.
    fn finish_ntp_round(&mut self, now: Instant) {
        self.ntp.round_deadline = None;
        self.ntp.requests = [None; MAX_NTP_SERVERS];
        let mut samples = core::mem::take(&mut self.ntp.samples);
        let unconfirmed = self.clock.utc(now).is_some() && !self.clock.network_set();
        let clock = &self.clock;
        samples.sort_unstable_by_key(|(server, s, _)| {
            let disagrees = unconfirmed && !clock.agrees(&ntp_clock_sample(*server, s), now);
            (disagrees, s.delay_us, *server)
        });
        for (server, sample, offered) in &samples {
            if !offered {
                self.offer(ntp_clock_sample(*server, sample), now);
            }
        }
        if samples.is_empty() {
            self.ntp.next_round = Some(now + self.ntp.backoff);
            self.ntp.backoff = (self.ntp.backoff * 2).min(self.cfg.ntp_retry_max);
        } else {
            self.ntp.backoff = self.cfg.ntp_retry_initial;
            self.ntp.next_round = Some(now + self.cfg.ntp_poll_interval);
        }
    }

    /// Something the backend should hear at once (an alarm, an emergency, a lockdown change),
    /// or the backend said it holds something new for this door: sync now rather than at the
    /// next interval (if a sync is under way, the next one follows it at once).
    pub fn sync_soon(&mut self, now: Instant) {
        self.backend.backoff = self.cfg.backend_retry_initial;
        if self.backend.pending.is_some() {
            self.backend.again = true;
        } else {
            self.backend.next_sync = Some(self.backend.next_sync.map_or(now, |t| t.min(now)));
        }
    }

    fn schedule_backend_retry(&mut self, now: Instant) {
        self.backend.next_sync = Some(now + self.backend.backoff);
        self.backend.backoff = (self.backend.backoff * 2).min(self.cfg.backend_sync_interval);
    }
}

fn ntp_clock_sample(server: u8, s: &NtpSample) -> Sample {
    Sample {
        source: Source::Ntp,
        server,
        at: s.at,
        utc: s.utc,
        error_us: s.error_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::ServerReply;
    use crate::testing::T0;

    fn boot(rtc: RtcReading) -> Controller {
        let cfg = Config::with_ntp_servers(["a", "b"]).unwrap();
        let mut c = Controller::new(cfg, Persisted::default(), [7; 32], Instant::ZERO);
        assert_eq!(c.poll_action(), Some(Action::ReadRtc { at_tick: false }));
        c.handle_rtc_read(rtc, Instant::ZERO);
        c
    }

    fn drain(c: &mut Controller) -> Vec<Action> {
        core::iter::from_fn(|| c.poll_action()).collect()
    }

    fn ntp_requests(actions: &[Action]) -> Vec<(u8, [u8; PACKET_LEN])> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendNtp { server, packet } => Some((*server, *packet)),
                _ => None,
            })
            .collect()
    }

    /// An honest answer to `request` sent at `sent`, arriving 20 ms later.
    fn answer(request: &[u8; PACKET_LEN], sent: Instant) -> ([u8; PACKET_LEN], Instant) {
        let at = T0.offset_micros(sent.as_micros() as i64 + 10_000);
        (
            ServerReply::synced(at, at).encode(request),
            sent + Duration::from_millis(20),
        )
    }

    #[test]
    fn without_rtc_ntp_is_asked_at_network_up_and_answers_make_the_clock_valid() {
        let mut c = boot(RtcReading::Absent);
        assert!(matches!(
            drain(&mut c)[..],
            [Action::Event(Event::Clock { valid: false, .. })]
        ));
        let up = Instant::from_secs(12);
        c.handle_network(true, up);
        let actions = drain(&mut c);
        let requests = ntp_requests(&actions);
        assert_eq!(requests.len(), 2, "every server asked at once: {actions:?}");
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::SyncBackend { .. })));
        let (reply, at) = answer(&requests[0].1, up);
        c.handle_ntp_response(requests[0].0, &reply, at);
        let w = c.wall_time(at).expect("valid after the first answer");
        assert!(
            w.utc
                .micros_since(T0.offset_micros(at.as_micros() as i64))
                .abs()
                <= 1
        );
        assert!(w.error_bound_ms <= 15, "{w:?}");
        assert_eq!(c.clock_source(), Some(Source::Ntp));
    }

    #[test]
    fn pairing_syncs_at_once_instead_of_after_the_backoff() {
        let syncs = |actions: &[Action]| {
            actions
                .iter()
                .filter(|a| matches!(a, Action::SyncBackend { .. }))
                .count()
        };
        let mut c = boot(RtcReading::Absent);
        c.handle_network(true, Instant::ZERO);
        assert_eq!(syncs(&drain(&mut c)), 1);
        // Unpaired, the exchanges fail and the retries back off.
        let mut now = Instant::ZERO;
        let mut retries = Vec::new();
        for _ in 0..4 {
            c.handle_backend_failed(now);
            drain(&mut c);
            // Wake as asked (NTP retries too) until the next sync goes out.
            for _ in 0..100 {
                now = c.poll_timeout().expect("something is due");
                c.handle_timeout(now);
                if syncs(&drain(&mut c)) == 1 {
                    break;
                }
            }
            retries.push(now.as_micros() / 1_000_000);
        }
        assert_eq!(retries, [5, 15, 35, 75], "doubling backoff");
        c.handle_backend_failed(now);
        drain(&mut c);
        let paired = now + Duration::from_millis(300);
        c.handle_backend_configured(paired);
        assert_eq!(syncs(&drain(&mut c)), 1, "synced the moment it paired");
        // An exchange under way is not doubled.
        c.handle_backend_configured(paired);
        assert_eq!(syncs(&drain(&mut c)), 0);
    }

    #[test]
    fn actions_the_shell_did_not_take_are_reported_not_lost_silently() {
        let mut c = boot(RtcReading::Absent);
        // Each unknown card queues a decision and its feedback; nobody drains the queue.
        for i in 0..20u8 {
            c.handle_card(
                &[i, 1, 2, 3],
                None::<&crate::allowlist::SliceList<'_>>,
                Instant::from_secs(1),
            );
        }
        let actions = drain(&mut c);
        assert_eq!(actions.len(), ACTION_QUEUE_LEN + 1);
        let lost = 1 + 2 * 20 - ACTION_QUEUE_LEN as u32;
        assert_eq!(
            actions.last(),
            Some(&Action::Event(Event::ActionsDropped { count: lost }))
        );
        assert_eq!(c.dropped_actions(), 0);
    }

    #[test]
    fn unanswered_rounds_back_off_doubling_to_the_cap() {
        let mut c = boot(RtcReading::Absent);
        c.handle_network(true, Instant::ZERO);
        drain(&mut c);
        let mut sends = Vec::new();
        let mut now = Instant::ZERO;
        while now < Instant::from_secs(600) {
            let Some(next) = c.poll_timeout() else { break };
            now = next;
            c.handle_timeout(now);
            if !ntp_requests(&drain(&mut c)).is_empty() {
                sends.push(now.as_micros() / 1_000_000);
            }
        }
        // Each round waits 2 s for answers, then 1, 2, 4 … 64 s, never more.
        assert_eq!(&sends[..8], &[3, 7, 13, 23, 41, 75, 141, 207]);
        assert!(sends.windows(2).all(|w| w[1] - w[0] <= 66), "{sends:?}");
    }

    #[test]
    fn forged_answer_does_not_cancel_the_real_one_and_deny_stops_queries() {
        let mut c = boot(RtcReading::Absent);
        c.handle_network(true, Instant::ZERO);
        let requests = ntp_requests(&drain(&mut c));
        let (mut forged, at) = answer(&requests[0].1, Instant::ZERO);
        forged[31] ^= 0xff; // wrong origin
        c.handle_ntp_response(requests[0].0, &forged, at);
        assert!(c.wall_time(at).is_none());
        let (real, at) = answer(&requests[0].1, Instant::ZERO);
        c.handle_ntp_response(requests[0].0, &real, at);
        assert!(c.wall_time(at).is_some(), "the real answer still counts");

        let mut kiss = ServerReply::synced(T0, T0);
        kiss.stratum = 0;
        kiss.reference_id = *b"DENY";
        c.handle_ntp_response(requests[1].0, &kiss.encode(&requests[1].1), at);
        let later = Instant::from_secs(3700);
        c.handle_timeout(later);
        let next = ntp_requests(&drain(&mut c));
        assert_eq!(
            next.iter().map(|r| r.0).collect::<Vec<_>>(),
            [0],
            "server 1 said DENY"
        );
    }

    #[test]
    fn backend_time_needs_the_nonce_we_sent() {
        let mut c = boot(RtcReading::Absent);
        c.handle_network(true, Instant::ZERO);
        let nonce = drain(&mut c)
            .into_iter()
            .find_map(|a| match a {
                Action::SyncBackend { nonce } => Some(nonce),
                _ => None,
            })
            .unwrap();
        let at = Instant::from_millis(40);
        let t = T0.offset_micros(20_000);
        c.handle_backend_time(
            &BackendTime {
                nonce: [0; NONCE_LEN],
                receive: t,
                transmit: t,
            },
            at,
        );
        assert!(c.wall_time(at).is_none());
        c.handle_backend_time(
            &BackendTime {
                nonce,
                receive: t,
                transmit: t,
            },
            at,
        );
        assert_eq!(c.clock_source(), Some(Source::Backend));
        assert!(
            c.persisted().provisioned && !c.setup_mode(),
            "a backend sync ends setup mode"
        );
    }

    #[test]
    fn network_sync_writes_the_rtc_back() {
        let mut c = boot(RtcReading::Valid {
            unix_secs: T0.secs() - 2,
            at_tick: false,
        });
        drain(&mut c);
        c.handle_network(true, Instant::ZERO);
        let requests = ntp_requests(&drain(&mut c));
        // The clock is valid (from the RTC), so the round's best answer is used once all are in.
        let (reply, at) = answer(&requests[0].1, Instant::ZERO);
        c.handle_ntp_response(requests[0].0, &reply, at);
        assert!(drain(&mut c).is_empty());
        let (reply, at) = answer(&requests[1].1, Instant::ZERO);
        c.handle_ntp_response(requests[1].0, &reply, at);
        let actions = drain(&mut c);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Event(Event::Clock {
                    source: Some(Source::Ntp),
                    ..
                })
            )),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| matches!(a, Action::WriteRtc { .. })),
            "{actions:?}"
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Persist(p) if p.rtc_written_at.is_some())));
    }

    #[test]
    fn lists_must_be_signed_by_the_site_and_newer() {
        use crate::allowlist::{AccessType, Builder, CardEntry, ListError, Policy};
        use ed25519_dalek::SigningKey;
        let site = SigningKey::from_bytes(&[1; 32]);
        let list = |generation: u64, key: &SigningKey| {
            let mut b = Builder::new();
            let policy = Policy::new(AccessType::Unrestricted, 0, 0);
            b.card(&CardEntry {
                uid: vec![1, 2, 3, 4],
                policy,
                slots: vec![],
            })
            .unwrap();
            b.build(generation, 1_795_510_740, key).unwrap()
        };
        let unpaired = Controller::new(
            Config::default(),
            Persisted::default(),
            [0; 32],
            Instant::ZERO,
        );
        assert_eq!(
            unpaired.check_allowlist(&list(5, &site)).unwrap_err(),
            ListError::BadSignature,
            "no site key yet"
        );

        let cfg = Config {
            site_key: Some(site.verifying_key().to_bytes()),
            ..Config::default()
        };
        let mut c = Controller::new(cfg, Persisted::default(), [0; 32], Instant::ZERO);
        let five = list(5, &site);
        let info = c.check_allowlist(&five).unwrap().info();
        c.allowlist_installed(info, Instant::ZERO);
        assert_eq!(c.persisted().list_generation, 5);
        let stale = |offered| ListError::StaleGeneration {
            installed: 5,
            offered,
        };
        assert_eq!(
            c.check_allowlist(&five).unwrap_err(),
            stale(5),
            "the same list again"
        );
        assert_eq!(
            c.check_allowlist(&list(4, &site)).unwrap_err(),
            stale(4),
            "rollback"
        );
        let foreign = SigningKey::from_bytes(&[2; 32]);
        assert_eq!(
            c.check_allowlist(&list(6, &foreign)).unwrap_err(),
            ListError::BadSignature
        );
        assert!(c.check_allowlist(&list(6, &site)).is_ok());
        // The generation survives a reboot.
        let again = Controller::new(c.cfg.clone(), *c.persisted(), [0; 32], Instant::ZERO);
        assert_eq!(again.check_allowlist(&five).unwrap_err(), stale(5));
        // Paired again with the same site: the floor stays.
        c.set_site_key(site.verifying_key().to_bytes());
        assert_eq!(c.check_allowlist(&five).unwrap_err(), stale(5));
        // Paired to another site, whose generations start at 1: its lists are taken, the old
        // site's no longer verify, and the new floor is persisted.
        c.set_site_key(foreign.verifying_key().to_bytes());
        assert!(drain(&mut c)
            .iter()
            .any(|a| matches!(a, Action::Persist(p) if p.list_generation == 0)));
        assert!(c.check_allowlist(&list(1, &foreign)).is_ok());
        assert_eq!(
            c.check_allowlist(&list(6, &site)).unwrap_err(),
            ListError::BadSignature
        );
    }
}
