//! The store: series table and postings, the head (open Gorilla chunks per tier, downsampling buckets),
//! the write-ahead log, block flushing and merging, retention per tier, the size cap, and queries.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::block::{self, Buf, Rd, StoredChunk};
use crate::codec::{self, ChunkEncoder};
use crate::index::{Compiled, Postings};
use crate::labels::Packed;
use crate::wal::{Record, Wal};
use crate::{
    AppendStats, Matcher, Series, SeriesPoints, TierSamples, TsdbConfig, TsdbError, TsdbStats,
};

const TIERS: usize = 3;
const RAW: usize = 0;
/// Bucket width of each tier in ms (raw has none).
const WIDTH: [i64; TIERS] = [0, 60_000, 3_600_000];
/// Samples per chunk of each tier: 20 min of raw at 10 s (as Prometheus' 120), 1 h of minutes,
/// 1 day of hours. Shorter downsampled chunks keep the open ones (held in memory per series) small.
const CHUNK_SAMPLES: [u16; TIERS] = [codec::CHUNK_SAMPLES, 60, 24];
/// A flush merges new chunks into the tier's newest block while that block spans less than this.
const BLOCK_SPAN: [i64; TIERS] = [2 * 3_600_000, 86_400_000, 30 * 86_400_000];
/// Blocks larger than this are not merged into.
const MERGE_MAX_BYTES: u64 = 512 << 20;
/// The head is flushed on its own once it holds this much raw time or log, or closed chunks of
/// `TsdbConfig::head_closed_bytes`: closed chunks wait in memory only until the next flush.
const AUTO_FLUSH_SPAN_MS: i64 = 600_000;
const AUTO_FLUSH_WAL_BYTES: u64 = 256 << 20;
const STATE_FILE: &str = "head.state";

/// The time-series store. `Send + Sync`; share it as `Arc<Tsdb>`.
pub struct Tsdb {
    inner: RwLock<Inner>,
}

/// The open bucket of a downsampled tier.
#[derive(Clone, Copy)]
struct Bucket {
    start: i64,
    last_t: i64,
    last_v: f64,
    sum: f64,
    count: u32,
}

impl Bucket {
    fn point(&self, counter: bool) -> (i64, f64) {
        if counter {
            (self.last_t, self.last_v)
        } else {
            (self.last_t, self.sum / f64::from(self.count))
        }
    }
}

struct HeadSeries {
    labels: Packed,
    counter: bool,
    first_t: i64,
    last_t: i64,
    open: [ChunkEncoder; TIERS],
    closed: [Vec<StoredChunk>; TIERS],
    /// The open buckets of the downsampled tiers (`tier - 1`; raw has none).
    buckets: [Option<Bucket>; TIERS - 1],
    /// Newest time of this series already in blocks, per tier.
    persisted: [i64; TIERS],
}

impl HeadSeries {
    fn new(labels: &BTreeMap<String, String>) -> Self {
        let name = labels.get("__name__").map(String::as_str).unwrap_or("");
        let counter = ["_total", "_count", "_sum", "_bucket"]
            .iter()
            .any(|s| name.ends_with(s));
        HeadSeries {
            labels: Packed::pack(labels),
            counter,
            first_t: i64::MAX,
            last_t: i64::MIN,
            open: Default::default(),
            closed: Default::default(),
            buckets: [None; TIERS - 1],
            persisted: [i64::MIN; TIERS],
        }
    }

    /// Feeds one accepted sample into every tier; returns the bytes of the chunks it closed.
    fn apply(&mut self, t: i64, v: f64) -> usize {
        self.last_t = t;
        self.first_t = self.first_t.min(t);
        let mut closed = 0;
        if t > self.persisted[RAW] {
            closed += self.push(RAW, t, v);
        }
        for (tier, width) in WIDTH.iter().enumerate().skip(1) {
            let start = t.div_euclid(*width) * width;
            match &mut self.buckets[tier - 1] {
                Some(b) if b.start == start => {
                    b.last_t = t;
                    b.last_v = v;
                    b.sum += v;
                    b.count += 1;
                }
                slot => {
                    let done = slot.replace(Bucket {
                        start,
                        last_t: t,
                        last_v: v,
                        sum: v,
                        count: 1,
                    });
                    if let Some(done) = done {
                        let (pt, pv) = done.point(self.counter);
                        if pt > self.persisted[tier] {
                            closed += self.push(tier, pt, pv);
                        }
                    }
                }
            }
        }
        closed
    }

    /// Appends to the tier's open chunk, closing it first when full; returns the closed bytes.
    fn push(&mut self, tier: usize, t: i64, v: f64) -> usize {
        let mut closed = 0;
        if self.open[tier].len() >= CHUNK_SAMPLES[tier] {
            let full = std::mem::take(&mut self.open[tier]);
            let chunk = stored(&full);
            closed = chunk.bytes.len();
            self.closed[tier].push(chunk);
        }
        self.open[tier].push(t, v);
        closed
    }

    fn heap_bytes(&self) -> usize {
        let labels = self.labels.heap_bytes();
        let open: usize = self.open.iter().map(|o| o.byte_len() + 96).sum();
        let closed: usize = self
            .closed
            .iter()
            .flatten()
            .map(|c| c.bytes.capacity() + 48)
            .sum();
        labels + open + closed + 200
    }
}

fn stored(enc: &ChunkEncoder) -> StoredChunk {
    StoredChunk {
        min_t: enc.min_t(),
        max_t: enc.max_t(),
        count: enc.len(),
        bytes: enc.bytes(),
    }
}

