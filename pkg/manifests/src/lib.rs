//! Auto-deployed manifests (k3s' AddOn behaviour): every `*.yaml`/`*.yml`/`*.json` in
//! `<data-dir>/server/manifests/` is applied at start and whenever it changes (server-side apply,
//! field manager `mini`), and its objects are removed when the file is deleted or stops naming
//! them. Each file has an `Addon` (`mini.dev/v1`, kube-system) recording what was applied.
//!
//! The directory is polled every 2 s, comparing file checksums, rather than watched with
//! inotify: polling sees every change on every filesystem (bind mounts, NFS, overlay, files
//! replaced by rename or by configuration management) and needs no inotify watches, while a
//! handful of small files costs nothing to hash.

pub mod addon;
pub mod bundled;
pub mod deployer;
pub mod documents;
pub mod files;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use deployer::{Deployer, FileOutcome, SyncReport};
pub use files::{HostFiles, ManifestFiles};

/// The field manager of everything the server applies.
pub const FIELD_MANAGER: &str = "mini";

/// Names `--disable` accepts for the bundled manifests.
pub fn bundled_names() -> Vec<&'static str> {
    bundled::BUNDLED.iter().map(|(name, _)| *name).collect()
}

/// How the deployer runs.
#[derive(Debug, Clone)]
pub struct ManifestsConfig {
    /// The manifests directory (`<data-dir>/server/manifests`).
    pub dir: PathBuf,
    /// File stems not to apply (`--disable NAME` skips `NAME.yaml`); their objects are removed,
    /// and a disabled bundled manifest is not written (removed if an earlier start wrote it).
    pub disabled: Vec<String>,
    /// How often the directory is compared with what was applied.
    pub poll_interval: Duration,
}

impl ManifestsConfig {
    /// The defaults for a server data directory.
    pub fn for_data_dir(data_dir: &Path, disabled: Vec<String>) -> Self {
        ManifestsConfig {
            dir: data_dir.join("server").join("manifests"),
            disabled,
            poll_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    #[error("manifests directory {path}: {source} (check that it exists and is readable)")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("manifests: api call failed: {0}")]
    Api(#[from] kube::Error),
    #[error("manifests: Addon CRD: {0}")]
    Crd(String),
}

/// Writes the bundled manifests, creates the Addon CRD, then applies the directory every
/// `poll_interval` until `shutdown`. Never fails the server: problems are logged (and, for
/// manifest files, reported as Events) and tried again.
pub async fn run(client: kube::Client, config: ManifestsConfig, shutdown: CancellationToken) {
    let mut deployer = Deployer::new(client, Arc::new(HostFiles), &config);
    if let Err(e) = deployer.write_bundled() {
        tracing::warn!(error = %e, "writing the bundled manifests failed");
    }
    loop {
        match deployer.ensure_crd().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "creating the Addon CRD failed; trying again in 5s")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    tracing::info!(dir = %config.dir.display(), "applying auto-deployed manifests");
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match deployer.sync_once().await {
            Ok(report) if report != SyncReport::default() => {
                tracing::debug!(?report, "manifests synced")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "syncing the manifests directory failed"),
        }
    }
}
