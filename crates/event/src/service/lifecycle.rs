//! The lifecycle records: EVENT_STARTED and EVENT_ENDED, once per event however many job
//! runners race.

use chrono::{DateTime, Utc};
use erp_platform::audit::AuditEntry;

use super::EventService;
use crate::error::EventError;
use crate::model::Milestone;
use crate::store::SYSTEM_ACTOR;
use crate::views::{EventSnapshotView, json};

/// Events handled per query of the lifecycle job.
const LIFECYCLE_PAGE: i64 = 100;

impl EventService {
    /// Writes the EVENT_STARTED / EVENT_ENDED records due at `now` that are not written yet;
    /// returns how many this run wrote.
    pub(crate) async fn record_milestones(&self, now: DateTime<Utc>) -> Result<u32, EventError> {
        let mut recorded = 0;
        // Started before ended, so an event found already over gets them in order.
        for milestone in Milestone::ALL {
            loop {
                let due = self
                    .catalog
                    .unrecorded(milestone, now, LIFECYCLE_PAGE)
                    .await?;
                for event in &due {
                    let audit = AuditEntry::new(
                        SYSTEM_ACTOR,
                        milestone.action(),
                        "event",
                        &event.id,
                        None,
                        Some(json(&EventSnapshotView::new(
                            &event.title,
                            event.starts_at,
                            event.ends_at,
                        ))),
                    );
                    if self
                        .catalog
                        .record_milestone(&event.id, milestone, &audit)
                        .await?
                    {
                        recorded += 1;
                    }
                }
                if i64::try_from(due.len()).unwrap_or(i64::MAX) < LIFECYCLE_PAGE {
                    break;
                }
            }
        }
        Ok(recorded)
    }
}
