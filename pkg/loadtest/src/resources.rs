//! The per-second CPU and memory of a run's target pods and their nodes: a task of its own per
//! run (so a slow controller pass skips no second) reads, at the run's start and every second
//! after it, every such node's live stats (`/stats/live` on the node API, through the API
//! server's node proxy) and turns consecutive cumulative CPU readings into millicores itself.
//! The reading at start + k s gives second k − 1 (the latency series' `[k − 1, k)`). A pod or
//! node read for the first time (or whose counter went back: a container restarted) has no CPU
//! rate yet and is left out of that second rather than given a wrong one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use mini_nodestats::{LiveReading, LIVE_PATH};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::results::{ResourceSample, Usage};
use crate::runs::Runs;

/// How long one node's reading may take before that node is left out of the second.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A cumulative CPU counter's last reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    time_ms: i64,
    nanos: u64,
    /// Containers summed into the counter: a change makes the difference meaningless.
    containers: u32,
}

/// Consecutive cumulative CPU readings per series (`node/<name>`, `pod/<ns>/<name>`).
#[derive(Debug, Default)]
pub struct CpuRates {
    last: HashMap<String, Last>,
}

impl CpuRates {
    /// The millicores used between the previous reading of `key` and this one; `None` for the
    /// first reading, a counter that went back, another set of containers, or no time between.
    pub fn update(&mut self, key: &str, time_ms: i64, nanos: u64, containers: u32) -> Option<f64> {
        let now = Last {
            time_ms,
            nanos,
            containers,
        };
        let before = self.last.insert(key.to_string(), now)?;
        if before.containers != containers {
            return None;
        }
        let dt_ms = time_ms.checked_sub(before.time_ms).filter(|d| *d > 0)?;
        let dn = nanos.checked_sub(before.nanos)?;
        // nanoseconds per millisecond / 1000 = millicores
        Some(dn as f64 / dt_ms as f64 / 1_000.0)
    }
}

