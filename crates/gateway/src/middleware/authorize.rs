//! Authentication and authorisation from [`routes::ROUTE_TABLE`], then rate limits. A verified
//! session goes into the request's extensions for the handlers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, ErrorCode};
use tower::Service;

use super::bearer_token;
use crate::problem::Problem;
use crate::routes::{self, Access};
use crate::state::AppState;

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    state: AppState,
}

impl<S> Authorize<S> {
    pub fn new(inner: S, state: AppState) -> Self {
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

/// Lets `request` through (with its session, if the route needs one) or says why not.
async fn admit(state: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let Some(access) = routes::access(method, route) else {
        tracing::error!(route, %method, "route missing from the route table");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this route is not open",
        ));
    };
    let config = &state.config;
    if access == Access::Public {
        let ip = client_ip(request, config.trust_forwarded_for);
        return if routes::is_credential_route(method, route) {
            state
                .limiter
                .check("credentials", &ip, config.auth_rate_limit_per_minute)
                .await
        } else {
            state
                .limiter
                .check("anonymous", &ip, config.rate_limit_per_minute)
                .await
        };
    }
    let Some(token) = bearer_token(request.headers()) else {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "this route needs Authorization: Bearer <access token>",
        ));
    };
    let session = state.introspector.session(token).await?;
    if !routes::allows(access, &session.caller.roles) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "your roles do not allow this",
        ));
    }
    state
        .limiter
        .check(
            "user",
            &session.caller.user_id,
            config.rate_limit_per_minute,
        )
        .await?;
    request.extensions_mut().insert(session);
    Ok(())
}

fn client_ip(request: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for
        && let Some(forwarded) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    {
        return forwarded.to_owned();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}
