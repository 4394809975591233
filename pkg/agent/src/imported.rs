//! Which air-gap image tarballs of `<data>/agent/images/` this node imported into containerd, and which of
//! them were pushed to the cluster registry: the importer's own record (`image-imports.json` in the agent
//! dir: per file its sha256 and image names) joined with a small ledger of pushed tarball digests
//! (`registry-pushed.json`), so whoever pushes them (the server) pushes each tarball's content once, also
//! across restarts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::fsutil::{read_optional, write_private};
use crate::AgentError;

/// File name of the pushed ledger in the agent dir.
pub const PUSHED_FILE: &str = "registry-pushed.json";

/// A tarball of the image directory that the importer imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedTarball {
    pub path: PathBuf,
    /// sha256 (hex) of the file as imported.
    pub sha256: String,
    /// The image names the import created or updated.
    pub images: Vec<String>,
}

/// The tarballs of the image directory the importer imported (from its state file), by path; files
/// removed from the directory or changed since their import are left out (the watcher imports them again).
pub fn imported_tarballs(config: &AgentConfig) -> Vec<ImportedTarball> {
    let dir = config.images_dir();
    mini_images::state::ImportState::load(&config.agent_dir())
        .files
        .into_iter()
        .filter(|(path, _)| path.starts_with(&dir))
        .filter(|(path, file)| {
            std::fs::metadata(path).is_ok_and(|meta| {
                mini_images::state::stat_fingerprint(&meta) == (file.size, file.mtime_ns)
            })
        })
        .map(|(path, file)| ImportedTarball {
            path,
            sha256: file.sha256,
            images: file.images,
        })
        .collect()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    #[serde(default)]
    pushed: BTreeSet<String>,
}

/// The record of tarball contents (sha256) already pushed to the cluster registry.
#[derive(Debug, Clone)]
pub struct PushLedger {
    path: PathBuf,
}

impl PushLedger {
    /// The ledger of this agent's data dir (`<data>/agent/registry-pushed.json`).
    pub fn open(config: &AgentConfig) -> PushLedger {
        PushLedger {
            path: config.agent_dir().join(PUSHED_FILE),
        }
    }

    fn load(&self) -> Result<Ledger, AgentError> {
        match read_optional(&self.path)? {
            None => Ok(Ledger::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| AgentError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not a pushed-images ledger ({e}); remove it to push every tarball again"
                    ),
                ),
            }),
        }
    }

    /// The sha256s recorded as pushed.
    pub fn pushed(&self) -> Result<BTreeSet<String>, AgentError> {
        Ok(self.load()?.pushed)
    }

    /// Records a tarball's content as pushed (atomic rewrite of the ledger).
    pub fn mark_pushed(&self, sha256: &str) -> Result<(), AgentError> {
        let mut ledger = self.load()?;
        if !ledger.pushed.insert(sha256.to_string()) {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&ledger).map_err(|e| AgentError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_private(&self.path, &text)
    }

    /// The imported tarballs whose content is not recorded as pushed yet.
    pub fn to_push(&self, config: &AgentConfig) -> Result<Vec<ImportedTarball>, AgentError> {
        let pushed = self.pushed()?;
        Ok(imported_tarballs(config)
            .into_iter()
            .filter(|t| !pushed.contains(&t.sha256))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_images::state::{stat_fingerprint, ImportState, ImportedFile};

    fn config(dir: &std::path::Path) -> AgentConfig {
        let mut config = AgentConfig::new("https://10.0.0.1:6443", "t");
        config.data_dir = dir.to_path_buf();
        config
    }

    /// Records `name` (written with `data`) as imported, as the importer does.
    fn imported(config: &AgentConfig, state: &mut ImportState, name: &str, data: &[u8], sha: &str) {
        std::fs::create_dir_all(config.images_dir()).expect("images dir");
        let path = config.images_dir().join(name);
        std::fs::write(&path, data).expect("write tarball");
        let (size, mtime_ns) = stat_fingerprint(&std::fs::metadata(&path).expect("stat"));
        state.files.insert(
            path,
            ImportedFile {
                size,
                mtime_ns,
                sha256: sha.into(),
                images: vec![format!("docker.io/library/{name}:1")],
            },
        );
    }

    #[test]
    fn imported_tarballs_lists_current_files_and_ledger_filters_pushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let mut state = ImportState::default();
        imported(&config, &mut state, "a", b"aaa", "11");
        imported(&config, &mut state, "b", b"bbb", "22");
        imported(&config, &mut state, "gone", b"ccc", "33");
        state.save(&config.agent_dir()).expect("save state");
        std::fs::remove_file(config.images_dir().join("gone")).expect("remove");

        let all = imported_tarballs(&config);
        let shas: Vec<&str> = all.iter().map(|t| t.sha256.as_str()).collect();
        assert_eq!(shas, ["11", "22"]);
        assert_eq!(all[0].images, ["docker.io/library/a:1"]);

        let ledger = PushLedger::open(&config);
        assert_eq!(ledger.to_push(&config).expect("to push").len(), 2);
        ledger.mark_pushed("11").expect("mark");
        ledger.mark_pushed("11").expect("mark twice");
        let left = PushLedger::open(&config).to_push(&config).expect("to push");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].sha256, "22");
    }

    #[test]
    fn imported_tarballs_changed_file_is_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let mut state = ImportState::default();
        imported(&config, &mut state, "a", b"aaa", "11");
        state.save(&config.agent_dir()).expect("save state");
        std::fs::write(config.images_dir().join("a"), b"changed content").expect("rewrite");
        assert!(imported_tarballs(&config).is_empty());
    }
}
