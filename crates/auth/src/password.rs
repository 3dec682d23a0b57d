//! Password policy and argon2id hashing, run on the blocking pool so a login never stalls the
//! async runtime.

use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordConfig;
use crate::error::AuthError;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Checks the password policy: 8 to 128 characters.
pub fn check_policy(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"))
    } else if chars > MAX_PASSWORD_CHARS {
        Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"))
    } else {
        Ok(())
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the account does not exist so an
    /// unknown email takes as long as a wrong password.
    dummy_hash: Arc<String>,
    on_hash: Arc<dyn Fn(std::time::Duration) + Send + Sync>,
}

impl PasswordHasher {
    pub fn new(
        config: &PasswordConfig,
        on_hash: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Result<Self, AuthError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| AuthError::Internal(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes(), &salt)
            .map_err(|e| AuthError::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            argon2: Arc::new(argon2),
            dummy_hash: Arc::new(dummy_hash),
            on_hash: Arc::new(on_hash),
        })
    }

    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let salt = SaltString::generate(&mut OsRng);
            let hash = this
                .argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Internal(format!("argon2: {e}")));
            (this.on_hash)(started.elapsed());
            hash
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it spends the same time
    /// and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| this.dummy_hash.as_str().to_owned());
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| AuthError::Internal(format!("stored hash unreadable: {e}")))?;
            let matches = this
                .argon2
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            (this.on_hash)(started.elapsed());
            Ok(known && matches)
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(
            &PasswordConfig {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            |_| {},
        )
        .unwrap()
    }

    #[test]
    fn policy_counts_characters_not_bytes() {
        assert!(check_policy("1234567").is_err());
        assert!(check_policy("12345678").is_ok());
        assert!(check_policy(&"é".repeat(128)).is_ok());
        assert!(check_policy(&"a".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let hasher = hasher();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }
}
