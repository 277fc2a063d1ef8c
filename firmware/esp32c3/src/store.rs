//! Everything the door keeps in flash, and where (`partitions.csv` names the same offsets).
//!
//! - `allowlists`: the two allow-list slots of [`chronolock_device::slots`]; a new list is
//!   streamed into the spare slot and switched to only after the core has checked it.
//! - `storage`: a `sequential-storage` map (wear-levelled, power-cut safe) holding the settings
//!   from setup mode, the device identity from pairing, the core's [`Persisted`] record, each
//!   keypad user's code usage and the boot counter.
//! - `outbox`: a `sequential-storage` queue of events not yet acknowledged by the backend, so a
//!   power cut loses none of them; a sync sends the oldest and pops what the server stored.
//!
//! The flash is one peripheral, so one [`Store`] owns it behind a mutex ([`SharedStore`]) and
//! builds the map, queue and slot views on demand (they keep no state worth caching).

use chronolock_core::keypad::KeypadUse;
use chronolock_core::protocol::Enrolled;
use chronolock_core::Persisted;
use chronolock_device::slots::{Download, SlotError, SlotInfo, Slots};
use embassy_embedded_hal::adapter::BlockingAsync;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::mutex::Mutex;
use esp_storage::FlashStorage;
use heapless::String;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

/// `allowlists` partition: two slots.
pub const LIST_BASE: u32 = 0x20_0000;
/// Each slot's size (header page plus the list).
pub const LIST_SLOT_SIZE: u32 = 0x4_0000;
/// `storage` partition: the settings map.
const MAP_RANGE: core::ops::Range<u32> = 0x28_0000..0x29_0000;
/// `outbox` partition: the event queue.
const QUEUE_RANGE: core::ops::Range<u32> = 0x29_0000..0x2B_0000;

/// Largest value stored in the map (settings: four length-prefixed strings), plus the key and
/// word alignment.
const MAP_BUF: usize = 320;
/// Largest queued event (a [`chronolock_core::protocol::WireEvent`] is at most 68 bytes).
pub const EVENT_MAX: usize = 96;

/// The store shared by the tasks that touch flash.
pub type SharedStore = Mutex<CriticalSectionRawMutex, Store>;

/// The flash as `sequential-storage` wants it (async; the operations block the CPU briefly).
type Nor<'a> = BlockingAsync<&'a mut FlashStorage<'static>>;

/// Map keys: a kind byte, then (keypad use only) the user's sort key.
type Key = [u8; 10];
const KEY_SETTINGS: Key = key(1);
const KEY_IDENTITY: Key = key(2);
const KEY_PERSISTED: Key = key(3);
const KEY_BOOTS: Key = key(4);
const KIND_KEYPAD: u8 = 5;

const fn key(kind: u8) -> Key {
    let mut k = [0u8; 10];
    k[0] = kind;
    k
}

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The flash driver or the map/queue failed.
    Flash,
    /// The map or queue is full (the queue drops nothing by itself).
    Full,
    /// Stored bytes do not decode (an older layout, or corruption).
    Corrupt,
    /// The allow-list slots refused.
    Slots(SlotError),
    /// The partition table is not `partitions.csv`'s: nothing is written, so that a door
    /// flashed with another table never overwrites its own firmware.
    Layout,
}

impl<E> From<sequential_storage::Error<E>> for StoreError {
    fn from(e: sequential_storage::Error<E>) -> Self {
        match e {
            sequential_storage::Error::FullStorage => StoreError::Full,
            sequential_storage::Error::Corrupted { .. } => StoreError::Corrupt,
            _ => StoreError::Flash,
        }
    }
}

impl From<SlotError> for StoreError {
    fn from(e: SlotError) -> Self {
        StoreError::Slots(e)
    }
}

/// What the installer entered on the setup page (without the phone's time, which is used once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Wi-Fi network.
    pub ssid: String<32>,
    /// Wi-Fi password (empty: open network).
    pub password: String<64>,
    /// The backend, `http://host[:port]`.
    pub server_url: String<128>,
    /// The one-time pairing code, kept until pairing succeeds.
    pub pairing_code: String<16>,
}

