//! Validation of everything operators and game servers send, each problem naming its field in
//! the public API's camelCase.

use chrono::{DateTime, Duration, Utc};
use erp_platform::error::FieldError;

use crate::conditions::{self, Condition, LOGIN_DAYS, LOGIN_METRIC, LOGIN_STREAK};
use crate::error::EventError;
use crate::model::{EventPatch, NewEvent, ProgressItem, RewardInput, RewardPatch};

pub(crate) const MAX_TITLE_CHARS: usize = 200;
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 5000;
pub(crate) const MAX_REWARD_NAME_CHARS: usize = 200;
pub(crate) const MAX_ITEM_CODE_CHARS: usize = 128;
pub(crate) const MAX_QUANTITY: i64 = 1_000_000_000;
pub(crate) const MAX_STOCK: i64 = 1_000_000_000;
pub(crate) const MAX_REWARDS_PER_EVENT: usize = 50;
pub(crate) const MAX_PROGRESS_ITEMS: usize = 1000;
pub(crate) const MAX_PROGRESS_VALUE: i64 = 1_000_000_000_000;
pub(crate) const MAX_KEY_CHARS: usize = 200;
pub(crate) const MAX_ID_CHARS: usize = 128;
/// How far in the future a report may be dated (clock skew between game servers and us).
pub(crate) const FUTURE_TOLERANCE_MINUTES: i64 = 5;

#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish(self) -> Result<(), EventError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(EventError::Validation(self.0))
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check_title(problems: &mut Problems, title: &str) {
    if title.trim().is_empty() {
        problems.add("title", "must not be empty");
    } else if chars(title) > MAX_TITLE_CHARS {
        problems.add(
            "title",
            format!("must be at most {MAX_TITLE_CHARS} characters"),
        );
    }
}

