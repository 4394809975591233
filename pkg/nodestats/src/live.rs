//! Live readings (`GET /stats/live` on the node API): the node's and some pods' cumulative CPU
//! nanoseconds and working-set memory, read now from /proc and the cgroups with the sampler's
//! readers, for callers that need more than one point per 10 s round (the load test controller
//! samples every second). A reading touches none of the sampler's rounds or counters, so the
//! Summary API's rates and the shipped series stay as they were.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::hostfs::HostFs;
use crate::pods::ContainerRef;
use crate::{procfs, NodeStatsError};

/// The node API path of a live reading; `?pod=<namespace>/<name>` (repeatable) asks for pods.
pub const LIVE_PATH: &str = "/stats/live";

/// A pod asked for by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Option<PodKey> {
        let (namespace, name) = s.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(PodKey {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

/// Cumulative CPU and current working set of the node or of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveUsage {
    /// CPU time used so far, in nanoseconds (node: all CPUs, not idle nor iowait).
    pub usage_core_nano_seconds: u64,
    /// Working set in bytes (node: MemTotal − MemAvailable, as the Summary API reports it).
    pub working_set_bytes: u64,
}

/// One requested pod's reading: the sum of its running containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LivePod {
    pub namespace: String,
    pub name: String,
    /// How many containers were read (a restart resets the pod's cumulative CPU).
    pub containers: u32,
    #[serde(flatten)]
    pub usage: LiveUsage,
}

/// The body of `GET /stats/live`. Requested pods with no running container on this node (or
/// whose cgroups cannot be read now) are not in `pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveReading {
    pub node_name: String,
    /// When it was read (unix milliseconds, the node's clock).
    pub time_ms: i64,
    pub node: LiveUsage,
    #[serde(default)]
    pub pods: Vec<LivePod>,
}

