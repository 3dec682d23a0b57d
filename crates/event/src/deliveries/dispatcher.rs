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

use std::collections::{HashMap, HashSet, VecDeque};
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
use crate::store::{DeliveryStore, DueDelivery, Leased, PushOutcome, Pushed};

/// How often every replica reads the backlog for its gauges (and writes left-over records).
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);
/// The backlog reads take at most 1/this of the time (see [`watch_backlog`])...
const BACKLOG_SHARE_DIVISOR: u32 = 10;
/// ...but a round starts at least this often: it also writes the records a stopped process
/// left, which should not wait longer than this plus `RECORD_GRACE`.
const BACKLOG_MAX_PAUSE: Duration = Duration::from_secs(10);
/// How old a status change's unwritten record must be before another process writes it: the
/// process that made the change writes it within milliseconds unless it stopped (a race is
/// harmless either way: the record is written once).
const RECORD_GRACE: Duration = Duration::from_secs(5);
/// Due deliveries read ahead per push slot (`ERP_DELIVERY_CONCURRENCY`), and at least: on the
/// test store the read costs about as much as the backlog is long, whatever the window, so one
/// read should serve many pushes.
const DUE_WINDOW_PER_SLOT: usize = 8;
const MIN_DUE_WINDOW: usize = 1024;
/// Leases are taken for at least `concurrency / LEASE_CHUNK_DIVISOR` deliveries at once.
const LEASE_CHUNK_DIVISOR: usize = 2;
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
    /// by the per-attempt timeout), writes what they came to, and gives back the leases of any
    /// that did not end.
    ///
    /// Pushes run as tasks of their own, so they go on while the loop leases more; their
    /// outcomes are written in batches by one task at a time ([`DeliveryStore::settle`]), the
    /// outcomes that end while a batch is written making the next one. A lease is taken for a
    /// few deliveries at once (half the concurrency, or what is free when idle), from a
    /// window of due deliveries read ahead: the store's cost is per batch, not per push.
    ///
    /// The price of batching: a replica that dies can leave, besides its pushes in flight,
    /// outcomes it received and had not written yet; at most `2 × concurrency` deliveries in
    /// all are then pushed again (at least once).
    pub(crate) async fn run_until(self, shutdown: Shutdown) {
        let lease = chrono::Duration::from_std(self.config.lease)
            .unwrap_or_else(|_| chrono::Duration::seconds(30));
        let concurrency = self.config.concurrency;
        let chunk = (concurrency / LEASE_CHUNK_DIVISOR).max(1);
        // The sets abort their tasks when dropped (the service's future dropped, as a killed
        // process's).
        let mut pushes: JoinSet<Pushed> = JoinSet::new();
        let mut settling: JoinSet<Vec<String>> = JoinSet::new();
        let mut ended: Vec<Pushed> = Vec::new();
        // Leases held and not written off yet: delivery id -> lease token.
        let mut held: HashMap<String, String> = HashMap::new();
        let mut due: VecDeque<DueDelivery> = VecDeque::new();
        // The ids in `due`, so a read that overlaps it adds only what is new.
        let mut queued: HashSet<String> = HashSet::new();
        let window = concurrency
            .saturating_mul(DUE_WINDOW_PER_SLOT)
            .max(MIN_DUE_WINDOW);
        // The next window is read while the last quarter of this one is leased, so the pushes
        // do not wait for the read (on the test store it takes as long as the backlog is long).
        let mut reading: JoinSet<Result<Vec<DueDelivery>, EventError>> = JoinSet::new();
        // Whether the last read found nothing new due: not read again before the poll or a
        // wake (a grant's).
        let mut idle = false;
        loop {
            while !shutdown.is_triggered() {
                if !idle && reading.is_empty() && due.len() <= window / 4 {
                    let store = self.store.clone();
                    reading.spawn(async move { store.due(window).await });
                }
                // Leases held are pushes in flight plus outcomes not written yet; at most
                // twice the concurrency, which bounds what a crash makes pushed again.
                let free = concurrency
                    .saturating_sub(pushes.len())
                    .min((2 * concurrency).saturating_sub(held.len()));
                if due.is_empty() || free == 0 || (free < chunk && !pushes.is_empty()) {
                    break;
                }
                let candidates: Vec<DueDelivery> = due.drain(..free.min(due.len())).collect();
                for candidate in &candidates {
                    queued.remove(candidate.id());
                }
                match self.store.lease(candidates, &self.owner, lease).await {
                    Ok(leased) => {
                        for leased in leased {
                            held.insert(leased.delivery.id.clone(), leased.token.clone());
                            let this = self.clone();
                            pushes.spawn(async move { this.push(leased).await });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot lease due deliveries");
                        break;
                    }
                }
            }
            if settling.is_empty() && !ended.is_empty() {
                let batch = std::mem::take(&mut ended);
                let this = self.clone();
                settling.spawn(async move { this.settle(batch).await });
            }
            let free = pushes.len() < concurrency;
            tokio::select! {
                () = shutdown.triggered() => break,
                Some(done) = pushes.join_next(), if !pushes.is_empty() => {
                    if let Ok(pushed) = done {
                        ended.push(pushed);
                    }
                }
                Some(done) = settling.join_next(), if !settling.is_empty() => {
                    for id in done.unwrap_or_default() {
                        held.remove(&id);
                    }
                }
                Some(done) = reading.join_next(), if !reading.is_empty() => match done {
                    Ok(Ok(read)) => {
                        let before = due.len();
                        due.extend(read.into_iter().filter(|c| queued.insert(c.id().to_owned())));
                        idle = due.len() == before;
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "cannot read due deliveries"),
                    Err(_) => {}
                },
                () = tokio::time::sleep(self.config.poll_interval), if free => idle = false,
                () = self.wake.notified(), if free => idle = false,
            }
        }
        let drain = self.config.timeout + RELEASE_TIMEOUT;
        let _ = tokio::time::timeout(drain, async {
            while let Some(done) = pushes.join_next().await {
                if let Ok(pushed) = done {
                    ended.push(pushed);
                }
            }
            while let Some(done) = settling.join_next().await {
                for id in done.unwrap_or_default() {
                    held.remove(&id);
                }
            }
            for id in self.settle(std::mem::take(&mut ended)).await {
                held.remove(&id);
            }
        })
        .await;
        drop(pushes);
        drop(settling);
        let cut: Vec<(String, String)> = held.into_iter().collect();
        if !cut.is_empty() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, self.store.release(&cut)).await;
        }
    }

    /// One push of a leased delivery, and what it came to.
    async fn push(&self, leased: Leased) -> Pushed {
        let started = Instant::now();
        let pushed = self.webhook.push(&leased.delivery).await;
        self.metrics
            .delivery_attempt
            .observe(started.elapsed().as_secs_f64());
        let outcome = match pushed {
            Ok(()) => PushOutcome::Delivered,
            Err(error) => self.failure(&leased, error),
        };
        Pushed { leased, outcome }
    }

    /// A failed push: tried again after a backoff, or FAILED after the last allowed attempt.
    fn failure(&self, leased: &Leased, error: String) -> PushOutcome {
        let attempts = leased.delivery.attempts.saturating_add(1);
        if attempts >= self.config.max_attempts {
            tracing::warn!(delivery = %leased.delivery.id, attempts, error, "delivery failed");
            return PushOutcome::GaveUp { attempts, error };
        }
        let wait = backoff(self.config.backoff_base, self.config.backoff_max, attempts);
        PushOutcome::Retry {
            attempts,
            error,
            next_attempt_at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        }
    }

    /// Writes what `batch` came to and counts what was written; returns the ids of its
    /// deliveries (their leases are written off: released by the outcome, or, when it could
    /// not be written, left to run out so another attempt pushes them again).
    async fn settle(&self, batch: Vec<Pushed>) -> Vec<String> {
        match self.store.settle(&batch, SYSTEM_ACTOR).await {
            Ok(written) => {
                for (pushed, written) in batch.iter().zip(written) {
                    if written {
                        self.count(match pushed.outcome {
                            PushOutcome::Delivered => "delivered",
                            PushOutcome::GaveUp { .. } => "failed",
                            PushOutcome::Retry { .. } => "failed_attempt",
                        });
                    }
                }
            }
            // The leases run out and other attempts push them again (at least once).
            Err(error) => tracing::warn!(%error, pushes = batch.len(), "cannot record pushes"),
        }
        batch
            .into_iter()
            .map(|pushed| pushed.leased.delivery.id)
            .collect()
    }

    fn count(&self, outcome: &str) {
        self.metrics.deliveries.with_label_values(&[outcome]).inc();
    }
}

/// Keeps the backlog gauges (`erp_event_deliveries_pending`, `..._oldest_pending_seconds`)
/// current on every replica, pushing or not, until `shutdown`; and writes the audit records and
/// dashboard deltas of status changes whose process stopped before it wrote them.
///
/// Its reads cost about as much as the backlog is long on some stores (the test store scans an
/// index range), so it waits at least `BACKLOG_SHARE_DIVISOR - 1` times as long as the last round
/// took (up to `BACKLOG_MAX_PAUSE`): a long backlog cannot make it take more than a small share
/// of the store, and left-over records still wait at most that pause.
pub(crate) async fn watch_backlog(store: DeliveryStore, metrics: EventMetrics, shutdown: Shutdown) {
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(pause) => {}
        }
        let started = Instant::now();
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
        pause = BACKLOG_INTERVAL
            .max(started.elapsed().saturating_mul(BACKLOG_SHARE_DIVISOR - 1))
            .min(BACKLOG_MAX_PAUSE);
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
