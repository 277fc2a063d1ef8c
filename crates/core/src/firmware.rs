//! Signed firmware images and the trial-boot rule, sans IO.
//!
//! Firmware is signed with a key of its own, kept offline by whoever builds releases
//! (`chronolock firmware keygen`, `chronolock firmware sign`), not with the site key the backend
//! holds: a stolen or compromised backend can hand a door lists, but never code. The door knows
//! the firmware public key from its own image (built in) and refuses any update when it has
//! none.
//!
//! A signed image is a 128-byte header followed by the application image exactly as the
//! bootloader loads it (little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 0..4 | magic `CLFW` |
//! | 4..6 | format version (1) |
//! | 6..8 | header length (128) |
//! | 8..12 | firmware version, `major << 16 \| minor << 8 \| patch`: a door takes only newer ones |
//! | 12..16 | image length |
//! | 16..48 | SHA-256 of the image |
//! | 48..52 | first four bytes of the signing public key |
//! | 52 | flash size the image's partition table is for, in MB (4 or 8) |
//! | 53..64 | zero |
//! | 64..128 | Ed25519 signature (strict) over bytes 0..64 |
//!
//! The door checks the header before it writes a byte, streams the image into its spare app
//! slot hashing it ([`ImageCheck`]), and switches slots only when the hash is the signed one.
//! The stock bootloader has no rollback, so the door counts the boots of a new image itself
//! ([`Trial`]): it confirms the image after a signed sync with a loaded list, and goes back to
//! the previous slot after [`MAX_TRIAL_BOOTS`] boots without one.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// The first four bytes of a signed image.
pub const MAGIC: [u8; 4] = *b"CLFW";
/// The format version this code reads and writes.
pub const FORMAT: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 128;
/// Boots a new image gets to complete a signed sync with a loaded list before the door goes
/// back to the previous one.
pub const MAX_TRIAL_BOOTS: u8 = 3;

/// Why a firmware image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirmwareError {
    /// Shorter than its header, or than the header says.
    Truncated,
    /// Not a signed chronolock image (wrong magic, format or header length).
    NotAnImage,
    /// Reserved bytes set, or an empty image.
    BadHeader,
    /// The signature does not verify against the door's firmware key (or the door has none).
    BadSignature,
    /// The image is not newer than the running firmware.
    Downgrade {
        /// The running version.
        running: u32,
        /// The offered one.
        offered: u32,
    },
    /// Built for another partition table.
    WrongFlashSize {
        /// This door's flash, MB.
        door: u8,
        /// The image's.
        image: u8,
    },
    /// Larger than an app slot.
    TooLarge {
        /// Image length.
        len: u32,
        /// Slot size.
        slot: u32,
    },
    /// The image's bytes are not the ones signed.
    Digest,
}

impl FirmwareError {
    /// A short, stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareError::Truncated => "truncated",
            FirmwareError::NotAnImage => "not_an_image",
            FirmwareError::BadHeader => "bad_header",
            FirmwareError::BadSignature => "bad_signature",
            FirmwareError::Downgrade { .. } => "downgrade",
            FirmwareError::WrongFlashSize { .. } => "wrong_flash_size",
            FirmwareError::TooLarge { .. } => "too_large",
            FirmwareError::Digest => "digest",
        }
    }
}

impl core::fmt::Display for FirmwareError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FirmwareError::Truncated => f.write_str("image ends early"),
            FirmwareError::NotAnImage => f.write_str("not a signed chronolock firmware image"),
            FirmwareError::BadHeader => f.write_str("image header holds impossible values"),
            FirmwareError::BadSignature => {
                f.write_str("signature does not verify against the firmware key")
            }
            FirmwareError::Downgrade { running, offered } => write!(
                f,
                "version {} is not newer than the running {}",
                Version(*offered),
                Version(*running)
            ),
            FirmwareError::WrongFlashSize { door, image } => {
                write!(f, "image is for {image} MB flash, the door has {door} MB")
            }
            FirmwareError::TooLarge { len, slot } => {
                write!(f, "image of {len} bytes does not fit an app slot of {slot}")
            }
            FirmwareError::Digest => f.write_str("image bytes are not the signed ones"),
        }
    }
}

