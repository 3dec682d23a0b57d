//! List answers and their paging parameters.

use erp_platform::error::{ApiError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

/// A list answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// A page of a service's answer, each item in its public form.
    pub(super) fn of<P>(items: Vec<P>, next_cursor: Option<String>) -> axum::Json<Self>
    where
        T: From<P>,
    {
        axum::Json(Self {
            items: items.into_iter().map(T::from).collect(),
            next_cursor,
        })
    }
}

/// A whole list, not paged.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Items<T: ToSchema> {
    pub items: Vec<T>,
}

/// The page size the services use when `limit` is left out.
pub(super) const DEFAULT_LIMIT: u32 = 20;

/// `limit` checked against the contract (1..100); absent: 0, which the services read as
/// [`DEFAULT_LIMIT`].
pub(super) fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(0),
        Some(l @ 1..=100) => Ok(l),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )])),
    }
}