struct Block {
    path: PathBuf,
    tier: usize,
    min_t: i64,
    max_t: i64,
    size: u64,
    info: block::BlockInfo,
}

#[derive(Default)]
struct Counters {
    out_of_order: u64,
    duplicates: u64,
    dropped_retention: u64,
    dropped_size_cap: u64,
    corrupt_skipped: u64,
}

struct Inner {
    dir: PathBuf,
    blocks_dir: PathBuf,
    config: TsdbConfig,
    series: Vec<HeadSeries>,
    /// Series id by label hash: one entry per series, no allocation of its own; the rare second
    /// series with the same hash goes to `hash_collisions`.
    by_hash: HashMap<u64, u32>,
    hash_collisions: HashMap<u64, Vec<u32>>,
    postings: Postings,
    blocks: Vec<Block>,
    wal: Wal,
    /// Per tier: data older than this may have been dropped (retention or size cap).
    horizon: [i64; TIERS],
    /// Newest sample time in the store: "now" for retention (as Prometheus does).
    max_t: i64,
    last_flush_t: i64,
    /// Bytes of the closed chunks waiting for the next flush.
    closed_bytes: usize,
    next_seq: u64,
    state_bytes: u64,
    counters: Counters,
}

use block::label_hash;

fn valid_labels(labels: &BTreeMap<String, String>) -> bool {
    labels.get("__name__").is_some_and(|n| !n.is_empty()) && labels.keys().all(|k| !k.is_empty())
}

impl Inner {
    fn lookup(&self, labels: &BTreeMap<String, String>) -> Option<u32> {
        self.lookup_hashed(label_hash(labels), labels)
    }

