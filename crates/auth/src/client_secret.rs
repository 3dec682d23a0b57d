//! Service-account credentials: a public client id and a secret drawn from the operating
//! system's CSPRNG, of which only a SHA-256 digest is stored.
//!
//! Why SHA-256 and not argon2 as for passwords: argon2's cost exists to slow down guessing of
//! low-entropy, human-chosen passwords from a leaked hash. A 256-bit random secret cannot be
//! guessed from its digest however fast the hash is, so a slow hash would only spend CPU (and
//! hashing slots shared with logins) on every token request without adding any protection.
//! Digests are compared in constant time all the same.

use argon2::password_hash::Output;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::model::StoredSecret;

/// The prefix of every client id, so a client id is recognisable in logs and configuration.
pub const CLIENT_ID_PREFIX: &str = "sa_";

/// Random bytes in a secret: 256 bits.
pub const SECRET_BYTES: usize = 32;

fn random_url_safe(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// A new public client id: the prefix and 128 random bits.
pub fn new_client_id() -> String {
    format!("{CLIENT_ID_PREFIX}{}", random_url_safe(16))
}

/// A new secret (URL-safe base64 of [`SECRET_BYTES`] random bytes) and what is stored of it.
pub fn new_secret() -> (String, StoredSecret) {
    let secret = random_url_safe(SECRET_BYTES);
    let stored = StoredSecret {
        id: uuid::Uuid::now_v7().to_string(),
        sha256: sha256_hex(&secret),
    };
    (secret, stored)
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `presented` is the secret `stored` was made from. The digests are compared in
/// constant time (`password_hash::Output`'s equality, already in the tree through argon2).
pub fn matches(presented: &str, stored: &StoredSecret) -> bool {
    let presented = sha256_hex(presented);
    match (
        Output::new(presented.as_bytes()),
        Output::new(stored.sha256.as_bytes()),
    ) {
        (Ok(presented), Ok(stored)) => presented == stored,
        // A stored digest of another length is corrupt: it matches nothing.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_256_random_bits_and_only_their_digest_is_kept() {
        let (secret, stored) = new_secret();
        assert_eq!(URL_SAFE_NO_PAD.decode(&secret).unwrap().len(), SECRET_BYTES);
        assert!(!stored.sha256.contains(&secret));
        assert_eq!(stored.sha256.len(), 64);
        assert!(matches(&secret, &stored));
        assert!(!matches("wrong", &stored));
        assert!(!matches(&secret[1..], &stored));
        let (other, other_stored) = new_secret();
        assert_ne!(secret, other);
        assert_ne!(stored.id, other_stored.id);
        assert!(!matches(&secret, &other_stored));
    }

    #[test]
    fn client_ids_are_prefixed_and_unique() {
        let id = new_client_id();
        assert!(id.starts_with(CLIENT_ID_PREFIX));
        assert_eq!(id.len(), CLIENT_ID_PREFIX.len() + 22);
        assert_ne!(id, new_client_id());
    }

    #[test]
    fn a_corrupt_stored_digest_matches_nothing() {
        let stored = StoredSecret {
            id: "s".into(),
            sha256: String::new(),
        };
        assert!(!matches("", &stored));
    }
}
