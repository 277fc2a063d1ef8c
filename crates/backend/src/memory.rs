//! Doors kept in memory: what the server keeps in its database, for shells that run the device
//! protocol without one (the scenario runner, the door's tests).

use std::cell::RefCell;
use std::collections::BTreeMap;

use chronolock_core::controller::Credential;
use chronolock_core::lockdown::{LockdownOrder, ORDER_LEN};
use chronolock_core::protocol::{pairing_code_hash, DeviceStatus, DoorPosition, WireEvent};
use ed25519_dalek::SigningKey;

use crate::{DeviceError, Devices, DoorList, Pairing};

/// One site's doors in memory: pending pairing codes, device keys, stored events (once per
/// door and event id), each door's last status and list, and the CONDITIONAL credentials the
/// backend lets in.
#[derive(Debug, Default)]
pub struct MemoryDevices {
    inner: RefCell<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pairings: Vec<Pairing>,
    keys: BTreeMap<i64, [u8; 32]>,
    counters: BTreeMap<i64, u64>,
    events: BTreeMap<(i64, u64), WireEvent>,
    resent: usize,
    statuses: BTreeMap<i64, DeviceStatus>,
    lists: BTreeMap<i64, (u64, Vec<u8>)>,
    sync_interval_s: u32,
    grants: Vec<String>,
    ntp_servers: String,
    firmware: BTreeMap<i64, Vec<u8>>,
    lockdown: Option<[u8; ORDER_LEN]>,
    positions: BTreeMap<i64, DoorPosition>,
}

impl MemoryDevices {
    /// No doors yet; doors are told to sync every `sync_interval_s` seconds.
    pub fn new(sync_interval_s: u32) -> Self {
        let devices = MemoryDevices::default();
        devices.inner.borrow_mut().sync_interval_s = sync_interval_s;
        devices
    }

    /// Door `door_id` may pair with `code` (once).
    pub fn add_pairing(&self, door_id: i64, code: &str) {
        let mut inner = self.inner.borrow_mut();
        let sync_interval_s = inner.sync_interval_s;
        inner.pairings.push(Pairing {
            door_id,
            code_hash: pairing_code_hash(code),
            sync_interval_s,
        });
    }

    /// Door `door_id` was paired beforehand with this device key.
    pub fn paired(&self, door_id: i64, device_key: [u8; 32]) {
        let mut inner = self.inner.borrow_mut();
        inner.keys.insert(door_id, device_key);
        inner.counters.remove(&door_id);
    }

    /// Door `door_id`'s list is now this one.
    pub fn publish(&self, door_id: i64, generation: u64, list: Vec<u8>) {
        self.inner
            .borrow_mut()
            .lists
            .insert(door_id, (generation, list));
    }

    /// Door `door_id`'s current list, if any.
    pub fn list(&self, door_id: i64) -> Option<(u64, Vec<u8>)> {
        self.inner.borrow().lists.get(&door_id).cloned()
    }

    /// Door `door_id` is to run this signed firmware image (`None`: no update).
    pub fn assign_firmware(&self, door_id: i64, image: Option<Vec<u8>>) {
        let mut inner = self.inner.borrow_mut();
        match image {
            Some(image) => inner.firmware.insert(door_id, image),
            None => inner.firmware.remove(&door_id),
        };
    }

    /// Puts the site into lockdown (`on`) or out of it: the next order, signed by `site`.
    pub fn set_lockdown(&self, on: bool, issued_unix: i64, site: &SigningKey) {
        let mut inner = self.inner.borrow_mut();
        let seq = inner.lockdown.as_ref().map_or(0, LockdownOrder::peek_seq) + 1;
        inner.lockdown = Some(
            LockdownOrder {
                seq,
                on,
                issued_unix,
            }
            .sign(site),
        );
    }

    /// Whether the site is in lockdown.
    pub fn lockdown(&self) -> bool {
        let inner = self.inner.borrow();
        inner.lockdown.is_some_and(|o| o[8] == 1)
    }

    /// The door's contact and held-open time, as the site sets them.
    pub fn set_position(&self, door_id: i64, position: DoorPosition) {
        self.inner.borrow_mut().positions.insert(door_id, position);
    }

