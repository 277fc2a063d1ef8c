//! A software NTAG 424 DNA: the card side of the commands the door and the enrolment use
//! (ISOSelectFile, AuthenticateEV2First, GetCardUID, ChangeKey), written from the datasheet
//! (NT4H2421Gx §9–§10) and checked on AN12196's transcripts. It stands in for a real card in
//! the scenario runner, the fleet, the virtual doors and the enrolment tests, where no reader
//! is attached.
//!
//! A *clone* is what an attacker can make without the site's key: a card that announces a
//! genuine card's UID (and, being programmable, answers GetCardUID with it) but holds other
//! keys, so that it cannot answer the door's authentication.

use chronolock_core::card::{
    self, command, crypto, status, Key, Session, KEY_COUNT, NDEF_APPLICATION, UID_LEN,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Carries the door's APDU to the card in the reader's field (at once: the simulated reader is
/// ideal) and hands the door its answer; with no card there, the card is lost to the door.
pub fn carry<F>(
    door: &mut chronolock_device::door::Door<F>,
    card: Option<&mut SoftCard>,
    apdu: &[u8],
    now: chronolock_core::Instant,
) where
    F: embedded_storage::nor_flash::NorFlash + embedded_storage::nor_flash::MultiwriteNorFlash,
{
    match card {
        Some(card) => {
            let answer = card.transmit(apdu);
            door.handle_card_response(&answer, now);
        }
        None => door.handle_card_lost(now),
    }
}

/// One card.
#[derive(Clone, Debug)]
pub struct SoftCard {
    uid: [u8; UID_LEN],
    keys: [Key; KEY_COUNT as usize],
    versions: [u8; KEY_COUNT as usize],
    selected: bool,
    /// The first authentication frame was answered: the key number and RndB.
    pending: Option<(u8, [u8; 16])>,
    /// The authenticated session and the key number it was opened with.
    session: Option<(u8, Session)>,
    rng: ChaCha8Rng,
    /// RndB and TI for the next authentication (to replay a transcript).
    fixed: Option<([u8; 16], [u8; 4])>,
}

impl SoftCard {
    /// A new card: every key is the factory key.
    pub fn blank(uid: [u8; UID_LEN], seed: u64) -> Self {
        SoftCard {
            uid,
            keys: [card::FACTORY_KEY; KEY_COUNT as usize],
            versions: [0; KEY_COUNT as usize],
            selected: false,
            pending: None,
            session: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            fixed: None,
        }
    }

    /// A card personalised for the site with this card master key.
    pub fn genuine(uid: [u8; UID_LEN], master: &Key, seed: u64) -> Self {
        let mut c = SoftCard::blank(uid, seed);
        c.keys = card::card_keys(Some(master), &uid);
        c.versions = [1; KEY_COUNT as usize];
        c
    }

    /// A copy of a genuine card's UID on a programmable card: the attacker's own random keys.
    pub fn clone_of(uid: [u8; UID_LEN], seed: u64) -> Self {
        let mut c = SoftCard::blank(uid, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC10E);
        for k in &mut c.keys {
            rng.fill_bytes(k);
        }
        c
    }

    /// A card with these keys (as kept in a file between runs).
    pub fn with_keys(uid: [u8; UID_LEN], keys: [Key; KEY_COUNT as usize], seed: u64) -> Self {
        let mut c = SoftCard::blank(uid, seed);
        c.keys = keys;
        c
    }

    /// Its UID.
    pub fn uid(&self) -> [u8; UID_LEN] {
        self.uid
    }

    /// Its keys now.
    pub fn keys(&self) -> &[Key; KEY_COUNT as usize] {
        &self.keys
    }

    /// Uses this RndB and TI in the next authentication.
    pub fn fix_next_authentication(&mut self, rnd_b: [u8; 16], ti: [u8; 4]) {
        self.fixed = Some((rnd_b, ti));
    }

    /// Opens a session as if an authentication had just completed (to replay a transcript
    /// that starts there).
    pub fn set_session(&mut self, key_no: u8, session: Session) {
        self.selected = true;
        self.session = Some((key_no, session));
    }

    /// The card leaves the field: RAM state is lost.
    pub fn reset(&mut self) {
        self.selected = false;
        self.pending = None;
        self.session = None;
    }

    /// Answers one command APDU with data and a status word.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        let (out, sw) = self.answer(apdu);
        let mut r = out;
        r.extend_from_slice(&sw);
        r
    }

    fn answer(&mut self, apdu: &[u8]) -> (Vec<u8>, [u8; 2]) {
        let Some(&[cla, ins, p1, _]) = apdu.first_chunk::<4>() else {
            return (vec![], [0x67, 0x00]);
        };
        let data = match apdu.get(4) {
            Some(&lc) if apdu.len() >= 5 + usize::from(lc) && apdu.len() > 5 => {
                &apdu[5..5 + usize::from(lc)]
            }
            _ => &[][..],
        };
        match (cla, ins) {
            (0x00, 0xA4) if p1 == 0x04 && data == NDEF_APPLICATION => {
                self.reset();
                self.selected = true;
                (vec![], status::ISO_OK)
            }
            (0x00, 0xA4) => (vec![], status::FILE_NOT_FOUND),
            (0x90, command::AUTHENTICATE_EV2_FIRST) => self.auth_first(data),
            (0x90, command::ADDITIONAL_FRAME) => self.auth_second(data),
            (0x90, command::GET_CARD_UID) => self.get_card_uid(data),
            (0x90, command::CHANGE_KEY) => self.change_key(data),
            _ => (vec![], status::ILLEGAL_COMMAND),
        }
    }

    fn auth_first(&mut self, data: &[u8]) -> (Vec<u8>, [u8; 2]) {
        self.session = None;
        self.pending = None;
        let Some(&key_no) = data.first() else {
            return (vec![], status::LENGTH_ERROR);
        };
        if !self.selected {
            return (vec![], status::PERMISSION_DENIED);
        }
        if key_no >= KEY_COUNT {
            return (vec![], [0x91, 0x40]);
        }
        let rnd_b = match self.fixed {
            Some((b, _)) => b,
            None => {
                let mut b = [0u8; 16];
                self.rng.fill_bytes(&mut b);
                b
            }
        };
        let mut enc = rnd_b;
        crypto::encrypt_block(&self.keys[usize::from(key_no)], &mut enc);
        self.pending = Some((key_no, rnd_b));
        (enc.to_vec(), status::ADDITIONAL_FRAME)
    }

    fn auth_second(&mut self, data: &[u8]) -> (Vec<u8>, [u8; 2]) {
        let Some((key_no, rnd_b)) = self.pending.take() else {
            return (vec![], status::PERMISSION_DENIED);
        };
        let Ok(mut both) = <[u8; 32]>::try_from(data) else {
            return (vec![], status::LENGTH_ERROR);
        };
        let key = self.keys[usize::from(key_no)];
        crypto::cbc_decrypt(&key, &[0; 16], &mut both);
        if !crypto::same(&both[16..], &crypto::rotate_left(&rnd_b)) {
            return (vec![], status::AUTHENTICATION_ERROR);
        }
        let mut rnd_a = [0u8; 16];
        rnd_a.copy_from_slice(&both[..16]);
        let ti = match self.fixed.take() {
            Some((_, ti)) => ti,
            None => {
                let mut ti = [0u8; 4];
                self.rng.fill_bytes(&mut ti);
                ti
            }
        };
        self.session = Some((key_no, Session::derive(&key, &rnd_a, &rnd_b, ti)));
        let mut out = [0u8; 32];
        out[..4].copy_from_slice(&ti);
        out[4..20].copy_from_slice(&crypto::rotate_left(&rnd_a));
        crypto::cbc_encrypt(&key, &[0; 16], &mut out);
        (out.to_vec(), status::OK)
    }

    fn get_card_uid(&mut self, data: &[u8]) -> (Vec<u8>, [u8; 2]) {
        let Some((key_no, mut s)) = self.session.take() else {
            return (vec![], status::PERMISSION_DENIED);
        };
        if !crypto::same(&s.command_mac(command::GET_CARD_UID, &[]), data) {
            return (vec![], status::INTEGRITY_ERROR);
        }
        s.ctr = s.ctr.wrapping_add(1);
        let mut plain = [0u8; 16];
        plain[..UID_LEN].copy_from_slice(&self.uid);
        plain[UID_LEN] = 0x80;
        s.encrypt_response(&mut plain);
        let mut out = plain.to_vec();
        out.extend_from_slice(&s.response_mac(0x00, &plain));
        self.session = Some((key_no, s));
        (out, status::OK)
    }

    fn change_key(&mut self, data: &[u8]) -> (Vec<u8>, [u8; 2]) {
        let Some((auth_key, mut s)) = self.session.take() else {
            return (vec![], status::PERMISSION_DENIED);
        };
        if data.len() != 41 {
            return (vec![], status::LENGTH_ERROR);
        }
        let key_no = data[0];
        if auth_key != 0 || key_no >= KEY_COUNT {
            return (vec![], status::PERMISSION_DENIED);
        }
        if !crypto::same(
            &s.command_mac(command::CHANGE_KEY, &data[..33]),
            &data[33..],
        ) {
            return (vec![], status::INTEGRITY_ERROR);
        }
        let mut plain = [0u8; 32];
        plain.copy_from_slice(&data[1..33]);
        s.decrypt_command(&mut plain);
        let n = usize::from(key_no);
        let mut new = [0u8; 16];
        new.copy_from_slice(&plain[..16]);
        let padding_at = if key_no == 0 {
            17
        } else {
            new.iter_mut().zip(self.keys[n]).for_each(|(b, o)| *b ^= o);
            if plain[17..21] != crypto::crc32(&new) {
                return (vec![], status::INTEGRITY_ERROR);
            }
            21
        };
        if plain[padding_at] != 0x80 || plain[padding_at + 1..].iter().any(|&b| b != 0) {
            return (vec![], status::INTEGRITY_ERROR);
        }
        self.keys[n] = new;
        self.versions[n] = plain[16];
        s.ctr = s.ctr.wrapping_add(1);
        if key_no == 0 {
            // The key the session was opened with changed: the session ends, no MAC.
            return (vec![], status::OK);
        }
        let mac = s.response_mac(0x00, &[]);
        self.session = Some((auth_key, s));
        (mac.to_vec(), status::OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronolock_core::card::personalize::{self, Personalizer};
    use chronolock_core::card::reader::{self, Reader};
    use chronolock_core::card::DOOR_KEY;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXUPPER.decode(s.as_bytes()).expect("hex")
    }
    fn arr<const N: usize>(s: &str) -> [u8; N] {
        hex(s).try_into().expect("length")
    }

    /// AN12196 §5.6 (Table 14), the card's side: with its RndB and TI, the model answers the
    /// transcript's commands with the transcript's answers.
    #[test]
    fn the_model_answers_an12196_authentication() {
        let mut c = SoftCard::blank(arr("04DE5F1EACC040"), 1);
        c.fix_next_authentication(arr("B9E2FC789B64BF237CCCAA20EC7E6E48"), arr("9D00C4DF"));
        assert_eq!(c.transmit(&hex("00A4040007D276000085010100")), hex("9000"));
        assert_eq!(
            c.transmit(&hex("9071000002000000")),
            hex("A04C124213C186F22399D33AC2A3021591AF")
        );
        assert_eq!(
            c.transmit(&hex(
                "90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D00"
            )),
            hex("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100")
        );
    }

    /// AN12196 §6.3 (Table 28) and §5.16 (Tables 25 and 26), the card's side.
    #[test]
    fn the_model_answers_an12196_get_card_uid_and_change_key() {
        let mut c = SoftCard::blank(arr("04958CAA5C5E80"), 1);
        c.set_session(
            0,
            Session {
                enc: arr("2B4D963C014DC36F24F69A50A394F875"),
                mac: arr("379D32130CE61705DD5FD8C36B95D764"),
                ti: arr("DF055522"),
                ctr: 0,
            },
        );
        assert_eq!(
            c.transmit(&hex("90510000088E2C155ADDA99BE300")),
            hex("70756055688505B52A5E26E59E329CD6595F672298EA41B79100")
        );
        let session = |ctr| Session {
            enc: arr("4CF3CB41A22583A61E89B158D252FC53"),
            mac: arr("5529860B2FC5FB6154B7F28361D30BF9"),
            ti: arr("7614281A"),
            ctr,
        };
        c.set_session(0, session(2));
        assert_eq!(
            c.transmit(&hex("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC75D0CE20BCD1D06E600")),
            hex("203BB55D1089D5879100")
        );
        assert_eq!(c.keys()[2], arr::<16>("F3847D627727ED3BC9C4CC050489B966"));
        c.set_session(0, session(3));
        assert_eq!(
            c.transmit(&hex("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FDA6610234BDED643200")),
            hex("9100")
        );
        assert_eq!(c.keys()[0], arr::<16>("5004BF991F408672B1EF00F08F9E8647"));
        // The session ended with key 0.
        assert_eq!(
            c.transmit(&hex("90510000088E2C155ADDA99BE300")),
            hex("919D")
        );
    }

    fn run_reader(card: &mut SoftCard, key: Key) -> reader::Progress {
        let (mut r, mut apdu) = Reader::start(card.uid(), DOOR_KEY, key, [0x5A; 16]);
        for _ in 0..8 {
            match r.handle(&card.transmit(&apdu)) {
                reader::Progress::Send(next) => apdu = next,
                done => return done,
            }
        }
        panic!("the check did not finish in 8 exchanges");
    }

    /// Enrolment round trip: a blank card personalised for a site then passes the door's
    /// check with that site's key, and no other; a clone of its UID does not.
    #[test]
    fn personalise_then_authenticate_round_trip() {
        let master = [0x11u8; 16];
        let uid = arr("04DE5F1EACC040");
        let mut c = SoftCard::blank(uid, 7);
        let (mut p, mut apdu) = Personalizer::start(
            uid,
            card::card_keys(None, &uid),
            card::card_keys(Some(&master), &uid),
            1,
            [3; 16],
        );
        let mut exchanges = 0;
        loop {
            exchanges += 1;
            match p.handle(&c.transmit(&apdu)) {
                personalize::Progress::Send(next) => apdu = next,
                personalize::Progress::Done => break,
                personalize::Progress::Failed(f) => panic!("personalisation failed: {f:?}"),
            }
        }
        assert_eq!(
            exchanges, 9,
            "select, two auth frames, GetCardUID, five ChangeKeys"
        );
        assert_eq!(c.keys(), &card::card_keys(Some(&master), &uid));
        let door_key = card::card_key(&master, &uid, DOOR_KEY);
        assert_eq!(run_reader(&mut c, door_key), reader::Progress::Genuine(uid));
        let other_site = card::card_key(&[0x22; 16], &uid, DOOR_KEY);
        assert_eq!(
            run_reader(&mut c, other_site),
            reader::Progress::Refused(reader::Failure::WrongKey)
        );
        let mut clone = SoftCard::clone_of(uid, 9);
        assert_eq!(
            run_reader(&mut clone, door_key),
            reader::Progress::Refused(reader::Failure::WrongKey)
        );
        // A card already personalised refuses the factory key 0.
        let (mut again, apdu) = Personalizer::start(
            uid,
            card::card_keys(None, &uid),
            card::card_keys(Some(&master), &uid),
            1,
            [4; 16],
        );
        let mut apdu = apdu;
        let failed = loop {
            match again.handle(&c.transmit(&apdu)) {
                personalize::Progress::Send(next) => apdu = next,
                other => break other,
            }
        };
        assert_eq!(
            failed,
            personalize::Progress::Failed(personalize::Failure::WrongKey)
        );
    }

    /// Malformed commands get status words, never a panic.
    #[test]
    fn malformed_apdus_get_status_words() {
        let mut c = SoftCard::genuine(arr("04DE5F1EACC040"), &[1; 16], 3);
        for apdu in [
            &[][..],
            &[0x90],
            &[0x90, 0x71, 0, 0, 5, 1],
            &[0x90, 0xAF, 0, 0, 1, 2, 0],
            &[0x90, 0xC4, 0, 0, 0],
        ] {
            let r = c.transmit(apdu);
            assert!(
                r.len() >= 2 && r[r.len() - 2] != 0x90,
                "{apdu:02X?} -> {r:02X?}"
            );
        }
    }
}
