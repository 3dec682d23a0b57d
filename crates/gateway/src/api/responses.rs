//! The problem answers routes share, for the OpenAPI document.

use crate::problem::ProblemBody;

/// The problems any authenticated route may answer, for the OpenAPI document.
#[allow(dead_code)] // Variants name responses for the document; none is built.
#[derive(utoipa::IntoResponses)]
pub(super) enum Problems {
    #[response(
        status = 400,
        description = "VALIDATION_FAILED: malformed or invalid input",
        content_type = "application/problem+json"
    )]
    BadRequest(ProblemBody),
    #[response(
        status = 401,
        description = "UNAUTHENTICATED",
        content_type = "application/problem+json"
    )]
    Unauthenticated(ProblemBody),
    #[response(
        status = 403,
        description = "FORBIDDEN",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemBody),
    #[response(
        status = 404,
        description = "NOT_FOUND",
        content_type = "application/problem+json"
    )]
    NotFound(ProblemBody),
    #[response(
        status = 413,
        description = "PAYLOAD_TOO_LARGE",
        content_type = "application/problem+json"
    )]
    TooLarge(ProblemBody),
    #[response(
        status = 415,
        description = "The body is not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(ProblemBody),
    #[response(
        status = 429,
        description = "RATE_LIMITED",
        content_type = "application/problem+json"
    )]
    RateLimited(ProblemBody),
    #[response(
        status = 503,
        description = "UNAVAILABLE",
        content_type = "application/problem+json"
    )]
    Unavailable(ProblemBody),
}

/// Business refusals some routes add.
#[allow(dead_code)] // Variants name responses for the document; none is built.
#[derive(utoipa::IntoResponses)]
pub(super) enum Conflicts {
    #[response(
        status = 409,
        description = "EMAIL_TAKEN, ALREADY_CLAIMED, OUT_OF_STOCK or INVALID_STATE",
        content_type = "application/problem+json"
    )]
    Conflict(ProblemBody),
    #[response(
        status = 412,
        description = "VERSION_MISMATCH",
        content_type = "application/problem+json"
    )]
    PreconditionFailed(ProblemBody),
    #[response(
        status = 422,
        description = "EVENT_NOT_ACTIVE or CONDITIONS_NOT_MET",
        content_type = "application/problem+json"
    )]
    Unprocessable(ProblemBody),
}

/// One problem answer worded for the public auth routes, which list theirs one by one.
macro_rules! problem_response {
    ($(#[$doc:meta])* $name:ident: $status:tt, $description:tt) => {
        $(#[$doc])*
        #[allow(dead_code)] // The variant names a response for the document; none is built.
        #[derive(utoipa::IntoResponses)]
        pub(super) enum $name {
            #[response(status = $status, description = $description, content_type = "application/problem+json")]
            Problem(ProblemBody),
        }
    };
}

problem_response!(InvalidInput: 400, "Invalid input");
problem_response!(Unauthenticated: 401, "UNAUTHENTICATED");
problem_response!(BodyTooLarge: 413, "Body too large");
problem_response!(NotJson: 415, "Not JSON");
problem_response!(RateLimited: 429, "RATE_LIMITED");
problem_response!(Unavailable: 503, "UNAVAILABLE");
