//! NOR flash on the host: in memory, with power cuts at any byte, and in a file.

extern crate std;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::vec;
use std::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a host flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashFault {
    /// The power budget ran out during this operation: it is torn.
    PowerCut,
    /// Offset or length not a multiple of the write or erase size, or out of range.
    Misaligned,
    /// The file under [`FileFlash`] failed.
    Io,
}

impl NorFlashError for FlashFault {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashFault::Misaligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Erase and write units of the host flashes, as the ESP32-C3's.
const ERASE_UNIT: u32 = 4096;
const WRITE_UNIT: usize = 4;

fn aligned_erase(from: u32, to: u32) -> Result<(), FlashFault> {
    if from.is_multiple_of(ERASE_UNIT) && to.is_multiple_of(ERASE_UNIT) && from <= to {
        Ok(())
    } else {
        Err(FlashFault::Misaligned)
    }
}

fn aligned_write(offset: u32, len: usize) -> Result<(), FlashFault> {
    if (offset as usize).is_multiple_of(WRITE_UNIT) && len.is_multiple_of(WRITE_UNIT) {
        Ok(())
    } else {
        Err(FlashFault::Misaligned)
    }
}

/// NOR flash as the ESP32-C3's, in memory: erase sets 0xFF by 4 KiB sectors, writes are 4-byte
/// aligned and only clear bits. With a power budget ([`MemFlash::cut_after`]) it fails after that
/// many more bytes written or erased, and the failing operation is torn: its first bytes land
/// (a write's with the bits it clears, an erase's as 0xFF), the rest keep what they held.
#[derive(Clone, Debug)]
pub struct MemFlash {
    mem: Vec<u8>,
    budget: Option<usize>,
    changes: u64,
    largest_erase: u32,
}

impl MemFlash {
    /// Erased flash of `size` bytes (a multiple of 4096).
    pub fn new(size: usize) -> Self {
        MemFlash {
            mem: vec![0xff; size],
            budget: None,
            changes: 0,
            largest_erase: 0,
        }
    }

    /// Erases and writes so far (each call counts once, whatever its size).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The largest single erase so far, in bytes (an erase holds the flash, and on the chip
    /// the CPU, for its whole length).
    pub fn largest_erase(&self) -> u32 {
        self.largest_erase
    }

    /// Cuts the power after `bytes` more bytes are written or erased (`None`: never).
    pub fn cut_after(&mut self, bytes: Option<usize>) {
        self.budget = bytes;
    }

    /// Whether the power budget has run out.
    pub fn is_cut(&self) -> bool {
        self.budget == Some(0)
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.mem
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

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, FlashFault> {
        let from = offset as usize;
        let to = from.checked_add(len).ok_or(FlashFault::Misaligned)?;
        if to > self.mem.len() {
            return Err(FlashFault::Misaligned);
        }
        Ok(from..to)
    }
}

impl ErrorType for MemFlash {
    type Error = FlashFault;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashFault> {
        let r = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = WRITE_UNIT;
    const ERASE_SIZE: usize = ERASE_UNIT as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
        aligned_erase(from, to)?;
        let r = self.range(from, (to - from) as usize)?;
        self.changes += 1;
        self.largest_erase = self.largest_erase.max(to - from);
        let ok = self.spend(r.len());
        self.mem[r.start..r.start + ok].fill(0xff);
        if ok < r.len() {
            // The rest is not erased: it keeps what it held (the model `sequential-storage`'s
            // own power-fail tests use; the slots' tests also try garbage there).
            return Err(FlashFault::PowerCut);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashFault> {
        aligned_write(offset, bytes.len())?;
        let r = self.range(offset, bytes.len())?;
        self.changes += 1;
        let ok = self.spend(bytes.len());
        for (m, b) in self.mem[r.start..r.start + ok].iter_mut().zip(bytes) {
            *m &= b;
        }
        if ok < bytes.len() {
            return Err(FlashFault::PowerCut);
        }
        Ok(())
    }
}

/// Writing a word again can only clear more bits, as on the chip.
impl MultiwriteNorFlash for MemFlash {}

/// NOR flash in a file: erased bytes read 0xFF, writes clear bits as on the chip and reach the
/// disk before they return (a killed process is a power cut, never a lost write).
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    size: u32,
}

impl FileFlash {
    /// Opens (creating, erased) a flash file of `size` bytes; a file of another size is cut or
    /// grown with erased bytes.
    pub fn open(path: &Path, size: u32) -> io::Result<FileFlash> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let old = file.metadata()?.len();
        let mut flash = FileFlash { file, size };
        if old != u64::from(size) {
            flash.file.set_len(u64::from(size))?;
            if old < u64::from(size) {
                flash
                    .fill(old as u32, size)
                    .map_err(|_| io::Error::other("cannot erase the flash file"))?;
            }
        }
        Ok(flash)
    }

    fn fill(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
        let ones = vec![0xffu8; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = (to - at).min(ones.len() as u32);
            self.file
                .write_all_at(&ones[..n as usize], u64::from(at))
                .map_err(|_| FlashFault::Io)?;
            at += n;
        }
        Ok(())
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), FlashFault> {
        match u64::from(offset).checked_add(len as u64) {
            Some(end) if end <= u64::from(self.size) => Ok(()),
            _ => Err(FlashFault::Misaligned),
        }
    }
}

impl ErrorType for FileFlash {
    type Error = FlashFault;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashFault> {
        self.check(offset, bytes.len())?;
        self.file
            .read_exact_at(bytes, u64::from(offset))
            .map_err(|_| FlashFault::Io)
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WRITE_UNIT;
    const ERASE_SIZE: usize = ERASE_UNIT as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashFault> {
        aligned_erase(from, to)?;
        self.check(from, (to - from) as usize)?;
        self.fill(from, to)?;
        self.file.sync_data().map_err(|_| FlashFault::Io)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashFault> {
        aligned_write(offset, bytes.len())?;
        self.check(offset, bytes.len())?;
        let mut merged = vec![0u8; bytes.len()];
        self.read(offset, &mut merged)?;
        for (m, b) in merged.iter_mut().zip(bytes) {
            *m &= b;
        }
        self.file
            .write_all_at(&merged, u64::from(offset))
            .map_err(|_| FlashFault::Io)?;
        self.file.sync_data().map_err(|_| FlashFault::Io)
    }
}

impl MultiwriteNorFlash for FileFlash {}
