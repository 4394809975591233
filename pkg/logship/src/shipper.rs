//! The shipper: finds the CRI log files under the logs directory, tails them, rotates them
//! (rename, then CRI `ReopenContainerLog`), batches entries to the [`Sink`], and checkpoints
//! offsets once the server acknowledged. Sources are identified by inode, so renames and agent
//! restarts neither lose nor repeat lines.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pods::PodLabels;
use crate::reopen::{Reopened, Reopener};
use crate::sink::{Sink, SinkError};
use crate::state::{self, SourceCheckpoint, State};
use crate::tail::{Entry, Tailer};
use crate::wire::{LogBatch, LogEntry, LogStream};
use crate::LogShipError;

/// How the shipper behaves; [`LogShipConfig::new`] has the defaults.
#[derive(Debug, Clone)]
pub struct LogShipConfig {
    pub node_name: String,
    /// Where the kubelet points containerd at: `<logs_dir>/<ns>_<pod>_<uid>/<container>/<n>.log`.
    pub logs_dir: PathBuf,
    /// Checkpoints live here (`<data-dir>/agent/logship`).
    pub state_dir: PathBuf,
    /// A container's current file is rotated once it reaches this size (kubelet `containerLogMaxSize`).
    pub max_file_bytes: u64,
    /// Files kept per container, the current one included (kubelet `containerLogMaxFiles`).
    pub max_files: usize,
    /// Pause between rounds when there is nothing to send.
    pub poll_interval: Duration,
    /// Largest batch (entry text bytes, roughly).
    pub batch_max_bytes: usize,
    /// Entries read but not yet acknowledged, in memory; reading pauses at this bound (the files
    /// on disk are the rest of the buffer).
    pub buffer_max_bytes: usize,
    /// Bytes read from one file per read call.
    pub read_chunk: usize,
    /// Rounds without new data after which a dangling partial line is shipped as it is.
    pub idle_flush_rounds: u32,
    /// Longest joined entry; longer lines are cut into several entries.
    pub max_entry_bytes: usize,
    /// Rounds a shipped source whose file is no longer listed is remembered (a file missed by
    /// one listing continues as the same source when it shows up again).
    pub forget_after_rounds: u32,
    /// Retry backoff bounds while the server is away.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Send bodies with `Content-Encoding: zstd`.
    pub zstd: bool,
}

impl LogShipConfig {
    /// The defaults: 10 MiB files, 5 files per container, 1 s polls, 1 MiB batches, 16 MiB buffer.
    pub fn new(node_name: String, logs_dir: PathBuf, state_dir: PathBuf) -> LogShipConfig {
        LogShipConfig {
            node_name,
            logs_dir,
            state_dir,
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
            poll_interval: Duration::from_secs(1),
            batch_max_bytes: 1024 * 1024,
            buffer_max_bytes: 16 * 1024 * 1024,
            read_chunk: 256 * 1024,
            idle_flush_rounds: 5,
            max_entry_bytes: 1024 * 1024,
            forget_after_rounds: 60,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            zstd: true,
        }
    }
}

/// Counters of the shipper (cumulative since start).
#[derive(Debug, Default)]
pub struct Stats {
    pub entries_shipped: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_failed: AtomicU64,
    pub batches_rejected: AtomicU64,
    /// Entries the server refused for good (logged).
    pub entries_dropped: AtomicU64,
    /// Bytes of log files that vanished or were rotated away before being read (logged).
    pub gap_bytes: AtomicU64,
    pub rotations: AtomicU64,
    pub rotation_failures: AtomicU64,
    pub parse_errors: AtomicU64,
    /// Bytes of entries read and not yet acknowledged.
    pub buffered_bytes: AtomicU64,
}

