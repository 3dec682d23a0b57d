//! Player activity: logins relayed by auth, progress reported by game servers, and conditions
//! evaluated against it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use erp_platform::audit::AuditEntry;
use erp_platform::identity::Caller;

use super::EventService;
use crate::access::{REPORTERS, owner_or_staff, require};
use crate::conditions::{self, Evaluation, LOGIN_METRIC, Span};
use crate::error::EventError;
use crate::model::{Event, ProgressItem, ProgressMode};
use crate::store::Applied;
use crate::validate;
use crate::views::{ProgressReportView, json};

impl EventService {
    /// A login reported by auth's outbox; the outbox id makes it idempotent.
    pub(crate) async fn record_login(
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
            .apply(
                &[ProgressItem {
                    user_id: user_id.to_owned(),
                    metric: LOGIN_METRIC.to_owned(),
                    value: 1,
                    mode: ProgressMode::Increment,
                    occurred_at,
                    key: Some(format!("login:{idempotency_key}")),
                }],
                None,
            )
            .await?;
        Ok(applied.duplicates > 0)
    }

    /// Progress from game servers (service accounts) or operators. An accepted batch is audited
    /// as PROGRESS_REPORTED with the caller as actor, in the transaction that applies it (right
    /// after, for a batch without keys, which needs none); a refused batch is not.
    pub(crate) async fn report_progress(
        &self,
        caller: Option<&Caller>,
        mut items: Vec<ProgressItem>,
    ) -> Result<Applied, EventError> {
        let caller = require(caller, REPORTERS)?;
        validate::progress(&items, Utc::now())?;
        for item in &mut items {
            // Keys of reports live apart from login keys.
            item.key = item.key.take().map(|k| format!("progress:{k}"));
        }
        let batch_id = uuid::Uuid::now_v7().to_string();
        let metrics: BTreeSet<&str> = items.iter().map(|i| i.metric.as_str()).collect();
        let audit = |applied: Applied| {
            AuditEntry::new(
                &caller.user_id,
                "PROGRESS_REPORTED",
                "progress",
                &batch_id,
                None,
                Some(json(&ProgressReportView {
                    items: items.len(),
                    accepted: applied.accepted,
                    duplicates: applied.duplicates,
                    metrics: metrics.iter().copied().collect(),
                })),
            )
        };
        let applied = self.activity.apply(&items, Some(&audit)).await?;
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
    pub(crate) async fn evaluate(
        &self,
        event: &Event,
        user_id: &str,
    ) -> Result<Evaluation, EventError> {
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

    pub(crate) async fn progress(
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
        owner_or_staff(caller, user_id)?;
        let event = self.visible_event(caller, event_id).await?;
        self.evaluate(&event, user_id).await
    }
}
