//! The public HTTP server of one shard: HTTP/1.1 and HTTP/2 (prior knowledge) with hyper, with
//! the limits a server facing the internet needs, each from the environment:
//!
//! - `ERP_HTTP_HEADER_READ_TIMEOUT_MS`: a connection must send its first request head within
//!   this time of being accepted, and on HTTP/1 every later request head within this time of its
//!   first byte (slowloris); otherwise it is closed.
//! - `ERP_HTTP_IDLE_TIMEOUT_MS`: a connection with no request in flight for this long is closed
//!   gracefully (HTTP/2: GOAWAY); one that still has not finished after another header-read
//!   timeout (a client that does not read its response) is cut.
//! - `ERP_HTTP_MAX_CONNECTIONS`: open connections of the process, over all shards (see
//!   [`crate::connections`]); more are closed on arrival.
//! - `ERP_HTTP2_MAX_CONCURRENT_STREAMS`: requests in flight on one HTTP/2 connection.
//! - `ERP_HTTP_MAX_HEADER_BYTES`: the largest request head (HTTP/1 read buffer, HTTP/2 header
//!   list); HTTP/1 answers 431 over it.
//!
//! hyper's own HTTP/1 header-read timeout is not used: it also runs while a keep-alive
//! connection waits for its next request, which would make it an idle timeout as well.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Version};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use erp_platform::Shutdown;
use erp_platform::config::{ConfigError, Env};
use erp_platform::runtime::BoxError;
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::Service;

use crate::connections::{Accepted, Incoming};

/// The server limits (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `ERP_HTTP_HEADER_READ_TIMEOUT_MS` (default 10000).
    pub header_read_timeout: Duration,
    /// `ERP_HTTP_IDLE_TIMEOUT_MS` (default 75000: above the 60 s idle timeout common in load
    /// balancers and ingress controllers, so that they, not the gateway, close idle upstream
    /// connections and never send a request on one the gateway is closing).
    pub idle_timeout: Duration,
    /// `ERP_HTTP_MAX_CONNECTIONS` (default 10000).
    pub max_connections: usize,
    /// `ERP_HTTP2_MAX_CONCURRENT_STREAMS` (default 200).
    pub http2_max_concurrent_streams: u32,
    /// `ERP_HTTP_MAX_HEADER_BYTES` (default 32768).
    pub max_header_bytes: u32,
}

impl HttpLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            header_read_timeout: env.duration_millis(
                "ERP_HTTP_HEADER_READ_TIMEOUT_MS",
                Duration::from_secs(10),
                Duration::from_millis(100),
            )?,
            idle_timeout: env.duration_millis(
                "ERP_HTTP_IDLE_TIMEOUT_MS",
                Duration::from_secs(75),
                Duration::from_millis(100),
            )?,
            max_connections: env.int_in("ERP_HTTP_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
            http2_max_concurrent_streams: env.int_in(
                "ERP_HTTP2_MAX_CONCURRENT_STREAMS",
                200,
                1..=10_000,
            )?,
            max_header_bytes: env.int_in("ERP_HTTP_MAX_HEADER_BYTES", 32_768, 8_192..=1_048_576)?,
        })
    }
}

/// Connection counts, shared by every shard.
#[derive(Clone)]
pub(crate) struct ConnectionMetrics {
    pub open: IntGauge,
    pub refused: IntCounter,
    pub timed_out: IntCounter,
}

impl ConnectionMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            open: IntGauge::with_opts(Opts::new(
                "erp_http_connections_open",
                "Open HTTP connections of the public server",
            ))?,
            refused: IntCounter::with_opts(Opts::new(
                "erp_http_connections_refused_total",
                "HTTP connections closed on arrival because ERP_HTTP_MAX_CONNECTIONS were open",
            ))?,
            timed_out: IntCounter::with_opts(Opts::new(
                "erp_http_connections_timed_out_total",
                "HTTP connections cut for sending a request head too slowly or not reading",
            ))?,
        };
        registry.register(Box::new(metrics.open.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.timed_out.clone()))?;
        Ok(metrics)
    }
}

/// Serves `router` on the connections of `incoming` until `shutdown`, then lets the open
/// connections finish for at most `drain_deadline`.
pub(crate) async fn serve<L: Incoming>(
    mut incoming: L,
    router: Router,
    limits: Arc<HttpLimits>,
    metrics: ConnectionMetrics,
    shutdown: Shutdown,
    drain_deadline: Duration,
) -> Result<(), BoxError> {
    let builder = Arc::new(builder(&limits));
    // Every connection task holds a sender; the receiver sees the end once all are gone.
    let (alive, mut all_closed) = mpsc::channel::<Infallible>(1);
    let stopping = shutdown.triggered();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            accepted = incoming.accept() => {
                tokio::spawn(serve_connection(
                    accepted,
                    router.clone(),
                    Arc::clone(&builder),
                    Arc::clone(&limits),
                    metrics.clone(),
                    shutdown.clone(),
                    alive.clone(),
                ));
            }
        }
    }
    drop(incoming);
    drop(alive);
    if tokio::time::timeout(drain_deadline, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain_deadline,
            "drain deadline passed; cutting in-flight requests"
        );
    }
    Ok(())
}

fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        // Timed here instead (module documentation).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes);
    builder
}

async fn serve_connection(
    accepted: Accepted,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<HttpLimits>,
    metrics: ConnectionMetrics,
    shutdown: Shutdown,
    _alive: mpsc::Sender<Infallible>,
) {
    let Accepted {
        stream,
        peer,
        permit: _permit,
    } = accepted;
    // Responses leave at once rather than wait for the client's acknowledgement.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    metrics.open.inc();
    let _open = scopeguard(metrics.open.clone());
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = ServeRequest {
        router,
        peer,
        activity: Arc::clone(&activity),
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let stopping = shutdown.triggered();
    tokio::pin!(stopping);
    let mut stop_requested = false;
    // Once closing gracefully because idle: when to cut it anyway.
    let mut cut_at: Option<Instant> = None;
    loop {
        let wake = match cut_at {
            Some(at) => at,
            None => match activity.next(Instant::now(), &limits) {
                Next::At(at) => at,
                Next::Cut => {
                    metrics.timed_out.inc();
                    tracing::debug!(%peer, "connection cut: request head not read in time");
                    return;
                }
                Next::Idle => {
                    connection.as_mut().graceful_shutdown();
                    let at = Instant::now() + limits.header_read_timeout;
                    cut_at = Some(at);
                    at
                }
            },
        };
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = &mut stopping, if !stop_requested => {
                stop_requested = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake) => {
                if cut_at.is_some_and(|at| Instant::now() >= at) {
                    metrics.timed_out.inc();
                    tracing::debug!(%peer, "connection cut: still busy after closing as idle");
                    return;
                }
            }
        }
    }
}

/// Decrements the open-connections gauge when the connection task ends, however it ends.
fn scopeguard(gauge: IntGauge) -> impl Drop {
    struct Guard(IntGauge);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    Guard(gauge)
}

/// What a connection's timers go by. Times are milliseconds since `started`, plus one (0:
/// none). Everything runs on the connection's task, so relaxed atomics suffice (they are only
/// atomics because the task must be `Send`).
struct Activity {
    started: Instant,
    requests: AtomicU64,
    in_flight: AtomicU32,
    http2: AtomicBool,
    /// When the first byte of a request head arrived (nothing in flight).
    head_started: AtomicU64,
    /// When the last request in flight finished.
    idle_since: AtomicU64,
}

/// What a connection's timer says.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Nothing to do before then.
    At(Instant),
    /// Too slow with its request head: close it now.
    Cut,
    /// Idle for too long: close it gracefully.
    Idle,
}

impl Activity {
    fn new(started: Instant) -> Self {
        Self {
            started,
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            http2: AtomicBool::new(false),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1
    }

    fn at(&self, stamp: u64) -> Instant {
        self.started + Duration::from_millis(stamp.saturating_sub(1))
    }

    /// Bytes arrived.
    fn read(&self, now: impl FnOnce() -> Instant) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.stamp(now()), Ordering::Relaxed);
        }
    }

    /// A request head was read and is being served.
    fn request_started(&self, version: Version) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
    }

    fn request_finished(&self, now: Instant) {
        self.idle_since.store(self.stamp(now), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn next(&self, now: Instant, limits: &HttpLimits) -> Next {
        let due = |at: Instant, what: Next| if now >= at { what } else { Next::At(at) };
        if self.requests.load(Ordering::Relaxed) == 0 {
            return due(self.started + limits.header_read_timeout, Next::Cut);
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Bounded by ERP_HTTP_TIMEOUT_MS; look again later.
            return Next::At(now + limits.idle_timeout);
        }
        let head_started = self.head_started.load(Ordering::Relaxed);
        if head_started != 0 && !self.http2.load(Ordering::Relaxed) {
            return due(
                self.at(head_started) + limits.header_read_timeout,
                Next::Cut,
            );
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Relaxed));
        due(idle_since + limits.idle_timeout, Next::Idle)
    }
}

