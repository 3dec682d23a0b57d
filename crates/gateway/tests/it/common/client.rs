//! Requests to the gateway and what came back, with the assertions every test makes of a
//! problem+json answer.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A request being built; [`Request::send`] sends it.
pub struct Request(reqwest::RequestBuilder);

impl Request {
    pub fn new(builder: reqwest::RequestBuilder) -> Self {
        Self(builder)
    }

    pub fn token(self, token: &str) -> Self {
        Self(self.0.bearer_auth(token))
    }

    pub fn maybe_token(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.token(token),
            None => self,
        }
    }

    pub fn json(self, body: &Value) -> Self {
        Self(self.0.json(body))
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        Self(self.0.header(name, value))
    }

    pub fn body(self, body: Vec<u8>) -> Self {
        Self(self.0.body(body))
    }

    pub fn timeout(self, timeout: Duration) -> Self {
        Self(self.0.timeout(timeout))
    }

    /// Sends it; the status, headers and JSON body (`Value::Null` when empty, a string when not
    /// JSON).
    pub async fn send(self) -> Reply {
        let response = self.0.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// An answer of the gateway.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The error code of a problem answer.
    pub fn code(&self) -> Option<&str> {
        self.body["code"].as_str()
    }

    /// `Retry-After` in seconds, if present.
    pub fn retry_after(&self) -> Option<u64> {
        self.header("retry-after").map(|v| v.parse().unwrap())
    }

    /// Asserts a `status` answer.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{self:?}");
        &self.body
    }

    /// Asserts a problem+json answer with `status` and `code` (status and code also in the body).
    #[track_caller]
    pub fn expect_problem(&self, status: StatusCode, code: &str) -> &Value {
        assert_problem(self.status, &self.headers, &self.body, status, code);
        &self.body
    }
}

/// Asserts that an answer is a problem+json `status` with `code` (both in the body too, with
/// `type`, `title`, `detail` and `traceId`).
#[track_caller]
pub fn assert_problem(
    actual: StatusCode,
    headers: &HeaderMap,
    body: &Value,
    status: StatusCode,
    code: &str,
) {
    assert_eq!(
        (actual, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for key in ["type", "title", "detail", "traceId"] {
        assert!(body.get(key).is_some(), "{key} in {body}");
    }
}
