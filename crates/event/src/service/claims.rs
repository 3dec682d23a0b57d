//! Claiming an event's rewards, and reading claims back: the checks and answers of the claim
//! rules (`crate::claims`), placed by the batcher.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;
use erp_platform::pagination::Page;

use super::EventService;
use crate::access::{CLAIMANTS, STAFF, owner_or_staff, person, require};
use crate::claims::{Attempt, ClaimOutcome, PLACEMENT_ROUNDS, existing_answer, refusal_reason};
use crate::error::EventError;
use crate::model::{
    Claim, ClaimFilter, ClaimPolicy, ClaimSource, ClaimStatus, EventSnapshot, EventStatus,
};
use crate::paging::paging;
use crate::store::{Placement, RecordedAnswer, RecordedRequest, SYSTEM_ACTOR};
use crate::validate::MAX_KEY_CHARS;
use crate::views::{DenialView, EvaluationView, json};

impl EventService {
    /// Claims `event_id`'s rewards for a caller that waits at most `timeout` (its gRPC deadline; the
    /// server's call timeout bounds it either way). The claim is placed only if its caller is
    /// still waiting, with time to spare, when its batch starts; see [`ClaimBatcher`].
    pub(crate) async fn claim_within(
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
        if let Ok(outcome) = &result
            && !outcome.replayed
            && outcome.claim.status == ClaimStatus::Granted
        {
            // Its delivery is committed: push it now rather than at the next poll.
            self.delivery_due();
        }
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
                evaluation: EvaluationView::new(event_id, user_id, &evaluation),
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
            source: ClaimSource::Claim,
            granted_by: None,
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
            "the claim could not be placed; try again",
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
                None => Err(EventError::Corrupt(format!(
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
                Some(json(&denial_view(event_id, user_id, reason, &error))),
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

    pub(super) fn count_granted(&self, claim: &Claim) {
        for reward in &claim.rewards {
            self.metrics
                .rewards_granted
                .with_label_values(&[reward.reward_type.as_str()])
                .inc();
        }
    }

    pub(crate) async fn get_claim(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Claim, EventError> {
        caller.ok_or(EventError::Unauthenticated)?;
        let claim = self
            .claims
            .find(id)
            .await?
            .ok_or(EventError::NotFound("claim"))?;
        owner_or_staff(caller, &claim.user_id)?;
        Ok(claim)
    }

    /// The caller's own claims, newest first.
    pub(crate) async fn list_my_claims(
        &self,
        caller: Option<&Caller>,
        mut filter: ClaimFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<Claim>, EventError> {
        let caller = person(caller)?;
        let (limit, cursor) = paging(limit, cursor)?;
        filter.user_id = Some(caller.user_id.clone());
        self.claims.list(&filter, limit, cursor.as_ref()).await
    }

    /// Everyone's claims, newest first (staff).
    pub(crate) async fn list_claims(
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
}

/// The `after` of a CLAIM_DENIED record for `error`.
fn denial_view<'a>(
    event_id: &'a str,
    user_id: &'a str,
    reason: &'a str,
    error: &'a EventError,
) -> DenialView<'a> {
    let mut view = DenialView {
        event_id,
        user_id,
        reason,
        evaluation: None,
        reward_id: None,
        claim_id: None,
    };
    match error {
        EventError::ConditionsNotMet { evaluation } => view.evaluation = Some(evaluation),
        EventError::OutOfStock { reward_id } => view.reward_id = Some(reward_id),
        EventError::AlreadyClaimed { claim_id } => view.claim_id = Some(claim_id),
        _ => {}
    }
    view
}
