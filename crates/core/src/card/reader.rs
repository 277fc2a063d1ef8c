//! The door's check of a secure card, as an APDU exchange: the shared authentication
//! ([`super::auth`]) with the door key ([`DOOR_KEY`](super::DOOR_KEY)) diversified for the UID
//! the card announced, which ends with the card's real UID read under secure messaging. Four
//! exchanges; the controller bounds their time.

use super::auth::{self, Authentication};
use super::{Apdu, Key, UID_LEN};

pub use super::auth::Failure;

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

/// One card's check.
#[derive(Clone, Debug)]
pub struct Reader {
    uid: [u8; UID_LEN],
    auth: Authentication,
}

impl Reader {
    /// Starts checking the card that announced `uid`, with its key `key_no` (already
    /// diversified) and a fresh random `rnd_a`. Returns the first APDU.
    pub fn start(uid: [u8; UID_LEN], key_no: u8, key: Key, rnd_a: [u8; 16]) -> (Self, Apdu) {
        let (auth, apdu) = Authentication::start(uid, key_no, key, rnd_a, false);
        (Reader { uid, auth }, apdu)
    }

    /// Starts with the authentication, the application being selected already (a second try
    /// with another key after [`Failure::WrongKey`]).
    pub fn start_selected(
        uid: [u8; UID_LEN],
        key_no: u8,
        key: Key,
        rnd_a: [u8; 16],
    ) -> (Self, Apdu) {
        let (auth, apdu) = Authentication::start(uid, key_no, key, rnd_a, true);
        (Reader { uid, auth }, apdu)
    }

    /// The card's response to the last APDU.
    pub fn handle(&mut self, response: &[u8]) -> Progress {
        match self.auth.handle(response) {
            auth::Progress::Send(apdu) => Progress::Send(apdu),
            auth::Progress::Authenticated(_) => Progress::Genuine(self.uid),
            auth::Progress::Failed(f) => Progress::Refused(f),
        }
    }
}
