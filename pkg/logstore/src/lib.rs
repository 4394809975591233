//! The server's log store: container log lines in append-only zstd segments with a per-segment time range
//! and label index, exactly-once ingestion per source, retention by age and size, search, live tail, a
//! LogQL subset and the Loki HTTP API answers.
//!
//! On disk (one directory): closed segments `<id>.seg` (immutable; see [`segment`]) and one open segment
//! `<id>.wal` that ingest appends to (fsynced before `ingest` returns). The open segment is also held in
//! memory in column form; when it passes [`SEGMENT_RAW_BYTES`] or [`SEGMENT_MAX_AGE`] it is rewritten as
//! a closed segment of ~[`BLOCK_RAW_BYTES`] zstd blocks. Each source's last stored offset travels with the
//! data: in every open-segment frame, in every closed segment's footer, and as the first frame of each
//! new open segment, so exactly-once holds across restarts and after retention removed old segments.
//!
//! Queries: [`LogStore::search`] (log lines), [`parse_logql`] (stream selector and line filters) and
//! [`loki_api`], which also answers the metric queries Grafana's logs volume sends (`count_over_time`,
//! `rate`, `bytes_over_time`, `bytes_rate`, in `sum`/`count`/`min`/`max`/`avg` `by`/`without`).

mod disk;
mod encoding;
mod logql;
mod loki;
mod metric;
mod search;
mod segment;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mini_logship::wire::LogBatch;
use serde::{Deserialize, Serialize};

pub use disk::{DiskSpace, StatvfsDisk};
pub use logql::{parse_logql, LogQlError};
pub use loki::{loki_api, loki_tail_message};

use encoding::{Columns, WalRecord};
use search::Compiled;
use segment::{ClosedSegment, WalFile};

