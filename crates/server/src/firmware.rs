//! Signed firmware updates over the air: the images the admin uploads, which doors are to run
//! them, and what the doors report of their progress.
//!
//! An image is `chronolock firmware sign`'s output: a 128-byte header, then the application
//! image ([`chronolock_core::firmware`]). The server never holds the firmware signing key and
//! cannot check the signature: it reads the header without a key, checks that the file is whole
//! (its length and the image's SHA-256 are the header's), and keeps it. Each door checks the
//! signature with the key built into its own firmware, and takes only a newer version built for
//! its flash size. A door the admin assigned an image to is offered it, a piece per sync
//! ([`chronolock_backend::sync`]), while it reports running an older version.

use std::collections::HashMap;

use chronolock_core::firmware::{FirmwareError, Header, Version, HEADER_LEN};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::model::{invalid, ModelError};
use crate::AppState;

/// Largest signed file the firmware page accepts. A door's app slot holds 1.5 MiB; the door
/// refuses a larger image itself, before it writes a byte.
pub const MAX_FILE: usize = 4 * 1024 * 1024;

/// The flash sizes doors are built with, MB.
pub const FLASH_SIZES: [u8; 2] = [4, 8];

/// Why a file is not a whole signed image, in words for the admin; or its header.
pub fn check_file(bytes: &[u8]) -> Result<Header, String> {
    if bytes.is_empty() {
        return Err("choose a signed image file (it is empty, or none was chosen)".into());
    }
    if bytes.len() > MAX_FILE {
        return Err(format!(
            "the file is {} bytes; a signed image is at most {} bytes",
            bytes.len(),
            MAX_FILE
        ));
    }
    let header = Header::peek(bytes).map_err(|e| e.to_string())?;
    let announced = HEADER_LEN as u64 + u64::from(header.len);
    let len = bytes.len() as u64;
    if len < announced {
        return Err(format!(
            "{}: the header announces {announced} bytes, the file has {len}",
            FirmwareError::Truncated
        ));
    }
    if len > announced {
        return Err(format!(
            "the file has {len} bytes, {} more than its header announces ({announced}): not a \
             file `chronolock firmware sign` made",
            len - announced
        ));
    }
    if Sha256::digest(&bytes[HEADER_LEN..])[..] != header.digest {
        return Err(FirmwareError::Digest.to_string());
    }
    if !FLASH_SIZES.contains(&header.flash_mb) {
        return Err(format!(
            "the image is for {} MB flash; doors have 4 or 8 MB",
            header.flash_mb
        ));
    }
    if header.version.0 == 0 {
        return Err("version 0.0.0: every door runs a newer one".into());
    }
    Ok(header)
}

/// An uploaded image, without its bytes.
#[derive(Clone, Debug)]
pub struct Image {
    /// Row id.
    pub id: i64,
    /// Its version.
    pub version: Version,
    /// The flash size it is for, MB.
    pub flash_mb: u8,
    /// Length of the signed file (header and image): what a door downloads.
    pub size: i64,
    /// SHA-256 of the application image, lower-case hex.
    pub sha256: String,
    /// First four bytes of the firmware public key that signed it, lower-case hex.
    pub key_id: String,
    /// When it was uploaded (Unix seconds).
    pub uploaded_at: i64,
    /// Who uploaded it.
    pub uploaded_by: Option<String>,
    /// How many doors it is assigned to.
    pub doors: i64,
}

type ImageRow = (i64, i64, i32, i64, String, String, i64, Option<String>, i64);

/// A stored version, which the upload checked to fit in 32 bits.
fn version_of(stored: i64) -> Version {
    Version(u32::try_from(stored).unwrap_or(0))
}

