//! Activity and conditions over gRPC against the real stores: idempotent logins, progress
//! reports (concurrent increments sum exactly, duplicate keys change nothing), and evaluation.

use crate::common::*;
use chrono::Utc;
use erp_proto::event::v1 as pb;
use mongodb::bson::{Document, doc};

fn item(
    user: &str,
    metric: &str,
    value: i64,
    mode: pb::ProgressMode,
    key: Option<&str>,
) -> pb::ProgressItem {
    pb::ProgressItem {
        user_id: user.into(),
        metric: metric.into(),
        value,
        mode: mode as i32,
        occurred_at: None,
        key: key.map(str::to_owned),
    }
}

async fn try_report(
    service: &TestEvent,
    items: Vec<pb::ProgressItem>,
) -> Result<pb::ReportProgressResponse, tonic::Status> {
    service
        .client()
        .report_progress(as_caller(&operator(), pb::ReportProgressRequest { items }))
        .await
        .map(tonic::Response::into_inner)
}

async fn report(service: &TestEvent, items: Vec<pb::ProgressItem>) -> pb::ReportProgressResponse {
    try_report(service, items).await.unwrap()
}

async fn progress(service: &TestEvent, event_id: &str, user: &str) -> pb::GetProgressResponse {
    service
        .client()
        .get_progress(as_caller(
            &player(user),
            pb::GetProgressRequest {
                event_id: event_id.into(),
                user_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn progress_is_evaluated_against_the_condition() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("hunt");
    request.condition = Some(all(vec![
        leaf("kills", pb::ComparisonOp::Gte, 10),
        leaf("level", pb::ComparisonOp::Gte, 5),
        leaf("login_days", pb::ComparisonOp::Gte, 1),
    ]));
    let (event, _) = service.create(request).await;

    let before = progress(&service, &event.id, "hunter").await;
    assert!(!before.passed);
    assert_eq!(before.user_id, "hunter");
    assert_eq!(
        before.details.iter().map(|d| d.actual).collect::<Vec<_>>(),
        [0, 0, 0]
    );

    report(
        &service,
        vec![
            item("hunter", "kills", 6, pb::ProgressMode::Increment, None),
            item("hunter", "kills", 4, pb::ProgressMode::Increment, None),
            item("hunter", "level", 3, pb::ProgressMode::Max, None),
            item("hunter", "level", 7, pb::ProgressMode::Max, None),
            item("hunter", "level", 2, pb::ProgressMode::Max, None),
            item(
                "someone-else",
                "kills",
                100,
                pb::ProgressMode::Increment,
                None,
            ),
        ],
    )
    .await;
    service
        .client_as(Service::Auth)
        .record_activity(pb::RecordActivityRequest {
            idempotency_key: "outbox-1".into(),
            user_id: "hunter".into(),
            kind: pb::ActivityKind::Login as i32,
            occurred_at: ts(Utc::now()),
        })
        .await
        .unwrap();

    let after = progress(&service, &event.id, "hunter").await;
    assert_eq!(
        after.details.iter().map(|d| d.actual).collect::<Vec<_>>(),
        [10, 7, 1]
    );
    assert!(after.details.iter().all(|d| d.passed));
    assert!(after.passed);

    // Activity before the event's window does not count toward EVENT conditions.
    let old = pb::ProgressItem {
        occurred_at: ts(Utc::now() - chrono::Duration::days(30)),
        ..item("late", "kills", 50, pb::ProgressMode::Increment, None)
    };
    report(&service, vec![old]).await;
    assert_eq!(
        progress(&service, &event.id, "late").await.details[0].actual,
        0
    );

    // Players read only their own progress; staff may read anyone's.
    let other = service
        .client()
        .get_progress(as_caller(
            &player("nosy"),
            pb::GetProgressRequest {
                event_id: event.id.clone(),
                user_id: "hunter".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&other), "FORBIDDEN");
    let staff = service
        .client()
        .get_progress(as_caller(
            &auditor(),
            pb::GetProgressRequest {
                event_id: event.id.clone(),
                user_id: "hunter".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(staff.passed);
}

#[tokio::test]
async fn logins_are_idempotent_by_outbox_id() {
    let service = TestEvent::start().await;
    let record = |key: &str| {
        let mut client = service.client_as(Service::Auth);
        let request = pb::RecordActivityRequest {
            idempotency_key: key.into(),
            user_id: "u1".into(),
            kind: pb::ActivityKind::Login as i32,
            occurred_at: ts(Utc::now()),
        };
        async move {
            client
                .record_activity(request)
                .await
                .unwrap()
                .into_inner()
                .duplicate
        }
    };
    assert!(!record("k1").await);
    assert!(record("k1").await);
    assert!(!record("k2").await);
    let buckets: Vec<Document> = {
        use futures::TryStreamExt;
        service
            .database()
            .await
            .collection::<Document>("activity_buckets")
            .find(doc! { "user_id": "u1", "metric": "login" })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].get_i64("sum").unwrap(), 2);
}

#[tokio::test]
async fn duplicate_keys_change_nothing() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("keys");
    request.condition = Some(leaf("gold", pb::ComparisonOp::Gte, 0));
    let (event, _) = service.create(request).await;
    let first = report(
        &service,
        vec![
            item("u1", "gold", 5, pb::ProgressMode::Increment, Some("a")),
            item("u1", "gold", 7, pb::ProgressMode::Increment, Some("b")),
            item("u1", "gold", 9, pb::ProgressMode::Increment, Some("a")),
        ],
    )
    .await;
    assert_eq!((first.accepted, first.duplicates), (2, 1));
    let second = report(
        &service,
        vec![
            item("u1", "gold", 5, pb::ProgressMode::Increment, Some("a")),
            item("u1", "gold", 1, pb::ProgressMode::Increment, Some("c")),
        ],
    )
    .await;
    assert_eq!((second.accepted, second.duplicates), (1, 1));
    assert_eq!(
        progress(&service, &event.id, "u1").await.details[0].actual,
        13
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_sum_exactly() {
    // 100 transactions on one bucket serialise on write conflicts; on the single-threaded test
    // store that can take longer than the default call deadline, which is not what is tested here.
    let service = TestEvent::start_with(&[("ERP_GRPC_TIMEOUT_MS", "120000")]).await;
    let mut request = active_event_request("race");
    request.condition = Some(all(vec![
        leaf("clicks", pb::ComparisonOp::Eq, 100),
        leaf("keyed_clicks", pb::ComparisonOp::Eq, 100),
    ]));
    let (event, _) = service.create(request).await;
    // One click of `metric` by the racer, as its own call.
    let click = |metric: &'static str, key: Option<String>| {
        let mut client = service.client();
        async move {
            let items = vec![item(
                "racer",
                metric,
                1,
                pb::ProgressMode::Increment,
                key.as_deref(),
            )];
            client
                .report_progress(as_caller(&operator(), pb::ReportProgressRequest { items }))
                .await
        }
    };
    let unkeyed = (0..100).map(|_| click("clicks", None));
    let keyed = (0..100).map(|i| click("keyed_clicks", Some(format!("click-{i}"))));
    let (unkeyed, keyed) = tokio::join!(
        futures::future::join_all(unkeyed),
        futures::future::join_all(keyed)
    );
    let failures: Vec<_> = unkeyed
        .iter()
        .chain(keyed.iter())
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let result = progress(&service, &event.id, "racer").await;
    assert_eq!(
        result.details.iter().map(|d| d.actual).collect::<Vec<_>>(),
        [100, 100]
    );
    assert!(result.passed);
}

#[tokio::test]
async fn progress_reports_are_validated() {
    let service = TestEvent::start().await;
    let error = try_report(
        &service,
        vec![
            item("", "kills", 1, pb::ProgressMode::Increment, None),
            item("u", "login_days", 1, pb::ProgressMode::Increment, None),
            item("u", "kills", 1, pb::ProgressMode::Unspecified, None),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&error), ["items[2].mode"]);
    let error = try_report(
        &service,
        vec![
            item("", "kills", 1, pb::ProgressMode::Increment, None),
            item("u", "login_days", 1, pb::ProgressMode::Increment, None),
            item("u", "kills", -4, pb::ProgressMode::Increment, Some("")),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(
        fields(&error),
        [
            "items[0].userId",
            "items[1].metric",
            "items[2].value",
            "items[2].key"
        ]
    );
    let empty = service
        .client()
        .report_progress(as_caller(
            &operator(),
            pb::ReportProgressRequest { items: vec![] },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&empty), ["items"]);
    let by_player = service
        .client()
        .report_progress(as_caller(
            &player("p"),
            pb::ReportProgressRequest {
                items: vec![item("p", "kills", 1, pb::ProgressMode::Increment, None)],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&by_player), "FORBIDDEN");
}
