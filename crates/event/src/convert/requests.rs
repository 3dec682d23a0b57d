//! Requests into domain values.

use chrono::{DateTime, Utc};
use erp_proto::event::v1 as pb;
use erp_proto::time::from_timestamp;

use super::condition::condition_from_pb;
use super::enums::{claim_policy_from_pb, claim_status_from_pb, reward_type_from_pb};
use crate::error::EventError;
use crate::model::{
    ClaimFilter, ClaimPolicy, EventPatch, NewEvent, ProgressItem, ProgressMode, Publication,
    RewardInput, RewardPatch,
};

/// A reward of a request; `prefix` names it in errors (`rewards[2].`).
pub(crate) fn reward_input_from_pb(
    input: &pb::RewardInput,
    prefix: &str,
) -> Result<RewardInput, EventError> {
    Ok(RewardInput {
        name: input.name.clone(),
        reward_type: reward_type_from_pb(input.r#type, &format!("{prefix}type"))?,
        item_code: input.item_code.clone(),
        quantity: input.quantity,
        stock: input.stock,
    })
}

impl TryFrom<pb::CreateEventRequest> for NewEvent {
    type Error = EventError;

    fn try_from(body: pb::CreateEventRequest) -> Result<Self, EventError> {
        let rewards = body
            .rewards
            .iter()
            .enumerate()
            .map(|(i, r)| reward_input_from_pb(r, &format!("rewards[{i}].")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NewEvent {
            title: body.title,
            description: body.description,
            starts_at: from_timestamp(body.starts_at),
            ends_at: from_timestamp(body.ends_at),
            claim_policy: match body.claim_policy {
                None => ClaimPolicy::Auto,
                Some(value) => claim_policy_from_pb(value)?,
            },
            condition: body
                .condition
                .as_ref()
                .map(|c| condition_from_pb(c, "condition", 1))
                .transpose()?,
            draft: body.draft,
            rewards,
        })
    }
}

/// An empty optional text clears the field.
fn clearable(value: Option<String>) -> Option<Option<String>> {
    value.map(|v| if v.is_empty() { None } else { Some(v) })
}

impl TryFrom<pb::UpdateEventRequest> for EventPatch {
    type Error = EventError;

    fn try_from(body: pb::UpdateEventRequest) -> Result<Self, EventError> {
        Ok(EventPatch {
            title: body.title,
            description: clearable(body.description),
            starts_at: from_timestamp(body.starts_at),
            ends_at: from_timestamp(body.ends_at),
            claim_policy: body.claim_policy.map(claim_policy_from_pb).transpose()?,
            condition: match &body.condition {
                None => None,
                Some(update) => Some(
                    update
                        .condition
                        .as_ref()
                        .map(|c| condition_from_pb(c, "condition", 1))
                        .transpose()?,
                ),
            },
            publication: match body.state {
                None => None,
                Some(value) => Some(match pb::PublicationState::try_from(value) {
                    Ok(pb::PublicationState::Published) => Publication::Published,
                    Ok(pb::PublicationState::Canceled) => Publication::Canceled,
                    _ => {
                        return Err(EventError::field("state", "must be PUBLISHED or CANCELED"));
                    }
                }),
            },
            expected_version: body.expected_version,
        })
    }
}

impl TryFrom<pb::UpdateRewardRequest> for RewardPatch {
    type Error = EventError;

    fn try_from(body: pb::UpdateRewardRequest) -> Result<Self, EventError> {
        Ok(RewardPatch {
            name: body.name,
            reward_type: body
                .r#type
                .map(|t| reward_type_from_pb(t, "type"))
                .transpose()?,
            item_code: clearable(body.item_code),
            quantity: body.quantity,
            stock: match body.stock.and_then(|s| s.value) {
                None => None,
                Some(pb::stock_update::Value::Unlimited(true)) => Some(None),
                Some(pb::stock_update::Value::Unlimited(false)) => None,
                Some(pb::stock_update::Value::Limited(stock)) => Some(Some(stock)),
            },
        })
    }
}

/// Progress items; one without a time happened at `now`.
pub(crate) fn progress_items(
    items: Vec<pb::ProgressItem>,
    now: DateTime<Utc>,
) -> Result<Vec<ProgressItem>, EventError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mode = match pb::ProgressMode::try_from(item.mode) {
                Ok(pb::ProgressMode::Increment) => ProgressMode::Increment,
                Ok(pb::ProgressMode::Max) => ProgressMode::Max,
                _ => {
                    return Err(EventError::field(
                        format!("items[{i}].mode"),
                        "must be INCREMENT or MAX",
                    ));
                }
            };
            Ok(ProgressItem {
                user_id: item.user_id,
                metric: item.metric,
                value: item.value,
                mode,
                occurred_at: from_timestamp(item.occurred_at).unwrap_or(now),
                key: item.key,
            })
        })
        .collect()
}

/// An optional string filter: absent and empty both mean "any".
fn filter_value(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl TryFrom<&pb::ListMyClaimsRequest> for ClaimFilter {
    type Error = EventError;

    fn try_from(body: &pb::ListMyClaimsRequest) -> Result<Self, EventError> {
        Ok(ClaimFilter {
            status: body.status.map(claim_status_from_pb).transpose()?,
            event_id: filter_value(body.event_id.clone()),
            ..ClaimFilter::default()
        })
    }
}

impl TryFrom<&pb::ListClaimsRequest> for ClaimFilter {
    type Error = EventError;

    fn try_from(body: &pb::ListClaimsRequest) -> Result<Self, EventError> {
        Ok(ClaimFilter {
            user_id: filter_value(body.user_id.clone()),
            event_id: filter_value(body.event_id.clone()),
            status: body.status.map(claim_status_from_pb).transpose()?,
            from: from_timestamp(body.from),
            to: from_timestamp(body.to),
        })
    }
}
