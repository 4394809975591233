//! The manifests directory on the host, behind a trait so the deployer's decisions are tested
//! without touching the disk: [`HostFiles`] is the real one.

use std::io;
use std::path::Path;

/// File operations the deployer needs on the manifests directory.
pub trait ManifestFiles: Send + Sync {
    /// Names of the regular files in `dir` (an absent directory has none).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` atomically (a reader never sees half a file), creating its directory.
    fn write(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// Removes `path`; an absent file is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// The host's filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFiles;

impl ManifestFiles for HostFiles {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            // follows symlinks: a link to a manifest elsewhere is a manifest
            let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
            if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("manifest");
        // a hidden temporary name is not a manifest, so the deployer never reads it half-written
        let tmp = path.with_file_name(format!(".{file_name}.tmp"));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory [`ManifestFiles`] for unit tests.
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub struct FakeFiles {
        pub files: Mutex<BTreeMap<PathBuf, Vec<u8>>>,
    }

    impl FakeFiles {
        pub fn with(files: &[(&str, &str)]) -> FakeFiles {
            let fake = FakeFiles::default();
            for (path, contents) in files {
                fake.files
                    .lock()
                    .unwrap()
                    .insert(PathBuf::from(path), contents.as_bytes().to_vec());
            }
            fake
        }

        pub fn get(&self, path: &str) -> Option<String> {
            self.files
                .lock()
                .unwrap()
                .get(Path::new(path))
                .map(|b| String::from_utf8_lossy(b).into_owned())
        }
    }

    impl ManifestFiles for FakeFiles {
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            Ok(self
                .files
                .lock()
                .unwrap()
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
                .collect())
        }

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }

        fn write(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
            self.files
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), contents.to_vec());
            Ok(())
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            self.files.lock().unwrap().remove(path);
            Ok(())
        }

        fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_write_list_read_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("manifests");
        assert!(HostFiles.list(&sub).unwrap().is_empty());
        HostFiles.write(&sub.join("a.yaml"), b"x: 1\n").unwrap();
        assert_eq!(HostFiles.list(&sub).unwrap(), vec!["a.yaml".to_string()]);
        assert_eq!(HostFiles.read(&sub.join("a.yaml")).unwrap(), b"x: 1\n");
        HostFiles.remove(&sub.join("a.yaml")).unwrap();
        HostFiles.remove(&sub.join("a.yaml")).unwrap();
        assert!(HostFiles.list(&sub).unwrap().is_empty());
    }
}
