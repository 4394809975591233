//! Container log files in the CRI format: where they live, and reading them back for
//! `kubectl logs` (tail, since, timestamps, follow, limitBytes; `previous` is the caller
//! picking the previous restart's file).
//!
//! A CRI log line is `<RFC3339Nano timestamp> <stdout|stderr> <tag> <content>\n`, tag `F` for a
//! full line or `P` for a partial one that continues in the next line (containerd splits long
//! lines). Reading joins partial lines, as upstream's kubelet does.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

/// The CRI `log_directory` of a pod: `<logs_root>/<namespace>_<name>_<uid>`, as upstream's
/// `/var/log/pods` layout.
pub fn pod_log_dir(logs_root: &Path, namespace: &str, pod_name: &str, pod_uid: &str) -> PathBuf {
    logs_root.join(format!("{namespace}_{pod_name}_{pod_uid}"))
}

/// The CRI `log_path` of a container, relative to its pod's log directory:
/// `<container>/<restart_count>.log`.
pub fn container_log_relpath(container_name: &str, restart_count: u32) -> PathBuf {
    PathBuf::from(container_name).join(format!("{restart_count}.log"))
}

/// How long a follower sleeps at the end of the file before looking again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Read size, forwards and (for tail) backwards.
const BLOCK: usize = 64 * 1024;

/// What reading a log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid CRI log line: {0}")]
    Parse(String),
    #[error("invalid log option {name}={value:?}: {message}")]
    InvalidOption {
        name: &'static str,
        value: String,
        message: String,
    },
}

/// The `kubectl logs` options the reader applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading appended lines until the stop token is cancelled.
    pub follow: bool,
    /// Only the last N lines (joined lines, partial pieces count once); negative = all.
    pub tail_lines: Option<i64>,
    /// Skip lines logged before this time.
    pub since_time: Option<DateTime<Utc>>,
    /// Prefix every line with its RFC3339Nano timestamp and a space.
    pub timestamps: bool,
    /// Stop after this many bytes of output (non-positive values are ignored).
    pub limit_bytes: Option<i64>,
}

impl LogOptions {
    /// Reads `follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps` and `limitBytes`
    /// from a `pods/log` query string (`container` and `previous` are left to the caller).
    pub fn from_query(query: &str) -> Result<LogOptions, LogError> {
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "follow" => opts.follow = parse_bool("follow", &v)?,
                "timestamps" => opts.timestamps = parse_bool("timestamps", &v)?,
                "tailLines" => opts.tail_lines = Some(parse_int("tailLines", &v)?),
                "limitBytes" => opts.limit_bytes = Some(parse_int("limitBytes", &v)?),
                "sinceSeconds" => since_seconds = Some(v),
                "sinceTime" => since_time = Some(v),
                _ => {}
            }
        }
        opts.since_time = parse_since(since_seconds.as_deref(), since_time.as_deref(), Utc::now())?;
        Ok(opts)
    }
}

/// `sinceSeconds` (a positive integer, counted back from `now`) or `sinceTime` (RFC3339) as
/// an absolute time; at most one may be given, as upstream validates.
pub fn parse_since(
    since_seconds: Option<&str>,
    since_time: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, LogError> {
    match (since_seconds, since_time) {
        (Some(_), Some(t)) => Err(LogError::InvalidOption {
            name: "sinceTime",
            value: t.to_string(),
            message: "at most one of sinceTime or sinceSeconds may be specified".into(),
        }),
        (Some(s), None) => {
            let secs = parse_int("sinceSeconds", s)?;
            if secs <= 0 {
                return Err(LogError::InvalidOption {
                    name: "sinceSeconds",
                    value: s.to_string(),
                    message: "must be greater than 0".into(),
                });
            }
            Ok(Some(now - chrono::Duration::seconds(secs)))
        }
        (None, Some(t)) => DateTime::parse_from_rfc3339(t)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| LogError::InvalidOption {
                name: "sinceTime",
                value: t.to_string(),
                message: format!("not an RFC3339 time: {e}"),
            }),
        (None, None) => Ok(None),
    }
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, LogError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        _ => Err(LogError::InvalidOption {
            name,
            value: v.to_string(),
            message: "not a boolean".into(),
        }),
    }
}

