//! Mutual TLS between the services: a server with `ERP_GRPC_TLS_*` answers clients that present a
//! certificate of the platform's CA and refuses plaintext clients, clients without a certificate
//! and clients whose certificate another CA issued.

use std::time::Duration;

use erp_platform::grpc::{GrpcConfig, GrpcTls};
use erp_platform::{Env, Shutdown};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A CA, and PEM (certificate, key) pairs it issued for `names`.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn tls(&self, names: &[&str]) -> GrpcTls {
        let (cert, key) = self.issue(names);
        GrpcTls::from_pem(cert.as_bytes(), key.as_bytes(), self.ca_pem.as_bytes())
    }
}

fn config(tls: Option<GrpcTls>) -> GrpcConfig {
    GrpcConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        tls,
        ..GrpcConfig::default()
    }
}

async fn health(url: &str, config: &GrpcConfig) -> Result<(), String> {
    let channel = erp_platform::grpc::endpoint(url, config)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn servers_with_tls_take_only_clients_of_the_platforms_ca() {
    let pki = Pki::new();
    let server_config = config(Some(pki.tls(&["localhost"])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = Shutdown::new();
    let server = crate::grpc_health::serve(listener, server_config, "", shutdown.clone()).await;
    // The URL's scheme stays http, as in the plaintext configuration: TLS comes from the config.
    let url = format!("http://localhost:{port}");

    health(&url, &config(Some(pki.tls(&["erp-gateway"]))))
        .await
        .expect("a client of the platform's CA is served");

    assert!(
        health(&url, &config(None)).await.is_err(),
        "plaintext client"
    );
    let stranger = Pki::new();
    assert!(
        health(&url, &config(Some(stranger.tls(&["erp-gateway"]))))
            .await
            .is_err(),
        "client certificate of another CA"
    );
    // A client that trusts the server, but whose own certificate another CA issued: the
    // server is the one that refuses.
    let (cert, key) = stranger.issue(&["erp-gateway"]);
    let foreign_client = GrpcTls::from_pem(cert.as_bytes(), key.as_bytes(), pki.ca_pem.as_bytes());
    assert!(
        health(&url, &config(Some(foreign_client))).await.is_err(),
        "client certificate not issued by the platform's CA"
    );
    // A server name the certificate does not carry is refused by the client.
    let mut wrong_name = pki.tls(&["erp-gateway"]);
    wrong_name.server_name = Some("erp-event".into());
    assert!(
        health(&url, &config(Some(wrong_name))).await.is_err(),
        "server certificate for another name"
    );

    shutdown.trigger();
    server.await.unwrap();
}

#[test]
fn tls_settings_come_as_a_set_of_three_readable_pem_files() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(erp_testkit::unique_name("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = pki.issue(&["erp-auth"]);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("garbage.crt"), "not a certificate").unwrap();
    let file = |name: &str| dir.join(name).display().to_string();

    let none = GrpcConfig::from_env(&Env::default()).unwrap();
    assert!(none.tls.is_none());
    let all = GrpcConfig::from_env(&Env::from_pairs([
        ("ERP_GRPC_TLS_CERT_FILE", file("tls.crt")),
        ("ERP_GRPC_TLS_KEY_FILE", file("tls.key")),
        ("ERP_GRPC_TLS_CA_FILE", file("ca.crt")),
    ]))
    .unwrap();
    assert!(all.tls.is_some());

    let missing = GrpcConfig::from_env(&Env::from_pairs([
        ("ERP_GRPC_TLS_CERT_FILE", file("tls.crt")),
        ("ERP_GRPC_TLS_KEY_FILE", file("tls.key")),
    ]))
    .unwrap_err();
    assert_eq!(missing.variable, "ERP_GRPC_TLS_CA_FILE");
    let garbage = GrpcConfig::from_env(&Env::from_pairs([
        ("ERP_GRPC_TLS_CERT_FILE", file("garbage.crt")),
        ("ERP_GRPC_TLS_KEY_FILE", file("tls.key")),
        ("ERP_GRPC_TLS_CA_FILE", file("ca.crt")),
    ]))
    .unwrap_err();
    assert_eq!(garbage.variable, "ERP_GRPC_TLS_CERT_FILE");
}
