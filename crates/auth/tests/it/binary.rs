//! The erp-auth binary starts against the real stores, reports ready, and stops cleanly on SIGTERM.

use std::path::Path;

use erp_testkit::{TestStores, assert_refuses_bad_config, assert_serves_and_stops_on_sigterm};

use crate::common::service_env;

const BINARY: &str = env!("CARGO_BIN_EXE_erp-auth");

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let stores = TestStores::new("auth_bin");
    let env = service_env(&stores, "ERP_AUTH_ADDR", "auth");
    assert_serves_and_stops_on_sigterm(Path::new(BINARY), &env).await;
}

#[test]
fn refuses_to_start_with_a_bad_listen_address() {
    assert_refuses_bad_config(Path::new(BINARY), "ERP_AUTH_ADDR", "not-an-address");
}
