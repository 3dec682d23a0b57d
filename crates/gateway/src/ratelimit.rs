//! Rate limits shared by every gateway replica: a fixed one-minute window counted in Redis per
//! policy and subject (a user, or a client IP when anonymous).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::redis::RedisStore;
use prometheus::IntCounterVec;

/// Whether [`RateLimiter::enforce`] counts the request it judges.
enum Tally {
    /// Count it, then refuse once the count exceeds the limit ([`RateLimiter::check`]).
    CountThis,
    /// Only read the count: refuse once it has reached the limit ([`RateLimiter::within_budget`]).
    ReadOnly,
}

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
        self.enforce(policy, subject, per_minute, Tally::CountThis)
            .await
    }

    /// Refuses with `RATE_LIMITED` (and `Retry-After`) if `subject` has already had `budget`
    /// events of `policy` counted by [`Self::count`] this minute; does not count anything
    /// itself. A budget of 0 is off; without Redis, it passes.
    pub async fn within_budget(
        &self,
        policy: &str,
        subject: &str,
        budget: u32,
    ) -> Result<(), ApiError> {
        self.enforce(policy, subject, budget, Tally::ReadOnly).await
    }

    async fn enforce(
        &self,
        policy: &str,
        subject: &str,
        limit: u32,
        tally: Tally,
    ) -> Result<(), ApiError> {
        if limit == 0 {
            return Ok(());
        }
        let window = Window::now();
        let key = self.key(policy, subject, &window);
        let mut connection = self.redis.connection();
        let over = match tally {
            Tally::CountThis => {
                let counted: redis::RedisResult<(u64,)> = redis::pipe()
                    .incr(&key, 1u64)
                    .expire(&key, 120)
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                counted.map(|(count,)| count > u64::from(limit))
            }
            Tally::ReadOnly => {
                let counted: redis::RedisResult<Option<u64>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await;
                counted.map(|count| count.is_some_and(|count| count >= u64::from(limit)))
            }
        };
        self.verdict(policy, &window, over)
    }

    /// Refuses when the count says so; without Redis, lets the request through (rate limiting
    /// protects capacity, it is not access control).
    fn verdict(
        &self,
        policy: &str,
        window: &Window,
        over: redis::RedisResult<bool>,
    ) -> Result<(), ApiError> {
        match over {
            Ok(true) => Err(self.refuse(policy, window)),
            Ok(false) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; letting the request through");
                Ok(())
            }
        }
    }

    /// Counts one event of `subject` under `policy` for [`Self::within_budget`].
    pub async fn count(&self, policy: &str, subject: &str) {
        let key = self.key(policy, subject, &Window::now());
        let mut connection = self.redis.connection();
        let counted: redis::RedisResult<()> = redis::pipe()
            .incr(&key, 1u64)
            .ignore()
            .expire(&key, 120)
            .ignore()
            .query_async(&mut connection)
            .await;
        if let Err(error) = counted {
            tracing::warn!(%error, "rate limiter unavailable; not counted");
        }
    }

    fn key(&self, policy: &str, subject: &str, window: &Window) -> String {
        self.redis
            .key(&format!("rl:{policy}:{subject}:{}", window.minute))
    }

    fn refuse(&self, policy: &str, window: &Window) -> ApiError {
        self.rejected.with_label_values(&[policy]).inc();
        ApiError::new(ErrorCode::RateLimited, "too many requests; slow down")
            .with_retry_after(window.retry_after)
    }
}

/// The current one-minute window and how long until the next.
struct Window {
    minute: u64,
    retry_after: Duration,
}

impl Window {
    fn now() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            minute: now.as_secs() / 60,
            retry_after: Duration::from_secs(60 - now.as_secs() % 60),
        }
    }
}
