//! The snapshot directory: writing a file atomically under a timestamped name, listing the
//! snapshots by their headers, deleting one, and pruning a name down to the newest N.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::format::{read_header, Header, Snapshot};
use crate::{io_err, SnapshotError};

/// File names end with this.
const EXTENSION: &str = ".snap";
/// Bytes read to find a header when listing.
const HEADER_READ: u64 = 64 * 1024;

/// One snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The file name.
    pub file: String,
    pub path: PathBuf,
    pub size: u64,
    pub header: Header,
}

/// Where snapshots go unless told otherwise: `<data-dir>/server/db/snapshots` (as in k3s).
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("db").join("snapshots")
}

fn check_name(name: &str) -> Result<(), SnapshotError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadName(name.to_string()))
    }
}

/// Writes `snapshot` into `dir` as `<name>-<UTC time>.snap` (a suffix keeps names unique),
/// through a temporary file that is synced and renamed, so a listed file is always whole.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<Entry, SnapshotError> {
    check_name(&snapshot.header.name)?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let bytes = snapshot.encode()?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut file = format!("{}-{stamp}{EXTENSION}", snapshot.header.name);
    let mut n = 2;
    while dir.join(&file).exists() {
        file = format!("{}-{stamp}-{n}{EXTENSION}", snapshot.header.name);
        n += 1;
    }
    let path = dir.join(&file);
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(io_err(&tmp))?;
    drop(out);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(Entry {
        file,
        path,
        size: bytes.len() as u64,
        header: snapshot.header.clone(),
    })
}

/// Every snapshot in `dir`, oldest first; files that are not snapshots are skipped.
pub fn list(dir: &Path) -> Result<Vec<Entry>, SnapshotError> {
    let reader = match std::fs::read_dir(dir) {
        Ok(reader) => reader,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut entries = Vec::new();
    for item in reader {
        let item = item.map_err(io_err(dir))?;
        let file = item.file_name().to_string_lossy().to_string();
        if !file.ends_with(EXTENSION) || file.starts_with('.') {
            continue;
        }
        let path = item.path();
        let mut start = Vec::new();
        let opened = std::fs::File::open(&path).map_err(io_err(&path))?;
        let size = opened.metadata().map_err(io_err(&path))?.len();
        opened
            .take(HEADER_READ)
            .read_to_end(&mut start)
            .map_err(io_err(&path))?;
        match read_header(&start) {
            Ok(header) => entries.push(Entry {
                file,
                path,
                size,
                header,
            }),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping a file that is not a readable snapshot")
            }
        }
    }
    entries.sort_by(|a, b| {
        (a.header.created.as_str(), a.file.as_str())
            .cmp(&(b.header.created.as_str(), b.file.as_str()))
    });
    Ok(entries)
}

/// The path of snapshot `file`: an existing path as given, else the file of that name in `dir`.
pub fn resolve(dir: &Path, file: &str) -> Result<PathBuf, SnapshotError> {
    let given = Path::new(file);
    if given.is_file() {
        return Ok(given.to_path_buf());
    }
    if !file.contains('/') {
        for candidate in [dir.join(file), dir.join(format!("{file}{EXTENSION}"))] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(SnapshotError::NotFound(file.to_string()))
}

/// Deletes snapshot `file` (a name listed by [`list`]) from `dir`.
pub fn delete(dir: &Path, file: &str) -> Result<PathBuf, SnapshotError> {
    if file.contains('/') {
        return Err(SnapshotError::NotFound(file.to_string()));
    }
    let path = resolve(dir, file)?;
    std::fs::remove_file(&path).map_err(io_err(&path))?;
    Ok(path)
}

/// Deletes the oldest snapshots named `name` until `keep` remain; returns what was deleted.
pub fn prune(dir: &Path, name: &str, keep: usize) -> Result<Vec<Entry>, SnapshotError> {
    let named: Vec<Entry> = list(dir)?
        .into_iter()
        .filter(|entry| entry.header.name == name)
        .collect();
    let excess = named.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for entry in named.into_iter().take(excess) {
        std::fs::remove_file(&entry.path).map_err(io_err(&entry.path))?;
        removed.push(entry);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_store::KeyValue;

    fn snapshot(name: &str, created: &str) -> Snapshot {
        let mut snapshot = Snapshot::new(
            "sled",
            name,
            5,
            None,
            vec![KeyValue {
                key: "/a".to_string(),
                value: b"v".to_vec(),
                create_revision: 1,
                mod_revision: 5,
            }],
        );
        snapshot.header.created = created.to_string();
        snapshot
    }

    #[test]
    fn write_then_list_shows_header_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write(
            dir.path(),
            &snapshot("on-demand", "2026-01-01T00:00:00.000Z"),
        )
        .unwrap();
        assert!(entry.file.starts_with("on-demand-") && entry.file.ends_with(".snap"));
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed, vec![entry]);
    }

    #[test]
    fn write_same_second_twice_keeps_both() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), &snapshot("x", "2026-01-01T00:00:00.000Z")).unwrap();
        let b = write(dir.path(), &snapshot("x", "2026-01-01T00:00:00.001Z")).unwrap();
        assert_ne!(a.file, b.file);
        assert_eq!(list(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn write_bad_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../up", "Upper", "", "a/b"] {
            let err = write(dir.path(), &snapshot(name, "t")).unwrap_err();
            assert!(matches!(err, SnapshotError::BadName(_)), "{name}: {err}");
        }
    }

    #[test]
    fn list_skips_foreign_files_and_missing_dir_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::write(dir.path().join("junk.snap"), b"not a snapshot").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn prune_keeps_newest_of_that_name_only() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in [
            "scheduled",
            "scheduled",
            "on-demand",
            "scheduled",
            "scheduled",
        ]
        .iter()
        .enumerate()
        {
            write(
                dir.path(),
                &snapshot(name, &format!("2026-01-01T00:00:0{i}.000Z")),
            )
            .unwrap();
        }
        let removed = prune(dir.path(), "scheduled", 2).unwrap();
        let removed: Vec<&str> = removed.iter().map(|e| e.header.created.as_str()).collect();
        assert_eq!(
            removed,
            ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z"]
        );
        let left: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| format!("{} {}", e.header.name, e.header.created))
            .collect();
        assert_eq!(
            left,
            [
                "on-demand 2026-01-01T00:00:02.000Z",
                "scheduled 2026-01-01T00:00:03.000Z",
                "scheduled 2026-01-01T00:00:04.000Z"
            ]
        );
    }

    #[test]
    fn delete_removes_listed_file_and_refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        let entry = write(dir.path(), &snapshot("x", "t")).unwrap();
        assert!(matches!(
            delete(dir.path(), "../x").unwrap_err(),
            SnapshotError::NotFound(_)
        ));
        delete(dir.path(), &entry.file).unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        assert!(matches!(
            delete(dir.path(), &entry.file).unwrap_err(),
            SnapshotError::NotFound(_)
        ));
    }
}
