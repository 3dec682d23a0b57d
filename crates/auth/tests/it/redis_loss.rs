//! Sessions survive losing Redis: after a FLUSHALL or a restart of an empty Redis, access and
//! refresh tokens keep working, and logged-out, revoked or reused ones stay refused. Each test
//! runs against a Redis server of its own (the shared test Redis is never flushed).

use crate::common::{TestAuth, as_caller, code, refresh};
use erp_platform::identity::{Caller, Role};
use erp_proto::auth::v1 as pb;
use erp_testkit::PrivateRedis;

async fn logout(auth: &TestAuth, user_id: &str, login: &pb::LoginResponse) {
    let caller = Caller {
        user_id: user_id.to_owned(),
        roles: vec![Role::User],
    };
    auth.client()
        .logout(as_caller(
            &caller,
            pb::LogoutRequest {
                access_token: login.access_token.clone(),
                refresh_token: Some(login.refresh_token.clone()),
            },
        ))
        .await
        .unwrap();
}

async fn revoked(auth: &TestAuth, access_token: &str) {
    let introspection = auth.introspect(access_token).await;
    assert!(!introspection.active);
    assert_eq!(
        introspection.inactive_reason,
        pb::InactiveReason::Revoked as i32
    );
}

/// Redis is flushed, then restarted empty: what was active stays active, what was revoked stays
/// revoked, and rotation with reuse detection goes on from MongoDB.
#[tokio::test]
async fn sessions_and_revocations_survive_a_flush_and_an_empty_restart() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let auth = TestAuth::start(&[("ERP_REDIS_URL", url.as_str())]).await;
    let user = auth.register("loss@example.com", "password-123").await;
    let kept = auth
        .login("loss@example.com", "password-123")
        .await
        .unwrap();
    let rotated = auth
        .login("loss@example.com", "password-123")
        .await
        .unwrap();
    let rotated_next = refresh(&auth, &rotated.refresh_token).await.unwrap();
    let logged_out = auth
        .login("loss@example.com", "password-123")
        .await
        .unwrap();
    logout(&auth, &user.id, &logged_out).await;
    let reused = auth
        .login("loss@example.com", "password-123")
        .await
        .unwrap();
    let reused_next = refresh(&auth, &reused.refresh_token).await.unwrap();
    let refused = refresh(&auth, &reused.refresh_token).await.unwrap_err();
    assert_eq!(code(&refused), "REFRESH_TOKEN_REUSED");
    let later = auth
        .login("loss@example.com", "password-123")
        .await
        .unwrap();

    redis.flush_all().await;

    // Access tokens: active ones still active, revoked ones not revived.
    assert!(auth.introspect(&kept.access_token).await.active);
    assert!(auth.introspect(&rotated_next.access_token).await.active);
    revoked(&auth, &logged_out.access_token).await;
    revoked(&auth, &reused_next.access_token).await;
    // Refresh tokens: the newest rotates, a logged-out one is dead, the reuse-revoked family
    // stays revoked.
    let kept_next = refresh(&auth, &kept.refresh_token).await.unwrap();
    assert!(auth.introspect(&kept_next.access_token).await.active);
    let dead = refresh(&auth, &logged_out.refresh_token).await.unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");
    let dead = refresh(&auth, &reused_next.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");
    // Reuse is still detected: the token rotated before the flush revokes its family.
    let reuse = refresh(&auth, &rotated.refresh_token).await.unwrap_err();
    assert_eq!(code(&reuse), "REFRESH_TOKEN_REUSED");
    revoked(&auth, &rotated_next.access_token).await;
    let dead = refresh(&auth, &rotated_next.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");

    // A logout while the cache is cold (the family was just read back as active) holds.
    assert!(auth.introspect(&later.access_token).await.active);
    logout(&auth, &user.id, &later).await;
    revoked(&auth, &later.access_token).await;

    redis.restart_empty().await;

    // The restart is noticed by the next commands (the connection manager reconnects).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let introspection = loop {
        match auth
            .client()
            .introspect(pb::IntrospectRequest {
                access_token: kept_next.access_token.clone(),
            })
            .await
        {
            Ok(answer) => break answer.into_inner(),
            Err(status) => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert!(introspection.active);
    revoked(&auth, &later.access_token).await;
    revoked(&auth, &logged_out.access_token).await;
    revoked(&auth, &rotated_next.access_token).await;
    let dead = refresh(&auth, &later.refresh_token).await.unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");
    let again = refresh(&auth, &kept_next.refresh_token).await.unwrap();
    assert!(auth.introspect(&again.access_token).await.active);
    auth.stop().await;
}

/// Disabling a user revokes their sessions durably: re-enabled after a Redis loss, the old
/// sessions stay revoked.
#[tokio::test]
async fn revocations_of_a_disabled_user_survive_a_flush() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let auth = TestAuth::start(&[("ERP_REDIS_URL", url.as_str())]).await;
    let admin = auth.admin().await;
    let user = auth.register("gone@example.com", "password-123").await;
    let login = auth
        .login("gone@example.com", "password-123")
        .await
        .unwrap();
    let update = |disabled: bool| {
        let mut client = auth.client();
        let request = as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: user.id.clone(),
                roles: None,
                disabled: Some(disabled),
                password: None,
                username: None,
            },
        );
        async move { client.update_user(request).await.unwrap() }
    };
    update(true).await;
    redis.flush_all().await;
    update(false).await;
    revoked(&auth, &login.access_token).await;
    let dead = refresh(&auth, &login.refresh_token).await.unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");
    let fresh = auth
        .login("gone@example.com", "password-123")
        .await
        .unwrap();
    assert!(auth.introspect(&fresh.access_token).await.active);
    auth.stop().await;
}

/// Sessions issued before they were kept in MongoDB (in Redis only) keep working after the
/// upgrade: their refresh token is adopted on first use, with reuse detection intact.
#[tokio::test]
async fn sessions_issued_before_the_upgrade_are_adopted() {
    use sha2::{Digest, Sha256};
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let auth = TestAuth::start(&[("ERP_REDIS_URL", url.as_str())]).await;
    let user = auth.register("legacy@example.com", "password-123").await;
    let prefix = auth.redis_prefix();
    let token = "legacy-refresh-token-0123456789abcdefghijklmnop";
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let family = "0190a0a0-0000-7000-8000-000000000001";
    let set = redis
        .command(&format!(
            "HSET {prefix}auth:rt:{hash} u {} f {family} s a",
            user.id
        ))
        .await;
    assert_eq!(set, ":3");
    assert_eq!(
        redis
            .command(&format!("SET {prefix}auth:rf:{family} a EX 3600"))
            .await,
        "+OK"
    );

    let rotated = refresh(&auth, token).await.unwrap();
    assert!(auth.introspect(&rotated.access_token).await.active);
    redis.flush_all().await;
    assert!(auth.introspect(&rotated.access_token).await.active);
    let reuse = refresh(&auth, token).await.unwrap_err();
    assert_eq!(code(&reuse), "REFRESH_TOKEN_REUSED");
    revoked(&auth, &rotated.access_token).await;
    auth.stop().await;
}
