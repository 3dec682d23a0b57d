//! The `Idempotency-Key` header of claims and grants: a repeat with the same key answers the
//! first answer again (the services store it, scoped to the caller).

use axum::http::HeaderMap;
use erp_platform::error::{ApiError, FieldError};

use crate::problem::Problem;

/// The header's name in errors.
const FIELD: &str = "Idempotency-Key";

/// The key, if the request sent one; a key that is empty, longer than 200 characters or not
/// visible ASCII is a 400.
pub(super) fn key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(|v| Some(v.to_owned()))
        .ok_or_else(|| {
            Problem(ApiError::validation(vec![FieldError::new(
                FIELD,
                "must be 1 to 200 visible characters",
            )]))
        })
}

/// The key of a route that requires one: missing is a 400 naming the header.
pub(super) fn required_key(headers: &HeaderMap) -> Result<String, Problem> {
    key(headers)?.ok_or_else(|| {
        Problem(ApiError::validation(vec![FieldError::new(
            FIELD,
            "is required: repeat the request with the same key to get the first answer",
        )]))
    })
}
