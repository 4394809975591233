//! Monitoring history and cluster log search on the API port: the nodes' samples go into the
//! time-series store and their containers' log lines into the log store; users read them
//! through the Prometheus query API (`/prometheus/api/v1/…`), the Loki query API
//! (`/loki/api/v1/…`) and mini's own log search and live tail (`/v1-mini/logs/…`), each scoped
//! to the namespaces RBAC lets the caller read. With several servers every batch a server
//! stores is replicated to the others ([`replicate`]), so each holds the whole history.

mod client;
mod ingest;
mod params;
pub mod replicate;
mod route;
mod scope;
mod search;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mini_apiserver::ApiServer;
use mini_logstore::{LogStore, LogStoreConfig};
use mini_tsdb::{Tsdb, TsdbConfig};
use tokio_util::sync::CancellationToken;

pub use client::{search_logs, tail_logs, LogSearchRequest, LogSearchResponse, SearchedRecord};
pub use scope::{Scope, SERIES_NAMESPACE_LABEL};

/// How long and how much the stores keep (the server's `--metrics-*` and `--logs-*` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Raw 10 s samples.
    pub metrics_raw: Duration,
    /// 1-minute downsampled points.
    pub metrics_minute: Duration,
    /// 1-hour downsampled points.
    pub metrics_hour: Duration,
    /// Hard cap of the metrics store on disk (oldest data goes first).
    pub metrics_max_bytes: u64,
    pub logs: Duration,
    /// Cap of the log store on disk (oldest segments go first).
    pub logs_max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        let tsdb = TsdbConfig::default();
        let logs = LogStoreConfig::default();
        Retention {
            metrics_raw: tsdb.raw_retention,
            metrics_minute: tsdb.minute_retention,
            metrics_hour: tsdb.hour_retention,
            metrics_max_bytes: tsdb.max_bytes,
            logs: logs.retention,
            logs_max_bytes: logs.max_bytes,
        }
    }
}

/// Where the stores live and how much they may keep.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// `<data-dir>/server/tsdb` and `<data-dir>/server/logs` by default.
    pub tsdb_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub tsdb: TsdbConfig,
    pub logs: LogStoreConfig,
    /// Bounds of one PromQL query (series, samples, time).
    pub query_limits: mini_promql::Limits,
    /// How long one log search may scan before it answers with what it has.
    pub search_budget: Duration,
}

impl ObserveConfig {
    /// The stores under a server data directory, keeping what `retention` says.
    pub fn new(data_dir: &Path, retention: &Retention) -> ObserveConfig {
        let server = data_dir.join("server");
        ObserveConfig {
            tsdb_dir: server.join("tsdb"),
            logs_dir: server.join("logs"),
            tsdb: TsdbConfig {
                raw_retention: retention.metrics_raw,
                minute_retention: retention.metrics_minute,
                hour_retention: retention.metrics_hour,
                max_bytes: retention.metrics_max_bytes,
                ..TsdbConfig::default()
            },
            logs: LogStoreConfig {
                retention: retention.logs,
                max_bytes: retention.logs_max_bytes,
                ..LogStoreConfig::default()
            },
            query_limits: mini_promql::Limits::default(),
            search_budget: Duration::from_secs(5),
        }
    }
}

/// What starting the monitoring and log stores can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("opening the metrics store at {path}: {source}; check the directory's permissions and free space")]
    Tsdb {
        path: String,
        source: mini_tsdb::TsdbError,
    },
    #[error("opening the log store at {path}: {source}; check the directory's permissions and free space")]
    LogStore {
        path: String,
        source: mini_logstore::LogStoreError,
    },
    #[error("{0}")]
    Client(String),
}

/// The running stores and what the routes need to answer.
pub struct Observe {
    pub(crate) api: ApiServer,
    pub(crate) tsdb: Arc<Tsdb>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) config: ObserveConfig,
    pub(crate) stats: stats::IngestStats,
    pub(crate) events: ingest::FullDiskEvents,
    /// What `status/runtimeinfo` and `status/buildinfo` report.
    pub(crate) info: mini_promql::ServerInfo,
    /// Forwards stored batches to the other servers (set by [`replicate`]).
    pub(crate) forwarder: OnceLock<Arc<replicate::Forwarder>>,
}

impl Observe {
    /// The time-series store (for tests and the benchmark).
    pub fn tsdb(&self) -> &Arc<Tsdb> {
        &self.tsdb
    }

    /// The log store (for tests and the benchmark).
    pub fn log_store(&self) -> &Arc<LogStore> {
        &self.logs
    }
}

