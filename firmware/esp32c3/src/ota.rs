//! Over-the-air updates, the shell's part: which app slot runs, where the slots lie, the
//! firmware key built into this image, and switching the bootloader to another slot
//! (`otadata`). The download, its checks and the trial-boot rule are the shared door's
//! ([`chronolock_device::ota`]).
//!
//! The firmware key: `CHRONOLOCK_FIRMWARE_KEY` at build time, the 64 hex digits
//! `chronolock firmware keygen` prints. An image built without it takes no update.

use chronolock_core::firmware::Version;
use chronolock_device::ota::{AppSlots, FirmwareBoot};
use esp_bootloader_esp_idf::ota::Ota;
use esp_bootloader_esp_idf::partitions::{
    self, AppPartitionSubType, DataPartitionSubType, PartitionType, PARTITION_TABLE_MAX_LEN,
};
use esp_storage::FlashStorage;
use log::{error, info, warn};

/// The flash size this image's partition table is for, MB.
#[cfg(feature = "flash-8mb")]
const FLASH_MB: u8 = 8;
#[cfg(not(feature = "flash-8mb"))]
const FLASH_MB: u8 = 4;

/// App partitions are type 0; `ota_0` and `ota_1` subtypes 0x10 and 0x11.
const APP: u8 = 0;
const OTA_0: u8 = 0x10;

/// The firmware public key built in, if any.
fn built_in_key() -> Option<[u8; 32]> {
    let hex = option_env!("CHRONOLOCK_FIRMWARE_KEY")?.trim();
    let mut key = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// This image's version, from its package version.
pub fn version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version(0))
}

/// What the door needs to update itself: both app slots (equal in size), the slot running
/// now, this image's version and key. `None` (no update) when the table has no two equal OTA
/// slots or the running slot is not one of them.
pub fn firmware_boot(flash: &mut FlashStorage<'static>) -> Option<FirmwareBoot> {
    let mut buf = [0u8; PARTITION_TABLE_MAX_LEN];
    let table = partitions::read_partition_table(flash, &mut buf).ok()?;
    let mut offsets = [None, None];
    let mut size = 0;
    // By raw type and subtype: every partition of ours has a type the crate knows, but a
    // table flashed by hand might not.
    for p in table.iter() {
        if p.raw_type() == APP && (OTA_0..=OTA_0 + 1).contains(&p.raw_subtype()) {
            offsets[usize::from(p.raw_subtype() - OTA_0)] = Some(p.offset());
            size = p.len();
        }
    }
    let offsets = [offsets[0]?, offsets[1]?];
    let running = table.booted_partition().ok().flatten()?;
    let running_slot = offsets.iter().position(|&o| o == running.offset())? as u8;
    let key = built_in_key();
    if key.is_none() {
        warn!("no firmware key built in: updates over the air are refused");
    }
    info!(
        "firmware {} in app slot {running_slot} ({} KiB slots)",
        version(),
        size / 1024
    );
    Some(FirmwareBoot {
        slots: AppSlots { offsets, size },
        running_slot,
        version: version(),
        key,
        flash_mb: FLASH_MB,
    })
}

/// Makes the bootloader start app slot `slot` from the next boot on, then restarts.
pub fn boot_slot(flash: &mut FlashStorage<'static>, slot: u8) -> ! {
    let app = if slot == 0 {
        AppPartitionSubType::Ota0
    } else {
        AppPartitionSubType::Ota1
    };
    let mut buf = [0u8; PARTITION_TABLE_MAX_LEN];
    let switched = partitions::read_partition_table(flash, &mut buf).and_then(|table| {
        let otadata = table
            .find_partition(PartitionType::Data(DataPartitionSubType::Ota))?
            .ok_or(partitions::Error::Invalid)?;
        let mut ota = Ota::new(otadata.as_flash_region(flash), 2)?;
        ota.set_current_app_partition(app)
    });
    match switched {
        Ok(()) => info!("app slot {slot} boots from now on; restarting"),
        Err(e) => error!("could not switch to app slot {slot}: {e:?}; restarting as is"),
    }
    esp_hal::system::software_reset()
}
