//! The baseline of the gateway benchmark: a bare axum handler answering a fixed JSON body about
//! the size of an event, with no authentication, upstream call or middleware.
//!
//! cargo run --release -p erp-gateway --example bare_axum -- 127.0.0.1:18090

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use axum::Router;
use axum::routing::get;

const BODY: &str = r#"{"id":"01936f3e-8f6e-7c1a-9b1e-2f4d5c6b7a89","title":"Winter festival","description":"Log in three days in a row","startsAt":"2026-12-01T00:00:00Z","endsAt":"2026-12-31T00:00:00Z","status":"ACTIVE","claimPolicy":"AUTO","condition":{"metric":"login_days","op":"GTE","value":3,"window":"EVENT"},"version":1,"createdBy":"01936f3e-0000-7000-8000-000000000001","createdAt":"2026-11-20T10:00:00Z","updatedAt":"2026-11-20T10:00:00Z"}"#;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let app = Router::new().route(
        "/",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                BODY,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare axum on http://{addr}/");
    axum::serve(listener, app).await.unwrap();
}
