//! The door's check of a secure card, as an APDU exchange.
//!
//! 1. ISOSelectFile of the NDEF application.
//! 2. AuthenticateEV2First with the door key ([`DOOR_KEY`](super::DOOR_KEY)) diversified for
//!    the UID the card announced: the card must turn the door's random RndA around, which only
//!    a holder of the key can do.
//! 3. GetCardUID under the session's keys: the real UID, MACed and encrypted by the card,
//!    must be the announced one (a card cannot borrow another card's answer).
//!
//! Four exchanges; the controller bounds their time.

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

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Send this APDU to the card and hand its response to [`Reader::handle`].
    Send(Apdu),
    /// The card proved itself: its real UID.
    Genuine([u8; UID_LEN]),
    /// It did not.
    Refused(Failure),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Select,
    Part1,
    Part2 { rnd_b: [u8; 16] },
    Uid { session: Session },
    Finished,
}

/// One card's check.
#[derive(Clone)]
pub struct Reader {
    uid: [u8; UID_LEN],
    key: Key,
    key_no: u8,
    rnd_a: [u8; 16],
    step: Step,
}

impl core::fmt::Debug for Reader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader")
            .field("uid", &self.uid)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Starts checking the card that announced `uid`, with its key `key_no` (already
    /// diversified) and a fresh random `rnd_a`. Returns the first APDU.
    pub fn start(uid: [u8; UID_LEN], key_no: u8, key: Key, rnd_a: [u8; 16]) -> (Self, Apdu) {
        let reader = Reader {
            uid,
            key,
            key_no,
            rnd_a,
            step: Step::Select,
        };
        (reader, super::select_application())
    }

    /// Starts with the authentication, the application being selected already (a second try
    /// with another key after [`Failure::WrongKey`]).
    pub fn start_selected(
        uid: [u8; UID_LEN],
        key_no: u8,
        key: Key,
        rnd_a: [u8; 16],
    ) -> (Self, Apdu) {
        let reader = Reader {
            uid,
            key,
            key_no,
            rnd_a,
            step: Step::Part1,
        };
        (reader, super::authenticate_first(key_no))
    }

    /// The card's response to the last APDU.
    pub fn handle(&mut self, response: &[u8]) -> Progress {
        let step = core::mem::replace(&mut self.step, Step::Finished);
        let Some((data, sw)) = super::split_response(response) else {
            return Progress::Refused(Failure::Protocol([0, 0]));
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
                    None => Progress::Refused(Failure::Protocol(sw)),
                }
            }
            Step::Part2 { .. } if sw == status::AUTHENTICATION_ERROR => {
                Progress::Refused(Failure::WrongKey)
            }
            Step::Part2 { rnd_b } if sw == status::OK && data.len() == 32 => {
                match super::authenticate_finish(&self.key, &self.rnd_a, &rnd_b, data) {
                    Some(session) => {
                        self.step = Step::Uid { session };
                        Progress::Send(super::get_card_uid(&session))
                    }
                    None => Progress::Refused(Failure::Forged),
                }
            }
            Step::Uid { mut session } if sw == status::OK => {
                match super::read_card_uid(&mut session, data) {
                    Some(uid) if crypto::same(&uid, &self.uid) => Progress::Genuine(uid),
                    Some(_) => Progress::Refused(Failure::UidMismatch),
                    None => Progress::Refused(Failure::Forged),
                }
            }
            _ => Progress::Refused(Failure::Protocol(sw)),
        }
    }
}
