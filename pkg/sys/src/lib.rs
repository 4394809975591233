//! The one crate that talks to the OS for the node side: mounts, network namespaces, host facts.
//! Everything sits behind the `Host` trait, with `LinuxHost` (real) and `FakeHost` (records calls,
//! for unit tests that run without root).

pub mod alloc;
pub mod netlink;
pub mod nft;
pub mod nft_netlink;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An OS call that failed: which call, on what, and why.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{call} {target}: {source}")]
    Os {
        call: &'static str,
        target: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse: {message}")]
    Parse { path: String, message: String },
}

fn os_err(call: &'static str, target: impl std::fmt::Display, source: std::io::Error) -> SysError {
    SysError::Os {
        call,
        target: target.to_string(),
        source,
    }
}

fn errno(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Kernel identity (`uname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub sysname: String,
    pub release: String,
    pub machine: String,
}

/// Memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Size and free space of the filesystem holding a path (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilesystemInfo {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// The OS calls the node side makes.
pub trait Host: Send + Sync + 'static {
    fn hostname(&self) -> Result<String, SysError>;
    fn kernel(&self) -> Result<KernelInfo, SysError>;
    fn memory(&self) -> Result<MemoryInfo, SysError>;
    fn cpu_count(&self) -> usize;
    /// Total CPU time used by the whole machine since boot, in nanoseconds (all cores summed,
    /// idle and iowait excluded) -- two readings give node CPU usage.
    fn cpu_usage_nanos(&self) -> Result<u64, SysError>;
    fn filesystem(&self, path: &Path) -> Result<FilesystemInfo, SysError>;
    /// Mounts a tmpfs at `target` (a directory that exists); `size_bytes` caps it.
    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> Result<(), SysError>;
    /// Unmounts `target` (lazily, so busy mounts go away once released).
    fn unmount(&self, target: &Path) -> Result<(), SysError>;
    /// Whether `path` is a mount point.
    fn is_mount_point(&self, path: &Path) -> Result<bool, SysError>;
    /// Opens a TCP connection from inside the network namespace at `netns_path`
    /// (e.g. to a pod's localhost for port-forward). Blocking; call from `spawn_blocking`.
    fn connect_in_netns(
        &self,
        netns_path: &Path,
        address: SocketAddr,
    ) -> Result<std::net::TcpStream, SysError>;
    /// Writes a sysctl, `key` in dotted form (`net.ipv4.ip_forward`).
    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), SysError>;
    /// The local address the kernel would use as source to reach `destination` (the address of
    /// the interface that routes there). No packet is sent.
    fn route_source_ip(&self, destination: IpAddr) -> Result<IpAddr, SysError>;
    /// The MTU of the interface holding `address`, `None` when no interface has it.
    fn interface_mtu(&self, address: IpAddr) -> Result<Option<u32>, SysError>;
    /// Identity of the installed OS and this boot (`/etc/os-release`, machine-id, boot_id).
    fn os_identity(&self) -> Result<OsIdentity, SysError>;
}

/// What the OS says about itself; empty strings where a file is missing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsIdentity {
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub pretty_name: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid` (readable by root only on most machines).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// The real OS.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxHost;

impl Host for LinuxHost {
    fn hostname(&self) -> Result<String, SysError> {
        let name = nix::unistd::gethostname().map_err(|e| os_err("gethostname", "", errno(e)))?;
        Ok(name.to_string_lossy().into_owned())
    }

    fn kernel(&self) -> Result<KernelInfo, SysError> {
        let u = nix::sys::utsname::uname().map_err(|e| os_err("uname", "", errno(e)))?;
        Ok(KernelInfo {
            sysname: u.sysname().to_string_lossy().into_owned(),
            release: u.release().to_string_lossy().into_owned(),
            machine: u.machine().to_string_lossy().into_owned(),
        })
    }

    fn memory(&self) -> Result<MemoryInfo, SysError> {
        let path = "/proc/meminfo";
        let text = std::fs::read_to_string(path).map_err(|e| os_err("read", path, e))?;
        parse_meminfo(&text).ok_or_else(|| SysError::Parse {
            path: path.into(),
            message: "no MemTotal line".into(),
        })
    }

    fn cpu_count(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    fn cpu_usage_nanos(&self) -> Result<u64, SysError> {
        let path = "/proc/stat";
        let text = std::fs::read_to_string(path).map_err(|e| os_err("read", path, e))?;
        parse_proc_stat_busy_nanos(&text, clock_ticks_per_second()).ok_or_else(|| SysError::Parse {
            path: path.into(),
            message: "no cpu line".into(),
        })
    }

    fn filesystem(&self, path: &Path) -> Result<FilesystemInfo, SysError> {
        let s = nix::sys::statvfs::statvfs(path)
            .map_err(|e| os_err("statvfs", path.display(), errno(e)))?;
        let frag = s.fragment_size() as u64;
        Ok(FilesystemInfo {
            capacity_bytes: s.blocks() as u64 * frag,
            available_bytes: s.blocks_available() as u64 * frag,
            inodes_total: s.files() as u64,
            inodes_free: s.files_free() as u64,
        })
    }

    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> Result<(), SysError> {
        use nix::mount::{mount, MsFlags};
        let data = size_bytes.map(|s| format!("size={s}"));
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data.as_deref(),
        )
        .map_err(|e| os_err("mount tmpfs", target.display(), errno(e)))
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| os_err("umount", target.display(), errno(e)))
    }

    fn is_mount_point(&self, path: &Path) -> Result<bool, SysError> {
        let mounts = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(mounts).map_err(|e| os_err("read", mounts, e))?;
        let wanted = path.to_string_lossy();
        Ok(text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|mount_point| mount_point == wanted))
    }

    fn connect_in_netns(
        &self,
        netns_path: &Path,
        address: SocketAddr,
    ) -> Result<std::net::TcpStream, SysError> {
        use nix::sched::{setns, CloneFlags};
        let target = std::fs::File::open(netns_path)
            .map_err(|e| os_err("open netns", netns_path.display(), e))?;
        let netns_display = netns_path.display().to_string();
        // setns changes the calling thread only: do it on a short-lived thread so no other
        // task ever runs inside the pod's namespace; the socket keeps its namespace after.
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&target, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| os_err("setns", &netns_display, errno(e)))?;
                    std::net::TcpStream::connect_timeout(
                        &address,
                        std::time::Duration::from_secs(10),
                    )
                    .map_err(|e| os_err("connect", address, e))
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(os_err(
                        "connect",
                        address,
                        std::io::Error::other("netns thread panicked"),
                    ))
                })
        })
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), SysError> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| os_err("write", path.display(), e))
    }

    fn route_source_ip(&self, destination: IpAddr) -> Result<IpAddr, SysError> {
        let bind: SocketAddr = match destination {
            IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // connect() on a UDP socket only asks the routing table; nothing is sent.
        let socket = std::net::UdpSocket::bind(bind).map_err(|e| os_err("bind udp", bind, e))?;
        socket
            .connect((destination, 9))
            .map_err(|e| os_err("route lookup", destination, e))?;
        let local = socket
            .local_addr()
            .map_err(|e| os_err("getsockname", destination, e))?;
        Ok(local.ip())
    }

    fn interface_mtu(&self, address: IpAddr) -> Result<Option<u32>, SysError> {
        let addrs = nix::ifaddrs::getifaddrs().map_err(|e| os_err("getifaddrs", "", errno(e)))?;
        for ifaddr in addrs {
            let Some(storage) = ifaddr.address else {
                continue;
            };
            let ip = if let Some(v4) = storage.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = storage.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if ip != address {
                continue;
            }
            let path = PathBuf::from("/sys/class/net")
                .join(&ifaddr.interface_name)
                .join("mtu");
            let text =
                std::fs::read_to_string(&path).map_err(|e| os_err("read", path.display(), e))?;
            return text.trim().parse().map(Some).map_err(|_| SysError::Parse {
                path: path.display().to_string(),
                message: format!("mtu {:?} is not a number", text.trim()),
            });
        }
        Ok(None)
    }

    fn os_identity(&self) -> Result<OsIdentity, SysError> {
        let read = |path: &str| -> Result<String, SysError> {
            match std::fs::read_to_string(path) {
                Ok(text) => Ok(text.trim().to_string()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                    ) =>
                {
                    Ok(String::new())
                }
                Err(e) => Err(os_err("read", path, e)),
            }
        };
        Ok(OsIdentity {
            pretty_name: parse_os_release_pretty_name(&read("/etc/os-release")?)
                .unwrap_or_else(|| "Linux".to_string()),
            machine_id: read("/etc/machine-id")?,
            system_uuid: read("/sys/class/dmi/id/product_uuid")?,
            boot_id: read("/proc/sys/kernel/random/boot_id")?,
        })
    }
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn parse_os_release_pretty_name(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("PRETTY_NAME=")?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.to_string())
    })
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as u64)
        .unwrap_or(100)
}

