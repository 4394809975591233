//! The crate's error enum and the distribution spec's JSON error answers.

use http::StatusCode;

/// Errors of the registry's library API (the HTTP API answers with [`ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry storage: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry metadata store failed: {0}")]
    Store(#[from] mini_store::StoreError),
    #[error("registry metadata {key} is corrupt: {reason}; delete the key or restore the store")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found in the registry")]
    NotFound(String),
    #[error("reading the image archive failed: {0}")]
    Image(#[from] mini_images::ImageError),
    #[error("upstream registry: {0}")]
    Upstream(String),
}

impl RegistryError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One spec error: status, code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn blob_unknown(digest: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob {digest} is unknown to this repository"),
        )
    }
    pub fn upload_unknown() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown: start a new upload",
        )
    }
    pub fn upload_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", msg)
    }
    pub fn digest_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", msg)
    }
    pub fn manifest_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
    }
    pub fn manifest_unknown(reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest {reference} is unknown to this repository"),
        )
    }
    pub fn name_invalid(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}: use lower-case components [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'"),
        )
    }
    pub fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {name} is not known to this registry"),
        )
    }
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", msg)
    }

    /// The spec's JSON error document.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": null}]
        }))
        .unwrap_or_default()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::Io { source, .. } if is_disk_full(source) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                format!("{e}: the registry's disk is full; free space and retry"),
            ),
            RegistryError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", what.clone())
            }
            RegistryError::Invalid(msg) => {
                ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", msg.clone())
            }
            RegistryError::Upstream(msg) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "UNKNOWN",
                format!("upstream registry: {msg}"),
            ),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == std::io::ErrorKind::StorageFull
}
