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

/// rustls client config that trusts only `ca_pem` and, when given, presents `client`.
///
/// Used by the API server towards node agents (with the kubelet client certificate) and by
/// agents towards the API server (with their node certificate). ALPN `http/1.1` only:
/// upgraded streams (exec, attach, port-forward) need HTTP/1.1.
pub fn client_tls_config(
    ca_pem: &str,
    client: Option<&IssuedCert>,
) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(ca_pem, "ca bundle")? {
        roots.add(cert).map_err(|e| tls_err("adding ca", e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                pem_certs(&leaf.cert_pem, "client certificate")?,
                pem_key(&leaf.key_pem, "client key")?,
            )
            .map_err(|e| tls_err("client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// rustls server config for a node agent's API (port 10250): serving cert, and a mandatory
/// client certificate that chains to `ca_pem` and whose common name is exactly
/// [`crate::KUBELET_CLIENT_CN`] (the API server). ALPN `http/1.1`.
pub fn kubelet_server_tls_config(
    serving: &IssuedCert,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = pem_certs(&serving.cert_pem, "serving certificate")?;
    let key = pem_key(&serving.key_pem, "serving key")?;
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(ca_pem, "client ca")? {
        roots
            .add(cert)
            .map_err(|e| tls_err("adding client ca", e))?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err("building client verifier", e))?;
    let verifier = Arc::new(CommonNameVerifier {
        inner,
        common_name: crate::KUBELET_CLIENT_CN,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("serving certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client verifier that also requires one exact subject common name.
#[derive(Debug)]
struct CommonNameVerifier {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    common_name: &'static str,
}

impl rustls::server::danger::ClientCertVerifier for CommonNameVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match crate::identity_from_der(end_entity.as_ref()) {
            Ok(id) if id.user == self.common_name => Ok(verified),
            Ok(id) => Err(rustls::Error::General(format!(
                "client certificate for {:?} is not allowed; only {:?} may connect",
                id.user, self.common_name
            ))),
            Err(e) => Err(rustls::Error::General(e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}
