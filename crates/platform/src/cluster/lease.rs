//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go's `leaderelection`
//! does it: the holder writes its identity and renews `renewTime` every `renew_interval`; anyone
//! may take the Lease over once `renewTime + leaseDurationSeconds` has passed (or the Lease has not
//! changed for that long by the local clock, which covers a holder whose clock runs ahead). Every
//! write carries the `resourceVersion` it was based on, so of two candidates only one wins; the
//! other gets `409 Conflict` and follows.
//!
//! [`LeaseLeaderElector::is_leader`] also turns false once the last successful renew is older than
//! the lease duration, so a pod cut off from the API server stops acting as leader about when the
//! others may take over. Jobs must still be idempotent: a brief overlap is possible (clock skew, a
//! job that started just before leadership ended).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{ClusterError, LeaderElection, secs};
use crate::Shutdown;
use crate::config::{ConfigError, Env};

/// Leader election settings from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// `ERP_KUBERNETES_LEASE_NAME`.
    pub lease_name: String,
    /// `POD_NAMESPACE`; `None`: the client's default namespace (the service account's).
    pub namespace: Option<String>,
    /// `POD_NAME`, else `HOSTNAME` (which Kubernetes sets to the pod name).
    pub identity: String,
    /// `ERP_KUBERNETES_LEASE_DURATION_SECS`, default 15.
    pub lease_duration: Duration,
    /// `ERP_KUBERNETES_LEASE_RENEW_SECS`, default 5; less than the duration.
    pub renew_interval: Duration,
}

impl LeaseConfig {
    pub(crate) const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
    pub(crate) const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(5);

    /// `None` when `ERP_KUBERNETES_LEASE_NAME` is unset: no leader election.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(lease_name) = env.get("ERP_KUBERNETES_LEASE_NAME") else {
            return Ok(None);
        };
        let identity = env
            .get("POD_NAME")
            .or_else(|| env.get("HOSTNAME"))
            .ok_or_else(|| {
                ConfigError::new(
                    "POD_NAME",
                    "",
                    "leader election needs the pod name (Downward API metadata.name)",
                )
            })?
            .to_owned();
        let lease_duration = env.duration_secs(
            "ERP_KUBERNETES_LEASE_DURATION_SECS",
            Self::DEFAULT_LEASE_DURATION,
            Duration::from_secs(2),
        )?;
        let renew_interval = env.duration_secs(
            "ERP_KUBERNETES_LEASE_RENEW_SECS",
            Self::DEFAULT_RENEW_INTERVAL,
            Duration::from_secs(1),
        )?;
        if renew_interval >= lease_duration {
            return Err(ConfigError::new(
                "ERP_KUBERNETES_LEASE_RENEW_SECS",
                &renew_interval.as_secs().to_string(),
                format!(
                    "must be less than ERP_KUBERNETES_LEASE_DURATION_SECS ({})",
                    lease_duration.as_secs()
                ),
            ));
        }
        Ok(Some(Self {
            lease_name: lease_name.to_owned(),
            namespace: env.get("POD_NAMESPACE").map(str::to_owned),
            identity,
            lease_duration,
            renew_interval,
        }))
    }
}

