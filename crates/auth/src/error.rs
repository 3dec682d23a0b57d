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
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

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
            AuthError::Mongo(error) if erp_platform::mongo::is_unavailable(&error) => {
                tracing::warn!(%error, "mongodb unavailable");
                ApiError::unavailable("the user store")
            }
            AuthError::Redis(error)
                if error.is_connection_refusal()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_io_error() =>
            {
                tracing::warn!(%error, "redis unavailable");
                ApiError::unavailable("the session store")
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
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
