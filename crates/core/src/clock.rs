//! The wall clock: the monotonic clock plus an offset, an error bound, and the policy that
//! decides which time source may set it.
//!
//! The clock is an interval: at the anchor instant true UTC lay within `utc ± error`, and the
//! error grows by the oscillator's worst-case drift as monotonic time passes. A sample from a
//! source is an interval too. The rules (design brief, "Time"):
//!
//! - An unset clock takes any plausible sample (above 2020-01-01, ADR-011).
//! - A sample that overlaps the clock narrows it to the intersection. An intersection never leaves
//!   the clock's interval, so a source that agrees with the clock can refine it but never walk it
//!   away, however often it answers.
//! - A sample that does not overlap is judged by trust, RTC and phone < NTP < backend:
//!   the backend's authenticated time always wins; NTP corrects a clock set from the RTC or a
//!   phone freely (though within one round, answers that agree with such a clock are heard
//!   first, so a fast liar does not beat honest servers that agree with the RTC), but once a network source has set the clock (this boot), one NTP server that
//!   disagrees is held until a second, independent server agrees with it, and it never overrides
//!   the backend; the RTC and a phone never override a network-set clock.

use core::time::Duration;

use crate::time::{duration_micros, Instant, UnixTime, WallTime};

/// Where a time came from, in increasing order of trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The external DS3231 RTC.
    Rtc,
    /// A phone, during setup mode only.
    Phone,
    /// An SNTP server (unauthenticated).
    Ntp,
    /// The backend's timestamps inside the sync exchange (authenticated).
    Backend,
}

impl Source {
    /// Trust rank: RTC and phone 0, NTP 1, backend 2.
    pub fn rank(self) -> u8 {
        match self {
            Source::Rtc | Source::Phone => 0,
            Source::Ntp => 1,
            Source::Backend => 2,
        }
    }

    /// NTP or backend.
    pub fn is_network(self) -> bool {
        self.rank() > 0
    }

    /// Lower-case name, as in the scenario contract's `clock` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rtc => "rtc",
            Source::Phone => "phone",
            Source::Ntp => "ntp",
            Source::Backend => "backend",
        }
    }
}

/// One measurement of true time: at monotonic `at`, UTC lay within `utc ± error_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Which kind of source.
    pub source: Source,
    /// Which server of that kind (NTP servers are independent of each other); 0 otherwise.
    pub server: u8,
    /// When the measurement holds, on the monotonic clock.
    pub at: Instant,
    /// The measured UTC.
    pub utc: UnixTime,
    /// Error bound of the measurement in microseconds.
    pub error_us: u64,
}

/// What happened to an offered sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The clock was set or refined from the sample.
    Set {
        /// The clock was not valid before.
        became_valid: bool,
        /// The clock's source is now a different one.
        source_changed: bool,
        /// How far the clock moved, in microseconds (positive: forward).
        step_us: i64,
    },
    /// The sample agrees with the clock but would not make it better.
    Consistent,
    /// The sample disagrees with a network-set clock; it waits for a second, independent source.
    Held,
    /// The sample was refused.
    Rejected(Refusal),
}

/// Why a sample was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The sample lies at or below 2020-01-01 (ADR-011's threshold).
    BelowThreshold,
    /// The clock was set by a more trusted source and the sample disagrees with it.
    LessTrusted,
}

impl Refusal {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BelowThreshold => "below_threshold",
            Refusal::LessTrusted => "less_trusted_than_clock",
        }
    }
}

/// The clock's parameters; from [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub struct ClockPolicy {
    /// Bound on the monotonic oscillator's frequency error.
    pub drift_ppm_max: u32,
    /// While the last backend sample is younger than this, other sources refine the clock but do
    /// not become its source.
    pub backend_fresh_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Estimate {
    anchor: Instant,
    utc: UnixTime,
    error_us: u64,
    source: Source,
}

/// The device's wall clock. See the module documentation for its rules.
#[derive(Clone, Debug)]
pub struct Clock {
    policy: ClockPolicy,
    estimate: Option<Estimate>,
    network_set: bool,
    last_backend_at: Option<Instant>,
    /// A disagreeing NTP sample waiting for a second server's agreement.
    candidate: Option<Sample>,
}

