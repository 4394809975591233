//! On-disk formats: immutable block files (one tier's closed chunks per series), the head state file,
//! the byte helpers they share, and the atomic write (temp file, fsync, rename, fsync dir) that makes a
//! torn write detectable (a file either verifies against its CRC-32 footer or is skipped).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::TsdbError;

pub(crate) const BLOCK_MAGIC: &[u8; 8] = b"MTSDBLK1";
pub(crate) const STATE_MAGIC: &[u8; 8] = b"MTSDHST1";
const END_MAGIC: &[u8; 8] = b"MTSDEND1";

/// Little-endian byte writer.
#[derive(Default)]
pub(crate) struct Buf(pub(crate) Vec<u8>);

impl Buf {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    pub(crate) fn labels(&mut self, labels: &BTreeMap<String, String>) {
        self.u16(labels.len() as u16);
        for (k, v) in labels {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }
}

/// Little-endian byte reader that reports truncation as corruption.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Rd<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Rd { b, pos: 0 }
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], TsdbError> {
        if self.b.len() - self.pos < n {
            return Err(TsdbError::Corrupt(format!(
                "record ends early at byte {} (wanted {n} more)",
                self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], TsdbError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, TsdbError> {
        Ok(self.arr::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, TsdbError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, TsdbError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, TsdbError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, TsdbError> {
        Ok(f64::from_bits(u64::from_le_bytes(self.arr()?)))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], TsdbError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, TsdbError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| TsdbError::Corrupt("label is not utf-8".into()))
    }
    pub(crate) fn labels(&mut self) -> Result<BTreeMap<String, String>, TsdbError> {
        let n = self.u16()?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

/// Wraps a body with its magic, a CRC-32 and an end marker.
pub(crate) fn seal(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(END_MAGIC);
    out
}

/// Checks magic, CRC and end marker; returns the body.
pub(crate) fn unseal<'a>(magic: &[u8; 8], file: &'a [u8]) -> Result<&'a [u8], TsdbError> {
    if file.len() < 20 || &file[..8] != magic || &file[file.len() - 8..] != END_MAGIC {
        return Err(TsdbError::Corrupt(
            "file is truncated or has a wrong header".into(),
        ));
    }
    let crc_at = file.len() - 12;
    let want = u32::from_le_bytes([
        file[crc_at],
        file[crc_at + 1],
        file[crc_at + 2],
        file[crc_at + 3],
    ]);
    if crc32fast::hash(&file[..crc_at]) != want {
        return Err(TsdbError::Corrupt("checksum mismatch".into()));
    }
    Ok(&file[8..crc_at])
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TsdbError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| TsdbError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| TsdbError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TsdbError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| TsdbError::io(&dst, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), TsdbError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TsdbError::io(dir, e))
}

/// One chunk as stored.
#[derive(Clone)]
pub(crate) struct StoredChunk {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) count: u16,
    pub(crate) bytes: Vec<u8>,
}

/// A series' entry in a block being written.
pub(crate) struct BlockSeries<'a> {
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) chunks: Vec<StoredChunk>,
}

/// Encodes a block file of one tier.
pub(crate) fn encode_block(tier: u8, series: &[BlockSeries<'_>]) -> Vec<u8> {
    let mut b = Buf::default();
    b.u8(tier);
    b.u32(series.len() as u32);
    for s in series {
        b.labels(s.labels);
        write_chunks(&mut b, &s.chunks);
    }
    seal(BLOCK_MAGIC, &b.0)
}

pub(crate) fn write_chunks(b: &mut Buf, chunks: &[StoredChunk]) {
    b.u32(chunks.len() as u32);
    for c in chunks {
        b.i64(c.min_t);
        b.i64(c.max_t);
        b.u16(c.count);
        b.bytes(&c.bytes);
    }
}

pub(crate) fn read_chunks(r: &mut Rd<'_>) -> Result<Vec<StoredChunk>, TsdbError> {
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        out.push(StoredChunk {
            min_t: r.i64()?,
            max_t: r.i64()?,
            count: r.u16()?,
            bytes: r.bytes()?.to_vec(),
        });
    }
    Ok(out)
}

/// A series entry of a loaded block: where its chunk list sits in the file and its bounds.
pub(crate) struct LoadedEntry {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) samples: u64,
    pub(crate) chunk_bytes: u64,
}

/// Reads and verifies a whole block file; returns its tier and entries.
pub(crate) fn load_block(path: &Path) -> Result<(u8, Vec<LoadedEntry>), TsdbError> {
    let file = fs::read(path).map_err(|e| TsdbError::io(path, e))?;
    let body = unseal(BLOCK_MAGIC, &file)?;
    let mut r = Rd::new(body);
    let tier = r.u8()?;
    if tier > 2 {
        return Err(TsdbError::Corrupt(format!("unknown tier {tier}")));
    }
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let labels = r.labels()?;
        let start = r.pos;
        let chunks = read_chunks(&mut r)?;
        let (mut min_t, mut max_t, mut samples, mut chunk_bytes) = (i64::MAX, i64::MIN, 0, 0);
        for c in &chunks {
            min_t = min_t.min(c.min_t);
            max_t = max_t.max(c.max_t);
            samples += u64::from(c.count);
            chunk_bytes += c.bytes.len() as u64;
        }
        out.push(LoadedEntry {
            labels,
            // The body starts after the 8-byte magic.
            offset: (start + 8) as u32,
            len: (r.pos - start) as u32,
            min_t,
            max_t,
            samples,
            chunk_bytes,
        });
    }
    if !r.done() {
        return Err(TsdbError::Corrupt(
            "trailing bytes after the last series".into(),
        ));
    }
    Ok((tier, out))
}

/// Reads one series' chunks from a block file.
pub(crate) fn read_entry(
    path: &PathBuf,
    offset: u32,
    len: u32,
) -> Result<Vec<StoredChunk>, TsdbError> {
    let f = File::open(path).map_err(|e| TsdbError::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, u64::from(offset))
        .map_err(|e| TsdbError::io(path, e))?;
    read_chunks(&mut Rd::new(&buf))
}
