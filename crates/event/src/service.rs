//! The event domain's catalog and activity rules: who may see and change events and rewards,
//! what a change does, and how progress is reported and evaluated. Transport calls in with plain
//! values; the stores persist.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use erp_platform::audit::{AuditEntry, AuditFilter};
use erp_platform::error::FieldError;
use erp_platform::identity::{Caller, Role};
use erp_platform::pagination::{Cursor, Page, page_limit};
use serde_json::{Value, json};

use crate::cache::{CatalogCache, Invalidation};
use crate::claims::{ClaimBatcher, ClaimSettings};
use crate::conditions::{self, Evaluation, LOGIN_METRIC, Span, json as condition_json};
use crate::error::EventError;
use crate::metrics::EventMetrics;
use crate::model::{
    Event, EventPatch, EventStatus, NewEvent, ProgressItem, ProgressMode, Publication, Reward,
    RewardInput, RewardPatch,
};
use crate::store::activity::Applied;
use crate::store::catalog::{EventQuery, RewardDoc};
use crate::store::{ActivityStore, CatalogStore, ClaimStore, TallyStore};
use crate::validate;

pub(crate) const STAFF: &[Role] = &[Role::Operator, Role::Auditor, Role::Admin];
pub(crate) const EDITORS: &[Role] = &[Role::Operator, Role::Admin];
const ADMINS: &[Role] = &[Role::Admin];

pub struct EventService {
    pub(crate) catalog: CatalogStore,
    activity: ActivityStore,
    pub(crate) claims: ClaimStore,
    pub(crate) tallies: TallyStore,
    pub(crate) batcher: Arc<ClaimBatcher>,
    pub(crate) cache: CatalogCache,
    pub(crate) metrics: EventMetrics,
    /// How long after its event ends a pending claim waits before it expires.
    pub(crate) pending_expiry: Duration,
    pub(crate) denial_audit_window: Duration,
}

pub(crate) fn require(caller: Option<&Caller>, roles: &[Role]) -> Result<Caller, EventError> {
    let caller = caller.ok_or(EventError::Unauthenticated)?;
    if caller.has_any(roles) {
        Ok(caller.clone())
    } else {
        Err(EventError::Forbidden)
    }
}

/// Whether `caller` may see drafts (staff only; never an anonymous call).
fn sees_drafts(caller: Option<&Caller>) -> bool {
    caller.is_some_and(|c| c.has_any(STAFF))
}

pub fn event_view(event: &Event) -> Value {
    json!({
        "title": event.title,
        "description": event.description,
        "startsAt": event.starts_at.to_rfc3339(),
        "endsAt": event.ends_at.to_rfc3339(),
        "state": event.publication.as_str().to_uppercase(),
        "claimPolicy": event.claim_policy.as_str(),
        "condition": event.condition.as_ref().map(condition_json::to_json),
        "version": event.version,
    })
}

pub fn reward_view(reward: &Reward) -> Value {
    json!({
        "eventId": reward.event_id,
        "name": reward.name,
        "type": reward.reward_type.as_str(),
        "itemCode": reward.item_code,
        "quantity": reward.quantity,
        "stock": reward.stock,
        "remaining": reward.remaining,
    })
}

fn new_reward(event_id: &str, input: RewardInput, now: DateTime<Utc>) -> Reward {
    Reward {
        id: uuid::Uuid::now_v7().to_string(),
        event_id: event_id.to_owned(),
        name: input.name,
        reward_type: input.reward_type,
        item_code: input.item_code,
        quantity: input.quantity,
        stock: input.stock,
        remaining: input.stock,
        created_at: now,
        updated_at: now,
    }
}

pub fn paging(limit: u32, cursor: &str) -> Result<(u32, Option<Cursor>), EventError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let limit = page_limit(limit)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let cursor = Cursor::decode(cursor)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if errors.is_empty() {
        Ok((limit, cursor))
    } else {
        Err(EventError::Validation(errors))
    }
}

impl EventService {
    pub fn new(
        catalog: CatalogStore,
        activity: ActivityStore,
        claims: ClaimStore,
        tallies: TallyStore,
        cache: CatalogCache,
        metrics: EventMetrics,
        settings: ClaimSettings,
    ) -> Self {
        let batcher = Arc::new(ClaimBatcher::new(
            claims.clone(),
            cache.clone(),
            metrics.clone(),
            &settings,
        ));
        Self {
            catalog,
            activity,
            claims,
            tallies,
            batcher,
            cache,
            metrics,
            pending_expiry: settings.pending_expiry,
            denial_audit_window: settings.denial_audit_window,
        }
    }

    pub fn cache(&self) -> &CatalogCache {
        &self.cache
    }

    fn observe<T>(&self, operation: &str, result: &Result<T, EventError>) {
        let label = match result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        self.metrics
            .catalog_operations
            .with_label_values(&[operation, label])
            .inc();
    }

