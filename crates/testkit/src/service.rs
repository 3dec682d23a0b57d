//! A service run in the test's own process: the app's future spawned on the test's runtime,
//! awaited until its admin port answers `/readyz`, stopped when the test is done with it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A service app spawned in this process (see [`InProcessService::spawn`]). Dropping it stops
/// serving at once (the task is aborted), so stores cleaned up after it are not written again.
pub struct InProcessService {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Box<dyn Fn() + Send + Sync>,
    task: Option<JoinHandle<()>>,
}

impl InProcessService {
    /// Spawns `run` (the app serving on `grpc_addr` and `admin_addr`, bound already, until
    /// `stop` is called) and waits (30 s at most) until `/readyz` answers 200.
    pub async fn spawn(
        grpc_addr: SocketAddr,
        admin_addr: SocketAddr,
        run: impl Future<Output = ()> + Send + 'static,
        stop: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let task = tokio::spawn(run);
        crate::wait_for_200(
            &format!("http://{admin_addr}/readyz"),
            Duration::from_secs(30),
        )
        .await;
        Self {
            grpc_addr,
            admin_addr,
            stop: Box::new(stop),
            task: Some(task),
        }
    }

    /// The URL of the gRPC listener.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Asks the app to stop and waits until it has (drained and returned).
    pub async fn stop(mut self) {
        (self.stop)();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for InProcessService {
    fn drop(&mut self) {
        (self.stop)();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
