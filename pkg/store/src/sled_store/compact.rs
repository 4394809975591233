//! Giving disk space back on sled, online. sled keeps the pages of rewritten and removed keys
//! until its segment cleaner relocates them, which in practice leaves a data directory far
//! larger than the live data after keys are deleted (and growing from one create/delete cycle
//! to the next). When the file holds more than twice the live data plus [`REWRITE_SLACK`],
//! the store copies the live keys into a fresh database beside it (`<dir>.rewrite`) while
//! writes go on, then, with writes waiting, replays the changes made meanwhile from the watch
//! history, marks the copy complete, closes the old database, moves the new files in and
//! reopens; reads wait only for the swap. An interrupted swap is finished by the next open;
//! an interrupted copy is discarded.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::Ordering;

use super::{backend, data_key, encode, lock, SledStore, DATA_PREFIX, REVISION_KEY};
use crate::StoreError;
use crate::WatchEvent;

/// The store rewrites its database when the file exceeds twice the live data by this much.
pub const REWRITE_SLACK: u64 = 8 << 20;
/// In the rewrite directory: the names to move in, written once the copy is whole.
const MANIFEST: &str = "rewrite-complete";
/// Keys copied per batch into the fresh database.
const COPY_BATCH: usize = 2000;

/// The database's size against its live data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledSpace {
    /// Bytes of sled's files.
    pub on_disk: u64,
    /// Bytes of the stored keys and values.
    pub live: u64,
    /// The database was rewritten by this call.
    pub rewritten: bool,
}

fn io<'a>(path: &'a Path, what: &str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    let what = what.to_string();
    move |e| StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

/// The directory the fresh database is written into: `<dir>.rewrite` beside the store's own.
fn rewrite_dir(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rewrite");
    path.with_file_name(name)
}

/// Entries sled keeps in its directory; others (such as `snapshots/`) are not the database's.
fn is_sled_entry(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io(path, "syncing"))
}

