//! Wiegand 26/34 frames and keypad keys from a reader's D0/D1 pulses.
//!
//! A Wiegand reader pulls D0 low for a `0` bit and D1 low for a `1` bit, about 2 ms apart, and
//! falls silent between frames. The shell timestamps each falling edge (monotonic microseconds)
//! and pushes it into an [`Accumulator`]; once the line has been quiet for [`FRAME_GAP_US`] the
//! bits so far are one frame, decoded by [`decode`]:
//!
//! - 26 bits (H10301): even parity, 8-bit facility code, 16-bit card number, odd parity;
//! - 34 bits: even parity, 32 data bits, odd parity;
//! - 4 bits: one keypad key (`0`–`9`, 10 = `*`, 11 = `#`), the reader's "burst" mode;
//! - 8 bits: one keypad key with its complement in the high nibble (`'1'` is `1110_0001`).
//!
//! In both card formats the leading parity bit makes the first half (parity bit included) even,
//! and the trailing one makes the second half odd. Bits are sent most significant first.
//!
//! Nothing here allocates or panics, whatever the line does: noise gives an error naming what
//! was wrong, which the shell logs and otherwise ignores.

use core::fmt;

/// Silence on D0/D1 after which the bits so far are one frame. Readers space bits ~2 ms apart
/// and frames by far more; 25 ms separates them with margin on both sides.
pub const FRAME_GAP_US: u64 = 25_000;

/// Longest frame kept: anything longer is noise or an unsupported format.
const MAX_BITS: u8 = 64;

/// The card formats understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// 26 bits: facility code (8) and card number (16), the H10301 format.
    W26,
    /// 34 bits: 32 data bits.
    W34,
}

impl Format {
    /// Frame length in bits, parity included.
    pub const fn bits(self) -> u8 {
        match self {
            Format::W26 => 26,
            Format::W34 => 34,
        }
    }

    /// Data bits between the two parity bits.
    const fn data_bits(self) -> u8 {
        self.bits() - 2
    }

    /// The frame for `data` (its low [`bits`](Self::bits)` - 2` bits), parity bits set: what a
    /// reader sends. For simulated readers and tests.
    pub const fn encode(self, data: u32) -> u64 {
        let n = self.data_bits();
        let data = (data as u64) & ((1u64 << n) - 1);
        let half = n / 2;
        let first = data >> half;
        let second = data & ((1u64 << half) - 1);
        let even = (first.count_ones() % 2) as u64; // makes the first half even
        let odd = 1 - (second.count_ones() % 2) as u64; // makes the second half odd
        (even << (n + 1)) | (data << 1) | odd
    }
}

/// A card read: its credential bytes and the format they came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Card {
    /// The format of the frame.
    pub format: Format,
    /// The data bits, big-endian: W34's 32 bits as they are, W26's 24 bits zero-extended
    /// (facility 1, card 12345 is `00 01 30 39`). This is the UID the allow-list holds.
    pub uid: [u8; 4],
}

impl Card {
    /// The data bits as a number.
    pub const fn data(&self) -> u32 {
        u32::from_be_bytes(self.uid)
    }

    /// W26's facility code (the data's high byte).
    pub const fn facility(&self) -> Option<u8> {
        match self.format {
            Format::W26 => Some(self.uid[1]),
            Format::W34 => None,
        }
    }

    /// W26's card number (the data's low 16 bits).
    pub const fn number(&self) -> Option<u16> {
        match self.format {
            Format::W26 => Some(u16::from_be_bytes([self.uid[2], self.uid[3]])),
            Format::W34 => None,
        }
    }
}

/// One decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A card was presented.
    Card(Card),
    /// A key was pressed: `b'0'`..=`b'9'`, `b'*'` or `b'#'`.
    Key(u8),
}

/// Why a frame was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WiegandError {
    /// The leading (even) parity bit does not match the first half.
    BadEvenParity,
    /// The trailing (odd) parity bit does not match the second half.
    BadOddParity,
    /// A keypad frame that is no key: a 4-bit value above 11, or an 8-bit frame whose high
    /// nibble is not the complement of the low one.
    BadKey,
    /// A frame of this many bits (saturating at 255) is no format we know.
    UnsupportedLength(u8),
    /// Part of the frame may have arrived while the line was not watched (the CPU stalled on
    /// flash): dropped whole, since what is left could decode as something else, e.g. a key.
    Interrupted,
}

