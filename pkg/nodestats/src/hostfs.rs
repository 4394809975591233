//! The host files the sampler reads (/proc, /sys/fs/cgroup, statvfs) behind a trait: the real
//! host, and an in-memory fake for unit tests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size and free space of a filesystem, as node_exporter reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsSize {
    /// `f_blocks * f_frsize`
    pub size_bytes: u64,
    /// `f_bavail * f_frsize` (what an unprivileged user may still write)
    pub avail_bytes: u64,
}

/// Read access to the host's pseudo files.
pub trait HostFs: Send + Sync + 'static {
    fn read(&self, path: &Path) -> io::Result<String>;
    fn filesystem(&self, path: &Path) -> io::Result<FsSize>;
    /// Kernel clock ticks per second (`USER_HZ`, the unit of /proc/stat).
    fn clock_ticks(&self) -> u64 {
        100
    }
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl HostFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn filesystem(&self, path: &Path) -> io::Result<FsSize> {
        let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let frag = s.fragment_size() as u64;
        Ok(FsSize {
            size_bytes: (s.blocks() as u64).saturating_mul(frag),
            avail_bytes: (s.blocks_available() as u64).saturating_mul(frag),
        })
    }

    fn clock_ticks(&self) -> u64 {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .map(|t| t as u64)
            .unwrap_or(100)
    }
}

/// An in-memory host for tests: files by path, filesystems by mount point.
#[derive(Debug, Default)]
pub struct FakeFs {
    files: Mutex<BTreeMap<PathBuf, String>>,
    filesystems: Mutex<BTreeMap<PathBuf, FsSize>>,
}

impl FakeFs {
    pub fn new() -> FakeFs {
        FakeFs::default()
    }

    /// Sets (or replaces) a file.
    pub fn set(&self, path: impl Into<PathBuf>, content: impl Into<String>) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.into(), content.into());
    }

    /// Removes a file (a process or cgroup that went away).
    pub fn remove(&self, path: impl AsRef<Path>) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path.as_ref());
    }

    pub fn set_filesystem(&self, path: impl Into<PathBuf>, size: FsSize) {
        self.filesystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.into(), size);
    }
}

impl HostFs for FakeFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn filesystem(&self, path: &Path) -> io::Result<FsSize> {
        self.filesystems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }
}
