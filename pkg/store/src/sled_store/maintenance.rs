//! Whole-store operations on sled: a consistent copy of every key at one revision (for
//! snapshots) and restoring such a copy into a stopped store's directory.

use std::path::Path;

use super::{backend, data_key, decode, decode_u64, encode, lock, SledStore};
use super::{CLEAN_CLOSE_KEY, DATA_PREFIX, RESTART_REVISION_GAP, REVISION_KEY};
use crate::{KeyValue, Revision, StoreError};

/// What [`restore_sled`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The highest revision the directory had issued before the restore (counting the jump a
    /// store that was not closed cleanly takes at its next open).
    pub previous: Revision,
    /// The revision the store continues from; every earlier one answers `Compacted`.
    pub revision: Revision,
    /// Keys written.
    pub keys: usize,
}

impl SledStore {
    /// Every key with the revision they were read at, in key order. Writes wait while the
    /// keys are read, so the copy is exactly the store at that revision.
    pub fn read_all(&self) -> Result<(Revision, Vec<KeyValue>), StoreError> {
        let state = lock(&self.write);
        let revision = state.revision;
        let mut items = Vec::new();
        let db = self.db()?;
        for entry in db.scan_prefix([DATA_PREFIX]) {
            let (raw_key, bytes) = entry.map_err(|e| backend("reading every key", e))?;
            let key = std::str::from_utf8(&raw_key[1..])
                .map_err(|_| StoreError::Backend("a stored key is not utf-8".to_string()))?;
            items.push(decode(key.to_string(), &bytes)?);
        }
        drop(state);
        Ok((revision, items))
    }
}

/// Replaces everything in the (stopped) store at `path` with `items` in one atomic batch. The
/// store then continues above both `revision` (the copy's) and every revision the directory
/// ever issued, and closed cleanly, so its next open treats every older revision as compacted:
/// no watcher is handed the restored state as newer than what it saw. Fails without touching
/// anything when a running server holds the directory.
pub fn restore_sled(
    path: &Path,
    revision: Revision,
    items: &[KeyValue],
) -> Result<Restored, StoreError> {
    std::fs::create_dir_all(path)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", path.display())))?;
    let db = sled::Config::new().path(path).open().map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            StoreError::Backend(format!(
                "the store at {} is in use: stop the server before restoring",
                path.display()
            ))
        } else {
            backend(format!("opening {}", path.display()), e)
        }
    })?;
    let stored = match db
        .get(REVISION_KEY)
        .map_err(|e| backend("reading the stored revision", e))?
    {
        Some(bytes) => decode_u64(&bytes)
            .ok_or_else(|| StoreError::Backend("the stored revision is corrupt".to_string()))?,
        None => 0,
    };
    let closed_cleanly = db
        .get(CLEAN_CLOSE_KEY)
        .map_err(|e| backend("reading the clean-close marker", e))?
        .is_some();
    let previous = if closed_cleanly || !db.was_recovered() {
        stored
    } else {
        stored + RESTART_REVISION_GAP
    };
    let next = previous.max(revision) + 1;
    let mut batch = sled::Batch::default();
    for entry in db.iter().keys() {
        batch.remove(entry.map_err(|e| backend("reading the keys to replace", e))?);
    }
    for kv in items {
        batch.insert(
            data_key(&kv.key),
            encode(kv.create_revision, kv.mod_revision, &kv.value),
        );
    }
    batch.insert(REVISION_KEY, &next.to_be_bytes());
    batch.insert(CLEAN_CLOSE_KEY, &[] as &[u8]);
    db.apply_batch(batch)
        .and_then(|()| db.flush().map(drop))
        .map_err(|e| {
            backend(
                format!("writing the restored keys into {}", path.display()),
                e,
            )
        })?;
    Ok(Restored {
        previous,
        revision: next,
        keys: items.len(),
    })
}
