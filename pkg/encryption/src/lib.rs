//! Encryption at rest of Secrets (and any resource the configuration lists), as upstream's
//! `EncryptionConfiguration`: a [`Store`](mini_store::Store) layer seals values on the way in
//! and opens them on the way out, the keyring lives in `<data-dir>/server/cred/
//! encryption-config.json`, and keys rotate online: a new write key, then a re-encryption pass
//! that rewrites every stored value with compare-and-swap, resumes after a restart, and only
//! retires an old key once a full count proves no stored value still uses it.
//!
//! Several servers share the keyring through the datastore's bootstrap data
//! ([`Encryption::share`]): a rotation publishes it before anything is sealed with it, the
//! others take it at once (and a value sealed with a key name they do not know makes them read
//! it again), and a pass retires old keys only once every live server records it writes with
//! the new ones.
//!
//! ```text
//! kube clients ─▶ ApiServer ─▶ EncryptingStore ─▶ any Store (sled, etcd)
//!                                   │ seal / open with the Keyring
//!   /v1-mini/secrets-encrypt/* ─▶ Encryption ─ rotate, pass, status ─▶ the inner Store
//! ```

pub mod cipher;
pub mod client;
pub mod config;
mod manager;
mod pass;
mod route;
pub mod status;
mod store;

pub use cipher::{Keyring, Sealing};
pub use config::EncryptionConfiguration;
pub use manager::{Encryption, CONFIG_FILE, PROGRESS_FILE};
pub use route::{install, REENCRYPT_PATH, ROTATE_PATH, STATUS_PATH};
pub use status::{PassOutcome, PassProgress, Started, Status};
pub use store::EncryptingStore;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("encryption configuration {path}: {message}")]
    Config { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot decrypt the stored value of {key}: {message}")]
    Decrypt { key: String, message: String },
    #[error("encrypting failed: {0}")]
    Seal(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error("no resource of the encryption configuration writes with a key (its first provider is identity everywhere): put an aesgcm or secretbox provider first to rotate")]
    NothingToRotate,
    #[error("secrets encryption is off (--secrets-encryption=false): start the server with encryption on to rotate keys")]
    Disabled,
    #[error("a re-encryption pass is already running ({0}); wait for it to finish (mini secrets-encrypt status)")]
    Busy(String),
    #[error("the re-encryption pass could not prove the old keys unused: {0}; run mini secrets-encrypt reencrypt again")]
    Unproven(String),
    #[error("store: {0}")]
    Store(#[from] mini_store::StoreError),
    #[error("sharing the keyring with the other servers failed: {0}")]
    Shared(String),
    #[error("{0}")]
    Client(String),
}

impl EncryptionError {
    /// As a store error, for the store layer's callers.
    pub(crate) fn into_store(self) -> mini_store::StoreError {
        match self {
            EncryptionError::Store(e) => e,
            EncryptionError::Shared(e) => mini_store::StoreError::Unavailable(format!(
                "the secrets keyring could not be confirmed with the datastore: {e}"
            )),
            other => mini_store::StoreError::Backend(other.to_string()),
        }
    }
}
