//! The kernel side: the vxlan device (`ensure_device`) and the per-remote-node FDB, neighbour
//! and route entries on it (`reconcile_remotes`), both idempotent and level-triggered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mini_sys::netlink::{
    FdbEntry, Ipv4Net, MacAddr, NeighbourEntry, Netlink, RouteEntry, VxlanSpec,
};

use crate::{mtu_for_underlay, netlink_err, OverlayConfig, OverlayError, RemoteNode};

/// This node's end of the overlay, as set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    /// The device's address: the network address of our podCIDR, /32.
    pub address: Ipv4Net,
}

/// Makes the vxlan device exist as `config` says (recreated when its VNI, local IP, port,
/// learning or underlay device differ; an existing matching device is kept, so its MAC, which
/// the other nodes know, stays), with MTU = underlay MTU − 50, up, and the network address of
/// `pod_cidr` as its only address.
pub async fn ensure_device(
    netlink: &dyn Netlink,
    config: &OverlayConfig,
    pod_cidr: Ipv4Net,
) -> Result<Vtep, OverlayError> {
    let name = config.device_name();
    let underlay = netlink
        .link_with_address(config.node_ip.into())
        .await
        .map_err(netlink_err(format!(
            "finding the interface of {}",
            config.node_ip
        )))?
        .ok_or(OverlayError::NoUnderlay(config.node_ip))?;
    let spec = VxlanSpec {
        name: name.clone(),
        vni: config.vni,
        local: config.node_ip,
        port: config.port,
        learning: false,
        mtu: mtu_for_underlay(underlay.mtu),
        underlay_index: Some(underlay.index),
    };
    let existing = netlink
        .link_by_name(&name)
        .await
        .map_err(netlink_err(format!("looking up {name}")))?;
    let link = match existing {
        Some(link) if matches_spec(&link, &spec) => link,
        Some(link) => {
            tracing::info!(device = name, "vxlan device settings differ; recreating it");
            netlink
                .delete_link(link.index)
                .await
                .map_err(netlink_err(format!("deleting the stale {name}")))?;
            create(netlink, &spec).await?
        }
        None => create(netlink, &spec).await?,
    };
    if link.mtu != spec.mtu {
        netlink
            .set_link_mtu(link.index, spec.mtu)
            .await
            .map_err(netlink_err(format!("setting the mtu of {name}")))?;
    }
    if !link.up {
        netlink
            .set_link_up(link.index)
            .await
            .map_err(netlink_err(format!("setting {name} up")))?;
    }
    let address = Ipv4Net::host(pod_cidr.network());
    let addresses = netlink
        .addresses(link.index)
        .await
        .map_err(netlink_err(format!("listing the addresses of {name}")))?;
    for stale in addresses.iter().filter(|a| **a != address) {
        netlink
            .remove_address(link.index, *stale)
            .await
            .map_err(netlink_err(format!("removing {stale} from {name}")))?;
    }
    if !addresses.contains(&address) {
        netlink
            .add_address(link.index, address)
            .await
            .map_err(netlink_err(format!("adding {address} to {name}")))?;
    }
    let mac = link.mac.ok_or_else(|| OverlayError::Netlink {
        what: format!("reading the mac of {name}"),
        source: mini_sys::netlink::NetlinkError::Protocol {
            call: "get link",
            target: name.clone(),
            message: "the vxlan device has no hardware address".into(),
        },
    })?;
    Ok(Vtep {
        name,
        index: link.index,
        mac,
        mtu: spec.mtu,
        address,
    })
}

fn matches_spec(link: &mini_sys::netlink::Link, spec: &VxlanSpec) -> bool {
    link.vxlan.as_ref().is_some_and(|v| {
        v.vni == spec.vni
            && v.local == Some(spec.local)
            && v.port == spec.port
            && v.learning == spec.learning
            && v.underlay_index == spec.underlay_index
    })
}

async fn create(
    netlink: &dyn Netlink,
    spec: &VxlanSpec,
) -> Result<mini_sys::netlink::Link, OverlayError> {
    netlink
        .create_vxlan(spec)
        .await
        .map_err(netlink_err(format!(
            "creating the vxlan device {}",
            spec.name
        )))
}

/// What one `reconcile_remotes` pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileStats {
    pub fdb_added: usize,
    pub fdb_removed: usize,
    pub neighbours_set: usize,
    pub neighbours_removed: usize,
    pub routes_set: usize,
    pub routes_removed: usize,
}

impl ReconcileStats {
    pub fn changed(&self) -> bool {
        *self != ReconcileStats::default()
    }
}

