//! The Prometheus registry a service's metrics live in, and its text exposition.

use prometheus::{Encoder, Registry, TextEncoder};

/// A registry with the process collector (CPU, memory, file descriptors) already in it.
pub fn new_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    {
        let collector = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(error) = registry.register(Box::new(collector)) {
            tracing::warn!(%error, "process metrics unavailable");
        }
    }
    registry
}

/// Renders every metric of `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buffer = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
