//! The event service's use cases, one area per file: [`events`], [`rewards`], [`activity`],
//! [`claims`] and their [`decisions`], the [`audit`] trail, the [`dashboard`] and the events'
//! [`lifecycle`] records. Transport
//! calls in with domain values; the stores persist; access rules are in `crate::access`.

mod activity;
mod audit;
mod claims;
mod dashboard;
mod decisions;
mod deliveries;
mod events;
mod grants;
mod lifecycle;
mod rewards;

use std::sync::Arc;
use std::time::Duration;

use erp_platform::identity::Caller;

use crate::access::sees_drafts;
use crate::cache::{CatalogCache, Invalidation};
use crate::claims::ClaimSettings;
use crate::claims::batcher::ClaimBatcher;
use crate::error::EventError;
use crate::metrics::EventMetrics;
use crate::model::{Event, Publication};
use crate::store::{ActivityStore, CatalogStore, ClaimStore, DeliveryStore, TallyStore};

pub(crate) struct EventService {
    catalog: CatalogStore,
    activity: ActivityStore,
    claims: ClaimStore,
    tallies: TallyStore,
    /// The deliveries the claim transactions write (same database as the claims).
    deliveries: DeliveryStore,
    /// Wakes this replica's dispatcher when a delivery becomes due.
    delivery_wake: Arc<tokio::sync::Notify>,
    batcher: Arc<ClaimBatcher>,
    cache: CatalogCache,
    metrics: EventMetrics,
    /// How long after its event ends a pending claim waits before it expires.
    pending_expiry: Duration,
    denial_audit_window: Duration,
}

impl EventService {
    pub(crate) fn new(
        catalog: CatalogStore,
        activity: ActivityStore,
        claims: ClaimStore,
        tallies: TallyStore,
        cache: CatalogCache,
        metrics: EventMetrics,
        settings: ClaimSettings,
    ) -> Self {
        let batcher = Arc::new(ClaimBatcher::new(
            claims.clone(),
            cache.clone(),
            metrics.clone(),
            &settings,
        ));
        Self {
            catalog,
            activity,
            deliveries: claims.deliveries(),
            delivery_wake: Arc::default(),
            claims,
            tallies,
            batcher,
            cache,
            metrics,
            pending_expiry: settings.pending_expiry,
            denial_audit_window: settings.denial_audit_window,
        }
    }

    pub(crate) fn cache(&self) -> &CatalogCache {
        &self.cache
    }

    pub(crate) fn tallies(&self) -> &TallyStore {
        &self.tallies
    }

    pub(crate) fn deliveries(&self) -> &DeliveryStore {
        &self.deliveries
    }

    /// What wakes a dispatcher of this replica when a delivery becomes due.
    pub(crate) fn delivery_wake(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.delivery_wake)
    }

    pub(crate) fn metrics(&self) -> &EventMetrics {
        &self.metrics
    }

    /// Runs a catalog change and counts it by operation and outcome.
    async fn observed<T>(
        &self,
        operation: &str,
        change: impl Future<Output = Result<T, EventError>>,
    ) -> Result<T, EventError> {
        let result = change.await;
        self.observe(operation, &result);
        result
    }

    /// Tells every replica's cache that `event_id` or its rewards changed.
    async fn changed(&self, event_id: &str) {
        self.cache
            .changed(Invalidation::Event {
                event_id: event_id.to_owned(),
            })
            .await;
    }

    /// The event as stored (not cached): a change starts from what is stored.
    async fn stored_event(&self, id: &str) -> Result<Event, EventError> {
        self.catalog
            .find_event(id)
            .await?
            .ok_or(EventError::NotFound("event"))
    }

    /// Counts a catalog change by operation and outcome.
    fn observe<T>(&self, operation: &str, result: &Result<T, EventError>) {
        let label = match result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        self.metrics
            .catalog_operations
            .with_label_values(&[operation, label])
            .inc();
    }

    async fn load_event(&self, id: &str) -> Result<Option<Arc<Event>>, EventError> {
        self.cache.event(id, || self.catalog.find_event(id)).await
    }

    /// The event if `caller` may see it.
    async fn visible_event(
        &self,
        caller: Option<&Caller>,
        id: &str,
    ) -> Result<Arc<Event>, EventError> {
        match self.load_event(id).await? {
            Some(event) if event.publication != Publication::Draft || sees_drafts(caller) => {
                Ok(event)
            }
            _ => Err(EventError::NotFound("event")),
        }
    }
}