/// Every uploaded image, newest version first.
pub async fn images(state: &AppState) -> Result<Vec<Image>, ModelError> {
    let rows: Vec<ImageRow> = sqlx::query_as(
        "SELECT f.id, f.version, f.flash_mb, f.size, f.sha256, f.key_id, f.uploaded_at, \
         f.uploaded_by, (SELECT COUNT(*) FROM doors d WHERE d.firmware_id = f.id) \
         FROM firmware_images f ORDER BY f.version DESC, f.flash_mb, f.id",
    )
    .fetch_all(state.db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Image {
            id: r.0,
            version: version_of(r.1),
            flash_mb: u8::try_from(r.2).unwrap_or(0),
            size: r.3,
            sha256: r.4,
            key_id: r.5,
            uploaded_at: r.6,
            uploaded_by: r.7,
            doors: r.8,
        })
        .collect())
}

/// Keeps an uploaded file after [`check_file`]; returns its id. A version is kept once per
/// flash size. Errors name the field `image`.
pub async fn store_image(
    state: &AppState,
    bytes: &[u8],
    uploaded_by: &str,
    now: i64,
) -> Result<i64, ModelError> {
    let header = check_file(bytes).map_err(|m| invalid("image", m))?;
    let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
        "INSERT INTO firmware_images \
         (version, flash_mb, size, sha256, key_id, signed_file, uploaded_at, uploaded_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(i64::from(header.version.0))
    .bind(i32::from(header.flash_mb))
    .bind(bytes.len() as i64)
    .bind(data_encoding::HEXLOWER.encode(&header.digest))
    .bind(data_encoding::HEXLOWER.encode(&header.key_id))
    .bind(bytes.to_vec())
    .bind(now)
    .bind(uploaded_by)
    .fetch_one(state.db.pool())
    .await;
    match inserted {
        Ok((id,)) => Ok(id),
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(invalid(
            "image",
            format!(
                "version {} for {} MB flash is uploaded already",
                header.version, header.flash_mb
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Deletes an image no door is assigned to. An assigned one is refused (field `images`),
/// naming its doors; an unknown id is [`ModelError::NotFound`].
pub async fn delete_image(state: &AppState, id: i64) -> Result<Version, ModelError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT version FROM firmware_images WHERE id = $1")
        .bind(id)
        .fetch_optional(state.db.pool())
        .await?;
    let Some((version,)) = row else {
        return Err(ModelError::NotFound);
    };
    let version = version_of(version);
    // Conditional, and the doors' foreign key holds too: an assignment made meanwhile wins.
    let deleted = sqlx::query(
        "DELETE FROM firmware_images WHERE id = $1 \
         AND NOT EXISTS (SELECT 1 FROM doors WHERE firmware_id = $1)",
    )
    .bind(id)
    .execute(state.db.pool())
    .await;
    match deleted {
        Ok(r) if r.rows_affected() == 1 => return Ok(version),
        Ok(_) => {}
        Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {}
        Err(e) => return Err(e.into()),
    }
    let doors: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM doors WHERE firmware_id = $1 ORDER BY name, id")
            .bind(id)
            .fetch_all(state.db.pool())
            .await?;
    if doors.is_empty() {
        // Deleted by someone else meanwhile.
        return Err(ModelError::NotFound);
    }
    let names: Vec<String> = doors.into_iter().map(|(n,)| n).collect();
    Err(invalid(
        "images",
        format!(
            "version {version} is assigned to {}: give those doors another image, or none, first",
            names.join(", ")
        ),
    ))
}

/// Assigns `image` (`None`: no update) to the site's doors `doors`, all or none. A door or an
/// image that does not exist (on this site) is [`ModelError::NotFound`].
pub async fn assign(
    state: &AppState,
    site_id: i64,
    doors: &[i64],
    image: Option<i64>,
) -> Result<(), ModelError> {
    let mut tx = state.db.pool().begin().await?;
    if let Some(image) = image {
        let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM firmware_images WHERE id = $1")
            .bind(image)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(ModelError::NotFound);
        }
    }
    for door in doors {
        let updated =
            sqlx::query("UPDATE doors SET firmware_id = $1 WHERE id = $2 AND site_id = $3")
                .bind(image)
                .bind(door)
                .bind(site_id)
                .execute(&mut *tx)
                .await;
        match updated {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => return Err(ModelError::NotFound),
            // The image was deleted meanwhile (PostgreSQL checks the key at once).
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(ModelError::NotFound)
            }
            Err(e) => return Err(e.into()),
        }
    }
    tx.commit().await?;
    // The doors' next syncs offer the image.
    state.door_cache.reload_all(&state.db).await?;
    Ok(())
}

/// What a door reported of its firmware at a sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// The version it runs (0: it takes no update over the air).
    pub running: u32,
    /// The update it holds the start of: its version and bytes of the signed file.
    pub held: Option<(u32, u32)>,
}

/// The signed file assigned to a door, unless what the door `reported` says it would be
/// offered nothing: it runs that version or a newer one, or holds all of it (it is installing
/// it, or refused it). Then the file (up to an app slot, 1.5 MiB) is not read at all.
pub async fn assigned_file(
    state: &AppState,
    door_id: i64,
    reported: Reported,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let (held_version, held_bytes) = reported.held.unwrap_or((0, 0));
    let row: Option<(Vec<u8>,)> = sqlx::query_as(
        "SELECT f.signed_file FROM doors d JOIN firmware_images f ON f.id = d.firmware_id \
         WHERE d.id = $1 AND f.version > $2 AND NOT (f.version = $3 AND f.size <= $4)",
    )
    .bind(door_id)
    .bind(i64::from(reported.running))
    .bind(i64::from(held_version))
    .bind(i64::from(held_bytes))
    .fetch_optional(state.db.pool())
    .await?;
    Ok(row.map(|(bytes,)| bytes))
}

/// The image a door is assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The image's id.
    pub id: i64,
    /// Its version.
    pub version: Version,
    /// The flash size it is for, MB.
    pub flash_mb: u8,
    /// Its signed file's length.
    pub size: i64,
}

