//! File helpers: atomic writes with an exact mode, private directories, readable errors.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::CertError;

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (and its parents) and sets its mode to `mode`.
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> Result<(), CertError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| io_err(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(|e| io_err(dir, e))
}

/// Creates the parent directory of `path` if it is missing (mode 0755 before umask).
pub(crate) fn ensure_parent(path: &Path) -> Result<(), CertError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            fs::create_dir_all(parent).map_err(|e| io_err(parent, e))
        }
        _ => Ok(()),
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so
/// readers never see a partial file; the file ends up with exactly `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            io_err(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?
        .to_string_lossy();
    let suffix: u64 = rand::random();
    let tmp = path.with_file_name(format!(
        ".{file_name}.tmp.{}.{suffix:x}",
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given to open; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Reads `path` as UTF-8; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, CertError> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| CertError::Parse {
                what: path.display().to_string(),
                reason: "file is not valid utf-8".to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}
