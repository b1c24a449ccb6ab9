//! HTTPS and grpcs against servers whose certificate is signed by a CA the
//! system does not know: trusted only through `ca_file`.

use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::fake_grpc::Fake;
use super::fake_http::FakeHttp;
use crate::client::{Remote, RemoteConfig, RemoteError};
use strata_store::DigestFunction;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A fresh CA and a certificate it signs for 127.0.0.1.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn config(url: String, ca_file: Option<std::path::PathBuf>) -> RemoteConfig {
    let mut cfg = RemoteConfig::new(url);
    cfg.ca_file = ca_file;
    cfg.timeout = Duration::from_secs(10);
    cfg
}

fn assert_untrusted(err: &RemoteError) {
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn remote_https_is_trusted_through_the_ca_file_only() {
    use rustls::pki_types::pem::PemObject;
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(crate::client::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let fake = FakeHttp::new();
    let addr = fake.start_tls(Arc::new(tls));
    let url = format!("https://{addr}/cache");
    let b3 = DigestFunction::Blake3;
    let key = b3.of_bytes(b"key");

    let trusted = Remote::connect(&config(url.clone(), Some(ca_file)))
        .await
        .unwrap();
    assert_eq!(trusted.get_action_result(b3, &key).await.unwrap(), None);
    assert_eq!(fake.state().seen.len(), 1);

    let untrusted = Remote::connect(&config(url, None)).await.unwrap();
    let err = untrusted.get_action_result(b3, &key).await.unwrap_err();
    assert_untrusted(&err);
    assert_eq!(
        fake.state().seen.len(),
        1,
        "no request past a bad certificate"
    );
}

#[tokio::test]
async fn remote_grpcs_is_trusted_through_the_ca_file_only() {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    let fake = Fake::default();
    fake.state().digest_functions = vec![9];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let identity = Identity::from_pem(&pki.cert_pem, &pki.key_pem);
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(pb::capabilities_server::CapabilitiesServer::new(
            fake.clone(),
        ))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    let url = format!("grpcs://{addr}/ci");

    let trusted = Remote::connect(&config(url.clone(), Some(ca_file)))
        .await
        .unwrap();
    assert_eq!(
        trusted.digest_functions().await.unwrap(),
        Some(vec![DigestFunction::Blake3])
    );
    assert_eq!(fake.calls("GetCapabilities").len(), 1);

    let err = Remote::connect(&config(url, None)).await.unwrap_err();
    assert_untrusted(&err);
    assert_eq!(fake.calls("GetCapabilities").len(), 1);
}

#[tokio::test]
async fn remote_a_ca_file_without_certificates_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    for url in ["https://127.0.0.1:1", "grpcs://127.0.0.1:1"] {
        let err = Remote::connect(&config(url.to_string(), Some(ca_file.clone())))
            .await
            .unwrap_err();
        assert!(matches!(err, RemoteError::Config { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
