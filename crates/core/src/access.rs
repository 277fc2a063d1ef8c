//! Access decisions for one credential's policy at one instant, in UTC, on the device.
//!
//! With a valid clock: the date range (`valid_from`, `valid_until`, inclusive) applies to every
//! access type, then SCHEDULED entries need a matching weekly slot (if they have any). Before the
//! clock is valid, ADR-011's fail-safe table applies exactly: the original firmware passes
//! `now = 0`, so UNRESTRICTED and EMERGENCY are granted, CONDITIONAL depends on the network only,
//! SCHEDULED without slots is granted when it has no `valid_from` (and "not yet valid" when it
//! has one, as `0 < valid_from`), and SCHEDULED with slots is `DENIED_TIME_RESTRICTION`.

use crate::allowlist::{AccessType, Policy, Slot};
use crate::time::WallTime;

/// The outcome of an access attempt (the scenario contract's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Door opens.
    Granted,
    /// Door opens, and an emergency notification goes out at once.
    GrantedEmergency,
    /// No such credential.
    DeniedUnknown,
    /// Before `valid_from`.
    DeniedNotYetValid,
    /// After `valid_until`.
    DeniedExpired,
    /// Outside every slot, or slots cannot be checked because the clock is not valid.
    DeniedTimeRestriction,
    /// CONDITIONAL, and the backend could not be asked.
    DeniedOffline,
    /// The keypad code is wrong.
    DeniedBadCode,
    /// The keypad code could only have been a TOTP code, and the clock is not valid.
    DeniedClockUnsynced,
    /// Too many failures: the keypad is locked for a while.
    DeniedLockedOut,
    /// The code was already used.
    DeniedReplay,
    /// The site is in lockdown: only EMERGENCY entries are let in.
    DeniedLockdown,
    /// A secure card did not prove its key (a clone, a blank or foreign card, a card taken
    /// away mid-check), or its UID came from a reader that cannot check it.
    DeniedCardAuth,
}

impl Decision {
    /// Every decision, in wire-code order.
    pub const ALL: [Decision; 13] = [
        Decision::Granted,
        Decision::GrantedEmergency,
        Decision::DeniedUnknown,
        Decision::DeniedNotYetValid,
        Decision::DeniedExpired,
        Decision::DeniedTimeRestriction,
        Decision::DeniedOffline,
        Decision::DeniedBadCode,
        Decision::DeniedClockUnsynced,
        Decision::DeniedLockedOut,
        Decision::DeniedReplay,
        Decision::DeniedLockdown,
        Decision::DeniedCardAuth,
    ];

    /// The device protocol's code (one definition: [`from_code`](Self::from_code) is its
    /// inverse, and a new decision cannot compile without a code of its own).
    pub fn code(self) -> u8 {
        match self {
            Decision::Granted => 0,
            Decision::GrantedEmergency => 1,
            Decision::DeniedUnknown => 2,
            Decision::DeniedNotYetValid => 3,
            Decision::DeniedExpired => 4,
            Decision::DeniedTimeRestriction => 5,
            Decision::DeniedOffline => 6,
            Decision::DeniedBadCode => 7,
            Decision::DeniedClockUnsynced => 8,
            Decision::DeniedLockedOut => 9,
            Decision::DeniedReplay => 10,
            Decision::DeniedLockdown => 11,
            Decision::DeniedCardAuth => 12,
        }
    }

