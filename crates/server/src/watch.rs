//! `POST /device/v1/watch`: a door's long poll. The server answers "sync now" as soon as it holds
//! something newer for the door (a list generation above the one the door has, or a lockdown
//! order above the one it holds), and "nothing new" after [`WatchConfig::hold`] (25 s), so an
//! online door hears of a lockdown or a revoked card within a second or two instead of at its
//! next 5-minute sync. The protocol side (authentication, what counts as newer, the sealed
//! answer) is [`chronolock_backend::open_watch`]; this module holds the requests.
//!
//! A held watch is one task waiting on two [`tokio::sync::watch`] channels of [`Watches`]:
//!
//! - its door's, bumped by [`Watches::door_changed`] from the one place a door's generation
//!   rises ([`crate::model::refresh_door`]): a change wakes only that door's watches;
//! - the site-wide one, bumped by [`Watches::everything_changed`] when a lockdown order is given
//!   (every door of the site is due) and when the server stops.
//!
//! Changes made by another server process sharing a PostgreSQL database reach this one through
//! [`poll_database`]: one task per process reads the doors and sites into
//! [`crate::door_cache`] once a second and wakes the doors whose generation changed. No held
//! watch queries the database, while it waits or when it looks.
//!
//! Limits: at most [`WatchConfig::max_held`] watches per process (beyond it `503` with
//! `Retry-After`: the door backs off and its 5-minute sync still runs), at most
//! [`WatchConfig::per_door`] per door (`429`: a door has one in flight; more are replays or a
//! confused client). A watch whose client goes away is dropped with its connection, and its
//! slot is given back. A door that is due is answered at once, whatever the limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::device_api::{binary, DeviceError, SqlDevices};
use crate::AppState;

/// How watches are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// How long a watch is held before "nothing new". Default 25 s (doors give one up after
    /// 60 s).
    pub hold: Duration,
    /// Watches held at once by this process, at most. Default 10,000.
    pub max_held: usize,
    /// Watches held at once for one door, at most. Default 4.
    pub per_door: usize,
    /// How often [`poll_database`] looks for changes made by other server processes. Default
    /// 1 s.
    pub poll: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            hold: Duration::from_secs(25),
            max_held: 10_000,
            per_door: 4,
            poll: Duration::from_secs(1),
        }
    }
}

impl WatchConfig {
    /// The defaults, with `CHRONOLOCK_WATCH_MAX` (watches held at once) and
    /// `CHRONOLOCK_WATCH_HOLD_S` (seconds, 1 to 60) from the environment when set and valid.
    pub fn from_env() -> Self {
        let mut config = WatchConfig::default();
        let var = |name: &str| std::env::var(name).ok()?.trim().parse::<u64>().ok();
        if let Some(max) = var("CHRONOLOCK_WATCH_MAX") {
            config.max_held = usize::try_from(max).unwrap_or(usize::MAX);
        }
        if let Some(hold) = var("CHRONOLOCK_WATCH_HOLD_S").filter(|s| (1..=60).contains(s)) {
            config.hold = Duration::from_secs(hold);
        }
        config
    }
}

/// The watches this process holds, and what wakes them. Shared through [`AppState::watches`].
#[derive(Debug)]
pub struct Watches {
    config: WatchConfig,
    /// Bumped when every watch should look again (a lockdown order, shutdown).
    everything: watch::Sender<u64>,
    /// Per door with a watch held: its channel and how many watches it holds.
    doors: Mutex<HashMap<i64, DoorWatches>>,
    held: AtomicUsize,
    closing: AtomicBool,
}

#[derive(Debug)]
struct DoorWatches {
    changed: watch::Sender<u64>,
    held: usize,
}

/// Why a watch was not held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The process holds [`WatchConfig::max_held`] watches.
    Full,
    /// The door holds [`WatchConfig::per_door`] watches.
    DoorBusy,
}

