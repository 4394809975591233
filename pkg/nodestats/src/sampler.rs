//! [`Sampler`]: one sampling round of the node and its containers, as a [`SampleBatch`], and
//! the last two rounds kept for the Summary API.

use std::path::Path;
use std::sync::{Arc, Mutex};

use mini_cri::Runtime;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::cgroup::{self, Cgroups};
use crate::cri::ContainerLister;
use crate::hostfs::HostFs;
use crate::live::{LiveReading, PodKey};
use crate::metrics::{ShippingCounts, ShippingMetrics};
use crate::node::node_points;
use crate::pods::{pod_points, ContainerRef};
use crate::procfs::parse_mounts;
use crate::summary::{self, Snapshot};
use crate::wire::{SampleBatch, SeriesSamples};
use crate::{NodeStatsConfig, NodeStatsError};

#[derive(Default)]
struct Rounds {
    previous: Option<Snapshot>,
    latest: Option<Snapshot>,
}

/// Samples the node and its containers.
pub struct Sampler {
    config: NodeStatsConfig,
    fs: Arc<dyn HostFs>,
    runtime: Option<Arc<dyn Runtime>>,
    cgroups: Option<Box<dyn Cgroups>>,
    lister: ContainerLister,
    rounds: Mutex<Rounds>,
    /// Serializes rounds (the loop and a first `/stats/summary` may both sample).
    round: tokio::sync::Mutex<()>,
    pub(crate) shipping: ShippingMetrics,
    registry: Registry,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("config", &self.config)
            .field("cgroups", &self.cgroups)
            .finish()
    }
}

impl Sampler {
    /// A sampler of this host (`fs`) and the containers of `runtime` (none when `None`).
    /// The cgroup version is detected from `/proc/mounts` now; without cgroups only node
    /// samples are taken (logged).
    pub fn new(
        config: NodeStatsConfig,
        fs: Arc<dyn HostFs>,
        runtime: Option<Arc<dyn Runtime>>,
    ) -> Arc<Sampler> {
        let cgroups = fs
            .read(Path::new("/proc/mounts"))
            .map_err(|source| NodeStatsError::Read {
                path: "/proc/mounts".into(),
                source,
            })
            .and_then(|text| cgroup::detect(&parse_mounts(&text)));
        let cgroups = match cgroups {
            Ok(c) => {
                tracing::info!(version = c.version(), "sampling containers from cgroups");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no pod or container samples");
                None
            }
        };
        let shipping = ShippingMetrics::default();
        let registry = crate::metrics::registry(fs.clone(), &shipping);
        Arc::new(Sampler {
            config,
            fs,
            runtime,
            cgroups,
            lister: ContainerLister::default(),
            rounds: Mutex::new(Rounds::default()),
            round: tokio::sync::Mutex::new(()),
            shipping,
            registry,
        })
    }

    pub fn config(&self) -> &NodeStatsConfig {
        &self.config
    }

    /// The cgroup version in use (`None` when no cgroups were found).
    pub fn cgroup_version(&self) -> Option<u8> {
        self.cgroups.as_ref().map(|c| c.version())
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one round at `now_ms` (unix ms): every series gets one point at that time.
    pub async fn sample(&self, now_ms: i64) -> Result<SampleBatch, NodeStatsError> {
        let _round = self.round.lock().await;
        let containers = match &self.runtime {
            Some(runtime) => match self.lister.list(runtime.as_ref()).await {
                Ok(c) => c,
                Err(e) => {
                    // the node row still counts; pods are missing from this round
                    tracing::debug!(error = %e, "no container list");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let result = self.sample_containers(now_ms, &containers);
        match &result {
            Ok(_) => self.shipping.samples_taken.inc(),
            Err(_) => self.shipping.sample_errors.inc(),
        };
        result
    }

    /// One round with a given container list (what [`Sampler::sample`] got from CRI).
    pub fn sample_containers(
        &self,
        now_ms: i64,
        containers: &[ContainerRef],
    ) -> Result<SampleBatch, NodeStatsError> {
        let mounts = self
            .fs
            .read(Path::new("/proc/mounts"))
            .map(|t| parse_mounts(&t))
            .unwrap_or_default();
        let (mut points, totals) =
            node_points(self.fs.as_ref(), &mounts, &self.config.filesystems)?;
        let (pod_points, samples) =
            pod_points(self.fs.as_ref(), self.cgroups.as_deref(), containers);
        points.extend(pod_points);
        let node = &self.config.node_name;
        let series = points
            .into_iter()
            // JSON has no NaN or infinity; such a reading is no point at all
            .filter(|(_, value)| value.is_finite())
            .map(|(mut labels, value)| {
                labels.insert("node".into(), node.clone());
                labels.insert("instance".into(), node.clone());
                SeriesSamples {
                    labels,
                    samples: vec![(now_ms, value)],
                }
            })
            .collect();
        let mut rounds = self.rounds();
        rounds.previous = rounds.latest.take();
        rounds.latest = Some(Snapshot {
            time_ms: now_ms,
            node: totals,
            containers: samples,
        });
        Ok(SampleBatch {
            node: node.clone(),
            series,
        })
    }

    /// The Summary API document of the latest round (`None` before the first).
    pub fn summary(&self) -> Option<Value> {
        let rounds = self.rounds();
        let latest = rounds.latest.as_ref()?;
        Some(summary::build(
            &self.config.node_name,
            rounds.previous.as_ref(),
            latest,
        ))
    }

    /// A live reading of the node and `pods` now ([`crate::live`]); the rounds, their rates
    /// and the sample counters are left as they are.
    pub async fn live(&self, pods: &[PodKey]) -> Result<LiveReading, NodeStatsError> {
        let containers = match (&self.runtime, pods.is_empty()) {
            (Some(runtime), false) => {
                self.lister
                    .list(runtime.as_ref())
                    .await
                    .unwrap_or_else(|e| {
                        tracing::debug!(error = %e, "no container list for a live reading");
                        Vec::new()
                    })
            }
            _ => Vec::new(),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.live_containers(now_ms, &containers, pods)
    }

    /// A live reading at `now_ms` with a given container list (what [`Sampler::live`] got
    /// from CRI).
    pub fn live_containers(
        &self,
        now_ms: i64,
        containers: &[ContainerRef],
        pods: &[PodKey],
    ) -> Result<LiveReading, NodeStatsError> {
        crate::live::read(
            self.fs.as_ref(),
            self.cgroups.as_deref(),
            &self.config.node_name,
            now_ms,
            containers,
            pods,
        )
    }

    /// The agent's `/metrics` text: process metrics and the shipping counters.
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(&self.registry)
    }

    /// The shipping counters now.
    pub fn shipping_counts(&self) -> ShippingCounts {
        self.shipping.counts()
    }
}