impl WiegandError {
    /// A short, stable name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            WiegandError::BadEvenParity => "bad_even_parity",
            WiegandError::BadOddParity => "bad_odd_parity",
            WiegandError::BadKey => "bad_key",
            WiegandError::UnsupportedLength(_) => "unsupported_length",
            WiegandError::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for WiegandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WiegandError::UnsupportedLength(n) => write!(f, "unsupported_length({n})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Decodes one frame of `count` bits, the first received in the highest position of the low
/// `count` bits of `bits`. `count` above 64 is reported as unsupported.
pub fn decode(bits: u64, count: u8) -> Result<Frame, WiegandError> {
    match count {
        4 => key((bits & 0xf) as u8),
        8 => {
            let low = (bits & 0xf) as u8;
            let high = ((bits >> 4) & 0xf) as u8;
            if high != !low & 0xf {
                return Err(WiegandError::BadKey);
            }
            key(low)
        }
        26 => card(Format::W26, bits),
        34 => card(Format::W34, bits),
        n => Err(WiegandError::UnsupportedLength(n)),
    }
}

fn key(value: u8) -> Result<Frame, WiegandError> {
    match value {
        0..=9 => Ok(Frame::Key(b'0' + value)),
        10 => Ok(Frame::Key(b'*')),
        11 => Ok(Frame::Key(b'#')),
        _ => Err(WiegandError::BadKey),
    }
}

fn card(format: Format, bits: u64) -> Result<Frame, WiegandError> {
    let n = format.data_bits();
    let half = n / 2;
    let even = (bits >> (n + 1)) & 1;
    let data = (bits >> 1) & ((1u64 << n) - 1);
    let odd = bits & 1;
    let first = data >> half;
    let second = data & ((1u64 << half) - 1);
    if !(first.count_ones() as u64 + even).is_multiple_of(2) {
        return Err(WiegandError::BadEvenParity);
    }
    if (second.count_ones() as u64 + odd) % 2 != 1 {
        return Err(WiegandError::BadOddParity);
    }
    Ok(Frame::Card(Card {
        format,
        uid: (data as u32).to_be_bytes(),
    }))
}

/// Collects timestamped bits into frames.
///
/// Feed every bit with [`push`](Self::push); call [`poll`](Self::poll) at or after
/// [`deadline_us`](Self::deadline_us) to collect a frame the line has gone quiet after. A bit
/// that arrives after the gap closes the previous frame first, so a late poll loses nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accumulator {
    bits: u64,
    /// Bits received in this frame, saturating at 255; only the last 64 are kept.
    count: u8,
    last_us: Option<u64>,
    /// The frame in progress may have lost bits to a stall: it is dropped when it ends.
    interrupted: bool,
    /// A frame whose first bit comes before this may have begun during a stall.
    blind_until_us: Option<u64>,
}

impl Accumulator {
    /// An idle line.
    pub const fn new() -> Self {
        Accumulator {
            bits: 0,
            count: 0,
            last_us: None,
            interrupted: false,
            blind_until_us: None,
        }
    }

    /// The line was not watched from `from_us` to `until_us` (the CPU stalled while the flash
    /// was erased or written, with interrupts off). A frame in progress then, or one whose
    /// first bit comes less than [`FRAME_GAP_US`] after, may have lost bits: it is dropped
    /// whole ([`WiegandError::Interrupted`]), never decoded as what is left of it. Returns a
    /// frame that had ended before the stall, as [`poll`](Self::poll) does.
    pub fn blind(&mut self, from_us: u64, until_us: u64) -> Option<Result<Frame, WiegandError>> {
        let finished = self.poll(from_us);
        if self.busy() {
            self.interrupted = true;
        }
        let until = until_us.max(from_us).saturating_add(FRAME_GAP_US);
        self.blind_until_us = Some(self.blind_until_us.map_or(until, |u| u.max(until)));
        finished
    }

    /// A bit arrived at `at_us` (monotonic microseconds). Returns the previous frame when the
    /// line had been quiet for the gap before it.
    pub fn push(&mut self, bit: bool, at_us: u64) -> Option<Result<Frame, WiegandError>> {
        let finished = self.poll(at_us);
        if self.last_us.is_none() {
            // A new frame: did it begin while the line was not watched?
            if let Some(until) = self.blind_until_us.take() {
                self.interrupted = at_us < until;
            }
        }
        self.bits = (self.bits << 1) | u64::from(bit);
        self.count = self.count.saturating_add(1);
        self.last_us = Some(at_us);
        finished
    }

