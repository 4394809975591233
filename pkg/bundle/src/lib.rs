//! Air-gap bundles: one file carrying the mini binary, the images as one OCI image layout and
//! optionally the containerd and runc `.deb` packages, so a machine without network can be
//! installed from a USB stick.
//!
//! Format (fixed; install.sh reads the header with stock tools):
//! - a zstd skippable frame: magic `5B 2A 4D 18`, a little-endian u32 frame length L, then L
//!   bytes = a 100-byte ASCII header line `mini-bundle 1 <sha256 hex of the binary> <binary
//!   size, 20 digits zero-padded>\n` followed by the raw binary;
//! - then one ordinary zstd stream of a tar holding `manifest.json` (version, mini version,
//!   created, sha256 and size of every file, the binary as `mini`), `images/oci-layout`,
//!   `images/index.json`, `images/blobs/sha256/*` and `packages/*.deb`.
//!
//! `zstd -dc FILE | tar -t` lists the tar (zstd skips skippable frames). Code map: [`create`]
//! writes bundles, [`verify`] checks and reads them ([`install_from`] too), [`host`] is the
//! package manager behind a trait.

pub mod create;
pub mod host;
pub mod verify;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use create::{create, CreateOptions};
pub use host::{DebianHost, PackageHost};
pub use verify::{
    extract_binary, install_from, install_from_with, verify, BundleSummary, InstallSummary,
};

/// Magic of the zstd skippable frame that carries the header and the binary.
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x5B, 0x2A, 0x4D, 0x18];
/// Length of the header line, newline included.
pub const HEADER_LEN: usize = 100;
/// The bundle format version in the header line and the manifest.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's path in the tar.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The binary's name in the manifest (it lives in the header frame, not the tar).
pub const BINARY_ENTRY: &str = "mini";
/// Name prefix of the image layout tarball written into `<data-dir>/agent/images`.
pub const IMAGES_TARBALL_PREFIX: &str = "mini-bundle-";

/// Everything that can go wrong with a bundle; messages say what and where.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a mini bundle: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: verification failed: {reason}")]
    Verify { path: PathBuf, reason: String },
    #[error("{0}")]
    Images(#[from] mini_images::ImageError),
    #[error("packages: {0}")]
    Packages(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: impl Into<PathBuf>, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.into(),
        source,
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub mini_version: String,
    /// RFC 3339.
    pub created: String,
    pub files: Vec<FileEntry>,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// The header line for a binary with this digest and size.
pub fn header_line(sha256_hex: &str, size: u64) -> String {
    let line = format!("mini-bundle {FORMAT_VERSION} {sha256_hex} {size:020}\n");
    debug_assert_eq!(line.len(), HEADER_LEN);
    line
}

/// Parses a header line into (sha256 hex, binary size).
pub fn parse_header_line(line: &[u8]) -> Result<(String, u64), String> {
    if line.len() != HEADER_LEN || line[HEADER_LEN - 1] != b'\n' {
        return Err(format!(
            "the header line is not {HEADER_LEN} bytes ending in a newline"
        ));
    }
    let text = std::str::from_utf8(&line[..HEADER_LEN - 1])
        .map_err(|_| "the header line is not ASCII".to_string())?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["mini-bundle", version, sha, size] => {
            if *version != FORMAT_VERSION.to_string() {
                return Err(format!(
                    "bundle format version {version} is not supported (this mini reads version {FORMAT_VERSION})"
                ));
            }
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("the binary digest in the header is not 64 hex digits".into());
            }
            if size.len() != 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the binary size in the header is not 20 digits".into());
            }
            let size = size
                .parse()
                .map_err(|_| "the binary size in the header is too large".to_string())?;
            Ok((sha.to_ascii_lowercase(), size))
        }
        _ => Err("the header line is not `mini-bundle <version> <sha256> <size>`".into()),
    }
}

#[cfg(test)]
mod tests;
