//! Pod volumes on the node: the downward API values, atomic volume contents, and the `VolumeManager` that
//! materialises emptyDir, hostPath, configMap, secret, downwardAPI, projected and
//! PVC-backed volumes under `<pods_dir>/<uid>/volumes` and turns volumeMounts into CRI mounts.

pub mod atomic;
pub mod downward;
mod manager;

pub use manager::{
    MountedVolume, PodVolumes, VolumeKind, VolumeManager, CONFIG_MAP, DOWNWARD_API, EMPTY_DIR,
    PROJECTED, SECRET,
};

use std::path::PathBuf;

/// What setting up, mounting or tearing down a pod volume can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("unsupported fieldPath {0:?}: supported are metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['<key>'], metadata.annotations['<key>'], spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP, status.hostIPs")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource {0:?}: supported are limits.* and requests.* of cpu, memory, ephemeral-storage, hugepages-<size>")]
    UnsupportedResource(String),
    #[error("container {0:?} not found in the pod")]
    ContainerNotFound(String),
    #[error("invalid quantity in {what}: {message}")]
    InvalidQuantity { what: String, message: String },
    #[error("{0}")]
    InvalidPod(String),
    #[error("{kind} {name:?} not found")]
    SourceNotFound { kind: &'static str, name: String },
    #[error("{kind} references non-existent {kind} key: {key}")]
    MissingKey { kind: &'static str, key: String },
    #[error("persistentvolumeclaim {name:?} is not bound: {reason}")]
    ClaimNotBound { name: String, reason: String },
    #[error("persistentvolume {name:?} has neither spec.hostPath nor spec.local: only hostPath and local persistent volumes can be mounted on this node")]
    UnsupportedPersistentVolume { name: String },
    #[error("hostPath type check failed: {path} {message}")]
    HostPathType { path: PathBuf, message: String },
    #[error("unsupported volume type {0} (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim)")]
    UnsupportedVolume(String),
    #[error("invalid path {path:?}: {message}")]
    InvalidPath { path: String, message: String },
    #[error("MountVolume.SetUp failed for volume {volume:?}: {source}")]
    SetUp {
        volume: String,
        source: Box<VolumeError>,
    },
    #[error("container {container:?} mounts volume {volume:?}, which the pod does not declare or which was not set up")]
    UnknownVolume { container: String, volume: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("the TokenRequest for serviceaccount {service_account} returned no token")]
    EmptyToken { service_account: String },
    #[error(transparent)]
    Sys(#[from] mini_sys::SysError),
}
