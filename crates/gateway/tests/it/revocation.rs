//! Revocation within one second, also when the change races requests in flight: an admin
//! demoted while eight readers hammer an admin-only route loses access within a second, every
//! time, also right after the revocation channel's subscriptions were cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{NO_RATE_LIMITS, Platform, STAFF_PASSWORD, Session};
use erp_testkit::PrivateRedis;
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

const READERS: usize = 8;
const REPETITIONS: usize = 20;
const ADMIN_ONLY: &str = "/users?limit=1";
/// Fresh sessions per reader and repetition: each is an introspection cache miss, so answers
/// from auth are in flight when the demotion's eviction lands.
const FRESH_TOKENS: usize = 2;
async fn set_roles(platform: &Platform, admin: &Session, id: &str, roles: &[&str]) {
    platform
        .change_user(admin, id, json!({ "roles": roles }))
        .await;
}

async fn wait_for(platform: &Platform, token: &str, expected: StatusCode) {
    erp_testkit::eventually(Duration::from_secs(10), || async {
        let (status, _) = platform.get(ADMIN_ONLY, token).await;
        if status == expected {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

/// One demotion raced by readers; `before_demotion` runs just before it (e.g. cutting the
/// subscriptions). Returns how long after the demotion's answer the last 200 was sent.
async fn demote_under_load<F, Fut>(
    platform: &Arc<Platform>,
    admin: &Session,
    demoted: &Session,
    sessions: &mut [String],
    before_demotion: F,
) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    set_roles(platform, admin, &demoted.id, &["ADMIN"]).await;
    wait_for(platform, &demoted.access_token, StatusCode::OK).await;
    // Fresh access tokens by refreshing each reader's own session (parallel logins of one account
    // would contend on its record).
    let tokens = futures::future::join_all(sessions.iter_mut().map(|refresh_token| async {
        let mut tokens = Vec::new();
        for _ in 0..FRESH_TOKENS {
            let (status, body) = platform.refresh(&json!(refresh_token.as_str())).await;
            if status != StatusCode::OK {
                let output = platform.auth().output();
                let errors: Vec<&str> = output
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                    .collect();
                panic!("refresh: {status} {body}\nauth: {errors:#?}");
            }
            *refresh_token = body["refreshToken"].as_str().unwrap().to_owned();
            tokens.push(body["accessToken"].as_str().unwrap().to_owned());
        }
        tokens
    }))
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = tokens
        .into_iter()
        .map(|tokens| {
            let platform = Arc::clone(platform);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let token = &tokens[round % tokens.len()];
                    round += 1;
                    let sent = Instant::now();
                    let (status, body) = platform.get(ADMIN_ONLY, token).await;
                    assert!(
                        status == StatusCode::OK || status == StatusCode::FORBIDDEN,
                        "{status}: {body}"
                    );
                    seen.push((sent, status));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(15)).await;
    before_demotion().await;
    set_roles(platform, admin, &demoted.id, &["USER"]).await;
    let demoted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut last_allowed = Duration::ZERO;
    let mut after_deadline = 0;
    for reader in readers {
        for (sent, status) in reader.await.unwrap() {
            let since = sent.saturating_duration_since(demoted_at);
            if sent > demoted_at && status == StatusCode::OK {
                last_allowed = last_allowed.max(since);
            }
            if since > Duration::from_secs(1) {
                after_deadline += 1;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "a request sent {since:?} after the demotion was allowed"
                );
            }
        }
    }
    assert!(after_deadline > 0, "the readers kept reading past a second");
    last_allowed
}

/// The admin to demote, and one refresh token per reader (sessions of their own).
async fn demoted_admin(
    platform: &Platform,
    admin: &Session,
    email: &str,
) -> (Session, Vec<String>) {
    let demoted = platform.staff(admin, email, &["ADMIN"]).await;
    let mut sessions = Vec::new();
    for _ in 0..READERS {
        sessions.push(platform.login(email, STAFF_PASSWORD).await.refresh_token);
    }
    (demoted, sessions)
}

/// On the multi-thread runtime, so that readers and the demotion really run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_raced_by_readers_is_effective_within_a_second() {
    let platform = Arc::new(
        Platform::builder()
            .gateway_envs(&NO_RATE_LIMITS)
            .start()
            .await,
    );
    let admin = platform.admin().await;
    let (demoted, mut sessions) = demoted_admin(&platform, &admin, "raced-admin@example.com").await;
    let mut worst = Duration::ZERO;
    for _ in 0..REPETITIONS {
        worst = worst
            .max(demote_under_load(&platform, &admin, &demoted, &mut sessions, || async {}).await);
    }
    eprintln!("latest allowed request after a demotion: {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_right_after_the_subscriptions_were_cut_is_effective_within_a_second() {
    // A Redis of this test's own: cutting every pub/sub connection of the shared one would cut
    // other tests' subscriptions too.
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let platform = Arc::new(
        Platform::builder()
            .env("ERP_REDIS_URL", &url)
            .gateway_envs(&NO_RATE_LIMITS)
            .start()
            .await,
    );
    let admin = platform.admin().await;
    let (demoted, mut sessions) = demoted_admin(&platform, &admin, "cut-admin@example.com").await;
    let mut worst = Duration::ZERO;
    for _ in 0..REPETITIONS {
        let last = demote_under_load(&platform, &admin, &demoted, &mut sessions, || async {
            let killed = redis.command("CLIENT KILL TYPE pubsub").await;
            assert!(killed.starts_with(':'), "{killed}");
        })
        .await;
        worst = worst.max(last);
    }
    eprintln!("latest allowed request after a demotion (subscriptions cut): {worst:?}");
}
