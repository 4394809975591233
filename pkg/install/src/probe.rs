//! Whether an installed server is Ready: its API answers `/readyz` and this machine's node is
//! Ready, asked with the admin kubeconfig.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;

/// Asks a cluster whether the server is ready; `Err` says what it is still waiting for.
pub trait ClusterProbe {
    /// `node`: the node that must be Ready (`None`: any control-plane node; skipped when the
    /// server runs no node).
    fn server_ready(
        &self,
        kubeconfig: &Path,
        node: Option<&str>,
        needs_node: bool,
    ) -> Result<(), String>;
}

/// Talks to the API server over HTTPS with the kube client.
#[derive(Debug)]
pub struct KubeProbe {
    runtime: tokio::runtime::Runtime,
}

impl KubeProbe {
    pub fn new() -> std::io::Result<Self> {
        Ok(KubeProbe {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }
}

const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

impl ClusterProbe for KubeProbe {
    fn server_ready(
        &self,
        kubeconfig: &Path,
        node: Option<&str>,
        needs_node: bool,
    ) -> Result<(), String> {
        self.runtime.block_on(async {
            let config = kube::config::Kubeconfig::read_from(kubeconfig)
                .map_err(|e| format!("the admin kubeconfig {}: {e}", kubeconfig.display()))?;
            let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                .await
                .map_err(|e| format!("the admin kubeconfig {}: {e}", kubeconfig.display()))?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let text = client
                .request_text(request)
                .await
                .map_err(|e| format!("the API server's /readyz: {e}"))?;
            if text.trim() != "ok" {
                return Err(format!("the API server's /readyz says {:?}", text.trim()));
            }
            if !needs_node {
                return Ok(());
            }
            let nodes: kube::Api<Node> = kube::Api::all(client);
            let list = nodes
                .list(&Default::default())
                .await
                .map_err(|e| format!("listing nodes: {e}"))?;
            let mine: Vec<&Node> = list
                .items
                .iter()
                .filter(|n| match node {
                    Some(name) => n.metadata.name.as_deref() == Some(name),
                    None => n
                        .metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL)),
                })
                .collect();
            let shown = node.unwrap_or("this machine's");
            let Some(n) = mine.first() else {
                return Err(format!("node {shown} is not registered yet"));
            };
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => Ok(()),
                Some(c) => Err(format!(
                    "node {} is not Ready yet: {}",
                    n.metadata.name.as_deref().unwrap_or(shown),
                    c.message.as_deref().or(c.reason.as_deref()).unwrap_or("")
                )),
                None => Err(format!(
                    "node {} has no Ready condition yet",
                    n.metadata.name.as_deref().unwrap_or(shown)
                )),
            }
        })
    }
}
