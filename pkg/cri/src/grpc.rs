//! `GrpcRuntime`: the `Runtime` trait over CRI v1 gRPC on a unix socket (containerd), with
//! per-call deadlines and `tonic::Status` mapped onto `CriError`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::commit::{ContainerLayer, ContainerRootfs};
use crate::proto::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    AttachRequest, Container, ContainerFilter, ContainerStats, ContainerStatsFilter,
    ContainerStatusRequest, ContainerStatusResponse, CreateContainerRequest, ExecRequest,
    ExecSyncRequest, ExecSyncResponse, Image, ImageSpec, ImageStatusRequest,
    ListContainerStatsRequest, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStatusRequest,
    PodSandboxStatusResponse, PortForwardRequest, PullImageRequest, RemoveContainerRequest,
    RemoveImageRequest, RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StatusResponse, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use crate::{CriError, Runtime};

/// The CRI API version the kubelet speaks.
pub const CRI_API_VERSION: &str = "v1";

/// Largest gRPC message accepted from the runtime (lists of many containers can pass 4 MiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long calls may take before the client gives up (so nothing hangs forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Status, version, list and inspect calls.
    pub short: Duration,
    /// Pulls, sandbox and container creation, stop and removal.
    pub long: Duration,
    /// Connecting to the socket.
    pub connect: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            short: Duration::from_secs(10),
            long: Duration::from_secs(120),
            connect: Duration::from_secs(3),
        }
    }
}

/// A CRI client on a unix socket. Cheap to clone; the channel reconnects by itself when the
/// runtime restarts, so one `GrpcRuntime` lives as long as the kubelet.
#[derive(Clone)]
pub struct GrpcRuntime {
    endpoint: String,
    deadlines: Deadlines,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The same socket, for containerd's own services (commit).
    channel: Channel,
}

impl std::fmt::Debug for GrpcRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRuntime")
            .field("endpoint", &self.endpoint)
            .field("deadlines", &self.deadlines)
            .finish()
    }
}

impl GrpcRuntime {
    /// A client for the runtime listening on `socket`. Connects lazily: this succeeds while the
    /// runtime is still starting; calls answer `CriError::Unavailable` until it listens.
    pub fn connect(socket: &Path) -> Result<Self, CriError> {
        Self::connect_with(socket, Deadlines::default())
    }

    /// As `connect`, with explicit deadlines.
    pub fn connect_with(socket: &Path, deadlines: Deadlines) -> Result<Self, CriError> {
        let endpoint = format!("unix://{}", socket.display());
        // The URI is never dialled: the connector below opens the unix socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(deadlines.connect)
            .connect_with_connector_lazy(mini_proto::unix_connector(socket));
        Ok(GrpcRuntime {
            endpoint,
            deadlines,
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            images: ImageServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            channel,
        })
    }

    /// The endpoint this client talks to (`unix:///path`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A verbose CRI `Status`: the conditions plus the runtime's `info` (containerd puts its loaded CRI
    /// configuration under `config`, as JSON).
    pub async fn verbose_status(&self) -> Result<StatusResponse, CriError> {
        let d = self.deadlines.short;
        let message = StatusRequest { verbose: true };
        self.call(
            "Status",
            d,
            self.runtime.clone().status(request(message, d)),
        )
        .await
    }

