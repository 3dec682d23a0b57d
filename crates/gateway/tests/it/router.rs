//! The gateway's router in process, called with `tower::ServiceExt::oneshot`: what it answers
//! without auth or event (they are not running: their addresses refuse connections). Unknown
//! routes and wrong methods, default-deny without a token on every protected route, malformed
//! bodies, HEAD like GET, and 503 when auth cannot be reached.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use erp_platform::Env;
use erp_testkit::TestStores;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::assert_problem;

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The router over lazy connections to an auth and an event that are not there, with the test
/// Redis (rate limits) under the test's own prefix.
pub fn router(stores: &TestStores) -> Router {
    let env = Env::from_pairs([
        (
            "ERP_AUTH_URL".to_owned(),
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        (
            "ERP_EVENT_URL".to_owned(),
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("ERP_REDIS_URL".to_owned(), stores.redis_url().to_owned()),
        ("ERP_REDIS_KEY_PREFIX".to_owned(), stores.redis_prefix()),
        ("ERP_GRPC_CONNECT_TIMEOUT_MS".to_owned(), "300".to_owned()),
        (
            "ERP_SERVICE_IDENTITY_KEY_FILE".to_owned(),
            erp_testkit::identity_key_file().display().to_string(),
        ),
    ]);
    let config = erp_gateway::Config::from_env(&env).unwrap();
    erp_gateway::router(erp_gateway::AppState::connect_lazy(config).unwrap())
}

/// One request through the router: status, headers and body (JSON, or `Value::Null` if empty,
/// or the text).
async fn call(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 8 << 20)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, body)
}

pub fn request(method: Method, path: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap()
}

/// A concrete path for a route template (any id: the request is refused before it is used).
fn concrete(template: &str) -> String {
    format!(
        "/api/v1{}",
        template
            .replace("{id}", "some-id")
            .replace("{rewardId}", "some-reward")
    )
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    for path in [
        "/api/v1/nope",
        "/api/v1/events/e1/nope",
        "/nope",
        "/api/v2/events",
    ] {
        let (status, headers, body) = call(&router, request(Method::GET, path)).await;
        assert_problem(status, &headers, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    for (method, path) in [
        (Method::DELETE, "/api/v1/auth/login"),
        (Method::PUT, "/api/v1/events"),
        (Method::POST, "/api/v1/claims/me"),
    ] {
        let (status, headers, body) = call(&router, request(method.clone(), path)).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert_problem(
            status,
            &headers,
            &body,
            StatusCode::METHOD_NOT_ALLOWED,
            body["code"].as_str().unwrap_or("no code"),
        );
    }
}

#[tokio::test]
async fn every_route_that_needs_a_token_refuses_a_call_without_one() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    let mut checked = 0;
    for (method, template, access) in erp_gateway::routes::ROUTE_TABLE {
        let path = concrete(template);
        let (status, headers, body) = call(&router, request(method.clone(), &path)).await;
        if access.needs_token() {
            assert_problem(
                status,
                &headers,
                &body,
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
            );
            checked += 1;
        } else {
            // Public: never refused for the missing token.
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_ne!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        }
    }
    assert!(checked >= 20, "only {checked} protected routes");
}

#[tokio::test]
async fn malformed_bodies_are_problems_before_any_service_is_asked() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    let post = |content_type: &str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/auth/register")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    // (The password's length is auth's rule: checked end to end in http.rs.)
    for (body, field) in [
        (&b"{"[..], "body"),
        (b"[]", "body"),
        (br#"{"password": "long-enough-1"}"#, "email"),
    ] {
        let (status, headers, problem) =
            call(&router, post("application/json", body.to_vec())).await;
        assert_problem(
            status,
            &headers,
            &problem,
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        );
        assert!(
            problem["errors"]
                .as_array()
                .is_some_and(|errors| errors.iter().any(|e| e["field"] == field)),
            "{field} named in {problem}"
        );
    }
    let (status, headers, problem) = call(
        &router,
        post("text/plain", br#"{"email": "a@b.co"}"#.to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{problem}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let (status, headers, problem) = call(
        &router,
        post("application/json", vec![b' '; 2 * 1024 * 1024]),
    )
    .await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    for path in [
        "/api/v1/openapi.json",
        "/docs",
        "/api/v1/events",
        "/api/v1/nope",
    ] {
        let get = router
            .clone()
            .oneshot(request(Method::GET, path))
            .await
            .unwrap();
        let head = router
            .clone()
            .oneshot(request(Method::HEAD, path))
            .await
            .unwrap();
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(
            head.headers().get(header::CONTENT_TYPE),
            get.headers().get(header::CONTENT_TYPE),
            "{path}"
        );
        let body = axum::body::to_bytes(head.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(
            body.is_empty(),
            "HEAD {path} has a body of {} bytes",
            body.len()
        );
    }
}

#[tokio::test]
async fn a_token_auth_cannot_check_is_503_with_retry_after() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    let with_token = Request::builder()
        .uri("/api/v1/events")
        .header(header::AUTHORIZATION, "Bearer some-token")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(&router, with_token).await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    );
    let retry_after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
}

#[tokio::test]
async fn the_served_document_is_the_one_the_crate_builds() {
    let stores = TestStores::new("router");
    let router = router(&stores);
    let (status, headers, served) =
        call(&router, request(Method::GET, "/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(served["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    let paths = served["paths"].as_object().unwrap();
    for (method, template, _) in erp_gateway::routes::ROUTE_TABLE {
        if template.as_str() == "/openapi.json" {
            continue;
        }
        let item = &paths[&format!("/api/v1{template}")];
        assert!(
            item.get(method.as_str().to_lowercase()).is_some(),
            "{method} {template} documented"
        );
    }
}
