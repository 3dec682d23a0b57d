//! The refresh token's cookie: set on login and refresh, read by refresh and logout, cleared on
//! logout.

use axum::http::{HeaderMap, HeaderValue, header};

const REFRESH_COOKIE: &str = "erp_refresh";

/// `Set-Cookie` for `token`, sent only to `/api/v1/auth`.
pub(super) fn refresh_cookie(token: &str, max_age: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; HttpOnly{secure}; SameSite=Strict; Path=/api/v1/auth; Max-Age={max_age}"
    ))
    .ok()
}

/// The refresh token a request's cookie carries, if any.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}
