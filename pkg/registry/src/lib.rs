//! The embedded OCI distribution registry (spec v1.1) that mini server serves under `/v2/`: blobs on
//! disk, metadata in the store under `/mini-registry/`, online GC with retention, pull-through for
//! mirrored upstream repositories, import of image archives, and assembly of `mini commit` images.
//! With several servers on one datastore, content a server lacks comes from its peers
//! ([`Peers`]): on demand and by a background replicator.

mod access;
mod api;
mod commit;
mod error;
mod gc;
mod import;
mod manifest;
mod meta;
pub mod names;
mod replicate;
mod storage;
mod summary;
mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mini_store::Store;
use tokio_util::sync::CancellationToken;

pub use access::Access;
pub use commit::CommitRequest;
pub use error::{ApiError, RegistryError};
pub use gc::GcReport;
pub use names::{repository_for, Target};
pub use replicate::{Peers, ReplicaReport, PEER_HEADER};
pub use summary::{RepositorySummary, TagSummary};

use error::ApiError as E;
use meta::{ManifestRecord, Meta, RepoRecord, TagRecord, UploadRecord};
use names::Digest;
use storage::{Disk, RunningHash};

/// The request body the registry reads (streamed, never collected).
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;
/// The response body the registry answers with (blobs are streamed from disk).
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// Tag retention: tags beyond the newest `keep_last_tags` of a repository, or pushed longer ago than
/// `keep_newer_than`, are removed by GC unless something in the cluster uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last_tags: Option<usize>,
    pub keep_newer_than: Option<Duration>,
}

/// An upstream registry behind a mirrored host: repositories `<host>/<path>` not found locally are
/// fetched from `<url>/v2/<path>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The mirrored host, the repository's first component (`docker.io`, `registry.k8s.io`).
    pub host: String,
    /// The upstream base URL (`https://registry-1.docker.io`, `http://127.0.0.1:5000`).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// How the registry stores and maintains images.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `<data-dir>/server/registry` (blobs/, uploads/).
    pub root: PathBuf,
    /// Stale uploads are deleted after this (default 1h).
    pub upload_timeout: Duration,
    /// Online GC period (None = only on demand).
    pub gc_interval: Option<Duration>,
    /// Blobs/manifests younger than this are never collected (default 1h).
    pub gc_grace: Duration,
    pub retention: Retention,
    /// Mirrored host -> upstream base URL (+ optional basic credentials).
    pub upstreams: Vec<Upstream>,
    /// Largest manifest accepted (4 MiB).
    pub max_manifest_bytes: usize,
    /// This registry's own host names (`<advertise-address>:<port>`, ...): image references naming
    /// them map to the path (`10.0.0.1:6443/default/app` → `default/app`) for GC roots and import.
    pub hosts: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            root: PathBuf::from("/var/lib/mini/server/registry"),
            upload_timeout: Duration::from_secs(3600),
            gc_interval: None,
            gc_grace: Duration::from_secs(3600),
            retention: Retention::default(),
            upstreams: Vec::new(),
            max_manifest_bytes: 4 << 20,
            hosts: Vec::new(),
        }
    }
}

type UploadState = Arc<tokio::sync::Mutex<Option<RunningHash>>>;

/// The registry: HTTP API, storage and maintenance.
pub struct Registry {
    config: RegistryConfig,
    disk: Disk,
    meta: Meta,
    access: Arc<dyn Access>,
    /// Running hashes of upload sessions (None until first used after a restart).
    uploads: std::sync::Mutex<HashMap<String, UploadState>>,
    /// Pushes commit under a read guard; GC's mark and sweep hold the write guard, so nothing
    /// becomes referenced between marking and deleting.
    gc_lock: tokio::sync::RwLock<()>,
    upstream: upstream::Client,
    /// This registry's id (`<root>/instance-id`): upload records name the disk holding the file.
    instance: String,
    /// The other servers' registries (several servers on one datastore).
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
    fetching: replicate::FetchLocks,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry at `config.root`, recovering from an interrupted run: upload records
    /// without a file and upload files without a record are removed (a half-written blob is never
    /// visible: blobs are renamed into place only when verified).
    pub async fn open(
        config: RegistryConfig,
        store: Arc<dyn Store>,
        access: Arc<dyn Access>,
    ) -> Result<Arc<Registry>, RegistryError> {
        let disk = Disk::init(&config.root).await?;
        let instance = instance_id(&config.root).await?;
        let meta = Meta { store };
        let registry = Registry {
            instance,
            upstream: upstream::Client::new(&config.upstreams),
            config,
            disk,
            meta,
            access,
            uploads: std::sync::Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
            peers: std::sync::OnceLock::new(),
            fetching: std::sync::Mutex::new(HashMap::new()),
        };
        registry.recover().await?;
        Ok(Arc::new(registry))
    }