fn parse_int(name: &'static str, v: &str) -> Result<i64, LogError> {
    v.parse().map_err(|e| LogError::InvalidOption {
        name,
        value: v.to_string(),
        message: format!("not an integer: {e}"),
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp: DateTime<FixedOffset>,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Tag `P`: continues in the next line.
    pub partial: bool,
    /// The content, without the line's terminating newline.
    pub content: &'a [u8],
}

/// Parses one CRI log line (with or without its trailing `\n`).
pub fn parse_cri_line(line: &[u8]) -> Result<CriLine<'_>, LogError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let bad = |why: &str| {
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        LogError::Parse(format!("{why}: {shown:?}"))
    };
    let mut fields = line.splitn(4, |b| *b == b' ');
    let ts = fields.next().ok_or_else(|| bad("no timestamp"))?;
    let stream = fields.next().ok_or_else(|| bad("no stream"))?;
    let tag = fields.next().ok_or_else(|| bad("no tag"))?;
    let content = fields.next().unwrap_or_default();
    let ts = std::str::from_utf8(ts).map_err(|_| bad("timestamp is not UTF-8"))?;
    let timestamp = DateTime::parse_from_rfc3339(ts).map_err(|_| bad("bad timestamp"))?;
    let stream = std::str::from_utf8(stream).map_err(|_| bad("stream is not UTF-8"))?;
    if stream != "stdout" && stream != "stderr" {
        return Err(bad("unknown stream"));
    }
    // tags are `:`-separated for forward compatibility; the first is F or P
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Ok(CriLine {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros, `Z` for UTC.
pub fn format_rfc3339_nano(t: &DateTime<FixedOffset>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        s.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.abs();
        s.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60));
    }
    s
}

/// Whether a raw line ends a logical line (tag `F`, or unparseable lines, which count alone).
fn ends_logical_line(raw: &[u8]) -> bool {
    let mut fields = raw.splitn(4, |b| *b == b' ');
    let tag = fields.nth(2).unwrap_or_default();
    tag.split(|b| *b == b':').next() != Some(b"P")
}

