//! Who may do what beyond the route's roles: nobody approves or rejects a claim of their own
//! (four-eyes), every accepted progress batch is audited with its reporter, and a game server
//! (a service account, `GAME_SERVER`) reports progress and reads published events and rewards,
//! and nothing else.

use crate::common::*;
use erp_platform::identity::{Caller, Role};
use erp_proto::common::v1 as common_pb;
use erp_proto::event::v1 as pb;

fn game_server() -> Caller {
    caller("game-server-1", &[Role::GameServer])
}

fn second_operator() -> Caller {
    caller("operator-2", &[Role::Operator])
}

fn item(user: &str, metric: &str, key: Option<&str>) -> pb::ProgressItem {
    pb::ProgressItem {
        user_id: user.to_owned(),
        metric: metric.to_owned(),
        value: 1,
        mode: pb::ProgressMode::Increment as i32,
        occurred_at: None,
        key: key.map(str::to_owned),
    }
}

async fn report(
    service: &TestEvent,
    who: &Caller,
    items: Vec<pb::ProgressItem>,
) -> Result<pb::ReportProgressResponse, tonic::Status> {
    service
        .client()
        .report_progress(as_caller(who, pb::ReportProgressRequest { items }))
        .await
        .map(tonic::Response::into_inner)
}

fn after(entry: &common_pb::AuditEntry) -> serde_json::Value {
    serde_json::from_str(entry.after_json.as_deref().unwrap()).unwrap()
}

#[tokio::test]
async fn nobody_approves_or_rejects_their_own_claim() {
    let service = TestEvent::start().await;
    let mut request = manual(active_event_request("review"));
    request.rewards = vec![reward("Gold", Some(5))];
    let (event, _) = service.create(request).await;
    let own = service.claimed(&operator(), &event.id).await;
    assert_eq!(own.status, pb::ClaimStatus::Pending as i32);

    let approving = approve(&service, &operator(), &own.id).await.unwrap_err();
    assert_eq!(code(&approving), "FORBIDDEN");
    let rejecting = reject(&service, &operator(), &own.id, "mine")
        .await
        .unwrap_err();
    assert_eq!(code(&rejecting), "FORBIDDEN");
    let unchanged = service.get_claim(&operator(), &own.id).await.unwrap();
    assert_eq!(unchanged.status, pb::ClaimStatus::Pending as i32);
    assert!(service.audit("CLAIM_APPROVED").await.is_empty());
    assert!(service.audit("CLAIM_REJECTED").await.is_empty());

    // Someone else decides it; afterwards the owner is still refused with FORBIDDEN, not
    // INVALID_STATE: four-eyes comes before the state check.
    let approved = approve(&service, &second_operator(), &own.id)
        .await
        .unwrap();
    assert_eq!(approved.status, pb::ClaimStatus::Granted as i32);
    assert_eq!(approved.decided_by.as_deref(), Some("operator-2"));
    for refused in [
        approve(&service, &operator(), &own.id).await.unwrap_err(),
        reject(&service, &operator(), &own.id, "mine")
            .await
            .unwrap_err(),
    ] {
        assert_eq!(code(&refused), "FORBIDDEN");
    }
    // Another decider gets the usual answer.
    let late = reject(&service, &admin(), &own.id, "late")
        .await
        .unwrap_err();
    assert_eq!(code(&late), "INVALID_STATE");

    // An admin's own pending claim: the same.
    let admins = service.claimed(&admin(), &event.id).await;
    let refused = reject(&service, &admin(), &admins.id, "mine")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "FORBIDDEN");
    let rejected = reject(&service, &operator(), &admins.id, "not eligible")
        .await
        .unwrap();
    assert_eq!(rejected.status, pb::ClaimStatus::Rejected as i32);
}

#[tokio::test]
async fn accepted_progress_batches_are_audited_with_their_reporter() {
    let service = TestEvent::start().await;
    let first = report(
        &service,
        &operator(),
        vec![
            item("p1", "wins", Some("k1")),
            item("p1", "kills", Some("k2")),
            item("p2", "kills", Some("k1")),
        ],
    )
    .await
    .unwrap();
    assert_eq!((first.accepted, first.duplicates), (2, 1));
    let entries = service.audit("PROGRESS_REPORTED").await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.actor_id, "operator-1");
    assert_eq!(entry.entity_type, "progress");
    assert!(!entry.entity_id.is_empty());
    assert_eq!(
        after(entry),
        serde_json::json!({"items": 3, "accepted": 2, "duplicates": 1, "metrics": ["kills", "wins"]})
    );

    // A resent batch: all duplicates, still an accepted batch, audited with what it did.
    let resent = report(&service, &operator(), vec![item("p1", "wins", Some("k1"))])
        .await
        .unwrap();
    assert_eq!((resent.accepted, resent.duplicates), (0, 1));
    // A game server's batch without keys.
    let unkeyed = report(
        &service,
        &game_server(),
        vec![item("p3", "score", None), item("p4", "deaths", None)],
    )
    .await
    .unwrap();
    assert_eq!((unkeyed.accepted, unkeyed.duplicates), (2, 0));

    // Refused batches are not audited.
    let bad_metric = report(&service, &operator(), vec![item("p1", "Bad-Name", None)])
        .await
        .unwrap_err();
    assert_eq!(code(&bad_metric), "VALIDATION_FAILED");
    let not_allowed = report(&service, &player("p1"), vec![item("p1", "wins", None)])
        .await
        .unwrap_err();
    assert_eq!(code(&not_allowed), "FORBIDDEN");

    let entries = service.audit("PROGRESS_REPORTED").await;
    assert_eq!(
        entries.len(),
        3,
        "one per accepted batch, none for refused ones"
    );
    // Newest first.
    assert_eq!(entries[0].actor_id, "game-server-1");
    assert_eq!(
        after(&entries[0]),
        serde_json::json!({"items": 2, "accepted": 2, "duplicates": 0, "metrics": ["deaths", "score"]})
    );
    assert_eq!(entries[1].actor_id, "operator-1");
    assert_eq!(
        after(&entries[1]),
        serde_json::json!({"items": 1, "accepted": 0, "duplicates": 1, "metrics": ["wins"]})
    );
    let ids: std::collections::HashSet<&str> =
        entries.iter().map(|e| e.entity_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each batch has an id of its own");
}

