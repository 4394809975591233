//! The sled-backed [`Store`]: serialized writes, persisted revision, group commit, watch.
//!
//! Layout in the default sled tree: `d<key>` holds `create_revision (8 bytes BE) ||
//! mod_revision (8 bytes BE) || value`; `r` holds the current revision (8 bytes BE). Each write
//! updates its key and `r` in one atomic batch, so the revision is never reused after a restart.
//! `c` exists only while the store is closed cleanly (see [`RESTART_REVISION_GAP`]).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use crate::flush::{lock, read_lock, DbGuard, GroupCommit, SharedDb};
use crate::hub::Hub;
use crate::{Deleted, KeyValue, ListPage, Revision, Store, StoreError, WatchEvent, WatchReceiver};

/// Events kept in memory for watch replay unless configured otherwise.
pub const DEFAULT_HISTORY_EVENTS: usize = 10_000;

/// Room for live events in each watcher's channel; a watcher that falls this far behind is
/// dropped. The channel additionally holds the events replayed from history.
pub const WATCH_CHANNEL_CAPACITY: usize = 4096;

const DATA_PREFIX: u8 = b'd';
const REVISION_KEY: &[u8] = b"r";
const HEADER_LEN: usize = 16;
/// Present only between a clean close and the next open.
const CLEAN_CLOSE_KEY: &[u8] = b"c";

/// How far the revision jumps when the store is opened after its last process stopped without
/// closing it. Watch events go out when a write is applied, just before it is flushed, so a
/// watcher may have seen revisions that never reached the disk; were they handed out again, a
/// client resuming from one would silently miss the new writes. Starting past them (the writes
/// in flight at a crash are bounded by the concurrent writers, far below this) makes every
/// resumed watch older than the new revision get `Compacted`, so the client lists again.
pub const RESTART_REVISION_GAP: Revision = 1_000_000;

/// The state guarded by the write lock.
struct WriteState {
    revision: Revision,
    hub: Hub,
    /// Set by [`SledStore::close`]: later writes fail.
    closed: bool,
}

/// A [`Store`] on a sled database. Share it as `Arc<dyn Store>`; dropping it stops the flush
/// thread and closes every watch channel.
pub struct SledStore {
    /// Replaced only while the write lock is held, when [`SledStore::reclaim_space`] rewrites
    /// the database; `None` only if reopening after a rewrite failed.
    db: SharedDb,
    path: PathBuf,
    write: Mutex<WriteState>,
    /// The latest applied revision, readable without the write lock.
    revision: AtomicU64,
    /// Bytes of the stored keys and values (kept up to date by every write).
    live: AtomicU64,
    commit: GroupCommit,
}

enum Op {
    Create(Vec<u8>),
    Update(Vec<u8>, Option<Revision>),
    Delete(Option<Revision>),
}

