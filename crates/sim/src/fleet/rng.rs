//! Integer-only random draws over ChaCha8, so that a seed gives the same run on every platform
//! (no floating-point transcendental functions, whose last bits may differ between libms).

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// A seeded generator.
pub(crate) struct Rng(pub(crate) ChaCha8Rng);

impl Rng {
    /// Uniform in `0..n` (`n` > 0), without modulo bias (Lemire's multiply-and-reject).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.0.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi.abs_diff(lo)) as i64
    }

    /// True with probability `per_million` / 1 000 000.
    pub(crate) fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        self.0.fill_bytes(out);
    }

    pub(crate) fn seed32(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.0.fill_bytes(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::world::stream;

    #[test]
    fn draws_stay_in_range_and_replay() {
        let mut a = stream(7, 3);
        let mut b = stream(7, 3);
        for n in [1u64, 2, 3, 10, 1 << 40] {
            for _ in 0..100 {
                let x = a.below(n);
                assert!(x < n.max(1));
                assert_eq!(x, b.below(n));
            }
        }
        assert_eq!(a.range(5, 5), 5);
        assert!((-3..4).contains(&a.range(-3, 4)));
        assert_ne!(stream(7, 3).below(1 << 40), stream(7, 4).below(1 << 40));
    }
}
