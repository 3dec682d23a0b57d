//! The HTTP surface through the real binaries: problem+json for every error, bad input never a
//! 5xx, OpenAPI and Swagger UI, request ids, sessions through HTTP (cookie and body), role changes
//! within a second, and 503 when auth is down.

#![allow(clippy::type_complexity)]

use crate::common::{Platform, REVOCATION_DEADLINE, STAFF_PASSWORD, assert_problem, iso};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn unknown_routes_wrong_methods_and_docs() {
    let platform = Platform::start().await;
    let root = format!("http://{}", platform.gateway().addr("http"));
    platform
        .send(Method::GET, "/nope", None, None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    let reply = platform
        .send(Method::DELETE, "/auth/login", None, None)
        .await;
    assert_problem(
        reply.status,
        &reply.headers,
        &reply.body,
        StatusCode::METHOD_NOT_ALLOWED,
        reply.code().unwrap_or("no code"),
    );

    let response = platform
        .http
        .get(format!("{root}/api/v1/openapi.json"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    assert!(response.headers().contains_key("traceparent"));
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/auth/login",
        "/api/v1/events/{id}",
        "/api/v1/claims/{id}/approve",
        "/api/v1/dashboard",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path} documented");
    }
    let docs = platform
        .http
        .get(format!("{root}/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("/docs/swagger-ui-bundle.js") && !page.contains("https://"));
    let bundle = platform
        .http
        .get(format!("{root}/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_naming_the_field() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let token = Some(admin.access_token.as_str());
    let raw = |method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = platform
            .http
            .request(method, platform.url(path))
            .bearer_auth(&admin.access_token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                status,
                content_type,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let json_type = Some("application/json");
    let cases: Vec<(Method, &str, Option<&str>, Vec<u8>, u16, &str)> = vec![
        (Method::POST, "/auth/register", json_type, b"{".to_vec(), 400, "body"),
        (Method::POST, "/auth/register", json_type, b"[]".to_vec(), 400, "body"),
        (Method::POST, "/auth/register", json_type, br#"{"password": "long-enough-1"}"#.to_vec(), 400, "email"),
        (Method::POST, "/auth/register", json_type, br#"{"email": 5, "password": "long-enough-1"}"#.to_vec(), 400, "email"),
        (Method::POST, "/auth/register", json_type, br#"{"email": "a@b.co", "password": "long-enough-1", "roles": ["ADMIN"]}"#.to_vec(), 400, "roles"),
        (Method::POST, "/auth/register", json_type, br#"{"email": "not-an-email", "password": "long-enough-1"}"#.to_vec(), 400, "email"),
        (Method::POST, "/auth/register", json_type, br#"{"email": "a@b.co", "password": "short"}"#.to_vec(), 400, "password"),
        (Method::POST, "/auth/register", Some("text/plain"), br#"{"email": "a@b.co", "password": "long-enough-1"}"#.to_vec(), 415, ""),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "yesterday", "endsAt": "2030-01-01T00:00:00Z"}"#.to_vec(), 400, "startsAt"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2029-01-01T00:00:00Z"}"#.to_vec(), 400, "endsAt"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "claimPolicy": "SOMETIMES"}"#.to_vec(), 400, "claimPolicy"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "condition": {"metric": "kills", "op": "ABOUT", "value": 1}}"#.to_vec(), 400, "condition.op"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "condition": {"all": [{"metric": "kills", "op": "GT", "value": "many"}]}}"#.to_vec(), 400, "condition.all[0].value"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "rewards": [{"name": "g", "type": "GOLD", "quantity": 1}]}"#.to_vec(), 400, "rewards[0].type"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "rewards": [{"name": "g", "type": "ITEM", "quantity": 0}]}"#.to_vec(), 400, "rewards[0].quantity"),
        (Method::POST, "/events", json_type, format!(r#"{{"title": "{}", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z"}}"#, "t".repeat(201)).into_bytes(), 400, "title"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "rewards": [{"name": "g", "type": "ITEM", "quantity": 99999999999999999999}]}"#.to_vec(), 400, "rewards[0].quantity"),
        (Method::POST, "/progress", json_type, br#"{"items": [{"userId": "u", "metric": "Bad Metric", "value": 1, "mode": "INCREMENT"}]}"#.to_vec(), 400, "items[0].metric"),
        (Method::POST, "/progress", json_type, br#"{"items": [{"userId": "u", "metric": "kills", "value": 1, "mode": "SOMETIMES"}]}"#.to_vec(), 400, "items[0].mode"),
        (Method::GET, "/events?limit=0", None, Vec::new(), 400, "limit"),
        (Method::GET, "/events?limit=abc", None, Vec::new(), 400, "limit"),
        (Method::GET, "/events?status=SOON", None, Vec::new(), 400, "status"),
        (Method::GET, "/events?cursor=%%%", None, Vec::new(), 400, "cursor"),
        (Method::GET, "/users?limit=101", None, Vec::new(), 400, "limit"),
        (Method::GET, "/events/does-not-exist", None, Vec::new(), 404, ""),
        (Method::PATCH, "/users/some-id", json_type, br#"{"roles": ["EMPEROR"]}"#.to_vec(), 400, "roles[0]"),
        // Timestamps outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z name their field.
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "0000-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z"}"#.to_vec(), 400, "startsAt"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "+10000-01-01T00:00:00Z"}"#.to_vec(), 400, "endsAt"),
        (Method::PATCH, "/events/some-id", json_type, br#"{"startsAt": "1969-12-31T23:59:59Z"}"#.to_vec(), 400, "startsAt"),
        (Method::POST, "/progress", json_type, br#"{"items": [{"userId": "u", "metric": "kills", "value": 1, "mode": "MAX", "occurredAt": "0000-01-01T00:00:00Z"}]}"#.to_vec(), 400, "items[0].occurredAt"),
        (Method::GET, "/claims?from=0000-01-01T00:00:00Z", None, Vec::new(), 400, "from"),
        (Method::GET, "/audit?to=0000-01-01T00:00:00Z", None, Vec::new(), 400, "to"),
        // `null` and wrong types in enum fields name the field too.
        (Method::POST, "/progress", json_type, br#"{"items": [{"userId": "u", "metric": "kills", "value": 1, "mode": null}]}"#.to_vec(), 400, "items[0].mode"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "claimPolicy": 5}"#.to_vec(), 400, "claimPolicy"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2031-01-01T00:00:00Z", "rewards": [{"name": "g", "type": null, "quantity": 1}]}"#.to_vec(), 400, "rewards[0].type"),
        (Method::POST, "/events", json_type, br#"{"title": "t", "startsAt": 5, "endsAt": "2031-01-01T00:00:00Z"}"#.to_vec(), 400, "startsAt"),
        (Method::PATCH, "/events/some-id", json_type, br#"{"state": true}"#.to_vec(), 400, "state"),
        // A path segment that is not valid UTF-8 is an unknown id.
        (Method::GET, "/events/%FF", None, Vec::new(), 404, ""),
        (Method::GET, "/events/%FF/rewards", None, Vec::new(), 404, ""),
        (Method::GET, "/claims/%C3%28", None, Vec::new(), 404, ""),
        // Last: the gateway may close the connection of a body it refuses unread.
        (Method::POST, "/auth/register", json_type, vec![b' '; 2 * 1024 * 1024], 413, ""),
    ];
    let mut failures = Vec::new();
    for (method, path, content_type, body, expected, field) in cases {
        let (status, problem_type, problem) = raw(method.clone(), path, content_type, body).await;
        let field_ok = field.is_empty()
            || problem["errors"]
                .as_array()
                .is_some_and(|errors| errors.iter().any(|e| e["field"] == field));
        if status.as_u16() != expected
            || problem_type.as_deref() != Some("application/problem+json")
            || !field_ok
        {
            failures.push(format!("{method} {path}: {status} {problem_type:?} {problem} (wanted {expected} naming {field:?})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = token;
}

#[tokio::test]
async fn sessions_through_http_cookie_and_body() {
    let platform = Platform::start().await;
    let register = platform
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({"email": "s@example.com", "password": "password-123", "username": "s"})),
        )
        .await;
    assert_eq!(register.0, StatusCode::CREATED);
    assert_eq!(register.1["roles"], json!(["USER"]));
    assert!(register.1.get("passwordHash").is_none() && register.1.get("password").is_none());

    let response = platform
        .http
        .post(platform.url("/auth/login"))
        .json(&json!({"email": "s@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "erp_refresh=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth",
    ] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    let login: Value = response.json().await.unwrap();
    assert_eq!(login["tokenType"], "Bearer");
    assert!(login["expiresIn"].as_i64().unwrap() > 0);
    let cookie_value = cookie.split(';').next().unwrap().to_owned();

    // Refresh through the cookie (no body).
    let refreshed = platform
        .http
        .post(platform.url("/auth/refresh"))
        .header("cookie", &cookie_value)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_ne!(refreshed["refreshToken"], login["refreshToken"]);

    // The first token again (in the body): reuse, and the whole family dies.
    let (status, body) = platform.refresh(&json!(login["refreshToken"])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("REFRESH_TOKEN_REUSED"))
    );
    let (status, body) = platform.refresh(&json!(refreshed["refreshToken"])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("INVALID_REFRESH_TOKEN"))
    );

    // Logout kills the access token.
    let session = platform.login("s@example.com", "password-123").await;
    let (status, me) = platform.get("/auth/me", &session.access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "s@example.com");
    assert_eq!(me["username"], "s");
    let (status, _) = platform
        .call(
            Method::POST,
            "/auth/logout",
            Some(&session.access_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The contract allows a revocation a second to reach every gateway.
    let (reply, took) = platform
        .until_refused("/auth/me", &session.access_token)
        .await;
    eprintln!("the logged-out token was refused after {took:?}");
    reply.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (status, _) = platform.refresh(&json!(session.refresh_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Wrong password and unknown email look the same; then the lockout.
    let wrong = platform.try_login("s@example.com", "nope-nope").await;
    let unknown = platform.try_login("x@example.com", "nope-nope").await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.1["code"], "INVALID_CREDENTIALS");
    assert_eq!(wrong.1["detail"], unknown.1["detail"]);
    for _ in 0..4 {
        platform.try_login("s@example.com", "nope-nope").await;
    }
    let response = platform
        .http
        .post(platform.url("/auth/login"))
        .json(&json!({"email": "s@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_ATTEMPTS");
}

#[tokio::test]
async fn a_demoted_operator_is_refused_within_a_second() {
    let platform = Platform::start().await;
    let admin = platform.admin().await;
    let operator = platform
        .staff(&admin, "demote@example.com", &["OPERATOR"])
        .await;
    let create = |token: String| {
        let platform = &platform;
        async move {
            platform
                .call(
                    Method::POST,
                    "/events",
                    Some(&token),
                    Some(json!({"title": "t", "startsAt": iso(chrono::Duration::hours(1)), "endsAt": iso(chrono::Duration::hours(2))})),
                )
                .await
                .0
        }
    };
    assert_eq!(
        create(operator.access_token.clone()).await,
        StatusCode::CREATED
    );
    platform
        .change_user(&admin, &operator.id, json!({"roles": ["USER"]}))
        .await;
    let (_, took) = erp_testkit::eventually(REVOCATION_DEADLINE, || async {
        match create(operator.access_token.clone()).await {
            StatusCode::FORBIDDEN => Ok(()),
            status => Err(status),
        }
    })
    .await;
    eprintln!("the demotion took effect after {took:?}");
    // Disabling ends access altogether, within the second too.
    let disabled = platform
        .change_user(&admin, &operator.id, json!({"disabled": true}))
        .await;
    assert_eq!(disabled["disabled"], true);
    let (reply, took) = platform
        .until_refused("/events", &operator.access_token)
        .await;
    eprintln!("the disabled account's token was refused after {took:?}");
    reply.expect_problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // And its password no longer logs in.
    platform
        .send(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": operator.email, "password": STAFF_PASSWORD})),
        )
        .await
        .expect_problem(StatusCode::FORBIDDEN, "ACCOUNT_DISABLED");
}

#[tokio::test]
async fn uncached_tokens_get_503_while_auth_is_down() {
    // Cached sessions outlive the stop of auth, however long it takes.
    let mut platform = Platform::builder()
        .gateway_envs(&[("ERP_INTROSPECTION_CACHE_TTL_MS", "60000")])
        .start()
        .await;
    let admin = platform.admin().await;
    // Verified (and cached by the gateway) while auth is up.
    let (status, _) = platform.get("/events", &admin.access_token).await;
    assert_eq!(status, StatusCode::OK);
    platform.stop_auth().await;
    // The gateway stays in rotation: auth being down is answered per request, and a session it
    // already verified keeps reading events.
    let readyz = reqwest::get(format!(
        "http://{}/readyz",
        platform.gateway().addr("admin")
    ))
    .await
    .unwrap();
    assert_eq!(readyz.status(), StatusCode::OK);
    let (status, body) = platform.get("/events", &admin.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = platform.get("/events", "some-uncached-token").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE");
    let (status, _) = platform.try_login("a@example.com", "password-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