enum Outcome {
    Put(KeyValue),
    Deleted(Deleted),
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(%error, "closing the store cleanly failed; the next start treats it as a crash");
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` with [`DEFAULT_HISTORY_EVENTS`] of watch history.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with_history(path, DEFAULT_HISTORY_EVENTS)
    }

    /// Opens (or creates) the store at `path`, keeping `history_events` events for watch replay.
    pub fn open_with_history(path: &Path, history_events: usize) -> Result<SledStore, StoreError> {
        compact::finish_interrupted_rewrite(path)?;
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| backend(format!("opening {}", path.display()), e))?;
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
        let revision = if closed_cleanly || !db.was_recovered() {
            stored
        } else {
            tracing::info!(
                stored,
                "the store was not closed cleanly: revisions continue past any a watcher may have seen"
            );
            stored + RESTART_REVISION_GAP
        };
        let mut batch = sled::Batch::default();
        batch.remove(CLEAN_CLOSE_KEY);
        batch.insert(REVISION_KEY, &revision.to_be_bytes());
        db.apply_batch(batch)
            .and_then(|()| db.flush().map(drop))
            .map_err(|e| backend("recording the store as open", e))?;
        let live = compact::live_bytes(&db)?;
        let db: SharedDb = Arc::new(RwLock::new(Some(db)));
        let commit = GroupCommit::start(Arc::clone(&db), revision)?;
        Ok(SledStore {
            db,
            path: path.to_path_buf(),
            write: Mutex::new(WriteState {
                revision,
                hub: Hub::new(history_events, revision, WATCH_CHANNEL_CAPACITY),
                closed: false,
            }),
            revision: AtomicU64::new(revision),
            live: AtomicU64::new(live),
            commit,
        })
    }

    /// Refuses further writes, makes every applied one durable and marks the store closed
    /// cleanly, so the next open keeps counting revisions from here. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        let mut state = lock(&self.write);
        if state.closed {
            return Ok(());
        }
        state.closed = true;
        let db = self.db()?;
        db.flush()
            .and_then(|_| db.insert(CLEAN_CLOSE_KEY, &[] as &[u8]))
            .and_then(|_| db.flush())
            .map_err(|e| backend("closing the store", e))?;
        Ok(())
    }

    /// The oldest revision a watch can start after without getting `Compacted`, plus one.
    pub fn oldest_retained_revision(&self) -> Revision {
        lock(&self.write).hub.oldest_retained()
    }

    /// Number of registered watchers (closed ones are pruned on the next write).
    pub fn watcher_count(&self) -> usize {
        lock(&self.write).hub.watcher_count()
    }

    /// The database, for as long as the guard lives.
    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        DbGuard::new(read_lock(&self.db))
    }

    fn read(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.db()?
            .get(data_key(key))
            .map_err(|e| backend(format!("reading {key}"), e))?
            .map(|bytes| decode(key.to_string(), &bytes))
            .transpose()
    }

    /// Applies one write under the write lock: checks, assigns the next revision, stores the
    /// key and the revision atomically, and publishes the event. Not yet durable.
    fn apply(&self, key: &str, op: Op) -> Result<Outcome, StoreError> {
        let mut state = lock(&self.write);
        if state.closed {
            return Err(StoreError::Backend(
                "the store is closed: the server is shutting down".to_string(),
            ));
        }
        let current = self.read(key)?;
        let old_size = current.as_ref().map_or(0, |kv| {
            (1 + kv.key.len() + HEADER_LEN + kv.value.len()) as u64
        });
        let revision = state.revision + 1;
        let mut batch = sled::Batch::default();
        let (event, outcome) = match op {
            Op::Create(value) => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                batch.insert(data_key(key), encode(revision, revision, &value));
                let kv = KeyValue {
                    key: key.to_string(),
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                let event = WatchEvent::Put {
                    kv: kv.clone(),
                    prev: None,
                };
                (event, Outcome::Put(kv))
            }
            Op::Update(value, expected) => {
                let prev = check(key, current, expected)?;
                batch.insert(
                    data_key(key),
                    encode(prev.create_revision, revision, &value),
                );
                let kv = KeyValue {
                    key: key.to_string(),
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                let event = WatchEvent::Put {
                    kv: kv.clone(),
                    prev: Some(prev),
                };
                (event, Outcome::Put(kv))
            }
            Op::Delete(expected) => {
                let prev = check(key, current, expected)?;
                batch.remove(data_key(key));
                let deleted = Deleted { prev, revision };
                (
                    WatchEvent::Delete(deleted.clone()),
                    Outcome::Deleted(deleted),
                )
            }
        };
        batch.insert(REVISION_KEY, &revision.to_be_bytes());
        self.db()?
            .apply_batch(batch)
            .map_err(|e| backend(format!("writing {key} at revision {revision}"), e))?;
        state.revision = revision;
        let new_size = match &outcome {
            Outcome::Put(kv) => (1 + kv.key.len() + HEADER_LEN + kv.value.len()) as u64,
            Outcome::Deleted(_) => 0,
        };
        self.live.fetch_add(new_size, Ordering::Relaxed);
        self.live.fetch_sub(old_size, Ordering::Relaxed);
        self.revision.store(revision, Ordering::Release);
        state.hub.publish(event);
        Ok(outcome)
    }

    /// Applies `op`, then waits (without the write lock) until it is on disk.
    async fn write(&self, key: &str, op: Op) -> Result<Outcome, StoreError> {
        let outcome = self.apply(key, op)?;
        let revision = match &outcome {
            Outcome::Put(kv) => kv.mod_revision,
            Outcome::Deleted(deleted) => deleted.revision,
        };
        self.commit.wait_durable(revision).await?;
        Ok(outcome)
    }

    async fn put(&self, key: &str, op: Op) -> Result<KeyValue, StoreError> {
        match self.write(key, op).await? {
            Outcome::Put(kv) => Ok(kv),
            Outcome::Deleted(_) => Err(StoreError::Backend(format!(
                "writing {key} unexpectedly deleted it"
            ))),
        }
    }

    #[cfg(test)]
    fn set_watch_live_capacity(&self, capacity: usize) {
        lock(&self.write).hub.set_live_capacity(capacity);
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.read(key)
    }

    /// The page's `revision` is read before scanning: every change up to it is reflected in
    /// the items, and items may already show later changes (which a watch from `revision`
    /// delivers again).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let revision = self.current_revision();
        let data_prefix = data_key(prefix);
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(data_key(after)),
            _ => Bound::Included(data_prefix.clone()),
        };
        let mut items = Vec::new();
        let mut more = false;
        let db = self.db()?;
        for entry in db.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (raw_key, bytes) = entry.map_err(|e| backend(format!("listing {prefix}"), e))?;
            if !raw_key.starts_with(&data_prefix) {
                break;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            let key = std::str::from_utf8(&raw_key[1..])
                .map_err(|_| StoreError::Backend(format!("a key under {prefix} is not utf-8")))?;
            items.push(decode(key.to_string(), &bytes)?);
        }
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.put(key, Op::Create(value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.put(key, Op::Update(value, expected)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        match self.write(key, Op::Delete(expected)).await? {
            Outcome::Deleted(deleted) => Ok(deleted),
            Outcome::Put(_) => Err(StoreError::Backend(format!(
                "deleting {key} unexpectedly wrote it"
            ))),
        }
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        let mut state = lock(&self.write);
        let current = state.revision;
        state.hub.subscribe(prefix, after, current)
    }

    fn current_revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = lock(&self.write);
        let current = state.revision;
        state.hub.compact(revision, current);
        Ok(())
    }
}

/// Checks that `current` exists and matches `expected`; returns it.
fn check(
    key: &str,
    current: Option<KeyValue>,
    expected: Option<Revision>,
) -> Result<KeyValue, StoreError> {
    let current = current.ok_or_else(|| StoreError::NotFound {
        key: key.to_string(),
    })?;
    match expected {
        Some(expected) if expected != current.mod_revision => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual: current.mod_revision,
        }),
        _ => Ok(current),
    }
}

fn backend(context: impl std::fmt::Display, error: sled::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {}", error.to_string().to_lowercase()))
}

fn data_key(key: &str) -> Vec<u8> {
    let mut raw = Vec::with_capacity(key.len() + 1);
    raw.push(DATA_PREFIX);
    raw.extend_from_slice(key.as_bytes());
    raw
}

fn encode(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(HEADER_LEN + value.len());
    raw.extend_from_slice(&create_revision.to_be_bytes());
    raw.extend_from_slice(&mod_revision.to_be_bytes());
    raw.extend_from_slice(value);
    raw
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn decode(key: String, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let (Some(create_revision), Some(mod_revision)) =
        (decode_u64(bytes), bytes.get(8..).and_then(decode_u64))
    else {
        return Err(StoreError::Backend(format!(
            "the record for {key} is corrupt"
        )));
    };
    Ok(KeyValue {
        key,
        value: bytes[HEADER_LEN..].to_vec(),
        create_revision,
        mod_revision,
    })
}

mod compact;
mod maintenance;

pub use compact::SledSpace;
pub use maintenance::{restore_sled, Restored};

#[cfg(test)]
mod tests;
