//! Starts the event service; see the crate documentation and the README for configuration.

fn main() -> std::process::ExitCode {
    erp_platform::runtime::run(erp_event::Config::from_env, |config, shutdown| async move {
        erp_event::App::build(config).await?.run(shutdown).await
    })
}
