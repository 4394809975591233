//! The pod network overlay, the way flannel's vxlan backend does it: one `mini.<vni>` vxlan
//! device per node (local = node IP, UDP 8472, learning off, MTU = underlay − 50, address = the
//! network address of the node's podCIDR as /32), this node's VTEP published as flannel node
//! annotations, and for every other node an FDB entry (its VTEP MAC → its public IP), a permanent
//! neighbour entry (its podCIDR's `.0` → its VTEP MAC) and an onlink route (its podCIDR via that
//! `.0`). Level-triggered: a watch of Nodes plus a periodic resync converge the kernel state to
//! the cluster's, so entries of departed nodes go and manually deleted ones come back.
//!
//! Entry points: `run` (the loop the agent starts), `configure_host` (sysctls), `cleanup`
//! (for `mini agent cleanup`), `mtu_for_underlay` (for the CNI config).

mod node;
mod vtep;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use mini_sys::netlink::{Ipv4Net, Netlink, NetlinkError};
use mini_sys::{Host, SysError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use node::{
    local_annotations, remote_node, BackendData, RemoteNode, BACKEND_DATA_ANNOTATION,
    BACKEND_TYPE_ANNOTATION, KUBE_SUBNET_MANAGER_ANNOTATION, PUBLIC_IP_ANNOTATION,
};
pub use vtep::{ensure_device, reconcile_remotes, ReconcileStats, Vtep};

/// Bytes a VXLAN encapsulation adds (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The VNI of the overlay (flannel's default).
pub const DEFAULT_VNI: u32 = 1;
/// The UDP port of the overlay (flannel's, the Linux kernel's historical vxlan port).
pub const DEFAULT_PORT: u16 = 8472;
/// The CNI bridge the agent's conflist names; `cleanup` removes it.
pub const BRIDGE_NAME: &str = "mini0";

/// The MTU pods and the vxlan device get on an underlay of MTU `mtu`.
pub fn mtu_for_underlay(mtu: u32) -> u32 {
    mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// The vxlan device's name for `vni` (`mini.1`, like flannel's `flannel.1`).
pub fn device_name(vni: u32) -> String {
    format!("mini.{vni}")
}

/// What the overlay of one node needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Our Node's name.
    pub node_name: String,
    /// The underlay ("public") IP: the encapsulated packets' source, published to the other
    /// nodes. `--node-ip`, or the address of the `--flannel-iface` interface
    /// (see `interface_ipv4`).
    pub node_ip: Ipv4Addr,
    pub vni: u32,
    /// UDP destination port of the tunnel.
    pub port: u16,
    /// `--cluster-cidr`: remote podCIDRs outside it are ignored.
    pub cluster_cidr: Ipv4Net,
    /// How often the kernel state is compared with the cluster even without Node events.
    pub resync_interval: Duration,
}

impl OverlayConfig {
    /// The defaults: VNI 1, port 8472, resync every 10 s.
    pub fn new(node_name: impl Into<String>, node_ip: Ipv4Addr, cluster_cidr: Ipv4Net) -> Self {
        OverlayConfig {
            node_name: node_name.into(),
            node_ip,
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            cluster_cidr,
            resync_interval: Duration::from_secs(10),
        }
    }

    /// The vxlan device's name.
    pub fn device_name(&self) -> String {
        device_name(self.vni)
    }
}

/// What failed in the overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: NetlinkError,
    },
    #[error("no network interface holds the node ip {0}: pass --node-ip (or --flannel-iface) naming an address of this machine")]
    NoUnderlay(Ipv4Addr),
    #[error("interface {0:?} does not exist or has no IPv4 address: check --flannel-iface")]
    NoInterfaceAddress(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {node} has podCIDR {cidr:?}, which is not an IPv4 CIDR inside the cluster cidr {cluster}")]
    BadPodCidr {
        node: String,
        cidr: String,
        cluster: Ipv4Net,
    },
    #[error("setting sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: SysError,
    },
    #[error("the node watch ended before its first list completed")]
    WatchEnded,
}