    /// The frame, once the line has been quiet for [`FRAME_GAP_US`] at `now_us`.
    pub fn poll(&mut self, now_us: u64) -> Option<Result<Frame, WiegandError>> {
        let last = self.last_us?;
        if now_us.saturating_sub(last) < FRAME_GAP_US {
            return None;
        }
        let (bits, count, interrupted) = (self.bits, self.count, self.interrupted);
        *self = Accumulator {
            blind_until_us: self.blind_until_us,
            ..Accumulator::new()
        };
        Some(if interrupted {
            Err(WiegandError::Interrupted)
        } else if count > MAX_BITS {
            Err(WiegandError::UnsupportedLength(count))
        } else {
            decode(bits, count)
        })
    }

    /// When to [`poll`](Self::poll) next, if a frame is in progress.
    pub fn deadline_us(&self) -> Option<u64> {
        self.last_us.map(|t| t.saturating_add(FRAME_GAP_US))
    }

    /// Whether bits of an unfinished frame are held.
    pub fn busy(&self) -> bool {
        self.last_us.is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A frame from a string of `0`/`1` (spaces ignored), as (bits, count).
    fn frame(s: &str) -> (u64, u8) {
        s.bytes()
            .filter(|b| *b != b' ')
            .fold((0, 0), |(v, n), b| ((v << 1) | u64::from(b == b'1'), n + 1))
    }

    /// Feeds a frame's bits 2 ms apart from `start_us`; returns the time of the last bit.
    fn feed(acc: &mut Accumulator, bits: u64, count: u8, start_us: u64) -> u64 {
        let mut t = start_us;
        for i in (0..count).rev() {
            assert_eq!(
                acc.push((bits >> i) & 1 == 1, t),
                None,
                "no frame mid-burst"
            );
            t += 2_000;
        }
        t - 2_000
    }

    fn w26(facility: u8, number: u16) -> Card {
        let [hi, lo] = number.to_be_bytes();
        Card {
            format: Format::W26,
            uid: [0, facility, hi, lo],
        }
    }

    #[test]
    fn known_vectors() {
        // (frame as sent, what it decodes to)
        let table: &[(&str, Result<Frame, WiegandError>)] = &[
            // Facility 1, card 12345 (H10301): 0x01 0x3039.
            (
                "1 00000001 0011 000000111001 1",
                Ok(Frame::Card(w26(1, 12345))),
            ),
            // Facility 0, card 0: first half even with a 0, second half needs a 1.
            ("0 000000000000 000000000000 1", Ok(Frame::Card(w26(0, 0)))),
            // Facility 255, card 65535: twelve ones each half.
            (
                "0 111111111111 111111111111 1",
                Ok(Frame::Card(w26(255, 65535))),
            ),
            // W34, 0x04A1B2C3: first 16 bits 0x04A1 have 4 ones, last 16 0xB2C3 have 8.
            (
                "0 0000010010100001 1011001011000011 1",
                Ok(Frame::Card(Card {
                    format: Format::W34,
                    uid: [0x04, 0xA1, 0xB2, 0xC3],
                })),
            ),
            // Keys, 4-bit bursts.
            ("0000", Ok(Frame::Key(b'0'))),
            ("0111", Ok(Frame::Key(b'7'))),
            ("1001", Ok(Frame::Key(b'9'))),
            ("1010", Ok(Frame::Key(b'*'))),
            ("1011", Ok(Frame::Key(b'#'))),
            ("1100", Err(WiegandError::BadKey)),
            ("1111", Err(WiegandError::BadKey)),
            // Keys, 8 bits with the complement in front.
            ("1110 0001", Ok(Frame::Key(b'1'))),
            ("1111 0000", Ok(Frame::Key(b'0'))),
            ("0101 1010", Ok(Frame::Key(b'*'))),
            ("0100 1011", Ok(Frame::Key(b'#'))),
            ("0000 0001", Err(WiegandError::BadKey)),
            ("0011 1100", Err(WiegandError::BadKey)),
            // Parity failures.
            (
                "0 00000001 0011 000000111001 1",
                Err(WiegandError::BadEvenParity),
            ),
            (
                "1 00000001 0011 000000111001 0",
                Err(WiegandError::BadOddParity),
            ),
            // Lengths nobody sends us.
            ("1", Err(WiegandError::UnsupportedLength(1))),
            ("", Err(WiegandError::UnsupportedLength(0))),
            (
                "1 00000001 0011 000000111001 1 0",
                Err(WiegandError::UnsupportedLength(27)),
            ),
        ];
        for (bits, want) in table {
            let (v, n) = frame(bits);
            assert_eq!(decode(v, n), *want, "{bits}");
        }
    }

    #[test]
    fn encode_matches_the_known_vectors() {
        assert_eq!(
            (Format::W26.encode(0x01_3039), 26),
            frame("1 00000001 0011 000000111001 1")
        );
        assert_eq!(
            (Format::W34.encode(0x04A1_B2C3), 34),
            frame("0 0000010010100001 1011001011000011 1")
        );
        let card = w26(1, 12345);
        assert_eq!(card.facility(), Some(1));
        assert_eq!(card.number(), Some(12345));
        assert_eq!(card.data(), 0x01_3039);
    }

    /// A small deterministic generator: the sweep is the same on every run.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn every_frame_round_trips_and_every_single_bit_flip_is_caught() {
        let mut s = 0x9E37_79B9_7F4A_7C15;
        for format in [Format::W26, Format::W34] {
            let n = format.bits();
            for _ in 0..2_000 {
                let data = xorshift(&mut s) as u32 & ((1u64 << (n - 2)) - 1) as u32;
                let bits = format.encode(data);
                let Ok(Frame::Card(card)) = decode(bits, n) else {
                    panic!("{format:?} {data:#x} did not decode");
                };
                assert_eq!((card.format, card.data()), (format, data));
                for flip in 0..n {
                    let err = decode(bits ^ (1 << flip), n).expect_err("one flipped bit");
                    // Bits n-1..=n/2 are the first half with its parity, the rest the second.
                    let want = if flip >= n / 2 {
                        WiegandError::BadEvenParity
                    } else {
                        WiegandError::BadOddParity
                    };
                    assert_eq!(err, want, "{format:?} {data:#x} flip {flip}");
                }
            }
        }
    }

