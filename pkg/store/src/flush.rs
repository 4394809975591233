//! Group commit: one background thread fsyncs the sled database on behalf of many writers.
//!
//! A writer applies its change (in memory, under the store's write lock), then calls
//! [`GroupCommit::wait_durable`] with its revision. The flusher thread picks up the highest
//! requested revision, calls `db.flush()` once, and reports that every revision up to that
//! target is durable. Writers that arrive while a flush is running are served by the next one,
//! so concurrent writers share fsyncs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::{Revision, StoreError};

/// Locks `mutex`, ignoring poisoning: the guarded state is kept consistent by every holder.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sled database, shared by the store and the flush thread; replaced (under a write
/// guard) when the store rewrites it to give space back.
pub(crate) type SharedDb = Arc<RwLock<Option<sled::Db>>>;

/// Read-locks `lock`, ignoring poisoning like [`lock`].
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// The open database, held for as long as the guard lives.
pub(crate) struct DbGuard<'a>(RwLockReadGuard<'a, Option<sled::Db>>);

impl<'a> DbGuard<'a> {
    pub(crate) fn new(guard: RwLockReadGuard<'a, Option<sled::Db>>) -> Result<Self, StoreError> {
        if guard.is_none() {
            return Err(StoreError::Backend(
                "the store's database could not be reopened after rewriting it; restart the server"
                    .to_string(),
            ));
        }
        Ok(DbGuard(guard))
    }
}

impl std::ops::Deref for DbGuard<'_> {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        match &*self.0 {
            Some(db) => db,
            None => unreachable!("a DbGuard is only made over an open database"),
        }
    }
}

/// What the flusher has achieved so far.
#[derive(Debug, Clone, Default)]
struct FlushStatus {
    /// Every revision up to and including this one is on disk.
    durable: Revision,
    /// The most recent failed flush: its target revision and the error.
    failed: Option<(Revision, String)>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Highest revision a writer asked to make durable.
    requested: Revision,
    /// Target of the latest flush that was started.
    started: Revision,
    shutdown: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    status: watch::Sender<FlushStatus>,
}

/// The flusher thread and the handle writers wait on.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread; `durable` is the revision already on disk.
    pub(crate) fn start(db: SharedDb, durable: Revision) -> Result<GroupCommit, StoreError> {
        let (status, _) = watch::channel(FlushStatus {
            durable,
            failed: None,
        });
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                requested: durable,
                started: durable,
                shutdown: false,
            }),
            wake: Condvar::new(),
            status,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mini-store-flush".to_string())
            .spawn(move || run(&thread_shared, &db))
            .map_err(|e| StoreError::Backend(format!("starting the flush thread: {e}")))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until `revision` (already applied to the database) has been flushed to disk.
    pub(crate) async fn wait_durable(&self, revision: Revision) -> Result<(), StoreError> {
        let mut status = self.shared.status.subscribe();
        {
            let mut pending = lock(&self.shared.pending);
            if revision > pending.requested {
                pending.requested = revision;
                self.shared.wake.notify_one();
            }
        }
        loop {
            {
                let current = status.borrow_and_update();
                if current.durable >= revision {
                    return Ok(());
                }
                if let Some((target, error)) = &current.failed {
                    if *target >= revision {
                        return Err(StoreError::Backend(format!(
                            "flushing revision {revision} to disk: {error}"
                        )));
                    }
                }
            }
            if status.changed().await.is_err() {
                return Err(StoreError::Backend(
                    "the flush thread stopped before the write was durable".to_string(),
                ));
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.pending).shutdown = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the store flush thread panicked");
            }
        }
    }
}

/// The flusher loop: flush whenever a writer asked for a revision not yet covered by a flush.
fn run(shared: &Shared, db: &RwLock<Option<sled::Db>>) {
    loop {
        let target = {
            let mut pending = lock(&shared.pending);
            loop {
                if pending.requested > pending.started {
                    break;
                }
                if pending.shutdown {
                    return;
                }
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            pending.started = pending.requested;
            pending.requested
        };
        // Every write with revision <= target was applied before it was requested, hence
        // before this flush starts: one successful flush makes all of them durable.
        let result = match &*read_lock(db) {
            Some(db) => db.flush().map(drop).map_err(|e| e.to_string()),
            None => Err("the database is not open".to_string()),
        };
        shared.status.send_modify(|status| match result {
            Ok(_) => status.durable = status.durable.max(target),
            Err(error) => {
                tracing::error!(%error, target, "flushing the store failed");
                status.failed = Some((target, error));
            }
        });
    }
}
