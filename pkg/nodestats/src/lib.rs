//! mini-nodestats: the agent's monitoring samples. Every 10 s (configurable) it samples the
//! node (/proc, statvfs) and each pod and container (cgroup v1 or v2, found through CRI), with
//! the metric names and labels of node_exporter, cAdvisor and kube-state-metrics, and ships
//! them as [`wire::SampleBatch`] to the server's `POST /v1-mini/samples`, queued in order
//! (bounded, oldest dropped and counted) while the server is away. The same samples feed the
//! kubelet Summary API ([`Sampler::summary`]) and the agent's own `/metrics`
//! ([`Sampler::metrics_text`]). Live readings ([`Sampler::live`], the node API's
//! `/stats/live`) read the node's and some pods' cumulative CPU and working set at once,
//! outside the rounds, for callers that sample more often than every 10 s.

pub mod cgroup;
pub mod cri;
pub mod hostfs;
pub mod live;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod procfs;
pub mod queue;
pub mod sampler;
pub mod ship;
pub mod summary;
pub mod wire;

#[cfg(test)]
mod sampler_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use hostfs::{FakeFs, FsSize, HostFs, RealFs};
pub use live::{LivePod, LiveReading, LiveUsage, PodKey, LIVE_PATH};
pub use metrics::ShippingCounts;
pub use sampler::Sampler;
pub use ship::{run, ApiSink, SampleSink, SAMPLES_PATH};
pub use wire::{SampleBatch, SeriesSamples};

/// Why sampling or shipping failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeStatsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no cgroup v1 memory/cpuacct or cgroup v2 hierarchy is mounted; mount cgroups to get pod and container samples")]
    NoCgroups,
    #[error("listing containers from the runtime: {0}")]
    Runtime(String),
    #[error("sending samples to the server: {0}; they stay queued and are sent when it answers")]
    Ship(String),
    #[error("the server refused a sample batch: {0}")]
    Rejected(String),
}

/// How the sampler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatsConfig {
    /// This node's name (the `node` and `instance` labels).
    pub node_name: String,
    /// Time between samples (default 10 s).
    pub interval: Duration,
    /// Batches kept while the server is away (default 360: one hour at 10 s).
    pub queue_capacity: usize,
    /// Paths whose filesystems are reported (default: the data dir and `/`).
    pub filesystems: Vec<PathBuf>,
}

/// Default time between samples.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

impl NodeStatsConfig {
    pub fn new(node_name: impl Into<String>, data_dir: &Path) -> NodeStatsConfig {
        NodeStatsConfig {
            node_name: node_name.into(),
            interval: DEFAULT_INTERVAL,
            queue_capacity: 360,
            filesystems: vec![data_dir.to_path_buf(), PathBuf::from("/")],
        }
    }
}

/// One point of one series before it gets its time: labels (with `__name__`) and value.
pub type Point = (BTreeMap<String, String>, f64);

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
