//! Pod and container points, named and labelled as cAdvisor (and kube-state-metrics for
//! restarts) does: one row per running container plus one pod row with `container=""` (the sum
//! of its containers, like cAdvisor's pod cgroup row), network per pod from a container
//! process's `/proc/<pid>/net/dev`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cgroup::{CgroupUsage, Cgroups};
use crate::hostfs::HostFs;
use crate::procfs;
use crate::{labels, Point};

/// A container the runtime knows (any state), with what identifies its pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRef {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// The kubelet's restart count of this container name (CRI metadata attempt).
    pub attempt: u32,
    /// A process of the container while it runs.
    pub pid: Option<u32>,
}

/// One running container's usage, for the Summary API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub usage: CgroupUsage,
}

fn usage_points(namespace: &str, pod: &str, container: &str, u: &CgroupUsage) -> Vec<Point> {
    let series = |name: &str, v: f64| {
        (
            labels(&[
                ("__name__", name),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
            ]),
            v,
        )
    };
    let mut points = vec![
        series(
            "container_cpu_usage_seconds_total",
            u.cpu_usage_nanos as f64 / 1e9,
        ),
        series(
            "container_memory_working_set_bytes",
            u.working_set_bytes as f64,
        ),
        series("container_memory_rss", u.rss_bytes as f64),
        series("container_memory_usage_bytes", u.memory_usage_bytes as f64),
    ];
    if let Some(limit) = u.memory_limit_bytes {
        points.push(series("container_spec_memory_limit_bytes", limit as f64));
    }
    points
}

/// The pod and container points of `containers`; containers whose cgroup cannot be read
/// (exited between listing and reading) are left out of this round.
pub fn pod_points(
    fs: &dyn HostFs,
    cgroups: Option<&dyn Cgroups>,
    containers: &[ContainerRef],
) -> (Vec<Point>, Vec<ContainerSample>) {
    let mut points = Vec::new();
    let mut samples = Vec::new();
    // restarts: the newest attempt of each container name, running or not
    let mut restarts: BTreeMap<(&str, &str, &str), u32> = BTreeMap::new();
    for c in containers {
        let r = restarts
            .entry((&c.namespace, &c.pod, &c.container))
            .or_default();
        *r = (*r).max(c.attempt);
    }
    for ((namespace, pod, container), attempt) in &restarts {
        points.push((
            labels(&[
                ("__name__", "kube_pod_container_status_restarts_total"),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
            ]),
            f64::from(*attempt),
        ));
    }

    struct PodAcc {
        usage: CgroupUsage,
        all_limited: bool,
        pid: u32,
    }
    let mut pods: BTreeMap<(&str, &str), PodAcc> = BTreeMap::new();
    for c in containers {
        let (Some(pid), Some(cgroups)) = (c.pid, cgroups) else {
            continue;
        };
        let usage = match cgroups.usage_of_pid(fs, pid) {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(container = c.id, error = %e, "no container sample");
                continue;
            }
        };
        points.extend(usage_points(&c.namespace, &c.pod, &c.container, &usage));
        let pod = pods.entry((&c.namespace, &c.pod)).or_insert(PodAcc {
            usage: CgroupUsage {
                memory_limit_bytes: Some(0),
                ..Default::default()
            },
            all_limited: true,
            pid,
        });
        let p = &mut pod.usage;
        p.cpu_usage_nanos += usage.cpu_usage_nanos;
        p.memory_usage_bytes += usage.memory_usage_bytes;
        p.working_set_bytes += usage.working_set_bytes;
        p.rss_bytes += usage.rss_bytes;
        match usage.memory_limit_bytes {
            Some(l) => p.memory_limit_bytes = p.memory_limit_bytes.map(|s| s + l),
            None => pod.all_limited = false,
        }
        samples.push(ContainerSample {
            id: c.id.clone(),
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            pod_uid: c.pod_uid.clone(),
            container: c.container.clone(),
            usage,
        });
    }
    for ((namespace, pod), mut acc) in pods {
        if !acc.all_limited {
            acc.usage.memory_limit_bytes = None;
        }
        points.extend(usage_points(namespace, pod, "", &acc.usage));
        let path = PathBuf::from(format!("/proc/{}/net/dev", acc.pid));
        match fs.read(&path) {
            Ok(text) => {
                for dev in procfs::parse_net_dev(&text) {
                    if dev.interface == "lo" {
                        continue;
                    }
                    for (name, v) in [
                        ("container_network_receive_bytes_total", dev.receive_bytes),
                        ("container_network_transmit_bytes_total", dev.transmit_bytes),
                    ] {
                        points.push((
                            labels(&[
                                ("__name__", name),
                                ("namespace", namespace),
                                ("pod", pod),
                                ("container", ""),
                                ("interface", &dev.interface),
                            ]),
                            v as f64,
                        ));
                    }
                }
            }
            Err(e) => tracing::debug!(namespace, pod, error = %e, "no pod network sample"),
        }
    }
    (points, samples)
}
