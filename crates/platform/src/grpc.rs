//! gRPC server and client setup shared by the services: timeouts, HTTP/2 keep-alive, tracing with
//! propagated context, and `grpc.health.v1` for every server.

use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint, Server};
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
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
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
            ..defaults
        })
    }
}

/// A server builder with the platform's timeouts, keep-alive and a per-call span that continues the
/// caller's trace.
pub fn server(config: &GrpcConfig) -> Server {
    Server::builder()
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .trace_fn(|request: &http::Request<()>| {
            let span = tracing::info_span!(
                "grpc.request",
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %request.uri().path(),
                trace_id = tracing::field::Empty,
            );
            let parent = telemetry::extract_http(request.headers());
            let _ = span.set_parent(parent);
            if let Some(trace_id) = span_trace_id(&span) {
                span.record("trace_id", trace_id);
            }
            span
        })
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
    Ok(Endpoint::from_shared(url.to_owned())?
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

/// `/readyz` check: the upstream's `grpc.health.v1` says the whole server is serving.
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
