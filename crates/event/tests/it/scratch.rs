//! The suite cleans up after itself: a test's database is gone once its instances are.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tests_database_is_dropped_when_it_ends() {
    let service = TestEvent::start().await;
    service.create(active_event_request("scratch")).await;
    let name = service.database.clone();
    let client = mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
        .await
        .unwrap();
    let exists = || async { client.list_database_names().await.unwrap().contains(&name) };
    assert!(exists().await, "{name} exists while the test runs");
    drop(service);
    eventually(
        Duration::from_secs(10),
        "the database is dropped",
        || async { (!exists().await).then_some(()) },
    )
    .await;
}
