//! The event service's integration tests, one binary: each module tests one area against the
//! real stores (`scripts/stores.sh`), each test on a database and Redis key prefix of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod activity;
mod binary;
mod cache;
mod catalog;
mod claim_queries;
mod claim_queue;
mod claims;
mod common;
mod dashboard;
mod decisions;
mod deliveries;
mod four_eyes;
mod grants;
mod jobs;
mod scratch;
