//! Claims: who may claim, when a claim is refused, what it records, and the decisions operators
//! (and the expiry job) make about pending ones.
//!
//! A claim is checked here (caller, event status, an existing claim, the event's condition) and
//! then placed by [`ClaimBatcher`], which puts the claims of one event that arrive together into
//! one transaction (see `store::claims`). A popular limited reward is a single hot document:
//! written once per claim, concurrent transactions on it conflict and retry until throughput
//! collapses; written once per batch, the conflicts are gone and every invariant (one claim per
//! user, never more than the stock, all rewards or none, atomic with the audit record) still
//! rests on the one transaction and the unique index.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::{Caller, Role};
use erp_platform::pagination::Page;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::cache::{CatalogCache, Invalidation};
use crate::conditions::Evaluation;
use crate::error::EventError;
use crate::metrics::EventMetrics;
use crate::model::{Claim, ClaimFilter, ClaimPolicy, ClaimStatus, EventSnapshot, EventStatus};
use crate::service::{EDITORS, EventService, STAFF, paging, require};
use crate::store::ClaimStore;
use crate::store::claims::{
    Decided, Decision, Placement, RecordedAnswer, RecordedRequest, SYSTEM_ACTOR,
};
use crate::validate::MAX_KEY_CHARS;

/// Roles that may claim for themselves (an auditor only reads).
const CLAIMANTS: &[Role] = &[Role::User, Role::Operator, Role::Admin];
pub const MAX_REASON_CHARS: usize = 500;
/// How often a claim is offered again to the batcher when the placement it joined could not
/// say what became of it (another request of the same player decided first).
const PLACEMENT_ROUNDS: usize = 3;
/// Pending claims expired per query of the expiry job.
const EXPIRY_PAGE: i64 = 100;
/// The `Retry-After` of a claim shed because its event's queue is full or its deadline too near.
const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A waiting claim is placed only if its caller's deadline is at least this far off when its
/// batch starts, and at least twice the recent average batch time (see [`ClaimBatcher`]).
const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(10);

/// How claims are placed and expired; see [`crate::Config`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimSettings {
    /// Most claims of one event per transaction; 0: one claim per transaction, no batching.
    pub batch_max: usize,
    /// Most claims of one event waiting for their batch (the batch in flight not counted); one
    /// more is refused at once with UNAVAILABLE.
    pub queue_max: usize,
    /// The longest any caller waits (the server's gRPC timeout): a caller's deadline is its own
    /// (`grpc-timeout`) or this, whichever comes first.
    pub call_timeout: Duration,
    /// How long after its event ends a pending claim waits before it expires.
    pub pending_expiry: std::time::Duration,
    /// Identical refusals (user, event, reason) within this window are one `CLAIM_DENIED`
    /// record with a count.
    pub denial_audit_window: std::time::Duration,
}

/// A claim's answer: the claim, and whether it is a replay of an idempotency key's first answer.
#[derive(Debug, Clone)]
pub struct ClaimOutcome {
    pub claim: Claim,
    pub replayed: bool,
}

/// The REST shape of an evaluation (GetProgress, claims, CONDITIONS_NOT_MET refusals).
pub fn evaluation_json(event_id: &str, user_id: &str, evaluation: &Evaluation) -> Value {
    json!({
        "eventId": event_id,
        "userId": user_id,
        "passed": evaluation.passed,
        "details": evaluation.details.iter().map(|d| json!({
            "metric": d.metric,
            "op": d.op.as_str(),
            "value": d.value,
            "actual": d.actual,
            "passed": d.passed,
        })).collect::<Vec<_>>(),
    })
}

/// A claim as the audit trail shows it (the REST shape).
pub fn claim_view(claim: &Claim) -> Value {
    json!({
        "id": claim.id,
        "eventId": claim.event_id,
        "userId": claim.user_id,
        "status": claim.status.as_str(),
        "rewards": claim.rewards.iter().map(|r| json!({
            "id": r.id,
            "name": r.name,
            "type": r.reward_type.as_str(),
            "itemCode": r.item_code,
            "quantity": r.quantity,
        })).collect::<Vec<_>>(),
        "event": {
            "title": claim.event.title,
            "startsAt": claim.event.starts_at.to_rfc3339(),
            "endsAt": claim.event.ends_at.to_rfc3339(),
        },
        "evaluation": evaluation_json(&claim.event_id, &claim.user_id, &claim.evaluation),
        "requestedAt": claim.requested_at.to_rfc3339(),
        "decidedAt": claim.decided_at.map(|t| t.to_rfc3339()),
        "decidedBy": claim.decided_by,
        "reason": claim.reason,
    })
}

