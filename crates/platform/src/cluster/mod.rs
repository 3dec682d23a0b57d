//! Kubernetes integration: which replica runs the background jobs (a `coordination.k8s.io/v1`
//! Lease, [`lease`]) and where a gRPC peer's pods are (EndpointSlices of a headless Service,
//! [`discovery`]).
//!
//! Both are opt-in through the environment ([`leader_election_from_env`],
//! [`grpc_channel_from_env`]); outside a cluster a service is always leader and dials the
//! configured URL, so nothing here is needed to run a service locally or in tests.
//!
//! What the pods need in the cluster: the Downward API variables `POD_NAME` and `POD_NAMESPACE`,
//! and a ServiceAccount whose Role allows `get`, `create` and `update` on
//! `coordination.k8s.io` `leases` (the event service) and `list` and `watch` on
//! `discovery.k8s.io` `endpointslices` (every gRPC client).

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use crate::Shutdown;
use crate::config::{ConfigError, Env};
use crate::grpc::GrpcConfig;

pub mod discovery;
pub mod lease;

pub use discovery::discover;
pub use lease::{LeaseConfig, LeaseLeaderElector};

/// Whether this process should run the background jobs now. Asked before every run, so leadership
/// may come and go.
pub trait LeaderElection: Send + Sync {
    fn is_leader(&self) -> bool;
}

/// Outside a cluster the single process is always the leader.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysLeader;

impl LeaderElection for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }
}

impl<T: LeaderElection + ?Sized> LeaderElection for Arc<T> {
    fn is_leader(&self) -> bool {
        (**self).is_leader()
    }
}

/// Whether this process runs in a Kubernetes pod (the kubelet sets `KUBERNETES_SERVICE_HOST`).
pub(crate) fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|host| !host.is_empty())
}

