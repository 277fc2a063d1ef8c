//! The keypad: collecting `<user code>*<otp>#`, verifying the code, and the lockout.
//!
//! With a valid clock (error bound small enough), a code is tried as TOTP (RFC 6238, ±1 step),
//! then as HOTP (RFC 4226, look-ahead window); before that only as HOTP, and a failure for a user
//! who has TOTP gives `DENIED_CLOCK_UNSYNCED` (ADR-011: three rapid red blinks). A TOTP step or
//! HOTP counter is never accepted twice: the last step and the next counter of each user are kept
//! here and persisted through the shell. Repeated failures lock the keypad for a time that
//! doubles up to a bound; the lockout runs on the monotonic clock, which needs no sync.

use heapless::Vec;

use crate::access::Decision;
use crate::allowlist::{keypad_key, KeypadUser, MAX_USER_CODE_LEN};
use crate::config::Config;
use crate::otp::{self, Match, OtpParams};
use crate::time::{duration_micros, Instant, WallTime};

/// Longest keypad entry kept (code, `*`, OTP); further keys before `#` make the entry invalid.
pub const MAX_ENTRY_LEN: usize = MAX_USER_CODE_LEN + 1 + 8;

/// How many users' TOTP/HOTP state is kept in RAM (least recently used is forgotten first; the
/// shell keeps every user's state in flash and the backend raises HOTP base counters at sync).
pub const MAX_TRACKED_USERS: usize = 64;

/// A keypad user's code usage, as persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeypadUse {
    /// The user code's sort key (digits zero-padded to 8, then the length).
    pub user: [u8; MAX_USER_CODE_LEN + 1],
    /// Last TOTP step accepted.
    pub last_totp_step: Option<u64>,
    /// Next HOTP counter that may be accepted (0: the list's base).
    pub hotp_next: u64,
}

impl KeypadUse {
    /// The user code digits.
    pub fn code(&self) -> &[u8] {
        &self.user[..usize::from(self.user[MAX_USER_CODE_LEN]).min(MAX_USER_CODE_LEN)]
    }
}

/// A finished entry, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    keys: [u8; MAX_ENTRY_LEN],
    len: usize,
}

impl Entry {
    fn keys(&self) -> &[u8] {
        &self.keys[..self.len]
    }

    /// The user code part (before `*`), at most 8 digits, for naming the credential.
    pub fn user_code(&self) -> &[u8] {
        let keys = self.keys();
        let code = keys.split(|&k| k == b'*').next().unwrap_or(&[]);
        &code[..code.len().min(MAX_USER_CODE_LEN)]
    }

    /// The OTP part (after `*`), if the entry has the `code*otp` form.
    pub fn otp(&self) -> Option<&[u8]> {
        let keys = self.keys();
        let star = keys.iter().position(|&k| k == b'*')?;
        Some(&keys[star + 1..])
    }
}

/// The verification of one entry, before the user's access policy is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code is good and fresh: apply the user's policy.
    Accepted,
    /// Denied for this reason.
    Denied(Decision),
}

/// The keypad's state for one boot.
#[derive(Clone, Debug, Default)]
pub struct Keypad {
    buffer: Vec<u8, MAX_ENTRY_LEN>,
    overflow: bool,
    last_key_at: Option<Instant>,
    failures: u8,
    lockouts: u8,
    locked_until: Option<Instant>,
    users: Vec<(KeypadUse, Instant), MAX_TRACKED_USERS>,
}

impl Keypad {
    /// Restores a user's persisted state at boot.
    pub fn restore(&mut self, state: KeypadUse) {
        self.remember(state, Instant::ZERO);
    }

    /// One key pressed. Returns the finished entry on `#`.
    pub fn key(&mut self, key: u8, now: Instant, cfg: &Config) -> Option<Entry> {
        if self
            .last_key_at
            .is_some_and(|t| now.saturating_since(t) >= cfg.keypad_entry_timeout)
        {
            self.buffer.clear();
            self.overflow = false;
        }
        self.last_key_at = Some(now);
        if key == b'#' {
            let mut entry = Entry {
                keys: [0; MAX_ENTRY_LEN],
                len: self.buffer.len(),
            };
            entry.keys[..self.buffer.len()].copy_from_slice(&self.buffer);
            if self.overflow {
                entry.len = MAX_ENTRY_LEN; // keeps the code for naming, and cannot parse
                entry.keys[MAX_ENTRY_LEN - 1] = b'#';
            }
            self.buffer.clear();
            self.overflow = false;
            return Some(entry);
        }
        if self.buffer.push(key).is_err() {
            self.overflow = true;
        }
        None
    }

