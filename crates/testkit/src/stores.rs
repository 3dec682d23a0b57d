//! A test's own corner of the shared test stores, dropped when the test ends.
//!
//! Every test that writes to the real MongoDB or Redis should own a [`TestStores`]: it names the
//! databases and the Redis key prefix the test (or the service processes it starts) writes to,
//! unique across tests and concurrent test processes, and drops them when it goes out of scope —
//! when the test passes *and* when it panics (dropping runs during unwinding). Without it, every
//! run leaves its databases behind and later runs slow down.
//!
//! ```no_run
//! # async fn example() {
//! use erp_testkit::{TestStores, grpc_service_env};
//!
//! let stores = TestStores::new("orders");
//! // A database of the test's own (registered for dropping) and the Redis prefix `<name>:`.
//! let database = stores.database("event");
//! let env = grpc_service_env("ERP_EVENT_ADDR", &database);
//! // ... start processes with `env`, or connect to `stores.mongodb_uri()` directly ...
//!
//! // Explicitly, to wait for the cleanup (e.g. to assert on it); dropping does the same.
//! stores.drop_all().await;
//! # }
//! ```
//!
//! Notes for adopters:
//!
//! - Drop (or [`TestStores::drop_all`]) *after* whatever writes to the stores has stopped:
//!   declare the `TestStores` before the processes or clients that use it (locals and fields
//!   drop in reverse order of declaration for locals, in declaration order for struct fields), so
//!   that they are gone first. [`crate::ServiceProcess`] waits for its process to die when
//!   dropped, so a process dropped before the stores cannot write after the cleanup.
//! - Keys are deleted with `SCAN MATCH <prefix>*` + `UNLINK` on the Redis at
//!   [`TestStores::redis_url`]; a test that points its processes at another Redis (e.g.
//!   [`crate::PrivateRedis`]) has nothing to clean there (that server dies with the test).
//! - `ERP_TEST_KEEP_STORES=1` keeps everything (to look at what a failing test left); the names
//!   are printed.
//! - Cleanup failures (a store that is down, as in outage tests) are printed, never panicked on:
//!   a failed cleanup must not hide the test's own result.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::unique_name;

/// Databases and a Redis key prefix of one test's own, dropped when it is dropped.
#[derive(Debug)]
pub struct TestStores {
    name: String,
    mongodb_uri: String,
    redis_url: String,
    databases: Mutex<Vec<String>>,
    /// Why the databases must outlive the test ([`TestStores::leave_databases`]), if they must.
    databases_left: Mutex<Option<&'static str>>,
    cleaned: bool,
}

impl TestStores {
    /// A fresh name from `prefix` ([`unique_name`], at most 40 characters for a short prefix) on
    /// the test stores ([`crate::mongodb_uri`], [`crate::redis_url`]).
    pub fn new(prefix: &str) -> Self {
        Self::on(prefix, crate::mongodb_uri(), crate::redis_url())
    }

    /// Like [`TestStores::new`] on other stores.
    pub fn on(prefix: &str, mongodb_uri: String, redis_url: String) -> Self {
        Self {
            name: unique_name(prefix),
            mongodb_uri,
            redis_url,
            databases: Mutex::new(Vec::new()),
            databases_left: Mutex::new(None),
            cleaned: false,
        }
    }

    /// The unique name everything of this test is named after.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database `<name>_<suffix>`, registered to be dropped (e.g. `database("auth")`).
    pub fn database(&self, suffix: &str) -> String {
        let database = format!("{}_{suffix}", self.name);
        self.adopt_database(&database);
        database
    }

    /// Registers a database named elsewhere to be dropped too.
    pub fn adopt_database(&self, database: &str) {
        let mut databases = self.databases.lock().unwrap();
        if !databases.iter().any(|d| d == database) {
            databases.push(database.to_owned());
        }
    }

    /// The databases registered so far.
    pub fn databases(&self) -> Vec<String> {
        self.databases.lock().unwrap().clone()
    }

    /// The Redis key prefix of this test, `<name>:` (`ERP_REDIS_KEY_PREFIX` of its processes).
    pub fn redis_prefix(&self) -> String {
        format!("{}:", self.name)
    }

    pub fn mongodb_uri(&self) -> &str {
        &self.mongodb_uri
    }

    pub fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// Drops the registered databases and deletes the keys under the prefix now. Whatever fails
    /// is printed, not panicked on.
    pub async fn drop_all(mut self) {
        self.cleaned = true;
        if keep() {
            self.report_kept();
            return;
        }
        for problem in cleanup(&self.mongodb_uri, &self.redis_url, &self.cleanup_plan()).await {
            eprintln!("TestStores {}: {problem}", self.name);
        }
    }

