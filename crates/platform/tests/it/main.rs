//! The platform's integration tests, one binary (one link of the world instead of six): the admin
//! server and graceful shutdown, mutual TLS, store round trips, and the Kubernetes leader
//! election and discovery against a scripted API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_server;
mod cluster_discovery;
mod cluster_lease;
mod grpc_health;
mod grpc_tls;
mod kube_mock;
mod shutdown;
mod stores_smoke;
