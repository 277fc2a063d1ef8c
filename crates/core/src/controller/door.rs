//! The door side of the controller: cards, keypad entries, CONDITIONAL checks with the backend,
//! the daily battery report, and installing allow-lists.
//!
//! The allow-list is not owned here: it lies in flash and the shell passes a view of it with each
//! input (`Option<&AllowList>`), like it passes `now`. Installing a new one is a check
//! ([`Controller::check_allowlist`]) followed by the shell's slot switch and
//! [`Controller::allowlist_installed`].

use core::fmt;

use ed25519_dalek::VerifyingKey;

use super::{Action, Controller, Event};
use crate::access::{self, Decision, Verdict};
use crate::allowlist::{
    unseal_secrets, AccessType, AllowList, ListBytes, ListError, ListInfo, KEYPAD_LEN, MAX_UID_LEN,
    MAX_USER_CODE_LEN,
};
use crate::keypad::{CodeCheck, KeypadUse};
use crate::time::{Instant, UnixTime};

/// Who asked to enter.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A card, by UID.
    Card {
        /// UID bytes, zero-padded.
        uid: [u8; MAX_UID_LEN],
        /// UID length.
        len: u8,
    },
    /// A secure card, by UID: it proved its key (or was refused because it did not).
    SecureCard {
        /// UID bytes, zero-padded.
        uid: [u8; MAX_UID_LEN],
        /// UID length.
        len: u8,
    },
    /// A keypad user, by user code.
    Keypad {
        /// Code digits, zero-padded.
        code: [u8; MAX_USER_CODE_LEN],
        /// Code length.
        len: u8,
    },
}

impl Credential {
    /// A card (UIDs longer than 10 bytes are cut, and will not be found).
    pub fn card(uid: &[u8]) -> Self {
        let len = uid.len().min(MAX_UID_LEN);
        let mut bytes = [0u8; MAX_UID_LEN];
        bytes[..len].copy_from_slice(&uid[..len]);
        Credential::Card {
            uid: bytes,
            len: len as u8,
        }
    }

    /// A secure card (UIDs longer than 10 bytes are cut).
    pub fn secure_card(uid: &[u8]) -> Self {
        match Credential::card(uid) {
            Credential::Card { uid, len } => Credential::SecureCard { uid, len },
            other => other,
        }
    }

    /// The card UID, for cards of either kind.
    pub fn uid(&self) -> Option<&[u8]> {
        match self {
            Credential::Card { uid, len } | Credential::SecureCard { uid, len } => {
                Some(&uid[..usize::from(*len)])
            }
            Credential::Keypad { .. } => None,
        }
    }

    /// A keypad user code.
    pub fn keypad(code: &[u8]) -> Self {
        let len = code.len().min(MAX_USER_CODE_LEN);
        let mut bytes = [0u8; MAX_USER_CODE_LEN];
        bytes[..len].copy_from_slice(&code[..len]);
        Credential::Keypad {
            code: bytes,
            len: len as u8,
        }
    }
}

/// `card:04A1B2C3`, `secure_card:04DE5F1EACC040` or `keypad:1234`, as in the scenario
/// contract.
impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Card { uid, len } | Credential::SecureCard { uid, len } => {
                f.write_str(if matches!(self, Credential::Card { .. }) {
                    "card:"
                } else {
                    "secure_card:"
                })?;
                uid[..usize::from(*len)]
                    .iter()
                    .try_for_each(|b| write!(f, "{b:02X}"))
            }
            Credential::Keypad { code, len } => {
                f.write_str("keypad:")?;
                code[..usize::from(*len)]
                    .iter()
                    .try_for_each(|&b| write!(f, "{}", char::from(b)))
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the LEDs and buzzer show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Green.
    Granted,
    /// Red.
    Denied,
    /// Three rapid red blinks (ADR-011): TOTP is unavailable until the clock is synced.
    ClockUnsynced,
    /// The keypad is locked out.
    LockedOut,
}

impl Feedback {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Granted => "granted",
            Feedback::Denied => "denied",
            Feedback::ClockUnsynced => "clock_unsynced",
            Feedback::LockedOut => "locked_out",
        }
    }

    fn of(decision: Decision) -> Self {
        match decision {
            Decision::Granted | Decision::GrantedEmergency => Feedback::Granted,
            Decision::DeniedClockUnsynced => Feedback::ClockUnsynced,
            Decision::DeniedLockedOut => Feedback::LockedOut,
            _ => Feedback::Denied,
        }
    }
}

impl Controller {
    /// A card was presented.
    pub fn handle_card<S: ListBytes>(
        &mut self,
        uid: &[u8],
        list: Option<&AllowList<S>>,
        now: Instant,
    ) {
        self.tick(now);
        match list.and_then(|l| l.card(uid)) {
            // A UID-only reader cannot check a secure card: its UID alone opens nothing.
            Some(r) if r.secure => {
                self.finish(Credential::secure_card(uid), Decision::DeniedCardAuth)
            }
            record => self.decide(Credential::card(uid), record.map(|r| r.policy), list, now),
        }
    }

