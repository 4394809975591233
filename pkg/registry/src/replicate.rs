//! Blobs across the servers of a cluster: the metadata under `/mini-registry/` is shared through
//! the datastore, but each server keeps blob and manifest bytes on its own disk. A server asked
//! for content its metadata knows but its disk lacks fetches it from a peer server's registry
//! (verified against the digest before it is stored or served), and a background replicator
//! copies the content of every live manifest record it lacks, nudged by a watch on the manifest
//! records, so each server holds every image shortly after its push. Only content a live
//! manifest record (or blob link) names is copied: what GC removed stays removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use mini_regclient::RegistryClient;
use tokio_util::sync::CancellationToken;

use crate::meta::{self, LinkRecord, ManifestRecord};
use crate::names::{Algorithm, Digest};
use crate::storage::{self, AppendError, RunningHash};
use crate::{Registry, RegistryError};

/// The header a server sends with its requests to a peer: the peer answers from its own disk
/// (and upstream mirrors) only, never asking its own peers, so two servers missing the same blob
/// do not ask each other in a loop.
pub const PEER_HEADER: &str = "mini-registry-peer";

/// The other servers' registries, as the server finds them (their Leases).
#[async_trait::async_trait]
pub trait Peers: Send + Sync {
    /// Clients for the registries of the other live servers (this one excluded), in the order
    /// to ask them; each sends [`PEER_HEADER`] and authenticates as this server.
    async fn registries(&self) -> Vec<Arc<RegistryClient>>;
}

/// What one replication pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Manifests and blobs copied from peers.
    pub copied: usize,
    pub bytes: u64,
    /// Content a live manifest names that no peer could give (retried next pass).
    pub missing: usize,
}

/// What to fetch: a manifest (by the manifests endpoint) or a blob, and the record that must
/// still exist when it is stored (so GC's deletions are not undone).
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub repo: String,
    pub digest: Digest,
    pub manifest: bool,
    /// The size the metadata records (the peer may send no more).
    pub size: Option<u64>,
    /// The store key of the manifest record or blob link naming it.
    pub record: String,
}

