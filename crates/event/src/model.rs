//! The event domain's types, free of transport and store types.

use chrono::{DateTime, NaiveDate, Utc};

use crate::conditions::{Condition, Evaluation};

/// What an operator decided about an event's visibility; its status also depends on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    Draft,
    Published,
    Canceled,
}

impl Publication {
    pub fn as_str(self) -> &'static str {
        match self {
            Publication::Draft => "draft",
            Publication::Published => "published",
            Publication::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(Self::Draft),
            "published" => Some(Self::Published),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    Draft,
    Scheduled,
    Active,
    Ended,
    Canceled,
}

impl EventStatus {
    pub const ALL: [EventStatus; 5] = [
        EventStatus::Draft,
        EventStatus::Scheduled,
        EventStatus::Active,
        EventStatus::Ended,
        EventStatus::Canceled,
    ];

    /// The one rule for an event's status at `now`, from its publication and its window
    /// `[starts_at, ends_at)`; the store asks it too (claims are placed only while active).
    pub fn of(
        publication: Publication,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        match publication {
            Publication::Draft => EventStatus::Draft,
            Publication::Canceled => EventStatus::Canceled,
            Publication::Published if now < starts_at => EventStatus::Scheduled,
            Publication::Published if now < ends_at => EventStatus::Active,
            Publication::Published => EventStatus::Ended,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "DRAFT",
            EventStatus::Scheduled => "SCHEDULED",
            EventStatus::Active => "ACTIVE",
            EventStatus::Ended => "ENDED",
            EventStatus::Canceled => "CANCELED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPolicy {
    Auto,
    Manual,
}

impl ClaimPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimPolicy::Auto => "AUTO",
            ClaimPolicy::Manual => "MANUAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AUTO" => Some(Self::Auto),
            "MANUAL" => Some(Self::Manual),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub publication: Publication,
    pub claim_policy: ClaimPolicy,
    pub condition: Option<Condition>,
    pub version: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Event {
    /// The status at `now`: computed at every read, so it is never stale.
    pub fn status_at(&self, now: DateTime<Utc>) -> EventStatus {
        EventStatus::of(self.publication, self.starts_at, self.ends_at, now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RewardType {
    Currency,
    Item,
    Coupon,
    Point,
    Buff,
}

impl RewardType {
    pub const ALL: [RewardType; 5] = [
        RewardType::Currency,
        RewardType::Item,
        RewardType::Coupon,
        RewardType::Point,
        RewardType::Buff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RewardType::Currency => "CURRENCY",
            RewardType::Item => "ITEM",
            RewardType::Coupon => "COUPON",
            RewardType::Point => "POINT",
            RewardType::Buff => "BUFF",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reward {
    pub id: String,
    pub event_id: String,
    pub name: String,
    pub reward_type: RewardType,
    pub item_code: Option<String>,
    pub quantity: i64,
    /// Total claims this reward can serve; `None` is unlimited.
    pub stock: Option<i64>,
    /// Units left; `None` when unlimited.
    pub remaining: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A reward as an operator describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RewardInput {
    pub name: String,
    pub reward_type: RewardType,
    pub item_code: Option<String>,
    pub quantity: i64,
    pub stock: Option<i64>,
}

/// Changes to a reward; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RewardPatch {
    pub name: Option<String>,
    pub reward_type: Option<RewardType>,
    /// `Some(None)` clears it.
    pub item_code: Option<Option<String>>,
    pub quantity: Option<i64>,
    /// `Some(None)` makes it unlimited.
    pub stock: Option<Option<i64>>,
}

/// Fields of a new event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewEvent {
    pub title: String,
    pub description: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub claim_policy: ClaimPolicy,
    pub condition: Option<Condition>,
    pub draft: bool,
    pub rewards: Vec<RewardInput>,
}

/// Changes to an event; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventPatch {
    pub title: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub claim_policy: Option<ClaimPolicy>,
    /// `Some(None)` removes the condition.
    pub condition: Option<Option<Condition>>,
    pub publication: Option<Publication>,
    pub expected_version: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    Increment,
    Max,
}

/// One progress report of a game server or operator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProgressItem {
    pub user_id: String,
    pub metric: String,
    pub value: i64,
    pub mode: ProgressMode,
    pub occurred_at: DateTime<Utc>,
    pub key: Option<String>,
}

/// A moment in an event's life that the audit trail records once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Milestone {
    Started,
    Ended,
}

impl Milestone {
    pub(crate) const ALL: [Milestone; 2] = [Milestone::Started, Milestone::Ended];

    pub(crate) fn action(self) -> &'static str {
        match self {
            Milestone::Started => "EVENT_STARTED",
            Milestone::Ended => "EVENT_ENDED",
        }
    }
}

/// Where a claim is in its life: MANUAL claims wait as `Pending` (holding their stock) until an
/// operator decides or the expiry job gives the stock back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimStatus {
    Pending,
    Granted,
    Rejected,
    Expired,
}

impl ClaimStatus {
    pub const ALL: [ClaimStatus; 4] = [
        ClaimStatus::Pending,
        ClaimStatus::Granted,
        ClaimStatus::Rejected,
        ClaimStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Pending => "PENDING",
            ClaimStatus::Granted => "GRANTED",
            ClaimStatus::Rejected => "REJECTED",
            ClaimStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// Where a claim came from: a player's own claim, or an operator's grant (which skips the
/// condition, the window and MANUAL review, and nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClaimSource {
    /// Also what a claim stored before sources existed reads as.
    #[default]
    Claim,
    Grant,
}

impl ClaimSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimSource::Claim => "CLAIM",
            ClaimSource::Grant => "GRANT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ClaimSource::Claim, ClaimSource::Grant]
            .into_iter()
            .find(|source| source.as_str() == s)
    }
}

/// A reward as it was when a claim took it; later edits or deletion do not change it.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSnapshot {
    pub id: String,
    pub name: String,
    pub reward_type: RewardType,
    pub item_code: Option<String>,
    pub quantity: i64,
}

