//! Client-side load balancing for gRPC inside the cluster.
//!
//! HTTP/2 keeps one connection per client, so a ClusterIP Service would pin each client to one
//! pod. Instead a client watches the `discovery.k8s.io/v1` EndpointSlices of the peer's headless
//! Service (label `kubernetes.io/service-name=<service>`) and feeds a tonic balanced channel: ready
//! endpoints are inserted, endpoints that disappear, turn not-ready or start terminating are
//! removed, and each request goes to one of the current pods.
//!
//! The watch is a plain list-then-watch: list (state and `resourceVersion`), watch from that
//! version, resume the watch when the server ends it, list again when the version has expired
//! (`410 Gone`) or after an error (with backoff).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use kube::ResourceExt;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use super::ClusterError;
use crate::Shutdown;
use crate::grpc::GrpcConfig;

/// The label the EndpointSlice controller puts on every slice of a Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Pending endpoint changes the balanced channel may queue. The channel only takes changes while
/// it is polled (by a request), so the watch waits here when nothing calls the peer.
const CHANGES_CAPACITY: usize = 1024;
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A watch that ends sooner than this without a single event counts as failed (no busy loop).
const MIN_WATCH_LIFETIME: Duration = Duration::from_secs(1);

/// A channel balanced over the ready pods of the headless Service `service` in `namespace`, dialed
/// on `port` with the platform's timeouts and keep-alive, kept up to date by a background watch
/// until `shutdown`.
///
/// The first list happens before this returns, so a missing RBAC permission or an unreachable API
/// server fails start. With no ready pod, calls wait for one (bounded by the caller's deadline).
pub async fn discover(
    client: kube::Client,
    namespace: &str,
    service: &str,
    port: u16,
    grpc_config: &GrpcConfig,
    shutdown: Shutdown,
) -> Result<Channel, ClusterError> {
    let (channel, changes) = Channel::balance_channel(CHANGES_CAPACITY);
    watch_endpoints(
        client,
        namespace,
        service,
        port,
        grpc_config,
        changes,
        shutdown,
    )
    .await?;
    Ok(channel)
}

/// The watch behind [`discover`], sending endpoint changes (keyed by `http://ip:port`) to
/// `changes` instead of a channel of its own. Lists once (errors are returned), then spawns the
/// watch; the task ends on `shutdown` or when `changes` is closed.
pub async fn watch_endpoints(
    client: kube::Client,
    namespace: &str,
    service: &str,
    port: u16,
    grpc_config: &GrpcConfig,
    changes: Sender<Change<String, Endpoint>>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, ClusterError> {
    let mut watch = SliceWatch {
        api: Api::namespaced(client, namespace),
        selector: format!("{SERVICE_NAME_LABEL}={service}"),
        service: service.to_owned(),
        port,
        grpc_config: grpc_config.clone(),
        changes,
        slices: BTreeMap::new(),
        applied: BTreeSet::new(),
        backoff: INITIAL_BACKOFF,
    };
    let version = watch.list().await.map_err(|source| ClusterError::Api {
        operation: "list EndpointSlices",
        source: Box::new(source),
    })?;
    if watch.desired().is_empty() {
        tracing::warn!(
            service,
            namespace,
            "no ready endpoints yet; calls wait for one"
        );
    }
    Ok(tokio::spawn(async move {
        tokio::select! {
            () = shutdown.triggered() => {}
            () = watch.run(version) => {}
        }
        tracing::debug!(service = %watch.service, "endpoint watch stopped");
    }))
}

/// `http://<address>:<port>`, with brackets around an IPv6 address.
pub(crate) fn endpoint_url(address: &str, port: u16) -> String {
    if address.parse::<Ipv6Addr>().is_ok() {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    }
}

/// Whether an endpoint should get new requests: ready (unset counts as ready, as the API says)
/// and not terminating.
pub(crate) fn is_ready(conditions: Option<&EndpointConditions>) -> bool {
    conditions.is_none_or(|c| c.ready.unwrap_or(true) && !c.terminating.unwrap_or(false))
}

/// The URLs of the ready endpoints of one slice.
pub(crate) fn ready_addresses(slice: &EndpointSlice, port: u16) -> BTreeSet<String> {
    slice
        .endpoints
        .iter()
        .filter(|endpoint| is_ready(endpoint.conditions.as_ref()))
        .flat_map(|endpoint| &endpoint.addresses)
        .map(|address| endpoint_url(address, port))
        .collect()
}

/// The URLs of the ready endpoints of all slices of a Service.
#[cfg(test)]
fn ready_addresses_of<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: u16,
) -> BTreeSet<String> {
    slices
        .into_iter()
        .flat_map(|slice| ready_addresses(slice, port))
        .collect()
}

/// What changes between two sets of endpoint URLs, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointDiff {
    pub insert: Vec<String>,
    pub remove: Vec<String>,
}

