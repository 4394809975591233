//! Air-gapped image handling for the agent: mini's own pause image, image tarballs built from file lists,
//! and import of OCI-layout / docker-archive tarballs (optionally gzip or zstd) straight into containerd's
//! content store, image store and overlayfs snapshotter over its gRPC API, pinned so image GC keeps them.
//!
//! Code map: [`archive`] reads tarballs (compression, member ranges), [`layout`] turns a tarball into an
//! import plan (OCI layout or docker-archive converted to OCI), [`reference`] normalises names,
//! [`builder`] and [`pause`] produce image tarballs, [`importer`] talks to containerd, [`state`] remembers
//! which files in an image directory were imported.

pub mod archive;
pub mod builder;
pub mod importer;
pub mod layout;
pub mod pause;
pub mod reference;
pub mod selfimage;
pub mod state;

pub use builder::{build_image_tarball, ImageFile, ImageSpec, ImageSymlink};
pub use importer::{
    ImageImporter, ImportSummary, CONTAINERD_NAMESPACE, LABEL_CRI_MANAGED, LABEL_PINNED,
    SNAPSHOTTER,
};
pub use layout::chain_ids;
pub use pause::{pause_image_tarball, PAUSE_IMAGE};
pub use reference::normalize_image_name;
pub use selfimage::{loadtest_image, LOADTEST_REPOSITORY};

/// Everything that can go wrong building or importing images. Messages name the file and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{source_name}: not a tarball (neither gzip, zstd nor tar magic bytes)")]
    NotATarball { source_name: String },
    #[error("{source_name}: reading the tarball failed: {source}")]
    Read {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: decompressing failed: {source}")]
    Decompress {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: no index.json (OCI layout) or manifest.json (docker-archive) in the tarball")]
    UnknownLayout { source_name: String },
    #[error("{source_name}: missing blob {what}")]
    MissingBlob { source_name: String, what: String },
    #[error("{source_name}: digest mismatch for {what}: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        source_name: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{source_name}: invalid {what}: {reason}")]
    Invalid {
        source_name: String,
        what: String,
        reason: String,
    },
    #[error("{source_name}: image {image} has no manifest for platform {platform}")]
    NoPlatform {
        source_name: String,
        image: String,
        platform: String,
    },
    #[error("invalid image reference {name:?}: {reason}")]
    InvalidReference { name: String, reason: String },
    #[error("building image {name}: {reason}")]
    Build { name: String, reason: String },
    #[error("connecting to containerd at {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{source_name}: containerd {op} failed: {status}")]
    Containerd {
        source_name: String,
        op: String,
        status: Box<tonic::Status>,
    },
    #[error("{source_name}: {what}")]
    Unpack { source_name: String, what: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Task(String),
}
