//! Waiting in tests without fixed sleeps: poll an eventual effect up to the deadline the contract
//! gives it, and start rate-limit tests at the start of a fresh window.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How often [`eventually`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` every [`POLL_INTERVAL`] until it answers `Ok`, and returns that value with how
/// long after the call the successful probe was *sent*. Panics with the last `Err` if no probe
/// sent within `within` succeeded: use it to assert that an eventual effect (a revocation, a
/// delivery) happened within the deadline the contract allows (plus a small margin for the
/// test's own requests), instead of asserting at once (which races) or after a fixed sleep
/// (which is slow, and says nothing about the deadline).
///
/// ```no_run
/// # async fn example(client: reqwest::Client) {
/// use std::time::Duration;
/// let (_, took) = erp_testkit::eventually(Duration::from_millis(1100), || async {
///     let status = client.get("http://gateway/api/v1/auth/me").send().await.unwrap().status();
///     if status == 401 { Ok(()) } else { Err(status) }
/// })
/// .await;
/// println!("revoked after {took:?}");
/// # }
/// ```
pub async fn eventually<T, E, F, Fut>(within: Duration, probe: F) -> (T, Duration)
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    eventually_every(within, POLL_INTERVAL, probe).await
}

/// [`eventually`] polling every `interval`.
pub async fn eventually_every<T, E, F, Fut>(
    within: Duration,
    interval: Duration,
    mut probe: F,
) -> (T, Duration)
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        let sent = started.elapsed();
        attempts += 1;
        match probe().await {
            Ok(value) => return (value, sent),
            Err(last) => {
                assert!(
                    started.elapsed() < within,
                    "not within {within:?} ({attempts} attempts, the last sent after {sent:?}); \
                     last: {last:?}"
                );
            }
        }
        tokio::time::sleep(interval.min(within.saturating_sub(started.elapsed()))).await;
    }
}

/// Seconds left in the current UTC minute (1..=60).
pub fn minute_left() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    Duration::from_secs(60) - Duration::from_nanos((now.as_nanos() % 60_000_000_000) as u64)
}

/// Waits, if need be, until the current UTC minute has at least `need` left, for tests of limits
/// counted in fixed one-minute windows (the gateway's rate limits): a test that trips one in
/// less than `need` then never crosses a window boundary. `need` is at most 50 s.
pub async fn fresh_minute_window(need: Duration) {
    assert!(need <= Duration::from_secs(50), "{need:?} of a minute");
    let left = minute_left();
    if left < need {
        // Into the next minute, with a margin for clock granularity.
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success_and_when_it_was_sent() {
        let mut calls = 0;
        let (value, sent) = eventually(Duration::from_secs(1), || {
            calls += 1;
            let call = calls;
            async move { if call == 3 { Ok(call) } else { Err(call) } }
        })
        .await;
        assert_eq!(value, 3);
        assert!(
            sent >= 2 * POLL_INTERVAL && sent < Duration::from_secs(1),
            "{sent:?}"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "not within 100ms")]
    async fn eventually_panics_with_the_last_answer_after_the_deadline() {
        eventually(Duration::from_millis(100), || async {
            Err::<(), _>("still 200")
        })
        .await;
    }

    #[test]
    fn a_minute_has_between_zero_and_sixty_seconds_left() {
        let left = minute_left();
        assert!(
            left > Duration::ZERO && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }
}
