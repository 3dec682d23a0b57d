//! Service accounts over gRPC against the real stores: admin management, the secret shown once
//! and stored only as a digest, the client-credentials grant and its lockout, introspection of
//! service-account tokens, rotation and deletion ending them (here and on another replica), the
//! GAME_SERVER role refused to people, FindActiveUsers, audit and access.

use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{Document, doc};

use crate::common::{TestAuth, as_caller, code};
use erp_platform::error::ApiError;
use erp_platform::identity::{Caller, OnBehalfOf, Role, on_behalf_of};
use erp_proto::auth::v1 as pb;
use erp_proto::common::v1 as common_pb;

async fn create(
    auth: &TestAuth,
    who: &Caller,
    name: &str,
    description: Option<&str>,
) -> Result<pb::ServiceAccountCredentials, tonic::Status> {
    auth.client()
        .create_service_account(as_caller(
            who,
            pb::CreateServiceAccountRequest {
                name: name.to_owned(),
                description: description.map(str::to_owned),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list(
    auth: &TestAuth,
    who: &Caller,
    limit: u32,
    cursor: &str,
) -> Result<pb::ListServiceAccountsResponse, tonic::Status> {
    auth.client()
        .list_service_accounts(as_caller(
            who,
            pb::ListServiceAccountsRequest {
                limit,
                cursor: cursor.to_owned(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn rotate(
    auth: &TestAuth,
    who: &Caller,
    id: &str,
) -> Result<pb::ServiceAccountCredentials, tonic::Status> {
    auth.client()
        .rotate_service_account_secret(as_caller(
            who,
            pb::RotateServiceAccountSecretRequest { id: id.to_owned() },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(auth: &TestAuth, who: &Caller, id: &str) -> Result<(), tonic::Status> {
    auth.client()
        .delete_service_account(as_caller(
            who,
            pb::DeleteServiceAccountRequest { id: id.to_owned() },
        ))
        .await
        .map(|_| ())
}

/// The client-credentials grant as the gateway sends it for a client at `ip` (anonymous call;
/// the address travels in the signed caller assertion).
async fn token_from(
    auth: &TestAuth,
    ip: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<pb::IssueClientTokenResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::IssueClientTokenRequest {
        client_id: client_id.to_owned(),
        client_secret: client_secret.to_owned(),
    });
    request.extensions_mut().insert(OnBehalfOf {
        caller: None,
        client_ip: Some(ip.parse().unwrap()),
    });
    auth.client()
        .issue_client_token(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn token(
    auth: &TestAuth,
    credentials: &pb::ServiceAccountCredentials,
) -> Result<pb::IssueClientTokenResponse, tonic::Status> {
    token_from(
        auth,
        "198.51.100.1",
        &account(credentials).client_id,
        &credentials.client_secret,
    )
    .await
}

fn account(credentials: &pb::ServiceAccountCredentials) -> &pb::ServiceAccount {
    credentials.service_account.as_ref().unwrap()
}

fn fields(status: &tonic::Status) -> Vec<String> {
    ApiError::from_status(status)
        .fields
        .into_iter()
        .map(|f| f.field)
        .collect()
}

fn person(roles: &[Role]) -> Caller {
    Caller {
        user_id: uuid::Uuid::now_v7().to_string(),
        roles: roles.to_vec(),
    }
}

async fn stored_accounts(auth: &TestAuth) -> Vec<Document> {
    let mongo = mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
        .await
        .unwrap();
    let cursor = mongo
        .database(&auth.database)
        .collection::<Document>("service_accounts")
        .find(doc! {})
        .await
        .unwrap();
    cursor.map(Result::unwrap).collect().await
}

fn assert_invalid_client(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(code(status), "INVALID_CLIENT");
}

#[tokio::test]
async fn create_shows_the_secret_once_and_stores_only_its_digest() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, " game-eu-1 ", Some("EU shard"))
        .await
        .unwrap();
    let sa = account(&created);
    assert_eq!(sa.name, "game-eu-1");
    assert_eq!(sa.description.as_deref(), Some("EU shard"));
    assert!(sa.client_id.starts_with("sa_"), "{}", sa.client_id);
    assert_ne!(sa.client_id, sa.id);
    assert!(sa.created_at.is_some());
    // 256 random bits, URL-safe base64 without padding.
    assert_eq!(created.client_secret.len(), 43);
    assert!(
        created
            .client_secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );

    // Listed (newest first, paged like users), never with a secret: the message has no field
    // for it, and the listing equals the account as created.
    let second = create(&auth, &admin, "game-us-1", None).await.unwrap();
    let third = create(&auth, &admin, "game-ap-1", None).await.unwrap();
    let first_page = list(&auth, &admin, 2, "").await.unwrap();
    assert_eq!(
        first_page.items,
        [account(&third).clone(), account(&second).clone()]
    );
    let rest = list(&auth, &admin, 2, first_page.next_cursor.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(rest.items, std::slice::from_ref(sa));
    assert_eq!(rest.next_cursor, None);

    // The store holds a digest, never the secret.
    let stored = stored_accounts(&auth).await;
    assert_eq!(stored.len(), 3);
    for (document, credentials) in stored.iter().zip([&created, &second, &third]) {
        let text = format!("{document:?}");
        assert!(!text.contains(&credentials.client_secret), "{text}");
    }
    let mine = stored
        .iter()
        .find(|d| d.get_str("_id").unwrap() == sa.id)
        .unwrap();
    assert_eq!(mine.get_str("secret_sha256").unwrap().len(), 64);

    // Service accounts are not people: not among the users.
    let users = auth
        .list_users(&admin, pb::ListUsersRequest::default())
        .await
        .unwrap();
    assert!(users.items.iter().all(|u| u.id != sa.id));
    assert_eq!(users.items.len(), 1);

    // Validation names each bad field.
    let empty = create(&auth, &admin, "  ", None).await.unwrap_err();
    assert_eq!(code(&empty), "VALIDATION_FAILED");
    assert_eq!(fields(&empty), ["name"]);
    let too_long = create(&auth, &admin, &"n".repeat(101), Some(&"d".repeat(1001)))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    assert_eq!(fields(&too_long), ["name", "description"]);
    create(&auth, &admin, &"n".repeat(100), Some(&"d".repeat(1000)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_token_introspects_as_the_game_server() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, "game", None).await.unwrap();
    let sa = account(&created);

    let issued = token(&auth, &created).await.unwrap();
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.expires_in, 900);
    let answer = auth.introspect(&issued.access_token).await;
    assert!(answer.active, "{answer:?}");
    assert_eq!(answer.user_id.as_deref(), Some(sa.id.as_str()));
    assert_eq!(answer.roles, [common_pb::Role::GameServer as i32]);
    assert_eq!(answer.email, None);
    assert!(!answer.disabled);
    assert_eq!(
        answer.inactive_reason,
        pb::InactiveReason::Unspecified as i32
    );
    assert!(answer.expires_at.is_some() && answer.jti.is_some());
    // Introspection is answered from the cache the second time, the same.
    assert_eq!(auth.introspect(&issued.access_token).await, answer);

    // Wrong secret, unknown client, missing values: all the same INVALID_CLIENT.
    let wrong = token_from(&auth, "198.51.100.1", &sa.client_id, "not-the-secret")
        .await
        .unwrap_err();
    assert_invalid_client(&wrong);
    let unknown = token_from(&auth, "198.51.100.1", "sa_nobody", &created.client_secret)
        .await
        .unwrap_err();
    assert_invalid_client(&unknown);
    assert_eq!(wrong.message(), unknown.message());
    for (id, secret) in [("", created.client_secret.as_str()), (&sa.client_id, "")] {
        assert_invalid_client(
            &token_from(&auth, "198.51.100.1", id, secret)
                .await
                .unwrap_err(),
        );
    }

    // Not a person: no /auth/me, no logout of its token (it ends with its secret).
    let as_service = Caller {
        user_id: sa.id.clone(),
        roles: vec![Role::GameServer],
    };
    let me = auth
        .client()
        .get_me(as_caller(
            &as_service,
            pb::GetMeRequest {
                user_id: sa.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&me), "NOT_FOUND");
    let logout = auth
        .logout(&as_service, &issued.access_token)
        .await
        .unwrap_err();
    assert_eq!(code(&logout), "FORBIDDEN");
    assert!(auth.introspect(&issued.access_token).await.active);
}

#[tokio::test]
async fn failed_client_authentications_lock_out_like_logins() {
    let auth = TestAuth::start(&[("ERP_LOGIN_LOCKOUT_WINDOW_SECS", "2")]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, "game", None).await.unwrap();
    let client_id = account(&created).client_id.clone();
    for _ in 0..5 {
        let error = token_from(&auth, "203.0.113.9", &client_id, "guess")
            .await
            .unwrap_err();
        assert_invalid_client(&error);
    }
    // Even the right secret is refused from that address while locked.
    let locked = token_from(&auth, "203.0.113.9", &client_id, &created.client_secret)
        .await
        .unwrap_err();
    assert_eq!(locked.code(), tonic::Code::ResourceExhausted);
    assert_eq!(code(&locked), "TOO_MANY_ATTEMPTS");
    let retry_after = ApiError::from_status(&locked).retry_after.unwrap();
    assert!(
        retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(2),
        "{retry_after:?}"
    );
    // Another address is not locked out by a stranger's guesses.
    token_from(&auth, "198.51.100.7", &client_id, &created.client_secret)
        .await
        .unwrap();
    // Logins are counted apart: a login naming the client id from the locked address is judged
    // on its password, not refused by the client's lockout.
    let mut login = tonic::Request::new(pb::LoginRequest {
        email: client_id.clone(),
        password: "whatever-1".into(),
        client_ip: None,
        user_agent: None,
    });
    login.extensions_mut().insert(OnBehalfOf {
        caller: None,
        client_ip: Some("203.0.113.9".parse().unwrap()),
    });
    let refused = auth.client().login(login).await.unwrap_err();
    assert_eq!(code(&refused), "INVALID_CREDENTIALS");
    // Unlocked once the window (2 s) has passed.
    erp_testkit::eventually(Duration::from_secs(4), || {
        token_from(&auth, "203.0.113.9", &client_id, &created.client_secret)
    })
    .await;
}

#[tokio::test]
async fn rotation_ends_the_old_secret_and_its_tokens_on_every_replica() {
    let key = KeyFile::new();
    let a = TestAuth::start(&[("ERP_JWT_PRIVATE_KEY_FILE", key.path())]).await;
    let b = TestAuth::start_in(&a.stores(), &[("ERP_JWT_PRIVATE_KEY_FILE", key.path())]).await;
    let admin = a.admin().await;
    let created = create(&a, &admin, "game", None).await.unwrap();
    let sa = account(&created).clone();
    let old_token = token(&a, &created).await.unwrap().access_token;
    // Both replicas have the account's current secret cached (user cache TTL: 30 s).
    assert!(a.introspect(&old_token).await.active);
    assert!(b.introspect(&old_token).await.active);

    let client = redis::Client::open(erp_testkit::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}auth:revocations", a.redis_prefix()))
        .await
        .unwrap();
    let mut messages = pubsub.on_message();

    let rotated = rotate(&a, &admin, &sa.id).await.unwrap();
    assert_eq!(account(&rotated), &sa, "same account and client id");
    assert_ne!(rotated.client_secret, created.client_secret);
    assert_eq!(rotated.client_secret.len(), 43);

    // Gateways are told, as for a user.
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    let message: serde_json::Value =
        serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(
        message,
        serde_json::json!({"type": "user", "userId": sa.id})
    );

    // The old secret fails at once; its token is inactive here at once and on the other replica
    // within a second.
    assert_invalid_client(&token(&a, &created).await.unwrap_err());
    let answer = a.introspect(&old_token).await;
    assert!(!answer.active);
    assert_eq!(answer.inactive_reason, pb::InactiveReason::Revoked as i32);
    assert_eq!(answer.user_id.as_deref(), Some(sa.id.as_str()));
    let (_, took) = erp_testkit::eventually(Duration::from_secs(1), || async {
        let answer = b.introspect(&old_token).await;
        if answer.active {
            Err(answer)
        } else {
            Ok(answer)
        }
    })
    .await;
    assert!(took <= Duration::from_secs(1));

    // The new secret works, on either replica.
    let new_token = token(&b, &rotated).await.unwrap().access_token;
    assert!(a.introspect(&new_token).await.active);
    assert!(b.introspect(&new_token).await.active);
    assert!(!b.introspect(&old_token).await.active);
}

#[tokio::test]
async fn deletion_ends_the_account_its_secret_and_its_tokens() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, "game", None).await.unwrap();
    let kept = create(&auth, &admin, "other", None).await.unwrap();
    let sa = account(&created).clone();
    let issued = token(&auth, &created).await.unwrap().access_token;
    assert!(auth.introspect(&issued).await.active);

    delete(&auth, &admin, &sa.id).await.unwrap();
    let answer = auth.introspect(&issued).await;
    assert!(!answer.active);
    assert_eq!(
        answer.inactive_reason,
        pb::InactiveReason::UserNotFound as i32
    );
    assert_invalid_client(&token(&auth, &created).await.unwrap_err());
    for gone in [
        delete(&auth, &admin, &sa.id).await.unwrap_err(),
        rotate(&auth, &admin, &sa.id).await.unwrap_err(),
        delete(&auth, &admin, "no-such-id").await.unwrap_err(),
    ] {
        assert_eq!(gone.code(), tonic::Code::NotFound);
        assert_eq!(code(&gone), "NOT_FOUND");
    }
    let listed = list(&auth, &admin, 0, "").await.unwrap();
    assert_eq!(listed.items, [account(&kept).clone()]);
    // The other account is untouched.
    assert!(
        auth.introspect(&token(&auth, &kept).await.unwrap().access_token)
            .await
            .active
    );
}

#[tokio::test]
async fn game_server_is_never_a_persons_role() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let refused = auth
        .create_user(
            &admin,
            pb::CreateUserRequest {
                email: "bot@example.com".into(),
                password: "password-123".into(),
                roles: vec![
                    common_pb::Role::User as i32,
                    common_pb::Role::GameServer as i32,
                ],
                username: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(code(&refused), "VALIDATION_FAILED");
    assert_eq!(fields(&refused), ["roles"]);

    let user = auth.register("person@example.com", "password-123").await;
    let refused = auth
        .client()
        .update_user(as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: user.id.clone(),
                roles: Some(pb::RoleSet {
                    roles: vec![common_pb::Role::GameServer as i32],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "VALIDATION_FAILED");
    assert_eq!(fields(&refused), ["roles"]);
    let unchanged = auth.get_user(&admin, &user.id).await.unwrap().user.unwrap();
    assert_eq!(unchanged.roles, [common_pb::Role::User as i32]);
}

async fn find_active(
    auth: &TestAuth,
    who: &Caller,
    ids: Vec<String>,
) -> Result<Vec<String>, tonic::Status> {
    auth.client()
        .find_active_users(as_caller(who, pb::FindActiveUsersRequest { ids }))
        .await
        .map(|r| {
            let mut ids = r.into_inner().active_ids;
            ids.sort_unstable();
            ids
        })
}

#[tokio::test]
async fn find_active_users_answers_exactly_the_enabled_people() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let mut ids = Vec::new();
    for email in [
        "enabled@example.com",
        "disabled@example.com",
        "deleted@example.com",
        "other@example.com",
    ] {
        ids.push(auth.register(email, "password-123").await.id);
    }
    let [enabled, disabled, deleted, other]: [String; 4] = ids.try_into().unwrap();
    auth.client()
        .update_user(as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: disabled.clone(),
                disabled: Some(true),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    auth.delete_user(&admin, &deleted).await.unwrap();
    let service_account = account(&create(&auth, &admin, "game", None).await.unwrap())
        .id
        .clone();

    let asked = vec![
        enabled.clone(),
        disabled,
        deleted,
        "0190c3d2-0000-7000-8000-000000000000".to_owned(),
        "not an id {$ne: 1}".to_owned(),
        String::new(),
        service_account,
        enabled.clone(),
        other.clone(),
    ];
    let mut expected = vec![enabled, other];
    expected.sort_unstable();
    for caller in [person(&[Role::Operator]), admin.clone()] {
        assert_eq!(
            find_active(&auth, &caller, asked.clone()).await.unwrap(),
            expected
        );
    }
    assert_eq!(
        find_active(&auth, &admin, Vec::new()).await.unwrap(),
        Vec::<String>::new()
    );

    // At most 1000 ids.
    let many: Vec<String> = (0..1000).map(|i| format!("id-{i}")).collect();
    assert!(
        find_active(&auth, &admin, many.clone())
            .await
            .unwrap()
            .is_empty()
    );
    let too_many: Vec<String> = many.into_iter().chain(["one more".to_owned()]).collect();
    let refused = find_active(&auth, &admin, too_many).await.unwrap_err();
    assert_eq!(code(&refused), "VALIDATION_FAILED");
    assert_eq!(fields(&refused), ["ids"]);

    // Operators and admins only.
    for roles in [&[Role::User][..], &[Role::Auditor], &[Role::GameServer]] {
        let forbidden = find_active(&auth, &person(roles), asked.clone())
            .await
            .unwrap_err();
        assert_eq!(forbidden.code(), tonic::Code::PermissionDenied);
        assert_eq!(code(&forbidden), "FORBIDDEN");
    }
}

#[tokio::test]
async fn changes_are_audited_with_the_admin_as_actor_and_no_secret() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, "game", Some("audited"))
        .await
        .unwrap();
    let sa = account(&created).clone();
    let rotated = rotate(&auth, &admin, &sa.id).await.unwrap();
    let digests: Vec<String> = stored_accounts(&auth)
        .await
        .iter()
        .map(|d| d.get_str("secret_sha256").unwrap().to_owned())
        .collect();
    assert_eq!(digests.len(), 1);
    delete(&auth, &admin, &sa.id).await.unwrap();

    let trail = auth
        .list_audit(
            &admin,
            common_pb::ListAuditRequest {
                entity_id: Some(sa.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let actions: Vec<&str> = trail.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "SERVICE_ACCOUNT_DELETED",
            "SERVICE_ACCOUNT_SECRET_ROTATED",
            "SERVICE_ACCOUNT_CREATED"
        ]
    );
    for entry in &trail.items {
        assert_eq!(entry.actor_id, admin.user_id);
        assert_eq!(entry.entity_type, "service_account");
        assert_eq!(entry.service, "auth");
        let json = format!("{:?} {:?}", entry.before_json, entry.after_json);
        assert!(json.contains(&sa.client_id), "{json}");
        for secret in [&created.client_secret, &rotated.client_secret] {
            assert!(!json.contains(secret.as_str()), "{json}");
        }
        assert!(!json.to_lowercase().contains("sha256"), "{json}");
        assert!(!json.contains(&digests[0]), "{json}");
    }
    let created_entry = &trail.items[2];
    let after: serde_json::Value =
        serde_json::from_str(created_entry.after_json.as_deref().unwrap()).unwrap();
    assert_eq!(
        after,
        serde_json::json!({"name": "game", "description": "audited", "clientId": sa.client_id})
    );
}

#[tokio::test]
async fn only_admins_manage_service_accounts() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let created = create(&auth, &admin, "game", None).await.unwrap();
    let id = account(&created).id.clone();
    for roles in [
        &[Role::User][..],
        &[Role::Operator],
        &[Role::Auditor],
        &[Role::GameServer],
        &[Role::User, Role::Operator, Role::Auditor],
    ] {
        let who = person(roles);
        let refusals = [
            create(&auth, &who, "mine", None).await.unwrap_err(),
            list(&auth, &who, 0, "").await.unwrap_err(),
            rotate(&auth, &who, &id).await.unwrap_err(),
            delete(&auth, &who, &id).await.unwrap_err(),
        ];
        for refused in refusals {
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{roles:?}");
            assert_eq!(code(&refused), "FORBIDDEN");
        }
    }
    // Anonymous calls are unauthenticated.
    let anonymous = auth
        .client()
        .list_service_accounts(on_behalf_of(
            pb::ListServiceAccountsRequest::default(),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    // Nothing was changed: the secret still works.
    token(&auth, &created).await.unwrap();
    assert_eq!(list(&auth, &admin, 0, "").await.unwrap().items.len(), 1);
}

/// An Ed25519 signing key in a PEM file, shared by replicas so each verifies the other's tokens;
/// removed when dropped.
struct KeyFile {
    dir: std::path::PathBuf,
    path: String,
}

impl KeyFile {
    fn new() -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

        let dir = std::env::temp_dir().join(erp_testkit::unique_name("sa-key"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let file = dir.join("signing.pem");
        std::fs::write(&file, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        Self {
            path: file.to_str().unwrap().to_owned(),
            dir,
        }
    }

    fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
