//! The first part of every exchange with a secure card, shared by the door's check and the
//! enrolment: ISOSelectFile of the NDEF application, AuthenticateEV2First with one key (the
//! card must turn the reader's random RndA around, which only a holder of the key can do), and
//! GetCardUID under the session's keys, whose real UID must be the one the card announced (a
//! card cannot borrow another card's answer, nor announce a UID it does not have).

use super::{crypto, status, Apdu, Key, Session, UID_LEN};

/// Why a card did not prove itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The card refused the authentication: it does not hold this key (a clone, a blank card,
    /// or a card of another site).
    WrongKey,
    /// Its answer did not prove the key (RndA not returned), or a MAC did not verify.
    Forged,
    /// Its real UID is not the one it announced.
    UidMismatch,
    /// An answer of the wrong length or an unexpected status word.
    Protocol([u8; 2]),
}

impl Failure {
    /// A short, stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::WrongKey => "wrong_key",
            Failure::Forged => "forged",
            Failure::UidMismatch => "uid_mismatch",
            Failure::Protocol(_) => "protocol",
        }
    }
}

/// Where an authentication stands after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Send this APDU next.
    Send(Apdu),
    /// The card proved the key and its UID: the session, its counter past GetCardUID.
    Authenticated(Session),
    /// It did not.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Select,
    Part1,
    Part2 { rnd_b: [u8; 16] },
    Uid { session: Session },
    Finished,
}

/// One authentication.
#[derive(Clone)]
pub(crate) struct Authentication {
    uid: [u8; UID_LEN],
    key: Key,
    key_no: u8,
    rnd_a: [u8; 16],
    step: Step,
}

impl core::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Authentication")
            .field("uid", &self.uid)
            .field("key_no", &self.key_no)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Authentication {
    /// Starts with the card that announced `uid`, its key `key_no` (diversified already) and a
    /// fresh random `rnd_a`; with `selected`, the application is selected already (a second
    /// try with another key). Returns the first APDU.
    pub(crate) fn start(
        uid: [u8; UID_LEN],
        key_no: u8,
        key: Key,
        rnd_a: [u8; 16],
        selected: bool,
    ) -> (Self, Apdu) {
        let (step, apdu) = if selected {
            (Step::Part1, super::authenticate_first(key_no))
        } else {
            (Step::Select, super::select_application())
        };
        let auth = Authentication {
            uid,
            key,
            key_no,
            rnd_a,
            step,
        };
        (auth, apdu)
    }

    /// The card's response to the last APDU.
    pub(crate) fn handle(&mut self, response: &[u8]) -> Progress {
        let step = core::mem::replace(&mut self.step, Step::Finished);
        let Some((data, sw)) = super::split_response(response) else {
            return Progress::Failed(Failure::Protocol([0, 0]));
        };
        match step {
            Step::Select if sw == status::ISO_OK => {
                self.step = Step::Part1;
                Progress::Send(super::authenticate_first(self.key_no))
            }
            Step::Part1 if sw == status::ADDITIONAL_FRAME => {
                match super::authenticate_second(&self.key, &self.rnd_a, data) {
                    Some((rnd_b, apdu)) => {
                        self.step = Step::Part2 { rnd_b };
                        Progress::Send(apdu)
                    }
                    None => Progress::Failed(Failure::Protocol(sw)),
                }
            }
            Step::Part2 { .. } if sw == status::AUTHENTICATION_ERROR => {
                Progress::Failed(Failure::WrongKey)
            }
            Step::Part2 { rnd_b } if sw == status::OK => {
                match super::authenticate_finish(&self.key, &self.rnd_a, &rnd_b, data) {
                    Some(session) => {
                        self.step = Step::Uid { session };
                        Progress::Send(super::get_card_uid(&session))
                    }
                    None => Progress::Failed(Failure::Forged),
                }
            }
            Step::Uid { mut session } if sw == status::OK => {
                match super::read_card_uid(&mut session, data) {
                    Some(uid) if crypto::same(&uid, &self.uid) => Progress::Authenticated(session),
                    Some(_) => Progress::Failed(Failure::UidMismatch),
                    None => Progress::Failed(Failure::Forged),
                }
            }
            _ => Progress::Failed(Failure::Protocol(sw)),
        }
    }
}
