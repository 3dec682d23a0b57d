//! The erp-gateway binary starts in front of real auth and event processes, reports ready only
//! while they answer, answers unknown routes with problem+json, and stops cleanly on SIGTERM.

use erp_testkit::assert_refuses_bad_config;

use reqwest::{Method, StatusCode};

use crate::common::{Platform, gateway_binary};

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let mut platform = Platform::builder().without_admin().start().await;
    platform
        .send(Method::GET, "/no-such-route", None, None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");
    let client = reqwest::Client::new();

    // Still ready while a service behind it is down (no cascade); the detail reports it.
    let admin = platform.gateway().addr("admin");
    assert!(platform.stop_event().await);
    let readyz = format!("http://{admin}/readyz");
    let response = client.get(&readyz).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let detail = format!("http://{admin}/healthz/dependencies");
    let response = client.get(&detail).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["dependencies"]["event"]["status"], "down", "{body}");
    assert_eq!(body["dependencies"]["auth"]["status"], "up", "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");

    assert!(
        platform.stop_gateway().await,
        "the gateway exits 0 on SIGTERM"
    );
    platform.stop_auth().await;
}

#[test]
fn refuses_to_start_with_a_bad_upstream_url() {
    assert_refuses_bad_config(gateway_binary(), "ERP_EVENT_URL", "event:50052");
}