pin_project! {
    /// The socket, noting when request bytes arrive.
    struct Watched {
        #[pin]
        stream: TcpStream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read(Instant::now);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

/// The router as hyper's service for one connection: adds the peer address (as axum's
/// `ConnectInfo`) and tells the connection's timers when requests start and finish.
#[derive(Clone)]
struct ServeRequest {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<IncomingBody>> for ServeRequest {
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked;

    fn call(&self, request: Request<IncomingBody>) -> Self::Future {
        self.activity.request_started(request.version());
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        Tracked {
            response: router.call(request),
            finished: Finished(Arc::clone(&self.activity)),
        }
    }
}

/// Marks the request finished when its response is ready (or the request is dropped).
struct Finished(Arc<Activity>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

pin_project! {
    struct Tracked {
        #[pin]
        response: RouteFuture<Infallible>,
        finished: Finished,
    }
}

impl Future for Tracked {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().response.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10,
            http2_max_concurrent_streams: 10,
            max_header_bytes: 8192,
        }
    }

    #[test]
    fn limits_come_from_the_environment_with_defaults() {
        let defaults = HttpLimits::from_env(&Env::from_pairs::<_, &str, &str>([])).unwrap();
        assert_eq!(
            defaults,
            HttpLimits {
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(75),
                max_connections: 10_000,
                http2_max_concurrent_streams: 200,
                max_header_bytes: 32_768,
            }
        );
        let set = HttpLimits::from_env(&Env::from_pairs([
            ("ERP_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
            ("ERP_HTTP_IDLE_TIMEOUT_MS", "5000"),
            ("ERP_HTTP_MAX_CONNECTIONS", "3"),
            ("ERP_HTTP2_MAX_CONCURRENT_STREAMS", "50"),
            ("ERP_HTTP_MAX_HEADER_BYTES", "16384"),
        ]))
        .unwrap();
        assert_eq!(
            set,
            HttpLimits {
                header_read_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(5),
                max_connections: 3,
                http2_max_concurrent_streams: 50,
                max_header_bytes: 16_384,
            }
        );
        for (name, value) in [
            ("ERP_HTTP_HEADER_READ_TIMEOUT_MS", "0"),
            ("ERP_HTTP_IDLE_TIMEOUT_MS", "soon"),
            ("ERP_HTTP_MAX_CONNECTIONS", "0"),
            ("ERP_HTTP2_MAX_CONCURRENT_STREAMS", "0"),
            ("ERP_HTTP_MAX_HEADER_BYTES", "100"),
        ] {
            let error = HttpLimits::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn the_first_request_head_must_come_in_time() {
        let limits = limits();
        let start = Instant::now();
        let activity = Activity::new(start);
        assert_eq!(
            activity.next(start, &limits),
            Next::At(start + limits.header_read_timeout)
        );
        activity.read(|| start + Duration::from_secs(1));
        assert_eq!(
            activity.next(start + limits.header_read_timeout, &limits),
            Next::Cut
        );
    }

    #[test]
    fn idle_keep_alive_is_not_a_slow_head() {
        let limits = limits();
        let start = Instant::now();
        let activity = Activity::new(start);
        activity.request_started(Version::HTTP_11);
        // In flight: nothing to do, however long.
        assert!(matches!(
            activity.next(start + Duration::from_secs(30), &limits),
            Next::At(_)
        ));
        let finished = start + Duration::from_secs(1);
        activity.request_finished(finished);
        // Waiting for the next request: the idle timeout, not the header timeout.
        assert_eq!(
            activity.next(finished + Duration::from_secs(20), &limits),
            Next::At(finished + limits.idle_timeout)
        );
        assert_eq!(
            activity.next(finished + limits.idle_timeout, &limits),
            Next::Idle
        );
        // A head begins: it has the header timeout from its first byte.
        let began = finished + Duration::from_secs(5);
        activity.read(|| began);
        activity.read(|| began + Duration::from_secs(1));
        assert_eq!(
            activity.next(began, &limits),
            Next::At(began + limits.header_read_timeout)
        );
        assert_eq!(
            activity.next(began + limits.header_read_timeout, &limits),
            Next::Cut
        );
        activity.request_started(Version::HTTP_11);
        assert!(matches!(
            activity.next(began + limits.header_read_timeout, &limits),
            Next::At(_)
        ));
    }

    #[test]
    fn http2_frames_between_requests_are_not_a_head() {
        let limits = limits();
        let start = Instant::now();
        let activity = Activity::new(start);
        activity.request_started(Version::HTTP_2);
        activity.request_finished(start);
        activity.read(|| start); // a PING, a WINDOW_UPDATE...
        assert_eq!(
            activity.next(start + limits.header_read_timeout, &limits),
            Next::At(start + limits.idle_timeout)
        );
    }
}
