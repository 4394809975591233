//! Importing image tarballs into containerd over its gRPC API: blobs into the content store (streaming
//! Write with the expected digest, GC reference labels), layers unpacked into the overlayfs snapshotter
//! (Prepare -> diff Apply -> Commit under the layer's chain ID), image records named and pinned, all under
//! a lease so containerd's GC cannot collect anything half-imported.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mini_proto::containerd::services::content::v1::content_client::ContentClient;
use mini_proto::containerd::services::content::v1::{
    AbortRequest, Info as ContentInfo, InfoRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use mini_proto::containerd::services::diff::v1::diff_client::DiffClient;
use mini_proto::containerd::services::diff::v1::ApplyRequest;
use mini_proto::containerd::services::images::v1::images_client::ImagesClient;
use mini_proto::containerd::services::images::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use mini_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use mini_proto::containerd::services::leases::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use mini_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use mini_proto::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use mini_proto::containerd::types::Descriptor as CdDescriptor;
use mini_proto::with_namespace;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::archive::{open_bytes, open_file, Backing, TarIndex};
use crate::layout::{chain_ids, plan, BlobData, ImagePlan, ImportPlan, PlannedBlob};
use crate::pause::pause_image_tarball;
use crate::state::{sha256_file, stat_fingerprint, ImportState, ImportedFile};
use crate::ImageError;

/// The containerd namespace the CRI plugin uses.
pub const CONTAINERD_NAMESPACE: &str = "k8s.io";
/// The snapshotter the CRI plugin unpacks into by default.
pub const SNAPSHOTTER: &str = "overlayfs";
/// Label the CRI plugin puts on images it manages.
pub const LABEL_CRI_MANAGED: &str = "io.cri-containerd.image";
/// Label marking an image as pinned: the agent's image GC never removes it.
pub const LABEL_PINNED: &str = "io.cri-containerd.pinned";

const LEASE_HEADER: &str = "containerd-lease";
const CHUNK: u64 = 1 << 20;
/// A file that failed to import is retried after this long even when unchanged (containerd may have been down).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(60);
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A file's size and mtime (ns).
type Fingerprint = (u64, i128);

/// What [`ImageImporter::import_dir`] did with each file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Files imported now, with the image names created or updated.
    pub imported: Vec<(PathBuf, Vec<String>)>,
    /// Files skipped because they are unchanged since their last import.
    pub unchanged: Vec<PathBuf>,
    /// Files that failed, with the error.
    pub failed: Vec<(PathBuf, String)>,
}

/// Imports image tarballs into one containerd (namespace `k8s.io`, snapshotter `overlayfs`).
pub struct ImageImporter {
    channel: Channel,
    state_dir: PathBuf,
    /// One import at a time: blob ingest refs and the state file are not shared between imports.
    lock: tokio::sync::Mutex<()>,
    /// Files that failed: their fingerprint and when, so watch_dir does not retry them every poll.
    failures: std::sync::Mutex<HashMap<PathBuf, (Fingerprint, Instant)>>,
    /// Unchanged files whose images were checked to exist in containerd during this process's life.
    verified: std::sync::Mutex<HashSet<PathBuf>>,
}

impl std::fmt::Debug for ImageImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageImporter")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn rpc_err(source: &str, op: &str, status: tonic::Status) -> ImageError {
    ImageError::Containerd {
        source_name: source.to_string(),
        op: op.to_string(),
        status: Box::new(status),
    }
}

fn to_cd(desc: &crate::layout::Descriptor) -> CdDescriptor {
    CdDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: HashMap::new(),
    }
}

