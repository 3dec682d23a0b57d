//! The gateway's request pipeline, as two tower services: [`Observe`] (request id, trace
//! context, timeout, security headers, metrics) around every route, and [`Authorize`]
//! (authentication and authorisation from the route table, then rate limits) around the API
//! routes. They are hand-written services rather than `axum::middleware::from_fn`, which boxes
//! and clones the inner route for every request: this is the hottest code of the gateway.

mod access_log;
mod authorize;
mod observe;

use axum::http::HeaderName;

pub(crate) use access_log::AccessLog;
pub(crate) use authorize::{Authorize, RATE_LIMIT_POLICIES, unknown_route, wrong_method};
pub(crate) use observe::Observe;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
