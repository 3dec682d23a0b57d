//! Rate limits shared by every gateway replica: a fixed one-minute window counted in Redis per
//! policy and subject (a user, or a client IP when anonymous).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::redis::RedisStore;
use prometheus::IntCounterVec;

#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisStore,
    rejected: IntCounterVec,
}

impl RateLimiter {
    pub fn new(redis: RedisStore, rejected: IntCounterVec) -> Self {
        Self { redis, rejected }
    }

    /// Counts one request of `subject` under `policy`; refuses it with `RATE_LIMITED` and a
    /// `Retry-After` once `per_minute` is exceeded. A limit of 0 is off. If Redis cannot be
    /// reached the request passes: rate limiting protects capacity, it is not access control.
    pub async fn check(
        &self,
        policy: &str,
        subject: &str,
        per_minute: u32,
    ) -> Result<(), ApiError> {
        if per_minute == 0 {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let window = now.as_secs() / 60;
        let key = self.redis.key(&format!("rl:{policy}:{subject}:{window}"));
        let mut connection = self.redis.connection();
        let counted: redis::RedisResult<(u64,)> = redis::pipe()
            .incr(&key, 1u64)
            .expire(&key, 120)
            .ignore()
            .query_async(&mut connection)
            .await;
        match counted {
            Ok((count,)) if count > u64::from(per_minute) => {
                self.rejected.with_label_values(&[policy]).inc();
                let retry_after = Duration::from_secs(60 - now.as_secs() % 60);
                Err(
                    ApiError::new(ErrorCode::RateLimited, "too many requests; slow down")
                        .with_retry_after(retry_after),
                )
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; letting the request through");
                Ok(())
            }
        }
    }
}