impl Watches {
    /// No watches yet.
    pub fn new(config: WatchConfig) -> Self {
        Watches {
            config,
            everything: watch::Sender::new(0),
            doors: Mutex::default(),
            held: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// Watches held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The door's list generation rose: its watches look again.
    pub fn door_changed(&self, door_id: i64) {
        if let Ok(doors) = self.doors.lock() {
            if let Some(d) = doors.get(&door_id) {
                d.changed.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Something that may concern any door changed (a lockdown order): every watch looks again.
    pub fn everything_changed(&self) {
        self.everything.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The server stops: held watches answer "nothing new" now (the door watches again, through
    /// another server process if there is one), and new ones are not held.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.everything_changed();
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Takes a slot for a watch of `door_id`, subscribed to what wakes it.
    pub fn hold(self: &Arc<Self>, door_id: i64) -> Result<Held, Refused> {
        let door = {
            let Ok(mut doors) = self.doors.lock() else {
                return Err(Refused::Full);
            };
            if doors
                .get(&door_id)
                .is_some_and(|d| d.held >= self.config.per_door)
            {
                return Err(Refused::DoorBusy);
            }
            self.held
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < self.config.max_held).then_some(n + 1)
                })
                .map_err(|_| Refused::Full)?;
            let entry = doors.entry(door_id).or_insert_with(|| DoorWatches {
                changed: watch::Sender::new(0),
                held: 0,
            });
            entry.held += 1;
            entry.changed.subscribe()
        };
        Ok(Held {
            watches: self.clone(),
            door_id,
            door,
            everything: self.everything.subscribe(),
        })
    }
}

/// One held watch's slot; dropping it (the answer is sent, or the client went away and its
/// request was dropped) gives the slot back.
#[derive(Debug)]
pub struct Held {
    watches: Arc<Watches>,
    door_id: i64,
    door: watch::Receiver<u64>,
    everything: watch::Receiver<u64>,
}

impl Held {
    /// Waits until something may have changed for the door since the slot was taken (or since
    /// the last wake).
    async fn changed(&mut self) {
        // The senders live as long as the slot: an error cannot happen, but must not spin.
        tokio::select! {
            r = self.door.changed() => if r.is_err() { std::future::pending::<()>().await },
            r = self.everything.changed() => if r.is_err() { std::future::pending::<()>().await },
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut doors) = self.watches.doors.lock() {
            if let Some(d) = doors.get_mut(&self.door_id) {
                d.held -= 1;
                if d.held == 0 {
                    doors.remove(&self.door_id);
                }
            }
        }
        self.watches.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `POST /device/v1/watch`.
pub(crate) async fn watch(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, DeviceError> {
    let devices = SqlDevices(&state);
    // The database steps run boxed: a held watch is this future, waiting, and it should not
    // carry the space of a query's state machine while it waits (a thousand doors hold one
    // each).
    let watch = Box::pin(chronolock_backend::open_watch(&devices, &body)).await?;
    // Subscribed before the first look, so that a change made between the look and the wait
    // is not missed.
    let held = state.watches.hold(watch.door_id());
    if Box::pin(watch.due(&devices)).await? {
        return Ok(binary(watch.answer(true)));
    }
    let mut held = match held {
        Ok(held) => held,
        Err(refused) => {
            let (status, reason) = match refused {
                Refused::Full => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this server holds as many watches as it may; try again later\n",
                ),
                Refused::DoorBusy => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "this door has too many watches open\n",
                ),
            };
            return Ok((status, [(header::RETRY_AFTER, "5")], reason).into_response());
        }
    };
    let deadline = tokio::time::Instant::now() + state.watches.config().hold;
    while !state.watches.closing() {
        tokio::select! {
            () = held.changed() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
        if state.watches.closing() {
            break;
        }
        if Box::pin(watch.due(&devices)).await? {
            return Ok(binary(watch.answer(true)));
        }
    }
    Ok(binary(watch.answer(false)))
}

/// Every [`WatchConfig::poll`], reads the doors and sites again into
/// [`crate::door_cache`] (which brings in what other server processes changed), and wakes the
/// watches of doors whose generation moved, or every watch when a lockdown order did. Runs
/// until the server stops.
pub async fn poll_database(state: AppState) {
    loop {
        match state.door_cache.reload_all(&state.db).await {
            Ok(changes) => {
                for door in changes.doors {
                    state.watches.door_changed(door);
                }
                if changes.lockdown {
                    state.watches.everything_changed();
                }
            }
            Err(e) => tracing::warn!(error = %e, "watch: looking for changes"),
        }
        tokio::time::sleep(state.watches.config().poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watches(max_held: usize, per_door: usize) -> Arc<Watches> {
        Arc::new(Watches::new(WatchConfig {
            max_held,
            per_door,
            ..WatchConfig::default()
        }))
    }

    #[test]
    fn slots_are_bounded_globally_and_per_door_and_given_back() {
        let w = watches(3, 2);
        let a = w.hold(1).unwrap();
        let b = w.hold(1).unwrap();
        assert_eq!(w.hold(1).unwrap_err(), Refused::DoorBusy);
        assert_eq!(w.held(), 2, "a refused slot is not counted");
        let c = w.hold(2).unwrap();
        assert_eq!(w.hold(3).unwrap_err(), Refused::Full);
        drop(a);
        assert_eq!(w.held(), 2);
        let d = w.hold(3).unwrap();
        drop((b, c, d));
        assert_eq!(w.held(), 0);
        assert!(w.doors.lock().unwrap().is_empty(), "no door left behind");
    }

    #[tokio::test]
    async fn a_door_change_wakes_that_doors_watches_only() {
        let w = watches(10, 4);
        let mut one = w.hold(1).unwrap();
        let mut two = w.hold(2).unwrap();
        w.door_changed(1);
        let quick = Duration::from_millis(50);
        assert!(tokio::time::timeout(quick, one.changed()).await.is_ok());
        assert!(tokio::time::timeout(quick, two.changed()).await.is_err());
        // A change made before the wait began is not missed.
        w.door_changed(2);
        assert!(tokio::time::timeout(quick, two.changed()).await.is_ok());
        w.everything_changed();
        assert!(tokio::time::timeout(quick, one.changed()).await.is_ok());
        assert!(tokio::time::timeout(quick, two.changed()).await.is_ok());
    }
}
