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

/// The product backend: `mini_volumes::VolumeManager` (emptyDir, hostPath, configMap,
/// secret, downwardAPI, projected with service account tokens, PVC-backed hostPath/local).
pub(crate) fn mini_volumes_backend(
    client: kube::Client,
    host: std::sync::Arc<dyn mini_sys::Host>,
    config: &crate::KubeletConfig,
) -> std::sync::Arc<dyn VolumeBackend> {
    std::sync::Arc::new(ManagedVolumes {
        manager: mini_volumes::VolumeManager::new(client, host, config.pods_dir.clone()),
    })
}

struct ManagedVolumes {
    manager: mini_volumes::VolumeManager,
}

#[async_trait]
impl VolumeBackend for ManagedVolumes {
    async fn setup(&self, pod: &Pod) -> Result<HashMap<String, Vec<proto::Mount>>, String> {
        let volumes = self.manager.setup(pod).await.map_err(|e| e.to_string())?;
        let spec = pod.spec.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let mounts = self
                .manager
                .mounts_for(pod, c, &volumes)
                .map_err(|e| e.to_string())?;
            out.insert(c.name.clone(), mounts);
        }
        Ok(out)
    }

    async fn teardown(&self, pod_uid: &str) -> Result<(), String> {
        self.manager
            .teardown(pod_uid)
            .await
            .map_err(|e| e.to_string())
    }
}