/// A firmware version, `major << 16 | minor << 8 | patch`, shown as `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

impl Version {
    /// From its parts (minor and patch up to 255, major up to 65,535).
    pub const fn new(major: u16, minor: u8, patch: u8) -> Self {
        Version((major as u32) << 16 | (minor as u32) << 8 | patch as u32)
    }

    /// From `major.minor.patch`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version::new(major, minor, patch))
    }
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v = self.0;
        write!(f, "{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
    }
}

/// A signed image's header, its signature checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Firmware version.
    pub version: Version,
    /// Image length (after the header).
    pub len: u32,
    /// SHA-256 of the image.
    pub digest: [u8; 32],
    /// First four bytes of the signing key.
    pub key_id: [u8; 4],
    /// Flash size the image is for, MB.
    pub flash_mb: u8,
}

/// The fields every signed header has, before the signature is checked.
fn read_fields(bytes: &[u8]) -> Result<Header, FirmwareError> {
    if bytes.len() < 4 {
        return Err(FirmwareError::Truncated);
    }
    if bytes[..4] != MAGIC {
        return Err(FirmwareError::NotAnImage);
    }
    if bytes.len() < HEADER_LEN {
        return Err(FirmwareError::Truncated);
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if u16_at(4) != FORMAT || usize::from(u16_at(6)) != HEADER_LEN {
        return Err(FirmwareError::NotAnImage);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[16..48]);
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&bytes[48..52]);
    let header = Header {
        version: Version(u32_at(8)),
        len: u32_at(12),
        digest,
        key_id,
        flash_mb: bytes[52],
    };
    if header.len == 0 || bytes[53..64].iter().any(|&b| b != 0) {
        return Err(FirmwareError::BadHeader);
    }
    Ok(header)
}

impl Header {
    /// Checks a signed image's first [`HEADER_LEN`] bytes against the door's firmware key,
    /// what it runs and what it can hold: signed, newer, for its flash, fitting a slot.
    pub fn check(
        bytes: &[u8],
        key: Option<&VerifyingKey>,
        running: Version,
        flash_mb: u8,
        slot_size: u32,
    ) -> Result<Header, FirmwareError> {
        let header = read_fields(bytes)?;
        let key = key.ok_or(FirmwareError::BadSignature)?;
        let signature =
            Signature::from_slice(&bytes[64..128]).map_err(|_| FirmwareError::BadSignature)?;
        key.verify_strict(&bytes[..64], &signature)
            .map_err(|_| FirmwareError::BadSignature)?;
        if header.version <= running {
            return Err(FirmwareError::Downgrade {
                running: running.0,
                offered: header.version.0,
            });
        }
        if header.flash_mb != flash_mb {
            return Err(FirmwareError::WrongFlashSize {
                door: flash_mb,
                image: header.flash_mb,
            });
        }
        if header.len > slot_size {
            return Err(FirmwareError::TooLarge {
                len: header.len,
                slot: slot_size,
            });
        }
        Ok(header)
    }

    /// Reads a header without checking its signature (to show what an uploaded file claims).
    pub fn peek(bytes: &[u8]) -> Result<Header, FirmwareError> {
        read_fields(bytes)
    }
}

/// Hashes an image as it streams into its slot; [`finish`](Self::finish) says whether it is the
/// signed one.
#[derive(Clone, Debug)]
pub struct ImageCheck {
    header: Header,
    hash: Sha256,
    seen: u32,
}

impl ImageCheck {
    /// For the image `header` announced.
    pub fn new(header: Header) -> Self {
        ImageCheck {
            header,
            hash: Sha256::new(),
            seen: 0,
        }
    }

