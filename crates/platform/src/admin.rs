//! The admin HTTP server every service runs beside its main port: `/metrics`, `/healthz` (the
//! process is alive) and `/readyz` (every dependency answers, and the process is not shutting
//! down — so a Kubernetes Service stops routing to it as soon as SIGTERM arrives).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use prometheus::Registry;
use serde_json::{Map, Value, json};

use crate::metrics;
use crate::shutdown::Shutdown;

/// A dependency that must answer for the service to be ready.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short stable name shown in `/readyz` answers, e.g. `mongodb`.
    fn name(&self) -> &str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The checks `/readyz` runs, concurrently, each bounded by `timeout`.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    timeout: Duration,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
            shutdown,
        }
    }

    #[must_use]
    pub fn with_check(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every check; `Ok` holds per-check results when all passed, `Err` when any failed.
    pub async fn evaluate(&self) -> Result<Map<String, Value>, Map<String, Value>> {
        let results = join_all(self.checks.iter().map(|check| async {
            let outcome = match tokio::time::timeout(self.timeout, check.check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            (check.name().to_owned(), outcome)
        }))
        .await;
        let mut all_ok = !self.shutdown.is_triggered();
        let mut report = Map::new();
        if self.shutdown.is_triggered() {
            report.insert("shutdown".into(), json!("in progress"));
        }
        for (name, outcome) in results {
            match outcome {
                Ok(()) => report.insert(name, json!("ok")),
                Err(error) => {
                    all_ok = false;
                    report.insert(name, json!(error))
                }
            };
        }
        if all_ok { Ok(report) } else { Err(report) }
    }
}

/// Not ready until the service's start-up work (indexes, bootstrap data) is done.
#[derive(Clone, Default)]
pub struct StartupCheck {
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl StartupCheck {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn mark_done(&self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ReadinessCheck for StartupCheck {
    fn name(&self) -> &str {
        "startup"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let done = self.done.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if done {
                Ok(())
            } else {
                Err("in progress".to_owned())
            }
        })
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
}

/// The admin routes. Serve them with [`crate::runtime::serve_http`].
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            registry,
            readiness,
        })
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    match metrics::render(&state.registry) {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::TEXT_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.evaluate().await {
        Ok(checks) => axum::Json(json!({"status": "ready", "checks": checks})).into_response(),
        Err(checks) => {
            tracing::debug!(?checks, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "not ready", "checks": checks})),
            )
                .into_response()
        }
    }
}
