//! Asking the container runtime to reopen a container's log file after the shipper renamed it
//! away (CRI `ReopenContainerLog`), behind the [`Reopener`] trait.

use std::sync::Arc;

use async_trait::async_trait;
use mini_cri::proto::{ContainerFilter, ContainerState};
use mini_cri::Runtime;

/// CRI label holding a container's pod UID (set by mini's kubelet).
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";

/// What happened to the writer of a renamed log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopened {
    /// The runtime writes to a new file at the old path now.
    Reopened,
    /// No running container writes the file (exited or gone): nothing to reopen.
    NotRunning,
}

/// Reopens the log file of the container instance `(pod uid, container name, restart)`.
#[async_trait]
pub trait Reopener: Send + Sync {
    async fn reopen(
        &self,
        pod_uid: &str,
        container: &str,
        restart: u32,
    ) -> Result<Reopened, String>;
}

/// [`Reopener`] over the CRI runtime (containerd).
pub struct CriReopener {
    runtime: Arc<dyn Runtime>,
}

impl CriReopener {
    pub fn new(runtime: Arc<dyn Runtime>) -> CriReopener {
        CriReopener { runtime }
    }
}

#[async_trait]
impl Reopener for CriReopener {
    async fn reopen(
        &self,
        pod_uid: &str,
        container: &str,
        restart: u32,
    ) -> Result<Reopened, String> {
        let filter = ContainerFilter {
            label_selector: [(LABEL_POD_UID.to_string(), pod_uid.to_string())].into(),
            ..Default::default()
        };
        let list = self
            .runtime
            .list_containers(Some(filter))
            .await
            .map_err(|e| e.to_string())?;
        let found = list.iter().find(|c| {
            c.metadata
                .as_ref()
                .is_some_and(|m| m.name == container && m.attempt == restart)
        });
        let Some(found) = found else {
            return Ok(Reopened::NotRunning);
        };
        if found.state != ContainerState::ContainerRunning as i32 {
            return Ok(Reopened::NotRunning);
        }
        match self.runtime.reopen_container_log(&found.id).await {
            Ok(()) => Ok(Reopened::Reopened),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_cri::proto::{
        ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, PodSandboxConfig,
        PodSandboxMetadata, RunPodSandboxRequest,
    };
    use mini_cri::FakeRuntime;

    async fn running_container(fake: &FakeRuntime) -> String {
        fake.add_image("busybox");
        let sandbox = fake
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: "web".into(),
                        uid: "u1".into(),
                        namespace: "ns".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            })
            .await
            .unwrap();
        let id = fake
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox,
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    labels: [(LABEL_POD_UID.to_string(), "u1".to_string())].into(),
                    ..Default::default()
                }),
                sandbox_config: None,
            })
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        id
    }

    #[tokio::test]
    async fn reopen_running_container_calls_the_runtime() {
        let fake = Arc::new(FakeRuntime::new());
        running_container(&fake).await;
        let reopener = CriReopener::new(fake.clone());
        // the fake keeps the trait's default answer: the call reached ReopenContainerLog
        let e = reopener.reopen("u1", "app", 0).await.unwrap_err();
        assert!(e.contains("ReopenContainerLog"), "{e}");
    }

    #[tokio::test]
    async fn reopen_unknown_or_exited_container_is_not_running() {
        let fake = Arc::new(FakeRuntime::new());
        let id = running_container(&fake).await;
        let reopener = CriReopener::new(fake.clone());
        assert_eq!(
            reopener.reopen("u1", "app", 1).await,
            Ok(Reopened::NotRunning)
        );
        assert_eq!(
            reopener.reopen("u2", "app", 0).await,
            Ok(Reopened::NotRunning)
        );
        fake.exit_container(&id, 0, "Completed");
        assert_eq!(
            reopener.reopen("u1", "app", 0).await,
            Ok(Reopened::NotRunning)
        );
    }
}