/// Makes the entries on `vtep` exactly those `remotes` need: per remote node an FDB entry
/// (VTEP MAC → public IP), a permanent neighbour entry (podCIDR `.0` → VTEP MAC) and a route
/// (podCIDR via `.0` onlink dev vtep); anything else of those kinds on the device is removed.
/// Stale entries go first (route, neighbour, FDB), then missing ones are added (neighbour,
/// FDB, route). Every change is attempted; the first failure is returned.
pub async fn reconcile_remotes(
    netlink: &dyn Netlink,
    vtep: &Vtep,
    remotes: &[RemoteNode],
) -> Result<ReconcileStats, OverlayError> {
    let index = vtep.index;
    let dev = &vtep.name;
    let want_fdb: BTreeSet<FdbEntry> = remotes
        .iter()
        .map(|r| FdbEntry {
            mac: r.vtep_mac,
            dst: r.public_ip,
        })
        .collect();
    let want_neigh: BTreeMap<Ipv4Addr, MacAddr> =
        remotes.iter().map(|r| (r.vtep_ip(), r.vtep_mac)).collect();
    let want_routes: BTreeMap<Ipv4Net, Ipv4Addr> =
        remotes.iter().map(|r| (r.pod_cidr, r.vtep_ip())).collect();

    let have_fdb = netlink
        .fdb_entries(index)
        .await
        .map_err(netlink_err(format!("listing the fdb of {dev}")))?;
    let have_neigh = netlink
        .neighbours(index)
        .await
        .map_err(netlink_err(format!("listing the neighbours of {dev}")))?;
    let have_routes: Vec<RouteEntry> = netlink
        .routes(index)
        .await
        .map_err(netlink_err(format!("listing the routes of {dev}")))?
        .into_iter()
        // /32 routes on the device are pool addresses on other nodes (mini_ippool::routes)
        .filter(|r| r.gateway.is_some() && r.dst.prefix_len < 32)
        .collect();

    let mut stats = ReconcileStats::default();
    let mut first_error: Option<OverlayError> = None;
    let mut note = |result: Result<(), OverlayError>, counter: &mut usize| match result {
        Ok(()) => *counter += 1,
        Err(e) => {
            tracing::warn!(error = %e, "overlay entry update failed");
            first_error.get_or_insert(e);
        }
    };

    // Stale first: route, neighbour, FDB.
    for route in &have_routes {
        if want_routes.get(&route.dst) != route.gateway.as_ref() {
            let result = netlink
                .remove_route(*route)
                .await
                .map_err(netlink_err(format!("removing the route to {}", route.dst)));
            note(result, &mut stats.routes_removed);
        }
    }
    for entry in &have_neigh {
        if !want_neigh.contains_key(&entry.ip) {
            let result = netlink
                .remove_neighbour(index, entry.ip)
                .await
                .map_err(netlink_err(format!(
                    "removing the neighbour {} on {dev}",
                    entry.ip
                )));
            note(result, &mut stats.neighbours_removed);
        }
    }
    for entry in &have_fdb {
        if !want_fdb.contains(entry) {
            let result = netlink
                .remove_fdb(index, *entry)
                .await
                .map_err(netlink_err(format!(
                    "removing the fdb entry {} dst {} on {dev}",
                    entry.mac, entry.dst
                )));
            note(result, &mut stats.fdb_removed);
        }
    }

    // Missing next: neighbour, FDB, route (the route's gateway must resolve first).
    let have_neigh: BTreeMap<Ipv4Addr, MacAddr> =
        have_neigh.iter().map(|n| (n.ip, n.mac)).collect();
    for (ip, mac) in &want_neigh {
        if have_neigh.get(ip) != Some(mac) {
            let result = netlink
                .set_neighbour(index, NeighbourEntry { ip: *ip, mac: *mac })
                .await
                .map_err(netlink_err(format!(
                    "setting the neighbour {ip} lladdr {mac} on {dev}"
                )));
            note(result, &mut stats.neighbours_set);
        }
    }
    let have_fdb: BTreeSet<FdbEntry> = have_fdb.into_iter().collect();
    for entry in want_fdb.difference(&have_fdb) {
        let result = netlink
            .add_fdb(index, *entry)
            .await
            .map_err(netlink_err(format!(
                "appending the fdb entry {} dst {} on {dev}",
                entry.mac, entry.dst
            )));
        note(result, &mut stats.fdb_added);
    }
    let have_routes: BTreeMap<Ipv4Net, Option<Ipv4Addr>> =
        have_routes.iter().map(|r| (r.dst, r.gateway)).collect();
    for (dst, gateway) in &want_routes {
        if have_routes.get(dst) != Some(&Some(*gateway)) {
            let route = RouteEntry {
                dst: *dst,
                gateway: Some(*gateway),
                link_index: index,
                onlink: true,
            };
            let result = netlink.set_route(route).await.map_err(netlink_err(format!(
                "setting the route {dst} via {gateway} dev {dev}"
            )));
            note(result, &mut stats.routes_set);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
