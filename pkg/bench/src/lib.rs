//! Benchmarks of a real `mini server` process: create throughput, GET/LIST latency, watch
//! delivery latency and RSS. Numbers are reported, never asserted.

mod api;
mod objects;
pub mod podstart;
mod report;
mod rest;
pub mod scheduler;
mod server;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

pub use api::run_api_bench;
pub use report::{ApiBenchReport, MachineInfo, Measurement, ReportConfig, Throughput, WatchResult};
pub use server::parse_vm_rss;
pub use stats::{percentile, rate, LatencySummary};

/// What `run_api_bench` does.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// The `mini` binary to run as `mini server`.
    pub mini_bin: PathBuf,
    /// Pods in the namespace at the end of the create phases (the LIST size).
    pub pods: usize,
    /// Pods created one at a time (the first `creates` of `pods`); the rest are created by
    /// `concurrency` clients at once.
    pub creates: usize,
    /// Concurrent in-flight create requests in the concurrent phase.
    pub concurrency: usize,
    /// Concurrent watch streams for watch delivery.
    pub watchers: usize,
    /// GET samples; LIST samples are `samples / 10` (at least 3).
    pub samples: usize,
    /// Updates made while the watchers listen.
    pub watch_updates: usize,
    /// How long the server sits untouched before idle RSS is read, and after the creates
    /// before the loaded RSS is read.
    pub settle: Duration,
    /// Extra `mini server` flags (`--datastore-endpoint URL` runs it on etcd).
    pub server_args: Vec<String>,
}

impl Default for ApiBenchOptions {
    fn default() -> Self {
        Self {
            mini_bin: PathBuf::from("target/release/mini"),
            pods: 10_000,
            creates: 2_000,
            concurrency: 16,
            watchers: 100,
            samples: 200,
            watch_updates: 50,
            settle: Duration::from_secs(3),
            server_args: Vec::new(),
        }
    }
}

impl ApiBenchOptions {
    /// LIST samples taken (after one unmeasured warm-up LIST).
    pub fn list_samples(&self) -> usize {
        (self.samples / 10).max(3)
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::InvalidOptions(m.to_string()));
        if self.creates == 0 || self.pods <= self.creates {
            return bad("need 0 < creates < pods (the concurrent phase creates pods - creates)");
        }
        if self.concurrency == 0 || self.watchers == 0 || self.samples == 0 {
            return bad("concurrency, watchers and samples must be at least 1");
        }
        if self.watch_updates == 0 {
            return bad("watch_updates must be at least 1");
        }
        if !self.mini_bin.is_file() {
            return Err(BenchError::InvalidOptions(format!(
                "mini binary {} not found (build it with `cargo build --release -p mini`)",
                self.mini_bin.display()
            )));
        }
        Ok(())
    }
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mini server exited early; log tail:\n{log_tail}")]
    ServerExited { log_tail: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("client: {0}")]
    Client(String),
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("unexpected response: {0}")]
    Parse(String),
}

impl BenchError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
