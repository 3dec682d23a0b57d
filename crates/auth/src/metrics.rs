//! The auth service's business metrics.

use erp_platform::grpc_metrics::{GrpcMetrics, rpc_paths};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The `result`s of `erp_auth_logins_total` (as `AuthService::login` counts them).
pub(crate) const LOGIN_RESULTS: [&str; 6] = [
    "success",
    "invalid_credentials",
    "disabled",
    "locked_out",
    "invalid_request",
    "overloaded",
];
/// The `result`s of `erp_auth_client_tokens_total`.
pub(crate) const CLIENT_TOKEN_RESULTS: [&str; 3] = ["success", "invalid_client", "locked_out"];
/// The `result`s of `erp_auth_refreshes_total`.
pub(crate) const REFRESH_RESULTS: [&str; 4] = ["success", "invalid", "reused", "disabled"];
/// The `result`s of `erp_auth_outbox_deliveries_total`.
pub(crate) const OUTBOX_DELIVERY_RESULTS: [&str; 2] = ["delivered", "failed"];

/// The contract this service serves: its methods are the closed set of the `method` label.
const AUTH_PROTO: &str = include_str!("../../../proto/erp/auth/v1/auth.proto");

#[derive(Clone)]
pub struct AuthMetrics {
    /// `result`: success, invalid_credentials, disabled, locked_out, invalid_request, overloaded.
    pub logins: IntCounterVec,
    pub tokens_issued: IntCounter,
    /// Client-credentials token requests; `result`: success, invalid_client, locked_out.
    pub client_tokens: IntCounterVec,
    /// `result`: success, invalid, reused, disabled.
    pub refreshes: IntCounterVec,
    /// `result`: active, or the inactive reason.
    pub introspections: IntCounterVec,
    pub hash_seconds: Histogram,
    /// How long a hash or verification waited for a hashing slot (refused ones included).
    pub password_hash_queue_seconds: Histogram,
    /// Hashes and verifications refused because no slot freed up within the queue deadline.
    pub password_hash_rejections: IntCounter,
    pub outbox_backlog: IntGauge,
    /// `result`: delivered, failed.
    pub outbox_deliveries: IntCounterVec,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            logins: IntCounterVec::new(
                Opts::new("erp_auth_logins_total", "Login attempts by result"),
                &["result"],
            )?,
            tokens_issued: IntCounter::new(
                "erp_auth_tokens_issued_total",
                "Access tokens issued (login, refresh and client credentials)",
            )?,
            client_tokens: IntCounterVec::new(
                Opts::new(
                    "erp_auth_client_tokens_total",
                    "Service-account (client credentials) token requests by result",
                ),
                &["result"],
            )?,
            refreshes: IntCounterVec::new(
                Opts::new(
                    "erp_auth_refreshes_total",
                    "Refresh-token presentations by result",
                ),
                &["result"],
            )?,
            introspections: IntCounterVec::new(
                Opts::new("erp_auth_introspections_total", "Introspections by result"),
                &["result"],
            )?,
            hash_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "erp_auth_password_hash_seconds",
                    "Time to hash or verify one password with argon2id",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            )?,
            password_hash_queue_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "erp_auth_password_hash_queue_seconds",
                    "Time a password hash or verification waited for a hashing slot",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
                ]),
            )?,
            password_hash_rejections: IntCounter::new(
                "erp_auth_password_hash_rejections_total",
                "Password hashes or verifications refused (503) because no hashing slot freed up in time",
            )?,
            outbox_backlog: IntGauge::new(
                "erp_auth_outbox_backlog",
                "Logins recorded but not yet delivered to the event service",
            )?,
            outbox_deliveries: IntCounterVec::new(
                Opts::new(
                    "erp_auth_outbox_deliveries_total",
                    "Login deliveries to the event service by result",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(metrics.logins.clone()))?;
        registry.register(Box::new(metrics.tokens_issued.clone()))?;
        registry.register(Box::new(metrics.client_tokens.clone()))?;
        registry.register(Box::new(metrics.refreshes.clone()))?;
        registry.register(Box::new(metrics.introspections.clone()))?;
        registry.register(Box::new(metrics.hash_seconds.clone()))?;
        registry.register(Box::new(metrics.password_hash_queue_seconds.clone()))?;
        registry.register(Box::new(metrics.password_hash_rejections.clone()))?;
        registry.register(Box::new(metrics.outbox_backlog.clone()))?;
        registry.register(Box::new(metrics.outbox_deliveries.clone()))?;
        metrics.expose_known_results();
        Ok(metrics)
    }

    /// Exports every known result at 0 from the start: the lockout, refresh-reuse and
    /// failed-share panels and the outbox alert select results a healthy service never counts,
    /// and would read "No data" instead of 0.
    fn expose_known_results(&self) {
        let families = [
            (&self.logins, &LOGIN_RESULTS[..]),
            (&self.client_tokens, &CLIENT_TOKEN_RESULTS[..]),
            (&self.refreshes, &REFRESH_RESULTS[..]),
            (&self.outbox_deliveries, &OUTBOX_DELIVERY_RESULTS[..]),
        ];
        for (family, results) in families {
            for result in results {
                family.with_label_values(&[result]);
            }
        }
    }
}

/// Exports the auth service's gRPC server-error series at 0 (see
/// [`GrpcMetrics::expose_server_errors`]), for every method of its contract.
pub(crate) fn expose_grpc_server_errors(grpc_metrics: &GrpcMetrics) {
    let paths = rpc_paths(AUTH_PROTO);
    grpc_metrics.expose_server_errors(paths.iter().map(String::as_str));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_has_methods() {
        let paths = rpc_paths(AUTH_PROTO);
        assert!(paths.contains(&"/erp.auth.v1.AuthService/Login".to_owned()));
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with("/erp.auth.v1.AuthService/"))
        );
    }
}