#[tokio::test]
async fn a_game_server_reports_progress_and_reads_published_events_only() {
    let service = TestEvent::start().await;
    let mut published = active_event_request("live");
    published.rewards = vec![reward("Gold", Some(3))];
    let (live, rewards) = service.create(published).await;
    let mut hidden = active_event_request("draft");
    hidden.draft = true;
    hidden.rewards = vec![reward("Gems", None)];
    let (draft, draft_rewards) = service.create(hidden).await;
    let server = game_server();

    report(&service, &server, vec![item("p1", "wins", Some("gs-1"))])
        .await
        .unwrap();

    assert_eq!(
        get_event(&service, &server, &live.id).await.unwrap().id,
        live.id
    );
    let listed = service
        .client()
        .list_events(as_caller(&server, pb::ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .items;
    let ids: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [live.id.as_str()],
        "drafts are hidden from game servers"
    );
    let listed_rewards = service
        .client()
        .list_rewards(as_caller(
            &server,
            pb::ListRewardsRequest {
                event_id: live.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed_rewards.len(), 1);
    let reward_read = service
        .client()
        .get_reward(as_caller(
            &server,
            pb::GetRewardRequest {
                event_id: live.id.clone(),
                reward_id: rewards[0].id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(reward_read.into_inner().reward.unwrap().id, rewards[0].id);

    let draft_read = get_event(&service, &server, &draft.id).await.unwrap_err();
    assert_eq!(code(&draft_read), "NOT_FOUND");
    let draft_rewards_read = service
        .client()
        .get_reward(as_caller(
            &server,
            pb::GetRewardRequest {
                event_id: draft.id.clone(),
                reward_id: draft_rewards[0].id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&draft_rewards_read), "NOT_FOUND");

    // Everything else is refused: the service never treats a game server as staff or as a
    // player.
    let player_claim = service.claimed(&player("p1"), &live.id).await;
    let mut refusals: Vec<(&str, tonic::Status)> = vec![
        (
            "claim",
            service.claim(&server, &live.id, None).await.unwrap_err(),
        ),
        (
            "approve",
            approve(&service, &server, &player_claim.id)
                .await
                .unwrap_err(),
        ),
        (
            "reject",
            reject(&service, &server, &player_claim.id, "x")
                .await
                .unwrap_err(),
        ),
        (
            "get claim",
            service
                .get_claim(&server, &player_claim.id)
                .await
                .unwrap_err(),
        ),
    ];
    let mut client = service.client();
    refusals.push((
        "list claims",
        client
            .list_claims(as_caller(&server, pb::ListClaimsRequest::default()))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "my claims",
        client
            .list_my_claims(as_caller(&server, pb::ListMyClaimsRequest::default()))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "dashboard",
        client
            .get_dashboard(as_caller(&server, pb::GetDashboardRequest {}))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "audit",
        client
            .list_audit(as_caller(&server, common_pb::ListAuditRequest::default()))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "progress",
        client
            .get_progress(as_caller(
                &server,
                pb::GetProgressRequest {
                    event_id: live.id.clone(),
                    user_id: "p1".into(),
                },
            ))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "create event",
        client
            .create_event(as_caller(&server, active_event_request("nope")))
            .await
            .unwrap_err(),
    ));
    refusals.push((
        "grant",
        client
            .grant(as_caller(
                &server,
                pb::GrantRequest {
                    event_id: live.id.clone(),
                    user_ids: vec!["p2".into()],
                    active_user_ids: vec!["p2".into()],
                    reason: "compensation".into(),
                    idempotency_key: "gs-grant".into(),
                },
            ))
            .await
            .unwrap_err(),
    ));
    for (what, status) in &refusals {
        assert_eq!(code(status), "FORBIDDEN", "{what}: {status:?}");
    }
}
