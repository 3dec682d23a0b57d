//! The Ed25519 keys access tokens are signed and verified with, and their JWKS form.
//!
//! The current private key comes from `ERP_JWT_PRIVATE_KEY_FILE` (PKCS#8 PEM, a Kubernetes Secret
//! in a cluster) or is generated at start for development. Besides it the ring verifies with, and
//! publishes in the JWKS, the public keys of
//! - previous signing keys (`ERP_JWT_PREVIOUS_PUBLIC_KEY_FILES`), whose tokens are still alive;
//! - next signing keys (`ERP_JWT_NEXT_PUBLIC_KEY_FILES`), that no replica signs with yet.
//!
//! A rolling rotation therefore never meets a replica that does not know a token's key:
//! (1) publish the next public key on every replica (`NEXT`) and roll out; (2) switch the private
//! key to the next one, listing the old public key as `PREVIOUS` (and no longer as `NEXT`), and
//! roll out: old and new replicas accept each other's tokens throughout; (3) after one access-token
//! lifetime, drop the previous key.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

use crate::error::AuthError;

/// A public key as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    pub kid: String,
    /// base64url of the 32-byte Ed25519 public key.
    pub x: String,
}

pub struct KeyRing {
    current_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    published: Vec<PublicJwk>,
}

impl KeyRing {
    /// A ring signing with `signing` and also verifying with `previous`.
    #[cfg(test)]
    pub fn new(
        signing: &ed25519_dalek::SigningKey,
        previous: &[ed25519_dalek::VerifyingKey],
    ) -> Result<Self, AuthError> {
        Self::with_next(signing, previous, &[])
    }

    /// A ring signing with `signing` and also verifying with (and publishing) `previous` keys and
    /// `next` keys, the latter before any replica signs with them.
    pub fn with_next(
        signing: &ed25519_dalek::SigningKey,
        previous: &[ed25519_dalek::VerifyingKey],
        next: &[ed25519_dalek::VerifyingKey],
    ) -> Result<Self, AuthError> {
        let der = signing
            .to_pkcs8_der()
            .map_err(AuthError::internal("encode signing key"))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut ring = Self {
            current_kid: String::new(),
            encoding,
            decoding: HashMap::new(),
            published: Vec::new(),
        };
        ring.current_kid = ring.add_verifying(&signing.verifying_key());
        for key in next.iter().chain(previous) {
            ring.add_verifying(key);
        }
        Ok(ring)
    }

    /// A fresh random key.
    #[cfg(test)]
    pub fn generate() -> Result<Self, AuthError> {
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::new(&signing, &[])
    }

    /// Loads the configured keys; `Ok((ring, true))` when no private key was configured and one was
    /// generated.
    pub fn load(
        private_key_file: Option<&Path>,
        previous_public_key_files: &[impl AsRef<Path>],
        next_public_key_files: &[impl AsRef<Path>],
    ) -> Result<(Self, bool), AuthError> {
        let previous = read_public_keys(previous_public_key_files)?;
        let next = read_public_keys(next_public_key_files)?;
        match private_key_file {
            Some(path) => {
                let pem = read(path)?;
                let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(
                    AuthError::internal(format!(
                        "{} is not an Ed25519 private key (PKCS#8 PEM)",
                        path.display()
                    )),
                )?;
                Ok((Self::with_next(&signing, &previous, &next)?, false))
            }
            None => {
                let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
                Ok((Self::with_next(&signing, &previous, &next)?, true))
            }
        }
    }

    fn add_verifying(&mut self, key: &ed25519_dalek::VerifyingKey) -> String {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let kid = thumbprint(&x);
        if !self.decoding.contains_key(&kid) {
            // DecodingKey::from_ed_components takes the base64url public key.
            if let Ok(decoding) = DecodingKey::from_ed_components(&x) {
                self.decoding.insert(kid.clone(), decoding);
                self.published.push(PublicJwk {
                    kid: kid.clone(),
                    x,
                });
            }
        }
        kid
    }

    pub fn current_kid(&self) -> &str {
        &self.current_kid
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.decoding.get(kid)
    }

    /// The current key first, then next ones, then previous ones.
    pub fn public_keys(&self) -> &[PublicJwk] {
        &self.published
    }
}

fn read_public_keys(
    files: &[impl AsRef<Path>],
) -> Result<Vec<ed25519_dalek::VerifyingKey>, AuthError> {
    files
        .iter()
        .map(|path| {
            let pem = read(path.as_ref())?;
            ed25519_dalek::VerifyingKey::from_public_key_pem(&pem).map_err(AuthError::internal(
                format!(
                    "{} is not an Ed25519 public key (SPKI PEM)",
                    path.as_ref().display()
                ),
            ))
        })
        .collect()
}

fn read(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(AuthError::internal(format!(
        "cannot read {}",
        path.display()
    )))
}

/// RFC 7638 JWK thumbprint of an Ed25519 key: base64url(SHA-256 of the canonical JWK).
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_keys_are_published_after_the_current_one() {
        let old = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let new = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let ring = KeyRing::new(&new, &[old.verifying_key()]).unwrap();
        let keys = ring.public_keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].kid, ring.current_kid());
        assert_ne!(keys[0].kid, keys[1].kid);
        assert!(ring.decoding_key(&keys[1].kid).is_some());
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037, appendix A.3.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
