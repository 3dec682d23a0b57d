//! Starts the auth service; see the crate documentation and the README for configuration.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(
        erp_auth::Config::from_env,
        erp_platform::runtime::Threads::Shared,
        |config, shutdown| async move { erp_auth::App::build(config).await?.run(shutdown).await },
    )
}
