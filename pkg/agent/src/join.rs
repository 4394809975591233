//! Joining the cluster: check the server's CA against the token's hash, keep a node password
//! across restarts, have the server sign our client and serving certificates, and reuse them
//! on restart while they stay valid.
//!
//! The CA is fetched from `/cacerts` over TLS without verification, then trusted only when the
//! SHA-256 of the exact body equals the token's hash; every later request trusts that CA only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use mini_certs::{IssuedCert, JoinToken};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

use crate::fsutil::{read_optional, write_private};
use crate::AgentError;

/// Path of the join endpoint on the API server.
pub const NODE_JOIN_PATH: &str = "/v1-mini/node-join";
/// Group of every node identity.
pub const NODES_GROUP: &str = "system:nodes";
/// Certificates are renewed (re-joined) when they expire within this window.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

pub const CA_FILE: &str = "ca.crt";
pub const CLIENT_CERT_FILE: &str = "client.crt";
pub const CLIENT_KEY_FILE: &str = "client.key";
pub const SERVING_CERT_FILE: &str = "serving.crt";
pub const SERVING_KEY_FILE: &str = "serving.key";

/// The user a node authenticates as.
pub fn node_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}

/// What the agent holds after joining: the cluster CA and its two certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca_pem: String,
    /// Client certificate, CN `system:node:<name>`, O `system:nodes`.
    pub client: IssuedCert,
    /// Serving certificate for port 10250 (SANs: node IPs, hostname, node name).
    pub serving: IssuedCert,
}

/// The node's name and password, kept in `<data>/agent/node-password` (0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSecret {
    pub node_name: String,
    pub password: String,
}

impl NodeSecret {
    /// Reads the file, if any.
    pub fn load(path: &Path) -> Result<Option<NodeSecret>, AgentError> {
        let Some(text) = read_optional(path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| AgentError::Identity {
                path: path.to_path_buf(),
                reason: format!("not a node password file ({e}); remove it to start afresh"),
            })
    }

