//! The checks of the door itself (design brief, "door position, exit button, lockdown"), kept
//! apart from the world that drives the door: the world tells this checker what physically
//! happened (the contact changed, the lock was opened for so long, the site gave a lockdown
//! order) and what the door said (its events); the checker says what was wrong.
//!
//! - **Door alarms** (`door_alarms`): an opening is authorised when it starts while an unlock
//!   the shell carried out (a grant's or the exit button's) is in force on the door's monotonic
//!   clock, or when the door is already open at boot (the first contact report). A
//!   `door_forced` alarm comes with every other opening of a door with a contact, in the same
//!   step, and never with an authorised one. A `door_held_open` alarm comes exactly when an
//!   authorised opening lasts longer than the held-open time (counted again from an unlock
//!   while the door stands open and no alarm sounds: someone passed). Every alarm is cleared
//!   when the door closes, and only then. A door without a contact says nothing of its door.
//! - **Lockdown kept** (`lockdown_honoured`): the door's lockdown state is what it last
//!   announced (`lockdown on:true` … `on:false`), across reboots; it announces only changes.
//!   The grant rule itself is checked with the decisions (see `door.rs`).
//! - **Lockdown learned in time** (`lockdown_learned_in_time`): a door that is on, paired and
//!   online, with the network and the backend up and no fault touching it from two minutes
//!   before an order until two seconds after, holds the order two seconds after the backend
//!   set it.

use chronolock_core::controller::AlarmKind;
use chronolock_core::Event;

/// Slack for the held-open deadline: the door's timer fires at the deadline, possibly in the
/// step after another input at the same instant.
const HELD_SLACK_US: i64 = 1_000;

/// How long before an order a door must have been undisturbed to be held to the two seconds
/// (a watch broken by a fault is sent again within its one-minute backoff).
pub(crate) const LEARN_QUIET_US: i64 = 2 * 60 * 1_000_000;

/// How soon an online door must hold a lockdown order.
pub(crate) const LEARN_WITHIN_US: i64 = 2 * 1_000_000;

/// An opening of the door as the checker judges it (this boot).
#[derive(Clone, Copy, Debug)]
struct Opening {
    authorised: bool,
    /// When (monotonic µs) it becomes held open, while no alarm sounds.
    held_at: Option<i64>,
    alarm: Option<AlarmKind>,
}

/// A contact change being reported to the door in this step, and what it must say.
#[derive(Clone, Copy, Debug)]
struct Change {
    open: bool,
    /// The alarm the door must raise now (a forced opening).
    raise: Option<AlarmKind>,
    /// The alarm the door must clear now (it closed).
    clear: Option<AlarmKind>,
    raised: bool,
    cleared: bool,
    reported: bool,
}

/// A lockdown order the backend set, until the door holds it.
#[derive(Clone, Copy, Debug)]
struct Learn {
    seq: u64,
    at: i64,
    learned_after: Option<i64>,
}

/// Figures of the checks, summed into the fleet report.
#[derive(Clone, Debug, Default)]
pub(crate) struct PositionTally {
    pub door_openings: u64,
    pub forced_openings: u64,
    pub held_openings: u64,
    pub forced_alarms: u64,
    pub held_open_alarms: u64,
    pub alarms_cleared: u64,
    pub lockdowns_learned: u64,
    pub lockdown_learn_checks: u64,
    pub lockdown_learn_worst_us: i64,
}

/// The checker of one door.
#[derive(Debug)]
pub(crate) struct PositionCheck {
    contact: bool,
    held_open_us: i64,
    /// The end (monotonic µs, this boot) of the unlocks carried out.
    unlock_until: Option<i64>,
    opening: Option<Opening>,
    change: Option<Change>,
    /// The lockdown state the door announced last.
    lockdown_on: bool,
    learn: Option<Learn>,
    pub tally: PositionTally,
    findings: Vec<(&'static str, String)>,
}

impl PositionCheck {
    pub(crate) fn new(contact: bool, held_open_s: u16) -> Self {
        PositionCheck {
            contact,
            held_open_us: i64::from(held_open_s) * 1_000_000,
            unlock_until: None,
            opening: None,
            change: None,
            lockdown_on: false,
            learn: None,
            tally: PositionTally::default(),
            findings: Vec::new(),
        }
    }

