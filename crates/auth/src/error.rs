//! The auth service's errors and how each reaches clients.

use std::time::Duration;

use erp_platform::error::{ApiError, ErrorCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    #[error("email already used")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidCredentials,
    /// Client authentication failed: unknown client id, wrong secret or deleted account.
    #[error("unknown client or wrong client secret")]
    InvalidClient,
    #[error("account disabled")]
    AccountDisabled,
    #[error("too many failed logins")]
    TooManyAttempts { retry_after: Duration },
    /// No password-hashing slot became free within the queue deadline.
    #[error("password hashing is saturated")]
    Overloaded { retry_after: Duration },
    #[error("unknown, expired or revoked refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("access token not valid")]
    Unauthenticated,
    #[error("not allowed")]
    Forbidden,
    #[error("an admin cannot disable, demote or delete themselves")]
    SelfLockout,
    #[error("no such user")]
    NotFound,
    #[error("no such service account")]
    ServiceAccountNotFound,
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A failure the client cannot act on: what was being done, and the error that stopped it.
    #[error("{context}: {source}")]
    Internal {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl AuthError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// For `map_err`: an internal failure while doing `context`, keeping the error as its source.
    pub fn internal<E>(context: impl Into<String>) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let context = context.into();
        move |source| Self::Internal {
            context,
            source: Box::new(source),
        }
    }

    /// Whether this reaches clients as `INTERNAL` (a store error that is no outage, or ours).
    fn is_internal(&self) -> bool {
        matches!(
            self,
            AuthError::Mongo(_) | AuthError::Redis(_) | AuthError::Internal { .. }
        ) && self.outage().is_none()
    }

    /// A store outage (answered `UNAVAILABLE`), not a fault of ours.
    fn outage(&self) -> Option<StoreOutage> {
        match self {
            AuthError::Mongo(error) if erp_platform::mongo::is_unavailable(error) => {
                Some(StoreOutage::Users)
            }
            AuthError::Redis(error)
                if error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_io_error() =>
            {
                Some(StoreOutage::Sessions)
            }
            _ => None,
        }
    }

    /// Logs what the client will not be told: a store outage as a warning, an internal error as
    /// an error. Called once, where the error leaves the service (the gRPC edge).
    pub fn log(&self) {
        match (self, self.outage()) {
            (AuthError::Mongo(error), Some(_)) => tracing::warn!(%error, "mongodb unavailable"),
            (AuthError::Redis(error), Some(_)) => tracing::warn!(%error, "redis unavailable"),
            (other, None) if other.is_internal() => {
                tracing::error!(error = %other, "internal error");
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy)]
enum StoreOutage {
    Users,
    Sessions,
}

/// What clients are told; logs nothing (see [`AuthError::log`]).
impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Validation(fields) => ApiError::validation(fields),
            AuthError::EmailTaken => {
                ApiError::new(ErrorCode::EmailTaken, "this email is already used")
            }
            AuthError::InvalidCredentials => {
                ApiError::new(ErrorCode::InvalidCredentials, "wrong email or password")
            }
            AuthError::InvalidClient => ApiError::new(
                ErrorCode::InvalidClient,
                "client authentication failed (unknown client or wrong secret)",
            ),
            AuthError::AccountDisabled => {
                ApiError::new(ErrorCode::AccountDisabled, "this account is disabled")
            }
            AuthError::TooManyAttempts { retry_after } => ApiError::new(
                ErrorCode::TooManyAttempts,
                "too many failed logins; try again later",
            )
            .with_retry_after(retry_after),
            AuthError::Overloaded { retry_after } => ApiError::new(
                ErrorCode::Unavailable,
                "the service is busy; try again shortly",
            )
            .with_retry_after(retry_after),
            AuthError::InvalidRefreshToken => ApiError::new(
                ErrorCode::InvalidRefreshToken,
                "the refresh token is unknown, expired or revoked",
            ),
            AuthError::RefreshTokenReused => ApiError::new(
                ErrorCode::RefreshTokenReused,
                "the refresh token was already used; every session of its family is revoked",
            ),
            AuthError::Unauthenticated => {
                ApiError::new(ErrorCode::Unauthenticated, "the access token is not valid")
            }
            AuthError::Forbidden => ApiError::new(ErrorCode::Forbidden, "not allowed"),
            AuthError::SelfLockout => ApiError::new(
                ErrorCode::Forbidden,
                "you cannot disable, demote or delete your own account; ask another admin",
            ),
            AuthError::NotFound => ApiError::new(ErrorCode::NotFound, "no such user"),
            AuthError::ServiceAccountNotFound => {
                ApiError::new(ErrorCode::NotFound, "no such service account")
            }
            other => match other.outage() {
                Some(StoreOutage::Users) => ApiError::unavailable("the user store"),
                Some(StoreOutage::Sessions) => ApiError::unavailable("the session store"),
                None => ApiError::internal(),
            },
        }
    }
}

/// The gRPC edge: the one place an error is logged on its way out.
impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        error.log();
        ApiError::from(error).to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturated_hashing_is_unavailable_with_retry_after() {
        let error = ApiError::from(AuthError::Overloaded {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert_eq!(error.code.http_status(), 503);
        assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
        let status = error.to_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            ApiError::from_status(&status).retry_after,
            Some(Duration::from_secs(1))
        );
    }
}
