//! The re-encryption pass: walk every stored value of the configured resources in key order,
//! rewrite each one not sealed with its write key (compare-and-swap on its mod revision,
//! again on conflict, skipped once deleted), keep the position in the data dir after every
//! page so a restart resumes there, then count everything: only when no value uses an old key
//! are those keys removed from the configuration. With several servers the pass first waits
//! until every live one records it writes with the new keys.

use std::path::Path;

use mini_store::{KeyValue, StoreError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cipher::{Keyring, Sealing};
use crate::manager::{now_text, Encryption, PAGE};
use crate::status::{PassOutcome, PassProgress};
use crate::EncryptionError;

/// Full passes tried before giving up on proving the old keys unused.
const ATTEMPTS: usize = 3;
/// Compare-and-swap tries for one key that keeps changing.
const CAS_TRIES: usize = 20;

/// The position of an unfinished pass, as kept in the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    /// The write key of each entry the pass moves values to; a pass for other keys starts
    /// over.
    pub write_keys: Vec<String>,
    pub prefix: String,
    #[serde(default)]
    pub after: Option<String>,
    pub rewritten: u64,
    pub unchanged: u64,
    pub started: String,
}

/// The progress file, or `None` (none, or unreadable: the pass then starts over, which is
/// always safe).
pub(crate) fn read_progress(path: &Path) -> Result<Option<Progress>, EncryptionError> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable re-encryption progress file; the pass starts over");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EncryptionError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn save_progress(path: &Path, progress: &Progress) -> Result<(), EncryptionError> {
    let bytes = serde_json::to_vec(progress).map_err(|e| EncryptionError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    crate::config::write_private_atomic(path, &bytes)
}

fn clear_progress(path: &Path) -> Result<(), EncryptionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EncryptionError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

enum Rewrite {
    Rewritten,
    Unchanged,
    Gone,
}

impl Encryption {
    fn publish(&self, run: u64, progress: &Progress, resumed: bool) {
        let mut view = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.current = Some(PassProgress {
            run,
            running: true,
            prefix: progress.prefix.clone(),
            after: progress.after.clone(),
            rewritten: progress.rewritten,
            unchanged: progress.unchanged,
            started: progress.started.clone(),
            resumed,
        });
    }

    /// Runs one pass to its end and says how it ended.
    pub(crate) async fn run_pass(&self, run: u64, cancel: &CancellationToken) -> PassOutcome {
        let mut counters = (0, 0);
        let result = self.pass(run, cancel, &mut counters).await;
        let (result, retired, error) = match result {
            Ok(Some(retired)) => ("completed", retired, None),
            Ok(None) => ("interrupted", Vec::new(), None),
            Err(e) => ("failed", Vec::new(), Some(e.to_string())),
        };
        PassOutcome {
            run,
            result: result.to_string(),
            rewritten: counters.0,
            unchanged: counters.1,
            retired,
            error,
            finished: now_text(),
        }
    }

    /// `Ok(Some(retired keys))` once complete, `Ok(None)` when cancelled.
    async fn pass(
        &self,
        run: u64,
        cancel: &CancellationToken,
        counters: &mut (u64, u64),
    ) -> Result<Option<Vec<String>>, EncryptionError> {
        let ring = self.keyring();
        let write_keys: Vec<String> = (0..ring.len())
            .map(|i| ring.write_sealing(i).to_string())
            .collect();
        // several servers: none may still seal with an old key while the pass proves them
        // unused (a server down now re-reads the keyring before it writes again)
        if let Some(shared) = self.shared.get() {
            let down = shared
                .wait_writers(&write_keys, mini_bootstrap::WriterWait::default())
                .await
                .map_err(|e| EncryptionError::Shared(e.to_string()))?;
            tracing::info!(?write_keys, down = ?down, "every live server writes with the new keys");
        }
        let prefixes = ring.prefixes();
        let first = prefixes.first().cloned().unwrap_or_default();
        let (mut progress, resumed) = match read_progress(&self.progress_path)? {
            Some(p) if p.write_keys == write_keys && prefixes.contains(&p.prefix) => (p, true),
            _ => (
                Progress {
                    write_keys,
                    prefix: first.clone(),
                    after: None,
                    rewritten: 0,
                    unchanged: 0,
                    started: now_text(),
                },
                false,
            ),
        };
        if resumed {
            tracing::info!(prefix = %progress.prefix, after = ?progress.after, "resuming the interrupted re-encryption pass");
        }
        save_progress(&self.progress_path, &progress)?;
        self.publish(run, &progress, resumed);
        let mut counts = Vec::new();
        let mut proven = false;
        for attempt in 0..ATTEMPTS {
            let start = prefixes
                .iter()
                .position(|p| *p == progress.prefix)
                .unwrap_or(0);
            for prefix in &prefixes[start..] {
                if progress.prefix != *prefix {
                    progress.prefix = prefix.clone();
                    progress.after = None;
                }
                loop {
                    let page = self
                        .inner
                        .list(prefix, progress.after.as_deref(), PAGE)
                        .await?;
                    for kv in page.items.iter() {
                        if cancel.is_cancelled() {
                            save_progress(&self.progress_path, &progress)?;
                            return Ok(None);
                        }
                        match self.rewrite(&ring, kv.clone()).await? {
                            Rewrite::Rewritten => progress.rewritten += 1,
                            Rewrite::Unchanged => progress.unchanged += 1,
                            Rewrite::Gone => {}
                        }
                        *counters = (progress.rewritten, progress.unchanged);
                        progress.after = Some(kv.key.clone());
                    }
                    save_progress(&self.progress_path, &progress)?;
                    self.publish(run, &progress, resumed);
                    if !page.more || page.items.is_empty() {
                        break;
                    }
                }
            }
            // the proof: every stored value is on its entry's write key
            counts = self.count(&ring).await?;
            let stale = stale_values(&ring, &counts);
            if stale.is_empty() {
                proven = true;
                break;
            }
            tracing::warn!(attempt, stale = %stale.join(", "), "values still on old keys after a pass; walking again");
            progress.prefix = first.clone();
            progress.after = None;
        }
        if !proven {
            return Err(EncryptionError::Unproven(
                stale_values(&ring, &counts).join(", "),
            ));
        }
        let retired = if self.enabled() {
            self.retire(&ring, &counts).await?
        } else {
            Vec::new()
        };
        clear_progress(&self.progress_path)?;
        Ok(Some(retired))
    }

