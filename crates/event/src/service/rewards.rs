//! Rewards of an event: create, read, change (stock changes keep units already claimed) and
//! delete, each change audited.

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;

use super::EventService;
use super::events::new_reward;
use crate::access::{ADMINS, EDITORS, require};
use crate::error::EventError;
use crate::model::{Reward, RewardInput, RewardPatch};
use crate::validate;
use crate::views::{RewardView, json};

impl EventService {
    pub(crate) async fn create_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        input: RewardInput,
    ) -> Result<Reward, EventError> {
        self.observed("create_reward", async {
            let caller = require(caller, EDITORS)?;
            validate::reward_input(&input)?;
            let reward = new_reward(event_id, input, Utc::now().trunc_subsecs(3));
            let audit = AuditEntry::new(
                &caller.user_id,
                "REWARD_CREATED",
                "reward",
                &reward.id,
                None,
                Some(json(&RewardView::from(&reward))),
            );
            if !self.catalog.insert_reward(&reward, &audit).await? {
                return Err(EventError::NotFound("event"));
            }
            self.changed(event_id).await;
            Ok(reward)
        })
        .await
    }

    pub(crate) async fn list_rewards(
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

    pub(crate) async fn get_reward(
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

    pub(crate) async fn update_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        reward_id: &str,
        patch: RewardPatch,
    ) -> Result<Reward, EventError> {
        self.observed("update_reward", async {
            let caller = require(caller, EDITORS)?;
            validate::reward_patch(&patch)?;
            self.catalog
                .find_event(event_id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            let actor = caller.user_id.clone();
            let reward = self
                .catalog
                .update_reward(event_id, reward_id, |current: &Reward, claimed: i64| {
                    let mut updated = current.clone();
                    if let Some(name) = &patch.name {
                        updated.name = name.clone();
                    }
                    if let Some(reward_type) = patch.reward_type {
                        updated.reward_type = reward_type;
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
                            && stock < claimed
                        {
                            return Err(EventError::field(
                                "stock",
                                format!("must be at least {claimed} (units already claimed)"),
                            ));
                        }
                        updated.stock = stock;
                        updated.remaining = stock.map(|s| s - claimed);
                    }
                    updated.updated_at = Utc::now();
                    let audit = AuditEntry::new(
                        &actor,
                        "REWARD_UPDATED",
                        "reward",
                        reward_id,
                        Some(json(&RewardView::from(current))),
                        Some(json(&RewardView::from(&updated))),
                    );
                    Ok((updated, audit))
                })
                .await?;
            self.changed(event_id).await;
            Ok(reward)
        })
        .await
    }

    pub(crate) async fn delete_reward(
        &self,
        caller: Option<&Caller>,
        event_id: &str,
        reward_id: &str,
    ) -> Result<(), EventError> {
        self.observed("delete_reward", async {
            let caller = require(caller, ADMINS)?;
            self.catalog
                .find_event(event_id)
                .await?
                .ok_or(EventError::NotFound("event"))?;
            let current = self
                .catalog
                .find_reward(event_id, reward_id)
                .await?
                .ok_or(EventError::NotFound("reward"))?;
            let audit = AuditEntry::new(
                &caller.user_id,
                "REWARD_DELETED",
                "reward",
                reward_id,
                Some(json(&RewardView::from(&current))),
                None,
            );
            if !self
                .catalog
                .delete_reward(event_id, reward_id, &audit)
                .await?
            {
                return Err(EventError::NotFound("reward"));
            }
            self.changed(event_id).await;
            Ok(())
        })
        .await
    }
}