/// The event as it was when a claim was made.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSnapshot {
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// One player's claim on one event (at most one per pair).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    pub status: ClaimStatus,
    pub rewards: Vec<RewardSnapshot>,
    pub event: EventSnapshot,
    /// The evaluation that admitted the claim.
    pub evaluation: Evaluation,
    pub requested_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The key of the request that created it, so a repeat with that key replays it.
    pub idempotency_key: Option<String>,
    pub source: ClaimSource,
    /// The operator whose grant made it (source `Grant` only).
    pub granted_by: Option<String>,
}

/// Filters of a claim listing; `from` inclusive, `to` exclusive, on `requested_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClaimFilter {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Claims requested on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub day: NaiveDate,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEvent {
    pub event_id: String,
    /// From the newest claim's snapshot, so it survives the event's deletion.
    pub title: String,
    pub claims: i64,
}

/// The operators' overview; every status and type is present, with 0 when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dashboard {
    pub events_by_status: Vec<(EventStatus, i64)>,
    pub claims_by_status: Vec<(ClaimStatus, i64)>,
    /// Oldest first, days without claims included.
    pub claims_per_day: Vec<DayCount>,
    pub granted_by_type: Vec<(RewardType, i64)>,
    pub top_events: Vec<TopEvent>,
    pub deliveries: crate::deliveries::DeliveryFigures,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn event(publication: Publication) -> Event {
        let now = Utc::now();
        Event {
            id: "e".into(),
            title: "t".into(),
            description: None,
            starts_at: now,
            ends_at: now + Duration::hours(1),
            publication,
            claim_policy: ClaimPolicy::Auto,
            condition: None,
            version: 1,
            created_by: "u".into(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn status_follows_publication_and_time() {
        let published = event(Publication::Published);
        let start = published.starts_at;
        assert_eq!(
            published.status_at(start - Duration::seconds(1)),
            EventStatus::Scheduled
        );
        assert_eq!(published.status_at(start), EventStatus::Active);
        assert_eq!(
            published.status_at(published.ends_at - Duration::milliseconds(1)),
            EventStatus::Active
        );
        assert_eq!(published.status_at(published.ends_at), EventStatus::Ended);
        assert_eq!(
            event(Publication::Draft).status_at(start),
            EventStatus::Draft
        );
        assert_eq!(
            event(Publication::Canceled).status_at(start),
            EventStatus::Canceled
        );
    }
}
