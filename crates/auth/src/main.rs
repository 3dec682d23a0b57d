//! Starts the auth service; see the crate documentation and the README for configuration.

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(erp_auth::Config::from_env, |config, shutdown| async move {
        erp_auth::App::build(config).await?.run(shutdown).await
    })
}
