//! Over-the-air updates into the spare app slot, sans IO: the door writes a signed image
//! ([`chronolock_core::firmware`]) into the app slot it is not running from, a 4 KiB sector
//! erased at a time as the bytes reach it, and checks the image's hash by reading it back from
//! flash before it asks the shell to boot it ([`crate::door::Request::BootFirmware`]).
//!
//! Power cuts: until the shell switches the boot slot, the running slot is untouched and the
//! spare one is just data; a cut anywhere in the download, the check or the switch leaves a
//! door that boots what it ran before. Which slot boots is the bootloader's partition data
//! (`otadata`), written by the shell.

use chronolock_core::firmware::{FirmwareError, Header, ImageCheck, Version, HEADER_LEN};
use ed25519_dalek::VerifyingKey;
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

/// Largest write granularity supported.
const MAX_WRITE_SIZE: usize = 16;

/// The two app slots (`ota_0`, `ota_1`) in the flash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSlots {
    /// Where each slot starts.
    pub offsets: [u32; 2],
    /// Size of each.
    pub size: u32,
}

/// What the door knows of the firmware it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareBoot {
    /// The app slots.
    pub slots: AppSlots,
    /// The slot running now (0 or 1).
    pub running_slot: u8,
    /// The running version.
    pub version: Version,
    /// The firmware signing key built into the running image (`None`: no update is taken).
    pub key: Option<[u8; 32]>,
    /// The flash size the running partition table is for, MB.
    pub flash_mb: u8,
}

/// Why an update was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtaError {
    /// The image was refused.
    Image(FirmwareError),
    /// The flash failed.
    Flash(NorFlashErrorKind),
    /// The flash writes in units larger than supported, or the slots do not fit it.
    Geometry,
}

impl core::fmt::Display for OtaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OtaError::Image(e) => write!(f, "{e}"),
            OtaError::Flash(kind) => write!(f, "flash error: {kind:?}"),
            OtaError::Geometry => f.write_str("app slots do not fit the flash"),
        }
    }
}

impl From<FirmwareError> for OtaError {
    fn from(e: FirmwareError) -> Self {
        OtaError::Image(e)
    }
}

fn flash_err<E: NorFlashError>(e: E) -> OtaError {
    OtaError::Flash(e.kind())
}

/// An image being written into the spare slot.
#[derive(Debug)]
pub struct OtaDownload {
    header: Header,
    raw: [u8; HEADER_LEN],
    slot: u8,
    written: u32,
    erased: u32,
    pending: [u8; MAX_WRITE_SIZE],
    pending_len: usize,
}

impl OtaDownload {
    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header's bytes, signature included (to note the download in flash).
    pub fn raw_header(&self) -> &[u8; HEADER_LEN] {
        &self.raw
    }

    /// The slot it goes to.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Image bytes received.
    pub fn written(&self) -> u32 {
        self.written
    }

    /// Image bytes in flash (those of a last partial write unit are still in RAM).
    pub fn flushed(&self) -> u32 {
        self.written - self.pending_len as u32
    }
}

impl FirmwareBoot {
    /// The slot an update goes to.
    pub fn spare_slot(&self) -> u8 {
        1 - self.running_slot.min(1)
    }

    /// Checks a signed image's header (signature, newer, for this flash, fits) and erases the
    /// spare slot's first sector: from here on that slot holds no bootable image.
    pub fn begin<F: NorFlash>(
        &self,
        flash: &mut F,
        header: &[u8],
    ) -> Result<OtaDownload, OtaError> {
        if F::WRITE_SIZE > MAX_WRITE_SIZE {
            return Err(OtaError::Geometry);
        }
        let key = self.key.and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let header_bytes = header.get(..HEADER_LEN).unwrap_or(header);
        let header = Header::check(
            header_bytes,
            key.as_ref(),
            self.version,
            self.flash_mb,
            self.slots.size,
        )?;
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(header_bytes);
        let slot = self.spare_slot();
        let start = self.slot_start(slot)?;
        let sector = F::ERASE_SIZE as u32;
        flash.erase(start, start + sector).map_err(flash_err)?;
        Ok(OtaDownload {
            header,
            raw,
            slot,
            written: 0,
            erased: sector,
            pending: [0xff; MAX_WRITE_SIZE],
            pending_len: 0,
        })
    }

