//! In-process caches of hot catalog reads, kept coherent across replicas.
//!
//! Every write evicts locally at once and publishes an invalidation on Redis; every replica
//! evicts when it hears it, and drops everything when its subscription (re)connects, since it may
//! have missed messages meanwhile. So a read after a write returns the old version from another
//! replica only for the pub/sub delivery time (milliseconds); entries also expire after the
//! configured TTL as a last bound, and event lists after a short TTL because a list filtered by
//! status changes with the clock.

use std::sync::Arc;
use std::time::Duration;

use erp_platform::pagination::Page;
use erp_platform::redis::RedisStore;
use moka::future::Cache;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::error::EventError;
use crate::model::{Event, Reward};
use crate::store::EventQuery;

/// A catalog change, as published to the other replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Invalidation {
    /// An event or its rewards changed.
    #[serde(rename_all = "camelCase")]
    Event { event_id: String },
}

#[derive(Clone)]
pub struct CatalogCache {
    events: Cache<String, Option<Arc<Event>>>,
    rewards: Cache<String, Arc<Vec<Reward>>>,
    lists: Cache<EventQuery, Arc<Page<Event>>>,
    redis: RedisStore,
    requests: IntCounterVec,
}

impl CatalogCache {
    pub fn new(
        ttl: Duration,
        list_ttl: Duration,
        redis: RedisStore,
        requests: IntCounterVec,
    ) -> Self {
        Self {
            events: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            rewards: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            lists: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(list_ttl)
                .build(),
            redis,
            requests,
        }
    }

    pub fn channel(&self) -> String {
        self.redis.key("event:catalog")
    }

    fn count(&self, cache: &str, hit: bool) {
        self.requests
            .with_label_values(&[cache, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// Reads through `cache`. A hit is a plain lookup by the borrowed key; a miss goes through
    /// the entry API, which owns its key and makes concurrent misses of one key share a single
    /// `load` (a popular event evicted by a write is loaded once, not once per waiting request).
    async fn read_through<K, Q, V, F, Fut>(
        &self,
        cache: &Cache<K, V>,
        name: &str,
        key: &Q,
        load: F,
    ) -> Result<V, EventError>
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq + Send + Sync + 'static,
        Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
        V: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, EventError>>,
    {
        if let Some(cached) = cache.get(key).await {
            self.count(name, true);
            return Ok(cached);
        }
        let entry = cache
            .entry(key.to_owned())
            .or_try_insert_with(load())
            .await
            .map_err(|error| error.duplicate())?;
        self.count(name, !entry.is_fresh());
        Ok(entry.into_value())
    }

    pub async fn event<F, Fut>(&self, id: &str, load: F) -> Result<Option<Arc<Event>>, EventError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Event>, EventError>>,
    {
        self.read_through(&self.events, "event", id, || async move {
            Ok(load().await?.map(Arc::new))
        })
        .await
    }

    pub async fn rewards<F, Fut>(
        &self,
        event_id: &str,
        load: F,
    ) -> Result<Arc<Vec<Reward>>, EventError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Reward>, EventError>>,
    {
        self.read_through(&self.rewards, "rewards", event_id, || async move {
            Ok(Arc::new(load().await?))
        })
        .await
    }

    pub async fn list<F, Fut>(
        &self,
        query: &EventQuery,
        load: F,
    ) -> Result<Arc<Page<Event>>, EventError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Page<Event>, EventError>>,
    {
        self.read_through(&self.lists, "event_list", query, || async move {
            Ok(Arc::new(load().await?))
        })
        .await
    }

    /// Evicts what `invalidation` names, here only.
    pub async fn evict(&self, invalidation: &Invalidation) {
        match invalidation {
            Invalidation::Event { event_id } => {
                self.events.invalidate(event_id).await;
                self.rewards.invalidate(event_id).await;
                self.lists.invalidate_all();
            }
        }
    }

    pub fn evict_all(&self) {
        self.events.invalidate_all();
        self.rewards.invalidate_all();
        self.lists.invalidate_all();
    }

    /// Evicts here and tells the other replicas. A failed publish is logged: the TTL still bounds
    /// how long other replicas can serve the old version.
    pub async fn changed(&self, invalidation: Invalidation) {
        self.evict(&invalidation).await;
        let Ok(message) = serde_json::to_string(&invalidation) else {
            return;
        };
        let mut connection = self.redis.connection();
        let published = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(message)
            .query_async::<()>(&mut connection)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "cannot publish a cache invalidation");
        }
    }
}
