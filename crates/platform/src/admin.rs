//! The admin HTTP server every service runs beside its main port: `/metrics`, `/healthz` (the
//! process is alive), `/readyz` (this process can serve: its start-up work is done, its listeners
//! are up and it is not shutting down — so a Kubernetes Service stops routing to it as soon as
//! SIGTERM arrives) and `/healthz/dependencies` (what each dependency answers).
//!
//! Dependencies (MongoDB, Redis, the upstream services) never make `/readyz` fail: a dependency
//! outage is not cured by restarting or unrouting this pod, and failing readiness for it would
//! take every replica out of every Service at once (a cascade). Requests that need a dependency
//! that is down are answered one by one with 503 `UNAVAILABLE` and `Retry-After`. Dependencies are
//! probed in the background (every [`DEFAULT_PROBE_INTERVAL`]) and on each
//! `/healthz/dependencies`, and exported as the gauge `erp_dependency_up{dependency}` (1 up, 0
//! down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

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

/// A check of readiness (the start-up work) or of a dependency (a store, an upstream service).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short stable name shown in `/readyz` and `/healthz/dependencies` answers and used as the
    /// `dependency` label, e.g. `mongodb`.
    fn name(&self) -> &str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// How often dependencies are probed in the background.
pub(crate) const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What `/readyz` gates on (the process's own state) and the dependencies it only reports.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    dependencies: Dependencies,
    timeout: Duration,
    probe_interval: Duration,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            checks: Vec::new(),
            dependencies: Dependencies::default(),
            timeout: Duration::from_secs(2),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            shutdown,
        }
    }

    /// A check `/readyz` requires: something about this process (its start-up work), never a
    /// dependency.
    #[must_use]
    pub fn with_check(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// A dependency: probed and reported (`/healthz/dependencies`, `erp_dependency_up`), never
    /// a reason to be not ready.
    #[must_use]
    pub fn with_dependency(mut self, check: impl ReadinessCheck) -> Self {
        self.dependencies.add(Arc::new(check));
        self
    }

    #[cfg(all(feature = "mongo", feature = "redis"))]
    /// [`Readiness::with_dependency`] for a shared check.
    #[must_use]
    pub(crate) fn with_shared_dependency(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.dependencies.add(check);
        self
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn dependencies(&self) -> &Dependencies {
        &self.dependencies
    }

    /// Runs every readiness check; `Ok` holds per-check results when all passed, `Err` when any
    /// failed. Dependencies are not run here.
    pub async fn evaluate(&self) -> Result<Map<String, Value>, Map<String, Value>> {
        let results = join_all(
            self.checks
                .iter()
                .map(|check| run_check(check.as_ref(), self.timeout)),
        )
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

    /// Probes every dependency now and records the outcome.
    pub(crate) async fn probe_dependencies(&self) {
        self.dependencies.probe(self.timeout).await;
    }

    /// Probes the dependencies every `probe_interval` until shutdown.
    async fn probe_until_shutdown(self) {
        if self.dependencies.is_empty() {
            return;
        }
        loop {
            self.probe_dependencies().await;
            tokio::select! {
                () = self.shutdown.triggered() => return,
                () = tokio::time::sleep(self.probe_interval) => {}
            }
        }
    }
}

async fn run_check(check: &dyn ReadinessCheck, timeout: Duration) -> (String, Result<(), String>) {
    let outcome = match tokio::time::timeout(timeout, check.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    (check.name().to_owned(), outcome)
}

/// The dependencies of a service, what their last probes said, and the gauge
/// `erp_dependency_up{dependency}`.
#[derive(Clone)]
pub struct Dependencies {
    checks: Vec<Arc<dyn ReadinessCheck>>,
    states: Arc<Mutex<Vec<DependencyState>>>,
    gauge: prometheus::IntGaugeVec,
}

impl Default for Dependencies {
    fn default() -> Self {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "erp_dependency_up",
                "Whether a dependency (mongodb, redis, auth, event) answered its last probe: 1 up, 0 down",
            ),
            &["dependency"],
        )
        .unwrap_or_else(|_| unreachable!("the gauge's name and label are valid"));
        Self {
            checks: Vec::new(),
            states: Arc::default(),
            gauge,
        }
    }
}

/// What is known of one dependency.
#[derive(Debug, Clone, Default)]
struct DependencyState {
    /// `None` until the first probe.
    up: Option<bool>,
    /// Since when it has been up (or down).
    since: Option<DateTime<Utc>>,
    checked_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
}

impl Dependencies {
    fn add(&mut self, check: Arc<dyn ReadinessCheck>) {
        self.checks.push(check);
        self.lock_states().push(DependencyState::default());
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, Vec<DependencyState>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Probes every dependency concurrently, each bounded by `timeout`, and records the outcomes.
    pub async fn probe(&self, timeout: Duration) {
        let results = join_all(
            self.checks
                .iter()
                .map(|check| run_check(check.as_ref(), timeout)),
        )
        .await;
        let now = Utc::now();
        let mut states = self.lock_states();
        for (state, (name, outcome)) in states.iter_mut().zip(results) {
            let up = outcome.is_ok();
            if state.up != Some(up) {
                match &outcome {
                    Ok(()) if state.up.is_some() => {
                        tracing::info!(dependency = %name, "dependency is back");
                    }
                    Ok(()) => {}
                    Err(error) => tracing::warn!(dependency = %name, %error, "dependency is down"),
                }
                state.up = Some(up);
                state.since = Some(now);
            }
            state.checked_at = Some(now);
            if let Err(error) = outcome {
                state.last_error = Some(error);
                state.last_error_at = Some(now);
            }
            self.gauge.with_label_values(&[&name]).set(i64::from(up));
        }
    }

    /// `{"<name>": {"status": "up"|"down"|"unknown", "since", "checkedAt", "lastError",
    /// "lastErrorAt"}}` and whether every dependency is up.
    pub fn report(&self) -> (Map<String, Value>, bool) {
        let time = |at: Option<DateTime<Utc>>| {
            at.map_or(Value::Null, |at| {
                json!(at.to_rfc3339_opts(SecondsFormat::Millis, true))
            })
        };
        let states = self.lock_states();
        let mut all_up = true;
        let mut report = Map::new();
        for (check, state) in self.checks.iter().zip(states.iter()) {
            all_up &= state.up == Some(true);
            let status = match state.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            };
            report.insert(
                check.name().to_owned(),
                json!({
                    "status": status,
                    "since": time(state.since),
                    "checkedAt": time(state.checked_at),
                    "lastError": state.last_error,
                    "lastErrorAt": time(state.last_error_at),
                }),
            );
        }
        (report, all_up)
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

/// The admin routes. Serve them with [`crate::runtime::serve_http`]. Registers
/// `erp_dependency_up` in `registry` and, inside a Tokio runtime, starts probing the
/// dependencies in the background until `readiness`'s shutdown.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    if !readiness.dependencies.is_empty() {
        if let Err(error) = registry.register(Box::new(readiness.dependencies.gauge.clone())) {
            tracing::warn!(%error, "cannot register erp_dependency_up");
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(readiness.clone().probe_until_shutdown());
        }
    }
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/healthz/dependencies", get(dependencies))
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

/// Probes every dependency now. Always 200 (this endpoint reports, it does not gate): `status`
/// is `ok` when every dependency is up, else `degraded`.
async fn dependencies(State(state): State<AdminState>) -> Response {
    state.readiness.probe_dependencies().await;
    let (dependencies, all_up) = state.readiness.dependencies.report();
    axum::Json(json!({
        "status": if all_up { "ok" } else { "degraded" },
        "dependencies": dependencies,
    }))
    .into_response()
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
