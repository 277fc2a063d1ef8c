//! The A/B switch over a simulated NOR flash that can lose power after any operation.

extern crate std;

use std::vec;
use std::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use proptest::prelude::*;

use super::*;

/// NOR flash as the ESP32-C3's: erase sets 0xFF by 4 KiB sectors, writes are 4-byte aligned and
/// can only clear bits. `budget` counts the bytes that may still be written or erased before
/// power fails; the failing operation is torn (its first bytes land, the rest do not).
struct SimFlash {
    mem: Vec<u8>,
    budget: Option<usize>,
}

#[derive(Debug, PartialEq)]
enum SimError {
    PowerCut,
    Misaligned,
    NotErased,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::Misaligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

impl SimFlash {
    fn new(size: usize) -> Self {
        SimFlash {
            mem: vec![0xff; size],
            budget: None,
        }
    }

    /// Spends up to `n` bytes of the budget; returns how many may land.
    fn spend(&mut self, n: usize) -> usize {
        match &mut self.budget {
            None => n,
            Some(b) => {
                let ok = n.min(*b);
                *b -= ok;
                ok
            }
        }
    }
}

impl ErrorType for SimFlash {
    type Error = SimError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let o = offset as usize;
        bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let (from, to) = (from as usize, to as usize);
        if from % Self::ERASE_SIZE != 0 || to % Self::ERASE_SIZE != 0 {
            return Err(SimError::Misaligned);
        }
        let ok = self.spend(to - from);
        // A torn erase leaves the sector half erased: model it as garbage past the cut.
        self.mem[from..from + ok].fill(0xff);
        if ok < to - from {
            self.mem[from + ok..to].fill(0x5a);
            return Err(SimError::PowerCut);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let o = offset as usize;
        if !o.is_multiple_of(Self::WRITE_SIZE) || !bytes.len().is_multiple_of(Self::WRITE_SIZE) {
            return Err(SimError::Misaligned);
        }
        if self.mem[o..o + bytes.len()]
            .iter()
            .zip(bytes)
            .any(|(old, new)| old & new != *new)
        {
            return Err(SimError::NotErased);
        }
        let ok = self.spend(bytes.len());
        for (m, b) in self.mem[o..o + ok].iter_mut().zip(bytes) {
            *m &= b;
        }
        if ok < bytes.len() {
            return Err(SimError::PowerCut);
        }
        Ok(())
    }
}

const SLOT: u32 = 3 * 4096;
const BASE: u32 = 4096;

fn list(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn slots(flash: SimFlash) -> Slots<SimFlash> {
    Slots::new(flash, BASE, SLOT).expect("geometry")
}

fn install(s: &mut Slots<SimFlash>, bytes: &[u8], chunk: usize) -> Result<SlotInfo, SlotError> {
    let mut d = s.begin(bytes.len() as u32)?;
    for c in bytes.chunks(chunk.max(1)) {
        s.write(&mut d, c)?;
    }
    s.commit(d)
}

fn read_active(s: &mut Slots<SimFlash>) -> Option<Vec<u8>> {
    let info = s.active().expect("read")?;
    let mut buf = vec![0; info.len as usize];
    s.read(info.data_offset, &mut buf).expect("read");
    Some(buf)
}

#[test]
fn empty_flash_has_no_list() {
    let mut s = slots(SimFlash::new(8 * 4096));
    assert_eq!(s.active(), Ok(None));
}

#[test]
fn lists_alternate_between_the_slots() {
    let mut s = slots(SimFlash::new(8 * 4096));
    let a = install(&mut s, &list(1, 5000), 333).expect("first");
    assert_eq!((a.index, a.sequence), (0, 1));
    let b = install(&mut s, &list(2, 7001), 1000).expect("second");
    assert_eq!((b.index, b.sequence), (1, 2));
    let c = install(&mut s, &list(3, 10), 3).expect("third");
    assert_eq!((c.index, c.sequence), (0, 3));
    assert_eq!(read_active(&mut s), Some(list(3, 10)));
}

#[test]
fn an_uncommitted_download_leaves_the_previous_list() {
    let mut s = slots(SimFlash::new(8 * 4096));
    install(&mut s, &list(1, 4000), 512).expect("first");
    let new = list(2, 4000);
    let mut d = s.begin(4000).expect("begin");
    s.write(&mut d, &new).expect("write");
    let staged = s.staged(&mut d).expect("staged");
    let mut buf = vec![0; 4000];
    s.read(staged.data_offset, &mut buf).expect("read");
    assert_eq!(
        buf, new,
        "staged bytes are readable for the signature check"
    );
    // The check failed (or power went): the download is abandoned without a commit.
    let _abandoned = d;
    let mut rebooted = slots(s.into_inner());
    assert_eq!(read_active(&mut rebooted), Some(list(1, 4000)));
}

#[test]
fn refuses_what_does_not_fit_or_does_not_add_up() {
    let mut s = slots(SimFlash::new(8 * 4096));
    let cap = s.capacity();
    assert_eq!(
        s.begin(cap + 1).err(),
        Some(SlotError::TooLarge {
            len: cap + 1,
            capacity: cap
        })
    );
    let mut d = s.begin(10).expect("begin");
    assert_eq!(s.write(&mut d, &[0; 11]), Err(SlotError::Overrun));
    s.write(&mut d, &[0; 6]).expect("write");
    assert_eq!(
        s.commit(d).err(),
        Some(SlotError::Incomplete {
            written: 6,
            len: 10
        })
    );
    assert_eq!(
        Slots::new(SimFlash::new(8 * 4096), 0, 5000).err(),
        Some(SlotError::BadGeometry)
    );
    assert_eq!(
        Slots::new(SimFlash::new(4 * 4096), 0, 3 * 4096).err(),
        Some(SlotError::BadGeometry)
    );
}

#[test]
fn a_corrupted_list_is_never_chosen() {
    let mut s = slots(SimFlash::new(8 * 4096));
    install(&mut s, &list(1, 3000), 100).expect("first");
    let b = install(&mut s, &list(2, 3000), 100).expect("second");
    // A bit rots in the newer list: its CRC fails and the older slot is used.
    let mut flash = s.into_inner();
    flash.mem[(b.data_offset + 1234) as usize] ^= 0x10;
    let mut s = slots(flash);
    assert_eq!(read_active(&mut s), Some(list(1, 3000)));
}

proptest! {
    /// Power fails after any number of bytes written or erased during the second download:
    /// after the reboot the door has either its previous list or, only if the header was
    /// complete, the new one; never a mix, never nothing.
    #[test]
    fn a_power_cut_anywhere_keeps_a_whole_list(
        cut in 0usize..(SLOT as usize + 6000),
        chunk in 1usize..700,
        old_len in 0usize..8000,
        new_len in 0usize..8000,
    ) {
        let old = list(1, old_len);
        let new = list(2, new_len);
        let mut s = slots(SimFlash::new(8 * 4096));
        install(&mut s, &old, chunk).expect("first");
        s.flash().budget = Some(cut);
        let result = install(&mut s, &new, chunk);
        let mut flash = s.into_inner();
        flash.budget = None;
        let mut rebooted = slots(flash);
        let after = read_active(&mut rebooted);
        match result {
            Ok(_) => prop_assert_eq!(after, Some(new)),
            Err(_) => prop_assert!(after == Some(old) || after == Some(new)),
        }
        // And the next download always works.
        let mut again = rebooted;
        install(&mut again, &list(3, 100), chunk).expect("after the reboot");
        prop_assert_eq!(read_active(&mut again), Some(list(3, 100)));
    }
}
