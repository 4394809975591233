//! On-disk formats: immutable block files (one tier's closed chunks per series), the head state file,
//! the byte helpers they share, and the atomic write (temp file, fsync, rename, fsync dir) that makes a
//! torn write detectable (a file either verifies against its CRC-32 footer or is skipped).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
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

/// What the store keeps in memory about a block: bounds, counts and where its lookup table is.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockInfo {
    pub(crate) tier: u8,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) samples: u64,
    pub(crate) chunk_bytes: u64,
    /// File offset of the table of (label hash, entry offset, entry length), sorted by hash.
    pub(crate) table_off: u32,
    pub(crate) count: u32,
}

/// Stable 64-bit FNV-1a hash of a label set (stored in block tables, so it must never change).
pub(crate) fn label_hash(labels: &BTreeMap<String, String>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Writes a block file of one tier as a stream, one series at a time, so no copy of the block is
/// held in memory: magic, tier, entries (labels then chunks), the lookup table sorted by label hash,
/// the entry count and the table's offset, CRC-32 of all before it, end marker (sealed atomically).
pub(crate) struct BlockWriter {
    w: SealedWriter,
    info: BlockInfo,
    table: Vec<(u64, u32, u32)>,
}

impl BlockWriter {
    pub(crate) fn create(dir: &Path, name: &str, tier: u8) -> Result<Self, TsdbError> {
        let mut w = SealedWriter::create(dir, name, BLOCK_MAGIC)?;
        w.put(&[tier])?;
        Ok(BlockWriter {
            w,
            info: BlockInfo {
                tier,
                min_t: i64::MAX,
                max_t: i64::MIN,
                ..BlockInfo::default()
            },
            table: Vec::new(),
        })
    }

    pub(crate) fn add(
        &mut self,
        labels: &BTreeMap<String, String>,
        chunks: &[StoredChunk],
    ) -> Result<(), TsdbError> {
        let mut b = Buf::default();
        b.labels(labels);
        write_chunks(&mut b, chunks);
        self.table
            .push((label_hash(labels), self.w.len() as u32, b.0.len() as u32));
        self.w.put(&b.0)?;
        for c in chunks {
            self.info.min_t = self.info.min_t.min(c.min_t);
            self.info.max_t = self.info.max_t.max(c.max_t);
            self.info.samples += u64::from(c.count);
            self.info.chunk_bytes += c.bytes.len() as u64;
        }
        Ok(())
    }

    /// Writes the table and seals the file; returns the block's info and file size.
    pub(crate) fn finish(mut self) -> Result<(BlockInfo, u64), TsdbError> {
        self.table.sort_unstable();
        self.info.table_off = self.w.len() as u32;
        self.info.count = self.table.len() as u32;
        let mut t = Buf::default();
        for &(h, off, len) in &self.table {
            t.0.extend_from_slice(&h.to_le_bytes());
            t.u32(off);
            t.u32(len);
        }
        t.u32(self.info.count);
        t.u32(self.info.table_off);
        self.w.put(&t.0)?;
        let size = self.w.finish()?;
        Ok((self.info, size))
    }
}

/// A sealed file written as a stream: magic, the body in pieces, CRC-32 of all before it, end
/// marker; temp file, fsync, rename, fsync of the directory.
pub(crate) struct SealedWriter {
    tmp: PathBuf,
    dst: PathBuf,
    dir: PathBuf,
    w: CrcWriter<std::io::BufWriter<File>>,
}

impl SealedWriter {
    pub(crate) fn create(dir: &Path, name: &str, magic: &[u8; 8]) -> Result<Self, TsdbError> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| TsdbError::io(&tmp, e))?;
        let mut w = SealedWriter {
            dst: dir.join(name),
            dir: dir.to_path_buf(),
            w: CrcWriter {
                inner: std::io::BufWriter::with_capacity(256 << 10, file),
                crc: crc32fast::Hasher::new(),
                len: 0,
            },
            tmp,
        };
        w.put(magic)?;
        Ok(w)
    }

    pub(crate) fn put(&mut self, b: &[u8]) -> Result<(), TsdbError> {
        self.w.put(b).map_err(|e| TsdbError::io(&self.tmp, e))
    }

    pub(crate) fn len(&self) -> u64 {
        self.w.len
    }

    /// Seals, syncs and renames into place; returns the file's size.
    pub(crate) fn finish(mut self) -> Result<u64, TsdbError> {
        let crc = self.w.crc.clone().finalize();
        self.put(&crc.to_le_bytes())?;
        self.put(END_MAGIC)?;
        let size = self.w.len;
        let file = self
            .w
            .inner
            .into_inner()
            .map_err(|e| TsdbError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| TsdbError::io(&self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.dst).map_err(|e| TsdbError::io(&self.dst, e))?;
        sync_dir(&self.dir)?;
        Ok(size)
    }
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(b)?;
        self.crc.update(b);
        self.len += b.len() as u64;
        Ok(())
    }
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

