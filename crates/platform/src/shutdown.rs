//! Graceful shutdown: one signal stops every server of a process, which then gets a bounded time to
//! finish what is in flight.

use std::future::IntoFuture;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A cloneable handle: `trigger` once, every clone sees it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has been triggered.
    pub fn triggered(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// Triggers shutdown on the first SIGTERM or SIGINT (Ctrl-C).
    pub(crate) fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "shutdown requested");
            this.trigger();
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; only Ctrl-C will stop this process");
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

/// Runs `server` (a server future that starts draining by itself once `shutdown` triggers) and
/// bounds the drain: when `drain_deadline` passes after the trigger, the server is dropped, cutting
/// whatever is still in flight. Returns whether the drain finished in time.
pub(crate) async fn drain_within<F, T>(
    server: F,
    shutdown: &Shutdown,
    drain_deadline: Duration,
) -> DrainOutcome<T>
where
    F: IntoFuture<Output = T>,
{
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => DrainOutcome::Finished(result),
        () = shutdown.token.cancelled() => {
            match tokio::time::timeout(drain_deadline, server).await {
                Ok(result) => DrainOutcome::Finished(result),
                Err(_) => {
                    tracing::warn!(?drain_deadline, "drain deadline passed; cutting in-flight requests");
                    DrainOutcome::DeadlinePassed
                }
            }
        }
    }
}

/// How a server stopped.
#[derive(Debug)]
pub(crate) enum DrainOutcome<T> {
    /// The server returned on its own (after draining, or with an error).
    Finished(T),
    /// Requests were still in flight when the drain deadline passed.
    DeadlinePassed,
}
