//! Spawns the auth service in-process on free ports against the real test stores, each test in a
//! database and Redis key prefix of its own (dropped when the test ends, see [`TestStores`]), and
//! gives a gRPC client to it.

use std::sync::Arc;

use erp_auth::{App, Config};
use erp_platform::identity::{
    Asserting, AssertionSigner, Caller, IdentityKeys, Role, Service, on_behalf_of,
};
use erp_platform::{Env, Shutdown};
use erp_proto::auth::v1 as pb;
use erp_proto::auth::v1::auth_service_client::AuthServiceClient;
use erp_proto::common::v1 as common_pb;
use erp_testkit::{InProcessService, TestStores, grpc_service_env};
use tonic::transport::Channel;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "root-password-1";

pub struct TestAuth {
    pub client: AuthServiceClient<Asserting<Channel>>,
    pub admin_addr: std::net::SocketAddr,
    pub database: String,
    /// Declared before `stores`: it stops serving (on drop) before the stores are cleaned up,
    /// as an instance still writing could re-create what the cleanup drops.
    service: InProcessService,
    /// The test's database and Redis prefix; shared by the instances started in them, cleaned
    /// up when the last of them is gone.
    stores: Arc<TestStores>,
}

/// The environment of a gRPC service binary (`addr_var`: its listen variable) in `stores`: the
/// database `<name>_<suffix>` and the stores' Redis key prefix, both cleaned up with them.
pub fn service_env(
    stores: &TestStores,
    addr_var: &'static str,
    suffix: &str,
) -> Vec<(&'static str, String)> {
    let mut env = grpc_service_env(addr_var, &stores.database(suffix));
    env.retain(|(key, _)| *key != "ERP_REDIS_KEY_PREFIX");
    env.push(("ERP_REDIS_KEY_PREFIX", stores.redis_prefix()));
    env
}

/// Settings every test uses: cheap argon2 (the policy is the same, only slower in production),
/// a bootstrap admin, and an event service that is not there unless a test starts one.
fn base_env(stores: &TestStores) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = service_env(stores, "ERP_AUTH_ADDR", "auth")
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (key, value) in [
        ("ERP_ARGON2_MEMORY_KIB", "1024"),
        ("ERP_ARGON2_ITERATIONS", "1"),
        ("ERP_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("ERP_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("ERP_EVENT_URL", "http://127.0.0.1:9"),
        ("ERP_OUTBOX_POLL_MS", "50"),
        ("ERP_OUTBOX_MAX_BACKOFF_SECS", "1"),
    ] {
        env.push((key.to_owned(), value.to_owned()));
    }
    env
}

impl TestAuth {
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        Self::start_in(&Arc::new(TestStores::new("auth")), overrides).await
    }

    /// Starts an instance on the stores of another (several instances may share them, as
    /// replicas or a restart do).
    pub async fn start_in(stores: &Arc<TestStores>, overrides: &[(&str, &str)]) -> Self {
        let mut env = base_env(stores);
        let database = stores.database("auth");
        for (key, value) in overrides {
            erp_testkit::set_env(&mut env, key, value);
        }
        let config = Config::from_env(&Env::from_pairs(env)).unwrap();
        let app = App::build(config).await.unwrap();
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
        let client = AuthServiceClient::new(gateway_signer().wrap(Service::Auth, channel));
        Self {
            client,
            admin_addr: service.admin_addr,
            database,
            service,
            stores: Arc::clone(stores),
        }
    }

    /// The key prefix of everything this instance writes to Redis.
    pub fn redis_prefix(&self) -> String {
        self.stores.redis_prefix()
    }

    /// The stores of this instance, to start another in them.
    pub fn stores(&self) -> Arc<TestStores> {
        Arc::clone(&self.stores)
    }

    pub async fn stop(self) {
        self.service.stop().await;
    }

    pub fn client(&self) -> AuthServiceClient<Asserting<Channel>> {
        self.client.clone()
    }

    pub async fn register(&self, email: &str, password: &str) -> pb::User {
        self.try_register(email, password, None)
            .await
            .unwrap()
            .user
            .unwrap()
    }

    /// Registers `email`, or the error refusing it.
    pub async fn try_register(
        &self,
        email: &str,
        password: &str,
        username: Option<String>,
    ) -> Result<pb::RegisterResponse, tonic::Status> {
        self.client()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
                username,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Signs `access_token` out as `who`.
    pub async fn logout(
        &self,
        who: &Caller,
        access_token: &str,
    ) -> Result<pb::LogoutResponse, tonic::Status> {
        self.client()
            .logout(as_caller(
                who,
                pb::LogoutRequest {
                    access_token: access_token.to_owned(),
                    refresh_token: None,
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn create_user(
        &self,
        who: &Caller,
        request: pb::CreateUserRequest,
    ) -> Result<pb::CreateUserResponse, tonic::Status> {
        self.client()
            .create_user(as_caller(who, request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get_user(
        &self,
        who: &Caller,
        id: &str,
    ) -> Result<pb::GetUserResponse, tonic::Status> {
        self.client()
            .get_user(as_caller(who, pb::GetUserRequest { id: id.to_owned() }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn list_users(
        &self,
        who: &Caller,
        request: pb::ListUsersRequest,
    ) -> Result<pb::ListUsersResponse, tonic::Status> {
        self.client()
            .list_users(as_caller(who, request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn delete_user(
        &self,
        who: &Caller,
        id: &str,
    ) -> Result<pb::DeleteUserResponse, tonic::Status> {
        self.client()
            .delete_user(as_caller(who, pb::DeleteUserRequest { id: id.to_owned() }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn list_audit(
        &self,
        who: &Caller,
        request: common_pb::ListAuditRequest,
    ) -> Result<common_pb::ListAuditResponse, tonic::Status> {
        self.client()
            .list_audit(as_caller(who, request))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<pb::LoginResponse, tonic::Status> {
        self.client()
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
                client_ip: None,
                user_agent: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn introspect(&self, token: &str) -> pb::IntrospectResponse {
        self.client()
            .introspect(pb::IntrospectRequest {
                access_token: token.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// The bootstrap admin as a caller.
    pub async fn admin(&self) -> Caller {
        let login = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
        Caller {
            user_id: login.user.unwrap().id,
            roles: vec![Role::Admin],
        }
    }
}

/// Refreshes with `token` (no client address or user agent).
pub async fn refresh(auth: &TestAuth, token: &str) -> Result<pb::RefreshResponse, tonic::Status> {
    auth.client()
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
            client_ip: None,
            user_agent: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Signs caller assertions as the gateway does, with the test instances' key.
pub fn gateway_signer() -> AssertionSigner {
    AssertionSigner::new(
        Service::Gateway,
        IdentityKeys::from_secrets(erp_testkit::IDENTITY_KEY, &[]).unwrap(),
    )
}

/// `body` as a request from `caller` (signed into the caller assertion, as the gateway sends it).
pub fn as_caller<T>(caller: &Caller, body: T) -> tonic::Request<T> {
    on_behalf_of(body, Some(caller))
}

/// The public error code carried by a status.
pub fn code(status: &tonic::Status) -> &'static str {
    erp_platform::error::ApiError::from_status(status)
        .code
        .as_str()
}
