//! Doors as devices: pairing, and (in [`crate::device_api`]) the device protocol.
//!
//! An admin asks for a pairing code for a door; the code is shown once, only its SHA-256 is
//! stored, and it expires after [`PAIRING_TTL_S`]. The device that presents it during enrolment
//! gets its own key; asking for a new code leaves the current device working until the new one
//! enrols.

use rand::Rng;

use crate::model::ModelError;
use crate::AppState;

/// How long a pairing code stays usable.
pub const PAIRING_TTL_S: i64 = 24 * 3600;

/// Letters and digits that cannot be mistaken for one another (no 0/O, 1/I/L, U).
const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ01";

/// A fresh pairing code, `XXXX-XXXX-XXXX` (60 bits).
fn fresh_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let alphabet = &ALPHABET[..30];
    let chars: Vec<char> = (0..12)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect();
    format!(
        "{}-{}-{}",
        chars[..4].iter().collect::<String>(),
        chars[4..8].iter().collect::<String>(),
        chars[8..].iter().collect::<String>()
    )
}

/// The code as compared: upper case, without separators or spaces.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// SHA-256 of the normalized code, hex; what the database keeps (the device proves the code
/// with the same hash, [`chronolock_core::protocol::pairing_code_hash`]).
pub fn code_hash(code: &str) -> String {
    data_encoding::HEXLOWER.encode(&chronolock_core::protocol::pairing_code_hash(code))
}

/// Makes a new one-time pairing code for a door and returns it (the only time it is seen).
pub async fn new_pairing_code(state: &AppState, door_id: i64) -> Result<String, ModelError> {
    let code = fresh_code();
    let updated =
        sqlx::query("UPDATE doors SET pairing_hash = $1, pairing_expires = $2 WHERE id = $3")
            .bind(code_hash(&code))
            .bind(crate::now_unix() + PAIRING_TTL_S)
            .bind(door_id)
            .execute(state.db.pool())
            .await?
            .rows_affected();
    if updated == 0 {
        return Err(ModelError::NotFound);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_unambiguous() {
        let code = fresh_code();
        assert_eq!(code.len(), 14);
        assert_eq!(normalize_code(&code).len(), 12);
        assert!(!code.contains(['0', '1', 'O', 'I', 'L', 'U']));
        assert_eq!(
            code_hash(&code),
            code_hash(&code.to_lowercase().replace('-', " "))
        );
    }
}