    /// [`Self::lookup`] with the labels' hash already computed.
    fn lookup_hashed(&self, hash: u64, labels: &BTreeMap<String, String>) -> Option<u32> {
        let same = |id: u32| self.series[id as usize].labels.eq_map(labels);
        let first = *self.by_hash.get(&hash)?;
        if same(first) {
            return Some(first);
        }
        self.hash_collisions
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| same(id))
    }

    fn get_or_create(&mut self, labels: &BTreeMap<String, String>) -> (u32, bool) {
        let hash = label_hash(labels);
        if let Some(id) = self.lookup_hashed(hash, labels) {
            return (id, false);
        }
        let id = self.series.len() as u32;
        self.postings.add(id, labels);
        match self.by_hash.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(id);
            }
            Entry::Occupied(_) => self.hash_collisions.entry(hash).or_default().push(id),
        }
        self.series.push(HeadSeries::new(labels));
        (id, true)
    }

    fn retention_ms(&self, tier: usize) -> i64 {
        let d = [
            self.config.raw_retention,
            self.config.minute_retention,
            self.config.hour_retention,
        ][tier];
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// The finest tier whose data still reaches back to `start`.
    fn tier_for(&self, start: i64) -> usize {
        (0..TIERS)
            .find(|&tier| {
                let cutoff =
                    self.horizon[tier].max(self.max_t.saturating_sub(self.retention_ms(tier)));
                start >= cutoff
            })
            .unwrap_or(TIERS - 1)
    }

    fn samples_of(
        &self,
        id: u32,
        tier: usize,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>, TsdbError> {
        let s = &self.series[id as usize];
        let mut out = Vec::new();
        let take = |out: &mut Vec<(i64, f64)>, c: &StoredChunk| -> Result<(), TsdbError> {
            if c.max_t >= start && c.min_t <= end {
                out.extend(
                    codec::decode(&c.bytes, c.count)?
                        .into_iter()
                        .filter(|(t, _)| (start..=end).contains(t)),
                );
            }
            Ok(())
        };
        for b in self
            .blocks
            .iter()
            .filter(|b| b.tier == tier && b.max_t >= start && b.min_t <= end)
        {
            for c in block::lookup(&b.path, &b.info, &s.labels.unpack())? {
                take(&mut out, &c)?;
            }
        }
        for c in &s.closed[tier] {
            take(&mut out, c)?;
        }
        if !s.open[tier].is_empty() {
            take(&mut out, &stored(&s.open[tier]))?;
        }
        if let Some(b) = tier.checked_sub(1).and_then(|i| s.buckets[i].as_ref()) {
            let (t, v) = b.point(s.counter);
            if t > s.persisted[tier] && (start..=end).contains(&t) {
                out.push((t, v));
            }
        }
        out.sort_by_key(|p| p.0);
        out.dedup_by_key(|p| p.0);
        Ok(out)
    }

    fn matching(&self, matchers: &[Matcher]) -> Result<Vec<u32>, TsdbError> {
        let compiled = matchers
            .iter()
            .map(Compiled::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .postings
            .select(&compiled, |id| &self.series[id as usize].labels))
    }

    fn overlapping(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<u32>, TsdbError> {
        Ok(self
            .matching(matchers)?
            .into_iter()
            .filter(|&id| {
                let s = &self.series[id as usize];
                s.first_t <= end && s.last_t >= start
            })
            .collect())
    }

    fn append_one(
        &mut self,
        labels: &BTreeMap<String, String>,
        samples: &[(i64, f64)],
        stats: &mut AppendStats,
    ) -> Option<(u32, Vec<(i64, f64)>)> {
        if !valid_labels(labels) {
            stats.invalid_series += 1;
            return None;
        }
        let (id, new) = self.get_or_create(labels);
        if new {
            stats.new_series += 1;
        }
        let mut last = self.series[id as usize].last_t;
        let mut accepted = Vec::with_capacity(samples.len());
        for &(t, v) in samples {
            if t > last {
                accepted.push((t, v));
                last = t;
            } else if t == last {
                stats.duplicate += 1;
            } else {
                stats.out_of_order += 1;
            }
        }
        Some((id, accepted))
    }

    /// Writes all closed chunks to blocks, the head state file, then empties the log; then applies
    /// retention and the size cap.
    fn flush(&mut self) -> Result<(), TsdbError> {
        self.wal.sync()?;
        for tier in 0..TIERS {
            self.flush_tier(tier)?;
        }
        self.closed_bytes = 0;
        self.enforce_limits();
        self.write_state()?;
        self.wal.reset()?;
        self.last_flush_t = self.max_t;
        Ok(())
    }

    fn flush_tier(&mut self, tier: usize) -> Result<(), TsdbError> {
        let mut fresh: BTreeMap<u32, Vec<StoredChunk>> = BTreeMap::new();
        let mut new_min = i64::MAX;
        let mut new_max = i64::MIN;
        for (id, s) in self.series.iter_mut().enumerate() {
            if s.closed[tier].is_empty() {
                continue;
            }
            let chunks = std::mem::take(&mut s.closed[tier]);
            for c in &chunks {
                new_min = new_min.min(c.min_t);
                new_max = new_max.max(c.max_t);
            }
            fresh.insert(id as u32, chunks);
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // Merge into the tier's newest block while it is small and spans little time.
        let merge_into = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.tier == tier)
            .max_by_key(|(_, b)| b.min_t)
            .filter(|(_, b)| {
                b.size < MERGE_MAX_BYTES && new_max.saturating_sub(b.min_t) < BLOCK_SPAN[tier]
            })
            .map(|(i, _)| i);
        let name = format!("{tier}-{:016}.blk", self.next_seq);
        self.next_seq += 1;
        let mut w = block::BlockWriter::create(&self.blocks_dir, &name, tier as u8)?;
        let mut newest: Vec<(u32, i64)> = fresh
            .iter()
            .map(|(id, c)| (*id, c.iter().map(|c| c.max_t).max().unwrap_or(i64::MIN)))
            .collect();
        if let Some(i) = merge_into {
            // Stream the old block through, one series at a time, adding the new chunks.
            let b = &self.blocks[i];
            let (path, info) = (b.path.clone(), b.info.clone());
            block::for_each_series(&path, &info, |labels, mut chunks| {
                if let Some(id) = self.lookup(&labels) {
                    if let Some(more) = fresh.remove(&id) {
                        chunks.extend(more);
                    }
                }
                w.add(&labels, &chunks)
            })?;
        }
        for (id, chunks) in &fresh {
            w.add(&self.series[*id as usize].labels.unpack(), chunks)?;
        }
        drop(fresh);
        let (info, size) = w.finish()?;
        let path = self.blocks_dir.join(&name);
        self.blocks.push(Block {
            path,
            tier,
            min_t: info.min_t,
            max_t: info.max_t,
            size,
            info,
        });
        newest.sort_unstable();
        for (id, t) in newest {
            let s = &mut self.series[id as usize];
            s.persisted[tier] = s.persisted[tier].max(t);
        }
        if let Some(i) = merge_into {
            let old = self.blocks.remove(i);
            if let Err(e) = fs::remove_file(&old.path) {
                tracing::warn!(path = %old.path.display(), error = %e, "tsdb: could not remove a merged block");
            }
        }
        Ok(())
    }

    /// Indexes a block read at open under series ids (creating series as needed).
    fn register_block(
        &mut self,
        path: &Path,
        info: block::BlockInfo,
        series: Vec<block::LoadedSeries>,
        size: u64,
    ) -> Block {
        let tier = usize::from(info.tier);
        for e in series {
            let (id, _) = self.get_or_create(&e.labels);
            let s = &mut self.series[id as usize];
            s.persisted[tier] = s.persisted[tier].max(e.max_t);
            s.first_t = s.first_t.min(e.min_t);
        }
        Block {
            path: path.to_path_buf(),
            tier,
            min_t: info.min_t,
            max_t: info.max_t,
            size,
            info,
        }
    }

    fn drop_block(&mut self, i: usize) {
        let b = self.blocks.remove(i);
        self.horizon[b.tier] = self.horizon[b.tier].max(b.max_t.saturating_add(1));
        if let Err(e) = fs::remove_file(&b.path) {
            tracing::warn!(path = %b.path.display(), error = %e, "tsdb: could not remove a dropped block");
        }
    }

    /// Retention per tier, then the size cap: oldest blocks of the finest tier go first, so the
    /// long, compact history is the last to go.
    fn enforce_limits(&mut self) {
        let mut i = 0;
        while i < self.blocks.len() {
            let b = &self.blocks[i];
            if b.max_t < self.max_t.saturating_sub(self.retention_ms(b.tier)) {
                tracing::info!(path = %b.path.display(), "tsdb: block past retention dropped");
                self.drop_block(i);
                self.counters.dropped_retention += 1;
            } else {
                i += 1;
            }
        }
        loop {
            let total = self.disk_bytes();
            if total <= self.config.max_bytes || self.blocks.is_empty() {
                break;
            }
            let Some((victim, _)) = self
                .blocks
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| (b.tier, b.min_t))
            else {
                break;
            };
            tracing::warn!(
                path = %self.blocks[victim].path.display(),
                total, cap = self.config.max_bytes,
                "tsdb: size cap reached, oldest block dropped"
            );
            self.drop_block(victim);
            self.counters.dropped_size_cap += 1;
        }
    }

    fn disk_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.size).sum::<u64>() + self.wal.len() + self.state_bytes
    }

    fn write_state(&mut self) -> Result<(), TsdbError> {
        let mut w = block::SealedWriter::create(&self.dir, STATE_FILE, block::STATE_MAGIC)?;
        let mut b = Buf::default();
        for h in self.horizon {
            b.i64(h);
        }
        b.u32(self.series.len() as u32);
        w.put(&b.0)?;
        for s in &self.series {
            let mut b = Buf::default();
            b.labels(&s.labels.unpack());
            b.i64(s.first_t);
            b.i64(s.last_t);
            // the state file keeps a slot per tier; raw's is always empty
            b.u8(0);
            for bucket in &s.buckets {
                match bucket {
                    None => b.u8(0),
                    Some(k) => {
                        b.u8(1);
                        b.i64(k.start);
                        b.i64(k.last_t);
                        b.f64(k.last_v);
                        b.f64(k.sum);
                        b.u32(k.count);
                    }
                }
            }
            for o in &s.open {
                b.u16(o.len());
                b.bytes(&o.bytes());
            }
            w.put(&b.0)?;
        }
        self.state_bytes = w.finish()?;
        Ok(())
    }

    /// Loads the head state written by the last flush; series keep `last_t` from it so the log
    /// replays exactly the samples after it.
    fn load_state(&mut self) -> Result<(), TsdbError> {
        let path = self.dir.join(STATE_FILE);
        let file = match fs::read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TsdbError::io(&path, e)),
        };
        self.state_bytes = file.len() as u64;
        let body = match block::unseal(block::STATE_MAGIC, &file) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e,
                    "tsdb: head state is corrupt and skipped; the open chunks since the last flush are lost");
                self.counters.corrupt_skipped += 1;
                return Ok(());
            }
        };
        let mut r = Rd::new(body);
        for h in &mut self.horizon {
            *h = r.i64()?;
        }
        let n = r.u32()?;
        for _ in 0..n {
            let labels = r.labels()?;
            let (id, _) = self.get_or_create(&labels);
            let first_t = r.i64()?;
            let last_t = r.i64()?;
            let mut buckets = [None; TIERS];
            for slot in &mut buckets {
                if r.u8()? == 1 {
                    *slot = Some(Bucket {
                        start: r.i64()?,
                        last_t: r.i64()?,
                        last_v: r.f64()?,
                        sum: r.f64()?,
                        count: r.u32()?,
                    });
                }
            }
            let s = &mut self.series[id as usize];
            s.first_t = s.first_t.min(first_t);
            s.last_t = last_t;
            s.buckets = [buckets[1], buckets[2]];
            for tier in 0..TIERS {
                let count = r.u16()?;
                let bytes = r.bytes()?;
                // Keep only what no block holds yet (a crash between a block and this file).
                let mut enc = ChunkEncoder::with_capacity(bytes.len());
                for (t, v) in codec::decode(bytes, count)? {
                    if t > s.persisted[tier] {
                        enc.push(t, v);
                    }
                }
                s.open[tier] = enc;
            }
        }
        Ok(())
    }

    fn stats(&self) -> TsdbStats {
        let mut samples = TierSamples::default();
        let mut chunk_bytes = TierSamples::default();
        let add = |t: &mut TierSamples, tier: usize, n: u64| match tier {
            0 => t.raw += n,
            1 => t.minute += n,
            _ => t.hour += n,
        };
        for b in &self.blocks {
            add(&mut samples, b.tier, b.info.samples);
            add(&mut chunk_bytes, b.tier, b.info.chunk_bytes);
        }
        let mut mem = self.postings.heap_bytes()
            + self.by_hash.capacity() * 16
            + self.hash_collisions.len() * 64;
        for s in &self.series {
            for tier in 0..TIERS {
                let closed: u64 = s.closed[tier].iter().map(|c| u64::from(c.count)).sum();
                add(&mut samples, tier, closed + u64::from(s.open[tier].len()));
                let cb: u64 = s.closed[tier].iter().map(|c| c.bytes.len() as u64).sum();
                add(&mut chunk_bytes, tier, cb + s.open[tier].byte_len() as u64);
            }
            mem += s.heap_bytes();
        }
        mem += self.blocks.len() * 256;
        TsdbStats {
            series: self.series.len() as u64,
            bytes_per_sample: if samples.raw > 0 {
                chunk_bytes.raw as f64 / samples.raw as f64
            } else {
                0.0
            },
            samples,
            chunk_bytes,
            blocks: self.blocks.len() as u64,
            bytes_on_disk: self.disk_bytes(),
            bytes_in_memory: mem as u64,
            out_of_order_dropped: self.counters.out_of_order,
            duplicates_dropped: self.counters.duplicates,
            blocks_dropped_retention: self.counters.dropped_retention,
            blocks_dropped_size_cap: self.counters.dropped_size_cap,
            corrupt_blocks_skipped: self.counters.corrupt_skipped,
        }
    }
}

