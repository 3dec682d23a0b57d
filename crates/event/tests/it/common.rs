//! Spawns the event service in-process on free ports against the real test stores, each test in a
//! database and Redis key prefix of its own (dropped when the test ends), with a gRPC client and
//! callers of every role.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use erp_event::{App, Config, Jobs};
pub use erp_platform::identity::Service;
use erp_platform::identity::{
    Asserting, AssertionSigner, Caller, IdentityKeys, Role, on_behalf_of,
};
use erp_platform::{Env, Shutdown};
use erp_proto::common::v1 as common_pb;
use erp_proto::event::v1 as pb;
use erp_proto::event::v1::event_service_client::EventServiceClient;
use erp_testkit::{InProcessService, grpc_service_env, unique_name};
use tonic::transport::Channel;

/// A test's own MongoDB database and Redis key prefix (`{name}:`), removed when the last holder
/// drops it: instances sharing a database share one `Arc<Scratch>`, so none pulls the store
/// from under another. One run of the suite leaves nothing behind in the shared stores.
pub struct Scratch {
    pub name: String,
    /// Only a Redis prefix (a test without a database).
    redis_only: bool,
}

impl Scratch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            name: unique_name("event"),
            redis_only: false,
        })
    }

    pub fn redis_only(prefix: &str) -> Arc<Self> {
        Arc::new(Self {
            name: unique_name(prefix),
            redis_only: true,
        })
    }

    /// The Redis key prefix of the test's instances (`ERP_REDIS_KEY_PREFIX`).
    pub fn redis_prefix(&self) -> String {
        format!("{}:", self.name)
    }

    async fn remove(name: &str, redis_only: bool) {
        if !redis_only
            && let Ok(client) = mongodb::Client::with_uri_str(erp_testkit::mongodb_uri()).await
        {
            let _ = client.database(name).drop().await;
        }
        let Ok(client) = redis::Client::open(erp_testkit::redis_url()) else {
            return;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{name}:*"))
            .query_async(&mut connection)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut connection)
                .await;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (name, redis_only) = (self.name.clone(), self.redis_only);
        // Drop cannot await, and the test's runtime may have a single thread: the cleanup runs
        // on a thread and runtime of its own, and the test waits for it.
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // Bounded: a store in trouble fails the next test, it does not hang this one.
                runtime.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(15),
                        Self::remove(&name, redis_only),
                    )
                    .await;
                });
            }
        });
        let _ = cleanup.join();
    }
}

pub struct TestEvent {
    pub client: EventServiceClient<Asserting<Channel>>,
    pub grpc_addr: std::net::SocketAddr,
    pub database: String,
    /// Declared before `scratch`: it stops serving (on drop) before the scratch is cleaned up.
    service: InProcessService,
    /// The test's database and Redis prefix; another instance on them shares this.
    pub scratch: Arc<Scratch>,
    /// The instance's background jobs, to run by hand.
    pub jobs: Jobs,
    pub admin_addr: std::net::SocketAddr,
}

