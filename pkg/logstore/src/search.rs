//! Search over the segments: prune by time range and label index, decompress only the blocks left,
//! filter lines (memchr substring search over a whole block's text, then regexes), order newest or oldest
//! first, page with a cursor, stop at the time budget.
//!
//! Records are ordered by the key (timestamp, segment id, record index in the segment), which is total and
//! stable (closing a segment keeps the record order), so a cursor is just the last key returned.

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use memchr::memmem;
use regex::bytes::Regex;

use crate::encoding::Columns;
use crate::segment::{read_block, ClosedSegment};
use crate::{
    Direction, Inner, LabelMatcher, LineFilter, LogRecord, LogStoreError, MatchOp, NamespaceScope,
    SearchPage, SearchQuery, StreamDef,
};

enum CMatcher {
    Eq(String, String),
    Ne(String, String),
    Re(String, Regex),
    NotRe(String, Regex),
}

enum CFilter {
    Contains(memmem::Finder<'static>),
    NotContains(memmem::Finder<'static>),
    Re(Regex),
    NotRe(Regex),
}

/// A query's matchers, line filters and scope, compiled.
pub(crate) struct Compiled {
    matchers: Vec<CMatcher>,
    filters: Vec<CFilter>,
    scope: NamespaceScope,
}

fn regex(re: &str, anchored: bool) -> Result<Regex, LogStoreError> {
    let src = if anchored {
        format!("^(?:{re})$")
    } else {
        re.to_string()
    };
    Regex::new(&src)
        .map_err(|e| LogStoreError::InvalidQuery(format!("bad regular expression {re:?}: {e}")))
}

impl Compiled {
    pub fn new(
        matchers: &[LabelMatcher],
        filters: &[LineFilter],
        scope: &NamespaceScope,
    ) -> Result<Compiled, LogStoreError> {
        let matchers = matchers
            .iter()
            .map(|m| {
                let n = m.name.clone();
                Ok(match m.op {
                    MatchOp::Equal => CMatcher::Eq(n, m.value.clone()),
                    MatchOp::NotEqual => CMatcher::Ne(n, m.value.clone()),
                    MatchOp::Regex => CMatcher::Re(n, regex(&m.value, true)?),
                    MatchOp::NotRegex => CMatcher::NotRe(n, regex(&m.value, true)?),
                })
            })
            .collect::<Result<Vec<_>, LogStoreError>>()?;
        let mut filters = filters
            .iter()
            .map(|f| {
                Ok(match f {
                    LineFilter::Contains(s) => {
                        CFilter::Contains(memmem::Finder::new(s.as_bytes()).into_owned())
                    }
                    LineFilter::NotContains(s) => {
                        CFilter::NotContains(memmem::Finder::new(s.as_bytes()).into_owned())
                    }
                    LineFilter::Regex(r) => CFilter::Re(regex(r, false)?),
                    LineFilter::NotRegex(r) => CFilter::NotRe(regex(r, false)?),
                })
            })
            .collect::<Result<Vec<_>, LogStoreError>>()?;
        // The longest substring first: it drives the block-wide memchr scan.
        if let Some(best) = filters
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f {
                CFilter::Contains(fd) if !fd.needle().is_empty() => Some((fd.needle().len(), i)),
                _ => None,
            })
            .max()
            .map(|(_, i)| i)
        {
            filters.swap(0, best);
        }
        Ok(Compiled {
            matchers,
            filters,
            scope: scope.clone(),
        })
    }

    pub fn stream_matches(&self, s: &StreamDef) -> bool {
        self.scope.allows(s)
            && self.matchers.iter().all(|m| match m {
                CMatcher::Eq(n, v) => s.label(n).unwrap_or("") == v,
                CMatcher::Ne(n, v) => s.label(n).unwrap_or("") != v,
                CMatcher::Re(n, r) => r.is_match(s.label(n).unwrap_or("").as_bytes()),
                CMatcher::NotRe(n, r) => !r.is_match(s.label(n).unwrap_or("").as_bytes()),
            })
    }

    pub fn line_matches(&self, line: &[u8]) -> bool {
        self.filters.iter().all(|f| match f {
            CFilter::Contains(fd) => fd.find(line).is_some(),
            CFilter::NotContains(fd) => fd.find(line).is_none(),
            CFilter::Re(r) => r.is_match(line),
            CFilter::NotRe(r) => !r.is_match(line),
        })
    }

    /// Indexes of the records of `cols` whose line passes the filters, in record order.
    fn matching_lines(&self, cols: &Columns) -> Vec<usize> {
        let mut out = Vec::new();
        match self.filters.first() {
            Some(CFilter::Contains(fd)) if !fd.needle().is_empty() => {
                let n = fd.needle().len();
                let mut pos = 0usize;
                while pos < cols.text.len() {
                    let Some(hit) = fd.find(&cols.text[pos..]) else {
                        break;
                    };
                    let at = pos + hit;
                    let i = cols.record_at(at);
                    let (_, end) = cols.bounds(i);
                    if at + n <= end {
                        if self.filters[1..].iter().all(|f| single(f, cols.line(i))) {
                            out.push(i);
                        }
                        pos = end;
                    } else {
                        // The hit spans two lines: continue inside the next line.
                        pos = end;
                    }
                    // Empty lines at `end` are skipped: a non-empty needle cannot match them.
                }
            }
            _ => {
                for i in 0..cols.len() {
                    if self.line_matches(cols.line(i)) {
                        out.push(i);
                    }
                }
            }
        }
        out
    }
}

fn single(f: &CFilter, line: &[u8]) -> bool {
    match f {
        CFilter::Contains(fd) => fd.find(line).is_some(),
        CFilter::NotContains(fd) => fd.find(line).is_none(),
        CFilter::Re(r) => r.is_match(line),
        CFilter::NotRe(r) => !r.is_match(line),
    }
}

type Key = (i64, u64, u64);

fn parse_cursor(c: &str) -> Result<Key, LogStoreError> {
    let bad = || {
        LogStoreError::InvalidQuery(format!(
            "bad cursor {c:?}: pass the next_cursor of the previous page unchanged"
        ))
    };
    let mut it = c.split(':');
    let k = (
        it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
    );
    if it.next().is_some() {
        return Err(bad());
    }
    Ok(k)
}

fn format_cursor(k: Key) -> String {
    format!("{}:{}:{}", k.0, k.1, k.2)
}

struct Hit {
    key: Key,
    stream: Arc<StreamDef>,
    line: String,
}

/// Accumulates the best `limit` hits for a direction.
struct Collector {
    backward: bool,
    limit: usize,
    hits: Vec<Hit>,
    /// The worst key still kept once `hits` is full.
    threshold: Option<Key>,
    cursor: Option<Key>,
}

impl Collector {
    fn better(&self, a: Key, b: Key) -> bool {
        if self.backward {
            a > b
        } else {
            a < b
        }
    }

