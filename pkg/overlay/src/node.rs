//! The flannel node annotations: what this node publishes about its VTEP, and what a remote
//! node's annotations say about its VTEP (`RemoteNode`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use mini_sys::netlink::{Ipv4Net, MacAddr};
use serde::{Deserialize, Serialize};

use crate::OverlayConfig;

pub const BACKEND_TYPE_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP_ANNOTATION: &str = "flannel.alpha.coreos.com/public-ip";
pub const KUBE_SUBNET_MANAGER_ANNOTATION: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// The `backend-data` annotation of the vxlan backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// Another node's end of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: String,
    /// Its podCIDR (network address, host bits clear).
    pub pod_cidr: Ipv4Net,
    pub vtep_mac: MacAddr,
    /// Its underlay IP, where its VXLAN packets go.
    pub public_ip: Ipv4Addr,
}

impl RemoteNode {
    /// The remote VTEP's address on the overlay: the network address of its podCIDR.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.pod_cidr.network()
    }
}

/// The annotations this node publishes.
pub fn local_annotations(config: &OverlayConfig, mac: &MacAddr) -> BTreeMap<String, String> {
    let data = serde_json::json!({"VNI": config.vni, "VtepMAC": mac.to_string()}).to_string();
    BTreeMap::from([
        (BACKEND_TYPE_ANNOTATION.to_string(), "vxlan".to_string()),
        (BACKEND_DATA_ANNOTATION.to_string(), data),
        (PUBLIC_IP_ANNOTATION.to_string(), config.node_ip.to_string()),
        (
            KUBE_SUBNET_MANAGER_ANNOTATION.to_string(),
            "true".to_string(),
        ),
    ])
}

/// A remote node's VTEP from its podCIDR and annotations: `Ok(None)` when it has not joined the
/// overlay yet (no podCIDR, or no vxlan annotations), `Err(reason)` when what it publishes
/// cannot be used (malformed, another VNI, a podCIDR outside the cluster CIDR).
pub fn remote_node(node: &Node, config: &OverlayConfig) -> Result<Option<RemoteNode>, String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
        return Ok(None);
    };
    let empty = BTreeMap::new();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    if annotations.get(BACKEND_TYPE_ANNOTATION).map(String::as_str) != Some("vxlan") {
        return Ok(None);
    }
    let (Some(data), Some(public_ip)) = (
        annotations.get(BACKEND_DATA_ANNOTATION),
        annotations.get(PUBLIC_IP_ANNOTATION),
    ) else {
        return Ok(None);
    };
    let pod_cidr: Ipv4Net = cidr.parse().map_err(|e| format!("podCIDR: {e}"))?;
    if !config.cluster_cidr.contains_net(&pod_cidr) {
        return Err(format!(
            "podCIDR {pod_cidr} is outside the cluster cidr {}",
            config.cluster_cidr
        ));
    }
    let data: BackendData =
        serde_json::from_str(data).map_err(|e| format!("{BACKEND_DATA_ANNOTATION}: {e}"))?;
    if data.vni != config.vni {
        return Err(format!("VNI {} is not ours ({})", data.vni, config.vni));
    }
    let vtep_mac: MacAddr = data
        .vtep_mac
        .parse()
        .map_err(|e| format!("{BACKEND_DATA_ANNOTATION}: {e}"))?;
    let public_ip: Ipv4Addr = public_ip
        .parse()
        .map_err(|_| format!("{PUBLIC_IP_ANNOTATION}: {public_ip:?} is not an IPv4 address"))?;
    Ok(Some(RemoteNode {
        name,
        pod_cidr: pod_cidr.trunc(),
        vtep_mac,
        public_ip,
    }))
}
