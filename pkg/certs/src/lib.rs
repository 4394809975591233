//! Cluster CA, certificates, kubeconfig and join tokens.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificate failed: {0}")]
    Generate(String),
    #[error("parsing {what} failed: {reason}")]
    Parse { what: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid join token: {0}")]
    Token(String),
    #[error("tls configuration failed: {0}")]
    Tls(String),
}

/// A PEM certificate with its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a serving certificate must cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// A certificate authority that can issue and sign.
pub struct CertAuthority {/* private */}

impl CertAuthority {
    pub fn generate(common_name: &str) -> Result<Self, CertError> { todo!() }
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> { todo!() }
    pub fn cert_pem(&self) -> &str { todo!() }
    pub fn key_pem(&self) -> String { todo!() }
    /// A serving certificate (server auth) for the given names.
    pub fn issue_server(&self, common_name: &str, sans: &SubjectAltNames) -> Result<IssuedCert, CertError> { todo!() }
    /// A client certificate: CN = user, O = groups.
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<IssuedCert, CertError> { todo!() }
    /// Signs a PEM CSR keeping its subject; `server` adds server-auth usage, else client-auth.
    pub fn sign_csr(&self, csr_pem: &str, server: bool, validity_days: u32) -> Result<String, CertError> { todo!() }
}

/// Everything `mini server` keeps under `<data-dir>/server/tls`.
pub struct ServerPki {
    pub ca: CertAuthority,
    pub serving: IssuedCert,
    /// CN `system:admin`, O `system:masters`.
    pub admin: IssuedCert,
    /// CN `system:apiserver`, used by the API server towards kubelets.
    pub apiserver_client: IssuedCert,
}

/// Loads the PKI from `dir`, creating what is missing; re-issues the serving certificate when
/// it does not cover `sans`. Keys are written 0600.
pub fn ensure_server_pki(dir: &Path, sans: &SubjectAltNames) -> Result<ServerPki, CertError> { todo!() }

/// A kubeconfig YAML with embedded CA and client certificate.
pub fn kubeconfig_yaml(server_url: &str, ca_pem: &str, client: &IssuedCert) -> String { todo!() }

/// Writes `kubeconfig_yaml` to `path` with the given file mode (e.g. 0o600).
pub fn write_kubeconfig(path: &Path, server_url: &str, ca_pem: &str, client: &IssuedCert, mode: u32) -> Result<(), CertError> { todo!() }

/// Lowercase hex SHA-256 of the CA bundle bytes as served by `/cacerts`.
pub fn ca_bundle_hash(ca_pem: &str) -> String { todo!() }

/// A join token: `K10<ca hash>::server:<secret>`, or a bare secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: Option<String>,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<Self, CertError> { todo!() }
    pub fn format(ca_pem: &str, secret: &str) -> String { todo!() }
    /// Constant-time comparison of the secret.
    pub fn secret_matches(&self, secret: &str) -> bool { todo!() }
}

/// Reads the secret from `path`, or writes `given` (or a new random one) there (0600).
pub fn ensure_token_file(path: &Path, given: Option<&str>) -> Result<String, CertError> { todo!() }

/// User and groups from a verified client certificate (CN and O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

pub fn identity_from_der(cert_der: &[u8]) -> Result<ClientIdentity, CertError> { todo!() }

/// rustls server config: serving cert, optional client certs verified against `client_ca_pem`,
/// ALPN `h2` and `http/1.1`.
pub fn server_tls_config(serving: &IssuedCert, client_ca_pem: &str) -> Result<Arc<rustls::ServerConfig>, CertError> { todo!() }
