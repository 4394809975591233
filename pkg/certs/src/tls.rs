//! rustls server configuration for the API server (serving cert, optional client certs).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::{CertError, IssuedCert};

fn tls_err(context: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Tls(format!("{context}: {e}"))
}

/// All certificates in a PEM bundle.
pub(crate) fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut reader = pem.as_bytes();
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, e))?;
    if certs.is_empty() {
        return Err(CertError::Tls(format!(
            "{what}: no certificate found in pem"
        )));
    }
    Ok(certs)
}

/// The first private key in a PEM string.
pub(crate) fn pem_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut reader = pem.as_bytes();
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| tls_err(what, e))?
        .ok_or_else(|| CertError::Tls(format!("{what}: no private key found in pem")))
}

/// rustls server config: serving cert, optional client certs verified against `client_ca_pem`,
/// ALPN `h2` and `http/1.1`.
///
/// Clients without a certificate are accepted (they authenticate otherwise, e.g. with a
/// bearer token); a presented certificate must chain to `client_ca_pem`.
pub fn server_tls_config(
    serving: &IssuedCert,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = pem_certs(&serving.cert_pem, "serving certificate")?;
    let key = pem_key(&serving.key_pem, "serving key")?;

    let mut roots = RootCertStore::empty();
    for cert in pem_certs(client_ca_pem, "client ca")? {
        roots
            .add(cert)
            .map_err(|e| tls_err("adding client ca", e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err("building client verifier", e))?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("serving certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