impl Clock {
    /// An unset clock, as at boot.
    pub fn new(policy: ClockPolicy) -> Self {
        Clock {
            policy,
            estimate: None,
            network_set: false,
            last_backend_at: None,
            candidate: None,
        }
    }

    /// UTC at `now`, if the clock is valid.
    pub fn utc(&self, now: Instant) -> Option<UnixTime> {
        self.estimate
            .map(|e| e.utc.offset_micros(now.micros_since(e.anchor)))
    }

    /// Error bound at `now` in microseconds, if the clock is valid.
    pub fn error_us(&self, now: Instant) -> Option<u64> {
        self.estimate.map(|e| {
            e.error_us
                .saturating_add(self.drift_us(now.saturating_since(e.anchor)))
        })
    }

    /// ADR-011's `get_wall_time()`: UTC, weekday, hour and minute, with the error bound; `None`
    /// while the clock is not valid.
    pub fn wall_time(&self, now: Instant) -> Option<WallTime> {
        let utc = self.utc(now)?;
        Some(WallTime::new(utc, self.error_us(now)?.div_ceil(1000)))
    }

    /// The source that last set the clock.
    pub fn source(&self) -> Option<Source> {
        self.estimate.map(|e| e.source)
    }

    /// Whether NTP or the backend has set the clock since boot.
    pub fn network_set(&self) -> bool {
        self.network_set
    }

    /// The clock was set from time a network source gave earlier (an RTC this device wrote
    /// after a network sync): one unauthenticated source may no longer step it on its own.
    pub fn vouch_for_network_time(&mut self) {
        if self.estimate.is_some() {
            self.network_set = true;
        }
    }

    /// Whether `sample` is consistent with the clock at `now` (their intervals overlap); false
    /// while the clock is not valid.
    pub fn agrees(&self, sample: &Sample, now: Instant) -> bool {
        let (Some(utc), Some(err)) = (self.utc(now), self.error_us(now)) else {
            return false;
        };
        let (s_mid, s_err) = self.project(sample, now);
        intersect(utc.as_micros(), err, s_mid, s_err).is_some()
    }

    /// When the backend last gave a sample the clock accepted or found consistent.
    pub fn last_backend_at(&self) -> Option<Instant> {
        self.last_backend_at
    }

    fn drift_us(&self, elapsed: Duration) -> u64 {
        let us = u128::from(duration_micros(elapsed));
        (us * u128::from(self.policy.drift_ppm_max)).div_ceil(1_000_000) as u64
    }

    /// A sample projected to `now`: its time advanced, its error widened by drift.
    fn project(&self, s: &Sample, now: Instant) -> (i64, u64) {
        let utc = s.utc.offset_micros(now.micros_since(s.at)).as_micros();
        (
            utc,
            s.error_us
                .saturating_add(self.drift_us(now.saturating_since(s.at))),
        )
    }

