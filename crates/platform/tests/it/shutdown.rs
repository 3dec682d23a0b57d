//! Graceful shutdown of a served router: in-flight requests finish, new ones are refused, and the
//! drain deadline cuts requests that take too long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use erp_platform::{Shutdown, runtime};
use tokio::sync::Notify;

/// A server whose `/slow` takes `delay`; `arrived` is notified when a request is in its handler.
struct SlowServer {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<Result<(), runtime::BoxError>>,
}

/// Waits until a request is in flight (instead of sleeping and hoping it is).
async fn in_handler(arrived: &Notify) {
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("the request reaches the handler");
}

async fn serve_slow(delay: Duration, drain: Duration) -> SlowServer {
    let arrived = Arc::new(Notify::new());
    let router = Router::new().route(
        "/slow",
        get({
            let arrived = Arc::clone(&arrived);
            move || async move {
                arrived.notify_one();
                tokio::time::sleep(delay).await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(runtime::serve_http(
        listener,
        router,
        shutdown.clone(),
        drain,
    ));
    SlowServer {
        addr,
        shutdown,
        arrived,
        task: server,
    }
}

#[tokio::test]
async fn in_flight_request_finishes_after_shutdown_starts() {
    let SlowServer {
        addr,
        shutdown,
        arrived,
        task: server,
    } = serve_slow(Duration::from_millis(800), Duration::from_secs(10)).await;
    let in_flight =
        tokio::spawn(async move { reqwest::get(format!("http://{addr}/slow")).await.unwrap() });
    in_handler(&arrived).await;
    shutdown.trigger();

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops once drained")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/slow")).await.is_err(),
        "no new connection after shutdown"
    );
}

#[test]
fn drain_deadline_cuts_requests_that_take_too_long() {
    // The server runs on a runtime of its own that is dropped once it returns, as a process
    // exiting after the drain deadline drops everything still in flight.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = serve_slow(Duration::from_secs(60), Duration::from_millis(500)).await;
            addr_tx
                .send((server.addr, server.shutdown, server.arrived))
                .unwrap();
            server.task.await.unwrap().unwrap();
        });
    });
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.block_on(async move {
        let (addr, shutdown, arrived) = addr_rx.recv().unwrap();
        let in_flight =
            tokio::spawn(async move { reqwest::get(format!("http://{addr}/slow")).await });
        in_handler(&arrived).await;
        let started = Instant::now();
        shutdown.trigger();
        let joined = tokio::task::spawn_blocking(move || server_thread.join());
        tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .expect("server stops at the drain deadline")
            .unwrap()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("the slow request ends with the server")
            .unwrap();
        assert!(outcome.is_err(), "the slow request was cut: {outcome:?}");
    });
}
