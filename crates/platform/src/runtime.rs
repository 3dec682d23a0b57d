//! Running a service process: load configuration, install telemetry, serve until SIGTERM/SIGINT,
//! drain, flush, and exit with a meaningful code. Each service's `main.rs` is one call to [`run`].

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::{CommonConfig, ConfigError, Env};
use crate::shutdown::{DrainOutcome, Shutdown, drain_within};
use crate::telemetry::Telemetry;

pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Exit code for a configuration that cannot be used (as sysexits' `EX_CONFIG`).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// A service's configuration exposes the settings every service has.
pub trait ServiceConfig {
    fn common(&self) -> &CommonConfig;
}

/// The threads a service may use: `ERP_WORKER_THREADS`, else the CPUs this process may use (in a
/// container, its CPU limit).
pub fn worker_threads(common: &CommonConfig) -> usize {
    common.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// How a service spreads its work over [`worker_threads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One runtime whose workers share all tasks; with one thread, the current-thread scheduler,
    /// which runs woken tasks in order, so the requests sharing an HTTP/2 connection batch their
    /// frames into few writes (measured: a quarter less CPU per proxied request than one
    /// multi-thread worker).
    Shared,
    /// A current-thread runtime here; the service starts its own threads for the others (the
    /// gateway's HTTP shards).
    PerThread,
}

/// Runs a service: `load` reads its configuration from the process environment, `serve` runs it
/// until the shutdown handle triggers and returns once it has drained.
pub fn run<C, F, Fut>(
    load: fn(&Env) -> Result<C, ConfigError>,
    threads: Threads,
    serve: F,
) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let config = match load(&Env::from_process()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let workers = worker_threads(config.common());
    let mut builder = if workers == 1 || threads == Threads::PerThread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let common = config.common().clone();
        let telemetry = match Telemetry::init(
            &common.service_name,
            common.log_format,
            common.otlp_endpoint.as_deref(),
        ) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let shutdown = Shutdown::new();
        shutdown.trigger_on_signals();
        let outcome = serve(config, shutdown).await;
        let code = match outcome {
            Ok(()) => {
                tracing::info!(service = %common.service_name, "stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(service = %common.service_name, %error, "stopped with an error");
                ExitCode::FAILURE
            }
        };
        // The exporter's gRPC connection is driven by this runtime: flush from another thread
        // so that a single-threaded runtime keeps driving it meanwhile.
        if tokio::task::spawn_blocking(move || telemetry.shutdown())
            .await
            .is_err()
        {
            eprintln!("telemetry shutdown: the flushing thread failed");
        }
        code
    })
}

/// Binds a TCP listener, saying which variable configured the address when it fails.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}").into())
}

/// Serves an axum router until `shutdown`, then drains for at most `drain_deadline`.
pub async fn serve_http<L>(
    listener: L,
    router: Router,
    shutdown: Shutdown,
    drain_deadline: Duration,
) -> Result<(), BoxError>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
{
    use axum::serve::ListenerExt;
    // Responses leave at once rather than wait for the client's acknowledgement.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.triggered());
    match drain_within(server, &shutdown, drain_deadline).await {
        DrainOutcome::Finished(result) => result.map_err(Into::into),
        DrainOutcome::DeadlinePassed => Ok(()),
    }
}

#[cfg(all(feature = "mongo", feature = "redis"))]
/// Serves a tonic router until `shutdown`, then drains for at most `drain_deadline`.
pub(crate) async fn serve_grpc(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    shutdown: Shutdown,
    drain_deadline: Duration,
) -> Result<(), BoxError> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = router.serve_with_incoming_shutdown(incoming, shutdown.triggered());
    match drain_within(server, &shutdown, drain_deadline).await {
        DrainOutcome::Finished(result) => result.map_err(Into::into),
        DrainOutcome::DeadlinePassed => Ok(()),
    }
}

/// Runs a service's main server and its admin server side by side. The admin server outlives the
/// main one: while the main server drains, `/readyz` answers 503 and `/metrics` can still be
/// scraped; it stops once the main server has stopped. If the admin server fails, the main server
/// is shut down too. The first error wins.
pub async fn run_with_admin<M>(
    main_server: M,
    admin_listener: TcpListener,
    admin_router: Router,
    shutdown: Shutdown,
) -> Result<(), BoxError>
where
    M: Future<Output = Result<(), BoxError>>,
{
    let admin_shutdown = Shutdown::new();
    let admin = serve_http(
        admin_listener,
        admin_router,
        admin_shutdown.clone(),
        Duration::from_secs(1),
    );
    let (main_result, admin_result) = tokio::join!(
        async {
            let result = main_server.await;
            admin_shutdown.trigger();
            result
        },
        async {
            let result = admin.await;
            shutdown.trigger();
            result
        }
    );
    main_result.and(admin_result)
}

/// A service's gRPC service as served: measured, its callers' assertions checked first.
#[cfg(all(feature = "mongo", feature = "redis"))]
type Checked<S> = crate::grpc_metrics::Measured<
    tonic::service::interceptor::InterceptedService<S, crate::identity::AssertionVerifier>,
>;

