//! Where the door keeps what it keeps, and the check that the flashed partition table agrees
//! before anything is written.
//!
//! Two tables, one per flash size: `partitions-4mb.csv` (the default image) and
//! `partitions-8mb.csv` (the image built with `--features flash-8mb`). They differ only in the
//! size of `allowlists`, which runs to the end of the flash; this module names the same offsets
//! as the table its image is built for, and [`open`] refuses a flash laid out any other way.
//!
//! What lives there, and how, is the shared door's ([`chronolock_device::door::Store`]): the two
//! allow-list slots in `allowlists`, a `sequential-storage` map in `storage` (settings from
//! setup, the identity from pairing, the core's record, keypad code use, the last acknowledged
//! event id) and a `sequential-storage` queue in `outbox` (events not yet acknowledged). The same
//! code runs over a file in the virtual doors and over memory in the fleet simulation.

use chronolock_core::allowlist::{CARD_LEN, HEADER_LEN, SIGNATURE_LEN};
use chronolock_device::door::{Layout, Store, StoreError};
use chronolock_device::slots::DATA_OFFSET;
use esp_storage::FlashStorage;
use log::{error, info};

/// The partition table this image is built for.
#[cfg(not(feature = "flash-8mb"))]
pub const TABLE: &str = "partitions-4mb.csv";
/// The partition table this image is built for.
#[cfg(feature = "flash-8mb")]
pub const TABLE: &str = "partitions-8mb.csv";

/// Flash size the table fills.
#[cfg(not(feature = "flash-8mb"))]
const FLASH_SIZE: u32 = 0x40_0000;
#[cfg(feature = "flash-8mb")]
const FLASH_SIZE: u32 = 0x80_0000;

/// Erase sector of the ESP32-C3's flash: a slot must start and end on one.
const SECTOR: u32 = 4096;

/// `allowlists` partition: everything after `outbox`, split into two slots (A/B).
const LIST_BASE: u32 = 0x35_0000;
const LIST_SIZE: u32 = FLASH_SIZE - LIST_BASE;
const LIST_SLOT_SIZE: u32 = LIST_SIZE / 2;
const _: () = assert!(
    LIST_SLOT_SIZE.is_multiple_of(SECTOR) && 2 * LIST_SLOT_SIZE == LIST_SIZE,
    "each allow-list slot must be whole erase sectors"
);
/// `storage` partition: the settings map.
const MAP_RANGE: core::ops::Range<u32> = 0x32_0000..0x33_0000;
/// `outbox` partition: the event queue.
const QUEUE_RANGE: core::ops::Range<u32> = 0x33_0000..0x35_0000;

/// Card records one allow-list slot holds at most: the slot less its header room, the list's
/// header and its signature, in 16-byte records. Keypad entries and policies take room too, so
/// a real list holds somewhat fewer.
pub const LIST_SLOT_CARDS: u32 =
    (LIST_SLOT_SIZE - DATA_OFFSET - HEADER_LEN as u32 - SIGNATURE_LEN as u32) / CARD_LEN as u32;

/// The door's regions in this firmware's partition table.
pub const LAYOUT: Layout = Layout {
    lists: LIST_BASE,
    slot_size: LIST_SLOT_SIZE,
    map: MAP_RANGE,
    outbox: QUEUE_RANGE,
};

/// Partition types and subtypes, as the ESP-IDF table stores them.
const APP: u8 = 0x00;
const DATA: u8 = 0x01;
const OTA_0: u8 = 0x10;
const OTA_1: u8 = 0x11;
const OTA_DATA: u8 = 0x00;
/// The door's own data partitions are `undefined` (0x06), told apart by label: espflash and
/// esp-bootloader-esp-idf stop at data subtypes they do not know.
const UNDEFINED: u8 = 0x06;

/// One partition the table must hold, exactly.
struct Expected {
    label: &'static str,
    kind: u8,
    subtype: u8,
    offset: u32,
    len: u32,
}

/// The partitions of [`TABLE`] this image relies on: those the door writes, the two app slots
/// and their selector, and the setup secret. The app slots and `setup` are checked as well so
/// that the table must be the one this image was built for, not merely one that shares the data
/// partitions: the door then never writes where another table keeps firmware or the secret.
const EXPECTED: [Expected; 7] = [
    Expected {
        label: "otadata",
        kind: DATA,
        subtype: OTA_DATA,
        offset: 0xd000,
        len: 0x2000,
    },
    Expected {
        label: "ota_0",
        kind: APP,
        subtype: OTA_0,
        offset: 0x1_0000,
        len: 0x18_0000,
    },
    Expected {
        label: "ota_1",
        kind: APP,
        subtype: OTA_1,
        offset: 0x19_0000,
        len: 0x18_0000,
    },
    Expected {
        label: "setup",
        kind: DATA,
        subtype: UNDEFINED,
        offset: 0x31_0000,
        len: 0x1000,
    },
    Expected {
        label: "storage",
        kind: DATA,
        subtype: UNDEFINED,
        offset: MAP_RANGE.start,
        len: MAP_RANGE.end - MAP_RANGE.start,
    },
    Expected {
        label: "outbox",
        kind: DATA,
        subtype: UNDEFINED,
        offset: QUEUE_RANGE.start,
        len: QUEUE_RANGE.end - QUEUE_RANGE.start,
    },
    Expected {
        label: "allowlists",
        kind: DATA,
        subtype: UNDEFINED,
        offset: LIST_BASE,
        len: LIST_SIZE,
    },
];

/// Why the flash is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The partition table is not [`TABLE`]: nothing is written, so that a door flashed with
    /// another table (a default one, or the other flash size's) never overwrites its firmware.
    Layout,
    /// The regions do not fit the flash (e.g. the bootloader was told of a smaller flash).
    Store(StoreError),
}

/// Takes the flash if its partition table is [`TABLE`].
pub fn open(mut flash: FlashStorage<'static>) -> Result<Store<FlashStorage<'static>>, OpenError> {
    let mut buf = [0u8; esp_bootloader_esp_idf::partitions::PARTITION_TABLE_MAX_LEN];
    let table = match esp_bootloader_esp_idf::partitions::read_partition_table(&mut flash, &mut buf)
    {
        Ok(table) => table,
        Err(e) => {
            error!("partition table unreadable ({e:?}): expected {TABLE}");
            return Err(OpenError::Layout);
        }
    };
    for want in &EXPECTED {
        // Raw type and subtype: a table flashed by hand may hold subtypes the crate's typed view
        // (`partition_type`) does not know, and it panics on those.
        let found = table.iter().any(|p| {
            p.label_as_str() == want.label
                && p.raw_type() == want.kind
                && p.raw_subtype() == want.subtype
                && p.offset() == want.offset
                && p.len() == want.len
        });
        if !found {
            error!(
                "partition table: no {} of {:#x} bytes at {:#x} as {TABLE} lays it out",
                want.label, want.len, want.offset
            );
            return Err(OpenError::Layout);
        }
    }
    info!(
        "flash: {TABLE}, two allow-list slots of {} KiB, up to {LIST_SLOT_CARDS} cards each",
        LIST_SLOT_SIZE / 1024
    );
    Store::new(flash, LAYOUT).map_err(OpenError::Store)
}