    async fn recover(&self) -> Result<(), RegistryError> {
        let (records, _) = self
            .meta
            .list::<UploadRecord>(&meta::uploads_prefix(), None, 0)
            .await?;
        let mut known = std::collections::HashSet::new();
        for (key, rec) in records {
            let id = key.trim_start_matches(&meta::uploads_prefix()).to_string();
            if !rec.server.is_empty() && rec.server != self.instance {
                // another server's upload: its file is on that server's disk
                continue;
            }
            if tokio::fs::metadata(self.disk.upload_path(&id))
                .await
                .is_err()
            {
                self.meta.delete(&key).await?;
            } else {
                known.insert(id);
            }
        }
        let dir = self.config.root.join("uploads");
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| RegistryError::io(format!("listing {}", dir.display()), e))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
        Ok(())
    }

    /// Whether the registry serves `path`: `/v2` and everything under `/v2/`.
    pub fn handles(path: &str) -> bool {
        path == "/v2" || path.starts_with("/v2/")
    }

    /// Expires stale uploads and runs periodic GC until `shutdown`.
    pub fn run_background(self: &Arc<Self>, shutdown: CancellationToken) {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            // often enough for both upload expiry and the GC period
            let tick = (registry.config.upload_timeout / 4)
                .min(registry.config.gc_interval.unwrap_or(Duration::MAX))
                .clamp(Duration::from_secs(1), Duration::from_secs(300));
            let mut last_gc = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(tick) => {}
                }
                if let Err(e) = registry.expire_uploads().await {
                    tracing::warn!(error = %e, "registry: expiring stale uploads failed");
                }
                if let Some(interval) = registry.config.gc_interval {
                    if last_gc.elapsed() >= interval {
                        last_gc = tokio::time::Instant::now();
                        match registry.gc().await {
                            Ok(report) => {
                                tracing::info!(?report, "registry: garbage collection done")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "registry: garbage collection failed")
                            }
                        }
                    }
                }
            }
        });
    }

    /// Deletes upload sessions not touched for `upload_timeout`.
    pub async fn expire_uploads(&self) -> Result<usize, RegistryError> {
        let (records, _) = self
            .meta
            .list::<UploadRecord>(&meta::uploads_prefix(), None, 0)
            .await?;
        let cutoff = meta::now() - self.config.upload_timeout.as_secs() as i64;
        let mut n = 0;
        for (key, rec) in records {
            let id = key.trim_start_matches(&meta::uploads_prefix()).to_string();
            // A chunk being written right now holds the session's lock: not stale.
            let busy = self.upload_state(&id).try_lock().is_err();
            if rec.updated < cutoff && !busy {
                self.remove_upload(&id).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn remove_upload(&self, id: &str) -> Result<(), RegistryError> {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let _ = tokio::fs::remove_file(self.disk.upload_path(id)).await;
        self.meta.delete(&meta::upload_key(id)).await?;
        Ok(())
    }

    fn upload_state(&self, id: &str) -> UploadState {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Records that `repo` was pushed to now.
    async fn touch_repo(&self, repo: &str) -> Result<(), RegistryError> {
        let now = meta::now();
        let key = meta::repo_key(repo);
        let created = self
            .meta
            .get::<RepoRecord>(&key)
            .await?
            .map(|r| r.created)
            .unwrap_or(now);
        self.meta
            .put(
                &key,
                &RepoRecord {
                    created,
                    last_push: now,
                },
            )
            .await
    }

    /// Links a stored blob into `repo` (caller holds the GC read guard).
    async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        self.meta
            .put(
                &meta::link_key(repo, &digest.to_string()),
                &meta::LinkRecord {
                    size,
                    linked: meta::now(),
                },
            )
            .await?;
        self.touch_repo(repo).await
    }

    /// The blob's size when it is linked into `repo` and on disk.
    async fn blob_in_repo(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        if self
            .meta
            .get::<meta::LinkRecord>(&meta::link_key(repo, &digest.to_string()))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        Ok(self.disk.blob_size(digest).await)
    }

    /// Resolves a tag or digest to the manifest digest and record in `repo`.
    async fn resolve(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Digest, ManifestRecord)>, RegistryError> {
        let digest = if let Some(d) = Digest::parse(reference) {
            d
        } else {
            match self
                .meta
                .get::<TagRecord>(&meta::tag_key(repo, reference))
                .await?
            {
                Some(t) => match Digest::parse(&t.digest) {
                    Some(d) => d,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        };
        let rec = self
            .meta
            .get::<ManifestRecord>(&meta::manifest_key(repo, &digest.to_string()))
            .await?;
        Ok(rec.map(|r| (digest, r)))
    }

    /// Validates and stores a manifest in `repo` under its digest and, for a tag reference, the tag.
    async fn store_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(Digest, manifest::Parsed), E> {
        let parsed = manifest::parse(content_type, bytes)?;
        let digest = match Digest::parse(reference) {
            Some(d) => {
                if !d.matches(bytes) {
                    return Err(E::digest_invalid(format!(
                        "manifest content does not match digest {d}"
                    )));
                }
                d
            }
            None => {
                if !names::valid_tag(reference) {
                    return Err(E::new(
                        http::StatusCode::BAD_REQUEST,
                        "MANIFEST_INVALID",
                        format!(
                            "invalid tag {reference:?}: use [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
                        ),
                    ));
                }
                Digest::sha256_of(bytes)
            }
        };
        // blobs pushed through another server (a client whose connections moved to this one):
        // fetched first (not under the GC guard: storing them takes it)
        for b in &parsed.blobs {
            if let Some(d) = Digest::parse(b) {
                if self.disk.blob_size(&d).await.is_none() {
                    self.blob_from_peers(repo, &d).await?;
                }
            }
        }
        let _guard = self.gc_lock.read().await;
        let mut total = bytes.len() as u64;
        for b in &parsed.blobs {
            let d =
                Digest::parse(b).ok_or_else(|| E::manifest_invalid(format!("bad digest {b}")))?;
            match self.blob_in_repo(repo, &d).await? {
                Some(size) => total += size,
                None => {
                    return Err(E::new(
                        http::StatusCode::BAD_REQUEST,
                        "MANIFEST_BLOB_UNKNOWN",
                        format!("blob {b} referenced by the manifest is not in repository {repo}: push it first"),
                    ))
                }
            }
        }
        for m in &parsed.manifests {
            if self
                .meta
                .get::<ManifestRecord>(&meta::manifest_key(repo, m))
                .await?
                .is_none()
            {
                return Err(E::new(
                    http::StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!("manifest {m} referenced by the index is not in repository {repo}: push it first"),
                ));
            }
        }
        self.record_manifest(repo, reference, &digest, bytes, &parsed, total)
            .await?;
        Ok((digest, parsed))
    }

    /// Stores a verified manifest (blob on disk, then its record, then the tag when `reference`
    /// is one) and marks the repository pushed; for pushes and pull-through alike. The caller
    /// holds the GC read guard.
    async fn record_manifest(
        &self,
        repo: &str,
        reference: &str,
        digest: &Digest,
        bytes: &[u8],
        parsed: &manifest::Parsed,
        total_size: u64,
    ) -> Result<ManifestRecord, E> {
        self.disk.write_blob(digest, bytes).await?;
        let now = meta::now();
        let record = ManifestRecord {
            media_type: parsed.media_type.clone(),
            size: bytes.len() as u64,
            subject: parsed.subject.clone(),
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
            blobs: parsed.blobs.clone(),
            manifests: parsed.manifests.clone(),
            total_size,
            pushed: now,
        };
        self.meta
            .put(&meta::manifest_key(repo, &digest.to_string()), &record)
            .await?;
        if Digest::parse(reference).is_none() {
            self.meta
                .put(
                    &meta::tag_key(repo, reference),
                    &TagRecord {
                        digest: digest.to_string(),
                        media_type: parsed.media_type.clone(),
                        pushed: now,
                    },
                )
                .await?;
        }
        self.touch_repo(repo).await?;
        Ok(record)
    }
}

/// The registry's instance id, made on first use.
async fn instance_id(root: &std::path::Path) -> Result<String, RegistryError> {
    let path = root.join("instance-id");
    match tokio::fs::read_to_string(&path).await {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            tokio::fs::write(&path, &id)
                .await
                .map_err(|e| RegistryError::io(format!("writing {}", path.display()), e))?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests;
