//! One-time passwords typed on the keypad: HOTP (RFC 4226) and TOTP (RFC 6238), HMAC-SHA-1 only.
//!
//! This module owns computing a code from a secret and a counter or a time, parsing the digits a
//! user typed, and verifying a typed code against a window of counters or time steps, with replay
//! detection. It keeps no state: the caller stores the last accepted time step (TOTP) or the next
//! expected counter (HOTP) per secret and passes it in. Nothing here allocates or panics; bad
//! parameters give an [`OtpError`].
//!
//! Verification computes every candidate in the window and compares without an early exit, so
//! the time taken does not depend on whether, or where, the typed code matched.

use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Longest secret accepted, in bytes.
///
/// 64 bytes is SHA-1's block size: longer HMAC keys are hashed down first (RFC 2104 §2), so they
/// add no strength. RFC 4226 §4 (R6) asks for at least 128 bits and recommends 160.
pub const MAX_SECRET_LEN: usize = 64;

/// Parameters of one code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtpParams {
    /// Number of decimal digits, 6 to 8 (RFC 4226 §5.3 asks for at least 6).
    pub digits: u8,
    /// TOTP time step X in seconds, at least 1 (RFC 6238 §4.1; 30 is the default).
    pub period_s: u32,
}

impl Default for OtpParams {
    /// 6 digits (the RFC 4226 §5.3 minimum) and the 30 s step RFC 6238 §5.2 recommends.
    fn default() -> Self {
        OtpParams {
            digits: 6,
            period_s: 30,
        }
    }
}

/// Why no code could be computed or checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtpError {
    /// The number of digits is not 6, 7 or 8.
    BadDigits,
    /// The TOTP period is zero.
    BadPeriod,
    /// The secret is longer than [`MAX_SECRET_LEN`].
    SecretTooLong,
    /// The secret is empty.
    EmptySecret,
    /// The time lies before the Unix epoch (T0 in RFC 6238 §4.1), where no time step is defined.
    BeforeEpoch,
}

impl OtpError {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            OtpError::BadDigits => "bad_digits",
            OtpError::BadPeriod => "bad_period",
            OtpError::SecretTooLong => "secret_too_long",
            OtpError::EmptySecret => "empty_secret",
            OtpError::BeforeEpoch => "before_epoch",
        }
    }
}

/// RFC 4226 §5.3 HOTP value (dynamic truncation, mod 10^digits).
pub fn hotp(secret: &[u8], counter: u64, digits: u8) -> Result<u32, OtpError> {
    let modulus = modulus(digits)?;
    let mac = keyed(secret)?;
    Ok(hotp_with(&mac, counter, modulus))
}

/// The TOTP time step that contains `unix_secs` (RFC 6238 §4: T = floor((t - T0) / X), T0 = 0);
/// `None` for negative times and for a zero period.
pub fn totp_step(unix_secs: i64, period_s: u32) -> Option<u64> {
    let t = u64::try_from(unix_secs).ok()?;
    t.checked_div(u64::from(period_s))
}

/// RFC 6238 TOTP value at `unix_secs`: HOTP with the time step as the counter (RFC 6238 §4.2).
pub fn totp(secret: &[u8], unix_secs: i64, params: OtpParams) -> Result<u32, OtpError> {
    let (modulus, step) = totp_setup(unix_secs, params)?;
    let mac = keyed(secret)?;
    Ok(hotp_with(&mac, step, modulus))
}

/// A typed code parsed from keypad digits: exactly `digits` ASCII digits, leading zeros kept.
///
/// `None` when `digits` is not 6 to 8, the length differs, or a key is not `0`–`9`.
pub fn parse_code(keys: &[u8], digits: u8) -> Option<u32> {
    modulus(digits).ok()?;
    if keys.len() != usize::from(digits) {
        return None;
    }
    keys.iter().try_fold(0u32, |acc, &k| {
        // At most 8 digits, so this cannot overflow a u32.
        k.is_ascii_digit().then(|| acc * 10 + u32::from(k - b'0'))
    })
}

