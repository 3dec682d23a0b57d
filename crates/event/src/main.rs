//! Starts the event service; see the crate documentation and the README for configuration.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(
        erp_event::Config::from_env,
        erp_platform::runtime::Threads::Shared,
        |config, shutdown| async move {
            // A Kubernetes Lease when ERP_KUBERNETES_LEASE_NAME is set, else always the leader.
            let leader = erp_platform::cluster::leader_election_from_env(
                &erp_platform::Env::from_process(),
                &shutdown,
            )
            .await?;
            erp_event::App::build(config)
                .await?
                .with_leader_election(leader)
                .run(shutdown)
                .await
        },
    )
}
