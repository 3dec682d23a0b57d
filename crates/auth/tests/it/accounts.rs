//! Accounts over gRPC against the real stores: registration, login, lockout, user management,
//! bootstrap admin and audit.

use std::time::Duration;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestAuth, as_caller, code};
use erp_platform::error::ApiError;
use erp_platform::identity::{Caller, OnBehalfOf, Role};
use erp_proto::auth::v1 as pb;
use erp_proto::common::v1 as common_pb;

#[tokio::test]
async fn register_gives_user_role_and_emails_are_unique_ignoring_case() {
    let auth = TestAuth::start(&[]).await;
    let user = auth
        .register("Player.One@Example.com", "password-123")
        .await;
    assert_eq!(user.roles, vec![common_pb::Role::User as i32]);
    assert_eq!(user.email, "Player.One@Example.com");
    assert!(!user.disabled);

    let duplicate = auth
        .try_register("player.one@example.COM", "password-456", None)
        .await
        .unwrap_err();
    assert_eq!(code(&duplicate), "EMAIL_TAKEN");
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);
}

#[tokio::test]
async fn register_validates_every_field() {
    let auth = TestAuth::start(&[]).await;
    let error = auth
        .try_register("not-an-email", "short", Some(String::new()))
        .await
        .unwrap_err();
    assert_eq!(code(&error), "VALIDATION_FAILED");
    let fields: Vec<String> = erp_platform::error::ApiError::from_status(&error)
        .fields
        .into_iter()
        .map(|f| f.field)
        .collect();
    assert_eq!(fields, ["email", "password", "username"]);

    let too_long = auth
        .try_register("long@example.com", &"x".repeat(129), None)
        .await
        .unwrap_err();
    assert_eq!(code(&too_long), "VALIDATION_FAILED");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_answer_the_same() {
    let auth = TestAuth::start(&[]).await;
    auth.register("known@example.com", "password-123").await;
    let wrong = auth
        .login("known@example.com", "password-999")
        .await
        .unwrap_err();
    let unknown = auth
        .login("nobody@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&wrong), "INVALID_CREDENTIALS");
    assert_eq!(code(&unknown), "INVALID_CREDENTIALS");
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(wrong.code(), unknown.code());

    let ok = auth
        .login("KNOWN@example.com", "password-123")
        .await
        .unwrap();
    assert_eq!(ok.token_type, "Bearer");
    assert_eq!(ok.expires_in, 900);
    assert!(!ok.refresh_token.is_empty());
}

#[tokio::test]
async fn lockout_after_five_failures_and_expiry() {
    let auth = TestAuth::start(&[("ERP_LOGIN_LOCKOUT_WINDOW_SECS", "2")]).await;
    auth.register("locked@example.com", "password-123").await;
    for _ in 0..5 {
        let error = auth
            .login("locked@example.com", "wrong-password")
            .await
            .unwrap_err();
        assert_eq!(code(&error), "INVALID_CREDENTIALS");
    }
    // Even the right password is refused while locked.
    let locked = auth
        .login("locked@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&locked), "TOO_MANY_ATTEMPTS");
    let retry_after = erp_platform::error::ApiError::from_status(&locked)
        .retry_after
        .unwrap();
    assert!(retry_after <= Duration::from_secs(2) && retry_after >= Duration::from_secs(1));

    // An unknown email locks the same way, so lockout reveals nothing about existence.
    for _ in 0..5 {
        auth.login("ghost@example.com", "wrong-password")
            .await
            .unwrap_err();
    }
    let ghost = auth
        .login("ghost@example.com", "wrong-password")
        .await
        .unwrap_err();
    assert_eq!(code(&ghost), "TOO_MANY_ATTEMPTS");

    // Unlocked once the window (2 s) has passed: polled, refusals do not extend it.
    erp_testkit::eventually(Duration::from_secs(4), || {
        auth.login("locked@example.com", "password-123")
    })
    .await;
}

#[tokio::test]
async fn bootstrap_admin_is_created_once_across_restarts() {
    let first = TestAuth::start(&[]).await;
    let stores = first.stores();
    first.stop().await;
    let second = TestAuth::start_in(&stores, &[]).await;
    let third = TestAuth::start_in(&stores, &[]).await;
    let admin = second.admin().await;

    let users = second
        .list_users(
            &admin,
            pb::ListUsersRequest {
                role: Some(common_pb::Role::Admin as i32),
                q: None,
                limit: 100,
                cursor: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(users.items.len(), 1);
    assert_eq!(users.items[0].email, ADMIN_EMAIL);

    let audit = third
        .list_audit(
            &admin,
            common_pb::ListAuditRequest {
                action: Some("USER_CREATED".into()),
                entity_id: Some(admin.user_id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].actor_id, "system");
}

#[tokio::test]
async fn user_management_needs_admin_and_is_audited() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let player = auth.register("p@example.com", "password-123").await;
    let player_caller = Caller {
        user_id: player.id.clone(),
        roles: vec![Role::User],
    };

    // Anonymous and non-admin callers are refused.
    let anonymous = auth
        .client()
        .get_user(pb::GetUserRequest {
            id: player.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let forbidden = auth.get_user(&player_caller, &player.id).await.unwrap_err();
    assert_eq!(code(&forbidden), "FORBIDDEN");
    let audit_forbidden = auth
        .client()
        .list_audit(as_caller(
            &player_caller,
            common_pb::ListAuditRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&audit_forbidden), "FORBIDDEN");

    // Admin creates an operator.
    let operator = auth
        .create_user(
            &admin,
            pb::CreateUserRequest {
                email: "op@example.com".into(),
                password: "password-123".into(),
                roles: vec![
                    common_pb::Role::Operator as i32,
                    common_pb::Role::Operator as i32,
                ],
                username: Some("op".into()),
            },
        )
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(operator.roles, vec![common_pb::Role::Operator as i32]);
    let empty_roles = auth
        .create_user(
            &admin,
            pb::CreateUserRequest {
                email: "none@example.com".into(),
                password: "password-123".into(),
                roles: vec![],
                username: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&empty_roles), "VALIDATION_FAILED");

    // Update roles and disabled; the audit keeps before and after.
    let updated = auth
        .client()
        .update_user(as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: operator.id.clone(),
                roles: Some(pb::RoleSet {
                    roles: vec![common_pb::Role::Auditor as i32],
                }),
                disabled: Some(true),
                password: None,
                username: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.roles, vec![common_pb::Role::Auditor as i32]);
    assert!(updated.disabled);
    assert_eq!(updated.username.as_deref(), Some("op"));

    let entries = auth
        .list_audit(
            &admin,
            common_pb::ListAuditRequest {
                action: Some("USER_UPDATED".into()),
                entity_id: Some(operator.id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.actor_id, admin.user_id);
    assert_eq!(entry.service, "auth");
    let before: serde_json::Value =
        serde_json::from_str(entry.before_json.as_deref().unwrap()).unwrap();
    let after: serde_json::Value =
        serde_json::from_str(entry.after_json.as_deref().unwrap()).unwrap();
    assert_eq!(before["roles"], serde_json::json!(["OPERATOR"]));
    assert_eq!(before["disabled"], false);
    assert_eq!(after["roles"], serde_json::json!(["AUDITOR"]));
    assert_eq!(after["disabled"], true);
    assert!(!entry.after_json.as_deref().unwrap().contains("argon2"));

    // Delete, then it is gone and audited.
    auth.delete_user(&admin, &operator.id).await.unwrap();
    let gone = auth.get_user(&admin, &operator.id).await.unwrap_err();
    assert_eq!(code(&gone), "NOT_FOUND");
    let again = auth.delete_user(&admin, &operator.id).await.unwrap_err();
    assert_eq!(code(&again), "NOT_FOUND");
    let deleted = auth
        .list_audit(
            &admin,
            common_pb::ListAuditRequest {
                action: Some("USER_DELETED".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].entity_id, operator.id);
    assert!(deleted[0].after_json.is_none());
}

#[tokio::test]
async fn users_and_audit_page_newest_first_with_filters() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            auth.register(&format!("pager{i}@example.com"), "password-123")
                .await
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = auth
            .list_users(
                &admin,
                pb::ListUsersRequest {
                    role: Some(common_pb::Role::User as i32),
                    q: Some("PAGER".into()),
                    limit: 2,
                    cursor: cursor.clone(),
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|u| u.id));
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let bad_cursor = auth
        .list_users(
            &admin,
            pb::ListUsersRequest {
                cursor: "garbage!".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&bad_cursor), "VALIDATION_FAILED");

    let created = auth
        .list_audit(
            &admin,
            common_pb::ListAuditRequest {
                action: Some("USER_CREATED".into()),
                limit: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.items.len(), 3);
    assert!(created.next_cursor.is_some());
    assert_eq!(created.items[0].entity_id, ids[0]);
    // Registration is audited with the new user as the actor.
    assert_eq!(created.items[0].actor_id, ids[0]);
}

#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_code() {
    let auth = TestAuth::start(&[]).await;
    auth.register("m@example.com", "password-123").await;
    auth.login("m@example.com", "wrong-password")
        .await
        .unwrap_err();
    let body = reqwest::get(format!("http://{}/metrics", auth.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |method: &str, code: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with("erp_grpc_server_requests_total{"))
            .filter(|l| l.contains(&format!("method=\"/erp.auth.v1.AuthService/{method}\"")))
            .filter(|l| {
                l.contains(&format!("code=\"{code}\"")) && l.contains("service=\"erp-auth\"")
            })
            .filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("Register", "OK"), 1.0, "{body}");
    assert_eq!(count("Login", "UNAUTHENTICATED"), 1.0, "{body}");
    assert!(body.contains("erp_grpc_server_request_duration_seconds_bucket"));
    assert!(
        body.contains("erp_auth_logins_total{result=\"invalid_credentials\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn admins_cannot_lock_themselves_out() {
    let auth = TestAuth::start(&[]).await;
    let admin = auth.admin().await;
    let own = |roles: Option<Vec<common_pb::Role>>, disabled: Option<bool>| {
        let mut client = auth.client();
        let request = as_caller(
            &admin,
            pb::UpdateUserRequest {
                id: admin.user_id.clone(),
                roles: roles.map(|r| pb::RoleSet {
                    roles: r.into_iter().map(|r| r as i32).collect(),
                }),
                disabled,
                ..Default::default()
            },
        );
        async move { client.update_user(request).await }
    };
    assert_eq!(code(&own(None, Some(true)).await.unwrap_err()), "FORBIDDEN");
    assert_eq!(
        code(
            &own(Some(vec![common_pb::Role::User]), None)
                .await
                .unwrap_err()
        ),
        "FORBIDDEN"
    );
    own(
        Some(vec![common_pb::Role::Admin, common_pb::Role::Operator]),
        Some(false),
    )
    .await
    .unwrap();
    let delete = auth.delete_user(&admin, &admin.user_id).await.unwrap_err();
    assert_eq!(code(&delete), "FORBIDDEN");
}

/// A login as the gateway sends it for a client at `ip` (the address travels in the signed
/// caller assertion).
async fn login_from(
    auth: &TestAuth,
    ip: &str,
    email: &str,
    password: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
        client_ip: None,
        user_agent: None,
    });
    request.extensions_mut().insert(OnBehalfOf {
        caller: None,
        client_ip: Some(ip.parse().unwrap()),
    });
    auth.client()
        .login(request)
        .await
        .map(tonic::Response::into_inner)
}

fn count(results: &[Result<pb::LoginResponse, tonic::Status>], wanted: &str) -> usize {
    results
        .iter()
        .filter(|r| r.as_ref().err().is_some_and(|e| code(e) == wanted))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_parallel_wrong_passwords_from_one_address_are_capped_at_five() {
    let auth = TestAuth::start(&[]).await;
    auth.register("victim@example.com", "password-123").await;
    let attempts = futures::future::join_all((0..40).map(|i| {
        let auth = &auth;
        async move {
            login_from(
                auth,
                "198.51.100.7",
                "victim@example.com",
                &format!("guess-{i:04}"),
            )
            .await
        }
    }))
    .await;
    let invalid = count(&attempts, "INVALID_CREDENTIALS");
    let locked = count(&attempts, "TOO_MANY_ATTEMPTS");
    assert_eq!(invalid + locked, 40, "{attempts:?}");
    assert!(invalid <= 5, "{invalid} guesses verified");
    assert_eq!(invalid, 5, "the first five are verified");
    for attempt in attempts.iter().filter_map(|a| a.as_ref().err()) {
        if code(attempt) == "TOO_MANY_ATTEMPTS" {
            let retry_after = ApiError::from_status(attempt).retry_after.unwrap();
            assert!(
                retry_after > Duration::from_secs(800) && retry_after <= Duration::from_secs(900)
            );
        }
    }
    // The right password from that address is refused too, until the window ends.
    let owner = login_from(&auth, "198.51.100.7", "victim@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&owner), "TOO_MANY_ATTEMPTS");
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_account_out_elsewhere() {
    let auth = TestAuth::start(&[]).await;
    auth.register("owner@example.com", "password-123").await;
    for _ in 0..5 {
        let error = login_from(&auth, "203.0.113.1", "owner@example.com", "wrong-password")
            .await
            .unwrap_err();
        assert_eq!(code(&error), "INVALID_CREDENTIALS");
    }
    let attacker = login_from(&auth, "203.0.113.1", "owner@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&attacker), "TOO_MANY_ATTEMPTS");
    // The owner, elsewhere (IPv6 too), logs in.
    login_from(&auth, "2001:db8::1", "owner@example.com", "password-123")
        .await
        .unwrap();
    login_from(&auth, "203.0.113.2", "owner@example.com", "password-123")
        .await
        .unwrap();
    // ... which clears only the owner's own address: the attacker's address stays locked.
    let still = login_from(&auth, "203.0.113.1", "owner@example.com", "password-123")
        .await
        .unwrap_err();
    assert_eq!(code(&still), "TOO_MANY_ATTEMPTS");

    // A success clears that address's own failures.
    for _ in 0..4 {
        login_from(&auth, "203.0.113.3", "owner@example.com", "wrong-password")
            .await
            .unwrap_err();
    }
    login_from(&auth, "203.0.113.3", "owner@example.com", "password-123")
        .await
        .unwrap();
    for _ in 0..5 {
        let error = login_from(&auth, "203.0.113.3", "owner@example.com", "wrong-password")
            .await
            .unwrap_err();
        assert_eq!(code(&error), "INVALID_CREDENTIALS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_account_ceiling_locks_across_addresses() {
    let auth = TestAuth::start(&[("ERP_LOGIN_MAX_FAILURES_PER_ACCOUNT", "8")]).await;
    auth.register("target@example.com", "password-123").await;
    auth.register("bystander@example.com", "password-123").await;
    // Distributed guessing: four addresses, two guesses each, none reaching the per-address limit.
    let guesses = futures::future::join_all((0..4).flat_map(|a| {
        let auth = &auth;
        (0..2).map(move |g| async move {
            login_from(
                auth,
                &format!("192.0.2.{}", a + 10),
                "target@example.com",
                &format!("guess-{a}-{g}"),
            )
            .await
        })
    }))
    .await;
    assert_eq!(count(&guesses, "INVALID_CREDENTIALS"), 8);
    // The ceiling is reached: every address, even a new one with the right password, waits.
    for ip in ["192.0.2.10", "192.0.2.99"] {
        let locked = login_from(&auth, ip, "target@example.com", "password-123")
            .await
            .unwrap_err();
        assert_eq!(code(&locked), "TOO_MANY_ATTEMPTS");
        assert!(ApiError::from_status(&locked).retry_after.unwrap() >= Duration::from_secs(1));
    }
    // Other accounts are not affected.
    login_from(&auth, "192.0.2.10", "bystander@example.com", "password-123")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_bootstrap_admin_is_not_recreated_at_restart() {
    let first = TestAuth::start(&[]).await;
    let stores = first.stores();
    let database = first.database.clone();
    let root = first.admin().await;
    let second_admin = first
        .create_user(
            &root,
            pb::CreateUserRequest {
                email: "second-admin@example.com".into(),
                password: "password-123".into(),
                roles: vec![common_pb::Role::Admin as i32],
                username: None,
            },
        )
        .await
        .unwrap()
        .user
        .unwrap();
    let second_caller = Caller {
        user_id: second_admin.id.clone(),
        roles: vec![Role::Admin],
    };
    first
        .delete_user(&second_caller, &root.user_id)
        .await
        .unwrap();
    first.stop().await;

    let restarted = TestAuth::start_in(&stores, &[]).await;
    let gone = restarted
        .login(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "INVALID_CREDENTIALS");
    let admins = |auth: &TestAuth| {
        let mut client = auth.client();
        let request = as_caller(
            &second_caller,
            pb::ListUsersRequest {
                role: Some(common_pb::Role::Admin as i32),
                q: None,
                limit: 100,
                cursor: String::new(),
            },
        );
        async move { client.list_users(request).await.unwrap().into_inner().items }
    };
    let listed = admins(&restarted).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].email, "second-admin@example.com");
    restarted.stop().await;

    // Even with no admin left at all (removed behind the service's back), the marker keeps the
    // bootstrap settings from creating one again.
    let mongo = mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
        .await
        .unwrap();
    let db = mongo.database(&database);
    let marker = db
        .collection::<mongodb::bson::Document>("markers")
        .find_one(mongodb::bson::doc! { "_id": "bootstrap_admin_created" })
        .await
        .unwrap();
    assert!(marker.is_some(), "the marker is recorded");
    db.collection::<mongodb::bson::Document>("users")
        .delete_many(mongodb::bson::doc! { "roles": "ADMIN" })
        .await
        .unwrap();
    let again = TestAuth::start_in(&stores, &[]).await;
    let still_gone = again.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap_err();
    assert_eq!(code(&still_gone), "INVALID_CREDENTIALS");
}