/// A series of a block read at open: its labels and bounds.
pub(crate) struct LoadedSeries {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
}

/// Reads and verifies a block file; returns its info and series. The file is streamed twice
/// (the CRC over all of it, then the entries in file order through the table), so memory stays at a
/// buffer and one entry however large the block is.
pub(crate) fn load_block(path: &Path) -> Result<(BlockInfo, Vec<LoadedSeries>), TsdbError> {
    let file = File::open(path).map_err(|e| TsdbError::io(path, e))?;
    let len = file.metadata().map_err(|e| TsdbError::io(path, e))?.len();
    let io = |e| TsdbError::io(path, e);
    if len < 20 || len > u64::from(u32::MAX) {
        return Err(TsdbError::Corrupt(
            "file is truncated or has a wrong header".into(),
        ));
    }
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0).map_err(io)?;
    let mut foot = [0u8; 20];
    file.read_exact_at(&mut foot, len - 20).map_err(io)?;
    if &head != BLOCK_MAGIC || &foot[12..] != END_MAGIC {
        return Err(TsdbError::Corrupt(
            "file is truncated or has a wrong header".into(),
        ));
    }
    let crc_at = len - 12;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < crc_at {
        let n = (crc_at - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at).map_err(io)?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    if crc.finalize() != u32::from_le_bytes([foot[8], foot[9], foot[10], foot[11]]) {
        return Err(TsdbError::Corrupt("checksum mismatch".into()));
    }
    let mut tail = Rd::new(&foot[..8]);
    let count = tail.u32()?;
    let table_off = tail.u32()?;
    // magic, tier byte, entries, then the table right up to the count and offset
    if table_off < 9 || u64::from(table_off) + u64::from(count) * 16 + 8 != crc_at {
        return Err(TsdbError::Corrupt("block table is misplaced".into()));
    }
    let mut tier = [0u8; 1];
    file.read_exact_at(&mut tier, 8).map_err(io)?;
    let tier = tier[0];
    if tier > 2 {
        return Err(TsdbError::Corrupt(format!("unknown tier {tier}")));
    }
    let table = read_at(&file, path, u64::from(table_off), count as usize * 16)?;
    let mut rows = Vec::with_capacity(count as usize);
    let mut r = Rd::new(&table);
    for _ in 0..count {
        r.take(8)?;
        rows.push((r.u32()?, r.u32()?));
    }
    rows.sort_unstable();
    let mut info = BlockInfo {
        tier,
        min_t: i64::MAX,
        max_t: i64::MIN,
        count,
        table_off,
        ..BlockInfo::default()
    };
    let mut out = Vec::with_capacity(count as usize);
    let mut reader = std::io::BufReader::with_capacity(256 << 10, &file);
    reader.seek(std::io::SeekFrom::Start(9)).map_err(io)?;
    let mut next = 9u32;
    let mut entry = Vec::new();
    for (off, n) in rows {
        // entries follow each other without gaps and end where the table starts
        if off != next || off.checked_add(n).is_none_or(|end| end > table_off) {
            return Err(TsdbError::Corrupt(
                "block entry count does not match its table".into(),
            ));
        }
        entry.resize(n as usize, 0);
        reader.read_exact(&mut entry).map_err(io)?;
        next = off + n;
        let mut r = Rd::new(&entry);
        let labels = r.labels()?;
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        for _ in 0..r.u32()? {
            let (c_min, c_max, c_count) = (r.i64()?, r.i64()?, r.u16()?);
            min_t = min_t.min(c_min);
            max_t = max_t.max(c_max);
            info.samples += u64::from(c_count);
            info.chunk_bytes += r.bytes()?.len() as u64;
        }
        if !r.done() {
            return Err(TsdbError::Corrupt("block entry has trailing bytes".into()));
        }
        info.min_t = info.min_t.min(min_t);
        info.max_t = info.max_t.max(max_t);
        out.push(LoadedSeries {
            labels,
            min_t,
            max_t,
        });
    }
    if next != table_off {
        return Err(TsdbError::Corrupt(
            "block entry count does not match its table".into(),
        ));
    }
    Ok((info, out))
}

