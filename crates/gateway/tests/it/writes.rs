//! The HTTP mapping of every write route with real ids: PATCH and DELETE of events, rewards and
//! users answer what docs/api.md says, change what they say (read back), and `If-Match` with a
//! stale version is 412 `VERSION_MISMATCH` and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{self, Platform, Reply};

/// `GET path` as `token`, asserting 200.
async fn read(platform: &Platform, token: &str, path: &str) -> Reply {
    let reply = platform.send(Method::GET, path, Some(token), None).await;
    reply.expect(StatusCode::OK);
    reply
}

/// `PATCH path` as `token` with `If-Match: if_match` (when given).
async fn patch(
    platform: &Platform,
    token: &str,
    path: &str,
    if_match: Option<&str>,
    body: Value,
) -> Reply {
    let mut request = platform
        .request(Method::PATCH, path)
        .token(token)
        .json(&body);
    if let Some(if_match) = if_match {
        request = request.header("if-match", if_match);
    }
    request.send().await
}

#[tokio::test]
async fn event_patch_and_delete_with_versions() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "writes-op@example.com", &["OPERATOR"])
        .await;
    let token = operator.access_token.as_str();
    let event = platform
        .create_event(
            token,
            common::event_body("Before", chrono::Duration::days(1), json!({})),
        )
        .await;
    let path = format!("/events/{}", event["id"].as_str().unwrap());

    // The ETag is the version, quoted.
    let current = read(&platform, token, &path).await;
    let version = current.body["version"].as_i64().unwrap();
    assert_eq!(
        current.header("etag"),
        Some(format!("\"{version}\"").as_str())
    );

    // If-Match with the current version: applied, version + 1, the new ETag.
    let updated = patch(
        &platform,
        token,
        &path,
        Some(&format!("\"{version}\"")),
        json!({"title": "After", "description": "changed"}),
    )
    .await;
    let body = updated.expect(StatusCode::OK);
    assert_eq!(body["title"], "After");
    assert_eq!(body["description"], "changed");
    assert_eq!(body["version"], version + 1);
    let etag = format!("\"{}\"", version + 1);
    assert_eq!(updated.header("etag"), Some(etag.as_str()));

    // The stale version: 412 VERSION_MISMATCH, in every accepted spelling, and nothing changes.
    for stale in [
        format!("\"{version}\""),
        version.to_string(),
        format!("W/\"{version}\""),
    ] {
        patch(
            &platform,
            token,
            &path,
            Some(&stale),
            json!({"title": "Lost"}),
        )
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED, "VERSION_MISMATCH");
    }
    let after = read(&platform, token, &path).await;
    assert_eq!(after.body["title"], "After");
    assert_eq!(after.body["version"], version + 1);
    // An If-Match that is no version at all names the header.
    let reply = patch(&platform, token, &path, Some("soon"), json!({"title": "x"})).await;
    let problem = reply.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(problem["errors"][0]["field"], "If-Match", "{problem}");

    // Without If-Match the change is applied unconditionally; then cancel it.
    let body = patch(&platform, token, &path, None, json!({"state": "CANCELED"})).await;
    let body = body.expect(StatusCode::OK);
    assert_eq!(body["status"], "CANCELED");
    assert_eq!(body["version"], version + 2);

    // DELETE is ADMIN only; then the event is gone for every route that names it.
    platform
        .send(Method::DELETE, &path, Some(token), None)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "FORBIDDEN");
    let deleted = platform
        .send(Method::DELETE, &path, Some(&admin.access_token), None)
        .await;
    deleted.expect(StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null, "204 has no body");
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"title": "ghost"}))),
        (Method::DELETE, None),
    ] {
        platform
            .send(method.clone(), &path, Some(&admin.access_token), body)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    platform
        .send(Method::GET, &format!("{path}/rewards"), Some(token), None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn reward_patch_and_delete() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "reward-op@example.com", &["OPERATOR"])
        .await;
    let token = operator.access_token.as_str();
    let (event_id, reward_id) = platform.active_event_with_reward(token, "Rewards").await;
    let path = format!("/events/{event_id}/rewards/{reward_id}");

    let before = read(&platform, token, &path).await.body;
    assert_eq!(before["eventId"], event_id.as_str());
    let updated = patch(
        &platform,
        token,
        &path,
        None,
        json!({"name": "Silver", "quantity": 7, "stock": 3}),
    )
    .await;
    let body = updated.expect(StatusCode::OK);
    assert_eq!(
        (
            &body["id"],
            &body["name"],
            &body["quantity"],
            &body["stock"],
            &body["remaining"]
        ),
        (
            &json!(reward_id),
            &json!("Silver"),
            &json!(7),
            &json!(3),
            &json!(3)
        ),
        "{body}"
    );
    let read_back = read(&platform, token, &path).await.body;
    assert_eq!(read_back["name"], "Silver");
    assert_eq!(read_back["quantity"], 7);
    // A bad change names its field and changes nothing.
    let reply = patch(&platform, token, &path, None, json!({"quantity": 0})).await;
    let problem = reply.expect_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(problem["errors"][0]["field"], "quantity", "{problem}");
    assert_eq!(read(&platform, token, &path).await.body["quantity"], 7);
    // A reward of another event is not found under this one.
    let (other_event, _) = platform.active_event_with_reward(token, "Other").await;
    platform
        .send(
            Method::GET,
            &format!("/events/{other_event}/rewards/{reward_id}"),
            Some(token),
            None,
        )
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");

    // DELETE is ADMIN only; then the reward is gone from the event.
    platform
        .send(Method::DELETE, &path, Some(token), None)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "FORBIDDEN");
    platform
        .send(Method::DELETE, &path, Some(&admin.access_token), None)
        .await
        .expect(StatusCode::NO_CONTENT);
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "ghost"}))),
        (Method::DELETE, None),
    ] {
        platform
            .send(method, &path, Some(&admin.access_token), body)
            .await
            .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let list = read(&platform, token, &format!("/events/{event_id}/rewards")).await;
    assert!(common::items(&list.body).is_empty(), "{:?}", list.body);
}

