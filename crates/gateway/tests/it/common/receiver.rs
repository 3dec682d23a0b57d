//! A game's webhook receiver on loopback, for the delivery tests: it checks each push's
//! `ERP-Signature` (HMAC-SHA256 over `"<t>.<raw body>"`), records what arrived, and answers with
//! the status (and after the delay) the test sets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::time::Instant;

pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";

/// One push as it arrived.
#[derive(Debug, Clone)]
pub struct Push {
    pub delivery_id: String,
    pub body: Value,
    pub signature_valid: bool,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    pushes: Mutex<Vec<Push>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `signature` (`t=<unix seconds>,v1=<hex>`) signs `body` with [`WEBHOOK_SECRET`].
pub fn signature_is_valid(signature: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(expected) = hex::decode(v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh && mac.verify_slice(&expected).is_ok()
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let push = Push {
        delivery_id: header("erp-delivery-id"),
        signature_valid: signature_is_valid(&header("erp-signature"), &body),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    shared.pushes.lock().unwrap().push(push);
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    /// A receiver answering 200 at once.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        shared.status.store(200, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/webhook", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// The status every later push is answered with.
    pub fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// How long the receiver takes before answering.
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.shared.pushes.lock().unwrap().clone()
    }

    /// The pushes of one delivery, in arrival order.
    pub fn pushes_of(&self, delivery_id: &str) -> Vec<Push> {
        self.pushes()
            .into_iter()
            .filter(|p| p.delivery_id == delivery_id)
            .collect()
    }
}

/// The event service's delivery settings for pushing to `url` (signed with
/// [`WEBHOOK_SECRET`]), fast enough for tests.
pub fn webhook_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ERP_DELIVERY_WEBHOOK_URL", url.to_owned()),
        ("ERP_DELIVERY_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("ERP_DELIVERY_POLL_INTERVAL_MS", "100".to_owned()),
        ("ERP_DELIVERY_BACKOFF_BASE_MS", "100".to_owned()),
        ("ERP_DELIVERY_BACKOFF_MAX_MS", "1000".to_owned()),
        ("ERP_DELIVERY_TIMEOUT_MS", "1000".to_owned()),
        ("ERP_DELIVERY_LEASE_MS", "2000".to_owned()),
    ]
}
