//! Simulated monitoring load: the samples that `nodes` nodes with `pods` pods each would have
//! sent every 10 s over a past period (CPU counters that grow at a wandering rate, memory that
//! drifts, restarts that are rare), posted to the server's `/v1-mini/samples` in hourly batches,
//! then optionally in real time as agents send them (one batch per node and interval).
//! For benchmarks of the metrics store only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mini_nodestats::wire::{SampleBatch, SeriesSamples};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::SimError;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SampleLoad {
    /// Nodes are named `<prefix><index>`.
    pub prefix: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    /// How far back the history starts (it ends now).
    pub history: Duration,
    pub interval: Duration,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// After the history, keep sending in real time for this long (zero: not at all).
    pub live: Duration,
}

/// What was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub series: usize,
    pub samples: u64,
    pub requests: usize,
    pub elapsed: Duration,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One series' generator: a counter (grows by a wandering non-negative rate) or a gauge
/// (a bounded random walk).
#[derive(Debug, Clone)]
struct Generator {
    labels: BTreeMap<String, String>,
    counter: bool,
    value: f64,
    rate: f64,
    scale: f64,
}

impl Generator {
    fn next(&mut self, rng: &mut StdRng, seconds: f64) -> f64 {
        if self.counter {
            self.rate = (self.rate * (1.0 + rng.random_range(-0.05..0.05))).max(0.0);
            // counters advance in whole units of their resolution, as real ones do
            self.value += (self.rate * seconds / self.scale).round() * self.scale;
        } else {
            let step = self.value * rng.random_range(-0.01..0.01);
            self.value = (self.value + (step / self.scale).round() * self.scale).max(0.0);
        }
        self.value
    }
}

fn node_series(node: &str, rng: &mut StdRng) -> Vec<Generator> {
    let base = [("node", node), ("instance", node)];
    let with = |name: &str, extra: &[(&str, &str)]| {
        let mut l = labels(&base);
        l.insert("__name__".into(), name.into());
        l.extend(labels(extra));
        l
    };
    let mut out = Vec::new();
    for cpu in ["0", "1"] {
        for (mode, rate) in [
            ("user", 0.2),
            ("system", 0.08),
            ("idle", 0.65),
            ("iowait", 0.02),
            ("irq", 0.0),
            ("softirq", 0.01),
            ("nice", 0.0),
            ("steal", 0.001),
        ] {
            out.push(Generator {
                labels: with("node_cpu_seconds_total", &[("cpu", cpu), ("mode", mode)]),
                counter: true,
                value: rng.random_range(1e4..1e6),
                rate,
                scale: 0.01,
            });
        }
    }
    let gauges: [(&str, f64, f64); 8] = [
        ("node_memory_MemTotal_bytes", 16e9, 4096.0),
        ("node_memory_MemAvailable_bytes", 9e9, 4096.0),
        ("node_memory_MemFree_bytes", 3e9, 4096.0),
        ("node_memory_Cached_bytes", 5e9, 4096.0),
        ("node_memory_Buffers_bytes", 3e8, 4096.0),
        ("node_load1", 0.8, 0.01),
        ("node_load5", 0.7, 0.01),
        ("node_load15", 0.6, 0.01),
    ];
    for (name, value, scale) in gauges {
        out.push(Generator {
            labels: with(name, &[]),
            counter: false,
            value,
            rate: 0.0,
            scale,
        });
    }
    for (name, value) in [
        ("node_filesystem_size_bytes", 1e11),
        ("node_filesystem_avail_bytes", 6e10),
    ] {
        out.push(Generator {
            labels: with(
                name,
                &[
                    ("device", "/dev/vda1"),
                    ("mountpoint", "/"),
                    ("fstype", "ext4"),
                ],
            ),
            counter: false,
            value,
            rate: 0.0,
            scale: 4096.0,
        });
    }
    for name in [
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
    ] {
        out.push(Generator {
            labels: with(name, &[("device", "eth0")]),
            counter: true,
            value: rng.random_range(1e8..1e10),
            rate: rng.random_range(1e4..1e6),
            scale: 1.0,
        });
    }
    out
}

fn pod_series(node: &str, namespace: &str, pod: &str, rng: &mut StdRng) -> Vec<Generator> {
    let mut out = Vec::new();
    for container in ["app", ""] {
        let with = |name: &str| {
            labels(&[
                ("__name__", name),
                ("node", node),
                ("instance", node),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
            ])
        };
        out.push(Generator {
            labels: with("container_cpu_usage_seconds_total"),
            counter: true,
            value: rng.random_range(1.0..1e4),
            rate: rng.random_range(0.001..0.5),
            scale: 1e-6,
        });
        out.push(Generator {
            labels: with("container_memory_working_set_bytes"),
            counter: false,
            value: rng.random_range(2e7..5e8),
            rate: 0.0,
            scale: 4096.0,
        });
        if container.is_empty() {
            continue;
        }
        for (name, value) in [
            ("container_memory_rss", rng.random_range(1e7..3e8)),
            ("container_memory_usage_bytes", rng.random_range(3e7..6e8)),
            ("container_spec_memory_limit_bytes", 1073741824.0),
        ] {
            out.push(Generator {
                labels: with(name),
                counter: false,
                value,
                rate: 0.0,
                scale: 4096.0,
            });
        }
        out.push(Generator {
            labels: with("kube_pod_container_status_restarts_total"),
            counter: true,
            value: 0.0,
            rate: 0.0,
            scale: 1.0,
        });
    }
    for name in [
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        out.push(Generator {
            labels: labels(&[
                ("__name__", name),
                ("node", node),
                ("instance", node),
                ("namespace", namespace),
                ("pod", pod),
                ("container", ""),
                ("interface", "eth0"),
            ]),
            counter: true,
            value: rng.random_range(1e6..1e9),
            rate: rng.random_range(1e2..1e5),
            scale: 1.0,
        });
    }
    out
}