    /// Polls `Version` until the runtime answers or `timeout` passes; returns the version, or
    /// the last error seen.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<VersionResponse, CriError> {
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let attempt = self.version();
            let left = timeout.saturating_sub(start.elapsed());
            let error = match tokio::time::timeout(left.min(Duration::from_secs(2)), attempt).await
            {
                Ok(Ok(version)) => return Ok(version),
                // The socket answers but has no CRI v1 service (CRI plugin disabled or failed
                // to load): waiting will not change that.
                Ok(Err(error @ CriError::Rpc { .. })) if is_unimplemented(&error) => {
                    return Err(error)
                }
                Ok(Err(error)) => error,
                Err(_) => CriError::Unavailable {
                    endpoint: self.endpoint.clone(),
                    message: "Version did not answer".to_string(),
                },
            };
            if start.elapsed() + delay >= timeout {
                return Err(match error {
                    CriError::Unavailable { endpoint, message } => CriError::Unavailable {
                        endpoint,
                        message: format!("not ready after {timeout:?}: {message}"),
                    },
                    other => other,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// Runs one call with a deadline: the gRPC deadline header tells the runtime, and the local
    /// timer makes sure the caller gets an answer even if the runtime never replies.
    async fn call<T, F>(
        &self,
        method: &'static str,
        deadline: Duration,
        call: F,
    ) -> Result<T, CriError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(deadline + Duration::from_millis(500), call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(map_status(method, &self.endpoint, status)),
            Err(_) => Err(CriError::Rpc {
                method,
                code: format!("{:?}", Code::DeadlineExceeded),
                message: format!("no answer from {} within {deadline:?}", self.endpoint),
            }),
        }
    }
}

fn is_unimplemented(error: &CriError) -> bool {
    matches!(error, CriError::Rpc { code, .. } if code == "Unimplemented")
}

/// A tonic request carrying a gRPC deadline.
fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Deadline for a call that itself waits `seconds` (stop grace period, exec timeout).
fn with_grace(base: Duration, seconds: i64) -> Duration {
    let waits = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    base + waits
}

/// Maps a gRPC status onto `CriError`: NotFound and Unavailable get their own variants (the
/// kubelet acts on them), everything else keeps the method, code name and message.
pub fn map_status(method: &'static str, endpoint: &str, status: tonic::Status) -> CriError {
    match status.code() {
        Code::NotFound => CriError::NotFound(format!("{method}: {}", status.message())),
        Code::Unavailable => CriError::Unavailable {
            endpoint: endpoint.to_string(),
            message: format!("{method}: {}", status.message()),
        },
        code => CriError::Rpc {
            method,
            code: format!("{code:?}"),
            message: status.message().to_string(),
        },
    }
}

#[async_trait]
impl Runtime for GrpcRuntime {
    async fn version(&self) -> Result<VersionResponse, CriError> {
        let d = self.deadlines.short;
        let message = VersionRequest {
            version: CRI_API_VERSION.to_string(),
        };
        self.call(
            "Version",
            d,
            self.runtime.clone().version(request(message, d)),
        )
        .await
    }

    async fn status(&self) -> Result<StatusResponse, CriError> {
        let d = self.deadlines.short;
        let message = StatusRequest { verbose: false };
        self.call(
            "Status",
            d,
            self.runtime.clone().status(request(message, d)),
        )
        .await
    }

    async fn run_pod_sandbox(&self, message: RunPodSandboxRequest) -> Result<String, CriError> {
        let d = self.deadlines.long;
        let mut client = self.runtime.clone();
        let response = self
            .call(
                "RunPodSandbox",
                d,
                client.run_pod_sandbox(request(message, d)),
            )
            .await?;
        Ok(response.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let d = self.deadlines.long;
        let message = StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let mut client = self.runtime.clone();
        self.call(
            "StopPodSandbox",
            d,
            client.stop_pod_sandbox(request(message, d)),
        )
        .await
        .map(drop)
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let d = self.deadlines.long;
        let message = RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let mut client = self.runtime.clone();
        self.call(
            "RemovePodSandbox",
            d,
            client.remove_pod_sandbox(request(message, d)),
        )
        .await
        .map(drop)
    }

    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        let d = self.deadlines.short;
        let message = PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            verbose,
        };
        let mut client = self.runtime.clone();
        self.call(
            "PodSandboxStatus",
            d,
            client.pod_sandbox_status(request(message, d)),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CriError> {
        let d = self.deadlines.short;
        let message = ListPodSandboxRequest { filter };
        let mut client = self.runtime.clone();
        let response = self
            .call(
                "ListPodSandbox",
                d,
                client.list_pod_sandbox(request(message, d)),
            )
            .await?;
        Ok(response.items)
    }

    async fn create_container(&self, message: CreateContainerRequest) -> Result<String, CriError> {
        let d = self.deadlines.long;
        let mut client = self.runtime.clone();
        let response = self
            .call(
                "CreateContainer",
                d,
                client.create_container(request(message, d)),
            )
            .await?;
        Ok(response.container_id)
    }

    async fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        let d = self.deadlines.long;
        let message = StartContainerRequest {
            container_id: container_id.to_string(),
        };
        let mut client = self.runtime.clone();
        self.call(
            "StartContainer",
            d,
            client.start_container(request(message, d)),
        )
        .await
        .map(drop)
    }

    async fn stop_container(
        &self,
        container_id: &str,
        timeout_seconds: i64,
    ) -> Result<(), CriError> {
        let d = with_grace(self.deadlines.long, timeout_seconds);
        let message = StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: timeout_seconds,
        };
        let mut client = self.runtime.clone();
        self.call(
            "StopContainer",
            d,
            client.stop_container(request(message, d)),
        )
        .await
        .map(drop)
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let d = self.deadlines.long;
        let message = RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        let mut client = self.runtime.clone();
        self.call(
            "RemoveContainer",
            d,
            client.remove_container(request(message, d)),
        )
        .await
        .map(drop)
    }

    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CriError> {
        let d = self.deadlines.short;
        let message = ListContainersRequest { filter };
        let mut client = self.runtime.clone();
        let response = self
            .call(
                "ListContainers",
                d,
                client.list_containers(request(message, d)),
            )
            .await?;
        Ok(response.containers)
    }

    async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, CriError> {
        let d = self.deadlines.short;
        let message = ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose,
        };
        let mut client = self.runtime.clone();
        self.call(
            "ContainerStatus",
            d,
            client.container_status(request(message, d)),
        )
        .await
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<ExecSyncResponse, CriError> {
        // No timeout means "until the command ends": bound it by the long deadline.
        let d = if timeout_seconds > 0 {
            with_grace(self.deadlines.short, timeout_seconds)
        } else {
            self.deadlines.long
        };
        let message = ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd,
            timeout: timeout_seconds,
        };
        let mut client = self.runtime.clone();
        self.call("ExecSync", d, client.exec_sync(request(message, d)))
            .await
    }