/// A door's firmware as its last sync reported it, and the update the admin assigned it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoorFirmware {
    /// The version it runs (`Some(0)`: it takes no update over the air; `None`: not reported).
    pub running: Option<u32>,
    /// The update it holds the start of: its version and how many bytes of the signed file.
    pub partial: Option<(u32, u32)>,
    /// The image it is to run.
    pub assigned: Option<Assigned>,
}

/// Where a door's assigned update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateState {
    /// It has not started downloading: it is offered the update at its next sync.
    Waiting,
    /// It holds `bytes` of the signed file.
    Downloading {
        /// Bytes it holds.
        bytes: u32,
    },
    /// It holds all of the signed file but does not run it: it is installing it, or refused it
    /// (signed with another firmware key, or built for another flash size) and is not sent it
    /// again.
    Downloaded,
    /// It runs the assigned version.
    Installed,
    /// It runs a newer version: it is offered nothing.
    NewerRunning,
    /// It takes no update over the air (it reports no firmware version).
    NotSupported,
}

impl UpdateState {
    /// A short, stable name, for the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Waiting => "waiting",
            UpdateState::Downloading { .. } => "downloading",
            UpdateState::Downloaded => "downloaded",
            UpdateState::Installed => "installed",
            UpdateState::NewerRunning => "newer_running",
            UpdateState::NotSupported => "not_supported",
        }
    }
}

impl DoorFirmware {
    /// Where the assigned update stands; `None` without one.
    pub fn state(&self) -> Option<UpdateState> {
        let assigned = self.assigned.as_ref()?;
        let wanted = assigned.version.0;
        Some(match self.running {
            Some(0) => UpdateState::NotSupported,
            Some(v) if v == wanted => UpdateState::Installed,
            Some(v) if v > wanted => UpdateState::NewerRunning,
            _ => match self.partial {
                Some((version, bytes))
                    if version == wanted && i64::from(bytes) >= assigned.size =>
                {
                    UpdateState::Downloaded
                }
                Some((version, bytes)) if version == wanted && bytes > 0 => {
                    UpdateState::Downloading { bytes }
                }
                _ => UpdateState::Waiting,
            },
        })
    }