/// A plain copy of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub entries_shipped: u64,
    pub batches_sent: u64,
    pub batches_failed: u64,
    pub batches_rejected: u64,
    pub entries_dropped: u64,
    pub gap_bytes: u64,
    pub rotations: u64,
    pub rotation_failures: u64,
    pub parse_errors: u64,
    pub buffered_bytes: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            entries_shipped: l(&self.entries_shipped),
            batches_sent: l(&self.batches_sent),
            batches_failed: l(&self.batches_failed),
            batches_rejected: l(&self.batches_rejected),
            entries_dropped: l(&self.entries_dropped),
            gap_bytes: l(&self.gap_bytes),
            rotations: l(&self.rotations),
            rotation_failures: l(&self.rotation_failures),
            parse_errors: l(&self.parse_errors),
            buffered_bytes: l(&self.buffered_bytes),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Nothing to send.
    Idle,
    /// A batch was stored; `more` = entries are still waiting.
    Shipped { entries: usize, more: bool },
    /// The batch was not stored; it is sent again after a backoff.
    Failed,
    /// The server refused the batch for good; its entries were dropped (counted, logged).
    Rejected { entries: usize },
}

/// The container instance a file belongs to, from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerRef {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    restart: u32,
}

impl ContainerRef {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.uid, self.container, self.restart)
    }
}

/// A log file found on disk.
#[derive(Debug)]
struct Found {
    container: ContainerRef,
    path: PathBuf,
    inode: u64,
    size: u64,
    live: bool,
}

struct Source {
    id: String,
    container: ContainerRef,
    generation: u64,
    path: PathBuf,
    inode: u64,
    file: Option<File>,
    tailer: Tailer,
    /// Entries read and not acknowledged, by offset.
    queue: VecDeque<Entry>,
    /// How many of `queue`'s first entries are in the batch in flight.
    in_flight: usize,
    shipped: Option<u64>,
    /// Lines at or after the resume point belonging to acknowledged entries.
    ack_skip: BTreeSet<u64>,
    size: u64,
    live: bool,
    rotated: bool,
    /// No writer appends any more (rotated and reopened, or the file vanished).
    finished: bool,
    vanished: bool,
    /// Another file took this one's inode (truncated or deleted and recreated).
    replaced: bool,
    /// Scans since the file was last listed.
    vanished_rounds: u32,
    idle_rounds: u32,
    /// Rounds to wait before trying to rotate again (after a failure, or the container stopped).
    rotate_pause: u32,
    pod_labels: BTreeMap<String, String>,
}

impl Source {
    fn resume_at(&self) -> u64 {
        let mut at = self.tailer.pos();
        if let Some(o) = self.tailer.held_from() {
            at = at.min(o);
        }
        if let Some(e) = self.queue.front() {
            at = at.min(e.offset);
        }
        at
    }

    fn checkpoint(&self) -> SourceCheckpoint {
        SourceCheckpoint {
            source: self.id.clone(),
            container: self.container.key(),
            generation: self.generation,
            path: self.path.clone(),
            inode: self.inode,
            resume_at: self.resume_at(),
            shipped: self.shipped,
            skip: self.ack_skip.iter().copied().collect(),
            size_seen: self.size,
            rotated: self.rotated,
        }
    }

    /// Everything read, shipped and acknowledged, and nothing more will come.
    fn drained(&self) -> bool {
        self.file.is_none() && self.queue.is_empty() && !self.tailer.holds_entries()
    }
}

/// Ships the logs of one node.
pub struct Shipper {
    config: LogShipConfig,
    sink: Arc<dyn Sink>,
    reopener: Arc<dyn Reopener>,
    pods: Arc<dyn PodLabels>,
    sources: Vec<Source>,
    generations: BTreeMap<String, u64>,
    /// Checkpoints loaded at start, not yet matched to a file (by inode).
    restored: HashMap<u64, SourceCheckpoint>,
    batch: Option<LogBatch>,
    buffered: usize,
    backoff: Duration,
    stats: Arc<Stats>,
}

impl Shipper {
    /// Loads the checkpoints of `config.state_dir`.
    pub fn new(
        config: LogShipConfig,
        sink: Arc<dyn Sink>,
        reopener: Arc<dyn Reopener>,
        pods: Arc<dyn PodLabels>,
    ) -> Result<Shipper, LogShipError> {
        let state = state::load(&config.state_dir)?;
        let restored = state.sources.into_iter().map(|c| (c.inode, c)).collect();
        Ok(Shipper {
            backoff: config.retry_min,
            config,
            sink,
            reopener,
            pods,
            sources: Vec::new(),
            generations: state.generations,
            restored,
            batch: None,
            buffered: 0,
            stats: Arc::new(Stats::default()),
        })
    }