fn read_at(f: &File, path: &Path, off: u64, len: usize) -> Result<Vec<u8>, TsdbError> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .map_err(|e| TsdbError::io(path, e))?;
    Ok(buf)
}

fn table_row(
    f: &File,
    path: &Path,
    info: &BlockInfo,
    i: u32,
) -> Result<(u64, u32, u32), TsdbError> {
    let row = read_at(f, path, u64::from(info.table_off) + u64::from(i) * 16, 16)?;
    let mut r = Rd::new(&row);
    let h = u64::from_le_bytes(r.take(8)?.try_into().unwrap_or([0; 8]));
    Ok((h, r.u32()?, r.u32()?))
}

fn read_series(
    f: &File,
    path: &Path,
    off: u32,
    len: u32,
) -> Result<(BTreeMap<String, String>, Vec<StoredChunk>), TsdbError> {
    let buf = read_at(f, path, u64::from(off), len as usize)?;
    let mut r = Rd::new(&buf);
    Ok((r.labels()?, read_chunks(&mut r)?))
}

/// One series' chunks in a block, found by binary search over the block's table on disk.
pub(crate) fn lookup(
    path: &Path,
    info: &BlockInfo,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<StoredChunk>, TsdbError> {
    let f = File::open(path).map_err(|e| TsdbError::io(path, e))?;
    let want = label_hash(labels);
    let (mut lo, mut hi) = (0u32, info.count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if table_row(&f, path, info, mid)?.0 < want {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    while lo < info.count {
        let (h, off, len) = table_row(&f, path, info, lo)?;
        if h != want {
            break;
        }
        let (l, chunks) = read_series(&f, path, off, len)?;
        if &l == labels {
            return Ok(chunks);
        }
        lo += 1;
    }
    Ok(Vec::new())
}

/// Every series of a block with its chunks, one at a time (for merging a block into a new one).
pub(crate) fn for_each_series(
    path: &Path,
    info: &BlockInfo,
    mut f: impl FnMut(BTreeMap<String, String>, Vec<StoredChunk>) -> Result<(), TsdbError>,
) -> Result<(), TsdbError> {
    let file = File::open(path).map_err(|e| TsdbError::io(path, e))?;
    let table = read_at(
        &file,
        path,
        u64::from(info.table_off),
        info.count as usize * 16,
    )?;
    let mut r = Rd::new(&table);
    for _ in 0..info.count {
        r.take(8)?;
        let (off, len) = (r.u32()?, r.u32()?);
        let (labels, chunks) = read_series(&file, path, off, len)?;
        f(labels, chunks)?;
    }
    Ok(())
}
