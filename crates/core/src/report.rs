//! The daily battery report (ADR-011): at 03:00 UTC once per UTC day while the clock is valid,
//! after ~24 h of uptime while it is not, and never twice in one UTC day.
//!
//! The last reported UTC day is persisted, so a reboot at 03:10 does not report again. A report
//! made on the uptime basis before the clock was valid is dated as soon as the clock becomes
//! valid (its monotonic instant is known), so the 03:00 report of that same day is skipped.

use core::time::Duration;

use crate::clock::Clock;
use crate::config::Config;
use crate::time::{duration_micros, Instant};

/// On which basis a report fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// 03:00 UTC by the wall clock.
    Wall,
    /// ~24 h of uptime, the clock being invalid.
    Uptime,
}

impl Basis {
    /// Lower-case name, as in the scenario contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Wall => "wall",
            Basis::Uptime => "uptime",
        }
    }
}

/// The report scheduler's state for one boot.
#[derive(Clone, Debug, Default)]
pub struct ReportScheduler {
    /// Last UTC day (Unix days) a report was made on, as persisted.
    last_day: Option<i64>,
    /// Monotonic instant of this boot's last report.
    last_at: Option<Instant>,
    /// Last report was made on the uptime basis and is not dated yet.
    undated: bool,
}

fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400)
}

impl ReportScheduler {
    /// The scheduler at boot, with the persisted last report day.
    pub fn new(last_day: Option<i64>) -> Self {
        ReportScheduler {
            last_day,
            last_at: None,
            undated: false,
        }
    }

    /// Last UTC day reported, for persisting.
    pub fn last_day(&self) -> Option<i64> {
        self.last_day
    }

    /// When a report is next due. With a valid clock: now if it is the report hour of an
    /// unreported day, else the next report hour; without: a period after the last report (or
    /// boot).
    pub fn next_due(&self, clock: &Clock, now: Instant, cfg: &Config) -> Instant {
        match clock.utc(now) {
            Some(utc) => {
                let secs = utc.secs();
                let day = day_of(secs);
                let hour_start = day * 86_400 + i64::from(cfg.report_hour_utc) * 3600;
                let reported_today = self.last_day.is_some_and(|d| d >= day);
                let target = if secs < hour_start {
                    if reported_today {
                        hour_start + 86_400
                    } else {
                        hour_start
                    }
                } else if secs < hour_start + 3600 && !reported_today {
                    return now;
                } else {
                    hour_start + 86_400
                };
                let wait_us = (target * 1_000_000 - utc.as_micros()).max(0) as u64;
                now + Duration::from_micros(wait_us)
            }
            None => self.last_at.unwrap_or(Instant::ZERO) + cfg.report_uptime_period,
        }
    }

    /// Called when the clock becomes valid: dates an uptime report made earlier in this boot.
    /// Returns true if the persisted day changed.
    pub fn clock_became_valid(&mut self, clock: &Clock, now: Instant) -> bool {
        let (Some(at), true) = (self.last_at, self.undated) else {
            return false;
        };
        let Some(utc) = clock.utc(now) else {
            return false;
        };
        self.undated = false;
        let then = utc.offset_micros(-(now.saturating_since(at).as_micros() as i64));
        let day = day_of(then.secs());
        if self.last_day.is_none_or(|d| day > d) {
            self.last_day = Some(day);
            return true;
        }
        false
    }

    /// Whether a report is due at `now`; if so, records it and says on which basis.
    pub fn poll(&mut self, clock: &Clock, now: Instant, cfg: &Config) -> Option<Basis> {
        match clock.wall_time(now) {
            Some(w) => {
                let day = day_of(w.unix_secs);
                let due = w.hour == cfg.report_hour_utc && self.last_day.is_none_or(|d| day > d);
                due.then(|| {
                    self.last_day = Some(day);
                    self.last_at = Some(now);
                    self.undated = false;
                    Basis::Wall
                })
            }
            None => {
                let since = self.last_at.unwrap_or(Instant::ZERO);
                let due = now.saturating_since(since) >= cfg.report_uptime_period
                    && duration_micros(cfg.report_uptime_period) > 0;
                due.then(|| {
                    self.last_at = Some(now);
                    self.undated = true;
                    Basis::Uptime
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ClockPolicy, Sample, Source};
    use crate::time::UnixTime;

    /// Any UTC day (Unix days); 2026-11-24.
    const DAY: i64 = 20_781;

    fn clock_at(unix_secs: i64, now: Instant) -> Clock {
        let mut c = Clock::new(ClockPolicy {
            drift_ppm_max: 10,
            backend_fresh_for: Duration::from_secs(900),
        });
        c.offer(
            Sample {
                source: Source::Ntp,
                server: 0,
                at: now,
                utc: UnixTime::from_secs(unix_secs),
                error_us: 1000,
            },
            now,
        );
        c
    }

    #[test]
    fn fires_at_three_once_per_day() {
        let cfg = Config::default();
        let boot_utc = DAY * 86_400 + 3600; // 01:00
        let c = clock_at(boot_utc, Instant::ZERO);
        let mut r = ReportScheduler::new(None);
        let due = r.next_due(&c, Instant::ZERO, &cfg);
        assert_eq!(due, Instant::from_secs(2 * 3600));
        assert_eq!(r.poll(&c, Instant::from_secs(2 * 3600 - 1), &cfg), None);
        assert_eq!(r.poll(&c, due, &cfg), Some(Basis::Wall));
        assert_eq!(r.poll(&c, due + Duration::from_secs(60), &cfg), None);
        assert_eq!(r.next_due(&c, due, &cfg), due + Duration::from_secs(86_400));
        assert_eq!(r.last_day(), Some(DAY));
    }

    #[test]
    fn reboot_at_ten_past_three_does_not_report_again() {
        let cfg = Config::default();
        let c = clock_at(DAY * 86_400 + 3 * 3600 + 600, Instant::ZERO);
        let mut r = ReportScheduler::new(Some(DAY));
        assert_eq!(r.poll(&c, Instant::ZERO, &cfg), None);
        let fresh = ReportScheduler::new(Some(DAY - 1));
        assert_eq!(
            fresh.next_due(&c, Instant::ZERO, &cfg),
            Instant::ZERO,
            "a day not yet reported: now"
        );
    }

    #[test]
    fn uptime_fallback_then_dated_when_the_clock_comes() {
        let cfg = Config::default();
        let invalid = Clock::new(ClockPolicy {
            drift_ppm_max: 10,
            backend_fresh_for: Duration::from_secs(900),
        });
        let mut r = ReportScheduler::new(None);
        assert_eq!(
            r.next_due(&invalid, Instant::ZERO, &cfg),
            Instant::from_secs(86_400)
        );
        assert_eq!(
            r.poll(&invalid, Instant::from_secs(86_400), &cfg),
            Some(Basis::Uptime)
        );
        // The clock becomes valid at 03:30 the same UTC day as that report (made at 02:50).
        let now = Instant::from_secs(86_400 + 2400);
        let c = clock_at(DAY * 86_400 + 3 * 3600 + 1800, now);
        assert!(r.clock_became_valid(&c, now));
        assert_eq!(r.poll(&c, now, &cfg), None, "already reported this UTC day");
        assert_eq!(r.last_day(), Some(DAY));
    }
}
