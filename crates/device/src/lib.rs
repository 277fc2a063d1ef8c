//! Device-side pieces that are not decisions and not hardware: what both the ESP32-C3 firmware
//! and the virtual doors need between the core [`Controller`](chronolock_core::Controller) and
//! their I/O.
//!
//! - [`slots`]: two allow-list slots in a NOR-flash region, switched only after the new list is
//!   complete and checked, so a power cut mid-download keeps the previous list;
//! - [`setup`]: the setup page a door in setup mode serves from its WPA2 access point, the form it
//!   posts (the phone's time, Wi-Fi, server and pairing code), and the per-door secret of that
//!   access point (its `setup` partition);
//! - [`door`]: the door itself, sans IO: the controller, its flash, and its exchanges with the
//!   backend, driven by every shell;
//! - [`ota`]: over-the-air updates into the spare app slot;
//! - [`flash`]: blocking NOR flash for `sequential-storage`, and host flash (memory, file);
//! - [`pn532`]: the PN532 NFC controller's frames (a card's UID, APDUs to it) over I2C;
//! - [`wiegand`]: Wiegand 26/34 card frames and keypad keys from the reader's D0/D1 pulses.
//!
//! `no_std`, no heap: everything here runs on the door.

#![no_std]

pub mod door;
pub mod flash;
pub mod ota;
pub mod pn532;
pub mod setup;
pub mod slots;
pub mod wiegand;
