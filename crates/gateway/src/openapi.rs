//! The OpenAPI 3.1 document, generated from the handlers and their types, and Swagger UI served
//! from vendored assets (no internet access needed).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::access::API_PREFIX;
use crate::state::AppState;

/// Where the document is served, under `/api/v1`.
pub(crate) const DOCUMENT_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Event Reward Platform API",
        version = "1.0.0",
        description = "Events, rewards and claims for a live game. Errors are application/problem+json with a machine-readable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(
        crate::api::AuditService,
        crate::api::EventStatus,
        crate::api::ClaimStatus,
        crate::api::RoleName,
        crate::api::ClaimPolicy,
        crate::api::RewardType,
        crate::api::ProgressMode,
        crate::api::PublicationState,
        crate::api::Condition,
        crate::api::DeliveryStatus,
        crate::problem::ProblemBody,
    )),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "Account management (ADMIN)"),
        (name = "events", description = "Events and progress"),
        (name = "rewards", description = "Rewards of an event"),
        (name = "claims", description = "Claims and approvals"),
        (name = "progress", description = "Activity reports"),
        (name = "grants", description = "Compensation by operators"),
        (name = "deliveries", description = "What was granted, for the game to apply once"),
        (name = "service-accounts", description = "Game servers' credentials (ADMIN)"),
        (name = "audit", description = "Audit trail"),
        (name = "dashboard", description = "Aggregates"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // POST /auth/token: a service account's client id and secret (RFC 6749 §2.3.1).
        components.add_security_scheme(
            "clientBasic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// Every `/api/v1` route with its OpenAPI description.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    crate::api::router(ApiDoc::openapi())
}

/// The document as served (pretty JSON).
pub(crate) fn render(document: &utoipa::openapi::OpenApi) -> String {
    document.to_pretty_json().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot render the OpenAPI document");
        "{}".to_owned()
    })
}

/// The document the gateway serves at `GET /api/v1/openapi.json`.
pub fn document() -> String {
    render(&api().into_openapi())
}

const SWAGGER_CSS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui.css");
const SWAGGER_JS: &[u8] = include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_ICON: &[u8] = include_bytes!("../assets/swagger-ui/favicon-32x32.png");

const SWAGGER_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Event Reward Platform API</title>
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
  </script>
</body>
</html>
"##;

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// `/docs` and its assets, and `/api/v1/openapi.json` (the document rendered once at start).
pub(crate) fn docs_router(document: String) -> Router<AppState> {
    let document = axum::body::Bytes::from(document);
    Router::new()
        .route(
            &format!("{API_PREFIX}{DOCUMENT_PATH}"),
            get(move || async move {
                let mut response = document.into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }),
        )
        .route("/docs", get(|| async { Html(SWAGGER_PAGE) }))
        .route("/docs/", get(|| async { Html(SWAGGER_PAGE) }))
        .route(
            "/docs/swagger-ui.css",
            get(|| async { asset("text/css; charset=utf-8", SWAGGER_CSS) }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(|| async { asset("text/javascript; charset=utf-8", SWAGGER_JS) }),
        )
        .route(
            "/docs/favicon-32x32.png",
            get(|| async { asset("image/png", SWAGGER_ICON) }),
        )
}
