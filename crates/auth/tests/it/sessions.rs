//! Sessions over gRPC against the real stores: refresh rotation and reuse, concurrency, logout,
//! introspection following role changes, disabling and deletion at once, revocation messages,
//! signing keys and key rotation.

use std::time::Duration;

use crate::common::{TestAuth, as_caller, code, refresh};
use erp_platform::identity::{Caller, Role};
use erp_proto::auth::v1 as pb;
use erp_proto::common::v1 as common_pb;
use futures::StreamExt;

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let auth = TestAuth::start(&[]).await;
    auth.register("r@example.com", "password-123").await;
    let login = auth.login("r@example.com", "password-123").await.unwrap();

    let first = refresh(&auth, &login.refresh_token).await.unwrap();
    assert_ne!(first.refresh_token, login.refresh_token);
    assert!(auth.introspect(&first.access_token).await.active);

    // The old token again: reuse; the family, including the newest token, is revoked.
    let reused = refresh(&auth, &login.refresh_token).await.unwrap_err();
    assert_eq!(code(&reused), "REFRESH_TOKEN_REUSED");
    let newest = refresh(&auth, &first.refresh_token).await.unwrap_err();
    assert_eq!(code(&newest), "INVALID_REFRESH_TOKEN");
    let introspection = auth.introspect(&first.access_token).await;
    assert!(!introspection.active);
    assert_eq!(
        introspection.inactive_reason,
        pb::InactiveReason::Revoked as i32
    );

    let unknown = refresh(&auth, "not-a-token").await.unwrap_err();
    assert_eq!(code(&unknown), "INVALID_REFRESH_TOKEN");
    let empty = refresh(&auth, "").await.unwrap_err();
    assert_eq!(code(&empty), "INVALID_REFRESH_TOKEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_of_one_token_have_one_winner() {
    let auth = TestAuth::start(&[]).await;
    auth.register("c@example.com", "password-123").await;
    let login = auth.login("c@example.com", "password-123").await.unwrap();
    let attempts =
        futures::future::join_all((0..50).map(|_| refresh(&auth, &login.refresh_token))).await;
    let winners = attempts.iter().filter(|a| a.is_ok()).count();
    assert_eq!(winners, 1);
    for attempt in attempts.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(code(attempt), "REFRESH_TOKEN_REUSED");
    }
}

#[tokio::test]
async fn logout_ends_the_access_token_and_its_refresh_family() {
    let auth = TestAuth::start(&[]).await;
    let user = auth.register("l@example.com", "password-123").await;
    let login = auth.login("l@example.com", "password-123").await.unwrap();
    let other_session = auth.login("l@example.com", "password-123").await.unwrap();
    let caller = Caller {
        user_id: user.id.clone(),
        roles: vec![Role::User],
    };

    // Someone else cannot log this session out.
    let stranger = Caller {
        user_id: "someone-else".into(),
        roles: vec![Role::User],
    };
    let refused = auth
        .logout(&stranger, &login.access_token)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "FORBIDDEN");

    auth.logout(&caller, &login.access_token).await.unwrap();
    let introspection = auth.introspect(&login.access_token).await;
    assert!(!introspection.active);
    assert_eq!(
        introspection.inactive_reason,
        pb::InactiveReason::Revoked as i32
    );
    let dead = refresh(&auth, &login.refresh_token).await.unwrap_err();
    assert_eq!(code(&dead), "INVALID_REFRESH_TOKEN");
    // Another session of the same user is untouched.
    assert!(auth.introspect(&other_session.access_token).await.active);
    refresh(&auth, &other_session.refresh_token).await.unwrap();
}