    pub(crate) async fn load_event(&self, id: &str) -> Result<Option<Arc<Event>>, EventError> {
        self.cache.event(id, || self.catalog.find_event(id)).await
    }

    /// The event if `caller` may see it.
    async fn visible_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Arc<Event>, EventError> {
        match self.load_event(id).await? {
            Some(event) if event.publication != Publication::Draft || sees_drafts(caller) => {
                Ok(event)
            }
            _ => Err(EventError::NotFound("event")),
        }
    }

    pub async fn create_event(
        &self,
        caller: Option<&Caller>,
        new: NewEvent,
    ) -> Result<(Event, Vec<Reward>), EventError> {
        let result = self.create_event_inner(caller, new).await;
        self.observe("create_event", &result);
        result
    }

    async fn create_event_inner(
        &self,
        caller: Option<&Caller>,
        new: NewEvent,
    ) -> Result<(Event, Vec<Reward>), EventError> {
        let caller = require(caller, EDITORS)?;
        validate::new_event(&new)?;
        let (Some(starts_at), Some(ends_at)) = (new.starts_at, new.ends_at) else {
            return Err(EventError::field("startsAt", "is required"));
        };
        // Stored with millisecond precision; answer exactly what later reads will return.
        let (starts_at, ends_at) = (starts_at.trunc_subsecs(3), ends_at.trunc_subsecs(3));
        let now = Utc::now().trunc_subsecs(3);
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            title: new.title,
            description: new.description,
            starts_at,
            ends_at,
            publication: if new.draft {
                Publication::Draft
            } else {
                Publication::Published
            },
            claim_policy: new.claim_policy,
            condition: new.condition,
            version: 1,
            created_by: caller.user_id.clone(),
            created_at: now,
            updated_at: now,
        };
        let rewards: Vec<Reward> = new
            .rewards
            .into_iter()
            .map(|input| new_reward(&event.id, input, now))
            .collect();
        let mut audit = vec![AuditEntry::new(
            &caller.user_id,
            "EVENT_CREATED",
            "event",
            &event.id,
            None,
            Some(event_view(&event)),
        )];
        audit.extend(rewards.iter().map(|reward| {
            AuditEntry::new(
                &caller.user_id,
                "REWARD_CREATED",
                "reward",
                &reward.id,
                None,
                Some(reward_view(reward)),
            )
        }));
        self.catalog.insert_event(&event, &rewards, &audit).await?;
        self.cache
            .changed(Invalidation::Event {
                event_id: event.id.clone(),
            })
            .await;
        Ok((event, rewards))
    }

    pub async fn get_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Arc<Event>, EventError> {
        self.visible_event(caller, id).await
    }

    pub async fn list_events(
        &self,
        caller: Option<&Caller>,
        status: Option<EventStatus>,
        limit: u32,
        cursor: &str,
    ) -> Result<Arc<Page<Event>>, EventError> {
        let (limit, cursor) = paging(limit, cursor)?;
        let include_drafts = sees_drafts(caller);
        if status == Some(EventStatus::Draft) && !include_drafts {
            return Ok(Arc::new(Page {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        let query = EventQuery {
            status,
            include_drafts,
            limit,
            cursor,
        };
        let catalog = self.catalog.clone();
        let key = query.clone();
        self.cache
            .list(&query, || async move {
                catalog.list_events(&key, Utc::now()).await
            })
            .await
    }

    pub async fn update_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
        patch: EventPatch,
    ) -> Result<Event, EventError> {
        let result = self.update_event_inner(caller, id, patch).await;
        self.observe("update_event", &result);
        result
    }

    async fn update_event_inner(
        &self,
        caller: Option<&Caller>,
        id: &str,
        patch: EventPatch,
    ) -> Result<Event, EventError> {
        let caller = require(caller, EDITORS)?;
        // Read, merge, then write guarded by the version read: a concurrent change makes the
        // write miss, and without If-Match we merge again on the newer version.
        for _ in 0..5 {
            let current = self
                .catalog
                .find_event(id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            if let Some(expected) = patch.expected_version
                && expected != current.version
            {
                return Err(EventError::VersionMismatch {
                    current: current.version,
                });
            }
            validate::event_patch(&patch, current.starts_at, current.ends_at)?;
            let publication = match (current.publication, patch.publication) {
                (from, None) => from,
                (Publication::Canceled, Some(Publication::Published)) => {
                    return Err(EventError::field(
                        "state",
                        "a canceled event cannot be published again",
                    ));
                }
                (_, Some(to)) => to,
            };
            let updated = Event {
                title: patch.title.clone().unwrap_or_else(|| current.title.clone()),
                description: patch
                    .description
                    .clone()
                    .unwrap_or_else(|| current.description.clone()),
                starts_at: patch
                    .starts_at
                    .map_or(current.starts_at, |t| t.trunc_subsecs(3)),
                ends_at: patch
                    .ends_at
                    .map_or(current.ends_at, |t| t.trunc_subsecs(3)),
                claim_policy: patch.claim_policy.unwrap_or(current.claim_policy),
                condition: patch
                    .condition
                    .clone()
                    .unwrap_or_else(|| current.condition.clone()),
                publication,
                version: current.version + 1,
                updated_at: Utc::now().trunc_subsecs(3),
                ..current.clone()
            };
            let audit = AuditEntry::new(
                &caller.user_id,
                "EVENT_UPDATED",
                "event",
                id,
                Some(event_view(&current)),
                Some(event_view(&updated)),
            );
            if self
                .catalog
                .replace_event(current.version, &updated, &audit)
                .await?
            {
                self.cache
                    .changed(Invalidation::Event {
                        event_id: id.to_owned(),
                    })
                    .await;
                return Ok(updated);
            }
            if patch.expected_version.is_some() {
                let now = self
                    .catalog
                    .find_event(id)
                    .await?
                    .ok_or(EventError::NotFound("event"))?;
                return Err(EventError::VersionMismatch {
                    current: now.version,
                });
            }
        }
        Err(EventError::Internal(
            "the event kept changing; gave up merging".into(),
        ))
    }

    pub async fn delete_event(&self, caller: Option<&Caller>, id: &str) -> Result<(), EventError> {
        let result = async {
            let caller = require(caller, ADMINS)?;
            let current = self
                .catalog
                .find_event(id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            let audit = AuditEntry::new(
                &caller.user_id,
                "EVENT_DELETED",
                "event",
                id,
                Some(event_view(&current)),
                None,
            );
            if !self.catalog.delete_event(id, &audit).await? {
                return Err(EventError::NotFound("event"));
            }
            self.cache
                .changed(Invalidation::Event {
                    event_id: id.to_owned(),
                })
                .await;
            Ok(())
        }
        .await;
        self.observe("delete_event", &result);
        result
    }

    pub async fn create_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        input: RewardInput,
    ) -> Result<Reward, EventError> {
        let result = async {
            let caller = require(caller, EDITORS)?;
            validate::reward_input(&input)?;
            let reward = new_reward(event_id, input, Utc::now().trunc_subsecs(3));
            let audit = AuditEntry::new(
                &caller.user_id,
                "REWARD_CREATED",
                "reward",
                &reward.id,
                None,
                Some(reward_view(&reward)),
            );
            if !self.catalog.insert_reward(&reward, &audit).await? {
                return Err(EventError::NotFound("event"));
            }
            self.cache
                .changed(Invalidation::Event {
                    event_id: event_id.to_owned(),
                })
                .await;
            Ok(reward)
        }
        .await;
        self.observe("create_reward", &result);
        result
    }

    pub async fn list_rewards(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
    ) -> Result<Arc<Vec<Reward>>, EventError> {
        self.visible_event(caller, event_id).await?;
        let catalog = self.catalog.clone();
        let owned = event_id.to_owned();
        self.cache
            .rewards(
                event_id,
                || async move { catalog.list_rewards(&owned).await },
            )
            .await
    }

    pub async fn get_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        reward_id: &str,
    ) -> Result<Reward, EventError> {
        self.list_rewards(caller, event_id)
            .await?
            .iter()
            .find(|r| r.id == reward_id)
            .cloned()
            .ok_or(EventError::NotFound("reward"))
    }

    pub async fn update_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        reward_id: &str,
        patch: RewardPatch,
    ) -> Result<Reward, EventError> {
        let result = async {
            let caller = require(caller, EDITORS)?;
            validate::reward_patch(&patch)?;
            self.catalog
                .find_event(event_id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            let actor = caller.user_id.clone();
            let reward = self
                .catalog
                .update_reward(event_id, reward_id, |current: &RewardDoc| {
                    let before = current.clone().into_reward();
                    let mut updated = current.clone();
                    if let Some(name) = &patch.name {
                        updated.name = name.clone();
                    }
                    if let Some(reward_type) = patch.reward_type {
                        updated.reward_type = reward_type.as_str().to_owned();
                    }
                    if let Some(item_code) = &patch.item_code {
                        updated.item_code = item_code.clone();
                    }
                    if let Some(quantity) = patch.quantity {
                        updated.quantity = quantity;
                    }
                    if let Some(stock) = patch.stock {
                        // Units already taken stay taken: remaining = stock - claimed.
                        if let Some(stock) = stock
                            && stock < current.claimed
                        {
                            return Err(EventError::field(
                                "stock",
                                format!(
                                    "must be at least {} (units already claimed)",
                                    current.claimed
                                ),
                            ));
                        }
                        updated.stock = stock;
                        updated.remaining = stock.map(|s| s - current.claimed);
                    }
                    updated.updated_at = erp_platform::mongo::to_bson_time(Utc::now());
                    let after = updated.clone().into_reward();
                    let audit = AuditEntry::new(
                        &actor,
                        "REWARD_UPDATED",
                        "reward",
                        reward_id,
                        Some(reward_view(&before)),
                        Some(reward_view(&after)),
                    );
                    Ok((updated, audit))
                })
                .await?;
            self.cache
                .changed(Invalidation::Event {
                    event_id: event_id.to_owned(),
                })
                .await;
            Ok(reward)
        }
        .await;
        self.observe("update_reward", &result);
        result
    }

    pub async fn delete_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        reward_id: &str,
    ) -> Result<(), EventError> {
        let result = async {
            let caller = require(caller, ADMINS)?;
            self.catalog
                .find_event(event_id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            let current = self
                .catalog
                .find_reward_doc(event_id, reward_id, None)
                .await?
                .ok_or(EventError::NotFound("reward"))?
                .into_reward();
            let audit = AuditEntry::new(
                &caller.user_id,
                "REWARD_DELETED",
                "reward",
                reward_id,
                Some(reward_view(&current)),
                None,
            );
            if !self
                .catalog
                .delete_reward(event_id, reward_id, &audit)
                .await?
            {
                return Err(EventError::NotFound("reward"));
            }
            self.cache
                .changed(Invalidation::Event {
                    event_id: event_id.to_owned(),
                })
                .await;
            Ok(())
        }
        .await;
        self.observe("delete_reward", &result);
        result
    }

    /// A login reported by auth's outbox; the outbox id makes it idempotent.
    pub async fn record_login(
        &self,
        idempotency_key: &str,
        user_id: &str,
        occurred_at: DateTime<Utc>,
    ) -> Result<bool, EventError> {
        if idempotency_key.is_empty() {
            return Err(EventError::field("idempotencyKey", "must not be empty"));
        }
        if user_id.is_empty() {
            return Err(EventError::field("userId", "must not be empty"));
        }
        let applied = self
            .activity
            .apply(&[ProgressItem {
                user_id: user_id.to_owned(),
                metric: LOGIN_METRIC.to_owned(),
                value: 1,
                mode: ProgressMode::Increment,
                occurred_at,
                key: Some(format!("login:{idempotency_key}")),
            }])
            .await?;
        Ok(applied.duplicates > 0)
    }

    /// Progress from game servers (no caller: trusted in-cluster) or operators.
    pub async fn report_progress(
        &self,
        caller: Option<&Caller>,
        mut items: Vec<ProgressItem>,
    ) -> Result<Applied, EventError> {
        require(caller, EDITORS)?;
        validate::progress(&items, Utc::now())?;
        for item in &mut items {
            // Keys of reports live apart from login keys.
            item.key = item.key.take().map(|k| format!("progress:{k}"));
        }
        let applied = self.activity.apply(&items).await?;
        self.metrics
            .progress_items
            .with_label_values(&["accepted"])
            .inc_by(u64::from(applied.accepted));
        self.metrics
            .progress_items
            .with_label_values(&["duplicate"])
            .inc_by(u64::from(applied.duplicates));
        Ok(applied)
    }

    /// Evaluates `event`'s condition for `user_id`, loading only the buckets it needs.
    pub async fn evaluate(&self, event: &Event, user_id: &str) -> Result<Evaluation, EventError> {
        let span = Span {
            start: event.starts_at,
            end: event.ends_at,
        };
        let Some(condition) = &event.condition else {
            return Ok(conditions::evaluate(None, &[], span));
        };
        let (metrics, from) = conditions::needed(condition, span);
        let buckets = self.activity.buckets(user_id, &metrics, from).await?;
        Ok(conditions::evaluate(Some(condition), &buckets, span))
    }

    pub async fn progress(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        user_id: &str,
    ) -> Result<Evaluation, EventError> {
        let caller_ref = caller.ok_or(EventError::Unauthenticated)?;
        let user_id = if user_id.is_empty() {
            caller_ref.user_id.as_str()
        } else {
            user_id
        };
        if user_id != caller_ref.user_id && !caller_ref.has_any(STAFF) {
            return Err(EventError::Forbidden);
        }
        let event = self.visible_event(caller, event_id).await?;
        self.evaluate(&event, user_id).await
    }

    pub async fn list_audit(
        &self,
        caller: Option<&Caller>,
        filter: AuditFilter,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<AuditEntry>, EventError> {
        require(caller, &[Role::Auditor, Role::Admin])?;
        let (limit, cursor) = paging(limit, cursor)?;
        Ok(self
            .catalog
            .audit()
            .list(&filter, limit, cursor.as_ref())
            .await?)
    }
}