pub(crate) fn netlink_err(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> OverlayError {
    let what = what.into();
    move |source| OverlayError::Netlink { what, source }
}

/// The first IPv4 address of interface `iface` (for `--flannel-iface`).
pub async fn interface_ipv4(netlink: &dyn Netlink, iface: &str) -> Result<Ipv4Addr, OverlayError> {
    let link = netlink
        .link_by_name(iface)
        .await
        .map_err(netlink_err(format!("looking up interface {iface}")))?
        .ok_or_else(|| OverlayError::NoInterfaceAddress(iface.to_string()))?;
    let addresses = netlink
        .addresses(link.index)
        .await
        .map_err(netlink_err(format!("listing the addresses of {iface}")))?;
    addresses
        .first()
        .map(|a| a.addr)
        .ok_or_else(|| OverlayError::NoInterfaceAddress(iface.to_string()))
}

/// Sets the sysctls the pod network needs: `net.ipv4.ip_forward=1`, and
/// `net.bridge.bridge-nf-call-iptables=1` when br_netfilter is loaded (its sysctl exists) so
/// bridged pod traffic passes the Service rules; without the module that step is skipped.
pub fn configure_host(host: &dyn Host) -> Result<(), OverlayError> {
    host.set_sysctl("net.ipv4.ip_forward", "1")
        .map_err(|source| OverlayError::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            source,
        })?;
    let key = "net.bridge.bridge-nf-call-iptables";
    match host.set_sysctl(key, "1") {
        Ok(()) => Ok(()),
        Err(SysError::Os { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("br_netfilter is not loaded ({key} is absent); skipping it");
            Ok(())
        }
        Err(source) => Err(OverlayError::Sysctl {
            key: key.into(),
            source,
        }),
    }
}

/// Removes what the overlay and the CNI bridge leave on a node: every `mini.<n>` vxlan device
/// (its routes, FDB and neighbour entries go with it) and the `mini0` bridge. Idempotent.
pub async fn cleanup(netlink: &dyn Netlink) -> Result<(), OverlayError> {
    for name in [device_name(DEFAULT_VNI), BRIDGE_NAME.to_string()] {
        let link = netlink
            .link_by_name(&name)
            .await
            .map_err(netlink_err(format!("looking up {name}")))?;
        if let Some(link) = link {
            match netlink.delete_link(link.index).await {
                Err(e) if !e.is_not_found() => {
                    return Err(netlink_err(format!("deleting {name}"))(e));
                }
                _ => tracing::info!(link = name, "removed"),
            }
        }
    }
    Ok(())
}

/// Runs the overlay until `shutdown`: waits for our Node's podCIDR, sets up the vxlan device,
/// publishes our VTEP on our Node, then keeps the FDB, neighbour and route entries for every
/// other node in step with the cluster (on Node events and every `resync_interval`). Entries
/// are left in place on shutdown so pods keep their network across agent restarts; `cleanup`
/// removes them. Errors after start-up are logged and retried; only a failed first setup
/// (e.g. no interface holds the node IP) returns an error.
pub async fn run(
    client: kube::Client,
    config: OverlayConfig,
    netlink: Arc<dyn Netlink>,
    shutdown: CancellationToken,
) -> Result<(), OverlayError> {
    let nodes: Api<Node> = Api::all(client);
    let Some(pod_cidr) = wait_for_pod_cidr(&nodes, &config, &shutdown).await? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    // a failed setup (the kernel or the API server briefly refusing) is retried: an agent
    // without its overlay device would leave every other node unable to reach its pods;
    // configuration errors (no interface for the node IP, a bad podCIDR) end the overlay
    let mut vtep = loop {
        let setup = async {
            let vtep = ensure_device(netlink.as_ref(), &config, pod_cidr).await?;
            publish_annotations(&nodes, &config, &vtep).await?;
            Ok::<_, OverlayError>(vtep)
        };
        match setup.await {
            Ok(vtep) => break vtep,
            // a busy kernel or an API server away passes; a wrong address or CIDR does not
            Err(e @ (OverlayError::Netlink { .. } | OverlayError::Api { .. })) => {
                tracing::warn!(error = %e, "overlay device setup failed; retrying in 2s")
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    tracing::info!(
        device = vtep.name, mac = %vtep.mac, %pod_cidr, mtu = vtep.mtu,
        elapsed_ms = started.elapsed().as_millis() as u64, "overlay device ready"
    );

    let (reader, writer) = reflector::store::<Node>();
    let changed = Arc::new(Notify::new());
    let watch = {
        let changed = changed.clone();
        let stream = reflector::reflector(
            writer,
            watcher(nodes.clone(), watcher::Config::default()).default_backoff(),
        );
        async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                }
                changed.notify_one();
            }
        }
    };
    let watch = tokio::spawn(watch);

    tokio::select! {
        _ = shutdown.cancelled() => { watch.abort(); return Ok(()); }
        ready = reader.wait_until_ready() => if ready.is_err() { return Err(OverlayError::WatchEnded); }
    }

    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        delay = config.resync_interval;
        match sync_once(&nodes, &config, netlink.as_ref(), &reader, &mut vtep).await {
            Ok(stats) if stats.changed() => tracing::info!(?stats, "overlay entries updated"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "overlay sync failed; retrying in 1s");
                delay = Duration::from_secs(1);
            }
        }
    }
    watch.abort();
    Ok(())
}

