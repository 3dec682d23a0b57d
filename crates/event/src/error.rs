//! The event service's errors and the API error each one is. Pure mapping: the transport edge
//! (`grpc`) logs what needs logging, once, when it answers.

use std::sync::Arc;

use erp_platform::error::{ApiError, ErrorCode, FieldError};

use crate::views::EvaluationView;

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
    /// What is not in the state the operation needs, e.g. "the claim is not pending".
    #[error("{0}")]
    InvalidState(&'static str),
    #[error("the event is not active")]
    EventNotActive,
    /// The evaluation goes to clients in the REST shape (`{"eventId","userId","passed",...}`).
    #[error("the event's conditions are not met")]
    ConditionsNotMet { evaluation: EvaluationView },
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The claim was not placed: its event's queue in this replica is full, or its caller's
    /// deadline is too near for its batch (`503 UNAVAILABLE` with `Retry-After`).
    #[error("too many claims of this event waiting")]
    Overloaded { retry_after: std::time::Duration },
    /// A document could not be written as BSON.
    #[error("encode {what}: {source}")]
    Encode {
        what: &'static str,
        // Boxed: the encoder's error is large, and every Result of the domain carries this type.
        #[source]
        source: Box<mongodb::bson::ser::Error>,
    },
    /// Stored JSON that does not read back.
    #[error("decode {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Stored data that contradicts the domain (an unknown status, a missing claim).
    #[error("{0}")]
    Corrupt(String),
    /// One failure answered to several waiters (the claims of one failed batch).
    #[error(transparent)]
    Shared(Arc<EventError>),
    /// A retry loop that gave up, or a claim's answer that went missing.
    #[error("{0}")]
    Internal(&'static str),
}

/// Why a request failed on the server's side, for the log line at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// MongoDB did not answer: `503 UNAVAILABLE`.
    StoreUnavailable,
    /// Redis did not answer: `503 UNAVAILABLE`.
    CacheUnavailable,
    /// Anything else that is not the client's doing: `500 INTERNAL`.
    Internal,
}

impl EventError {
    /// A short stable name for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            EventError::Validation(_) => "validation_failed",
            EventError::NotFound(_) => "not_found",
            EventError::VersionMismatch { .. } => "version_mismatch",
            EventError::Unauthenticated => "unauthenticated",
            EventError::Forbidden => "forbidden",
            EventError::AlreadyClaimed { .. } => "already_claimed",
            EventError::OutOfStock { .. } => "out_of_stock",
            EventError::InvalidState(_) => "invalid_state",
            EventError::EventNotActive => "event_not_active",
            EventError::ConditionsNotMet { .. } => "conditions_not_met",
            EventError::Overloaded { .. } => "unavailable",
            // Server-side faults, classified exhaustively in `fault`.
            _ => "error",
        }
    }

    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A copy for answering several waiters of one failed batch: store errors keep their kind
    /// (so "unavailable" stays unavailable), anything else is shared as an internal error.
    pub(crate) fn duplicate(self: &Arc<Self>) -> Self {
        match &**self {
            EventError::Mongo(error) => EventError::Mongo(error.clone()),
            EventError::NotFound(what) => EventError::NotFound(what),
            EventError::Overloaded { retry_after } => EventError::Overloaded {
                retry_after: *retry_after,
            },
            _ => EventError::Shared(Arc::clone(self)),
        }
    }

    /// The server-side fault behind this error; `None` when the client's request is refused.
    pub(crate) fn fault(&self) -> Option<Fault> {
        match self {
            EventError::Validation(_)
            | EventError::NotFound(_)
            | EventError::VersionMismatch { .. }
            | EventError::Unauthenticated
            | EventError::Forbidden
            | EventError::AlreadyClaimed { .. }
            | EventError::OutOfStock { .. }
            | EventError::InvalidState(_)
            | EventError::EventNotActive
            | EventError::ConditionsNotMet { .. }
            | EventError::Overloaded { .. } => None,
            EventError::Mongo(error) if erp_platform::mongo::is_unavailable(error) => {
                Some(Fault::StoreUnavailable)
            }
            EventError::Redis(error)
                if error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_io_error() =>
            {
                Some(Fault::CacheUnavailable)
            }
            EventError::Mongo(_)
            | EventError::Redis(_)
            | EventError::Encode { .. }
            | EventError::Decode { .. }
            | EventError::Corrupt(_)
            | EventError::Shared(_)
            | EventError::Internal(_) => Some(Fault::Internal),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(error: EventError) -> Self {
        match error.fault() {
            Some(Fault::StoreUnavailable) => return ApiError::unavailable("the event store"),
            Some(Fault::CacheUnavailable) => return ApiError::unavailable("the cache"),
            Some(Fault::Internal) => return ApiError::internal(),
            None => {}
        }
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
            EventError::InvalidState(what) => ApiError::new(ErrorCode::InvalidState, what),
            EventError::EventNotActive => ApiError::new(
                ErrorCode::EventNotActive,
                "the event is not active (outside its window, a draft or canceled)",
            ),
            EventError::ConditionsNotMet { evaluation } => ApiError::new(
                ErrorCode::ConditionsNotMet,
                "the player's activity does not satisfy the event's condition",
            )
            .with_metadata("evaluation", evaluation.to_json_text()),
            EventError::Overloaded { retry_after } => ApiError::new(
                ErrorCode::Unavailable,
                "too many claims of this event are waiting; try again shortly",
            )
            .with_retry_after(retry_after),
            // Server-side faults, classified exhaustively in `fault`, were answered above.
            _ => ApiError::internal(),
        }
    }
}
