//! The agent's side of reclaiming: removing one provisioned directory, strictly inside the
//! node's local-path directory. Only a plain name (one path component) is accepted; a symbolic
//! link is never followed, and the entry must resolve to a direct child of the directory.
//! Host file operations go through [`DirOps`] ([`HostDirOps`] for real, a fake in tests).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::DirError;

/// What a path is, without following a final symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Symlink,
    File,
}

/// The host file operations removal needs.
pub trait DirOps: Send + Sync {
    /// `None` when nothing is at `path`.
    fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Removes a directory tree (symbolic links inside are removed, never followed) or a file.
    fn remove_all(&self, path: &Path, kind: EntryKind) -> io::Result<()>;
}

/// [`DirOps`] on the host's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostDirOps;

impl DirOps for HostDirOps {
    fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Ok(Some(EntryKind::Symlink)),
            Ok(m) if m.is_dir() => Ok(Some(EntryKind::Directory)),
            Ok(_) => Ok(Some(EntryKind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn remove_all(&self, path: &Path, kind: EntryKind) -> io::Result<()> {
        match kind {
            EntryKind::Directory => std::fs::remove_dir_all(path),
            EntryKind::File | EntryKind::Symlink => std::fs::remove_file(path),
        }
    }
}

/// A node's local-path directory (`--local-path-dir`).
#[derive(Clone)]
pub struct LocalPathDir {
    dir: PathBuf,
    ops: Arc<dyn DirOps>,
}

impl std::fmt::Debug for LocalPathDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPathDir")
            .field("dir", &self.dir)
            .finish()
    }
}

/// Whether `name` is one plain path component.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

impl LocalPathDir {
    pub fn new(dir: impl Into<PathBuf>, ops: Arc<dyn DirOps>) -> Self {
        LocalPathDir {
            dir: dir.into(),
            ops,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes `<dir>/<name>`. `Ok(false)` when it was already gone.
    pub fn remove(&self, name: &str) -> Result<bool, DirError> {
        if !is_plain_name(name) {
            return Err(DirError::BadName(name.to_string()));
        }
        let path = self.dir.join(name);
        let shown = path.display().to_string();
        let io_err = |source| DirError::Io {
            path: shown.clone(),
            source,
        };
        let Some(kind) = self.ops.entry_kind(&path).map_err(io_err)? else {
            return Ok(false);
        };
        if kind == EntryKind::Symlink {
            return Err(DirError::Symlink { path: shown });
        }
        let base = self.ops.canonicalize(&self.dir).map_err(io_err)?;
        let real = self.ops.canonicalize(&path).map_err(io_err)?;
        if real.parent() != Some(base.as_path()) {
            return Err(DirError::Escapes {
                path: shown,
                dir: base.display().to_string(),
            });
        }
        self.ops.remove_all(&real, kind).map_err(io_err)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory filesystem: entries with their kind and where they resolve to.
    #[derive(Default)]
    struct FakeOps {
        entries: Mutex<HashMap<PathBuf, (EntryKind, PathBuf)>>,
        removed: Mutex<Vec<PathBuf>>,
    }

    impl FakeOps {
        fn add(&self, path: &str, kind: EntryKind, real: &str) {
            self.entries
                .lock()
                .unwrap()
                .insert(PathBuf::from(path), (kind, PathBuf::from(real)));
        }
    }

    impl DirOps for FakeOps {
        fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
            Ok(self.entries.lock().unwrap().get(path).map(|e| e.0))
        }
        fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
            self.entries
                .lock()
                .unwrap()
                .get(path)
                .map(|e| e.1.clone())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn remove_all(&self, path: &Path, _kind: EntryKind) -> io::Result<()> {
            self.entries.lock().unwrap().remove(path);
            self.removed.lock().unwrap().push(path.to_path_buf());
            Ok(())
        }
    }

    fn setup() -> (Arc<FakeOps>, LocalPathDir) {
        let ops = Arc::new(FakeOps::default());
        ops.add("/data/storage", EntryKind::Directory, "/data/storage");
        let dir = LocalPathDir::new("/data/storage", ops.clone());
        (ops, dir)
    }

    #[test]
    fn remove_child_directory_removes_it() {
        let (ops, dir) = setup();
        ops.add(
            "/data/storage/pvc-1_default_a",
            EntryKind::Directory,
            "/data/storage/pvc-1_default_a",
        );
        assert!(dir.remove("pvc-1_default_a").unwrap());
        assert_eq!(
            *ops.removed.lock().unwrap(),
            vec![PathBuf::from("/data/storage/pvc-1_default_a")]
        );
    }

    #[test]
    fn remove_missing_directory_is_ok_false() {
        let (_, dir) = setup();
        assert!(!dir.remove("pvc-gone").unwrap());
    }

    #[test]
    fn remove_dot_dot_and_slashes_is_rejected() {
        let (ops, dir) = setup();
        for name in ["..", ".", "", "a/b", "../etc", "x\0y"] {
            assert!(
                matches!(dir.remove(name), Err(DirError::BadName(_))),
                "{name:?}"
            );
        }
        assert!(ops.removed.lock().unwrap().is_empty());
    }

    #[test]
    fn remove_symlink_is_rejected() {
        let (ops, dir) = setup();
        ops.add("/data/storage/evil", EntryKind::Symlink, "/etc");
        assert!(matches!(dir.remove("evil"), Err(DirError::Symlink { .. })));
        assert!(ops.removed.lock().unwrap().is_empty());
    }

    #[test]
    fn remove_entry_resolving_outside_is_rejected() {
        let (ops, dir) = setup();
        // e.g. a bind mount or a directory swapped under us
        ops.add("/data/storage/odd", EntryKind::Directory, "/var/lib/other");
        assert!(matches!(dir.remove("odd"), Err(DirError::Escapes { .. })));
        assert!(ops.removed.lock().unwrap().is_empty());
    }

    #[test]
    fn host_ops_remove_real_tree_keeps_symlink_target() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("storage");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(base.join("pvc-x/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"1").unwrap();
        std::fs::write(base.join("pvc-x/sub/file"), b"data").unwrap();
        std::os::unix::fs::symlink(&outside, base.join("pvc-x/link")).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("link")).unwrap();
        let dir = LocalPathDir::new(&base, Arc::new(HostDirOps));
        assert!(matches!(dir.remove("link"), Err(DirError::Symlink { .. })));
        assert!(dir.remove("pvc-x").unwrap());
        assert!(!base.join("pvc-x").exists());
        assert!(outside.join("keep").exists());
        assert!(!dir.remove("pvc-x").unwrap());
    }
}
