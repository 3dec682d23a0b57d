//! The erp-event binary starts against the real stores, reports ready, and stops cleanly on SIGTERM.

use std::path::Path;
use std::time::Duration;

use erp_testkit::{ServiceProcess, assert_refuses_bad_config, grpc_service_env};

use crate::common::Scratch;

const BINARY: &str = env!("CARGO_BIN_EXE_erp-event");

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let scratch = Scratch::new();
    let env = grpc_service_env("ERP_EVENT_ADDR", &scratch.name);
    let process = ServiceProcess::start(Path::new(BINARY), &env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn refuses_to_start_with_a_bad_listen_address() {
    assert_refuses_bad_config(Path::new(BINARY), "ERP_EVENT_ADDR", "not-an-address");
}
