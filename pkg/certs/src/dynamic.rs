//! TLS configurations whose certificates and trusted CAs can be swapped while they serve:
//! a [`CertHolder`] (a leaf and its key, read at every handshake by rustls'
//! `ResolvesServerCert`/`ResolvesClientCert`) and a [`TrustHolder`] (the CA bundle, read at
//! every handshake by the certificate verifiers). Renewing a certificate or rotating the CA
//! swaps what they hold; connections already open keep their session, new ones see the swap.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::tls::{pem_certs, pem_key};
use crate::{CertError, IssuedCert};

fn tls_err(context: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Tls(format!("{context}: {e}"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

/// A certificate chain (leaf first) with its key, swappable while in use.
#[derive(Debug)]
pub struct CertHolder {
    current: RwLock<(Arc<CertifiedKey>, IssuedCert)>,
}

fn certified_key(leaf: &IssuedCert) -> Result<Arc<CertifiedKey>, CertError> {
    let chain = pem_certs(&leaf.cert_pem, "certificate")?;
    let key = pem_key(&leaf.key_pem, "key")?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_err("loading the private key", e))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| tls_err("certificate and key", e))?;
    Ok(Arc::new(certified))
}

impl CertHolder {
    pub fn new(leaf: &IssuedCert) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(CertHolder {
            current: RwLock::new((certified_key(leaf)?, leaf.clone())),
        }))
    }

    /// Replaces the certificate: the next handshake presents `leaf`.
    pub fn swap(&self, leaf: &IssuedCert) -> Result<(), CertError> {
        let key = certified_key(leaf)?;
        write(&self.current, (key, leaf.clone()));
        Ok(())
    }

    /// The certificate (PEM chain) and key presented now.
    pub fn current(&self) -> IssuedCert {
        read(&self.current).1
    }

    fn key(&self) -> Arc<CertifiedKey> {
        read(&self.current).0
    }
}

impl ResolvesServerCert for CertHolder {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for CertHolder {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The verifiers built for one CA bundle.
#[derive(Debug, Clone)]
struct Trust {
    pem: String,
    optional_clients: Arc<dyn ClientCertVerifier>,
    mandatory_clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<dyn ServerCertVerifier>,
}

fn build_trust(bundle_pem: &str) -> Result<Trust, CertError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(bundle_pem, "ca bundle")? {
        roots.add(cert).map_err(|e| tls_err("adding a ca", e))?;
    }
    let roots = Arc::new(roots);
    let optional_clients =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err("building the client verifier", e))?;
    let mandatory_clients =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| tls_err("building the client verifier", e))?;
    let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| tls_err("building the server verifier", e))?;
    Ok(Trust {
        pem: bundle_pem.to_string(),
        optional_clients,
        mandatory_clients,
        servers,
    })
}

/// The trusted CA bundle (one or more CA certificates), swappable while in use.
#[derive(Debug)]
pub struct TrustHolder {
    current: RwLock<Trust>,
}

impl TrustHolder {
    pub fn new(bundle_pem: &str) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(TrustHolder {
            current: RwLock::new(build_trust(bundle_pem)?),
        }))
    }

    /// Trusts exactly the CAs of `bundle_pem` from the next handshake on.
    pub fn swap(&self, bundle_pem: &str) -> Result<(), CertError> {
        let trust = build_trust(bundle_pem)?;
        write(&self.current, trust);
        Ok(())
    }

    /// The bundle trusted now.
    pub fn pem(&self) -> String {
        read(&self.current).pem
    }

    fn trust(&self) -> Trust {
        read(&self.current)
    }
}

/// Verifies client certificates against a [`TrustHolder`]'s current bundle.
#[derive(Debug)]
struct DynClientVerifier {
    trust: Arc<TrustHolder>,
    mandatory: bool,
}

impl DynClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let trust = self.trust.trust();
        if self.mandatory {
            trust.mandatory_clients
        } else {
            trust.optional_clients
        }
    }
}

impl ClientCertVerifier for DynClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // the bundle changes under us; no hints means "any certificate" to clients
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// Verifies server certificates against a [`TrustHolder`]'s current bundle.
#[derive(Debug)]
struct DynServerVerifier {
    trust: Arc<TrustHolder>,
}

impl ServerCertVerifier for DynServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust.trust().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .trust()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .trust()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.trust().servers.supported_verify_schemes()
    }
}

