//! Everything a door keeps in flash, and where ([`Layout`]).
//!
//! - the two allow-list slots of [`crate::slots`]: a new list is streamed into the spare slot and
//!   switched to only after the core has checked it;
//! - a `sequential-storage` map (wear-levelled, safe against power cuts at any point) holding
//!   the settings from setup mode, the identity from pairing, the core's [`Persisted`] record,
//!   each keypad user's code use, the id of the last event the backend acknowledged, and how far
//!   an interrupted list download got, and up to where the request counter is spent;
//! - a `sequential-storage` queue: the outbox of events not yet acknowledged, oldest first.
//!
//! Every operation is blocking (see [`crate::flash`]); the store keeps no state in RAM that the
//! flash does not hold, so a power cut at any instant leaves a store that opens.

use chronolock_core::config::{parse_ntp_servers, HostName, MAX_NTP_SERVERS};
use chronolock_core::protocol::NTP_FIELD_LEN;
use core::ops::Range;

use chronolock_core::firmware::{Trial, Version};
use chronolock_core::keypad::KeypadUse;
use chronolock_core::lockdown::ORDER_LEN;
use chronolock_core::protocol::{DoorPosition, Enrolled};
use chronolock_core::Persisted;
use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash, NorFlashErrorKind};
use heapless::String;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use sequential_storage::queue::{QueueConfig, QueueStorage};

use crate::flash::{block_on, Blocking};
use crate::slots::{Download, SlotError, SlotInfo, Slots};

/// Where the door's three regions lie in its flash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// First byte of the two allow-list slots.
    pub lists: u32,
    /// Size of one slot (a multiple of the erase size).
    pub slot_size: u32,
    /// The settings map (whole erase sectors, at least two).
    pub map: Range<u32>,
    /// The event outbox (whole erase sectors, at least two).
    pub outbox: Range<u32>,
}

impl Layout {
    /// Regions one after the other from offset 0: two slots, a 16 KiB map, then the outbox.
    pub const fn packed(slot_size: u32, outbox: u32) -> Layout {
        let map_start = 2 * slot_size;
        let map_end = map_start + 16 * 1024;
        Layout {
            lists: 0,
            slot_size,
            map: map_start..map_end,
            outbox: map_end..map_end + outbox,
        }
    }

    /// The flash size [`packed`](Self::packed) needs.
    pub const fn end(&self) -> u32 {
        let a = self.lists + 2 * self.slot_size;
        let b = if self.map.end > self.outbox.end {
            self.map.end
        } else {
            self.outbox.end
        };
        if a > b {
            a
        } else {
            b
        }
    }
}

const FW_HEADER_LEN: usize = chronolock_core::firmware::HEADER_LEN;
const OTA_NOTE_LEN: usize = FW_HEADER_LEN + 4 + 32 + 4;

/// How far a firmware download got, as kept in flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtaNote {
    /// The signed image's header.
    pub header: [u8; FW_HEADER_LEN],
    /// The signed image's length, as the backend announced it.
    pub len: u32,
    /// Its SHA-256, as announced.
    pub digest: [u8; 32],
    /// Image bytes (after the header) in the spare slot.
    pub flushed: u32,
}

/// Largest value in the map (settings: four length-prefixed strings), with its key, rounded up.
const MAP_BUF: usize = 320;
/// Largest queued event (a [`chronolock_core::protocol::WireEvent`] is at most 68 bytes).
pub const EVENT_MAX: usize = 96;

/// Map keys: a kind byte, then (keypad use only) the user's sort key.
type Key = [u8; 10];
const KEY_SETTINGS: Key = key(1);
const KEY_IDENTITY: Key = key(2);
const KEY_PERSISTED: Key = key(3);
const KEY_ACKED: Key = key(4);
const KIND_KEYPAD: u8 = 5;
const KEY_PARTIAL: Key = key(6);
const KEY_COUNTER: Key = key(7);
const KEY_NTP: Key = key(8);
const KEY_TRIAL: Key = key(9);
const KEY_OTA: Key = key(10);
const KEY_LOCKDOWN: Key = key(11);
const KEY_POSITION: Key = key(12);

