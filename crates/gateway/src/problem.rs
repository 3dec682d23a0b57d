//! Renders [`ApiError`]s as `application/problem+json` (RFC 9457) with the fields API.md fixes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::ApiError;
use erp_platform::telemetry::current_trace_id;
use serde_json::{Map, Value, json};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

pub fn render(error: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = Map::new();
    body.insert("type".into(), json!("about:blank"));
    body.insert("title".into(), json!(error.code.title()));
    body.insert("status".into(), json!(status.as_u16()));
    body.insert("detail".into(), json!(error.message));
    body.insert("code".into(), json!(error.code.as_str()));
    body.insert(
        "traceId".into(),
        current_trace_id().map_or(Value::Null, Value::String),
    );
    if !error.fields.is_empty() {
        body.insert("errors".into(), json!(error.fields));
    }
    let mut response = (status, axum::Json(Value::Object(body))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if let Some(retry_after) = error.retry_after {
        let seconds = retry_after.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