    /// Whether a key can still enter the result (cursor and threshold).
    fn wants(&self, k: Key) -> bool {
        self.cursor.is_none_or(|c| self.better(c, k))
            && self.threshold.is_none_or(|t| self.better(k, t))
    }

    /// Whether records with timestamps in `[min_ts, max_ts]` can lie past the cursor.
    fn cursor_ok(&self, min_ts: i64, max_ts: i64) -> bool {
        self.cursor.is_none_or(|c| {
            if self.backward {
                min_ts <= c.0
            } else {
                max_ts >= c.0
            }
        })
    }

    /// Whether records with timestamps in `[min_ts, max_ts]` can beat the worst kept hit.
    fn threshold_ok(&self, min_ts: i64, max_ts: i64) -> bool {
        self.threshold.is_none_or(|t| {
            if self.backward {
                max_ts >= t.0
            } else {
                min_ts <= t.0
            }
        })
    }

    fn push(&mut self, h: Hit) {
        self.hits.push(h);
        if self.hits.len() >= self.limit.saturating_mul(2).max(64) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let backward = self.backward;
        self.hits.sort_unstable_by(|a, b| {
            if backward {
                b.key.cmp(&a.key)
            } else {
                a.key.cmp(&b.key)
            }
        });
        if self.hits.len() >= self.limit {
            self.hits.truncate(self.limit);
            self.threshold = self.hits.last().map(|h| h.key);
        }
    }
}

pub(crate) fn run(inner: &Inner, q: &SearchQuery) -> Result<SearchPage, LogStoreError> {
    let started = Instant::now();
    let compiled = Compiled::new(&q.matchers, &q.line_filters, &q.namespaces)?;
    let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let backward = q.direction == Direction::Backward;
    let mut col = Collector {
        backward,
        limit: q.limit,
        hits: Vec::new(),
        threshold: None,
        cursor,
    };
    let mut page = SearchPage {
        records: Vec::new(),
        next_cursor: None,
        truncated_by_budget: false,
        scanned_bytes: 0,
    };
    if q.limit == 0 || q.start_ns >= q.end_ns {
        return Ok(page);
    }
    let in_range = |min: i64, max: i64| max >= q.start_ns && min < q.end_ns;

    // Candidates: closed segments overlapping the range with a matching stream, and the open segment.
    enum Cand<'a> {
        Closed(&'a Arc<ClosedSegment>, Vec<bool>),
        Mem(usize),
    }
    let mut cands: Vec<(i64, i64, u64, Cand<'_>)> = Vec::new();
    for seg in &inner.closed {
        if !in_range(seg.min_ts, seg.max_ts) {
            continue;
        }
        let wanted: Vec<bool> = seg
            .streams
            .iter()
            .map(|s| compiled.stream_matches(s))
            .collect();
        if wanted.iter().any(|w| *w) {
            cands.push((seg.min_ts, seg.max_ts, seg.id, Cand::Closed(seg, wanted)));
        }
    }
    let mems = inner.mem_segments();
    for (k, m) in mems.iter().enumerate() {
        if m.cols.len() > 0 && in_range(m.min_ts, m.max_ts) {
            cands.push((m.min_ts, m.max_ts, m.id, Cand::Mem(k)));
        }
    }
    if backward {
        cands.sort_by_key(|c| std::cmp::Reverse((c.1, c.2)));
    } else {
        cands.sort_by_key(|c| (c.0, c.2));
    }

    'segments: for (min_ts, max_ts, _, cand) in &cands {
        if !col.threshold_ok(*min_ts, *max_ts) {
            // Candidates are sorted by the bound the threshold tests: no later one can do better.
            break;
        }
        if !col.cursor_ok(*min_ts, *max_ts) {
            continue;
        }
        match cand {
            Cand::Mem(k) => {
                if started.elapsed() >= q.time_budget {
                    page.truncated_by_budget = true;
                    break 'segments;
                }
                let m = &mems[*k];
                let wanted: Vec<bool> = m
                    .streams
                    .iter()
                    .map(|s| compiled.stream_matches(s))
                    .collect();
                page.scanned_bytes += m.cols.text.len() as u64;
                scan_into(&compiled, m.cols, m.id, 0, &wanted, m.streams, q, &mut col);
            }
            Cand::Closed(seg, wanted) => {
                let file = match File::open(&seg.path) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(path = %seg.path.display(), error = %e, "log segment vanished during a search");
                        continue;
                    }
                };
                let order: Vec<usize> = if backward {
                    (0..seg.blocks.len()).rev().collect()
                } else {
                    (0..seg.blocks.len()).collect()
                };
                for b in order {
                    let meta = &seg.blocks[b];
                    if !in_range(meta.min_ts, meta.max_ts)
                        || !col.cursor_ok(meta.min_ts, meta.max_ts)
                        || !col.threshold_ok(meta.min_ts, meta.max_ts)
                        || !meta.streams.iter().any(|&s| wanted[s as usize])
                    {
                        continue;
                    }
                    if started.elapsed() >= q.time_budget {
                        page.truncated_by_budget = true;
                        break 'segments;
                    }
                    let cols = read_block(&file, &seg.path, meta)?;
                    page.scanned_bytes += meta.raw_bytes;
                    scan_into(
                        &compiled,
                        &cols,
                        seg.id,
                        meta.first_record,
                        wanted,
                        &seg.streams,
                        q,
                        &mut col,
                    );
                }
            }
        }
    }
    col.compact();
    let full = col.hits.len() >= q.limit;
    col.hits.truncate(q.limit);
    if full && !page.truncated_by_budget {
        page.next_cursor = col.hits.last().map(|h| format_cursor(h.key));
    }
    page.records = col
        .hits
        .into_iter()
        .map(|h| LogRecord {
            timestamp_ns: h.key.0,
            labels: h.stream.labels.clone(),
            pod_labels: h.stream.pod_labels.clone(),
            line: h.line,
        })
        .collect();
    Ok(page)
}

