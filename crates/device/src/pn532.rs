//! The NXP PN532 NFC controller's host frames (UM0701-02 §6.2), sans IO: what the firmware
//! writes to the chip over I2C (address [`I2C_ADDRESS`]) and how it reads the answers, for the
//! three commands a door needs: SAMConfiguration (normal mode), InListPassiveTarget (one ISO
//! 14443-A card at 106 kbit/s: its UID and whether it speaks ISO-DEP) and InDataExchange (an
//! APDU to that card, its answer back).
//!
//! A frame: `00 00 FF LEN LCS TFI PD0…PDn DCS 00`, with `LEN = 1 + n + 1` (TFI and data),
//! `LEN + LCS = 0` and `TFI + ΣPD + DCS = 0` (mod 256); TFI is `D4` from the host and `D5` from
//! the chip, whose answer's code is the command's plus one. The chip first acknowledges a
//! command with [`ACK`]. Over I2C every read starts with a status byte, bit 0 set when the chip
//! has something to say ([`ready`]). Everything read is checked (lengths, checksums, direction,
//! code) before it is used: the bus and the chip are outside the door's trust.

/// The PN532's 7-bit I2C address.
pub const I2C_ADDRESS: u8 = 0x24;

/// The acknowledgement frame.
pub const ACK: [u8; 6] = [0x00, 0x00, 0xFF, 0x00, 0xFF, 0x00];

/// Longest data a normal frame carries (TFI and data: 255 bytes).
pub const MAX_DATA: usize = 254;

/// Command codes.
pub mod command {
    /// SAMConfiguration.
    pub const SAM_CONFIGURATION: u8 = 0x14;
    /// InListPassiveTarget.
    pub const IN_LIST_PASSIVE_TARGET: u8 = 0x4A;
    /// InDataExchange.
    pub const IN_DATA_EXCHANGE: u8 = 0x40;
    /// GetFirmwareVersion.
    pub const GET_FIRMWARE_VERSION: u8 = 0x02;
}

const HOST_TO_PN532: u8 = 0xD4;
const PN532_TO_HOST: u8 = 0xD5;

/// Why bytes read from the chip are not a usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a frame, or than its length says.
    Truncated,
    /// No `00 00 FF` start.
    NoStart,
    /// The length checksum is wrong.
    LengthChecksum,
    /// The data checksum is wrong.
    DataChecksum,
    /// Not a frame from the chip (TFI not `D5`).
    Direction,
    /// The chip's syntax-error frame: it did not understand the command.
    ChipError,
    /// An answer to another command.
    Unexpected(u8),
    /// Too much data for one frame.
    TooLong,
}

