//! The server's encryption state: the keyring loaded from (or generated into) the data dir,
//! the write gate, key rotation, the status, and the one re-encryption pass at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use mini_store::Store;
use tokio_util::sync::CancellationToken;

use crate::cipher::{Keyring, Sealing};
use crate::config::{self, EncryptionConfiguration};
use crate::status::{KeyStatus, PassOutcome, PassProgress, ResourceStatus, Started, Status};
use crate::store::EncryptingStore;
use crate::EncryptionError;

/// The keyring file, under `<data-dir>/server/`.
pub const CONFIG_FILE: &str = "cred/encryption-config.json";
/// The progress of an unfinished re-encryption pass, under `<data-dir>/server/`.
pub const PROGRESS_FILE: &str = "cred/encryption-progress.json";
/// Keys listed per store read while walking.
pub(crate) const PAGE: usize = 100;

/// What status shows of passes.
#[derive(Default)]
pub(crate) struct PassView {
    pub current: Option<PassProgress>,
    pub last: Option<PassOutcome>,
}

/// Encryption at rest for one server. Build with [`Encryption::open`], wrap the store with
/// [`Encryption::store`], then [`Encryption::start`] once the server runs.
pub struct Encryption {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) config_path: PathBuf,
    pub(crate) progress_path: PathBuf,
    enabled: bool,
    /// The configuration file was written by this start for a store that already held data
    /// (a cluster from before encryption): its plain values are sealed at start.
    seal_existing: bool,
    keyring: RwLock<Arc<Keyring>>,
    /// Writers of sealed values hold it shared; a keyring change holds it exclusively.
    pub(crate) gate: tokio::sync::RwLock<()>,
    /// Held by the running pass (and a rotation), so there is one at a time.
    pass_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) view: std::sync::Mutex<PassView>,
    runs: AtomicU64,
    shutdown: OnceLock<CancellationToken>,
    /// Several servers: the keyring shared through the datastore.
    pub(crate) shared: OnceLock<Arc<mini_bootstrap::Shared>>,
    /// When this server last confirmed its keyring against the datastore's.
    confirmed: Mutex<Option<Instant>>,
}

