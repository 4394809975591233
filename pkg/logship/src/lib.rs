//! Log shipping from the agent to the server: the wire types of `POST /v1-mini/logs`.
pub mod wire;

pub mod pods;
pub mod reopen;
pub mod shipper;
pub mod sink;
pub mod state;
pub mod tail;

pub use pods::{watch_node_pods, PodLabels, PodStore, StaticPodLabels};
pub use reopen::{CriReopener, Reopened, Reopener};
pub use shipper::{LogShipConfig, Round, Shipper, Stats, StatsSnapshot};
pub use sink::{HttpSink, Sink, SinkError, LOGS_PATH};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// What the shipper can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogShipError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log shipping checkpoints {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

impl LogShipError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> LogShipError {
        LogShipError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Starts shipping this node's container logs with the node's client: a pod reflector for the
/// pod labels, the HTTP sink, CRI reopens for rotation. Returns when `shutdown` is cancelled.
pub async fn run(
    client: kube::Client,
    runtime: Arc<dyn mini_cri::Runtime>,
    config: LogShipConfig,
    shutdown: CancellationToken,
) -> Result<(), LogShipError> {
    run_with_stats(client, runtime, config, Arc::default(), shutdown).await
}

/// [`run`], counting into `stats` (for the agent's `/metrics`: entries shipped, batches failed,
/// gap bytes, rotations, buffered bytes).
pub async fn run_with_stats(
    client: kube::Client,
    runtime: Arc<dyn mini_cri::Runtime>,
    config: LogShipConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(), LogShipError> {
    let (pods, watch) = watch_node_pods(client.clone(), &config.node_name);
    let sink = Arc::new(HttpSink::new(client, config.zstd));
    let shipper = Shipper::new(
        config,
        sink,
        Arc::new(CriReopener::new(runtime)),
        Arc::new(pods),
    )?
    .with_stats(stats);
    let watch = tokio::spawn(watch);
    shipper.run(shutdown).await;
    watch.abort();
    Ok(())
}
