//! TLS for the ingress: certificates from the Ingresses' Secrets chosen by SNI, with a
//! self-signed default certificate for names no Secret covers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::IngressError;

/// Picks the certificate for a TLS handshake from its SNI name: an exact host, then a
/// wildcard (`*.example.com`), then the default certificate.
#[derive(Debug)]
pub struct SniResolver {
    by_host: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: Arc<CertifiedKey>) -> SniResolver {
        SniResolver {
            by_host: RwLock::new(HashMap::new()),
            default,
        }
    }

    /// Replaces the host to certificate map (hosts lowercase, wildcards as `*.example.com`).
    pub fn set(&self, by_host: HashMap<String, Arc<CertifiedKey>>) {
        *self.by_host.write().unwrap_or_else(|e| e.into_inner()) = by_host;
    }

    /// The certificate served for `name` (the default one without SNI).
    pub fn lookup(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        let map = self.by_host.read().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = map.get(&name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = map.get(&format!("*.{parent}")) {
                return key.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(client_hello.server_name()))
    }
}

/// A certificate chain and key from a `kubernetes.io/tls` Secret's `tls.crt` and `tls.key`.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, IngressError> {
    let bad = |what: &str| IngressError::Certificate(what.to_string());
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&format!("tls.crt is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("tls.crt holds no certificate"));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| bad(&format!("tls.key is not PEM: {e}")))?
        .ok_or_else(|| bad("tls.key holds no private key"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(&format!("tls.key: {e}")))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// A self-signed certificate for `name` (the answer for hosts without a Secret).
pub fn self_signed(name: &str) -> Result<CertifiedKey, IngressError> {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(|e| {
        IngressError::Certificate(format!("generating the default certificate: {e}"))
    })?;
    certified_key_from_pem(
        generated.cert.pem().as_bytes(),
        generated.signing_key.serialize_pem().as_bytes(),
    )
}

/// The TLS server config of the HTTPS port: certificates by SNI, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig, IngressError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IngressError::Certificate(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject_cn(key: &CertifiedKey) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("x509");
        let sans = cert
            .subject_alternative_name()
            .expect("san")
            .expect("san present");
        match &sans.value.general_names[0] {
            x509_parser::extensions::GeneralName::DNSName(n) => n.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        }
    }

    #[test]
    fn resolver_picks_exact_then_wildcard_then_default() {
        let resolver = SniResolver::new(Arc::new(self_signed("default.invalid").expect("cert")));
        let mut map = HashMap::new();
        map.insert(
            "a.example.com".to_string(),
            Arc::new(self_signed("a.example.com").expect("cert")),
        );
        map.insert(
            "*.example.com".to_string(),
            Arc::new(self_signed("*.example.com").expect("cert")),
        );
        resolver.set(map);
        assert_eq!(
            subject_cn(&resolver.lookup(Some("A.example.com"))),
            "a.example.com"
        );
        assert_eq!(
            subject_cn(&resolver.lookup(Some("b.example.com"))),
            "*.example.com"
        );
        assert_eq!(
            subject_cn(&resolver.lookup(Some("x.b.example.com"))),
            "default.invalid"
        );
        assert_eq!(subject_cn(&resolver.lookup(None)), "default.invalid");
    }

    #[test]
    fn certified_key_from_pem_rejects_garbage_and_accepts_a_pair() {
        let generated = rcgen::generate_simple_self_signed(vec!["x.test".into()]).expect("cert");
        let ok = certified_key_from_pem(
            generated.cert.pem().as_bytes(),
            generated.signing_key.serialize_pem().as_bytes(),
        );
        assert!(ok.is_ok());
        assert!(
            certified_key_from_pem(b"nope", generated.signing_key.serialize_pem().as_bytes())
                .is_err()
        );
        assert!(certified_key_from_pem(generated.cert.pem().as_bytes(), b"").is_err());
    }

    #[test]
    fn server_config_offers_h2_and_http11() {
        let resolver = Arc::new(SniResolver::new(Arc::new(self_signed("d").expect("cert"))));
        let config = server_config(resolver).expect("config");
        assert_eq!(config.alpn_protocols[0], b"h2");
    }
}
