//! The door itself: its position contact, the request-to-exit button, the forced and held-open
//! alarms, and the site's lockdown.
//!
//! Everything here runs on the monotonic clock: a door needs no wall time to tell a forced door
//! from an authorised opening. An opening is authorised when it starts while an unlock (a grant,
//! or the exit button) is in force; it may then last [`Config::held_open`](crate::Config) before
//! the held-open alarm. An opening at any other time is forced. Either alarm lasts until the
//! door closes. Without a contact ([`Config::door_contact`](crate::Config) false) door reports
//! change nothing.
//!
//! Egress is never refused: the exit button unlocks before the clock is valid, without a list,
//! and under lockdown.

use super::{Action, Controller, Event};
use crate::access::Decision;
use crate::lockdown::{LockdownError, LockdownOrder, ORDER_LEN};
use crate::time::{duration_micros, Instant};

/// Which alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    /// The door opened while locked and no unlock was in force.
    DoorForced,
    /// An authorised opening lasted longer than the held-open time.
    DoorHeldOpen,
}

impl AlarmKind {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::DoorForced => "door_forced",
            AlarmKind::DoorHeldOpen => "door_held_open",
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            AlarmKind::DoorForced => 1,
            AlarmKind::DoorHeldOpen => 2,
        }
    }

    /// The kind with this wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        [AlarmKind::DoorForced, AlarmKind::DoorHeldOpen]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// What the controller knows of the door.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Position {
    /// The contact has reported since boot.
    known: bool,
    open: bool,
    /// The end of the unlock in force, if any.
    unlocked_until: Option<Instant>,
    /// When an authorised opening becomes held open.
    held_deadline: Option<Instant>,
    alarm: Option<AlarmKind>,
    /// The order in force, and its signed bytes.
    lockdown: Option<LockdownOrder>,
}

impl Controller {
    /// The door-position contact reports the door open (`true`) or closed. The first report
    /// after boot tells the state the door is in (an open door then is not a forced one, but
    /// it may be held open); every later one a change.
    pub fn handle_door(&mut self, open: bool, now: Instant) {
        self.tick(now);
        if !self.cfg.door_contact {
            return;
        }
        let p = &mut self.position;
        // Until the first report the door counts as closed: a closed door at boot says nothing.
        let first = !p.known;
        p.known = true;
        if p.open == open {
            return;
        }
        p.open = open;
        self.push(Action::Event(Event::Door { open }));
        if open {
            let authorised = first || self.position.unlocked_until.is_some_and(|u| now <= u);
            if authorised {
                self.position.held_deadline = Some(now + self.cfg.held_open);
            } else {
                self.raise(AlarmKind::DoorForced);
            }
        } else {
            self.position.held_deadline = None;
            if let Some(kind) = self.position.alarm.take() {
                self.push(Action::Event(Event::AlarmCleared { kind }));
                self.push(Action::Alarm { sounding: false });
            }
        }
    }

    /// The request-to-exit button was pressed: the lock opens for the normal time, always.
    pub fn handle_rex(&mut self, now: Instant) {
        self.tick(now);
        self.push(Action::Event(Event::Rex));
        self.unlock(now);
    }

    /// Whether the door is open, as its contact last said (`None`: no contact, or no report
    /// yet).
    pub fn door_open(&self) -> Option<bool> {
        (self.cfg.door_contact && self.position.known).then_some(self.position.open)
    }

    /// The alarm sounding, if any.
    pub fn alarm(&self) -> Option<AlarmKind> {
        self.position.alarm
    }

    /// Sets whether a contact is fitted and the held-open time (the backend's settings for this
    /// door). Taking the contact away silences its alarm.
    pub fn set_door_position(&mut self, contact: bool, held_open: core::time::Duration) {
        self.cfg.held_open = held_open;
        if self.cfg.door_contact == contact {
            return;
        }
        self.cfg.door_contact = contact;
        if !contact {
            if let Some(kind) = self.position.alarm.take() {
                self.push(Action::Event(Event::AlarmCleared { kind }));
                self.push(Action::Alarm { sounding: false });
            }
            self.position = Position {
                lockdown: self.position.lockdown,
                ..Position::default()
            };
        }
    }

