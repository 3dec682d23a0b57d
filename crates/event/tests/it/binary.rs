//! The erp-event binary starts against the real stores, reports ready, and stops cleanly on SIGTERM.

use std::path::Path;

use erp_testkit::{
    assert_refuses_bad_config, assert_serves_and_stops_on_sigterm, grpc_service_env,
};

use crate::common::Scratch;

const BINARY: &str = env!("CARGO_BIN_EXE_erp-event");

#[tokio::test]
async fn starts_reports_ready_and_exits_zero_on_sigterm() {
    let scratch = Scratch::new();
    let env = grpc_service_env("ERP_EVENT_ADDR", &scratch.name);
    assert_serves_and_stops_on_sigterm(Path::new(BINARY), &env).await;
}

#[test]
fn refuses_to_start_with_a_bad_listen_address() {
    assert_refuses_bad_config(Path::new(BINARY), "ERP_EVENT_ADDR", "not-an-address");
}
