//! The node's CNI network config: wait for the server's node IPAM to give our Node a
//! `spec.podCIDR`, then write `10-mini.conflist` (bridge `mini0` + host-local IPAM + portmap;
//! loopback is implicit in containerd). The conflist is built as a list of plugins so an
//! overlay (issue #5) can change the bridge or add plugins without rewriting this module.
//!
//! The plugins themselves are built into mini (`mini_cni`): `install_plugins` links each
//! plugin name in the agent's CNI bin dir to the running binary, which runs as that plugin
//! when started under its name.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fsutil::write_atomic;
use crate::AgentError;

pub const CONFLIST_NAME: &str = "10-mini.conflist";
pub const NETWORK_NAME: &str = "mini";
pub const BRIDGE_NAME: &str = "mini0";
pub const DEFAULT_MTU: u32 = 1500;

/// What the pod network of this node looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkConfig {
    pub pod_cidr: String,
    pub mtu: u32,
    /// host-local's allocation state: per agent, so nodes sharing a machine (or a re-install)
    /// never see each other's leases.
    pub ipam_dir: PathBuf,
}

/// The plugins of the conflist, in order.
pub fn plugins(net: &PodNetworkConfig) -> Vec<Value> {
    vec![
        json!({
            "type": "bridge",
            "bridge": BRIDGE_NAME,
            "isGateway": true,
            // egress leaving the cluster CIDR is masqueraded by the proxy's nftables table;
            // pod-to-pod traffic across nodes keeps its source address (as flannel does)
            "ipMasq": false,
            "hairpinMode": true,
            "mtu": net.mtu,
            "ipam": {
                "type": "host-local",
                "dataDir": net.ipam_dir,
                "ranges": [[{"subnet": net.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "pinnedDir": pinned_dir(&net.ipam_dir),
            },
        }),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
    ]
}

/// Where the kubelet leaves pods' pool addresses for host-local (`mini_ippool::pinned`).
pub fn pinned_dir(ipam_dir: &Path) -> PathBuf {
    ipam_dir.join("pinned")
}

/// The conflist document.
pub fn conflist(net: &PodNetworkConfig) -> Value {
    json!({"cniVersion": "1.0.0", "name": NETWORK_NAME, "plugins": plugins(net)})
}

/// Writes the conflist into `conf_dir` (only when its content changed); returns its path.
pub fn write_conflist(conf_dir: &Path, net: &PodNetworkConfig) -> Result<PathBuf, AgentError> {
    let path = conf_dir.join(CONFLIST_NAME);
    let text = serde_json::to_string_pretty(&conflist(net))
        .map_err(|e| AgentError::Serve(format!("encoding the CNI config: {e}")))?;
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    write_atomic(&path, text.as_bytes(), 0o644)?;
    tracing::info!(path = %path.display(), pod_cidr = net.pod_cidr, mtu = net.mtu, "wrote the CNI config");
    Ok(path)
}

/// The file the plugin links point at: the running binary. If it was replaced or deleted
/// since it started (an upgrade under a running agent), a copy of the running image
/// (`/proc/self/exe`) is made in `bin_dir`: a link to `/proc/self/exe` itself would resolve
/// to whatever process follows it (containerd), not to mini.
fn plugin_target(bin_dir: &Path) -> Result<PathBuf, AgentError> {
    match std::env::current_exe() {
        // a deleted binary reads back as "<path> (deleted)", which is no file
        Ok(exe) if exe.is_file() => Ok(exe),
        _ => {
            let copy = bin_dir.join("mini-cni");
            let image = std::fs::read("/proc/self/exe")
                .map_err(|e| crate::fsutil::io_err(Path::new("/proc/self/exe"), e))?;
            write_atomic(&copy, &image, 0o755)?;
            Ok(copy)
        }
    }
}

/// Installs the built-in CNI plugins into `bin_dir` as symlinks to the running binary.
pub fn install_plugins(bin_dir: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(bin_dir).map_err(|e| crate::fsutil::io_err(bin_dir, e))?;
    let target = plugin_target(bin_dir)?;
    install_plugin_links(bin_dir, &target)?;
    tracing::info!(bin_dir = %bin_dir.display(), target = %target.display(), "installed the built-in CNI plugins");
    Ok(())
}

/// Points `bin_dir/<plugin>` at `target` for every built-in plugin (replacing, atomically,
/// whatever is there).
pub fn install_plugin_links(bin_dir: &Path, target: &Path) -> Result<(), AgentError> {
    for name in mini_cni::PLUGIN_NAMES {
        let link = bin_dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(target) {
            continue;
        }
        let staged = bin_dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(target, &staged)
            .map_err(|e| crate::fsutil::io_err(&staged, e))?;
        std::fs::rename(&staged, &link).map_err(|e| crate::fsutil::io_err(&link, e))?;
    }
    Ok(())
}

/// The underlay MTU: that of the interface holding `node_ip`, else 1500.
pub fn underlay_mtu(host: &dyn mini_sys::Host, node_ip: IpAddr) -> u32 {
    match host.interface_mtu(node_ip) {
        Ok(Some(mtu)) => mtu,
        Ok(None) => DEFAULT_MTU,
        Err(e) => {
            tracing::warn!(error = %e, "reading the underlay MTU failed; using 1500");
            DEFAULT_MTU
        }
    }
}

/// Polls our Node until the server's node IPAM has set `spec.podCIDR` (`None` on shutdown).
pub async fn wait_for_pod_cidr(
    client: &kube::Client,
    node_name: &str,
    shutdown: &CancellationToken,
) -> Option<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match nodes.get_opt(node_name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return Some(cidr);
                }
                if !logged {
                    tracing::info!(
                        node = node_name,
                        "waiting for the server to assign a pod CIDR"
                    );
                    logged = true;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading our Node for its pod CIDR failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_has_bridge_host_local_and_portmap() {
        let net = PodNetworkConfig {
            pod_cidr: "10.42.1.0/24".into(),
            mtu: 1450,
            ipam_dir: PathBuf::from("/var/lib/mini/agent/cni/ipam"),
        };
        let c = conflist(&net);
        assert_eq!(c["name"], "mini");
        let bridge = &c["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "mini0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/mini/agent/cni/ipam");
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.1.0/24");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(c["plugins"][1]["type"], "portmap");
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn install_plugin_links_points_every_plugin_at_target_and_replaces_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("mini");
        std::fs::write(&target, b"binary").expect("target");
        std::fs::write(dir.path().join("bridge"), b"old plugin").expect("old");
        install_plugin_links(dir.path(), &target).expect("install");
        install_plugin_links(dir.path(), &target).expect("again");
        for name in ["bridge", "host-local", "loopback", "portmap"] {
            assert_eq!(
                std::fs::read_link(dir.path().join(name)).expect("link"),
                target,
                "{name}"
            );
        }
        install_plugins(&dir.path().join("bin")).expect("install for this binary");
        assert!(dir.path().join("bin").join("loopback").exists());
    }

    #[test]
    fn underlay_mtu_unknown_address_defaults_to_1500() {
        let host = mini_sys::FakeHost::default();
        assert_eq!(underlay_mtu(&host, host.node_ip), 1450);
        assert_eq!(
            underlay_mtu(&host, "198.51.100.1".parse().expect("ip")),
            1500
        );
    }

    #[tokio::test]
    async fn wait_for_pod_cidr_returns_once_assigned() {
        let env = mini_testenv::TestEnv::start().await;
        let nodes: Api<Node> = Api::all(env.admin_client());
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node");
        nodes
            .create(&Default::default(), &node)
            .await
            .expect("create");
        let client = env.client_as("system:node:n1", &["system:nodes"]);
        let shutdown = CancellationToken::new();
        let waiter = tokio::spawn(async move { wait_for_pod_cidr(&client, "n1", &shutdown).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        let patch = json!({"spec": {"podCIDR": "10.42.3.0/24", "podCIDRs": ["10.42.3.0/24"]}});
        nodes
            .patch("n1", &Default::default(), &kube::api::Patch::Merge(patch))
            .await
            .expect("patch");
        let cidr = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("in time")
            .expect("task");
        assert_eq!(cidr.as_deref(), Some("10.42.3.0/24"));
        let dir = tempfile::tempdir().expect("tempdir");
        let net = PodNetworkConfig {
            pod_cidr: "10.42.3.0/24".into(),
            mtu: 1500,
            ipam_dir: dir.path().join("ipam"),
        };
        let path = write_conflist(dir.path(), &net).expect("write");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        assert_eq!(written, conflist(&net));
    }
}
