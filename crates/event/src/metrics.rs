//! The event service's business metrics.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use erp_platform::error::ErrorCode;
use erp_platform::grpc_metrics::{GrpcMetrics, rpc_paths};
use prometheus::{
    Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, core::Collector,
};

use crate::model::RewardType;

/// Claim latency buckets: from a cached refusal (sub-millisecond) to a transaction waiting out
/// write conflicts.
const CLAIM_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Webhook push latency buckets: a local receiver answers in a millisecond; the default
/// per-attempt timeout is 5 s.
const DELIVERY_ATTEMPT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The outcomes `erp_event_deliveries_total` counts.
pub(crate) const DELIVERY_OUTCOMES: [&str; 5] =
    ["delivered", "failed_attempt", "failed", "acked", "retried"];

/// The `result`s of `erp_event_claims_total` that carry no reason.
const CLAIM_RESULTS_WITHOUT_REASON: [&str; 3] = ["granted", "pending", "duplicate"];

/// The refusals counted as `result="denied"`, by their `reason` (the error code; see
/// `claims::refusal_reason`).
const CLAIM_DENIAL_REASONS: [ErrorCode; 3] = [
    ErrorCode::EventNotActive,
    ErrorCode::ConditionsNotMet,
    ErrorCode::OutOfStock,
];

/// The `result`s of `erp_event_progress_items_total`.
const PROGRESS_ITEM_RESULTS: [&str; 2] = ["accepted", "duplicate"];

/// The `operation`s of `erp_event_transaction_retries_total`.
const TRANSACTION_OPERATIONS: [&str; 5] = ["claim", "grant", "approve", "reject", "expire"];

/// The `cache`s of `erp_event_cache_requests_total` (see `cache.rs`), each counted as a hit or
/// a miss.
const CACHES: [&str; 3] = ["event", "rewards", "event_list"];

/// The contract this service serves (`EventService`): its methods are the closed set of the
/// `method` label.
const EVENT_PROTO: &str = include_str!("../../../proto/erp/event/v1/event.proto");

/// The most events a process keeps per-event series for (claims per event, stock left): a live
/// game creates events for years, and each would otherwise stay a series until the restart.
pub(crate) const MAX_EVENT_SERIES: usize = 1000;

#[derive(Clone)]
pub(crate) struct EventMetrics {
    /// `operation`: create_event, update_event, ...; `result`: ok, or the error code.
    pub(crate) catalog_operations: IntCounterVec,
    /// `cache`: event, rewards, event_list; `result`: hit, miss.
    pub(crate) cache_requests: IntCounterVec,
    /// `result`: accepted, duplicate.
    pub(crate) progress_items: IntCounterVec,
    /// `result`: granted, pending, denied, duplicate; `reason`: the refusal code for denied
    /// (EVENT_NOT_ACTIVE, CONDITIONS_NOT_MET, OUT_OF_STOCK), empty otherwise.
    pub(crate) claims: IntCounterVec,
    /// Claims created (granted or pending) per event.
    pub(crate) event_claims: IntCounterVec,
    /// Rewards handed out (on an AUTO grant or an approval) by reward type.
    pub(crate) rewards_granted: IntCounterVec,
    /// Units left of each limited reward, as last seen by this replica's claims and decisions.
    pub(crate) reward_remaining: IntGaugeVec,
    /// Time to answer a Claim call, refusals included.
    pub(crate) claim_duration: Histogram,
    /// Transaction callbacks run again after a transient error (write conflicts), by operation:
    /// claim, approve, reject, expire.
    pub(crate) transaction_retries: IntCounterVec,
    /// Background job runs: `task` expire_pending, lifecycle, tally_claims; `result` ok, error,
    /// skipped (not the leader).
    pub(crate) job_runs: IntCounterVec,
    /// Claims not placed because of load, by `reason`: queue_full (refused on arrival, the
    /// event's queue at `ERP_CLAIM_QUEUE_MAX`), caller_gone (the caller cancelled or timed out
    /// while queued), deadline (the caller's deadline too near for a batch).
    pub(crate) claims_shed: IntCounterVec,
    /// Delivery outcomes: delivered (a 2xx from the webhook), failed_attempt (a push refused or
    /// timed out, to be tried again), failed (out of attempts), acked (a game server's ack),
    /// retried (an operator's retry of a failed one).
    pub(crate) deliveries: IntCounterVec,
    /// Time of one webhook push, whatever its answer.
    pub(crate) delivery_attempt: Histogram,
    /// Deliveries waiting (PENDING), as last counted by this replica.
    pub(crate) deliveries_pending: IntGauge,
    /// Age of the oldest PENDING delivery in seconds (0 when none), as last read here.
    pub(crate) delivery_oldest_pending: IntGauge,
    /// The events that have per-event series, at most [`MAX_EVENT_SERIES`].
    event_series: Arc<Mutex<HashSet<String>>>,
}