    /// Whether the keypad is locked at `now`.
    pub fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    /// When the current lockout ends, if one is running.
    pub fn locked_until(&self) -> Option<Instant> {
        self.locked_until
    }

    /// Checks the code of `entry` for `user` at `now`, updating replay state. Returns the
    /// verdict and, when state changed, the record to persist.
    pub fn check(
        &mut self,
        entry: &Entry,
        user: &KeypadUser<'_>,
        wall: Option<&WallTime>,
        now: Instant,
        cfg: &Config,
    ) -> (CodeCheck, Option<KeypadUse>) {
        let Some(key) = keypad_key(user.code) else {
            return (self.fail(now, cfg, Decision::DeniedBadCode), None);
        };
        let Some(code) = entry
            .otp()
            .and_then(|otp| otp::parse_code(otp, user.digits))
        else {
            return (self.fail(now, cfg, Decision::DeniedBadCode), None);
        };
        let mut state = self.find(&key).unwrap_or(KeypadUse {
            user: key,
            last_totp_step: None,
            hotp_next: 0,
        });
        let clock_ok =
            wall.filter(|w| w.error_bound_ms * 1000 <= duration_micros(cfg.totp_max_error));
        let mut replayed = false;
        if let (Some(secret), Some(w)) = (user.totp_secret, clock_ok) {
            let params = OtpParams {
                digits: user.digits,
                period_s: u32::from(user.period_s),
            };
            match otp::verify_totp(
                secret,
                code,
                w.unix_secs,
                params,
                cfg.totp_window_steps,
                state.last_totp_step,
            ) {
                Ok(Match::Fresh(step)) => {
                    state.last_totp_step = Some(step);
                    return (self.succeed(state, now), Some(state));
                }
                Ok(Match::Replayed(_)) => replayed = true,
                Ok(Match::None) | Err(_) => {}
            }
        }
        if let Some(secret) = user.hotp_secret {
            let next = state.hotp_next.max(user.hotp_counter);
            match otp::verify_hotp(
                secret,
                code,
                next,
                cfg.hotp_look_ahead,
                cfg.hotp_replay_window,
                user.digits,
            ) {
                Ok(Match::Fresh(counter)) => {
                    state.hotp_next = counter.saturating_add(1);
                    return (self.succeed(state, now), Some(state));
                }
                Ok(Match::Replayed(_)) => replayed = true,
                Ok(Match::None) | Err(_) => {}
            }
        }
        let reason = if replayed {
            Decision::DeniedReplay
        } else if user.totp_secret.is_some() && clock_ok.is_none() {
            Decision::DeniedClockUnsynced
        } else {
            Decision::DeniedBadCode
        };
        (self.fail(now, cfg, reason), None)
    }

    /// Counts a failure that is not about a code (unknown user, malformed entry).
    pub fn fail(&mut self, now: Instant, cfg: &Config, reason: Decision) -> CodeCheck {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= cfg.lockout_after_failures.max(1) {
            self.failures = 0;
            let base = duration_micros(cfg.lockout_initial);
            let micros = base
                .saturating_mul(1u64 << self.lockouts.min(20))
                .min(duration_micros(cfg.lockout_max));
            self.locked_until = Some(now + core::time::Duration::from_micros(micros));
            self.lockouts = self.lockouts.saturating_add(1);
        }
        CodeCheck::Denied(reason)
    }

    fn succeed(&mut self, state: KeypadUse, now: Instant) -> CodeCheck {
        self.failures = 0;
        self.lockouts = 0;
        self.remember(state, now);
        CodeCheck::Accepted
    }

    fn find(&self, key: &[u8; MAX_USER_CODE_LEN + 1]) -> Option<KeypadUse> {
        self.users
            .iter()
            .find(|(u, _)| &u.user == key)
            .map(|(u, _)| *u)
    }