fn check_description(problems: &mut Problems, description: Option<&str>) {
    if let Some(description) = description
        && chars(description) > MAX_DESCRIPTION_CHARS
    {
        problems.add(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
}

fn check_window(problems: &mut Problems, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) {
    if starts_at >= ends_at {
        problems.add("endsAt", "must be after startsAt");
    }
}

fn check_condition(problems: &mut Problems, condition: Option<&Condition>) {
    if let Some(condition) = condition {
        for problem in condition.validate("condition") {
            problems.add(problem.path, problem.message);
        }
    }
}

fn check_reward(problems: &mut Problems, prefix: &str, reward: &RewardInput) {
    check_reward_fields(
        problems,
        prefix,
        Some(&reward.name),
        reward.item_code.as_ref().map(|c| Some(c.as_str())),
        Some(reward.quantity),
        Some(reward.stock),
    );
}

fn check_reward_fields(
    problems: &mut Problems,
    prefix: &str,
    name: Option<&str>,
    item_code: Option<Option<&str>>,
    quantity: Option<i64>,
    stock: Option<Option<i64>>,
) {
    if let Some(name) = name {
        if name.trim().is_empty() {
            problems.add(format!("{prefix}name"), "must not be empty");
        } else if chars(name) > MAX_REWARD_NAME_CHARS {
            problems.add(
                format!("{prefix}name"),
                format!("must be at most {MAX_REWARD_NAME_CHARS} characters"),
            );
        }
    }
    if let Some(Some(code)) = item_code
        && (code.is_empty() || chars(code) > MAX_ITEM_CODE_CHARS)
    {
        problems.add(
            format!("{prefix}itemCode"),
            format!("must be 1 to {MAX_ITEM_CODE_CHARS} characters"),
        );
    }
    if let Some(quantity) = quantity
        && !(1..=MAX_QUANTITY).contains(&quantity)
    {
        problems.add(
            format!("{prefix}quantity"),
            format!("must be between 1 and {MAX_QUANTITY}"),
        );
    }
    if let Some(Some(stock)) = stock
        && !(0..=MAX_STOCK).contains(&stock)
    {
        problems.add(
            format!("{prefix}stock"),
            format!("must be null (unlimited) or between 0 and {MAX_STOCK}"),
        );
    }
}

pub(crate) fn new_event(event: &NewEvent) -> Result<(), EventError> {
    let mut problems = Problems::default();
    check_title(&mut problems, &event.title);
    check_description(&mut problems, event.description.as_deref());
    match (event.starts_at, event.ends_at) {
        (Some(starts_at), Some(ends_at)) => check_window(&mut problems, starts_at, ends_at),
        (starts_at, ends_at) => {
            if starts_at.is_none() {
                problems.add("startsAt", "is required");
            }
            if ends_at.is_none() {
                problems.add("endsAt", "is required");
            }
        }
    }
    check_condition(&mut problems, event.condition.as_ref());
    if event.rewards.len() > MAX_REWARDS_PER_EVENT {
        problems.add(
            "rewards",
            format!("must have at most {MAX_REWARDS_PER_EVENT} rewards"),
        );
    }
    for (i, reward) in event.rewards.iter().enumerate() {
        check_reward(&mut problems, &format!("rewards[{i}]."), reward);
    }
    problems.finish()
}

/// Checks a patch against the event it applies to (for the window, the merged values).
pub(crate) fn event_patch(
    patch: &EventPatch,
    current_starts_at: DateTime<Utc>,
    current_ends_at: DateTime<Utc>,
) -> Result<(), EventError> {
    let mut problems = Problems::default();
    if let Some(title) = &patch.title {
        check_title(&mut problems, title);
    }
    if let Some(description) = &patch.description {
        check_description(&mut problems, description.as_deref());
    }
    check_window(
        &mut problems,
        patch.starts_at.unwrap_or(current_starts_at),
        patch.ends_at.unwrap_or(current_ends_at),
    );
    if let Some(condition) = &patch.condition {
        check_condition(&mut problems, condition.as_ref());
    }
    problems.finish()
}

pub(crate) fn reward_input(reward: &RewardInput) -> Result<(), EventError> {
    let mut problems = Problems::default();
    check_reward(&mut problems, "", reward);
    problems.finish()
}

pub(crate) fn reward_patch(patch: &RewardPatch) -> Result<(), EventError> {
    let mut problems = Problems::default();
    check_reward_fields(
        &mut problems,
        "",
        patch.name.as_deref(),
        patch.item_code.as_ref().map(|c| c.as_deref()),
        patch.quantity,
        patch.stock,
    );
    problems.finish()
}

/// A batch of progress reports: 1 to 1000 items, each well-formed.
pub(crate) fn progress(items: &[ProgressItem], now: DateTime<Utc>) -> Result<(), EventError> {
    let mut problems = Problems::default();
    if items.is_empty() || items.len() > MAX_PROGRESS_ITEMS {
        problems.add(
            "items",
            format!("must have 1 to {MAX_PROGRESS_ITEMS} items"),
        );
    }
    let latest = now + Duration::minutes(FUTURE_TOLERANCE_MINUTES);
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        if item.user_id.is_empty() || chars(&item.user_id) > MAX_ID_CHARS {
            problems.add(
                field("userId"),
                format!("must be 1 to {MAX_ID_CHARS} characters"),
            );
        }
        if !conditions::is_valid_metric_name(&item.metric) {
            problems.add(field("metric"), "must match ^[a-z][a-z0-9_]{0,63}$");
        } else if [LOGIN_METRIC, LOGIN_DAYS, LOGIN_STREAK].contains(&item.metric.as_str()) {
            problems.add(field("metric"), "is built in and comes from logins");
        }
        if !(0..=MAX_PROGRESS_VALUE).contains(&item.value) {
            problems.add(
                field("value"),
                format!("must be between 0 and {MAX_PROGRESS_VALUE}"),
            );
        }
        if item.occurred_at > latest {
            problems.add(field("occurredAt"), "must not be in the future");
        }
        if let Some(key) = &item.key
            && (key.is_empty() || chars(key) > MAX_KEY_CHARS)
        {
            problems.add(
                field("key"),
                format!("must be 1 to {MAX_KEY_CHARS} characters"),
            );
        }
    }
    problems.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClaimPolicy, ProgressMode, RewardType};

    fn fields(result: Result<(), EventError>) -> Vec<String> {
        match result {
            Err(EventError::Validation(fields)) => fields.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn new_event_with(rewards: Vec<RewardInput>) -> NewEvent {
        let now = Utc::now();
        NewEvent {
            title: "Winter".into(),
            description: None,
            starts_at: Some(now),
            ends_at: Some(now + Duration::days(1)),
            claim_policy: ClaimPolicy::Auto,
            condition: None,
            draft: false,
            rewards,
        }
    }

    fn reward(quantity: i64, stock: Option<i64>) -> RewardInput {
        RewardInput {
            name: "Gold".into(),
            reward_type: RewardType::Currency,
            item_code: None,
            quantity,
            stock,
        }
    }

    #[test]
    fn event_fields_are_checked_and_named() {
        assert!(new_event(&new_event_with(vec![reward(1, None)])).is_ok());
        let mut bad = new_event_with(vec![reward(0, Some(-1)), reward(1, Some(5))]);
        bad.title = " ".into();
        bad.description = Some("x".repeat(5001));
        bad.ends_at = bad.starts_at;
        assert_eq!(
            fields(new_event(&bad)),
            [
                "title",
                "description",
                "endsAt",
                "rewards[0].quantity",
                "rewards[0].stock"
            ]
        );
        let mut long = new_event_with(vec![]);
        long.title = "t".repeat(201);
        long.starts_at = None;
        assert_eq!(fields(new_event(&long)), ["title", "startsAt"]);
    }

    #[test]
    fn patches_check_the_merged_window() {
        let now = Utc::now();
        let patch = EventPatch {
            starts_at: Some(now + Duration::days(2)),
            ..Default::default()
        };
        assert_eq!(
            fields(event_patch(&patch, now, now + Duration::days(1))),
            ["endsAt"]
        );
        assert!(event_patch(&EventPatch::default(), now, now + Duration::days(1)).is_ok());
    }

    #[test]
    fn progress_items_are_checked() {
        let now = Utc::now();
        let item = |metric: &str, value: i64| ProgressItem {
            user_id: "u1".into(),
            metric: metric.into(),
            value,
            mode: ProgressMode::Increment,
            occurred_at: now,
            key: None,
        };
        assert!(progress(&[item("kills", 3)], now).is_ok());
        assert_eq!(fields(progress(&[], now)), ["items"]);
        let mut future = item("kills", 1);
        future.occurred_at = now + Duration::hours(1);
        assert_eq!(
            fields(progress(
                &[
                    item("Kills", 1),
                    item("login_days", 1),
                    item("kills", -1),
                    future
                ],
                now
            )),
            [
                "items[0].metric",
                "items[1].metric",
                "items[2].value",
                "items[3].occurredAt"
            ]
        );
        let many: Vec<_> = (0..1001).map(|_| item("kills", 1)).collect();
        assert_eq!(fields(progress(&many, now)), ["items"]);
    }
}