/// The API server's TLS: the serving certificate of `serving`, optional client certificates
/// verified against `trust`, ALPN `h2` and `http/1.1`; both read at every handshake.
pub fn server_tls_config_dynamic(
    serving: Arc<CertHolder>,
    trust: Arc<TrustHolder>,
) -> Result<Arc<ServerConfig>, CertError> {
    let verifier = Arc::new(DynClientVerifier {
        trust,
        mandatory: false,
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A node agent's TLS on the kubelet port: the serving certificate of `serving`, a mandatory
/// client certificate verified against `trust` (the caller checks its identity), ALPN
/// `http/1.1` (upgraded streams need it).
pub fn kubelet_server_tls_config_dynamic(
    serving: Arc<CertHolder>,
    trust: Arc<TrustHolder>,
) -> Result<Arc<ServerConfig>, CertError> {
    let verifier = Arc::new(DynClientVerifier {
        trust,
        mandatory: true,
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client TLS trusting `trust` and presenting `client` (when given), both read at every
/// handshake; no ALPN set (callers add theirs).
pub fn client_tls_config_dynamic(
    trust: Arc<TrustHolder>,
    client: Option<Arc<CertHolder>>,
) -> Result<ClientConfig, CertError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DynServerVerifier { trust }));
    Ok(match client {
        Some(holder) => builder.with_client_cert_resolver(holder),
        None => builder.with_no_client_auth(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertAuthority, CertInfo, SubjectAltNames};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sans() -> SubjectAltNames {
        SubjectAltNames {
            dns: vec!["localhost".into()],
            ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
        }
    }

    /// Serves one byte per connection with `config`; returns the port.
    async fn serve(config: Arc<ServerConfig>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"k").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    /// Connects with `config`; returns the server's leaf certificate.
    async fn connect(port: u16, config: ClientConfig) -> Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    }

    #[tokio::test]
    async fn server_cert_swap_is_served_without_restart() {
        let ca = CertAuthority::generate("ca").unwrap();
        let first = ca.issue_server("first", &sans()).unwrap();
        let serving = CertHolder::new(&first).unwrap();
        let trust = TrustHolder::new(ca.cert_pem()).unwrap();
        let port = serve(server_tls_config_dynamic(serving.clone(), trust.clone()).unwrap()).await;
        let client = || client_tls_config_dynamic(trust.clone(), None).unwrap();
        let seen = connect(port, client()).await.unwrap();
        assert_eq!(CertInfo::from_der(&seen, "c").unwrap().subject, "CN=first");
        let second = ca.issue_server("second", &sans()).unwrap();
        serving.swap(&second).unwrap();
        let seen = connect(port, client()).await.unwrap();
        assert_eq!(CertInfo::from_der(&seen, "c").unwrap().subject, "CN=second");
        assert_eq!(serving.current(), second);
    }

    #[tokio::test]
    async fn kubelet_server_requires_a_client_cert_from_the_current_trust() {
        let ca = CertAuthority::generate("ca").unwrap();
        let serving = CertHolder::new(&ca.issue_server("node", &sans()).unwrap()).unwrap();
        let trust = TrustHolder::new(ca.cert_pem()).unwrap();
        let port = serve(kubelet_server_tls_config_dynamic(serving, trust.clone()).unwrap()).await;
        let client_cert = CertHolder::new(&ca.issue_client("apiserver", &[]).unwrap()).unwrap();
        let with_cert = client_tls_config_dynamic(trust.clone(), Some(client_cert.clone()));
        assert!(connect(port, with_cert.unwrap()).await.is_ok());
        let without = client_tls_config_dynamic(trust.clone(), None).unwrap();
        assert!(connect(port, without).await.is_err());
        // a client certificate of another CA is refused until that CA is trusted
        let other = CertAuthority::generate("other").unwrap();
        client_cert
            .swap(&other.issue_client("apiserver", &[]).unwrap())
            .unwrap();
        let client_trust = TrustHolder::new(ca.cert_pem()).unwrap();
        let config = || client_tls_config_dynamic(client_trust.clone(), Some(client_cert.clone()));
        assert!(connect(port, config().unwrap()).await.is_err());
        trust
            .swap(&crate::join_bundle([ca.cert_pem(), other.cert_pem()]).unwrap())
            .unwrap();
        assert!(connect(port, config().unwrap()).await.is_ok());
    }

    #[tokio::test]
    async fn trust_bundle_overlap_accepts_old_and_new_ca_then_only_new() {
        let old = CertAuthority::generate("old").unwrap();
        let new = CertAuthority::generate("new").unwrap();
        let serving = CertHolder::new(&old.issue_server("s", &sans()).unwrap()).unwrap();
        let server_trust = TrustHolder::new(old.cert_pem()).unwrap();
        let port = serve(server_tls_config_dynamic(serving.clone(), server_trust).unwrap()).await;
        let trusting =
            |pem: &str| client_tls_config_dynamic(TrustHolder::new(pem).unwrap(), None).unwrap();
        let both = crate::join_bundle([new.cert_pem(), old.cert_pem()]).unwrap();
        // overlap: a client with the bundle accepts a leaf of either CA
        assert!(connect(port, trusting(&both)).await.is_ok());
        let mut leaf = new.issue_server("s", &sans()).unwrap();
        serving.swap(&leaf).unwrap();
        assert!(connect(port, trusting(&both)).await.is_ok());
        assert!(connect(port, trusting(new.cert_pem())).await.is_ok());
        // a client still trusting only the old CA needs the cross-signed new CA in the chain
        assert!(connect(port, trusting(old.cert_pem())).await.is_err());
        leaf.cert_pem.push_str(&old.cross_sign(&new).unwrap());
        serving.swap(&leaf).unwrap();
        assert!(connect(port, trusting(old.cert_pem())).await.is_ok());
        assert!(connect(port, trusting(new.cert_pem())).await.is_ok());
        // retired: the old CA alone no longer verifies the new leaf without the cross cert
        serving
            .swap(&new.issue_server("s", &sans()).unwrap())
            .unwrap();
        assert!(connect(port, trusting(old.cert_pem())).await.is_err());
        assert!(connect(port, trusting(new.cert_pem())).await.is_ok());
    }

    #[test]
    fn cert_holder_refuses_a_key_of_another_certificate() {
        let ca = CertAuthority::generate("ca").unwrap();
        let a = ca.issue_client("a", &[]).unwrap();
        let b = ca.issue_client("b", &[]).unwrap();
        let mixed = IssuedCert {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem.clone(),
        };
        assert!(CertHolder::new(&mixed).is_err());
        let holder = CertHolder::new(&b).unwrap();
        assert!(holder.swap(&mixed).is_err());
        assert_eq!(holder.current(), b);
    }
}
