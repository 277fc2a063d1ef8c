//! Secure cards at the door: a card that speaks APDUs (a PN532 found an ISO 14443-4 card)
//! and whose UID the list holds as a secure card must prove the key diversified for it from
//! the site's card master key ([`crate::card::reader`]) before its entry's rules apply.
//!
//! The exchange is the shell's: the controller hands out [`Action::CardApdu`], the shell
//! passes the card's answer to [`Controller::handle_card_response`] (or reports
//! [`Controller::handle_card_lost`]). It is bounded by [`crate::Config::card_auth_timeout`];
//! a new card replaces one being checked. The check needs no clock: before the time is valid
//! a genuine card is let in exactly as its entry's fail-safe rule says.

use super::{Action, Controller, Credential};
use crate::access::Decision;
use crate::allowlist::{AllowList, CardMasterKeys, ListBytes};
use crate::card::reader::{Progress, Reader};
use crate::card::{card_key, DOOR_KEY, UID_LEN};
use crate::time::Instant;
use rand_core::RngCore;

/// A secure card being checked.
#[derive(Clone, Debug)]
pub(super) struct CardCheck {
    uid: [u8; UID_LEN],
    reader: Reader,
    deadline: Instant,
    /// The previous master key's door key, still to try if the current one is refused.
    fallback: Option<[u8; 16]>,
}

impl Controller {
    /// A card that speaks APDUs (ISO 14443-4) came into the reader's field announcing `uid`.
    /// A secure card's entry starts its check; a UID-only entry is decided at once (such
    /// cards can be cloned: the admin UI says so); an unknown card is `DENIED_UNKNOWN`.
    pub fn handle_secure_card<S: ListBytes>(
        &mut self,
        uid: &[u8],
        list: Option<&AllowList<S>>,
        now: Instant,
    ) {
        self.tick(now);
        self.abandon_card_check();
        let record = list.and_then(|l| l.card(uid));
        let Some(record) = record else {
            return self.finish(Credential::secure_card(uid), Decision::DeniedUnknown);
        };
        if !record.secure {
            return self.decide(Credential::card(uid), Some(record.policy), list, now);
        }
        let credential = Credential::secure_card(uid);
        let keys = match (list, &self.list_key) {
            (Some(l), Some(k)) => l.card_master_keys(k),
            _ => None,
        };
        let (Ok(uid), Some(keys)) = (<[u8; UID_LEN]>::try_from(uid), keys) else {
            // No key to check it with: a secure entry is never let in on its UID.
            return self.finish(credential, Decision::DeniedCardAuth);
        };
        self.start_card_check(uid, keys, now);
    }

    /// A fresh RndA for an authentication.
    fn rnd_a(&mut self) -> [u8; 16] {
        let mut rnd_a = [0u8; 16];
        self.rng.fill_bytes(&mut rnd_a);
        rnd_a
    }

    fn start_card_check(&mut self, uid: [u8; UID_LEN], keys: CardMasterKeys, now: Instant) {
        let key = card_key(&keys.current.0, &uid, DOOR_KEY);
        let (reader, apdu) = Reader::start(uid, DOOR_KEY, key, self.rnd_a());
        self.card_check = Some(CardCheck {
            uid,
            reader,
            deadline: now + self.cfg.card_auth_timeout,
            fallback: keys.previous.map(|(k, _)| card_key(&k, &uid, DOOR_KEY)),
        });
        self.push(Action::CardApdu(apdu));
    }

    /// The card's answer (data and status word) to the last [`Action::CardApdu`].
    pub fn handle_card_response<S: ListBytes>(
        &mut self,
        response: &[u8],
        list: Option<&AllowList<S>>,
        now: Instant,
    ) {
        self.tick(now);
        let Some(mut check) = self.card_check.take() else {
            return;
        };
        match check.reader.handle(response) {
            Progress::Send(apdu) => {
                self.card_check = Some(check);
                self.push(Action::CardApdu(apdu));
            }
            Progress::Genuine(uid) => {
                let credential = Credential::secure_card(&uid);
                // The list may have changed during the check: its entry now decides.
                match list.and_then(|l| l.card(&uid)) {
                    Some(r) if r.secure => self.decide(credential, Some(r.policy), list, now),
                    Some(r) => self.decide(Credential::card(&uid), Some(r.policy), list, now),
                    None => self.finish(credential, Decision::DeniedUnknown),
                }
            }
            Progress::Refused(crate::card::reader::Failure::WrongKey)
                if check.fallback.is_some() =>
            {
                // Not yet personalised again after a master key rotation: try the previous key.
                let key = check.fallback.take().unwrap_or_default();
                let rnd_a = self.rnd_a();
                let (reader, apdu) = Reader::start_selected(check.uid, DOOR_KEY, key, rnd_a);
                check.reader = reader;
                self.card_check = Some(check);
                self.push(Action::CardApdu(apdu));
            }
            Progress::Refused(_) => self.finish(
                Credential::secure_card(&check.uid),
                Decision::DeniedCardAuth,
            ),
        }
    }

    /// The card left the field, or the reader failed, during a check.
    pub fn handle_card_lost(&mut self, now: Instant) {
        self.tick(now);
        self.abandon_card_check();
    }

    /// A check that cannot complete is refused.
    fn abandon_card_check(&mut self) {
        if let Some(check) = self.card_check.take() {
            self.finish(
                Credential::secure_card(&check.uid),
                Decision::DeniedCardAuth,
            );
        }
    }

    /// Whether a secure card is being checked.
    pub fn card_check_pending(&self) -> bool {
        self.card_check.is_some()
    }

    /// A check past its deadline is refused.
    pub(super) fn card_timeouts(&mut self, now: Instant) {
        if self.card_check.as_ref().is_some_and(|c| c.deadline <= now) {
            self.abandon_card_check();
        }
    }

    /// When the check in progress times out.
    pub(super) fn card_timeout(&self) -> Option<Instant> {
        self.card_check.as_ref().map(|c| c.deadline)
    }
}