impl ImageImporter {
    /// Connects to containerd's socket; `state_dir` keeps the import state of [`Self::import_dir`] and
    /// scratch space for decompressing tarballs.
    pub async fn connect(containerd_socket: &Path, state_dir: &Path) -> Result<Self, ImageError> {
        let channel = mini_proto::connect_unix(containerd_socket)
            .await
            .map_err(|e| ImageError::Connect {
                socket: containerd_socket.display().to_string(),
                source: e,
            })?;
        Ok(ImageImporter {
            channel,
            state_dir: state_dir.to_path_buf(),
            lock: tokio::sync::Mutex::new(()),
            failures: std::sync::Mutex::new(HashMap::new()),
            verified: std::sync::Mutex::new(HashSet::new()),
        })
    }

    fn request<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = with_namespace(msg, CONTAINERD_NAMESPACE);
        if let Some(lease) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
            req.metadata_mut().insert(LEASE_HEADER, lease);
        }
        req
    }

    /// Imports every image in the tarball at `path`; returns the (normalised) image names created or updated.
    pub async fn import_file(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let _guard = self.lock.lock().await;
        self.import_file_locked(path).await
    }

    async fn import_file_locked(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let source = path.display().to_string();
        let (path, scratch) = (path.to_path_buf(), self.state_dir.join("tmp"));
        let src = source.clone();
        let plan = tokio::task::spawn_blocking(move || {
            let backing = open_file(&path, &scratch)?;
            plan(TarIndex::build(backing, &src)?)
        })
        .await
        .map_err(|e| ImageError::Task(e.to_string()))??;
        self.import_plan(plan).await
    }

    /// Like [`Self::import_file`] for a tarball in memory; `source` names it in errors.
    pub async fn import_bytes(
        &self,
        bytes: &[u8],
        source: &str,
    ) -> Result<Vec<String>, ImageError> {
        let _guard = self.lock.lock().await;
        let backing = open_bytes(bytes, source)?;
        let src = source.to_string();
        let plan = tokio::task::spawn_blocking(move || plan(TarIndex::build(backing, &src)?))
            .await
            .map_err(|e| ImageError::Task(e.to_string()))??;
        self.import_plan(plan).await
    }

    /// Imports mini's pause image ([`crate::PAUSE_IMAGE`]); cheap when it is already there.
    pub async fn ensure_pause_image(&self) -> Result<(), ImageError> {
        self.import_bytes(&pause_image_tarball(), "mini pause image")
            .await
            .map(|_| ())
    }

    /// Imports the image of this process's own binary named `name` ([`crate::selfimage`])
    /// unless containerd has it; `true` when it was imported now.
    pub async fn ensure_self_image(&self, name: &str) -> Result<bool, ImageError> {
        if self.images_exist(&[name.to_string()]).await {
            return Ok(false);
        }
        let owned = name.to_string();
        let tarball =
            tokio::task::spawn_blocking(move || crate::selfimage::self_image_tarball(&owned))
                .await
                .map_err(|e| ImageError::Task(e.to_string()))??;
        self.import_bytes(&tarball, "mini's own binary").await?;
        Ok(true)
    }

    async fn import_plan(&self, plan: ImportPlan) -> Result<Vec<String>, ImageError> {
        let source = plan.tar.source.clone();
        let lease = self.create_lease(&source).await?;
        let result = self.import_images(&plan, &lease).await;
        let mut leases = LeasesClient::new(self.channel.clone());
        if let Err(status) = leases
            .delete(self.request(
                DeleteLeaseRequest {
                    id: lease.clone(),
                    sync: false,
                },
                None,
            ))
            .await
        {
            tracing::warn!(lease = %lease, error = %status, "deleting the image import lease failed; it expires in an hour");
        }
        result
    }

    async fn create_lease(&self, source: &str) -> Result<String, ImageError> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("mini-import-{}-{nanos}", std::process::id());
        let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        let mut leases = LeasesClient::new(self.channel.clone());
        leases
            .create(self.request(
                CreateLeaseRequest {
                    id: id.clone(),
                    labels,
                },
                None,
            ))
            .await
            .map_err(|s| rpc_err(source, "lease create", s))?;
        Ok(id)
    }

    async fn import_images(
        &self,
        plan: &ImportPlan,
        lease: &str,
    ) -> Result<Vec<String>, ImageError> {
        let mut names = Vec::new();
        for image in &plan.images {
            self.import_image(&plan.tar, image, lease).await?;
            for name in &image.names {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        Ok(names)
    }

    async fn import_image(
        &self,
        tar: &TarIndex,
        image: &ImagePlan,
        lease: &str,
    ) -> Result<(), ImageError> {
        let source = tar.source.as_str();
        for layer in &image.layers {
            self.write_blob(tar, layer, lease).await?;
        }
        self.write_blob(tar, &image.config, lease).await?;
        self.write_blob(tar, &image.manifest, lease).await?;
        let top = self.unpack(source, image, lease).await?;

        let mut manifest_labels = vec![(
            "containerd.io/gc.ref.content.config".to_string(),
            image.config.desc.digest.clone(),
        )];
        for (i, layer) in image.layers.iter().enumerate() {
            manifest_labels.push((
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.desc.digest.clone(),
            ));
        }
        self.set_content_labels(source, &image.manifest.desc.digest, manifest_labels, lease)
            .await?;
        if let Some(top) = top {
            let label = (format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top);
            self.set_content_labels(source, &image.config.desc.digest, vec![label], lease)
                .await?;
        }
        for name in &image.names {
            self.put_image(source, name, &image.manifest.desc, lease)
                .await?;
            tracing::info!(image = %name, manifest = %image.manifest.desc.digest, source, "image imported");
        }
        Ok(())
    }

    /// Writes one blob into the content store unless it is already there; returns whether it wrote.
    async fn write_blob(
        &self,
        tar: &TarIndex,
        blob: &PlannedBlob,
        lease: &str,
    ) -> Result<bool, ImageError> {
        let source = tar.source.as_str();
        let digest = blob.desc.digest.clone();
        let mut content = ContentClient::new(self.channel.clone());
        match content
            .info(self.request(
                InfoRequest {
                    digest: digest.clone(),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => return Ok(false),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(rpc_err(source, &format!("content info {digest}"), s)),
        }
        let reference = format!("mini-import-{digest}");
        // A previous import that died mid-write leaves an ingest under this ref: start afresh.
        let _ = content
            .abort(self.request(
                AbortRequest {
                    r#ref: reference.clone(),
                },
                Some(lease),
            ))
            .await;

        let size = u64::try_from(blob.desc.size).map_err(|_| ImageError::Invalid {
            source_name: source.to_string(),
            what: digest.clone(),
            reason: "negative size".into(),
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let producer = {
            let (backing, data, reference, digest, source) = (
                tar.backing.clone(),
                blob.data.clone(),
                reference.clone(),
                digest.clone(),
                source.to_string(),
            );
            tokio::task::spawn_blocking(move || {
                produce_chunks(&backing, &data, size, &reference, &digest, &source, tx)
            })
        };
        let outcome = async {
            let mut responses = content
                .write(self.request(tokio_stream::wrappers::ReceiverStream::new(rx), Some(lease)))
                .await?
                .into_inner();
            let mut last = None;
            while let Some(r) = responses.message().await? {
                last = Some(r);
            }
            Ok::<_, tonic::Status>(last)
        }
        .await;
        let produced = producer
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?;
        match (produced, outcome) {
            (Err(e), _) => {
                let _ = content
                    .abort(self.request(AbortRequest { r#ref: reference }, Some(lease)))
                    .await;
                Err(e)
            }
            (Ok(()), Err(s)) if s.code() == Code::AlreadyExists => Ok(false),
            (Ok(()), Err(s)) => {
                let _ = content
                    .abort(self.request(AbortRequest { r#ref: reference }, Some(lease)))
                    .await;
                Err(rpc_err(source, &format!("content write {digest}"), s))
            }
            (Ok(()), Ok(last)) => {
                let committed = last
                    .is_some_and(|r| r.action == WriteAction::Commit as i32 && r.digest == digest);
                if committed {
                    Ok(true)
                } else {
                    Err(ImageError::Unpack {
                        source_name: source.to_string(),
                        what: format!("containerd did not confirm the commit of blob {digest}"),
                    })
                }
            }
        }
    }

    async fn set_content_labels(
        &self,
        source: &str,
        digest: &str,
        labels: Vec<(String, String)>,
        lease: &str,
    ) -> Result<(), ImageError> {
        let mut content = ContentClient::new(self.channel.clone());
        let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
        let info = ContentInfo {
            digest: digest.to_string(),
            labels: labels.into_iter().collect(),
            ..Default::default()
        };
        let req = UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        content
            .update(self.request(req, Some(lease)))
            .await
            .map_err(|s| rpc_err(source, &format!("content label update {digest}"), s))?;
        Ok(())
    }

    /// Unpacks the layers into the snapshotter; returns the top layer's chain ID (`None` without layers).
    async fn unpack(
        &self,
        source: &str,
        image: &ImagePlan,
        lease: &str,
    ) -> Result<Option<String>, ImageError> {
        let chain = chain_ids(&image.diff_ids);
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut diff = DiffClient::new(self.channel.clone());
        for (i, layer) in image.layers.iter().enumerate() {
            let chain_id = &chain[i];
            let stat = StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: chain_id.clone(),
            };
            match snapshots.stat(self.request(stat, Some(lease))).await {
                Ok(_) => continue,
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(rpc_err(source, &format!("snapshot stat {chain_id}"), s)),
            }
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let key = format!("extract-{nanos}-{i} {chain_id}");
            let parent = if i == 0 {
                String::new()
            } else {
                chain[i - 1].clone()
            };
            let prepare = PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent,
                labels: HashMap::new(),
            };
            let mounts = snapshots
                .prepare(self.request(prepare, Some(lease)))
                .await
                .map_err(|s| rpc_err(source, &format!("snapshot prepare {chain_id}"), s))?
                .into_inner()
                .mounts;
            let applied = async {
                let req = ApplyRequest {
                    diff: Some(to_cd(&layer.desc)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                };
                let applied = diff
                    .apply(self.request(req, Some(lease)))
                    .await
                    .map_err(|s| {
                        rpc_err(
                            source,
                            &format!("diff apply of layer {}", layer.desc.digest),
                            s,
                        )
                    })?
                    .into_inner()
                    .applied
                    .map(|d| d.digest)
                    .unwrap_or_default();
                if applied != image.diff_ids[i] {
                    return Err(ImageError::DigestMismatch {
                        source_name: source.to_string(),
                        what: format!("uncompressed layer {}", layer.desc.digest),
                        expected: image.diff_ids[i].clone(),
                        actual: applied,
                    });
                }
                let commit = CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain_id.clone(),
                    key: key.clone(),
                    labels: HashMap::new(),
                };
                match snapshots.commit(self.request(commit, Some(lease))).await {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == Code::AlreadyExists => {
                        Err(rpc_err(source, "already-exists", s))
                    }
                    Err(s) => Err(rpc_err(source, &format!("snapshot commit {chain_id}"), s)),
                }
            }
            .await;
            match applied {
                Ok(()) => {}
                Err(e) => {
                    let remove = RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    };
                    let _ = snapshots.remove(self.request(remove, Some(lease))).await;
                    // Someone else committed the same chain ID meanwhile: the layer is there, fine.
                    let raced = matches!(&e, ImageError::Containerd { status, .. } if status.code() == Code::AlreadyExists);
                    if !raced {
                        return Err(e);
                    }
                }
            }
        }
        Ok(chain.last().cloned())
    }

    /// Creates or updates the image record `name` -> manifest, labelled managed and pinned.
    async fn put_image(
        &self,
        source: &str,
        name: &str,
        manifest: &crate::layout::Descriptor,
        lease: &str,
    ) -> Result<(), ImageError> {
        let mut images = ImagesClient::new(self.channel.clone());
        let mut labels = HashMap::new();
        let existing = match images
            .get(self.request(
                GetImageRequest {
                    name: name.to_string(),
                },
                Some(lease),
            ))
            .await
        {
            Ok(resp) => resp.into_inner().image,
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(rpc_err(source, &format!("image get {name}"), s)),
        };
        if let Some(old) = &existing {
            labels.extend(old.labels.clone());
        }
        labels.insert(LABEL_CRI_MANAGED.to_string(), "managed".to_string());
        labels.insert(LABEL_PINNED.to_string(), "pinned".to_string());
        let record = Image {
            name: name.to_string(),
            labels,
            target: Some(to_cd(manifest)),
            ..Default::default()
        };
        if existing.is_none() {
            let create = CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            };
            match images.create(self.request(create, Some(lease))).await {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(rpc_err(source, &format!("image create {name}"), s)),
            }
        }
        let update = UpdateImageRequest {
            image: Some(record),
            update_mask: None,
            source_date_epoch: None,
        };
        images
            .update(self.request(update, Some(lease)))
            .await
            .map_err(|s| rpc_err(source, &format!("image update {name}"), s))?;
        Ok(())
    }

    async fn images_exist(&self, names: &[String]) -> bool {
        let mut images = ImagesClient::new(self.channel.clone());
        for name in names {
            if images
                .get(self.request(GetImageRequest { name: name.clone() }, None))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Imports every tarball in `dir` (regular files, not hidden) whose content changed since its last
    /// import, skipping unchanged ones (same path, size and mtime, or same sha256). A missing dir is empty.
    pub async fn import_dir(&self, dir: &Path) -> Result<ImportSummary, ImageError> {
        let _guard = self.lock.lock().await;
        let mut summary = ImportSummary::default();
        let io = |e: std::io::Error| ImageError::Io {
            path: dir.display().to_string(),
            source: e,
        };
        let mut files = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io)?;
                    let hidden = entry.file_name().to_string_lossy().starts_with('.');
                    let meta = match std::fs::metadata(entry.path()) {
                        Ok(m) => m,
                        Err(_) => continue,
                    };
                    if meta.is_file() && !hidden {
                        files.push((entry.path(), meta));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(summary),
            Err(e) => return Err(io(e)),
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut state = ImportState::load(&self.state_dir);
        let mut state_changed = false;
        for (path, meta) in files {
            let (size, mtime_ns) = stat_fingerprint(&meta);
            let known = state.files.get(&path).cloned();
            let same_stat = known
                .as_ref()
                .is_some_and(|k| k.size == size && k.mtime_ns == mtime_ns);
            let mut unchanged = same_stat;
            let mut sha = known.as_ref().map(|k| k.sha256.clone()).unwrap_or_default();
            if !same_stat {
                if self.recently_failed(&path, (size, mtime_ns)) {
                    continue;
                }
                let p = path.clone();
                sha = match tokio::task::spawn_blocking(move || sha256_file(&p)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        summary.failed.push((path.clone(), e.to_string()));
                        continue;
                    }
                    Err(e) => return Err(ImageError::Task(e.to_string())),
                };
                if let Some(k) = known.as_ref().filter(|k| k.sha256 == sha) {
                    unchanged = true;
                    state.files.insert(
                        path.clone(),
                        ImportedFile {
                            size,
                            mtime_ns,
                            ..k.clone()
                        },
                    );
                    state_changed = true;
                }
            }
            if unchanged {
                let checked = self
                    .verified
                    .lock()
                    .map(|v| v.contains(&path))
                    .unwrap_or(false);
                let names = known.as_ref().map(|k| k.images.clone()).unwrap_or_default();
                if checked || self.images_exist(&names).await {
                    if let Ok(mut v) = self.verified.lock() {
                        v.insert(path.clone());
                    }
                    summary.unchanged.push(path);
                    continue;
                }
                tracing::info!(path = %path.display(), "images of an unchanged tarball are gone from containerd, importing again");
            }
            match self.import_file_locked(&path).await {
                Ok(names) => {
                    if let Ok(mut f) = self.failures.lock() {
                        f.remove(&path);
                    }
                    if let Ok(mut v) = self.verified.lock() {
                        v.insert(path.clone());
                    }
                    state.files.insert(
                        path.clone(),
                        ImportedFile {
                            size,
                            mtime_ns,
                            sha256: sha,
                            images: names.clone(),
                        },
                    );
                    state_changed = true;
                    summary.imported.push((path, names));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "image import failed");
                    if let Ok(mut f) = self.failures.lock() {
                        f.insert(path.clone(), ((size, mtime_ns), Instant::now()));
                    }
                    summary.failed.push((path, e.to_string()));
                }
            }
        }
        let before = state.files.len();
        state.files.retain(|p, _| !p.starts_with(dir) || p.exists());
        if state_changed || state.files.len() != before {
            state.save(&self.state_dir)?;
        }
        Ok(summary)
    }

    fn recently_failed(&self, path: &Path, fingerprint: Fingerprint) -> bool {
        self.failures
            .lock()
            .ok()
            .and_then(|f| f.get(path).copied())
            .is_some_and(|(fp, at)| fp == fingerprint && at.elapsed() < RETRY_FAILED_AFTER)
    }

    /// [`Self::import_dir`] now, then every 2 s (new or changed files are imported) until `shutdown`.
    pub async fn watch_dir(&self, dir: PathBuf, shutdown: CancellationToken) {
        loop {
            match self.import_dir(&dir).await {
                Ok(summary) => {
                    for (path, names) in &summary.imported {
                        tracing::info!(path = %path.display(), images = ?names, "imported image tarball");
                    }
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "scanning the image directory failed")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }
}

/// Streams a blob as Write requests (1 MiB chunks, then Commit with the expected digest), hashing as it
/// goes; on a digest mismatch it stops before the commit and reports it.
fn produce_chunks(
    backing: &Backing,
    data: &BlobData,
    size: u64,
    reference: &str,
    digest: &str,
    source: &str,
    tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
) -> Result<(), ImageError> {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let read = |offset: u64, len: u64| -> Result<Vec<u8>, ImageError> {
        match data {
            BlobData::Member(m) => {
                backing
                    .read_range(m.offset + offset, len)
                    .map_err(|e| ImageError::Read {
                        source_name: source.to_string(),
                        source: e,
                    })
            }
            BlobData::Inline(bytes) => {
                let (start, end) = (offset as usize, (offset + len) as usize);
                bytes
                    .get(start..end)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| ImageError::Invalid {
                        source_name: source.to_string(),
                        what: digest.to_string(),
                        reason: "blob shorter than its descriptor".into(),
                    })
            }
        }
    };
    let total = size as i64;
    while offset < size {
        let len = CHUNK.min(size - offset);
        let chunk = read(offset, len)?;
        hasher.update(&chunk);
        let req = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.to_string(),
            total,
            expected: digest.to_string(),
            offset: offset as i64,
            data: chunk,
            labels: HashMap::new(),
        };
        if tx.blocking_send(req).is_err() {
            return Ok(()); // the server ended the stream; its status says why
        }
        offset += len;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            source_name: source.to_string(),
            what: format!("blob {digest}"),
            expected: digest.to_string(),
            actual,
        });
    }
    let commit = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.to_string(),
        total,
        expected: digest.to_string(),
        offset: size as i64,
        data: Vec::new(),
        labels: HashMap::new(),
    };
    // If the server already ended the stream, its status (read by the caller) says why.
    let _ = tx.blocking_send(commit);
    Ok(())
}