    /// Goes on with a download interrupted by a power cut, of which `flushed` image bytes had
    /// reached flash: the header is checked again, and the download goes on from the start of
    /// the erase sector that holds byte `flushed` (what follows may be torn; that sector is
    /// erased again when the bytes reach it). No flash is touched here.
    pub fn resume<F: NorFlash>(
        &self,
        header: &[u8],
        flushed: u32,
    ) -> Result<OtaDownload, OtaError> {
        if F::WRITE_SIZE > MAX_WRITE_SIZE {
            return Err(OtaError::Geometry);
        }
        let key = self.key.and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let checked = Header::check(
            header,
            key.as_ref(),
            self.version,
            self.flash_mb,
            self.slots.size,
        )?;
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&header[..HEADER_LEN]);
        let header = checked;
        let sector = F::ERASE_SIZE as u32;
        let at = flushed.min(header.len) / sector * sector;
        Ok(OtaDownload {
            header,
            raw,
            slot: self.spare_slot(),
            written: at,
            // The first sector holds the image's start: never counted as erased at 0, so that
            // a resumed download from the start erases it again.
            erased: at,
            pending: [0xff; MAX_WRITE_SIZE],
            pending_len: 0,
        })
    }

    fn slot_start(&self, slot: u8) -> Result<u32, OtaError> {
        self.slots
            .offsets
            .get(usize::from(slot))
            .copied()
            .ok_or(OtaError::Geometry)
    }

    /// Erases the spare slot up to `end` (from its start), a sector at a time.
    fn erase_to<F: NorFlash>(
        &self,
        flash: &mut F,
        d: &mut OtaDownload,
        end: u32,
    ) -> Result<(), OtaError> {
        let sector = F::ERASE_SIZE as u32;
        let start = self.slot_start(d.slot)?;
        while d.erased < end.min(self.slots.size) {
            flash
                .erase(start + d.erased, start + d.erased + sector)
                .map_err(flash_err)?;
            d.erased += sector;
        }
        Ok(())
    }

    /// The next bytes of the image (after the header).
    pub fn write<F: NorFlash>(
        &self,
        flash: &mut F,
        d: &mut OtaDownload,
        mut bytes: &[u8],
    ) -> Result<(), OtaError> {
        if d.written as u64 + bytes.len() as u64 > u64::from(d.header.len) {
            return Err(FirmwareError::Digest.into());
        }
        let ws = F::WRITE_SIZE;
        let start = self.slot_start(d.slot)?;
        while !bytes.is_empty() {
            let take = (ws - d.pending_len).min(bytes.len());
            d.pending[d.pending_len..d.pending_len + take].copy_from_slice(&bytes[..take]);
            d.pending_len += take;
            d.written += take as u32;
            bytes = &bytes[take..];
            if d.pending_len == ws {
                let at = d.written - ws as u32;
                self.erase_to(flash, d, at + ws as u32)?;
                flash
                    .write(start + at, &d.pending[..ws])
                    .map_err(flash_err)?;
                d.pending_len = 0;
            }
        }
        Ok(())
    }

    /// The image is all in: the last partial unit is written, then the whole slot is read back
    /// and hashed. `Ok` only for the image the header signed, as it lies in flash.
    pub fn finish<F: NorFlash>(
        &self,
        flash: &mut F,
        mut d: OtaDownload,
    ) -> Result<Header, OtaError> {
        if d.written != d.header.len {
            return Err(FirmwareError::Truncated.into());
        }
        let start = self.slot_start(d.slot)?;
        if d.pending_len > 0 {
            let ws = F::WRITE_SIZE;
            let at = d.written - d.pending_len as u32;
            d.pending[d.pending_len..ws].fill(0xff);
            self.erase_to(flash, &mut d, at + ws as u32)?;
            flash
                .write(start + at, &d.pending[..ws])
                .map_err(flash_err)?;
        }
        let mut check = ImageCheck::new(d.header);
        let mut buf = [0u8; 256];
        let mut at = 0;
        while at < d.header.len {
            let n = (d.header.len - at).min(buf.len() as u32) as usize;
            flash.read(start + at, &mut buf[..n]).map_err(flash_err)?;
            check.update(&buf[..n])?;
            at += n as u32;
        }
        Ok(check.finish()?)
    }
}
