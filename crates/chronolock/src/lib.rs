//! The `chronolock` command's wiring: what the binary joins together that its crates do not
//! know of each other. The server shows and commands virtual doors through its own trait; the
//! doors themselves are the simulator's, which the server does not link. [`firmware`] holds the
//! work of `chronolock firmware`, where its tests reach it.

pub mod bench;
pub mod card;
pub mod firmware;
pub mod transfer;
pub mod virtual_doors;