impl Registry {
    /// Lets the registry fetch content it lacks from the other servers (several servers on one
    /// datastore). Set once; later calls are ignored.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// Fetches `want` from the first peer that has it, verifies and stores it; its size, or
    /// `None` when no peer has it (or there are no peers). A peer answering content that does
    /// not match the digest is logged and skipped.
    pub(crate) async fn fetch_from_peers(
        &self,
        want: &Wanted,
    ) -> Result<Option<u64>, RegistryError> {
        let Some(peers) = self.peers.get() else {
            return Ok(None);
        };
        // one fetch per digest at a time: the others wait and find it on disk
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(want.digest.to_string())
            .or_default()
            .clone();
        let _fetching = lock.lock().await;
        let result = async {
            if let Some(size) = self.disk.blob_size(&want.digest).await {
                return Ok(Some(size));
            }
            for client in peers.registries().await {
                match self.fetch_from(&client, want).await {
                    Ok(Some(size)) => {
                        tracing::info!(repository = want.repo, digest = %want.digest, peer = client.host(), size, "registry: copied from a peer server");
                        return Ok(Some(size));
                    }
                    Ok(None) => {}
                    Err(Fetch::Peer(reason)) => {
                        tracing::warn!(repository = want.repo, digest = %want.digest, peer = client.host(), "registry: fetching from a peer server failed, trying the next: {reason}");
                    }
                    Err(Fetch::Local(e)) => return Err(e),
                }
            }
            Ok(None)
        }
        .await;
        let mut fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) <= 2 {
            fetching.remove(&want.digest.to_string());
        }
        result
    }

    /// One peer: `Ok(None)` when it does not have the content.
    async fn fetch_from(
        &self,
        client: &RegistryClient,
        want: &Wanted,
    ) -> Result<Option<u64>, Fetch> {
        let digest = want.digest.to_string();
        let not_found = |e: &mini_regclient::RegClientError| e.status() == Some(404);
        if want.manifest {
            let bytes = match client.get_manifest(&want.repo, &digest).await {
                Ok((_, bytes)) => bytes,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(Fetch::Peer(e.to_string())),
            };
            if !want.digest.matches(&bytes) {
                return Err(Fetch::Peer(format!(
                    "the manifest it sent does not match {digest}; not stored"
                )));
            }
            let _guard = self.gc_lock.read().await;
            if !self.still_wanted(want).await? {
                return Ok(None);
            }
            self.disk.write_blob(&want.digest, &bytes).await?;
            return Ok(Some(bytes.len() as u64));
        }
        let resp = match client.get_blob(&want.repo, &digest).await {
            Ok(r) => r,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(Fetch::Peer(e.to_string())),
        };
        let tmp = self
            .disk
            .upload_path(&format!("tmp-{}", uuid::Uuid::new_v4()));
        let mut hash = RunningHash::new();
        // a peer may not send more than the metadata says (or the largest sane blob)
        let limit = want.size.map_or(usize::MAX, |s| s as usize);
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .map_err(std::io::Error::other)
            .boxed_unsync();
        if let Err(e) = storage::append_body(&tmp, &mut hash, body).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(match e {
                AppendError::Disk(e) => {
                    Fetch::Local(RegistryError::io(format!("storing blob {digest}"), e))
                }
                AppendError::Body(e) => Fetch::Peer(format!("reading blob {digest}: {e}")),
            });
        }
        let ok = match want.digest.algorithm {
            Algorithm::Sha256 => hash.digest() == want.digest,
            Algorithm::Sha512 => tokio::fs::read(&tmp)
                .await
                .is_ok_and(|b| want.digest.matches(&b)),
        };
        if !ok {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Fetch::Peer(format!(
                "the blob it sent does not match {digest}; not stored"
            )));
        }
        let _guard = self.gc_lock.read().await;
        if !self.still_wanted(want).await? {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(None);
        }
        if let Err(e) = self.disk.commit_file(&tmp, &want.digest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        Ok(Some(hash.offset))
    }

    /// Whether the record naming the content still exists (GC may have removed it meanwhile).
    async fn still_wanted(&self, want: &Wanted) -> Result<bool, RegistryError> {
        Ok(self.meta.store.get(&want.record).await?.is_some())
    }

    /// A blob linked into `repo` but missing here, fetched from a peer; `None` when it is not
    /// linked or no peer has it.
    pub(crate) async fn blob_from_peers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        if self.peers.get().is_none() {
            return Ok(None);
        }
        let record = meta::link_key(repo, &digest.to_string());
        let Some(link) = self.meta.get::<LinkRecord>(&record).await? else {
            return Ok(None);
        };
        self.fetch_from_peers(&Wanted {
            repo: repo.to_string(),
            digest: digest.clone(),
            manifest: false,
            size: Some(link.size),
            record,
        })
        .await
    }

    /// A manifest recorded in `repo` but missing here, fetched from a peer.
    pub(crate) async fn manifest_from_peers(
        &self,
        repo: &str,
        digest: &Digest,
        rec: &ManifestRecord,
    ) -> Result<Option<u64>, RegistryError> {
        if self.peers.get().is_none() {
            return Ok(None);
        }
        self.fetch_from_peers(&Wanted {
            repo: repo.to_string(),
            digest: digest.clone(),
            manifest: true,
            size: Some(rec.size),
            record: meta::manifest_key(repo, &digest.to_string()),
        })
        .await
    }

    /// One pass: every manifest record's manifest, config and layers this server lacks, copied
    /// from the peers.
    pub async fn replicate_once(&self) -> Result<ReplicaReport, RegistryError> {
        let mut report = ReplicaReport::default();
        if self.peers.get().is_none() {
            return Ok(report);
        }
        let (manifests, _) = self
            .meta
            .list::<ManifestRecord>(&meta::all_manifests_prefix(), None, 0)
            .await?;
        let mut done: HashSet<String> = HashSet::new();
        let mut wants = Vec::new();
        for (key, rec) in manifests {
            let Some((repo, digest)) = meta::split_key(&key, &meta::all_manifests_prefix()) else {
                continue;
            };
            let Some(d) = Digest::parse(digest) else {
                continue;
            };
            if done.insert(d.to_string()) && self.disk.blob_size(&d).await.is_none() {
                wants.push(Wanted {
                    repo: repo.to_string(),
                    digest: d,
                    manifest: true,
                    size: Some(rec.size),
                    record: key.clone(),
                });
            }
            for b in &rec.blobs {
                let Some(d) = Digest::parse(b) else {
                    continue;
                };
                if !done.insert(d.to_string()) || self.disk.blob_size(&d).await.is_some() {
                    continue;
                }
                let size = self
                    .meta
                    .get::<LinkRecord>(&meta::link_key(repo, b))
                    .await?
                    .map(|l| l.size)
                    .unwrap_or(rec.total_size);
                wants.push(Wanted {
                    repo: repo.to_string(),
                    digest: d,
                    manifest: false,
                    size: Some(size),
                    record: key.clone(),
                });
            }
        }
        for want in wants {
            match self.fetch_from_peers(&want).await? {
                Some(size) => {
                    report.copied += 1;
                    report.bytes += size;
                }
                None => report.missing += 1,
            }
        }
        Ok(report)
    }

    /// Runs [`Registry::replicate_once`] every `period` and whenever a manifest record is
    /// written (a push finished on some server), until `shutdown`. Does nothing without peers.
    pub fn run_replicator(self: &Arc<Self>, period: Duration, shutdown: CancellationToken) {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            let (nudge_tx, mut nudge) = tokio::sync::mpsc::channel::<()>(1);
            tokio::spawn(watch_manifests(
                registry.meta.store.clone(),
                nudge_tx,
                shutdown.clone(),
            ));
            let mut last_missing = 0;
            loop {
                match registry.replicate_once().await {
                    Ok(report) => {
                        if report.copied > 0 || report.missing != last_missing {
                            tracing::info!(?report, "registry: replication pass done");
                        }
                        last_missing = report.missing;
                    }
                    Err(e) => tracing::warn!(error = %e, "registry: replication pass failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                    Some(()) = nudge.recv() => {}
                }
            }
        });
    }
}

/// Why fetching from one peer failed: the peer (try the next) or this server (stop).
enum Fetch {
    Peer(String),
    Local(RegistryError),
}

impl From<RegistryError> for Fetch {
    fn from(e: RegistryError) -> Self {
        Fetch::Local(e)
    }
}

/// Sends a nudge whenever a manifest record is created or updated; watches again after the
/// watch ends (compaction, a store restart).
async fn watch_manifests(
    store: Arc<dyn mini_store::Store>,
    nudge: tokio::sync::mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let prefix = meta::all_manifests_prefix();
    loop {
        match store.watch(&prefix, store.current_revision()) {
            Ok(mut events) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    event = events.recv() => match event {
                        Some(mini_store::WatchEvent::Put { .. }) => {
                            let _ = nudge.try_send(());
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            },
            Err(e) => tracing::debug!(error = %e, "registry: watching manifest records failed"),
        }
        // a nudge after re-watching covers what happened while not watching
        let _ = nudge.try_send(());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// One lock per digest being fetched from peers.
pub(crate) type FetchLocks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

#[cfg(test)]
mod tests;