/// The sample of `second` from this second's node readings: every node, and the pods among
/// them, that have a CPU rate.
pub fn sample(second: u32, readings: &[LiveReading], rates: &mut CpuRates) -> ResourceSample {
    let mut out = ResourceSample {
        second,
        ..Default::default()
    };
    for r in readings {
        let node = &r.node;
        if let Some(cpu) = rates.update(
            &format!("node/{}", r.node_name),
            r.time_ms,
            node.usage_core_nano_seconds,
            0,
        ) {
            out.nodes.push(Usage {
                name: r.node_name.clone(),
                cpu_millicores: cpu,
                memory_bytes: node.working_set_bytes,
            });
        }
        for p in &r.pods {
            let key = format!("pod/{}/{}", p.namespace, p.name);
            if let Some(cpu) = rates.update(
                &key,
                r.time_ms,
                p.usage.usage_core_nano_seconds,
                p.containers,
            ) {
                out.pods.push(Usage {
                    name: p.name.clone(),
                    cpu_millicores: cpu,
                    memory_bytes: p.usage.working_set_bytes,
                });
            }
        }
    }
    out.pods.sort_by(|a, b| a.name.cmp(&b.name));
    out.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The node proxy path of `node`'s live reading of `pods` (`namespace`, names).
pub fn live_path(node: &str, namespace: &str, pods: &[String]) -> String {
    let query: Vec<String> = pods
        .iter()
        .map(|p| format!("pod={namespace}%2F{p}"))
        .collect();
    let mut path = format!("/api/v1/nodes/{node}/proxy{LIVE_PATH}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Reads the live stats of every node in `by_node` (node → its target pods), at once; nodes
/// that do not answer in time are left out (logged).
pub async fn read_nodes(
    client: &kube::Client,
    namespace: &str,
    by_node: &BTreeMap<String, Vec<String>>,
) -> Vec<LiveReading> {
    let reads = by_node.iter().map(|(node, pods)| async move {
        let path = live_path(node, namespace, pods);
        let request = http::Request::get(&path).body(Vec::new()).ok()?;
        match tokio::time::timeout(READ_TIMEOUT, client.request::<LiveReading>(request)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::debug!(node, error = %e, "no live stats of a target node");
                None
            }
            Err(_) => {
                tracing::debug!(node, "live stats of a target node took too long");
                None
            }
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Samples run `uid`'s target pods (`selector` in `namespace`) and their nodes every second
/// from `started` until the returned guard is dropped (the run ended or was deleted).
pub fn spawn_sampler(
    client: kube::Client,
    runs: Arc<Runs>,
    uid: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    started: Instant,
) -> DropGuard {
    let token = CancellationToken::new();
    let stop = token.clone();
    let label = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(started.into(), Duration::from_secs(1));
        // a late reading is followed at once by the next: rates use the readings' own times
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut rates = CpuRates::default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        loop {
            let at = tokio::select! {
                _ = stop.cancelled() => return,
                at = tick.tick() => at,
            };
            let k = at
                .into_std()
                .saturating_duration_since(started)
                .as_secs_f64()
                .round() as u32;
            let Ok(target) = pods.list(&ListParams::default().labels(&label)).await else {
                continue;
            };
            let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &target.items {
                if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    by_node.entry(node).or_default().push(p.name_any());
                }
            }
            let readings = read_nodes(&client, &namespace, &by_node).await;
            // the reading at k closes second k - 1; the one at the start only opens the rates
            let s = sample(k.saturating_sub(1), &readings, &mut rates);
            if k > 0 && (!s.pods.is_empty() || !s.nodes.is_empty()) {
                runs.add_resources(&uid, s);
            }
        }
    });
    token.drop_guard()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_nodestats::{LivePod, LiveUsage};

    fn reading(time_ms: i64, node_nanos: u64, pods: &[(&str, u64, u32)]) -> LiveReading {
        LiveReading {
            node_name: "n1".into(),
            time_ms,
            node: LiveUsage {
                usage_core_nano_seconds: node_nanos,
                working_set_bytes: 1 << 30,
            },
            pods: pods
                .iter()
                .map(|(name, nanos, containers)| LivePod {
                    namespace: "shop".into(),
                    name: (*name).into(),
                    containers: *containers,
                    usage: LiveUsage {
                        usage_core_nano_seconds: *nanos,
                        working_set_bytes: 5 << 20,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn cpu_rates_first_reading_has_no_value_then_millicores_per_second() {
        let mut rates = CpuRates::default();
        assert_eq!(rates.update("pod/a/b", 1_000, 5_000_000_000, 1), None);
        // 250 ms of CPU in one second: 250 millicores
        assert_eq!(
            rates.update("pod/a/b", 2_000, 5_250_000_000, 1),
            Some(250.0)
        );
        // 1.5 cores over 2 s
        assert_eq!(
            rates.update("pod/a/b", 4_000, 8_250_000_000, 1),
            Some(1_500.0)
        );
        // a different series starts on its own
        assert_eq!(rates.update("node/n1", 4_000, 1, 0), None);
    }

    #[test]
    fn cpu_rates_counter_reset_or_other_containers_or_same_time_have_no_value() {
        let mut rates = CpuRates::default();
        rates.update("k", 1_000, 900, 1);
        assert_eq!(rates.update("k", 2_000, 100, 1), None, "counter went back");
        assert_eq!(rates.update("k", 3_000, 500, 2), None, "a container more");
        assert_eq!(rates.update("k", 3_000, 600, 2), None, "no time between");
        // 250 ms of CPU in half a second: half a core
        assert_eq!(rates.update("k", 3_500, 250_000_600, 2), Some(500.0));
    }

    #[test]
    fn sample_first_second_is_empty_then_pods_and_nodes_have_rates_and_memory() {
        let mut rates = CpuRates::default();
        let first = sample(
            0,
            &[reading(10_000, 1_000_000_000, &[("web-1", 0, 1)])],
            &mut rates,
        );
        assert_eq!(
            first,
            ResourceSample {
                second: 0,
                ..Default::default()
            }
        );
        let next = sample(
            1,
            &[reading(
                11_000,
                1_800_000_000,
                &[("web-2", 7, 1), ("web-1", 100_000_000, 1)],
            )],
            &mut rates,
        );
        assert_eq!(next.second, 1);
        assert_eq!(
            next.nodes,
            vec![Usage {
                name: "n1".into(),
                cpu_millicores: 800.0,
                memory_bytes: 1 << 30,
            }]
        );
        // web-2 is new this second: no rate yet
        assert_eq!(
            next.pods,
            vec![Usage {
                name: "web-1".into(),
                cpu_millicores: 100.0,
                memory_bytes: 5 << 20,
            }]
        );
    }

    #[test]
    fn live_path_goes_through_the_node_proxy_with_one_pod_parameter_each() {
        assert_eq!(
            live_path("node-a", "shop", &["web-1".into(), "web-2".into()]),
            "/api/v1/nodes/node-a/proxy/stats/live?pod=shop%2Fweb-1&pod=shop%2Fweb-2"
        );
        assert_eq!(
            live_path("node-a", "shop", &[]),
            "/api/v1/nodes/node-a/proxy/stats/live"
        );
    }
}
