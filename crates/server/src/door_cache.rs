//! What a device sync needs of its door, held in memory: the device key, the list generation,
//! the sync interval, the contact settings, the assigned firmware, and the site's NTP servers and
//! latest lockdown order. An unchanged sync (the request every door sends every few minutes)
//! then reads nothing from the database: only the replay counter is written
//! ([`crate::link_writer`]), and the list or a firmware piece is read when one is sent.
//!
//! Kept current two ways:
//!
//! - this process reloads a door's or a site's entry right after it changes it (a new list
//!   generation, a pairing, contact settings, a firmware assignment, NTP servers, a lockdown),
//!   before it wakes the door's watch;
//! - [`crate::watch::poll_database`] reloads everything once a second, which brings in changes
//!   other server processes made to a shared database (the same bound as their watches).
//!
//! A door unknown here is looked up in the database before it is refused, and a request that
//! fails authentication under the key held here is tried once more after a reload, so a door
//! paired through another process a moment ago is not refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chronolock_core::lockdown::ORDER_LEN;
use chronolock_core::protocol::DoorPosition;

use crate::Db;

/// A door as a sync needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedDoor {
    /// Its site.
    pub site_id: i64,
    /// The paired device's key (`None`: not paired).
    pub device_key: Option<[u8; 32]>,
    /// Its list generation.
    pub generation: u64,
    /// Seconds between syncs.
    pub sync_interval_s: u32,
    /// Contact fitted and held-open time.
    pub position: DoorPosition,
    /// The firmware image assigned to it: id, version, signed file's length.
    pub firmware: Option<(i64, u32, u32)>,
}

/// A site as its doors' syncs need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedSite {
    /// NTP servers, separated by spaces (`""`: none named).
    pub ntp_servers: String,
    /// The latest lockdown order, as signed.
    pub lockdown: Option<[u8; ORDER_LEN]>,
}

#[derive(Debug)]
struct Entry<T> {
    value: Arc<T>,
    /// When the read it came from started ([`DoorCache::ticket`]): an older read never
    /// replaces a newer one.
    loaded: u64,
    /// When a request that failed authentication last had it read again
    /// ([`DoorCache::may_recheck`]).
    rechecked: Option<std::time::Instant>,
}

/// The doors and sites, in memory. Shared through [`crate::AppState::door_cache`].
#[derive(Debug, Default)]
pub struct DoorCache {
    doors: RwLock<HashMap<i64, Entry<CachedDoor>>>,
    sites: RwLock<HashMap<i64, Entry<CachedSite>>>,
    tickets: AtomicU64,
}

/// What a full reload found changed: for the watches to look again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Doors whose list generation changed (or that are new or gone).
    pub doors: Vec<i64>,
    /// Some site's latest lockdown order changed.
    pub lockdown: bool,
}

type DoorRow = (
    i64,
    i64,
    Option<Vec<u8>>,
    i64,
    i32,
    i32,
    i32,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

const DOOR_SELECT: &str = "SELECT d.id, d.site_id, d.device_key, d.generation, \
     d.sync_interval_s, d.contact_fitted, d.held_open_s, f.id, f.version, f.size \
     FROM doors d LEFT JOIN firmware_images f ON f.id = d.firmware_id";

const SITE_SELECT: &str = "SELECT s.id, s.ntp_servers, (SELECT o.signed FROM lockdown_orders o \
     WHERE o.site_id = s.id ORDER BY o.seq DESC LIMIT 1) FROM sites s";

fn door_of(r: DoorRow) -> (i64, CachedDoor) {
    let (id, site_id, key, generation, interval, contact, held_open_s, fw_id, fw_version, fw_size) =
        r;
    let firmware = match (fw_id, fw_version, fw_size) {
        (Some(id), Some(version), Some(size)) => {
            Some((id, u32::try_from(version).ok(), u32::try_from(size).ok()))
        }
        _ => None,
    }
    .and_then(|(id, v, s)| Some((id, v?, s?)));
    (
        id,
        CachedDoor {
            site_id,
            device_key: key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()),
            // The model never stores a negative generation.
            generation: u64::try_from(generation).unwrap_or(0),
            sync_interval_s: u32::try_from(interval.max(1)).unwrap_or(1),
            // The server always knows the door's settings (defaults: no contact, 30 s).
            position: DoorPosition {
                contact: contact != 0,
                held_open_s: u16::try_from(held_open_s.clamp(1, 3600)).unwrap_or(30),
            },
            firmware,
        },
    )
}

type SiteRow = (i64, Option<String>, Option<Vec<u8>>);

fn site_of((id, ntp, lockdown): SiteRow) -> (i64, CachedSite) {
    (
        id,
        CachedSite {
            ntp_servers: ntp.unwrap_or_default(),
            // Stored as signed; a row of another length (none is written) is no order.
            lockdown: lockdown.and_then(|b| <[u8; ORDER_LEN]>::try_from(b.as_slice()).ok()),
        },
    )
}

