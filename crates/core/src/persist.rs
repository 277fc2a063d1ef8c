//! What the device keeps across power cycles, and its byte layout in flash.
//!
//! The core never writes flash: it emits [`Action::Persist`](crate::Action::Persist) and the
//! shell stores the bytes; at boot the shell hands them back. The layout is versioned and
//! checksummed so that a torn or foreign record is refused and the device boots with defaults
//! instead of trusting garbage.

use crate::time::UnixTime;

/// Layout version written in byte 0.
const VERSION: u8 = 2;

/// State that survives a power cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    /// The device has completed a sync with its backend; until then it is in setup mode.
    pub provisioned: bool,
    /// When this device last wrote the RTC (its time then), so a later reading's error can be
    /// bounded by the RTC's drift since.
    pub rtc_written_at: Option<UnixTime>,
    /// The clock's error bound when the RTC was written, in microseconds.
    pub rtc_written_error_us: u64,
    /// The RTC was written from a clock a network source had set (NTP or the backend), not from
    /// a phone: read back at boot, it counts as network-set (one lying NTP server cannot step
    /// it).
    pub rtc_written_from_network: bool,
    /// The latest network time seen (coarse: updated at most daily); anchors the NTP era.
    pub latest_known: Option<UnixTime>,
    /// The UTC day (Unix days) of the last battery report: never two reports in one day.
    pub last_report_day: Option<i64>,
    /// Generation of the installed allow-list (0: none): older lists are refused.
    pub list_generation: u64,
}

/// Why stored bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistError {
    /// Fewer bytes than the layout needs.
    TooShort,
    /// A layout version this firmware does not know.
    UnknownVersion(u8),
    /// The checksum does not match: a torn write or corruption.
    BadChecksum,
}

impl Persisted {
    /// Length of the encoded record.
    pub const LEN: usize = 1 + 1 + 8 + 8 + 8 + 8 + 8 + 4;

    /// The record's bytes: version, flags, five little-endian i64/u64 fields, CRC-32.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = VERSION;
        b[1] = u8::from(self.provisioned)
            | u8::from(self.rtc_written_at.is_some()) << 1
            | u8::from(self.latest_known.is_some()) << 2
            | u8::from(self.last_report_day.is_some()) << 3
            | u8::from(self.rtc_written_from_network) << 4;
        b[2..10].copy_from_slice(
            &self
                .rtc_written_at
                .map_or(0, UnixTime::as_micros)
                .to_le_bytes(),
        );
        b[10..18].copy_from_slice(&self.rtc_written_error_us.to_le_bytes());
        b[18..26].copy_from_slice(
            &self
                .latest_known
                .map_or(0, UnixTime::as_micros)
                .to_le_bytes(),
        );
        b[26..34].copy_from_slice(&self.last_report_day.unwrap_or(0).to_le_bytes());
        b[34..42].copy_from_slice(&self.list_generation.to_le_bytes());
        let crc = crc32(&b[..42]);
        b[42..46].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads a record written by [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Self, PersistError> {
        let b = bytes.get(..Self::LEN).ok_or(PersistError::TooShort)?;
        if b[0] != VERSION {
            return Err(PersistError::UnknownVersion(b[0]));
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[42..46]);
        if crc32(&b[..42]) != u32::from_le_bytes(crc) {
            return Err(PersistError::BadChecksum);
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            w
        };
        let flags = b[1];
        Ok(Persisted {
            provisioned: flags & 1 != 0,
            rtc_written_at: (flags & 2 != 0)
                .then(|| UnixTime::from_micros(i64::from_le_bytes(word(2)))),
            rtc_written_error_us: u64::from_le_bytes(word(10)),
            rtc_written_from_network: flags & 16 != 0,
            latest_known: (flags & 4 != 0)
                .then(|| UnixTime::from_micros(i64::from_le_bytes(word(18)))),
            last_report_day: (flags & 8 != 0).then(|| i64::from_le_bytes(word(26))),
            list_generation: u64::from_le_bytes(word(34)),
        })
    }
}

/// CRC-32 (IEEE 802.3), the checksum of the record.
fn crc32(data: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    CRC.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_and_refusals() {
        let p = Persisted {
            provisioned: true,
            rtc_written_at: Some(UnixTime::from_secs(1_795_510_740)),
            rtc_written_error_us: 12_345,
            rtc_written_from_network: true,
            latest_known: None,
            last_report_day: Some(20_781),
            list_generation: 9,
        };
        let bytes = p.encode();
        assert_eq!(Persisted::decode(&bytes), Ok(p));
        assert_eq!(Persisted::decode(&bytes[..10]), Err(PersistError::TooShort));
        let mut torn = bytes;
        torn[12] ^= 0x40;
        assert_eq!(Persisted::decode(&torn), Err(PersistError::BadChecksum));
        let mut future = bytes;
        future[0] = 9;
        assert_eq!(
            Persisted::decode(&future),
            Err(PersistError::UnknownVersion(9))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Persisted::decode(&bytes);
        }
    }
}
