//! The catalog cache against a real Redis: a read loads once, later reads are hits that do not
//! load, and every read is counted as a hit or a miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use erp_event::testing::{CatalogCache, EventError, EventQuery, Invalidation};
use erp_platform::config::RedisConfig;
use erp_platform::pagination::Page;
use erp_platform::redis::RedisStore;
use prometheus::{IntCounterVec, Opts};

use crate::common::Scratch;

/// A cache on a Redis key prefix of its own (removed when the returned [`Scratch`] drops).
fn cache() -> (CatalogCache, IntCounterVec, Arc<Scratch>) {
    let scratch = Scratch::redis_only("cache-test");
    let redis = RedisStore::connect(&RedisConfig {
        url: erp_testkit::redis_url(),
        key_prefix: scratch.redis_prefix(),
    })
    .unwrap();
    let requests =
        IntCounterVec::new(Opts::new("requests", "cache reads"), &["cache", "result"]).unwrap();
    let cache = CatalogCache::new(
        Duration::from_secs(60),
        Duration::from_secs(60),
        redis,
        requests.clone(),
    );
    (cache, requests, scratch)
}

fn counted(requests: &IntCounterVec, cache: &str, result: &str) -> u64 {
    requests.with_label_values(&[cache, result]).get()
}

#[tokio::test]
async fn later_reads_are_hits_that_do_not_load() {
    let (cache, requests, _scratch) = cache();
    let loads = AtomicUsize::new(0);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, EventError>(None)
    };
    for _ in 0..3 {
        assert!(cache.event("e1", load).await.unwrap().is_none());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for three reads");
    assert_eq!(counted(&requests, "event", "miss"), 1);
    assert_eq!(counted(&requests, "event", "hit"), 2);

    // Another key is another miss.
    assert!(cache.event("e2", load).await.unwrap().is_none());
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(counted(&requests, "event", "miss"), 2);

    let reward_loads = AtomicUsize::new(0);
    for _ in 0..2 {
        let rewards = cache
            .rewards("e1", || async {
                reward_loads.fetch_add(1, Ordering::SeqCst);
                Ok(Vec::new())
            })
            .await
            .unwrap();
        assert!(rewards.is_empty());
    }
    assert_eq!(reward_loads.load(Ordering::SeqCst), 1);
    assert_eq!(counted(&requests, "rewards", "miss"), 1);
    assert_eq!(counted(&requests, "rewards", "hit"), 1);

    let query = EventQuery {
        status: None,
        include_drafts: false,
        limit: 20,
        cursor: None,
    };
    let list_loads = AtomicUsize::new(0);
    for _ in 0..2 {
        let page = cache
            .list(&query, || async {
                list_loads.fetch_add(1, Ordering::SeqCst);
                Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                })
            })
            .await
            .unwrap();
        assert!(page.items.is_empty());
    }
    assert_eq!(list_loads.load(Ordering::SeqCst), 1);
    assert_eq!(counted(&requests, "event_list", "miss"), 1);
    assert_eq!(counted(&requests, "event_list", "hit"), 1);
}

#[tokio::test]
async fn an_evicted_event_is_loaded_again() {
    let (cache, requests, _scratch) = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = || {
        let loads = Arc::clone(&loads);
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, EventError>(None)
        }
    };
    cache.event("e1", load).await.unwrap();
    cache.event("e1", load).await.unwrap();
    cache
        .evict(&Invalidation::Event {
            event_id: "e1".to_owned(),
        })
        .await;
    cache.event("e1", load).await.unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(counted(&requests, "event", "miss"), 2);
    assert_eq!(counted(&requests, "event", "hit"), 1);
}