/// The generators of one simulated node (node series and its pods').
fn node_generators(node: &str, pods: usize, seed: u64) -> Vec<Generator> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = node_series(node, &mut rng);
    for p in 0..pods {
        let namespace = format!("team-{}", p % 5);
        let pod = format!("{node}-app-{p}");
        out.extend(pod_series(node, &namespace, &pod, &mut rng));
    }
    out
}

/// Series per simulated node.
pub fn series_per_node(pods: usize) -> usize {
    node_generators("n", pods, 0).len()
}

/// Posts the whole history, one batch per node and hour, then `live` of real-time batches.
pub async fn post_history(
    client: &kube::Client,
    load: &SampleLoad,
) -> Result<LoadReport, SimError> {
    let started = Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let step_ms = i64::try_from(load.interval.as_millis())
        .unwrap_or(10_000)
        .max(1);
    let points = load.history.as_millis() as i64 / step_ms;
    let first_ms = now_ms - points * step_ms;
    let per_batch = (3_600_000 / step_ms).max(1);
    let mut jobs = Vec::new();
    let mut series = 0;
    for n in 0..load.nodes {
        let node = format!("{}{n}", load.prefix);
        let generators = node_generators(&node, load.pods_per_node, n as u64);
        series += generators.len();
        jobs.push((node, generators, StdRng::seed_from_u64(1000 + n as u64)));
    }
    let mut samples = 0u64;
    let mut requests = 0usize;
    let mut start = 0i64;
    while start < points {
        let end = (start + per_batch).min(points);
        let mut batches = Vec::new();
        for (node, generators, rng) in &mut jobs {
            let mut out = Vec::with_capacity(generators.len());
            for g in generators.iter_mut() {
                let points: Vec<(i64, f64)> = (start..end)
                    .map(|i| (first_ms + i * step_ms, g.next(rng, step_ms as f64 / 1000.0)))
                    .collect();
                out.push(SeriesSamples {
                    labels: g.labels.clone(),
                    samples: points,
                });
            }
            samples += out.iter().map(|s| s.samples.len() as u64).sum::<u64>();
            batches.push(SampleBatch {
                node: node.clone(),
                series: out,
            });
        }
        requests += batches.len();
        let results: Vec<Result<(), SimError>> = futures::stream::iter(batches)
            .map(|batch| post(client, batch))
            .buffer_unordered(load.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        start = end;
    }
    // Real time: every interval, each node sends the one point of each of its series.
    let live_until = Instant::now() + load.live;
    let mut tick = now_ms;
    while !load.live.is_zero() && Instant::now() < live_until {
        tick += step_ms;
        let wait = tick - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let batches: Vec<SampleBatch> = jobs
            .iter_mut()
            .map(|(node, generators, rng)| SampleBatch {
                node: node.clone(),
                series: generators
                    .iter_mut()
                    .map(|g| SeriesSamples {
                        labels: g.labels.clone(),
                        samples: vec![(tick, g.next(rng, step_ms as f64 / 1000.0))],
                    })
                    .collect(),
            })
            .collect();
        samples += batches.iter().map(|b| b.series.len() as u64).sum::<u64>();
        requests += batches.len();
        let results: Vec<Result<(), SimError>> = futures::stream::iter(batches)
            .map(|batch| post(client, batch))
            .buffer_unordered(load.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
    }
    Ok(LoadReport {
        series,
        samples,
        requests,
        elapsed: started.elapsed(),
    })
}

async fn post(client: &kube::Client, batch: SampleBatch) -> Result<(), SimError> {
    let body = serde_json::to_vec(&batch).map_err(|e| SimError::Load(e.to_string()))?;
    let request = http::Request::post("/v1-mini/samples")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| SimError::Load(e.to_string()))?;
    client
        .request_text(request)
        .await
        .map(|_| ())
        .map_err(|e| SimError::Load(format!("posting samples for {}: {e}", batch.node)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_counters_never_decrease() {
        let mut gens = node_generators("n0", 3, 7);
        let mut rng = StdRng::seed_from_u64(1);
        for g in gens.iter_mut().filter(|g| g.counter) {
            let mut last = f64::MIN;
            for _ in 0..100 {
                let v = g.next(&mut rng, 10.0);
                assert!(v >= last, "{:?}", g.labels);
                last = v;
            }
        }
    }

    #[test]
    fn series_per_node_counts_node_and_pod_series() {
        // 16 cpu + 8 memory/load + 2 filesystem + 2 network per node; 10 per pod
        assert_eq!(series_per_node(0), 28);
        assert_eq!(series_per_node(30), 28 + 30 * 10);
    }
}
