//! What a virtual door keeps across power cycles, as files in its data directory: the flash (A/B
//! allow-list slots, the persisted record, keypad code use, the event outbox, settings) and its
//! DS3231, which keeps time while the door is off.
//!
//! Every file is replaced atomically (written beside, then renamed), as the firmware's flash
//! records are checksummed: a kill at any instant leaves either the old or the new content.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chronolock_core::keypad::KeypadUse;
use chronolock_core::protocol::WireEvent;
use chronolock_core::{Persisted, RtcReading, UnixTime};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use serde::{Deserialize, Serialize};

/// Size of one allow-list slot: room for a list of about 130,000 people.
pub const SLOT_SIZE: u32 = 2 * 1024 * 1024;

/// Most events waiting for the backend; beyond this the oldest are dropped and counted (the
/// firmware's outbox partition is bounded the same way).
pub const OUTBOX_MAX: usize = 10_000;

/// Writes `bytes` to `path` atomically.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)
}

/// The door's settings, set at setup or on the command line.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settings {
    /// Wi-Fi network (kept for the setup page; a virtual door has no radio).
    #[serde(default)]
    pub ssid: String,
    /// The backend's base URL.
    #[serde(default)]
    pub server: String,
    /// A pairing code not spent yet.
    #[serde(default)]
    pub pairing_code: Option<String>,
    /// What enrolment gave, once paired.
    #[serde(default)]
    pub device: Option<DeviceCredential>,
}

/// The door's identity at its backend.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCredential {
    /// Door id at the backend.
    pub door_id: u64,
    /// Shared HMAC key, hex.
    pub device_key: String,
    /// The site's Ed25519 public key, hex.
    pub site_key: String,
    /// Seconds between syncs the backend asked for.
    pub sync_interval_s: u32,
}

impl DeviceCredential {
    /// The device key's bytes.
    pub fn device_key(&self) -> Option<[u8; 32]> {
        hex32(&self.device_key)
    }

    /// The site key's bytes.
    pub fn site_key(&self) -> Option<[u8; 32]> {
        hex32(&self.site_key)
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// A keypad user's code use, as stored.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct StoredUse {
    user: [u8; 9],
    last_totp_step: Option<u64>,
    hotp_next: u64,
}

/// The virtual DS3231: its offset from the host's clock and its oscillator-stop flag. Absent
/// when the door has no RTC fitted.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RtcState {
    /// RTC time minus the host's UTC, microseconds.
    pub offset_us: i64,
    /// Oscillator-stop flag: set at first power-up, cleared by a write.
    pub osf: bool,
}

/// Host UTC in microseconds: the physics the virtual RTC keeps time by (never the door's own
/// clock, which only NTP, the backend, the phone and this RTC set).
pub fn host_utc_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl RtcState {
    /// The RTC's time now, microseconds.
    pub fn utc_us(&self) -> i64 {
        host_utc_us() + self.offset_us
    }

    /// What reading the registers now gives.
    pub fn read(&self) -> RtcReading {
        RtcReading::from_registers(UnixTime::from_micros(self.utc_us()).civil(), self.osf)
    }
}