    async fn exec(&self, message: ExecRequest) -> Result<String, CriError> {
        let d = self.deadlines.short;
        let mut client = self.runtime.clone();
        let response = self
            .call("Exec", d, client.exec(request(message, d)))
            .await?;
        Ok(response.url)
    }

    async fn attach(&self, message: AttachRequest) -> Result<String, CriError> {
        let d = self.deadlines.short;
        let mut client = self.runtime.clone();
        let response = self
            .call("Attach", d, client.attach(request(message, d)))
            .await?;
        Ok(response.url)
    }

    async fn port_forward(&self, message: PortForwardRequest) -> Result<String, CriError> {
        let d = self.deadlines.short;
        let mut client = self.runtime.clone();
        let response = self
            .call("PortForward", d, client.port_forward(request(message, d)))
            .await?;
        Ok(response.url)
    }

    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, CriError> {
        let d = self.deadlines.short;
        let message = ListContainerStatsRequest { filter };
        let mut client = self.runtime.clone();
        let response = self
            .call(
                "ListContainerStats",
                d,
                client.list_container_stats(request(message, d)),
            )
            .await?;
        Ok(response.stats)
    }

    async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        let d = self.deadlines.short;
        let message = ListImagesRequest { filter: None };
        let mut client = self.images.clone();
        let response = self
            .call("ListImages", d, client.list_images(request(message, d)))
            .await?;
        Ok(response.images)
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>, CriError> {
        let d = self.deadlines.short;
        let message = ImageStatusRequest {
            image: Some(image.clone()),
            verbose: false,
        };
        let mut client = self.images.clone();
        let response = self
            .call("ImageStatus", d, client.image_status(request(message, d)))
            .await?;
        Ok(response.image)
    }