    /// A keypad key (`0`–`9`, `*`, `#`) was pressed; `#` finishes an entry.
    pub fn handle_key<S: ListBytes>(&mut self, key: u8, list: Option<&AllowList<S>>, now: Instant) {
        self.tick(now);
        let Some(entry) = self.keypad.key(key, now, &self.cfg) else {
            return;
        };
        let credential = Credential::keypad(entry.user_code());
        if self.keypad.locked(now) {
            return self.finish(credential, Decision::DeniedLockedOut);
        }
        let mut record = [0u8; KEYPAD_LEN];
        let Some((list, user)) = list.and_then(|l| {
            l.find_keypad_user(entry.user_code(), &mut record)
                .map(|u| (l, u))
        }) else {
            self.keypad.fail(now, &self.cfg, Decision::DeniedUnknown);
            return self.finish(credential, Decision::DeniedUnknown);
        };
        let mut secrets = [0u8; 64];
        let user = match (list.info().sealed, &self.list_key) {
            (false, _) => user,
            (true, Some(key)) => unseal_secrets(&user, key, list.info().generation, &mut secrets),
            // Sealed to a device key this controller was not given: no secret can be checked.
            (true, None) => {
                self.keypad.fail(now, &self.cfg, Decision::DeniedUnknown);
                return self.finish(credential, Decision::DeniedUnknown);
            }
        };
        let wall = self.clock.wall_time(now);
        let (check, used) = self
            .keypad
            .check(&entry, &user, wall.as_ref(), now, &self.cfg);
        if let Some(used) = used {
            self.push(Action::PersistKeypadUse(used));
        }
        match check {
            CodeCheck::Accepted => self.decide(credential, Some(user.policy), Some(list), now),
            CodeCheck::Denied(decision) => self.finish(credential, decision),
        }
    }

    /// Gives the controller the key that opens keypad secrets sealed to this device
    /// ([`crate::protocol::list_key`] of its device key), after boot or enrolment.
    pub fn set_list_key(&mut self, key: Option<[u8; 32]>) {
        self.list_key = key;
    }

    /// Gives the controller the site's Ed25519 public key that signs its allow-lists, learnt at
    /// enrolment (the configured key, if any, is replaced). The generation floor belongs to the
    /// key: paired to another site, whose generations start again at 1, the door takes that
    /// site's lists, while a list of the old site no longer verifies.
    pub fn set_site_key(&mut self, key: [u8; 32]) {
        if self.cfg.site_key != Some(key) {
            if self.persisted.list_generation != 0 {
                self.persisted.list_generation = 0;
                self.push(Action::Persist(self.persisted));
            }
            self.list_created = None;
            self.forget_lockdown();
        }
        self.cfg.site_key = Some(key);
    }

    /// The door has just paired (or its backend changed): sync now, if online and no exchange
    /// is under way, instead of waiting out the retry backoff of the syncs that failed before.
    pub fn handle_backend_configured(&mut self, now: Instant) {
        self.tick(now);
        self.backend.backoff = self.cfg.backend_retry_initial;
        if self.backend.pending.is_none() {
            self.backend.next_sync = Some(now);
        }
        self.handle_timeout(now);
    }

    /// Restores a keypad user's code usage persisted by an earlier boot.
    pub fn restore_keypad_use(&mut self, state: KeypadUse) {
        self.keypad.restore(state);
    }

    /// The backend's answer to [`Action::AskBackend`].
    pub fn handle_conditional_answer(&mut self, request: u32, granted: bool, now: Instant) {
        self.tick(now);
        if let Some(credential) = self.take_conditional(request) {
            let decision = if let Some(refused) = self.under_lockdown(false) {
                refused
            } else if granted {
                Decision::Granted
            } else {
                Decision::DeniedUnknown
            };
            self.finish(credential, decision);
        }
    }

    /// Whether the controller still waits for the answer to CONDITIONAL check `request` (it
    /// gives up at the check's deadline).
    pub fn conditional_pending(&self, request: u32) -> bool {
        self.conditional.iter().any(|(r, ..)| *r == request)
    }

    /// The backend could not be asked.
    pub fn handle_conditional_failed(&mut self, request: u32, now: Instant) {
        self.tick(now);
        if let Some(credential) = self.take_conditional(request) {
            self.finish(credential, Decision::DeniedOffline);
        }
    }

    /// The battery voltage, measured after [`Action::ReadBattery`] (or whenever the shell
    /// measures it).
    pub fn handle_battery(&mut self, mv: u16, now: Instant) {
        self.tick(now);
        if let Some(basis) = self.pending_report.take() {
            self.push(Action::Event(Event::Report { mv, basis }));
        }
    }

