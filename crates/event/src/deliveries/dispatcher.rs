//! The push: every replica runs a dispatcher when `ERP_DELIVERY_WEBHOOK_URL` is set. It leases
//! due pending deliveries (`store::deliveries`: an atomic update per delivery, so two replicas
//! never push the same one at once), pushes at most `ERP_DELIVERY_CONCURRENCY` at a time, and
//! writes each outcome: DELIVERED on a 2xx; otherwise another attempt after an exponential
//! backoff with jitter, capped, until `ERP_DELIVERY_MAX_ATTEMPTS`, then FAILED.
//!
//! Delivery is at least once: a replica that dies after the receiver applied a push but before
//! it wrote DELIVERED leaves the lease to run out, and another replica pushes it again (the
//! receiver applies a delivery id once). Nothing is lost: a delivery leaves PENDING only by a
//! 2xx, an ack, or running out of attempts.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use erp_platform::Shutdown;
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::SYSTEM_ACTOR;
use super::webhook::WebhookClient;
use crate::config::DeliveryConfig;
use crate::error::EventError;
use crate::metrics::EventMetrics;
use crate::store::{DeliveryStore, DueDelivery, Leased, Moved};

/// How often every replica reads the backlog for its gauges (and writes left-over records).
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);
/// How old a status change's unwritten record must be before another process writes it: the
/// process that made the change writes it within milliseconds unless it stopped (a race is
/// harmless either way: the record is written once).
const RECORD_GRACE: Duration = Duration::from_secs(5);
/// Due deliveries read ahead per push slot (`ERP_DELIVERY_CONCURRENCY`).
const DUE_WINDOW_PER_SLOT: usize = 4;
/// How long a stopping dispatcher waits to give back the leases of pushes it cut.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The wait before the next attempt after `failed` failed attempts: `base * 2^(failed-1)`, at
/// most `max`, of which a random half (so replicas retrying many deliveries do not stampede the
/// receiver at the same instants): between half and all of it. Each wait is at least the longest
/// the previous could be, so the gaps grow.
pub(crate) fn backoff(base: Duration, max: Duration, failed: u32) -> Duration {
    let doubling = failed.saturating_sub(1).min(31);
    let full = base.saturating_mul(1_u32 << doubling).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
}

#[derive(Clone)]
pub(crate) struct Dispatcher {
    store: DeliveryStore,
    webhook: WebhookClient,
    metrics: EventMetrics,
    config: DeliveryConfig,
    /// This replica, in the lease owner tokens (for whoever reads a stuck lease).
    owner: String,
    /// Woken when a grant commits, so a new delivery goes out without waiting for the poll.
    wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher when the configuration has a webhook; `None` (pull only) otherwise.
    pub(crate) fn from_config(
        store: DeliveryStore,
        metrics: EventMetrics,
        config: &DeliveryConfig,
        wake: Arc<Notify>,
    ) -> Result<Option<Self>, reqwest::Error> {
        let Some(webhook) = config.webhook.clone() else {
            return Ok(None);
        };
        Ok(Some(Self {
            webhook: WebhookClient::new(webhook, config.timeout)?,
            store,
            metrics,
            config: config.clone(),
            owner: uuid::Uuid::new_v4().to_string(),
            wake,
        }))
    }

