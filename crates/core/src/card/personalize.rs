//! Enrolment: changing a card's five keys to the site's diversified keys, as an APDU
//! exchange (the `chronolock card personalize` command drives it through a PC/SC reader).
//!
//! The card is authenticated with its current key 0 (the factory key on a new card, or the
//! earlier master key's when the site rotates it), keys 1 to 4 are changed (ChangeKey sends the
//! new key XORed with the old one and a CRC of the new one, encrypted and MACed), and key 0
//! last, which ends the session. Afterwards the door's check ([`super::reader`]) confirms the
//! result.

use super::auth::{self, Authentication};
use super::{command, crypto, status, wrap, Apdu, Key, Session, KEY_COUNT, UID_LEN};

pub use super::auth::Failure;

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Send this APDU and hand the response to [`Personalizer::handle`].
    Send(Apdu),
    /// Every key is changed.
    Done,
    /// Stopped; keys changed before the failure stay changed (the card then answers to the new
    /// key for them, and running again with the same keys finishes the job once key 0 is
    /// still the old one).
    Failed(Failure),
}

/// The order keys are changed in: key 0 last, as changing it ends the session.
const ORDER: [u8; KEY_COUNT as usize] = [1, 2, 3, 4, 0];

/// One card's personalisation.
#[derive(Clone, Debug)]
pub struct Personalizer {
    auth: Authentication,
    old: [Key; KEY_COUNT as usize],
    new: [Key; KEY_COUNT as usize],
    version: u8,
    /// Once authenticated: the session and the index (into [`ORDER`]) of the key being
    /// changed.
    changing: Option<(Session, usize)>,
}

/// The ChangeKey APDU for `key_no` in an authenticated `session` (with key 0): key 0 itself
/// is sent as `new || version`, the others as `(new XOR old) || version || CRC32(new)`.
pub fn change_key(session: &Session, key_no: u8, new: &Key, old: &Key, version: u8) -> Apdu {
    let mut data = [0u8; 32];
    let len = if key_no == 0 {
        data[..16].copy_from_slice(new);
        data[16] = version;
        17
    } else {
        for (i, b) in data[..16].iter_mut().enumerate() {
            *b = new[i] ^ old[i];
        }
        data[16] = version;
        data[17..21].copy_from_slice(&crypto::crc32(new));
        21
    };
    // 17 or 21 bytes always pad to 32.
    let _ = crypto::pad(&mut data, len);
    session.encrypt_command(&mut data);
    let mut mac_input = [0u8; 33];
    mac_input[0] = key_no;
    mac_input[1..].copy_from_slice(&data);
    let mac = session.command_mac(command::CHANGE_KEY, &mac_input);
    wrap(command::CHANGE_KEY, &[&[key_no], &data, &mac])
}

impl Personalizer {
    /// Starts changing the card that announced `uid` from keys `old` to keys `new` (each set
    /// indexed by key number), with key version `version` and a fresh random `rnd_a`. Returns
    /// the first APDU.
    pub fn start(
        uid: [u8; UID_LEN],
        old: [Key; KEY_COUNT as usize],
        new: [Key; KEY_COUNT as usize],
        version: u8,
        rnd_a: [u8; 16],
    ) -> (Self, Apdu) {
        // Key 0 changes the others; the UID checked under its session is the one the keys
        // are diversified from.
        let (auth, apdu) = Authentication::start(uid, 0, old[0], rnd_a, false);
        let p = Personalizer {
            auth,
            old,
            new,
            version,
            changing: None,
        };
        (p, apdu)
    }

    fn change(&mut self, session: Session, index: usize) -> Progress {
        let key_no = ORDER[index];
        let n = usize::from(key_no);
        self.changing = Some((session, index));
        Progress::Send(change_key(
            &session,
            key_no,
            &self.new[n],
            &self.old[n],
            self.version,
        ))
    }

    /// The card's response to the last APDU.
    pub fn handle(&mut self, response: &[u8]) -> Progress {
        let Some((mut session, index)) = self.changing.take() else {
            return match self.auth.handle(response) {
                auth::Progress::Send(apdu) => Progress::Send(apdu),
                auth::Progress::Authenticated(session) => self.change(session, 0),
                auth::Progress::Failed(f) => Progress::Failed(f),
            };
        };
        let Some((data, sw)) = super::split_response(response) else {
            return Progress::Failed(Failure::Protocol([0, 0]));
        };
        if sw != status::OK {
            return Progress::Failed(Failure::Protocol(sw));
        }
        session.ctr = session.ctr.wrapping_add(1);
        if ORDER[index] == 0 {
            // Key 0 changed: the session ended with it, and no MAC comes back.
            return Progress::Done;
        }
        if !crypto::same(&session.response_mac(0x00, &[]), data) {
            return Progress::Failed(Failure::Forged);
        }
        self.change(session, index + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::tests::hex;

    fn session(ctr: u16) -> Session {
        Session {
            enc: hex("4CF3CB41A22583A61E89B158D252FC53"),
            mac: hex("5529860B2FC5FB6154B7F28361D30BF9"),
            ti: hex("7614281A"),
            ctr,
        }
    }

    /// AN12196 §5.16.1 (Table 25): ChangeKey of key 2, authenticated with key 0.
    #[test]
    fn an12196_change_key_2() {
        let apdu = change_key(
            &session(2),
            2,
            &hex("F3847D627727ED3BC9C4CC050489B966"),
            &[0; 16],
            1,
        );
        assert_eq!(
            apdu.as_slice(),
            &hex::<47>("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC75D0CE20BCD1D06E600")
        );
        let mut after = session(3);
        after.ctr = 3;
        assert_eq!(after.response_mac(0, &[]), hex::<8>("203BB55D1089D587"));
    }

    /// AN12196 §5.16.2 (Table 26): ChangeKey of key 0 itself.
    #[test]
    fn an12196_change_key_0() {
        let apdu = change_key(
            &session(3),
            0,
            &hex("5004BF991F408672B1EF00F08F9E8647"),
            &[0; 16],
            1,
        );
        assert_eq!(
            apdu.as_slice(),
            &hex::<47>("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6610234BDED643200")
        );
    }
}
