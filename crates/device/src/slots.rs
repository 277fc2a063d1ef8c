//! Two allow-list slots in one NOR-flash region (A/B), so that a power cut never costs the door
//! its list.
//!
//! A new list is streamed into the slot that is *not* active while it downloads. The shell then
//! checks the staged bytes (signature, generation: [`Controller::check_allowlist`]) and only then
//! calls [`Slots::commit`], which writes the slot's header last. Until that header is complete
//! the previous slot stays the active one: a power cut during the erase, the download, the check
//! or the header write boots with the previous list, and the next sync simply downloads again.
//!
//! Slot layout (each slot is `slot_size` bytes, a multiple of the erase size):
//!
//! ```text
//! 0..24   header: "CLAB", layout version, 3 reserved, sequence u32, length u32,
//!         CRC-32 of the list, CRC-32 of the header's first 20 bytes (little endian)
//! 256..   the list, exactly as the backend sent it (read in place by the core)
//! ```
//!
//! The active slot is the valid one with the higher sequence number. "Valid" means the header
//! checks out *and* the list's CRC matches, so even a slot whose header was somehow written over
//! a torn list is never chosen.
//!
//! [`Controller::check_allowlist`]: chronolock_core::Controller::check_allowlist

use core::cell::{Cell, RefCell};

use chronolock_core::allowlist::{ListBytes, ListError};
use crc::{Crc, Digest, CRC_32_ISO_HDLC};
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// Where a slot's list starts, relative to the slot. Leaves room for the header at any write
/// granularity up to 256 bytes.
pub const DATA_OFFSET: u32 = 256;

const MAGIC: [u8; 4] = *b"CLAB";
const LAYOUT_VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
/// Largest write granularity supported (ESP32-C3: 4 bytes; files: 1).
const MAX_WRITE_SIZE: usize = 64;
/// Bytes read at a time when checking a slot's CRC.
const READ_CHUNK: usize = 256;

static CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Why a slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// The flash driver failed.
    Flash(NorFlashErrorKind),
    /// `slot_size` is not a multiple of the erase size, too small, or the region overflows.
    BadGeometry,
    /// The flash writes in units larger than this module supports.
    WriteSizeTooLarge,
    /// The list does not fit in a slot.
    TooLarge {
        /// Bytes offered.
        len: u32,
        /// Bytes a slot holds.
        capacity: u32,
    },
    /// More bytes were written than announced at [`Slots::begin`].
    Overrun,
    /// [`Slots::commit`] before all announced bytes were written.
    Incomplete {
        /// Bytes written.
        written: u32,
        /// Bytes announced.
        len: u32,
    },
    /// The bytes read back differ from what was written (worn or failing flash).
    Verify,
    /// An interrupted download cannot go on where asked (another list was installed since).
    Resume,
}

impl<E: NorFlashError> From<E> for SlotError {
    fn from(e: E) -> Self {
        SlotError::Flash(e.kind())
    }
}

impl core::fmt::Display for SlotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SlotError::Flash(kind) => write!(f, "flash error: {kind:?}"),
            SlotError::BadGeometry => f.write_str("slot size is not a multiple of the erase size"),
            SlotError::WriteSizeTooLarge => f.write_str("flash write size above 64 bytes"),
            SlotError::TooLarge { len, capacity } => {
                write!(f, "list of {len} bytes does not fit a slot of {capacity}")
            }
            SlotError::Overrun => f.write_str("more list bytes than announced"),
            SlotError::Incomplete { written, len } => {
                write!(f, "list incomplete: {written} of {len} bytes")
            }
            SlotError::Verify => f.write_str("flash read back differs from what was written"),
            SlotError::Resume => f.write_str("the interrupted download cannot go on there"),
        }
    }
}

/// A slot holding a complete, committed list (or, from [`Slots::staged`], one being written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// 0 (A) or 1 (B).
    pub index: u8,
    /// Higher is newer.
    pub sequence: u32,
    /// Length of the list in bytes.
    pub len: u32,
    /// Absolute flash offset of the list's first byte.
    pub data_offset: u32,
}

/// A list being streamed into the inactive slot. Dropping it abandons the download; the active
/// slot is untouched.
pub struct Download {
    index: u8,
    sequence: u32,
    len: u32,
    written: u32,
    pending: [u8; MAX_WRITE_SIZE],
    pending_len: usize,
    digest: Digest<'static, u32>,
    /// Bytes of the slot (from its start) erased for this download: sectors are erased one at
    /// a time as the bytes reach them, so that no erase holds the flash for long.
    erased: u32,
}

