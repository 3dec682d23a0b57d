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
    #[error("already claimed (claim {claim_id})")]
    AlreadyClaimed { claim_id: String },
    #[error("out of stock (reward {reward_id})")]
    OutOfStock { reward_id: String },
    #[error("the claim is not pending")]
    InvalidState,
    #[error("the event is not active")]
    EventNotActive,
    /// `evaluation` is the REST shape: `{"eventId","userId","passed","details":[...]}`.
    #[error("the event's conditions are not met")]
    ConditionsNotMet { evaluation: serde_json::Value },
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The claim was not placed: its event's queue in this replica is full, or its caller's
    /// deadline is too near for its batch (`503 UNAVAILABLE` with `Retry-After`).
    #[error("too many claims of this event waiting")]
    Overloaded { retry_after: std::time::Duration },
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
            EventError::AlreadyClaimed { .. } => "already_claimed",
            EventError::OutOfStock { .. } => "out_of_stock",
            EventError::InvalidState => "invalid_state",
            EventError::EventNotActive => "event_not_active",
            EventError::ConditionsNotMet { .. } => "conditions_not_met",
            EventError::Overloaded { .. } => "unavailable",
            EventError::Mongo(_) | EventError::Redis(_) | EventError::Internal(_) => "error",
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A copy for answering several waiters of one failed batch: store errors keep their kind
    /// (so "unavailable" stays unavailable), anything else becomes an internal error.
    pub fn duplicate(&self) -> Self {
        match self {
            EventError::Mongo(error) => EventError::Mongo(error.clone()),
            EventError::NotFound(what) => EventError::NotFound(what),
            EventError::Overloaded { retry_after } => EventError::Overloaded {
                retry_after: *retry_after,
            },
            other => EventError::Internal(other.to_string()),
        }
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
            EventError::AlreadyClaimed { claim_id } => ApiError::new(
                ErrorCode::AlreadyClaimed,
                "this event was already claimed by this user",
            )
            .with_metadata("claimId", claim_id),
            EventError::OutOfStock { reward_id } => ApiError::new(
                ErrorCode::OutOfStock,
                "a reward of this event has no stock left",
            )
            .with_metadata("rewardId", reward_id),
            EventError::InvalidState => {
                ApiError::new(ErrorCode::InvalidState, "the claim is not pending")
            }
            EventError::EventNotActive => ApiError::new(
                ErrorCode::EventNotActive,
                "the event is not active (outside its window, a draft or canceled)",
            ),
            EventError::ConditionsNotMet { evaluation } => ApiError::new(
                ErrorCode::ConditionsNotMet,
                "the player's activity does not satisfy the event's condition",
            )
            .with_metadata("evaluation", evaluation.to_string()),
            EventError::Overloaded { retry_after } => ApiError::new(
                ErrorCode::Unavailable,
                "too many claims of this event are waiting; try again shortly",
            )
            .with_retry_after(retry_after),
            EventError::Mongo(error) if erp_platform::mongo::is_unavailable(&error) => {
                tracing::warn!(%error, "mongodb unavailable");
                ApiError::unavailable("the event store")
            }
            EventError::Redis(error)
                if error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_io_error() =>
            {
                tracing::warn!(%error, "redis unavailable");
                ApiError::unavailable("the cache")
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
