//! The enums both ways. Decoding names the field a bad value came in.

use erp_proto::event::v1 as pb;

use crate::conditions::Op;
use crate::error::EventError;
use crate::model::{ClaimPolicy, ClaimStatus, EventStatus, RewardType};

impl From<EventStatus> for pb::EventStatus {
    fn from(status: EventStatus) -> Self {
        match status {
            EventStatus::Draft => pb::EventStatus::Draft,
            EventStatus::Scheduled => pb::EventStatus::Scheduled,
            EventStatus::Active => pb::EventStatus::Active,
            EventStatus::Ended => pb::EventStatus::Ended,
            EventStatus::Canceled => pb::EventStatus::Canceled,
        }
    }
}

pub(crate) fn event_status_from_pb(value: i32) -> Result<EventStatus, EventError> {
    match pb::EventStatus::try_from(value) {
        Ok(pb::EventStatus::Draft) => Ok(EventStatus::Draft),
        Ok(pb::EventStatus::Scheduled) => Ok(EventStatus::Scheduled),
        Ok(pb::EventStatus::Active) => Ok(EventStatus::Active),
        Ok(pb::EventStatus::Ended) => Ok(EventStatus::Ended),
        Ok(pb::EventStatus::Canceled) => Ok(EventStatus::Canceled),
        _ => Err(EventError::field(
            "status",
            "must be DRAFT, SCHEDULED, ACTIVE, ENDED or CANCELED",
        )),
    }
}

impl From<ClaimPolicy> for pb::ClaimPolicy {
    fn from(policy: ClaimPolicy) -> Self {
        match policy {
            ClaimPolicy::Auto => pb::ClaimPolicy::Auto,
            ClaimPolicy::Manual => pb::ClaimPolicy::Manual,
        }
    }
}

pub(crate) fn claim_policy_from_pb(value: i32) -> Result<ClaimPolicy, EventError> {
    match pb::ClaimPolicy::try_from(value) {
        Ok(pb::ClaimPolicy::Auto) => Ok(ClaimPolicy::Auto),
        Ok(pb::ClaimPolicy::Manual) => Ok(ClaimPolicy::Manual),
        _ => Err(EventError::field("claimPolicy", "must be AUTO or MANUAL")),
    }
}

impl From<RewardType> for pb::RewardType {
    fn from(reward_type: RewardType) -> Self {
        match reward_type {
            RewardType::Currency => pb::RewardType::Currency,
            RewardType::Item => pb::RewardType::Item,
            RewardType::Coupon => pb::RewardType::Coupon,
            RewardType::Point => pb::RewardType::Point,
            RewardType::Buff => pb::RewardType::Buff,
        }
    }
}

pub(crate) fn reward_type_from_pb(value: i32, field: &str) -> Result<RewardType, EventError> {
    match pb::RewardType::try_from(value) {
        Ok(pb::RewardType::Currency) => Ok(RewardType::Currency),
        Ok(pb::RewardType::Item) => Ok(RewardType::Item),
        Ok(pb::RewardType::Coupon) => Ok(RewardType::Coupon),
        Ok(pb::RewardType::Point) => Ok(RewardType::Point),
        Ok(pb::RewardType::Buff) => Ok(RewardType::Buff),
        _ => Err(EventError::field(
            field,
            "must be CURRENCY, ITEM, COUPON, POINT or BUFF",
        )),
    }
}

impl From<Op> for pb::ComparisonOp {
    fn from(op: Op) -> Self {
        match op {
            Op::Gte => pb::ComparisonOp::Gte,
            Op::Gt => pb::ComparisonOp::Gt,
            Op::Eq => pb::ComparisonOp::Eq,
            Op::Ne => pb::ComparisonOp::Ne,
            Op::Lte => pb::ComparisonOp::Lte,
            Op::Lt => pb::ComparisonOp::Lt,
        }
    }
}

impl From<ClaimStatus> for pb::ClaimStatus {
    fn from(status: ClaimStatus) -> Self {
        match status {
            ClaimStatus::Pending => pb::ClaimStatus::Pending,
            ClaimStatus::Granted => pb::ClaimStatus::Granted,
            ClaimStatus::Rejected => pb::ClaimStatus::Rejected,
            ClaimStatus::Expired => pb::ClaimStatus::Expired,
        }
    }
}

pub(crate) fn claim_status_from_pb(value: i32) -> Result<ClaimStatus, EventError> {
    match pb::ClaimStatus::try_from(value) {
        Ok(pb::ClaimStatus::Pending) => Ok(ClaimStatus::Pending),
        Ok(pb::ClaimStatus::Granted) => Ok(ClaimStatus::Granted),
        Ok(pb::ClaimStatus::Rejected) => Ok(ClaimStatus::Rejected),
        Ok(pb::ClaimStatus::Expired) => Ok(ClaimStatus::Expired),
        _ => Err(EventError::field(
            "status",
            "must be PENDING, GRANTED, REJECTED or EXPIRED",
        )),
    }
}
