//! Secure cards: NTAG 424 DNA (and DESFire EV2/EV3, which share these commands) proving
//! themselves with AES-128, sans IO.
//!
//! A UID is public: anyone can read it and write it to a "magic" card. A secure card instead
//! holds AES keys that never leave it, and answers AuthenticateEV2First (NXP AN12196) only if
//! the reader knows the same key. Each card's keys are diversified from the site's card master
//! key and the card's UID (NXP AN10922), so one card's keys open nothing else, and the door
//! derives them as a card arrives instead of storing a key per card.
//!
//! Everything here is an APDU exchange the shell carries out (a PN532 on the door, a PC/SC desk
//! reader at enrolment): a machine hands out the next command APDU, the shell returns the
//! card's response, and the machine either asks for another or finishes. Nothing here reads a
//! reader, a clock or an RNG: the random numbers come in from the caller.
//!
//! - [`auth`]: select, authenticate and read the real UID: the part both share.
//! - [`crypto`]: AES-CMAC, CBC, session keys, secure messaging, diversification.
//! - [`reader`]: the door's check: authenticate with the door key, then read the real UID under
//!   secure messaging (GetCardUID) and compare it with the UID the card announced.
//! - [`personalize`]: enrolment: change a card's keys (factory or an earlier master key's) to
//!   this site's diversified keys.
//! - [`sun`]: the card's Secure Unique NFC message (SDM), checked on the server side.

pub mod auth;
pub mod crypto;
pub mod personalize;
pub mod reader;
pub mod sun;

pub use crypto::{Key, Session};

/// Longest command APDU built here (ChangeKey: 5 header bytes, key number, 32 encrypted
/// bytes, an 8-byte MAC and Le).
pub const APDU_MAX: usize = 64;

/// A command APDU.
pub type Apdu = heapless::Vec<u8, APDU_MAX>;

/// A secure card's UID length (NTAG 424 DNA and DESFire EV2/EV3 have 7-byte UIDs).
pub const UID_LEN: usize = 7;

/// The card's keys, numbered 0 (the application master key, which changes the others) to 4.
pub const KEY_COUNT: u8 = 5;

/// The key the door authenticates with. Doors never need key 0: a key only reading the UID
/// cannot change a card.
pub const DOOR_KEY: u8 = 2;

/// Every key of a new NTAG 424 DNA.
pub const FACTORY_KEY: Key = [0; 16];

/// The system identifier in every diversification input (AN10922's "SystemIdentifier").
pub const SYSTEM_ID: &[u8; 10] = b"chronolock";

/// Key `key_no` of the card with `uid`, diversified from the site's card master key:
/// AN10922 AES-128 with the input `UID || key number || "chronolock"` (18 bytes).
pub fn card_key(master: &Key, uid: &[u8; UID_LEN], key_no: u8) -> Key {
    // 18 input bytes: AN10922's diversification is AES-CMAC of `0x01 || input` here (see
    // `crypto::diversify`, which the tests check it against).
    crypto::cmac(master, &[&[0x01], uid, &[key_no], SYSTEM_ID])
}

/// All five keys of a card under a master key (or the factory keys, with `None`).
pub fn card_keys(master: Option<&Key>, uid: &[u8; UID_LEN]) -> [Key; KEY_COUNT as usize] {
    core::array::from_fn(|n| master.map_or(FACTORY_KEY, |m| card_key(m, uid, n as u8)))
}

/// Status words the cards answer (ISO 7816-4 wrapped native commands, NT4H2421Gx §8.4).
pub mod status {
    /// Success (ISO commands).
    pub const ISO_OK: [u8; 2] = [0x90, 0x00];
    /// Success (native commands).
    pub const OK: [u8; 2] = [0x91, 0x00];
    /// More frames follow (the authentication's first part).
    pub const ADDITIONAL_FRAME: [u8; 2] = [0x91, 0xAF];
    /// Authentication failed: wrong key.
    pub const AUTHENTICATION_ERROR: [u8; 2] = [0x91, 0xAE];
    /// The command needs an authentication that has not happened.
    pub const PERMISSION_DENIED: [u8; 2] = [0x91, 0x9D];
    /// A MAC or CRC did not verify.
    pub const INTEGRITY_ERROR: [u8; 2] = [0x91, 0x1E];
    /// The command has the wrong length.
    pub const LENGTH_ERROR: [u8; 2] = [0x91, 0x7E];
    /// A parameter is out of range.
    pub const PARAMETER_ERROR: [u8; 2] = [0x91, 0x9E];
    /// A command this card does not know.
    pub const ILLEGAL_COMMAND: [u8; 2] = [0x91, 0x1C];
    /// ISO: the application or file was not found.
    pub const FILE_NOT_FOUND: [u8; 2] = [0x6A, 0x82];
}

