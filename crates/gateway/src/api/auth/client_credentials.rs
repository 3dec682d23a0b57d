//! `POST /auth/token`: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4) for game servers,
//! so any OAuth client library works. It speaks OAuth, not problem+json: a form body in, the §5.1
//! answer out, and the §5.2 error shape (`invalid_request`, `invalid_client`,
//! `unsupported_grant_type`) for the client's mistakes. Rate limits and outages keep the
//! platform's problem+json (`TOO_MANY_ATTEMPTS`, `RATE_LIMITED`, `UNAVAILABLE`) with
//! `Retry-After`, as on every other route: RFC 6749 defines no answer for them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use erp_platform::error::{ApiError, ErrorCode};
use erp_proto::auth::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

use crate::client_ip::ClientIp;
use crate::extract::MAX_BODY_BYTES;
use crate::problem::{Problem, ProblemBody};
use crate::state::AppState;
use crate::upstream::upstream_from;

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The form of a client-credentials token request.
#[allow(dead_code)] // Describes the form for the OpenAPI document; the handler reads pairs.
#[derive(ToSchema)]
pub(super) struct TokenForm {
    /// Always `client_credentials`.
    grant_type: String,
    /// With `client_secret`, instead of HTTP Basic authentication.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Accepted and ignored: a token's scope is its service account's role.
    scope: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ClientToken {
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the token expires.
    expires_in: i64,
}

/// RFC 6749 §5.2.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OAuthError {
    /// `invalid_request`, `invalid_client` or `unsupported_grant_type`.
    error: &'static str,
    error_description: Option<String>,
}

/// A refusal in OAuth's words.
#[derive(Debug)]
enum TokenError {
    InvalidRequest(String),
    InvalidClient(String),
    UnsupportedGrantType,
    /// Anything else (rate limits, outages) as the platform answers it everywhere.
    Platform(Problem),
}

impl From<tonic::Status> for TokenError {
    fn from(status: tonic::Status) -> Self {
        let error = ApiError::from_status(&status);
        match error.code {
            ErrorCode::InvalidClient => TokenError::InvalidClient(error.message),
            ErrorCode::ValidationFailed => TokenError::InvalidRequest(error.message),
            _ => TokenError::Platform(Problem::from(status)),
        }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            TokenError::Platform(problem) => return problem.into_response(),
            TokenError::InvalidRequest(description) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some(description),
            ),
            TokenError::InvalidClient(description) => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                Some(description),
            ),
            TokenError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                Some("only client_credentials is supported".to_owned()),
            ),
        };
        let body = OAuthError {
            error,
            error_description: description,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"erp\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// Token answers must not be cached (RFC 6749 §5.1).
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The form's parameters; each may appear once (RFC 6749 §3.2).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, TokenError> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM_CONTENT_TYPE));
        if !is_form {
            return Err(TokenError::InvalidRequest(format!(
                "the body must be {FORM_CONTENT_TYPE}"
            )));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| TokenError::InvalidRequest("the body is not a valid form".to_owned()))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(TokenError::InvalidRequest(format!(
                    "parameter {name} is repeated"
                )));
            }
        }
        Ok(Self(pairs))
    }

    /// A parameter's value; an empty one counts as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// One `application/x-www-form-urlencoded` value (RFC 6749 §2.3.1 encodes the id and secret so
/// before Basic authentication).
fn form_decoded(value: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={value}")).ok()?;
    match pairs.as_slice() {
        [(_, decoded)] => Some(decoded.clone()),
        _ => None,
    }
}

/// The client's id and secret from `Authorization: Basic`, if that header is Basic.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, TokenError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || TokenError::InvalidClient("malformed Basic authorization".to_owned());
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(TokenError::InvalidClient(
            "authenticate the client with Basic or the client_id and client_secret form fields"
                .to_owned(),
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((
        form_decoded(id).ok_or_else(bad)?,
        form_decoded(secret).ok_or_else(bad)?,
    )))
}

/// Exchange a service account's client credentials for an access token (roles `GAME_SERVER`).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("clientBasic" = [])),
    responses(
        (status = 200, description = "An access token (no refresh token)", body = ClientToken),
        (status = 400, description = "invalid_request or unsupported_grant_type", body = OAuthError),
        (status = 401, description = "invalid_client, with WWW-Authenticate: Basic", body = OAuthError),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "TOO_MANY_ATTEMPTS or RATE_LIMITED, with Retry-After", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub(super) async fn token(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            ))
            .into_response();
        }
        Err(_) => {
            return TokenError::InvalidRequest("the body could not be read".to_owned())
                .into_response();
        }
    };
    match issue(&state, client_ip, &headers, &body).await {
        Ok(token) => {
            let mut response = Json(token).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn issue(
    state: &AppState,
    client_ip: std::net::IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ClientToken, TokenError> {
    let form = Form::parse(headers, body)?;
    match form.get("grant_type") {
        None => {
            return Err(TokenError::InvalidRequest(
                "grant_type is required".to_owned(),
            ));
        }
        Some("client_credentials") => {}
        Some(_) => return Err(TokenError::UnsupportedGrantType),
    }
    let basic = basic_credentials(headers)?;
    let (client_id, client_secret) = match (basic, form.get("client_id"), form.get("client_secret"))
    {
        (Some(_), _, Some(_)) => {
            return Err(TokenError::InvalidRequest(
                "authenticate the client one way: Basic or the form fields, not both".to_owned(),
            ));
        }
        // Some libraries also name the client in the form beside Basic (RFC 6749 §3.2.1): it
        // must be the same client.
        (Some((id, _)), Some(form_id), None) if form_id != id => {
            return Err(TokenError::InvalidRequest(
                "client_id differs from the client of the Basic authorization".to_owned(),
            ));
        }
        (Some(credentials), _, None) => credentials,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, None, None) => {
            return Err(TokenError::InvalidClient(
                "client authentication is required".to_owned(),
            ));
        }
        (None, _, _) => {
            return Err(TokenError::InvalidClient(
                "client_id and client_secret go together".to_owned(),
            ));
        }
    };
    // The client's address travels in the signed caller assertion: auth counts failed
    // authentications per client and address, as for logins.
    let issued = state
        .auth()
        .issue_client_token(upstream_from(
            pb::IssueClientTokenRequest {
                client_id,
                client_secret,
            },
            None,
            Some(client_ip),
        ))
        .await?
        .into_inner();
    Ok(ClientToken {
        access_token: issued.access_token,
        token_type: issued.token_type,
        expires_in: issued.expires_in,
    })
}
