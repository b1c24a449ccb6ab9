//! Server certificate checks shared by both protocols: the platform's roots
//! plus an optional CA file, with rustls and the ring provider (no OpenSSL,
//! and no process-wide default provider needed).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::Verifier;

use super::RemoteError;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A verifier trusting the system roots and every certificate in `ca_file`.
pub(crate) fn verifier(ca_file: Option<&Path>) -> Result<Arc<Verifier>, RemoteError> {
    let extra = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let verifier = Verifier::new_with_extra_roots(extra, provider())
        .map_err(|e| RemoteError::config(format!("cannot set up certificate verification: {e}")))?;
    Ok(Arc::new(verifier))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RemoteError::config(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            RemoteError::config(format!("CA file {} is not valid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(RemoteError::config(format!(
            "CA file {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The TLS configuration of the HTTP client.
pub(crate) fn http_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, RemoteError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::config(format!("cannot set up TLS: {e}")))?
        // `dangerous` is only the way in for a verifier of one's own; this one
        // checks certificates fully.
        .dangerous()
        .with_custom_certificate_verifier(verifier(ca_file)?)
        .with_no_client_auth();
    // reqwest is built without HTTP/2 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