const fn key(kind: u8) -> Key {
    let mut k = [0u8; 10];
    k[0] = kind;
    k
}

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The flash driver failed.
    Flash(NorFlashErrorKind),
    /// The map or the queue is full, or an item does not fit its buffer.
    Full,
    /// Stored bytes do not decode (another layout, or corruption the store could not repair).
    Corrupt,
    /// A region does not fit the flash's geometry.
    Layout,
    /// The allow-list slots refused.
    Slots(SlotError),
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::Flash(kind) => write!(f, "flash error: {kind:?}"),
            StoreError::Full => f.write_str("storage full"),
            StoreError::Corrupt => f.write_str("stored data does not decode"),
            StoreError::Layout => f.write_str("flash layout does not fit the flash"),
            StoreError::Slots(e) => write!(f, "allow-list slots: {e}"),
        }
    }
}

impl<E: embedded_storage::nor_flash::NorFlashError> From<sequential_storage::Error<E>>
    for StoreError
{
    fn from(e: sequential_storage::Error<E>) -> Self {
        match e {
            sequential_storage::Error::Storage { value, .. } => StoreError::Flash(value.kind()),
            sequential_storage::Error::FullStorage
            | sequential_storage::Error::BufferTooSmall(_) => StoreError::Full,
            _ => StoreError::Corrupt,
        }
    }
}

impl From<SlotError> for StoreError {
    fn from(e: SlotError) -> Self {
        StoreError::Slots(e)
    }
}

impl From<crate::flash::WouldBlock> for StoreError {
    fn from(_: crate::flash::WouldBlock) -> Self {
        StoreError::Flash(NorFlashErrorKind::Other)
    }
}

/// What the installer entered on the setup page (the phone's time is used once, not kept).
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

/// A list download that was interrupted, kept so that the next sync (after a power cut too)
/// goes on with it instead of starting over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialDownload {
    /// The list's generation, length and SHA-256, as the sync answer announced them.
    pub generation: u64,
    /// Its length.
    pub len: u32,
    /// Its SHA-256.
    pub digest: [u8; 32],
    /// The spare slot it is written to and the sequence it will be committed with.
    pub target: (u8, u32),
    /// Bytes known to be in flash.
    pub flushed: u32,
    /// The download stopped cleanly: nothing was written past `flushed`.
    pub exact: bool,
}

const PARTIAL_LEN: usize = 8 + 4 + 32 + 1 + 4 + 4 + 1;

fn encode_partial(p: &PartialDownload) -> [u8; PARTIAL_LEN] {
    let mut out = [0u8; PARTIAL_LEN];
    out[..8].copy_from_slice(&p.generation.to_le_bytes());
    out[8..12].copy_from_slice(&p.len.to_le_bytes());
    out[12..44].copy_from_slice(&p.digest);
    out[44] = p.target.0;
    out[45..49].copy_from_slice(&p.target.1.to_le_bytes());
    out[49..53].copy_from_slice(&p.flushed.to_le_bytes());
    out[53] = u8::from(p.exact);
    out
}

fn decode_partial(b: &[u8]) -> Option<PartialDownload> {
    if b.len() != PARTIAL_LEN || b[44] > 1 || b[53] > 1 {
        return None;
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&b[12..44]);
    let le32 = |at: usize| b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes);
    let p = PartialDownload {
        generation: u64::from_le_bytes(b[..8].try_into().ok()?),
        len: le32(8)?,
        digest,
        target: (b[44], le32(45)?),
        flushed: le32(49)?,
        exact: b[53] == 1,
    };
    (p.flushed <= p.len).then_some(p)
}

/// Word-aligned buffer, as flash drivers prefer.
#[repr(align(4))]
struct Aligned<const N: usize>([u8; N]);

/// The door's flash and what lives in it.
pub struct Store<F> {
    flash: F,
    layout: Layout,
}

type Map<'a, F> = MapStorage<Key, Blocking<&'a mut F>, Cache<Uncached, Uncached, Uncached, Key>>;
type Queue<'a, F> = QueueStorage<Blocking<&'a mut F>, Cache<Uncached, Uncached, Uncached, ()>>;