/// Native command codes (NT4H2421Gx §10).
pub mod command {
    /// AuthenticateEV2First.
    pub const AUTHENTICATE_EV2_FIRST: u8 = 0x71;
    /// The second frame of an authentication.
    pub const ADDITIONAL_FRAME: u8 = 0xAF;
    /// GetCardUID.
    pub const GET_CARD_UID: u8 = 0x51;
    /// ChangeKey.
    pub const CHANGE_KEY: u8 = 0xC4;
    /// GetKeyVersion.
    pub const GET_KEY_VERSION: u8 = 0x64;
}

/// The NDEF application's DF name, which ISOSelectFile selects before authenticating.
pub const NDEF_APPLICATION: [u8; 7] = [0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01];

/// Builds an APDU from parts (all built here are far below [`APDU_MAX`]).
pub(crate) fn apdu(parts: &[&[u8]]) -> Apdu {
    let mut out = Apdu::new();
    for part in parts {
        // The lengths are this module's own constants: the sum is checked by the tests.
        let _ = out.extend_from_slice(part);
    }
    out
}

/// ISOSelectFile of the NDEF application by DF name.
pub fn select_application() -> Apdu {
    apdu(&[&[0x00, 0xA4, 0x04, 0x00, 0x07], &NDEF_APPLICATION, &[0x00]])
}

/// A native command wrapped in ISO 7816-4: `90 cmd 00 00 Lc data 00`.
pub fn wrap(cmd: u8, parts: &[&[u8]]) -> Apdu {
    let lc: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = apdu(&[&[0x90, cmd, 0x00, 0x00]]);
    if lc > 0 {
        let _ = out.push(lc as u8);
        for part in parts {
            let _ = out.extend_from_slice(part);
        }
    }
    let _ = out.push(0x00);
    out
}

/// Splits a response into its data and status word (`None`: shorter than a status word).
pub fn split_response(response: &[u8]) -> Option<(&[u8], [u8; 2])> {
    let at = response.len().checked_sub(2)?;
    Some((&response[..at], [response[at], response[at + 1]]))
}

/// The first part of an AES authentication with key `key_no` (no capabilities sent).
pub fn authenticate_first(key_no: u8) -> Apdu {
    wrap(command::AUTHENTICATE_EV2_FIRST, &[&[key_no, 0x00]])
}

/// What the card's first authentication answer leads to: RndB from `E(K, RndB)`, and the
/// second part's data, `E(K, RndA || RndB')`.
pub fn authenticate_second(
    key: &Key,
    rnd_a: &[u8; 16],
    enc_rnd_b: &[u8],
) -> Option<([u8; 16], Apdu)> {
    let mut rnd_b: [u8; 16] = enc_rnd_b.try_into().ok()?;
    crypto::cbc_decrypt(key, &[0; 16], &mut rnd_b);
    let mut both = [0u8; 32];
    both[..16].copy_from_slice(rnd_a);
    both[16..].copy_from_slice(&crypto::rotate_left(&rnd_b));
    crypto::cbc_encrypt(key, &[0; 16], &mut both);
    Some((rnd_b, wrap(command::ADDITIONAL_FRAME, &[&both])))
}

/// Checks the card's last authentication answer, `E(K, TI || RndA' || PDcap2 || PCDcap2)`:
/// the card proves it knows the key by returning RndA rotated. Gives the session.
pub fn authenticate_finish(
    key: &Key,
    rnd_a: &[u8; 16],
    rnd_b: &[u8; 16],
    answer: &[u8],
) -> Option<Session> {
    let mut plain: [u8; 32] = answer.try_into().ok()?;
    crypto::cbc_decrypt(key, &[0; 16], &mut plain);
    let mut ti = [0u8; 4];
    ti.copy_from_slice(&plain[..4]);
    crypto::same(&plain[4..20], &crypto::rotate_left(rnd_a))
        .then(|| Session::derive(key, rnd_a, rnd_b, ti))
}

/// GetCardUID in CommMode.Full: the command carries only its MAC.
pub fn get_card_uid(session: &Session) -> Apdu {
    wrap(
        command::GET_CARD_UID,
        &[&session.command_mac(command::GET_CARD_UID, &[])],
    )
}