    async fn pull_image(
        &self,
        image: &ImageSpec,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let d = self.deadlines.long;
        let message = PullImageRequest {
            image: Some(image.clone()),
            auth: None,
            sandbox_config,
        };
        let mut client = self.images.clone();
        let response = self
            .call("PullImage", d, client.pull_image(request(message, d)))
            .await?;
        Ok(response.image_ref)
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<(), CriError> {
        let d = self.deadlines.long;
        let message = RemoveImageRequest {
            image: Some(image.clone()),
        };
        let mut client = self.images.clone();
        self.call("RemoveImage", d, client.remove_image(request(message, d)))
            .await
            .map(drop)
    }

    async fn container_layer(
        &self,
        container_id: &str,
        image: &str,
    ) -> Result<ContainerLayer, CriError> {
        let status = self.container_status(container_id, true).await?;
        let rootfs = ContainerRootfs::from_status(container_id, &status)?;
        crate::commit::container_layer(self.channel.clone(), rootfs, image).await
    }

    async fn reopen_container_log(&self, container_id: &str) -> Result<(), CriError> {
        let d = self.deadlines.short;
        let message = ReopenContainerLogRequest {
            container_id: container_id.to_string(),
        };
        let mut client = self.runtime.clone();
        self.call(
            "ReopenContainerLog",
            d,
            client.reopen_container_log(request(message, d)),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_status_not_found_is_not_found() {
        let error = map_status(
            "ContainerStatus",
            "unix:///x.sock",
            tonic::Status::not_found("container \"abc\": not found"),
        );
        assert!(error.is_not_found(), "{error:?}");
        assert!(error.to_string().contains("abc"), "{error}");
    }

    #[test]
    fn map_status_unavailable_names_endpoint() {
        let error = map_status(
            "Version",
            "unix:///run/x.sock",
            tonic::Status::unavailable("connection refused"),
        );
        match &error {
            CriError::Unavailable { endpoint, message } => {
                assert_eq!(endpoint, "unix:///run/x.sock");
                assert!(message.contains("connection refused"), "{message}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn map_status_other_codes_keep_method_and_code() {
        let error = map_status(
            "CreateContainer",
            "unix:///x.sock",
            tonic::Status::invalid_argument("bad mount"),
        );
        match &error {
            CriError::Rpc {
                method,
                code,
                message,
            } => {
                assert_eq!(*method, "CreateContainer");
                assert_eq!(code, "InvalidArgument");
                assert_eq!(message, "bad mount");
            }
            other => panic!("expected Rpc, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "CreateContainer: InvalidArgument: bad mount"
        );
    }

    #[test]
    fn with_grace_negative_seconds_adds_nothing() {
        assert_eq!(
            with_grace(Duration::from_secs(10), -5),
            Duration::from_secs(10)
        );
        assert_eq!(
            with_grace(Duration::from_secs(10), 30),
            Duration::from_secs(40)
        );
    }

    #[tokio::test]
    async fn grpc_runtime_missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = GrpcRuntime::connect(&dir.path().join("none.sock")).expect("connect");
        let error = runtime.version().await.expect_err("no runtime listens");
        assert!(
            matches!(error, CriError::Unavailable { .. }),
            "expected Unavailable, got {error:?}"
        );
    }

    #[tokio::test]
    async fn wait_ready_missing_socket_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = GrpcRuntime::connect(&dir.path().join("none.sock")).expect("connect");
        let start = std::time::Instant::now();
        let error = runtime
            .wait_ready(Duration::from_millis(300))
            .await
            .expect_err("no runtime listens");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(error.to_string().contains("not ready after"), "{error}");
    }
}
