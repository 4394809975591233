//! Turns the bytes of one CRI log file into log entries: complete lines only, `P` partial lines
//! joined per stream, entries released in the order of their first line's offset (so offsets are
//! strictly increasing per source even when stdout and stderr interleave partial lines).

use std::collections::{BTreeSet, VecDeque};

/// One joined log entry read from a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the entry's first CRI line in the file.
    pub offset: u64,
    pub timestamp_ns: i64,
    /// `false` = stdout, `true` = stderr.
    pub stderr: bool,
    pub line: String,
    /// Offsets of every CRI line the entry was joined from (the first is `offset`).
    pub lines: Vec<u64>,
}

impl Entry {
    /// Bytes the entry takes in the buffer (its text plus a fixed overhead).
    pub fn size(&self) -> usize {
        self.line.len() + 48
    }
}

#[derive(Debug)]
struct Building {
    offset: u64,
    timestamp_ns: i64,
    line: Vec<u8>,
    lines: Vec<u64>,
}

impl Building {
    fn finish(self, stderr: bool) -> Entry {
        Entry {
            offset: self.offset,
            timestamp_ns: self.timestamp_ns,
            stderr,
            line: String::from_utf8_lossy(&self.line).into_owned(),
            lines: self.lines,
        }
    }
}

/// The parsing state of one source file.
#[derive(Debug)]
pub struct Tailer {
    /// Next byte of the file to read (everything before was consumed).
    pos: u64,
    /// Entries being joined from partial lines, per stream (0 stdout, 1 stderr).
    open: [Option<Building>; 2],
    /// Complete entries waiting for an earlier-starting open entry, sorted by offset.
    done: VecDeque<Entry>,
    /// Line offsets to skip (they belong to entries shipped before a restart).
    skip: BTreeSet<u64>,
    /// Entries starting at or before this offset were shipped before a restart.
    shipped: Option<u64>,
    /// Largest joined entry; longer ones are cut into several entries.
    max_entry: usize,
    /// Lines that were not valid CRI lines (skipped).
    pub parse_errors: u64,
}

impl Tailer {
    /// A tailer reading from `pos`, skipping the given lines and entries up to `shipped`.
    pub fn new(pos: u64, skip: BTreeSet<u64>, shipped: Option<u64>, max_entry: usize) -> Tailer {
        Tailer {
            pos,
            open: [None, None],
            done: VecDeque::new(),
            skip,
            shipped,
            max_entry,
            parse_errors: 0,
        }
    }

