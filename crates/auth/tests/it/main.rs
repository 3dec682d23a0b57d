//! The auth service's integration tests, one binary: accounts and the admin API, sessions and
//! keys, Redis loss, the login outbox to the event service, bounded hashing, service accounts and
//! the binary itself. Each test works in a database and Redis key prefix of its own, dropped when
//! it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod binary;
mod common;
mod hashing;
mod outbox;
mod redis_loss;
mod service_accounts;
mod sessions;
