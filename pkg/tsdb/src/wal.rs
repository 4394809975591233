//! Write-ahead log of the head: every `append` is written before it is acknowledged (so a process crash
//! loses nothing) and fsynced at most once a second (so a power loss loses at most ~1 s); a torn tail is
//! detected by the per-record CRC-32 and cut at the next open.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::block::{Buf, Rd};
use crate::TsdbError;

const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One series' accepted samples for the log: (series id, labels, samples).
pub(crate) type Entry<'a> = (u32, &'a BTreeMap<String, String>, &'a [(i64, f64)]);

pub(crate) enum Record {
    Series(u32, BTreeMap<String, String>),
    Samples(u32, Vec<(i64, f64)>),
}

pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
    defined: HashSet<u32>,
    last_sync: Instant,
    dirty: bool,
}

impl Wal {
    /// Opens (or creates) the log and returns the records it holds; a torn tail is cut off.
    pub(crate) fn open(dir: &Path) -> Result<(Wal, Vec<Record>), TsdbError> {
        let path = dir.join("wal.log");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TsdbError::io(&path, e)),
        };
        let (records, valid) = parse(&data);
        if valid < data.len() {
            tracing::warn!(
                path = %path.display(),
                kept = valid,
                dropped = data.len() - valid,
                "tsdb: write-ahead log has a torn tail (crash during a write); cutting it"
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| TsdbError::io(&path, e))?;
        file.set_len(valid as u64)
            .map_err(|e| TsdbError::io(&path, e))?;
        let mut wal = Wal {
            path,
            file,
            len: valid as u64,
            defined: HashSet::new(),
            last_sync: Instant::now(),
            dirty: false,
        };
        // Series defined in the surviving part stay defined for later records.
        for r in &records {
            if let Record::Series(id, _) = r {
                wal.defined.insert(*id);
            }
        }
        use std::io::Seek;
        wal.file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| TsdbError::io(&wal.path, e))?;
        Ok((wal, records))
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Frames and writes one append's records: series definitions first, then samples.
    pub(crate) fn write(&mut self, batch: &[Entry<'_>]) -> Result<(), TsdbError> {
        let mut out = Vec::new();
        for (id, labels, samples) in batch {
            if self.defined.insert(*id) {
                let mut b = Buf::default();
                b.u8(1);
                b.u32(*id);
                b.labels(labels);
                frame(&mut out, &b.0);
            }
            if samples.is_empty() {
                continue;
            }
            let mut b = Buf::default();
            b.u8(2);
            b.u32(*id);
            b.u32(samples.len() as u32);
            for &(t, v) in samples.iter() {
                b.i64(t);
                b.f64(v);
            }
            frame(&mut out, &b.0);
            // Write in pieces so a large append holds no large buffer.
            if out.len() >= 64 << 10 {
                self.file
                    .write_all(&out)
                    .map_err(|e| TsdbError::io(&self.path, e))?;
                self.len += out.len() as u64;
                out.clear();
            }
        }
        self.file
            .write_all(&out)
            .map_err(|e| TsdbError::io(&self.path, e))?;
        self.len += out.len() as u64;
        out.clear();
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> Result<(), TsdbError> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| TsdbError::io(&self.path, e))?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Empties the log once the head it covers is persisted.
    pub(crate) fn reset(&mut self) -> Result<(), TsdbError> {
        use std::io::Seek;
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(std::io::SeekFrom::Start(0)).map(|_| ()))
            .and_then(|_| self.file.sync_all())
            .map_err(|e| TsdbError::io(&self.path, e))?;
        self.len = 0;
        self.defined.clear();
        self.dirty = false;
        Ok(())
    }
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Parses records until the first incomplete or corrupt one; returns them and the valid length.
fn parse(data: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= 8 {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if data.len() - pos - 8 < len {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match parse_record(payload) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (out, pos)
}

fn parse_record(payload: &[u8]) -> Result<Record, TsdbError> {
    let mut r = Rd::new(payload);
    match r.u8()? {
        1 => Ok(Record::Series(r.u32()?, r.labels()?)),
        2 => {
            let id = r.u32()?;
            let n = r.u32()? as usize;
            let mut samples = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                samples.push((r.i64()?, r.f64()?));
            }
            Ok(Record::Samples(id, samples))
        }
        k => Err(TsdbError::Corrupt(format!("unknown log record kind {k}"))),
    }
}
