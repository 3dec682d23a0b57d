//! Which replica runs the background jobs: the platform's leader-election seam. Every job is
//! idempotent, so a brief overlap of two leaders (a lease changing hands) does no harm; outside a
//! cluster the single process is always the leader, in a cluster a Kubernetes `Lease` decides
//! (`ERP_KUBERNETES_LEASE_NAME`, see `erp_platform::cluster::lease`).

pub use erp_platform::cluster::{AlwaysLeader, LeaderElection};