impl core::fmt::Debug for Download {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Download")
            .field("index", &self.index)
            .field("sequence", &self.sequence)
            .field("len", &self.len)
            .field("written", &self.written)
            .finish()
    }
}

impl Download {
    /// Bytes received so far.
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Bytes announced.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the announced length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes already in flash (those of a last partial write unit are still in RAM).
    pub fn flushed(&self) -> u32 {
        self.written - self.pending_len as u32
    }

    /// The slot it is written to (0: A, 1: B) and the sequence it will be committed with.
    pub fn target(&self) -> (u8, u32) {
        (self.index, self.sequence)
    }
}

/// The two slots over a flash region starting at `base`.
#[derive(Debug)]
pub struct Slots<F> {
    flash: F,
    base: u32,
    slot_size: u32,
}

impl<F: NorFlash> Slots<F> {
    /// Two slots of `slot_size` bytes each at `base..base + 2 * slot_size`.
    pub fn new(flash: F, base: u32, slot_size: u32) -> Result<Self, SlotError> {
        if F::WRITE_SIZE > MAX_WRITE_SIZE || !(DATA_OFFSET as usize).is_multiple_of(F::WRITE_SIZE) {
            return Err(SlotError::WriteSizeTooLarge);
        }
        let end = slot_size
            .checked_mul(2)
            .and_then(|s| s.checked_add(base))
            .ok_or(SlotError::BadGeometry)?;
        if slot_size <= DATA_OFFSET
            || !(slot_size as usize).is_multiple_of(F::ERASE_SIZE)
            || !(base as usize).is_multiple_of(F::ERASE_SIZE)
            || end as usize > flash.capacity()
        {
            return Err(SlotError::BadGeometry);
        }
        Ok(Slots {
            flash,
            base,
            slot_size,
        })
    }

    /// Bytes of list one slot holds.
    pub fn capacity(&self) -> u32 {
        self.slot_size - DATA_OFFSET
    }

    /// The flash, e.g. to read a list in place.
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    fn slot_start(&self, index: u8) -> u32 {
        self.base + u32::from(index) * self.slot_size
    }

    /// The slot a door boots with: the valid slot with the higher sequence, if any.
    pub fn active(&mut self) -> Result<Option<SlotInfo>, SlotError> {
        let a = self.valid(0)?;
        let b = self.valid(1)?;
        Ok(match (a, b) {
            (Some(a), Some(b)) => Some(if b.sequence > a.sequence { b } else { a }),
            (a, b) => a.or(b),
        })
    }

    /// Slot `index`'s committed list, if its header and list check out.
    fn valid(&mut self, index: u8) -> Result<Option<SlotInfo>, SlotError> {
        let start = self.slot_start(index);
        let mut h = [0u8; HEADER_LEN];
        self.flash.read(start, &mut h)?;
        if h[0..4] != MAGIC || h[4] != LAYOUT_VERSION {
            return Ok(None);
        }
        if CRC32.checksum(&h[..20]) != le32(&h[20..24]) {
            return Ok(None);
        }
        let len = le32(&h[12..16]);
        if len > self.capacity() {
            return Ok(None);
        }
        let data_offset = start + DATA_OFFSET;
        if self.crc_of(data_offset, len)?.finalize() != le32(&h[16..20]) {
            return Ok(None);
        }
        Ok(Some(SlotInfo {
            index,
            sequence: le32(&h[8..12]),
            len,
            data_offset,
        }))
    }

