//! A scripted Kubernetes API server for tests, as kube-rs projects do it (controller-rs
//! `src/fixtures.rs`): the client talks to a `tower-test` mock; the test takes each request,
//! asserts what was asked and answers with canned JSON.

use std::collections::BTreeSet;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A client whose API server is `ApiServer`.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

pub struct ApiServer {
    handle: ApiHandle,
}

/// One request the client made, waiting for its answer.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
    /// The JSON body, `Value::Null` when there is none.
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request; fails the test if none comes within five seconds.
    pub async fn next(&mut self) -> Call {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .expect("the client made no request in time")
                .expect("the client is gone");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method,
            path,
            query,
            body,
            send,
        }
    }

    /// The next request, which must be `method path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request {} {}?{} {}",
            call.method,
            call.path,
            call.query,
            call.body
        );
        call
    }

    /// Asserts the client makes no request within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

impl Call {
    /// The query's `key=value` pairs (still percent-encoded), order and empty parts ignored.
    pub fn query_pairs(&self) -> BTreeSet<String> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn respond(self, status: StatusCode, body: &Value) {
        self.respond_raw(status, serde_json::to_vec(body).unwrap());
    }

    pub fn respond_raw(self, status: StatusCode, body: Vec<u8>) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        );
    }

    /// Answers with a `metav1.Status` failure.
    pub fn fail(self, status: StatusCode, reason: &str, message: &str) {
        let code = status.as_u16();
        self.respond(status, &status_body(code, reason, message));
    }

    /// Keeps the request unanswered (the client waits) for as long as the returned value lives.
    pub fn hold(self) -> SendResponse<Response<Body>> {
        self.send
    }
}

pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// Polls `condition` until it holds; fails the test after two seconds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
