//! Errors as `application/problem+json` (RFC 9457): [`ProblemBody`] is the one shape, rendered
//! for every refusal and described in the OpenAPI document, with the fields API.md fixes plus the
//! extra members some codes carry (`claimId`, `evaluation`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, ErrorCode, FieldError};
use erp_platform::telemetry::current_trace_id;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub(crate) const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error on its way to the client.
#[derive(Debug)]
pub(crate) struct Problem(pub ApiError);

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        let error = ApiError::from_status(&status);
        if error.code == ErrorCode::Internal || error.code == ErrorCode::Unavailable {
            // `message` is the line's own text: the status's goes under another key.
            tracing::warn!(
                code = ?status.code(),
                grpc_message = status.message(),
                "upstream call failed"
            );
        }
        Self(error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Every 503 tells when to come back, also one raised without a delay of its own.
        let retry_after = error.retry_after.or_else(|| {
            (error.code == ErrorCode::Unavailable)
                .then_some(erp_platform::error::UNAVAILABLE_RETRY_AFTER)
        });
        let mut response = (status, axum::Json(ProblemBody::new(error, status))).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The problem+json error body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProblemBody {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldProblem>>)]
    pub errors: Option<Vec<FieldError>>,
    /// With `ALREADY_CLAIMED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    /// With `CONDITIONS_NOT_MET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub evaluation: Option<Value>,
}

impl ProblemBody {
    fn new(mut error: ApiError, status: StatusCode) -> Self {
        let code = error.code.as_str();
        Self {
            problem_type: format!(
                "https://errors.erp.dev/{}",
                code.to_lowercase().replace('_', "-")
            ),
            title: error.code.title().to_owned(),
            status: status.as_u16(),
            code: code.to_owned(),
            trace_id: current_trace_id(),
            errors: (!error.fields.is_empty()).then_some(error.fields),
            claim_id: error.metadata.remove("claimId"),
            // Sent by the event service as JSON text; unreadable text is `null`.
            evaluation: error
                .metadata
                .remove("evaluation")
                .map(|text| serde_json::from_str(&text).unwrap_or(Value::Null)),
            detail: error.message,
        }
    }
}

/// One invalid field of a request.
// The document's description of `FieldError`, which is what is rendered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FieldProblem {
    pub field: String,
    pub message: String,
}

pub(crate) fn not_found() -> Problem {
    Problem(ApiError::new(ErrorCode::NotFound, "no such route"))
}

pub(crate) fn method_not_allowed() -> Problem {
    Problem(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept this method",
    ))
}