/// What a refusal is called in the audit trail and metrics; `None` for errors that are not a
/// refusal of the claim itself (a store outage, a bad request).
fn refusal_reason(error: &EventError) -> Option<&'static str> {
    Some(match error {
        EventError::EventNotActive => "EVENT_NOT_ACTIVE",
        EventError::ConditionsNotMet { .. } => "CONDITIONS_NOT_MET",
        EventError::OutOfStock { .. } => "OUT_OF_STOCK",
        EventError::AlreadyClaimed { .. } => "ALREADY_CLAIMED",
        EventError::NotFound(_) => "NOT_FOUND",
        _ => return None,
    })
}

/// The `after` of a CLAIM_DENIED record: who, which event, why.
fn denial_view(event_id: &str, user_id: &str, reason: &str, error: &EventError) -> Value {
    let mut view = json!({ "eventId": event_id, "userId": user_id, "reason": reason });
    match error {
        EventError::ConditionsNotMet { evaluation } => {
            view["evaluation"] = evaluation.clone();
        }
        EventError::OutOfStock { reward_id } => view["rewardId"] = json!(reward_id),
        EventError::AlreadyClaimed { claim_id } => view["claimId"] = json!(claim_id),
        _ => {}
    }
    view
}

/// How a claim attempt ended, short of a refusal.
enum Attempt {
    Created(Claim),
    /// The key's first answer was this claim.
    Replayed(Claim),
    /// Another request with the same key was answered first: its answer is replayed.
    Recorded(RecordedRequest),
}

