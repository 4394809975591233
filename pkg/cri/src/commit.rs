//! Committing a container (`mini commit`): its filesystem changes against its image as one gzip layer,
//! computed by containerd itself. In namespace `k8s.io`, under a lease: the container's snapshot
//! (`snapshotKey`/`snapshotter` from the verbose CRI status) is `Stat`ed for its parent, a read-only `View`
//! of the parent is made, `Diff.Diff(parent mounts, container mounts)` writes the layer to the content store
//! (`containerd.io/uncompressed` label = diff ID), the view is removed, and the layer is streamed with
//! `Content.Read`; the lease is released when the stream ends or is dropped (and expires by itself within
//! an hour if the agent dies first).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use mini_proto::containerd::services::content::v1::content_client::ContentClient;
use mini_proto::containerd::services::content::v1::{InfoRequest, ReadContentRequest};
use mini_proto::containerd::services::diff::v1::diff_client::DiffClient;
use mini_proto::containerd::services::diff::v1::DiffRequest;
use mini_proto::containerd::services::images::v1::images_client::ImagesClient;
use mini_proto::containerd::services::images::v1::GetImageRequest;
use mini_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use mini_proto::containerd::services::leases::v1::{CreateRequest, DeleteRequest};
use mini_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use mini_proto::containerd::services::snapshots::v1::{
    MountsRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Code;

use crate::proto::ContainerStatusResponse;
use crate::CriError;

/// The media type of committed layers.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The content label containerd's differ puts the uncompressed (diff ID) digest in.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// The containerd namespace of the CRI plugin.
const NAMESPACE: &str = "k8s.io";
const LEASE_HEADER: &str = "containerd-lease";
/// A lease left behind by a dead agent expires after this.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// How long the diff may take (it walks the whole container filesystem).
const DIFF_DEADLINE: Duration = Duration::from_secs(600);

/// A layer's bytes, in order.
pub type LayerStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A container's filesystem changes as one gzip layer, ready to stream.
pub struct ContainerLayer {
    /// The image the container runs (as the caller or the runtime names it).
    pub image_ref: String,
    /// The digest of that image's manifest (or index) as containerd records it, if known.
    pub image_digest: Option<String>,
    /// The compressed layer's digest and size.
    pub layer_digest: String,
    pub size: u64,
    /// sha256 of the uncompressed tar (the image config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    pub media_type: String,
    /// The layer's bytes; dropping it (or reading it to the end) releases what the runtime held for it.
    pub content: LayerStream,
}

impl std::fmt::Debug for ContainerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerLayer")
            .field("image_ref", &self.image_ref)
            .field("image_digest", &self.image_digest)
            .field("layer_digest", &self.layer_digest)
            .field("size", &self.size)
            .field("diff_id", &self.diff_id)
            .field("media_type", &self.media_type)
            .finish()
    }
}

/// Where a container's root filesystem lives, from the verbose CRI status (`info` JSON: `snapshotKey`,
/// `snapshotter`) and the image it runs (`status.image.image`, `status.imageRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRootfs {
    pub snapshotter: String,
    pub snapshot_key: String,
    /// The image name CRI reports (a tag reference when containerd knows one, else the image ID).
    pub image: String,
    /// CRI's image ref: a repo digest (`name@sha256:...`) when containerd has one, else the image ID.
    pub image_ref: String,
}