/// The byte offset where the last `n` logical lines of the file start, reading backwards in
/// blocks so a large file is not read whole. `n < 0` is the whole file.
pub fn find_tail_start(file: &mut std::fs::File, n: i64) -> std::io::Result<u64> {
    if n < 0 {
        return Ok(0);
    }
    let size = file.seek(SeekFrom::End(0))?;
    let wanted = n as u64 + 1;
    let mut count = 0u64;
    // buf holds file[buf_start .. seg_end): the not yet split beginning of the region
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = size;
    let mut seg_end = size;
    loop {
        while let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            let line = &buf[i + 1..];
            if !line.is_empty() && ends_logical_line(line) {
                count += 1;
                if count == wanted {
                    // an unterminated last line ends at the end of the file
                    return Ok((seg_end + 1).min(size));
                }
            }
            seg_end = buf_start + i as u64;
            buf.truncate(i);
        }
        if buf_start == 0 {
            // the first line of the file has no newline before it
            if !buf.is_empty() && ends_logical_line(&buf) && count + 1 == wanted {
                return Ok((seg_end + 1).min(size));
            }
            return Ok(0);
        }
        let read_start = buf_start.saturating_sub(BLOCK as u64);
        let mut block = vec![0u8; (buf_start - read_start) as usize];
        file.seek(SeekFrom::Start(read_start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        buf_start = read_start;
    }
}

/// Streams the container log at `path` as `kubectl logs` prints it: the content of each line
/// (partial lines joined), or `<RFC3339Nano timestamp> <content>` with `timestamps`. `tail_lines`
/// picks the starting point, `since_time` skips older lines, `limit_bytes` ends the stream after
/// that many bytes. With `follow`, appended lines keep coming (polling every 200 ms; a rotated
/// or truncated file is reopened from its start) until `stop` is cancelled; what was written
/// before the cancellation is still delivered.
pub fn read_log(
    path: PathBuf,
    opts: LogOptions,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Bytes, LogError>> + Send + 'static {
    let reader = Reader {
        path,
        opts,
        stop,
        file: None,
        identity: None,
        pos: 0,
        pending: Vec::new(),
        prev_partial: false,
        written: 0,
        stopping: false,
        done: false,
    };
    futures::stream::unfold(reader, |mut r| async move {
        let item = r.next_chunk().await?;
        if item.is_err() {
            r.done = true;
        }
        Some((item, r))
    })
}

struct Reader {
    path: PathBuf,
    opts: LogOptions,
    stop: CancellationToken,
    file: Option<tokio::fs::File>,
    /// (device, inode) of the open file, to notice rotation.
    identity: Option<(u64, u64)>,
    pos: u64,
    /// An unterminated raw line waiting for its newline.
    pending: Vec<u8>,
    prev_partial: bool,
    written: i64,
    stopping: bool,
    done: bool,
}

fn file_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl Reader {
    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    async fn open(&mut self, tail: Option<i64>) -> Result<(), LogError> {
        let path = self.path.clone();
        let (std_file, start, identity) = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path)?;
            let identity = file_identity(&f.metadata()?);
            let start = match tail {
                Some(n) => find_tail_start(&mut f, n)?,
                None => 0,
            };
            Ok::<_, std::io::Error>((f, start, identity))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(self.io_err("open"))?;
        let mut file = tokio::fs::File::from_std(std_file);
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(self.io_err("seek"))?;
        self.file = Some(file);
        self.identity = Some(identity);
        self.pos = start;
        self.pending.clear();
        Ok(())
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, LogError>> {
        let mut buf = vec![0u8; BLOCK];
        loop {
            if self.done {
                return None;
            }
            if self.file.is_none() {
                if let Err(e) = self.open(self.opts.tail_lines).await {
                    return Some(Err(e));
                }
            }
            let file = self.file.as_mut()?;
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Some(Err(self.io_err("read")(e))),
            };
            if n > 0 {
                self.pos += n as u64;
                self.pending.extend_from_slice(&buf[..n]);
                let out = self.render_complete_lines();
                if let Some(chunk) = self.limit(out) {
                    return Some(Ok(chunk));
                }
                continue;
            }
            // end of file
            if !self.opts.follow || self.stopping {
                let mut out = Vec::new();
                if !self.opts.follow && !self.pending.is_empty() {
                    let line = std::mem::take(&mut self.pending);
                    self.render_line(&line, &mut out);
                }
                self.done = true;
                return self.limit(out).map(Ok);
            }
            tokio::select! {
                _ = self.stop.cancelled() => self.stopping = true,
                _ = tokio::time::sleep(FOLLOW_POLL) => {
                    if self.rotated().await {
                        if let Err(e) = self.open(None).await {
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Whether the path now names another file, or the file shrank below our position.
    async fn rotated(&self) -> bool {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) => Some(file_identity(&meta)) != self.identity || meta.len() < self.pos,
            Err(_) => false,
        }
    }

    /// Renders every newline-terminated raw line in `pending`, keeping the unterminated rest.
    fn render_complete_lines(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(last_nl) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return out;
        };
        let rest = self.pending.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            self.render_line(line, &mut out);
        }
        out
    }

    fn render_line(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        if raw.is_empty() {
            return;
        }
        let line = match parse_cri_line(raw) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "skipping log line: {e}");
                return;
            }
        };
        if let Some(since) = self.opts.since_time {
            if line.timestamp < since {
                return;
            }
        }
        if self.opts.timestamps && !self.prev_partial {
            out.extend_from_slice(format_rfc3339_nano(&line.timestamp).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(line.content);
        if !line.partial {
            out.push(b'\n');
        }
        self.prev_partial = line.partial;
    }

    /// Applies `limit_bytes`: truncates the chunk at the limit and ends the stream there.
    fn limit(&mut self, mut out: Vec<u8>) -> Option<Bytes> {
        if let Some(limit) = self.opts.limit_bytes.filter(|l| *l > 0) {
            let remaining = (limit - self.written).max(0) as usize;
            if out.len() >= remaining {
                out.truncate(remaining);
                self.done = true;
            }
        }
        self.written += out.len() as i64;
        if out.is_empty() {
            None
        } else {
            Some(Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests;