/// What a verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The code is valid and unused; accept it and remember this step/counter.
    Fresh(u64),
    /// The code matches a step/counter that was already used (replay).
    Replayed(u64),
    /// No match.
    None,
}

/// RFC 6238 §5.2: checks `code` against the steps current-window ..= current+window (window 1
/// gives ±1 step).
///
/// `last_used`: the last step accepted for this secret, if any; a matching step <= last_used is
/// Replayed. Prefer the match closest to the current step when several match; of two equally
/// close, the earlier step. Computes 2 × `window` + 1 codes whatever the outcome.
pub fn verify_totp(
    secret: &[u8],
    code: u32,
    unix_secs: i64,
    params: OtpParams,
    window: u8,
    last_used: Option<u64>,
) -> Result<Match, OtpError> {
    let (modulus, current) = totp_setup(unix_secs, params)?;
    let mac = keyed(secret)?;
    let mut found = 0u8;
    let mut step = 0u64;
    // From the farthest distance to the nearest, later before earlier, so that the last match
    // recorded is the closest one, and the earlier of two equally close.
    for d in (0..=u64::from(window)).rev() {
        let later = current.checked_add(d);
        let earlier = if d == 0 { None } else { current.checked_sub(d) };
        for candidate in [later, earlier].into_iter().flatten() {
            let eq = ct_eq(hotp_with(&mac, candidate, modulus), code);
            step = ct_select(eq, candidate, step);
            found |= eq;
        }
    }
    Ok(if found == 0 {
        Match::None
    } else if last_used.is_some_and(|last| step <= last) {
        // RFC 6238 §5.2: a code must not be accepted a second time.
        Match::Replayed(step)
    } else {
        Match::Fresh(step)
    })
}

/// RFC 4226 §7.2: checks `code` against counters next ..= next + look_ahead (Fresh(counter) on a
/// match; the caller then stores counter + 1 as the new `next`), and against the `replay_window`
/// counters just below `next` (next - replay_window .. next, saturating) which give Replayed.
///
/// A fresh match wins over a replayed one; of several fresh matches the lowest counter (the
/// smallest resynchronisation), of several replayed ones the highest. Computes
/// `look_ahead` + `replay_window` + 1 codes (fewer at the ends of the counter range) whatever the
/// outcome, so keep both windows small (RFC 4226 §7.4: the look-ahead window should be as small
/// as possible).
pub fn verify_hotp(
    secret: &[u8],
    code: u32,
    next: u64,
    look_ahead: u32,
    replay_window: u32,
    digits: u8,
) -> Result<Match, OtpError> {
    let modulus = modulus(digits)?;
    let mac = keyed(secret)?;

    // Fresh counters, highest first, so that the last match recorded is the lowest.
    let mut fresh_found = 0u8;
    let mut fresh = 0u64;
    for counter in (next..=next.saturating_add(u64::from(look_ahead))).rev() {
        let eq = ct_eq(hotp_with(&mac, counter, modulus), code);
        fresh = ct_select(eq, counter, fresh);
        fresh_found |= eq;
    }

    // Used counters, lowest first, so that the last match recorded is the highest.
    let mut used_found = 0u8;
    let mut used = 0u64;
    for counter in next.saturating_sub(u64::from(replay_window))..next {
        let eq = ct_eq(hotp_with(&mac, counter, modulus), code);
        used = ct_select(eq, counter, used);
        used_found |= eq;
    }

    Ok(if fresh_found != 0 {
        Match::Fresh(fresh)
    } else if used_found != 0 {
        Match::Replayed(used)
    } else {
        Match::None
    })
}

/// 10^digits for the digit counts allowed (RFC 4226 §5.3: a 6-digit code at a minimum, and
/// possibly 7 and 8 digits).
fn modulus(digits: u8) -> Result<u32, OtpError> {
    match digits {
        6 => Ok(1_000_000),
        7 => Ok(10_000_000),
        8 => Ok(100_000_000),
        _ => Err(OtpError::BadDigits),
    }
}