    /// Keeps the stored password (a new random one on first start) and records `node_name`.
    pub fn ensure(path: &Path, node_name: &str) -> Result<NodeSecret, AgentError> {
        let existing = Self::load(path)?;
        if let Some(s) = &existing {
            if s.node_name == node_name {
                return Ok(s.clone());
            }
        }
        let secret = NodeSecret {
            node_name: node_name.to_string(),
            password: existing
                .map(|s| s.password)
                .unwrap_or_else(|| hex::encode(rand::random::<[u8; 24]>())),
        };
        let text = serde_json::to_string(&secret).map_err(|e| AgentError::Identity {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_private(path, format!("{text}\n").as_bytes())?;
        Ok(secret)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest<'a> {
    node_name: &'a str,
    node_password: &'a str,
    #[serde(rename = "clientCSR")]
    client_csr: String,
    #[serde(rename = "servingCSR")]
    serving_csr: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    client_cert: String,
    serving_cert: String,
    #[serde(default)]
    ca_cert: Option<String>,
}

/// What the node's certificates must cover.
#[derive(Debug, Clone)]
pub struct JoinRequestInfo<'a> {
    pub server_url: &'a str,
    pub token: &'a str,
    pub tls_dir: &'a Path,
    pub password_file: &'a Path,
    pub node_name: &'a str,
    pub hostname: &'a str,
    pub node_ips: &'a [IpAddr],
}

/// Joins (or re-uses a previous join): returns the CA and the node's certificates.
pub async fn join(info: &JoinRequestInfo<'_>) -> Result<Credentials, AgentError> {
    let token = JoinToken::parse(info.token).map_err(|e| AgentError::Token(e.to_string()))?;
    if token.ca_hash.is_none() {
        tracing::warn!(
            "the join token is a bare secret: the server's CA is trusted without checking it; \
             use the full K10... token printed by `mini server` to pin it"
        );
    }
    let stored = load_stored(info.tls_dir)?;
    let ca_pem = match fetch_cacerts(info.server_url).await {
        Ok(ca) => ca,
        Err(e) => match stored {
            Some(creds) if still_valid(&creds, info) => {
                tracing::warn!(error = %e, "server unreachable; starting with the certificates of the last join");
                return Ok(creds);
            }
            _ => return Err(e),
        },
    };
    let stored = match stored {
        // after a CA rotation the token pins the old bundle: the CAs of the last join or
        // renewal still authenticate the server, and then its new bundle
        Some(creds) if !token.ca_matches(&ca_pem) && still_valid(&creds, info) => {
            match fetch_cacerts_trusting(info.server_url, &creds.ca_pem).await {
                Ok(verified) if verified == ca_pem => {
                    tracing::info!(
                        node = info.node_name,
                        "the cluster CA bundle changed since the last join (a CA rotation); trusting it through the stored CAs"
                    );
                    let creds = Credentials { ca_pem, ..creds };
                    store(info.tls_dir, &creds)?;
                    return Ok(creds);
                }
                _ => Some(creds),
            }
        }
        other => other,
    };
    if !token.ca_matches(&ca_pem) {
        return Err(AgentError::CaHashMismatch {
            server: info.server_url.to_string(),
            expected: token.ca_hash.clone().unwrap_or_default(),
            actual: mini_certs::ca_bundle_hash(&ca_pem),
        });
    }
    if let Some(creds) = stored {
        if creds.ca_pem == ca_pem && still_valid(&creds, info) {
            tracing::info!(
                node = info.node_name,
                "reusing the node certificates of the last join"
            );
            return Ok(creds);
        }
        tracing::info!(
            node = info.node_name,
            "stored node certificates are stale (CA, name, addresses or expiry changed); joining again"
        );
    }
    let secret = NodeSecret::ensure(info.password_file, info.node_name)?;
    let creds = request_certificates(info, &token, &secret, &ca_pem).await?;
    store(info.tls_dir, &creds)?;
    tracing::info!(node = info.node_name, "joined the cluster");
    Ok(creds)
}

async fn request_certificates(
    info: &JoinRequestInfo<'_>,
    token: &JoinToken,
    secret: &NodeSecret,
    ca_pem: &str,
) -> Result<Credentials, AgentError> {
    let client_key = new_key()?;
    let serving_key = new_key()?;
    let client_csr = client_csr(&client_key, info.node_name)?;
    let serving_csr = serving_csr(&serving_key, info.node_name, info.hostname, info.node_ips)?;
    let body = serde_json::to_vec(&JoinRequest {
        node_name: info.node_name,
        node_password: &secret.password,
        client_csr,
        serving_csr,
    })
    .map_err(|e| AgentError::Join(format!("encoding the join request: {e}")))?;
    let tls = verified_tls(ca_pem)?;
    let (status, reply) = https_request(
        tls,
        info.server_url,
        Method::POST,
        NODE_JOIN_PATH,
        Some(&token.credential()),
        Bytes::from(body),
    )
    .await?;
    let message = || status_message(&reply);
    match status {
        s if s.is_success() => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(AgentError::JoinRefused {
                server: info.server_url.to_string(),
                message: message(),
            })
        }
        StatusCode::CONFLICT => {
            return Err(AgentError::NodeNameConflict {
                node: info.node_name.to_string(),
                message: message(),
            })
        }
        s => {
            return Err(AgentError::Join(format!(
                "{NODE_JOIN_PATH} answered {s}: {}",
                message()
            )))
        }
    }
    let reply: JoinResponse = serde_json::from_slice(&reply)
        .map_err(|e| AgentError::Join(format!("decoding the join response: {e}")))?;
    if let Some(ca) = &reply.ca_cert {
        if ca.trim() != ca_pem.trim() {
            tracing::warn!("the join response names a different CA than /cacerts; trusting /cacerts (the one the token pins)");
        }
    }
    Ok(Credentials {
        ca_pem: ca_pem.to_string(),
        client: IssuedCert {
            cert_pem: reply.client_cert,
            key_pem: client_key.serialize_pem(),
        },
        serving: IssuedCert {
            cert_pem: reply.serving_cert,
            key_pem: serving_key.serialize_pem(),
        },
    })
}

fn new_key() -> Result<rcgen::KeyPair, AgentError> {
    rcgen::KeyPair::generate().map_err(|e| AgentError::Join(format!("generating a key pair: {e}")))
}

fn csr_err(e: rcgen::Error) -> AgentError {
    AgentError::Join(format!("building a certificate request: {e}"))
}

/// CSR for the node's client certificate: CN `system:node:<name>`, O `system:nodes`.
pub fn client_csr(key: &rcgen::KeyPair, node_name: &str) -> Result<String, AgentError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_user(node_name));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(csr_err)
}

