//! The site's card master key for secure cards: made by the server on first use and kept in
//! the database beside the signing key, never sent anywhere in clear. Each door receives it
//! inside its own allow-list, sealed with the key only that door shares with the server
//! (`chronolock_core::protocol::list_key` of its device key); the door derives each card's key
//! from it (NXP AN10922) as the card arrives.
//!
//! Rotation: [`rotate`] makes a new current key and keeps the old one as the previous key.
//! Doors receive both and try the previous key when a card refuses the current one, so cards
//! keep working until `chronolock card personalize --from-previous` has given each its new
//! keys; [`forget_previous`] then ends the rotation (and the old key's usefulness to anyone
//! who took it from a stolen door).

use chronolock_core::allowlist::CardMasterKeys;
use rand::RngCore;

use crate::db::{Db, DbError};

const CURRENT: &str = "card_master_key";
const PREVIOUS: &str = "card_master_key_previous";

fn format(key: &[u8; 16], version: u8) -> String {
    format!("{version}:{}", data_encoding::HEXLOWER.encode(key))
}

fn parse(setting: &str, value: &str) -> Result<([u8; 16], u8), DbError> {
    value
        .split_once(':')
        .and_then(|(v, hex)| {
            let version = v.parse().ok()?;
            let key = data_encoding::HEXLOWER.decode(hex.as_bytes()).ok()?;
            Some((key.try_into().ok()?, version))
        })
        .ok_or_else(|| {
            DbError::Query(sqlx::Error::Protocol(format!(
                "setting {setting} is not `version:32 hex digits`"
            )))
        })
}

fn fresh() -> [u8; 16] {
    let mut k = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

/// The site's card master keys, the current one made on first use (the first process wins).
pub async fn keys(db: &Db) -> Result<CardMasterKeys, DbError> {
    let current = db.setting_or_insert(CURRENT, &format(&fresh(), 1)).await?;
    let previous = match db.setting(PREVIOUS).await? {
        Some(p) if !p.is_empty() => Some(parse(PREVIOUS, &p)?),
        _ => None,
    };
    Ok(CardMasterKeys {
        current: parse(CURRENT, &current)?,
        previous,
    })
}

/// Why a rotation step was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A rotation is under way: its previous key is still in use.
    #[error("a rotation is under way (key {0} is still accepted): personalise the remaining cards with --from-previous, then run `chronolock card forget-previous-key`")]
    Underway(u8),
    /// No rotation is under way.
    #[error("no previous card master key is kept")]
    NoPrevious,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

async fn put(db: &Db, key: &str, value: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Starts a rotation: a new current key (the next version), the old one kept as previous.
/// Every door's list changes (the caller recompiles them). Returns the new version.
pub async fn rotate(db: &Db) -> Result<u8, RotateError> {
    let keys = keys(db).await?;
    if let Some((_, v)) = keys.previous {
        return Err(RotateError::Underway(v));
    }
    let (old, version) = keys.current;
    let next = version.wrapping_add(1).max(1);
    put(db, PREVIOUS, &format(&old, version)).await?;
    put(db, CURRENT, &format(&fresh(), next)).await?;
    Ok(next)
}

/// Ends a rotation: doors no longer accept cards that still hold the previous key's keys.
pub async fn forget_previous(db: &Db) -> Result<(), RotateError> {
    if keys(db).await?.previous.is_none() {
        return Err(RotateError::NoPrevious);
    }
    put(db, PREVIOUS, "").await?;
    Ok(())
}