impl Settings {
    fn encode(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for field in [
            self.ssid.as_str(),
            self.password.as_str(),
            self.server_url.as_str(),
            self.pairing_code.as_str(),
        ] {
            let n = field.len().min(255);
            if at + 1 + n > out.len() {
                break;
            }
            out[at] = n as u8;
            out[at + 1..at + 1 + n].copy_from_slice(&field.as_bytes()[..n]);
            at += 1 + n;
        }
        at
    }

    fn decode(bytes: &[u8]) -> Option<Settings> {
        let mut fields: [&str; 4] = [""; 4];
        let mut at = 0;
        for field in &mut fields {
            let n = usize::from(*bytes.get(at)?);
            *field = core::str::from_utf8(bytes.get(at + 1..at + 1 + n)?).ok()?;
            at += 1 + n;
        }
        Some(Settings {
            ssid: String::try_from(fields[0]).ok()?,
            password: String::try_from(fields[1]).ok()?,
            server_url: String::try_from(fields[2]).ok()?,
            pairing_code: String::try_from(fields[3]).ok()?,
        })
    }
}

const IDENTITY_LEN: usize = 8 + 32 + 32 + 4;

fn encode_identity(e: &Enrolled) -> [u8; IDENTITY_LEN] {
    let mut out = [0u8; IDENTITY_LEN];
    out[..8].copy_from_slice(&e.door_id.to_le_bytes());
    out[8..40].copy_from_slice(&e.device_key);
    out[40..72].copy_from_slice(&e.site_key);
    out[72..76].copy_from_slice(&e.sync_interval_s.to_le_bytes());
    out
}

fn decode_identity(b: &[u8]) -> Option<Enrolled> {
    if b.len() != IDENTITY_LEN {
        return None;
    }
    let mut device_key = [0u8; 32];
    let mut site_key = [0u8; 32];
    device_key.copy_from_slice(&b[8..40]);
    site_key.copy_from_slice(&b[40..72]);
    Some(Enrolled {
        door_id: u64::from_le_bytes(b[..8].try_into().ok()?),
        device_key,
        site_key,
        sync_interval_s: u32::from_le_bytes(b[72..76].try_into().ok()?),
    })
}

const KEYPAD_USE_LEN: usize = 9 + 1 + 8 + 8;

fn encode_keypad_use(u: &KeypadUse) -> [u8; KEYPAD_USE_LEN] {
    let mut out = [0u8; KEYPAD_USE_LEN];
    out[..9].copy_from_slice(&u.user);
    out[9] = u8::from(u.last_totp_step.is_some());
    out[10..18].copy_from_slice(&u.last_totp_step.unwrap_or(0).to_le_bytes());
    out[18..26].copy_from_slice(&u.hotp_next.to_le_bytes());
    out
}

fn decode_keypad_use(b: &[u8]) -> Option<KeypadUse> {
    if b.len() != KEYPAD_USE_LEN {
        return None;
    }
    let mut user = [0u8; 9];
    user.copy_from_slice(&b[..9]);
    let step = u64::from_le_bytes(b[10..18].try_into().ok()?);
    Some(KeypadUse {
        user,
        last_totp_step: (b[9] == 1).then_some(step),
        hotp_next: u64::from_le_bytes(b[18..26].try_into().ok()?),
    })
}

/// The flash and what lives in it.
pub struct Store {
    flash: FlashStorage<'static>,
    /// The partition table names the regions this module uses.
    usable: bool,
}

/// The partitions this module writes, as `partitions.csv` lays them out.
const EXPECTED: [(&str, u32, u32); 3] = [
    ("allowlists", LIST_BASE, 2 * LIST_SLOT_SIZE),
    ("storage", MAP_RANGE.start, MAP_RANGE.end - MAP_RANGE.start),
    (
        "outbox",
        QUEUE_RANGE.start,
        QUEUE_RANGE.end - QUEUE_RANGE.start,
    ),
];

/// Map buffer: word-aligned, as the flash driver prefers.
#[repr(align(4))]
struct Aligned<const N: usize>([u8; N]);

