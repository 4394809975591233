//! The OS calls of `mini killall` other than netlink and nftables, behind `System`:
//! processes (/proc and kill), mounts (/proc/self/mountinfo and umount2), files and
//! directories (cgroups, netns files, containerd's bundles) and systemd units.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What /proc says about one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// `/proc/PID/exe` (without a ` (deleted)` suffix); `None` when unreadable.
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    /// `/proc/PID/cwd`.
    pub cwd: Option<PathBuf>,
    /// `MINI_DATA_DIR` of its environment.
    pub env_data_dir: Option<String>,
}

/// A signal killall sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
}

/// A systemd unit's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    pub active: bool,
    pub main_pid: u32,
}

/// Every OS call killall makes, except netlink and nftables.
pub trait System {
    /// Every process id in /proc.
    fn pids(&self) -> Vec<u32>;
    /// One process; `None` when it is gone.
    fn process(&self, pid: u32) -> Option<ProcInfo>;
    /// Whether a process still runs (zombies count as gone).
    fn alive(&self, pid: u32) -> bool;
    fn signal(&self, pid: u32, sig: Sig) -> io::Result<()>;
    /// `/proc/self/mountinfo`.
    fn mountinfo(&self) -> io::Result<String>;
    /// umount2, with MNT_DETACH when `lazy`.
    fn unmount(&self, path: &Path, lazy: bool) -> io::Result<()>;
    fn read_file(&self, path: &Path) -> io::Result<String>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// rmdir (how a cgroup is removed).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The path with symlinks resolved; `None` when it does not exist.
    fn canonicalize(&self, path: &Path) -> Option<PathBuf>;
    /// The unit's state when systemd runs this host and knows the unit.
    fn unit(&self, name: &str) -> Option<Unit>;
    fn stop_unit(&self, name: &str) -> io::Result<()>;
    fn sleep(&self, duration: Duration);
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSystem;

fn nix_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl System for LinuxSystem {
    fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    fn process(&self, pid: u32) -> Option<ProcInfo> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
        let exe = std::fs::read_link(dir.join("exe")).ok().map(|p| {
            let s = p.to_string_lossy();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
        });
        let cmdline = std::fs::read(dir.join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let env_data_dir = std::fs::read(dir.join("environ")).ok().and_then(|env| {
            env.split(|b| *b == 0).find_map(|v| {
                v.strip_prefix(b"MINI_DATA_DIR=")
                    .map(|d| String::from_utf8_lossy(d).into_owned())
            })
        });
        Some(ProcInfo {
            pid,
            ppid,
            exe,
            cmdline,
            cwd: std::fs::read_link(dir.join("cwd")).ok(),
            env_data_dir,
        })
    }

    fn alive(&self, pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    }

    fn signal(&self, pid: u32, sig: Sig) -> io::Result<()> {
        let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let sig = match sig {
            Sig::Term => nix::sys::signal::Signal::SIGTERM,
            Sig::Kill => nix::sys::signal::Signal::SIGKILL,
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(nix_err)
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn unmount(&self, path: &Path, lazy: bool) -> io::Result<()> {
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        nix::mount::umount2(path, flags).map_err(nix_err)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn unit(&self, name: &str) -> Option<Unit> {
        if !Path::new("/run/systemd/system").exists() {
            return None;
        }
        let out = std::process::Command::new("systemctl")
            .args(["show", "-p", "LoadState,ActiveState,MainPID", name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_default()
                .to_string()
        };
        (field("LoadState") == "loaded").then(|| Unit {
            active: field("ActiveState") == "active",
            main_pid: field("MainPID").parse().unwrap_or(0),
        })
    }

    fn stop_unit(&self, name: &str) -> io::Result<()> {
        let out = std::process::Command::new("systemctl")
            .args(["stop", name])
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}
