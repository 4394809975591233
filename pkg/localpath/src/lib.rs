//! mini's built-in local-path provisioner. The server part ([`controller`]) binds
//! PersistentVolumeClaims to matching PersistentVolumes (static ones by capacity, access modes,
//! class and selector, as upstream's PV controller does), provisions a hostPath PV in a
//! directory on the claim's node for StorageClasses whose provisioner is
//! [`PROVISIONER`], and reclaims released volumes (`Retain` keeps them, `Delete` removes the
//! directory through the node's agent and then the PV). The agent part ([`dirs`]) removes such a
//! directory, strictly inside the node's local-path directory.

pub mod binding;
pub mod controller;
pub mod dirs;

pub use controller::run;
pub use dirs::{DirOps, HostDirOps, LocalPathDir};

/// The `provisioner` of StorageClasses this crate serves.
pub const PROVISIONER: &str = "mini.dev/local-path";
/// Node annotation (written by the agent at registration): the node's local-path directory.
pub const NODE_DIR_ANNOTATION: &str = "storage.mini.dev/local-path-dir";
/// PVC annotation the scheduler sets for WaitForFirstConsumer claims.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// PV annotation naming the provisioner that created it.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// PVC annotations upstream's binder writes.
pub const BIND_COMPLETED_ANNOTATION: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER_ANNOTATION: &str = "pv.kubernetes.io/bound-by-controller";
pub const STORAGE_PROVISIONER_ANNOTATION: &str = "volume.kubernetes.io/storage-provisioner";
pub const BETA_STORAGE_PROVISIONER_ANNOTATION: &str =
    "volume.beta.kubernetes.io/storage-provisioner";
/// Finalizer on provisioned PVs: the PV object stays until its directory is gone.
pub const CLEANUP_FINALIZER: &str = "storage.mini.dev/local-path-cleanup";
/// The agent's node API route that removes a directory: `DELETE /localpath/<name>`.
pub const AGENT_ROUTE: &str = "localpath";
/// Upstream's message when a claim asks for more storage than its class allows.
pub const RESIZE_FORBIDDEN_MESSAGE: &str = "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";

/// Why a local-path directory could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "{0:?} is not a plain directory name inside the local-path directory (no '/', '.' or '..')"
    )]
    BadName(String),
    #[error("{path} is a symbolic link; refusing to remove anything it points to")]
    Symlink { path: String },
    #[error("{path} resolves outside the local-path directory {dir}")]
    Escapes { path: String, dir: String },
    #[error("removing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum LocalPathError {
    #[error("api request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("building a request to node {node}: {message}")]
    Request { node: String, message: String },
}
