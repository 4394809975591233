//! Cluster CA, certificates, kubeconfig and join tokens.
//!
//! The server keeps a small PKI ([`ensure_server_pki`]): a self-signed ECDSA P-256 CA, the API
//! server's serving certificate and client certificates for `system:admin` and
//! `system:apiserver`. Clients authenticate with certificates whose CN is the user and whose
//! O values are the groups ([`identity_from_der`]); nodes join with a token that pins the CA
//! bundle ([`JoinToken`]).

mod ca;
mod der;
mod dynamic;
mod fsutil;
mod identity;
mod kubeconfig;
mod pki;
mod rotation;
mod signing;
mod tls;
mod token;

pub use ca::{
    generate_csr, CertAuthority, IssuedCert, SubjectAltNames, CA_VALIDITY_DAYS, LEAF_VALIDITY_DAYS,
};
pub use dynamic::{
    client_tls_config_dynamic, kubelet_server_tls_config_dynamic, server_tls_config_dynamic,
    CertHolder, TrustHolder,
};
pub use fsutil::{read_optional, write_atomic};
pub use identity::{identity_from_der, ClientIdentity};
pub use kubeconfig::{kubeconfig_yaml, write_kubeconfig};
pub use pki::{
    ensure_server_pki, ensure_server_pki_for, is_server_identity, ServerPki, ADMIN_CERT_FILE,
    ADMIN_KEY_FILE, ADMIN_USER, APISERVER_CLIENT_CERT_FILE, APISERVER_CLIENT_KEY_FILE,
    APISERVER_CLIENT_USER, CA_CERT_FILE, CA_KEY_FILE, KUBELET_CLIENT_CN, MASTERS_GROUP,
    SERVING_CERT_FILE, SERVING_COMMON_NAME, SERVING_KEY_FILE,
};
pub use rotation::{
    cert_sans_of_pem, format_unix, join_bundle, now_unix, parse_lifetime, renew_at, renewal_due,
    split_bundle, until_renewal, CertInfo, RENEW_FRACTION,
};
pub use signing::{ensure_signing_key, generate_signing_key, SigningKey};
pub use tls::{client_tls_config, kubelet_server_tls_config, server_tls_config};
pub use token::{
    bootstrap_expired, ca_bundle_hash, check_bootstrap_secret, ensure_token_file, unix_time,
    BootstrapRefusal, BootstrapToken, JoinToken, BOOTSTRAPPERS_GROUP, BOOTSTRAP_NAMESPACE,
    BOOTSTRAP_SECRET_PREFIX, BOOTSTRAP_SECRET_TYPE, BOOTSTRAP_USER_PREFIX, TOKEN_PREFIX,
    TOKEN_SERVER_USER,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificate failed: {0}")]
    Generate(String),
    #[error("parsing {what} failed: {reason}")]
    Parse { what: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid join token: {0}")]
    Token(String),
    #[error("tls configuration failed: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests;
