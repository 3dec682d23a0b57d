//! The public router: every route with the gateway's request pipeline.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::Route;
use tower::layer::layer_fn;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;
use crate::{extract, middleware, openapi};

/// Every public route with the gateway's pipeline.
pub fn router(state: AppState) -> Router {
    // A bad value stops the start in `App::build`; a router built otherwise (in tests) falls back
    // to the default.
    let access_log = middleware::AccessLog::from_env(&state.config.env).unwrap_or_default();
    let (api, document) = openapi::api().split_for_parts();
    let document = openapi::render(&document);
    let api = api.route_layer(layer_fn({
        let state = state.clone();
        move |route: Route| middleware::Authorize::new(route, state.clone())
    }));
    let mut router = Router::new()
        .merge(api)
        .merge(openapi::docs_router(document))
        .fallback(middleware::unknown_route)
        .method_not_allowed_fallback(middleware::wrong_method)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(layer_fn({
            let state = state.clone();
            move |route: Route| middleware::Observe::new(route, state.clone(), access_log)
        }));
    if let Some(cors) = cors(&state.config.cors_allowed_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                axum::http::header::IF_MATCH,
                axum::http::HeaderName::from_static("idempotency-key"),
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                axum::http::header::ETAG,
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
