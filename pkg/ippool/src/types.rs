//! The `mini.dev/v1` kinds of static pod IPs: `IPPool` (a CIDR, optionally limited to nodes
//! by labels) and `IPAllocation` (one address held by one pod, or by one StatefulSet pod
//! identity), with the `kube::Resource` glue so typed `Api`s work without a derive.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ClusterResourceScope;
use mini_sys::netlink::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The API group of mini's own kinds.
pub const GROUP: &str = "mini.dev";
pub const VERSION: &str = "v1";

/// A named pool of addresses pods can be pinned to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpPool {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IpPoolSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IpPoolStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    /// The pool's addresses (IPv4 CIDR).
    #[serde(default)]
    pub cidr: String,
    /// Only nodes carrying all these labels may run the pool's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolStatus {
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub allocated: u64,
    #[serde(default)]
    pub conditions: Vec<PoolCondition>,
}

/// `Ready`: `True` when the pool is usable, else `False` with the reason it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// One address taken from a pool; its name is the address with dots as dashes, so the store's
/// create-if-absent makes addresses unique cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpAllocation {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IpAllocationSpec,
}

/// Who holds an allocation: one pod (released when it goes) or one StatefulSet pod identity
/// (kept while the StatefulSet exists).
pub const KIND_POD: &str = "Pod";
pub const KIND_STATEFULSET: &str = "StatefulSet";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAllocationSpec {
    pub pool: String,
    pub address: String,
    /// `Pod` or `StatefulSet`.
    pub kind: String,
    pub owner: AllocationOwner,
    /// The StatefulSet whose pod identity holds the address (kind `StatefulSet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful_set: Option<String>,
    /// The node the holding pod runs on (routes to the address point there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationOwner {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

macro_rules! cluster_resource {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = ClusterResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cluster_resource!(IpPool, "IPPool", "ippools");
cluster_resource!(IpAllocation, "IPAllocation", "ipallocations");

/// The allocation object's name for an address: `10.99.0.5` → `10-99-0-5`.
pub fn allocation_name(address: Ipv4Addr) -> String {
    address.to_string().replace('.', "-")
}

/// The addresses of a pool pods may get: all but the network and broadcast address
/// (for /31 and /32 every address).
pub fn usable(cidr: Ipv4Net) -> (u32, u32) {
    let net = u32::from(cidr.network());
    let last = net
        | (u32::MAX
            .checked_shr(u32::from(cidr.prefix_len))
            .unwrap_or(0));
    if cidr.prefix_len >= 31 {
        (net, last)
    } else {
        (net + 1, last - 1)
    }
}

/// How many addresses `usable` gives.
pub fn size(cidr: Ipv4Net) -> u64 {
    let (first, last) = usable(cidr);
    u64::from(last - first) + 1
}

/// Whether two CIDRs share an address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}
