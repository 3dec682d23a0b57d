//! The event service's errors and how each reaches clients.

use erp_platform::error::{ApiError, ErrorCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("version mismatch (current {current})")]
    VersionMismatch { current: i64 },
    #[error("access token missing")]
    Unauthenticated,
    #[error("not allowed")]
    Forbidden,
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Internal(String),
}

impl EventError {
    /// A short stable name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EventError::Validation(_) => "validation_failed",
            EventError::NotFound(_) => "not_found",
            EventError::VersionMismatch { .. } => "version_mismatch",
            EventError::Unauthenticated => "unauthenticated",
            EventError::Forbidden => "forbidden",
            EventError::Mongo(_) | EventError::Redis(_) | EventError::Internal(_) => "error",
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<EventError> for ApiError {
    fn from(error: EventError) -> Self {
        match error {
            EventError::Validation(fields) => ApiError::validation(fields),
            EventError::NotFound(what) => {
                ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
            }
            EventError::VersionMismatch { current } => ApiError::new(
                ErrorCode::VersionMismatch,
                format!("the event changed; its current version is {current}"),
            )
            .with_metadata("currentVersion", current.to_string()),
            EventError::Unauthenticated => {
                ApiError::new(ErrorCode::Unauthenticated, "this call needs a caller")
            }
            EventError::Forbidden => ApiError::new(ErrorCode::Forbidden, "not allowed"),
            EventError::Mongo(error) if erp_platform::mongo::is_unavailable(&error) => {
                tracing::warn!(%error, "mongodb unavailable");
                ApiError::unavailable("the event store")
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<EventError> for tonic::Status {
    fn from(error: EventError) -> Self {
        ApiError::from(error).to_status()
    }
}
