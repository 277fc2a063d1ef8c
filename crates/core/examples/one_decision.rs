//! The callgrind probe: card decisions on a 100k-card list, counted in instructions.
//!
//! Builds a signed list of 100 000 cards once, then makes exactly N card decisions (N from the
//! first argument, default 1) for present UIDs, cycling through 1000 UIDs picked beforehand:
//! `find_card`, `policy` and `access::evaluate` at a valid wall time, as the controller does.
//! `scripts/callgrind.sh` runs it with N = 1 and N = 1001 and divides the difference of the two
//! instruction counts by 1000, so building the list cancels out.
//!
//! ```text
//! cargo run --release -p chronolock-core --features alloc --example one_decision -- 1001
//! ```
//!
//! The list generator below is shared: `benches/decisions.rs` includes this file as a module, so
//! the benchmarks and the probe measure the same lists.

use std::collections::BTreeSet;
use std::hint::black_box;

use chronolock_core::access::{self, Decision, Verdict};
use chronolock_core::allowlist::{
    AccessType, AllowList, Builder, CardEntry, ListBytes, ListInfo, Policy, Slot, CARD_LEN,
};
use chronolock_core::{UnixTime, WallTime};
use ed25519_dalek::SigningKey;

/// When decisions are made: Tuesday 2026-11-24, 10:30 UTC.
pub const NOW: i64 = 1_795_516_200;

/// Distinct policies in a generated list (shared between its cards).
pub const POLICIES: usize = 100;

const DAY: i64 = 86_400;

/// The wall time decisions are made at, with a small error bound (a synchronised clock).
pub fn wall() -> WallTime {
    WallTime::new(UnixTime::from_secs(NOW), 10)
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny deterministic PRNG, so every run builds the
/// same lists.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A random card UID: 30 % 4-byte, 60 % 7-byte (NXP's manufacturer byte 0x04 first, as on
    /// MIFARE cards), 10 % 10-byte.
    pub fn uid(&mut self) -> Vec<u8> {
        let len = match self.below(10) {
            0..=2 => 4,
            3..=8 => 7,
            _ => 10,
        };
        let mut uid: Vec<u8> = [self.next_u64(), self.next_u64()]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(len)
            .collect();
        if len == 7 {
            uid[0] = 0x04;
        }
        uid
    }

    fn days(&mut self, lo: u64, hi: u64) -> i64 {
        (lo + self.below(hi - lo)) as i64 * DAY + self.below(DAY as u64) as i64
    }

    /// A date range around [`NOW`]: one in ten expired, the others current.
    fn date_range(&mut self) -> (i64, i64) {
        if self.below(10) == 0 {
            (NOW - self.days(30, 730), NOW - self.days(1, 29))
        } else {
            (NOW - self.days(1, 730), NOW + self.days(1, 730))
        }
    }

    /// A weekly slot of 1 to 12 hours on half-hour boundaries (some across midnight), on
    /// weekdays, weekends, every day, Mon/Wed/Fri or random days; one in five bounded in time.
    fn slot(&mut self) -> Slot {
        const PATTERNS: [u8; 4] = [0b001_1111, 0b110_0000, 0b111_1111, 0b001_0101];
        let days = if self.below(4) == 0 {
            1 + self.below(127) as u8
        } else {
            PATTERNS[self.below(4) as usize]
        };
        let start_min = 30 * self.below(48) as u16;
        let mut end_min = start_min + 30 * (2 + self.below(23)) as u16;
        if end_min > 1440 {
            end_min -= 1440;
        }
        let (from, until) = if self.below(5) == 0 {
            (NOW - self.days(1, 365), NOW + self.days(1, 365))
        } else {
            (0, 0)
        };
        Slot {
            days,
            start_min,
            end_min,
            from,
            until,
        }
    }
}

/// The policies cards share: 0 unrestricted for ever; 1–9 unrestricted within a date range;
/// 10–89 scheduled, with a date range (or none) and 1 to 3 weekly slots; 90–94 emergency; 95–99
/// conditional.
fn policy_pool(rng: &mut SplitMix64) -> Vec<(Policy, Vec<Slot>)> {
    (0..POLICIES)
        .map(|i| {
            let access = match i {
                0..=9 => AccessType::Unrestricted,
                10..=89 => AccessType::Scheduled,
                90..=94 => AccessType::Emergency,
                _ => AccessType::Conditional,
            };
            let (valid_from, valid_until) = match i {
                0 | 90 => (0, 0),
                10..=89 if rng.below(4) == 0 => (0, 0),
                _ => rng.date_range(),
            };
            let slots = if access == AccessType::Scheduled {
                (0..1 + rng.below(3)).map(|_| rng.slot()).collect()
            } else {
                Vec::new()
            };
            let policy = Policy::new(access, valid_from, valid_until);
            (policy, slots)
        })
        .collect()
}

