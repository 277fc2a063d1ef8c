//! Benchmarks of the door's hot paths (criterion):
//!
//! - `card_decision/{1000,100000,1000000}`: one card decision (`find_card`, `policy`,
//!   `access::evaluate` at a valid wall time) for a present UID, a different one each iteration
//!   from 4096 picked beforehand; `card_decision/unknown_100000` for UIDs not in the list;
//!   `card_decision/by_record_100000` reads each probed record through [`ListBytes::read`], as
//!   a door reads its list from flash, instead of comparing in place;
//! - `controller/handle_card_100000`: the same through `Controller::handle_card` with a valid
//!   clock, draining `poll_action()`;
//! - `keypad/*`: TOTP (±1 step) and HOTP (look-ahead 10, replay window 10) verification, and
//!   `Keypad::check` for a good TOTP code, a good HOTP code without a clock, and a wrong code;
//! - `allowlist_verify/*`: `AllowList::verify` (Ed25519 signature and record checks).
//!
//! Each list is built once, when first needed, and its size per card printed on stderr.
//!
//! ```text
//! cargo bench -p chronolock-core --features alloc
//! ```

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use chronolock_core::allowlist::{AllowList, KeypadUser, ListBytes, ListError};
use chronolock_core::keypad::{CodeCheck, Keypad};
use chronolock_core::otp::{self, Match, OtpParams};
use chronolock_core::{Config, Controller, Instant, Persisted, RtcReading, UnixTime, WallTime};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};

// The list generator and the decision path, shared with the callgrind probe.
#[path = "../examples/one_decision.rs"]
#[allow(dead_code)]
mod probe;

use probe::{decide, Fixture, SplitMix64, NOW};

/// List sizes, in cards.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// The monotonic time of the controller's decisions (one second after boot).
const NOW_MONO: Instant = Instant::from_secs(1);

/// UIDs picked from a list for the lookups (a power of two).
const PICKS: usize = 4096;

/// The list of `cards` cards, built (and verified) on first use and kept for the whole run.
fn fixture(cards: usize) -> &'static Fixture {
    static BUILT: Mutex<Vec<&'static Fixture>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().expect("the fixture cache is not poisoned");
    if let Some(fixture) = built.iter().find(|f| f.uids.len() == cards) {
        return fixture;
    }
    let fixture: &'static Fixture = Box::leak(Box::new(Fixture::build(cards)));
    eprintln!("{}", fixture.describe());
    built.push(fixture);
    fixture
}

fn list(fixture: &'static Fixture) -> AllowList<&'static [u8]> {
    AllowList::open(&fixture.bytes).expect("the generated list opens")
}

/// A list read a record at a time, as the door reads flash (no in-place comparison).
struct ByRecord(&'static [u8]);

impl ListBytes for ByRecord {
    fn len(&self) -> u32 {
        self.0.len() as u32
    }

    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError> {
        let from = offset as usize;
        let src = self
            .0
            .get(from..from + buf.len())
            .ok_or(ListError::Truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn card_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("card_decision");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let wall = probe::wall();
    for cards in SIZES {
        // Criterion calls the closure once per sample: prepare once, when first needed.
        let mut prepared = None;
        let mut i = 0;
        group.bench_function(BenchmarkId::from_parameter(cards), |b| {
            let (list, picks) = prepared.get_or_insert_with(|| {
                let fixture = fixture(cards);
                (list(fixture), fixture.picks(PICKS, 7))
            });
            b.iter(|| {
                i = (i + 1) & (PICKS - 1);
                decide(black_box(list), black_box(&picks[i]), &wall)
            });
        });
    }
    let mut prepared = None;
    let mut i = 0;
    group.bench_function("by_record_100000", |b| {
        let (list, picks) = prepared.get_or_insert_with(|| {
            let fixture = fixture(100_000);
            let list = AllowList::open_in(ByRecord(&fixture.bytes)).expect("the list opens");
            (list, fixture.picks(PICKS, 7))
        });
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            decide(black_box(&*list), black_box(&picks[i]), &wall)
        });
    });
    let mut prepared = None;
    let mut i = 0;
    group.bench_function("unknown_100000", |b| {
        let (list, absent) = prepared.get_or_insert_with(|| {
            let list = list(fixture(100_000));
            let mut rng = SplitMix64(11);
            let absent: Vec<Vec<u8>> = core::iter::from_fn(|| Some(rng.uid()))
                .filter(|uid| list.find_card(uid).is_none())
                .take(PICKS)
                .collect();
            (list, absent)
        });
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            decide(black_box(list), black_box(&absent[i]), &wall)
        });
    });
    group.finish();
}