    /// Offers a sample to the clock at `now` and applies the rules in the module documentation.
    pub fn offer(&mut self, sample: Sample, now: Instant) -> Outcome {
        let (s_mid, s_err) = self.project(&sample, now);
        if !UnixTime::from_micros(s_mid).is_plausible() {
            return Outcome::Rejected(Refusal::BelowThreshold);
        }
        let before_backend = self.last_backend_at;
        if sample.source == Source::Backend {
            self.last_backend_at = Some(now);
        }
        let Some(est) = self.estimate else {
            return self.adopt(sample.source, s_mid, s_err, now);
        };
        let c_mid = est
            .utc
            .offset_micros(now.micros_since(est.anchor))
            .as_micros();
        let c_err = self.error_us(now).unwrap_or(0);

        if let Some((lo, hi)) = intersect(c_mid, c_err, s_mid, s_err) {
            let (mid, err) = midpoint(lo, hi);
            let narrower = err < c_err;
            let backend_fresh = est.source == Source::Backend
                && before_backend
                    .is_some_and(|at| now.saturating_since(at) < self.policy.backend_fresh_for);
            let takes_over = sample.source.rank() > est.source.rank()
                || (s_err <= c_err && !backend_fresh && sample.source != est.source);
            if !narrower && !takes_over {
                return Outcome::Consistent;
            }
            let source = if takes_over {
                sample.source
            } else {
                est.source
            };
            return self.adopt(source, mid, err, now);
        }

        // The sample and the clock disagree.
        match sample.source {
            Source::Backend => self.adopt(Source::Backend, s_mid, s_err, now),
            Source::Ntp if !self.network_set => self.adopt(Source::Ntp, s_mid, s_err, now),
            Source::Ntp if est.source == Source::Backend => Outcome::Rejected(Refusal::LessTrusted),
            Source::Ntp => {
                if let Some(cand) = self.candidate.filter(|c| c.server != sample.server) {
                    let (k_mid, k_err) = self.project(&cand, now);
                    if let Some((lo, hi)) = intersect(k_mid, k_err, s_mid, s_err) {
                        let (mid, err) = midpoint(lo, hi);
                        return self.adopt(Source::Ntp, mid, err, now);
                    }
                }
                self.candidate = Some(sample);
                Outcome::Held
            }
            Source::Rtc | Source::Phone if self.network_set => {
                Outcome::Rejected(Refusal::LessTrusted)
            }
            // Without network time, the latest RTC reading or the phone at setup is the best
            // knowledge there is.
            Source::Rtc | Source::Phone => self.adopt(sample.source, s_mid, s_err, now),
        }
    }

    fn adopt(&mut self, source: Source, utc_us: i64, error_us: u64, now: Instant) -> Outcome {
        let before = self.estimate;
        let old_utc = self.utc(now);
        self.estimate = Some(Estimate {
            anchor: now,
            utc: UnixTime::from_micros(utc_us),
            error_us,
            source,
        });
        self.network_set |= source.is_network();
        self.candidate = None;
        Outcome::Set {
            became_valid: before.is_none(),
            source_changed: before.map(|e| e.source) != Some(source),
            step_us: old_utc.map_or(0, |old| utc_us - old.as_micros()),
        }
    }
}

/// The overlap of `a ± ae` and `b ± be`, if any.
fn intersect(a: i64, ae: u64, b: i64, be: u64) -> Option<(i64, i64)> {
    let lo = (a - ae as i64).max(b - be as i64);
    let hi = (a + ae as i64).min(b + be as i64);
    (lo <= hi).then_some((lo, hi))
}

