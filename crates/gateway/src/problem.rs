//! Renders [`ApiError`]s as `application/problem+json` (RFC 9457) with the fields API.md fixes,
//! plus the extra members some codes carry (`claimId`, `evaluation`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, ErrorCode};
use erp_platform::telemetry::current_trace_id;
use serde_json::{Map, Value, json};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error on its way to the client.
#[derive(Debug)]
pub struct Problem(pub ApiError);

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        let error = ApiError::from_status(&status);
        if error.code == ErrorCode::Internal || error.code == ErrorCode::Unavailable {
            tracing::warn!(code = ?status.code(), message = status.message(), "upstream call failed");
        }
        Self(error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        render(&self.0)
    }
}

pub fn render(error: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = Map::new();
    body.insert(
        "type".into(),
        json!(format!(
            "https://errors.erp.dev/{}",
            error.code.as_str().to_lowercase().replace('_', "-")
        )),
    );
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
    if let Some(claim_id) = error.metadata.get("claimId") {
        body.insert("claimId".into(), json!(claim_id));
    }
    if let Some(evaluation) = error.metadata.get("evaluation") {
        let evaluation = serde_json::from_str(evaluation).unwrap_or(Value::Null);
        body.insert("evaluation".into(), evaluation);
    }
    let mut response = (status, axum::Json(Value::Object(body))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    // Every 503 tells when to come back, also one raised without a delay of its own.
    let retry_after = error.retry_after.or_else(|| {
        (error.code == ErrorCode::Unavailable)
            .then_some(erp_platform::error::UNAVAILABLE_RETRY_AFTER)
    });
    if let Some(retry_after) = retry_after {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

pub fn not_found() -> Problem {
    Problem(ApiError::new(ErrorCode::NotFound, "no such route"))
}

pub fn method_not_allowed() -> Problem {
    Problem(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept this method",
    ))
}
