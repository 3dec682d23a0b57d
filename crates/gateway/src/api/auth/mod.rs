//! `/auth/*`: registration, login, refresh, logout and the caller's own account.

mod client_credentials;
mod cookie;
mod dto;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use erp_platform::error::{ApiError, FieldError};
use erp_proto::auth::v1 as pb;
use utoipa_axum::routes;

use self::cookie::{cookie_token, refresh_cookie};
use self::dto::{LoginBody, RefreshBody, RegisterBody, TokenResponse};
use super::users::User;
use super::{Auth, Endpoint, required};
use crate::access::Access;
use crate::client_ip::ClientIp;
use crate::extract::bearer_token;
use crate::extract::{JsonBody, OptionalJsonBody};
use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;
use crate::upstream::{upstream, upstream_from};

pub(super) const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new(Access::Credentials, || routes!(register)),
    Endpoint::new(Access::Credentials, || routes!(login)),
    Endpoint::new(Access::Public, || routes!(refresh)),
    // Failed client authentications count like failed logins: the stricter per-address limit.
    Endpoint::new(Access::Credentials, || routes!(client_credentials::token)),
    Endpoint::new(Access::Authenticated, || routes!(logout)),
    Endpoint::new(Access::Authenticated, || routes!(me)),
];

/// What a login or a refresh issued (two messages with the same fields).
struct Issued {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
    refresh_expires_in: i64,
    user: Option<pb::User>,
}

macro_rules! issued_from {
    ($($answer:ty),+) => {$(
        impl From<$answer> for Issued {
            fn from(answer: $answer) -> Self {
                Self {
                    access_token: answer.access_token,
                    refresh_token: answer.refresh_token,
                    expires_in: answer.expires_in,
                    refresh_expires_in: answer.refresh_expires_in,
                    user: answer.user,
                }
            }
        }
    )+};
}

issued_from!(pb::LoginResponse, pb::RefreshResponse);

/// The tokens of a login or a refresh, with the refresh token also in its cookie.
fn token_response(state: &AppState, issued: Issued) -> Response {
    let cookie = refresh_cookie(
        &issued.refresh_token,
        issued.refresh_expires_in,
        state.config.cookie_secure,
    );
    let body = TokenResponse {
        access_token: issued.access_token,
        refresh_token: issued.refresh_token,
        token_type: "Bearer".to_owned(),
        expires_in: issued.expires_in,
        user: issued.user.map(User::from).unwrap_or_else(User::unknown),
    };
    let mut response = Json(body).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Create a player account (always the `USER` role).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "Invalid input", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "EMAIL_TAKEN", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<User>), Problem> {
    if body.roles.is_some() {
        return Err(Problem(ApiError::validation(vec![FieldError::new(
            "roles",
            "must not be set: new accounts are always USER; an admin grants other roles",
        )])));
    }
    let registered = state
        .auth()
        .register(upstream(
            pb::RegisterRequest {
                email: body.email,
                password: body.password,
                username: body.username,
            },
            None,
        ))
        .await?;
    Ok((StatusCode::CREATED, required(registered.into_inner().user)?))
}

/// Log in with email and password; also sets the refresh token cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Invalid input", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "INVALID_CREDENTIALS", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_DISABLED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "TOO_MANY_ATTEMPTS or RATE_LIMITED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, Problem> {
    // The client's address travels in the signed caller assertion: auth counts failed logins per
    // account and address.
    let answer = state
        .auth()
        .login(upstream_from(
            pb::LoginRequest {
                email: body.email,
                password: body.password,
                client_ip: None,
                user_agent: None,
            },
            None,
            Some(client_ip),
        ))
        .await?;
    Ok(token_response(&state, Issued::from(answer.into_inner())))
}

/// Exchange a refresh token (body or cookie) for new tokens; the old one stops working.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body(content = RefreshBody, description = "Optional when the refresh cookie is sent"),
    responses(
        (status = 200, description = "Rotated", body = TokenResponse),
        (status = 400, description = "Invalid input", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "INVALID_REFRESH_TOKEN or REFRESH_TOKEN_REUSED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "ACCOUNT_DISABLED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<RefreshBody>,
) -> Result<Response, Problem> {
    let token = body
        .refresh_token
        .filter(|t| !t.is_empty())
        .or_else(|| cookie_token(&headers))
        .unwrap_or_default();
    let answer = state
        .auth()
        .refresh(upstream(
            pb::RefreshRequest {
                refresh_token: token,
                client_ip: None,
                user_agent: None,
            },
            None,
        ))
        .await?;
    Ok(token_response(&state, Issued::from(answer.into_inner())))
}

/// End this session: the access token used and its refresh family stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = RefreshBody, description = "Optional: another refresh token of yours to revoke too"),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "UNAUTHENTICATED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    session: Auth,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<RefreshBody>,
) -> Result<Response, Problem> {
    // Present: the authorisation middleware checked it.
    let access_token = bearer_token(&headers).unwrap_or_default().to_owned();
    let refresh_token = body.refresh_token.or_else(|| cookie_token(&headers));
    state
        .auth()
        .logout(session.request(pb::LogoutRequest {
            access_token,
            refresh_token,
        }))
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = refresh_cookie("", 0, state.config.cookie_secure) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "UNAUTHENTICATED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn me(State(state): State<AppState>, session: Auth) -> Result<Json<User>, Problem> {
    let found = state
        .auth()
        .get_me(session.request(pb::GetMeRequest {
            user_id: session.caller.user_id.clone(),
        }))
        .await?;
    required(found.into_inner().user)
}