/// What can go wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No in-cluster configuration (service account token, `KUBERNETES_SERVICE_HOST`) and no
    /// kubeconfig either.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),
    /// A request to the API server failed (unreachable, forbidden by RBAC, ...).
    #[error("Kubernetes API request to {operation} failed: {source}")]
    Api {
        operation: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address from an EndpointSlice (or a configured URL) does not make a URI.
    #[error("invalid gRPC endpoint {url:?}: {source}")]
    InvalidEndpoint {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot set up the gRPC channel: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A Kubernetes client from the pod's service account (or a kubeconfig outside a cluster).
pub async fn client() -> Result<kube::Client, ClusterError> {
    kube::Client::try_default()
        .await
        .map_err(|error| ClusterError::Client(Box::new(error)))
}

/// The namespace this pod runs in: `POD_NAMESPACE` (Downward API), else the client's default (in
/// a cluster, the service account's namespace).
pub fn namespace(env: &Env, client: &kube::Client) -> String {
    env.get("POD_NAMESPACE")
        .map_or_else(|| client.default_namespace().to_owned(), str::to_owned)
}

/// Leader election as configured: a Lease when `ERP_KUBERNETES_LEASE_NAME` is set (the elector
/// runs in the background until `shutdown`, then releases the Lease), otherwise [`AlwaysLeader`].
pub async fn leader_election_from_env(
    env: &Env,
    shutdown: &Shutdown,
) -> Result<Arc<dyn LeaderElection>, ClusterError> {
    let Some(config) = LeaseConfig::from_env(env)? else {
        tracing::info!("ERP_KUBERNETES_LEASE_NAME is not set; this process is always the leader");
        return Ok(Arc::new(AlwaysLeader));
    };
    if !in_cluster() {
        tracing::warn!(
            lease = %config.lease_name,
            "leader election configured outside a cluster; using the local kubeconfig"
        );
    }
    let elector = LeaseLeaderElector::from_env(config).await?;
    tokio::spawn(Arc::clone(&elector).run(shutdown.clone()));
    Ok(elector)
}

/// A gRPC peer as the environment names it: its URL variable (used outside a cluster, and for the
/// port inside one) and the variable naming its headless Service.
#[derive(Debug, Clone, Copy)]
pub struct GrpcPeer<'a> {
    /// For example `ERP_AUTH_URL`.
    pub url_var: &'a str,
    /// For example `http://127.0.0.1:50051`.
    pub default_url: &'a str,
    /// For example `ERP_AUTH_SERVICE_NAME`.
    pub service_var: &'a str,
}

/// A channel to a gRPC peer. With `ERP_KUBERNETES_DISCOVERY=true` and the peer's Service variable
/// set, the channel balances per request over the ready pods of that headless Service, on the port
/// of the peer's URL (the pods' gRPC port); otherwise it dials the URL
/// ([`crate::grpc::channel`]).
pub async fn grpc_channel_from_env(
    env: &Env,
    peer: GrpcPeer<'_>,
    grpc_config: &GrpcConfig,
    shutdown: &Shutdown,
) -> Result<Channel, ClusterError> {
    let url = env.url(peer.url_var, peer.default_url, &["http", "https"])?;
    let service = env.get(peer.service_var).map(str::to_owned);
    let enabled = env.bool("ERP_KUBERNETES_DISCOVERY", false)?;
    match (enabled, service) {
        (true, Some(service)) => {
            let uri: http::Uri = url.parse().map_err(|source: http::uri::InvalidUri| {
                ClusterError::InvalidEndpoint {
                    url: url.clone(),
                    source: source.into(),
                }
            })?;
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let client = client().await?;
            let namespace = namespace(env, &client);
            // Pods are dialled by address; their certificates name the Service.
            let mut grpc_config = grpc_config.clone();
            if let Some(tls) = &mut grpc_config.tls {
                tls.server_name.get_or_insert_with(|| service.clone());
            }
            discover(
                client,
                &namespace,
                &service,
                port,
                &grpc_config,
                shutdown.clone(),
            )
            .await
        }
        (true, None) => {
            tracing::warn!(
                variable = peer.service_var,
                %url,
                "ERP_KUBERNETES_DISCOVERY is on but the peer's Service is not named; dialing the URL"
            );
            Ok(crate::grpc::channel(&url, grpc_config)?)
        }
        (false, _) => Ok(crate::grpc::channel(&url, grpc_config)?),
    }
}

/// `Duration` from whole seconds as Kubernetes stores them, never negative.
fn secs(value: i32) -> Duration {
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS stack (rustls with ring) is usable: an HTTPS client, as in a cluster, builds
    /// without a crypto provider installed by hand.
    #[tokio::test]
    async fn an_https_client_builds() {
        let mut config = kube::Config::new("https://10.96.0.1:443".parse().unwrap());
        config.default_namespace = "erp".into();
        let client = kube::Client::try_from(config).unwrap();
        assert_eq!(client.default_namespace(), "erp");
    }

    const AUTH: GrpcPeer<'static> = GrpcPeer {
        url_var: "ERP_AUTH_URL",
        default_url: "http://127.0.0.1:50051",
        service_var: "ERP_AUTH_SERVICE_NAME",
    };

    /// Without discovery (or without a Service to discover) the peer's URL is dialed and no
    /// Kubernetes client is needed.
    #[tokio::test]
    async fn grpc_channel_without_discovery_dials_the_url() {
        let config = GrpcConfig::default();
        let shutdown = Shutdown::new();
        let plain = Env::from_pairs([("ERP_AUTH_SERVICE_NAME", "erp-auth")]);
        grpc_channel_from_env(&plain, AUTH, &config, &shutdown)
            .await
            .unwrap();
        let unnamed = Env::from_pairs([("ERP_KUBERNETES_DISCOVERY", "true")]);
        grpc_channel_from_env(&unnamed, AUTH, &config, &shutdown)
            .await
            .unwrap();
        let bad = Env::from_pairs([("ERP_KUBERNETES_DISCOVERY", "maybe")]);
        assert!(matches!(
            grpc_channel_from_env(&bad, AUTH, &config, &shutdown).await,
            Err(ClusterError::Config(error)) if error.variable == "ERP_KUBERNETES_DISCOVERY"
        ));
    }

    #[test]
    fn namespace_prefers_pod_namespace() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "from-service-account");
        assert_eq!(namespace(&Env::default(), &client), "from-service-account");
        let env = Env::from_pairs([("POD_NAMESPACE", "erp")]);
        assert_eq!(namespace(&env, &client), "erp");
    }
}
