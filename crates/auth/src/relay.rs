//! Delivers recorded logins from the outbox to the event service's `RecordActivity`, with retries
//! and exponential backoff. The outbox id is the idempotency key, so a delivery repeated after a
//! crash or by two replicas at once counts once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use erp_platform::Shutdown;
use erp_platform::grpc_metrics::Measured;
use erp_platform::identity::Asserting;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use erp_proto::event::v1::{ActivityKind, RecordActivityRequest};
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::config::OutboxConfig;
use crate::metrics::AuthMetrics;
use crate::store::{AuthStore, OutboxItem};

/// How long a relay owns an item it took before another may take it.
const LEASE: Duration = Duration::from_secs(30);

pub struct OutboxRelay {
    store: AuthStore,
    client: EventServiceClient<Asserting<Measured<Channel>>>,
    metrics: AuthMetrics,
    wakeup: Arc<Notify>,
    config: OutboxConfig,
}

/// Backoff before attempt `attempts + 1`: 0.5 s doubling, capped.
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(500);
    base.checked_mul(1u32 << attempts.min(16))
        .unwrap_or(max)
        .min(max)
}

impl OutboxRelay {
    pub fn new(
        store: AuthStore,
        channel: Asserting<Measured<Channel>>,
        metrics: AuthMetrics,
        wakeup: Arc<Notify>,
        config: OutboxConfig,
    ) -> Self {
        Self {
            store,
            client: EventServiceClient::new(channel),
            metrics,
            wakeup,
            config,
        }
    }

    pub async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            self.deliver_due(&shutdown).await;
            match self.store.outbox_backlog().await {
                Ok(backlog) => self
                    .metrics
                    .outbox_backlog
                    .set(i64::try_from(backlog).unwrap_or(i64::MAX)),
                Err(error) => tracing::debug!(%error, "cannot count the outbox backlog"),
            }
            tokio::select! {
                () = shutdown.triggered() => break,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    async fn deliver_due(&self, shutdown: &Shutdown) {
        while !shutdown.is_triggered() {
            match self.store.lease_due_outbox_item(Utc::now(), LEASE).await {
                Ok(Some(item)) => self.deliver(item).await,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the outbox");
                    return;
                }
            }
        }
    }

    async fn deliver(&self, item: OutboxItem) {
        let request = RecordActivityRequest {
            idempotency_key: item.id.clone(),
            user_id: item.user_id.clone(),
            kind: ActivityKind::Login as i32,
            occurred_at: Some(erp_proto::time::timestamp(item.occurred_at)),
        };
        let outcome = self.client.clone().record_activity(request).await;
        let stored = match outcome {
            Ok(_) => {
                self.metrics
                    .outbox_deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                self.store.mark_delivered(&item.id, Utc::now()).await
            }
            Err(status) => {
                self.metrics
                    .outbox_deliveries
                    .with_label_values(&["failed"])
                    .inc();
                let attempts = item.attempts.saturating_add(1);
                let wait = backoff(attempts, self.config.max_backoff);
                tracing::info!(
                    outbox_id = item.id,
                    attempts,
                    code = ?status.code(),
                    retry_in = ?wait,
                    "login delivery failed; will retry"
                );
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                self.store.reschedule(&item.id, attempts, next).await
            }
        };
        if let Err(error) = stored {
            // The lease expires and the item is retried; delivery is idempotent.
            tracing::warn!(%error, outbox_id = item.id, "cannot record the delivery outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, max), Duration::from_millis(500));
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(3, max), Duration::from_secs(4));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(40, max), max);
    }
}