/// Reads GetCardUID's answer (16 encrypted bytes and an 8-byte MAC) after the command: the
/// session's counter advances, the MAC is checked, and the UID is decrypted. `None` if the
/// MAC or the padding is wrong.
pub fn read_card_uid(session: &mut Session, data: &[u8]) -> Option<[u8; UID_LEN]> {
    if data.len() != 24 {
        return None;
    }
    session.ctr = session.ctr.wrapping_add(1);
    let (enc, mac) = data.split_at(16);
    if !crypto::same(&session.response_mac(0x00, enc), mac) {
        return None;
    }
    let mut plain = [0u8; 16];
    plain.copy_from_slice(enc);
    session.decrypt_response(&mut plain);
    let (uid, padding) = plain.split_at(UID_LEN);
    (padding[0] == 0x80 && padding[1..].iter().all(|&b| b == 0)).then(|| {
        let mut out = [0u8; UID_LEN];
        out.copy_from_slice(uid);
        out
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Hex to a fixed-size array (tests only).
    pub fn hex<const N: usize>(s: &str) -> [u8; N] {
        let v: heapless::Vec<u8, 256> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect();
        v.as_slice().try_into().expect("length")
    }

    #[test]
    fn card_keys_are_an10922_diversified() {
        let master = hex::<16>("00112233445566778899AABBCCDDEEFF");
        let uid = hex::<7>("04DE5F1EACC040");
        let mut input = [0u8; 18];
        input[..7].copy_from_slice(&uid);
        input[7] = DOOR_KEY;
        input[8..].copy_from_slice(SYSTEM_ID);
        assert_eq!(
            Some(card_key(&master, &uid, DOOR_KEY)),
            crypto::diversify(&master, &input)
        );
        let keys = card_keys(Some(&master), &uid);
        assert!(keys
            .iter()
            .enumerate()
            .all(|(i, k)| keys[i + 1..].iter().all(|o| o != k)));
        assert_eq!(card_keys(None, &uid), [FACTORY_KEY; 5]);
        let other = card_key(&master, &hex("04DE5F1EACC041"), DOOR_KEY);
        assert_ne!(other, keys[usize::from(DOOR_KEY)]);
    }

    /// AN12196 §5.6 (Table 14): AuthenticateEV2First with the all-zero key 0, byte for byte.
    #[test]
    fn an12196_authenticate_ev2_first() {
        let key = [0u8; 16];
        let rnd_a = hex::<16>("13C5DB8A5930439FC3DEF9A4C675360F");
        assert_eq!(
            authenticate_first(0).as_slice(),
            &hex::<8>("9071000002000000")
        );
        let (rnd_b, part2) =
            authenticate_second(&key, &rnd_a, &hex::<16>("A04C124213C186F22399D33AC2A30215"))
                .expect("16 bytes");
        assert_eq!(rnd_b, hex::<16>("B9E2FC789B64BF237CCCAA20EC7E6E48"));
        assert_eq!(
            part2.as_slice(),
            &hex::<38>(
                "90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D00"
            )
        );
        let session = authenticate_finish(
            &key,
            &rnd_a,
            &rnd_b,
            &hex::<32>("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663"),
        )
        .expect("the card knows the key");
        assert_eq!(session.ti, hex::<4>("9D00C4DF"));
        assert_eq!(session.enc, hex::<16>("1309C877509E5A215007FF0ED19CA564"));
        assert_eq!(session.mac, hex::<16>("4C6626F5E72EA694202139295C7A7FC7"));
        assert_eq!(session.ctr, 0);
        // Another RndA: the card's answer no longer proves anything.
        let mut other = rnd_a;
        other[0] ^= 1;
        assert!(authenticate_finish(
            &key,
            &other,
            &rnd_b,
            &hex::<32>("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663"),
        )
        .is_none());
    }

    /// AN12196 §6.3 (Table 28): GetCardUID under secure messaging.
    #[test]
    fn an12196_get_card_uid() {
        let mut session = Session {
            enc: hex("2B4D963C014DC36F24F69A50A394F875"),
            mac: hex("379D32130CE61705DD5FD8C36B95D764"),
            ti: hex("DF055522"),
            ctr: 0,
        };
        assert_eq!(
            get_card_uid(&session).as_slice(),
            &hex::<14>("90510000088E2C155ADDA99BE300")
        );
        let answer = hex::<24>("70756055688505B52A5E26E59E329CD6595F672298EA41B7");
        let mut tampered = answer;
        tampered[3] ^= 0x10;
        let mut copy = session;
        assert_eq!(read_card_uid(&mut copy, &tampered), None);
        assert_eq!(
            read_card_uid(&mut session, &answer),
            Some(hex("04958CAA5C5E80"))
        );
        assert_eq!(session.ctr, 1);
    }

    #[test]
    fn responses_split_and_select_is_iso() {
        assert_eq!(split_response(&[0x91]), None);
        assert_eq!(
            split_response(&[1, 0x91, 0x00]),
            Some((&[1u8][..], status::OK))
        );
        assert_eq!(
            select_application().as_slice(),
            &hex::<13>("00A4040007D276000085010100")
        );
    }
}