    /// The running version as `major.minor.patch`, or `—` when it is unknown or the door takes
    /// no update over the air.
    pub fn running_text(&self) -> String {
        match self.running {
            Some(v) if v > 0 => Version(v).to_string(),
            _ => "—".into(),
        }
    }

    /// The assigned update's state in words: `installed`, `downloading 42%`, ….
    pub fn state_text(&self) -> Option<String> {
        self.update().map(|u| u.describe())
    }

    /// The assigned update for the JSON API.
    pub fn update(&self) -> Option<FirmwareUpdate> {
        let assigned = self.assigned.as_ref()?;
        let state = self.state()?;
        Some(FirmwareUpdate {
            image_id: assigned.id,
            version: assigned.version.to_string(),
            flash_mb: i64::from(assigned.flash_mb),
            size: assigned.size,
            state: state.as_str().to_string(),
            downloaded: match state {
                UpdateState::Downloading { bytes } => Some(i64::from(bytes)),
                UpdateState::Downloaded => Some(assigned.size),
                _ => None,
            },
        })
    }
}

/// A door's assigned firmware update, as the JSON API shows it.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct FirmwareUpdate {
    /// The image's id.
    pub image_id: i64,
    /// Its version, `major.minor.patch`.
    pub version: String,
    /// The flash size it is built for, MB.
    pub flash_mb: i64,
    /// Its signed file's length in bytes: what the door downloads.
    pub size: i64,
    /// `waiting` (offered at the door's next sync), `downloading`, `downloaded` (the door holds
    /// all of it but does not run it: it is installing it, or refused it, signed with another
    /// firmware key or built for another flash size, and is not sent it again), `installed`,
    /// `newer_running` (the door runs a newer version and is offered nothing) or
    /// `not_supported` (the door takes no update over the air).
    pub state: String,
    /// While `downloading` or `downloaded`: the bytes of the signed file the door holds.
    pub downloaded: Option<i64>,
}

impl FirmwareUpdate {
    /// Its state in words, as the door's page and the dashboard say it: `installed`,
    /// `downloading 42%`, ….
    pub fn describe(&self) -> String {
        match (self.state.as_str(), self.downloaded) {
            ("downloaded", _) => "downloaded but not running: the door is installing it, or \
                                  refused it (signed with another key, or for another flash size)"
                .into(),
            ("downloading", Some(bytes)) => {
                format!("downloading {}%", bytes * 100 / self.size.max(1))
            }
            ("waiting", _) => "waiting for the door's next sync".into(),
            ("newer_running", _) => "the door runs a newer version".into(),
            ("not_supported", _) => "the door takes no updates over the air".into(),
            (other, _) => other.replace('_', " "),
        }
    }
}

type DoorFirmwareRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<i64>,
);