/// Raw bytes of lines after which the open segment is closed.
pub const SEGMENT_RAW_BYTES: usize = 16 << 20;
/// Age after which the open segment is closed even if small (so retention can drop it).
pub const SEGMENT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Raw bytes of lines per compressed block of a closed segment (4 MiB compresses ~3% better than
/// 1 MiB; a search decompresses whole blocks, still a few ms each).
pub const BLOCK_RAW_BYTES: usize = 4 << 20;
/// Capacity of a live tail's channel; entries beyond it are dropped (counted) for that tail.
pub const TAIL_CHANNEL: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStoreConfig {
    /// Segments whose newest entry is older than this are removed.
    pub retention: Duration,
    /// Cap on the bytes of all segment files; the oldest segments are removed to stay below it.
    pub max_bytes: u64,
    /// Ingestion stops with [`LogStoreError::Full`] while the filesystem has less free space than this.
    pub min_free_bytes: u64,
}

impl Default for LogStoreConfig {
    fn default() -> Self {
        LogStoreConfig {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 2 << 30,
            min_free_bytes: 512 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("log store is full (free disk space below the minimum, or the size cap reached with nothing left to drop); free disk space or raise the log store's size cap")]
    Full,
    #[error("failed to {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "log segment {path} is corrupt: {message}; it is not served (move it away to silence this)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid log query: {0}")]
    InvalidQuery(String),
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> LogStoreError {
    LogStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The namespaces a caller may read (RBAC, computed by the caller per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    All,
    Only(BTreeSet<String>),
}

impl NamespaceScope {
    fn allows(&self, stream: &StreamDef) -> bool {
        match self {
            NamespaceScope::All => true,
            NamespaceScope::Only(set) => stream
                .labels
                .get("namespace")
                .is_some_and(|ns| set.contains(ns)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    /// Anchored regular expression, as Loki and Prometheus.
    Regex,
    NotRegex,
}

/// A label matcher; `name` is looked up in the stream's labels, then in its pod labels (by the key or by
/// the key with characters outside `[A-Za-z0-9_]` replaced by `_`). A missing label matches as "".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFilter {
    Contains(String),
    NotContains(String),
    /// Unanchored regular expression (matches anywhere in the line).
    Regex(String),
    NotRegex(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// A search: entries with `start_ns <= timestamp < end_ns` whose stream matches all `matchers` and the
/// namespace scope and whose line passes all `line_filters`.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub start_ns: i64,
    pub end_ns: i64,
    pub matchers: Vec<LabelMatcher>,
    pub line_filters: Vec<LineFilter>,
    pub direction: Direction,
    pub limit: usize,
    /// `next_cursor` of the previous page (same query): continues after its last record.
    pub cursor: Option<String>,
    pub namespaces: NamespaceScope,
    /// Wall time after which the search stops and returns what it found (`truncated_by_budget`).
    pub time_budget: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    pub records: Vec<LogRecord>,
    /// Set when the page is full and more records may follow.
    pub next_cursor: Option<String>,
    /// The time budget ran out: `records` are what was found until then, not necessarily the newest
    /// (oldest) matches, and no cursor is given.
    pub truncated_by_budget: bool,
    /// Raw (uncompressed) bytes of lines looked at.
    pub scanned_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub timestamp_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub line: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Entries stored.
    pub accepted: u64,
    /// Entries dropped because their source already had that offset (or a later one) stored.
    pub duplicates: u64,
    /// Raw bytes of the stored lines.
    pub bytes: u64,
}

/// What a selector would read (Loki's `index/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub streams: u64,
    pub chunks: u64,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStoreStats {
    /// Lines stored (all segments).
    pub lines: u64,
    /// Raw bytes of the stored lines.
    pub bytes_raw: u64,
    /// Bytes of the segment files on disk.
    pub bytes_stored: u64,
    /// Raw bytes / file bytes of the closed (compressed) segments; 0 when none is closed yet.
    pub compression_ratio: f64,
    /// Segment files (closed ones plus the open one).
    pub segments: usize,
    /// Segments and their lines removed by retention (age or size) since start.
    pub dropped_segments: u64,
    pub dropped_lines: u64,
    /// Entries refused with `Full` since start.
    pub refused_full: u64,
    /// Entries dropped as already stored since start.
    pub duplicates: u64,
    /// Entries a slow live tail did not take (its channel was full) since start.
    pub tail_dropped: u64,
    /// Sources whose last offset the store remembers.
    pub sources: usize,
}

/// The labels that identify a stream (the unit the label index lists).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct StreamDef {
    pub labels: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
}

impl StreamDef {
    /// The value of label `name` as matchers see it (see [`LabelMatcher`]).
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.labels.get(name).or_else(|| self.pod_labels.get(name)) {
            return Some(v);
        }
        self.pod_labels
            .iter()
            .find(|(k, _)| sanitize_label_name(k) == name)
            .map(|(_, v)| v.as_str())
    }

    /// Labels and pod labels in one map as Loki shows a stream (labels win; pod label names sanitized).
    pub(crate) fn loki_labels(&self) -> BTreeMap<String, String> {
        let mut out = self.labels.clone();
        for (k, v) in &self.pod_labels {
            out.entry(sanitize_label_name(k))
                .or_insert_with(|| v.clone());
        }
        out
    }
}

/// A Kubernetes label key as a Loki/Prometheus label name: characters outside `[A-Za-z0-9_]` become `_`.
pub fn sanitize_label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Exactly-once state of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceState {
    pub offset: u64,
    /// Timestamp of the source's newest stored entry; sources older than the retention are forgotten.
    pub last_ts: i64,
}

/// The open segment: its file and its records in memory.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub id: u64,
    pub wal: WalFile,
    pub streams: Vec<Arc<StreamDef>>,
    pub stream_ids: HashMap<Arc<StreamDef>, u32>,
    pub cols: Columns,
    pub min_ts: i64,
    pub max_ts: i64,
    pub opened: Instant,
}

/// A former open segment being compressed into a closed one outside the lock; still searched in memory
/// and its open-segment file stays until the closed file is in place.
#[derive(Debug)]
pub(crate) struct Closing {
    pub id: u64,
    pub streams: Vec<Arc<StreamDef>>,
    pub cols: Columns,
    pub min_ts: i64,
    pub max_ts: i64,
    pub wal_path: PathBuf,
    pub wal_len: u64,
    pub sources: BTreeMap<String, SourceState>,
    /// Set while a thread compresses it (a failed close is retried by `apply_retention`).
    pub busy: std::sync::atomic::AtomicBool,
}

/// Records held in memory (the open segment or a closing one), as search sees them.
pub(crate) struct MemSeg<'a> {
    pub id: u64,
    pub streams: &'a [Arc<StreamDef>],
    pub cols: &'a Columns,
    pub min_ts: i64,
    pub max_ts: i64,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub closed: Vec<Arc<ClosedSegment>>,
    pub closing: Vec<Arc<Closing>>,
    pub open: OpenSegment,
    pub sources: HashMap<String, SourceState>,
    pub next_id: u64,
}

impl Inner {
    /// The open segment and the closing ones.
    pub(crate) fn mem_segments(&self) -> Vec<MemSeg<'_>> {
        let mut out: Vec<MemSeg<'_>> = self
            .closing
            .iter()
            .map(|c| MemSeg {
                id: c.id,
                streams: &c.streams,
                cols: &c.cols,
                min_ts: c.min_ts,
                max_ts: c.max_ts,
            })
            .collect();
        out.push(MemSeg {
            id: self.open.id,
            streams: &self.open.streams,
            cols: &self.open.cols,
            min_ts: self.open.min_ts,
            max_ts: self.open.max_ts,
        });
        out
    }
}

struct Tail {
    query: Compiled,
    start_ns: i64,
    tx: tokio::sync::mpsc::Sender<LogRecord>,
}

/// The log store. `Send + Sync`; share it as `Arc<LogStore>`.
pub struct LogStore {
    config: LogStoreConfig,
    disk: Arc<dyn DiskSpace>,
    inner: RwLock<Inner>,
    tails: Mutex<Vec<Tail>>,
    dropped_segments: AtomicU64,
    dropped_lines: AtomicU64,
    refused_full: AtomicU64,
    duplicates: AtomicU64,
    tail_dropped: AtomicU64,
    segment_raw_bytes: usize,
    block_raw_bytes: usize,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, checking free space with `statvfs`.
    pub fn open(dir: &Path, config: LogStoreConfig) -> Result<LogStore, LogStoreError> {
        LogStore::open_with(dir, config, Arc::new(StatvfsDisk))
    }

    /// Opens the store with a given free-space source (a fake in tests).
    pub fn open_with(
        dir: &Path,
        config: LogStoreConfig,
        disk: Arc<dyn DiskSpace>,
    ) -> Result<LogStore, LogStoreError> {
        LogStore::open_tuned(dir, config, disk, SEGMENT_RAW_BYTES, BLOCK_RAW_BYTES)
    }

    pub(crate) fn open_tuned(
        dir: &Path,
        config: LogStoreConfig,
        disk: Arc<dyn DiskSpace>,
        segment_raw_bytes: usize,
        block_raw_bytes: usize,
    ) -> Result<LogStore, LogStoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err("create the log store directory", dir, e))?;
        let mut closed_ids = BTreeSet::new();
        let mut open_ids = BTreeSet::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let entry = entry.map_err(|e| io_err("list", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            let Ok(id) = stem.parse::<u64>() else {
                continue;
            };
            match ext {
                "seg" => {
                    closed_ids.insert(id);
                }
                "wal" => {
                    open_ids.insert(id);
                }
                _ => {}
            }
        }
        let mut closed = Vec::new();
        let mut sources: HashMap<String, SourceState> = HashMap::new();
        for &id in &closed_ids {
            let path = segment::closed_path(dir, id);
            match segment::read_closed(&path, id) {
                Ok(seg) => {
                    merge_sources(
                        &mut sources,
                        seg.sources.iter().map(|(k, v)| (k.clone(), *v)),
                    );
                    closed.push(Arc::new(seg));
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping a corrupt log segment");
                    let _ = fs::rename(&path, path.with_extension("seg.corrupt"));
                }
            }
        }
        let mut next_id = closed_ids
            .iter()
            .chain(open_ids.iter())
            .max()
            .map_or(1, |m| m + 1);
        let mut open: Option<OpenSegment> = None;
        for &id in &open_ids {
            let path = segment::open_path(dir, id);
            if closed_ids.contains(&id) {
                // Closed and renamed into place before the crash; the open file is a leftover.
                let _ = fs::remove_file(&path);
                continue;
            }
            let (wal, records, _cut) = WalFile::replay(&path)?;
            let mut seg = OpenSegment {
                id,
                wal,
                streams: Vec::new(),
                stream_ids: HashMap::new(),
                cols: Columns::default(),
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                opened: Instant::now(),
            };
            for rec in records {
                apply_record(&mut seg, &mut sources, rec);
            }
            if let Some(prev) = open.replace(seg) {
                // Several open files (a crash while closing): close the older ones now.
                let done = close_segment(dir, prev, &sources, block_raw_bytes)?;
                closed.push(Arc::new(done));
            }
        }
        let open = match open {
            Some(o) => o,
            None => {
                let id = next_id;
                next_id += 1;
                new_open(dir, id, &sources)?
            }
        };
        closed.sort_by_key(|s| s.id);
        let store = LogStore {
            config,
            disk,
            inner: RwLock::new(Inner {
                dir: dir.to_path_buf(),
                closed,
                closing: Vec::new(),
                open,
                sources,
                next_id,
            }),
            tails: Mutex::new(Vec::new()),
            dropped_segments: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            tail_dropped: AtomicU64::new(0),
            segment_raw_bytes,
            block_raw_bytes,
        };
        store.apply_retention(now_ns())?;
        Ok(store)
    }

    /// Stores the entries not seen before (per `source`, offset greater than the last stored one).
    /// Durable when it returns. On `Err` nothing of the batch is stored.
    pub fn ingest(&self, batch: &LogBatch) -> Result<IngestStats, LogStoreError> {
        let mut stats = IngestStats::default();
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let mut rec = WalRecord::default();
        let mut new_ids: HashMap<Arc<StreamDef>, u32> = HashMap::new();
        let mut tail_items: Vec<(Arc<StreamDef>, usize)> = Vec::new();
        let mut pending: HashMap<&str, u64> = HashMap::new();
        for stream in &batch.streams {
            let known = pending
                .get(stream.source.as_str())
                .copied()
                .or_else(|| inner.sources.get(&stream.source).map(|s| s.offset));
            let mut last = known;
            let mut last_ts = i64::MIN;
            let def = Arc::new(StreamDef {
                labels: stream.labels.clone(),
                pod_labels: stream.pod_labels.clone(),
            });
            let mut sid = None;
            for e in &stream.entries {
                if last.is_some_and(|l| e.offset <= l) {
                    stats.duplicates += 1;
                    continue;
                }
                last = Some(e.offset);
                last_ts = last_ts.max(e.timestamp_ns);
                let id = *sid.get_or_insert_with(|| {
                    if let Some(&id) = inner.open.stream_ids.get(&def) {
                        return id;
                    }
                    let next = (inner.open.streams.len() + new_ids.len()) as u32;
                    *new_ids.entry(def.clone()).or_insert_with(|| {
                        rec.new_streams.push(def.clone());
                        next
                    })
                });
                tail_items.push((def.clone(), rec.columns.len()));
                rec.columns.push(id, e.timestamp_ns, &e.line);
                stats.accepted += 1;
                stats.bytes += e.line.len() as u64;
            }
            if last != known {
                if let Some(off) = last {
                    pending.insert(&stream.source, off);
                    let prev_ts = inner
                        .sources
                        .get(&stream.source)
                        .map_or(i64::MIN, |s| s.last_ts);
                    let prev_ts = rec
                        .sources
                        .iter()
                        .find(|(s, _, _)| s == &stream.source)
                        .map_or(prev_ts, |(_, _, t)| (*t).max(prev_ts));
                    rec.sources.retain(|(s, _, _)| s != &stream.source);
                    rec.sources
                        .push((stream.source.clone(), off, last_ts.max(prev_ts)));
                }
            }
        }
        self.duplicates
            .fetch_add(stats.duplicates, Ordering::Relaxed);
        if stats.accepted == 0 {
            return Ok(stats);
        }
        let payload = rec.encode();
        if let Err(e) = self.make_room(inner, WalFile::frame_len(payload.len())) {
            if matches!(e, LogStoreError::Full) {
                self.refused_full
                    .fetch_add(stats.accepted, Ordering::Relaxed);
            }
            return Err(e);
        }
        if let Err(e) = inner.open.wal.append(&payload) {
            if matches!(e, LogStoreError::Full) {
                self.refused_full
                    .fetch_add(stats.accepted, Ordering::Relaxed);
            }
            return Err(e);
        }
        let base = inner.open.cols.len();
        apply_record(&mut inner.open, &mut inner.sources, rec);
        self.notify_tails(&inner.open.cols, base, &tail_items);
        let closing = if inner.open.cols.text.len() >= self.segment_raw_bytes
            || inner.open.opened.elapsed() >= SEGMENT_MAX_AGE
        {
            self.begin_rotate(inner)
        } else {
            None
        };
        drop(guard);
        if let Some(c) = closing {
            // The entries are durable in the open-segment file already; a failed close is retried.
            if let Err(e) = self.finish_close(&c) {
                tracing::warn!(error = %e, "cannot close a log segment; it stays in memory and is retried");
            }
        }
        Ok(stats)
    }

    /// Refuses when the disk is low; drops the oldest closed segments while `extra` more bytes would pass
    /// the size cap; refuses when nothing is left to drop.
    fn make_room(&self, inner: &mut Inner, extra: u64) -> Result<(), LogStoreError> {
        match self.disk.free_bytes(&inner.dir) {
            Ok(free) if free < self.config.min_free_bytes => {
                tracing::warn!(
                    free,
                    min = self.config.min_free_bytes,
                    "log store refuses entries: disk space low"
                );
                return Err(LogStoreError::Full);
            }
            Ok(_) => {}
            Err(e) => return Err(io_err("check the free space of", &inner.dir, e)),
        }
        while total_bytes(inner) + extra > self.config.max_bytes {
            if inner.closed.is_empty() {
                tracing::warn!(
                    max = self.config.max_bytes,
                    "log store refuses entries: size cap reached, nothing left to drop"
                );
                return Err(LogStoreError::Full);
            }
            let seg = inner.closed.remove(0);
            self.drop_segment(&seg);
        }
        Ok(())
    }

    fn drop_segment(&self, seg: &ClosedSegment) {
        if let Err(e) = fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), error = %e, "cannot remove a log segment");
        }
        self.dropped_segments.fetch_add(1, Ordering::Relaxed);
        self.dropped_lines.fetch_add(seg.lines, Ordering::Relaxed);
    }

    /// Starts a new open segment and moves the current one (if it holds records) to `closing`; the
    /// caller then runs [`LogStore::finish_close`] without the lock. On failure (the new open file
    /// cannot be created) the current open segment stays in use.
    fn begin_rotate(&self, inner: &mut Inner) -> Option<Arc<Closing>> {
        if inner.open.cols.len() == 0 {
            return None;
        }
        let cutoff = now_ns().saturating_sub(self.config.retention.as_nanos() as i64);
        inner.sources.retain(|_, s| s.last_ts >= cutoff);
        let id = inner.next_id;
        let fresh = match new_open(&inner.dir, id, &inner.sources) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a new log segment; the open one grows on");
                return None;
            }
        };
        inner.next_id += 1;
        let old = std::mem::replace(&mut inner.open, fresh);
        let c = Arc::new(Closing {
            id: old.id,
            streams: old.streams,
            cols: old.cols,
            min_ts: old.min_ts,
            max_ts: old.max_ts,
            wal_len: old.wal.len,
            wal_path: old.wal.path,
            sources: inner.sources.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            busy: std::sync::atomic::AtomicBool::new(true),
        });
        inner.closing.push(c.clone());
        Some(c)
    }

    /// Writes a closing segment as a closed one (temp, fsync, rename; no lock held), then swaps it in
    /// and removes its open-segment file. A crash in between leaves both files with the same id; `open`
    /// drops the open one.
    fn finish_close(&self, c: &Arc<Closing>) -> Result<(), LogStoreError> {
        let dir = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .dir
            .clone();
        let result = segment::write_closed(
            &dir,
            c.id,
            &c.streams,
            &c.cols,
            &c.sources,
            self.block_raw_bytes,
        );
        let done = match result {
            Ok(d) => d,
            Err(e) => {
                c.busy.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.closing.retain(|x| x.id != c.id);
        inner.closed.push(Arc::new(done));
        inner.closed.sort_by_key(|s| s.id);
        if let Err(e) = fs::remove_file(&c.wal_path) {
            tracing::warn!(path = %c.wal_path.display(), error = %e, "cannot remove a closed open-segment file; it is dropped at the next start");
        }
        Ok(())
    }

    /// Closes the open segment (if it has records) and every closing one not in progress, now.
    fn rotate_now(&self, force_open: bool) -> Result<(), LogStoreError> {
        let pending: Vec<Arc<Closing>> = {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<Arc<Closing>> = inner
                .closing
                .iter()
                .filter(|c| !c.busy.swap(true, Ordering::AcqRel))
                .cloned()
                .collect();
            if force_open {
                v.extend(self.begin_rotate(&mut inner));
            }
            v
        };
        let mut first_err = None;
        for c in pending {
            if let Err(e) = self.finish_close(&c) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Closes an open segment older than [`SEGMENT_MAX_AGE`] and removes segments whose newest entry is
    /// older than the retention (relative to `now_ns`) or that exceed the size cap. Ingest does this as
    /// it goes; call it periodically (e.g. every minute) so an idle store ages out too.
    pub fn apply_retention(&self, now_ns: i64) -> Result<(), LogStoreError> {
        let cutoff = now_ns.saturating_sub(self.config.retention.as_nanos() as i64);
        let age_out = {
            let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
            inner.open.cols.len() > 0
                && (inner.open.opened.elapsed() >= SEGMENT_MAX_AGE || inner.open.max_ts < cutoff)
        };
        self.rotate_now(age_out)?;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let before = inner.closed.len();
        let mut keep = Vec::with_capacity(before);
        for seg in inner.closed.drain(..) {
            if seg.max_ts < cutoff {
                self.drop_segment(&seg);
            } else {
                keep.push(seg);
            }
        }
        inner.closed = keep;
        while total_bytes(inner) > self.config.max_bytes && !inner.closed.is_empty() {
            let seg = inner.closed.remove(0);
            self.drop_segment(&seg);
        }
        Ok(())
    }

    /// Closes the open segment now (if it has records), so everything stored is compressed. Not needed
    /// for durability: the open segment's file is replayed at start.
    pub fn flush(&self) -> Result<(), LogStoreError> {
        self.rotate_now(true)
    }

    /// Visits every entry matching `query` (its limit, cursor and direction are ignored) without
    /// materializing lines: `f(loki labels of the stream, timestamp, line length)`. Returns the raw bytes
    /// scanned and whether the time budget cut the scan short. Used for metric queries (counts).
    pub fn visit_matches(
        &self,
        query: &SearchQuery,
        mut f: impl FnMut(&BTreeMap<String, String>, i64, usize),
    ) -> Result<(u64, bool), LogStoreError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut cache: HashMap<*const StreamDef, BTreeMap<String, String>> = HashMap::new();
        search::for_each(&inner, query, |def, ts, len| {
            let labels = cache
                .entry(def as *const StreamDef)
                .or_insert_with(|| def.loki_labels());
            f(labels, ts, len)
        })
    }

    pub fn search(&self, query: &SearchQuery) -> Result<SearchPage, LogStoreError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        search::run(&inner, query)
    }

    /// Label names of the streams with entries in `[start_ns, end_ns)` within the scope (pod label keys
    /// sanitized as Loki shows them).
    pub fn label_names(
        &self,
        start_ns: i64,
        end_ns: i64,
        namespaces: &NamespaceScope,
    ) -> Result<Vec<String>, LogStoreError> {
        let mut out = BTreeSet::new();
        for s in self.streams(&[], start_ns, end_ns, namespaces)? {
            out.extend(s.keys().cloned());
        }
        Ok(out.into_iter().collect())
    }

    pub fn label_values(
        &self,
        name: &str,
        start_ns: i64,
        end_ns: i64,
        namespaces: &NamespaceScope,
    ) -> Result<Vec<String>, LogStoreError> {
        let mut out = BTreeSet::new();
        for s in self.streams(&[], start_ns, end_ns, namespaces)? {
            if let Some(v) = s.get(name) {
                out.insert(v.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The streams (as Loki label sets) with entries in `[start_ns, end_ns)` matching all `matchers`.
    pub fn streams(
        &self,
        matchers: &[LabelMatcher],
        start_ns: i64,
        end_ns: i64,
        namespaces: &NamespaceScope,
    ) -> Result<Vec<BTreeMap<String, String>>, LogStoreError> {
        let compiled = Compiled::new(matchers, &[], namespaces)?;
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeSet::new();
        let overlaps = |min: i64, max: i64| max >= start_ns && min < end_ns;
        for seg in &inner.closed {
            if !overlaps(seg.min_ts, seg.max_ts) {
                continue;
            }
            for (i, s) in seg.streams.iter().enumerate() {
                if compiled.stream_matches(s)
                    && seg.blocks.iter().any(|b| {
                        overlaps(b.min_ts, b.max_ts) && b.streams.binary_search(&(i as u32)).is_ok()
                    })
                {
                    out.insert(s.loki_labels());
                }
            }
        }
        for open in inner.mem_segments() {
            if !overlaps(open.min_ts, open.max_ts) {
                continue;
            }
            let wanted: Vec<bool> = open
                .streams
                .iter()
                .map(|s| compiled.stream_matches(s))
                .collect();
            let mut seen = vec![false; open.streams.len()];
            for i in 0..open.cols.len() {
                let sid = open.cols.streams[i] as usize;
                if wanted[sid] && !seen[sid] && overlaps(open.cols.ts[i], open.cols.ts[i]) {
                    seen[sid] = true;
                    out.insert(open.streams[sid].loki_labels());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Streams, blocks ("chunks"), entries and raw bytes the query's selector would read in
    /// `[start_ns, end_ns)` (Loki's `index/stats`; block-level upper bounds, no line is read).
    pub fn index_stats(
        &self,
        matchers: &[LabelMatcher],
        start_ns: i64,
        end_ns: i64,
        namespaces: &NamespaceScope,
    ) -> Result<IndexStats, LogStoreError> {
        let compiled = Compiled::new(matchers, &[], namespaces)?;
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = IndexStats::default();
        let mut streams = BTreeSet::new();
        let overlaps = |min: i64, max: i64| max >= start_ns && min < end_ns;
        for seg in inner.closed.iter().filter(|s| overlaps(s.min_ts, s.max_ts)) {
            let wanted: Vec<bool> = seg
                .streams
                .iter()
                .map(|s| compiled.stream_matches(s))
                .collect();
            for b in seg.blocks.iter().filter(|b| overlaps(b.min_ts, b.max_ts)) {
                let hit: Vec<u32> = b
                    .streams
                    .iter()
                    .copied()
                    .filter(|&s| wanted[s as usize])
                    .collect();
                if !hit.is_empty() {
                    out.chunks += 1;
                    out.entries += b.records;
                    out.bytes += b.raw_bytes;
                    streams.extend(hit.iter().map(|&s| seg.streams[s as usize].clone()));
                }
            }
        }
        for open in inner.mem_segments() {
            let wanted: Vec<bool> = open
                .streams
                .iter()
                .map(|s| compiled.stream_matches(s))
                .collect();
            let mut any = false;
            for i in 0..open.cols.len() {
                let sid = open.cols.streams[i] as usize;
                if wanted[sid] && overlaps(open.cols.ts[i], open.cols.ts[i]) {
                    any = true;
                    out.entries += 1;
                    let (s, e) = open.cols.bounds(i);
                    out.bytes += (e - s) as u64;
                    streams.insert(open.streams[sid].clone());
                }
            }
            out.chunks += u64::from(any);
        }
        out.streams = streams.len() as u64;
        Ok(out)
    }

    /// Live tail: entries matching the query (from `start_ns` on; `end_ns`, `limit`, `cursor` and the
    /// budget are ignored) as they are ingested. Ends when the receiver is dropped. A tail that does not
    /// keep up loses entries (counted in `tail_dropped`). An invalid regex yields a closed channel;
    /// validate the query with [`parse_logql`] or a `search` first.
    pub fn tail(&self, query: &SearchQuery) -> tokio::sync::mpsc::Receiver<LogRecord> {
        let (tx, rx) = tokio::sync::mpsc::channel(TAIL_CHANNEL);
        match Compiled::new(&query.matchers, &query.line_filters, &query.namespaces) {
            Ok(compiled) => self
                .tails
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Tail {
                    query: compiled,
                    start_ns: query.start_ns,
                    tx,
                }),
            Err(e) => tracing::debug!(error = %e, "live tail with an invalid query"),
        }
        rx
    }

    fn notify_tails(&self, cols: &Columns, base: usize, items: &[(Arc<StreamDef>, usize)]) {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.is_empty() {
            return;
        }
        tails.retain(|t| !t.tx.is_closed());
        for t in tails.iter() {
            for (def, i) in items {
                let idx = base + i;
                let ts = cols.ts[idx];
                if ts < t.start_ns
                    || !t.query.stream_matches(def)
                    || !t.query.line_matches(cols.line(idx))
                {
                    continue;
                }
                let rec = LogRecord {
                    timestamp_ns: ts,
                    labels: def.labels.clone(),
                    pod_labels: def.pod_labels.clone(),
                    line: String::from_utf8_lossy(cols.line(idx)).into_owned(),
                };
                if t.tx.try_send(rec).is_err() {
                    self.tail_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn stats(&self) -> LogStoreStats {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (mut raw_closed, mut file_closed) = (0u64, 0u64);
        let (mut lines, mut raw_mem) = (0u64, 0u64);
        for m in inner.mem_segments() {
            lines += m.cols.len() as u64;
            raw_mem += m.cols.text.len() as u64;
        }
        for s in &inner.closed {
            raw_closed += s.raw_bytes;
            file_closed += s.file_bytes;
            lines += s.lines;
        }
        LogStoreStats {
            lines,
            bytes_raw: raw_closed + raw_mem,
            bytes_stored: total_bytes(&inner),
            compression_ratio: if file_closed > 0 {
                raw_closed as f64 / file_closed as f64
            } else {
                0.0
            },
            segments: inner.closed.len() + inner.closing.len() + 1,
            dropped_segments: self.dropped_segments.load(Ordering::Relaxed),
            dropped_lines: self.dropped_lines.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            tail_dropped: self.tail_dropped.load(Ordering::Relaxed),
            sources: inner.sources.len(),
        }
    }
}

fn total_bytes(inner: &Inner) -> u64 {
    inner.closed.iter().map(|s| s.file_bytes).sum::<u64>()
        + inner.closing.iter().map(|c| c.wal_len).sum::<u64>()
        + inner.open.wal.len
}

fn merge_sources(
    into: &mut HashMap<String, SourceState>,
    from: impl Iterator<Item = (String, SourceState)>,
) {
    for (k, v) in from {
        let e = into.entry(k).or_insert(v);
        if v.offset > e.offset {
            e.offset = v.offset;
        }
        e.last_ts = e.last_ts.max(v.last_ts);
    }
}

fn apply_record(seg: &mut OpenSegment, sources: &mut HashMap<String, SourceState>, rec: WalRecord) {
    for def in rec.new_streams {
        let id = seg.streams.len() as u32;
        seg.stream_ids.insert(def.clone(), id);
        seg.streams.push(def);
    }
    merge_sources(
        sources,
        rec.sources
            .into_iter()
            .map(|(k, offset, last_ts)| (k, SourceState { offset, last_ts })),
    );
    let c = rec.columns;
    let base = seg.cols.text.len();
    for &t in &c.ts {
        seg.min_ts = seg.min_ts.min(t);
        seg.max_ts = seg.max_ts.max(t);
    }
    seg.cols.streams.extend_from_slice(&c.streams);
    seg.cols.ts.extend_from_slice(&c.ts);
    seg.cols.ends.extend(c.ends.iter().map(|e| e + base));
    seg.cols.text.extend_from_slice(&c.text);
}

fn new_open(
    dir: &Path,
    id: u64,
    sources: &HashMap<String, SourceState>,
) -> Result<OpenSegment, LogStoreError> {
    let snapshot = WalRecord {
        sources: sources
            .iter()
            .map(|(k, v)| (k.clone(), v.offset, v.last_ts))
            .collect(),
        ..Default::default()
    };
    Ok(OpenSegment {
        id,
        wal: WalFile::create(dir, id, &snapshot)?,
        streams: Vec::new(),
        stream_ids: HashMap::new(),
        cols: Columns::default(),
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        opened: Instant::now(),
    })
}

fn close_segment(
    dir: &Path,
    seg: OpenSegment,
    sources: &HashMap<String, SourceState>,
    block_raw_bytes: usize,
) -> Result<ClosedSegment, LogStoreError> {
    let sources: BTreeMap<String, SourceState> =
        sources.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let done = segment::write_closed(
        dir,
        seg.id,
        &seg.streams,
        &seg.cols,
        &sources,
        block_raw_bytes,
    )?;
    fs::remove_file(&seg.wal.path)
        .map_err(|e| io_err("remove the closed open-segment file", &seg.wal.path, e))?;
    Ok(done)
}

#[cfg(test)]
mod tests;
