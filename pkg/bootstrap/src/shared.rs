//! The bootstrap data while servers run: [`Shared`] publishes this server's changes at once,
//! watches the record for the others' (a rotated keyring, a rotated CA), writes them to this
//! server's files and tells its subscribers; and it keeps the writer records — which keys each
//! server seals with — that a key retirement waits on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mini_store::{Revision, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{apply, open, save, BootstrapError, Plain, Sealed, KEY};

/// Where each server records the keys it writes with: `<prefix><server identity>`.
pub const WRITERS_PREFIX: &str = "/mini/bootstrap/writers/";

/// How often the record is looked at besides the watch, and local changes published.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
const PUBLISH_EVERY: Duration = Duration::from_secs(60);

/// One server's writer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Writer {
    write_keys: Vec<String>,
}

/// How long [`Shared::wait_writers`] waits.
#[derive(Debug, Clone, Copy)]
pub struct WriterWait {
    /// A record unchanged this long belongs to a server that is down (it re-reads the keyring
    /// before it writes again).
    pub stale_after: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    pub poll: Duration,
}

impl Default for WriterWait {
    fn default() -> Self {
        WriterWait {
            stale_after: Duration::from_secs(35),
            timeout: Duration::from_secs(120),
            poll: Duration::from_millis(300),
        }
    }
}

/// This server's view of the cluster's bootstrap data while it runs.
pub struct Shared {
    store: Arc<dyn Store>,
    server_dir: PathBuf,
    secret: String,
    name: String,
    /// The record revision last applied: an unchanged record is not opened again (argon2id).
    applied: Mutex<Option<Revision>>,
    /// One refresh or publish at a time.
    busy: tokio::sync::Mutex<()>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("server_dir", &self.server_dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The bootstrap data of `server_dir` (`<data-dir>/server`) in `store`, for the server
    /// named `name` (its leader-election identity).
    pub fn new(
        store: Arc<dyn Store>,
        server_dir: PathBuf,
        secret: String,
        name: String,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            store,
            server_dir,
            secret,
            name,
            applied: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ticks each time files were written from another server's change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Shares this server's newer files now (a rotation just made here). Returns whether the
    /// record changed.
    pub async fn publish(&self) -> Result<bool, BootstrapError> {
        let _busy = self.busy.lock().await;
        save(self.store.as_ref(), &self.server_dir, &self.secret).await
    }

    /// Writes what changed in the record since the last look to this server's files; tells
    /// subscribers when something was written. Returns the files written.
    pub async fn refresh(&self) -> Result<Vec<String>, BootstrapError> {
        let _busy = self.busy.lock().await;
        let Some(kv) = self.store.get(KEY).await? else {
            return Ok(Vec::new());
        };
        if *self.applied_lock() == Some(kv.mod_revision) {
            return Ok(Vec::new());
        }
        let sealed: Sealed = serde_json::from_slice(&kv.value)
            .map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
        let plain = open(&sealed, &self.secret)?;
        let plain: Plain =
            serde_json::from_slice(&plain).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
        let loaded = apply(&plain, &self.server_dir)?;
        *self.applied_lock() = Some(kv.mod_revision);
        if !loaded.written.is_empty() {
            tracing::info!(files = ?loaded.written, "picked up another server's change of the cluster's bootstrap data");
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(loaded.written)
    }

    fn applied_lock(&self) -> std::sync::MutexGuard<'_, Option<Revision>> {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the record and looks at it every few seconds, publishing this server's own
    /// changes every minute, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last_publish = Instant::now();
        loop {
            let mut events = match self.store.watch(KEY, self.store.current_revision()) {
                Ok(rx) => Some(rx),
                Err(e) => {
                    tracing::debug!(error = %e, "watching the bootstrap data failed; polling");
                    None
                }
            };
            loop {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "reading the cluster's bootstrap data failed; retrying");
                }
                if last_publish.elapsed() >= PUBLISH_EVERY {
                    last_publish = Instant::now();
                    if let Err(e) = self.publish().await {
                        tracing::warn!(error = %e, "sharing this server's keys through the datastore failed");
                    }
                }
                let ended = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REFRESH_EVERY) => false,
                    ev = async {
                        match events.as_mut() {
                            Some(rx) => rx.recv().await,
                            None => std::future::pending().await,
                        }
                    } => ev.is_none(),
                };
                if ended {
                    break;
                }
            }
        }
    }

    /// Records that this server seals with `write_keys` (refreshed as a heartbeat).
    pub async fn announce(&self, write_keys: &[String]) -> Result<(), BootstrapError> {
        let key = format!("{WRITERS_PREFIX}{}", self.name);
        let value = serde_json::to_vec(&Writer {
            write_keys: write_keys.to_vec(),
        })
        .map_err(|e| BootstrapError::Seal(e.to_string()))?;
        match self.store.update(&key, value.clone(), None).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => match self.store.create(&key, value).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until every other server that is up records `write_keys`; a server whose record
    /// stays unchanged for `wait.stale_after` counts as down. Returns the servers taken for
    /// down; `Lagging` names the ones still writing with other keys at the timeout.
    pub async fn wait_writers(
        &self,
        write_keys: &[String],
        wait: WriterWait,
    ) -> Result<Vec<String>, BootstrapError> {
        let started = Instant::now();
        // server -> (its record's revision, when this wait first saw that revision)
        let mut seen: BTreeMap<String, (Revision, Instant)> = BTreeMap::new();
        loop {
            let page = self.store.list(WRITERS_PREFIX, None, 10_000).await?;
            let mut lagging = Vec::new();
            let mut down = Vec::new();
            for kv in page.items {
                let name = kv.key.trim_start_matches(WRITERS_PREFIX).to_string();
                if name == self.name {
                    continue;
                }
                let current = serde_json::from_slice::<Writer>(&kv.value)
                    .is_ok_and(|w| w.write_keys == write_keys);
                if current {
                    continue;
                }
                let entry = seen
                    .entry(name.clone())
                    .or_insert((kv.mod_revision, Instant::now()));
                if entry.0 != kv.mod_revision {
                    *entry = (kv.mod_revision, Instant::now());
                }
                if entry.1.elapsed() >= wait.stale_after {
                    down.push(name);
                } else {
                    lagging.push(name);
                }
            }
            if lagging.is_empty() {
                if !down.is_empty() {
                    tracing::info!(servers = ?down, "servers whose writer records went stale count as down: they re-read the keyring before writing");
                }
                return Ok(down);
            }
            if started.elapsed() >= wait.timeout {
                return Err(BootstrapError::Lagging(lagging.join(", ")));
            }
            tokio::time::sleep(wait.poll).await;
        }
    }
}