    #[test]
    fn no_bit_sequence_panics() {
        let mut s = 1;
        for count in 0..=u8::MAX {
            for _ in 0..64 {
                let _ = decode(xorshift(&mut s), count);
            }
        }
        // The accumulator with arbitrary timing, including time going backwards.
        let mut acc = Accumulator::new();
        for _ in 0..20_000 {
            let r = xorshift(&mut s);
            let _ = acc.push(r & 1 == 1, r >> 40);
            let _ = acc.poll(r >> 39);
        }
    }

    #[test]
    fn the_gap_ends_a_frame() {
        let mut acc = Accumulator::new();
        assert_eq!(acc.deadline_us(), None);
        assert_eq!(acc.poll(1_000_000), None, "idle line");
        let last = feed(&mut acc, Format::W26.encode(0x01_3039), 26, 10_000);
        assert!(acc.busy());
        assert_eq!(acc.deadline_us(), Some(last + FRAME_GAP_US));
        assert_eq!(
            acc.poll(last + FRAME_GAP_US - 1),
            None,
            "not quiet long enough"
        );
        assert_eq!(
            acc.poll(last + FRAME_GAP_US),
            Some(Ok(Frame::Card(w26(1, 12345))))
        );
        assert!(!acc.busy());
        assert_eq!(acc.poll(last + 10 * FRAME_GAP_US), None, "only once");
    }

    #[test]
    fn a_late_poll_loses_no_key() {
        // `1`, `2`, `#` typed quickly: each frame is closed by the next one's first bit.
        let mut acc = Accumulator::new();
        let mut got = heapless::Vec::<u8, 4>::new();
        let mut t = 0;
        for code in [0b0001u64, 0b0010, 0b1011] {
            for i in (0..4).rev() {
                if let Some(Ok(Frame::Key(k))) = acc.push((code >> i) & 1 == 1, t) {
                    got.push(k).unwrap();
                }
                t += 2_000;
            }
            t += 40_000;
        }
        if let Some(Ok(Frame::Key(k))) = acc.poll(t) {
            got.push(k).unwrap();
        }
        assert_eq!(&got[..], b"12#");
    }

