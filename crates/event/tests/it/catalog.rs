//! Events and rewards over gRPC against the real stores: CRUD, validation of every field, status
//! by time, draft visibility, optimistic concurrency, roles, audit and cache coherence across
//! instances.

use std::time::Duration;

use crate::common::*;
use chrono::Utc;
use erp_proto::common::v1 as common_pb;
use erp_proto::event::v1 as pb;

#[tokio::test]
async fn create_get_list_update_delete_an_event_with_rewards() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("Winter festival");
    request.claim_policy = Some(pb::ClaimPolicy::Manual as i32);
    request.condition = Some(all(vec![leaf("login_days", pb::ComparisonOp::Gte, 3)]));
    request.rewards = vec![reward("Gold", Some(10)), reward("Gems", None)];
    let (event, rewards) = service.create(request).await;
    assert_eq!(event.title, "Winter festival");
    assert_eq!(event.status, pb::EventStatus::Active as i32);
    assert_eq!(event.claim_policy, pb::ClaimPolicy::Manual as i32);
    assert_eq!(event.version, 1);
    assert_eq!(event.created_by, "operator-1");
    assert!(event.condition.is_some());
    assert_eq!(rewards.len(), 2);
    assert_eq!(rewards[0].stock, Some(10));
    assert_eq!(rewards[0].remaining, Some(10));
    assert_eq!(rewards[1].stock, None);
    assert_eq!(rewards[1].remaining, None);

    let player = player("p1");
    let fetched = get_event(&service, &player, &event.id).await.unwrap();
    assert_eq!(fetched, event);

    let listed = service
        .client()
        .list_rewards(as_caller(
            &player,
            pb::ListRewardsRequest {
                event_id: event.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed, rewards);

    let updated = update_event(
        &service,
        &operator(),
        pb::UpdateEventRequest {
            id: event.id.clone(),
            title: Some("Winter festival II".into()),
            description: Some(String::new()),
            condition: Some(pb::ConditionUpdate { condition: None }),
            expected_version: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.title, "Winter festival II");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.description, None, "an empty description clears it");
    assert_eq!(
        updated.condition, None,
        "an empty condition update clears it"
    );
    assert_eq!(
        updated.claim_policy,
        pb::ClaimPolicy::Manual as i32,
        "untouched fields stay"
    );

    // Only an admin deletes; afterwards every read is NOT_FOUND.
    let refused = delete_event(&service, &operator(), &event.id)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "FORBIDDEN");
    delete_event(&service, &admin(), &event.id).await.unwrap();
    let gone = get_event(&service, &admin(), &event.id).await.unwrap_err();
    assert_eq!(code(&gone), "NOT_FOUND");
    let rewards_gone = service
        .client()
        .list_rewards(as_caller(
            &admin(),
            pb::ListRewardsRequest {
                event_id: event.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&rewards_gone), "NOT_FOUND");
    let again = delete_event(&service, &admin(), &event.id)
        .await
        .unwrap_err();
    assert_eq!(code(&again), "NOT_FOUND");
}

#[tokio::test]
async fn every_event_field_is_validated() {
    let service = TestEvent::start().await;
    let create = |request: pb::CreateEventRequest| {
        let mut client = service.client();
        async move {
            client
                .create_event(as_caller(&operator(), request))
                .await
                .unwrap_err()
        }
    };

    let mut bad = active_event_request("");
    bad.description = Some("d".repeat(5001));
    bad.ends_at = bad.starts_at;
    let error = create(bad).await;
    assert_eq!(code(&error), "VALIDATION_FAILED");
    assert_eq!(fields(&error), ["title", "description", "endsAt"]);

    let mut long = active_event_request(&"t".repeat(201));
    long.starts_at = None;
    assert_eq!(fields(&create(long).await), ["title", "startsAt"]);

    let mut policy = active_event_request("p");
    policy.claim_policy = Some(42);
    assert_eq!(fields(&create(policy).await), ["claimPolicy"]);

    let mut op = active_event_request("op");
    op.condition = Some(all(vec![leaf("kills", pb::ComparisonOp::Unspecified, 1)]));
    assert_eq!(fields(&create(op).await), ["condition.all[0].op"]);

    let mut metric = active_event_request("metric");
    metric.condition = Some(all(vec![
        leaf("kills", pb::ComparisonOp::Gte, 1),
        leaf("Kills!", pb::ComparisonOp::Gte, 1),
    ]));
    assert_eq!(fields(&create(metric).await), ["condition.all[1].metric"]);

    let mut empty_node = active_event_request("node");
    empty_node.condition = Some(pb::Condition { node: None });
    assert_eq!(fields(&create(empty_node).await), ["condition"]);

    let mut deep = active_event_request("deep");
    let mut tree = leaf("kills", pb::ComparisonOp::Gte, 1);
    for _ in 0..5 {
        tree = all(vec![tree]);
    }
    deep.condition = Some(tree);
    assert_eq!(fields(&create(deep).await), ["condition"]);

    let mut wide = active_event_request("wide");
    wide.condition = Some(all((0..33)
        .map(|_| leaf("kills", pb::ComparisonOp::Gte, 1))
        .collect()));
    assert_eq!(fields(&create(wide).await), ["condition"]);

    let mut rewards = active_event_request("rewards");
    rewards.rewards = vec![pb::RewardInput {
        name: String::new(),
        r#type: 0,
        item_code: Some(String::new()),
        quantity: 0,
        stock: Some(-1),
    }];
    assert_eq!(fields(&create(rewards).await), ["rewards[0].type"]);
    let mut rewards = active_event_request("rewards");
    rewards.rewards = vec![pb::RewardInput {
        name: String::new(),
        r#type: pb::RewardType::Item as i32,
        item_code: Some(String::new()),
        quantity: 1_000_000_001,
        stock: Some(-1),
    }];
    assert_eq!(
        fields(&create(rewards).await),
        [
            "rewards[0].name",
            "rewards[0].itemCode",
            "rewards[0].quantity",
            "rewards[0].stock"
        ]
    );
}

#[tokio::test]
async fn status_follows_time_publication_and_filters_lists() {
    let service = TestEvent::start().await;
    let (past, _) = service
        .create(event_request(
            "past",
            chrono::Duration::days(-3),
            chrono::Duration::days(-1),
        ))
        .await;
    let (now, _) = service.create(active_event_request("now")).await;
    let (future, _) = service
        .create(event_request(
            "future",
            chrono::Duration::days(1),
            chrono::Duration::days(2),
        ))
        .await;
    let mut draft_request = active_event_request("draft");
    draft_request.draft = true;
    let (draft, _) = service.create(draft_request).await;
    assert_eq!(past.status, pb::EventStatus::Ended as i32);
    assert_eq!(now.status, pb::EventStatus::Active as i32);
    assert_eq!(future.status, pb::EventStatus::Scheduled as i32);
    assert_eq!(draft.status, pb::EventStatus::Draft as i32);

    let (soon, _) = service
        .create(event_request(
            "soon",
            chrono::Duration::milliseconds(1500),
            chrono::Duration::days(1),
        ))
        .await;
    assert_eq!(soon.status, pb::EventStatus::Scheduled as i32);
    // Status is computed at read time: active once its start has passed, with nothing written.
    eventually(
        Duration::from_secs(10),
        "the scheduled event turns active",
        || async {
            let read = get_event(&service, &operator(), &soon.id).await.unwrap();
            (read.status == pb::EventStatus::Active as i32).then_some(())
        },
    )
    .await;

    let canceled = set_state(&service, &now.id, pb::PublicationState::Canceled)
        .await
        .unwrap();
    assert_eq!(canceled.status, pb::EventStatus::Canceled as i32);
    let republish = set_state(&service, &now.id, pb::PublicationState::Published)
        .await
        .unwrap_err();
    assert_eq!(fields(&republish), ["state"]);

    let list = |status: pb::EventStatus| {
        let mut client = service.client();
        async move {
            client
                .list_events(as_caller(
                    &operator(),
                    pb::ListEventsRequest {
                        status: Some(status as i32),
                        limit: 100,
                        cursor: String::new(),
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .items
                .into_iter()
                .map(|e| e.title)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(pb::EventStatus::Ended).await, ["past"]);
    assert_eq!(list(pb::EventStatus::Scheduled).await, ["future"]);
    assert_eq!(list(pb::EventStatus::Active).await, ["soon"]);
    assert_eq!(list(pb::EventStatus::Draft).await, ["draft"]);
    assert_eq!(list(pb::EventStatus::Canceled).await, ["now"]);
}

#[tokio::test]
async fn plain_players_never_see_drafts_and_lists_page_newest_first() {
    let service = TestEvent::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = active_event_request(&format!("e{i}"));
        request.draft = i == 2;
        ids.push(service.create(request).await.0.id);
    }
    let page = |caller: erp_platform::identity::Caller, cursor: String| {
        let mut client = service.client();
        async move {
            client
                .list_events(as_caller(
                    &caller,
                    pb::ListEventsRequest {
                        status: None,
                        limit: 2,
                        cursor,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let response = page(player("p1"), cursor).await;
        seen.extend(response.items.into_iter().map(|e| e.id));
        match response.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let expected: Vec<String> = ids
        .iter()
        .rev()
        .filter(|id| **id != ids[2])
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    let staff_first = page(auditor(), String::new()).await;
    assert_eq!(staff_first.items[0].id, ids[4]);
    assert_eq!(staff_first.items.len(), 2);

    let hidden = service
        .client()
        .get_event(as_caller(
            &player("p1"),
            pb::GetEventRequest { id: ids[2].clone() },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&hidden), "NOT_FOUND");
    let rewards_hidden = service
        .client()
        .list_rewards(as_caller(
            &player("p1"),
            pb::ListRewardsRequest {
                event_id: ids[2].clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&rewards_hidden), "NOT_FOUND");
    service
        .client()
        .get_event(as_caller(
            &auditor(),
            pb::GetEventRequest { id: ids[2].clone() },
        ))
        .await
        .unwrap();
    let drafts_for_player = service
        .client()
        .list_events(as_caller(
            &player("p1"),
            pb::ListEventsRequest {
                status: Some(pb::EventStatus::Draft as i32),
                limit: 10,
                cursor: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(drafts_for_player.items.is_empty());
    let bad_limit = service
        .client()
        .list_events(as_caller(
            &player("p1"),
            pb::ListEventsRequest {
                status: None,
                limit: 101,
                cursor: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&bad_limit), ["limit"]);
}

#[tokio::test]
async fn stale_versions_are_refused() {
    let service = TestEvent::start().await;
    let (event, _) = service.create(active_event_request("v")).await;
    let update = |version: Option<i64>, title: &str| {
        let mut client = service.client();
        let request = as_caller(
            &operator(),
            pb::UpdateEventRequest {
                id: event.id.clone(),
                title: Some(title.into()),
                expected_version: version,
                ..Default::default()
            },
        );
        async move { client.update_event(request).await }
    };
    assert_eq!(
        update(Some(1), "a")
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap()
            .version,
        2
    );
    let stale = update(Some(1), "b").await.unwrap_err();
    assert_eq!(code(&stale), "VERSION_MISMATCH");
    assert_eq!(stale.code(), tonic::Code::Aborted);
    assert_eq!(
        erp_platform::error::ApiError::from_status(&stale).metadata["currentVersion"],
        "2"
    );
    // Without If-Match the change applies on top of the latest version.
    assert_eq!(
        update(None, "c")
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap()
            .version,
        3
    );
    let window = update_event(
        &service,
        &operator(),
        pb::UpdateEventRequest {
            id: event.id.clone(),
            ends_at: ts(Utc::now() - chrono::Duration::days(30)),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&window), ["endsAt"]);
    let missing = update_event(
        &service,
        &operator(),
        pb::UpdateEventRequest {
            id: "nope".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code(&missing), "NOT_FOUND");
}

#[tokio::test]
async fn roles_are_enforced_from_metadata() {
    let service = TestEvent::start().await;
    let anonymous = service
        .client()
        .create_event(active_event_request("x"))
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let player_create = service
        .client()
        .create_event(as_caller(&player("p1"), active_event_request("x")))
        .await
        .unwrap_err();
    assert_eq!(code(&player_create), "FORBIDDEN");
    let auditor_create = service
        .client()
        .create_event(as_caller(&auditor(), active_event_request("x")))
        .await
        .unwrap_err();
    assert_eq!(code(&auditor_create), "FORBIDDEN");
    service
        .client()
        .create_event(as_caller(&admin(), active_event_request("x")))
        .await
        .unwrap();
    let audit_by_player = service
        .client()
        .list_audit(as_caller(
            &player("p1"),
            common_pb::ListAuditRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&audit_by_player), "FORBIDDEN");
}

#[tokio::test]
async fn rewards_crud_with_stock_changes() {
    let service = TestEvent::start().await;
    let (event, _) = service.create(active_event_request("r")).await;
    let created = service
        .client()
        .create_reward(as_caller(
            &operator(),
            pb::CreateRewardRequest {
                event_id: event.id.clone(),
                reward: Some(reward("Sword", Some(10))),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(created.remaining, Some(10));
    let missing_event = service
        .client()
        .create_reward(as_caller(
            &operator(),
            pb::CreateRewardRequest {
                event_id: "nope".into(),
                reward: Some(reward("Sword", None)),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&missing_event), "NOT_FOUND");

    let update = |stock: Option<pb::stock_update::Value>, quantity: Option<i64>| {
        let mut client = service.client();
        let request = as_caller(
            &operator(),
            pb::UpdateRewardRequest {
                event_id: event.id.clone(),
                reward_id: created.id.clone(),
                name: Some("Great sword".into()),
                quantity,
                stock: stock.map(|value| pb::StockUpdate { value: Some(value) }),
                ..Default::default()
            },
        );
        async move { client.update_reward(request).await }
    };
    let smaller = update(Some(pb::stock_update::Value::Limited(4)), Some(2))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(
        (smaller.stock, smaller.remaining, smaller.quantity),
        (Some(4), Some(4), 2)
    );
    assert_eq!(smaller.name, "Great sword");
    let unlimited = update(Some(pb::stock_update::Value::Unlimited(true)), None)
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!((unlimited.stock, unlimited.remaining), (None, None));
    let bad = update(Some(pb::stock_update::Value::Limited(-5)), Some(0))
        .await
        .unwrap_err();
    assert_eq!(fields(&bad), ["quantity", "stock"]);

    let fetched = service
        .client()
        .get_reward(as_caller(
            &player("p1"),
            pb::GetRewardRequest {
                event_id: event.id.clone(),
                reward_id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reward
        .unwrap();
    assert_eq!(fetched, unlimited, "reads after a write see the write");

    let by_operator = service
        .client()
        .delete_reward(as_caller(
            &operator(),
            pb::DeleteRewardRequest {
                event_id: event.id.clone(),
                reward_id: created.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&by_operator), "FORBIDDEN");
    service
        .client()
        .delete_reward(as_caller(
            &admin(),
            pb::DeleteRewardRequest {
                event_id: event.id.clone(),
                reward_id: created.id.clone(),
            },
        ))
        .await
        .unwrap();
    let gone = service
        .client()
        .get_reward(as_caller(
            &admin(),
            pb::GetRewardRequest {
                event_id: event.id.clone(),
                reward_id: created.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NOT_FOUND");
}

#[tokio::test]
async fn every_change_is_audited() {
    let service = TestEvent::start().await;
    let mut request = active_event_request("audited");
    request.rewards = vec![reward("Gold", Some(1))];
    let (event, rewards) = service.create(request).await;
    rename_event(&service, &event.id, "renamed").await;
    service
        .client()
        .update_reward(as_caller(
            &operator(),
            pb::UpdateRewardRequest {
                event_id: event.id.clone(),
                reward_id: rewards[0].id.clone(),
                quantity: Some(5),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    service
        .client()
        .delete_reward(as_caller(
            &admin(),
            pb::DeleteRewardRequest {
                event_id: event.id.clone(),
                reward_id: rewards[0].id.clone(),
            },
        ))
        .await
        .unwrap();
    delete_event(&service, &admin(), &event.id).await.unwrap();

    let entries = service
        .client()
        .list_audit(as_caller(
            &auditor(),
            common_pb::ListAuditRequest {
                limit: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "EVENT_DELETED",
            "REWARD_DELETED",
            "REWARD_UPDATED",
            "EVENT_UPDATED",
            "REWARD_CREATED",
            "EVENT_CREATED"
        ]
    );
    assert!(entries.iter().all(|e| e.service == "event"));
    let updated = &entries[3];
    assert_eq!(updated.actor_id, "operator-1");
    let before: serde_json::Value =
        serde_json::from_str(updated.before_json.as_deref().unwrap()).unwrap();
    let after: serde_json::Value =
        serde_json::from_str(updated.after_json.as_deref().unwrap()).unwrap();
    assert_eq!(before["title"], "audited");
    assert_eq!(after["title"], "renamed");
    assert_eq!(after["version"], 2);
    let reward_update: serde_json::Value =
        serde_json::from_str(entries[2].after_json.as_deref().unwrap()).unwrap();
    assert_eq!(reward_update["quantity"], 5);
    assert_eq!(entries[0].actor_id, "admin-1");

    let filtered = service
        .client()
        .list_audit(as_caller(
            &auditor(),
            common_pb::ListAuditRequest {
                action: Some("REWARD_CREATED".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].entity_id, rewards[0].id);
}

#[tokio::test]
async fn a_write_on_one_instance_is_seen_by_another_at_once() {
    let first = TestEvent::start().await;
    let second = TestEvent::start_in(&first.scratch, &[("ERP_EVENT_CACHE_TTL_MS", "600000")]).await;
    let (event, _) = first.create(active_event_request("cached")).await;
    let read = |service: &TestEvent| {
        let mut client = service.client();
        let id = event.id.clone();
        async move {
            client
                .get_event(as_caller(&player("p1"), pb::GetEventRequest { id }))
                .await
                .unwrap()
                .into_inner()
                .event
                .unwrap()
        }
    };
    // Warm the second instance's cache, then change the event through the first.
    assert_eq!(read(&second).await.title, "cached");
    assert_eq!(read(&second).await.title, "cached");
    rename_event(&first, &event.id, "fresh").await;
    eventually(
        Duration::from_millis(500),
        "the other instance serves the new version",
        || async { (read(&second).await.title == "fresh").then_some(()) },
    )
    .await;
}
