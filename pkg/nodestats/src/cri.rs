//! Which containers run on this node, from CRI: pod identity from the kubelet's
//! `io.kubernetes.*` labels, the restart count from the metadata attempt, a process id from
//! the verbose `ContainerStatus` (containerd's `info.pid`), cached per container.

use std::collections::HashMap;
use std::sync::Mutex;

use mini_cri::proto::{Container, ContainerState, ContainerStatusResponse};
use mini_cri::Runtime;

use crate::pods::ContainerRef;
use crate::NodeStatsError;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The pod identity of a CRI container; `None` for containers the kubelet did not create.
pub fn container_ref(c: &Container, pid: Option<u32>) -> Option<ContainerRef> {
    let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
    let pod = label(LABEL_POD_NAME);
    if pod.is_empty() {
        return None;
    }
    let container = c
        .labels
        .get(LABEL_CONTAINER_NAME)
        .cloned()
        .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
        .unwrap_or_default();
    Some(ContainerRef {
        id: c.id.clone(),
        namespace: label(LABEL_POD_NAMESPACE),
        pod,
        pod_uid: label(LABEL_POD_UID),
        container,
        attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
        pid,
    })
}

/// The container's process id from a verbose status (`info` → JSON with `pid`).
pub fn pid_from_status(status: &ContainerStatusResponse) -> Option<u32> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info.get("pid")?
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// Lists the containers with pids (asking the runtime once per new running container).
#[derive(Debug, Default)]
pub struct ContainerLister {
    pids: Mutex<HashMap<String, u32>>,
}

impl ContainerLister {
    pub async fn list(&self, runtime: &dyn Runtime) -> Result<Vec<ContainerRef>, NodeStatsError> {
        let containers = runtime
            .list_containers(None)
            .await
            .map_err(|e| NodeStatsError::Runtime(e.to_string()))?;
        let known: HashMap<String, u32> =
            self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut pids = HashMap::new();
        let mut refs = Vec::new();
        for c in &containers {
            let running = c.state == ContainerState::ContainerRunning as i32;
            let mut pid = None;
            if running {
                pid = match known.get(&c.id) {
                    Some(p) => Some(*p),
                    None => match runtime.container_status(&c.id, true).await {
                        Ok(status) => pid_from_status(&status),
                        Err(e) => {
                            tracing::debug!(container = c.id, error = %e, "no container status");
                            None
                        }
                    },
                };
                if let Some(p) = pid {
                    pids.insert(c.id.clone(), p);
                }
            }
            if let Some(r) = container_ref(c, pid) {
                refs.push(r);
            }
        }
        *self.pids.lock().unwrap_or_else(|e| e.into_inner()) = pids;
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_cri::proto::ContainerMetadata;

    fn container(labels: &[(&str, &str)], attempt: u32) -> Container {
        Container {
            id: "c1".into(),
            metadata: Some(ContainerMetadata {
                name: "meta-name".into(),
                attempt,
            }),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn container_ref_kubelet_labels_give_the_pod_identity_and_attempt() {
        let c = container(
            &[
                (LABEL_POD_NAME, "web"),
                (LABEL_POD_NAMESPACE, "shop"),
                (LABEL_POD_UID, "u1"),
                (LABEL_CONTAINER_NAME, "app"),
            ],
            3,
        );
        let r = container_ref(&c, Some(42)).expect("a pod container");
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.pod_uid.as_str()),
            ("shop", "web", "u1")
        );
        assert_eq!(
            (r.container.as_str(), r.attempt, r.pid),
            ("app", 3, Some(42))
        );
    }

    #[test]
    fn container_ref_without_pod_labels_is_skipped() {
        assert!(container_ref(&container(&[], 0), None).is_none());
    }

    #[test]
    fn pid_from_status_reads_containerd_info() {
        let mut status = ContainerStatusResponse::default();
        assert_eq!(pid_from_status(&status), None);
        status
            .info
            .insert("info".into(), r#"{"pid": 4321, "sandboxID": "s"}"#.into());
        assert_eq!(pid_from_status(&status), Some(4321));
        status.info.insert("info".into(), r#"{"pid": 0}"#.into());
        assert_eq!(pid_from_status(&status), None);
    }

    #[tokio::test]
    async fn container_lister_fake_runtime_lists_kubelet_containers_with_attempts() {
        use mini_cri::proto::{
            ContainerConfig, CreateContainerRequest, ImageSpec, PodSandboxConfig,
            PodSandboxMetadata, RunPodSandboxRequest,
        };
        let runtime = mini_cri::FakeRuntime::new();
        let image = "mini.local/busybox:1";
        runtime.add_image(image);
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let sandbox = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("sandbox");
        let create = |name: &str, attempt: u32, kubelet: bool| {
            let mut labels = std::collections::HashMap::new();
            if kubelet {
                labels.insert(LABEL_POD_NAME.to_string(), "web".to_string());
                labels.insert(LABEL_POD_NAMESPACE.to_string(), "shop".to_string());
                labels.insert(LABEL_POD_UID.to_string(), "u1".to_string());
                labels.insert(LABEL_CONTAINER_NAME.to_string(), name.to_string());
            }
            CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: name.into(),
                        attempt,
                    }),
                    image: Some(ImageSpec {
                        image: image.into(),
                        ..Default::default()
                    }),
                    labels,
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            }
        };
        let app = runtime
            .create_container(create("app", 2, true))
            .await
            .expect("create");
        runtime.start_container(&app).await.expect("start");
        runtime
            .create_container(create("other", 0, false))
            .await
            .expect("create");
        let lister = ContainerLister::default();
        let refs = lister.list(&runtime).await.expect("list");
        assert_eq!(refs.len(), 1, "only the kubelet's containers: {refs:?}");
        assert_eq!(
            (
                refs[0].pod.as_str(),
                refs[0].container.as_str(),
                refs[0].attempt
            ),
            ("web", "app", 2)
        );
        // this runtime reports no pid: the container counts for restarts, not for cgroups
        assert_eq!(refs[0].pid, None);
        assert_eq!(runtime.calls_of("ContainerStatus").len(), 1);
    }
}