#[tokio::test]
async fn user_patch_and_delete() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let player = platform.player("to-change@example.com").await;
    let path = format!("/users/{}", player.id);

    let body = platform
        .change_user(
            &admin,
            &player.id,
            json!({"username": "renamed", "roles": ["USER", "AUDITOR"]}),
        )
        .await;
    assert_eq!(body["id"], player.id.as_str());
    assert_eq!(body["username"], "renamed");
    assert_eq!(body["roles"], json!(["USER", "AUDITOR"]));
    let read_back = read(&platform, &admin.access_token, &path).await.body;
    assert_eq!(read_back["username"], "renamed");
    assert_eq!(read_back["roles"], json!(["USER", "AUDITOR"]));

    // A new password works at once, the old one no longer.
    platform
        .change_user(&admin, &player.id, json!({"password": "a-new-password-1"}))
        .await;
    platform.login(&player.email, "a-new-password-1").await;
    platform
        .send(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": player.email, "password": common::PLAYER_PASSWORD})),
        )
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");

    // Only an admin changes or deletes users; unknown ids are 404.
    let other = platform.player("bystander@example.com").await;
    for (method, body) in [
        (Method::PATCH, Some(json!({"username": "x"}))),
        (Method::DELETE, None),
    ] {
        platform
            .send(
                method.clone(),
                &path,
                Some(&other.access_token),
                body.clone(),
            )
            .await
            .expect_problem(StatusCode::FORBIDDEN, "FORBIDDEN");
        platform
            .send(
                method,
                "/users/no-such-user",
                Some(&admin.access_token),
                body,
            )
            .await
            .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    }

    // DELETE: 204, then gone, and the user's tokens stop working within a second.
    let session = platform.login(&player.email, "a-new-password-1").await;
    let deleted = platform
        .send(Method::DELETE, &path, Some(&admin.access_token), None)
        .await;
    deleted.expect(StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null, "204 has no body");
    platform
        .send(Method::GET, &path, Some(&admin.access_token), None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    let (reply, took) = platform
        .until_refused("/auth/me", &session.access_token)
        .await;
    reply.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    eprintln!("a deleted user's token refused after {took:?}");
    platform
        .send(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": player.email, "password": "a-new-password-1"})),
        )
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
}