/// Validates the TOTP parameters and the time; returns 10^digits and the current time step.
fn totp_setup(unix_secs: i64, params: OtpParams) -> Result<(u32, u64), OtpError> {
    let modulus = modulus(params.digits)?;
    if params.period_s == 0 {
        return Err(OtpError::BadPeriod);
    }
    let step = totp_step(unix_secs, params.period_s).ok_or(OtpError::BeforeEpoch)?;
    Ok((modulus, step))
}

/// HMAC-SHA-1 keyed with `secret` (RFC 4226 §5.2), after checking the secret's length.
fn keyed(secret: &[u8]) -> Result<HmacSha1, OtpError> {
    if secret.is_empty() {
        return Err(OtpError::EmptySecret);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(OtpError::SecretTooLong);
    }
    // HMAC takes keys of any length (RFC 2104 §2), so this error cannot happen.
    HmacSha1::new_from_slice(secret).map_err(|_| OtpError::SecretTooLong)
}

/// HOTP(K, C) mod `modulus` with an already keyed MAC (RFC 4226 §5.2–§5.3).
fn hotp_with(mac: &HmacSha1, counter: u64, modulus: u32) -> u32 {
    let mut mac = mac.clone();
    // §5.2: the counter is an 8-byte big-endian value.
    mac.update(&counter.to_be_bytes());
    let hs: [u8; 20] = mac.finalize().into_bytes().into();
    // §5.3 step 2, dynamic truncation: the low 4 bits of the last byte select an offset (0..=15),
    // and the 31 bits read there (high bit masked) are the value.
    let offset = usize::from(hs[19] & 0x0f);
    let p = [hs[offset], hs[offset + 1], hs[offset + 2], hs[offset + 3]];
    let snum = u32::from_be_bytes(p) & 0x7fff_ffff;
    // §5.3 step 3: reduce to the wanted number of digits.
    snum % modulus
}

/// 1 if `a == b`, else 0, without a data-dependent branch.
fn ct_eq(a: u32, b: u32) -> u8 {
    let x = a ^ b;
    // The top bit of x | -x is set exactly when x is non-zero.
    let nonzero = (x | x.wrapping_neg()) >> 31;
    (1 ^ nonzero) as u8
}

