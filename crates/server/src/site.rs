//! The site's signing key: made on first start and kept in the database (so that every server
//! process sharing a PostgreSQL database signs with the same key). Allow-lists and the device
//! protocol's time answers are signed with it; only its public half is ever sent out.

use ed25519_dalek::SigningKey;

use crate::db::{Db, DbError};

const SETTING: &str = "site_signing_key";

/// Makes the key if there is none (the first process to start wins), and returns its public half.
pub async fn ensure_key(db: &Db) -> Result<[u8; 32], DbError> {
    signing_key(db).await.map(|k| k.verifying_key().to_bytes())
}

/// The site's signing key, made on first use.
pub async fn signing_key(db: &Db) -> Result<SigningKey, DbError> {
    let fresh = SigningKey::generate(&mut rand::rngs::OsRng);
    let hex = db
        .setting_or_insert(SETTING, &data_encoding::HEXLOWER.encode(&fresh.to_bytes()))
        .await?;
    let bytes: [u8; 32] = data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            DbError::Query(sqlx::Error::Protocol(format!(
                "setting {SETTING} is not a 32-byte hex key"
            )))
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}