/// `MemTotal` and `MemAvailable` (kB in the file) as bytes.
pub fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(key), Some(value)) = (parts.next(), parts.next()) {
            if let Ok(v) = value.parse::<u64>() {
                fields.insert(key.trim_end_matches(':').to_string(), v * 1024);
            }
        }
    }
    Some(MemoryInfo {
        total_bytes: *fields.get("MemTotal")?,
        available_bytes: fields
            .get("MemAvailable")
            .or_else(|| fields.get("MemFree"))
            .copied()
            .unwrap_or(0),
    })
}

/// Busy CPU time (user+nice+system+irq+softirq+steal) of the `cpu` line, in nanoseconds.
pub fn parse_proc_stat_busy_nanos(text: &str, ticks_per_second: u64) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some(busy * (1_000_000_000 / ticks_per_second.max(1)))
}

/// One recorded call of `FakeHost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    MountTmpfs(PathBuf, Option<u64>),
    Unmount(PathBuf),
    Sysctl(String, String),
    ConnectInNetns(PathBuf, SocketAddr),
}

/// A host for unit tests: fixed facts, records mounts and sysctls, connects to `address` on
/// the test's own loopback instead of entering a namespace.
#[derive(Debug)]
pub struct FakeHost {
    pub hostname: String,
    pub memory: MemoryInfo,
    pub cpus: usize,
    pub cpu_usage_nanos: Mutex<u64>,
    /// What `route_source_ip` answers for every destination.
    pub node_ip: IpAddr,
    /// MTU of the interface holding `node_ip`.
    pub mtu: u32,
    pub os: OsIdentity,
    pub calls: Mutex<Vec<FakeCall>>,
    mounted: Mutex<Vec<PathBuf>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            hostname: "fake-node".into(),
            memory: MemoryInfo {
                total_bytes: 8 << 30,
                available_bytes: 6 << 30,
            },
            cpus: 4,
            cpu_usage_nanos: Mutex::new(0),
            node_ip: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)),
            mtu: 1450,
            os: OsIdentity {
                pretty_name: "Fake Linux 1".into(),
                machine_id: "fake-machine-id".into(),
                system_uuid: "fake-system-uuid".into(),
                boot_id: "fake-boot-id".into(),
            },
            calls: Mutex::new(Vec::new()),
            mounted: Mutex::new(Vec::new()),
        }
    }
}

