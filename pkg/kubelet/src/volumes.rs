//! The kubelet's view of pod volumes: set them up and get each container's CRI mounts, tear
//! them down. Behind a trait so unit tests run without touching the filesystem layout; the
//! product implementation is `mini_volumes::VolumeManager`.

use std::collections::HashMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use mini_cri::proto;

/// Sets up and tears down a pod's volumes.
#[async_trait]
pub trait VolumeBackend: Send + Sync + 'static {
    /// Makes every volume of `pod` ready (idempotent; refreshes configMap/secret/token
    /// contents) and returns the mounts of each container (init and regular), by name.
    async fn setup(&self, pod: &Pod) -> Result<HashMap<String, Vec<proto::Mount>>, String>;
    /// Removes everything set up for the pod with this uid.
    async fn teardown(&self, pod_uid: &str) -> Result<(), String>;
}

/// The product backend. Until `mini_volumes::VolumeManager` is wired here, pods get
/// `emptyDir` (disk) and `hostPath` volumes only; any other volume type fails the pod's
/// container creation with a message naming it.
pub(crate) fn mini_volumes_backend(
    _client: kube::Client,
    _host: std::sync::Arc<dyn mini_sys::Host>,
    config: &crate::KubeletConfig,
) -> std::sync::Arc<dyn VolumeBackend> {
    std::sync::Arc::new(LocalVolumes {
        pods_dir: config.pods_dir.clone(),
    })
}

struct LocalVolumes {
    pods_dir: std::path::PathBuf,
}

#[async_trait]
impl VolumeBackend for LocalVolumes {
    async fn setup(&self, pod: &Pod) -> Result<HashMap<String, Vec<proto::Mount>>, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut sources: HashMap<String, String> = HashMap::new();
        for v in spec.volumes.iter().flatten() {
            let path = if v.empty_dir.is_some() {
                let dir = self
                    .pods_dir
                    .join(&uid)
                    .join("volumes/kubernetes.io~empty-dir")
                    .join(&v.name);
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| format!("creating emptyDir {}: {e}", dir.display()))?;
                dir.to_string_lossy().into_owned()
            } else if let Some(h) = &v.host_path {
                h.path.clone()
            } else {
                // Skipped here; a container mounting it fails below with the volume's name.
                continue;
            };
            sources.insert(v.name.clone(), path);
        }
        let mut out = HashMap::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let mut mounts = Vec::new();
            for m in c.volume_mounts.iter().flatten() {
                let host = sources.get(&m.name).ok_or_else(|| {
                    format!("volume {:?}: this volume type is not supported yet", m.name)
                })?;
                let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => format!("{host}/{sub}"),
                    None => host.clone(),
                };
                mounts.push(proto::Mount {
                    container_path: m.mount_path.clone(),
                    host_path,
                    readonly: m.read_only.unwrap_or(false),
                    ..Default::default()
                });
            }
            out.insert(c.name.clone(), mounts);
        }
        Ok(out)
    }

    async fn teardown(&self, pod_uid: &str) -> Result<(), String> {
        let dir = self.pods_dir.join(pod_uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", dir.display())),
        }
    }
}