impl Tsdb {
    /// Opens the store under `dir` (created if missing): loads the blocks (a corrupt or torn one is
    /// logged, renamed to `*.corrupt` and never served), the head state and replays the log.
    pub fn open(dir: &Path, config: TsdbConfig) -> Result<Tsdb, TsdbError> {
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir).map_err(|e| TsdbError::io(&blocks_dir, e))?;
        let (wal, records) = Wal::open(dir)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            blocks_dir: blocks_dir.clone(),
            config,
            series: Vec::new(),
            by_hash: HashMap::new(),
            hash_collisions: HashMap::new(),
            postings: Postings::default(),
            blocks: Vec::new(),
            wal,
            horizon: [i64::MIN; TIERS],
            max_t: i64::MIN,
            last_flush_t: i64::MIN,
            closed_bytes: 0,
            next_seq: 0,
            state_bytes: 0,
            counters: Counters::default(),
        };
        let mut names: Vec<String> = fs::read_dir(&blocks_dir)
            .map_err(|e| TsdbError::io(&blocks_dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let path = blocks_dir.join(&name);
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A block write that never reached its rename.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".blk") {
                continue;
            }
            if let Some(seq) = name
                .trim_end_matches(".blk")
                .split_once('-')
                .and_then(|(_, s)| s.parse::<u64>().ok())
            {
                inner.next_seq = inner.next_seq.max(seq + 1);
            }
            match block::load_block(&path) {
                Ok((info, series)) => {
                    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let b = inner.register_block(&path, info, series, size);
                    inner.blocks.push(b);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "tsdb: block is corrupt or torn and is skipped (renamed to .corrupt)");
                    inner.counters.corrupt_skipped += 1;
                    let _ = fs::rename(&path, path.with_extension("blk.corrupt"));
                }
            }
        }
        inner.load_state()?;
        // Replay: wal ids are the ids of the process that wrote the log.
        let mut ids: HashMap<u32, u32> = HashMap::new();
        let replayed = !records.is_empty();
        for r in records {
            match r {
                Record::Series(wid, labels) => {
                    let (id, _) = inner.get_or_create(&labels);
                    ids.insert(wid, id);
                }
                Record::Samples(wid, samples) => {
                    let Some(&id) = ids.get(&wid) else { continue };
                    let s = &mut inner.series[id as usize];
                    let mut closed = 0;
                    for (t, v) in samples {
                        if t > s.last_t {
                            closed += s.apply(t, v);
                        }
                    }
                    inner.closed_bytes += closed;
                }
            }
        }
        for s in &mut inner.series {
            let persisted = s.persisted.iter().copied().max().unwrap_or(i64::MIN);
            s.last_t = s.last_t.max(persisted);
            inner.max_t = inner.max_t.max(s.last_t);
        }
        inner.last_flush_t = inner.max_t;
        if replayed {
            // Persist what the log held so the log restarts with this process' series ids.
            inner.flush()?;
        } else {
            inner.enforce_limits();
        }
        Ok(Tsdb {
            inner: RwLock::new(inner),
        })
    }

    /// Appends points; out-of-order or duplicate points of a series are dropped and counted (never
    /// stored twice). Series without a non-empty `__name__` are refused and counted.
    pub fn append(&self, series: &[SeriesPoints]) -> Result<AppendStats, TsdbError> {
        let mut inner = self.inner.write().map_err(|_| TsdbError::Poisoned)?;
        let mut stats = AppendStats::default();
        let mut batch: Vec<(u32, Vec<(i64, f64)>)> = Vec::with_capacity(series.len());
        let mut labels_of: Vec<&BTreeMap<String, String>> = Vec::with_capacity(series.len());
        for (labels, samples) in series {
            if let Some(x) = inner.append_one(labels, samples, &mut stats) {
                batch.push(x);
                labels_of.push(labels);
            }
        }
        let records: Vec<crate::wal::Entry<'_>> = batch
            .iter()
            .zip(&labels_of)
            .map(|((id, s), l)| (*id, *l, s.as_slice()))
            .collect();
        inner.wal.write(&records)?;
        drop(records);
        for (id, samples) in batch {
            let s = &mut inner.series[id as usize];
            let mut closed = 0;
            for &(t, v) in &samples {
                closed += s.apply(t, v);
            }
            inner.closed_bytes += closed;
            stats.appended += samples.len() as u64;
            if let Some(&(t, _)) = samples.last() {
                inner.max_t = inner.max_t.max(t);
            }
        }
        inner.counters.out_of_order += stats.out_of_order;
        inner.counters.duplicates += stats.duplicate;
        if inner.max_t.saturating_sub(inner.last_flush_t) >= AUTO_FLUSH_SPAN_MS
            || inner.closed_bytes >= inner.config.head_closed_bytes
            || inner.wal.len() >= AUTO_FLUSH_WAL_BYTES
        {
            inner.flush()?;
        }
        Ok(stats)
    }

    /// Series matching all matchers with their points in `[start_ms, end_ms]`, from the finest tier
    /// that still covers the range (raw, then 1 min, then 1 h). Downsampled points are the bucket's
    /// last value for counters (`_total`, `_count`, `_sum`, `_bucket`) and the average for gauges,
    /// stamped with the time of the bucket's last raw sample. Gaps stay gaps.
    pub fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, TsdbError> {
        let inner = self.inner.read().map_err(|_| TsdbError::Poisoned)?;
        let tier = inner.tier_for(start_ms);
        let mut out = Vec::new();
        for id in inner.overlapping(matchers, start_ms, end_ms)? {
            let samples = inner.samples_of(id, tier, start_ms, end_ms)?;
            if !samples.is_empty() {
                out.push(Series {
                    labels: inner.series[id as usize].labels.unpack(),
                    samples,
                });
            }
        }
        Ok(out)
    }

    /// Label names of the series matching `matchers` that have data in the range, sorted.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, TsdbError> {
        let inner = self.inner.read().map_err(|_| TsdbError::Poisoned)?;
        let mut names = BTreeSet::new();
        for id in inner.overlapping(matchers, start_ms, end_ms)? {
            names.extend(
                inner.series[id as usize]
                    .labels
                    .iter()
                    .map(|(k, _)| k.to_string()),
            );
        }
        Ok(names.into_iter().collect())
    }

    /// Values of label `name` on the series matching `matchers` that have data in the range, sorted.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, TsdbError> {
        let inner = self.inner.read().map_err(|_| TsdbError::Poisoned)?;
        let mut values = BTreeSet::new();
        for id in inner.overlapping(matchers, start_ms, end_ms)? {
            if let Some(v) = inner.series[id as usize].labels.get(name) {
                values.insert(v.to_string());
            }
        }
        Ok(values.into_iter().collect())
    }

    pub fn stats(&self) -> TsdbStats {
        match self.inner.read() {
            Ok(inner) => inner.stats(),
            Err(_) => TsdbStats::default(),
        }
    }

    /// Persists the head: closed chunks into blocks, open chunks into the head state, empties the log,
    /// applies retention and the size cap. Also runs on drop. Durability between flushes comes from
    /// the log, so calling this at shutdown is enough.
    pub fn flush(&self) -> Result<(), TsdbError> {
        self.inner.write().map_err(|_| TsdbError::Poisoned)?.flush()
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            if let Err(e) = inner.flush() {
                tracing::error!(error = %e, "tsdb: flush at close failed; the log still holds the head");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatchOp;
    use std::time::Duration;

    const T0: i64 = 1_700_000_000_000;
    const STEP: i64 = 10_000;

    fn labels(name: &str, pod: &str) -> BTreeMap<String, String> {
        [("__name__", name), ("namespace", "default"), ("pod", pod)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn eq(name: &str, value: &str) -> Matcher {
        Matcher::new(name, MatchOp::Equal, value)
    }

    /// Counter rising 5/s and a gauge wandering around 100, for `n` steps from `from`.
    fn ingest(db: &Tsdb, pod: &str, from: i64, n: i64) {
        let mut batch = Vec::new();
        for i in 0..n {
            let t = from + i * STEP;
            batch.push((t, (t - T0) as f64 / 1000.0 * 5.0));
        }
        let gauge: Vec<(i64, f64)> = batch
            .iter()
            .map(|&(t, _)| (t, 100.0 + ((t / STEP) % 7) as f64))
            .collect();
        // Ship in 1-minute batches as an agent would.
        for (c, g) in batch.chunks(6).zip(gauge.chunks(6)) {
            db.append(&[
                (labels("cpu_seconds_total", pod), c.to_vec()),
                (labels("memory_bytes", pod), g.to_vec()),
            ])
            .unwrap();
        }
    }

    #[test]
    fn series_with_a_colliding_label_hash_stay_apart_and_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), small_config()).unwrap();
        let mut inner = db.inner.write().unwrap();
        let (a, created_a) = inner.get_or_create(&labels("cpu_seconds_total", "a"));
        // pretend series b's labels hash to the slot series a holds
        let b_labels = labels("cpu_seconds_total", "b");
        inner.by_hash.insert(label_hash(&b_labels), a);
        let (b, created_b) = inner.get_or_create(&b_labels);
        assert!(created_a && created_b && a != b);
        assert_eq!(
            inner.hash_collisions.get(&label_hash(&b_labels)),
            Some(&vec![b])
        );
        assert_eq!(inner.lookup(&b_labels), Some(b));
        assert_eq!(inner.get_or_create(&b_labels), (b, false));
        assert_eq!(inner.lookup(&labels("cpu_seconds_total", "a")), Some(a));
        assert_eq!(inner.lookup(&labels("cpu_seconds_total", "c")), None);
    }

    fn small_config() -> TsdbConfig {
        TsdbConfig {
            raw_retention: Duration::from_secs(3_600),
            minute_retention: Duration::from_secs(86_400),
            hour_retention: Duration::from_secs(30 * 86_400),
            max_bytes: 1 << 30,
            head_closed_bytes: 4 << 20,
        }
    }

    fn all(db: &Tsdb, start: i64, end: i64) -> Vec<Series> {
        db.select(
            &[Matcher::new("__name__", MatchOp::Regex, ".+")],
            start,
            end,
        )
        .unwrap()
    }

    #[test]
    fn tsdb_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Tsdb>();
    }

    #[test]
    fn tsdb_reopen_returns_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
            // 5 h: two automatic flushes into blocks plus a head.
            ingest(&db, "web-1", T0, 1_800);
            ingest(&db, "web-2", T0, 1_800);
            all(&db, T0, T0 + 86_400_000)
        };
        assert_eq!(before.len(), 4);
        assert!(before.iter().all(|s| s.samples.len() == 1_800));
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        assert_eq!(all(&db, T0, T0 + 86_400_000), before);
        assert!(db.stats().blocks > 0);
    }

    #[test]
    fn tsdb_crash_without_flush_recovers_from_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        ingest(&db, "web-1", T0, 1_000);
        let before = all(&db, T0, T0 + 86_400_000);
        // A crash: no flush, no drop.
        std::mem::forget(db);
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        assert_eq!(all(&db, T0, T0 + 86_400_000), before);
        // Appending after recovery continues the series without duplicates.
        ingest(&db, "web-1", T0 + 1_000 * STEP, 10);
        let after = all(&db, T0, T0 + 86_400_000);
        assert!(after.iter().all(|s| s.samples.len() == 1_010));
    }

    #[test]
    fn tsdb_torn_log_tail_is_cut_and_rest_served() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        ingest(&db, "web-1", T0, 100);
        std::mem::forget(db);
        let wal = dir.path().join("wal.log");
        let len = fs::metadata(&wal).unwrap().len();
        // Half a record at the end, as a crash mid-write leaves it.
        let f = fs::OpenOptions::new().write(true).open(&wal).unwrap();
        f.set_len(len - 10).unwrap();
        drop(f);
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        let got = all(&db, T0, T0 + 86_400_000);
        assert!(!got.is_empty());
        for s in got {
            assert!(s.samples.len() <= 100 && s.samples.len() >= 90);
            assert!(s.samples.windows(2).all(|w| w[1].0 - w[0].0 == STEP));
        }
    }

    #[test]
    fn tsdb_corrupt_or_truncated_block_is_skipped_not_served() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
            ingest(&db, "web-1", T0, 1_800);
        }
        let mut blocks: Vec<PathBuf> = fs::read_dir(dir.path().join("blocks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        blocks.sort();
        assert!(blocks.len() >= 2, "{blocks:?}");
        // One block with a flipped byte in the middle, one cut short.
        let mut bytes = fs::read(&blocks[0]).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(&blocks[0], &bytes).unwrap();
        let bytes = fs::read(&blocks[1]).unwrap();
        fs::write(&blocks[1], &bytes[..bytes.len() - 100]).unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        assert_eq!(db.stats().corrupt_blocks_skipped, 2);
        // Whatever is served is the exact original series: correct values at regular times.
        for s in all(&db, T0, T0 + 86_400_000) {
            for &(t, v) in &s.samples {
                assert_eq!((t - T0) % STEP, 0);
                if s.labels["__name__"] == "cpu_seconds_total" {
                    assert_eq!(v, (t - T0) as f64 / 1000.0 * 5.0);
                }
            }
        }
    }

    #[test]
    fn tsdb_out_of_order_and_duplicates_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        let l = labels("load1", "x");
        let st = db
            .append(&[(
                l.clone(),
                vec![(T0, 1.0), (T0 + 10, 2.0), (T0 + 10, 3.0), (T0 + 5, 4.0)],
            )])
            .unwrap();
        assert_eq!(
            (st.appended, st.duplicate, st.out_of_order, st.new_series),
            (2, 1, 1, 1)
        );
        let st = db
            .append(&[(l.clone(), vec![(T0 + 10, 9.0), (T0 + 20, 5.0)])])
            .unwrap();
        assert_eq!((st.appended, st.duplicate), (1, 1));
        let st = db.append(&[(BTreeMap::new(), vec![(T0, 1.0)])]).unwrap();
        assert_eq!(st.invalid_series, 1);
        let got = db.select(&[eq("__name__", "load1")], T0, T0 + 100).unwrap();
        assert_eq!(
            got[0].samples,
            vec![(T0, 1.0), (T0 + 10, 2.0), (T0 + 20, 5.0)]
        );
        let stats = db.stats();
        assert_eq!(
            (stats.out_of_order_dropped, stats.duplicates_dropped),
            (1, 2)
        );
    }

    #[test]
    fn tsdb_downsampling_counter_last_value_gauge_average() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), small_config()).unwrap();
        // 3 h of data; raw keeps 1 h, so a range starting 2 h back is served by the 1-minute tier.
        ingest(&db, "web-1", T0, 1_080);
        let end = T0 + 1_079 * STEP;
        let start = end - 2 * 3_600_000;
        let got = db.select(&[eq("pod", "web-1")], start, end).unwrap();
        let counter = got
            .iter()
            .find(|s| s.labels["__name__"] == "cpu_seconds_total")
            .unwrap();
        let gauge = got
            .iter()
            .find(|s| s.labels["__name__"] == "memory_bytes")
            .unwrap();
        // One point per minute, stamped with the last raw sample of its minute.
        assert!(counter.samples.len() <= 121 && counter.samples.len() >= 119);
        for &(t, v) in &counter.samples {
            assert_eq!(
                v,
                (t - T0) as f64 / 1000.0 * 5.0,
                "counter keeps the bucket's last value"
            );
        }
        for &(t, v) in &gauge.samples {
            let bucket = t.div_euclid(60_000) * 60_000;
            let raw: Vec<f64> = (0..1_080)
                .map(|i| T0 + i * STEP)
                .filter(|x| x.div_euclid(60_000) * 60_000 == bucket)
                .map(|x| 100.0 + ((x / STEP) % 7) as f64)
                .collect();
            let avg = raw.iter().sum::<f64>() / raw.len() as f64;
            assert!((v - avg).abs() < 1e-9, "gauge is the bucket's average");
        }
    }

    #[test]
    fn tsdb_rate_over_downsampled_counter_stays_right() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), small_config()).unwrap();
        // 2 days at 10 s: the minute tier keeps 1 day, so a 40 h range comes from the hour tier.
        ingest(&db, "web-1", T0, 17_280);
        let end = T0 + 17_279 * STEP;
        for (range, max_points) in [(2 * 3_600_000, 121), (40 * 3_600_000, 41)] {
            let got = db
                .select(&[eq("__name__", "cpu_seconds_total")], end - range, end)
                .unwrap();
            let s = &got[0].samples;
            assert!(s.len() <= max_points, "{} points", s.len());
            let (t0, v0) = s[0];
            let (t1, v1) = *s.last().unwrap();
            let rate = (v1 - v0) / ((t1 - t0) as f64 / 1000.0);
            assert!((rate - 5.0).abs() < 1e-9, "rate {rate}");
        }
    }

    #[test]
    fn tsdb_gap_stays_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        ingest(&db, "web-1", T0, 60);
        ingest(&db, "web-1", T0 + 3_600_000, 60);
        let got = db
            .select(&[eq("__name__", "memory_bytes")], T0, T0 + 7_200_000)
            .unwrap();
        let s = &got[0].samples;
        assert_eq!(s.len(), 120);
        assert!(!s
            .iter()
            .any(|(t, _)| *t > T0 + 59 * STEP && *t < T0 + 3_600_000));
    }

    #[test]
    fn tsdb_retention_drops_old_blocks_per_tier() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), small_config()).unwrap();
        ingest(&db, "web-1", T0, 17_280);
        db.flush().unwrap();
        let st = db.stats();
        assert!(st.blocks_dropped_retention > 0);
        let end = T0 + 17_279 * STEP;
        // Raw holds about 1 h (plus at most a block), not 2 days.
        let raw = db
            .select(&[eq("__name__", "memory_bytes")], end - 1_800_000, end)
            .unwrap();
        assert_eq!(raw[0].samples.len(), 181);
        assert!(
            st.samples.raw < 2 * (4 * 3_600 / 10) * 2,
            "{:?}",
            st.samples
        );
        // The oldest day is still there at one point per hour.
        let old = db
            .select(&[eq("__name__", "memory_bytes")], T0, end)
            .unwrap();
        assert!(old[0].samples.len() >= 47 && old[0].samples.len() <= 49);
        // The same after a restart (tier horizons are kept with the head state).
        drop(db);
        let db = Tsdb::open(dir.path(), small_config()).unwrap();
        let again = db
            .select(&[eq("__name__", "memory_bytes")], T0, end)
            .unwrap();
        assert_eq!(again, old);
        let raw_again = db
            .select(&[eq("__name__", "memory_bytes")], end - 1_800_000, end)
            .unwrap();
        assert_eq!(raw_again, raw);
    }

    #[test]
    fn tsdb_block_left_twice_by_an_interrupted_merge_serves_no_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
            ingest(&db, "web-1", T0, 1_800);
            all(&db, T0, T0 + 86_400_000)
        };
        // A crash after a merged block was renamed into place but before the old one was removed
        // leaves the same chunks in two blocks.
        let blocks = dir.path().join("blocks");
        let first = fs::read_dir(&blocks)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("0-"))
            .min()
            .unwrap();
        fs::copy(&first, blocks.join("0-9999999999999999.blk")).unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        assert_eq!(all(&db, T0, T0 + 86_400_000), before);
    }

    #[test]
    fn tsdb_closed_chunks_over_budget_are_flushed_to_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let config = TsdbConfig {
            head_closed_bytes: 2_000,
            ..small_config()
        };
        let db = Tsdb::open(dir.path(), config).unwrap();
        // 5 minutes of 1 s samples: 2.5 raw chunks per series, less time than a flush waits for
        for i in 0..30 {
            let batch: Vec<SeriesPoints> = ["a", "b", "c", "d", "e", "f"]
                .iter()
                .flat_map(|pod| {
                    let points = |f: fn(i64) -> f64| {
                        (i * 10..(i + 1) * 10)
                            .map(|k| (T0 + k * 1_000, f(k)))
                            .collect::<Vec<_>>()
                    };
                    [
                        (labels("cpu_seconds_total", pod), points(|k| k as f64 * 0.5)),
                        (
                            labels("memory_bytes", pod),
                            points(|k| 100.0 + (k % 7) as f64),
                        ),
                    ]
                })
                .collect();
            db.append(&batch).unwrap();
        }
        let st = db.stats();
        assert!(
            st.blocks > 0,
            "closed chunks over the budget were not flushed"
        );
        let head_closed: usize = db
            .inner
            .read()
            .unwrap()
            .series
            .iter()
            .map(|s| s.closed.iter().map(Vec::len).sum::<usize>())
            .sum();
        assert!(
            head_closed < 12,
            "{head_closed} closed chunks still in memory"
        );
        assert_eq!(all(&db, T0, T0 + 300_000).len(), 12);
    }

    #[test]
    fn tsdb_size_cap_drops_finest_oldest_blocks_first() {
        let dir = tempfile::tempdir().unwrap();
        let config = TsdbConfig {
            max_bytes: 64 * 1024,
            ..TsdbConfig::default()
        };
        let db = Tsdb::open(dir.path(), config).unwrap();
        for pod in ["a", "b", "c", "d"] {
            ingest(&db, pod, T0, 5_000);
        }
        db.flush().unwrap();
        let st = db.stats();
        assert!(st.blocks_dropped_size_cap > 0, "{st:?}");
        assert!(st.bytes_on_disk <= 64 * 1024, "{st:?}");
        // The hour tier (tiny) survives; the oldest raw data went first.
        assert!(st.samples.hour > 0);
        let end = T0 + 4_999 * STEP;
        let got = db.select(&[eq("pod", "a")], T0, end).unwrap();
        assert!(!got.is_empty());
    }

    #[test]
    fn tsdb_label_names_and_values_follow_matchers_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), TsdbConfig::default()).unwrap();
        ingest(&db, "web-1", T0, 10);
        ingest(&db, "db-1", T0 + 3_600_000, 10);
        let end = T0 + 7_200_000;
        assert_eq!(
            db.label_values("pod", &[], T0, end).unwrap(),
            vec!["db-1", "web-1"]
        );
        assert_eq!(
            db.label_values("pod", &[], T0, T0 + 60_000).unwrap(),
            vec!["web-1"]
        );
        assert_eq!(
            db.label_values(
                "__name__",
                &[Matcher::new("pod", MatchOp::Regex, "db-.*")],
                T0,
                end
            )
            .unwrap(),
            vec!["cpu_seconds_total", "memory_bytes"]
        );
        assert_eq!(
            db.label_names(&[], T0, end).unwrap(),
            vec!["__name__", "namespace", "pod"]
        );
        assert!(db
            .select(&[Matcher::new("pod", MatchOp::Regex, "(")], T0, end)
            .is_err());
    }
}