/// Puts `value` in unless the map holds one from a later read.
fn put<T>(map: &RwLock<HashMap<i64, Entry<T>>>, id: i64, value: Option<T>, loaded: u64) {
    let Ok(mut map) = map.write() else { return };
    if map.get(&id).is_some_and(|e| e.loaded > loaded) {
        return;
    }
    let rechecked = map.get(&id).and_then(|e| e.rechecked);
    match value {
        Some(value) => {
            map.insert(
                id,
                Entry {
                    value: Arc::new(value),
                    loaded,
                    rechecked,
                },
            );
        }
        None => {
            map.remove(&id);
        }
    }
}

impl DoorCache {
    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst)
    }

    /// The door, if it is held.
    pub fn door(&self, door_id: i64) -> Option<Arc<CachedDoor>> {
        let doors = self.doors.read().ok()?;
        doors.get(&door_id).map(|e| Arc::clone(&e.value))
    }

    /// Whether a request that failed authentication under the held key may have the door read
    /// again: at most once a second per door, and only for a door held (so forged requests cost
    /// the database little, and this remembers only real doors).
    pub fn may_recheck(&self, door_id: i64) -> bool {
        let Ok(mut doors) = self.doors.write() else {
            return false;
        };
        let Some(entry) = doors.get_mut(&door_id) else {
            return false;
        };
        let now = std::time::Instant::now();
        if entry
            .rechecked
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            return false;
        }
        entry.rechecked = Some(now);
        true
    }

    /// The site, if it is held.
    pub fn site(&self, site_id: i64) -> Option<Arc<CachedSite>> {
        let sites = self.sites.read().ok()?;
        sites.get(&site_id).map(|e| Arc::clone(&e.value))
    }

    /// Reads one door again from the database (gone: forgotten), with its site.
    pub async fn reload_door(
        &self,
        db: &Db,
        door_id: i64,
    ) -> Result<Option<Arc<CachedDoor>>, sqlx::Error> {
        let loaded = self.ticket();
        let row: Option<DoorRow> = sqlx::query_as(&format!("{DOOR_SELECT} WHERE d.id = $1"))
            .bind(door_id)
            .fetch_optional(db.pool())
            .await?;
        let door = row.map(door_of).map(|(_, d)| d);
        if let Some(d) = &door {
            if self.site(d.site_id).is_none() {
                self.reload_site(db, d.site_id).await?;
            }
        }
        put(&self.doors, door_id, door, loaded);
        Ok(self.door(door_id))
    }

    /// Reads one site's NTP servers and latest lockdown order again.
    pub async fn reload_site(&self, db: &Db, site_id: i64) -> Result<(), sqlx::Error> {
        let loaded = self.ticket();
        let row: Option<SiteRow> = sqlx::query_as(&format!("{SITE_SELECT} WHERE s.id = $1"))
            .bind(site_id)
            .fetch_optional(db.pool())
            .await?;
        put(
            &self.sites,
            site_id,
            row.map(site_of).map(|(_, s)| s),
            loaded,
        );
        Ok(())
    }

    /// Reads every door and site again; returns what changed since the last look.
    pub async fn reload_all(&self, db: &Db) -> Result<Changes, sqlx::Error> {
        let loaded = self.ticket();
        let doors: Vec<DoorRow> = sqlx::query_as(DOOR_SELECT).fetch_all(db.pool()).await?;
        let sites: Vec<SiteRow> = sqlx::query_as(SITE_SELECT).fetch_all(db.pool()).await?;
        let mut changes = Changes::default();
        let doors: HashMap<i64, CachedDoor> = doors.into_iter().map(door_of).collect();
        if let Ok(mut held) = self.doors.write() {
            held.retain(|id, e| {
                let keep = doors.contains_key(id) || e.loaded > loaded;
                if !keep {
                    changes.doors.push(*id);
                }
                keep
            });
            for (id, door) in doors {
                match held.get(&id) {
                    Some(e) if e.loaded > loaded => continue,
                    Some(e) if e.value.generation == door.generation => {}
                    _ => changes.doors.push(id),
                }
                let rechecked = held.get(&id).and_then(|e| e.rechecked);
                held.insert(
                    id,
                    Entry {
                        value: Arc::new(door),
                        loaded,
                        rechecked,
                    },
                );
            }
        }
        let sites: HashMap<i64, CachedSite> = sites.into_iter().map(site_of).collect();
        if let Ok(mut held) = self.sites.write() {
            held.retain(|id, e| sites.contains_key(id) || e.loaded > loaded);
            for (id, site) in sites {
                match held.get(&id) {
                    Some(e) if e.loaded > loaded => continue,
                    Some(e) if e.value.lockdown == site.lockdown => {}
                    _ => changes.lockdown |= site.lockdown.is_some(),
                }
                held.insert(
                    id,
                    Entry {
                        value: Arc::new(site),
                        loaded,
                        rechecked: None,
                    },
                );
            }
        }
        Ok(changes)
    }
}