    /// Leases and pushes until `shutdown`; then lets the pushes in flight end (each is bounded
    /// by the per-attempt timeout) and gives back the leases of any that did not.
    pub(crate) async fn run_until(self, shutdown: Shutdown) {
        let lease = chrono::Duration::from_std(self.config.lease)
            .unwrap_or_else(|_| chrono::Duration::seconds(30));
        // Each push is a task of its own, so pushes go on while the loop leases more; the set
        // aborts them when dropped (the service's future dropped, as a killed process's).
        let mut in_flight: JoinSet<String> = JoinSet::new();
        let mut tokens: HashSet<String> = HashSet::new();
        // Due deliveries read ahead and leased one at a time as pushes end: one query per
        // window instead of one per push.
        let mut due: VecDeque<DueDelivery> = VecDeque::new();
        let window = self.config.concurrency.saturating_mul(DUE_WINDOW_PER_SLOT);
        loop {
            while in_flight.len() < self.config.concurrency && !shutdown.is_triggered() {
                if due.is_empty() {
                    match self.store.due(window).await {
                        Ok(read) if read.is_empty() => break,
                        Ok(read) => due.extend(read),
                        Err(error) => {
                            tracing::warn!(%error, "cannot read due deliveries");
                            break;
                        }
                    }
                }
                let Some(candidate) = due.pop_front() else {
                    break;
                };
                match self.store.lease(candidate, &self.owner, lease).await {
                    Ok(Some(leased)) => {
                        tokens.insert(leased.token.clone());
                        let this = self.clone();
                        in_flight.spawn(async move { this.push(leased).await });
                    }
                    // Another replica took it, or it is no longer due.
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot lease a due delivery");
                        break;
                    }
                }
            }
            tokio::select! {
                () = shutdown.triggered() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(token) = done {
                        tokens.remove(&token);
                    }
                }
                () = tokio::time::sleep(self.config.poll_interval),
                    if in_flight.len() < self.config.concurrency => {}
                () = self.wake.notified(), if in_flight.len() < self.config.concurrency => {}
            }
        }
        let drain = self.config.timeout + RELEASE_TIMEOUT;
        let _ = tokio::time::timeout(drain, async {
            while let Some(done) = in_flight.join_next().await {
                if let Ok(token) = done {
                    tokens.remove(&token);
                }
            }
        })
        .await;
        drop(in_flight);
        let cut: Vec<String> = tokens.into_iter().collect();
        if !cut.is_empty() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, self.store.release(&cut)).await;
        }
    }

    /// One push of a leased delivery and its outcome; returns the lease token.
    async fn push(&self, leased: Leased) -> String {
        let started = Instant::now();
        let pushed = self.webhook.push(&leased.delivery).await;
        self.metrics
            .delivery_attempt
            .observe(started.elapsed().as_secs_f64());
        let outcome = match pushed {
            Ok(()) => self.delivered(&leased).await,
            Err(error) => self.failed(&leased, &error).await,
        };

        if let Err(error) = outcome {
            // The lease runs out and another attempt pushes it again (at least once).
            tracing::warn!(%error, delivery = %leased.delivery.id, "cannot record a push");
        }
        leased.token
    }

    async fn delivered(&self, leased: &Leased) -> Result<(), EventError> {
        if let Moved::Done(_) = self
            .store
            .deliver(&leased.delivery.id, SYSTEM_ACTOR)
            .await?
        {
            self.count("delivered");
        }
        Ok(())
    }

    async fn failed(&self, leased: &Leased, error: &str) -> Result<(), EventError> {
        let attempts = leased.delivery.attempts.saturating_add(1);
        if attempts >= self.config.max_attempts {
            tracing::warn!(delivery = %leased.delivery.id, attempts, error, "delivery failed");
            if let Moved::Done(_) = self
                .store
                .give_up(leased, attempts, error, SYSTEM_ACTOR)
                .await?
            {
                self.count("failed");
            }
        } else {
            let wait = backoff(self.config.backoff_base, self.config.backoff_max, attempts);
            let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            if self
                .store
                .attempt_failed(leased, attempts, error, next)
                .await?
            {
                self.count("failed_attempt");
            }
        }
        Ok(())
    }

    fn count(&self, outcome: &str) {
        self.metrics.deliveries.with_label_values(&[outcome]).inc();
    }
}

/// Keeps the backlog gauges (`erp_event_deliveries_pending`, `..._oldest_pending_seconds`)
/// current on every replica, pushing or not, until `shutdown`; and writes the audit records and
/// dashboard deltas of status changes whose process stopped before it wrote them.
pub(crate) async fn watch_backlog(store: DeliveryStore, metrics: EventMetrics, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(BACKLOG_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = ticker.tick() => {}
        }
        match store.backlog().await {
            Ok((pending, oldest)) => {
                metrics
                    .deliveries_pending
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
                let age = oldest.map_or(0, |at| (Utc::now() - at).num_seconds().max(0));
                metrics.delivery_oldest_pending.set(age);
            }
            Err(error) => tracing::warn!(%error, "cannot read the delivery backlog"),
        }
        if let Err(error) = store.record_left_over(RECORD_GRACE).await {
            tracing::warn!(%error, "cannot write the left-over delivery records");
        }
    }
}

/// Starts the deliveries' background work once `ready` (the indexes exist): the backlog gauges
/// always, the dispatcher when there is one; both until `shutdown`.
pub(crate) fn spawn_background(
    store: DeliveryStore,
    metrics: EventMetrics,
    dispatcher: Option<Dispatcher>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    shutdown: Shutdown,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        if ready.wait_for(|ready| *ready).await.is_err() {
            return;
        }
        let push = async {
            if let Some(dispatcher) = dispatcher {
                dispatcher.run_until(shutdown.clone()).await;
            }
        };
        tokio::join!(watch_backlog(store, metrics, shutdown.clone()), push);
    }))
}

/// A spawned task that is aborted when dropped: the deliveries' background work ends with the
/// service's future, as a killed process's would.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl AbortOnDrop {
    pub(crate) async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..100 {
            let waits: Vec<Duration> = (1..=6).map(|n| backoff(base, max, n)).collect();
            let bounds = [100, 200, 400, 800, 1000, 1000];
            for (wait, full) in waits.iter().zip(bounds) {
                let full = Duration::from_millis(full);
                assert!(*wait >= full / 2 && *wait <= full, "{wait:?} for {full:?}");
            }
        }
        assert!(backoff(base, max, u32::MAX) <= max);
    }
}
