//! Static pod IPs from named pools. Datacenter users pin services to fixed addresses: an
//! `IPPool` (cluster scoped, `mini.dev/v1`: a CIDR and an optional node selector) and the pod
//! annotations `ipam.mini.dev/pool` / `ipam.mini.dev/address` pick a pool or an address.
//!
//! Server side (`crd`, `controller`, `plan`): the CRDs are applied at start; the allocator
//! takes one `IPAllocation` per pod (its name is the address, so the store's create-if-absent
//! makes addresses unique), annotates the pod `ipam.mini.dev/allocated`, keeps a StatefulSet
//! pod's address for its identity while the StatefulSet exists, releases the others when their
//! pod goes, and tells waiting pods why with Warning events.
//!
//! Node side (`pinned`, `routes`): the kubelet holds the sandbox until the pod is annotated and
//! leaves the address in a request file the CNI IPAM (`host-local`) hands out; the route
//! reconciler keeps `/32` routes for pool addresses: local ones via the pod bridge, remote ones
//! via the VXLAN overlay to the holding node's VTEP.

pub mod controller;
pub mod crd;
pub mod pinned;
pub mod plan;
pub mod routes;
pub mod types;

pub use controller::{run, AllocatorConfig};
pub use types::{IpAllocation, IpPool};

/// Annotation on a pod (template): the pool to take an address from.
pub const POOL_ANNOTATION: &str = "ipam.mini.dev/pool";
/// Annotation on a pod (template): the exact address to take.
pub const ADDRESS_ANNOTATION: &str = "ipam.mini.dev/address";
/// Annotation the allocator sets on the pod: the address it holds.
pub const ALLOCATED_ANNOTATION: &str = "ipam.mini.dev/allocated";

/// Whether a pod's annotations ask for a pool address.
pub fn wants_pool_address(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    annotations.is_some_and(|a| {
        [POOL_ANNOTATION, ADDRESS_ANNOTATION]
            .iter()
            .any(|k| a.get(*k).is_some_and(|v| !v.is_empty()))
    })
}

/// What failed in the IP pools.
#[derive(Debug, thiserror::Error)]
pub enum IpPoolError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CRD {0} did not become Established within 30s; check the API server log")]
    NotEstablished(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: mini_sys::netlink::NetlinkError,
    },
    #[error("{flag} {value:?} is not an IPv4 CIDR")]
    Config { flag: &'static str, value: String },
}

pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> IpPoolError {
    let what = what.into();
    move |source| IpPoolError::Api { what, source }
}
