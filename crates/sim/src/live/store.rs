//! What a virtual door keeps across power cycles, in its data directory: its flash, a file
//! holding the same regions the firmware's partitions hold (A/B allow-list slots, the settings
//! map, the event outbox), laid out and used by the shared [`chronolock_device::door`], and its
//! DS3231, which keeps time while the door is off.
//!
//! The flash file clears bits as NOR flash does and reaches the disk before a write returns, so
//! killing the process is a power cut; the RTC file is replaced atomically.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chronolock_core::{RtcReading, UnixTime};
use chronolock_device::door::{self, Layout, Settings};
use chronolock_device::flash::FileFlash;
use serde::{Deserialize, Serialize};

/// Size of one allow-list slot: room for a list of about 130,000 people.
pub const SLOT_SIZE: u32 = 2 * 1024 * 1024;

/// The flash file's regions: two slots, the settings map, and a 1 MiB outbox (about 10,000
/// events; beyond that the oldest give way, and the door says so).
pub const LAYOUT: Layout = Layout::packed(SLOT_SIZE, 1024 * 1024);

/// Writes `bytes` to `path` atomically.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)
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

    /// The door's flash, as the shared door's store.
    pub fn flash(&self) -> io::Result<door::Store<FileFlash>> {
        let flash = FileFlash::open(&self.path("flash.bin"), LAYOUT.end())?;
        door::Store::new(flash, LAYOUT).map_err(|e| io::Error::other(e.to_string()))
    }

    /// The door id this door is paired with, if any.
    pub fn paired_door_id(&self) -> Option<u64> {
        self.flash().ok()?.identity().ok()?.map(|i| i.door_id)
    }

    /// Sets the server (when given) and, for a door not paired yet, the pairing code, as an
    /// installer would on the setup page.
    pub fn configure(&self, server: Option<&str>, pairing_code: Option<&str>) -> io::Result<()> {
        let mut flash = self.flash()?;
        let err = |e: door::StoreError| io::Error::other(e.to_string());
        let mut settings: Settings = flash.settings().map_err(err)?.unwrap_or_default();
        if let Some(server) = server {
            settings.server_url = heapless::String::try_from(server)
                .map_err(|_| io::Error::other("server URL longer than 128 bytes"))?;
        }
        if flash.identity().map_err(err)?.is_none() {
            if let Some(code) = pairing_code {
                settings.pairing_code = heapless::String::try_from(code)
                    .map_err(|_| io::Error::other("pairing code longer than 16 bytes"))?;
            }
        }
        flash.set_settings(&settings).map_err(err)
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
}
