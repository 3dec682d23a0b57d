//! The error kinds that cross service boundaries.
//!
//! Each service keeps its own `thiserror` enum and converts it into an [`ApiError`]; an `ApiError`
//! travels as a gRPC `Status` carrying a `google.rpc.ErrorInfo` (whose `reason` is the public error
//! code), `google.rpc.BadRequest` field violations and `google.rpc.RetryInfo`. The gateway turns it
//! back into an `ApiError` and renders problem+json. The `error_codes!` table is the one place
//! where a code meets its gRPC code and HTTP status.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this platform raises.
pub const ERROR_DOMAIN: &str = "erp";

/// Declares [`ErrorCode`] and its table in one place: each variant is written once, on the row
/// that gives its wire name, gRPC code, HTTP status and problem+json title, so a new code cannot
/// miss any of them (the accessors are exhaustive `match`es the macro writes).
macro_rules! error_codes {
    ($($code:ident => $name:literal, $grpc:ident, $status:literal, $title:literal;)+) => {
        /// The machine-readable reasons of the public API (API.md, "Fixed codes"), plus `INTERNAL`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($code,)+
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)+];

            /// The wire name: `ErrorInfo.reason` and the problem+json `code`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $name,)+
                }
            }

            /// The gRPC code this error travels as.
            pub fn grpc_code(self) -> Code {
                match self {
                    $(ErrorCode::$code => Code::$grpc,)+
                }
            }

            /// The HTTP status the gateway answers with.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$code => $status,)+
                }
            }

            /// The problem+json `title`.
            pub fn title(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $title,)+
                }
            }

            /// The code of a wire name; `None` for a name this platform does not know.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(ErrorCode::$code),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed => "VALIDATION_FAILED", InvalidArgument, 400, "Validation failed";
    Unauthenticated => "UNAUTHENTICATED", Unauthenticated, 401, "Unauthenticated";
    InvalidCredentials => "INVALID_CREDENTIALS", Unauthenticated, 401, "Invalid credentials";
    InvalidRefreshToken => "INVALID_REFRESH_TOKEN", Unauthenticated, 401, "Invalid refresh token";
    RefreshTokenReused => "REFRESH_TOKEN_REUSED", Unauthenticated, 401, "Refresh token reused";
    // POST /auth/token only, answered there as OAuth `invalid_client` (RFC 6749 §5.2).
    InvalidClient => "INVALID_CLIENT", Unauthenticated, 401, "Invalid client";
    Forbidden => "FORBIDDEN", PermissionDenied, 403, "Forbidden";
    AccountDisabled => "ACCOUNT_DISABLED", PermissionDenied, 403, "Account disabled";
    NotFound => "NOT_FOUND", NotFound, 404, "Not found";
    MethodNotAllowed => "METHOD_NOT_ALLOWED", Unimplemented, 405, "Method not allowed";
    EmailTaken => "EMAIL_TAKEN", AlreadyExists, 409, "Email taken";
    AlreadyClaimed => "ALREADY_CLAIMED", AlreadyExists, 409, "Already claimed";
    OutOfStock => "OUT_OF_STOCK", FailedPrecondition, 409, "Out of stock";
    InvalidState => "INVALID_STATE", FailedPrecondition, 409, "Invalid state";
    VersionMismatch => "VERSION_MISMATCH", Aborted, 412, "Version mismatch";
    PayloadTooLarge => "PAYLOAD_TOO_LARGE", InvalidArgument, 413, "Payload too large";
    UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE", InvalidArgument, 415, "Unsupported media type";
    EventNotActive => "EVENT_NOT_ACTIVE", FailedPrecondition, 422, "Event not active";
    ConditionsNotMet => "CONDITIONS_NOT_MET", FailedPrecondition, 422, "Conditions not met";
    RateLimited => "RATE_LIMITED", ResourceExhausted, 429, "Rate limited";
    TooManyAttempts => "TOO_MANY_ATTEMPTS", ResourceExhausted, 429, "Too many attempts";
    Unavailable => "UNAVAILABLE", Unavailable, 503, "Service unavailable";
    Internal => "INTERNAL", Internal, 500, "Internal error";
}