impl EventService {
    /// Claims `event_id`'s rewards for the caller; see the module documentation.
    pub async fn claim(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<ClaimOutcome, EventError> {
        self.claim_within(caller, event_id, idempotency_key, None)
            .await
    }

    /// [`Self::claim`] for a caller that waits at most `timeout` (its gRPC deadline; the
    /// server's call timeout bounds it either way). The claim is placed only if its caller is
    /// still waiting, with time to spare, when its batch starts; see [`ClaimBatcher`].
    pub async fn claim_within(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        idempotency_key: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<ClaimOutcome, EventError> {
        let started = Instant::now();
        let deadline = self.batcher.deadline(started, timeout);
        let result = self
            .claim_inner(caller, event_id, idempotency_key, deadline)
            .await;
        self.metrics
            .claim_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn claim_inner(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        idempotency_key: Option<&str>,
        deadline: Instant,
    ) -> Result<ClaimOutcome, EventError> {
        let caller = require(caller, CLAIMANTS)?;
        let key = match idempotency_key {
            None | Some("") => None,
            Some(key) if key.chars().count() > MAX_KEY_CHARS => {
                return Err(EventError::field(
                    "idempotencyKey",
                    format!("must be at most {MAX_KEY_CHARS} characters"),
                ));
            }
            Some(key) => Some(key),
        };
        let user_id = caller.user_id.as_str();
        if let Some(key) = key
            && let Some(recorded) = self.claims.find_request(user_id, key).await?
        {
            return self.replay(recorded, event_id).await;
        }
        match self.attempt_claim(user_id, event_id, key, deadline).await {
            Ok(Attempt::Created(claim)) => {
                let result = match claim.status {
                    ClaimStatus::Pending => "pending",
                    _ => "granted",
                };
                self.metrics.claims.with_label_values(&[result, ""]).inc();
                self.metrics.count_event_claim(event_id);
                if claim.status == ClaimStatus::Granted {
                    self.count_granted(&claim);
                }
                Ok(ClaimOutcome {
                    claim,
                    replayed: false,
                })
            }
            Ok(Attempt::Replayed(claim)) => Ok(ClaimOutcome {
                claim,
                replayed: true,
            }),
            Ok(Attempt::Recorded(recorded)) => self.replay(recorded, event_id).await,
            Err(error) => self.refuse(user_id, event_id, key, error).await,
        }
    }

    /// Checks and places one claim. Refusals come back as errors for [`Self::refuse`].
    async fn attempt_claim(
        &self,
        user_id: &str,
        event_id: &str,
        key: Option<&str>,
        deadline: Instant,
    ) -> Result<Attempt, EventError> {
        let event = self
            .load_event(event_id)
            .await?
            .ok_or(EventError::NotFound("event"))?;
        // Not a check-then-insert: the unique index decides; this answers the common repeat
        // without a transaction.
        if let Some(existing) = self.claims.find_for(event_id, user_id).await? {
            return existing_answer(existing, key);
        }
        if event.status_at(Utc::now()) != EventStatus::Active {
            return Err(EventError::EventNotActive);
        }
        let evaluation = self.evaluate(&event, user_id).await?;
        if !evaluation.passed {
            return Err(EventError::ConditionsNotMet {
                evaluation: evaluation_json(event_id, user_id, &evaluation),
            });
        }
        let now = Utc::now().trunc_subsecs(3);
        let (status, decided_at, decided_by) = match event.claim_policy {
            ClaimPolicy::Auto => (
                ClaimStatus::Granted,
                Some(now),
                Some(SYSTEM_ACTOR.to_owned()),
            ),
            ClaimPolicy::Manual => (ClaimStatus::Pending, None, None),
        };
        let claim = Claim {
            id: uuid::Uuid::now_v7().to_string(),
            event_id: event_id.to_owned(),
            user_id: user_id.to_owned(),
            status,
            rewards: Vec::new(),
            event: EventSnapshot {
                title: event.title.clone(),
                starts_at: event.starts_at,
                ends_at: event.ends_at,
            },
            evaluation,
            requested_at: now,
            decided_at,
            decided_by,
            reason: None,
            idempotency_key: key.map(str::to_owned),
        };
        let trace_id = erp_platform::telemetry::current_trace_id();
        for _ in 0..PLACEMENT_ROUNDS {
            match self
                .batcher
                .submit(claim.clone(), trace_id.clone(), deadline)
                .await?
            {
                Placement::Placed(claim) => return Ok(Attempt::Created(claim)),
                Placement::Existing(existing) => return existing_answer(existing, key),
                Placement::OutOfStock { reward_id } => {
                    return Err(EventError::OutOfStock { reward_id });
                }
                Placement::EventGone => return Err(EventError::NotFound("event")),
                Placement::EventNotActive => return Err(EventError::EventNotActive),
                Placement::KeyTaken => {
                    if let Some(key) = key
                        && let Some(recorded) = self.claims.find_request(user_id, key).await?
                    {
                        return Ok(Attempt::Recorded(recorded));
                    }
                    if let Some(existing) = self.claims.find_for(event_id, user_id).await? {
                        return existing_answer(existing, key);
                    }
                    // Another request of this player, with another key, was refused first:
                    // this one is still undecided, so it goes again.
                }
            }
        }
        Err(EventError::Internal(
            "the claim could not be placed; try again".into(),
        ))
    }

    /// The answer recorded for an idempotency key, given again.
    async fn replay(
        &self,
        recorded: RecordedRequest,
        event_id: &str,
    ) -> Result<ClaimOutcome, EventError> {
        if recorded.event_id != event_id {
            return Err(EventError::field(
                "idempotencyKey",
                "was already used for a claim on another event",
            ));
        }
        match recorded.answer {
            RecordedAnswer::Claim(id) => match self.claims.find(&id).await? {
                Some(claim) => Ok(ClaimOutcome {
                    claim,
                    replayed: true,
                }),
                None => Err(EventError::Internal(format!(
                    "claim {id} of a recorded answer is missing"
                ))),
            },
            RecordedAnswer::Refusal(error) => Err(error),
        }
    }

    /// Audits, counts and (with a key) records a refusal, then answers it; errors that are not
    /// refusals pass through untouched.
    async fn refuse(
        &self,
        user_id: &str,
        event_id: &str,
        key: Option<&str>,
        error: EventError,
    ) -> Result<ClaimOutcome, EventError> {
        let Some(reason) = refusal_reason(&error) else {
            return Err(error);
        };
        match &error {
            EventError::AlreadyClaimed { .. } => {
                self.metrics
                    .claims
                    .with_label_values(&["duplicate", ""])
                    .inc();
            }
            EventError::NotFound(_) => {}
            _ => {
                self.metrics
                    .claims
                    .with_label_values(&["denied", reason])
                    .inc();
            }
        }
        if !matches!(error, EventError::NotFound(_)) {
            // Written on its own: a refusal changes nothing else, and creates no claim, so the
            // player may claim again once eligible.
            let entry = AuditEntry::new(
                user_id,
                "CLAIM_DENIED",
                "event",
                event_id,
                None,
                Some(denial_view(event_id, user_id, reason, &error)),
            );
            let fold_key = format!("CLAIM_DENIED\u{0}{event_id}\u{0}{user_id}\u{0}{reason}");
            self.catalog
                .audit()
                .record_folded(&entry, &fold_key, self.denial_audit_window)
                .await?;
        }
        if let Some(key) = key
            && let Some(first) = self
                .claims
                .record_refusal(user_id, key, event_id, &error)
                .await?
        {
            return self.replay(first, event_id).await;
        }
        Err(error)
    }

    fn count_granted(&self, claim: &Claim) {
        for reward in &claim.rewards {
            self.metrics
                .rewards_granted
                .with_label_values(&[reward.reward_type.as_str()])
                .inc();
        }
    }

    pub async fn get_claim(&self, caller: Option<&Caller>, id: &str) -> Result<Claim, EventError> {
        let caller = caller.ok_or(EventError::Unauthenticated)?;
        let claim = self
            .claims
            .find(id)
            .await?
            .ok_or(EventError::NotFound("claim"))?;
        if claim.user_id != caller.user_id && !caller.has_any(STAFF) {
            return Err(EventError::Forbidden);
        }
        Ok(claim)
    }

    /// The caller's own claims, newest first.
    pub async fn list_my_claims(
        &self,
        caller: Option<&Caller>,
        mut filter: ClaimFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<Claim>, EventError> {
        let caller = caller.ok_or(EventError::Unauthenticated)?;
        let (limit, cursor) = paging(limit, cursor)?;
        filter.user_id = Some(caller.user_id.clone());
        self.claims.list(&filter, limit, cursor.as_ref()).await
    }

    /// Everyone's claims, newest first (staff).
    pub async fn list_claims(
        &self,
        caller: Option<&Caller>,
        filter: ClaimFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<Claim>, EventError> {
        require(caller, STAFF)?;
        let (limit, cursor) = paging(limit, cursor)?;
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            return Err(EventError::field("to", "must be after from"));
        }
        self.claims.list(&filter, limit, cursor.as_ref()).await
    }

    pub async fn approve_claim(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Claim, EventError> {
        let caller = require(caller, EDITORS)?;
        let actor = caller.user_id.as_str();
        self.decide(id, Decision::Approve { actor }, actor, "CLAIM_APPROVED")
            .await
    }

    pub async fn reject_claim(
        &self,
        caller: Option<&Caller>,
        id: &str,
        reason: &str,
    ) -> Result<Claim, EventError> {
        let caller = require(caller, EDITORS)?;
        if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(EventError::field(
                "reason",
                format!("must be 1 to {MAX_REASON_CHARS} characters"),
            ));
        }
        let actor = caller.user_id.as_str();
        self.decide(
            id,
            Decision::Reject { actor, reason },
            actor,
            "CLAIM_REJECTED",
        )
        .await
    }

    /// Applies `decision` to a pending claim; INVALID_STATE when it is not pending.
    async fn decide(
        &self,
        id: &str,
        decision: Decision<'_>,
        actor: &str,
        action: &str,
    ) -> Result<Claim, EventError> {
        let audit = |before: &Claim, after: &Claim| {
            AuditEntry::new(
                actor,
                action,
                "claim",
                &after.id,
                Some(claim_view(before)),
                Some(claim_view(after)),
            )
        };
        let at = Utc::now().trunc_subsecs(3);
        let decided = self.claims.decide(id, decision, at, &audit).await?;
        match decided {
            Some(Decided {
                claim: after,
                stock_left,
                retries,
            }) => {
                let operation = match decision {
                    Decision::Approve { .. } => "approve",
                    Decision::Reject { .. } => "reject",
                    Decision::Expire { .. } => "expire",
                };
                self.metrics
                    .transaction_retries
                    .with_label_values(&[operation])
                    .inc_by(u64::from(retries));
                self.set_remaining(&after.event_id, &stock_left);
                if matches!(decision, Decision::Approve { .. }) {
                    self.count_granted(&after);
                }
                self.cache
                    .changed(Invalidation::Event {
                        event_id: after.event_id.clone(),
                    })
                    .await;
                Ok(after)
            }
            None => match self.claims.find(id).await? {
                // Decided by this very call: an earlier attempt committed but its answer was
                // lost, and the driver ran the transaction again.
                Some(claim)
                    if claim.decided_at == Some(at)
                        && claim.decided_by.as_deref() == Some(decision.decided_by())
                        && claim.status == decision.status() =>
                {
                    self.cache
                        .changed(Invalidation::Event {
                            event_id: claim.event_id.clone(),
                        })
                        .await;
                    Ok(claim)
                }
                Some(_) => Err(EventError::InvalidState),
                None => Err(EventError::NotFound("claim")),
            },
        }
    }

    fn set_remaining(&self, event_id: &str, stock_left: &[(String, i64)]) {
        for (reward_id, left) in stock_left {
            self.metrics
                .set_reward_remaining(event_id, reward_id, *left);
        }
    }

    /// Expires the pending claims whose event ended more than the configured expiry ago (by
    /// the event's current end: an extended event keeps its claims pending longer), releasing
    /// their stock. Safe to run concurrently: each expiry is a conditional update. Returns how
    /// many this run expired.
    pub async fn expire_pending(&self, now: DateTime<Utc>) -> Result<u32, EventError> {
        let events = self.claims.events_with_pending().await?;
        if events.is_empty() {
            return Ok(0);
        }
        let ends = self.catalog.ends_of(&events).await?;
        let expiry = chrono::Duration::from_std(self.pending_expiry)
            .unwrap_or_else(|_| chrono::Duration::days(365 * 1000));
        let reason = format!(
            "not decided within {} seconds after the event ended",
            self.pending_expiry.as_secs()
        );
        let mut expired = 0;
        for event_id in events {
            let Some(ends_at) = ends.get(&event_id) else {
                tracing::warn!(%event_id, "pending claims of an unknown event");
                continue;
            };
            if ends_at
                .checked_add_signed(expiry)
                .is_none_or(|deadline| deadline > now)
            {
                continue;
            }
            loop {
                let pending = self.claims.pending_of(&event_id, EXPIRY_PAGE).await?;
                for id in &pending {
                    match self
                        .decide(
                            id,
                            Decision::Expire { reason: &reason },
                            SYSTEM_ACTOR,
                            "CLAIM_EXPIRED",
                        )
                        .await
                    {
                        Ok(_) => expired += 1,
                        // Decided or expired by someone else meanwhile.
                        Err(EventError::InvalidState | EventError::NotFound(_)) => {}
                        Err(error) => return Err(error),
                    }
                }
                if i64::try_from(pending.len()).unwrap_or(i64::MAX) < EXPIRY_PAGE {
                    break;
                }
            }
        }
        Ok(expired)
    }
}

/// A repeat of the claim that created `existing` replays it; anything else is ALREADY_CLAIMED.
fn existing_answer(existing: Claim, key: Option<&str>) -> Result<Attempt, EventError> {
    match (&existing.idempotency_key, key) {
        (Some(first), Some(key)) if first == key => Ok(Attempt::Replayed(existing)),
        _ => Err(EventError::AlreadyClaimed {
            claim_id: existing.id,
        }),
    }
}

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
pub struct ClaimBatcher {
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
    pub fn new(
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
    pub fn deadline(&self, started: Instant, timeout: Option<Duration>) -> Instant {
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

    /// Places `claim` and answers what became of it.
    /// Places `claim` and answers what became of it; UNAVAILABLE (not placed) when its event's
    /// queue is full, or when `deadline` is too near once its batch starts.
    pub async fn submit(
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
            .map_err(|_| EventError::Internal("the claim batch was dropped".into()))?
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
                    Some(claim_view(claim)),
                )
            }
        };
        let started = Instant::now();
        let placed = self.store.place(event_id, &claims, &audit).await;
        self.record_batch_time(started.elapsed());
        let mut placed = match placed {
            Ok(placed) => placed,
            Err(error) => {
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
                .ok_or_else(|| EventError::Internal("a claim of the batch went missing".into()));
            if let Some(same_player) = followers.remove(&leader.claim.user_id) {
                for follower in same_player {
                    let shared = match &placement {
                        Ok(Placement::Placed(claim) | Placement::Existing(claim)) => {
                            Ok(Placement::Existing(claim.clone()))
                        }
                        Ok(other) => Ok(other.clone()),
                        Err(error) => Err(error.duplicate()),
                    };
                    let _ = follower.reply.send(shared);
                }
            }
            let _ = leader.reply.send(placement);
        }
    }
}