impl EndpointDiff {
    pub(crate) fn is_empty(&self) -> bool {
        self.insert.is_empty() && self.remove.is_empty()
    }
}

pub fn diff(current: &BTreeSet<String>, desired: &BTreeSet<String>) -> EndpointDiff {
    EndpointDiff {
        insert: desired.difference(current).cloned().collect(),
        remove: current.difference(desired).cloned().collect(),
    }
}

/// An endpoint with the same settings as [`crate::grpc::channel`].
pub fn endpoint(url: &str, config: &GrpcConfig) -> Result<Endpoint, ClusterError> {
    crate::grpc::endpoint(url, config).map_err(|source| ClusterError::InvalidEndpoint {
        url: url.to_owned(),
        source: source.into(),
    })
}

struct SliceWatch {
    api: Api<EndpointSlice>,
    selector: String,
    service: String,
    port: u16,
    grpc_config: GrpcConfig,
    changes: Sender<Change<String, Endpoint>>,
    /// Ready endpoint URLs per slice name.
    slices: BTreeMap<String, BTreeSet<String>>,
    /// What the channel has been told.
    applied: BTreeSet<String>,
    /// The pause before the next retry; doubles on each failure, reset by a success.
    backoff: Duration,
}

enum Next {
    /// Watch from the last known version.
    Watch,
    /// Watch again after a pause (the last watch ended at once, or could not start).
    WatchAfterBackoff,
    /// The version is gone: list again now.
    Relist,
    /// List again after a pause.
    RelistAfterBackoff,
    /// The channel is gone: nobody needs these endpoints any more.
    Stop,
}

impl SliceWatch {
    /// Replaces the known slices with a fresh list; returns its `resourceVersion`.
    async fn list(&mut self) -> Result<String, kube::Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&self.selector))
            .await?;
        self.slices = list
            .items
            .iter()
            .map(|slice| (slice.name_any(), ready_addresses(slice, self.port)))
            .collect();
        Ok(list.metadata.resource_version.unwrap_or_default())
    }

    fn desired(&self) -> BTreeSet<String> {
        self.slices.values().flatten().cloned().collect()
    }

    async fn run(&mut self, mut version: String) {
        let mut next = if self.apply().await {
            Next::Watch
        } else {
            Next::Stop
        };
        loop {
            next = match next {
                Next::Watch => self.watch(&mut version).await,
                Next::WatchAfterBackoff | Next::RelistAfterBackoff => {
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    if matches!(next, Next::WatchAfterBackoff) {
                        self.watch(&mut version).await
                    } else {
                        Next::Relist
                    }
                }
                Next::Relist => match self.list().await {
                    Ok(listed) => {
                        version = listed;
                        self.backoff = INITIAL_BACKOFF;
                        if self.apply().await {
                            Next::Watch
                        } else {
                            Next::Stop
                        }
                    }
                    Err(error) => {
                        tracing::warn!(service = %self.service, %error, backoff = ?self.backoff, "listing EndpointSlices failed");
                        Next::RelistAfterBackoff
                    }
                },
                Next::Stop => return,
            };
        }
    }

    /// One watch request, applying its events; says what to do when it ends.
    async fn watch(&mut self, version: &mut String) -> Next {
        let params = WatchParams::default().labels(&self.selector);
        let started = Instant::now();
        let stream = match self.api.watch(&params, version).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) if is_gone(&status) => return Next::Relist,
            Err(error) => {
                tracing::warn!(service = %self.service, %error, "watching EndpointSlices failed");
                return Next::RelistAfterBackoff;
            }
        };
        let mut stream = pin!(stream);
        let mut events = 0_usize;
        while let Some(event) = stream.next().await {
            events += 1;
            self.backoff = INITIAL_BACKOFF;
            match event {
                Ok(WatchEvent::Added(slice) | WatchEvent::Modified(slice)) => {
                    remember_version(version, &slice);
                    let ready = ready_addresses(&slice, self.port);
                    self.slices.insert(slice.name_any(), ready);
                }
                Ok(WatchEvent::Deleted(slice)) => {
                    remember_version(version, &slice);
                    self.slices.remove(&slice.name_any());
                }
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    *version = bookmark.metadata.resource_version;
                    continue;
                }
                Ok(WatchEvent::Error(status)) if is_gone(&status) => return Next::Relist,
                Ok(WatchEvent::Error(status)) => {
                    tracing::warn!(service = %self.service, error = %status.message, code = status.code, "EndpointSlice watch error");
                    return Next::RelistAfterBackoff;
                }
                Err(error) => {
                    tracing::warn!(service = %self.service, %error, "EndpointSlice watch broke");
                    return Next::RelistAfterBackoff;
                }
            }
            if !self.apply().await {
                return Next::Stop;
            }
        }
        if events == 0 && started.elapsed() < MIN_WATCH_LIFETIME {
            Next::WatchAfterBackoff
        } else {
            Next::Watch
        }
    }

    /// Tells the channel what changed; false once the channel is gone.
    async fn apply(&mut self) -> bool {
        let desired = self.desired();
        let diff = diff(&self.applied, &desired);
        if diff.is_empty() {
            return true;
        }
        // Inserts first, so that the channel never runs empty in between.
        for url in &diff.insert {
            let endpoint = match endpoint(url, &self.grpc_config) {
                Ok(endpoint) => endpoint,
                Err(error) => {
                    tracing::warn!(service = %self.service, %error, "skipping an endpoint");
                    continue;
                }
            };
            if self
                .changes
                .send(Change::Insert(url.clone(), endpoint))
                .await
                .is_err()
            {
                return false;
            }
            self.applied.insert(url.clone());
        }
        for url in &diff.remove {
            if self
                .changes
                .send(Change::Remove(url.clone()))
                .await
                .is_err()
            {
                return false;
            }
            self.applied.remove(url);
        }
        tracing::info!(
            service = %self.service,
            added = ?diff.insert,
            removed = ?diff.remove,
            endpoints = self.applied.len(),
            "gRPC endpoints changed"
        );
        true
    }
}

