//! The AES-128 primitives of NTAG 424 DNA and DESFire EV2/EV3 secure messaging (NT4H2421Gx §9,
//! NXP AN12196): AES-CMAC and its truncation, CBC over whole blocks, the session keys of
//! AuthenticateEV2First, and key diversification (NXP AN10922 §2.2).
//!
//! AES and CMAC are RustCrypto's; only the chaining of one or two blocks and the byte layouts
//! NXP defines are written here.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use cmac::{Cmac, Mac};

/// An AES-128 key.
pub type Key = [u8; 16];

/// The AES block length.
pub const BLOCK: usize = 16;

/// AES-CMAC (NIST SP 800-38B) of the concatenation of `parts`.
pub fn cmac(key: &Key, parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.into());
    for part in parts {
        Mac::update(&mut mac, part);
    }
    mac.finalize().into_bytes().into()
}

/// The 8-byte MAC NXP secure messaging sends: the odd-numbered bytes of the full CMAC
/// (NT4H2421Gx §9.1.3, "MACt").
pub fn truncate(full: &[u8; 16]) -> [u8; 8] {
    core::array::from_fn(|i| full[2 * i + 1])
}

/// Encrypts one block in place (ECB).
pub fn encrypt_block(key: &Key, block: &mut [u8; BLOCK]) {
    Aes128::new(key.into()).encrypt_block(block.into());
}

/// Decrypts one block in place (ECB).
pub fn decrypt_block(key: &Key, block: &mut [u8; BLOCK]) {
    Aes128::new(key.into()).decrypt_block(block.into());
}

/// AES-CBC encryption in place; `data` is whole blocks (callers pad). Returns `false` (and
/// leaves `data` alone) when it is not.
pub fn cbc_encrypt(key: &Key, iv: &[u8; BLOCK], data: &mut [u8]) -> bool {
    if data.len() % BLOCK != 0 {
        return false;
    }
    let cipher = Aes128::new(key.into());
    let mut chain = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        chunk.iter_mut().zip(chain).for_each(|(b, c)| *b ^= c);
        cipher.encrypt_block(chunk.into());
        chain.copy_from_slice(chunk);
    }
    true
}

/// AES-CBC decryption in place; `data` is whole blocks. Returns `false` (and leaves `data`
/// alone) when it is not.
pub fn cbc_decrypt(key: &Key, iv: &[u8; BLOCK], data: &mut [u8]) -> bool {
    if data.len() % BLOCK != 0 {
        return false;
    }
    let cipher = Aes128::new(key.into());
    let mut chain = *iv;
    for chunk in data.chunks_exact_mut(BLOCK) {
        let mut next = [0u8; BLOCK];
        next.copy_from_slice(chunk);
        cipher.decrypt_block(chunk.into());
        chunk.iter_mut().zip(chain).for_each(|(b, c)| *b ^= c);
        chain = next;
    }
    true
}

/// Compares two MACs in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AN10922 §2.2.1 AES-128 key diversification: the diversified key is the CMAC of
/// `0x01 || input`, padded to two blocks. For inputs of 16 to 31 bytes (two blocks after the
/// constant, the lengths this code uses) that is exactly AES-CMAC, which is what runs here;
/// other lengths, which AN10922 pads differently from CMAC, are refused (`None`).
pub fn diversify(master: &Key, input: &[u8]) -> Option<Key> {
    (16..=31)
        .contains(&input.len())
        .then(|| cmac(master, &[&[0x01], input]))
}

/// The session keys of an AES AuthenticateEV2First (NT4H2421Gx §9.1.7): `(SesAuthENCKey,
/// SesAuthMACKey)`, the CMAC under the authentication key of the session vectors SV1 and SV2
/// built from both random numbers.
pub fn session_keys(key: &Key, rnd_a: &[u8; 16], rnd_b: &[u8; 16]) -> (Key, Key) {
    let mut sv = [0u8; 32];
    sv[2..6].copy_from_slice(&[0x00, 0x01, 0x00, 0x80]);
    sv[6..8].copy_from_slice(&rnd_a[0..2]);
    for i in 0..6 {
        sv[8 + i] = rnd_a[2 + i] ^ rnd_b[i];
    }
    sv[14..24].copy_from_slice(&rnd_b[6..16]);
    sv[24..32].copy_from_slice(&rnd_a[8..16]);
    sv[0..2].copy_from_slice(&[0xA5, 0x5A]);
    let enc = cmac(key, &[&sv]);
    sv[0..2].copy_from_slice(&[0x5A, 0xA5]);
    let mac = cmac(key, &[&sv]);
    (enc, mac)
}

/// Rotates 16 bytes left by one byte (RndB' and RndA' of the authentication).
pub fn rotate_left(x: &[u8; 16]) -> [u8; 16] {
    core::array::from_fn(|i| x[(i + 1) % 16])
}

/// ISO/IEC 9797-1 padding method 2 (0x80, then zeros) of `len` bytes in `buf`, to the next
/// whole block; padding is always added. Returns the padded length, or `None` if `buf` is too
/// short.
pub fn pad(buf: &mut [u8], len: usize) -> Option<usize> {
    let padded = (len / BLOCK + 1) * BLOCK;
    let tail = buf.get_mut(len..padded)?;
    tail.fill(0);
    tail[0] = 0x80;
    Some(padded)
}

/// The CRC32 that ChangeKey sends over a new key (NT4H2421Gx §10.6.1): the IEEE polynomial,
/// reflected, initial value all ones, no final inversion ("JAMCRC"), least significant byte
/// first.
pub fn crc32(data: &[u8]) -> [u8; 4] {
    crc::Crc::<u32>::new(&crc::CRC_32_JAMCRC)
        .checksum(data)
        .to_le_bytes()
}