/// The firmware of every door, or of one, by door id.
pub async fn doors_firmware(
    state: &AppState,
    door: Option<i64>,
) -> Result<HashMap<i64, DoorFirmware>, sqlx::Error> {
    let select = "SELECT d.id, d.firmware_version, d.firmware_partial_version, \
        d.firmware_partial_offset, f.id, f.version, f.flash_mb, f.size \
        FROM doors d LEFT JOIN firmware_images f ON f.id = d.firmware_id";
    let rows: Vec<DoorFirmwareRow> = match door {
        Some(id) => {
            sqlx::query_as(&format!("{select} WHERE d.id = $1"))
                .bind(id)
                .fetch_all(state.db.pool())
                .await?
        }
        None => sqlx::query_as(select).fetch_all(state.db.pool()).await?,
    };
    let u32_of = |v: i64| u32::try_from(v).ok();
    Ok(rows
        .into_iter()
        .map(|r| {
            let assigned = match (r.4, r.5, r.6, r.7) {
                (Some(id), Some(version), Some(flash_mb), Some(size)) => Some(Assigned {
                    id,
                    version: version_of(version),
                    flash_mb: u8::try_from(flash_mb).unwrap_or(0),
                    size,
                }),
                _ => None,
            };
            let firmware = DoorFirmware {
                running: r.1.and_then(u32_of),
                partial: r.2.and_then(u32_of).zip(r.3.and_then(u32_of)),
                assigned,
            };
            (r.0, firmware)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn signed(len: usize, version: Version, flash_mb: u8) -> Vec<u8> {
        let image: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        chronolock_core::firmware::sign(
            &image,
            version,
            flash_mb,
            &SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap_or_default()
    }

    #[test]
    fn whole_signed_files_pass_and_damaged_ones_are_named() {
        let v = Version::new(1, 2, 3);
        let good = signed(5000, v, 4);
        let header = check_file(&good).map_err(|e| e.to_string());
        assert_eq!(
            header.map(|h| (h.version, h.len, h.flash_mb)),
            Ok((v, 5000, 4))
        );

        let refused = |bytes: &[u8]| check_file(bytes).err().unwrap_or_default();
        assert!(refused(&[]).contains("choose"));
        assert_eq!(
            refused(b"\x7fELF and the rest of an executable"),
            "not a signed chronolock firmware image"
        );
        assert!(refused(&good[..good.len() - 1]).starts_with("image ends early"));
        assert!(refused(&good[..60]).starts_with("image ends early"));
        let mut longer = good.clone();
        longer.push(0);
        assert!(refused(&longer).contains("1 more than its header announces"));
        let mut changed = good.clone();
        changed[HEADER_LEN + 10] ^= 1;
        assert_eq!(refused(&changed), "image bytes are not the signed ones");
        assert!(refused(&signed(100, v, 2)).contains("for 2 MB flash"));
        assert!(refused(&signed(100, Version(0), 4)).contains("0.0.0"));
        assert!(refused(&vec![0; MAX_FILE + 1]).contains("at most"));
    }

    #[test]
    fn update_states_in_words() {
        let wanted = Version::new(1, 2, 0);
        let door = |running: Option<u32>, partial: Option<(u32, u32)>| DoorFirmware {
            running,
            partial,
            assigned: Some(Assigned {
                id: 1,
                version: wanted,
                flash_mb: 4,
                size: 1000,
            }),
        };
        let old = Version::new(1, 0, 0).0;
        assert_eq!(DoorFirmware::default().state_text(), None);
        assert_eq!(DoorFirmware::default().running_text(), "—");
        assert_eq!(door(Some(0), None).running_text(), "—");
        assert_eq!(door(Some(old), None).running_text(), "1.0.0");
        let text = |d: DoorFirmware| d.state_text().unwrap_or_default();
        assert_eq!(text(door(None, None)), "waiting for the door's next sync");
        assert_eq!(
            text(door(Some(old), None)),
            "waiting for the door's next sync"
        );
        assert_eq!(
            text(door(Some(old), Some((wanted.0, 425)))),
            "downloading 42%"
        );
        assert_eq!(
            text(door(Some(old), Some((wanted.0, 999)))),
            "downloading 99%"
        );
        assert!(text(door(Some(old), Some((wanted.0, 1000)))).starts_with("downloaded but not"));
        assert_eq!(
            door(Some(old), Some((wanted.0, 1000)))
                .update()
                .map(|u| u.state),
            Some("downloaded".into())
        );
        // The start of another version is not this update's progress.
        assert_eq!(
            text(door(Some(old), Some((wanted.0 + 1, 500)))),
            "waiting for the door's next sync"
        );
        assert_eq!(text(door(Some(wanted.0), None)), "installed");
        assert_eq!(
            text(door(Some(wanted.0 + 1), None)),
            "the door runs a newer version"
        );
        assert_eq!(
            text(door(Some(0), None)),
            "the door takes no updates over the air"
        );
        let update = door(Some(old), Some((wanted.0, 425))).update();
        assert_eq!(
            update.map(|u| (u.version, u.state, u.downloaded)),
            Some(("1.2.0".into(), "downloading".into(), Some(425)))
        );
    }
}
