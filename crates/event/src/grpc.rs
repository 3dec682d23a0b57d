//! The gRPC face of the event service: decodes requests (unknown enum values and malformed
//! conditions become validation errors naming the field), reads the caller from metadata, calls
//! the domain and encodes answers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use erp_platform::audit::{AuditEntry, AuditFilter};
use erp_platform::identity::{Caller, Service, VerifiedCall};
use erp_proto::event::v1 as pb;
use erp_proto::event::v1::event_service_server::EventService as EventRpc;
pub use erp_proto::time::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};

use crate::conditions::{self, Condition, Leaf, Op, Window};
use crate::error::EventError;
use crate::model::{
    Claim, ClaimFilter, ClaimPolicy, ClaimStatus, Dashboard, Event, EventPatch, EventStatus,
    NewEvent, ProgressItem, ProgressMode, Publication, Reward, RewardInput, RewardPatch,
    RewardType,
};
use crate::service::EventService;

pub struct EventGrpc {
    service: Arc<EventService>,
}

impl EventGrpc {
    pub fn new(service: Arc<EventService>) -> Self {
        Self { service }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

/// The person the verified caller assertion names; `None` for an anonymous call, which sees and
/// may do only what any anonymous client could.
fn caller<T>(request: &Request<T>) -> Result<Option<Caller>, EventError> {
    VerifiedCall::of(request)
        .map(|call| call.caller.clone())
        .map_err(|_| EventError::Unauthenticated)
}

fn status_to_pb(status: EventStatus) -> pb::EventStatus {
    match status {
        EventStatus::Draft => pb::EventStatus::Draft,
        EventStatus::Scheduled => pb::EventStatus::Scheduled,
        EventStatus::Active => pb::EventStatus::Active,
        EventStatus::Ended => pb::EventStatus::Ended,
        EventStatus::Canceled => pb::EventStatus::Canceled,
    }
}

fn status_from_pb(value: i32) -> Result<EventStatus, EventError> {
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

/// The caller's deadline as its `grpc-timeout` header states it (at most 8 digits and a unit:
/// H, M, S, m, u, n); `None` without one, or with one that does not parse.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    if !value.is_char_boundary(split) || split == 0 || split > 8 {
        return None;
    }
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn policy_to_pb(policy: ClaimPolicy) -> pb::ClaimPolicy {
    match policy {
        ClaimPolicy::Auto => pb::ClaimPolicy::Auto,
        ClaimPolicy::Manual => pb::ClaimPolicy::Manual,
    }
}

fn policy_from_pb(value: i32) -> Result<ClaimPolicy, EventError> {
    match pb::ClaimPolicy::try_from(value) {
        Ok(pb::ClaimPolicy::Auto) => Ok(ClaimPolicy::Auto),
        Ok(pb::ClaimPolicy::Manual) => Ok(ClaimPolicy::Manual),
        _ => Err(EventError::field("claimPolicy", "must be AUTO or MANUAL")),
    }
}

pub fn reward_type_to_pb(reward_type: RewardType) -> pb::RewardType {
    match reward_type {
        RewardType::Currency => pb::RewardType::Currency,
        RewardType::Item => pb::RewardType::Item,
        RewardType::Coupon => pb::RewardType::Coupon,
        RewardType::Point => pb::RewardType::Point,
        RewardType::Buff => pb::RewardType::Buff,
    }
}

fn reward_type_from_pb(value: i32, field: &str) -> Result<RewardType, EventError> {
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

pub fn op_to_pb(op: Op) -> pb::ComparisonOp {
    match op {
        Op::Gte => pb::ComparisonOp::Gte,
        Op::Gt => pb::ComparisonOp::Gt,
        Op::Eq => pb::ComparisonOp::Eq,
        Op::Ne => pb::ComparisonOp::Ne,
        Op::Lte => pb::ComparisonOp::Lte,
        Op::Lt => pb::ComparisonOp::Lt,
    }
}

fn condition_to_pb(condition: &Condition) -> pb::Condition {
    let node = match condition {
        Condition::All(children) => pb::condition::Node::All(pb::ConditionGroup {
            children: children.iter().map(condition_to_pb).collect(),
        }),
        Condition::Any(children) => pb::condition::Node::Any(pb::ConditionGroup {
            children: children.iter().map(condition_to_pb).collect(),
        }),
        Condition::Leaf(leaf) => pb::condition::Node::Leaf(pb::ConditionLeaf {
            metric: leaf.metric.clone(),
            op: op_to_pb(leaf.op) as i32,
            value: leaf.value,
            window: match leaf.window {
                Window::Event => pb::Window::Event,
                Window::Lifetime => pb::Window::Lifetime,
            } as i32,
        }),
    };
    pb::Condition { node: Some(node) }
}

/// Decodes a condition tree, refusing nodes with nothing set and unknown enum values; `path`
/// names the node in errors (`condition.all[0].op`). Deeper than the limit is refused without
/// recursing further.
fn condition_from_pb(
    condition: &pb::Condition,
    path: &str,
    depth: usize,
) -> Result<Condition, EventError> {
    if depth > conditions::MAX_DEPTH {
        return Err(EventError::field(
            "condition",
            format!("must be at most {} levels deep", conditions::MAX_DEPTH),
        ));
    }
    let group = |children: &[pb::Condition], kind: &str| -> Result<Vec<Condition>, EventError> {
        children
            .iter()
            .enumerate()
            .map(|(i, child)| condition_from_pb(child, &format!("{path}.{kind}[{i}]"), depth + 1))
            .collect()
    };
    match &condition.node {
        Some(pb::condition::Node::All(g)) => Ok(Condition::All(group(&g.children, "all")?)),
        Some(pb::condition::Node::Any(g)) => Ok(Condition::Any(group(&g.children, "any")?)),
        Some(pb::condition::Node::Leaf(leaf)) => {
            let op = match pb::ComparisonOp::try_from(leaf.op) {
                Ok(pb::ComparisonOp::Gte) => Op::Gte,
                Ok(pb::ComparisonOp::Gt) => Op::Gt,
                Ok(pb::ComparisonOp::Eq) => Op::Eq,
                Ok(pb::ComparisonOp::Ne) => Op::Ne,
                Ok(pb::ComparisonOp::Lte) => Op::Lte,
                Ok(pb::ComparisonOp::Lt) => Op::Lt,
                _ => {
                    return Err(EventError::field(
                        format!("{path}.op"),
                        "must be GTE, GT, EQ, NE, LTE or LT",
                    ));
                }
            };
            let window = match pb::Window::try_from(leaf.window) {
                Ok(pb::Window::Unspecified | pb::Window::Event) => Window::Event,
                Ok(pb::Window::Lifetime) => Window::Lifetime,
                Err(_) => {
                    return Err(EventError::field(
                        format!("{path}.window"),
                        "must be EVENT or LIFETIME",
                    ));
                }
            };
            Ok(Condition::Leaf(Leaf {
                metric: leaf.metric.clone(),
                op,
                value: leaf.value,
                window,
            }))
        }
        None => Err(EventError::field(
            path,
            "must be a leaf {metric, op, value}, {all: [...]} or {any: [...]}",
        )),
    }
}

pub fn event_to_pb(event: &Event, now: DateTime<Utc>) -> pb::Event {
    pb::Event {
        id: event.id.clone(),
        title: event.title.clone(),
        description: event.description.clone(),
        starts_at: Some(timestamp(event.starts_at)),
        ends_at: Some(timestamp(event.ends_at)),
        status: status_to_pb(event.status_at(now)) as i32,
        claim_policy: policy_to_pb(event.claim_policy) as i32,
        condition: event.condition.as_ref().map(condition_to_pb),
        version: event.version,
        created_by: event.created_by.clone(),
        created_at: Some(timestamp(event.created_at)),
        updated_at: Some(timestamp(event.updated_at)),
    }
}

pub fn reward_to_pb(reward: &Reward) -> pb::Reward {
    pb::Reward {
        id: reward.id.clone(),
        event_id: reward.event_id.clone(),
        name: reward.name.clone(),
        r#type: reward_type_to_pb(reward.reward_type) as i32,
        item_code: reward.item_code.clone(),
        quantity: reward.quantity,
        stock: reward.stock,
        remaining: reward.remaining,
        created_at: Some(timestamp(reward.created_at)),
        updated_at: Some(timestamp(reward.updated_at)),
    }
}

fn reward_input_from_pb(input: &pb::RewardInput, prefix: &str) -> Result<RewardInput, EventError> {
    Ok(RewardInput {
        name: input.name.clone(),
        reward_type: reward_type_from_pb(input.r#type, &format!("{prefix}type"))?,
        item_code: input.item_code.clone(),
        quantity: input.quantity,
        stock: input.stock,
    })
}

pub fn evaluation_to_pb(evaluation: &conditions::Evaluation) -> Vec<pb::ConditionDetail> {
    evaluation
        .details
        .iter()
        .map(|d| pb::ConditionDetail {
            metric: d.metric.clone(),
            op: op_to_pb(d.op) as i32,
            value: d.value,
            actual: d.actual,
            passed: d.passed,
        })
        .collect()
}

pub fn audit_to_pb(entry: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        id: entry.id,
        at: Some(timestamp(entry.at)),
        service: "event".to_owned(),
        actor_id: entry.actor_id,
        action: entry.action,
        entity_type: entry.entity_type,
        entity_id: entry.entity_id,
        before_json: entry.before.map(|v| v.to_string()),
        after_json: entry.after.map(|v| v.to_string()),
        trace_id: entry.trace_id,
    }
}

pub fn claim_status_to_pb(status: ClaimStatus) -> pb::ClaimStatus {
    match status {
        ClaimStatus::Pending => pb::ClaimStatus::Pending,
        ClaimStatus::Granted => pb::ClaimStatus::Granted,
        ClaimStatus::Rejected => pb::ClaimStatus::Rejected,
        ClaimStatus::Expired => pb::ClaimStatus::Expired,
    }
}

fn claim_status_from_pb(value: i32) -> Result<ClaimStatus, EventError> {
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

pub fn claim_to_pb(claim: &Claim) -> pb::Claim {
    pb::Claim {
        id: claim.id.clone(),
        event_id: claim.event_id.clone(),
        user_id: claim.user_id.clone(),
        status: claim_status_to_pb(claim.status) as i32,
        rewards: claim
            .rewards
            .iter()
            .map(|r| pb::RewardSnapshot {
                id: r.id.clone(),
                name: r.name.clone(),
                r#type: reward_type_to_pb(r.reward_type) as i32,
                item_code: r.item_code.clone(),
                quantity: r.quantity,
            })
            .collect(),
        event: Some(pb::EventSnapshot {
            title: claim.event.title.clone(),
            starts_at: Some(timestamp(claim.event.starts_at)),
            ends_at: Some(timestamp(claim.event.ends_at)),
        }),
        evaluation: Some(pb::Evaluation {
            event_id: claim.event_id.clone(),
            user_id: claim.user_id.clone(),
            passed: claim.evaluation.passed,
            details: evaluation_to_pb(&claim.evaluation),
        }),
        requested_at: Some(timestamp(claim.requested_at)),
        decided_at: claim.decided_at.map(timestamp),
        decided_by: claim.decided_by.clone(),
        reason: claim.reason.clone(),
    }
}

/// An optional string filter: absent and empty both mean "any".
fn filter_value(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub fn dashboard_to_pb(dashboard: &Dashboard) -> pb::Dashboard {
    pb::Dashboard {
        events: Some(pb::DashboardEvents {
            by_status: dashboard
                .events_by_status
                .iter()
                .map(|(status, n)| (status.as_str().to_owned(), *n))
                .collect(),
        }),
        claims: Some(pb::DashboardClaims {
            by_status: dashboard
                .claims_by_status
                .iter()
                .map(|(status, n)| (status.as_str().to_owned(), *n))
                .collect(),
            per_day: dashboard
                .claims_per_day
                .iter()
                .map(|d| pb::DayCount {
                    day: d.day.format("%Y-%m-%d").to_string(),
                    count: d.count,
                })
                .collect(),
        }),
        rewards: Some(pb::DashboardRewards {
            granted_by_type: dashboard
                .granted_by_type
                .iter()
                .map(|(t, n)| (t.as_str().to_owned(), *n))
                .collect(),
        }),
        top_events: dashboard
            .top_events
            .iter()
            .map(|e| pb::TopEvent {
                event_id: e.event_id.clone(),
                title: e.title.clone(),
                claims: e.claims,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl EventRpc for EventGrpc {
    async fn create_event(
        &self,
        request: Request<pb::CreateEventRequest>,
    ) -> RpcResult<pb::CreateEventResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let rewards = body
            .rewards
            .iter()
            .enumerate()
            .map(|(i, r)| reward_input_from_pb(r, &format!("rewards[{i}].")))
            .collect::<Result<Vec<_>, _>>()?;
        let new = NewEvent {
            title: body.title,
            description: body.description,
            starts_at: from_timestamp(body.starts_at),
            ends_at: from_timestamp(body.ends_at),
            claim_policy: match body.claim_policy {
                None => ClaimPolicy::Auto,
                Some(value) => policy_from_pb(value)?,
            },
            condition: body
                .condition
                .as_ref()
                .map(|c| condition_from_pb(c, "condition", 1))
                .transpose()?,
            draft: body.draft,
            rewards,
        };
        let (event, rewards) = self.service.create_event(caller.as_ref(), new).await?;
        Ok(Response::new(pb::CreateEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
            rewards: rewards.iter().map(reward_to_pb).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> RpcResult<pb::GetEventResponse> {
        let caller = caller(&request)?;
        let event = self
            .service
            .get_event(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> RpcResult<pb::ListEventsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let status = body.status.map(status_from_pb).transpose()?;
        let page = self
            .service
            .list_events(caller.as_ref(), status, body.limit, &body.cursor)
            .await?;
        let now = Utc::now();
        Ok(Response::new(pb::ListEventsResponse {
            items: page.items.iter().map(|e| event_to_pb(e, now)).collect(),
            next_cursor: page.next_cursor.clone(),
        }))
    }

    async fn update_event(
        &self,
        request: Request<pb::UpdateEventRequest>,
    ) -> RpcResult<pb::UpdateEventResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let patch = EventPatch {
            title: body.title,
            description: body
                .description
                .map(|d| if d.is_empty() { None } else { Some(d) }),
            starts_at: from_timestamp(body.starts_at),
            ends_at: from_timestamp(body.ends_at),
            claim_policy: body.claim_policy.map(policy_from_pb).transpose()?,
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
                        return Err(
                            EventError::field("state", "must be PUBLISHED or CANCELED").into()
                        );
                    }
                }),
            },
            expected_version: body.expected_version,
        };
        let event = self
            .service
            .update_event(caller.as_ref(), &body.id, patch)
            .await?;
        Ok(Response::new(pb::UpdateEventResponse {
            event: Some(event_to_pb(&event, Utc::now())),
        }))
    }

    async fn delete_event(
        &self,
        request: Request<pb::DeleteEventRequest>,
    ) -> RpcResult<pb::DeleteEventResponse> {
        let caller = caller(&request)?;
        self.service
            .delete_event(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteEventResponse {}))
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> RpcResult<pb::CreateRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let input = body
            .reward
            .as_ref()
            .ok_or_else(|| EventError::field("reward", "is required"))
            .and_then(|r| reward_input_from_pb(r, ""))?;
        let reward = self
            .service
            .create_reward(caller.as_ref(), &body.event_id, input)
            .await?;
        Ok(Response::new(pb::CreateRewardResponse {
            reward: Some(reward_to_pb(&reward)),
        }))
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> RpcResult<pb::ListRewardsResponse> {
        let caller = caller(&request)?;
        let rewards = self
            .service
            .list_rewards(caller.as_ref(), &request.into_inner().event_id)
            .await?;
        Ok(Response::new(pb::ListRewardsResponse {
            items: rewards.iter().map(reward_to_pb).collect(),
        }))
    }

    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> RpcResult<pb::GetRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let reward = self
            .service
            .get_reward(caller.as_ref(), &body.event_id, &body.reward_id)
            .await?;
        Ok(Response::new(pb::GetRewardResponse {
            reward: Some(reward_to_pb(&reward)),
        }))
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> RpcResult<pb::UpdateRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let patch = RewardPatch {
            name: body.name,
            reward_type: body
                .r#type
                .map(|t| reward_type_from_pb(t, "type"))
                .transpose()?,
            item_code: body
                .item_code
                .map(|c| if c.is_empty() { None } else { Some(c) }),
            quantity: body.quantity,
            stock: match body.stock.and_then(|s| s.value) {
                None => None,
                Some(pb::stock_update::Value::Unlimited(true)) => Some(None),
                Some(pb::stock_update::Value::Unlimited(false)) => None,
                Some(pb::stock_update::Value::Limited(stock)) => Some(Some(stock)),
            },
        };
        let reward = self
            .service
            .update_reward(caller.as_ref(), &body.event_id, &body.reward_id, patch)
            .await?;
        Ok(Response::new(pb::UpdateRewardResponse {
            reward: Some(reward_to_pb(&reward)),
        }))
    }

    async fn delete_reward(
        &self,
        request: Request<pb::DeleteRewardRequest>,
    ) -> RpcResult<pb::DeleteRewardResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        self.service
            .delete_reward(caller.as_ref(), &body.event_id, &body.reward_id)
            .await?;
        Ok(Response::new(pb::DeleteRewardResponse {}))
    }

    async fn record_activity(
        &self,
        request: Request<pb::RecordActivityRequest>,
    ) -> RpcResult<pb::RecordActivityResponse> {
        // Logins are reported by the auth service's relay only, never on a person's behalf.
        match VerifiedCall::of(&request) {
            Ok(call) if call.issuer == Service::Auth && call.caller.is_none() => {}
            Ok(_) => return Err(EventError::Forbidden.into()),
            Err(_) => return Err(EventError::Unauthenticated.into()),
        }
        let body = request.into_inner();
        if pb::ActivityKind::try_from(body.kind) != Ok(pb::ActivityKind::Login) {
            return Err(EventError::field("kind", "must be LOGIN").into());
        }
        let occurred_at = from_timestamp(body.occurred_at).unwrap_or_else(Utc::now);
        let duplicate = self
            .service
            .record_login(&body.idempotency_key, &body.user_id, occurred_at)
            .await?;
        Ok(Response::new(pb::RecordActivityResponse { duplicate }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> RpcResult<pb::ReportProgressResponse> {
        let caller = caller(&request)?;
        let now = Utc::now();
        let items = request
            .into_inner()
            .items
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
            .collect::<Result<Vec<_>, _>>()?;
        let applied = self.service.report_progress(caller.as_ref(), items).await?;
        Ok(Response::new(pb::ReportProgressResponse {
            accepted: applied.accepted,
            duplicates: applied.duplicates,
        }))
    }

    async fn get_progress(
        &self,
        request: Request<pb::GetProgressRequest>,
    ) -> RpcResult<pb::GetProgressResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let user_id = if body.user_id.is_empty() {
            caller
                .as_ref()
                .map(|c| c.user_id.clone())
                .unwrap_or_default()
        } else {
            body.user_id
        };
        let evaluation = self
            .service
            .progress(caller.as_ref(), &body.event_id, &user_id)
            .await?;
        Ok(Response::new(pb::GetProgressResponse {
            event_id: body.event_id,
            user_id,
            passed: evaluation.passed,
            details: evaluation_to_pb(&evaluation),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> RpcResult<pb::ListAuditResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = AuditFilter {
            action: body.action.filter(|a| !a.is_empty()),
            actor_id: body.actor_id.filter(|a| !a.is_empty()),
            entity_id: body.entity_id.filter(|a| !a.is_empty()),
            from: from_timestamp(body.from),
            to: from_timestamp(body.to),
        };
        let page = self
            .service
            .list_audit(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            items: page.items.into_iter().map(audit_to_pb).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn claim(&self, request: Request<pb::ClaimRequest>) -> RpcResult<pb::ClaimResponse> {
        let caller = caller(&request)?;
        let timeout = grpc_timeout(request.metadata());
        let body = request.into_inner();
        let outcome = self
            .service
            .claim_within(
                caller.as_ref(),
                &body.event_id,
                body.idempotency_key.as_deref(),
                timeout,
            )
            .await?;
        Ok(Response::new(pb::ClaimResponse {
            claim: Some(claim_to_pb(&outcome.claim)),
            replayed: outcome.replayed,
        }))
    }

    async fn get_claim(
        &self,
        request: Request<pb::GetClaimRequest>,
    ) -> RpcResult<pb::GetClaimResponse> {
        let caller = caller(&request)?;
        let claim = self
            .service
            .get_claim(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::GetClaimResponse {
            claim: Some(claim_to_pb(&claim)),
        }))
    }

    async fn list_my_claims(
        &self,
        request: Request<pb::ListMyClaimsRequest>,
    ) -> RpcResult<pb::ListMyClaimsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = ClaimFilter {
            status: body.status.map(claim_status_from_pb).transpose()?,
            event_id: filter_value(body.event_id),
            ..ClaimFilter::default()
        };
        let page = self
            .service
            .list_my_claims(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListMyClaimsResponse {
            items: page.items.iter().map(claim_to_pb).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn list_claims(
        &self,
        request: Request<pb::ListClaimsRequest>,
    ) -> RpcResult<pb::ListClaimsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let filter = ClaimFilter {
            user_id: filter_value(body.user_id),
            event_id: filter_value(body.event_id),
            status: body.status.map(claim_status_from_pb).transpose()?,
            from: from_timestamp(body.from),
            to: from_timestamp(body.to),
        };
        let page = self
            .service
            .list_claims(caller.as_ref(), filter, body.limit, &body.cursor)
            .await?;
        Ok(Response::new(pb::ListClaimsResponse {
            items: page.items.iter().map(claim_to_pb).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn approve_claim(
        &self,
        request: Request<pb::ApproveClaimRequest>,
    ) -> RpcResult<pb::ApproveClaimResponse> {
        let caller = caller(&request)?;
        let claim = self
            .service
            .approve_claim(caller.as_ref(), &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::ApproveClaimResponse {
            claim: Some(claim_to_pb(&claim)),
        }))
    }

    async fn reject_claim(
        &self,
        request: Request<pb::RejectClaimRequest>,
    ) -> RpcResult<pb::RejectClaimResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let claim = self
            .service
            .reject_claim(caller.as_ref(), &body.id, &body.reason)
            .await?;
        Ok(Response::new(pb::RejectClaimResponse {
            claim: Some(claim_to_pb(&claim)),
        }))
    }

    async fn get_dashboard(
        &self,
        request: Request<pb::GetDashboardRequest>,
    ) -> RpcResult<pb::GetDashboardResponse> {
        let caller = caller(&request)?;
        let dashboard = self.service.dashboard(caller.as_ref()).await?;
        Ok(Response::new(pb::GetDashboardResponse {
            dashboard: Some(dashboard_to_pb(&dashboard)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().ok()?);
        grpc_timeout(&metadata)
    }

    #[test]
    fn grpc_timeout_header_parses_every_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(timeout_of("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(timeout_of("m"), None);
        assert_eq!(timeout_of("123456789m"), None, "at most 8 digits");
        assert_eq!(timeout_of("10x"), None);
        assert_eq!(timeout_of("-1S"), None);
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
