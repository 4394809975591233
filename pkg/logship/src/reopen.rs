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
