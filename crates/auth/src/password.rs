//! Password policy and argon2id hashing, run on the blocking pool so a login never stalls the
//! async runtime.
//!
//! Every hash and verification (including the dummy verification of an unknown email) takes a
//! slot of a semaphore sized to the CPUs the process may use (`ERP_PASSWORD_HASH_CONCURRENCY`),
//! so memory is bounded by slots × `ERP_ARGON2_MEMORY_KIB` however many logins arrive at once. A
//! caller that gets no slot within `ERP_PASSWORD_HASH_QUEUE_TIMEOUT_MS` is refused with
//! [`AuthError::Overloaded`] (503 `UNAVAILABLE`, `Retry-After`). The slot is held by the blocking
//! task itself, so a caller that gives up (a cancelled request) cannot free it while argon2 still
//! runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;
use crate::error::AuthError;
use crate::metrics::AuthMetrics;

/// The `Retry-After` of a caller refused for want of a hashing slot.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// One permit per hash allowed to run at once.
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    metrics: AuthMetrics,
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig, metrics: AuthMetrics) -> Result<Self, AuthError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(AuthError::internal("argon2 parameters"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = argon2
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes(), &salt)
            .map_err(AuthError::internal("argon2"))?
            .to_string();
        Ok(Self {
            argon2: Arc::new(argon2),
            dummy_hash: Arc::new(dummy_hash),
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            queue_timeout: config.queue_timeout,
            metrics,
        })
    }

    /// Runs `work` on the blocking pool once a hashing slot is free, or refuses with
    /// [`AuthError::Overloaded`] when none frees up within the queue deadline.
    async fn bounded<T, F>(&self, work: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>, &str) -> Result<T, AuthError> + Send + 'static,
    {
        let queued = Instant::now();
        let acquired =
            tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await;
        self.metrics
            .password_hash_queue_seconds
            .observe(queued.elapsed().as_secs_f64());
        let permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => {
                return Err(AuthError::internal("password hashing stopped")(closed));
            }
            Err(_elapsed) => {
                self.metrics.password_hash_rejections.inc();
                return Err(AuthError::Overloaded {
                    retry_after: OVERLOADED_RETRY_AFTER,
                });
            }
        };
        let argon2 = Arc::clone(&self.argon2);
        let dummy_hash = Arc::clone(&self.dummy_hash);
        let hash_seconds = self.metrics.hash_seconds.clone();
        tokio::task::spawn_blocking(move || {
            // Released when argon2 is done, not when the caller stops waiting.
            let _permit = permit;
            let started = Instant::now();
            let outcome = work(&argon2, &dummy_hash);
            hash_seconds.observe(started.elapsed().as_secs_f64());
            outcome
        })
        .await
        .map_err(AuthError::internal("hashing task"))?
    }

    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.bounded(move |argon2, _| {
            let salt = SaltString::generate(&mut OsRng);
            argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(AuthError::internal("argon2"))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it spends the same time
    /// and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        self.bounded(move |argon2, dummy_hash| {
            let known = hash.is_some();
            let hash = hash.as_deref().unwrap_or(dummy_hash);
            let parsed =
                PasswordHash::new(hash).map_err(AuthError::internal("stored hash unreadable"))?;
            let matches = argon2.verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(known && matches)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher_with(concurrency: usize, queue_timeout: Duration) -> (PasswordHasher, AuthMetrics) {
        let metrics = AuthMetrics::register(&prometheus::Registry::new()).unwrap();
        let hasher = PasswordHasher::new(
            &PasswordConfig {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
                concurrency,
                queue_timeout,
            },
            metrics.clone(),
        )
        .unwrap();
        (hasher, metrics)
    }

    fn hasher() -> PasswordHasher {
        hasher_with(2, Duration::from_secs(2)).0
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

    #[tokio::test]
    async fn no_more_than_the_slots_run_at_once_and_late_callers_are_refused() {
        let (hasher, metrics) = hasher_with(2, Duration::from_millis(50));
        // Occupy both slots with work that waits for a signal.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut busy = Vec::new();
        for _ in 0..2 {
            let hasher = hasher.clone();
            let released = Arc::clone(&released);
            let running = Arc::clone(&running);
            busy.push(tokio::spawn(async move {
                hasher
                    .bounded(move |_, _| {
                        running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = released.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
            }));
        }
        while running.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A third caller waits its 50 ms and is refused without hashing.
        let refused = hasher.verify("anything".into(), None).await.unwrap_err();
        assert!(matches!(
            refused,
            AuthError::Overloaded { retry_after } if retry_after == OVERLOADED_RETRY_AFTER
        ));
        assert_eq!(metrics.password_hash_rejections.get(), 1);
        release.send(()).unwrap();
        release.send(()).unwrap();
        for task in busy {
            task.await.unwrap().unwrap();
        }
        // A caller that gives up while argon2 runs does not free its slot before argon2 ends.
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let given_up = tokio::time::timeout(Duration::from_millis(200), {
            let released = Arc::clone(&released);
            let started = Arc::clone(&started);
            hasher.bounded(move |_, _| {
                started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = released.lock().unwrap().recv();
                Ok(())
            })
        })
        .await;
        assert!(given_up.is_err());
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hasher.slots.available_permits(), 1);
        release.send(()).unwrap();
        while hasher.slots.available_permits() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
        assert_eq!(hasher.slots.available_permits(), 2);
    }
}