    /// The next bytes of the image (the header excluded); more than announced is refused.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), FirmwareError> {
        let len = u32::try_from(bytes.len()).map_err(|_| FirmwareError::Digest)?;
        if self
            .seen
            .checked_add(len)
            .is_none_or(|n| n > self.header.len)
        {
            return Err(FirmwareError::Digest);
        }
        self.hash.update(bytes);
        self.seen += len;
        Ok(())
    }

    /// Bytes of the image hashed so far.
    pub fn seen(&self) -> u32 {
        self.seen
    }

    /// Whether the whole image came and is the one signed.
    pub fn finish(self) -> Result<Header, FirmwareError> {
        if self.seen != self.header.len {
            return Err(FirmwareError::Truncated);
        }
        if self.hash.finalize()[..] != self.header.digest {
            return Err(FirmwareError::Digest);
        }
        Ok(self.header)
    }
}

/// A new image on trial, as the door keeps it in flash: the slot it was installed to, its
/// version, and how many times it has booted unconfirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trial {
    /// The app slot the new image is in.
    pub slot: u8,
    /// Its version.
    pub version: Version,
    /// The slot to go back to.
    pub previous: u8,
    /// Boots so far.
    pub boots: u8,
}

/// What a boot makes of a trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialBoot {
    /// No image on trial.
    None,
    /// The new image runs; this is its `boots`-th boot. Keep the trial with the count.
    Running(Trial),
    /// The new image has had its boots without a signed sync with a loaded list: boot the
    /// previous slot.
    RollBack(Trial),
    /// The bootloader did not start the new image (it refused it): the trial is over.
    DidNotStart(Trial),
}

impl Trial {
    /// The rule at each boot, from the trial in flash and the slot and version running.
    pub fn at_boot(trial: Option<Trial>, running_slot: u8, running: Version) -> TrialBoot {
        let Some(trial) = trial else {
            return TrialBoot::None;
        };
        if trial.slot != running_slot || trial.version != running {
            return TrialBoot::DidNotStart(trial);
        }
        let counted = Trial {
            boots: trial.boots.saturating_add(1),
            ..trial
        };
        if counted.boots > MAX_TRIAL_BOOTS {
            TrialBoot::RollBack(counted)
        } else {
            TrialBoot::Running(counted)
        }
    }
}

#[cfg(any(feature = "alloc", test))]
pub use signing::sign;

