//! The host reads `mini check` and `mini status` make, behind `CheckHost`: `LinuxCheckHost`
//! is the real machine, `FakeCheckHost` (tests only) answers from tables.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Transport of a port that must be free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// Output of a program run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOutput {
    pub success: bool,
    /// stdout followed by stderr.
    pub text: String,
}

/// Every OS read the checks make.
pub trait CheckHost {
    /// `uname -r`.
    fn kernel_release(&self) -> io::Result<String>;
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// A gzip-compressed text file (`/proc/config.gz`), decompressed.
    fn read_gzip_file(&self, path: &Path) -> io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
    /// Names of the entries of a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Total size in bytes of the regular files below `path`.
    fn tree_size(&self, path: &Path) -> io::Result<u64>;
    /// Binds (and releases at once) a socket on `address`.
    fn bind(&self, proto: Proto, address: SocketAddr) -> io::Result<()>;
    /// `(available, capacity)` bytes of the filesystem holding `path` (statvfs).
    fn free_space(&self, path: &Path) -> io::Result<(u64, u64)>;
    /// The program called `name` on `PATH`.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// Runs a program to completion (killed after `timeout`).
    fn run(&self, program: &Path, args: &[&str], timeout: Duration) -> io::Result<ProgramOutput>;
    /// Opens `path` for writing without writing anything (whether a sysctl could be set).
    fn open_for_write(&self, path: &Path) -> io::Result<()>;
}

/// The real machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxCheckHost;

impl CheckHost for LinuxCheckHost {
    fn kernel_release(&self) -> io::Result<String> {
        let u = nix::sys::utsname::uname().map_err(io::Error::from)?;
        Ok(u.release().to_string_lossy().into_owned())
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn read_gzip_file(&self, path: &Path) -> io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_string(&mut text)?;
        Ok(text)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn tree_size(&self, path: &Path) -> io::Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Ok(meta.len());
        }
        let mut total = 0;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            total += self.tree_size(&entry.path()).unwrap_or(0);
        }
        Ok(total)
    }

    fn bind(&self, proto: Proto, address: SocketAddr) -> io::Result<()> {
        match proto {
            Proto::Tcp => std::net::TcpListener::bind(address).map(drop),
            Proto::Udp => std::net::UdpSocket::bind(address).map(drop),
        }
    }

    fn free_space(&self, path: &Path) -> io::Result<(u64, u64)> {
        let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let frag = s.fragment_size() as u64;
        Ok((s.blocks_available() as u64 * frag, s.blocks() as u64 * frag))
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| {
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    }

    fn run(&self, program: &Path, args: &[&str], timeout: Duration) -> io::Result<ProgramOutput> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not finish in {timeout:?}", program.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output()?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(ProgramOutput {
            success: out.status.success(),
            text,
        })
    }

    fn open_for_write(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new().write(true).open(path).map(drop)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host made of tables, for the rule tests.

    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Default)]
    pub struct FakeCheckHost {
        pub release: String,
        pub files: BTreeMap<PathBuf, String>,
        pub dirs: BTreeMap<PathBuf, Vec<String>>,
        pub sizes: BTreeMap<PathBuf, u64>,
        pub busy: BTreeSet<(Proto, u16)>,
        pub space: BTreeMap<PathBuf, (u64, u64)>,
        pub programs: BTreeMap<String, PathBuf>,
        /// Program path and first argument -> output.
        pub outputs: BTreeMap<(PathBuf, String), ProgramOutput>,
        pub writable: BTreeSet<PathBuf>,
    }

    impl FakeCheckHost {
        pub fn file(mut self, path: &str, text: &str) -> Self {
            self.files.insert(PathBuf::from(path), text.to_string());
            self
        }
        pub fn program(mut self, name: &str, first_arg: &str, text: &str) -> Self {
            let path = PathBuf::from(format!("/usr/bin/{name}"));
            self.programs.insert(name.to_string(), path.clone());
            self.outputs.insert(
                (path, first_arg.to_string()),
                ProgramOutput {
                    success: true,
                    text: text.to_string(),
                },
            );
            self
        }
    }

    fn not_found(path: &Path) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
    }

    impl CheckHost for FakeCheckHost {
        fn kernel_release(&self) -> io::Result<String> {
            Ok(self.release.clone())
        }
        fn read_file(&self, path: &Path) -> io::Result<String> {
            self.files.get(path).cloned().ok_or_else(|| not_found(path))
        }
        fn read_gzip_file(&self, path: &Path) -> io::Result<String> {
            self.read_file(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.files.contains_key(path)
                || self.dirs.contains_key(path)
                || self.sizes.contains_key(path)
                || self.space.contains_key(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
            self.dirs.get(path).cloned().ok_or_else(|| not_found(path))
        }
        fn tree_size(&self, path: &Path) -> io::Result<u64> {
            self.sizes.get(path).copied().ok_or_else(|| not_found(path))
        }
        fn bind(&self, proto: Proto, address: SocketAddr) -> io::Result<()> {
            if self.busy.contains(&(proto, address.port())) {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(())
            }
        }
        fn free_space(&self, path: &Path) -> io::Result<(u64, u64)> {
            self.space.get(path).copied().ok_or_else(|| not_found(path))
        }
        fn find_program(&self, name: &str) -> Option<PathBuf> {
            self.programs.get(name).cloned()
        }
        fn run(&self, program: &Path, args: &[&str], _: Duration) -> io::Result<ProgramOutput> {
            let first = args.first().copied().unwrap_or_default().to_string();
            self.outputs
                .get(&(program.to_path_buf(), first))
                .cloned()
                .ok_or_else(|| not_found(program))
        }
        fn open_for_write(&self, path: &Path) -> io::Result<()> {
            if self.writable.contains(path) {
                Ok(())
            } else {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            }
        }
    }
}