    /// What was found wrong since the last call.
    pub(crate) fn take_findings(&mut self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut self.findings)
    }

    fn find(&mut self, invariant: &'static str, detail: String) {
        self.findings.push((invariant, detail));
    }

    /// Whether the door, as it announced, is in lockdown.
    pub(crate) fn lockdown_on(&self) -> bool {
        self.lockdown_on
    }

    /// The door is off: what it knew of its door and unlocks is gone (the lock closes without
    /// power).
    pub(crate) fn power_down(&mut self) {
        self.unlock_until = None;
        self.opening = None;
        self.change = None;
    }

    /// The shell opened the lock for `ms` at monotonic `mono`.
    pub(crate) fn unlocked(&mut self, mono: i64, ms: u32) {
        let until = mono + i64::from(ms) * 1_000;
        self.unlock_until = Some(self.unlock_until.map_or(until, |u| u.max(until)));
        if let Some(o) = self.opening.as_mut().filter(|o| o.alarm.is_none()) {
            o.held_at = Some(mono + self.held_open_us);
        }
    }

    /// The contact's state is about to be reported to the door at monotonic `mono`: at boot
    /// (`first`), or because it changed.
    pub(crate) fn contact_begin(&mut self, open: bool, first: bool, mono: i64) {
        if !self.contact {
            self.change = Some(Change {
                open,
                raise: None,
                clear: None,
                raised: false,
                cleared: false,
                reported: !open && first,
            });
            return;
        }
        let mut change = Change {
            open,
            raise: None,
            clear: None,
            raised: false,
            cleared: false,
            // A closed door at boot says nothing.
            reported: !open && first,
        };
        if open {
            let authorised = first || self.unlock_until.is_some_and(|u| mono <= u);
            self.tally.door_openings += 1;
            if !authorised {
                self.tally.forced_openings += 1;
                change.raise = Some(AlarmKind::DoorForced);
            }
            self.opening = Some(Opening {
                authorised,
                held_at: authorised.then_some(mono + self.held_open_us),
                alarm: None,
            });
        } else {
            change.clear = self.opening.take().and_then(|o| o.alarm);
        }
        self.change = Some(change);
    }

    /// The report is handled: what the door had to say, it said (unless it died meanwhile).
    pub(crate) fn contact_end(&mut self, alive: bool) {
        let Some(c) = self.change.take() else { return };
        if !alive {
            return;
        }
        if !self.contact {
            return;
        }
        let what = if c.open { "opened" } else { "closed" };
        if !c.reported {
            self.find(
                "door_alarms",
                format!("the door {what} and said nothing of it"),
            );
        }
        if c.raise.is_some() && !c.raised {
            self.find(
                "door_alarms",
                "the door opened with no unlock in force and raised no door_forced alarm".into(),
            );
        }
        if let (Some(kind), false) = (c.clear, c.cleared) {
            self.find(
                "door_alarms",
                format!(
                    "the door closed and its {} alarm was not cleared",
                    kind.as_str()
                ),
            );
        }
    }

    /// An event the door emitted, at monotonic `mono`.
    pub(crate) fn event(&mut self, event: &Event, mono: i64) {
        match *event {
            Event::Door { open } => {
                let expected = self.change.as_ref().is_some_and(|c| c.open == open);
                match self.change.as_mut().filter(|_| self.contact && expected) {
                    Some(c) if !c.reported => c.reported = true,
                    _ => self.find(
                        "door_alarms",
                        format!("door open:{open} without such a change of the contact"),
                    ),
                }
            }
            Event::Alarm { kind } => self.alarm(kind, mono),
            Event::AlarmCleared { kind } => {
                self.tally.alarms_cleared += 1;
                let ok = self.contact
                    && self
                        .change
                        .as_ref()
                        .is_some_and(|c| !c.open && c.clear == Some(kind) && !c.cleared);
                match self.change.as_mut().filter(|_| ok) {
                    Some(c) => c.cleared = true,
                    None => self.find(
                        "door_alarms",
                        format!(
                            "{} alarm cleared, but the door did not close",
                            kind.as_str()
                        ),
                    ),
                }
            }
            Event::Lockdown { on } => {
                if on == self.lockdown_on {
                    self.find(
                        "lockdown_honoured",
                        format!(
                            "lockdown on:{on} announced again: the door had lost its lockdown state"
                        ),
                    );
                }
                self.lockdown_on = on;
            }
            _ => {}
        }
    }

