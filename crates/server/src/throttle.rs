//! Login attempts: password hashes are checked off the async workers, a few at a time, and
//! repeated failures from one client address or for one user name meet a growing delay.
//!
//! argon2 is deliberately slow: run on the async workers, a flood of wrong logins would stall
//! every other request, the doors' device API included. Here it runs on tokio's blocking pool
//! behind a semaphore, and after [`FREE_FAILURES`] failures in a row an address or a name is
//! refused with `429 Too Many Requests` (and `Retry-After`) for 1 s, then 2 s, 4 s … up to
//! [`MAX_DELAY_S`], before any hash is computed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::Semaphore;

/// Failures in a row allowed before the delay starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest delay, seconds.
pub const MAX_DELAY_S: i64 = 15 * 60;
/// Clients and names remembered at most; beyond, those quiet for longest are forgotten.
const MAX_REMEMBERED: usize = 10_000;

/// Who a failure counts against.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    /// A client address.
    Ip(IpAddr),
    /// A user name, as typed.
    User(String),
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    /// Milliseconds (Unix) before which no attempt is heard.
    until: i64,
    last: i64,
}

/// The login gate of one server process.
#[derive(Debug)]
pub struct Logins {
    hashing: Semaphore,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Logins {
    /// At most `parallel` password checks at once.
    pub fn new(parallel: usize) -> Self {
        Logins {
            hashing: Semaphore::new(parallel.max(1)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whole seconds (rounded up) until any of `keys` may try again, if one of them must
    /// wait; `now_ms` is Unix time in milliseconds.
    pub fn retry_after(&self, keys: &[Key], now_ms: i64) -> Option<i64> {
        let failures = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|k| failures.get(k))
            .map(|f| f.until - now_ms)
            .filter(|&wait| wait > 0)
            .max()
            .map(|wait_ms| (wait_ms + 999) / 1000)
    }

    /// An attempt at `now_ms`, before its password is checked: `Err(seconds)` if one of `keys`
    /// must wait that long, else the attempt is counted as a failure against every key until
    /// [`Logins::succeeded`] clears them. Counting first, under one lock, means a burst of
    /// concurrent attempts gets [`FREE_FAILURES`] hashes between them, not one per connection.
    pub fn attempt(&self, keys: &[Key], now_ms: i64) -> Result<(), i64> {
        let Ok(mut failures) = self.failures.lock() else {
            return Err(1);
        };
        let wait = keys
            .iter()
            .filter_map(|k| failures.get(k))
            .map(|f| f.until - now_ms)
            .filter(|&wait| wait > 0)
            .max();
        if let Some(wait_ms) = wait {
            return Err((wait_ms + 999) / 1000);
        }
        Self::count(&mut failures, keys, now_ms);
        Ok(())
    }

    /// A wrong password at `now_ms` (not announced by [`Logins::attempt`]): counts against
    /// every key.
    pub fn failed(&self, keys: &[Key], now_ms: i64) {
        if let Ok(mut failures) = self.failures.lock() {
            Self::count(&mut failures, keys, now_ms);
        }
    }

    fn count(failures: &mut HashMap<Key, Failures>, keys: &[Key], now: i64) {
        if failures.len() >= MAX_REMEMBERED {
            let mut by_age: Vec<(i64, Key)> =
                failures.iter().map(|(k, f)| (f.last, k.clone())).collect();
            by_age.sort_unstable_by_key(|(last, _)| *last);
            for (_, k) in by_age.into_iter().take(MAX_REMEMBERED / 10) {
                failures.remove(&k);
            }
        }
        for key in keys {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                until: 0,
                last: now,
            });
            f.count = f.count.saturating_add(1);
            f.last = now;
            if f.count >= FREE_FAILURES {
                let doublings = (f.count - FREE_FAILURES).min(20);
                f.until = now + (1i64 << doublings).min(MAX_DELAY_S) * 1000;
            }
        }
    }

    /// A good password: the keys start afresh.
    pub fn succeeded(&self, keys: &[Key]) {
        if let Ok(mut failures) = self.failures.lock() {
            for key in keys {
                failures.remove(key);
            }
        }
    }

    /// Runs `check` (a password hash comparison) on the blocking pool, a few at a time.
    pub async fn check(&self, check: impl FnOnce() -> bool + Send + 'static) -> bool {
        self.blocking(check).await.unwrap_or(false)
    }

    /// Runs `work` (argon2: a comparison or a new hash) on the blocking pool, a few at a time,
    /// so that password work never stalls the async workers; `None` if it could not run.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.hashing.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_after_the_free_failures_and_a_success_clears_it() {
        let logins = Logins::new(1);
        let keys = [
            Key::Ip("192.0.2.1".parse().unwrap()),
            Key::User("admin".into()),
        ];
        for _ in 0..FREE_FAILURES - 1 {
            logins.failed(&keys, 100_000);
        }
        assert_eq!(logins.retry_after(&keys, 100_000), None);
        logins.failed(&keys, 100_000);
        assert_eq!(logins.retry_after(&keys, 100_000), Some(1));
        assert_eq!(logins.retry_after(&keys, 100_999), Some(1));
        assert_eq!(logins.retry_after(&keys, 101_000), None);
        logins.failed(&keys, 101_000);
        assert_eq!(logins.retry_after(&keys, 101_000), Some(2));
        for _ in 0..30 {
            logins.failed(&keys, 200_000);
        }
        assert_eq!(logins.retry_after(&keys, 200_000), Some(MAX_DELAY_S));
        // Another user from another address is not held up.
        let other = [
            Key::Ip("192.0.2.2".parse().unwrap()),
            Key::User("bob".into()),
        ];
        assert_eq!(logins.retry_after(&other, 200_000), None);
        // The same user from another address is (the name is being guessed at).
        let same_user = [
            Key::Ip("192.0.2.2".parse().unwrap()),
            Key::User("admin".into()),
        ];
        assert!(logins.retry_after(&same_user, 200_000).is_some());
        logins.succeeded(&keys);
        assert_eq!(logins.retry_after(&keys, 200_000), None);
    }

    #[test]
    fn a_burst_of_attempts_gets_only_the_free_ones() {
        let logins = Logins::new(2);
        let keys = [
            Key::Ip("192.0.2.1".parse().unwrap()),
            Key::User("admin".into()),
        ];
        let heard = (0..64)
            .filter(|_| logins.attempt(&keys, 100_000).is_ok())
            .count();
        assert_eq!(heard, FREE_FAILURES as usize);
        assert_eq!(logins.attempt(&keys, 100_500), Err(1));
        // One more once the delay has passed, and then a longer delay.
        assert_eq!(logins.attempt(&keys, 101_000), Ok(()));
        assert_eq!(logins.attempt(&keys, 101_000), Err(2));
        // A success clears the count.
        logins.succeeded(&keys);
        assert_eq!(logins.attempt(&keys, 101_000), Ok(()));
    }
}