    /// Whether the site is in lockdown, as far as this door knows.
    pub fn lockdown(&self) -> bool {
        self.position.lockdown.is_some_and(|o| o.on)
    }

    /// The sequence number of the lockdown order held (0: none).
    pub fn lockdown_seq(&self) -> u64 {
        self.position.lockdown.map_or(0, |o| o.seq)
    }

    /// A signed lockdown order from the backend. Taken if the site signed it and it is newer
    /// than the one held: the door keeps it ([`Action::PersistLockdown`]) and says when its
    /// state changes. An order the door already holds is no error.
    pub fn handle_lockdown_order(
        &mut self,
        bytes: &[u8; ORDER_LEN],
        now: Instant,
    ) -> Result<(), LockdownError> {
        self.tick(now);
        let key = self.site_key().ok_or(LockdownError::BadSignature)?;
        let order = LockdownOrder::verify(bytes, &key)?;
        let held = self.lockdown_seq();
        if order.seq == held {
            return Ok(());
        }
        if order.seq < held {
            return Err(LockdownError::Stale {
                held,
                offered: order.seq,
            });
        }
        let was = self.lockdown();
        self.position.lockdown = Some(order);
        self.push(Action::PersistLockdown(*bytes));
        if was != order.on {
            self.push(Action::Event(Event::Lockdown { on: order.on }));
            // The backend hears at once that this door holds it.
            self.sync_soon(now);
        }
        Ok(())
    }

    /// Restores the order a previous boot kept (after the site key is set), silently.
    pub fn restore_lockdown(&mut self, bytes: &[u8; ORDER_LEN]) -> Result<(), LockdownError> {
        let key = self.site_key().ok_or(LockdownError::BadSignature)?;
        let order = LockdownOrder::verify(bytes, &key)?;
        if order.seq > self.lockdown_seq() {
            self.position.lockdown = Some(order);
        }
        Ok(())
    }

    /// A new site: the old site's lockdown does not hold here.
    pub(super) fn forget_lockdown(&mut self) {
        self.position.lockdown = None;
    }

    /// What lockdown makes of a decision on a known credential.
    pub(super) fn under_lockdown(&self, emergency: bool) -> Option<Decision> {
        (self.lockdown() && !emergency).then_some(Decision::DeniedLockdown)
    }

    /// Opens the lock for the normal time; an opening meanwhile is authorised.
    pub(super) fn unlock(&mut self, now: Instant) {
        let ms = (duration_micros(self.cfg.unlock) / 1000).min(u64::from(u32::MAX)) as u32;
        self.push(Action::Unlock { ms });
        let until = now + self.cfg.unlock;
        self.position.unlocked_until = Some(
            self.position
                .unlocked_until
                .filter(|u| *u > until)
                .unwrap_or(until),
        );
        // Someone passes a door that is already open (and not in alarm): the time it may stay
        // open starts again.
        if self.position.open && self.position.alarm.is_none() {
            self.position.held_deadline = Some(now + self.cfg.held_open);
        }
    }

    fn raise(&mut self, kind: AlarmKind) {
        self.position.alarm = Some(kind);
        self.position.held_deadline = None;
        self.push(Action::Event(Event::Alarm { kind }));
        self.push(Action::Alarm { sounding: true });
        self.sync_soon(self.last_now);
    }

    /// Door timers: the held-open deadline.
    pub(super) fn position_timeouts(&mut self, now: Instant) {
        if self.position.unlocked_until.is_some_and(|u| u < now) {
            self.position.unlocked_until = None;
        }
        if self.position.held_deadline.is_some_and(|d| d <= now)
            && self.position.open
            && self.position.alarm.is_none()
        {
            self.raise(AlarmKind::DoorHeldOpen);
        }
    }