fn remember_version(version: &mut String, slice: &EndpointSlice) {
    if let Some(seen) = &slice.metadata.resource_version {
        seen.clone_into(version);
    }
}

fn is_gone(status: &kube::core::Status) -> bool {
    status.code == 410 || status.reason == "Expired" || status.reason == "Gone"
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::Endpoint as SliceEndpoint;

    use super::*;

    fn slice(endpoints: &[(&str, Option<bool>, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(address, ready, terminating)| SliceEndpoint {
                    addresses: vec![(*address).to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *ready,
                        terminating: *terminating,
                    }),
                    ..SliceEndpoint::default()
                })
                .collect(),
            ..EndpointSlice::default()
        }
    }

    fn set(urls: &[&str]) -> BTreeSet<String> {
        urls.iter().map(|u| (*u).to_owned()).collect()
    }

    #[test]
    fn ready_addresses_keep_ready_and_unknown_and_drop_not_ready_and_terminating() {
        let slice = slice(&[
            ("10.0.0.1", Some(true), None),
            ("10.0.0.2", Some(false), None),
            ("10.0.0.3", None, None),
            ("10.0.0.4", Some(true), Some(true)),
            ("fd00::5", Some(true), Some(false)),
        ]);
        assert_eq!(
            ready_addresses(&slice, 50051),
            set(&[
                "http://10.0.0.1:50051",
                "http://10.0.0.3:50051",
                "http://[fd00::5]:50051",
            ])
        );
    }

    #[test]
    fn endpoint_without_conditions_counts_as_ready() {
        let mut slice = slice(&[("10.0.0.9", None, None)]);
        slice.endpoints[0].conditions = None;
        assert_eq!(ready_addresses(&slice, 1), set(&["http://10.0.0.9:1"]));
    }

    #[test]
    fn addresses_of_several_slices_are_merged() {
        let a = slice(&[
            ("10.0.0.1", Some(true), None),
            ("10.0.0.2", Some(true), None),
        ]);
        let b = slice(&[
            ("10.0.0.2", Some(true), None),
            ("10.0.0.3", Some(false), None),
        ]);
        assert_eq!(
            ready_addresses_of([&a, &b], 80),
            set(&["http://10.0.0.1:80", "http://10.0.0.2:80"])
        );
    }

    #[test]
    fn diff_lists_inserts_and_removes() {
        let current = set(&["http://a:1", "http://b:1", "http://c:1"]);
        let desired = set(&["http://b:1", "http://d:1", "http://e:1"]);
        assert_eq!(
            diff(&current, &desired),
            EndpointDiff {
                insert: vec!["http://d:1".into(), "http://e:1".into()],
                remove: vec!["http://a:1".into(), "http://c:1".into()],
            }
        );
        assert!(diff(&desired, &desired).is_empty());
        assert_eq!(
            diff(&BTreeSet::new(), &current).insert.len(),
            3,
            "scale up from nothing inserts everything"
        );
        assert_eq!(
            diff(&current, &BTreeSet::new()).remove.len(),
            3,
            "scale to zero removes everything"
        );
    }

    #[test]
    fn endpoint_urls_and_settings() {
        assert_eq!(endpoint_url("10.1.2.3", 50052), "http://10.1.2.3:50052");
        assert_eq!(endpoint_url("::1", 50052), "http://[::1]:50052");
        let config = GrpcConfig::default();
        let endpoint = endpoint("http://10.1.2.3:50052", &config).unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://10.1.2.3:50052/");
        assert!(matches!(
            super::endpoint("http://bad host:1", &config),
            Err(ClusterError::InvalidEndpoint { .. })
        ));
    }
}
