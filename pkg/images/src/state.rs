//! What `import_dir` already imported: per file path its size, mtime and sha256 and the image names it
//! created, persisted as JSON in the importer's state dir so unchanged tarballs are skipped across restarts.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// File name of the state inside the state dir.
pub const STATE_FILE: &str = "image-imports.json";

/// The identity of one imported file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportedFile {
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: String,
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportState {
    #[serde(default)]
    pub files: BTreeMap<PathBuf, ImportedFile>,
}

impl ImportState {
    /// Loads the state; a missing or unreadable file is an empty state (everything is imported again,
    /// which is harmless: imports are idempotent).
    pub fn load(state_dir: &Path) -> ImportState {
        let path = state_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "image import state unreadable, starting afresh");
                ImportState::default()
            }),
            Err(_) => ImportState::default(),
        }
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, state_dir: &Path) -> Result<(), ImageError> {
        let path = state_dir.join(STATE_FILE);
        let io = |e: std::io::Error| ImageError::Io {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let tmp = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

/// Size and modification time in nanoseconds since the epoch.
pub fn stat_fingerprint(meta: &std::fs::Metadata) -> (u64, i128) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    (meta.len(), mtime_ns)
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let io = |e: std::io::Error| ImageError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_state_save_then_load_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ImportState::load(dir.path()), ImportState::default());
        let mut s = ImportState::default();
        s.files.insert(
            PathBuf::from("/x/a.tar"),
            ImportedFile {
                size: 3,
                mtime_ns: 7,
                sha256: "ab".into(),
                images: vec!["docker.io/library/a:1".into()],
            },
        );
        s.save(dir.path()).unwrap();
        assert_eq!(ImportState::load(dir.path()), s);
    }

    #[test]
    fn import_state_corrupt_file_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert_eq!(ImportState::load(dir.path()), ImportState::default());
    }

    #[test]
    fn sha256_file_matches_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