/// Centre and half-width of `[lo, hi]`, rounding the half-width up so the result covers it.
fn midpoint(lo: i64, hi: i64) -> (i64, u64) {
    (lo + (hi - lo) / 2, (hi - lo + 1).unsigned_abs() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{sample, T0};
    use proptest::prelude::*;

    fn clock() -> Clock {
        Clock::new(ClockPolicy {
            drift_ppm_max: 10,
            backend_fresh_for: Duration::from_secs(900),
        })
    }

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    #[test]
    fn unset_clock_takes_a_plausible_sample() {
        let mut c = clock();
        assert!(c.wall_time(at(0)).is_none());
        assert_eq!(
            c.offer(sample(Source::Rtc, 0, at(1), 0, 500_000), at(1)),
            Outcome::Set {
                became_valid: true,
                source_changed: true,
                step_us: 0
            }
        );
        assert_eq!(c.utc(at(11)), Some(T0.offset_micros(11_000_000)));
        // 10 ppm over 10 s adds 100 µs.
        assert_eq!(c.error_us(at(11)), Some(500_100));
    }

    #[test]
    fn nothing_at_or_below_2020_is_taken() {
        let mut c = clock();
        let s = Sample {
            source: Source::Ntp,
            server: 0,
            at: at(0),
            utc: UnixTime::VALIDITY_THRESHOLD,
            error_us: 1,
        };
        assert_eq!(
            c.offer(s, at(0)),
            Outcome::Rejected(Refusal::BelowThreshold)
        );
        assert!(c.utc(at(0)).is_none());
    }

    #[test]
    fn ntp_corrects_an_rtc_set_clock_freely() {
        let mut c = clock();
        c.offer(sample(Source::Rtc, 0, at(0), -2_000_000, 500_000), at(0));
        match c.offer(sample(Source::Ntp, 0, at(5), 0, 10_000), at(5)) {
            Outcome::Set {
                source_changed: true,
                step_us,
                ..
            } => assert_eq!(step_us, 2_000_000),
            other => panic!("{other:?}"),
        }
        assert!(c.network_set());
    }

    #[test]
    fn one_ntp_server_cannot_step_a_network_set_clock() {
        let mut c = clock();
        c.offer(sample(Source::Ntp, 0, at(0), 0, 10_000), at(0));
        assert_eq!(
            c.offer(sample(Source::Ntp, 0, at(60), 30_000_000, 10_000), at(60)),
            Outcome::Held
        );
        // The same server again is not independent.
        assert_eq!(
            c.offer(sample(Source::Ntp, 0, at(120), 30_000_000, 10_000), at(120)),
            Outcome::Held
        );
        assert_eq!(c.utc(at(120)), Some(T0.offset_micros(120_000_000)));
        // A second server that agrees with it is.
        assert!(matches!(
            c.offer(sample(Source::Ntp, 1, at(130), 30_000_000, 10_000), at(130)),
            Outcome::Set { .. }
        ));
        let off = c
            .utc(at(130))
            .unwrap()
            .micros_since(T0.offset_micros(130_000_000));
        assert!((off - 30_000_000).abs() <= 20_000, "{off}");
    }

    #[test]
    fn backend_wins_over_ntp() {
        let mut c = clock();
        c.offer(sample(Source::Ntp, 0, at(0), 0, 10_000), at(0));
        assert!(matches!(
            c.offer(
                sample(Source::Backend, 0, at(10), 5_000_000, 20_000),
                at(10)
            ),
            Outcome::Set {
                source_changed: true,
                ..
            }
        ));
        // Two agreeing NTP servers still do not override the backend.
        assert_eq!(
            c.offer(sample(Source::Ntp, 0, at(20), 0, 10_000), at(20)),
            Outcome::Rejected(Refusal::LessTrusted)
        );
        assert_eq!(
            c.offer(sample(Source::Ntp, 1, at(21), 0, 10_000), at(21)),
            Outcome::Rejected(Refusal::LessTrusted)
        );
        assert_eq!(c.source(), Some(Source::Backend));
    }

    #[test]
    fn rtc_and_phone_never_override_network_time() {
        let mut c = clock();
        c.offer(sample(Source::Ntp, 0, at(0), 0, 10_000), at(0));
        assert_eq!(
            c.offer(sample(Source::Rtc, 0, at(10), 3_000_000, 500_000), at(10)),
            Outcome::Rejected(Refusal::LessTrusted)
        );
        assert_eq!(
            c.offer(
                sample(Source::Phone, 0, at(10), -3_000_000, 2_000_000),
                at(10)
            ),
            Outcome::Rejected(Refusal::LessTrusted)
        );
    }

    #[test]
    fn offline_rtc_rereads_take_over_once_better() {
        let mut c = clock();
        c.offer(sample(Source::Ntp, 0, at(0), 0, 10_000), at(0));
        // After 1 h the clock's bound is 46 ms; an RTC read (±500 ms) only checks it.
        assert_eq!(
            c.offer(sample(Source::Rtc, 0, at(3600), 0, 500_000), at(3600)),
            Outcome::Consistent
        );
        assert_eq!(c.source(), Some(Source::Ntp));
        // After 24 h offline the clock's bound (874 ms) is worse than the RTC's.
        assert!(matches!(
            c.offer(sample(Source::Rtc, 0, at(86_400), 0, 600_000), at(86_400)),
            Outcome::Set {
                source_changed: true,
                ..
            }
        ));
        assert_eq!(c.source(), Some(Source::Rtc));
    }

    #[test]
    fn fresh_backend_stays_the_source() {
        let mut c = clock();
        c.offer(sample(Source::Backend, 0, at(0), 0, 20_000), at(0));
        let out = c.offer(sample(Source::Ntp, 0, at(60), 0, 5_000), at(60));
        assert!(
            matches!(
                out,
                Outcome::Set {
                    source_changed: false,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(c.source(), Some(Source::Backend));
        // Once stale, a better NTP answer becomes the source.
        let out = c.offer(sample(Source::Ntp, 0, at(1000), 0, 5_000), at(1000));
        assert!(
            matches!(
                out,
                Outcome::Set {
                    source_changed: true,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    fn arb_source() -> impl Strategy<Value = Source> {
        prop_oneof![
            Just(Source::Rtc),
            Just(Source::Phone),
            Just(Source::Ntp),
            Just(Source::Backend)
        ]
    }

    proptest! {
        /// Honest sources (true time within their stated error) keep true time within the clock's
        /// bound, and a re-sync moves the clock by at most the two bounds together.
        #[test]
        fn honest_resyncs_keep_truth_inside_the_bound(
            steps in proptest::collection::vec((1u64..7200, arb_source(), 0u8..3, 1_000u64..2_000_000, -1.0f64..1.0), 1..40),
            drift_ppm in -10.0f64..10.0,
        ) {
            let mut c = clock();
            let mut mono = 0u64;
            for (gap, source, server, err, frac) in steps {
                mono += gap;
                let now = at(mono);
                // True UTC at this monotonic instant, with the device running fast or slow.
                let truth = T0.offset_micros((mono as f64 * 1e6 * (1.0 - drift_ppm * 1e-6)) as i64);
                let before = c.utc(now).zip(c.error_us(now));
                let s = Sample { source, server, at: now, utc: truth.offset_micros((err as f64 * frac) as i64), error_us: err };
                let out = c.offer(s, now);
                if let (Some((old, old_err)), Outcome::Set { step_us, .. }) = (before, out) {
                    let moved = c.utc(now).unwrap().micros_since(old);
                    prop_assert_eq!(moved, step_us);
                    prop_assert!(moved.unsigned_abs() <= old_err + err, "moved {} beyond {}+{}", moved, old_err, err);
                }
                let off = c.utc(now).unwrap().micros_since(truth).unsigned_abs();
                prop_assert!(off <= c.error_us(now).unwrap() + 1, "off {} bound {}", off, c.error_us(now).unwrap());
            }
        }

        /// However one NTP server answers, a network-set clock never leaves the interval it had
        /// (widened only by drift).
        #[test]
        fn one_unauthenticated_source_cannot_move_a_network_set_clock_beyond_its_bound(
            first_err in 1_000u64..100_000,
            answers in proptest::collection::vec((1u64..4000, -100_000_000i64..100_000_000, 0u64..2_000_000), 1..60),
        ) {
            let mut c = clock();
            c.offer(sample(Source::Ntp, 0, at(0), 0, first_err), at(0));
            let mut mono = 0u64;
            let mut answers_seen = 0u64;
            for (gap, offset, err) in answers {
                mono += gap;
                answers_seen += 1;
                let now = at(mono);
                c.offer(sample(Source::Ntp, 0, now, offset, err), now);
                // The envelope: the first interval, widened by the drift bound since then.
                // (10 ppm of `mono` seconds is 10 * mono µs; 1 µs of rounding per answer.)
                let envelope = first_err + mono * 10 + answers_seen;
                let lo = c.utc(now).unwrap().as_micros() - c.error_us(now).unwrap() as i64;
                let hi = c.utc(now).unwrap().as_micros() + c.error_us(now).unwrap() as i64;
                let nominal = T0.offset_micros(mono as i64 * 1_000_000).as_micros();
                prop_assert!(lo >= nominal - envelope as i64 && hi <= nominal + envelope as i64,
                    "clock [{}, {}] left the envelope ±{} around nominal", lo - nominal, hi - nominal, envelope);
            }
        }
    }
}
