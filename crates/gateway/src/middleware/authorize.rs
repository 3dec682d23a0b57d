//! Authentication and authorisation from [`crate::route_table::ROUTE_TABLE`], then rate limits. A verified
//! session goes into the request's extensions for the handlers.
//!
//! Per client IP ([`ClientIp`]): public routes, unknown routes (404) and wrong methods (405)
//! count against `ERP_RATE_LIMIT_PER_MINUTE` (login and register against
//! `ERP_AUTH_RATE_LIMIT_PER_MINUTE`), and every 401 against `ERP_AUTH_FAILURES_PER_MINUTE`: once
//! that budget is spent, a token not in the introspection cache is refused with 429 before auth
//! is asked about it (cached sessions keep working).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request, State};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, ErrorCode};
use tower::Service;

use crate::access::Access;
use crate::client_ip::ClientIp;
use crate::extract::bearer_token;
use crate::problem::{self, Problem};
use crate::route_table;
use crate::state::AppState;

#[derive(Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    state: AppState,
}

impl<S> Authorize<S> {
    pub(crate) fn new(inner: S, state: AppState) -> Self {
        Self { inner, state }
    }
}

impl<S> Service<Request> for Authorize<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let state = self.state.clone();
        // The service that was polled ready serves this request; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match admit(&state, &mut request).await {
                Ok(()) => inner.call(request).await,
                Err(refusal) => Ok(Problem(refusal).into_response()),
            }
        })
    }
}

/// Rate-limit policies (the `policy` label of `erp_gateway_rate_limited_total`).
const ANONYMOUS: &str = "anonymous";
const CREDENTIALS: &str = "credentials";
const USER: &str = "user";
const AUTH_FAILURES: &str = "auth_failures";
/// Every policy, each exported at 0 from the start (see `HttpMetrics::register`).
pub(crate) const RATE_LIMIT_POLICIES: [&str; 4] = [ANONYMOUS, CREDENTIALS, USER, AUTH_FAILURES];

/// Lets `request` through (with its session, if the route needs one) or says why not.
async fn admit(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let Some(access) = route_table::access(method, route) else {
        tracing::error!(route, %method, "route missing from the route table");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this route is not open",
        ));
    };
    let config = &state.config;
    let client = ClientIp::of(request.extensions()).rate_limit_subject();
    match access {
        Access::Public => {
            return state
                .limiter
                .check(ANONYMOUS, &client, config.rate_limit_per_minute)
                .await;
        }
        Access::Credentials => {
            return state
                .limiter
                .check(CREDENTIALS, &client, config.auth_rate_limit_per_minute)
                .await;
        }
        Access::Authenticated | Access::Roles(_) => {}
    }
    let count_failure = || async {
        if config.auth_failures_per_minute > 0 {
            state.limiter.count(AUTH_FAILURES, &client).await;
        }
    };
    let Some(token) = bearer_token(request.headers()) else {
        count_failure().await;
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "this route needs Authorization: Bearer <access token>",
        ));
    };
    let session = match state.introspector.cached(token).await {
        Ok(session) => session,
        Err(uncached) => {
            // A client that keeps failing to authenticate does not get auth asked any more.
            state
                .limiter
                .within_budget(AUTH_FAILURES, &client, config.auth_failures_per_minute)
                .await?;
            match state.introspector.introspect(token, uncached).await {
                Ok(session) => session,
                Err(error) => {
                    if error.code == ErrorCode::Unauthenticated {
                        count_failure().await;
                    }
                    return Err(error);
                }
            }
        }
    };
    if !access.allows(&session.caller.roles) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "your roles do not allow this",
        ));
    }
    state
        .limiter
        .check(USER, &session.caller.user_id, config.rate_limit_per_minute)
        .await?;
    request.extensions_mut().insert(session);
    Ok(())
}

/// The answer to a path no route has (404), after the per-IP limit.
pub(crate) async fn unknown_route(State(state): State<AppState>, client: ClientIp) -> Problem {
    refuse_after_limit(&state, client, problem::not_found()).await
}

/// The answer to a method a route does not have (405), after the per-IP limit.
pub(crate) async fn wrong_method(State(state): State<AppState>, client: ClientIp) -> Problem {
    refuse_after_limit(&state, client, problem::method_not_allowed()).await
}

async fn refuse_after_limit(state: &AppState, client: ClientIp, refusal: Problem) -> Problem {
    match state
        .limiter
        .check(
            ANONYMOUS,
            &client.rate_limit_subject(),
            state.config.rate_limit_per_minute,
        )
        .await
    {
        Ok(()) => refusal,
        Err(limited) => Problem(limited),
    }
}
