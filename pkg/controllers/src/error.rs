//! The controllers' error type.

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("api request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("invalid object {object}: {reason}")]
    Invalid { object: String, reason: String },
    #[error("{0}")]
    Other(String),
}
