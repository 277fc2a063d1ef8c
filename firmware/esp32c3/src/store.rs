//! Where the door keeps what it keeps (`partitions.csv` names the same offsets), and the check
//! that the flashed partition table agrees before anything is written.
//!
//! What lives there, and how, is the shared door's ([`chronolock_device::door::Store`]): the two
//! allow-list slots in `allowlists`, a `sequential-storage` map in `storage` (settings from
//! setup, the identity from pairing, the core's record, keypad code use, the last acknowledged
//! event id) and a `sequential-storage` queue in `outbox` (events not yet acknowledged). The same
//! code runs over a file in the virtual doors and over memory in the fleet simulation.

use chronolock_device::door::{Layout, Store, StoreError};
use esp_storage::FlashStorage;

/// `allowlists` partition: two slots of 256 KiB.
const LIST_BASE: u32 = 0x20_0000;
const LIST_SLOT_SIZE: u32 = 0x4_0000;
/// `storage` partition: the settings map.
const MAP_RANGE: core::ops::Range<u32> = 0x28_0000..0x29_0000;
/// `outbox` partition: the event queue.
const QUEUE_RANGE: core::ops::Range<u32> = 0x29_0000..0x2B_0000;

/// The door's regions in this firmware's partition table.
pub const LAYOUT: Layout = Layout {
    lists: LIST_BASE,
    slot_size: LIST_SLOT_SIZE,
    map: MAP_RANGE,
    outbox: QUEUE_RANGE,
};

/// The partitions the door writes, as `partitions.csv` lays them out.
const EXPECTED: [(&str, u32, u32); 3] = [
    ("allowlists", LIST_BASE, 2 * LIST_SLOT_SIZE),
    ("storage", MAP_RANGE.start, MAP_RANGE.end - MAP_RANGE.start),
    (
        "outbox",
        QUEUE_RANGE.start,
        QUEUE_RANGE.end - QUEUE_RANGE.start,
    ),
];

/// Why the flash is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The partition table is not `partitions.csv`'s: nothing is written, so that a door
    /// flashed with another table never overwrites its own firmware.
    Layout,
    /// The regions do not fit the flash.
    Store(StoreError),
}

/// Takes the flash if its partition table matches [`LAYOUT`].
pub fn open(mut flash: FlashStorage<'static>) -> Result<Store<FlashStorage<'static>>, OpenError> {
    let mut buf = [0u8; esp_bootloader_esp_idf::partitions::PARTITION_TABLE_MAX_LEN];
    let usable =
        match esp_bootloader_esp_idf::partitions::read_partition_table(&mut flash, &mut buf) {
            Ok(table) => EXPECTED.iter().all(|&(label, offset, len)| {
                table
                    .iter()
                    .any(|p| p.label_as_str() == label && p.offset() == offset && p.len() == len)
            }),
            Err(_) => false,
        };
    if !usable {
        return Err(OpenError::Layout);
    }
    Store::new(flash, LAYOUT).map_err(OpenError::Store)
}