    /// The NTP servers the site names (separated by spaces; `""`: none).
    pub fn set_ntp_servers(&self, servers: &str) {
        self.inner.borrow_mut().ntp_servers = servers.to_owned();
    }

    /// The CONDITIONAL credentials let in (as [`Credential`]'s text, e.g. `card:04A1B2C3`;
    /// compared without regard to case).
    pub fn set_grants(&self, grants: Vec<String>) {
        self.inner.borrow_mut().grants = grants;
    }

    /// Door `door_id`'s stored events, by id.
    pub fn events(&self, door_id: i64) -> Vec<WireEvent> {
        let inner = self.inner.borrow();
        inner
            .events
            .range((door_id, 0)..=(door_id, u64::MAX))
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Events sent again and recognised by their id.
    pub fn resent(&self) -> usize {
        self.inner.borrow().resent
    }

    /// What door `door_id` said of itself at its last sync.
    pub fn status(&self, door_id: i64) -> Option<DeviceStatus> {
        self.inner.borrow().statuses.get(&door_id).copied()
    }
}

impl Devices for MemoryDevices {
    type List = Vec<u8>;

    async fn pending_pairings(&self, _now_unix: i64) -> Result<Vec<Pairing>, DeviceError> {
        Ok(self.inner.borrow().pairings.clone())
    }

    async fn claim_pairing(
        &self,
        pairing: &Pairing,
        device_key: [u8; 32],
        _now_unix: i64,
    ) -> Result<bool, DeviceError> {
        let mut inner = self.inner.borrow_mut();
        let before = inner.pairings.len();
        inner.pairings.retain(|p| p != pairing);
        if inner.pairings.len() == before {
            return Ok(false);
        }
        inner.keys.insert(pairing.door_id, device_key);
        inner.counters.remove(&pairing.door_id);
        Ok(true)
    }

    async fn device_key(&self, door_id: i64) -> Result<Option<[u8; 32]>, DeviceError> {
        Ok(self.inner.borrow().keys.get(&door_id).copied())
    }

    async fn advance_counter(&self, door_id: i64, counter: u64) -> Result<bool, DeviceError> {
        let mut inner = self.inner.borrow_mut();
        let last = inner.counters.entry(door_id).or_default();
        let newer = counter > *last;
        if newer {
            *last = counter;
        }
        Ok(newer)
    }

    async fn store_events(
        &self,
        door_id: i64,
        events: &[WireEvent],
        _received_us: i64,
    ) -> Result<(), DeviceError> {
        let mut inner = self.inner.borrow_mut();
        for e in events {
            if inner.events.insert((door_id, e.id), e.clone()).is_some() {
                inner.resent += 1;
            }
        }
        Ok(())
    }

    fn record_status(&self, door_id: i64, status: &DeviceStatus, _received_us: i64) {
        self.inner.borrow_mut().statuses.insert(door_id, *status);
    }

    async fn door_list(
        &self,
        door_id: i64,
        device_generation: u64,
    ) -> Result<DoorList<Vec<u8>>, DeviceError> {
        let inner = self.inner.borrow();
        let current = inner.lists.get(&door_id);
        Ok(DoorList {
            // A door with no list on the server keeps what it has.
            generation: current.map_or(device_generation, |l| l.0),
            sync_interval_s: inner.sync_interval_s,
            list: current
                .filter(|(g, _)| *g > device_generation)
                .map(|(_, b)| b.clone()),
            ntp_servers: inner.ntp_servers.clone(),
            lockdown: inner.lockdown,
            position: inner.positions.get(&door_id).copied(),
        })
    }

    async fn door_firmware(&self, door_id: i64) -> Result<Option<Vec<u8>>, DeviceError> {
        Ok(self.inner.borrow().firmware.get(&door_id).cloned())
    }

    async fn conditional_granted(
        &self,
        _door_id: i64,
        credential: &Credential,
        _now_unix: i64,
    ) -> Result<bool, DeviceError> {
        let credential = credential.to_string();
        Ok(self
            .inner
            .borrow()
            .grants
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&credential)))
    }
}
