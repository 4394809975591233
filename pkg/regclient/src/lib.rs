//! An OCI distribution client for the agent and the `mini` CLI: push image tarballs to a registry
//! (the cluster's embedded one or any upstream), pull images into OCI layouts, list and delete.
//!
//! Code map: [`reference`] maps image references to repositories of a registry ([`repository_for`]),
//! [`auth`] handles credentials and `WWW-Authenticate` challenges (Basic, Bearer, the token flow),
//! [`client`] is the HTTP client and the distribution API operations, [`push`] uploads tarballs,
//! [`pull`] writes images to OCI layout directories or archives, [`kubeconfig`] turns a kubeconfig
//! into a client for the server's registry, [`commands`] is what `mini images` runs.

pub mod auth;
pub mod client;
pub mod commands;
pub mod kubeconfig;
pub mod pull;
pub mod push;
pub mod reference;

pub use auth::Credentials;
pub use client::{BlobSource, ClientConfig, ManifestInfo, RegistryClient};
pub use pull::{pull, PullFormat};
pub use push::{push_archive, PushedImage};
pub use reference::{repository_for, ImageReference};

/// Everything that can go wrong talking to a registry. Messages say what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegClientError {
    #[error("registry url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("setting up tls for {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error(
        "{what}: cannot reach the registry: {reason}; check that it runs and the address is right"
    )]
    Unreachable { what: String, reason: String },
    #[error("{what}: tls handshake with the registry failed: {reason}; check that the CA (kubeconfig certificate-authority) signed the registry's certificate for this address")]
    TlsHandshake { what: String, reason: String },
    #[error("{what}: registry answered {code}: {message}")]
    Registry {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{what}: registry answered HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: authentication failed: {reason}; check the credentials (kubeconfig user, --username/--password)")]
    Auth { what: String, reason: String },
    #[error("{what}: the registry sent content hashing to {actual}, expected {expected}; retry, and check the registry's storage if it persists")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: unexpected answer from the registry: {reason}")]
    Protocol { what: String, reason: String },
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] mini_images::ImageError),
}

impl RegClientError {
    /// The HTTP status the registry answered with, if the error is a registry answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegClientError::Registry { status, .. } | RegClientError::Http { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The distribution error code (`MANIFEST_UNKNOWN`, `DENIED`, ...), if the registry sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RegClientError::Registry { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        RegClientError::Io {
            path: path.to_string(),
            source,
        }
    }
}