impl EventMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            catalog_operations: IntCounterVec::new(
                Opts::new(
                    "erp_event_catalog_operations_total",
                    "Event and reward operations by result",
                ),
                &["operation", "result"],
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "erp_event_cache_requests_total",
                    "In-process catalog cache lookups by result",
                ),
                &["cache", "result"],
            )?,
            progress_items: IntCounterVec::new(
                Opts::new(
                    "erp_event_progress_items_total",
                    "Reported activity items by result",
                ),
                &["result"],
            )?,
            claims: IntCounterVec::new(
                Opts::new(
                    "erp_event_claims_total",
                    "Claim requests by result (granted, pending, denied, duplicate) and refusal reason",
                ),
                &["result", "reason"],
            )?,
            event_claims: IntCounterVec::new(
                Opts::new(
                    "erp_event_event_claims_total",
                    "Claims created (granted or pending) per event",
                ),
                &["event_id"],
            )?,
            rewards_granted: IntCounterVec::new(
                Opts::new(
                    "erp_event_rewards_granted_total",
                    "Rewards granted (AUTO grants and approvals) by reward type",
                ),
                &["type"],
            )?,
            reward_remaining: IntGaugeVec::new(
                Opts::new(
                    "erp_event_reward_remaining",
                    "Units left of a limited reward after the last claim or release seen here",
                ),
                &["event_id", "reward_id"],
            )?,
            claim_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "erp_event_claim_duration_seconds",
                    "Time to answer a claim, refusals included",
                )
                .buckets(CLAIM_BUCKETS.to_vec()),
            )?,
            transaction_retries: IntCounterVec::new(
                Opts::new(
                    "erp_event_transaction_retries_total",
                    "Transaction callbacks run again after a transient error, by operation",
                ),
                &["operation"],
            )?,
            job_runs: IntCounterVec::new(
                Opts::new(
                    "erp_event_job_runs_total",
                    "Background job runs by job and result",
                ),
                &["task", "result"],
            )?,
            claims_shed: IntCounterVec::new(
                Opts::new(
                    "erp_event_claims_shed_total",
                    "Claims not placed because of load, by reason (queue_full, caller_gone, deadline)",
                ),
                &["reason"],
            )?,
            deliveries: IntCounterVec::new(
                Opts::new(
                    "erp_event_deliveries_total",
                    "Delivery outcomes (delivered, failed_attempt, failed, acked, retried)",
                ),
                &["outcome"],
            )?,
            delivery_attempt: Histogram::with_opts(
                HistogramOpts::new(
                    "erp_event_delivery_attempt_seconds",
                    "Time of one webhook push of a delivery, whatever its answer",
                )
                .buckets(DELIVERY_ATTEMPT_BUCKETS.to_vec()),
            )?,
            deliveries_pending: IntGauge::new(
                "erp_event_deliveries_pending",
                "Deliveries waiting to be delivered (PENDING)",
            )?,
            delivery_oldest_pending: IntGauge::new(
                "erp_event_delivery_oldest_pending_seconds",
                "Age of the oldest PENDING delivery in seconds, 0 when none",
            )?,
            event_series: Arc::default(),
        };
        for outcome in DELIVERY_OUTCOMES {
            metrics.deliveries.with_label_values(&[outcome]);
        }
        // Exported from the start (at 0), so a rate or an alert has a series before any shed.
        for reason in ["queue_full", "caller_gone", "deadline"] {
            metrics.claims_shed.with_label_values(&[reason]);
        }
        metrics.expose_known_results();
        let collectors: [Box<dyn Collector>; 15] = [
            Box::new(metrics.catalog_operations.clone()),
            Box::new(metrics.cache_requests.clone()),
            Box::new(metrics.progress_items.clone()),
            Box::new(metrics.claims.clone()),
            Box::new(metrics.event_claims.clone()),
            Box::new(metrics.rewards_granted.clone()),
            Box::new(metrics.reward_remaining.clone()),
            Box::new(metrics.claim_duration.clone()),
            Box::new(metrics.transaction_retries.clone()),
            Box::new(metrics.job_runs.clone()),
            Box::new(metrics.claims_shed.clone()),
            Box::new(metrics.deliveries.clone()),
            Box::new(metrics.delivery_attempt.clone()),
            Box::new(metrics.deliveries_pending.clone()),
            Box::new(metrics.delivery_oldest_pending.clone()),
        ];
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(metrics)
    }

    /// Exports the known label values at 0 from the start: the denial share and reasons,
    /// pending-claim, progress, retry, cache-hit and reward panels select series a healthy service may not
    /// have counted yet, and would read "No data" instead of 0. Closed sets only (no ids).
    fn expose_known_results(&self) {
        for result in CLAIM_RESULTS_WITHOUT_REASON {
            self.claims.with_label_values(&[result, ""]);
        }
        for reason in CLAIM_DENIAL_REASONS {
            self.claims.with_label_values(&["denied", reason.as_str()]);
        }
        for cache in CACHES {
            for result in ["hit", "miss"] {
                self.cache_requests.with_label_values(&[cache, result]);
            }
        }
        for result in PROGRESS_ITEM_RESULTS {
            self.progress_items.with_label_values(&[result]);
        }
        for operation in TRANSACTION_OPERATIONS {
            self.transaction_retries.with_label_values(&[operation]);
        }
        for reward_type in RewardType::ALL {
            self.rewards_granted
                .with_label_values(&[reward_type.as_str()]);
        }
    }

    /// Whether `event_id` has per-event series: the first [`MAX_EVENT_SERIES`] events seen do;
    /// later ones are counted under `event_id="other"` and export no stock gauge.
    pub(crate) fn has_event_series(&self, event_id: &str) -> bool {
        let Ok(mut admitted) = self.event_series.lock() else {
            return false;
        };
        if admitted.contains(event_id) {
            return true;
        }
        if admitted.len() < MAX_EVENT_SERIES {
            admitted.insert(event_id.to_owned());
            return true;
        }
        false
    }

    /// One more claim created for `event_id`.
    pub(crate) fn count_event_claim(&self, event_id: &str) {
        let label = if self.has_event_series(event_id) {
            event_id
        } else {
            "other"
        };
        self.event_claims.with_label_values(&[label]).inc();
    }

    /// Units left of `reward_id` of `event_id`, for events that have per-event series.
    pub(crate) fn set_reward_remaining(&self, event_id: &str, reward_id: &str, left: i64) {
        if self.has_event_series(event_id) {
            self.reward_remaining
                .with_label_values(&[event_id, reward_id])
                .set(left);
        }
    }
}