impl ContainerRootfs {
    /// Reads the rootfs facts from a verbose `ContainerStatus`.
    pub fn from_status(
        container_id: &str,
        status: &ContainerStatusResponse,
    ) -> Result<Self, CriError> {
        let info: serde_json::Value = status
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        let field = |name: &str| {
            info.get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let missing = |what: &str| CriError::Rpc {
            method: "ContainerStatus",
            code: "FailedPrecondition".into(),
            message: format!(
                "the runtime's verbose status of container {container_id} has no {what}: \
                 only containerd's CRI plugin can commit containers"
            ),
        };
        let body = status.status.as_ref();
        Ok(ContainerRootfs {
            snapshotter: field("snapshotter").ok_or_else(|| missing("snapshotter"))?,
            snapshot_key: field("snapshotKey").ok_or_else(|| missing("snapshotKey"))?,
            image: body
                .and_then(|s| s.image.as_ref())
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_ref: body.map(|s| s.image_ref.clone()).unwrap_or_default(),
        })
    }
}

fn rpc(method: &'static str, status: tonic::Status) -> CriError {
    crate::grpc::map_status(method, "containerd", status)
}

fn request<T>(message: T, lease: Option<&str>) -> tonic::Request<T> {
    let mut req = mini_proto::with_namespace(message, NAMESPACE);
    if let Some(value) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
        req.metadata_mut().insert(LEASE_HEADER, value);
    }
    req
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The digest of a digest reference (`name@sha256:...`).
fn reference_digest(reference: &str) -> Option<String> {
    reference
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .filter(|d| d.starts_with("sha256:") || d.starts_with("sha512:"))
}

/// Releases the lease (and a view not yet removed) when dropped: on a tokio runtime, in a task.
struct Release {
    channel: Channel,
    lease: String,
    view: Option<(String, String)>,
}

impl Release {
    async fn run(channel: Channel, lease: String, view: Option<(String, String)>) {
        if let Some((snapshotter, key)) = view {
            let remove = RemoveSnapshotRequest { snapshotter, key };
            if let Err(status) = SnapshotsClient::new(channel.clone())
                .remove(request(remove, Some(&lease)))
                .await
            {
                tracing::warn!(lease, error = %status, "removing the commit view failed; the lease expiry collects it");
            }
        }
        let delete = DeleteRequest {
            id: lease.clone(),
            sync: false,
        };
        if let Err(status) = LeasesClient::new(channel)
            .delete(request(delete, None))
            .await
        {
            tracing::warn!(lease, error = %status, "releasing the commit lease failed; it expires within an hour");
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let (channel, lease, view) = (self.channel.clone(), self.lease.clone(), self.view.take());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(Release::run(channel, lease, view));
        }
    }
}

/// Computes and opens the layer of a container whose rootfs is `rootfs`; `image` names its image (empty:
/// CRI's name for it).
pub async fn container_layer(
    channel: Channel,
    rootfs: ContainerRootfs,
    image: &str,
) -> Result<ContainerLayer, CriError> {
    let image_ref = if image.is_empty() {
        rootfs.image.clone()
    } else {
        image.to_string()
    };
    let image_digest = image_digest(&channel, &image_ref, &rootfs).await;

    let lease = format!("mini-commit-{}", unique_suffix());
    let expire = (chrono::Utc::now()
        + chrono::Duration::from_std(LEASE_EXPIRY).unwrap_or_default())
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    LeasesClient::new(channel.clone())
        .create(request(
            CreateRequest {
                id: lease.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".to_string(), expire)]),
            },
            None,
        ))
        .await
        .map_err(|s| rpc("Leases.Create", s))?;
    let mut release = Release {
        channel: channel.clone(),
        lease: lease.clone(),
        view: None,
    };

    let mut snapshots = SnapshotsClient::new(channel.clone());
    let info = snapshots
        .stat(request(
            StatSnapshotRequest {
                snapshotter: rootfs.snapshotter.clone(),
                key: rootfs.snapshot_key.clone(),
            },
            Some(&lease),
        ))
        .await
        .map_err(|s| rpc("Snapshots.Stat", s))?
        .into_inner()
        .info
        .unwrap_or_default();
    let view_key = format!("{lease}-parent");
    let left = snapshots
        .view(request(
            ViewSnapshotRequest {
                snapshotter: rootfs.snapshotter.clone(),
                key: view_key.clone(),
                parent: info.parent.clone(),
                labels: HashMap::new(),
            },
            Some(&lease),
        ))
        .await
        .map_err(|s| rpc("Snapshots.View", s))?
        .into_inner()
        .mounts;
    release.view = Some((rootfs.snapshotter.clone(), view_key.clone()));
    let right = snapshots
        .mounts(request(
            MountsRequest {
                snapshotter: rootfs.snapshotter.clone(),
                key: rootfs.snapshot_key.clone(),
            },
            Some(&lease),
        ))
        .await
        .map_err(|s| rpc("Snapshots.Mounts", s))?
        .into_inner()
        .mounts;
    let mut diff_request = request(
        DiffRequest {
            left,
            right,
            media_type: LAYER_MEDIA_TYPE.to_string(),
            r#ref: format!("{lease}-layer"),
            labels: HashMap::new(),
            source_date_epoch: None,
        },
        Some(&lease),
    );
    diff_request.set_timeout(DIFF_DEADLINE);
    let descriptor = DiffClient::new(channel.clone())
        .diff(diff_request)
        .await
        .map_err(|s| rpc("Diff.Diff", s))?
        .into_inner()
        .diff
        .ok_or_else(|| CriError::Rpc {
            method: "Diff.Diff",
            code: "Internal".into(),
            message: "containerd answered without a layer descriptor".into(),
        })?;
    // the view is only needed by the differ
    let remove = RemoveSnapshotRequest {
        snapshotter: rootfs.snapshotter.clone(),
        key: view_key,
    };
    match snapshots.remove(request(remove, Some(&lease))).await {
        Ok(_) => release.view = None,
        Err(status) => {
            tracing::warn!(error = %status, "removing the commit view failed; retried at release")
        }
    }

    let mut content = ContentClient::new(channel.clone());
    let labels = content
        .info(request(
            InfoRequest {
                digest: descriptor.digest.clone(),
            },
            Some(&lease),
        ))
        .await
        .map_err(|s| rpc("Content.Info", s))?
        .into_inner()
        .info
        .map(|i| i.labels)
        .unwrap_or_default();
    let diff_id = descriptor
        .annotations
        .get(LABEL_UNCOMPRESSED)
        .or_else(|| labels.get(LABEL_UNCOMPRESSED))
        .cloned()
        .ok_or_else(|| CriError::Rpc {
            method: "Content.Info",
            code: "Internal".into(),
            message: format!(
                "the committed layer {} has no {LABEL_UNCOMPRESSED} label",
                descriptor.digest
            ),
        })?;
    let stream = content
        .read(request(
            ReadContentRequest {
                digest: descriptor.digest.clone(),
                offset: 0,
                size: 0,
            },
            Some(&lease),
        ))
        .await
        .map_err(|s| rpc("Content.Read", s))?
        .into_inner();
    // the stream owns the release: the lease goes when the body is read or dropped
    let content = stream.map(move |chunk| {
        let _held = &release;
        chunk
            .map(|c| Bytes::from(c.data))
            .map_err(|s| std::io::Error::other(format!("reading the committed layer: {s}")))
    });
    Ok(ContainerLayer {
        image_ref,
        image_digest,
        layer_digest: descriptor.digest,
        size: u64::try_from(descriptor.size).unwrap_or_default(),
        diff_id,
        media_type: if descriptor.media_type.is_empty() {
            LAYER_MEDIA_TYPE.to_string()
        } else {
            descriptor.media_type
        },
        content: Box::pin(content),
    })
}

/// The digest of the image's record in containerd (`Images.Get(name).target`), else the digest of a
/// digest reference (the name's or CRI's repo digest).
async fn image_digest(
    channel: &Channel,
    image_ref: &str,
    rootfs: &ContainerRootfs,
) -> Option<String> {
    if let Some(digest) = reference_digest(image_ref) {
        return Some(digest);
    }
    let mut images = ImagesClient::new(channel.clone());
    for name in [image_ref, rootfs.image.as_str()] {
        if name.is_empty() {
            continue;
        }
        let get = GetImageRequest {
            name: name.to_string(),
        };
        match images.get(request(get, None)).await {
            Ok(found) => {
                if let Some(target) = found.into_inner().image.and_then(|i| i.target) {
                    return Some(target.digest);
                }
            }
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => {
                tracing::debug!(image = name, error = %status, "looking up the image digest failed")
            }
        }
    }
    reference_digest(&rootfs.image_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ContainerStatus, ImageSpec};

    #[test]
    fn container_rootfs_from_verbose_status_reads_snapshot_and_image() {
        let status = ContainerStatusResponse {
            status: Some(ContainerStatus {
                image: Some(ImageSpec {
                    image: "docker.io/library/busybox:1.36".into(),
                    ..Default::default()
                }),
                image_ref: "docker.io/library/busybox@sha256:abc".into(),
                ..Default::default()
            }),
            info: HashMap::from([(
                "info".to_string(),
                r#"{"snapshotKey":"c1","snapshotter":"overlayfs","pid":7}"#.to_string(),
            )]),
        };
        let rootfs = ContainerRootfs::from_status("c1", &status).expect("rootfs");
        assert_eq!(rootfs.snapshotter, "overlayfs");
        assert_eq!(rootfs.snapshot_key, "c1");
        assert_eq!(rootfs.image, "docker.io/library/busybox:1.36");
        assert_eq!(
            reference_digest(&rootfs.image_ref).as_deref(),
            Some("sha256:abc")
        );
    }

    #[test]
    fn container_rootfs_without_verbose_info_is_refused() {
        let error = ContainerRootfs::from_status("c1", &ContainerStatusResponse::default())
            .expect_err("no info");
        assert!(error.to_string().contains("snapshotter"), "{error}");
    }

    #[test]
    fn reference_digest_only_for_digest_references() {
        assert_eq!(
            reference_digest("a/b@sha256:12").as_deref(),
            Some("sha256:12")
        );
        assert_eq!(reference_digest("a/b:1"), None);
        assert_eq!(reference_digest("sha256:12"), None);
    }
}
