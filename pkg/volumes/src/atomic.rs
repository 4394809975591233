//! Atomic volume contents, as upstream's `AtomicWriter`: the files live in a timestamped
//! directory `..<timestamp>`, a `..data` symlink points at it and every top-level entry is a
//! symlink through `..data`. An update writes a new timestamped directory and renames a fresh
//! `..data_tmp` symlink over `..data`, so a container sees either all old or all new files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

use crate::VolumeError;

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path -> contents.
pub type Payload = BTreeMap<String, FileProjection>;

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a payload path: relative, no `..` element, not starting with `..`.
pub fn validate_path(p: &str) -> Result<(), VolumeError> {
    let bad = |message: &str| {
        Err(VolumeError::InvalidPath {
            path: p.to_string(),
            message: message.to_string(),
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.starts_with("..") {
        return bad("must not start with '..'");
    }
    for c in Path::new(p).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return bad("must not contain '..'"),
            Component::RootDir | Component::Prefix(_) => return bad("must be relative"),
        }
    }
    Ok(())
}

/// Makes `target` hold exactly `payload`, atomically. Returns whether anything changed.
pub fn write(target: &Path, payload: &Payload) -> Result<bool, VolumeError> {
    for p in payload.keys() {
        validate_path(p)?;
    }
    std::fs::create_dir_all(target).map_err(io("create dir", target))?;
    let data_link = target.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_ts {
        if matches_payload(&target.join(old), payload) {
            ensure_user_links(target, payload)?;
            return Ok(false);
        }
    }

    let ts_dir = new_timestamp_dir(target)?;
    for (rel, file) in payload {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create dir", parent))?;
        }
        let mut f = std::fs::File::create(&path).map_err(io("create", &path))?;
        f.write_all(&file.data).map_err(io("write", &path))?;
        f.sync_all().map_err(io("sync", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(io("chmod", &path))?;
    }
    let ts_name = ts_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();

    let tmp_link = target.join(DATA_DIR_TMP);
    match std::fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &tmp_link)(e)),
    }
    symlink(&ts_name, &tmp_link).map_err(io("symlink", &tmp_link))?;
    std::fs::rename(&tmp_link, &data_link).map_err(io("rename", &data_link))?;

    ensure_user_links(target, payload)?;
    remove_stale_user_links(target, payload)?;
    if let Some(old) = old_ts {
        if old.as_os_str() != ts_name.as_os_str() {
            let old_dir = target.join(&old);
            std::fs::remove_dir_all(&old_dir).map_err(io("remove dir", &old_dir))?;
        }
    }
    Ok(true)
}

/// The top-level names of a payload (`a/b` -> `a`).
fn top_level(payload: &Payload) -> BTreeSet<String> {
    payload
        .keys()
        .filter_map(|p| {
            Path::new(p).components().find_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
        })
        .collect()
}

fn ensure_user_links(target: &Path, payload: &Payload) -> Result<(), VolumeError> {
    for name in top_level(payload) {
        let link = target.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(&name), &link).map_err(io("symlink", &link))?;
        }
    }
    Ok(())
}

fn remove_stale_user_links(target: &Path, payload: &Payload) -> Result<(), VolumeError> {
    let wanted = top_level(payload);
    let entries = std::fs::read_dir(target).map_err(io("read dir", target))?;
    for entry in entries {
        let entry = entry.map_err(io("read dir", target))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || wanted.contains(&name) {
            continue;
        }
        let path = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if is_link {
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

/// Whether the files under `dir` are exactly the payload (contents and modes).
fn matches_payload(dir: &Path, payload: &Payload) -> bool {
    let mut found = BTreeSet::new();
    if collect_files(dir, dir, &mut found).is_err() {
        return false;
    }
    if found.len() != payload.len() || !payload.keys().all(|k| found.contains(k)) {
        return false;
    }
    payload.iter().all(|(rel, file)| {
        let path = dir.join(rel);
        let same_mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o7777 == file.mode & 0o7777)
            .unwrap_or(false);
        same_mode
            && std::fs::read(&path)
                .map(|d| d == file.data)
                .unwrap_or(false)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn new_timestamp_dir(target: &Path) -> Result<std::path::PathBuf, VolumeError> {
    let stamp = chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S").to_string();
    for attempt in 0u32..100 {
        let nanos = chrono::Utc::now().timestamp_subsec_nanos();
        let dir = target.join(format!("..{stamp}.{}", nanos.wrapping_add(attempt)));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create dir", &dir)(e)),
        }
    }
    Err(VolumeError::Io {
        op: "create timestamped dir",
        path: target.to_path_buf(),
        source: std::io::Error::other("no free name after 100 attempts"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &str, u32)]) -> Payload {
        entries
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn write_fresh_target_creates_data_link_and_user_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        assert!(write(&t, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)])).unwrap());
        let data = std::fs::read_link(t.join("..data")).unwrap();
        assert!(data.to_string_lossy().starts_with(".."), "{data:?}");
        assert_eq!(
            std::fs::read_link(t.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(t.join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(std::fs::read_to_string(t.join("sub/b")).unwrap(), "2");
        let mode = std::fs::metadata(t.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn write_same_payload_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        let p = payload(&[("a", "1", 0o644)]);
        assert!(write(&t, &p).unwrap());
        let first = std::fs::read_link(t.join("..data")).unwrap();
        assert!(!write(&t, &p).unwrap());
        assert_eq!(std::fs::read_link(t.join("..data")).unwrap(), first);
    }

    #[test]
    fn write_update_swaps_data_and_removes_old_dir_and_stale_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("vol");
        write(&t, &payload(&[("a", "1", 0o644), ("gone", "x", 0o644)])).unwrap();
        let first = std::fs::read_link(t.join("..data")).unwrap();
        assert!(write(&t, &payload(&[("a", "2", 0o644)])).unwrap());
        let second = std::fs::read_link(t.join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!t.join(&first).exists(), "old timestamped dir removed");
        assert_eq!(std::fs::read_to_string(t.join("a")).unwrap(), "2");
        assert!(std::fs::symlink_metadata(t.join("gone")).is_err());
        assert!(!t.join("..data_tmp").exists());
    }

    #[test]
    fn validate_path_rejects_escapes() {
        assert!(validate_path("ok/file").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }
}
