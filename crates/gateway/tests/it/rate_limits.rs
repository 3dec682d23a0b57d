//! Rate limits at their exact thresholds: a limit of N lets exactly N requests of a window
//! through and answers the next 429 `RATE_LIMITED` (problem+json) with `Retry-After` = the
//! seconds left in the window. The gateway counts in fixed UTC minutes, so each test starts with
//! enough of the current minute left to finish in it ([`erp_testkit::fresh_minute_window`]).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Platform, Reply};

/// Enough of the minute for a test's few dozen requests.
const NEED: Duration = Duration::from_secs(30);

/// Asserts a 429 `RATE_LIMITED` whose `Retry-After` is the rest of the current minute.
#[track_caller]
fn assert_limited(reply: &Reply) {
    let left = erp_testkit::minute_left().as_secs();
    reply.expect_problem(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry_after = reply.retry_after().expect("Retry-After");
    assert!(
        (1..=60).contains(&retry_after) && retry_after.abs_diff(left) <= 1,
        "Retry-After {retry_after} with {left} s of the window left"
    );
}

/// `GET /auth/me` as `token` (a user with no other requests this minute): exactly `limit`
/// answers 200, then 429 `RATE_LIMITED` with `Retry-After`.
pub async fn exhaust_user_limit(platform: &Platform, token: &str, limit: u32) {
    erp_testkit::fresh_minute_window(NEED).await;
    for i in 1..=limit {
        let reply = platform
            .send(Method::GET, "/auth/me", Some(token), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i} of {limit}: {reply:?}"
        );
    }
    assert_limited(
        &platform
            .send(Method::GET, "/auth/me", Some(token), None)
            .await,
    );
}

#[tokio::test]
async fn the_per_user_limit_lets_exactly_n_requests_through() {
    const LIMIT: u32 = 12;
    let platform = Platform::builder()
        .gateway_env("ERP_RATE_LIMIT_PER_MINUTE", &LIMIT.to_string())
        .start()
        .await;
    let first = platform.player("first@example.com").await;
    let second = platform.player("second@example.com").await;
    exhaust_user_limit(&platform, &first.access_token, LIMIT).await;
    // Every further request of that user this minute, on any route, is refused...
    assert_limited(
        &platform
            .send(Method::GET, "/events", Some(&first.access_token), None)
            .await,
    );
    // ...while another user's budget is their own.
    for _ in 0..3 {
        platform
            .send(Method::GET, "/auth/me", Some(&second.access_token), None)
            .await
            .expect(StatusCode::OK);
    }
}

#[tokio::test]
async fn the_credentials_limit_lets_exactly_n_attempts_through_per_address() {
    const LIMIT: u32 = 5;
    let platform = Platform::builder()
        .gateway_env("ERP_AUTH_RATE_LIMIT_PER_MINUTE", &LIMIT.to_string())
        .start()
        .await;
    erp_testkit::fresh_minute_window(NEED).await;
    // Login and registration share the per-address budget; the gateway refuses these bodies
    // itself (400), so only the limit is at work.
    for i in 1..=LIMIT {
        let path = if i % 2 == 0 {
            "/auth/login"
        } else {
            "/auth/register"
        };
        let reply = platform
            .send(Method::POST, path, None, Some(json!({})))
            .await;
        reply.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
    for path in ["/auth/login", "/auth/register"] {
        assert_limited(
            &platform
                .send(Method::POST, path, None, Some(json!({})))
                .await,
        );
    }
    // Other public routes are under the general per-address limit, not this one.
    platform
        .send(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refreshToken": "unknown"})),
        )
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "INVALID_REFRESH_TOKEN");
}

#[tokio::test]
async fn the_anonymous_limit_counts_public_routes_unknown_routes_and_wrong_methods() {
    const LIMIT: u32 = 6;
    let platform = Platform::builder()
        .gateway_env("ERP_RATE_LIMIT_PER_MINUTE", &LIMIT.to_string())
        .start()
        .await;
    erp_testkit::fresh_minute_window(NEED).await;
    for i in 1..=LIMIT {
        let refresh = json!({"refreshToken": "unknown"});
        let (reply, status) = match i % 3 {
            0 => (
                platform.send(Method::GET, "/nope", None, None).await,
                StatusCode::NOT_FOUND,
            ),
            1 => (
                platform.send(Method::PUT, "/auth/login", None, None).await,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            _ => (
                platform
                    .send(Method::POST, "/auth/refresh", None, Some(refresh))
                    .await,
                StatusCode::UNAUTHORIZED,
            ),
        };
        assert_eq!(reply.status, status, "request {i} of {LIMIT}: {reply:?}");
    }
    assert_limited(&platform.send(Method::GET, "/nope", None, None).await);
    assert_limited(
        &platform
            .send(
                Method::POST,
                "/auth/refresh",
                None,
                Some(json!({"refreshToken": "unknown"})),
            )
            .await,
    );
}
