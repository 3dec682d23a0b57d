//! Starts the gateway; see the crate documentation and the README for configuration.

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(
        erp_gateway::Config::from_env,
        |config, shutdown| async move { erp_gateway::App::build(config).await?.run(shutdown).await },
    )
}