    /// The CRC-32 of `len` bytes of flash from `offset`, read back in chunks.
    fn crc_of(&mut self, offset: u32, len: u32) -> Result<Digest<'static, u32>, SlotError> {
        let mut digest = CRC32.digest();
        let mut buf = [0u8; READ_CHUNK];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(READ_CHUNK as u32) as usize;
            self.flash.read(offset + at, &mut buf[..n])?;
            digest.update(&buf[..n]);
            at += n as u32;
        }
        Ok(digest)
    }

    /// Starts a download of `len` bytes into the inactive slot, erasing it first.
    pub fn begin(&mut self, len: u32) -> Result<Download, SlotError> {
        if len > self.capacity() {
            return Err(SlotError::TooLarge {
                len,
                capacity: self.capacity(),
            });
        }
        let active = self.active()?;
        let (index, sequence) = match active {
            Some(a) => (1 - a.index, a.sequence.wrapping_add(1)),
            None => (0, 1),
        };
        // Only the sector with the header now (the slot stops being valid at once); the rest
        // as the download reaches it.
        let start = self.slot_start(index);
        let sector = F::ERASE_SIZE as u32;
        self.flash.erase(start, start + sector)?;
        Ok(Download {
            index,
            sequence,
            len,
            written: 0,
            pending: [0xff; MAX_WRITE_SIZE],
            pending_len: 0,
            digest: CRC32.digest(),
            erased: sector,
        })
    }

    /// Where a download interrupted after `flushed` bytes (of which a power cut may have torn
    /// the last) can go on: the start of the erase sector that holds byte `flushed`, since
    /// what follows must be erased again. `exact`: the download stopped cleanly (nothing was
    /// written past `flushed`), so it goes on right there.
    pub fn resume_point(&self, flushed: u32, exact: bool) -> u32 {
        if exact {
            return flushed - flushed % F::WRITE_SIZE as u32;
        }
        let erase = F::ERASE_SIZE as u32;
        let sector = (DATA_OFFSET + flushed) / erase * erase;
        sector.saturating_sub(DATA_OFFSET)
    }

    /// Goes on with a download of `len` bytes into slot `target` (as [`Download::target`] gave)
    /// at `at`, a [`resume_point`](Self::resume_point). Refused if the spare slot or its next
    /// sequence changed since (another list was installed). Unless `exact`, the sector of `at`
    /// is erased first (the following ones as the download reaches them); the CRC of the bytes
    /// kept is read back.
    pub fn resume(
        &mut self,
        target: (u8, u32),
        len: u32,
        at: u32,
        exact: bool,
    ) -> Result<Download, SlotError> {
        let spare = match self.active()? {
            Some(a) => (1 - a.index, a.sequence.wrapping_add(1)),
            None => (0, 1),
        };
        if target != spare || len > self.capacity() || at > len {
            return Err(SlotError::Resume);
        }
        let (index, sequence) = target;
        let start = self.slot_start(index);
        let data = start + DATA_OFFSET;
        let sector = F::ERASE_SIZE as u32;
        let erased = if !exact {
            if self.resume_point(at, false) != at {
                return Err(SlotError::Resume);
            }
            let from = if at == 0 { start } else { data + at };
            self.flash.erase(from, from + sector)?;
            from - start + sector
        } else if !(at as usize).is_multiple_of(F::WRITE_SIZE) {
            return Err(SlotError::Resume);
        } else {
            // Stopped cleanly: the sector the download was in was erased and nothing was
            // written past `at`; the next one is erased when reached.
            (DATA_OFFSET + at).next_multiple_of(sector)
        };
        let digest = self.crc_of(data, at)?;
        Ok(Download {
            index,
            sequence,
            len,
            written: at,
            pending: [0xff; MAX_WRITE_SIZE],
            pending_len: 0,
            digest,
            erased,
        })
    }

    /// Erases the download's next sectors, one at a time, until the slot is erased up to
    /// `end` (from the slot's start).
    fn erase_to(&mut self, d: &mut Download, end: u32) -> Result<(), SlotError> {
        let sector = F::ERASE_SIZE as u32;
        let start = self.slot_start(d.index);
        while d.erased < end.min(self.slot_size) {
            self.flash
                .erase(start + d.erased, start + d.erased + sector)?;
            d.erased += sector;
        }
        Ok(())
    }

    /// Appends the next bytes of the list.
    pub fn write(&mut self, d: &mut Download, mut chunk: &[u8]) -> Result<(), SlotError> {
        if chunk.len() as u64 > u64::from(d.len - d.written) {
            return Err(SlotError::Overrun);
        }
        d.digest.update(chunk);
        let ws = F::WRITE_SIZE;
        let data = self.slot_start(d.index) + DATA_OFFSET;
        // Complete a partial write unit left by the previous chunk.
        if d.pending_len > 0 {
            let take = (ws - d.pending_len).min(chunk.len());
            d.pending[d.pending_len..d.pending_len + take].copy_from_slice(&chunk[..take]);
            d.pending_len += take;
            d.written += take as u32;
            chunk = &chunk[take..];
            if d.pending_len == ws {
                let at = data + d.written - ws as u32;
                self.erase_to(d, DATA_OFFSET + d.written)?;
                self.flash.write(at, &d.pending[..ws])?;
                d.pending_len = 0;
            }
        }
        let whole = chunk.len() - chunk.len() % ws;
        if whole > 0 {
            self.erase_to(d, DATA_OFFSET + d.written + whole as u32)?;
            self.flash.write(data + d.written, &chunk[..whole])?;
            d.written += whole as u32;
        }
        let rest = &chunk[whole..];
        d.pending[..rest.len()].copy_from_slice(rest);
        d.pending_len += rest.len();
        d.written += rest.len() as u32;
        Ok(())
    }

    /// Where the staged list lies, so the shell can check it before [`commit`](Self::commit).
    /// A final partial write unit is flushed first, so every byte can be read back.
    pub fn staged(&mut self, d: &mut Download) -> Result<SlotInfo, SlotError> {
        self.flush(d)?;
        Ok(SlotInfo {
            index: d.index,
            sequence: d.sequence,
            len: d.len,
            data_offset: self.slot_start(d.index) + DATA_OFFSET,
        })
    }

    fn flush(&mut self, d: &mut Download) -> Result<(), SlotError> {
        if d.pending_len > 0 {
            let ws = F::WRITE_SIZE;
            d.pending[d.pending_len..ws].fill(0xff);
            let rel = DATA_OFFSET + d.written - d.pending_len as u32;
            self.erase_to(d, rel + ws as u32)?;
            let at = self.slot_start(d.index) + rel;
            self.flash.write(at, &d.pending[..ws])?;
            d.pending_len = 0;
        }
        Ok(())
    }

    /// Makes the downloaded list the active one. Call only after the staged bytes passed the
    /// core's checks: from the moment the header is complete, the door boots with this list.
    pub fn commit(&mut self, mut d: Download) -> Result<SlotInfo, SlotError> {
        if d.written != d.len {
            return Err(SlotError::Incomplete {
                written: d.written,
                len: d.len,
            });
        }
        self.flush(&mut d)?;
        let mut h = [0xffu8; 32];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = LAYOUT_VERSION;
        h[5..8].fill(0);
        h[8..12].copy_from_slice(&d.sequence.to_le_bytes());
        h[12..16].copy_from_slice(&d.len.to_le_bytes());
        h[16..20].copy_from_slice(&d.digest.finalize().to_le_bytes());
        let hcrc = CRC32.checksum(&h[..20]);
        h[20..24].copy_from_slice(&hcrc.to_le_bytes());
        let n = HEADER_LEN.next_multiple_of(F::WRITE_SIZE);
        self.flash.write(self.slot_start(d.index), &h[..n])?;
        // Read back: a slot that would not be chosen at the next boot must not be reported as
        // installed now.
        match self.valid(d.index)? {
            Some(info) if info.sequence == d.sequence => Ok(info),
            _ => Err(SlotError::Verify),
        }
    }

    /// Reads `buf.len()` bytes at absolute flash offset `offset`.
    pub fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), SlotError> {
        self.flash.read(offset, buf)?;
        Ok(())
    }
}

