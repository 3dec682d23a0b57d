//! Background jobs, run every `ERP_JOBS_INTERVAL_SECS` by the leader: expiring pending claims
//! whose event ended too long ago, recording EVENT_STARTED / EVENT_ENDED once per event, and
//! folding the deltas of the dashboard's figures into its rollups. Each is idempotent
//! (conditional updates in transactions with what they record), so two runners overlapping
//! change nothing twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use erp_platform::Shutdown;
use erp_platform::cluster::LeaderElection;

use crate::error::EventError;
use crate::service::EventService;

/// The jobs, as `erp_event_job_runs_total` names them.
const JOBS: [&str; 3] = ["expire_pending", "lifecycle", "tally_claims"];

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    /// False when this process is not the leader (nothing ran).
    pub ran: bool,
    pub claims_expired: u32,
    pub milestones_recorded: u32,
    /// Deltas of the dashboard's figures folded into its rollups.
    pub tally_deltas_folded: u32,
}

#[derive(Clone)]
pub struct Jobs {
    service: Arc<EventService>,
    leader: Arc<dyn LeaderElection>,
    interval: Duration,
}

impl Jobs {
    pub(crate) fn new(
        service: Arc<EventService>,
        leader: Arc<dyn LeaderElection>,
        interval: Duration,
    ) -> Self {
        Self {
            service,
            leader,
            interval,
        }
    }

    /// Runs every job once if this process leads; the first error is returned after every job
    /// had its turn.
    pub async fn run_once(&self) -> Result<JobReport, EventError> {
        let metrics = &self.service.metrics().job_runs;
        if !self.leader.is_leader() {
            for job in JOBS {
                metrics.with_label_values(&[job, "skipped"]).inc();
            }
            return Ok(JobReport::default());
        }
        let now = Utc::now();
        let expired = self.service.expire_pending(now).await;
        let recorded = self.service.record_milestones(now).await;
        // Last, so the claims just expired are folded too.
        let tallied = self.service.tallies().fold().await;
        for (job, failed) in
            JOBS.into_iter()
                .zip([expired.is_err(), recorded.is_err(), tallied.is_err()])
        {
            metrics
                .with_label_values(&[job, if failed { "error" } else { "ok" }])
                .inc();
        }
        Ok(JobReport {
            ran: true,
            claims_expired: expired?,
            milestones_recorded: recorded?,
            tally_deltas_folded: tallied?,
        })
    }

    /// Runs the jobs every interval (the first run at once) until `shutdown`.
    pub async fn run_until(self, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.triggered() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                () = shutdown.triggered() => return,
                report = self.run_once() => {
                    if let Err(error) = report {
                        tracing::warn!(%error, "background jobs failed; retrying next interval");
                    }
                }
            }
        }
    }
}