/// CSR for the serving certificate: SANs = node IPs, hostname, node name (and localhost).
pub fn serving_csr(
    key: &rcgen::KeyPair,
    node_name: &str,
    hostname: &str,
    node_ips: &[IpAddr],
) -> Result<String, AgentError> {
    let mut dns: Vec<String> = vec![
        node_name.to_string(),
        hostname.to_string(),
        "localhost".into(),
    ];
    dns.retain(|d| !d.is_empty());
    dns.dedup();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(csr_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_name);
    let mut sans = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in dns {
        if seen.insert(name.clone()) {
            sans.push(rcgen::SanType::DnsName(name.try_into().map_err(csr_err)?));
        }
    }
    for ip in node_ips
        .iter()
        .copied()
        .chain([IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)])
    {
        if seen.insert(ip.to_string()) {
            sans.push(rcgen::SanType::IpAddress(ip));
        }
    }
    params.subject_alt_names = sans;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(csr_err)
}

fn tls_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

fn load_stored(dir: &Path) -> Result<Option<Credentials>, AgentError> {
    let read = |f: &str| read_optional(&tls_path(dir, f));
    let (Some(ca_pem), Some(cc), Some(ck), Some(sc), Some(sk)) = (
        read(CA_FILE)?,
        read(CLIENT_CERT_FILE)?,
        read(CLIENT_KEY_FILE)?,
        read(SERVING_CERT_FILE)?,
        read(SERVING_KEY_FILE)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        ca_pem,
        client: IssuedCert {
            cert_pem: cc,
            key_pem: ck,
        },
        serving: IssuedCert {
            cert_pem: sc,
            key_pem: sk,
        },
    }))
}

fn store(dir: &Path, creds: &Credentials) -> Result<(), AgentError> {
    for (file, data) in [
        (CA_FILE, &creds.ca_pem),
        (CLIENT_KEY_FILE, &creds.client.key_pem),
        (CLIENT_CERT_FILE, &creds.client.cert_pem),
        (SERVING_KEY_FILE, &creds.serving.key_pem),
        (SERVING_CERT_FILE, &creds.serving.cert_pem),
    ] {
        write_private(&tls_path(dir, file), data.as_bytes())?;
    }
    Ok(())
}

/// The facts of a stored certificate that decide whether it can be reused.
#[derive(Debug)]
struct CertFacts {
    common_name: String,
    not_after: i64,
    ips: Vec<IpAddr>,
}

fn cert_facts(pem: &str) -> Option<CertFacts> {
    let mut reader = pem.as_bytes();
    let der = rustls_pemfile::certs(&mut reader).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::IPAddress(bytes) = name {
                match bytes.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?)),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?)),
                    _ => {}
                }
            }
        }
    }
    Some(CertFacts {
        common_name,
        not_after: cert.validity().not_after.timestamp(),
        ips,
    })
}

/// Whether stored certificates still fit: right names, node IPs covered, not about to expire.
fn still_valid(creds: &Credentials, info: &JoinRequestInfo<'_>) -> bool {
    let (Some(client), Some(serving)) = (
        cert_facts(&creds.client.cert_pem),
        cert_facts(&creds.serving.cert_pem),
    ) else {
        return false;
    };
    let deadline = chrono::Utc::now().timestamp() + RENEW_BEFORE.as_secs() as i64;
    client.common_name == node_user(info.node_name)
        && client.not_after > deadline
        && serving.not_after > deadline
        && info.node_ips.iter().all(|ip| serving.ips.contains(ip))
}