fn controller(c: &mut Criterion) {
    let mut group = c.benchmark_group("controller");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut prepared = None;
    let mut i = 0;
    group.bench_function("handle_card_100000", |b| {
        let (controller, list, picks) = prepared.get_or_insert_with(|| {
            let fixture = fixture(100_000);
            let cfg = Config {
                site_key: Some(fixture.key.verifying_key().to_bytes()),
                ..Config::default()
            };
            let boot = Instant::ZERO;
            let mut controller = Controller::new(cfg, Persisted::default(), [7; 32], boot);
            // A valid RTC reading makes the clock valid at once, so SCHEDULED cards see their slots.
            controller.handle_rtc_read(
                RtcReading::Valid {
                    unix_secs: NOW,
                    at_tick: false,
                },
                boot,
            );
            let list = controller
                .check_allowlist(&fixture.bytes)
                .expect("the controller accepts the generated list");
            controller.allowlist_installed(list.info(), boot);
            while controller.poll_action().is_some() {}
            assert!(
                controller.wall_time(NOW_MONO).is_some(),
                "the clock is valid"
            );
            (controller, list, fixture.picks(PICKS, 7))
        });
        b.iter(|| {
            i = (i + 1) & (PICKS - 1);
            controller.handle_card(black_box(&picks[i]), Some(list), NOW_MONO);
            while let Some(action) = controller.poll_action() {
                black_box(action);
            }
        });
    });
    group.finish();
}

/// RFC 4226 / RFC 6238's 20-byte (160-bit, the recommended length) SHA-1 test secret.
const SECRET: &[u8] = b"12345678901234567890";

fn keypad(c: &mut Criterion) {
    let mut group = c.benchmark_group("keypad");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let params = OtpParams::default();
    let cfg = Config::default();
    let totp_code = otp::totp(SECRET, NOW, params).expect("a TOTP code");
    let hotp_code = otp::hotp(SECRET, 5, 6).expect("an HOTP code");

    group.bench_function("verify_totp_window_1", |b| {
        b.iter(|| {
            let m = otp::verify_totp(
                black_box(SECRET),
                black_box(totp_code),
                NOW,
                params,
                cfg.totp_window_steps,
                None,
            );
            debug_assert!(matches!(m, Ok(Match::Fresh(_))));
            m
        });
    });
    group.bench_function("verify_hotp_look_ahead_10", |b| {
        b.iter(|| {
            let m = otp::verify_hotp(
                black_box(SECRET),
                black_box(hotp_code),
                0,
                cfg.hotp_look_ahead,
                cfg.hotp_replay_window,
                6,
            );
            debug_assert!(matches!(m, Ok(Match::Fresh(5))));
            m
        });
    });

    // Keypad::check on a fresh keypad each time (a code is accepted only once).
    let user = KeypadUser {
        index: 0,
        code: b"1234",
        totp_secret: Some(SECRET),
        hotp_secret: Some(SECRET),
        hotp_counter: 0,
        digits: 6,
        period_s: 30,
        policy: 0,
    };
    let entry = |otp: u32| {
        let mut keypad = Keypad::default();
        format!("1234*{otp:06}#")
            .bytes()
            .find_map(|key| keypad.key(key, Instant::ZERO, &cfg))
            .expect("`#` finishes the entry")
    };
    let wall = WallTime::new(UnixTime::from_secs(NOW), 10);
    let wrong = (totp_code + 1) % 1_000_000;
    let cases = [
        ("check_totp", entry(totp_code), Some(wall), true),
        ("check_hotp_clock_unsynced", entry(hotp_code), None, true),
        ("check_wrong_code", entry(wrong), Some(wall), false),
    ];
    for (name, entry, wall, accepted) in cases {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                Keypad::default,
                |keypad| {
                    let (check, used) =
                        keypad.check(black_box(&entry), &user, wall.as_ref(), Instant::ZERO, &cfg);
                    debug_assert_eq!(check == CodeCheck::Accepted, accepted);
                    (check, used)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn allowlist_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("allowlist_verify");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for cards in SIZES {
        group.bench_function(BenchmarkId::from_parameter(cards), |b| {
            let fixture = fixture(cards);
            let key = fixture.key.verifying_key();
            b.iter(|| {
                AllowList::verify(black_box(&fixture.bytes), &key)
                    .expect("the generated list verifies")
                    .info()
            });
        });
    }
    group.finish();
}

mod groups {
    // `criterion_group!` defines an undocumented `pub fn`; it is private to this module.
    use super::*;
    criterion_group!(benches, card_decision, controller, keypad, allowlist_verify);
}
criterion_main!(groups::benches);