    /// The next byte of the file to read.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The lowest offset of an entry still held here (open or waiting), if any.
    pub fn held_from(&self) -> Option<u64> {
        let open = self.open.iter().flatten().map(|b| b.offset).min();
        let done = self.done.front().map(|e| e.offset);
        match (open, done) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether an entry is being joined or waiting.
    pub fn holds_entries(&self) -> bool {
        self.held_from().is_some()
    }

    /// Consumes the complete lines of `data` (the file's bytes from [`Tailer::pos`]) and pushes
    /// the entries that are ready to `out`. With `eof_final` the unterminated rest counts as a
    /// line too (a file nobody writes any more). Returns the bytes consumed.
    pub fn feed(&mut self, data: &[u8], eof_final: bool, out: &mut Vec<Entry>) -> usize {
        let mut consumed = 0;
        while consumed < data.len() {
            let rest = &data[consumed..];
            let len = match memchr::memchr(b'\n', rest) {
                Some(i) => i + 1,
                None if eof_final => rest.len(),
                None => break,
            };
            let offset = self.pos + consumed as u64;
            self.line(offset, &rest[..len]);
            consumed += len;
        }
        self.pos += consumed as u64;
        self.release(out);
        consumed
    }

    /// Ends every entry being joined (the file ended, or it was idle) and releases all.
    pub fn flush(&mut self, out: &mut Vec<Entry>) {
        for (i, b) in self.open.iter_mut().enumerate() {
            if let Some(b) = b.take() {
                insert_sorted(&mut self.done, b.finish(i == 1));
            }
        }
        self.release(out);
    }

    fn line(&mut self, offset: u64, raw: &[u8]) {
        if self.skip.remove(&offset) {
            return;
        }
        let parsed = match mini_logs::parse_cri_line(raw) {
            Ok(p) => p,
            Err(e) => {
                self.parse_errors += 1;
                tracing::debug!(offset, error = %e, "skipping a line that is not a CRI log line");
                return;
            }
        };
        let stream = usize::from(parsed.stream == "stderr");
        let building = self.open[stream].get_or_insert_with(|| Building {
            offset,
            timestamp_ns: parsed.timestamp.timestamp_nanos_opt().unwrap_or_default(),
            line: Vec::new(),
            lines: Vec::new(),
        });
        building.line.extend_from_slice(parsed.content);
        building.lines.push(offset);
        if !parsed.partial || building.line.len() >= self.max_entry {
            if let Some(b) = self.open[stream].take() {
                insert_sorted(&mut self.done, b.finish(stream == 1));
            }
        }
    }

    fn release(&mut self, out: &mut Vec<Entry>) {
        let open_from = self.open.iter().flatten().map(|b| b.offset).min();
        while let Some(first) = self.done.front() {
            if open_from.is_some_and(|o| o < first.offset) {
                break;
            }
            let Some(entry) = self.done.pop_front() else {
                break;
            };
            if self.shipped.is_some_and(|s| entry.offset <= s) {
                continue;
            }
            out.push(entry);
        }
    }
}

fn insert_sorted(done: &mut VecDeque<Entry>, entry: Entry) {
    let at = done.partition_point(|e| e.offset < entry.offset);
    done.insert(at, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri(stream: &str, tag: &str, text: &str) -> String {
        format!("2026-12-05T10:00:00.000000001Z {stream} {tag} {text}\n")
    }

    fn feed_all(t: &mut Tailer, data: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let used = t.feed(data, false, &mut out);
        assert_eq!(used, data.len());
        out
    }

    #[test]
    fn feed_partial_lines_joins_them_at_first_offset() {
        let a = cri("stdout", "P", "hello ");
        let b = cri("stdout", "F", "world");
        let data = format!("{a}{b}");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        let out = feed_all(&mut t, data.as_bytes());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "hello world");
        assert_eq!(out[0].offset, 0);
        assert_eq!(out[0].lines, vec![0, a.len() as u64]);
        assert_eq!(out[0].timestamp_ns, 1_796_464_800_000_000_001);
    }

    #[test]
    fn feed_unterminated_line_waits_for_its_newline() {
        let line = cri("stdout", "F", "one");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        let mut out = Vec::new();
        let cut = line.len() - 3;
        assert_eq!(t.feed(&line.as_bytes()[..cut], false, &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(t.feed(line.as_bytes(), false, &mut out), line.len());
        assert_eq!(out[0].line, "one");
    }

    #[test]
    fn feed_partial_split_across_reads_is_joined() {
        let a = cri("stderr", "P", "abc");
        let b = cri("stderr", "F", "def");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        let out = feed_all(&mut t, a.as_bytes());
        assert!(out.is_empty());
        assert!(t.holds_entries());
        let out = feed_all(&mut t, b.as_bytes());
        assert_eq!(out[0].line, "abcdef");
        assert!(out[0].stderr);
    }

    #[test]
    fn feed_interleaved_streams_releases_in_offset_order() {
        let a = cri("stdout", "P", "long-");
        let b = cri("stderr", "F", "err");
        let c = cri("stdout", "F", "line");
        let data = format!("{a}{b}{c}");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        let mut out = Vec::new();
        t.feed(format!("{a}{b}").as_bytes(), false, &mut out);
        assert!(out.is_empty(), "stderr waits for the earlier stdout entry");
        t.feed(c.as_bytes(), false, &mut out);
        let got: Vec<_> = out.iter().map(|e| (e.offset, e.line.as_str())).collect();
        assert_eq!(got, vec![(0, "long-line"), (a.len() as u64, "err")]);
        assert_eq!(t.pos(), data.len() as u64);
    }

    #[test]
    fn feed_skip_and_shipped_drop_what_was_shipped_before() {
        let a = cri("stdout", "P", "x");
        let b = cri("stderr", "F", "e");
        let c = cri("stdout", "F", "y");
        // shipped before: "xy" (offset 0, lines 0 and a+b); resume reads from b's offset
        let resume = a.len() as u64;
        let skip: BTreeSet<u64> = [(a.len() + b.len()) as u64].into();
        let mut t = Tailer::new(resume, skip, Some(0), 1 << 20);
        let out = feed_all(&mut t, format!("{b}{c}").as_bytes());
        let got: Vec<_> = out.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(got, vec!["e"]);
    }

    #[test]
    fn feed_bad_line_is_counted_and_skipped() {
        let good = cri("stdout", "F", "ok");
        let data = format!("garbage\n{good}");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        let out = feed_all(&mut t, data.as_bytes());
        assert_eq!(t.parse_errors, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].offset, 8);
    }

    #[test]
    fn flush_pending_partial_releases_it() {
        let a = cri("stdout", "P", "half");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 1 << 20);
        assert!(feed_all(&mut t, a.as_bytes()).is_empty());
        let mut out = Vec::new();
        t.flush(&mut out);
        assert_eq!(out[0].line, "half");
        assert!(!t.holds_entries());
    }

    #[test]
    fn feed_entry_over_max_is_cut() {
        let a = cri("stdout", "P", "aaaa");
        let b = cri("stdout", "P", "bbbb");
        let c = cri("stdout", "F", "cc");
        let mut t = Tailer::new(0, BTreeSet::new(), None, 8);
        let out = feed_all(&mut t, format!("{a}{b}{c}").as_bytes());
        let got: Vec<_> = out.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(got, vec!["aaaabbbb", "cc"]);
        assert!(out[0].offset < out[1].offset);
    }
}
