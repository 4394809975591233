//! The agent's configuration (what `mini agent` flags become) and the parsing of
//! `--node-label key=value` and `--node-taint key=value:Effect`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Taint;

use crate::AgentError;

/// Default data directory, as `mini server`'s.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mini";
/// Default cluster DNS service IP (the tenth address of the default service CIDR).
pub const DEFAULT_CLUSTER_DNS: &str = "10.43.0.10";
/// Default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default port of the agent's own HTTPS API.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Which containerd the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRuntimeMode {
    /// Write a config under `<data>/agent/containerd/` and supervise a private containerd.
    Managed,
    /// Use an existing containerd's CRI socket (`--container-runtime-endpoint`).
    External(PathBuf),
}

/// Everything `mini agent` needs to know; loading it binds and starts nothing.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://host:port` of the API server.
    pub server_url: String,
    /// Join token (`K10<ca hash>::server:<secret>` or a bare secret).
    pub token: String,
    pub data_dir: PathBuf,
    /// Default: the name remembered from the last run, else the hostname.
    pub node_name: Option<String>,
    /// Default: the address of the interface that routes to the server.
    pub node_ip: Option<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub node_taints: Vec<Taint>,
    pub container_runtime: ContainerRuntimeMode,
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    pub kubelet_port: u16,
    /// Stop every pod before exiting on SIGTERM (default: leave them running).
    pub drain_on_stop: bool,
    /// The server's own in-process agent: adds `node-role.kubernetes.io/control-plane`.
    pub control_plane: bool,
    /// resolv.conf handed to pods with dnsPolicy Default (default: the host's); its nameservers
    /// are also the cluster DNS server's upstreams.
    pub resolv_conf: Option<PathBuf>,
    /// The pod network (the server carves node podCIDRs from it): egress from it is masqueraded.
    pub cluster_cidr: String,
    /// The Service ClusterIP range.
    pub service_cidr: String,
    /// The interface whose IPv4 address carries the VXLAN overlay (default: the node IP's).
    pub flannel_iface: Option<String>,
    /// Upstream registry hosts whose pulls go to the cluster registry first (`<server>/v2/<host>/...`),
    /// their own servers staying the fallback; default `mini_cri::registry_hosts::DEFAULT_MIRRORS`.
    pub registry_mirrors: Vec<String>,
    /// Other `host:port` names of the cluster registry than the server URL's (e.g. the server's advertised
    /// address for its own agent, which joins over loopback): containerd trusts the cluster CA and sends the
    /// node certificate for them too.
    pub registry_aliases: Vec<String>,
    /// The `host:port` the cluster registry's images are named with when the server URL is not
    /// it (the agent's load balancer on loopback): the `--server` address. `None`: the server
    /// URL's host.
    pub registry_name: Option<String>,
    /// Told what start-up is doing (e.g. for systemd's `STATUS=`), and when the node is up.
    pub progress: Option<ProgressHook>,
    /// Do not enforce NetworkPolicies (`--disable-network-policy`); the policy table is removed.
    pub disable_network_policy: bool,
    /// Where local-path volumes get their directories (default `<data-dir>/storage`).
    pub local_path_dir: Option<PathBuf>,
    /// Port of the ingress proxy for HTTP (0: do not listen).
    pub ingress_http_port: u16,
    /// Port of the ingress proxy for HTTPS (0: do not listen).
    pub ingress_https_port: u16,
    /// A container's log file is rotated past this size (by the log shipper).
    pub container_log_max_bytes: u64,
    /// Log files kept per container, the current one included.
    pub container_log_max_files: usize,
    /// The loopback port of the client-side load balancer (`mini-balancer`) the agent's clients
    /// reach the servers through (`--lb-server-port`; 0: any free one). `None`: clients use
    /// `server_url` directly (the server's own agent, in-process tests).
    pub load_balancer: Option<u16>,
}