#[allow(clippy::too_many_arguments)]
fn scan_into(
    compiled: &Compiled,
    cols: &Columns,
    seg_id: u64,
    first: u64,
    wanted: &[bool],
    streams: &[Arc<StreamDef>],
    q: &SearchQuery,
    col: &mut Collector,
) {
    let mut idx = compiled.matching_lines(cols);
    if col.backward {
        idx.reverse();
    }
    for i in idx {
        let ts = cols.ts[i];
        let sid = cols.streams[i] as usize;
        if ts < q.start_ns || ts >= q.end_ns || !wanted.get(sid).copied().unwrap_or(false) {
            continue;
        }
        let key = (ts, seg_id, first + i as u64);
        if !col.wants(key) {
            continue;
        }
        col.push(Hit {
            key,
            stream: streams[sid].clone(),
            line: String::from_utf8_lossy(cols.line(i)).into_owned(),
        });
    }
}

/// Calls `f(stream, timestamp, line length)` for every entry matching `q` (limit, cursor and direction
/// ignored) in segment order, until the time budget runs out. Returns (scanned bytes, truncated).
pub(crate) fn for_each(
    inner: &Inner,
    q: &SearchQuery,
    mut f: impl FnMut(&StreamDef, i64, usize),
) -> Result<(u64, bool), LogStoreError> {
    let started = Instant::now();
    let compiled = Compiled::new(&q.matchers, &q.line_filters, &q.namespaces)?;
    let in_range = |min: i64, max: i64| max >= q.start_ns && min < q.end_ns;
    let mut scanned = 0u64;
    let mut visit = |cols: &Columns, wanted: &[bool], streams: &[Arc<StreamDef>]| {
        for i in compiled.matching_lines(cols) {
            let ts = cols.ts[i];
            let sid = cols.streams[i] as usize;
            if ts >= q.start_ns && ts < q.end_ns && wanted.get(sid).copied().unwrap_or(false) {
                let (s, e) = cols.bounds(i);
                f(&streams[sid], ts, e - s);
            }
        }
    };
    for seg in inner.closed.iter().filter(|s| in_range(s.min_ts, s.max_ts)) {
        let wanted: Vec<bool> = seg
            .streams
            .iter()
            .map(|s| compiled.stream_matches(s))
            .collect();
        if !wanted.iter().any(|w| *w) {
            continue;
        }
        let Ok(file) = File::open(&seg.path) else {
            continue;
        };
        for meta in &seg.blocks {
            if !in_range(meta.min_ts, meta.max_ts)
                || !meta.streams.iter().any(|&s| wanted[s as usize])
            {
                continue;
            }
            if started.elapsed() >= q.time_budget {
                return Ok((scanned, true));
            }
            let cols = read_block(&file, &seg.path, meta)?;
            scanned += meta.raw_bytes;
            visit(&cols, &wanted, &seg.streams);
        }
    }
    for m in inner.mem_segments() {
        if m.cols.len() == 0 || !in_range(m.min_ts, m.max_ts) {
            continue;
        }
        if started.elapsed() >= q.time_budget {
            return Ok((scanned, true));
        }
        let wanted: Vec<bool> = m
            .streams
            .iter()
            .map(|s| compiled.stream_matches(s))
            .collect();
        scanned += m.cols.text.len() as u64;
        visit(m.cols, &wanted, m.streams);
    }
    Ok((scanned, false))
}