    /// Counts into `stats` from now on (counters owned by the caller, e.g. for `/metrics`).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Shipper {
        self.stats = stats;
        self
    }

    /// The shipper's counters (shared; they keep counting after `run` took the shipper).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Rounds until `shutdown`: pauses `poll_interval` when idle, backs off while the server is away.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(dir = %self.config.logs_dir.display(), "shipping container logs");
        loop {
            let wait = match self.round().await {
                Round::Shipped { more: true, .. } | Round::Rejected { .. } => Duration::ZERO,
                Round::Shipped { .. } | Round::Idle => self.config.poll_interval,
                Round::Failed => self.backoff,
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving the log shipping checkpoints at shutdown failed");
        }
    }

    /// One round: find files, rotate the big ones, read, send one batch.
    pub async fn round(&mut self) -> Round {
        self.scan();
        self.rotate().await;
        self.read();
        self.ship().await
    }

    fn scan(&mut self) {
        let found = match scan_logs_dir(&self.config.logs_dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "listing the container logs failed");
                return;
            }
        };
        let labels = self.pods.snapshot();
        let mut seen = BTreeSet::new();
        for f in found {
            seen.insert(f.inode);
            let key = f.container.key();
            let existing = self
                .sources
                .iter_mut()
                .find(|s| s.inode == f.inode && s.container.key() == key && !s.replaced);
            if let Some(s) = existing {
                if f.size < s.size {
                    // truncated or replaced under the same inode: the old one is over
                    s.replaced = true;
                    s.vanished = true;
                    s.finished = true;
                } else {
                    if s.vanished {
                        // missed by an earlier listing: the same file, continue where it was
                        s.vanished = false;
                        s.vanished_rounds = 0;
                        s.finished = s.rotated;
                        if s.file.is_none() && !s.rotated {
                            s.file = File::open(&f.path).ok();
                        }
                    }
                    s.path = f.path;
                    s.size = f.size;
                    s.live = f.live;
                    continue;
                }
            }
            let restored = match self.restored.remove(&f.inode) {
                Some(c) if c.container == key && c.resume_at <= f.size => Some(c),
                _ => None,
            };
            let file = match File::open(&f.path) {
                Ok(file) => file,
                Err(e) => {
                    tracing::debug!(path = %f.path.display(), error = %e, "opening a log file failed");
                    continue;
                }
            };
            let (generation, tailer, shipped, ack_skip, rotated) = match restored {
                Some(c) => {
                    let skip: BTreeSet<u64> = c.skip.iter().copied().collect();
                    let tailer = Tailer::new(
                        c.resume_at,
                        skip.clone(),
                        c.shipped,
                        self.config.max_entry_bytes,
                    );
                    (c.generation, tailer, c.shipped, skip, c.rotated)
                }
                None => {
                    let next = self.generations.entry(key.clone()).or_insert(0);
                    let generation = *next;
                    *next += 1;
                    let tailer = Tailer::new(0, BTreeSet::new(), None, self.config.max_entry_bytes);
                    (generation, tailer, None, BTreeSet::new(), !f.live)
                }
            };
            let next = self.generations.entry(key.clone()).or_insert(0);
            *next = (*next).max(generation + 1);
            self.sources.push(Source {
                id: format!(
                    "{}/{}/{}/{}/{generation}",
                    self.config.node_name,
                    f.container.uid,
                    f.container.container,
                    f.container.restart
                ),
                pod_labels: labels.get(&f.container.uid).cloned().unwrap_or_default(),
                container: f.container,
                generation,
                path: f.path,
                inode: f.inode,
                file: Some(file),
                tailer,
                queue: VecDeque::new(),
                in_flight: 0,
                shipped,
                ack_skip,
                size: f.size,
                live: f.live,
                // a rotated file nobody writes to any more
                finished: rotated && !f.live,
                rotated: rotated && !f.live,
                vanished: false,
                replaced: false,
                vanished_rounds: 0,
                idle_rounds: 0,
                rotate_pause: 0,
            });
        }
        for s in &mut self.sources {
            if !seen.contains(&s.inode) {
                s.vanished = true;
                s.finished = true;
                s.live = false;
                s.vanished_rounds += 1;
            }
            if let Some(l) = labels.get(&s.container.uid) {
                if *l != s.pod_labels {
                    s.pod_labels = l.clone();
                }
            }
        }
        // checkpoints whose file is gone: what was not shipped of them is a gap
        for (_, c) in self.restored.drain() {
            if c.size_seen > c.resume_at {
                let lost = c.size_seen - c.resume_at;
                add(&self.stats.gap_bytes, lost);
                tracing::warn!(source = c.source, path = %c.path.display(), lost_bytes = lost,
                    "a log file vanished while the agent was down before all of it was shipped");
            }
        }
    }

    async fn rotate(&mut self) {
        for i in 0..self.sources.len() {
            let s = &mut self.sources[i];
            if !s.live || s.finished || s.size < self.config.max_file_bytes {
                continue;
            }
            if s.rotate_pause > 0 {
                s.rotate_pause -= 1;
                continue;
            }
            let live_path = s.path.clone();
            let rotated_path = rotated_name(&live_path);
            if let Err(e) = std::fs::rename(&live_path, &rotated_path) {
                tracing::warn!(path = %live_path.display(), error = %e, "renaming a log file for rotation failed");
                add(&self.stats.rotation_failures, 1);
                s.rotate_pause = 30;
                continue;
            }
            let c = s.container.clone();
            let result = self.reopener.reopen(&c.uid, &c.container, c.restart).await;
            let s = &mut self.sources[i];
            match result {
                Ok(Reopened::Reopened) => {
                    s.path = rotated_path;
                    s.live = false;
                    s.rotated = true;
                    s.finished = true;
                    add(&self.stats.rotations, 1);
                    tracing::debug!(source = s.id, "rotated a container log file");
                }
                outcome => {
                    // nobody would write a new file: put the file back where kubectl logs reads it
                    if let Err(e) = std::fs::rename(&rotated_path, &live_path) {
                        tracing::error!(path = %rotated_path.display(), error = %e,
                            "renaming a log file back after a failed reopen failed; move it back by hand");
                    }
                    s.rotate_pause = 60;
                    if let Err(e) = outcome {
                        add(&self.stats.rotation_failures, 1);
                        tracing::warn!(source = s.id, error = %e, "the runtime did not reopen a container log; rotation postponed");
                    }
                    continue;
                }
            }
            let key = c.key();
            self.remove_old_rotated(&key);
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "saving the log shipping checkpoints after a rotation failed");
            }
        }
    }

    /// Deletes the oldest rotated files of a container beyond `max_files - 1`; an unread rest is
    /// a counted gap.
    fn remove_old_rotated(&mut self, key: &str) {
        let mut rotated: Vec<usize> = (0..self.sources.len())
            .filter(|&i| {
                let s = &self.sources[i];
                s.rotated && !s.vanished && s.container.key() == key
            })
            .collect();
        rotated.sort_by_key(|&i| self.sources[i].generation);
        let keep = self.config.max_files.saturating_sub(1);
        let excess = rotated.len().saturating_sub(keep);
        for &i in rotated.iter().take(excess) {
            let s = &mut self.sources[i];
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(path = %s.path.display(), error = %e, "removing an old rotated log file failed");
                continue;
            }
            s.vanished = true;
            s.replaced = true;
            if s.file.take().is_some() {
                let unread = s.size.saturating_sub(s.tailer.pos());
                if unread > 0 {
                    add(&self.stats.gap_bytes, unread);
                    tracing::warn!(source = s.id, lost_bytes = unread,
                        "a rotated log file was removed before it was shipped (server away too long)");
                }
                let mut out = Vec::new();
                s.tailer.flush(&mut out);
                self.buffered += out.iter().map(Entry::size).sum::<usize>();
                s.queue.extend(out);
            }
        }
    }

    fn read(&mut self) {
        let mut buf = vec![0u8; self.config.read_chunk];
        for s in &mut self.sources {
            let Some(file) = &s.file else { continue };
            let mut grew = false;
            let mut out = Vec::new();
            loop {
                if self.buffered >= self.config.buffer_max_bytes {
                    break;
                }
                let n = match file.read_at(&mut buf, s.tailer.pos()) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(path = %s.path.display(), error = %e, "reading a log file failed");
                        break;
                    }
                };
                let at_eof = n < buf.len();
                let final_eof = at_eof && s.finished;
                let mut used = s.tailer.feed(&buf[..n], final_eof, &mut out);
                if used == 0 && n == buf.len() {
                    // one line longer than a read: take it as it is
                    used = s.tailer.feed(&buf[..n], true, &mut out);
                }
                if used > 0 {
                    grew = true;
                }
                self.buffered += out.iter().map(Entry::size).sum::<usize>();
                s.queue.extend(out.drain(..));
                if final_eof {
                    s.tailer.flush(&mut out);
                    self.buffered += out.iter().map(Entry::size).sum::<usize>();
                    s.queue.extend(out.drain(..));
                    s.file = None;
                    break;
                }
                if at_eof {
                    break;
                }
            }
            if grew {
                s.idle_rounds = 0;
            } else if s.tailer.holds_entries() {
                s.idle_rounds += 1;
                if s.idle_rounds >= self.config.idle_flush_rounds {
                    s.tailer.flush(&mut out);
                    self.buffered += out.iter().map(Entry::size).sum::<usize>();
                    s.queue.extend(out.drain(..));
                }
            }
            add(
                &self.stats.parse_errors,
                std::mem::take(&mut s.tailer.parse_errors),
            );
        }
        self.stats
            .buffered_bytes
            .store(self.buffered as u64, Ordering::Relaxed);
    }

    fn build_batch(&mut self) -> Option<LogBatch> {
        let mut streams: Vec<LogStream> = Vec::new();
        let mut bytes = 0;
        for s in &mut self.sources {
            s.in_flight = 0;
            for e in &s.queue {
                if bytes >= self.config.batch_max_bytes {
                    break;
                }
                bytes += e.size();
                let stream = if e.stderr { "stderr" } else { "stdout" };
                let same = streams.last().is_some_and(|l| {
                    l.source == s.id && l.labels.get("stream").map(String::as_str) == Some(stream)
                });
                if !same {
                    let c = &s.container;
                    let labels = BTreeMap::from([
                        ("namespace".to_string(), c.namespace.clone()),
                        ("pod".to_string(), c.pod.clone()),
                        ("container".to_string(), c.container.clone()),
                        ("node".to_string(), self.config.node_name.clone()),
                        ("stream".to_string(), stream.to_string()),
                    ]);
                    streams.push(LogStream {
                        labels,
                        pod_labels: s.pod_labels.clone(),
                        source: s.id.clone(),
                        entries: Vec::new(),
                    });
                }
                if let Some(last) = streams.last_mut() {
                    last.entries.push(LogEntry {
                        offset: e.offset,
                        timestamp_ns: e.timestamp_ns,
                        line: e.line.clone(),
                    });
                }
                s.in_flight += 1;
            }
        }
        if streams.is_empty() {
            return None;
        }
        Some(LogBatch {
            node: self.config.node_name.clone(),
            streams,
        })
    }

    async fn ship(&mut self) -> Round {
        if self.batch.is_none() {
            self.batch = self.build_batch();
        }
        let Some(batch) = &self.batch else {
            self.forget_drained();
            return Round::Idle;
        };
        let entries: usize = batch.streams.iter().map(|s| s.entries.len()).sum();
        let result = self.sink.send(batch).await;
        match result {
            Ok(()) => {
                add(&self.stats.batches_sent, 1);
                add(&self.stats.entries_shipped, entries as u64);
                self.backoff = self.config.retry_min;
                self.acknowledge();
                let more = self.sources.iter().any(|s| !s.queue.is_empty());
                Round::Shipped { entries, more }
            }
            Err(SinkError::Rejected { status, message }) => {
                add(&self.stats.batches_rejected, 1);
                add(&self.stats.entries_dropped, entries as u64);
                tracing::error!(
                    status,
                    error = message,
                    entries,
                    "the server refused a log batch; its entries are dropped"
                );
                self.acknowledge();
                Round::Rejected { entries }
            }
            Err(SinkError::Retry(message)) => {
                add(&self.stats.batches_failed, 1);
                tracing::debug!(error = message, "shipping logs failed; retrying");
                self.backoff = (self.backoff * 2).min(self.config.retry_max);
                Round::Failed
            }
        }
    }

    /// The batch in flight was stored (or refused for good): advance and checkpoint.
    fn acknowledge(&mut self) {
        self.batch = None;
        for s in &mut self.sources {
            for _ in 0..s.in_flight {
                let Some(e) = s.queue.pop_front() else { break };
                self.buffered = self.buffered.saturating_sub(e.size());
                s.shipped = Some(e.offset);
                s.ack_skip.extend(e.lines.iter().skip(1));
            }
            s.in_flight = 0;
            let resume = s.resume_at();
            s.ack_skip.retain(|&o| o >= resume);
        }
        self.forget_drained();
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving the log shipping checkpoints failed; retrying at the next batch");
        }
    }

    /// Drops sources whose file is gone and whose entries are all acknowledged.
    fn forget_drained(&mut self) {
        if self.batch.is_some() {
            return;
        }
        let forget = self.config.forget_after_rounds;
        let before = self.sources.len();
        self.sources
            .retain(|s| !(s.vanished && s.drained() && (s.replaced || s.vanished_rounds > forget)));
        if self.sources.len() != before {
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "saving the log shipping checkpoints failed");
            }
        }
    }

    /// Writes the checkpoints now.
    pub fn save(&self) -> Result<(), LogShipError> {
        let state = State {
            generations: self.generations.clone(),
            sources: self
                .sources
                .iter()
                .filter(|s| !s.replaced)
                .map(Source::checkpoint)
                .collect(),
        };
        state::save(&self.config.state_dir, &state)
    }
}

