//! Logins reach the event service through the outbox: none is lost while event is down, and
//! each arrives exactly once when it is back.

use std::time::Duration;

use crate::common::{TestAuth, service_env};
use erp_platform::{Env, Shutdown};
use erp_testkit::{TestStores, mongodb_uri};
use mongodb::bson::{Document, doc};

async fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    erp_testkit::sample(&erp_testkit::scrape(admin).await, series).unwrap_or(0.0)
}

#[tokio::test]
async fn logins_made_while_event_is_down_arrive_exactly_once() {
    // The event service is bound (its address known) but not serving yet: calls to it fail.
    let event_stores = TestStores::new("outbox");
    let event_env = service_env(&event_stores, "ERP_EVENT_ADDR", "event");
    let event_database = event_stores.database("event");
    let event_app =
        erp_event::App::build(erp_event::Config::from_env(&Env::from_pairs(event_env)).unwrap())
            .await
            .unwrap();
    let event_url = format!("http://{}", event_app.grpc_addr().unwrap());
    let auth = TestAuth::start(&[
        ("ERP_EVENT_URL", &event_url),
        // Short enough that calls to the silent event service fail fast, long enough that a
        // login (several store writes) never hits it on a busy machine.
        ("ERP_GRPC_TIMEOUT_MS", "2000"),
    ])
    .await;

    let user = auth.register("outbox@example.com", "password-123").await;
    auth.login("outbox@example.com", "password-123")
        .await
        .unwrap();

    // The relay tries, fails, and keeps the login.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(
        auth.admin_addr,
        "erp_auth_outbox_deliveries_total{result=\"failed\"}",
    )
    .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never tried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
    let outbox = client
        .database(&auth.database)
        .collection::<Document>("login_outbox");
    assert_eq!(
        outbox
            .count_documents(doc! { "delivered_at": null })
            .await
            .unwrap(),
        1
    );
    // The relay refreshes the backlog gauge after each pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(auth.admin_addr, "erp_auth_outbox_backlog").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog gauge never showed the waiting login"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Event comes up; the login arrives.
    let shutdown = Shutdown::new();
    let event_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { event_app.run(shutdown).await.unwrap() }
    });
    let buckets = client
        .database(&event_database)
        .collection::<Document>("activity_buckets");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if buckets
            .count_documents(doc! { "user_id": &user.id, "metric": "login" })
            .await
            .unwrap()
            == 1
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the login never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the relay has marked the login delivered it sends it no more: count then (a
    // duplicate delivery would have happened before the mark).
    let outbox_drained = || async {
        let waiting = outbox
            .count_documents(doc! { "delivered_at": null })
            .await
            .unwrap();
        if waiting == 0 { Ok(()) } else { Err(waiting) }
    };
    erp_testkit::eventually(Duration::from_secs(10), outbox_drained).await;
    let bucket = buckets
        .find_one(doc! { "user_id": &user.id, "metric": "login" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bucket.get_i64("sum").unwrap(), 1);
    assert_eq!(
        outbox
            .count_documents(doc! { "delivered_at": null })
            .await
            .unwrap(),
        0
    );
    assert!(
        metric(
            auth.admin_addr,
            "erp_auth_outbox_deliveries_total{result=\"delivered\"}"
        )
        .await
            >= 1.0
    );
    let client_calls = metric(
        auth.admin_addr,
        "erp_grpc_client_requests_total{code=\"OK\",method=\"/erp.event.v1.EventService/RecordActivity\",service=\"event\"}",
    )
    .await;
    assert!(
        client_calls >= 1.0,
        "client-side gRPC metrics count the delivery"
    );

    // A second login while event is up arrives too, counted once more (same day: one login day).
    auth.login("outbox@example.com", "password-123")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bucket = buckets
            .find_one(doc! { "user_id": &user.id, "metric": "login" })
            .await
            .unwrap()
            .unwrap();
        if bucket.get_i64("sum").unwrap() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second login never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.trigger();
    event_task.await.unwrap();
}