impl FakeHost {
    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls.lock().expect("fake host lock").clone()
    }

    fn record(&self, call: FakeCall) {
        self.calls.lock().expect("fake host lock").push(call);
    }
}

impl Host for FakeHost {
    fn hostname(&self) -> Result<String, SysError> {
        Ok(self.hostname.clone())
    }

    fn kernel(&self) -> Result<KernelInfo, SysError> {
        Ok(KernelInfo {
            sysname: "Linux".into(),
            release: "6.1.0-fake".into(),
            machine: "x86_64".into(),
        })
    }

    fn memory(&self) -> Result<MemoryInfo, SysError> {
        Ok(self.memory)
    }

    fn cpu_count(&self) -> usize {
        self.cpus
    }

    fn cpu_usage_nanos(&self) -> Result<u64, SysError> {
        Ok(*self.cpu_usage_nanos.lock().expect("fake host lock"))
    }

    fn filesystem(&self, _path: &Path) -> Result<FilesystemInfo, SysError> {
        Ok(FilesystemInfo {
            capacity_bytes: 100 << 30,
            available_bytes: 50 << 30,
            inodes_total: 1 << 20,
            inodes_free: 1 << 19,
        })
    }

    fn mount_tmpfs(&self, target: &Path, size_bytes: Option<u64>) -> Result<(), SysError> {
        self.record(FakeCall::MountTmpfs(target.to_path_buf(), size_bytes));
        self.mounted
            .lock()
            .expect("fake host lock")
            .push(target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), SysError> {
        self.record(FakeCall::Unmount(target.to_path_buf()));
        self.mounted
            .lock()
            .expect("fake host lock")
            .retain(|p| p != target);
        Ok(())
    }

    fn is_mount_point(&self, path: &Path) -> Result<bool, SysError> {
        Ok(self
            .mounted
            .lock()
            .expect("fake host lock")
            .iter()
            .any(|p| p == path))
    }

    fn connect_in_netns(
        &self,
        netns_path: &Path,
        address: SocketAddr,
    ) -> Result<std::net::TcpStream, SysError> {
        self.record(FakeCall::ConnectInNetns(netns_path.to_path_buf(), address));
        std::net::TcpStream::connect(address).map_err(|e| os_err("connect", address, e))
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), SysError> {
        self.record(FakeCall::Sysctl(key.into(), value.into()));
        Ok(())
    }

    fn route_source_ip(&self, _destination: IpAddr) -> Result<IpAddr, SysError> {
        Ok(self.node_ip)
    }

    fn interface_mtu(&self, address: IpAddr) -> Result<Option<u32>, SysError> {
        Ok((address == self.node_ip).then_some(self.mtu))
    }

    fn os_identity(&self) -> Result<OsIdentity, SysError> {
        Ok(self.os.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_meminfo_with_available_returns_bytes() {
        let m =
            parse_meminfo("MemTotal:       2048 kB\nMemFree: 100 kB\nMemAvailable:   1024 kB\n")
                .expect("parsed");
        assert_eq!(m.total_bytes, 2048 * 1024);
        assert_eq!(m.available_bytes, 1024 * 1024);
    }

    #[test]
    fn parse_proc_stat_cpu_line_sums_busy_fields() {
        let text = "cpu  100 0 50 1000 20 5 5 0 0 0\ncpu0 1 2 3\n";
        // (100+0+50+5+5+0) ticks at 100/s = 1.6 s
        assert_eq!(parse_proc_stat_busy_nanos(text, 100), Some(1_600_000_000));
    }

    #[test]
    fn fake_host_tmpfs_mount_then_unmount_tracks_mount_point() {
        let host = FakeHost::default();
        let p = Path::new("/pods/x/volumes/cache");
        host.mount_tmpfs(p, Some(1024)).expect("mount");
        assert!(host.is_mount_point(p).expect("check"));
        host.unmount(p).expect("unmount");
        assert!(!host.is_mount_point(p).expect("check"));
        assert_eq!(host.calls().len(), 2);
    }

    #[test]
    fn parse_os_release_quoted_pretty_name_is_unquoted() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_os_release_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn linux_host_loopback_route_source_and_mtu_are_found() {
        let host = LinuxHost;
        let lo = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(host.route_source_ip(lo).expect("route"), lo);
        assert!(host.interface_mtu(lo).expect("mtu").is_some_and(|m| m > 0));
        assert!(!host.os_identity().expect("os").pretty_name.is_empty());
    }

    #[test]
    fn linux_host_reads_real_memory_and_kernel() {
        let host = LinuxHost;
        assert!(host.memory().expect("meminfo").total_bytes > 0);
        assert_eq!(host.kernel().expect("uname").sysname, "Linux");
        assert!(host.cpu_usage_nanos().expect("stat") > 0);
    }
}