/// A door's data directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The settings (defaults when none are stored or they are unreadable).
    pub fn settings(&self) -> Settings {
        fs::read(self.path("settings.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Stores the settings.
    pub fn save_settings(&self, s: &Settings) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(s).map_err(io::Error::other)?;
        replace(&self.path("settings.json"), &bytes)
    }

    /// The persisted record; a torn or foreign one gives defaults, as on the door.
    pub fn persisted(&self) -> Persisted {
        fs::read(self.path("persisted.bin"))
            .ok()
            .and_then(|b| Persisted::decode(&b).ok())
            .unwrap_or_default()
    }

    /// Stores the persisted record.
    pub fn save_persisted(&self, p: &Persisted) -> io::Result<()> {
        replace(&self.path("persisted.bin"), &p.encode())
    }

    /// Keypad code use by user.
    pub fn keypad_uses(&self) -> Vec<KeypadUse> {
        let stored: BTreeMap<String, StoredUse> = fs::read(self.path("keypad.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        stored
            .into_values()
            .map(|s| KeypadUse {
                user: s.user,
                last_totp_step: s.last_totp_step,
                hotp_next: s.hotp_next,
            })
            .collect()
    }

    /// Stores one user's code use.
    pub fn save_keypad_use(&self, u: &KeypadUse) -> io::Result<()> {
        let path = self.path("keypad.json");
        let mut stored: BTreeMap<String, StoredUse> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let key = data_encoding::HEXLOWER.encode(&u.user);
        stored.insert(
            key,
            StoredUse {
                user: u.user,
                last_totp_step: u.last_totp_step,
                hotp_next: u.hotp_next,
            },
        );
        let bytes = serde_json::to_vec(&stored).map_err(io::Error::other)?;
        replace(&path, &bytes)
    }

    /// The RTC, if fitted. `fitted` creates one on first use (oscillator-stop flag set, as a
    /// new DS3231 powers up); without it an existing one is taken out.
    pub fn rtc(&self, fitted: bool) -> io::Result<Option<RtcState>> {
        let path = self.path("rtc.json");
        if !fitted {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        let state = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match state {
            Some(s) => Ok(Some(s)),
            None => {
                let fresh = RtcState {
                    offset_us: 0,
                    osf: true,
                };
                self.save_rtc(&fresh)?;
                Ok(Some(fresh))
            }
        }
    }

    /// Stores the RTC's state.
    pub fn save_rtc(&self, r: &RtcState) -> io::Result<()> {
        let bytes = serde_json::to_vec(r).map_err(io::Error::other)?;
        replace(&self.path("rtc.json"), &bytes)
    }

    /// The event outbox and the next event id.
    pub fn outbox(&self) -> Outbox {
        let mut outbox = Outbox::default();
        let Ok(bytes) = fs::read(self.path("outbox.bin")) else {
            return outbox;
        };
        if bytes.len() < 8 {
            return outbox;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        outbox.next_id = u64::from_le_bytes(id);
        let mut at = 8;
        while at < bytes.len() {
            match WireEvent::read(&bytes[at..]) {
                Ok((e, n)) => {
                    outbox.events.push(e);
                    at += n;
                }
                Err(_) => break,
            }
        }
        outbox
    }

    /// Stores the outbox.
    pub fn save_outbox(&self, o: &Outbox) -> io::Result<()> {
        let mut bytes = o.next_id.to_le_bytes().to_vec();
        let mut buf = [0u8; 128];
        for e in &o.events {
            let n = e
                .write(&mut buf)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            bytes.extend_from_slice(&buf[..n]);
        }
        replace(&self.path("outbox.bin"), &bytes)
    }

    /// The flash file holding the two allow-list slots.
    pub fn flash(&self) -> io::Result<FileFlash> {
        FileFlash::open(&self.path("flash.bin"), 2 * SLOT_SIZE)
    }
}

/// Events not yet acknowledged by the backend, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    /// The id the next event gets: ids are never reused, so a resend is recognised.
    pub next_id: u64,
    /// Waiting events.
    pub events: Vec<WireEvent>,
    /// Events dropped because the outbox was full (this boot).
    pub dropped: u64,
}

/// NOR flash emulated by a file: erased bytes read 0xFF, writes land as given.
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    size: u32,
}

/// A file operation failed.
#[derive(Debug)]
pub struct FlashIo;

impl NorFlashError for FlashIo {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

impl FileFlash {
    /// Opens (creating) a flash file of `size` bytes.
    pub fn open(path: &Path, size: u32) -> io::Result<FileFlash> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != u64::from(size) {
            file.set_len(u64::from(size))?;
        }
        Ok(FileFlash { file, size })
    }
}

impl ErrorType for FileFlash {
    type Error = FlashIo;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashIo> {
        self.file
            .read_exact_at(bytes, u64::from(offset))
            .map_err(|_| FlashIo)
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashIo> {
        let ones = vec![0xffu8; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ones.len() as u32);
            self.file
                .write_all_at(&ones[..n as usize], u64::from(at))
                .map_err(|_| FlashIo)?;
            at += n;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashIo> {
        self.file
            .write_all_at(bytes, u64::from(offset))
            .map_err(|_| FlashIo)?;
        // The slot header is the commit point: it must be on disk before the door says so.
        self.file.sync_data().map_err(|_| FlashIo)
    }
}
