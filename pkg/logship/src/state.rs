//! Checkpoints: per source file the position shipping resumes from and what was acknowledged,
//! plus the file generation counter per container, in one JSON file written atomically (temp
//! file, fsync, rename, fsync of the directory) after the server acknowledged a batch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LogShipError;

/// File name of the checkpoints in the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";

/// Everything the shipper needs to resume after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Next file generation per container (`<pod uid>/<container>/<restart>`).
    pub generations: BTreeMap<String, u64>,
    /// Checkpoints of the source files known on disk.
    pub sources: Vec<SourceCheckpoint>,
}

/// Where one source file stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    /// The wire identity `<node>/<pod uid>/<container>/<restart>/<generation>`.
    pub source: String,
    /// The container the file belongs to: `<pod uid>/<container>/<restart>`.
    pub container: String,
    pub generation: u64,
    /// Last known path (a rotation renames the file).
    pub path: PathBuf,
    /// Inode of the file: identifies it across renames.
    pub inode: u64,
    /// Reading resumes here: the first line of the first entry not acknowledged.
    pub resume_at: u64,
    /// Offset of the last acknowledged entry.
    pub shipped: Option<u64>,
    /// Lines at or after `resume_at` that belong to acknowledged entries.
    pub skip: Vec<u64>,
    /// Size of the file when last seen (an unshipped rest of a vanished file is a counted gap).
    pub size_seen: u64,
    /// The file was rotated away: no writer appends to it any more.
    pub rotated: bool,
}

/// Loads the checkpoints; a missing file is an empty state.
pub fn load(dir: &Path) -> Result<State, LogShipError> {
    let path = dir.join(CHECKPOINT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LogShipError::Checkpoint {
            path,
            message: format!("{e}; move the file away to start over (logs are shipped again)"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(LogShipError::io("reading", &path, e)),
    }
}

/// Writes the checkpoints atomically.
pub fn save(dir: &Path, state: &State) -> Result<(), LogShipError> {
    std::fs::create_dir_all(dir).map_err(|e| LogShipError::io("creating", dir, e))?;
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let bytes = serde_json::to_vec(state).map_err(|e| LogShipError::Checkpoint {
        path: path.clone(),
        message: e.to_string(),
    })?;
    {
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| LogShipError::io("creating", &tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| LogShipError::io("writing", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| LogShipError::io("renaming", &tmp, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogShipError::io("syncing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state.generations.insert("u/c/0".into(), 3);
        state.sources.push(SourceCheckpoint {
            source: "n/u/c/0/2".into(),
            container: "u/c/0".into(),
            generation: 2,
            path: "/x/0.log".into(),
            inode: 7,
            resume_at: 100,
            shipped: Some(60),
            skip: vec![120],
            size_seen: 200,
            rotated: true,
        });
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), state);
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn load_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), State::default());
    }

    #[test]
    fn load_corrupt_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"{").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("move the file away"), "{e}");
    }
}