/// An authenticated session: the keys, the transaction identifier the card chose, and the
/// command counter both sides count (NT4H2421Gx §9.1.2–§9.1.4).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// SesAuthENCKey.
    pub enc: Key,
    /// SesAuthMACKey.
    pub mac: Key,
    /// Transaction identifier.
    pub ti: [u8; 4],
    /// Command counter: commands completed in this session.
    pub ctr: u16,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("ti", &self.ti)
            .field("ctr", &self.ctr)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session after an AES AuthenticateEV2First with `key` (counter zero).
    pub fn derive(key: &Key, rnd_a: &[u8; 16], rnd_b: &[u8; 16], ti: [u8; 4]) -> Self {
        let (enc, mac) = session_keys(key, rnd_a, rnd_b);
        Session {
            enc,
            mac,
            ti,
            ctr: 0,
        }
    }

    fn iv(&self, label: [u8; 2], ctr: u16) -> [u8; BLOCK] {
        let mut iv = [0u8; BLOCK];
        iv[0..2].copy_from_slice(&label);
        iv[2..6].copy_from_slice(&self.ti);
        iv[6..8].copy_from_slice(&ctr.to_le_bytes());
        encrypt_block(&self.enc, &mut iv);
        iv
    }

    /// MACt of a command: `cmd || CmdCtr || TI || header and data` (before the counter
    /// advances).
    pub fn command_mac(&self, cmd: u8, data: &[u8]) -> [u8; 8] {
        truncate(&cmac(
            &self.mac,
            &[&[cmd], &self.ctr.to_le_bytes(), &self.ti, data],
        ))
    }

    /// MACt of a response: `return code || CmdCtr || TI || data`, with the counter already
    /// advanced past the command it answers.
    pub fn response_mac(&self, rc: u8, data: &[u8]) -> [u8; 8] {
        truncate(&cmac(
            &self.mac,
            &[&[rc], &self.ctr.to_le_bytes(), &self.ti, data],
        ))
    }

    /// Encrypts a command's data (whole, padded blocks) in place.
    pub fn encrypt_command(&self, data: &mut [u8]) -> bool {
        cbc_encrypt(&self.enc, &self.iv([0xA5, 0x5A], self.ctr), data)
    }

    /// Decrypts a command's data in place (the card's side).
    pub fn decrypt_command(&self, data: &mut [u8]) -> bool {
        cbc_decrypt(&self.enc, &self.iv([0xA5, 0x5A], self.ctr), data)
    }

    /// Encrypts a response's data in place (the card's side, counter advanced).
    pub fn encrypt_response(&self, data: &mut [u8]) -> bool {
        cbc_encrypt(&self.enc, &self.iv([0x5A, 0xA5], self.ctr), data)
    }

    /// Decrypts a response's data in place (counter advanced).
    pub fn decrypt_response(&self, data: &mut [u8]) -> bool {
        cbc_decrypt(&self.enc, &self.iv([0x5A, 0xA5], self.ctr), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::tests::hex;

    /// AN10922 §2.2.1: AES-128 diversification of master key 00112233…EEFF with UID
    /// 04782E21801D80, AID 3042F5 and system identifier "NXP Abu".
    #[test]
    fn an10922_aes128_vector() {
        let master = hex::<16>("00112233445566778899AABBCCDDEEFF");
        let m = hex::<17>("04782E21801D803042F54E585020416275");
        assert_eq!(
            diversify(&master, &m),
            Some(hex::<16>("A8DD63A3B89D54B37CA802473FDA9175"))
        );
        assert_eq!(
            diversify(&master, &m[..15]),
            None,
            "AN10922 pads these unlike CMAC"
        );
        assert_eq!(diversify(&master, &[0; 32]), None);
    }

    /// AN12196 §5.6 (Table 14): the session keys of the all-zero key 0 with its fixed RndA and
    /// RndB.
    #[test]
    fn an12196_session_keys() {
        let (enc, mac) = session_keys(
            &[0; 16],
            &hex("13C5DB8A5930439FC3DEF9A4C675360F"),
            &hex("B9E2FC789B64BF237CCCAA20EC7E6E48"),
        );
        assert_eq!(enc, hex::<16>("1309C877509E5A215007FF0ED19CA564"));
        assert_eq!(mac, hex::<16>("4C6626F5E72EA694202139295C7A7FC7"));
    }

    /// AN12196 §5.16.1 (Table 25, step 7): the CRC32 of a new key.
    #[test]
    fn an12196_change_key_crc() {
        assert_eq!(
            crc32(&hex::<16>("F3847D627727ED3BC9C4CC050489B966")),
            hex::<4>("789DFADC")
        );
    }

    #[test]
    fn cbc_round_trips_and_refuses_partial_blocks() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let mut data = [0x55u8; 32];
        assert!(cbc_encrypt(&key, &iv, &mut data));
        assert_ne!(data, [0x55u8; 32]);
        assert!(cbc_decrypt(&key, &iv, &mut data));
        assert_eq!(data, [0x55u8; 32]);
        assert!(!cbc_encrypt(&key, &iv, &mut data[..17]));
    }

    #[test]
    fn padding_always_adds_a_marker() {
        let mut buf = [0xFFu8; 32];
        assert_eq!(pad(&mut buf, 7), Some(16));
        assert_eq!(&buf[7..16], &[0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pad(&mut buf, 16), Some(32));
        assert_eq!(pad(&mut buf, 32), None);
    }
}