/// A start-up step of the agent, reported through [`AgentConfig::progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentProgress {
    /// Fetching the CA and node certificates from this server URL.
    Joining(String),
    /// Starting (or connecting to) containerd.
    StartingContainerd,
    /// Creating or updating the Node object.
    RegisteringNode(String),
    /// Waiting for node IPAM to give the node a pod CIDR.
    WaitingForPodCidr,
    /// The node is registered and its API serves.
    Ready,
}

impl std::fmt::Display for AgentProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentProgress::Joining(url) => write!(f, "joining {url}"),
            AgentProgress::StartingContainerd => write!(f, "starting containerd"),
            AgentProgress::RegisteringNode(n) => write!(f, "waiting for node registration of {n}"),
            AgentProgress::WaitingForPodCidr => write!(f, "waiting for a pod CIDR"),
            AgentProgress::Ready => write!(f, "node ready"),
        }
    }
}

/// A callback for [`AgentProgress`] events.
#[derive(Clone)]
pub struct ProgressHook(pub std::sync::Arc<dyn Fn(AgentProgress) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl AgentConfig {
    /// A config with every default filled in.
    pub fn new(server_url: impl Into<String>, token: impl Into<String>) -> Self {
        AgentConfig {
            server_url: server_url.into(),
            token: token.into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            node_name: None,
            node_ip: None,
            node_labels: BTreeMap::new(),
            node_taints: Vec::new(),
            container_runtime: ContainerRuntimeMode::Managed,
            cluster_dns: IpAddr::V4(std::net::Ipv4Addr::new(10, 43, 0, 10)),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            kubelet_port: DEFAULT_KUBELET_PORT,
            drain_on_stop: false,
            control_plane: false,
            resolv_conf: None,
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            flannel_iface: None,
            registry_mirrors: mini_cri::registry_hosts::DEFAULT_MIRRORS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            registry_aliases: Vec::new(),
            registry_name: None,
            progress: None,
            disable_network_policy: false,
            local_path_dir: None,
            ingress_http_port: 80,
            ingress_https_port: 443,
            container_log_max_bytes: 10 << 20,
            container_log_max_files: 5,
            load_balancer: None,
        }
    }

    /// The local-path volumes' directory: `--local-path-dir`, else `<data-dir>/storage`.
    pub fn local_path_dir(&self) -> PathBuf {
        self.local_path_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("storage"))
    }

    pub(crate) fn report(&self, step: AgentProgress) {
        if let Some(hook) = &self.progress {
            (hook.0)(step);
        }
    }

    /// `<data>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.agent_dir().join("tls")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir().join("images")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.agent_dir().join("cni").join("net.d")
    }

    /// The CNI plugins containerd runs: links to this binary under the built-in plugins' names.
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.agent_dir().join("cni").join("bin")
    }

    pub fn containerd_dir(&self) -> PathBuf {
        self.agent_dir().join("containerd")
    }

    /// containerd's registry hosts directory (`config_path` of the managed containerd's CRI plugin).
    pub fn registry_certs_dir(&self) -> PathBuf {
        self.containerd_dir().join("certs.d")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.agent_dir().join("pods")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.agent_dir().join("logs")
    }

    pub fn password_file(&self) -> PathBuf {
        self.agent_dir().join("node-password")
    }

    pub fn kubeconfig_file(&self) -> PathBuf {
        self.agent_dir().join("kubelet.kubeconfig")
    }

    /// The resolv.conf pods with dnsPolicy Default get.
    pub fn resolv_conf_path(&self) -> &Path {
        self.resolv_conf
            .as_deref()
            .unwrap_or(Path::new("/etc/resolv.conf"))
    }
}