/// A list read in place from NOR flash, a record at a time, for the core's
/// [`AllowList`](chronolock_core::allowlist::AllowList): no copy of the list in RAM. It counts
/// its reads and keeps the first flash error, so that the door can say how many reads a
/// decision took and report a failing flash (a lookup that cannot read denies).
pub struct FlashList<'f, F> {
    flash: RefCell<&'f mut F>,
    offset: u32,
    len: u32,
    reads: Cell<u32>,
    failed: Cell<Option<NorFlashErrorKind>>,
}

impl<'f, F: ReadNorFlash> FlashList<'f, F> {
    /// The `len` bytes from absolute flash offset `offset` (a slot's [`SlotInfo::data_offset`]).
    pub fn new(flash: &'f mut F, offset: u32, len: u32) -> Self {
        FlashList {
            flash: RefCell::new(flash),
            offset,
            len,
            reads: Cell::new(0),
            failed: Cell::new(None),
        }
    }

    /// Flash reads so far.
    pub fn reads(&self) -> u32 {
        self.reads.get()
    }

    /// The first flash error, if a read failed.
    pub fn failed(&self) -> Option<NorFlashErrorKind> {
        self.failed.get()
    }
}

impl<F: ReadNorFlash> ListBytes for FlashList<'_, F> {
    fn len(&self) -> u32 {
        self.len
    }

    fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), ListError> {
        let end = offset.checked_add(buf.len() as u32);
        if end.is_none_or(|e| e > self.len) {
            return Err(ListError::Truncated);
        }
        self.reads.set(self.reads.get().saturating_add(1));
        let Ok(mut flash) = self.flash.try_borrow_mut() else {
            return Err(ListError::Unreadable);
        };
        flash.read(self.offset + offset, buf).map_err(|e| {
            if self.failed.get().is_none() {
                self.failed.set(Some(e.kind()));
            }
            ListError::Unreadable
        })
    }
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