    /// Moves one stored value to its entry's write key.
    async fn rewrite(&self, ring: &Keyring, mut kv: KeyValue) -> Result<Rewrite, EncryptionError> {
        let Some(entry) = ring.entry_for(&kv.key) else {
            return Ok(Rewrite::Gone);
        };
        let write = ring.write_sealing(entry);
        for _ in 0..CAS_TRIES {
            if Sealing::of(&kv.value) == write {
                return Ok(Rewrite::Unchanged);
            }
            let plain = ring.open(&kv.key, std::mem::take(&mut kv.value))?;
            let sealed = ring.seal_in(entry, &kv.key, &plain)?;
            match self
                .inner
                .update(&kv.key, sealed, Some(kv.mod_revision))
                .await
            {
                Ok(_) => return Ok(Rewrite::Rewritten),
                Err(StoreError::Conflict { .. }) => match self.inner.get(&kv.key).await? {
                    Some(fresh) => kv = fresh,
                    None => return Ok(Rewrite::Gone),
                },
                Err(StoreError::NotFound { .. }) => return Ok(Rewrite::Gone),
                Err(e) => return Err(e.into()),
            }
        }
        Err(EncryptionError::Unproven(format!(
            "{} changed {CAS_TRIES} times while being rewritten",
            kv.key
        )))
    }

    /// Removes from the configuration every key no stored value uses (never a write key),
    /// and key providers left without keys. Returns the retired keys.
    async fn retire(
        &self,
        ring: &Keyring,
        counts: &[std::collections::BTreeMap<Sealing, u64>],
    ) -> Result<Vec<String>, EncryptionError> {
        let mut config = ring.config().clone();
        let mut retired = Vec::new();
        for (i, entry) in config.resources.iter_mut().enumerate() {
            let write = ring.write_sealing(i);
            for provider in entry.providers.iter_mut() {
                let kind = match provider.kind() {
                    Ok((kind, Some(_))) => kind,
                    _ => continue,
                };
                let Some(keys) = provider.keys_mut() else {
                    continue;
                };
                keys.keys.retain(|k| {
                    let sealing = Sealing::Key(kind.to_string(), k.name.clone());
                    let used = counts
                        .get(i)
                        .and_then(|c| c.get(&sealing))
                        .is_some_and(|n| *n > 0);
                    let keep = sealing == write || used;
                    if !keep {
                        retired.push(sealing.to_string());
                    }
                    keep
                });
            }
            entry.providers.retain(|p| {
                p.aesgcm
                    .as_ref()
                    .or(p.secretbox.as_ref())
                    .is_none_or(|k| !k.keys.is_empty())
            });
        }
        if !retired.is_empty() {
            self.replace_config(config).await?;
            tracing::info!(keys = ?retired, "retired encryption keys no stored value uses");
        }
        Ok(retired)
    }
}

/// `N values on provider:key` for every value of an entry not on its write key.
fn stale_values(
    ring: &Keyring,
    counts: &[std::collections::BTreeMap<Sealing, u64>],
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let write = ring.write_sealing(i);
        for (sealing, n) in count {
            if *sealing != write && *n > 0 {
                out.push(format!(
                    "{n} values of {} on {sealing}",
                    ring.resources(i).join(",")
                ));
            }
        }
    }
    out
}
