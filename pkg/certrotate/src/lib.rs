//! Online certificate renewal and CA rotation.
//!
//! Leaf certificates are renewed at two thirds of their life without a restart: the server
//! ([`ServerCerts`]) re-issues its serving certificate, its kubelet client certificate and
//! the admin certificate from the cluster CA and swaps them into the TLS configurations that
//! serve (`mini_certs::CertHolder`); agents ([`AgentCerts`]) have theirs signed through the
//! API (`POST /v1-mini/certificates/node`, authenticated by the node's current client
//! certificate, for its own identity only) and swap them into their API client and their
//! kubelet-port listener.
//!
//! A CA rotation ([`ServerCerts::rotate_ca`]) makes a new CA the signer while the old one
//! stays trusted for an overlap: trust bundles hold both, every leaf is re-issued by the new
//! CA and carries the new CA cross-signed by the old one (so clients that still trust only
//! the old CA verify it), agents pick up the bundle and renew; at the end of the overlap the
//! old CA is retired from every bundle.
//!
//! Files under `<data-dir>/server/tls`: `ca.crt`/`ca.key` (the signing CA), during a rotation
//! `ca-previous.crt` (the old CA, still trusted) and `ca-cross.crt` (the new CA signed by the
//! old), and `rotation.json` (when the old CA retires, and the last `mini certificate
//! rotate`).

mod agent;
pub mod client;
mod route;
mod server;

pub use agent::{AgentCerts, AgentCertsConfig};
pub use route::{NODE_PATH, ROTATE_CA_PATH, ROTATE_PATH, STATUS_PATH};
pub use server::{Publish, ServerCerts, ServerCertsConfig, DEFAULT_CA_OVERLAP};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CertRotateError {
    #[error("certificates: {0}")]
    Certs(#[from] mini_certs::CertError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("a CA rotation is already in its overlap (the old CA retires at {retire_at}); wait for it to end")]
    RotationInProgress { retire_at: String },
    #[error("renewing the node certificates failed: {0}")]
    Renew(String),
    #[error("{0}")]
    Client(String),
}

/// One certificate the server holds, as `GET /v1-mini/certificates` and `mini certificate`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertLine {
    /// The file it is kept in.
    pub path: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    /// When it is renewed (two thirds of its life).
    pub renew_at: i64,
}

/// The server's certificates and CA rotation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertStatus {
    pub certificates: Vec<CertLine>,
    /// The old CA's retirement (seconds since the epoch) while a rotation overlaps.
    pub ca_retires_at: Option<i64>,
    /// Leaves issued before this (seconds since the epoch) are renewed at once, agents' too
    /// (the last `mini certificate rotate`).
    pub renew_issued_before: i64,
    /// How long leaf certificates are issued for, in seconds.
    pub lifetime_seconds: u64,
}

/// What an agent learns when it asks whether to renew (`GET /v1-mini/certificates/node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertPolicy {
    /// The CAs to trust now.
    pub ca_bundle: String,
    /// Renew at once when a certificate was issued before this.
    pub renew_issued_before: i64,
}

/// A node's renewal request: CSRs for a new client and serving certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRenewRequest {
    #[serde(rename = "clientCSR")]
    pub client_csr: String,
    #[serde(rename = "servingCSR")]
    pub serving_csr: String,
}

/// The answer: the signed certificates and the CAs to trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRenewResponse {
    pub client_cert: String,
    pub serving_cert: String,
    pub ca_bundle: String,
}

/// A CA rotation request (`POST /v1-mini/certificates/rotate-ca`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateCaRequest {
    /// How long the old CA stays trusted.
    pub overlap_seconds: u64,
}

/// How often to look at certificates of this lifetime: a twentieth of it, within 1 s..60 s.
pub fn check_interval(lifetime: std::time::Duration) -> std::time::Duration {
    (lifetime / 20).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    )
}

/// Whether a leaf must be renewed now: two thirds of its life are over, or it was issued
/// before `renew_issued_before` (a `mini certificate rotate`), or it cannot be read.
pub fn leaf_due(cert_pem: &str, renew_issued_before: i64, now: i64) -> bool {
    match mini_certs::CertInfo::from_pem(cert_pem, "certificate") {
        // two seconds of slack: issued_at is recomputed from a back-dated notBefore
        Ok(info) => info.renew_at() <= now || info.issued_at() + 2 < renew_issued_before,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests;
