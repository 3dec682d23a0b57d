//! The gateway's integration tests, one binary (each test binary links the whole workspace, so
//! one instead of eleven saves most of the suite's link time).
//!
//! - end to end, through the real `erp-gateway`, `erp-auth` and `erp-event` binaries on free
//!   ports against the real stores ([`common::Platform`]): every module but `router`;
//! - in process, the gateway's router called with `tower::ServiceExt::oneshot` where no process
//!   is needed: `router`.
//!
//! Every test owns its databases and Redis key prefix ([`erp_testkit::TestStores`]) and drops
//! them when it ends. Run one module with e.g. `cargo nextest run -p erp-gateway --test it
//! access::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod access;
mod binary;
mod deliveries;
mod forged_callers;
mod game_servers;
mod hardening;
mod http;
mod journeys;
mod log_keys;
mod log_pipeline;
mod metrics_at_start;
mod openapi_document;
mod partial_failure;
mod prometheus_live;
mod rate_limits;
mod reference_receiver;
mod revocation;
mod router;
mod schemathesis;
mod traces;
mod writes;
