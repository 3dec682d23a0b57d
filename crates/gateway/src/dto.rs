//! The JSON shapes of the public API (camelCase, RFC 3339 UTC times) and their conversions from
//! and to the gRPC messages. Absent optional values are `null`.

use chrono::{DateTime, SecondsFormat, Utc};
use erp_platform::error::{ApiError, FieldError};
use erp_proto::auth::v1 as auth_pb;
use erp_proto::event::v1 as event_pb;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

pub use erp_proto::time::timestamp;

pub fn time(at: Option<prost_types::Timestamp>) -> Option<String> {
    let at = at?;
    DateTime::<Utc>::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The earliest and latest instants the API accepts (API.md, Conventions).
pub const MIN_TIME: &str = "1970-01-01T00:00:00Z";
pub const MAX_TIME: &str = "9999-12-31T23:59:59Z";

/// Whether `at` lies in [`MIN_TIME`] ..= [`MAX_TIME`].
pub fn time_in_range(at: &DateTime<Utc>) -> bool {
    // 9999-12-31T23:59:59Z, with any fraction of that last second.
    const MAX_SECONDS: i64 = 253_402_300_799;
    (0..=MAX_SECONDS).contains(&at.timestamp())
}

/// An RFC 3339 time within the accepted range; others are a validation error on the field.
pub fn bounded_time<'de, D>(deserializer: D) -> Result<DateTime<Utc>, D::Error>
where
    D: Deserializer<'de>,
{
    let at = DateTime::<Utc>::deserialize(deserializer)?;
    if time_in_range(&at) {
        Ok(at)
    } else {
        Err(serde::de::Error::custom(format!(
            "must lie in {MIN_TIME} ..= {MAX_TIME}"
        )))
    }
}

/// [`bounded_time`] for an optional field.
pub fn bounded_time_option<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Bounded(#[serde(deserialize_with = "bounded_time")] DateTime<Utc>);
    Ok(Option::<Bounded>::deserialize(deserializer)?.map(|Bounded(at)| at))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A list answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// A page of a service's answer, each item in its public form.
    pub fn of<P>(items: Vec<P>, next_cursor: Option<String>) -> axum::Json<Self>
    where
        T: From<P>,
    {
        axum::Json(Self {
            items: items.into_iter().map(T::from).collect(),
            next_cursor,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Items<T: ToSchema> {
    pub items: Vec<T>,
}

// ---------- users and tokens ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoleName {
    User,
    Operator,
    Auditor,
    Admin,
}

impl RoleName {
    pub fn to_pb(self) -> i32 {
        (match self {
            RoleName::User => auth_pb::Role::User,
            RoleName::Operator => auth_pb::Role::Operator,
            RoleName::Auditor => auth_pb::Role::Auditor,
            RoleName::Admin => auth_pb::Role::Admin,
        }) as i32
    }

    pub fn from_pb(value: i32) -> Option<Self> {
        match auth_pb::Role::try_from(value) {
            Ok(auth_pb::Role::User) => Some(RoleName::User),
            Ok(auth_pb::Role::Operator) => Some(RoleName::Operator),
            Ok(auth_pb::Role::Auditor) => Some(RoleName::Auditor),
            Ok(auth_pb::Role::Admin) => Some(RoleName::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub username: Option<String>,
    pub roles: Vec<RoleName>,
    pub disabled: bool,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<auth_pb::User> for User {
    fn from(user: auth_pb::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            roles: user
                .roles
                .into_iter()
                .filter_map(RoleName::from_pb)
                .collect(),
            disabled: user.disabled,
            created_at: time(user.created_at),
            updated_at: time(user.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Refused when present: new accounts are always `USER`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub roles: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub user: User,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserBody {
    pub email: String,
    pub password: String,
    pub roles: Vec<RoleName>,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUserBody {
    #[serde(default)]
    pub roles: Option<Vec<RoleName>>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub password: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    pub role: Option<RoleName>,
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// ---------- events and rewards ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    Draft,
    Scheduled,
    Active,
    Ended,
    Canceled,
}

impl EventStatus {
    pub fn to_pb(self) -> i32 {
        (match self {
            EventStatus::Draft => event_pb::EventStatus::Draft,
            EventStatus::Scheduled => event_pb::EventStatus::Scheduled,
            EventStatus::Active => event_pb::EventStatus::Active,
            EventStatus::Ended => event_pb::EventStatus::Ended,
            EventStatus::Canceled => event_pb::EventStatus::Canceled,
        }) as i32
    }

    pub fn name(value: i32) -> &'static str {
        match event_pb::EventStatus::try_from(value) {
            Ok(event_pb::EventStatus::Draft) => "DRAFT",
            Ok(event_pb::EventStatus::Scheduled) => "SCHEDULED",
            Ok(event_pb::EventStatus::Active) => "ACTIVE",
            Ok(event_pb::EventStatus::Ended) => "ENDED",
            Ok(event_pb::EventStatus::Canceled) => "CANCELED",
            _ => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimPolicy {
    Auto,
    Manual,
}

impl ClaimPolicy {
    pub fn to_pb(self) -> i32 {
        (match self {
            ClaimPolicy::Auto => event_pb::ClaimPolicy::Auto,
            ClaimPolicy::Manual => event_pb::ClaimPolicy::Manual,
        }) as i32
    }

    pub fn name(value: i32) -> &'static str {
        match event_pb::ClaimPolicy::try_from(value) {
            Ok(event_pb::ClaimPolicy::Manual) => "MANUAL",
            _ => "AUTO",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PublicationState {
    Published,
    Canceled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RewardType {
    Currency,
    Item,
    Coupon,
    Point,
    Buff,
}

impl RewardType {
    pub fn to_pb(self) -> i32 {
        (match self {
            RewardType::Currency => event_pb::RewardType::Currency,
            RewardType::Item => event_pb::RewardType::Item,
            RewardType::Coupon => event_pb::RewardType::Coupon,
            RewardType::Point => event_pb::RewardType::Point,
            RewardType::Buff => event_pb::RewardType::Buff,
        }) as i32
    }

    pub fn name(value: i32) -> &'static str {
        match event_pb::RewardType::try_from(value) {
            Ok(event_pb::RewardType::Currency) => "CURRENCY",
            Ok(event_pb::RewardType::Item) => "ITEM",
            Ok(event_pb::RewardType::Coupon) => "COUPON",
            Ok(event_pb::RewardType::Point) => "POINT",
            Ok(event_pb::RewardType::Buff) => "BUFF",
            _ => "UNKNOWN",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    #[schema(value_type = EventStatus)]
    pub status: &'static str,
    #[schema(value_type = ClaimPolicy)]
    pub claim_policy: &'static str,
    /// A leaf `{metric, op, value, window}` or `{all: [...]}` / `{any: [...]}`; `null`: none.
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Value>,
    pub version: i64,
    pub created_by: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<event_pb::Event> for Event {
    fn from(event: event_pb::Event) -> Self {
        Self {
            id: event.id,
            title: event.title,
            description: event.description,
            starts_at: time(event.starts_at),
            ends_at: time(event.ends_at),
            status: EventStatus::name(event.status),
            claim_policy: ClaimPolicy::name(event.claim_policy),
            condition: event.condition.as_ref().map(condition_to_json),
            version: event.version,
            created_by: event.created_by,
            created_at: time(event.created_at),
            updated_at: time(event.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewardInput {
    pub name: String,
    #[serde(rename = "type")]
    pub reward_type: RewardType,
    #[serde(default)]
    pub item_code: Option<String>,
    pub quantity: i64,
    /// `null` or absent: unlimited.
    #[serde(default)]
    pub stock: Option<i64>,
}

impl RewardInput {
    pub fn to_pb(&self) -> event_pb::RewardInput {
        event_pb::RewardInput {
            name: self.name.clone(),
            r#type: self.reward_type.to_pb(),
            item_code: self.item_code.clone(),
            quantity: self.quantity,
            stock: self.stock,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventBody {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(deserialize_with = "bounded_time")]
    pub starts_at: DateTime<Utc>,
    #[serde(deserialize_with = "bounded_time")]
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub claim_policy: Option<ClaimPolicy>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Value>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub rewards: Option<Vec<RewardInput>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEventBody {
    #[serde(default)]
    pub title: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub claim_policy: Option<ClaimPolicy>,
    /// `null` removes the condition.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Option<Value>>,
    #[serde(default)]
    pub state: Option<PublicationState>,
    /// `false` publishes a draft (as `state: PUBLISHED`); an event cannot go back to draft.
    #[serde(default)]
    pub draft: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub status: Option<EventStatus>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reward {
    pub id: String,
    pub event_id: String,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = RewardType)]
    pub reward_type: &'static str,
    pub item_code: Option<String>,
    pub quantity: i64,
    pub stock: Option<i64>,
    pub remaining: Option<i64>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<event_pb::Reward> for Reward {
    fn from(reward: event_pb::Reward) -> Self {
        Self {
            id: reward.id,
            event_id: reward.event_id,
            name: reward.name,
            reward_type: RewardType::name(reward.r#type),
            item_code: reward.item_code,
            quantity: reward.quantity,
            stock: reward.stock,
            remaining: reward.remaining,
            created_at: time(reward.created_at),
            updated_at: time(reward.updated_at),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRewardBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub reward_type: Option<RewardType>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub item_code: Option<Option<String>>,
    #[serde(default)]
    pub quantity: Option<i64>,
    /// `null` makes it unlimited.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub stock: Option<Option<i64>>,
}

// ---------- conditions ----------

const OPS: [(&str, event_pb::ComparisonOp); 6] = [
    ("GTE", event_pb::ComparisonOp::Gte),
    ("GT", event_pb::ComparisonOp::Gt),
    ("EQ", event_pb::ComparisonOp::Eq),
    ("NE", event_pb::ComparisonOp::Ne),
    ("LTE", event_pb::ComparisonOp::Lte),
    ("LT", event_pb::ComparisonOp::Lt),
];

pub fn op_name(value: i32) -> &'static str {
    OPS.iter()
        .find(|(_, op)| *op as i32 == value)
        .map_or("UNKNOWN", |(name, _)| name)
}

pub fn condition_to_json(condition: &event_pb::Condition) -> Value {
    match &condition.node {
        Some(event_pb::condition::Node::All(group)) => {
            json!({ "all": group.children.iter().map(condition_to_json).collect::<Vec<_>>() })
        }
        Some(event_pb::condition::Node::Any(group)) => {
            json!({ "any": group.children.iter().map(condition_to_json).collect::<Vec<_>>() })
        }
        Some(event_pb::condition::Node::Leaf(leaf)) => json!({
            "metric": leaf.metric,
            "op": op_name(leaf.op),
            "value": leaf.value,
            "window": if leaf.window == event_pb::Window::Lifetime as i32 { "LIFETIME" } else { "EVENT" },
        }),
        None => Value::Null,
    }
}

/// Reads a condition tree, naming the first problem's path (`condition.all[0].op`). Limits and
/// metric names are checked by the event service.
pub fn condition_from_json(
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<event_pb::Condition, FieldError> {
    // Depth beyond the contract's limit is refused here so deep input cannot recurse far.
    if depth > 6 {
        return Err(FieldError::new(
            "condition",
            "must be at most 5 levels deep",
        ));
    }
    let object = value.as_object().ok_or_else(|| {
        FieldError::new(
            path,
            "must be an object: a leaf {metric, op, value, window?} or {all: [...]} / {any: [...]}",
        )
    })?;
    for (kind, make) in [
        (
            "all",
            event_pb::condition::Node::All
                as fn(event_pb::ConditionGroup) -> event_pb::condition::Node,
        ),
        ("any", event_pb::condition::Node::Any),
    ] {
        if let Some(children) = object.get(kind) {
            let children = children
                .as_array()
                .ok_or_else(|| FieldError::new(format!("{path}.{kind}"), "must be an array"))?;
            let children = children
                .iter()
                .enumerate()
                .map(|(i, child)| {
                    condition_from_json(child, &format!("{path}.{kind}[{i}]"), depth + 1)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(event_pb::Condition {
                node: Some(make(event_pb::ConditionGroup { children })),
            });
        }
    }
    let metric = object
        .get("metric")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FieldError::new(format!("{path}.metric"), "is required and must be a string")
        })?;
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .and_then(|name| OPS.iter().find(|(n, _)| *n == name))
        .ok_or_else(|| {
            FieldError::new(
                format!("{path}.op"),
                "must be one of GTE, GT, EQ, NE, LTE, LT",
            )
        })?
        .1;
    let value = object.get("value").and_then(Value::as_i64).ok_or_else(|| {
        FieldError::new(
            format!("{path}.value"),
            "is required and must be an integer",
        )
    })?;
    let window = match object.get("window") {
        None | Some(Value::Null) => event_pb::Window::Event,
        Some(Value::String(w)) if w == "EVENT" => event_pb::Window::Event,
        Some(Value::String(w)) if w == "LIFETIME" => event_pb::Window::Lifetime,
        Some(_) => {
            return Err(FieldError::new(
                format!("{path}.window"),
                "must be EVENT or LIFETIME",
            ));
        }
    };
    Ok(event_pb::Condition {
        node: Some(event_pb::condition::Node::Leaf(event_pb::ConditionLeaf {
            metric: metric.to_owned(),
            op: op as i32,
            value,
            window: window as i32,
        })),
    })
}

pub fn condition_field(value: &Value) -> Result<event_pb::Condition, ApiError> {
    condition_from_json(value, "condition", 1).map_err(|field| ApiError::validation(vec![field]))
}

// ---------- progress ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgressMode {
    Increment,
    Max,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressItem {
    pub user_id: String,
    pub metric: String,
    pub value: i64,
    pub mode: ProgressMode,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressBody {
    pub items: Vec<ProgressItem>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressAccepted {
    pub accepted: u32,
    pub duplicates: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionDetail {
    pub metric: String,
    #[schema(value_type = String)]
    pub op: &'static str,
    pub value: i64,
    pub actual: i64,
    pub passed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub event_id: String,
    pub user_id: String,
    pub passed: bool,
    pub details: Vec<ConditionDetail>,
}

pub fn details(details: Vec<event_pb::ConditionDetail>) -> Vec<ConditionDetail> {
    details
        .into_iter()
        .map(|d| ConditionDetail {
            metric: d.metric,
            op: op_name(d.op),
            value: d.value,
            actual: d.actual,
            passed: d.passed,
        })
        .collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ProgressQuery {
    pub user_id: Option<String>,
}

// ---------- claims ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimStatus {
    Pending,
    Granted,
    Rejected,
    Expired,
}

impl ClaimStatus {
    pub fn to_pb(self) -> i32 {
        (match self {
            ClaimStatus::Pending => event_pb::ClaimStatus::Pending,
            ClaimStatus::Granted => event_pb::ClaimStatus::Granted,
            ClaimStatus::Rejected => event_pb::ClaimStatus::Rejected,
            ClaimStatus::Expired => event_pb::ClaimStatus::Expired,
        }) as i32
    }

    pub fn name(value: i32) -> &'static str {
        match event_pb::ClaimStatus::try_from(value) {
            Ok(event_pb::ClaimStatus::Pending) => "PENDING",
            Ok(event_pb::ClaimStatus::Granted) => "GRANTED",
            Ok(event_pb::ClaimStatus::Rejected) => "REJECTED",
            Ok(event_pb::ClaimStatus::Expired) => "EXPIRED",
            _ => "UNKNOWN",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewardSnapshot {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = RewardType)]
    pub reward_type: &'static str,
    pub item_code: Option<String>,
    pub quantity: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSnapshot {
    pub title: String,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    #[schema(value_type = ClaimStatus)]
    pub status: &'static str,
    pub rewards: Vec<RewardSnapshot>,
    pub event: Option<EventSnapshot>,
    pub evaluation: Option<Progress>,
    pub requested_at: Option<String>,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

impl From<event_pb::Claim> for Claim {
    fn from(claim: event_pb::Claim) -> Self {
        Self {
            status: ClaimStatus::name(claim.status),
            rewards: claim
                .rewards
                .into_iter()
                .map(|r| RewardSnapshot {
                    id: r.id,
                    name: r.name,
                    reward_type: RewardType::name(r.r#type),
                    item_code: r.item_code,
                    quantity: r.quantity,
                })
                .collect(),
            event: claim.event.map(|e| EventSnapshot {
                title: e.title,
                starts_at: time(e.starts_at),
                ends_at: time(e.ends_at),
            }),
            evaluation: claim.evaluation.map(|e| Progress {
                event_id: e.event_id,
                user_id: e.user_id,
                passed: e.passed,
                details: details(e.details),
            }),
            requested_at: time(claim.requested_at),
            decided_at: time(claim.decided_at),
            decided_by: claim.decided_by,
            reason: claim.reason,
            id: claim.id,
            event_id: claim.event_id,
            user_id: claim.user_id,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectBody {
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MyClaimsQuery {
    pub status: Option<ClaimStatus>,
    pub event_id: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ClaimsQuery {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// ---------- audit and dashboard ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditService {
    Event,
    Auth,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub service: Option<AuditService>,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub entity_id: Option<String>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "bounded_time_option")]
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    pub at: Option<String>,
    pub service: String,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub trace_id: Option<String>,
    /// Sort key for merging the two services' trails.
    #[serde(skip)]
    pub at_millis: i64,
}

fn parse_json_text(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn millis(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

impl From<auth_pb::AuditEntry> for AuditEntry {
    fn from(e: auth_pb::AuditEntry) -> Self {
        Self {
            at_millis: millis(e.at.as_ref()),
            at: time(e.at),
            id: e.id,
            service: e.service,
            actor_id: e.actor_id,
            action: e.action,
            entity_type: e.entity_type,
            entity_id: e.entity_id,
            before: parse_json_text(e.before_json),
            after: parse_json_text(e.after_json),
            trace_id: e.trace_id,
        }
    }
}

impl From<event_pb::AuditEntry> for AuditEntry {
    fn from(e: event_pb::AuditEntry) -> Self {
        Self {
            at_millis: millis(e.at.as_ref()),
            at: time(e.at),
            id: e.id,
            service: e.service,
            actor_id: e.actor_id,
            action: e.action,
            entity_type: e.entity_type,
            entity_id: e.entity_id,
            before: parse_json_text(e.before_json),
            after: parse_json_text(e.after_json),
            trace_id: e.trace_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayCount {
    pub day: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardEvents {
    pub by_status: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardClaims {
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub per_day: Vec<DayCount>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardRewards {
    pub granted_by_type: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopEvent {
    pub event_id: String,
    pub title: String,
    pub claims: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub events: DashboardEvents,
    pub claims: DashboardClaims,
    pub rewards: DashboardRewards,
    pub top_events: Vec<TopEvent>,
}

impl From<event_pb::Dashboard> for Dashboard {
    fn from(d: event_pb::Dashboard) -> Self {
        let events = d.events.unwrap_or_default();
        let claims = d.claims.unwrap_or_default();
        let rewards = d.rewards.unwrap_or_default();
        Self {
            events: DashboardEvents {
                by_status: events.by_status.into_iter().collect(),
            },
            claims: DashboardClaims {
                by_status: claims.by_status.into_iter().collect(),
                per_day: claims
                    .per_day
                    .into_iter()
                    .map(|d| DayCount {
                        day: d.day,
                        count: d.count,
                    })
                    .collect(),
            },
            rewards: DashboardRewards {
                granted_by_type: rewards.granted_by_type.into_iter().collect(),
            },
            top_events: d
                .top_events
                .into_iter()
                .map(|t| TopEvent {
                    event_id: t.event_id,
                    title: t.title,
                    claims: t.claims,
                })
                .collect(),
        }
    }
}

/// The problem+json error body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProblemBody {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub trace_id: Option<String>,
    pub errors: Option<Vec<FieldProblem>>,
    /// With `ALREADY_CLAIMED`.
    pub claim_id: Option<String>,
    /// With `CONDITIONS_NOT_MET`.
    #[schema(value_type = Option<Object>)]
    pub evaluation: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// `limit` checked against the contract (1..100); absent: the default.
pub fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(0),
        Some(l @ 1..=100) => Ok(l),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )])),
    }
}
