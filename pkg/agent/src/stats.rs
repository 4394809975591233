//! The kubelet Summary API subset (`/stats/summary`) the server's metrics come from: node CPU
//! and memory from the Host, pods and containers from CRI `ListContainerStats`. CPU rates
//! (`usageNanoCores`) come from two samples; a sampler takes one every 10 s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mini_cri::proto::ContainerStats;
use mini_cri::Runtime;
use mini_sys::Host;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How often the sampler runs.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// A cumulative CPU reading: (time in ns since the epoch, CPU ns used).
type CpuReading = (i64, u64);

#[derive(Default)]
struct State {
    node_cpu: Option<CpuReading>,
    containers: HashMap<String, CpuReading>,
    summary: Option<Value>,
}

/// Takes samples and keeps the latest summary.
pub struct StatsSampler {
    runtime: Arc<dyn Runtime>,
    host: Arc<dyn Host>,
    node_name: String,
    state: Mutex<State>,
}

fn rate(previous: Option<CpuReading>, now: CpuReading) -> Option<u64> {
    let (t0, c0) = previous?;
    let (t1, c1) = now;
    let dt = t1.checked_sub(t0).filter(|d| *d > 0)? as u128;
    let dc = c1.checked_sub(c0)? as u128;
    Some((dc * 1_000_000_000 / dt) as u64)
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl StatsSampler {
    pub fn new(runtime: Arc<dyn Runtime>, host: Arc<dyn Host>, node_name: String) -> Arc<Self> {
        Arc::new(StatsSampler {
            runtime,
            host,
            node_name,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples every [`SAMPLE_INTERVAL`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.sample().await {
                tracing::debug!(error = %e, "stats sample failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
            }
        }
    }

    /// The latest summary (sampling now if there is none yet).
    pub async fn summary(&self) -> Result<Value, String> {
        if let Some(s) = self.lock().summary.clone() {
            return Ok(s);
        }
        self.sample().await
    }

    /// Takes one sample and returns the summary built from it.
    pub async fn sample(&self) -> Result<Value, String> {
        let stats = self
            .runtime
            .list_container_stats(None)
            .await
            .map_err(|e| e.to_string())?;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let node_cpu = self.host.cpu_usage_nanos().map_err(|e| e.to_string())?;
        let memory = self.host.memory().map_err(|e| e.to_string())?;
        let mut state = self.lock();
        let node_rate = rate(state.node_cpu, (now, node_cpu));
        state.node_cpu = Some((now, node_cpu));
        let mut readings = HashMap::new();
        let summary = build_summary(
            &self.node_name,
            now,
            node_cpu,
            node_rate,
            memory,
            &stats,
            |id, reading| {
                readings.insert(id.to_string(), reading);
                rate(state.containers.get(id).copied(), reading)
            },
        );
        state.containers = readings;
        state.summary = Some(summary.clone());
        Ok(summary)
    }
}

fn cpu_json(time: i64, cumulative: u64, nano_cores: Option<u64>) -> Value {
    let mut cpu = json!({"time": rfc3339(time), "usageCoreNanoSeconds": cumulative});
    if let Some(n) = nano_cores {
        cpu["usageNanoCores"] = json!(n);
    }
    cpu
}

/// The Summary document; `container_rate` records a container's reading and returns its rate.
fn build_summary(
    node_name: &str,
    now: i64,
    node_cpu: u64,
    node_rate: Option<u64>,
    memory: mini_sys::MemoryInfo,
    stats: &[ContainerStats],
    mut container_rate: impl FnMut(&str, CpuReading) -> Option<u64>,
) -> Value {
    struct PodAcc {
        name: String,
        namespace: String,
        uid: String,
        cpu: u64,
        rate: Option<u64>,
        memory: u64,
        containers: Vec<Value>,
    }
    let mut pods: BTreeMap<(String, String), PodAcc> = BTreeMap::new();
    for s in stats {
        let Some(attrs) = &s.attributes else { continue };
        let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
        let (name, namespace) = (label(LABEL_POD_NAME), label(LABEL_POD_NAMESPACE));
        if name.is_empty() {
            continue;
        }
        let container = attrs
            .labels
            .get(LABEL_CONTAINER_NAME)
            .cloned()
            .or_else(|| attrs.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        let cpu_time = s
            .cpu
            .as_ref()
            .map(|c| c.timestamp)
            .filter(|t| *t > 0)
            .unwrap_or(now);
        let cumulative = s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        let cri_rate = s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores.as_ref())
            .map(|v| v.value);
        let rate = container_rate(&attrs.id, (cpu_time, cumulative)).or(cri_rate);
        let working_set = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        let pod = pods
            .entry((namespace.clone(), name.clone()))
            .or_insert_with(|| PodAcc {
                name,
                namespace,
                uid: label(LABEL_POD_UID),
                cpu: 0,
                rate: None,
                memory: 0,
                containers: Vec::new(),
            });
        pod.cpu += cumulative;
        pod.rate = match (pod.rate, rate) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        pod.memory += working_set;
        pod.containers.push(json!({
            "name": container,
            "cpu": cpu_json(cpu_time, cumulative, rate),
            "memory": {"time": rfc3339(now), "workingSetBytes": working_set},
        }));
    }
    let used = memory.total_bytes.saturating_sub(memory.available_bytes);
    json!({
        "node": {
            "nodeName": node_name,
            "cpu": cpu_json(now, node_cpu, node_rate),
            "memory": {"time": rfc3339(now), "workingSetBytes": used, "availableBytes": memory.available_bytes},
        },
        "pods": pods.into_values().map(|p| json!({
            "podRef": {"name": p.name, "namespace": p.namespace, "uid": p.uid},
            "cpu": cpu_json(now, p.cpu, p.rate),
            "memory": {"time": rfc3339(now), "workingSetBytes": p.memory},
            "containers": p.containers,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_cri::proto::{
        ContainerAttributes, ContainerMetadata, CpuUsage, MemoryUsage, UInt64Value,
    };

    fn stat(id: &str, pod: &str, container: &str, cpu: u64, mem: u64) -> ContainerStats {
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: id.into(),
                metadata: Some(ContainerMetadata {
                    name: container.into(),
                    attempt: 0,
                }),
                labels: [
                    (LABEL_POD_NAME.to_string(), pod.to_string()),
                    (LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
                    (LABEL_POD_UID.to_string(), format!("uid-{pod}")),
                    (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
                ]
                .into(),
                annotations: Default::default(),
            }),
            cpu: Some(CpuUsage {
                timestamp: 0,
                usage_core_nano_seconds: Some(UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: Some(MemoryUsage {
                working_set_bytes: Some(UInt64Value { value: mem }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn build_summary_groups_containers_by_pod_and_computes_rates() {
        let stats = [
            stat("c1", "web", "app", 2_000_000_000, 100),
            stat("c2", "web", "sidecar", 1_000_000_000, 50),
            stat("c3", "db", "db", 0, 10),
        ];
        let previous: HashMap<&str, CpuReading> =
            HashMap::from([("c1", (0, 1_000_000_000)), ("c2", (0, 500_000_000))]);
        let now = 10_000_000_000; // 10 s after the previous readings
        let mem = mini_sys::MemoryInfo {
            total_bytes: 1000,
            available_bytes: 400,
        };
        let summary = build_summary("n1", now, 7, Some(5), mem, &stats, |id, (_, c)| {
            rate(previous.get(id).copied(), (now, c))
        });
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 5);
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
}