impl Store {
    /// Takes the flash and checks that the partition table matches the layout above.
    pub fn new(mut flash: FlashStorage<'static>) -> Self {
        let mut buf = [0u8; esp_bootloader_esp_idf::partitions::PARTITION_TABLE_MAX_LEN];
        let usable =
            match esp_bootloader_esp_idf::partitions::read_partition_table(&mut flash, &mut buf) {
                Ok(table) => EXPECTED.iter().all(|&(label, offset, len)| {
                    table.iter().any(|p| {
                        p.label_as_str() == label && p.offset() == offset && p.len() == len
                    })
                }),
                Err(_) => false,
            };
        if !usable {
            log::error!("partition table is not partitions.csv: flash storage disabled");
        }
        Store { flash, usable }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.usable {
            Ok(())
        } else {
            Err(StoreError::Layout)
        }
    }

    fn map(&mut self) -> MapStorage<Key, Nor<'_>, Cache<Uncached, Uncached, Uncached, Key>> {
        MapStorage::new(
            BlockingAsync::new(&mut self.flash),
            const { MapConfig::new(MAP_RANGE) },
            Cache::new_uncached(),
        )
    }

    fn queue(&mut self) -> QueueStorage<Nor<'_>, Cache<Uncached, Uncached, Uncached, ()>> {
        QueueStorage::new(
            BlockingAsync::new(&mut self.flash),
            const { QueueConfig::new(QUEUE_RANGE) },
            Cache::new_uncached(),
        )
    }

    async fn fetch(&mut self, key: &Key, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.check()?;
        let mut buf = Aligned([0u8; MAP_BUF]);
        let found: Option<&[u8]> = self.map().fetch_item(&mut buf.0, key).await?;
        Ok(found.map(|v| {
            let n = v.len().min(out.len());
            out[..n].copy_from_slice(&v[..n]);
            n
        }))
    }

    async fn put(&mut self, key: &Key, value: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        let mut buf = Aligned([0u8; MAP_BUF]);
        self.map()
            .store_item::<&[u8]>(&mut buf.0, key, &value)
            .await?;
        Ok(())
    }

    /// The settings from setup mode, if any.
    pub async fn settings(&mut self) -> Result<Option<Settings>, StoreError> {
        let mut v = [0u8; MAP_BUF];
        match self.fetch(&KEY_SETTINGS, &mut v).await? {
            Some(n) => Settings::decode(&v[..n])
                .map(Some)
                .ok_or(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    /// Replaces the settings.
    pub async fn set_settings(&mut self, s: &Settings) -> Result<(), StoreError> {
        let mut v = [0u8; MAP_BUF - 16];
        let n = s.encode(&mut v);
        self.put(&KEY_SETTINGS, &v[..n]).await
    }

    /// The identity from pairing, if paired.
    pub async fn identity(&mut self) -> Result<Option<Enrolled>, StoreError> {
        let mut v = [0u8; IDENTITY_LEN];
        match self.fetch(&KEY_IDENTITY, &mut v).await? {
            Some(n) => decode_identity(&v[..n])
                .map(Some)
                .ok_or(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    /// Keeps the identity from pairing.
    pub async fn set_identity(&mut self, e: &Enrolled) -> Result<(), StoreError> {
        self.put(&KEY_IDENTITY, &encode_identity(e)).await
    }

    /// The core's record from the previous boot; a record that does not decode is the default
    /// (the core then behaves as on first boot, which is safe: no list generation is lowered
    /// because the list's own generation is checked again when it is opened).
    pub async fn persisted(&mut self) -> Result<Persisted, StoreError> {
        let mut v = [0u8; Persisted::LEN];
        Ok(match self.fetch(&KEY_PERSISTED, &mut v).await? {
            Some(n) => Persisted::decode(&v[..n]).unwrap_or_default(),
            None => Persisted::default(),
        })
    }

    /// Stores the core's record.
    pub async fn set_persisted(&mut self, p: &Persisted) -> Result<(), StoreError> {
        self.put(&KEY_PERSISTED, &p.encode()).await
    }

    /// Stores one keypad user's code usage.
    pub async fn set_keypad_use(&mut self, u: &KeypadUse) -> Result<(), StoreError> {
        let mut k = key(KIND_KEYPAD);
        k[1..].copy_from_slice(&u.user);
        self.put(&k, &encode_keypad_use(u)).await
    }

    /// Calls `f` with every stored keypad use.
    pub async fn keypad_uses(&mut self, mut f: impl FnMut(KeypadUse)) -> Result<(), StoreError> {
        self.check()?;
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut map = self.map();
        let mut iter = map.fetch_all_items(&mut buf.0).await?;
        let mut item = Aligned([0u8; MAP_BUF]);
        while let Some((k, v)) = iter.next::<&[u8]>(&mut item.0).await? {
            if k[0] == KIND_KEYPAD {
                if let Some(u) = decode_keypad_use(v) {
                    f(u);
                }
            }
        }
        Ok(())
    }

    /// Counts this boot and returns its number (event ids are unique across boots).
    pub async fn next_boot(&mut self) -> Result<u32, StoreError> {
        let mut v = [0u8; 4];
        let boots = match self.fetch(&KEY_BOOTS, &mut v).await? {
            Some(4) => u32::from_le_bytes(v).wrapping_add(1),
            _ => 1,
        };
        self.put(&KEY_BOOTS, &boots.to_le_bytes()).await?;
        Ok(boots)
    }

    /// Forgets settings and identity (a new setup), keeping the core's record and the lists.
    pub async fn forget_pairing(&mut self) -> Result<(), StoreError> {
        self.check()?;
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut map = self.map();
        map.remove_item(&mut buf.0, &KEY_IDENTITY).await?;
        Ok(())
    }

    // ----- outbox ---------------------------------------------------------------------------

    /// Appends an encoded event; when the outbox is full the oldest events give way (the
    /// backend has been unreachable for very long; newest events matter most then).
    pub async fn push_event(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.queue().push(bytes, true).await?;
        Ok(())
    }

    /// Calls `f` with the oldest events, oldest first, until it returns `false`.
    pub async fn peek_events(
        &mut self,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut queue = self.queue();
        let mut iter = queue.iter().await?;
        let mut buf = Aligned([0u8; EVENT_MAX + 8]);
        while let Some(entry) = iter.next(&mut buf.0).await? {
            if !f(&entry) {
                break;
            }
        }
        Ok(())
    }

    /// Drops the `n` oldest events (the backend stored them).
    pub async fn pop_events(&mut self, n: u16) -> Result<(), StoreError> {
        self.check()?;
        let mut queue = self.queue();
        let mut buf = Aligned([0u8; EVENT_MAX + 8]);
        for _ in 0..n {
            if queue.pop(&mut buf.0).await?.is_none() {
                break;
            }
        }
        Ok(())
    }

    // ----- allow-list slots -----------------------------------------------------------------

    fn slots(&mut self) -> Result<Slots<&mut FlashStorage<'static>>, StoreError> {
        self.check()?;
        Ok(Slots::new(&mut self.flash, LIST_BASE, LIST_SLOT_SIZE)?)
    }

    /// The slot the door uses, if any holds a complete list.
    pub fn active_list(&mut self) -> Result<Option<SlotInfo>, StoreError> {
        Ok(self.slots()?.active()?)
    }

    /// Starts streaming a list of `len` bytes into the spare slot.
    pub fn begin_list(&mut self, len: u32) -> Result<Download, StoreError> {
        Ok(self.slots()?.begin(len)?)
    }

    /// Appends downloaded list bytes.
    pub fn write_list(&mut self, d: &mut Download, chunk: &[u8]) -> Result<(), StoreError> {
        Ok(self.slots()?.write(d, chunk)?)
    }

    /// Where the staged list lies (flushes its last bytes).
    pub fn staged_list(&mut self, d: &mut Download) -> Result<SlotInfo, StoreError> {
        Ok(self.slots()?.staged(d)?)
    }

    /// Switches to the staged list; call only after the core accepted it.
    pub fn commit_list(&mut self, d: Download) -> Result<SlotInfo, StoreError> {
        Ok(self.slots()?.commit(d)?)
    }

    /// Reads a slot's list into `buf` (the door checks lists in RAM).
    pub fn read_list<'b>(
        &mut self,
        info: &SlotInfo,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], StoreError> {
        self.check()?;
        let len = info.len as usize;
        let dst = buf
            .get_mut(..len)
            .ok_or(StoreError::Slots(SlotError::TooLarge {
                len: info.len,
                capacity: 0,
            }))?;
        self.flash
            .read(info.data_offset, dst)
            .map_err(|_| StoreError::Flash)?;
        Ok(dst)
    }
}