/// Exports the event service's gRPC server-error series at 0 (see
/// [`GrpcMetrics::expose_server_errors`]), for every method of its contract.
pub(crate) fn expose_grpc_server_errors(grpc_metrics: &GrpcMetrics) {
    let paths = rpc_paths(EVENT_PROTO);
    grpc_metrics.expose_server_errors(paths.iter().map(String::as_str));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_has_methods() {
        let paths = rpc_paths(EVENT_PROTO);
        assert!(paths.contains(&"/erp.event.v1.EventService/Claim".to_owned()));
        assert!(
            paths
                .iter()
                .all(|p| p.starts_with("/erp.event.v1.EventService/"))
        );
    }

    #[test]
    fn every_denial_reason_is_a_refusal_reason() {
        use crate::claims::refusal_reason;
        use crate::error::EventError;
        let refusals = [
            EventError::EventNotActive,
            EventError::OutOfStock {
                reward_id: String::new(),
            },
        ];
        for refusal in &refusals {
            let reason = refusal_reason(refusal).unwrap();
            assert!(
                CLAIM_DENIAL_REASONS
                    .iter()
                    .any(|code| code.as_str() == reason),
                "{reason} is not exported at start"
            );
        }
    }

    #[test]
    fn per_event_series_stop_at_the_bound() {
        let metrics = EventMetrics::register(&Registry::new()).unwrap();
        for i in 0..MAX_EVENT_SERIES + 50 {
            let event = format!("event-{i}");
            metrics.count_event_claim(&event);
            metrics.set_reward_remaining(&event, "reward", 1);
        }
        assert_eq!(
            metrics.event_claims.collect()[0].get_metric().len(),
            MAX_EVENT_SERIES + 1,
            "one series per admitted event and one for the rest"
        );
        assert_eq!(metrics.event_claims.with_label_values(&["other"]).get(), 50);
        assert_eq!(
            metrics.reward_remaining.collect()[0].get_metric().len(),
            MAX_EVENT_SERIES
        );
        // Admitted events keep their series.
        metrics.count_event_claim("event-0");
        assert_eq!(
            metrics.event_claims.with_label_values(&["event-0"]).get(),
            2
        );
    }
}
