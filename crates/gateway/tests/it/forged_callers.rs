//! The services behind the gateway refuse any caller that does not carry a valid caller assertion:
//! hand-set identity metadata, no identity at all, an expired assertion, one for another service,
//! or one signed with another key. The real auth and event binaries are called directly over
//! gRPC, as a compromised pod in the cluster would.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erp_platform::identity::{
    AssertionSigner, Caller, IdentityKeys, OnBehalfOf, Role, Service, on_behalf_of,
};
use erp_proto::auth::v1 as auth_pb;
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_proto::common::v1 as common_pb;
use erp_proto::event::v1 as event_pb;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use erp_testkit::{ServiceProcess, TestStores, grpc_service_env, workspace_binary};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

fn admin() -> Caller {
    Caller {
        user_id: "forged-admin".into(),
        roles: vec![Role::Admin],
    }
}

fn keys(secret: &[u8]) -> IdentityKeys {
    IdentityKeys::from_secrets(secret, &[]).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The ways an attacker inside the cluster could present an identity, none of them valid.
fn forged<T: Clone>(body: &T, audience: Service) -> Vec<(&'static str, tonic::Request<T>)> {
    let mut cases = Vec::new();

    let mut hand_set = tonic::Request::new(body.clone());
    hand_set
        .metadata_mut()
        .insert("x-erp-user-id", MetadataValue::from_static("forged-admin"));
    hand_set
        .metadata_mut()
        .insert("x-erp-roles", MetadataValue::from_static("ADMIN"));
    cases.push(("hand-set identity metadata", hand_set));

    cases.push(("no identity", tonic::Request::new(body.clone())));

    let as_admin = OnBehalfOf {
        caller: Some(admin()),
        client_ip: None,
    };
    let good_key = AssertionSigner::new(Service::Gateway, keys(erp_testkit::IDENTITY_KEY));
    let with_assertion = |token: String| {
        let mut request = tonic::Request::new(body.clone());
        request.metadata_mut().insert(
            erp_platform::identity::ASSERTION_KEY,
            MetadataValue::try_from(token.as_str()).unwrap(),
        );
        request
    };
    cases.push((
        "expired assertion",
        with_assertion(good_key.sign_at(audience, &as_admin, now() - 600).unwrap()),
    ));
    let other_audience = match audience {
        Service::Auth => Service::Event,
        _ => Service::Auth,
    };
    cases.push((
        "assertion for another service",
        with_assertion(good_key.sign(other_audience, &as_admin).unwrap()),
    ));
    let other_key = AssertionSigner::new(
        Service::Gateway,
        keys(b"not-the-platform-key-0123456789abcdef"),
    );
    cases.push((
        "assertion signed with another key",
        with_assertion(other_key.sign(audience, &as_admin).unwrap()),
    ));
    cases
}

/// One service binary on its own (in `stores`), ready.
async fn service(stores: &TestStores, binary: &str, addr_var: &'static str) -> ServiceProcess {
    let mut env = grpc_service_env(addr_var, &stores.database(binary));
    env.push(("ERP_REDIS_KEY_PREFIX", stores.redis_prefix()));
    let process = ServiceProcess::start(&workspace_binary(binary), &env).await;
    process.wait_ready(Duration::from_secs(30)).await;
    process
}

async fn channel(process: &ServiceProcess) -> Channel {
    Channel::from_shared(format!("http://{}", process.addr("grpc")))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn auth_refuses_forged_callers_and_serves_the_gateways() {
    let stores = TestStores::new("forged");
    let auth = service(&stores, "erp-auth", "ERP_AUTH_ADDR").await;
    let mut raw = AuthServiceClient::new(channel(&auth).await);

    let create = auth_pb::CreateUserRequest {
        email: "mallory@example.com".into(),
        password: "mallory-password".into(),
        roles: vec![common_pb::Role::Admin as i32],
        username: None,
    };
    for (case, request) in forged(&create, Service::Auth) {
        let status = raw.create_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "CreateUser, {case}");
    }
    let list = auth_pb::ListUsersRequest::default();
    for (case, request) in forged(&list, Service::Auth) {
        let status = raw.list_users(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "ListUsers, {case}");
    }

    // The same calls with the gateway's assertion are served (and judged by role).
    let gateway = AssertionSigner::new(Service::Gateway, keys(erp_testkit::IDENTITY_KEY));
    let mut signed = AuthServiceClient::new(gateway.wrap(Service::Auth, channel(&auth).await));
    let player = Caller {
        user_id: "some-player".into(),
        roles: vec![Role::User],
    };
    let refused = signed
        .list_users(on_behalf_of(list.clone(), Some(&player)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    signed
        .list_users(on_behalf_of(list, Some(&admin())))
        .await
        .unwrap();
    signed
        .create_user(on_behalf_of(create, Some(&admin())))
        .await
        .unwrap();
}

#[tokio::test]
async fn event_refuses_forged_callers_and_takes_logins_only_from_auth() {
    let stores = TestStores::new("forged");
    let event = service(&stores, "erp-event", "ERP_EVENT_ADDR").await;
    let mut raw = EventServiceClient::new(channel(&event).await);

    let progress = event_pb::ReportProgressRequest {
        items: vec![event_pb::ProgressItem {
            user_id: "victim".into(),
            metric: "kills".into(),
            value: 1_000,
            mode: event_pb::ProgressMode::Increment as i32,
            occurred_at: None,
            key: None,
        }],
    };
    for (case, request) in forged(&progress, Service::Event) {
        let status = raw.report_progress(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "ReportProgress, {case}"
        );
    }
    let login = event_pb::RecordActivityRequest {
        idempotency_key: "forged-login".into(),
        user_id: "victim".into(),
        kind: event_pb::ActivityKind::Login as i32,
        occurred_at: None,
    };
    for (case, request) in forged(&login, Service::Event) {
        let status = raw.record_activity(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "RecordActivity, {case}"
        );
    }

    let key = keys(erp_testkit::IDENTITY_KEY);
    let gateway = AssertionSigner::new(Service::Gateway, key.clone());
    let mut from_gateway =
        EventServiceClient::new(gateway.wrap(Service::Event, channel(&event).await));
    // An anonymous call through the gateway reports no progress...
    let status = from_gateway
        .report_progress(tonic::Request::new(progress.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // ...an operator's does.
    let operator = Caller {
        user_id: "op".into(),
        roles: vec![Role::Operator],
    };
    from_gateway
        .report_progress(on_behalf_of(progress, Some(&operator)))
        .await
        .unwrap();
    // Logins come from auth's relay, never from the gateway, not even on an admin's behalf.
    let status = from_gateway
        .record_activity(on_behalf_of(login.clone(), Some(&admin())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let relay = AssertionSigner::new(Service::Auth, key);
    let mut from_auth = EventServiceClient::new(relay.wrap(Service::Event, channel(&event).await));
    from_auth.record_activity(login).await.unwrap();
}