impl Observe {
    /// After a batch was stored: a node's batch goes to the peers, a peer's replica is counted.
    pub(crate) fn replicated(&self, kind: replicate::Kind, body: bytes::Bytes, replica: bool) {
        let Some(forwarder) = self.forwarder.get() else {
            return;
        };
        if replica {
            forwarder
                .stats
                .received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            forwarder.forward(kind, body);
        }
    }

    /// The forwarder to the peer servers, once [`replicate`] started it.
    pub fn forwarder(&self) -> Option<&Arc<replicate::Forwarder>> {
        self.forwarder.get()
    }

    /// Persists what only memory holds (the metrics head); call once the API port is closed.
    pub fn close(&self) {
        if let Err(e) = self.tsdb.flush() {
            tracing::warn!(error = %e, "flushing the metrics store failed");
        }
    }
}

/// The wall clock in Unix nanoseconds.
pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// How often the log store applies its retention (and closes an idle open segment).
const LOG_RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Opens both stores, mounts the routes on the API server, adds their figures to `/metrics`
/// and applies the log retention every minute until `shutdown`.
pub async fn start(
    api: &ApiServer,
    config: ObserveConfig,
    shutdown: CancellationToken,
) -> Result<Arc<Observe>, ObserveError> {
    let (tsdb_dir, logs_dir) = (config.tsdb_dir.clone(), config.logs_dir.clone());
    let (tsdb_config, logs_config) = (config.tsdb.clone(), config.logs.clone());
    let (tsdb, logs) = tokio::task::spawn_blocking(move || {
        let tsdb = Tsdb::open(&tsdb_dir, tsdb_config).map_err(|source| ObserveError::Tsdb {
            path: tsdb_dir.display().to_string(),
            source,
        })?;
        let logs =
            LogStore::open(&logs_dir, logs_config).map_err(|source| ObserveError::LogStore {
                path: logs_dir.display().to_string(),
                source,
            })?;
        Ok::<_, ObserveError>((Arc::new(tsdb), Arc::new(logs)))
    })
    .await
    .map_err(|e| ObserveError::Client(format!("opening the stores panicked: {e}")))??;
    let info = mini_promql::ServerInfo {
        start_time_ms: chrono::Utc::now().timestamp_millis(),
        cwd: config.tsdb_dir.display().to_string(),
        storage_retention: format!("{}s", config.tsdb.raw_retention.as_secs()),
        revision: env!("CARGO_PKG_VERSION").to_string(),
    };
    let observe = Arc::new(Observe {
        info,
        api: api.clone(),
        tsdb,
        logs,
        config,
        stats: stats::IngestStats::default(),
        events: ingest::FullDiskEvents::default(),
        forwarder: OnceLock::new(),
    });
    api.add_streaming_route(Arc::new(route::ObserveRoute {
        observe: observe.clone(),
    }));
    let figures = observe.clone();
    api.add_metrics_source(Arc::new(move || stats::render(&figures)));
    // the server's own process figures (resident memory, CPU, the allocator's heap)
    api.add_metrics_source(Arc::new(|| {
        mini_nodestats::metrics::process_text(Arc::new(mini_nodestats::RealFs))
    }));
    let logs = observe.logs.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LOG_RETENTION_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let store = logs.clone();
            let now = now_ns();
            match tokio::task::spawn_blocking(move || store.apply_retention(now)).await {
                Ok(Err(e)) => tracing::warn!(error = %e, "applying the log retention failed"),
                Err(e) => tracing::warn!(error = %e, "applying the log retention panicked"),
                Ok(Ok(_)) => {}
            }
        }
    });
    Ok(observe)
}

/// Replicates every batch this server stores to the other live servers (the servers' Leases
/// other than `own`, this server's advertised address), posting with `tls` (the server's client
/// certificate and the cluster CA, swapped online), until `shutdown`.
pub fn replicate(
    observe: &Arc<Observe>,
    own: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    shutdown: CancellationToken,
) {
    let transport = Arc::new(replicate::HttpTransport::new(tls));
    let forwarder = replicate::Forwarder::new(
        replicate::ForwardConfig::default(),
        transport,
        shutdown.clone(),
    );
    if observe.forwarder.set(forwarder.clone()).is_err() {
        return;
    }
    let client = kube::Client::new(
        observe.api.local_service(ApiServer::admin_user()),
        "default",
    );
    tokio::spawn(replicate::follow_peers(forwarder, client, own, shutdown));
}