    fn remember(&mut self, state: KeypadUse, now: Instant) {
        if let Some(slot) = self.users.iter_mut().find(|(u, _)| u.user == state.user) {
            *slot = (state, now);
            return;
        }
        if self.users.is_full() {
            if let Some(oldest) = self
                .users
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(i, _)| i)
            {
                self.users.swap_remove(oldest);
            }
        }
        let _ = self.users.push((state, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::UnixTime;

    const TOTP: &[u8] = b"12345678901234567890";
    const HOTP: &[u8] = b"abcdefghijabcdefghij";

    fn user() -> KeypadUser<'static> {
        KeypadUser {
            index: 0,
            code: b"1234",
            totp_secret: Some(TOTP),
            hotp_secret: Some(HOTP),
            hotp_counter: 0,
            digits: 6,
            period_s: 30,
            policy: 0,
        }
    }

    fn entry(keys: &str) -> Entry {
        let mut k = Keypad::default();
        let cfg = Config::default();
        let mut out = None;
        for b in keys.bytes() {
            out = k.key(b, Instant::ZERO, &cfg);
        }
        out.unwrap()
    }

    fn code(v: u32) -> String {
        format!("1234*{v:06}#")
    }

    fn wall(unix: i64) -> WallTime {
        WallTime::new(UnixTime::from_secs(unix), 10)
    }

    #[test]
    fn entries_split_and_time_out() {
        let cfg = Config::default();
        let mut k = Keypad::default();
        for b in b"99*1" {
            assert!(k.key(*b, Instant::ZERO, &cfg).is_none());
        }
        // 10 s later the half-typed entry is gone.
        for b in b"1234*5" {
            k.key(*b, Instant::from_secs(11), &cfg);
        }
        let e = k.key(b'#', Instant::from_secs(11), &cfg).unwrap();
        assert_eq!((e.user_code(), e.otp()), (&b"1234"[..], Some(&b"5"[..])));
        let e = entry("1234#");
        assert_eq!((e.user_code(), e.otp()), (&b"1234"[..], None));
        let long = entry("12345678901234567890123#");
        assert_eq!(long.user_code(), b"12345678");
    }

    #[test]
    fn totp_then_replay_then_hotp() {
        let cfg = Config::default();
        let mut k = Keypad::default();
        let now = 1_795_510_740;
        let t = otp::totp(TOTP, now, OtpParams::default()).unwrap();
        let (v, persist) = k.check(
            &entry(&code(t)),
            &user(),
            Some(&wall(now)),
            Instant::ZERO,
            &cfg,
        );
        assert_eq!(v, CodeCheck::Accepted);
        assert!(persist.unwrap().last_totp_step.is_some());
        let (v, _) = k.check(
            &entry(&code(t)),
            &user(),
            Some(&wall(now + 5)),
            Instant::ZERO,
            &cfg,
        );
        assert_eq!(v, CodeCheck::Denied(Decision::DeniedReplay));
        // HOTP works with or without the clock, once per counter.
        let h0 = otp::hotp(HOTP, 0, 6).unwrap();
        let (v, p) = k.check(&entry(&code(h0)), &user(), None, Instant::ZERO, &cfg);
        assert_eq!((v, p.map(|p| p.hotp_next)), (CodeCheck::Accepted, Some(1)));
        let (v, _) = k.check(&entry(&code(h0)), &user(), None, Instant::ZERO, &cfg);
        assert_eq!(v, CodeCheck::Denied(Decision::DeniedReplay));
    }

    #[test]
    fn unsynced_clock_means_hotp_only() {
        let cfg = Config::default();
        let mut k = Keypad::default();
        let t = otp::totp(TOTP, 1_795_510_740, OtpParams::default()).unwrap();
        let (v, _) = k.check(&entry(&code(t)), &user(), None, Instant::ZERO, &cfg);
        assert_eq!(v, CodeCheck::Denied(Decision::DeniedClockUnsynced));
        // A clock whose bound is too wide for TOTP counts as unsynced for it.
        let vague = WallTime::new(UnixTime::from_secs(1_795_510_740), 20_000);
        let (v, _) = k.check(&entry(&code(t)), &user(), Some(&vague), Instant::ZERO, &cfg);
        assert_eq!(v, CodeCheck::Denied(Decision::DeniedClockUnsynced));
        // A user without TOTP just has a bad code.
        let hotp_only = KeypadUser {
            totp_secret: None,
            ..user()
        };
        let (v, _) = k.check(
            &entry("1234*000000#"),
            &hotp_only,
            None,
            Instant::ZERO,
            &cfg,
        );
        assert_eq!(v, CodeCheck::Denied(Decision::DeniedBadCode));
    }

    #[test]
    fn lockout_grows_and_is_bounded() {
        let cfg = Config::default();
        let mut k = Keypad::default();
        let mut now = Instant::ZERO;
        let mut lockouts = std::vec::Vec::new();
        for _ in 0..8 {
            for _ in 0..5 {
                assert!(!k.locked(now));
                k.check(
                    &entry("1234*000000#"),
                    &user(),
                    Some(&wall(1_795_510_740)),
                    now,
                    &cfg,
                );
            }
            let until = k.locked_until().unwrap();
            lockouts.push(until.saturating_since(now).as_secs());
            assert!(k.locked(now));
            now = until;
        }
        assert_eq!(lockouts, [30, 60, 120, 240, 480, 900, 900, 900]);
    }
}