#[tokio::test]
async fn introspection_follows_role_changes_disabling_and_deletion_at_once() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let user = auth.register("i@example.com", "password-123").await;
    let login = auth.login("i@example.com", "password-123").await.unwrap();

    let before = auth.introspect(&login.access_token).await;
    assert!(before.active);
    assert_eq!(before.user_id.as_deref(), Some(user.id.as_str()));
    assert_eq!(before.roles, vec![common_pb::Role::User as i32]);
    assert!(before.session_id.is_some());

    let update = |roles: Option<Vec<common_pb::Role>>, disabled: Option<bool>| {
        let mut client = auth.client();
        let request = as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: user.id.clone(),
                roles: roles.map(|r| pb::RoleSet {
                    roles: r.into_iter().map(|r| r as i32).collect(),
                }),
                disabled,
                password: None,
                username: None,
            },
        );
        async move { client.update_user(request).await.unwrap() }
    };

    update(Some(vec![common_pb::Role::Operator]), None).await;
    let promoted = auth.introspect(&login.access_token).await;
    assert!(promoted.active);
    assert_eq!(promoted.roles, vec![common_pb::Role::Operator as i32]);

    update(None, Some(true)).await;
    let disabled = auth.introspect(&login.access_token).await;
    assert!(!disabled.active);
    assert_eq!(
        disabled.inactive_reason,
        pb::InactiveReason::UserDisabled as i32
    );
    let refused = refresh(&auth, &login.refresh_token).await.unwrap_err();
    assert_eq!(
        code(&refused),
        "INVALID_REFRESH_TOKEN",
        "disabling revoked the sessions"
    );
    let login_refused = auth
        .login("i@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&login_refused), "ACCOUNT_DISABLED");

    update(None, Some(false)).await;
    let again = auth.login("i@example.com", "password-123").await.unwrap();
    assert!(auth.introspect(&again.access_token).await.active);
    auth.delete_user(&admin, &user.id).await.unwrap();
    let deleted = auth.introspect(&again.access_token).await;
    assert!(!deleted.active);
}

async fn next_json(
    messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin),
) -> serde_json::Value {
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap()
}

