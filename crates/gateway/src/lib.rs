//! The gateway: the only public entry of the platform. It serves `/api/v1` (docs/api.md) over
//! HTTP, checks tokens by introspection (cached, evicted on revocation), authorises from one route
//! table, rate-limits, and calls the auth and event services over gRPC.
//!
//! The binary runs [`App`]; tests can serve [`router`] in-process over
//! [`AppState::connect_lazy`].

mod access;
mod api;
mod app;
mod client_ip;
mod config;
mod connections;
mod extract;
mod introspection;
mod middleware;
mod openapi;
mod problem;
mod ratelimit;
mod route_table;
mod router;
mod server;
mod state;
mod upstream;

pub use app::App;
pub use config::{Config, SERVICE_NAME};
pub use openapi::document as openapi_document;
pub use router::router;
pub use state::AppState;

/// The access rule of every route, for tests that walk the routes.
pub mod routes {
    pub use crate::access::{Access, Rule};
    pub use crate::route_table::{ROUTE_TABLE, RouteTable};
}