#[cfg(any(feature = "alloc", test))]
mod signing {
    extern crate alloc;
    use alloc::vec::Vec;

    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha256};

    use super::*;

    /// Signs an application image: the header, then the image.
    pub fn sign(
        image: &[u8],
        version: Version,
        flash_mb: u8,
        key: &SigningKey,
    ) -> Result<Vec<u8>, FirmwareError> {
        let len = u32::try_from(image.len()).map_err(|_| FirmwareError::TooLarge {
            len: u32::MAX,
            slot: u32::MAX,
        })?;
        if len == 0 {
            return Err(FirmwareError::BadHeader);
        }
        let mut out = Vec::with_capacity(HEADER_LEN + image.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out.extend_from_slice(&version.0.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&Sha256::digest(image));
        out.extend_from_slice(&key.verifying_key().as_bytes()[..4]);
        out.push(flash_mb);
        out.resize(64, 0);
        let signature = key.sign(&out);
        out.extend_from_slice(&signature.to_bytes());
        out.extend_from_slice(image);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    const V1: Version = Version::new(1, 0, 0);
    const V2: Version = Version::new(1, 1, 0);

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn image() -> Vec<u8> {
        (0..10_000u32).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn signed_images_check_and_stream() {
        let signed = sign(&image(), V2, 4, &key()).unwrap();
        let vk = key().verifying_key();
        let header = Header::check(&signed, Some(&vk), V1, 4, 0x18_0000).unwrap();
        assert_eq!((header.version, header.len), (V2, 10_000));
        let mut check = ImageCheck::new(header);
        for chunk in signed[HEADER_LEN..].chunks(999) {
            check.update(chunk).unwrap();
        }
        assert_eq!(check.finish().unwrap(), header);
        assert_eq!(V2.to_string(), "1.1.0");
        assert_eq!(Version::parse("1.1.0"), Some(V2));
        assert_eq!(Version::parse("1.1"), None);
    }

    #[test]
    fn refusals() {
        let signed = sign(&image(), V2, 4, &key()).unwrap();
        let vk = key().verifying_key();
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        let check = |bytes: &[u8], key: Option<&VerifyingKey>, running, mb, slot| {
            Header::check(bytes, key, running, mb, slot).unwrap_err()
        };
        assert_eq!(
            check(&signed, None, V1, 4, 1 << 21),
            FirmwareError::BadSignature
        );
        assert_eq!(
            check(&signed, Some(&other), V1, 4, 1 << 21),
            FirmwareError::BadSignature
        );
        assert_eq!(
            check(&signed, Some(&vk), V2, 4, 1 << 21),
            FirmwareError::Downgrade {
                running: V2.0,
                offered: V2.0
            }
        );
        assert_eq!(
            check(&signed, Some(&vk), V1, 8, 1 << 21),
            FirmwareError::WrongFlashSize { door: 8, image: 4 }
        );
        assert_eq!(
            check(&signed, Some(&vk), V1, 4, 9_999),
            FirmwareError::TooLarge {
                len: 10_000,
                slot: 9_999
            }
        );
        assert_eq!(
            check(&signed[..100], Some(&vk), V1, 4, 1 << 21),
            FirmwareError::Truncated
        );
        assert_eq!(
            check(b"\x7fELF", Some(&vk), V1, 4, 1 << 21),
            FirmwareError::NotAnImage
        );
        // A version byte changed after signing: the signature no longer holds.
        let mut bumped = signed.clone();
        bumped[10] ^= 1;
        assert_eq!(
            check(&bumped, Some(&vk), V1, 4, 1 << 21),
            FirmwareError::BadSignature
        );
        // An image byte changed: the header holds, the hash does not.
        let mut changed = signed.clone();
        changed[HEADER_LEN + 5_000] ^= 1;
        let header = Header::check(&changed, Some(&vk), V1, 4, 1 << 21).unwrap();
        let mut stream = ImageCheck::new(header);
        stream.update(&changed[HEADER_LEN..]).unwrap();
        assert_eq!(stream.finish().unwrap_err(), FirmwareError::Digest);
        // Short, and long.
        let mut stream = ImageCheck::new(header);
        stream.update(&signed[HEADER_LEN..HEADER_LEN + 10]).unwrap();
        assert_eq!(stream.finish().unwrap_err(), FirmwareError::Truncated);
        let mut stream = ImageCheck::new(header);
        stream.update(&signed[HEADER_LEN..]).unwrap();
        assert_eq!(stream.update(&[0]).unwrap_err(), FirmwareError::Digest);
    }

    #[test]
    fn trial_boots_are_counted_then_rolled_back() {
        let trial = Trial {
            slot: 1,
            version: V2,
            previous: 0,
            boots: 0,
        };
        assert_eq!(Trial::at_boot(None, 0, V1), TrialBoot::None);
        let mut t = trial;
        for boot in 1..=MAX_TRIAL_BOOTS {
            match Trial::at_boot(Some(t), 1, V2) {
                TrialBoot::Running(next) => {
                    assert_eq!(next.boots, boot);
                    t = next;
                }
                other => panic!("boot {boot}: {other:?}"),
            }
        }
        assert!(matches!(
            Trial::at_boot(Some(t), 1, V2),
            TrialBoot::RollBack(Trial { previous: 0, .. })
        ));
        // The bootloader started the old slot: the new image never ran.
        assert!(matches!(
            Trial::at_boot(Some(trial), 0, V1),
            TrialBoot::DidNotStart(_)
        ));
    }

    proptest! {
        #[test]
        fn random_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let vk = key().verifying_key();
            let _ = Header::check(&bytes, Some(&vk), V1, 4, 1 << 21);
            let _ = Header::peek(&bytes);
        }
    }
}
