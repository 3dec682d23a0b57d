//! Places claims in per-event batches, one transaction per batch (see [`ClaimBatcher`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use erp_platform::audit::AuditEntry;
use tokio::sync::oneshot;

use crate::cache::{CatalogCache, Invalidation};
use crate::claims::ClaimSettings;
use crate::error::EventError;
use crate::metrics::EventMetrics;
use crate::model::{Claim, ClaimStatus};
use crate::store::{ClaimStore, Placement};
use crate::views::{ClaimView, json};

/// The `Retry-After` of a claim shed because its event's queue is full or its deadline too near.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A waiting claim is placed only if its caller's deadline is at least this far off when its
/// batch starts, and at least twice the recent average batch time (see [`ClaimBatcher`]).
const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(10);

/// A claim waiting for its batch, and where its placement goes.
struct Waiting {
    claim: Claim,
    trace_id: Option<String>,
    /// When its caller stops waiting (its gRPC deadline, bounded by the server's call timeout).
    deadline: Instant,
    /// Closed once the caller has gone: the request's future was dropped (client cancel,
    /// deadline), so nobody would hear the answer.
    reply: oneshot::Sender<Result<Placement, EventError>>,
}

/// Places claims in per-event batches: the first claim of an event starts a drain task that
/// writes whatever has queued up for the event, one transaction at a time, until the queue is
/// empty. Under light load a claim goes alone at once; under heavy load a claim waits at most
/// for the transaction in flight, then goes with everyone who arrived meanwhile. Batches are
/// per process; replicas still coordinate only through the database (write conflicts, retried).
///
/// The queue is bounded and sheds instead of growing past its callers' patience:
/// - at most `queue_max` claims of one event wait (the batch in flight not counted); one more
///   is refused at once with UNAVAILABLE and a `Retry-After` (`reason="queue_full"`);
/// - when a batch starts, a waiting claim whose caller has gone (its request future dropped:
///   a client cancel or a deadline) is dropped unplaced (`caller_gone`), and one whose deadline
///   is nearer than twice the recent average batch time (at least [`MIN_DEADLINE_MARGIN`]) is
///   answered UNAVAILABLE unplaced (`deadline`).
///
/// So a claim is only placed if its caller was still waiting, with a batch's time to spare,
/// when its batch started. A caller that gives up during its batch's transaction anyway (a
/// transaction slower than usual, a cancel) cannot be un-told; its claim stands and is found
/// again: a retry with the same idempotency key replays it (the key is recorded in the same
/// transaction), one without a key is answered ALREADY_CLAIMED with its `claimId`.
pub(crate) struct ClaimBatcher {
    store: ClaimStore,
    cache: CatalogCache,
    metrics: EventMetrics,
    /// 0: no batching, every claim is its own transaction.
    max_batch: usize,
    /// Most claims waiting per event.
    queue_max: usize,
    /// The longest any caller waits.
    call_timeout: Duration,
    /// Recent average time of one batch's placement (nanoseconds, exponentially weighted).
    batch_nanos: AtomicU64,
    /// Claims waiting per event; an entry exists while the event's drain task runs.
    lanes: Mutex<HashMap<String, VecDeque<Waiting>>>,
}

/// Removes a lane if its drain task ends early (a panic), so the next claim starts a new one;
/// dropping the waiting claims answers them with an error instead of leaving them hanging.
struct LaneGuard<'a> {
    batcher: &'a ClaimBatcher,
    event_id: &'a str,
    armed: bool,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.batcher.lanes().remove(self.event_id);
        }
    }
}