/// How often a server re-reads the datastore's keyring and records its write keys.
const CONFIRM_EVERY: Duration = Duration::from_secs(5);
/// A server that could not confirm its keyring for this long re-reads it before sealing
/// (well below the writer records' staleness, after which a retirement counts it as down).
const CONFIRM_MAX_AGE: Duration = Duration::from_secs(20);

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("config_path", &self.config_path)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Encryption {
    /// Loads the keyring of the server whose directory is `server_dir`
    /// (`<data-dir>/server`). With `enabled` and no configuration yet, a new one is generated
    /// (one AES-GCM key for Secrets). With `enabled` false new values are written plain, and
    /// an existing configuration still opens sealed ones.
    pub fn open(
        server_dir: &Path,
        inner: Arc<dyn Store>,
        enabled: bool,
    ) -> Result<Arc<Encryption>, EncryptionError> {
        let config_path = server_dir.join(CONFIG_FILE);
        let progress_path = server_dir.join(PROGRESS_FILE);
        let had_data = inner.current_revision() > 0;
        let (ring, generated) = match config::read(&config_path)? {
            Some(config) => (Keyring::new(config, enabled)?, false),
            None if enabled => {
                let config = EncryptionConfiguration::generate(chrono::Utc::now())?;
                config::write(&config_path, &config)?;
                tracing::info!(path = %config_path.display(), "generated the secrets encryption key");
                (Keyring::new(config, true)?, true)
            }
            None => (Keyring::empty(), false),
        };
        Ok(Arc::new(Encryption {
            inner,
            config_path,
            progress_path,
            enabled,
            seal_existing: generated && had_data,
            keyring: RwLock::new(Arc::new(ring)),
            gate: tokio::sync::RwLock::new(()),
            pass_lock: Arc::new(tokio::sync::Mutex::new(())),
            view: std::sync::Mutex::new(PassView::default()),
            runs: AtomicU64::new(0),
            shutdown: OnceLock::new(),
            shared: OnceLock::new(),
            confirmed: Mutex::new(None),
        }))
    }

    /// The store to hand the API server: it seals and opens through this keyring.
    pub fn store(self: &Arc<Self>) -> Arc<dyn Store> {
        Arc::new(EncryptingStore { enc: self.clone() })
    }

    /// Whether new values are sealed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The keyring in force.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Persists `config` and makes it the keyring, with no sealed write in flight. With
    /// several servers the datastore holds it before anything is sealed with it, so every
    /// server can open what this one writes next.
    pub(crate) async fn replace_config(
        &self,
        config: EncryptionConfiguration,
    ) -> Result<Arc<Keyring>, EncryptionError> {
        let ring = Arc::new(Keyring::new(config.clone(), self.enabled)?);
        let _gate = self.gate.write().await;
        let previous = self.keyring().config().clone();
        // on disk first: no value may be sealed with a key a restart would not know
        config::write(&self.config_path, &config)?;
        if let Some(shared) = self.shared.get() {
            if let Err(e) = shared.publish().await {
                config::write(&self.config_path, &previous)?;
                return Err(EncryptionError::Shared(e.to_string()));
            }
        }
        self.set_keyring(ring.clone());
        if let Some(shared) = self.shared.get() {
            if let Err(e) = shared.announce(&Self::write_keys(&ring)).await {
                tracing::warn!(error = %e, "recording this server's write keys failed; retried shortly");
            }
        }
        Ok(ring)
    }

    fn set_keyring(&self, ring: Arc<Keyring>) {
        *self
            .keyring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ring;
    }

    /// Takes the keyring file as it is on disk now (written from another server's change),
    /// with no sealed write in flight. Returns whether the keyring changed.
    pub(crate) async fn reload(&self) -> Result<bool, EncryptionError> {
        let Some(config) = config::read(&self.config_path)? else {
            return Ok(false);
        };
        if *self.keyring().config() == config {
            return Ok(false);
        }
        let ring = Arc::new(Keyring::new(config, self.enabled)?);
        let _gate = self.gate.write().await;
        tracing::info!(write_keys = ?Self::write_keys(&ring), "took the keyring another server changed");
        self.set_keyring(ring);
        Ok(true)
    }

    /// Brings the keyring in line with the datastore's and records this server's write keys
    /// there. A no-op on a server of its own.
    pub(crate) async fn confirm(&self) -> Result<(), EncryptionError> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        shared
            .refresh()
            .await
            .map_err(|e| EncryptionError::Shared(e.to_string()))?;
        self.reload().await?;
        shared
            .announce(&Self::write_keys(&self.keyring()))
            .await
            .map_err(|e| EncryptionError::Shared(e.to_string()))?;
        *self
            .confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        Ok(())
    }

    /// Whether the keyring must be confirmed before sealing: several servers, and no
    /// confirmation for a while (this server may have missed a rotation).
    pub(crate) fn needs_confirming(&self) -> bool {
        self.shared.get().is_some()
            && self
                .confirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() > CONFIRM_MAX_AGE)
    }

    /// Several servers: the keyring follows the datastore's (at once on a change another
    /// server publishes, and every few seconds), and this server's write keys are recorded
    /// there for key retirements to wait on. Until `shutdown`.
    pub fn share(
        self: &Arc<Self>,
        shared: Arc<mini_bootstrap::Shared>,
        shutdown: CancellationToken,
    ) {
        let mut changes = shared.subscribe();
        if self.shared.set(shared).is_err() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.confirm().await {
                    tracing::warn!(error = %e, "confirming the secrets keyring with the datastore failed; retrying");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(CONFIRM_EVERY) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    /// Resumes a pass a restart interrupted, or, when this start generated the keyring for a
    /// cluster that already holds data, seals what was stored plain. With encryption off
    /// nothing starts on its own (a pass then would write values plain). Passes stop with
    /// `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let _ = self.shutdown.set(shutdown);
        if !self.enabled {
            return;
        }
        let interrupted = self.progress_path.exists();
        if !(interrupted || self.seal_existing) {
            return;
        }
        match self.begin_pass() {
            Ok(started) => tracing::info!(
                run = started.run,
                resumed = interrupted,
                "re-encrypting stored values in the background"
            ),
            Err(e) => tracing::warn!(error = %e, "could not start the re-encryption pass"),
        }
    }

    /// Returns once no pass runs (after shutdown, the pass stops at its next value).
    pub async fn stopped(&self) {
        let _idle = self.pass_lock.lock().await;
    }

    fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.get().cloned().unwrap_or_default()
    }

    pub(crate) fn write_keys(ring: &Keyring) -> Vec<String> {
        (0..ring.len())
            .map(|i| ring.write_sealing(i).to_string())
            .collect()
    }

    fn busy(&self) -> EncryptionError {
        let view = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        EncryptionError::Busy(match &view.current {
            Some(p) => format!("run {}, {} values rewritten so far", p.run, p.rewritten),
            None => "starting".to_string(),
        })
    }

    /// Starts a pass in the background that rewrites every stored value of the configured
    /// resources with its write key and then retires the keys nothing uses. `Busy` when one
    /// is running.
    pub fn begin_pass(self: &Arc<Self>) -> Result<Started, EncryptionError> {
        let guard = self
            .pass_lock
            .clone()
            .try_lock_owned()
            .map_err(|_| self.busy())?;
        Ok(self.spawn_pass(guard))
    }

    fn spawn_pass(self: &Arc<Self>, guard: tokio::sync::OwnedMutexGuard<()>) -> Started {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let write_keys = Self::write_keys(&self.keyring());
        let this = self.clone();
        let cancel = self.shutdown_token();
        tokio::spawn(async move {
            let _guard = guard;
            let outcome = this.run_pass(run, &cancel).await;
            match &outcome.error {
                Some(e) => {
                    tracing::error!(run, error = %e, "the re-encryption pass failed")
                }
                None => tracing::info!(
                    run,
                    result = %outcome.result,
                    rewritten = outcome.rewritten,
                    retired = ?outcome.retired,
                    "re-encryption pass ended"
                ),
            }
            let mut view = this
                .view
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.current = None;
            view.last = Some(outcome);
        });
        Started { run, write_keys }
    }

    /// Adds a new write key to every entry that writes with a key (older keys stay for
    /// reading), persists it, and starts the pass that moves every value to it.
    pub async fn rotate_keys(self: &Arc<Self>) -> Result<Started, EncryptionError> {
        if !self.enabled {
            return Err(EncryptionError::Disabled);
        }
        let guard = self
            .pass_lock
            .clone()
            .try_lock_owned()
            .map_err(|_| self.busy())?;
        let (config, added) = self.keyring().config().rotated(chrono::Utc::now())?;
        self.replace_config(config).await?;
        tracing::info!(keys = ?added, "rotated the secrets encryption keys");
        Ok(self.spawn_pass(guard))
    }

    /// Counts the stored values of each entry by how they are sealed.
    pub(crate) async fn count(
        &self,
        ring: &Keyring,
    ) -> Result<Vec<BTreeMap<Sealing, u64>>, EncryptionError> {
        let mut counts = vec![BTreeMap::new(); ring.len()];
        for prefix in ring.prefixes() {
            let mut after: Option<String> = None;
            loop {
                let page = self.inner.list(&prefix, after.as_deref(), PAGE).await?;
                for kv in &page.items {
                    if let Some(entry) = ring.entry_for(&kv.key) {
                        *counts[entry].entry(Sealing::of(&kv.value)).or_insert(0) += 1;
                    }
                }
                match page.items.last() {
                    Some(last) if page.more => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
        Ok(counts)
    }

    /// Keys, their use and the passes.
    pub async fn status(&self) -> Result<Status, EncryptionError> {
        let ring = self.keyring();
        let counts = self.count(&ring).await?;
        let mut resources = Vec::new();
        for (entry, count) in counts.iter().enumerate() {
            let write = ring.write_sealing(entry);
            let configured = ring.key_sealings(entry);
            let mut keys: Vec<KeyStatus> = configured
                .iter()
                .map(|s| key_status(s, count.get(s).copied().unwrap_or(0), &write, true))
                .collect();
            for (sealing, n) in count {
                if *sealing != Sealing::Plain && !configured.contains(sealing) {
                    keys.push(key_status(sealing, *n, &write, false));
                }
            }
            resources.push(ResourceStatus {
                resources: ring.resources(entry).to_vec(),
                write_key: write.to_string(),
                keys,
                plain_values: count.get(&Sealing::Plain).copied().unwrap_or(0),
            });
        }
        let (current, last) = {
            let view = self
                .view
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (view.current.clone(), view.last.clone())
        };
        let pass = match current {
            Some(p) => Some(p),
            None => crate::pass::read_progress(&self.progress_path)?.map(|p| PassProgress {
                run: 0,
                running: false,
                prefix: p.prefix.clone(),
                after: p.after.clone(),
                rewritten: p.rewritten,
                unchanged: p.unchanged,
                started: p.started.clone(),
                resumed: false,
            }),
        };
        Ok(Status {
            enabled: self.enabled,
            config_path: self.config_path.display().to_string(),
            resources,
            pass,
            last_pass: last,
        })
    }
}

fn key_status(sealing: &Sealing, values: u64, write: &Sealing, configured: bool) -> KeyStatus {
    let (provider, name) = match sealing {
        Sealing::Key(p, n) => (p.clone(), n.clone()),
        Sealing::Plain => (config::IDENTITY.to_string(), String::new()),
    };
    KeyStatus {
        provider,
        name,
        values,
        write: sealing == write,
        configured,
    }
}