/// `<dir>/<n>.log` → `<dir>/<n>.log.<UTC yyyymmdd-hhmmss>` (with `-<k>` when taken), as the kubelet names
/// rotated files.
fn rotated_name(live: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let base = live.as_os_str().to_string_lossy().into_owned();
    let mut candidate = PathBuf::from(format!("{base}.{stamp}"));
    let mut k = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{stamp}-{k}"));
        k += 1;
    }
    candidate
}

/// Lists `<logs_dir>/<ns>_<pod>_<uid>/<container>/<n>.log[.<suffix>]`.
fn scan_logs_dir(logs_dir: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for pod_dir in std::fs::read_dir(logs_dir)? {
        let pod_dir = pod_dir?;
        let name = pod_dir.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '_');
        let (Some(namespace), Some(pod), Some(uid)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(containers) = std::fs::read_dir(pod_dir.path()) else {
            continue;
        };
        for container_dir in containers.flatten() {
            let container = container_dir.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(container_dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let file_name = file.file_name().to_string_lossy().into_owned();
                let Some((restart, live)) = parse_log_name(&file_name) else {
                    continue;
                };
                let Ok(meta) = file.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                found.push(Found {
                    container: ContainerRef {
                        namespace: namespace.to_string(),
                        pod: pod.to_string(),
                        uid: uid.to_string(),
                        container: container.clone(),
                        restart,
                    },
                    path: file.path(),
                    inode: meta.ino(),
                    size: meta.len(),
                    live,
                });
            }
        }
    }
    Ok(found)
}

/// `3.log` → (3, live), `3.log.20261205-101010` → (3, rotated); temp files (`.tmp`) are not logs.
fn parse_log_name(name: &str) -> Option<(u32, bool)> {
    let (restart, rest) = name.split_once(".log")?;
    let restart = restart.parse().ok()?;
    match rest {
        "" => Some((restart, true)),
        r if r.starts_with('.') && !r.ends_with(".tmp") && !r.ends_with(".gz") => {
            Some((restart, false))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "shipper_tests.rs"]
mod tests;