    /// The decision with this wire code.
    pub fn from_code(code: u8) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The contract's upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Granted => "GRANTED",
            Decision::GrantedEmergency => "GRANTED_EMERGENCY",
            Decision::DeniedUnknown => "DENIED_UNKNOWN",
            Decision::DeniedNotYetValid => "DENIED_NOT_YET_VALID",
            Decision::DeniedExpired => "DENIED_EXPIRED",
            Decision::DeniedTimeRestriction => "DENIED_TIME_RESTRICTION",
            Decision::DeniedOffline => "DENIED_OFFLINE",
            Decision::DeniedBadCode => "DENIED_BAD_CODE",
            Decision::DeniedClockUnsynced => "DENIED_CLOCK_UNSYNCED",
            Decision::DeniedLockedOut => "DENIED_LOCKED_OUT",
            Decision::DeniedReplay => "DENIED_REPLAY",
            Decision::DeniedLockdown => "DENIED_LOCKDOWN",
            Decision::DeniedCardAuth => "DENIED_CARD_AUTH",
        }
    }

    /// Whether the door opens.
    pub fn is_granted(self) -> bool {
        matches!(self, Decision::Granted | Decision::GrantedEmergency)
    }
}

/// What the policy says before any online check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Final.
    Decided(Decision),
    /// CONDITIONAL: ask the backend.
    AskBackend,
}

/// Evaluates a policy and its slots at `wall` (`None` while the clock is not valid).
pub fn evaluate(
    policy: &Policy,
    slots: impl Iterator<Item = Slot>,
    wall: Option<&WallTime>,
) -> Verdict {
    let Some(wall) = wall else {
        return Verdict::Decided(match policy.access {
            AccessType::Unrestricted => Decision::Granted,
            AccessType::Emergency => Decision::GrantedEmergency,
            AccessType::Conditional => return Verdict::AskBackend,
            AccessType::Scheduled if policy.slot_count > 0 => Decision::DeniedTimeRestriction,
            AccessType::Scheduled if policy.valid_from > 0 => Decision::DeniedNotYetValid,
            AccessType::Scheduled => Decision::Granted,
        });
    };
    let now = wall.unix_secs;
    if policy.valid_from != 0 && now < policy.valid_from {
        return Verdict::Decided(Decision::DeniedNotYetValid);
    }
    if policy.valid_until != 0 && now > policy.valid_until {
        return Verdict::Decided(Decision::DeniedExpired);
    }
    match policy.access {
        AccessType::Unrestricted => Verdict::Decided(Decision::Granted),
        AccessType::Emergency => Verdict::Decided(Decision::GrantedEmergency),
        AccessType::Conditional => Verdict::AskBackend,
        AccessType::Scheduled if policy.slot_count == 0 => Verdict::Decided(Decision::Granted),
        AccessType::Scheduled => {
            let mut open = false;
            for slot in slots {
                open |= slot_contains(&slot, wall);
            }
            Verdict::Decided(if open {
                Decision::Granted
            } else {
                Decision::DeniedTimeRestriction
            })
        }
    }
}