impl ClaimBatcher {
    pub(crate) fn new(
        store: ClaimStore,
        cache: CatalogCache,
        metrics: EventMetrics,
        settings: &ClaimSettings,
    ) -> Self {
        Self {
            store,
            cache,
            metrics,
            max_batch: settings.batch_max,
            queue_max: settings.queue_max.max(1),
            call_timeout: settings.call_timeout,
            batch_nanos: AtomicU64::new(0),
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// When a caller that arrived at `started` and waits at most `timeout` stops waiting.
    pub(crate) fn deadline(&self, started: Instant, timeout: Option<Duration>) -> Instant {
        let timeout = timeout.map_or(self.call_timeout, |t| t.min(self.call_timeout));
        started
            .checked_add(timeout)
            .unwrap_or_else(|| started + Duration::from_secs(3600))
    }

    /// How much time a waiting claim's caller must have left for its batch to start placing it.
    fn deadline_margin(&self) -> Duration {
        let typical = Duration::from_nanos(self.batch_nanos.load(Ordering::Relaxed));
        typical.saturating_mul(2).max(MIN_DEADLINE_MARGIN)
    }

    /// Folds one batch's placement time into the recent average (weight 1/8).
    fn record_batch_time(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .batch_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    took
                } else {
                    old - old / 8 + took / 8
                })
            });
    }

    fn shed(&self, reason: &str, count: usize) {
        if count > 0 {
            self.metrics
                .claims_shed
                .with_label_values(&[reason])
                .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Waiting>>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Places `claim` and answers what became of it; UNAVAILABLE (not placed) when its event's
    /// queue is full, or when `deadline` is too near once its batch starts.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        claim: Claim,
        trace_id: Option<String>,
        deadline: Instant,
    ) -> Result<Placement, EventError> {
        let event_id = claim.event_id.clone();
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            claim,
            trace_id,
            deadline,
            reply,
        };
        if self.max_batch == 0 {
            self.place(&event_id, vec![waiting]).await;
        } else {
            let mut gone = 0;
            let admitted = {
                let mut lanes = self.lanes();
                match lanes.get_mut(&event_id) {
                    Some(queue) => {
                        if queue.len() >= self.queue_max {
                            // Callers that have gone make room before anyone is refused.
                            let before = queue.len();
                            queue.retain(|w| !w.reply.is_closed());
                            gone = before - queue.len();
                        }
                        if queue.len() >= self.queue_max {
                            None
                        } else {
                            queue.push_back(waiting);
                            Some(false)
                        }
                    }
                    None => {
                        lanes.insert(event_id.clone(), VecDeque::from([waiting]));
                        Some(true)
                    }
                }
            };
            self.shed("caller_gone", gone);
            let Some(start_drain) = admitted else {
                self.shed("queue_full", 1);
                return Err(EventError::Overloaded {
                    retry_after: SHED_RETRY_AFTER,
                });
            };
            if start_drain {
                // A task of its own: the batch completes even if this request is cancelled.
                tokio::spawn(Arc::clone(self).drain(event_id));
            }
        }
        answer
            .await
            .map_err(|_| EventError::Internal("the claim batch was dropped"))?
    }

    async fn drain(self: Arc<Self>, event_id: String) {
        let mut guard = LaneGuard {
            batcher: &self,
            event_id: &event_id,
            armed: true,
        };
        loop {
            let margin = self.deadline_margin();
            let mut batch: Vec<Waiting> = Vec::new();
            let mut late: Vec<Waiting> = Vec::new();
            let mut gone = 0;
            {
                let mut lanes = self.lanes();
                let Some(queue) = lanes.get_mut(&event_id) else {
                    guard.armed = false;
                    return;
                };
                if queue.is_empty() {
                    lanes.remove(&event_id);
                    guard.armed = false;
                    return;
                }
                let now = Instant::now();
                while batch.len() < self.max_batch {
                    let Some(waiting) = queue.pop_front() else {
                        break;
                    };
                    if waiting.reply.is_closed() {
                        // Nobody would hear the answer: not placed.
                        gone += 1;
                    } else if waiting.deadline.saturating_duration_since(now) < margin {
                        late.push(waiting);
                    } else {
                        batch.push(waiting);
                    }
                }
            }
            self.shed("caller_gone", gone);
            self.shed("deadline", late.len());
            for waiting in late {
                let _ = waiting.reply.send(Err(EventError::Overloaded {
                    retry_after: SHED_RETRY_AFTER,
                }));
            }
            if !batch.is_empty() {
                self.place(&event_id, batch).await;
            }
        }
    }

    /// Writes one batch and answers each of its claims.
    async fn place(&self, event_id: &str, batch: Vec<Waiting>) {
        // One claim per player goes into the transaction; a player's other requests in the
        // batch share its fate (they are duplicates of it).
        let mut leaders: Vec<Waiting> = Vec::new();
        let mut followers: HashMap<String, Vec<Waiting>> = HashMap::new();
        for waiting in batch {
            if leaders
                .iter()
                .any(|l| l.claim.user_id == waiting.claim.user_id)
            {
                followers
                    .entry(waiting.claim.user_id.clone())
                    .or_default()
                    .push(waiting);
            } else {
                leaders.push(waiting);
            }
        }
        let claims: Vec<Claim> = leaders.iter().map(|w| w.claim.clone()).collect();
        let traces: HashMap<&str, Option<String>> = leaders
            .iter()
            .map(|w| (w.claim.id.as_str(), w.trace_id.clone()))
            .collect();
        let audit = |claim: &Claim| {
            let action = match claim.status {
                ClaimStatus::Pending => "CLAIM_PENDING",
                _ => "CLAIM_GRANTED",
            };
            AuditEntry {
                trace_id: traces.get(claim.id.as_str()).cloned().flatten(),
                ..AuditEntry::new(
                    &claim.user_id,
                    action,
                    "claim",
                    &claim.id,
                    None,
                    Some(json(&ClaimView::from(claim))),
                )
            }
        };
        let started = Instant::now();
        let placed = self.store.place(event_id, &claims, &audit).await;
        self.record_batch_time(started.elapsed());
        let mut placed = match placed {
            Ok(placed) => placed,
            Err(error) => {
                let error = Arc::new(error);
                for waiting in leaders.into_iter().chain(followers.into_values().flatten()) {
                    let _ = waiting.reply.send(Err(error.duplicate()));
                }
                return;
            }
        };
        self.metrics
            .transaction_retries
            .with_label_values(&["claim"])
            .inc_by(u64::from(placed.retries));
        for (reward_id, left) in &placed.stock_left {
            self.metrics
                .set_reward_remaining(event_id, reward_id, *left);
        }
        if placed
            .placements
            .values()
            .any(|p| matches!(p, Placement::Placed(_)))
        {
            self.cache
                .changed(Invalidation::Event {
                    event_id: event_id.to_owned(),
                })
                .await;
        }
        for leader in leaders {
            let placement = placed
                .placements
                .remove(&leader.claim.id)
                .ok_or(EventError::Internal("a claim of the batch went missing"));
            if let Some(same_player) = followers.remove(&leader.claim.user_id) {
                for follower in same_player {
                    let shared = match &placement {
                        Ok(Placement::Placed(claim) | Placement::Existing(claim)) => {
                            Ok(Placement::Existing(claim.clone()))
                        }
                        Ok(other) => Ok(other.clone()),
                        Err(_) => Err(EventError::Internal("a claim of the batch went missing")),
                    };
                    let _ = follower.reply.send(shared);
                }
            }
            let _ = leader.reply.send(placement);
        }
    }
}
