//! Game servers' own credentials, end to end: service accounts made by an admin, `POST
//! /auth/token` as the OAuth 2.0 client-credentials grant (RFC 6749 §4.4: form body, Basic or
//! form client authentication, §5.1/§5.2 answers), and deletion or rotation stopping old
//! tokens within a second.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{NO_RATE_LIMITS, Platform, Reply, items};

/// A route a game server may call, to tell whether its token still works.
const GAME_SERVER_READ: &str = "/events?limit=1";

async fn token_request(platform: &Platform, form: &str, basic: Option<(&str, &str)>) -> Reply {
    let mut request = platform
        .request(Method::POST, "/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.as_bytes().to_vec());
    if let Some((id, secret)) = basic {
        let encoded = STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", &format!("Basic {encoded}"));
    }
    request.send().await
}

#[track_caller]
fn assert_oauth_error(reply: &Reply, status: StatusCode, error: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body["error"], error, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Basic"), "{reply:?}");
    }
}

#[tokio::test]
async fn client_credentials_issue_a_game_server_token_by_basic_or_form() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let created = platform
        .send(
            Method::POST,
            "/service-accounts",
            Some(&admin.access_token),
            Some(json!({"name": "eu-west-1 shard", "description": "game backend"})),
        )
        .await;
    let account = created.expect(StatusCode::CREATED).clone();
    let (id, client_id, secret) = (
        account["id"].as_str().unwrap(),
        account["clientId"].as_str().unwrap(),
        account["clientSecret"].as_str().unwrap(),
    );
    assert!(secret.len() >= 32, "a long random secret: {account}");
    assert_eq!(account["name"], "eu-west-1 shard");

    // Listed without its secret.
    let (status, list) = platform.get("/service-accounts", &admin.access_token).await;
    assert_eq!(status, StatusCode::OK);
    let listed = items(&list).iter().find(|a| a["id"] == id).expect("listed");
    assert!(listed.get("clientSecret").is_none(), "{listed}");
    assert!(!list.to_string().contains(secret));

    // HTTP Basic.
    let basic = token_request(
        &platform,
        "grant_type=client_credentials",
        Some((client_id, secret)),
    )
    .await;
    let token = basic.expect(StatusCode::OK).clone();
    assert_eq!(token["token_type"], "Bearer");
    assert!(token["expires_in"].as_i64().unwrap() > 0);
    assert!(token.get("refresh_token").is_none(), "{token}");
    assert_eq!(basic.header("cache-control"), Some("no-store"));
    let access_token = token["access_token"].as_str().unwrap();
    let (status, _) = platform.get(GAME_SERVER_READ, access_token).await;
    assert_eq!(status, StatusCode::OK);
    // A game server is not a person: /auth/me is for people.
    let (status, body) = platform.get("/auth/me", access_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");

    // Basic, with the client also named in the form (as some libraries send it).
    let named = token_request(
        &platform,
        &format!("grant_type=client_credentials&client_id={client_id}"),
        Some((client_id, secret)),
    )
    .await;
    named.expect(StatusCode::OK);

    // Form fields.
    let form = token_request(
        &platform,
        &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
        None,
    )
    .await;
    form.expect(StatusCode::OK);

    // What it does as an actor is audited under its own id.
    let (status, _) = platform
        .call(
            Method::POST,
            "/progress",
            Some(access_token),
            Some(json!({"items": [{"userId": admin.id, "metric": "kills", "value": 1, "mode": "INCREMENT"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, audit) = platform
        .get("/audit?action=PROGRESS_REPORTED", &admin.access_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert!(
        items(&audit).iter().any(|e| e["actorId"] == id),
        "PROGRESS_REPORTED by the service account: {audit}"
    );
    let (_, audit) = platform
        .get(
            &format!("/audit?action=SERVICE_ACCOUNT_CREATED&entityId={id}"),
            &admin.access_token,
        )
        .await;
    assert_eq!(items(&audit).len(), 1, "{audit}");
    assert_eq!(items(&audit)[0]["actorId"], admin.id.as_str());
    assert!(
        !audit.to_string().contains(secret),
        "no secret in the audit"
    );
}

#[tokio::test]
async fn bad_client_credentials_get_oauth_errors() {
    let platform = Platform::builder()
        .gateway_envs(&NO_RATE_LIMITS)
        .start()
        .await;
    let admin = platform.admin().await;
    let (_, account) = platform.game_server(&admin, "errors").await;
    let (client_id, secret) = (account.client_id.as_str(), account.client_secret.as_str());

    let wrong_secret = token_request(
        &platform,
        "grant_type=client_credentials",
        Some((client_id, "not-the-secret")),
    )
    .await;
    assert_oauth_error(&wrong_secret, StatusCode::UNAUTHORIZED, "invalid_client");
    let unknown_client = token_request(
        &platform,
        "grant_type=client_credentials&client_id=sa_nobody&client_secret=x",
        None,
    )
    .await;
    assert_oauth_error(&unknown_client, StatusCode::UNAUTHORIZED, "invalid_client");
    let no_client = token_request(&platform, "grant_type=client_credentials", None).await;
    assert_oauth_error(&no_client, StatusCode::UNAUTHORIZED, "invalid_client");

    let password_grant = token_request(
        &platform,
        "grant_type=password&username=a&password=b",
        Some((client_id, secret)),
    )
    .await;
    assert_oauth_error(
        &password_grant,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    );
    let no_grant = token_request(&platform, "", Some((client_id, secret))).await;
    assert_oauth_error(&no_grant, StatusCode::BAD_REQUEST, "invalid_request");
    let both_ways = token_request(
        &platform,
        &format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}"),
        Some((client_id, secret)),
    )
    .await;
    assert_oauth_error(&both_ways, StatusCode::BAD_REQUEST, "invalid_request");
    let other_client = token_request(
        &platform,
        "grant_type=client_credentials&client_id=sa_someone_else",
        Some((client_id, secret)),
    )
    .await;
    assert_oauth_error(&other_client, StatusCode::BAD_REQUEST, "invalid_request");
    let secret_only = token_request(
        &platform,
        &format!("grant_type=client_credentials&client_secret={secret}"),
        None,
    )
    .await;
    assert_oauth_error(&secret_only, StatusCode::UNAUTHORIZED, "invalid_client");
    let repeated = token_request(
        &platform,
        "grant_type=client_credentials&grant_type=client_credentials",
        Some((client_id, secret)),
    )
    .await;
    assert_oauth_error(&repeated, StatusCode::BAD_REQUEST, "invalid_request");
    let json_body = platform
        .send(
            Method::POST,
            "/auth/token",
            None,
            Some(json!({"grant_type": "client_credentials"})),
        )
        .await;
    assert_oauth_error(&json_body, StatusCode::BAD_REQUEST, "invalid_request");

    // GAME_SERVER is never a person's role.
    let person = platform
        .send(
            Method::POST,
            "/users",
            Some(&admin.access_token),
            Some(json!({"email": "gs@example.com", "password": "long-enough-1", "roles": ["GAME_SERVER"]})),
        )
        .await;
    person.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(
        person.body["errors"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("roles")
    );
    let patched = platform
        .send(
            Method::PATCH,
            &format!("/users/{}", admin.id),
            Some(&admin.access_token),
            Some(json!({"roles": ["ADMIN", "GAME_SERVER"]})),
        )
        .await;
    patched.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[tokio::test]
async fn repeated_bad_secrets_are_locked_out_like_logins() {
    let platform = Platform::builder()
        .gateway_envs(&NO_RATE_LIMITS)
        .start()
        .await;
    let admin = platform.admin().await;
    let (_, account) = platform.game_server(&admin, "guessed").await;
    let mut locked = None;
    for attempt in 0..10 {
        let reply = token_request(
            &platform,
            "grant_type=client_credentials",
            Some((&account.client_id, &format!("guess-{attempt}"))),
        )
        .await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            locked = Some((attempt, reply));
            break;
        }
        assert_oauth_error(&reply, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let (attempt, reply) = locked.expect("locked out within 10 attempts");
    assert!(attempt >= 5, "not before the login threshold: {attempt}");
    assert!(reply.retry_after().is_some_and(|s| s > 0), "{reply:?}");
    // Locked: even the right secret waits.
    let right = token_request(
        &platform,
        "grant_type=client_credentials",
        Some((&account.client_id, &account.client_secret)),
    )
    .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS, "{right:?}");
}

#[tokio::test]
async fn rotation_and_deletion_stop_old_secrets_at_once_and_old_tokens_within_a_second() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let (session, account) = platform.game_server(&admin, "rotated").await;
    let (status, _) = platform.get(GAME_SERVER_READ, &session.access_token).await;
    assert_eq!(status, StatusCode::OK);

    let rotated = platform
        .send(
            Method::POST,
            &format!("/service-accounts/{}/rotate-secret", account.id),
            Some(&admin.access_token),
            None,
        )
        .await;
    let rotated = rotated.expect(StatusCode::OK).clone();
    let new_secret = rotated["clientSecret"].as_str().unwrap();
    assert_ne!(new_secret, account.client_secret);
    assert_eq!(rotated["clientId"], account.client_id.as_str());
    let (refused, after) = platform
        .until_refused(GAME_SERVER_READ, &session.access_token)
        .await;
    refused.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert!(after < crate::common::REVOCATION_DEADLINE);
    let old = platform
        .client_token(&account.client_id, &account.client_secret)
        .await;
    assert_oauth_error(&old, StatusCode::UNAUTHORIZED, "invalid_client");
    let fresh = platform.client_token(&account.client_id, new_secret).await;
    let fresh = fresh.expect(StatusCode::OK)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = platform.get(GAME_SERVER_READ, &fresh).await;
    assert_eq!(status, StatusCode::OK);

    let deleted = platform
        .send(
            Method::DELETE,
            &format!("/service-accounts/{}", account.id),
            Some(&admin.access_token),
            None,
        )
        .await;
    deleted.expect(StatusCode::NO_CONTENT);
    let (refused, _) = platform.until_refused(GAME_SERVER_READ, &fresh).await;
    refused.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let gone = platform.client_token(&account.client_id, new_secret).await;
    assert_oauth_error(&gone, StatusCode::UNAUTHORIZED, "invalid_client");
    let again = platform
        .send(
            Method::DELETE,
            &format!("/service-accounts/{}", account.id),
            Some(&admin.access_token),
            None,
        )
        .await;
    again.expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, audit) = platform
        .get(
            &format!("/audit?entityId={}", account.id),
            &admin.access_token,
        )
        .await;
    let actions: Vec<_> = items(&audit)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "SERVICE_ACCOUNT_DELETED",
            "SERVICE_ACCOUNT_SECRET_ROTATED",
            "SERVICE_ACCOUNT_CREATED"
        ],
        "{audit}"
    );
}