/// What a gRPC service backed by MongoDB and Redis needs to run: its two listeners (bound at
/// build time so tests can ask for port 0 and read the real port), its stores and its registry.
#[cfg(all(feature = "mongo", feature = "redis"))]
pub struct GrpcServiceHost {
    common: CommonConfig,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    pub registry: prometheus::Registry,
    /// Server-side gRPC metrics: wrap the service's own gRPC service with it.
    pub grpc_metrics: crate::grpc_metrics::GrpcMetrics,
    pub database: mongodb::Database,
    pub redis: crate::redis::RedisStore,
    /// Dependencies besides MongoDB and Redis (upstream services), reported, never gating.
    dependencies: Vec<std::sync::Arc<dyn crate::admin::ReadinessCheck>>,
}

#[cfg(all(feature = "mongo", feature = "redis"))]
impl GrpcServiceHost {
    pub async fn start(
        common: &CommonConfig,
        grpc_addr: SocketAddr,
        mongo: &crate::config::MongoConfig,
        redis: &crate::config::RedisConfig,
    ) -> Result<Self, BoxError> {
        let database = crate::mongo::connect(mongo, &common.service_name).await?;
        let redis = crate::redis::RedisStore::connect(redis)?;
        let registry = crate::metrics::new_registry();
        Ok(Self {
            common: common.clone(),
            grpc_listener: bind(grpc_addr, "gRPC").await?,
            admin_listener: bind(common.admin_addr, "ERP_ADMIN_ADDR").await?,
            grpc_metrics: crate::grpc_metrics::GrpcMetrics::server(
                &registry,
                &common.service_name,
            )?,
            registry,
            database,
            redis,
            dependencies: Vec::new(),
        })
    }

    /// Reports `check` (an upstream service, say) in `/healthz/dependencies` and
    /// `erp_dependency_up`; it never makes the service not ready.
    pub fn add_dependency(&mut self, check: impl crate::admin::ReadinessCheck) {
        self.dependencies.push(std::sync::Arc::new(check));
    }

    /// The router a service serves: the standard health service (reporting `S` as serving) and
    /// `service`, measured by [`Self::grpc_metrics`], each call's caller assertion checked by
    /// `verifier` first.
    pub async fn grpc_router<S>(
        &self,
        grpc: &crate::grpc::GrpcConfig,
        service: S,
        verifier: crate::identity::AssertionVerifier,
    ) -> Result<tonic::transport::server::Router, BoxError>
    where
        S: tonic::server::NamedService,
        Checked<S>: tower::Service<
                http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
                Response: axum::response::IntoResponse,
                Future: Send + 'static,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let (health_reporter, health_service) = crate::grpc::health();
        health_reporter.set_serving::<S>().await;
        Ok(crate::grpc::server(grpc)?
            .add_service(health_service)
            .add_service(self.grpc_metrics.wrap(
                tonic::service::interceptor::InterceptedService::new(service, verifier),
            )))
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Serves the admin server at once and `router` (which should include
    /// [`crate::grpc::health`]) once `startup` has finished (creating indexes, say: connections
    /// wait in the listen backlog meanwhile). Ready once `startup` is done, until `shutdown`:
    /// MongoDB and Redis are probed and reported (`/healthz/dependencies`, `erp_dependency_up`)
    /// but a store outage after the start does not make the service not ready (requests needing
    /// the store answer `UNAVAILABLE` one by one).
    pub async fn serve(
        self,
        router: tonic::transport::server::Router,
        startup: impl Future<Output = ()>,
        shutdown: Shutdown,
    ) -> Result<(), BoxError> {
        let started = crate::admin::StartupCheck::new();
        let mut readiness = crate::admin::Readiness::new(shutdown.clone())
            .with_dependency(crate::mongo::MongoCheck::new(self.database.clone()))
            .with_dependency(crate::redis::RedisCheck::new(self.redis.clone()))
            .with_check(started.clone());
        for dependency in self.dependencies {
            readiness = readiness.with_shared_dependency(dependency);
        }
        tracing::info!(
            service = %self.common.service_name,
            grpc_addr = %self.grpc_listener.local_addr()?,
            admin_addr = %self.admin_listener.local_addr()?,
            "listening"
        );
        let drain = self.common.shutdown_timeout;
        let grpc_shutdown = shutdown.clone();
        let main_server = async move {
            tokio::select! {
                () = startup => {}
                () = grpc_shutdown.triggered() => return Ok(()),
            }
            started.mark_done();
            serve_grpc(self.grpc_listener, router, grpc_shutdown, drain).await
        };
        run_with_admin(
            main_server,
            self.admin_listener,
            crate::admin::router(self.registry, readiness),
            shutdown,
        )
        .await
    }
}

/// Runs `attempt` until it succeeds or `shutdown` triggers, pausing between failures (0.2 s
/// doubling to 5 s). Returns whether it succeeded.
pub async fn retry_until_shutdown<F, Fut, E>(
    what: &str,
    shutdown: &Shutdown,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut pause = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(()) => return true,
            Err(error) => tracing::warn!(%error, what, retry_in = ?pause, "start-up step failed"),
        }
        tokio::select! {
            () = shutdown.triggered() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