    /// Replays a 26-bit card frame whose bits `lost` fell into a stall from `stall.0` to
    /// `stall.1` (µs), the shell saying so through `blind` when `told`; returns every frame.
    fn stalled_card(
        lost: core::ops::Range<u8>,
        told: bool,
    ) -> heapless::Vec<Result<Frame, WiegandError>, 8> {
        let bits = Format::W26.encode(0x01_3039);
        let mut acc = Accumulator::new();
        let mut out = heapless::Vec::new();
        let mut t = 10_000u64;
        let mut stall: Option<(u64, u64)> = None;
        for n in 0..26u8 {
            let bit = (bits >> (25 - n)) & 1 == 1;
            if lost.contains(&n) {
                // The stall: these pulses are never seen; it lasts 40 ms from the first.
                let (from, _) = *stall.get_or_insert((t, t + 40_000));
                t = from + 40_000;
                continue;
            }
            if let Some((from, until)) = stall.take().filter(|_| told) {
                out.extend(acc.blind(from, until));
            }
            out.extend(acc.push(bit, t));
            t += 2_000;
        }
        if let Some((from, until)) = stall.take().filter(|_| told) {
            out.extend(acc.blind(from, until));
        }
        out.extend(acc.poll(t + FRAME_GAP_US));
        out
    }

    #[test]
    fn a_frame_split_by_a_flash_stall_is_dropped_whole_never_read_as_keys() {
        // Without the shell's word, the two four-bit pieces left of this card decode as keypad
        // keys (`8` and `3`): stray keys that would count towards a keypad lockout.
        let unseen = stalled_card(4..22, false);
        assert_eq!(&unseen[..], [Ok(Frame::Key(b'8')), Ok(Frame::Key(b'3'))]);
        // Told of the stall, the reader drops both pieces.
        for lost in [4..22, 0..22, 4..26, 10..11, 25..26] {
            let seen = stalled_card(lost.clone(), true);
            assert!(
                seen.iter().all(|f| *f == Err(WiegandError::Interrupted)),
                "{lost:?}: {seen:?}"
            );
            assert!(!seen.is_empty());
        }
        // A stall between frames costs nothing: the next card reads.
        let mut acc = Accumulator::new();
        assert_eq!(acc.blind(0, 40_000), None);
        let last = feed(
            &mut acc,
            Format::W26.encode(0x01_3039),
            26,
            40_000 + FRAME_GAP_US,
        );
        assert_eq!(
            acc.poll(last + FRAME_GAP_US),
            Some(Ok(Frame::Card(w26(1, 12345))))
        );
        // A frame that had ended before the stall comes out whole.
        let mut acc = Accumulator::new();
        let last = feed(&mut acc, Format::W26.encode(0x01_3039), 26, 0);
        assert_eq!(
            acc.blind(last + FRAME_GAP_US, last + FRAME_GAP_US + 40_000),
            Some(Ok(Frame::Card(w26(1, 12345))))
        );
    }

    #[test]
    fn overlong_noise_is_reported_not_kept() {
        let mut acc = Accumulator::new();
        let mut t = 0;
        for i in 0..300u32 {
            assert_eq!(acc.push(i % 3 == 0, t), None);
            t += 1_000;
        }
        assert_eq!(
            acc.poll(t + FRAME_GAP_US),
            Some(Err(WiegandError::UnsupportedLength(255)))
        );
        // And the line recovers for the next card.
        let last = feed(&mut acc, Format::W34.encode(7), 34, t + 10 * FRAME_GAP_US);
        assert_eq!(
            acc.poll(last + FRAME_GAP_US),
            Some(Ok(Frame::Card(Card {
                format: Format::W34,
                uid: [0, 0, 0, 7]
            })))
        );
    }

    proptest! {
        #[test]
        fn cards_round_trip_through_the_accumulator(
            w34 in any::<bool>(),
            data in any::<u32>(),
            start in 0u64..(1 << 40),
        ) {
            let format = if w34 { Format::W34 } else { Format::W26 };
            let data = if w34 { data } else { data & 0xff_ffff };
            let mut acc = Accumulator::new();
            let last = feed(&mut acc, format.encode(data), format.bits(), start);
            let got = acc.poll(last + FRAME_GAP_US);
            prop_assert_eq!(
                got,
                Some(Ok(Frame::Card(Card { format, uid: data.to_be_bytes() })))
            );
        }

        #[test]
        fn any_frame_decodes_or_names_its_fault(bits in any::<u64>(), count in any::<u8>()) {
            let _ = decode(bits, count);
        }
    }
}