impl TestEvent {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts an instance on a database of its own, with `overrides` of its environment.
    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        Self::start_in(&Scratch::new(), overrides).await
    }

    /// Starts an instance on `scratch` (instances on one database share its Redis prefix too).
    pub async fn start_in(scratch: &Arc<Scratch>, overrides: &[(&str, &str)]) -> Self {
        let database = scratch.name.as_str();
        let mut env: Vec<(String, String)> = grpc_service_env("ERP_EVENT_ADDR", database)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        for (key, value) in overrides {
            erp_testkit::set_env(&mut env, key, value);
        }
        let app = App::build(Config::from_env(&Env::from_pairs(env)).unwrap())
            .await
            .unwrap();
        let jobs = app.jobs();
        let shutdown = Shutdown::new();
        let service = InProcessService::spawn(
            app.grpc_addr().unwrap(),
            app.admin_addr().unwrap(),
            {
                let shutdown = shutdown.clone();
                async move { app.run(shutdown).await.unwrap() }
            },
            move || shutdown.trigger(),
        )
        .await;
        let channel = Channel::from_shared(service.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client =
            EventServiceClient::new(signer(Service::Gateway).wrap(Service::Event, channel));
        Self {
            client,
            grpc_addr: service.grpc_addr,
            database: database.to_owned(),
            scratch: Arc::clone(scratch),
            jobs,
            admin_addr: service.admin_addr,
            service,
        }
    }

    pub fn client(&self) -> EventServiceClient<Asserting<Channel>> {
        self.client.clone()
    }

    /// A client signing as `issuer` with no person behind its calls (as auth's login relay).
    pub fn client_as(&self, issuer: Service) -> EventServiceClient<Asserting<Channel>> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_lazy();
        EventServiceClient::new(signer(issuer).wrap(Service::Event, channel))
    }

    pub async fn database(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(erp_testkit::mongodb_uri())
            .await
            .unwrap()
            .database(&self.database)
    }

    /// Creates an event as an operator.
    pub async fn create(&self, request: pb::CreateEventRequest) -> (pb::Event, Vec<pb::Reward>) {
        let response = self
            .client()
            .create_event(as_caller(&operator(), request))
            .await
            .unwrap()
            .into_inner();
        (response.event.unwrap(), response.rewards)
    }

    /// The instance's Prometheus text (`/metrics` on the admin port).
    pub async fn metrics(&self) -> String {
        erp_testkit::scrape(self.admin_addr).await
    }

    /// Claims `event_id` as `who`.
    pub async fn claim(
        &self,
        who: &Caller,
        event_id: &str,
        key: Option<&str>,
    ) -> Result<pb::ClaimResponse, tonic::Status> {
        self.client()
            .claim(as_caller(
                who,
                pb::ClaimRequest {
                    event_id: event_id.to_owned(),
                    idempotency_key: key.map(str::to_owned),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The claim `event_id` gets for `who`, which must be granted or pending.
    pub async fn claimed(&self, who: &Caller, event_id: &str) -> pb::Claim {
        self.claim(who, event_id, None)
            .await
            .unwrap()
            .claim
            .unwrap()
    }

    pub async fn rewards(&self, event_id: &str) -> Vec<pb::Reward> {
        self.client()
            .list_rewards(as_caller(
                &operator(),
                pb::ListRewardsRequest {
                    event_id: event_id.to_owned(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .items
    }

    pub async fn get_claim(&self, who: &Caller, id: &str) -> Result<pb::Claim, tonic::Status> {
        self.client()
            .get_claim(as_caller(who, pb::GetClaimRequest { id: id.to_owned() }))
            .await
            .map(|r| r.into_inner().claim.unwrap())
    }

    /// Every audit record with `action`, newest first.
    pub async fn audit(&self, action: &str) -> Vec<common_pb::AuditEntry> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .client()
                .list_audit(as_caller(
                    &auditor(),
                    common_pb::ListAuditRequest {
                        action: Some(action.to_owned()),
                        limit: 100,
                        cursor: cursor.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            items.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = next,
                None => return items,
            }
        }
    }

    /// Reports `value` of `metric` for `user` (INCREMENT).
    pub async fn report(&self, user: &str, metric: &str, value: i64) {
        self.client()
            .report_progress(as_caller(
                &operator(),
                pb::ReportProgressRequest {
                    items: vec![pb::ProgressItem {
                        user_id: user.to_owned(),
                        metric: metric.to_owned(),
                        value,
                        mode: pb::ProgressMode::Increment as i32,
                        occurred_at: None,
                        key: None,
                    }],
                },
            ))
            .await
            .unwrap();
    }
}

/// Polls `check` until it returns `Some`, or panics naming `what` once `within` has passed: for
/// effects the contract lets happen a little later, instead of a fixed sleep.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `id` as `who` reads it.
pub async fn get_event(
    service: &TestEvent,
    who: &Caller,
    id: &str,
) -> Result<pb::Event, tonic::Status> {
    service
        .client()
        .get_event(as_caller(who, pb::GetEventRequest { id: id.to_owned() }))
        .await
        .map(|r| r.into_inner().event.unwrap())
}

/// Deletes `id` as `who`.
pub async fn delete_event(
    service: &TestEvent,
    who: &Caller,
    id: &str,
) -> Result<(), tonic::Status> {
    service
        .client()
        .delete_event(as_caller(who, pb::DeleteEventRequest { id: id.to_owned() }))
        .await
        .map(|_| ())
}

/// Approves claim `id` as `who`.
pub async fn approve(
    service: &TestEvent,
    who: &Caller,
    id: &str,
) -> Result<pb::Claim, tonic::Status> {
    service
        .client()
        .approve_claim(as_caller(
            who,
            pb::ApproveClaimRequest { id: id.to_owned() },
        ))
        .await
        .map(|r| r.into_inner().claim.unwrap())
}

/// Rejects claim `id` as `who` with `reason`.
pub async fn reject(
    service: &TestEvent,
    who: &Caller,
    id: &str,
    reason: &str,
) -> Result<pb::Claim, tonic::Status> {
    service
        .client()
        .reject_claim(as_caller(
            who,
            pb::RejectClaimRequest {
                id: id.to_owned(),
                reason: reason.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().claim.unwrap())
}

/// Changes an event with `request` as `who`.
pub async fn update_event(
    service: &TestEvent,
    who: &Caller,
    request: pb::UpdateEventRequest,
) -> Result<pb::Event, tonic::Status> {
    service
        .client()
        .update_event(as_caller(who, request))
        .await
        .map(|r| r.into_inner().event.unwrap())
}

/// Renames `id` as an operator.
pub async fn rename_event(service: &TestEvent, id: &str, title: &str) -> pb::Event {
    update_event(
        service,
        &operator(),
        pb::UpdateEventRequest {
            id: id.to_owned(),
            title: Some(title.to_owned()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Sets the publication state of `id` as an operator.
pub async fn set_state(
    service: &TestEvent,
    id: &str,
    state: pb::PublicationState,
) -> Result<pb::Event, tonic::Status> {
    update_event(
        service,
        &operator(),
        pb::UpdateEventRequest {
            id: id.to_owned(),
            state: Some(state as i32),
            ..Default::default()
        },
    )
    .await
}

/// Cancels `id` as an operator.
pub async fn cancel_event(service: &TestEvent, id: &str) {
    set_state(service, id, pb::PublicationState::Canceled)
        .await
        .unwrap();
}

pub fn caller(id: &str, roles: &[Role]) -> Caller {
    Caller {
        user_id: id.to_owned(),
        roles: roles.to_vec(),
    }
}

pub fn operator() -> Caller {
    caller("operator-1", &[Role::Operator])
}

pub fn admin() -> Caller {
    caller("admin-1", &[Role::Admin])
}

pub fn auditor() -> Caller {
    caller("auditor-1", &[Role::Auditor])
}

pub fn player(id: &str) -> Caller {
    caller(id, &[Role::User])
}

/// Signs caller assertions as `issuer` does, with the test instances' key.
pub fn signer(issuer: Service) -> AssertionSigner {
    AssertionSigner::new(
        issuer,
        IdentityKeys::from_secrets(erp_testkit::IDENTITY_KEY, &[]).unwrap(),
    )
}

/// `body` as a request from `caller` (signed into the caller assertion, as the gateway sends it).
pub fn as_caller<T>(caller: &Caller, body: T) -> tonic::Request<T> {
    on_behalf_of(body, Some(caller))
}

pub fn code(status: &tonic::Status) -> &'static str {
    erp_platform::error::ApiError::from_status(status)
        .code
        .as_str()
}

/// A fact the error carries in its ErrorInfo metadata (`claimId`, `rewardId`, `evaluation`).
pub fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    erp_platform::error::ApiError::from_status(status)
        .metadata
        .get(key)
        .cloned()
}

pub fn fields(status: &tonic::Status) -> Vec<String> {
    erp_platform::error::ApiError::from_status(status)
        .fields
        .into_iter()
        .map(|f| f.field)
        .collect()
}

pub fn ts(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
    })
}

pub fn leaf(metric: &str, op: pb::ComparisonOp, value: i64) -> pb::Condition {
    pb::Condition {
        node: Some(pb::condition::Node::Leaf(pb::ConditionLeaf {
            metric: metric.into(),
            op: op as i32,
            value,
            window: pb::Window::Event as i32,
        })),
    }
}

pub fn all(children: Vec<pb::Condition>) -> pb::Condition {
    pb::Condition {
        node: Some(pb::condition::Node::All(pb::ConditionGroup { children })),
    }
}

pub fn manual(mut request: pb::CreateEventRequest) -> pb::CreateEventRequest {
    request.claim_policy = Some(pb::ClaimPolicy::Manual as i32);
    request
}

pub fn reward(name: &str, stock: Option<i64>) -> pb::RewardInput {
    pb::RewardInput {
        name: name.into(),
        r#type: pb::RewardType::Currency as i32,
        item_code: None,
        quantity: 100,
        stock,
    }
}

/// An event running from `start` to `end` (relative to now), published.
pub fn event_request(
    title: &str,
    start: chrono::Duration,
    end: chrono::Duration,
) -> pb::CreateEventRequest {
    let now = Utc::now();
    pb::CreateEventRequest {
        title: title.into(),
        description: Some("A test event".into()),
        starts_at: ts(now + start),
        ends_at: ts(now + end),
        claim_policy: None,
        condition: None,
        draft: false,
        rewards: vec![],
    }
}

pub fn active_event_request(title: &str) -> pb::CreateEventRequest {
    event_request(
        title,
        chrono::Duration::hours(-1),
        chrono::Duration::days(7),
    )
}

/// Rewards of `event_id` as stored (with the `claimed` counter the API does not show).
pub async fn stored_rewards(service: &TestEvent, event_id: &str) -> Vec<mongodb::bson::Document> {
    use mongodb::bson::{Document, doc};
    let mut docs = Vec::new();
    let mut cursor = service
        .database()
        .await
        .collection::<Document>("rewards")
        .find(doc! { "event_id": event_id })
        .sort(doc! { "created_at": 1, "_id": 1 })
        .await
        .unwrap();
    while cursor.advance().await.unwrap() {
        docs.push(cursor.deserialize_current().unwrap());
    }
    docs
}

pub async fn claims_of(service: &TestEvent, event_id: &str) -> u64 {
    use mongodb::bson::{Document, doc};
    service
        .database()
        .await
        .collection::<Document>("claims")
        .count_documents(doc! { "event_id": event_id })
        .await
        .unwrap()
}

/// An integer field, however MongoDB stored it.
pub fn int(doc: &mongodb::bson::Document, key: &str) -> i64 {
    doc.get_i64(key)
        .or_else(|_| doc.get_i32(key).map(i64::from))
        .unwrap()
}