/// One level-triggered pass: our device and annotations, then every remote node's entries.
async fn sync_once(
    nodes: &Api<Node>,
    config: &OverlayConfig,
    netlink: &dyn Netlink,
    reader: &reflector::Store<Node>,
    vtep: &mut Vtep,
) -> Result<ReconcileStats, OverlayError> {
    let started = std::time::Instant::now();
    if let Some(local) = reader.get(&ObjectRef::new(&config.node_name)) {
        if let Some(pod_cidr) = local_pod_cidr(&local, config)? {
            *vtep = ensure_device(netlink, config, pod_cidr).await?;
        }
        let want = local_annotations(config, &vtep.mac);
        let have = local.metadata.annotations.clone().unwrap_or_default();
        if want.iter().any(|(k, v)| have.get(k) != Some(v)) {
            publish_annotations(nodes, config, vtep).await?;
        }
    }
    let mut remotes = Vec::new();
    for node in reader.state() {
        if node.metadata.name.as_deref() == Some(config.node_name.as_str()) {
            continue;
        }
        match remote_node(&node, config) {
            Ok(Some(remote)) => remotes.push(remote),
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                node = node.metadata.name.as_deref().unwrap_or_default(),
                reason,
                "skipping a node whose overlay annotations cannot be used"
            ),
        }
    }
    remotes.sort_by(|a, b| a.name.cmp(&b.name));
    let stats = reconcile_remotes(netlink, vtep, &remotes).await?;
    if stats.changed() {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "overlay sync pass"
        );
    }
    Ok(stats)
}

fn local_pod_cidr(node: &Node, config: &OverlayConfig) -> Result<Option<Ipv4Net>, OverlayError> {
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) else {
        return Ok(None);
    };
    match cidr.parse::<Ipv4Net>() {
        Ok(net) if config.cluster_cidr.contains_net(&net) => Ok(Some(net.trunc())),
        _ => Err(OverlayError::BadPodCidr {
            node: config.node_name.clone(),
            cidr,
            cluster: config.cluster_cidr,
        }),
    }
}

/// Polls our Node until it has a podCIDR (the server's node IPAM sets it after registration);
/// `None` on shutdown.
async fn wait_for_pod_cidr(
    nodes: &Api<Node>,
    config: &OverlayConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Ipv4Net>, OverlayError> {
    let mut logged = false;
    loop {
        match nodes.get_opt(&config.node_name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = local_pod_cidr(&node, config)? {
                    return Ok(Some(cidr));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading our node"),
        }
        if !logged {
            tracing::info!(
                node = config.node_name,
                "waiting for our node's podCIDR before setting up the overlay"
            );
            logged = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Merge-patches the flannel annotations onto our Node.
async fn publish_annotations(
    nodes: &Api<Node>,
    config: &OverlayConfig,
    vtep: &Vtep,
) -> Result<(), OverlayError> {
    let patch = serde_json::json!({
        "metadata": {"annotations": local_annotations(config, &vtep.mac)}
    });
    nodes
        .patch(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| OverlayError::Api {
            what: format!(
                "publishing the overlay annotations on node {}",
                config.node_name
            ),
            source,
        })?;
    Ok(())
}

/// The IP the overlay should use when the agent has an `IpAddr` (IPv4 only).
pub fn ipv4_node_ip(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

#[cfg(test)]
mod tests;