impl<F: NorFlash + MultiwriteNorFlash> Store<F> {
    /// Takes the flash; checks that every region fits it.
    pub fn new(flash: F, layout: Layout) -> Result<Self, StoreError> {
        let erase = F::ERASE_SIZE as u32;
        let capacity = flash.capacity() as u64;
        let fits = |r: &Range<u32>| {
            r.start.is_multiple_of(erase)
                && r.end.is_multiple_of(erase)
                && r.end >= r.start + 2 * erase
                && u64::from(r.end) <= capacity
        };
        let lists_end = u64::from(layout.lists) + 2 * u64::from(layout.slot_size);
        if !fits(&layout.map) || !fits(&layout.outbox) || lists_end > capacity {
            return Err(StoreError::Layout);
        }
        MapConfig::<Blocking<&mut F>>::try_new(layout.map.clone())
            .map_err(|_| StoreError::Layout)?;
        QueueConfig::<Blocking<&mut F>>::try_new(layout.outbox.clone())
            .map_err(|_| StoreError::Layout)?;
        let mut store = Store { flash, layout };
        store.slots()?;
        Ok(store)
    }

    /// The flash, for the shell (e.g. to cut its power in a test).
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn map(&mut self) -> Result<Map<'_, F>, StoreError> {
        let config = MapConfig::try_new(self.layout.map.clone()).map_err(|_| StoreError::Layout)?;
        Ok(MapStorage::new(
            Blocking(&mut self.flash),
            config,
            Cache::new_uncached(),
        ))
    }

    fn queue(&mut self) -> Result<Queue<'_, F>, StoreError> {
        let config =
            QueueConfig::try_new(self.layout.outbox.clone()).map_err(|_| StoreError::Layout)?;
        Ok(QueueStorage::new(
            Blocking(&mut self.flash),
            config,
            Cache::new_uncached(),
        ))
    }

    fn fetch(&mut self, key: &Key, out: &mut [u8]) -> Result<Option<usize>, StoreError> {
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut map = self.map()?;
        let found: Option<&[u8]> = block_on(map.fetch_item(&mut buf.0, key))??;
        Ok(found.map(|v| {
            let n = v.len().min(out.len());
            out[..n].copy_from_slice(&v[..n]);
            n
        }))
    }

    fn put(&mut self, key: &Key, value: &[u8]) -> Result<(), StoreError> {
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut map = self.map()?;
        block_on(map.store_item::<&[u8]>(&mut buf.0, key, &value))??;
        Ok(())
    }

    fn remove(&mut self, key: &Key) -> Result<(), StoreError> {
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut map = self.map()?;
        block_on(map.remove_item(&mut buf.0, key))??;
        Ok(())
    }

    /// The settings from setup mode, if any.
    pub fn settings(&mut self) -> Result<Option<Settings>, StoreError> {
        let mut v = [0u8; MAP_BUF];
        match self.fetch(&KEY_SETTINGS, &mut v)? {
            Some(n) => Settings::decode(&v[..n])
                .map(Some)
                .ok_or(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    /// Replaces the settings.
    pub fn set_settings(&mut self, s: &Settings) -> Result<(), StoreError> {
        let mut v = [0u8; MAP_BUF - 16];
        let n = s.encode(&mut v);
        self.put(&KEY_SETTINGS, &v[..n])
    }

    /// The identity from pairing, if paired.
    pub fn identity(&mut self) -> Result<Option<Enrolled>, StoreError> {
        let mut v = [0u8; IDENTITY_LEN];
        match self.fetch(&KEY_IDENTITY, &mut v)? {
            Some(n) => decode_identity(&v[..n])
                .map(Some)
                .ok_or(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    /// Keeps the identity from pairing.
    pub fn set_identity(&mut self, e: &Enrolled) -> Result<(), StoreError> {
        self.put(&KEY_IDENTITY, &encode_identity(e))
    }

    /// Forgets the identity (the door goes back to setup mode at its next boot).
    pub fn forget_identity(&mut self) -> Result<(), StoreError> {
        self.remove(&KEY_IDENTITY)
    }

    /// The core's record from the previous boot; a record that does not decode is the default
    /// (the core then behaves as on first boot, which is safe: the list's own generation and
    /// signature are checked again when it is opened).
    pub fn persisted(&mut self) -> Result<Persisted, StoreError> {
        let mut v = [0u8; Persisted::LEN];
        Ok(match self.fetch(&KEY_PERSISTED, &mut v)? {
            Some(n) => Persisted::decode(&v[..n]).unwrap_or_default(),
            None => Persisted::default(),
        })
    }

    /// Stores the core's record.
    pub fn set_persisted(&mut self, p: &Persisted) -> Result<(), StoreError> {
        self.put(&KEY_PERSISTED, &p.encode())
    }

    /// Stores one keypad user's code use.
    pub fn set_keypad_use(&mut self, u: &KeypadUse) -> Result<(), StoreError> {
        let mut k = key(KIND_KEYPAD);
        k[1..].copy_from_slice(&u.user);
        self.put(&k, &encode_keypad_use(u))
    }

    /// Calls `f` with every stored keypad use.
    pub fn keypad_uses(&mut self, mut f: impl FnMut(KeypadUse)) -> Result<(), StoreError> {
        let mut buf = Aligned([0u8; MAP_BUF]);
        let mut item = Aligned([0u8; MAP_BUF]);
        let mut map = self.map()?;
        block_on(async {
            let mut iter = map.fetch_all_items(&mut buf.0).await?;
            while let Some((k, v)) = iter.next::<&[u8]>(&mut item.0).await? {
                if k[0] == KIND_KEYPAD {
                    if let Some(u) = decode_keypad_use(v) {
                        f(u);
                    }
                }
            }
            Ok::<(), StoreError>(())
        })?
    }

    /// The id of the newest event the backend acknowledged (0: none yet).
    pub fn acked(&mut self) -> Result<u64, StoreError> {
        let mut v = [0u8; 8];
        Ok(match self.fetch(&KEY_ACKED, &mut v)? {
            Some(8) => u64::from_le_bytes(v),
            Some(_) => return Err(StoreError::Corrupt),
            None => 0,
        })
    }

    /// The request counter is spent below this (0: nothing spent yet).
    pub fn counter_spent(&mut self) -> Result<u64, StoreError> {
        let mut v = [0u8; 8];
        Ok(match self.fetch(&KEY_COUNTER, &mut v)? {
            Some(8) => u64::from_le_bytes(v),
            Some(_) => return Err(StoreError::Corrupt),
            None => 0,
        })
    }

    /// Counters below `until` may be used from now on (kept before any of them is sent).
    pub fn set_counter_spent(&mut self, until: u64) -> Result<(), StoreError> {
        self.put(&KEY_COUNTER, &until.to_le_bytes())
    }

    /// The NTP servers the site named (space-separated), if it named any.
    pub fn ntp_servers(
        &mut self,
    ) -> Result<Option<heapless::Vec<HostName, MAX_NTP_SERVERS>>, StoreError> {
        let mut v = [0u8; NTP_FIELD_LEN];
        let Some(n) = self.fetch(&KEY_NTP, &mut v)? else {
            return Ok(None);
        };
        let text = core::str::from_utf8(&v[..n]).map_err(|_| StoreError::Corrupt)?;
        parse_ntp_servers(text)
            .map(Some)
            .map_err(|_| StoreError::Corrupt)
    }

    /// Keeps the NTP servers the site named.
    pub fn set_ntp_servers(&mut self, servers: &[HostName]) -> Result<(), StoreError> {
        let mut v: heapless::String<NTP_FIELD_LEN> = heapless::String::new();
        for (i, s) in servers.iter().enumerate() {
            if i > 0 {
                v.push(' ').map_err(|_| StoreError::Full)?;
            }
            v.push_str(s).map_err(|_| StoreError::Full)?;
        }
        self.put(&KEY_NTP, v.as_bytes())
    }

    /// The new firmware image on trial, if one is.
    pub fn trial(&mut self) -> Result<Option<Trial>, StoreError> {
        let mut v = [0u8; 7];
        Ok(match self.fetch(&KEY_TRIAL, &mut v)? {
            Some(7) => Some(Trial {
                slot: v[0],
                previous: v[1],
                boots: v[2],
                version: Version(u32::from_le_bytes([v[3], v[4], v[5], v[6]])),
            }),
            Some(_) => return Err(StoreError::Corrupt),
            None => None,
        })
    }

    /// How far a firmware download got, if one was under way: the signed header, the image's
    /// announced length and SHA-256, and the image bytes flushed to the spare slot.
    pub fn ota_note(&mut self) -> Result<Option<OtaNote>, StoreError> {
        let mut v = [0u8; OTA_NOTE_LEN];
        Ok(match self.fetch(&KEY_OTA, &mut v)? {
            Some(OTA_NOTE_LEN) => {
                let mut note = OtaNote {
                    header: [0; FW_HEADER_LEN],
                    len: u32::from_le_bytes([v[128], v[129], v[130], v[131]]),
                    digest: [0; 32],
                    flushed: u32::from_le_bytes([v[164], v[165], v[166], v[167]]),
                };
                note.header.copy_from_slice(&v[..FW_HEADER_LEN]);
                note.digest.copy_from_slice(&v[132..164]);
                Some(note)
            }
            Some(_) => return Err(StoreError::Corrupt),
            None => None,
        })
    }

    /// Notes how far a firmware download got (`None`: none under way).
    pub fn set_ota_note(&mut self, note: Option<&OtaNote>) -> Result<(), StoreError> {
        match note {
            Some(n) => {
                let mut v = [0u8; OTA_NOTE_LEN];
                v[..FW_HEADER_LEN].copy_from_slice(&n.header);
                v[128..132].copy_from_slice(&n.len.to_le_bytes());
                v[132..164].copy_from_slice(&n.digest);
                v[164..168].copy_from_slice(&n.flushed.to_le_bytes());
                self.put(&KEY_OTA, &v)
            }
            None => self.remove(&KEY_OTA),
        }
    }

    /// Keeps the trial of a new firmware image (`None`: no image on trial).
    pub fn set_trial(&mut self, trial: Option<&Trial>) -> Result<(), StoreError> {
        match trial {
            Some(t) => {
                let mut v = [0u8; 7];
                v[0] = t.slot;
                v[1] = t.previous;
                v[2] = t.boots;
                v[3..7].copy_from_slice(&t.version.0.to_le_bytes());
                self.put(&KEY_TRIAL, &v)
            }
            None => self.remove(&KEY_TRIAL),
        }
    }

    /// The site's lockdown order the door holds (signed; checked again at boot), if any.
    pub fn lockdown(&mut self) -> Result<Option<[u8; ORDER_LEN]>, StoreError> {
        let mut v = [0u8; ORDER_LEN];
        Ok(match self.fetch(&KEY_LOCKDOWN, &mut v)? {
            Some(ORDER_LEN) => Some(v),
            Some(_) => return Err(StoreError::Corrupt),
            None => None,
        })
    }

    /// Keeps the site's latest lockdown order.
    pub fn set_lockdown(&mut self, order: &[u8; ORDER_LEN]) -> Result<(), StoreError> {
        self.put(&KEY_LOCKDOWN, order)
    }

    /// The door's contact and held-open time as the site last set them, if it has.
    pub fn position(&mut self) -> Result<Option<DoorPosition>, StoreError> {
        let mut v = [0u8; 3];
        Ok(match self.fetch(&KEY_POSITION, &mut v)? {
            Some(3) if v[2] <= 1 => Some(DoorPosition {
                held_open_s: u16::from_le_bytes([v[0], v[1]]),
                contact: v[2] == 1,
            }),
            Some(_) => return Err(StoreError::Corrupt),
            None => None,
        })
    }

    /// Keeps the door's contact and held-open time.
    pub fn set_position(&mut self, p: &DoorPosition) -> Result<(), StoreError> {
        let h = p.held_open_s.to_le_bytes();
        self.put(&KEY_POSITION, &[h[0], h[1], u8::from(p.contact)])
    }

    fn set_acked(&mut self, id: u64) -> Result<(), StoreError> {
        self.put(&KEY_ACKED, &id.to_le_bytes())
    }

    // ----- outbox ---------------------------------------------------------------------------

    /// Appends an encoded event. A full outbox refuses ([`StoreError::Full`]); the door then
    /// makes room itself and says so.
    pub fn push_event(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut queue = self.queue()?;
        block_on(queue.push(bytes, false))??;
        Ok(())
    }

    /// Calls `f` with the waiting events, oldest first, until it returns `false`.
    pub fn peek_events(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> Result<(), StoreError> {
        let mut buf = Aligned([0u8; EVENT_MAX + 8]);
        let mut queue = self.queue()?;
        block_on(async {
            let mut iter = queue.iter().await?;
            while let Some(entry) = iter.next(&mut buf.0).await? {
                if !f(&entry) {
                    break;
                }
            }
            Ok::<(), StoreError>(())
        })?
    }

    /// Drops the `n` oldest events, the newest of which has id `last_id`: the backend stored
    /// them. The id is kept first, so that ids stay unique even if the power fails between.
    pub fn pop_events(&mut self, n: usize, last_id: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        if last_id > self.acked()? {
            self.set_acked(last_id)?;
        }
        self.drop_oldest(n)
    }

    /// Drops the `n` oldest events without acknowledgement (a full outbox).
    pub fn drop_oldest(&mut self, n: usize) -> Result<(), StoreError> {
        let mut buf = Aligned([0u8; EVENT_MAX + 8]);
        let mut queue = self.queue()?;
        block_on(async {
            for _ in 0..n {
                if queue.pop(&mut buf.0).await?.is_none() {
                    break;
                }
            }
            Ok::<(), StoreError>(())
        })?
    }

    // ----- allow-list slots -----------------------------------------------------------------

    fn slots(&mut self) -> Result<Slots<&mut F>, StoreError> {
        Ok(Slots::new(
            &mut self.flash,
            self.layout.lists,
            self.layout.slot_size,
        )?)
    }

    /// Bytes one slot holds.
    pub fn list_capacity(&self) -> u32 {
        self.layout
            .slot_size
            .saturating_sub(crate::slots::DATA_OFFSET)
    }

    /// The slot in use, if one holds a complete list.
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

    /// How far an interrupted download got, if one did.
    pub fn partial_download(&mut self) -> Result<Option<PartialDownload>, StoreError> {
        let mut v = [0u8; PARTIAL_LEN];
        match self.fetch(&KEY_PARTIAL, &mut v)? {
            Some(PARTIAL_LEN) => decode_partial(&v).map(Some).ok_or(StoreError::Corrupt),
            Some(_) => Err(StoreError::Corrupt),
            None => Ok(None),
        }
    }

    /// Keeps how far a download got.
    pub fn set_partial_download(&mut self, p: &PartialDownload) -> Result<(), StoreError> {
        self.put(&KEY_PARTIAL, &encode_partial(p))
    }

    /// Forgets an interrupted download (installed, refused, or superseded).
    pub fn clear_partial_download(&mut self) -> Result<(), StoreError> {
        self.remove(&KEY_PARTIAL)
    }

    /// Where the interrupted download `p` goes on (bytes of the list kept).
    pub fn resume_point(&mut self, p: &PartialDownload) -> Result<u32, StoreError> {
        Ok(self.slots()?.resume_point(p.flushed, p.exact))
    }

    /// Goes on with the interrupted download `p` at its [`resume_point`](Self::resume_point).
    pub fn resume_list(&mut self, p: &PartialDownload) -> Result<Download, StoreError> {
        let mut slots = self.slots()?;
        let at = slots.resume_point(p.flushed, p.exact);
        Ok(slots.resume(p.target, p.len, at, p.exact)?)
    }

    /// Reads a slot's list into `buf`.
    pub fn read_list<'b>(
        &mut self,
        info: &SlotInfo,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], StoreError> {
        let len = info.len as usize;
        let capacity = buf.len() as u32;
        let dst = buf
            .get_mut(..len)
            .ok_or(StoreError::Slots(SlotError::TooLarge {
                len: info.len,
                capacity,
            }))?;
        self.slots()?.read(info.data_offset, dst)?;
        Ok(dst)
    }
}
