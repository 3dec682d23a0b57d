//! A gRPC server with only the health service, as the platform's servers are built.

use erp_platform::Shutdown;
use erp_platform::grpc::GrpcConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

/// Serves gRPC health on `listener` with `config`, `name` reported serving, until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: GrpcConfig,
    name: &'static str,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let (reporter, service) = erp_platform::grpc::health();
    reporter
        .set_service_status(name, ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _reporter = reporter;
        erp_platform::grpc::server(&config)
            .unwrap()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.triggered(),
            )
            .await
            .unwrap();
    })
}