    /// Checks a downloaded list before it is installed, in one go: signed by the site's key,
    /// records sound, and newer than the installed one. The shell switches flash slots only if
    /// this passes. (A door checks in steps: [`crate::allowlist::ListCheck`] with
    /// [`site_key`](Self::site_key), then [`check_generation`](Self::check_generation).)
    pub fn check_allowlist<S: ListBytes>(&self, bytes: S) -> Result<AllowList<S>, ListError> {
        let key = self.site_key().ok_or(ListError::BadSignature)?;
        let list = AllowList::verify_in(bytes, &key)?;
        self.check_generation(&list.info())?;
        Ok(list)
    }

    /// The key the site signs its lists with, once known.
    pub fn site_key(&self) -> Option<VerifyingKey> {
        self.cfg
            .site_key
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
    }

    /// Refuses a list that is not newer than the installed one (a replayed list could still
    /// hold a revoked card).
    pub fn check_generation(&self, info: &ListInfo) -> Result<(), ListError> {
        let installed = self.persisted.list_generation;
        if info.generation <= installed {
            return Err(ListError::StaleGeneration {
                installed,
                offered: info.generation,
            });
        }
        Ok(())
    }

    /// The shell switched to a checked list (or found one in flash at boot): remember its
    /// generation against rollback, and its signed creation time as a floor for NTP.
    pub fn allowlist_installed(&mut self, info: ListInfo, now: Instant) {
        self.tick(now);
        let created = UnixTime::from_secs(info.created_unix);
        self.list_created = Some(self.list_created.map_or(created, |c| c.max(created)));
        if info.generation > self.persisted.list_generation {
            self.persisted.list_generation = info.generation;
            self.push(Action::Persist(self.persisted));
        }
    }

    pub(super) fn decide<S: ListBytes>(
        &mut self,
        credential: Credential,
        policy: Option<u32>,
        list: Option<&AllowList<S>>,
        now: Instant,
    ) {
        let Some((policy, list)) = list.and_then(|l| Some((l.policy(policy?)?, l))) else {
            return self.finish(credential, Decision::DeniedUnknown);
        };
        if let Some(refused) = self.under_lockdown(policy.access == AccessType::Emergency) {
            return self.finish(credential, refused);
        }
        let wall = self.clock.wall_time(now);
        match access::evaluate(&policy, list.slots_of(&policy), wall.as_ref()) {
            Verdict::Decided(decision) => self.finish(credential, decision),
            Verdict::AskBackend if !self.network_up || self.conditional.is_full() => {
                self.finish(credential, Decision::DeniedOffline)
            }
            Verdict::AskBackend => {
                let request = self.next_request;
                self.next_request = self.next_request.wrapping_add(1);
                let _ = self.conditional.push((
                    request,
                    credential,
                    now + self.cfg.conditional_timeout,
                ));
                self.push(Action::AskBackend {
                    request,
                    credential,
                });
            }
        }
    }

    pub(super) fn finish(&mut self, credential: Credential, decision: Decision) {
        self.push(Action::Event(Event::Decision {
            credential,
            decision,
        }));
        if decision == Decision::GrantedEmergency {
            self.push(Action::Event(Event::Notify { credential }));
            self.sync_soon(self.last_now);
        }
        if decision.is_granted() {
            self.unlock(self.last_now);
        }
        self.push(Action::Feedback(Feedback::of(decision)));
    }

    fn take_conditional(&mut self, request: u32) -> Option<Credential> {
        let idx = self
            .conditional
            .iter()
            .position(|(r, _, _)| *r == request)?;
        Some(self.conditional.swap_remove(idx).1)
    }

    /// The network went down: CONDITIONAL checks in flight cannot be answered.
    pub(super) fn conditional_offline(&mut self) {
        while let Some((_, credential, _)) = self.conditional.pop() {
            self.finish(credential, Decision::DeniedOffline);
        }
    }

    /// Door timers: CONDITIONAL deadlines and the daily report.
    pub(super) fn door_timeouts(&mut self, now: Instant) {
        self.card_timeouts(now);
        while let Some(idx) = self
            .conditional
            .iter()
            .position(|(_, _, deadline)| *deadline <= now)
        {
            let (_, credential, _) = self.conditional.swap_remove(idx);
            self.finish(credential, Decision::DeniedOffline);
        }
        if self.pending_report.is_none() {
            if let Some(basis) = self.report.poll(&self.clock, now, &self.cfg) {
                self.pending_report = Some(basis);
                if self.persisted.last_report_day != self.report.last_day() {
                    self.persisted.last_report_day = self.report.last_day();
                    self.push(Action::Persist(self.persisted));
                }
                self.push(Action::ReadBattery);
            }
        }
    }

    /// The earliest door timer.
    pub(super) fn door_timeout(&self) -> Option<Instant> {
        let conditional = self.conditional.iter().map(|(_, _, d)| *d).min();
        let report = self.report.next_due(&self.clock, self.last_now, &self.cfg);
        let first = conditional.map_or(report, |c| c.min(report));
        Some(self.card_timeout().map_or(first, |c| c.min(first)))
    }
}
