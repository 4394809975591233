//! The node side of pool addresses: `/32` routes. A pool address is outside every node's pod
//! range, so the node holding it routes it into the pod bridge (`A/32 dev mini0`) and every
//! other node routes it through the VXLAN overlay to the holder's VTEP
//! (`A/32 via <its podCIDR .0> dev mini.1 onlink`; the overlay keeps that gateway's neighbour
//! and FDB entries). Level-triggered from a watch of IPAllocations and Nodes plus a resync:
//! `/32` routes of those two shapes on those two devices that no allocation wants are removed
//! (the overlay leaves `/32` routes on its device to this module).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use mini_overlay::OverlayConfig;
use mini_runtime::watch::spawn_store;
use mini_sys::netlink::{Ipv4Net, Netlink, RouteEntry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::types::IpAllocation;
use crate::IpPoolError;

/// The routes one node wants for pool addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Addresses held by pods of this node: routed into the bridge.
    pub local: BTreeSet<Ipv4Addr>,
    /// Addresses held elsewhere → the holder's VTEP address.
    pub remote: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// What the allocations and nodes ask of node `config.node_name`.
pub fn wanted(allocations: &[IpAllocation], nodes: &[Node], config: &OverlayConfig) -> Wanted {
    let vteps: BTreeMap<String, Ipv4Addr> = nodes
        .iter()
        .filter_map(|n| {
            let remote = mini_overlay::remote_node(n, config).ok()??;
            Some((remote.name.clone(), remote.vtep_ip()))
        })
        .collect();
    let mut out = Wanted::default();
    for a in allocations {
        let (Ok(ip), Some(node)) = (a.spec.address.parse::<Ipv4Addr>(), a.spec.node.as_ref())
        else {
            continue;
        };
        if *node == config.node_name {
            out.local.insert(ip);
        } else if let Some(vtep) = vteps.get(node) {
            out.remote.insert(ip, *vtep);
        }
    }
    out
}

/// Routes to remove and to set so that the `/32` routes of `have` (only those of the managed
/// shape: no gateway on the bridge, a gateway on the overlay device) become `want`.
pub fn route_diff(have: &[RouteEntry], want: &[RouteEntry]) -> (Vec<RouteEntry>, Vec<RouteEntry>) {
    let managed: Vec<&RouteEntry> = have.iter().filter(|r| r.dst.prefix_len == 32).collect();
    let remove = managed
        .iter()
        .filter(|r| !want.contains(r))
        .map(|r| **r)
        .collect();
    let add = want
        .iter()
        .filter(|w| !managed.contains(w))
        .copied()
        .collect();
    (remove, add)
}

/// The wanted routes on the bridge and the overlay device.
pub fn wanted_routes(
    wanted: &Wanted,
    bridge_index: Option<u32>,
    vtep_index: Option<u32>,
) -> (Vec<RouteEntry>, Vec<RouteEntry>) {
    let bridge = bridge_index
        .map(|index| {
            wanted
                .local
                .iter()
                .map(|ip| RouteEntry {
                    dst: Ipv4Net::host(*ip),
                    gateway: None,
                    link_index: index,
                    onlink: false,
                })
                .collect()
        })
        .unwrap_or_default();
    let vtep = vtep_index
        .map(|index| {
            wanted
                .remote
                .iter()
                .map(|(ip, gw)| RouteEntry {
                    dst: Ipv4Net::host(*ip),
                    gateway: Some(*gw),
                    link_index: index,
                    onlink: true,
                })
                .collect()
        })
        .unwrap_or_default();
    (bridge, vtep)
}

async fn sync_device(
    netlink: &dyn Netlink,
    device: &str,
    want: impl FnOnce(u32) -> Vec<RouteEntry>,
    gateway: bool,
) -> Result<usize, IpPoolError> {
    let nl = |what: String| move |source| IpPoolError::Netlink { what, source };
    let Some(link) = netlink
        .link_by_name(device)
        .await
        .map_err(nl(format!("looking up {device}")))?
    else {
        return Ok(0);
    };
    let want = want(link.index);
    let have: Vec<RouteEntry> = netlink
        .routes(link.index)
        .await
        .map_err(nl(format!("listing the routes of {device}")))?
        .into_iter()
        .filter(|r| r.gateway.is_some() == gateway)
        .collect();
    let (remove, add) = route_diff(&have, &want);
    let changes = remove.len() + add.len();
    for r in remove {
        netlink
            .remove_route(r)
            .await
            .map_err(nl(format!("removing the route to {} on {device}", r.dst)))?;
    }
    for r in add {
        netlink
            .set_route(r)
            .await
            .map_err(nl(format!("setting the route to {} on {device}", r.dst)))?;
    }
    Ok(changes)
}

/// One pass: the bridge's and the overlay device's `/32` routes made to match `wanted`.
pub async fn sync(
    netlink: &dyn Netlink,
    bridge: &str,
    vtep: &str,
    wanted: &Wanted,
) -> Result<usize, IpPoolError> {
    let local = sync_device(
        netlink,
        bridge,
        |i| wanted_routes(wanted, Some(i), None).0,
        false,
    )
    .await?;
    let remote = sync_device(
        netlink,
        vtep,
        |i| wanted_routes(wanted, None, Some(i)).1,
        true,
    )
    .await?;
    Ok(local + remote)
}

/// Keeps this node's pool-address routes until `shutdown` (routes stay on exit, like the
/// overlay's, so pods keep their network across agent restarts).
pub async fn run(
    client: kube::Client,
    config: OverlayConfig,
    bridge: String,
    netlink: Arc<dyn Netlink>,
    shutdown: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let mut watches = tokio::task::JoinSet::new();
    let allocations = spawn_store(
        &mut watches,
        "ipallocations",
        Api::<IpAllocation>::all(client.clone()),
        &changed,
    );
    let nodes = spawn_store(&mut watches, "nodes", Api::<Node>::all(client), &changed);
    let vtep = config.device_name();
    // never act on a half-listed cluster: that would remove routes still in use
    let ready = async {
        allocations.wait_until_ready().await.ok()?;
        nodes.wait_until_ready().await.ok()
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = ready => {}
    }
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        delay = config.resync_interval;
        let a: Vec<IpAllocation> = allocations.state().iter().map(|a| (**a).clone()).collect();
        let n: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let want = wanted(&a, &n, &config);
        match sync(netlink.as_ref(), &bridge, &vtep, &want).await {
            Ok(0) => {}
            Ok(changes) => tracing::info!(
                changes,
                local = want.local.len(),
                remote = want.remote.len(),
                "pool address routes updated"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "pool address routes: sync failed; retrying in 1s");
                delay = Duration::from_secs(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AllocationOwner, IpAllocationSpec};
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config() -> OverlayConfig {
        OverlayConfig::new(
            "n1",
            "192.168.1.1".parse().expect("ip"),
            "10.42.0.0/16".parse().expect("cidr"),
        )
    }

    fn allocation(address: &str, node: &str) -> IpAllocation {
        IpAllocation {
            metadata: ObjectMeta::default(),
            spec: IpAllocationSpec {
                pool: "db".into(),
                address: address.into(),
                kind: "Pod".into(),
                owner: AllocationOwner::default(),
                stateful_set: None,
                node: Some(node.into()),
            },
        }
    }

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        let annotations = mini_overlay::local_annotations(
            &OverlayConfig::new(
                name,
                ip.parse().expect("ip"),
                "10.42.0.0/16".parse().expect("cidr"),
            ),
            &"02:00:00:00:00:01".parse().expect("mac"),
        );
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn wanted_splits_local_and_remote_by_node() {
        let nodes = vec![
            node("n1", "10.42.0.0/24", "192.168.1.1"),
            node("n2", "10.42.1.0/24", "192.168.1.2"),
        ];
        let allocations = vec![
            allocation("10.99.0.1", "n1"),
            allocation("10.99.0.2", "n2"),
            allocation("10.99.0.3", "n3"),
        ];
        let w = wanted(&allocations, &nodes, &config());
        assert_eq!(w.local, BTreeSet::from(["10.99.0.1".parse().expect("ip")]));
        assert_eq!(
            w.remote,
            BTreeMap::from([(
                "10.99.0.2".parse().expect("ip"),
                "10.42.1.0".parse().expect("ip")
            )])
        );
    }

    #[test]
    fn route_diff_removes_stale_host_routes_and_keeps_subnet_routes() {
        let route = |dst: &str, gw: Option<&str>| RouteEntry {
            dst: dst.parse().expect("cidr"),
            gateway: gw.map(|g| g.parse().expect("ip")),
            link_index: 5,
            onlink: gw.is_some(),
        };
        let have = vec![
            route("10.42.1.0/24", Some("10.42.1.0")),
            route("10.99.0.7/32", Some("10.42.1.0")),
            route("10.99.0.8/32", Some("10.42.2.0")),
        ];
        let want = vec![
            route("10.99.0.8/32", Some("10.42.2.0")),
            route("10.99.0.9/32", Some("10.42.1.0")),
        ];
        let (remove, add) = route_diff(&have, &want);
        assert_eq!(remove, vec![route("10.99.0.7/32", Some("10.42.1.0"))]);
        assert_eq!(add, vec![route("10.99.0.9/32", Some("10.42.1.0"))]);
    }

    #[tokio::test]
    async fn sync_programs_bridge_and_overlay_routes_on_a_fake_kernel() {
        let netlink = mini_sys::netlink::FakeNetlink::new();
        netlink.create_bridge("mini0", None).await.expect("bridge");
        let w = Wanted {
            local: BTreeSet::from(["10.99.0.1".parse().expect("ip")]),
            remote: BTreeMap::new(),
        };
        assert_eq!(
            sync(&netlink, "mini0", "mini.1", &w).await.expect("sync"),
            1
        );
        assert_eq!(
            sync(&netlink, "mini0", "mini.1", &w).await.expect("sync"),
            0
        );
        let bridge = netlink
            .link_by_name("mini0")
            .await
            .expect("nl")
            .expect("link");
        assert_eq!(netlink.routes(bridge.index).await.expect("routes").len(), 1);
        let none = Wanted::default();
        assert_eq!(
            sync(&netlink, "mini0", "mini.1", &none)
                .await
                .expect("sync"),
            1
        );
        assert!(netlink
            .routes(bridge.index)
            .await
            .expect("routes")
            .is_empty());
    }
}
