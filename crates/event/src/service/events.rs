//! Events: create, read, list, change and delete, each change audited with the event as it was
//! and as it is.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;
use erp_platform::pagination::Page;

use super::EventService;
use crate::access::{ADMINS, EDITORS, require, sees_drafts};
use crate::error::EventError;
use crate::model::{Event, EventPatch, EventStatus, NewEvent, Publication, Reward, RewardInput};
use crate::paging::paging;
use crate::store::EventQuery;
use crate::validate;
use crate::views::{EventView, RewardView, json};

impl EventService {
    pub(crate) async fn create_event(
        &self,
        caller: Option<&Caller>,
        new: NewEvent,
    ) -> Result<(Event, Vec<Reward>), EventError> {
        self.observed("create_event", self.create_event_inner(caller, new))
            .await
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
            Some(json(&EventView::from(&event))),
        )];
        audit.extend(rewards.iter().map(|reward| {
            AuditEntry::new(
                &caller.user_id,
                "REWARD_CREATED",
                "reward",
                &reward.id,
                None,
                Some(json(&RewardView::from(reward))),
            )
        }));
        self.catalog.insert_event(&event, &rewards, &audit).await?;
        self.changed(&event.id).await;
        Ok((event, rewards))
    }

    pub(crate) async fn get_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Arc<Event>, EventError> {
        self.visible_event(caller, id).await
    }

    pub(crate) async fn list_events(
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

    pub(crate) async fn update_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
        patch: EventPatch,
    ) -> Result<Event, EventError> {
        self.observed("update_event", self.update_event_inner(caller, id, patch))
            .await
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
            let current = self.stored_event(id).await?;
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
                Some(json(&EventView::from(&current))),
                Some(json(&EventView::from(&updated))),
            );
            if self
                .catalog
                .replace_event(current.version, &updated, &audit)
                .await?
            {
                self.changed(id).await;
                return Ok(updated);
            }
            if patch.expected_version.is_some() {
                let now = self.stored_event(id).await?;
                return Err(EventError::VersionMismatch {
                    current: now.version,
                });
            }
        }
        Err(EventError::Internal(
            "the event kept changing; gave up merging",
        ))
    }

    pub(crate) async fn delete_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<(), EventError> {
        self.observed("delete_event", async {
            let caller = require(caller, ADMINS)?;
            let current = self.stored_event(id).await?;
            let audit = AuditEntry::new(
                &caller.user_id,
                "EVENT_DELETED",
                "event",
                id,
                Some(json(&EventView::from(&current))),
                None,
            );
            if !self.catalog.delete_event(id, &audit).await? {
                return Err(EventError::NotFound("event"));
            }
            self.changed(id).await;
            Ok(())
        })
        .await
    }
}

pub(super) fn new_reward(event_id: &str, input: RewardInput, now: DateTime<Utc>) -> Reward {
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
