//! Starts the gateway; see the crate documentation and the README for configuration.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(
        erp_gateway::Config::from_env,
        // The gateway serves HTTP on one single-threaded runtime per thread (see `App`).
        erp_platform::runtime::Threads::PerThread,
        |config, shutdown| async move { erp_gateway::App::build(config).await?.run(shutdown).await },
    )
}
