//! The event service's business metrics.

use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct EventMetrics {
    /// `operation`: create_event, update_event, ...; `result`: ok, or the error code.
    pub catalog_operations: IntCounterVec,
    /// `cache`: event, rewards, event_list; `result`: hit, miss.
    pub cache_requests: IntCounterVec,
    /// `result`: accepted, duplicate.
    pub progress_items: IntCounterVec,
}

impl EventMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            catalog_operations: IntCounterVec::new(
                Opts::new(
                    "erp_event_catalog_operations_total",
                    "Event and reward operations by result",
                ),
                &["operation", "result"],
            )?,
            cache_requests: IntCounterVec::new(
                Opts::new(
                    "erp_event_cache_requests_total",
                    "In-process catalog cache lookups by result",
                ),
                &["cache", "result"],
            )?,
            progress_items: IntCounterVec::new(
                Opts::new(
                    "erp_event_progress_items_total",
                    "Reported activity items by result",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(metrics.catalog_operations.clone()))?;
        registry.register(Box::new(metrics.cache_requests.clone()))?;
        registry.register(Box::new(metrics.progress_items.clone()))?;
        Ok(metrics)
    }
}