/// Completes a rewrite the last process left half done, before the store opens `path`: a
/// whole copy (with its manifest) is moved in; an unfinished one is removed.
pub(crate) fn finish_interrupted_rewrite(path: &Path) -> Result<(), StoreError> {
    let next = rewrite_dir(path);
    if !next.exists() {
        return Ok(());
    }
    let manifest = next.join(MANIFEST);
    match fs::read_to_string(&manifest) {
        Ok(text) => {
            let names: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
            swap_in(path, &next, &names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(dir = %next.display(), "removing an unfinished rewrite of the store");
            fs::remove_dir_all(&next).map_err(io(&next, "removing"))
        }
        Err(e) => Err(io(&manifest, "reading")(e)),
    }
}

/// Moves the entries `names` of the complete copy in `next` into `path`, removes sled's other
/// entries from `path`, then `next`. Idempotent: an interrupted run is finished by the next.
fn swap_in(path: &Path, next: &Path, names: &[&str]) -> Result<(), StoreError> {
    for name in names {
        let from = next.join(name);
        if !from.exists() {
            continue; // moved before an interruption
        }
        let to = path.join(name);
        if from.is_dir() && to.exists() {
            fs::remove_dir_all(&to).map_err(io(&to, "removing"))?;
        }
        fs::rename(&from, &to).map_err(io(&to, "moving the rewritten database to"))?;
    }
    for entry in fs::read_dir(path).map_err(io(path, "reading"))? {
        let entry = entry.map_err(io(path, "reading"))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !is_sled_entry(&name) || names.contains(&name.as_str()) {
            continue;
        }
        let old = entry.path();
        if old.is_dir() {
            fs::remove_dir_all(&old).map_err(io(&old, "removing"))?;
        } else {
            fs::remove_file(&old).map_err(io(&old, "removing"))?;
        }
    }
    sync_dir(path)?;
    fs::remove_dir_all(next).map_err(io(next, "removing"))
}

/// Bytes of every stored key and value (counted once at open; writes keep the count).
pub(crate) fn live_bytes(db: &sled::Db) -> Result<u64, StoreError> {
    let mut live = 0u64;
    for entry in db.scan_prefix([DATA_PREFIX]) {
        let (key, value) = entry.map_err(|e| backend("measuring the live data", e))?;
        live += (key.len() + value.len()) as u64;
    }
    Ok(live)
}

/// Opens sled at `path`, waiting while the threads of a just-closed database there still
/// hold its lock.
fn reopen(path: &Path) -> Result<sled::Db, StoreError> {
    let mut last = None;
    for _ in 0..250 {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains("could not acquire lock") => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(backend(format!("reopening {}", path.display()), e)),
        }
    }
    Err(StoreError::Backend(format!(
        "reopening {} after rewriting it: still locked after 5 s ({})",
        path.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

impl SledStore {
    /// The database's size on disk and the bytes of its keys and values.
    pub fn space(&self) -> Result<SledSpace, StoreError> {
        let on_disk = self
            .db()?
            .size_on_disk()
            .map_err(|e| backend("measuring the database", e))?;
        Ok(SledSpace {
            on_disk,
            live: self.live.load(Ordering::Relaxed),
            rewritten: false,
        })
    }

    /// Rewrites the database when its file exceeds twice the live data by more than
    /// [`REWRITE_SLACK`] (always with `force`), giving back the space of deleted and rewritten
    /// keys. Blocking: run it off the async runtime.
    pub fn reclaim_space(&self, force: bool) -> Result<SledSpace, StoreError> {
        let before = self.space()?;
        if !force && before.on_disk <= 2 * before.live + REWRITE_SLACK {
            return Ok(before);
        }
        if lock(&self.write).closed {
            return Err(StoreError::Backend(
                "the store is closed: the server is shutting down".to_string(),
            ));
        }
        let next = rewrite_dir(&self.path);
        if next.exists() {
            fs::remove_dir_all(&next).map_err(io(&next, "removing"))?;
        }
        let fresh = sled::Config::new()
            .path(&next)
            .open()
            .map_err(|e| backend(format!("creating {}", next.display()), e))?;
        // 1. copy every key while writes go on; the copy holds each key as of some revision
        //    at or after `start`
        let start = lock(&self.write).revision;
        {
            let db = self.db()?;
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for entry in db.iter() {
                let (key, value) = entry.map_err(|e| backend("copying the database", e))?;
                batch.insert(key, value);
                pending += 1;
                if pending == COPY_BATCH {
                    fresh
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(|e| backend("writing the rewritten database", e))?;
                    pending = 0;
                }
            }
            fresh
                .apply_batch(batch)
                .map_err(|e| backend("writing the rewritten database", e))?;
        }
        // 2. with writes waiting: replay every change since `start` from the watch history
        //    (or copy again if the history no longer reaches back), then mark the copy whole
        let state = lock(&self.write);
        if state.closed {
            return Err(StoreError::Backend(
                "the store is closed: the server is shutting down".to_string(),
            ));
        }
        let mut batch = sled::Batch::default();
        match state.hub.events_after(start) {
            Some(events) => {
                for event in events {
                    match event {
                        WatchEvent::Put { kv, .. } => batch.insert(
                            data_key(&kv.key),
                            encode(kv.create_revision, kv.mod_revision, &kv.value),
                        ),
                        WatchEvent::Delete(deleted) => batch.remove(data_key(&deleted.prev.key)),
                    }
                }
            }
            None => {
                for entry in fresh.iter().keys() {
                    batch.remove(entry.map_err(|e| backend("reading the copy", e))?);
                }
                for entry in self.db()?.iter() {
                    let (key, value) = entry.map_err(|e| backend("copying the database", e))?;
                    batch.insert(key, value);
                }
            }
        }
        batch.insert(REVISION_KEY, &state.revision.to_be_bytes());
        fresh
            .apply_batch(batch)
            .and_then(|()| fresh.flush().map(drop))
            .map_err(|e| backend("writing the rewritten database", e))?;
        drop(fresh);
        let mut names = Vec::new();
        for entry in fs::read_dir(&next).map_err(io(&next, "reading"))? {
            let entry = entry.map_err(io(&next, "reading"))?;
            names.push(entry.file_name().to_string_lossy().to_string());
        }
        let manifest = next.join(MANIFEST);
        fs::write(&manifest, names.join("\n"))
            .and_then(|()| fs::File::open(&manifest)?.sync_all())
            .map_err(io(&manifest, "writing"))?;
        sync_dir(&next)?;
        // 3. close the old database (readers wait from here), move the copy in, reopen
        let mut slot = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = slot.take() {
            old.flush()
                .map_err(|e| backend("flushing the database before swapping it", e))?;
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        swap_in(&self.path, &next, &names)?;
        *slot = Some(reopen(&self.path)?);
        drop(slot);
        drop(state);
        let after = self.space()?;
        tracing::info!(
            before = before.on_disk,
            after = after.on_disk,
            live = after.live,
            "rewrote the store to give disk space back"
        );
        Ok(SledSpace {
            rewritten: true,
            ..after
        })
    }
}