/// Leader election over one Lease. Create it with [`LeaseLeaderElector::new`], spawn
/// [`LeaseLeaderElector::run`], ask [`LeaderElection::is_leader`] before each job.
pub struct LeaseLeaderElector {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
    renew_interval: Duration,
    leader: AtomicBool,
    /// When the request of the last successful acquire or renew was sent.
    renewed_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for LeaseLeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLeaderElector")
            .field("lease_name", &self.lease_name)
            .field("identity", &self.identity)
            .field("lease_duration", &self.lease_duration)
            .field("renew_interval", &self.renew_interval)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

/// What the elector remembers between attempts (owned by [`LeaseLeaderElector::run`]).
#[derive(Default)]
struct State {
    /// The Lease as we last wrote it while holding it: renewing replaces it without a read.
    held: Option<Lease>,
    /// Another holder's Lease: its `resourceVersion` and when we first saw that version.
    observed: Option<(String, Instant)>,
}

enum Outcome {
    Holding(Box<Lease>),
    Following { holder: String },
}

impl LeaseLeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: impl Into<String>,
        holder_identity: impl Into<String>,
        lease_duration: Duration,
        renew_interval: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            lease_name: lease_name.into(),
            identity: holder_identity.into(),
            lease_duration,
            renew_interval,
            leader: AtomicBool::new(false),
            renewed_at: Mutex::new(None),
        }
    }

    /// An elector from [`LeaseConfig`] with the pod's own credentials
    /// ([`kube::Client::try_default`]). Spawn [`Self::run`] on the result.
    pub async fn from_env(config: LeaseConfig) -> Result<Arc<Self>, ClusterError> {
        let client = super::client().await?;
        let namespace = config
            .namespace
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok(Arc::new(Self::new(
            client,
            &namespace,
            config.lease_name,
            config.identity,
            config.lease_duration,
            config.renew_interval,
        )))
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease_name(&self) -> &str {
        &self.lease_name
    }

    /// Tries to acquire, then renews or follows every `renew_interval` until `shutdown`; then steps
    /// down and releases the Lease if it holds it, so another replica takes over at once.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        tracing::info!(
            lease = %self.lease_name,
            identity = %self.identity,
            lease_duration = ?self.lease_duration,
            renew_interval = ?self.renew_interval,
            "leader election started"
        );
        let mut state = State::default();
        loop {
            tokio::select! {
                () = shutdown.triggered() => break,
                () = self.attempt(&mut state) => {}
            }
            tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(self.renew_interval) => {}
            }
        }
        self.release(&mut state).await;
    }

    /// One acquire-or-renew round; updates the leader flag and logs transitions.
    async fn attempt(&self, state: &mut State) {
        let sent_at = Instant::now();
        match tokio::time::timeout(self.lease_duration, self.acquire_or_renew(state)).await {
            Ok(Ok(Outcome::Holding(lease))) => {
                state.held = Some(*lease);
                state.observed = None;
                *self.renewed_at_guard() = Some(sent_at);
                self.set_leader(true, &self.identity);
            }
            Ok(Ok(Outcome::Following { holder })) => {
                state.held = None;
                self.set_leader(false, &holder);
            }
            Ok(Err(error)) if is_conflict(&error) => {
                // Someone else wrote the Lease since we read it: they won this round.
                state.held = None;
                tracing::debug!(lease = %self.lease_name, %error, "lease update lost a race");
                self.set_leader(false, "another candidate");
            }
            Ok(Err(error)) => {
                state.held = None;
                tracing::warn!(lease = %self.lease_name, %error, "lease request failed");
                self.expire_if_stale();
            }
            Err(_elapsed) => {
                state.held = None;
                tracing::warn!(lease = %self.lease_name, timeout = ?self.lease_duration, "lease request timed out");
                self.expire_if_stale();
            }
        }
    }

    async fn acquire_or_renew(&self, state: &mut State) -> Result<Outcome, kube::Error> {
        let now = Timestamp::now();
        let params = PostParams::default();
        // Holding: renew our own copy; its resourceVersion makes the write fail if anyone else
        // wrote in between.
        if let Some(mut lease) = state.held.take() {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(self.lease_duration_secs());
            let lease = self.api.replace(&self.lease_name, &params, &lease).await?;
            return Ok(Outcome::Holding(Box::new(lease)));
        }
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_duration_secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let lease = self.api.create(&params, &lease).await?;
            return Ok(Outcome::Holding(Box::new(lease)));
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.clone())
            .filter(|holder| !holder.is_empty());
        let taken = holder
            .as_ref()
            .is_some_and(|holder| *holder != self.identity && !self.expired(&lease, now, state));
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        match holder {
            Some(holder) if taken => {
                return Ok(Outcome::Following { holder });
            }
            Some(holder) if holder == self.identity => {
                // Ours already (we restarted quickly, or a renew answer was lost): renew it.
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(self.lease_duration_secs());
            }
            previous => {
                if let Some(previous) = &previous {
                    tracing::info!(lease = %self.lease_name, %previous, "taking over an expired lease");
                }
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(self.lease_duration_secs());
                spec.acquire_time = Some(MicroTime(now));
                spec.renew_time = Some(MicroTime(now));
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
        }
        // `lease` still carries the resourceVersion we read.
        let lease = self.api.replace(&self.lease_name, &params, &lease).await?;
        Ok(Outcome::Holding(Box::new(lease)))
    }

    /// Whether another holder's Lease may be taken over: its `renewTime + leaseDurationSeconds`
    /// has passed, or it has not changed for that long as far as we have watched it.
    fn expired(&self, lease: &Lease, now: Timestamp, state: &mut State) -> bool {
        let spec = lease.spec.as_ref();
        let duration = spec
            .and_then(|spec| spec.lease_duration_seconds)
            .filter(|secs| *secs > 0)
            .map_or(self.lease_duration, secs);
        let by_clock =
            match spec.and_then(|spec| spec.renew_time.as_ref().or(spec.acquire_time.as_ref())) {
                Some(renewed) => {
                    let age_ms = now
                        .as_millisecond()
                        .saturating_sub(renewed.0.as_millisecond());
                    u128::try_from(age_ms).is_ok_and(|age| age >= duration.as_millis())
                }
                None => true,
            };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let unchanged_since = match &state.observed {
            Some((seen, since)) if *seen == version => *since,
            _ => {
                let since = Instant::now();
                state.observed = Some((version, since));
                since
            }
        };
        by_clock || unchanged_since.elapsed() >= duration
    }

    /// Steps down (jobs stop at once), then clears `holderIdentity` if we hold the Lease.
    async fn release(&self, state: &mut State) {
        let was_leader = self.leader.swap(false, Ordering::AcqRel);
        if was_leader {
            tracing::info!(lease = %self.lease_name, identity = %self.identity, "stepping down: shutting down");
        }
        let release = async {
            let lease = match state.held.take() {
                Some(lease) => Some(lease),
                // A renew was cut short by shutdown: read whether the Lease is still ours.
                None if was_leader => self.api.get_opt(&self.lease_name).await?,
                None => None,
            };
            let Some(mut lease) = lease.filter(|lease| {
                lease
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.holder_identity.as_deref())
                    == Some(self.identity.as_str())
            }) else {
                return Ok(false);
            };
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
            }
            self.api
                .replace(&self.lease_name, &PostParams::default(), &lease)
                .await?;
            Ok::<_, kube::Error>(true)
        };
        match tokio::time::timeout(self.renew_interval.max(Duration::from_secs(2)), release).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.lease_name, "lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.lease_name, %error, "could not release the lease; it expires by itself");
            }
            Err(_) => {
                tracing::warn!(lease = %self.lease_name, "releasing the lease timed out; it expires by itself");
            }
        }
    }

    fn set_leader(&self, leader: bool, holder: &str) {
        let was = self.leader.swap(leader, Ordering::AcqRel);
        match (was, leader) {
            (false, true) => {
                tracing::info!(lease = %self.lease_name, identity = %self.identity, "became leader");
            }
            (true, false) => {
                tracing::info!(lease = %self.lease_name, identity = %self.identity, %holder, "lost leadership");
            }
            _ => {}
        }
    }

    /// After failed renews: once the lease has run out, stop claiming leadership (and say so).
    fn expire_if_stale(&self) {
        if self.leader.load(Ordering::Acquire) && !self.renewed_recently() {
            self.set_leader(false, "unknown (lease expired before it could be renewed)");
        }
    }

    fn renewed_recently(&self) -> bool {
        self.renewed_at_guard()
            .is_some_and(|at| at.elapsed() < self.lease_duration)
    }

    fn renewed_at_guard(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.renewed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_duration_secs(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

impl LeaderElection for LeaseLeaderElector {
    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire) && self.renewed_recently()
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    // 409 is both `Conflict` (stale resourceVersion) and `AlreadyExists` (lost the create race).
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
