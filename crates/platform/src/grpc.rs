//! gRPC server and client setup shared by the services: timeouts, HTTP/2 keep-alive, tracing with
//! propagated context, and `grpc.health.v1` for every server.

use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::admin::ReadinessCheck;
use crate::config::{ConfigError, Env};
use crate::telemetry;

/// Timeouts and keep-alive for servers and clients.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Upper bound of one call, server and client side.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Mutual TLS between the services; `None`: plaintext (inside a mesh that encrypts, or on
    /// one machine).
    pub tls: Option<GrpcTls>,
}

/// The certificate a service presents (as server and as client) and the CA it trusts for its
/// peers, from `ERP_GRPC_TLS_CERT_FILE`, `ERP_GRPC_TLS_KEY_FILE` and `ERP_GRPC_TLS_CA_FILE`
/// (PEM; a Kubernetes TLS Secret, e.g. issued by cert-manager). Servers then require a client
/// certificate from that CA, and clients dial every peer over TLS whatever its URL's scheme.
#[derive(Clone)]
pub struct GrpcTls {
    identity: Identity,
    ca: Certificate,
    /// `ERP_GRPC_TLS_SERVER_NAME`: the name peers' certificates are checked against; by default
    /// the host of the URL dialled (the Service's name when pods are discovered).
    pub server_name: Option<String>,
}

/// Shows the server name only: the identity holds the private key.
impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl GrpcTls {
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Self {
        Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            server_name: None,
        }
    }

    fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        const CERT: &str = "ERP_GRPC_TLS_CERT_FILE";
        const KEY: &str = "ERP_GRPC_TLS_KEY_FILE";
        const CA: &str = "ERP_GRPC_TLS_CA_FILE";
        let files = [CERT, KEY, CA].map(|name| (name, env.get(name)));
        if files.iter().all(|(_, value)| value.is_none()) {
            return Ok(None);
        }
        let read = |(name, value): (&str, Option<&str>)| -> Result<Vec<u8>, ConfigError> {
            let path = value.ok_or_else(|| {
                ConfigError::new(name, "", "must be set with the other ERP_GRPC_TLS_*_FILE")
            })?;
            std::fs::read(path)
                .map_err(|e| ConfigError::new(name, path, format!("cannot read: {e}")))
        };
        let [cert, key, ca] = files;
        let mut tls = Self::from_pem(&read(cert)?, &read(key)?, &read(ca)?);
        tls.server_name = env.get("ERP_GRPC_TLS_SERVER_NAME").map(str::to_owned);
        // Parse now, so that a bad certificate or key stops the start with a clear message.
        Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| ConfigError::new(CERT, cert.1.unwrap_or_default(), e.to_string()))?;
        Ok(Some(tls))
    }

    fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    fn client_config(&self, host: Option<&str>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone());
        match self.server_name.as_deref().or(host) {
            Some(name) => config.domain_name(name),
            None => config,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl GrpcConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            request_timeout: env.duration_millis(
                "ERP_GRPC_TIMEOUT_MS",
                defaults.request_timeout,
                Duration::from_millis(10),
            )?,
            connect_timeout: env.duration_millis(
                "ERP_GRPC_CONNECT_TIMEOUT_MS",
                defaults.connect_timeout,
                Duration::from_millis(10),
            )?,
            tls: GrpcTls::from_env(env)?,
            ..defaults
        })
    }
}

/// A server builder with the platform's timeouts, keep-alive, mutual TLS when configured, and a
/// per-call span that continues the caller's trace.
pub fn server(config: &GrpcConfig) -> Result<Server, tonic::transport::Error> {
    let builder = match &config.tls {
        Some(tls) => Server::builder().tls_config(tls.server_config())?,
        None => Server::builder(),
    };
    Ok(builder
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .trace_fn(server_span))
}

/// The package-qualified service and the method of a call's path `/package.Service/Method`.
fn service_and_method(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

/// The health service's calls are probes (kubelet, the gateway's and auth's dependency checks):
/// a span per probe would bury the traces of real requests.
fn is_probe(service: &str) -> bool {
    service == "grpc.health.v1.Health"
}

/// The SERVER span of one call, by the OpenTelemetry RPC conventions (named
/// `package.Service/Method`, `rpc.*` attributes), a child of the caller's span when the request
/// carries `traceparent`; none for health probes. Its status is recorded by the server-side
/// [`crate::grpc_metrics::Measured`] wrapper, which sees the response.
fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = service_and_method(path).unwrap_or((path, ""));
    if is_probe(service) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        trace_id = tracing::field::Empty,
    );
    let parent = telemetry::extract_http(request.headers());
    let _ = span.set_parent(parent);
    if let Some(trace_id) = span_trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    span
}

/// The CLIENT span of one outgoing call to `path`, a child of the current span, or none for
/// health probes (see [`is_probe`]). The caller injects its context into the request, so that the
/// callee's SERVER span is its child.
pub(crate) fn client_span(path: &str) -> tracing::Span {
    let (service, method) = service_and_method(path).unwrap_or((path, ""));
    if is_probe(service) {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "grpc.client",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

/// Which end of a call a span stands for: they judge a status differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanSide {
    Server,
    Client,
}

/// Records the call's status code on `span` (`rpc.grpc.status_code`, export only) and marks the
/// span failed as the RPC conventions say: a client for any code but OK, a server only for codes
/// that mean the server failed (not the caller's mistakes, such as NOT_FOUND).
pub(crate) fn record_status(span: &tracing::Span, side: SpanSide, code: i32) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    let failed = match side {
        SpanSide::Client => code != 0,
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        SpanSide::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
    };
    if failed {
        span.set_status(opentelemetry::trace::Status::error(
            crate::grpc_metrics::code_name(code),
        ));
    }
}

fn span_trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The health service every gRPC server registers; the reporter marks services serving.
pub fn health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// An endpoint for `url` with the platform's timeouts and keep-alive (every client channel, also
/// the per-pod endpoints of a balanced channel in a cluster).
pub fn endpoint(url: &str, config: &GrpcConfig) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = match &config.tls {
        None => Endpoint::from_shared(url.to_owned())?,
        Some(tls) => {
            // tonic speaks TLS to https URLs only: with TLS configured every peer is dialled so.
            let url = match url.strip_prefix("http://") {
                Some(rest) => format!("https://{rest}"),
                None => url.to_owned(),
            };
            let endpoint = Endpoint::from_shared(url)?;
            let host = endpoint.uri().host().map(str::to_owned);
            endpoint.tls_config(tls.client_config(host.as_deref()))?
        }
    };
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true))
}

/// A channel to `url` that connects on first use and reconnects by itself.
pub fn channel(url: &str, config: &GrpcConfig) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(url, config)?.connect_lazy())
}

/// Dependency probe (`/healthz/dependencies`, `erp_dependency_up`): the upstream's
/// `grpc.health.v1` says the whole server is serving.
pub struct GrpcHealthCheck {
    name: String,
    channel: Channel,
}

impl GrpcHealthCheck {
    pub fn new(name: impl Into<String>, channel: Channel) -> Self {
        Self {
            name: name.into(),
            channel,
        }
    }
}

impl ReadinessCheck for GrpcHealthCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut client = HealthClient::new(self.channel.clone());
            let response = client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
            match response.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
    }
}