/// Which shared policy a card gets: 80 % unrestricted (60 % the plain one), 17 % scheduled,
/// 2 % emergency, 1 % conditional.
fn card_policy(rng: &mut SplitMix64) -> usize {
    (match rng.below(100) {
        0..=59 => 0,
        60..=79 => 1 + rng.below(9),
        80..=96 => 10 + rng.below(80),
        97..=98 => 90 + rng.below(5),
        _ => 95 + rng.below(5),
    }) as usize
}

/// A signed list of random cards, and their UIDs.
pub struct Fixture {
    /// The list's bytes, signature included.
    pub bytes: Vec<u8>,
    /// Every card's UID, in the order they were generated.
    pub uids: Vec<Vec<u8>>,
    /// The site key that signed it.
    pub key: SigningKey,
}

impl Fixture {
    /// A list of `cards` distinct random UIDs over [`POLICIES`] shared policies, signed with the
    /// key `[42; 32]`. The same `cards` always gives the same list.
    pub fn build(cards: usize) -> Self {
        let mut rng = SplitMix64(0xC1A0_10C4 ^ cards as u64);
        let pool = policy_pool(&mut rng);
        let mut seen = BTreeSet::new();
        let mut uids = Vec::with_capacity(cards);
        let mut builder = Builder::new();
        while uids.len() < cards {
            let uid = rng.uid();
            if !seen.insert(uid.clone()) {
                continue;
            }
            let (policy, slots) = &pool[card_policy(&mut rng)];
            builder
                .card(&CardEntry {
                    uid: uid.clone(),
                    policy: *policy,
                    slots: slots.clone(),
                })
                .expect("generated cards are well formed");
            uids.push(uid);
        }
        let key = SigningKey::from_bytes(&[42; 32]);
        let bytes = builder
            .build(1, NOW - DAY, &key)
            .expect("generated lists build");
        Fixture { bytes, uids, key }
    }

    /// `n` UIDs of cards in the list, drawn at random (with repeats) by a PRNG seeded with `seed`.
    pub fn picks(&self, n: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| self.uids[rng.below(self.uids.len() as u64) as usize].clone())
            .collect()
    }

    /// The list, fully checked (signature and records).
    pub fn verified(&self) -> AllowList<&[u8]> {
        AllowList::verify(&self.bytes, &self.key.verifying_key())
            .expect("the generated list verifies")
    }

    /// One line on the list's size: bytes per card credential, everything included.
    pub fn describe(&self) -> String {
        let info: ListInfo = self.verified().info();
        format!(
            "list of {} cards: {} bytes, {:.3} bytes per card credential (card record {} bytes; \
             {} policies, {} slots, header and signature included)",
            info.cards,
            self.bytes.len(),
            self.bytes.len() as f64 / f64::from(info.cards),
            CARD_LEN,
            info.policies,
            info.slots,
        )
    }
}

/// One card decision, as the controller makes it: find the card, read its policy, evaluate it.
#[inline(never)]
pub fn decide<S: ListBytes>(list: &AllowList<S>, uid: &[u8], wall: &WallTime) -> Verdict {
    match list.find_card(uid).and_then(|i| list.policy(i)) {
        Some(policy) => access::evaluate(&policy, list.slots_of(&policy), Some(wall)),
        None => Verdict::Decided(Decision::DeniedUnknown),
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).map_or(1, |arg| {
        arg.parse()
            .expect("the argument is the number of decisions to make")
    });
    let fixture = Fixture::build(100_000);
    eprintln!("{}", fixture.describe());
    let list = fixture.verified();
    let picks = fixture.picks(1000, 7);
    let wall = wall();
    let mut granted = 0u64;
    let mut next = 0;
    for _ in 0..n {
        let uid = black_box(&picks[next][..]);
        next = if next + 1 == picks.len() { 0 } else { next + 1 };
        let verdict = black_box(decide(black_box(&list), uid, black_box(&wall)));
        granted += u64::from(matches!(
            verdict,
            Verdict::Decided(Decision::Granted | Decision::GrantedEmergency)
        ));
    }
    println!("{n} decisions, {granted} granted");
}