/// `GET /cacerts` without verifying the server (the caller checks the body's hash).
pub async fn fetch_cacerts(server_url: &str) -> Result<String, AgentError> {
    let (status, body) = https_request(
        unverified_tls()?,
        server_url,
        Method::GET,
        "/cacerts",
        None,
        Bytes::new(),
    )
    .await?;
    if !status.is_success() {
        return Err(AgentError::Join(format!(
            "GET {server_url}/cacerts answered {status}"
        )));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| AgentError::Join(format!("GET {server_url}/cacerts: body is not UTF-8")))
}

/// `GET /cacerts` from a server verified against `ca_pem`.
async fn fetch_cacerts_trusting(server_url: &str, ca_pem: &str) -> Result<String, AgentError> {
    let (status, body) = https_request(
        verified_tls(ca_pem)?,
        server_url,
        Method::GET,
        "/cacerts",
        None,
        Bytes::new(),
    )
    .await?;
    if !status.is_success() {
        return Err(AgentError::Join(format!(
            "GET {server_url}/cacerts answered {status}"
        )));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| AgentError::Join(format!("GET {server_url}/cacerts: body is not UTF-8")))
}

/// rustls client config trusting only `ca_pem`.
pub fn verified_tls(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = ca_pem.as_bytes();
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| AgentError::Join(format!("parsing the cluster CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| AgentError::Join(format!("adding the cluster CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(AgentError::Join(
            "the cluster CA bundle holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Join(format!("tls versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unverified_tls() -> Result<Arc<rustls::ClientConfig>, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyServerCert(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AgentError::Join(format!("tls versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Only for fetching `/cacerts`, whose body is then checked against the token's hash.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `message` of a Kubernetes Status body, else the body's text, on one line.
pub fn status_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).to_string());
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One HTTPS/1.1 request to the server; returns the status and the whole body.
async fn https_request(
    tls: Arc<rustls::ClientConfig>,
    server_url: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), AgentError> {
    let unreachable = |reason: String| AgentError::ServerUnreachable {
        server: server_url.to_string(),
        reason,
    };
    let work = async {
        let response = send_request(tls, server_url, method, path, bearer, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading {path}: {e}")))?
            .to_bytes();
        Ok::<_, AgentError>((status, body))
    };
    tokio::time::timeout(HTTP_TIMEOUT, work)
        .await
        .map_err(|_| unreachable(format!("no answer from {path} within {HTTP_TIMEOUT:?}")))?
}

/// Sends one HTTPS/1.1 request and returns the response as soon as its head arrived (the body
/// streams; the caller bounds how long it reads). Connecting and the head are bounded by
/// [`HTTP_TIMEOUT`].
pub(crate) async fn send_request(
    tls: Arc<rustls::ClientConfig>,
    server_url: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> Result<http::Response<hyper::body::Incoming>, AgentError> {
    let unreachable = |reason: String| AgentError::ServerUnreachable {
        server: server_url.to_string(),
        reason,
    };
    let uri: Uri = server_url.parse().map_err(|e| AgentError::Config {
        flag: "--server",
        value: server_url.to_string(),
        reason: format!("not a URL: {e}"),
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(AgentError::Config {
            flag: "--server",
            value: server_url.to_string(),
            reason: "must be an https:// URL".into(),
        });
    }
    let host = uri.host().unwrap_or_default().to_string();
    let host_bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host_bare.clone()).map_err(|e| AgentError::Config {
        flag: "--server",
        value: server_url.to_string(),
        reason: format!("bad host name: {e}"),
    })?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host_bare.as_str(), port))
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(format!("tls handshake: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(format!("http handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "join connection closed");
            }
        });
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "mini-agent");
        if let Some(secret) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {secret}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| AgentError::Join(format!("building the request: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("request {path}: {e}")))
    };
    tokio::time::timeout(HTTP_TIMEOUT, work)
        .await
        .map_err(|_| unreachable(format!("no answer from {path} within {HTTP_TIMEOUT:?}")))?
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
