//! mini-tsdb: the server's compact time-series store for monitoring history — Gorilla chunks, a label
//! index with postings, an in-memory head with a write-ahead log, immutable crash-safe blocks, 1-minute and
//! 1-hour downsampled tiers with per-tier retention and a hard size cap.
//!
//! Durability: every `append` is written to the log before it returns, so a crash of the process loses
//! nothing that was acknowledged; the log is fsynced on an append at least 1 s after the previous
//! fsync and on `flush`, so a power loss loses at most the appends since the last fsync (with agents
//! shipping every 10 s: about the last round of batches). Blocks and the head state are written to a
//! temp file, fsynced and renamed; one that fails its CRC at open is logged, renamed `*.corrupt` and
//! never served.

mod block;
mod codec;
mod db;
mod index;
mod labels;
mod wal;

use std::collections::BTreeMap;
use std::time::Duration;

pub use db::Tsdb;
pub use index::{MatchOp, Matcher};

/// A series' labels (the metric name is `__name__`).
pub type Labels = BTreeMap<String, String>;

/// One series' points `(unix ms, value)` as `append` takes them.
pub type SeriesPoints = (Labels, Vec<(i64, f64)>);

/// Retention per tier and the hard cap on the bytes the store keeps on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct TsdbConfig {
    /// How long raw samples are kept (default 3 days).
    pub raw_retention: Duration,
    /// How long the 1-minute tier is kept (default 14 days).
    pub minute_retention: Duration,
    /// How long the 1-hour tier is kept (default 365 days).
    pub hour_retention: Duration,
    /// Hard cap on bytes on disk (blocks + log); the oldest blocks of the finest tier go first.
    pub max_bytes: u64,
    /// The head is flushed once the chunks it closed since the last flush hold this many bytes
    /// (they wait in memory until then; default 4 MiB).
    pub head_closed_bytes: usize,
}

impl Default for TsdbConfig {
    fn default() -> Self {
        TsdbConfig {
            raw_retention: Duration::from_secs(3 * 86_400),
            minute_retention: Duration::from_secs(14 * 86_400),
            hour_retention: Duration::from_secs(365 * 86_400),
            max_bytes: 1 << 30,
            head_closed_bytes: 4 << 20,
        }
    }
}

/// One series with its samples `(unix ms, value)` in increasing time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

/// What one `append` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendStats {
    /// Samples stored.
    pub appended: u64,
    /// Samples older than the series' newest sample, dropped.
    pub out_of_order: u64,
    /// Samples with the same timestamp as the series' newest sample, dropped.
    pub duplicate: u64,
    /// Series seen for the first time.
    pub new_series: u64,
    /// Series refused because their labels are invalid (no `__name__`, empty names).
    pub invalid_series: u64,
}

/// Samples per tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierSamples {
    pub raw: u64,
    pub minute: u64,
    pub hour: u64,
}

/// The store's state at a glance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TsdbStats {
    pub series: u64,
    /// Samples stored per tier (blocks + head).
    pub samples: TierSamples,
    /// Chunk bytes per tier (blocks + head), the payload bytes/sample is computed from.
    pub chunk_bytes: TierSamples,
    pub blocks: u64,
    pub bytes_on_disk: u64,
    /// Estimate of the heap the store holds (head chunks, series, postings, block indexes).
    pub bytes_in_memory: u64,
    /// Raw tier: chunk bytes per stored raw sample.
    pub bytes_per_sample: f64,
    /// Totals since open.
    pub out_of_order_dropped: u64,
    pub duplicates_dropped: u64,
    pub blocks_dropped_retention: u64,
    pub blocks_dropped_size_cap: u64,
    pub corrupt_blocks_skipped: u64,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error(
        "tsdb i/o on {path} failed: {source}; check the data dir's permissions and free space"
    )]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tsdb data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid matcher regex {pattern:?}: {source}")]
    BadRegex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("tsdb lock is poisoned (a writer panicked); restart the server")]
    Poisoned,
}

impl TsdbError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TsdbError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