/// Whether `wall` falls in the slot: the slot applies (`from` ≤ now < `until`), and the minute of
/// the UTC day lies in [start, end) on one of its days; a slot whose end is before its start
/// runs past midnight into the next day.
pub fn slot_contains(slot: &Slot, wall: &WallTime) -> bool {
    let now = wall.unix_secs;
    if (slot.from != 0 && now < slot.from) || (slot.until != 0 && now >= slot.until) {
        return false;
    }
    let minute = u16::from(wall.hour) * 60 + u16::from(wall.minute);
    let today = 1u8 << wall.weekday.index();
    let yesterday = 1u8 << ((wall.weekday.index() + 6) % 7);
    if slot.start_min < slot.end_min {
        slot.days & today != 0 && (slot.start_min..slot.end_min).contains(&minute)
    } else {
        (slot.days & today != 0 && minute >= slot.start_min)
            || (slot.days & yesterday != 0 && minute < slot.end_min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{UnixTime, WallTime};

    // 2026-11-24 is a Tuesday.
    fn at(hh: i64, mm: i64) -> WallTime {
        WallTime::new(UnixTime::from_secs(1_795_478_400 + hh * 3600 + mm * 60), 0)
    }

    fn scheduled(slots: u16) -> Policy {
        Policy {
            access: AccessType::Scheduled,
            valid_from: 0,
            valid_until: 0,
            slot_start: 0,
            slot_count: slots,
        }
    }

    const TUE_9_18: Slot = Slot {
        days: 0b10,
        start_min: 540,
        end_min: 1080,
        from: 0,
        until: 0,
    };

    #[test]
    fn adr011_table_before_the_clock_is_valid() {
        let p = |access| Policy {
            access,
            ..scheduled(0)
        };
        let none = core::iter::empty();
        assert_eq!(
            evaluate(&p(AccessType::Unrestricted), none, None),
            Verdict::Decided(Decision::Granted)
        );
        assert_eq!(
            evaluate(&p(AccessType::Emergency), core::iter::empty(), None),
            Verdict::Decided(Decision::GrantedEmergency)
        );
        assert_eq!(
            evaluate(&p(AccessType::Conditional), core::iter::empty(), None),
            Verdict::AskBackend
        );
        assert_eq!(
            evaluate(&scheduled(0), core::iter::empty(), None),
            Verdict::Decided(Decision::Granted)
        );
        assert_eq!(
            evaluate(&scheduled(1), [TUE_9_18].into_iter(), None),
            Verdict::Decided(Decision::DeniedTimeRestriction)
        );
        let dated = Policy {
            valid_from: 1_767_225_600,
            ..scheduled(0)
        };
        assert_eq!(
            evaluate(&dated, core::iter::empty(), None),
            Verdict::Decided(Decision::DeniedNotYetValid)
        );
    }

    #[test]
    fn date_range_is_inclusive() {
        let p = Policy {
            valid_from: at(9, 0).unix_secs,
            valid_until: at(17, 0).unix_secs,
            ..scheduled(0)
        };
        let e = core::iter::empty;
        assert_eq!(
            evaluate(&p, e(), Some(&at(8, 59))),
            Verdict::Decided(Decision::DeniedNotYetValid)
        );
        assert_eq!(
            evaluate(&p, e(), Some(&at(9, 0))),
            Verdict::Decided(Decision::Granted)
        );
        assert_eq!(
            evaluate(&p, e(), Some(&at(17, 0))),
            Verdict::Decided(Decision::Granted)
        );
        assert_eq!(
            evaluate(&p, e(), Some(&at(17, 1))),
            Verdict::Decided(Decision::DeniedExpired)
        );
    }

    #[test]
    fn slots() {
        // (slot, hh, mm, open?)
        let night = Slot {
            days: 0b10,
            start_min: 22 * 60,
            end_min: 6 * 60,
            from: 0,
            until: 0,
        }; // Tue 22:00 → Wed 06:00
        let late = Slot {
            days: 0b10,
            start_min: 20 * 60,
            end_min: 1440,
            from: 0,
            until: 0,
        };
        let table = [
            (TUE_9_18, 8, 59, false),
            (TUE_9_18, 9, 0, true),
            (TUE_9_18, 17, 59, true),
            (TUE_9_18, 18, 0, false),
            (TUE_9_18, 33, 0, false), // Wednesday 09:00
            (night, 21, 59, false),
            (night, 22, 0, true),
            (night, 23, 59, true),
            (night, 24 + 5, 59, true), // Wednesday 05:59
            (night, 24 + 6, 0, false),
            (night, 5, 0, false), // Tuesday 05:00: Monday is not in the slot
            (late, 23, 59, true),
            (late, 24, 0, false),
        ];
        for (slot, hh, mm, open) in table {
            assert_eq!(
                slot_contains(&slot, &at(hh, mm)),
                open,
                "{slot:?} at {hh}:{mm}"
            );
        }
    }

    #[test]
    fn bounded_slots_apply_only_within_from_until() {
        let s = Slot {
            from: at(0, 0).unix_secs,
            until: at(12, 0).unix_secs,
            ..TUE_9_18
        };
        assert!(slot_contains(&s, &at(11, 59)));
        assert!(!slot_contains(&s, &at(12, 0)));
        let s = Slot {
            from: at(10, 0).unix_secs,
            ..TUE_9_18
        };
        assert!(!slot_contains(&s, &at(9, 30)));
    }
}