/// Reads the node and the `pods` among `containers` now.
pub fn read(
    fs: &dyn HostFs,
    cgroups: Option<&dyn Cgroups>,
    node_name: &str,
    now_ms: i64,
    containers: &[ContainerRef],
    pods: &[PodKey],
) -> Result<LiveReading, NodeStatsError> {
    let read_file = |path: &str| {
        fs.read(Path::new(path))
            .map_err(|source| NodeStatsError::Read {
                path: path.into(),
                source,
            })
    };
    let stat = procfs::parse_stat(&read_file("/proc/stat")?, fs.clock_ticks());
    let mem = procfs::parse_meminfo(&read_file("/proc/meminfo")?);
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    let node = LiveUsage {
        usage_core_nano_seconds: stat.busy_nanos,
        working_set_bytes: total.saturating_sub(available),
    };
    let mut found: BTreeMap<&PodKey, LivePod> = BTreeMap::new();
    if let Some(cgroups) = cgroups {
        for key in pods {
            for c in containers
                .iter()
                .filter(|c| c.namespace == key.namespace && c.pod == key.name)
            {
                let Some(pid) = c.pid else { continue };
                let usage = match cgroups.usage_of_pid(fs, pid) {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::debug!(container = c.id, error = %e, "no live container reading");
                        continue;
                    }
                };
                let pod = found.entry(key).or_insert_with(|| LivePod {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    containers: 0,
                    usage: LiveUsage::default(),
                });
                pod.containers += 1;
                pod.usage.usage_core_nano_seconds += usage.cpu_usage_nanos;
                pod.usage.working_set_bytes += usage.working_set_bytes;
            }
        }
    }
    Ok(LiveReading {
        node_name: node_name.into(),
        time_ms: now_ms,
        node,
        pods: found.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgroupV1, CgroupV2};
    use crate::hostfs::FakeFs;

    fn node_files(fs: &FakeFs, busy_ticks: u64) {
        fs.set(
            "/proc/stat",
            format!(
                "cpu  {busy_ticks} 0 0 500 7 0 0 0 0 0\ncpu0 {busy_ticks} 0 0 500 7 0 0 0 0 0\n"
            ),
        );
        fs.set("/proc/meminfo", "MemTotal: 1000 kB\nMemAvailable: 400 kB\n");
    }

    fn container(id: &str, pod: &str, pid: Option<u32>) -> ContainerRef {
        ContainerRef {
            id: id.into(),
            namespace: "shop".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: id.into(),
            attempt: 0,
            pid,
        }
    }

    fn key(s: &str) -> PodKey {
        PodKey::parse(s).expect("pod key")
    }

    #[test]
    fn pod_key_parse_needs_namespace_and_name() {
        assert_eq!(
            PodKey::parse("shop/web-1"),
            Some(PodKey {
                namespace: "shop".into(),
                name: "web-1".into()
            })
        );
        for bad in ["web", "/web", "shop/", "a/b/c", ""] {
            assert_eq!(PodKey::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn read_v1_sums_the_requested_pods_containers_and_skips_others() {
        let fs = FakeFs::new();
        node_files(&fs, 300);
        for (pid, id, cpu, mem) in [
            (7, "c1", 2_000, 500),
            (8, "c2", 3_000, 700),
            (9, "c3", 9, 9),
        ] {
            fs.set(
                format!("/proc/{pid}/cgroup"),
                format!("3:memory:/k8s.io/{id}\n2:cpu,cpuacct:/k8s.io/{id}\n"),
            );
            fs.set(
                format!("/sys/fs/cgroup/cpuacct/k8s.io/{id}/cpuacct.usage"),
                format!("{cpu}\n"),
            );
            fs.set(
                format!("/sys/fs/cgroup/memory/k8s.io/{id}/memory.usage_in_bytes"),
                format!("{mem}\n"),
            );
            fs.set(
                format!("/sys/fs/cgroup/memory/k8s.io/{id}/memory.stat"),
                "total_inactive_file 100\n",
            );
        }
        let cgroups = CgroupV1 {
            cpuacct_mount: "/sys/fs/cgroup/cpuacct".into(),
            memory_mount: "/sys/fs/cgroup/memory".into(),
        };
        let containers = [
            container("c1", "web", Some(7)),
            container("c2", "web", Some(8)),
            container("c3", "other", Some(9)),
            container("c4", "web", None),
        ];
        let r = read(
            &fs,
            Some(&cgroups),
            "n1",
            42,
            &containers,
            &[key("shop/web"), key("shop/gone")],
        )
        .expect("reading");
        assert_eq!((r.node_name.as_str(), r.time_ms), ("n1", 42));
        assert_eq!(
            r.node,
            LiveUsage {
                usage_core_nano_seconds: 3_000_000_000,
                working_set_bytes: 600 * 1024,
            }
        );
        assert_eq!(
            r.pods,
            vec![LivePod {
                namespace: "shop".into(),
                name: "web".into(),
                containers: 2,
                usage: LiveUsage {
                    usage_core_nano_seconds: 5_000,
                    working_set_bytes: 400 + 600,
                },
            }]
        );
    }

    #[test]
    fn read_v2_reads_cpu_stat_and_memory_current_now() {
        let fs = FakeFs::new();
        node_files(&fs, 100);
        fs.set("/proc/5/cgroup", "0::/kubepods/pod1/c1\n");
        let dir = "/sys/fs/cgroup/kubepods/pod1/c1";
        fs.set(format!("{dir}/cpu.stat"), "usage_usec 1500\n");
        fs.set(format!("{dir}/memory.current"), "8000\n");
        fs.set(format!("{dir}/memory.stat"), "inactive_file 3000\n");
        let cgroups = CgroupV2 {
            mount: "/sys/fs/cgroup".into(),
        };
        let containers = [container("c1", "web", Some(5))];
        let pods = [key("shop/web")];
        let first = read(&fs, Some(&cgroups), "n1", 1_000, &containers, &pods).expect("reading");
        assert_eq!(first.pods[0].usage.usage_core_nano_seconds, 1_500_000);
        assert_eq!(first.pods[0].usage.working_set_bytes, 5_000);
        fs.set(format!("{dir}/cpu.stat"), "usage_usec 2500\n");
        node_files(&fs, 150);
        let second = read(&fs, Some(&cgroups), "n1", 2_000, &containers, &pods).expect("reading");
        assert_eq!(second.pods[0].usage.usage_core_nano_seconds, 2_500_000);
        assert_eq!(second.node.usage_core_nano_seconds, 1_500_000_000);
    }

    #[test]
    fn read_without_proc_stat_is_an_error() {
        let fs = FakeFs::new();
        assert!(read(&fs, None, "n1", 0, &[], &[]).is_err());
    }

    #[test]
    fn live_reading_json_round_trips_with_camel_case_fields() {
        let r = LiveReading {
            node_name: "n1".into(),
            time_ms: 5,
            node: LiveUsage {
                usage_core_nano_seconds: 1,
                working_set_bytes: 2,
            },
            pods: vec![LivePod {
                namespace: "a".into(),
                name: "b".into(),
                containers: 1,
                usage: LiveUsage {
                    usage_core_nano_seconds: 3,
                    working_set_bytes: 4,
                },
            }],
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["pods"][0]["usageCoreNanoSeconds"], 3);
        assert_eq!(v["node"]["workingSetBytes"], 2);
        assert_eq!(serde_json::from_value::<LiveReading>(v).expect("back"), r);
    }
}