/// The `Retry-After` of an `UNAVAILABLE` answer that names no other: a dependency that is down
/// is retried soon, and clients back off further themselves.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Whether a status without our `ErrorInfo` is a failure to reach the service or to get its
/// answer (refused, reset, cancelled, deadline, an HTTP/2 or transport error) rather than an
/// answer of the service.
fn is_transport_failure(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted
        | Code::ResourceExhausted => true,
        // tonic reports some HTTP/2 failures (PROTOCOL_ERROR, INTERNAL_ERROR, a GOAWAY) as
        // INTERNAL: only the message tells them from a service's own INTERNAL.
        Code::Internal => {
            let message = status.message().to_ascii_lowercase();
            [
                "h2 protocol error",
                "transport error",
                "connection",
                "broken pipe",
                "stream",
                "goaway",
                "http2",
            ]
            .iter()
            .any(|needle| message.contains(needle))
        }
        _ => false,
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error as the public API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    /// Human-readable detail; never an internal message.
    pub message: String,
    pub fields: Vec<FieldError>,
    /// Extra machine-readable facts, e.g. `claimId` for `ALREADY_CLAIMED`.
    pub metadata: HashMap<String, String>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: Vec::new(),
            metadata: HashMap::new(),
            retry_after: None,
        }
    }

    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [only] => format!("{}: {}", only.field, only.message),
            _ => "the request has invalid fields".to_owned(),
        };
        Self {
            fields,
            ..Self::new(ErrorCode::ValidationFailed, message)
        }
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "an internal error occurred")
    }

    /// `UNAVAILABLE` with a `Retry-After` of [`UNAVAILABLE_RETRY_AFTER`].
    pub fn unavailable(what: &str) -> Self {
        Self::new(ErrorCode::Unavailable, format!("{what} is unavailable"))
            .with_retry_after(UNAVAILABLE_RETRY_AFTER)
    }

    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The gRPC status this error travels as.
    pub fn to_status(&self) -> tonic::Status {
        let mut details =
            ErrorDetails::with_error_info(self.code.as_str(), ERROR_DOMAIN, self.metadata.clone());
        for field in &self.fields {
            details.add_bad_request_violation(field.field.clone(), field.message.clone());
        }
        if let Some(retry_after) = self.retry_after {
            details.set_retry_info(Some(retry_after));
        }
        tonic::Status::with_error_details(self.code.grpc_code(), self.message.clone(), details)
    }

    /// Reads an error back from a gRPC status. A status without our `ErrorInfo` that is a
    /// transport failure (refused, reset, cancelled, a deadline, an HTTP/2 error) becomes
    /// `UNAVAILABLE` with `Retry-After`; any other becomes `INTERNAL`; neither leaks its message.
    /// Only a service's own `INTERNAL` (with our `ErrorInfo`) stays `INTERNAL`.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let Some(info) = details
            .error_info()
            .filter(|info| info.domain == ERROR_DOMAIN)
        else {
            return if is_transport_failure(status) {
                Self::unavailable("a service")
            } else {
                Self::internal()
            };
        };
        let code = ErrorCode::parse(&info.reason).unwrap_or(ErrorCode::Internal);
        let fields = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldError::new(v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let message = if code == ErrorCode::Internal {
            Self::internal().message
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            message,
            fields,
            metadata: info.metadata.clone(),
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "wire names are unique");
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("NO_SUCH_CODE"), None);
    }

    #[test]
    fn api_statuses_match_the_contract() {
        assert_eq!(ErrorCode::AlreadyClaimed.http_status(), 409);
        assert_eq!(ErrorCode::VersionMismatch.http_status(), 412);
        assert_eq!(ErrorCode::ConditionsNotMet.http_status(), 422);
        assert_eq!(ErrorCode::TooManyAttempts.http_status(), 429);
        assert_eq!(ErrorCode::AccountDisabled.http_status(), 403);
    }

    #[test]
    fn errors_round_trip_through_grpc_status() {
        let error = ApiError::validation(vec![FieldError::new("title", "must not be empty")])
            .with_metadata("claimId", "c1")
            .with_retry_after(Duration::from_secs(30));
        let status = error.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(ApiError::from_status(&status), error);
    }

    #[test]
    fn foreign_statuses_do_not_leak_their_message() {
        let status = tonic::Status::internal("panic at store.rs:42 secret");
        let error = ApiError::from_status(&status);
        assert_eq!(error.code, ErrorCode::Internal);
        assert!(!error.message.contains("secret"));
        let status = tonic::Status::unavailable("tcp connect error 10.0.0.1");
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::Unavailable);
    }

    #[test]
    fn transport_failures_are_unavailable_with_retry_after() {
        let failures = [
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)"),
            tonic::Status::new(Code::Unknown, "transport error"),
            tonic::Status::new(Code::Unknown, "error trying to connect: connection reset"),
            tonic::Status::cancelled("operation was canceled: connection closed"),
            tonic::Status::deadline_exceeded("Timeout expired"),
            tonic::Status::internal("h2 protocol error: error reading a body from connection"),
            tonic::Status::internal("h2 protocol error: http2 error: connection error received"),
            tonic::Status::new(Code::Aborted, "stream reset"),
        ];
        for status in failures {
            let error = ApiError::from_status(&status);
            assert_eq!(error.code, ErrorCode::Unavailable, "{status:?}");
            assert_eq!(error.code.http_status(), 503);
            assert_eq!(
                error.retry_after,
                Some(UNAVAILABLE_RETRY_AFTER),
                "{status:?}"
            );
            assert!(
                !error.message.contains("connect"),
                "no leak: {}",
                error.message
            );
        }
    }

    #[test]
    fn only_a_genuine_internal_stays_internal() {
        // A service's own INTERNAL carries our ErrorInfo.
        let status = ApiError::internal().to_status();
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::Internal);
        // A foreign INTERNAL that is no transport failure (say, an undecodable message).
        let status = tonic::Status::internal("failed to decode Protobuf message");
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::Internal);
        let status = tonic::Status::unimplemented("no such method");
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::Internal);
        // A service's UNAVAILABLE keeps its Retry-After through the wire.
        let status = ApiError::unavailable("the event store").to_status();
        let error = ApiError::from_status(&status);
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert_eq!(error.retry_after, Some(UNAVAILABLE_RETRY_AFTER));
    }
}