    /// The earliest door-position timer.
    pub(super) fn position_timeout(&self) -> Option<Instant> {
        self.position.held_deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::persist::Persisted;
    use core::time::Duration;
    use ed25519_dalek::SigningKey;

    fn site() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn door(contact: bool) -> Controller {
        let cfg = Config {
            door_contact: contact,
            held_open: Duration::from_secs(10),
            site_key: Some(site().verifying_key().to_bytes()),
            ..Config::default()
        };
        let mut c = Controller::new(cfg, Persisted::default(), [0; 32], Instant::ZERO);
        while c.poll_action().is_some() {}
        c
    }

    fn events(c: &mut Controller) -> std::vec::Vec<Event> {
        core::iter::from_fn(|| c.poll_action())
            .filter_map(|a| match a {
                Action::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn at(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn an_opening_inside_an_unlock_is_authorised_and_one_outside_is_forced() {
        let mut c = door(true);
        c.handle_rex(at(1));
        assert_eq!(events(&mut c), [Event::Rex]);
        c.handle_door(true, at(3));
        assert_eq!(events(&mut c), [Event::Door { open: true }]);
        c.handle_door(false, at(5));
        assert_eq!(events(&mut c), [Event::Door { open: false }]);
        // The unlock (3 s) ended at 4 s.
        c.handle_door(true, at(6));
        let forced = AlarmKind::DoorForced;
        assert_eq!(
            events(&mut c),
            [Event::Door { open: true }, Event::Alarm { kind: forced }]
        );
        assert_eq!(c.alarm(), Some(forced));
        c.handle_door(false, at(7));
        assert_eq!(
            events(&mut c),
            [
                Event::Door { open: false },
                Event::AlarmCleared { kind: forced }
            ]
        );
    }

    #[test]
    fn an_authorised_opening_held_too_long_raises_the_held_open_alarm() {
        let mut c = door(true);
        c.handle_rex(at(0));
        c.handle_door(true, at(1));
        let _ = events(&mut c);
        assert_eq!(c.poll_timeout().map(|t| t <= at(11)), Some(true));
        c.handle_timeout(at(10));
        assert_eq!(events(&mut c), []);
        c.handle_timeout(at(11));
        let held = AlarmKind::DoorHeldOpen;
        assert_eq!(events(&mut c), [Event::Alarm { kind: held }]);
        c.handle_door(false, at(20));
        assert_eq!(
            events(&mut c),
            [
                Event::Door { open: false },
                Event::AlarmCleared { kind: held }
            ]
        );
    }

    #[test]
    fn without_a_contact_door_reports_change_nothing() {
        let mut c = door(false);
        c.handle_door(true, at(1));
        c.handle_timeout(at(100));
        assert_eq!(events(&mut c), []);
        assert_eq!(c.door_open(), None);
    }

    #[test]
    fn lockdown_orders_must_be_signed_and_newer() {
        let mut c = door(false);
        let order = |seq, on| {
            LockdownOrder {
                seq,
                on,
                issued_unix: 1_795_510_740,
            }
            .sign(&site())
        };
        let forged = LockdownOrder {
            seq: 9,
            on: false,
            issued_unix: 0,
        }
        .sign(&SigningKey::from_bytes(&[2; 32]));
        assert_eq!(
            c.handle_lockdown_order(&forged, at(1)),
            Err(LockdownError::BadSignature)
        );
        assert_eq!(c.handle_lockdown_order(&order(2, true), at(1)), Ok(()));
        let actions: std::vec::Vec<Action> = core::iter::from_fn(|| c.poll_action()).collect();
        assert!(actions.contains(&Action::PersistLockdown(order(2, true))));
        assert!(actions.contains(&Action::Event(Event::Lockdown { on: true })));
        assert!(c.lockdown());
        // Replaying an older "lockdown over" does not lift it.
        assert_eq!(
            c.handle_lockdown_order(&order(1, false), at(2)),
            Err(LockdownError::Stale {
                held: 2,
                offered: 1
            })
        );
        assert!(c.lockdown());
        // The same order again is no change and no error.
        assert_eq!(c.handle_lockdown_order(&order(2, true), at(3)), Ok(()));
        assert_eq!(events(&mut c), []);
        // The exit button still opens.
        c.handle_rex(at(4));
        assert!(core::iter::from_fn(|| c.poll_action()).any(|a| matches!(a, Action::Unlock { .. })));
        assert_eq!(c.handle_lockdown_order(&order(3, false), at(5)), Ok(()));
        assert_eq!(events(&mut c), [Event::Lockdown { on: false }]);
        // A new site's key: the old site's lockdown no longer holds.
        assert_eq!(c.handle_lockdown_order(&order(4, true), at(6)), Ok(()));
        c.set_site_key([7; 32]);
        assert!(!c.lockdown());
    }
}