#[tokio::test]
async fn changes_are_published_on_the_revocation_channel() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let user = auth.register("pub@example.com", "password-123").await;
    let login = auth.login("pub@example.com", "password-123").await.unwrap();

    let client = redis::Client::open(erp_testkit::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}auth:revocations", auth.redis_prefix()))
        .await
        .unwrap();
    let mut messages = pubsub.on_message();

    auth.client()
        .update_user(as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: user.id.clone(),
                roles: Some(pb::RoleSet {
                    roles: vec![common_pb::Role::Auditor as i32],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let message = next_json(&mut messages).await;
    assert_eq!(
        message,
        serde_json::json!({"type": "user", "userId": user.id})
    );

    let caller = Caller {
        user_id: user.id.clone(),
        roles: vec![Role::Auditor],
    };
    auth.logout(&caller, &login.access_token).await.unwrap();
    let jti = auth.introspect(&login.access_token).await;
    assert!(!jti.active);
    let token_message = next_json(&mut messages).await;
    assert_eq!(token_message["type"], "token");
    let session_message = next_json(&mut messages).await;
    assert_eq!(session_message["type"], "session");
}

#[tokio::test]
async fn bad_tokens_are_inactive() {
    let auth = TestAuth::start(&[]).await;
    for token in ["", "garbage", "a.b.c"] {
        let answer = auth.introspect(token).await;
        assert!(!answer.active);
        assert_eq!(answer.inactive_reason, pb::InactiveReason::Malformed as i32);
    }
    // A token from another instance (another key) does not verify here.
    let other = TestAuth::start(&[]).await;
    other.register("o@example.com", "password-123").await;
    let foreign = other.login("o@example.com", "password-123").await.unwrap();
    let answer = auth.introspect(&foreign.access_token).await;
    assert!(!answer.active);
    assert_eq!(
        answer.inactive_reason,
        pb::InactiveReason::BadSignature as i32
    );
}

#[tokio::test]
async fn expired_access_tokens_are_inactive() {
    let auth = TestAuth::start(&[("ERP_ACCESS_TOKEN_TTL_SECS", "1")]).await;
    auth.register("e@example.com", "password-123").await;
    let login = auth.login("e@example.com", "password-123").await.unwrap();
    assert_eq!(login.expires_in, 1);
    // Polled up to the 1 s TTL with a margin (no leeway), instead of one fixed sleep.
    let (answer, _) = erp_testkit::eventually(Duration::from_secs(4), || async {
        let answer = auth.introspect(&login.access_token).await;
        if answer.active {
            Err(answer)
        } else {
            Ok(answer)
        }
    })
    .await;
    assert!(!answer.active);
    assert_eq!(answer.inactive_reason, pb::InactiveReason::Expired as i32);
}

#[tokio::test]
async fn signing_keys_rotate_without_logging_everyone_out() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::EncodePublicKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    let dir = std::env::temp_dir().join(erp_testkit::unique_name("keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let old = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let new = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let old_private = dir.join("old.pem");
    let new_private = dir.join("new.pem");
    let old_public = dir.join("old.pub.pem");
    std::fs::write(
        &old_private,
        old.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        &new_private,
        new.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        &old_public,
        old.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();

    let before =
        TestAuth::start(&[("ERP_JWT_PRIVATE_KEY_FILE", old_private.to_str().unwrap())]).await;
    before.register("k@example.com", "password-123").await;
    let login = before.login("k@example.com", "password-123").await.unwrap();
    let stores = before.stores();
    before.stop().await;

    let after = TestAuth::start_in(
        &stores,
        &[
            ("ERP_JWT_PRIVATE_KEY_FILE", new_private.to_str().unwrap()),
            (
                "ERP_JWT_PREVIOUS_PUBLIC_KEY_FILES",
                old_public.to_str().unwrap(),
            ),
        ],
    )
    .await;
    assert!(
        after.introspect(&login.access_token).await.active,
        "old tokens still verify"
    );
    let keys = after
        .client()
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 2);
    assert_eq!(keys.keys[0].kid, keys.current_kid);
    assert!(keys.keys.iter().all(|k| k.kty == "OKP" && k.alg == "EdDSA"));

    // A fresh token is signed with the new key and verifies with the published JWK.
    let fresh = after.login("k@example.com", "password-123").await.unwrap();
    let header = jsonwebtoken::decode_header(&fresh.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(keys.current_kid.as_str()));
    let jwk = &keys.keys[0];
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk.x.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["erp"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&fresh.access_token, &key, &validation)
        .unwrap()
        .claims;
    for claim in ["kid", "iss", "aud", "sub", "roles", "jti", "iat", "exp"] {
        if claim != "kid" {
            assert!(claims.get(claim).is_some(), "claim {claim}");
        }
    }
    assert_eq!(claims["iss"], "erp-auth");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn tokens_signed_with_a_next_key_are_accepted_by_every_replica() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::EncodePublicKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    let dir = std::env::temp_dir().join(erp_testkit::unique_name("next-keys"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for name in ["k1", "k2"] {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        std::fs::write(
            &private,
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            &public,
            key.verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        files.push((
            private.to_str().unwrap().to_owned(),
            public.to_str().unwrap().to_owned(),
        ));
    }
    let [(k1, k1_public), (k2, k2_public)] = [files[0].clone(), files[1].clone()];

    // Mid-rollout: replica A still signs with K1 and already lists K2 as next; replica B has
    // switched to K2 and lists K1 as previous.
    let a = TestAuth::start(&[
        ("ERP_JWT_PRIVATE_KEY_FILE", k1.as_str()),
        ("ERP_JWT_NEXT_PUBLIC_KEY_FILES", k2_public.as_str()),
    ])
    .await;
    let b = TestAuth::start_in(
        &a.stores(),
        &[
            ("ERP_JWT_PRIVATE_KEY_FILE", k2.as_str()),
            ("ERP_JWT_PREVIOUS_PUBLIC_KEY_FILES", k1_public.as_str()),
        ],
    )
    .await;
    a.register("roll@example.com", "password-123").await;
    let from_a = a.login("roll@example.com", "password-123").await.unwrap();
    let from_b = b.login("roll@example.com", "password-123").await.unwrap();
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_ne!(kid(&from_a.access_token), kid(&from_b.access_token));
    for replica in [&a, &b] {
        for token in [&from_a.access_token, &from_b.access_token] {
            let answer = replica.introspect(token).await;
            assert!(answer.active, "{answer:?}");
        }
    }

    // Both replicas publish both keys; A's current key is K1, the next key K2 is B's current.
    let jwks = |auth: &TestAuth| {
        let mut client = auth.client();
        async move {
            client
                .get_signing_keys(pb::GetSigningKeysRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (keys_a, keys_b) = (jwks(&a).await, jwks(&b).await);
    assert_eq!(keys_a.current_kid, kid(&from_a.access_token));
    assert_eq!(keys_b.current_kid, kid(&from_b.access_token));
    for keys in [&keys_a, &keys_b] {
        let mut kids: Vec<&str> = keys.keys.iter().map(|k| k.kid.as_str()).collect();
        kids.sort_unstable();
        let mut expected = vec![keys_a.current_kid.as_str(), keys_b.current_kid.as_str()];
        expected.sort_unstable();
        assert_eq!(kids, expected);
    }
    std::fs::remove_dir_all(dir).ok();
}
