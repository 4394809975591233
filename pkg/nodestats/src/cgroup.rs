//! Container CPU and memory from cgroups, v1 and v2 behind one trait. A container's cgroup is
//! found from one of its processes (`/proc/<pid>/cgroup`), so it works whatever cgroup parent
//! or driver the runtime uses. Numbers are computed as cAdvisor does: working set = usage −
//! inactive_file (never below 0), rss = `total_rss` (v1) or `anon` (v2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hostfs::HostFs;
use crate::procfs::{parse_pid_cgroup, CgroupLine, Mount};
use crate::NodeStatsError;

/// v1 reports "no limit" as a huge page-aligned number; anything at or above this is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// What a cgroup used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupUsage {
    pub cpu_usage_nanos: u64,
    pub memory_usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    /// `None` when no limit is set.
    pub memory_limit_bytes: Option<u64>,
}

/// Reads a process's cgroup usage; one implementation per cgroup version.
pub trait Cgroups: Send + Sync + std::fmt::Debug + 'static {
    /// 1 or 2.
    fn version(&self) -> u8;
    /// The usage of the cgroup(s) process `pid` is in.
    fn usage_of_pid(&self, fs: &dyn HostFs, pid: u32) -> Result<CgroupUsage, NodeStatsError>;
}

fn read(fs: &dyn HostFs, path: &Path) -> Result<String, NodeStatsError> {
    fs.read(path).map_err(|source| NodeStatsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn number(fs: &dyn HostFs, path: &Path) -> Result<u64, NodeStatsError> {
    let text = read(fs, path)?;
    text.trim().parse().map_err(|_| NodeStatsError::Parse {
        path: path.to_path_buf(),
        message: format!("{:?} is not a number", text.trim()),
    })
}

/// `key value` lines (memory.stat, cpu.stat).
fn key_values(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

fn pid_cgroups(fs: &dyn HostFs, pid: u32) -> Result<Vec<CgroupLine>, NodeStatsError> {
    Ok(parse_pid_cgroup(&read(
        fs,
        &PathBuf::from(format!("/proc/{pid}/cgroup")),
    )?))
}

fn join(mountpoint: &Path, cgroup_path: &str) -> PathBuf {
    mountpoint.join(cgroup_path.trim_start_matches('/'))
}

/// cgroup v1: one hierarchy per controller (`cpuacct` and `memory` may be mounted alone or
/// together with others, e.g. `cpu,cpuacct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupV1 {
    pub cpuacct_mount: PathBuf,
    pub memory_mount: PathBuf,
}

impl Cgroups for CgroupV1 {
    fn version(&self) -> u8 {
        1
    }

    fn usage_of_pid(&self, fs: &dyn HostFs, pid: u32) -> Result<CgroupUsage, NodeStatsError> {
        let lines = pid_cgroups(fs, pid)?;
        let path_of = |controller: &str| {
            lines
                .iter()
                .find(|l| l.controllers.iter().any(|c| c == controller))
                .map(|l| l.path.clone())
                .ok_or_else(|| NodeStatsError::Parse {
                    path: PathBuf::from(format!("/proc/{pid}/cgroup")),
                    message: format!("no {controller} cgroup"),
                })
        };
        let cpu_dir = join(&self.cpuacct_mount, &path_of("cpuacct")?);
        let mem_dir = join(&self.memory_mount, &path_of("memory")?);
        let cpu_usage_nanos = number(fs, &cpu_dir.join("cpuacct.usage"))?;
        let memory_usage_bytes = number(fs, &mem_dir.join("memory.usage_in_bytes"))?;
        let stat_text = read(fs, &mem_dir.join("memory.stat"))?;
        let stat = key_values(&stat_text);
        let inactive_file = stat.get("total_inactive_file").copied().unwrap_or(0);
        let limit = number(fs, &mem_dir.join("memory.limit_in_bytes")).ok();
        Ok(CgroupUsage {
            cpu_usage_nanos,
            memory_usage_bytes,
            working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            rss_bytes: stat.get("total_rss").copied().unwrap_or(0),
            memory_limit_bytes: limit.filter(|l| *l < V1_UNLIMITED),
        })
    }
}

/// cgroup v2: one unified hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupV2 {
    pub mount: PathBuf,
}

impl Cgroups for CgroupV2 {
    fn version(&self) -> u8 {
        2
    }

    fn usage_of_pid(&self, fs: &dyn HostFs, pid: u32) -> Result<CgroupUsage, NodeStatsError> {
        let lines = pid_cgroups(fs, pid)?;
        let path = lines
            .iter()
            .find(|l| l.controllers.is_empty())
            .map(|l| l.path.clone())
            .ok_or_else(|| NodeStatsError::Parse {
                path: PathBuf::from(format!("/proc/{pid}/cgroup")),
                message: "no unified (0::) cgroup".into(),
            })?;
        let dir = join(&self.mount, &path);
        let cpu_path = dir.join("cpu.stat");
        let cpu_text = read(fs, &cpu_path)?;
        let usage_usec = key_values(&cpu_text)
            .get("usage_usec")
            .copied()
            .ok_or_else(|| NodeStatsError::Parse {
                path: cpu_path.clone(),
                message: "no usage_usec".into(),
            })?;
        let memory_usage_bytes = number(fs, &dir.join("memory.current"))?;
        let stat_text = read(fs, &dir.join("memory.stat"))?;
        let stat = key_values(&stat_text);
        let inactive_file = stat.get("inactive_file").copied().unwrap_or(0);
        let limit = read(fs, &dir.join("memory.max"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        Ok(CgroupUsage {
            cpu_usage_nanos: usage_usec.saturating_mul(1000),
            memory_usage_bytes,
            working_set_bytes: memory_usage_bytes.saturating_sub(inactive_file),
            rss_bytes: stat.get("anon").copied().unwrap_or(0),
            memory_limit_bytes: limit,
        })
    }
}

/// Which cgroup version the host runs, from its mounts: v1 when a v1 `memory` hierarchy is
/// mounted (also on hybrid hosts, whose v2 tree has no controllers), else the v2 mount.
pub fn detect(mounts: &[Mount]) -> Result<Box<dyn Cgroups>, NodeStatsError> {
    let v1 = |controller: &str| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
            .map(|m| PathBuf::from(&m.mountpoint))
    };
    if let (Some(cpuacct_mount), Some(memory_mount)) = (v1("cpuacct"), v1("memory")) {
        return Ok(Box::new(CgroupV1 {
            cpuacct_mount,
            memory_mount,
        }));
    }
    if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2") {
        return Ok(Box::new(CgroupV2 {
            mount: PathBuf::from(&m.mountpoint),
        }));
    }
    Err(NodeStatsError::NoCgroups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::FakeFs;
    use crate::procfs::parse_mounts;

    const V1_MOUNTS: &str = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
        cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n\
        cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";

    #[test]
    fn detect_v1_and_hybrid_hosts_pick_v1() {
        let c = detect(&parse_mounts(V1_MOUNTS)).expect("cgroups");
        assert_eq!(c.version(), 1);
    }

    #[test]
    fn detect_v2_host_picks_the_unified_mount() {
        let c = detect(&parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")).expect("v2");
        assert_eq!(c.version(), 2);
        assert!(detect(&parse_mounts("/dev/sda1 / ext4 rw 0 0\n")).is_err());
    }

    #[test]
    fn v1_usage_working_set_is_usage_minus_total_inactive_file() {
        let fs = FakeFs::new();
        fs.set(
            "/proc/7/cgroup",
            "3:memory:/k8s.io/c1\n2:cpuacct:/k8s.io/c1\n1:cpu:/k8s.io/c1\n",
        );
        fs.set(
            "/sys/fs/cgroup/cpuacct/k8s.io/c1/cpuacct.usage",
            "2500000000\n",
        );
        fs.set(
            "/sys/fs/cgroup/memory/k8s.io/c1/memory.usage_in_bytes",
            "1000000\n",
        );
        fs.set(
            "/sys/fs/cgroup/memory/k8s.io/c1/memory.stat",
            "cache 5\nrss 6\ninactive_file 1\ntotal_rss 300000\ntotal_inactive_file 250000\n",
        );
        fs.set(
            "/sys/fs/cgroup/memory/k8s.io/c1/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let c = detect(&parse_mounts(V1_MOUNTS)).expect("cgroups");
        let u = c.usage_of_pid(&fs, 7).expect("usage");
        assert_eq!(
            u,
            CgroupUsage {
                cpu_usage_nanos: 2_500_000_000,
                memory_usage_bytes: 1_000_000,
                working_set_bytes: 750_000,
                rss_bytes: 300_000,
                memory_limit_bytes: None,
            }
        );
        fs.set(
            "/sys/fs/cgroup/memory/k8s.io/c1/memory.limit_in_bytes",
            "67108864\n",
        );
        fs.set(
            "/sys/fs/cgroup/memory/k8s.io/c1/memory.stat",
            "total_inactive_file 5000000\n",
        );
        let u = c.usage_of_pid(&fs, 7).expect("usage");
        assert_eq!(u.memory_limit_bytes, Some(64 << 20));
        assert_eq!(u.working_set_bytes, 0, "never below zero");
    }

    #[test]
    fn v2_usage_reads_cpu_stat_memory_current_and_max() {
        let fs = FakeFs::new();
        fs.set("/proc/9/cgroup", "0::/kubepods/pod1/c2\n");
        let dir = "/sys/fs/cgroup/kubepods/pod1/c2";
        fs.set(
            format!("{dir}/cpu.stat"),
            "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
        );
        fs.set(format!("{dir}/memory.current"), "4096000\n");
        fs.set(
            format!("{dir}/memory.stat"),
            "anon 2048000\nfile 2048000\ninactive_file 1024000\n",
        );
        fs.set(format!("{dir}/memory.max"), "max\n");
        let c = CgroupV2 {
            mount: "/sys/fs/cgroup".into(),
        };
        let u = c.usage_of_pid(&fs, 9).expect("usage");
        assert_eq!(u.cpu_usage_nanos, 1_500_000_000);
        assert_eq!(u.memory_usage_bytes, 4_096_000);
        assert_eq!(u.working_set_bytes, 3_072_000);
        assert_eq!(u.rss_bytes, 2_048_000);
        assert_eq!(u.memory_limit_bytes, None);
        fs.set(format!("{dir}/memory.max"), "134217728\n");
        assert_eq!(
            c.usage_of_pid(&fs, 9).expect("usage").memory_limit_bytes,
            Some(128 << 20)
        );
    }

    #[test]
    fn usage_of_pid_gone_process_is_an_error() {
        let fs = FakeFs::new();
        let c = CgroupV2 {
            mount: "/sys/fs/cgroup".into(),
        };
        assert!(c.usage_of_pid(&fs, 1234).is_err());
    }
}
