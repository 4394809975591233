//! Byte encodings of the log store: columnar record blocks, checksummed frames and varints.
//!
//! A block of records is stored column by column (stream ids, time deltas, line lengths, then all line
//! bytes back to back), which compresses well and lets a substring search run over the text of a whole
//! block at once. Frames wrap a payload with its length and CRC-32 so a torn or corrupt write is detected.

use std::sync::Arc;

use crate::StreamDef;

/// Records in column form: the decoded content of a block, or the open segment in memory.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Columns {
    pub streams: Vec<u32>,
    pub ts: Vec<i64>,
    /// End offset (exclusive) of each line in `text`; line `i` starts at `ends[i - 1]` (or 0).
    pub ends: Vec<usize>,
    pub text: Vec<u8>,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn push(&mut self, stream: u32, ts: i64, line: &str) {
        self.streams.push(stream);
        self.ts.push(ts);
        self.text.extend_from_slice(line.as_bytes());
        self.ends.push(self.text.len());
    }

    pub fn bounds(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (start, self.ends[i])
    }

    pub fn line(&self, i: usize) -> &[u8] {
        let (s, e) = self.bounds(i);
        &self.text[s..e]
    }

    /// The index of the record whose line holds text byte `pos`.
    pub fn record_at(&self, pos: usize) -> usize {
        self.ends.partition_point(|&e| e <= pos)
    }

    /// Appends the column encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for &s in &self.streams {
            put_varint(out, u64::from(s));
        }
        let mut prev = 0i64;
        for &t in &self.ts {
            put_varint(out, zigzag(t.wrapping_sub(prev)));
            prev = t;
        }
        let mut start = 0usize;
        for &e in &self.ends {
            put_varint(out, (e - start) as u64);
            start = e;
        }
        out.extend_from_slice(&self.text);
    }

    /// Decodes what `encode` wrote; `None` if the bytes are not a valid encoding.
    pub fn decode(r: &mut Reader<'_>) -> Option<Columns> {
        let n = usize::try_from(r.varint()?).ok()?;
        if n > r.remaining() {
            return None;
        }
        let mut c = Columns {
            streams: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            ends: Vec::with_capacity(n),
            text: Vec::new(),
        };
        for _ in 0..n {
            c.streams.push(u32::try_from(r.varint()?).ok()?);
        }
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(unzigzag(r.varint()?));
            c.ts.push(prev);
        }
        let mut end = 0usize;
        for _ in 0..n {
            end = end.checked_add(usize::try_from(r.varint()?).ok()?)?;
            c.ends.push(end);
        }
        c.text = r.bytes(end)?.to_vec();
        std::str::from_utf8(&c.text).ok()?;
        Some(c)
    }
}

/// What one ingest call appends to the open segment's file, as one frame: streams first seen in this
/// segment, the new last offset of every source it advanced, and the accepted records.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct WalRecord {
    pub new_streams: Vec<Arc<StreamDef>>,
    /// (source, last stored offset, timestamp of the source's last entry)
    pub sources: Vec<(String, u64, i64)>,
    pub columns: Columns,
}

impl WalRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.columns.text.len() + 64);
        put_varint(&mut out, self.new_streams.len() as u64);
        for s in &self.new_streams {
            let json = serde_json::to_vec(&**s).unwrap_or_default();
            put_bytes(&mut out, &json);
        }
        put_varint(&mut out, self.sources.len() as u64);
        for (name, offset, ts) in &self.sources {
            put_bytes(&mut out, name.as_bytes());
            put_varint(&mut out, *offset);
            put_varint(&mut out, zigzag(*ts));
        }
        self.columns.encode(&mut out);
        out
    }

    pub fn decode(payload: &[u8]) -> Option<WalRecord> {
        let mut r = Reader::new(payload);
        let mut rec = WalRecord::default();
        for _ in 0..r.varint()? {
            let json = r.len_bytes()?;
            rec.new_streams
                .push(Arc::new(serde_json::from_slice(json).ok()?));
        }
        for _ in 0..r.varint()? {
            let name = std::str::from_utf8(r.len_bytes()?).ok()?.to_string();
            let offset = r.varint()?;
            let ts = unzigzag(r.varint()?);
            rec.sources.push((name, offset, ts));
        }
        rec.columns = Columns::decode(&mut r)?;
        if r.remaining() != 0 {
            return None;
        }
        Some(rec)
    }
}

/// Frame header: payload length (u32 LE) and CRC-32 of the payload (u32 LE).
pub(crate) const FRAME_HEADER: usize = 8;

pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEADER);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the frame at the start of `buf`: `Some((payload, frame length))`, or `None` when the bytes
/// there are not a whole, intact frame (a torn tail or corruption).
pub(crate) fn read_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    if buf.len() < FRAME_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let payload = buf.get(FRAME_HEADER..FRAME_HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, FRAME_HEADER + len))
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over encoded bytes; every read returns `None` past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    fn len_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Columns {
        let mut c = Columns::default();
        c.push(0, 1_700_000_000_000_000_000, "GET /index.html 200");
        c.push(1, 1_699_999_999_000_000_000, "");
        c.push(0, -5, "ünïcode line");
        c
    }

    #[test]
    fn columns_roundtrip_decodes_what_was_encoded() {
        let c = sample();
        let mut out = Vec::new();
        c.encode(&mut out);
        let back = Columns::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.line(0), b"GET /index.html 200");
        assert_eq!(back.line(1), b"");
        assert_eq!(back.record_at(19), 2);
        assert_eq!(back.record_at(3), 0);
    }

    #[test]
    fn columns_truncated_bytes_do_not_decode() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        for cut in 0..out.len() {
            assert!(
                Columns::decode(&mut Reader::new(&out[..cut])).is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn wal_record_roundtrip_keeps_streams_sources_and_records() {
        let rec = WalRecord {
            new_streams: vec![Arc::new(StreamDef {
                labels: [("namespace".to_string(), "a".to_string())].into(),
                pod_labels: [("app".to_string(), "web".to_string())].into(),
            })],
            sources: vec![("n1/uid/c/0/0".into(), 4096, 17)],
            columns: sample(),
        };
        assert_eq!(WalRecord::decode(&rec.encode()).unwrap(), rec);
    }

    #[test]
    fn frame_corrupt_or_torn_is_rejected() {
        let f = frame(b"hello");
        assert_eq!(read_frame(&f), Some((&b"hello"[..], f.len())));
        assert!(read_frame(&f[..f.len() - 1]).is_none());
        let mut bad = f.clone();
        bad[FRAME_HEADER] ^= 1;
        assert!(read_frame(&bad).is_none());
    }

    #[test]
    fn varint_zigzag_roundtrip_extremes() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 300, -300] {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            assert_eq!(unzigzag(Reader::new(&out).varint().unwrap()), v);
        }
    }
}