/// Writes the frame of command `cmd` with data `parts` into `out`; returns its length.
pub fn frame(cmd: u8, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, FrameError> {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    if n + 1 > MAX_DATA {
        return Err(FrameError::TooLong);
    }
    let total = n + 9;
    if out.len() < total {
        return Err(FrameError::TooLong);
    }
    let len = (n + 2) as u8;
    out[..5].copy_from_slice(&[0x00, 0x00, 0xFF, len, len.wrapping_neg()]);
    out[5] = HOST_TO_PN532;
    out[6] = cmd;
    let mut at = 7;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    let sum = out[5..at].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    out[at] = sum.wrapping_neg();
    out[at + 1] = 0x00;
    Ok(total)
}

/// Whether an I2C read's status byte says the chip has an answer ready.
pub fn ready(status: u8) -> bool {
    status & 0x01 != 0
}

/// Whether `bytes` (after the status byte) start with the acknowledgement.
pub fn is_ack(bytes: &[u8]) -> bool {
    bytes.starts_with(&ACK)
}

/// Reads the chip's answer to command `cmd` from `bytes` (after the status byte; trailing bytes
/// are ignored); returns its data after the answer code.
pub fn answer(cmd: u8, bytes: &[u8]) -> Result<&[u8], FrameError> {
    let start = bytes
        .windows(3)
        .position(|w| w == [0x00, 0x00, 0xFF])
        .ok_or(FrameError::NoStart)?;
    let b = &bytes[start + 3..];
    let (&len, &lcs) = (
        b.first().ok_or(FrameError::Truncated)?,
        b.get(1).ok_or(FrameError::Truncated)?,
    );
    if len.wrapping_add(lcs) != 0 {
        return Err(FrameError::LengthChecksum);
    }
    let len = usize::from(len);
    // TFI … DCS
    let body = b.get(2..2 + len + 1).ok_or(FrameError::Truncated)?;
    if len == 1 && body[0] == 0x7F {
        return Err(FrameError::ChipError);
    }
    if len < 2 {
        return Err(FrameError::Truncated);
    }
    if body.iter().fold(0u8, |s, x| s.wrapping_add(*x)) != 0 {
        return Err(FrameError::DataChecksum);
    }
    if body[0] != PN532_TO_HOST {
        return Err(FrameError::Direction);
    }
    if body[1] != cmd.wrapping_add(1) {
        return Err(FrameError::Unexpected(body[1]));
    }
    Ok(&body[2..len])
}

/// SAMConfiguration: normal mode (no SAM), the chip's IRQ line used.
pub fn sam_configuration(out: &mut [u8]) -> Result<usize, FrameError> {
    frame(command::SAM_CONFIGURATION, &[&[0x01, 0x14, 0x01]], out)
}

/// InListPassiveTarget for one ISO 14443-A card at 106 kbit/s.
pub fn list_card(out: &mut [u8]) -> Result<usize, FrameError> {
    frame(command::IN_LIST_PASSIVE_TARGET, &[&[0x01, 0x00]], out)
}

/// A card the chip found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Card<'a> {
    /// The chip's number for it (the target of InDataExchange).
    pub target: u8,
    /// ATQA (SENS_RES).
    pub atqa: [u8; 2],
    /// SAK (SEL_RES).
    pub sak: u8,
    /// Its UID (NFCID1: 4, 7 or 10 bytes).
    pub uid: &'a [u8],
}

impl Card<'_> {
    /// Whether it speaks ISO 14443-4 (ISO-DEP: APDUs), as NTAG 424 DNA and DESFire do (SAK
    /// bit 5).
    pub fn iso_dep(&self) -> bool {
        self.sak & 0x20 != 0
    }
}

/// Reads InListPassiveTarget's answer: the card, or `None` when no card was in the field.
pub fn listed_card(data: &[u8]) -> Result<Option<Card<'_>>, FrameError> {
    match data.first() {
        None => Err(FrameError::Truncated),
        Some(0) => Ok(None),
        Some(_) => {
            let t = data.get(1..6).ok_or(FrameError::Truncated)?;
            let uid_len = usize::from(t[4]);
            let uid = data.get(6..6 + uid_len).ok_or(FrameError::Truncated)?;
            if ![4, 7, 10].contains(&uid_len) {
                return Err(FrameError::Truncated);
            }
            Ok(Some(Card {
                target: t[0],
                atqa: [t[1], t[2]],
                sak: t[3],
                uid,
            }))
        }
    }
}

/// InDataExchange: `apdu` to card `target`.
pub fn exchange(target: u8, apdu: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    frame(command::IN_DATA_EXCHANGE, &[&[target], apdu], out)
}