/// Parses `key=value` node labels (a bare `key` means an empty value, as kubectl's).
pub fn parse_node_labels<S: AsRef<str>>(
    items: &[S],
) -> Result<BTreeMap<String, String>, AgentError> {
    let mut labels = BTreeMap::new();
    for item in items {
        let item = item.as_ref().trim();
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        check_qualified_name(key).map_err(|why| AgentError::Config {
            flag: "--node-label",
            value: item.to_string(),
            reason: why,
        })?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// Parses `key[=value]:Effect` taints (Effect is NoSchedule, PreferNoSchedule or NoExecute).
pub fn parse_node_taints<S: AsRef<str>>(items: &[S]) -> Result<Vec<Taint>, AgentError> {
    items
        .iter()
        .map(|item| {
            let item = item.as_ref().trim();
            let bad = |reason: &str| AgentError::Config {
                flag: "--node-taint",
                value: item.to_string(),
                reason: reason.to_string(),
            };
            let (key_value, effect) = item
                .rsplit_once(':')
                .ok_or_else(|| bad("expected key=value:Effect"))?;
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(bad(
                    "effect must be NoSchedule, PreferNoSchedule or NoExecute",
                ));
            }
            let (key, value) = match key_value.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (key_value, None),
            };
            check_qualified_name(key).map_err(|why| bad(&why))?;
            Ok(Taint {
                key: key.to_string(),
                value: value.filter(|v| !v.is_empty()),
                effect: effect.to_string(),
                time_added: None,
            })
        })
        .collect()
}

/// Parses the repeatable `--registry-mirror HOST` flag: none given keeps the default hosts, `none` alone
/// mirrors nothing, otherwise exactly the hosts given.
pub fn parse_registry_mirrors<S: AsRef<str>>(items: &[S]) -> Result<Vec<String>, AgentError> {
    mini_cri::registry_hosts::parse_mirrors(items).map_err(|reason| AgentError::Config {
        flag: "--registry-mirror",
        value: items
            .iter()
            .map(|i| i.as_ref())
            .collect::<Vec<_>>()
            .join(","),
        reason,
    })
}

/// A label/taint key: optional DNS prefix and `/`, then a name of alphanumerics, `-`, `_`, `.`.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!("key prefix {prefix:?} must be 1-253 characters"));
            }
            name
        }
        None => key,
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(ok_char)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "key {key:?} must be a name of up to 63 alphanumerics, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_node_labels_key_value_pairs_are_kept() {
        let labels =
            parse_node_labels(&["zone=a", "example.com/gpu=true", "bare"]).expect("labels");
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["example.com/gpu"], "true");
        assert_eq!(labels["bare"], "");
    }

    #[test]
    fn parse_node_labels_invalid_key_is_refused() {
        let err = parse_node_labels(&["-bad=x"]).expect_err("invalid");
        assert!(err.to_string().contains("--node-label"), "{err}");
    }

    #[test]
    fn parse_registry_mirrors_default_none_and_bad_host() {
        assert_eq!(
            parse_registry_mirrors::<&str>(&[]).expect("default"),
            AgentConfig::new("", "").registry_mirrors
        );
        assert!(parse_registry_mirrors(&["none"]).expect("none").is_empty());
        let err = parse_registry_mirrors(&["https://x"]).expect_err("scheme");
        assert!(err.to_string().contains("--registry-mirror"), "{err}");
    }

    #[test]
    fn parse_node_taints_all_forms_parse() {
        let taints = parse_node_taints(&["dedicated=gpu:NoSchedule", "maintenance:NoExecute"])
            .expect("taints");
        assert_eq!(taints[0].key, "dedicated");
        assert_eq!(taints[0].value.as_deref(), Some("gpu"));
        assert_eq!(taints[0].effect, "NoSchedule");
        assert_eq!(taints[1].key, "maintenance");
        assert_eq!(taints[1].value, None);
        assert_eq!(taints[1].effect, "NoExecute");
    }

    #[test]
    fn parse_node_taints_bad_effect_or_missing_effect_is_refused() {
        assert!(parse_node_taints(&["a=b:Sometimes"]).is_err());
        assert!(parse_node_taints(&["a=b"]).is_err());
    }
}
