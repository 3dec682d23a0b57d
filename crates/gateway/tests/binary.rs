//! The erp-gateway binary starts in front of real auth and event processes, reports ready only
//! while they answer, answers unknown routes with problem+json, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use erp_testkit::{
    ServiceProcess, assert_refuses_bad_config, grpc_service_env, redis_url, unique_name,
    workspace_binary,
};

const BINARY: &str = env!("CARGO_BIN_EXE_erp-gateway");

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let database = unique_name("gw");
    let auth = ServiceProcess::start(
        &workspace_binary("erp-auth"),
        &grpc_service_env("ERP_AUTH_ADDR", &format!("{database}_auth")),
    )
    .await;
    let event = ServiceProcess::start(
        &workspace_binary("erp-event"),
        &grpc_service_env("ERP_EVENT_ADDR", &format!("{database}_event")),
    )
    .await;
    let gateway = ServiceProcess::start(
        Path::new(BINARY),
        &[
            ("ERP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
            ("ERP_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("ERP_AUTH_URL", format!("http://{}", auth.addr("grpc"))),
            ("ERP_EVENT_URL", format!("http://{}", event.addr("grpc"))),
            ("ERP_REDIS_URL", redis_url()),
            (
                "ERP_SERVICE_IDENTITY_KEY_FILE",
                erp_testkit::identity_key_file().display().to_string(),
            ),
        ],
    )
    .await;
    gateway.wait_ready(Duration::from_secs(30)).await;

    let client = reqwest::Client::new();
    let response = client
        .get(format!(
            "http://{}/api/v1/no-such-route",
            gateway.addr("http")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["code"], "NOT_FOUND");

    // Still ready while a service behind it is down (no cascade); the detail reports it.
    assert!(event.terminate(Duration::from_secs(30)).await.success());
    let readyz = format!("http://{}/readyz", gateway.addr("admin"));
    let response = client.get(&readyz).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let detail = format!("http://{}/healthz/dependencies", gateway.addr("admin"));
    let response = client.get(&detail).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["dependencies"]["event"]["status"], "down", "{body}");
    assert_eq!(body["dependencies"]["auth"]["status"], "up", "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");

    let status = gateway.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(auth.terminate(Duration::from_secs(30)).await.success());
}

#[test]
fn refuses_to_start_with_a_bad_upstream_url() {
    assert_refuses_bad_config(Path::new(BINARY), "ERP_EVENT_URL", "event:50052");
}