    /// Keeps the databases when the test ends (its Redis keys are still deleted), saying `why`.
    /// For tests that kill a service or cut its store connection mid-transaction: the test store
    /// (SecantusDB) keeps such an orphaned transaction open, and a `dropDatabase` queued behind it
    /// was seen to stall every later database operation of the store, failing unrelated tests.
    pub fn leave_databases(&self, why: &'static str) {
        *self
            .databases_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn cleanup_plan(&self) -> Plan {
        let left = *self
            .databases_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(why) = left {
            eprintln!(
                "TestStores {}: databases {:?} left behind: {why}",
                self.name,
                self.databases()
            );
        }
        Plan {
            databases: if left.is_some() {
                Vec::new()
            } else {
                self.databases()
            },
            redis_prefix: self.redis_prefix(),
        }
    }

    fn report_kept(&self) {
        eprintln!(
            "ERP_TEST_KEEP_STORES: kept databases {:?} and Redis keys {}*",
            self.databases(),
            self.redis_prefix()
        );
    }
}

impl Drop for TestStores {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if keep() {
            self.report_kept();
            return;
        }
        // Drop cannot await, and may run on a runtime's thread (which must not block on another
        // future of its own runtime): clean up on a thread with a runtime of its own.
        let (mongodb_uri, redis_url, plan, name) = (
            self.mongodb_uri.clone(),
            self.redis_url.clone(),
            self.cleanup_plan(),
            self.name.clone(),
        );
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the store cleanup");
            for problem in runtime.block_on(cleanup(&mongodb_uri, &redis_url, &plan)) {
                eprintln!("TestStores {name}: {problem}");
            }
        });
        if cleaner.join().is_err() {
            eprintln!("TestStores {}: the cleanup panicked", self.name);
        }
    }
}

fn keep() -> bool {
    std::env::var("ERP_TEST_KEEP_STORES").is_ok_and(|v| v == "1")
}

struct Plan {
    databases: Vec<String>,
    redis_prefix: String,
}

/// How long one store may take to answer the cleanup (a store cut by an outage test is skipped).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

async fn cleanup(mongodb_uri: &str, redis_url: &str, plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    if !plan.databases.is_empty() {
        match tokio::time::timeout(
            CLEANUP_TIMEOUT,
            drop_databases(mongodb_uri, &plan.databases),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => problems.push(format!(
                "databases {:?} not dropped: {error}",
                plan.databases
            )),
            Err(_) => problems.push(format!(
                "databases {:?} not dropped within {CLEANUP_TIMEOUT:?}",
                plan.databases
            )),
        }
    }
    match tokio::time::timeout(CLEANUP_TIMEOUT, delete_keys(redis_url, &plan.redis_prefix)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            problems.push(format!("keys {}* not deleted: {error}", plan.redis_prefix))
        }
        Err(_) => problems.push(format!(
            "keys {}* not deleted within {CLEANUP_TIMEOUT:?}",
            plan.redis_prefix
        )),
    }
    problems
}

async fn drop_databases(uri: &str, databases: &[String]) -> mongodb::error::Result<()> {
    let mut options = mongodb::options::ClientOptions::parse(uri).await?;
    options.server_selection_timeout = Some(Duration::from_secs(3));
    options.app_name = Some("erp-testkit-cleanup".to_owned());
    let client = mongodb::Client::with_options(options)?;
    for database in databases {
        client.database(database).drop().await?;
    }
    client.shutdown().await;
    Ok(())
}

/// Deletes every key under `prefix`; how many there were.
pub(crate) async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{}*", glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let _: usize = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
            deleted += keys.len();
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `text` with Redis glob metacharacters escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape("a_1:"), "a_1:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn names_are_unique_and_databases_registered_once() {
        let stores = TestStores::new("ts");
        let other = TestStores::new("ts");
        assert_ne!(stores.name(), other.name());
        let auth = stores.database("auth");
        assert_eq!(auth, format!("{}_auth", stores.name()));
        stores.adopt_database(&auth);
        assert_eq!(stores.databases(), [auth]);
        assert_eq!(stores.redis_prefix(), format!("{}:", stores.name()));
        // Nothing was written: skip the cleanup (this test needs no stores).
        std::mem::forget(stores);
        std::mem::forget(other);
    }

    async fn leave_something(
        stores: &TestStores,
    ) -> (mongodb::Client, redis::aio::MultiplexedConnection) {
        let mongo = mongodb::Client::with_uri_str(stores.mongodb_uri())
            .await
            .unwrap();
        mongo
            .database(&stores.database("a"))
            .collection::<mongodb::bson::Document>("things")
            .insert_one(mongodb::bson::doc! {"x": 1})
            .await
            .unwrap();
        let mut redis = redis::Client::open(stores.redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for key in ["one", "two"] {
            let () = redis::cmd("SET")
                .arg(format!("{}{key}", stores.redis_prefix()))
                .arg(1)
                .query_async(&mut redis)
                .await
                .unwrap();
        }
        (mongo, redis)
    }

    async fn left_behind(
        mongo: &mongodb::Client,
        redis: &mut redis::aio::MultiplexedConnection,
        database: &str,
        prefix: &str,
    ) -> (bool, usize) {
        let names = mongo.list_database_names().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", glob_escape(prefix)))
            .query_async(redis)
            .await
            .unwrap();
        (names.iter().any(|n| n == database), keys.len())
    }

    /// Needs the test stores (scripts/stores.sh).
    #[tokio::test]
    async fn drop_all_and_dropping_leave_nothing_behind() {
        let stores = TestStores::new("ts_drop");
        let (database, prefix) = (format!("{}_a", stores.name()), stores.redis_prefix());
        let (mongo, mut redis) = leave_something(&stores).await;
        assert_eq!(
            left_behind(&mongo, &mut redis, &database, &prefix).await,
            (true, 2)
        );
        stores.drop_all().await;
        assert_eq!(
            left_behind(&mongo, &mut redis, &database, &prefix).await,
            (false, 0)
        );

        // The same when the test just ends (here: a scope), on a runtime's thread.
        let stores = TestStores::new("ts_drop");
        let (database, prefix) = (format!("{}_a", stores.name()), stores.redis_prefix());
        let (mongo, mut redis) = leave_something(&stores).await;
        drop(stores);
        assert_eq!(
            left_behind(&mongo, &mut redis, &database, &prefix).await,
            (false, 0)
        );
    }
}