    fn alarm(&mut self, kind: AlarmKind, mono: i64) {
        if !self.contact {
            return self.find(
                "door_alarms",
                format!("{} alarm from a door without a contact", kind.as_str()),
            );
        }
        match kind {
            AlarmKind::DoorForced => {
                self.tally.forced_alarms += 1;
                let due = self
                    .change
                    .as_ref()
                    .is_some_and(|c| c.raise == Some(kind) && !c.raised);
                if due {
                    if let Some(c) = self.change.as_mut() {
                        c.raised = true;
                    }
                    if let Some(o) = self.opening.as_mut() {
                        o.alarm = Some(kind);
                        o.held_at = None;
                    }
                } else {
                    let why = match self.opening {
                        Some(o) if o.authorised => "an authorised opening",
                        Some(_) => "an opening already in alarm",
                        None => "a closed door",
                    };
                    self.find("door_alarms", format!("door_forced alarm for {why}"));
                }
            }
            AlarmKind::DoorHeldOpen => {
                self.tally.held_open_alarms += 1;
                match self.opening.as_mut() {
                    Some(o)
                        if o.authorised
                            && o.alarm.is_none()
                            && o.held_at.is_some_and(|at| mono >= at) =>
                    {
                        o.alarm = Some(kind);
                        o.held_at = None;
                    }
                    o => {
                        let why = match o {
                            None => "a closed door".to_string(),
                            Some(o) if !o.authorised => "a forced opening".into(),
                            Some(o) if o.alarm.is_some() => "an opening already in alarm".into(),
                            Some(o) => format!(
                                "an opening {} ms before its held-open time",
                                o.held_at.map_or(0, |at| (at - mono) / 1_000)
                            ),
                        };
                        self.find("door_alarms", format!("door_held_open alarm for {why}"));
                    }
                }
            }
        }
    }

    /// After every step of a running door at monotonic `mono`: an authorised opening past its
    /// held-open time is in alarm.
    pub(crate) fn step(&mut self, mono: i64) {
        let late = self
            .opening
            .as_ref()
            .filter(|o| o.authorised && o.alarm.is_none())
            .and_then(|o| o.held_at)
            .filter(|&at| mono > at + HELD_SLACK_US);
        if let Some(at) = late {
            self.tally.held_openings += 1;
            if let Some(o) = self.opening.as_mut() {
                o.held_at = None;
            }
            self.find(
                "door_alarms",
                format!(
                    "held open {} ms past the held-open time with no door_held_open alarm",
                    (mono - at) / 1_000
                ),
            );
        }
    }

    /// A door that died in the middle of a step (a torn flash write) without announcing the
    /// lockdown order it had taken: the order it kept in flash says where it stands.
    pub(crate) fn lockdown_kept_in_flash(&mut self, on: bool) {
        self.lockdown_on = on;
    }

    /// The backend set lockdown order `seq` at true time `at`.
    pub(crate) fn order_given(&mut self, seq: u64, at: i64) {
        self.learn = Some(Learn {
            seq,
            at,
            learned_after: None,
        });
    }

    /// After every step: whether the door holds the order awaited (its sequence number).
    pub(crate) fn door_holds(&mut self, seq: u64, t: i64) {
        if let Some(l) = self
            .learn
            .as_mut()
            .filter(|l| l.learned_after.is_none() && seq >= l.seq)
        {
            l.learned_after = Some(t - l.at);
            self.tally.lockdowns_learned += 1;
        }
    }

    /// Two seconds after order `seq`: a door that was online and undisturbed holds it.
    pub(crate) fn learn_deadline(&mut self, seq: u64, undisturbed: bool) {
        let Some(l) = self.learn.filter(|l| l.seq == seq) else {
            return;
        };
        if !undisturbed {
            return;
        }
        self.tally.lockdown_learn_checks += 1;
        match l.learned_after {
            Some(after) if after <= LEARN_WITHIN_US => {
                self.tally.lockdown_learn_worst_us = self.tally.lockdown_learn_worst_us.max(after);
            }
            _ => self.find(
                "lockdown_learned_in_time",
                format!(
                    "an online door did not hold lockdown order {seq} {} ms after the backend set it",
                    LEARN_WITHIN_US / 1_000
                ),
            ),
        }
    }
}
