//! The kubelet Summary API document (`/stats/summary`, read by metrics.k8s.io and `kubectl
//! top`) built from the sampler's last two snapshots: cumulative CPU from the latest, rates
//! (`usageNanoCores`) from the difference to the one before.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::node::NodeTotals;
use crate::pods::ContainerSample;

/// What one sampling round saw, kept for the Summary API.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub time_ms: i64,
    pub node: NodeTotals,
    pub containers: Vec<ContainerSample>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// CPU rate in nanocores between two cumulative readings; `None` without a usable earlier one
/// (first sample, counter reset).
fn rate(previous: Option<(i64, u64)>, now: (i64, u64)) -> Option<u64> {
    let (t0, c0) = previous?;
    let (t1, c1) = now;
    let dt_ms = t1.checked_sub(t0).filter(|d| *d > 0)? as u128;
    let dc = c1.checked_sub(c0)? as u128;
    Some((dc * 1_000 / dt_ms) as u64)
}

fn cpu_json(time_ms: i64, cumulative: u64, nano_cores: Option<u64>) -> Value {
    let mut cpu = json!({"time": rfc3339(time_ms), "usageCoreNanoSeconds": cumulative});
    if let Some(n) = nano_cores {
        cpu["usageNanoCores"] = json!(n);
    }
    cpu
}

/// The Summary document of `current` (rates against `previous` when given).
pub fn build(node_name: &str, previous: Option<&Snapshot>, current: &Snapshot) -> Value {
    let now = current.time_ms;
    let before: HashMap<&str, (i64, u64)> = previous
        .map(|p| {
            p.containers
                .iter()
                .map(|c| (c.id.as_str(), (p.time_ms, c.usage.cpu_usage_nanos)))
                .collect()
        })
        .unwrap_or_default();
    struct PodAcc {
        uid: String,
        cpu: u64,
        rate: Option<u64>,
        memory: u64,
        containers: Vec<Value>,
    }
    let mut pods: BTreeMap<(&str, &str), PodAcc> = BTreeMap::new();
    for c in &current.containers {
        let cpu = c.usage.cpu_usage_nanos;
        let r = rate(before.get(c.id.as_str()).copied(), (now, cpu));
        let pod = pods
            .entry((c.namespace.as_str(), c.pod.as_str()))
            .or_insert_with(|| PodAcc {
                uid: c.pod_uid.clone(),
                cpu: 0,
                rate: Some(0),
                memory: 0,
                containers: Vec::new(),
            });
        pod.cpu += cpu;
        // a pod's rate needs every container's rate
        pod.rate = pod.rate.zip(r).map(|(a, b)| a + b);
        pod.memory += c.usage.working_set_bytes;
        pod.containers.push(json!({
            "name": c.container,
            "cpu": cpu_json(now, cpu, r),
            "memory": {
                "time": rfc3339(now),
                "workingSetBytes": c.usage.working_set_bytes,
                "usageBytes": c.usage.memory_usage_bytes,
                "rssBytes": c.usage.rss_bytes,
            },
        }));
    }
    let node = &current.node;
    let node_rate = rate(
        previous.map(|p| (p.time_ms, p.node.cpu_busy_nanos)),
        (now, node.cpu_busy_nanos),
    );
    let used = node
        .memory_total_bytes
        .saturating_sub(node.memory_available_bytes);
    json!({
        "node": {
            "nodeName": node_name,
            "cpu": cpu_json(now, node.cpu_busy_nanos, node_rate),
            "memory": {"time": rfc3339(now), "workingSetBytes": used, "availableBytes": node.memory_available_bytes},
        },
        "pods": pods.into_iter().map(|((namespace, name), p)| json!({
            "podRef": {"name": name, "namespace": namespace, "uid": p.uid},
            "cpu": cpu_json(now, p.cpu, p.rate),
            "memory": {"time": rfc3339(now), "workingSetBytes": p.memory},
            "containers": p.containers,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupUsage;

    fn sample(id: &str, pod: &str, container: &str, cpu: u64, mem: u64) -> ContainerSample {
        ContainerSample {
            id: id.into(),
            namespace: "default".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: container.into(),
            usage: CgroupUsage {
                cpu_usage_nanos: cpu,
                working_set_bytes: mem,
                ..Default::default()
            },
        }
    }

    #[test]
    fn build_groups_containers_by_pod_and_computes_rates() {
        let node = |cpu| NodeTotals {
            cpu_busy_nanos: cpu,
            memory_total_bytes: 1000,
            memory_available_bytes: 400,
        };
        let previous = Snapshot {
            time_ms: 0,
            node: node(0),
            containers: vec![
                sample("c1", "web", "app", 1_000_000_000, 90),
                sample("c2", "web", "sidecar", 500_000_000, 40),
            ],
        };
        let current = Snapshot {
            time_ms: 10_000, // 10 s later
            node: node(5_000_000_000),
            containers: vec![
                sample("c1", "web", "app", 2_000_000_000, 100),
                sample("c2", "web", "sidecar", 1_000_000_000, 50),
                sample("c3", "db", "db", 7, 10),
            ],
        };
        let summary = build("n1", Some(&previous), &current);
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(summary["node"]["memory"]["workingSetBytes"], 600);
        assert_eq!(summary["node"]["memory"]["availableBytes"], 400);
        let pods = summary["pods"].as_array().expect("pods");
        let web = pods
            .iter()
            .find(|p| p["podRef"]["name"] == "web")
            .expect("web");
        assert_eq!(web["podRef"]["uid"], "uid-web");
        assert_eq!(web["memory"]["workingSetBytes"], 150);
        // 1 s of CPU over 10 s = 0.1 core, plus 0.5 s over 10 s = 0.05 core
        assert_eq!(web["cpu"]["usageNanoCores"], 150_000_000);
        assert_eq!(web["cpu"]["usageCoreNanoSeconds"], 3_000_000_000_u64);
        assert_eq!(web["containers"].as_array().expect("containers").len(), 2);
        let db = pods
            .iter()
            .find(|p| p["podRef"]["name"] == "db")
            .expect("db");
        assert!(
            db["cpu"].get("usageNanoCores").is_none(),
            "no rate from one sample"
        );
    }

    #[test]
    fn build_first_snapshot_has_no_rates() {
        let current = Snapshot {
            time_ms: 1_700_000_000_000,
            node: NodeTotals::default(),
            containers: vec![],
        };
        let summary = build("n1", None, &current);
        assert!(summary["node"]["cpu"].get("usageNanoCores").is_none());
        assert_eq!(summary["node"]["cpu"]["time"], "2023-11-14T22:13:20Z");
    }
}
