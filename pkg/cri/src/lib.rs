//! CRI client for the kubelet: the `Runtime` trait (runtime + image service calls the kubelet
//! makes), its gRPC implementation over containerd's unix socket, an in-memory fake for unit
//! tests, the managed containerd process (config + supervision), its registry hosts configuration,
//! and committing a container's changes as a layer through containerd's diff service.

pub mod commit;
pub mod containerd;
pub mod fake;
pub mod grpc;
pub mod registry_hosts;

pub use commit::{ContainerLayer, LayerStream};
pub use containerd::{ContainerdConfig, ContainerdError, Supervisor, SupervisorHandle};
pub use fake::{FakeLayer, FakeRuntime};
pub use grpc::GrpcRuntime;
pub use mini_proto::cri::v1 as proto;
pub use registry_hosts::{CriRegistryStatus, HostsWrite, RegistryHosts};

use async_trait::async_trait;
use proto::{
    AttachRequest, Container, ContainerFilter, ContainerStats, ContainerStatsFilter,
    ContainerStatusResponse, CreateContainerRequest, ExecRequest, ExecSyncResponse, Image,
    ImageSpec, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStatusResponse,
    PortForwardRequest, RunPodSandboxRequest, StatusResponse, VersionResponse,
};

/// What a CRI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The runtime socket could not be reached (containerd down or starting).
    #[error("container runtime unreachable at {endpoint}: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The object (sandbox, container, image) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The runtime refused or failed the call; `code` is the gRPC status code name.
    #[error("{method}: {code}: {message}")]
    Rpc {
        method: &'static str,
        code: String,
        message: String,
    },
}

impl CriError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::NotFound(_))
    }
}

/// The runtime and image service calls the kubelet needs, one method per CRI RPC.
/// Ids are CRI sandbox/container ids; timeouts are seconds as in CRI.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    async fn version(&self) -> Result<VersionResponse, CriError>;
    async fn status(&self) -> Result<StatusResponse, CriError>;

    async fn run_pod_sandbox(&self, request: RunPodSandboxRequest) -> Result<String, CriError>;
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError>;
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError>;
    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, CriError>;
    async fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CriError>;

    async fn create_container(&self, request: CreateContainerRequest) -> Result<String, CriError>;
    async fn start_container(&self, container_id: &str) -> Result<(), CriError>;
    async fn stop_container(
        &self,
        container_id: &str,
        timeout_seconds: i64,
    ) -> Result<(), CriError>;
    async fn remove_container(&self, container_id: &str) -> Result<(), CriError>;
    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CriError>;
    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, CriError>;

    /// Runs a command to completion in a container (exec probes).
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<ExecSyncResponse, CriError>;
    /// Prepares a streaming exec; returns the URL of the runtime's streaming server.
    async fn exec(&self, request: ExecRequest) -> Result<String, CriError>;
    /// Prepares a streaming attach; returns the streaming URL.
    async fn attach(&self, request: AttachRequest) -> Result<String, CriError>;
    /// Prepares a port-forward into a sandbox; returns the streaming URL.
    async fn port_forward(&self, request: PortForwardRequest) -> Result<String, CriError>;

    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, CriError>;

    async fn list_images(&self) -> Result<Vec<Image>, CriError>;
    /// `Ok(None)` when the image is not present.
    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>, CriError>;
    /// Pulls an image; returns its image ref.
    async fn pull_image(
        &self,
        image: &ImageSpec,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError>;
    async fn remove_image(&self, image: &ImageSpec) -> Result<(), CriError>;

    /// Commits a container: its filesystem changes against its image as one gzip layer in the runtime's
    /// content store, streamed (`mini commit`). `image` is the image reference the caller knows the
    /// container by (empty: the runtime's name for it); the answer carries it with the image's digest.
    async fn container_layer(
        &self,
        container_id: &str,
        image: &str,
    ) -> Result<ContainerLayer, CriError>;

    /// Asks the runtime to reopen a running container's log file (CRI `ReopenContainerLog`), after
    /// the caller renamed it away for rotation: the runtime creates a new file at the container's
    /// log path and writes there. The default answers that the runtime cannot, so fakes that do
    /// not rotate need nothing.
    async fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        Err(CriError::Rpc {
            method: "ReopenContainerLog",
            code: "Unimplemented".to_string(),
            message: format!(
                "this runtime cannot reopen the log of container {container_id}; use containerd"
            ),
        })
    }
}

/// The fully qualified form of an image reference, as containerd's CRI plugin stores it:
/// `busybox` -> `docker.io/library/busybox:latest`, `example.com/app` -> `example.com/app:latest`;
/// references with a tag or digest keep them.
pub fn normalize_image_ref(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let qualified = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            name.to_string()
        }
        Some(_) => format!("docker.io/{name}"),
    };
    let last = qualified.rsplit('/').next().unwrap_or_default();
    match digest {
        Some(digest) => format!("{qualified}@{digest}"),
        None if last.contains(':') => qualified,
        None => format!("{qualified}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_image_ref_short_names_get_registry_and_tag() {
        assert_eq!(
            normalize_image_ref("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image_ref("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normalize_image_ref("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_image_ref("mini.local/pause:1"),
            "mini.local/pause:1"
        );
        assert_eq!(
            normalize_image_ref("busybox@sha256:abc"),
            "docker.io/library/busybox@sha256:abc"
        );
    }
}