/// `if_one` when `choice` is 1, `if_zero` when it is 0, without a data-dependent branch.
fn ct_select(choice: u8, if_one: u64, if_zero: u64) -> u64 {
    let mask = 0u64.wrapping_sub(u64::from(choice & 1));
    (if_one & mask) | (if_zero & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The secret of RFC 4226 Appendix D and RFC 6238 Appendix B (SHA-1).
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const NOW: i64 = 1_795_510_740; // 2026-11-24T08:59:00Z

    fn eight_digits() -> OtpParams {
        OtpParams {
            digits: 8,
            period_s: 30,
        }
    }

    #[test]
    fn rfc4226_appendix_d() {
        const TABLE: [(u64, u32); 10] = [
            (0, 755224),
            (1, 287082),
            (2, 359152),
            (3, 969429),
            (4, 338314),
            (5, 254676),
            (6, 287922),
            (7, 162583),
            (8, 399871),
            (9, 520489),
        ];
        for (counter, expected) in TABLE {
            assert_eq!(
                hotp(RFC_SECRET, counter, 6),
                Ok(expected),
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        const TABLE: [(i64, u64, u32); 6] = [
            (59, 0x1, 94287082),
            (1111111109, 0x23523EC, 7081804),
            (1111111111, 0x23523ED, 14050471),
            (1234567890, 0x273EF07, 89005924),
            (2000000000, 0x3F940AA, 69279037),
            (20000000000, 0x27BC86AA, 65353130),
        ];
        for (time, step, expected) in TABLE {
            assert_eq!(totp_step(time, 30), Some(step), "time {time}");
            assert_eq!(
                totp(RFC_SECRET, time, eight_digits()),
                Ok(expected),
                "time {time}"
            );
        }
    }

    #[test]
    fn default_params_are_six_digits_thirty_seconds() {
        assert_eq!(
            OtpParams::default(),
            OtpParams {
                digits: 6,
                period_s: 30
            }
        );
        // RFC 6238 Appendix B at t = 59, truncated to 6 digits.
        assert_eq!(totp(RFC_SECRET, 59, OtpParams::default()), Ok(287082));
    }

    #[test]
    fn totp_step_boundaries() {
        assert_eq!(totp_step(0, 30), Some(0));
        assert_eq!(totp_step(29, 30), Some(0));
        assert_eq!(totp_step(30, 30), Some(1));
        assert_eq!(totp_step(NOW, 60), Some(29_925_179));
        assert_eq!(totp_step(i64::MAX, 1), Some(i64::MAX as u64));
        assert_eq!(totp_step(-1, 30), None);
        assert_eq!(totp_step(i64::MIN, 30), None);
        assert_eq!(totp_step(NOW, 0), None);
    }

    #[test]
    fn seven_digits_and_sixty_second_period() {
        // The 31-bit value at counter 0 of RFC 4226 Appendix D is 1284755224.
        assert_eq!(hotp(RFC_SECRET, 0, 7), Ok(4755224));
        assert_eq!(hotp(RFC_SECRET, 0, 8), Ok(84755224));
        let sixty = OtpParams {
            digits: 6,
            period_s: 60,
        };
        assert_eq!(totp(RFC_SECRET, 119, sixty), hotp(RFC_SECRET, 1, 6));
        assert_eq!(totp(RFC_SECRET, 120, sixty), hotp(RFC_SECRET, 2, 6));
    }

    #[test]
    fn verify_totp_window() {
        let p = OtpParams::default();
        let step = totp_step(NOW, 30).unwrap();
        let at = |offset: i64| totp(RFC_SECRET, NOW + offset * 30, p).unwrap();
        // The current step and ±1 are accepted, and report which step matched.
        for offset in [-1i64, 0, 1] {
            let expected = step.checked_add_signed(offset).unwrap();
            assert_eq!(
                verify_totp(RFC_SECRET, at(offset), NOW, p, 1, None),
                Ok(Match::Fresh(expected)),
                "offset {offset}"
            );
        }
        // ±2 steps lie outside a window of 1, but inside a window of 2.
        for offset in [-2i64, 2] {
            let code = at(offset);
            // Guard against a chance collision with a code inside the window.
            assert!((-1..=1).all(|o| at(o) != code));
            assert_eq!(
                verify_totp(RFC_SECRET, code, NOW, p, 1, None),
                Ok(Match::None)
            );
            let expected = step.checked_add_signed(offset).unwrap();
            assert_eq!(
                verify_totp(RFC_SECRET, code, NOW, p, 2, None),
                Ok(Match::Fresh(expected))
            );
        }
        // Window 0: only the current step.
        assert_eq!(
            verify_totp(RFC_SECRET, at(1), NOW, p, 0, None),
            Ok(Match::None)
        );
        assert_eq!(
            verify_totp(RFC_SECRET, at(0), NOW, p, 0, None),
            Ok(Match::Fresh(step))
        );
        // Anywhere within the current 30 s step gives the same verdict.
        let start = i64::try_from(step * 30).unwrap();
        for t in [start, start + 29] {
            assert_eq!(
                verify_totp(RFC_SECRET, at(0), t, p, 1, None),
                Ok(Match::Fresh(step))
            );
        }
        // A code that is not the one for any step in the window.
        let wrong = (at(0) + 1) % 1_000_000;
        assert!((-1..=1).all(|o| at(o) != wrong));
        assert_eq!(
            verify_totp(RFC_SECRET, wrong, NOW, p, 1, None),
            Ok(Match::None)
        );
        // A code with too many digits never matches.
        assert_eq!(
            verify_totp(RFC_SECRET, at(0) + 1_000_000, NOW, p, 1, None),
            Ok(Match::None)
        );
    }

    #[test]
    fn verify_totp_replay() {
        let p = OtpParams::default();
        let step = totp_step(NOW, 30).unwrap();
        let at = |offset: i64| totp(RFC_SECRET, NOW + offset * 30, p).unwrap();
        // The code just accepted, typed again: replay.
        assert_eq!(
            verify_totp(RFC_SECRET, at(0), NOW, p, 1, Some(step)),
            Ok(Match::Replayed(step))
        );
        // An earlier step than the last one used: replay too.
        assert_eq!(
            verify_totp(RFC_SECRET, at(-1), NOW, p, 1, Some(step)),
            Ok(Match::Replayed(step - 1))
        );
        // After a code from the next step was accepted (fast clock), the current one is stale.
        assert_eq!(
            verify_totp(RFC_SECRET, at(0), NOW, p, 1, Some(step + 1)),
            Ok(Match::Replayed(step))
        );
        // A later step than the last one used is fresh.
        assert_eq!(
            verify_totp(RFC_SECRET, at(1), NOW, p, 1, Some(step)),
            Ok(Match::Fresh(step + 1))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, at(0), NOW, p, 1, Some(step - 1)),
            Ok(Match::Fresh(step))
        );
        // Replay never turns a non-matching code into a match.
        assert_eq!(
            verify_totp(RFC_SECRET, at(2), NOW, p, 1, Some(step)),
            Ok(Match::None)
        );
    }

    /// Secrets (4 bytes, big-endian) whose 6-digit codes collide near `NOW`, found by search.
    const STEP: u64 = 59_850_358; // totp_step(NOW, 30)
    /// The code of step `STEP` is also the code of `STEP + 3`.
    const COLLIDE_AT_3: [u8; 4] = 74u32.to_be_bytes();
    /// The codes of `STEP - 1` and `STEP + 1` are equal, and differ from that of `STEP`.
    const COLLIDE_AROUND: [u8; 4] = 1_338_889u32.to_be_bytes();

    #[test]
    fn verify_totp_prefers_the_closest_step() {
        let p = OtpParams::default();
        assert_eq!(totp_step(NOW, 30), Some(STEP));

        let s = &COLLIDE_AT_3;
        let c0 = hotp(s, STEP, 6).unwrap();
        assert_eq!(hotp(s, STEP + 3, 6), Ok(c0));
        // The current step wins over the one 3 steps ahead …
        assert_eq!(verify_totp(s, c0, NOW, p, 3, None), Ok(Match::Fresh(STEP)));
        // … even when it was already used: the replay is reported, not the far step.
        assert_eq!(
            verify_totp(s, c0, NOW, p, 3, Some(STEP)),
            Ok(Match::Replayed(STEP))
        );
        // Seen from 2 steps later, STEP + 3 is the closer one.
        assert_eq!(
            verify_totp(s, c0, NOW + 60, p, 3, None),
            Ok(Match::Fresh(STEP + 3))
        );

        let s = &COLLIDE_AROUND;
        let cm = hotp(s, STEP - 1, 6).unwrap();
        assert_eq!(hotp(s, STEP + 1, 6), Ok(cm));
        assert_ne!(hotp(s, STEP, 6), Ok(cm));
        // Equally close: the earlier step wins.
        assert_eq!(
            verify_totp(s, cm, NOW, p, 1, None),
            Ok(Match::Fresh(STEP - 1))
        );
    }

    #[test]
    fn verify_totp_near_the_epoch() {
        let p = OtpParams::default();
        // At t = 0 the window cannot reach below step 0.
        let c0 = totp(RFC_SECRET, 0, p).unwrap();
        assert_eq!(
            verify_totp(RFC_SECRET, c0, 0, p, 5, None),
            Ok(Match::Fresh(0))
        );
        let c1 = totp(RFC_SECRET, 30, p).unwrap();
        assert_eq!(
            verify_totp(RFC_SECRET, c1, 0, p, 1, None),
            Ok(Match::Fresh(1))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, c0, -1, p, 1, None),
            Err(OtpError::BeforeEpoch)
        );
        assert_eq!(totp(RFC_SECRET, -1, p), Err(OtpError::BeforeEpoch));
        // The far end of time.
        let one = OtpParams {
            digits: 6,
            period_s: 1,
        };
        let last = totp(RFC_SECRET, i64::MAX, one).unwrap();
        assert_eq!(
            verify_totp(RFC_SECRET, last, i64::MAX, one, 255, None),
            Ok(Match::Fresh(i64::MAX as u64))
        );
    }

    #[test]
    fn verify_hotp_look_ahead() {
        // RFC 4226 Appendix D codes, server expecting counter 3.
        let code = |c: u64| hotp(RFC_SECRET, c, 6).unwrap();
        assert_eq!(
            verify_hotp(RFC_SECRET, code(3), 3, 0, 0, 6),
            Ok(Match::Fresh(3))
        );
        // The token was pressed twice without use: counter 5 is inside a look-ahead of 2 …
        assert_eq!(
            verify_hotp(RFC_SECRET, code(5), 3, 2, 0, 6),
            Ok(Match::Fresh(5))
        );
        // … but not of 1.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(5), 3, 1, 0, 6),
            Ok(Match::None)
        );
        // Codes above the look-ahead, or unknown, do not match.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(9), 3, 5, 3, 6),
            Ok(Match::None)
        );
        assert_eq!(verify_hotp(RFC_SECRET, 123456, 0, 9, 0, 6), Ok(Match::None));
    }

    #[test]
    fn verify_hotp_replay_window() {
        let code = |c: u64| hotp(RFC_SECRET, c, 6).unwrap();
        // Counters 0..=4 were used; next is 5.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(4), 5, 3, 2, 6),
            Ok(Match::Replayed(4))
        );
        assert_eq!(
            verify_hotp(RFC_SECRET, code(3), 5, 3, 2, 6),
            Ok(Match::Replayed(3))
        );
        // Below the replay window: just no match.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(2), 5, 3, 2, 6),
            Ok(Match::None)
        );
        // Without a replay window, a replay is no match either.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(4), 5, 3, 0, 6),
            Ok(Match::None)
        );
        // The replay window saturates at counter 0.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(0), 2, 0, 100, 6),
            Ok(Match::Replayed(0))
        );
        assert_eq!(
            verify_hotp(RFC_SECRET, code(0), 0, 0, 100, 6),
            Ok(Match::Fresh(0))
        );
    }

    #[test]
    fn verify_hotp_resynchronisation() {
        // The server's counter is 0; the token has been pressed unused and now shows counter 7.
        let code = |c: u64| hotp(RFC_SECRET, c, 6).unwrap();
        let mut next = 0u64;
        let Ok(Match::Fresh(c)) = verify_hotp(RFC_SECRET, code(7), next, 10, 10, 6) else {
            panic!("counter 7 not found within the look-ahead");
        };
        assert_eq!(c, 7);
        next = c + 1;
        // Resynchronised: the same code is now a replay, and the following press is fresh.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(7), next, 10, 10, 6),
            Ok(Match::Replayed(7))
        );
        // Skipped counters below the new `next` can no longer be used.
        assert_eq!(
            verify_hotp(RFC_SECRET, code(2), next, 10, 10, 6),
            Ok(Match::Replayed(2))
        );
        assert_eq!(
            verify_hotp(RFC_SECRET, code(8), next, 10, 10, 6),
            Ok(Match::Fresh(8))
        );
    }

    #[test]
    fn verify_hotp_preferences() {
        // COLLIDE_AT_3 gives counters STEP and STEP + 3 the same code.
        let s = &COLLIDE_AT_3;
        let c = hotp(s, STEP, 6).unwrap();
        // Two fresh matches: the lowest counter, the smallest resynchronisation.
        assert_eq!(verify_hotp(s, c, STEP, 5, 0, 6), Ok(Match::Fresh(STEP)));
        // A fresh match wins over a replayed one (RFC 4226 §7.2 only looks ahead).
        assert_eq!(
            verify_hotp(s, c, STEP + 1, 3, 1, 6),
            Ok(Match::Fresh(STEP + 3))
        );
        // Two replayed matches: the highest counter.
        assert_eq!(
            verify_hotp(s, c, STEP + 4, 0, 4, 6),
            Ok(Match::Replayed(STEP + 3))
        );
    }

    #[test]
    fn verify_hotp_at_the_end_of_the_counter() {
        let code = hotp(RFC_SECRET, u64::MAX, 6).unwrap();
        assert_eq!(
            verify_hotp(RFC_SECRET, code, u64::MAX - 2, u32::MAX, 0, 6),
            Ok(Match::Fresh(u64::MAX))
        );
        assert_eq!(
            verify_hotp(RFC_SECRET, code, u64::MAX, 5, 0, 6),
            Ok(Match::Fresh(u64::MAX))
        );
        // 8-digit codes through the same path.
        let code8 = hotp(RFC_SECRET, 1, 8).unwrap();
        assert_eq!(
            verify_hotp(RFC_SECRET, code8, 0, 1, 0, 8),
            Ok(Match::Fresh(1))
        );
    }

    #[test]
    fn parse_code_keeps_leading_zeros() {
        assert_eq!(parse_code(b"000000", 6), Some(0));
        assert_eq!(parse_code(b"012345", 6), Some(12345));
        assert_eq!(parse_code(b"07081804", 8), Some(7081804));
        assert_eq!(parse_code(b"9999999", 7), Some(9_999_999));
        assert_eq!(parse_code(b"99999999", 8), Some(99_999_999));
        // The parsed code verifies as the RFC 6238 value at t = 1111111109.
        let code = parse_code(b"07081804", 8).unwrap();
        assert_eq!(totp(RFC_SECRET, 1111111109, eight_digits()), Ok(code));
    }

    #[test]
    fn parse_code_rejects_wrong_length_and_non_digits() {
        assert_eq!(parse_code(b"12345", 6), None);
        assert_eq!(parse_code(b"1234567", 6), None);
        assert_eq!(parse_code(b"", 6), None);
        assert_eq!(parse_code(b"123456", 8), None);
        assert_eq!(parse_code(b"12345a", 6), None);
        assert_eq!(parse_code(b"12 456", 6), None);
        assert_eq!(parse_code(b"*23456", 6), None);
        assert_eq!(parse_code(b"12345#", 6), None);
        assert_eq!(parse_code("1234٣".as_bytes(), 6), None);
        // Digit counts outside 6..=8.
        assert_eq!(parse_code(b"12345", 5), None);
        assert_eq!(parse_code(b"123456789", 9), None);
        assert_eq!(parse_code(b"", 0), None);
    }

    #[test]
    fn bad_parameters_give_errors() {
        let p = OtpParams::default();
        for digits in [0u8, 1, 5, 9, 10, 255] {
            assert_eq!(hotp(RFC_SECRET, 0, digits), Err(OtpError::BadDigits));
            let bad = OtpParams { digits, ..p };
            assert_eq!(totp(RFC_SECRET, NOW, bad), Err(OtpError::BadDigits));
            assert_eq!(
                verify_totp(RFC_SECRET, 0, NOW, bad, 1, None),
                Err(OtpError::BadDigits)
            );
            assert_eq!(
                verify_hotp(RFC_SECRET, 0, 0, 1, 1, digits),
                Err(OtpError::BadDigits)
            );
        }
        let zero = OtpParams { period_s: 0, ..p };
        assert_eq!(totp(RFC_SECRET, NOW, zero), Err(OtpError::BadPeriod));
        assert_eq!(
            verify_totp(RFC_SECRET, 0, NOW, zero, 1, None),
            Err(OtpError::BadPeriod)
        );

        assert_eq!(hotp(b"", 0, 6), Err(OtpError::EmptySecret));
        assert_eq!(totp(b"", NOW, p), Err(OtpError::EmptySecret));
        assert_eq!(
            verify_totp(b"", 0, NOW, p, 1, None),
            Err(OtpError::EmptySecret)
        );
        assert_eq!(verify_hotp(b"", 0, 0, 1, 1, 6), Err(OtpError::EmptySecret));

        let long = [0x5au8; MAX_SECRET_LEN + 1];
        assert_eq!(hotp(&long, 0, 6), Err(OtpError::SecretTooLong));
        assert_eq!(totp(&long, NOW, p), Err(OtpError::SecretTooLong));
        assert_eq!(
            verify_totp(&long, 0, NOW, p, 1, None),
            Err(OtpError::SecretTooLong)
        );
        assert_eq!(
            verify_hotp(&long, 0, 0, 1, 1, 6),
            Err(OtpError::SecretTooLong)
        );
        // The longest secret and a one-byte secret are fine.
        assert!(hotp(&long[..MAX_SECRET_LEN], 0, 6).is_ok());
        assert!(hotp(&long[..1], 0, 6).is_ok());

        for e in [
            OtpError::BadDigits,
            OtpError::BadPeriod,
            OtpError::SecretTooLong,
            OtpError::EmptySecret,
            OtpError::BeforeEpoch,
        ] {
            assert!(!e.as_str().is_empty());
        }
    }

    #[test]
    fn constant_time_helpers() {
        assert_eq!(ct_eq(0, 0), 1);
        assert_eq!(ct_eq(u32::MAX, u32::MAX), 1);
        assert_eq!(ct_eq(0, 1), 0);
        assert_eq!(ct_eq(0x8000_0000, 0), 0);
        assert_eq!(ct_eq(0, u32::MAX), 0);
        assert_eq!(ct_select(1, 7, 9), 7);
        assert_eq!(ct_select(0, 7, 9), 9);
    }

    proptest! {
        #[test]
        fn arbitrary_inputs_never_panic(
            secret in proptest::collection::vec(any::<u8>(), 0..100),
            code in any::<u32>(),
            keys in proptest::collection::vec(any::<u8>(), 0..12),
            counter in any::<u64>(),
            unix_secs in any::<i64>(),
            digits in any::<u8>(),
            period_s in any::<u32>(),
            window in 0u8..4,
            last_used in any::<Option<u64>>(),
            look_ahead in 0u32..6,
            replay_window in 0u32..6,
        ) {
            let params = OtpParams { digits, period_s };
            let _ = hotp(&secret, counter, digits);
            let _ = totp_step(unix_secs, period_s);
            let _ = totp(&secret, unix_secs, params);
            let _ = parse_code(&keys, digits);
            let _ = verify_totp(&secret, code, unix_secs, params, window, last_used);
            let _ = verify_hotp(&secret, code, counter, look_ahead, replay_window, digits);
        }

        #[test]
        fn generated_codes_verify(
            secret in proptest::collection::vec(any::<u8>(), 1..=MAX_SECRET_LEN),
            unix_secs in 0i64..=i64::MAX,
            digits in 6u8..=8,
            period_s in 1u32..=3600,
            window in 0u8..3,
            counter in any::<u64>(),
        ) {
            let params = OtpParams { digits, period_s };
            let step = totp_step(unix_secs, period_s).unwrap();
            let code = totp(&secret, unix_secs, params).unwrap();
            prop_assert_eq!(Ok(code), hotp(&secret, step, digits));
            prop_assert!(code < 10u32.pow(u32::from(digits)));
            // The current step's code matches the current step or one at least as close.
            let Ok(Match::Fresh(found)) = verify_totp(&secret, code, unix_secs, params, window, None)
            else {
                return Err(TestCaseError::fail("current code not accepted"));
            };
            prop_assert_eq!(found, step);
            prop_assert_eq!(
                verify_totp(&secret, code, unix_secs, params, window, Some(step)),
                Ok(Match::Replayed(step))
            );
            // Formatting the code with leading zeros and parsing it gives it back.
            let mut keys = [b'0'; 8];
            let mut v = code;
            for k in keys[..usize::from(digits)].iter_mut().rev() {
                *k = b'0' + (v % 10) as u8;
                v /= 10;
            }
            prop_assert_eq!(parse_code(&keys[..usize::from(digits)], digits), Some(code));
            let hcode = hotp(&secret, counter, digits).unwrap();
            prop_assert_eq!(
                verify_hotp(&secret, hcode, counter, 0, 0, digits),
                Ok(Match::Fresh(counter))
            );
        }
    }
}
