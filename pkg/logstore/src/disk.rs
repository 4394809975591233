//! Free space of the filesystem holding the store, behind a trait (`statvfs` for real, a fake in tests).

use std::io;
use std::path::Path;

/// Reports the bytes available to unprivileged writers on the filesystem holding `path`.
pub trait DiskSpace: Send + Sync {
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// The real implementation: `statvfs(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatvfsDisk;

impl DiskSpace for StatvfsDisk {
    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_tempdir_reports_some_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StatvfsDisk.free_bytes(dir.path()).unwrap() > 0);
    }
}
