//! A site's lockdown order: the site key's signed word that its doors refuse every credential
//! but EMERGENCY entries (`on`), or that they go back to normal (`!on`).
//!
//! An order is signed like an allow-list, by the site's Ed25519 key, so that only the backend
//! (or whoever holds that key) can start or end a lockdown: a forged or altered order does not
//! verify. Each order carries the site's next sequence number; a door takes only an order newer
//! than the one it holds and keeps that order in flash, so that replaying an old "lockdown
//! over" cannot lift a lockdown, and a reboot does not forget one. The order names no door: one
//! order serves every door of the site, and a door paired to another site, whose key differs,
//! does not take it.
//!
//! Layout ([`ORDER_LEN`] bytes, little-endian): sequence (u64), state (u64: 1 on, 0 off),
//! issued (i64 Unix seconds, for people and logs), Ed25519 signature over the context
//! `chronolock/lockdown/v1` and the 24 bytes before it.

use ed25519_dalek::{Signature, VerifyingKey};

/// Length of a signed order.
pub const ORDER_LEN: usize = 24 + 64;

const CONTEXT: &[u8] = b"chronolock/lockdown/v1";

/// A lockdown order, as signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockdownOrder {
    /// The site's sequence number: a door takes only an order above the one it holds.
    pub seq: u64,
    /// Lockdown on (true) or over (false).
    pub on: bool,
    /// When it was given, Unix seconds.
    pub issued_unix: i64,
}

/// Why an order was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockdownError {
    /// Not signed by the site's key (or no site key is known yet).
    BadSignature,
    /// A state other than 0 or 1, or sequence 0.
    Malformed,
    /// Not newer than the order the door holds.
    Stale {
        /// The sequence the door holds.
        held: u64,
        /// The sequence offered.
        offered: u64,
    },
}

impl LockdownError {
    /// A short, stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            LockdownError::BadSignature => "lockdown order not signed by the site",
            LockdownError::Malformed => "malformed lockdown order",
            LockdownError::Stale { .. } => "lockdown order older than the one held",
        }
    }
}

impl core::fmt::Display for LockdownError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LockdownOrder {
    fn message(&self) -> [u8; 22 + 24] {
        let mut m = [0u8; 22 + 24];
        m[..22].copy_from_slice(CONTEXT);
        m[22..46].copy_from_slice(&self.fields());
        m
    }

    fn fields(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&u64::from(self.on).to_le_bytes());
        b[16..24].copy_from_slice(&self.issued_unix.to_le_bytes());
        b
    }

    /// The signed order.
    pub fn sign(&self, site: &ed25519_dalek::SigningKey) -> [u8; ORDER_LEN] {
        use ed25519_dalek::Signer as _;
        let mut out = [0u8; ORDER_LEN];
        out[..24].copy_from_slice(&self.fields());
        out[24..].copy_from_slice(&site.sign(&self.message()).to_bytes());
        out
    }

    /// Reads an order and checks the site's signature (strictly: no malleable signatures).
    pub fn verify(bytes: &[u8; ORDER_LEN], site: &VerifyingKey) -> Result<Self, LockdownError> {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            w
        };
        let on = match u64::from_le_bytes(word(8)) {
            0 => false,
            1 => true,
            _ => return Err(LockdownError::Malformed),
        };
        let order = LockdownOrder {
            seq: u64::from_le_bytes(word(0)),
            on,
            issued_unix: i64::from_le_bytes(word(16)),
        };
        if order.seq == 0 {
            return Err(LockdownError::Malformed);
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[24..]);
        site.verify_strict(&order.message(), &Signature::from_bytes(&sig))
            .map_err(|_| LockdownError::BadSignature)?;
        Ok(order)
    }

    /// The sequence number of a signed order without checking it (0 for none: all zeros).
    pub fn peek_seq(bytes: &[u8; ORDER_LEN]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_orders_verify_and_altered_ones_do_not() {
        let site = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let order = LockdownOrder {
            seq: 7,
            on: true,
            issued_unix: 1_795_510_740,
        };
        let bytes = order.sign(&site);
        assert_eq!(
            LockdownOrder::verify(&bytes, &site.verifying_key()),
            Ok(order)
        );
        assert_eq!(LockdownOrder::peek_seq(&bytes), 7);
        let mut lifted = bytes;
        lifted[8] = 0;
        assert_eq!(
            LockdownOrder::verify(&lifted, &site.verifying_key()),
            Err(LockdownError::BadSignature)
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        assert_eq!(
            LockdownOrder::verify(&bytes, &other.verifying_key()),
            Err(LockdownError::BadSignature)
        );
        let mut odd = bytes;
        odd[8] = 2;
        assert_eq!(
            LockdownOrder::verify(&odd, &site.verifying_key()),
            Err(LockdownError::Malformed)
        );
        assert_eq!(
            LockdownOrder::verify(&[0; ORDER_LEN], &site.verifying_key()),
            Err(LockdownError::Malformed)
        );
    }
}
