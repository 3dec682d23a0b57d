//! The erp-auth binary starts against the real stores, reports ready, and stops cleanly on SIGTERM.

use std::path::Path;
use std::time::Duration;

use erp_testkit::{ServiceProcess, TestStores, assert_refuses_bad_config};

use crate::common::service_env;

const BINARY: &str = env!("CARGO_BIN_EXE_erp-auth");

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let stores = TestStores::new("auth_bin");
    let env = service_env(&stores, "ERP_AUTH_ADDR", "auth");
    let process = ServiceProcess::start(Path::new(BINARY), &env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    let status = process.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn refuses_to_start_with_a_bad_listen_address() {
    assert_refuses_bad_config(Path::new(BINARY), "ERP_AUTH_ADDR", "not-an-address");
}