/// Reads InDataExchange's answer: the card's response, or the chip's error status (the card
/// did not answer, or left the field).
pub fn exchanged(data: &[u8]) -> Result<&[u8], u8> {
    match data.split_first() {
        Some((0, rest)) => Ok(rest),
        Some((status, _)) => Err(status & 0x3F),
        None => Err(0xFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// UM0701-02 §6.2.1: GetFirmwareVersion, and the answer of a PN532 v1.6.
    #[test]
    fn manual_frames() {
        let mut out = [0u8; 64];
        let n = frame(command::GET_FIRMWARE_VERSION, &[], &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[0x00, 0x00, 0xFF, 0x02, 0xFE, 0xD4, 0x02, 0x2A, 0x00]
        );
        let n = list_card(&mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[0x00, 0x00, 0xFF, 0x04, 0xFC, 0xD4, 0x4A, 0x01, 0x00, 0xE1, 0x00]
        );
        let answer_bytes = [
            0x00, 0x00, 0xFF, 0x06, 0xFA, 0xD5, 0x03, 0x32, 0x01, 0x06, 0x07, 0xE8, 0x00,
        ];
        assert_eq!(
            answer(command::GET_FIRMWARE_VERSION, &answer_bytes),
            Ok(&[0x32, 0x01, 0x06, 0x07][..])
        );
        assert!(is_ack(&ACK));
        assert!(ready(0x01) && !ready(0x00));
    }

    #[test]
    fn a_listed_iso_dep_card_and_an_exchange() {
        // NTAG 424 DNA: ATQA 0344, SAK 20, 7-byte UID, then its ATS.
        let data = [
            0x01, 0x01, 0x03, 0x44, 0x20, 0x07, 0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40, 0x06,
            0x75, 0x77, 0x81, 0x02, 0x80,
        ];
        let card = listed_card(&data).unwrap().unwrap();
        assert_eq!(card.uid, &[0x04, 0xDE, 0x5F, 0x1E, 0xAC, 0xC0, 0x40]);
        assert!(card.iso_dep());
        assert_eq!(listed_card(&[0x00]), Ok(None));
        let mut out = [0u8; 80];
        let n = exchange(1, &[0x90, 0x71, 0, 0, 2, 2, 0, 0], &mut out).unwrap();
        // The answer the firmware reads back, built the way the chip frames it.
        let mut reply = [0u8; 32];
        let mut chip = [0u8; 32];
        let m = frame(
            command::IN_DATA_EXCHANGE,
            &[&[0x00], &[0x91, 0xAF]],
            &mut chip,
        )
        .unwrap();
        reply[..m].copy_from_slice(&chip[..m]);
        reply[5] = 0xD5;
        reply[6] = 0x41;
        let sum = reply[5..m - 2].iter().fold(0u8, |s, b| s.wrapping_add(*b));
        reply[m - 2] = sum.wrapping_neg();
        let data = answer(command::IN_DATA_EXCHANGE, &reply[..m]).unwrap();
        assert_eq!(exchanged(data), Ok(&[0x91, 0xAF][..]));
        assert_eq!(exchanged(&[0x01]), Err(0x01), "timeout: the card left");
        assert!(n > 8);
    }

    #[test]
    fn bad_frames_are_named() {
        let good = [
            0x00, 0x00, 0xFF, 0x06, 0xFA, 0xD5, 0x03, 0x32, 0x01, 0x06, 0x07, 0xE8, 0x00,
        ];
        let cmd = command::GET_FIRMWARE_VERSION;
        let mut b = good;
        b[4] ^= 1;
        assert_eq!(answer(cmd, &b), Err(FrameError::LengthChecksum));
        let mut b = good;
        b[8] ^= 1;
        assert_eq!(answer(cmd, &b), Err(FrameError::DataChecksum));
        assert_eq!(answer(cmd, &good[..9]), Err(FrameError::Truncated));
        assert_eq!(answer(cmd, &[1, 2, 3]), Err(FrameError::NoStart));
        assert_eq!(
            answer(command::IN_LIST_PASSIVE_TARGET, &good),
            Err(FrameError::Unexpected(0x03))
        );
        let error = [0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00];
        assert_eq!(answer(cmd, &error), Err(FrameError::ChipError));
        assert_eq!(listed_card(&[0x01, 0x01, 0x03]), Err(FrameError::Truncated));
        assert_eq!(
            listed_card(&[0x01, 0x01, 0x03, 0x44, 0x20, 0x09, 1, 2]),
            Err(FrameError::Truncated)
        );
        let mut out = [0u8; 8];
        assert_eq!(frame(cmd, &[&[0; 4]], &mut out), Err(FrameError::TooLong));
        // Any bytes at all: an answer or a named error, never a panic.
        for len in 0..good.len() {
            let _ = answer(cmd, &good[..len]);
        }
    }
}
