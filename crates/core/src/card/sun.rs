//! Secure Unique NFC (SUN) messages: what an NTAG 424 DNA with Secure Dynamic Messaging puts
//! into the URL a phone reads (NT4H2421Gx §9.3, AN12196 §3): the UID and read counter
//! encrypted under the SDM meta-read key (`e`), and a MAC under a session key derived from the
//! SDM file-read key, the UID and the counter (`c`). A server checks them without a reader;
//! the counter refuses a replayed URL.

use super::{crypto, Key, UID_LEN};

/// What a verified SUN message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sun {
    /// The card's UID.
    pub uid: [u8; UID_LEN],
    /// Its SDM read counter (24 bits).
    pub read_counter: u32,
}

/// Why a SUN message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SunError {
    /// The decrypted PICC data does not mirror a 7-byte UID and a read counter (wrong
    /// meta-read key, or not a SUN message).
    PiccData,
    /// The MAC does not verify.
    Mac,
}

/// Checks a SUN message: `picc_data` is the encrypted PICC data (`e`), `mac` the 8-byte MAC
/// (`c`) over `mac_input` (the URL bytes between the SDM MAC input offset and the MAC; empty
/// when they coincide).
pub fn verify(
    meta_read_key: &Key,
    file_read_key: &Key,
    picc_data: &[u8; 16],
    mac: &[u8; 8],
    mac_input: &[u8],
) -> Result<Sun, SunError> {
    let mut plain = *picc_data;
    crypto::decrypt_block(meta_read_key, &mut plain);
    // PICCDataTag: bit 7 UID mirrored, bit 6 counter mirrored, bits 3..0 the UID length.
    if plain[0] != 0xC7 {
        return Err(SunError::PiccData);
    }
    let mut uid = [0u8; UID_LEN];
    uid.copy_from_slice(&plain[1..8]);
    let counter = [plain[8], plain[9], plain[10]];
    // SV2 = 3CC3 0001 0080 || UID || SDMReadCtr (NT4H2421Gx §9.3.9.1).
    let session = crypto::cmac(
        file_read_key,
        &[&[0x3C, 0xC3, 0x00, 0x01, 0x00, 0x80], &uid, &counter],
    );
    let expected = crypto::truncate(&crypto::cmac(&session, &[mac_input]));
    if !crypto::same(&expected, mac) {
        return Err(SunError::Mac);
    }
    Ok(Sun {
        uid,
        read_counter: u32::from_le_bytes([counter[0], counter[1], counter[2], 0]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::tests::hex;

    /// AN12196 §3.4 (Table 3): the SUN example with all-zero keys.
    #[test]
    fn an12196_sun_example() {
        let e = hex::<16>("EF963FF7828658A599F3041510671E88");
        let c = hex::<8>("94EED9EE65337086");
        let sun = verify(&[0; 16], &[0; 16], &e, &c, &[]).expect("the example verifies");
        assert_eq!(sun.uid, hex::<7>("04DE5F1EACC040"));
        assert_eq!(sun.read_counter, 61);
        let mut forged = c;
        forged[7] ^= 1;
        assert_eq!(
            verify(&[0; 16], &[0; 16], &e, &forged, &[]),
            Err(SunError::Mac)
        );
        assert_eq!(
            verify(&[1; 16], &[0; 16], &e, &c, &[]),
            Err(SunError::PiccData)
        );
    }
}
