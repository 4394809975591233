//! `bridge`: attaches a pod to a Linux bridge as the reference plugin does. ADD creates the
//! bridge if missing (up, with the gateway address when `isGateway`), a veth pair whose host end
//! joins the bridge (hairpin, same MTU) and whose other end is created inside the pod's netns
//! as `CNI_IFNAME`, runs the IPAM plugin, and configures the address and routes inside the pod.
//! DEL releases the address and deletes the pod's end; a netns already gone is not an error.

use std::net::Ipv4Addr;

use mini_sys::netlink::{Ipv4Net, Link, Netlink, RouteEntry, VethSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::types::{code, CniError, CniResult, Command, CommonConf, Context, Interface, Route};
use crate::Deps;

/// The reference plugin's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Debug, Clone, Deserialize)]
struct IpamRef {
    #[serde(rename = "type", default)]
    plugin_type: String,
}

/// The bridge config (the fields the reference plugin reads; the ones mini does not do are
/// read only to refuse them).
#[derive(Debug, Clone, Deserialize)]
pub struct BridgeConf {
    #[serde(flatten)]
    common: CommonConf,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(rename = "isGateway", default)]
    is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    force_address: bool,
    #[serde(rename = "ipMasq", default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Value>,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(rename = "disableContainerInterface", default)]
    disable_container_interface: bool,
    #[serde(rename = "portIsolation", default)]
    port_isolation: bool,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Option<Value>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

impl BridgeConf {
    fn bridge_name(&self) -> &str {
        self.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE)
    }

    /// Refuses the options mini's bridge does not implement, naming the field.
    fn check(&self) -> Result<(), CniError> {
        let refuse = |field: &str, why: &str| Err(CniError::unsupported(format!("{field}: {why}")));
        if self.ip_masq {
            return refuse(
                "ipMasq=true",
                "mini's bridge does not masquerade (the node proxy masquerades egress); set ipMasq to false",
            );
        }
        if self.promisc_mode {
            return refuse("promiscMode=true", "not supported by mini's bridge");
        }
        if self.vlan.is_some_and(|v| v != 0) || self.vlan_trunk.is_some() {
            return refuse(
                "vlan/vlanTrunk",
                "VLAN filtering is not supported by mini's bridge",
            );
        }
        if self.macspoofchk {
            return refuse("macspoofchk=true", "not supported by mini's bridge");
        }
        if self.disable_container_interface {
            return refuse(
                "disableContainerInterface=true",
                "not supported by mini's bridge",
            );
        }
        if self.port_isolation {
            return refuse("portIsolation=true", "not supported by mini's bridge");
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::invalid_config(format!(
                    "mtu {mtu} is out of range 68-65535"
                )));
            }
        }
        match &self.ipam {
            Some(ipam) if !ipam.plugin_type.is_empty() => Ok(()),
            _ => Err(CniError::invalid_config(
                "bridge needs an IPAM plugin (ipam.type); layer-2 only bridges are not supported",
            )),
        }
    }

    fn ipam_type(&self) -> &str {
        self.ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .unwrap_or("")
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(mini_sys::netlink::NetlinkError) -> CniError {
    let what = what.into();
    move |e| CniError::plugin(what, e)
}

/// The bridge, created (up, with `mtu`) when missing; another kind of link by that name is an
/// error.
async fn ensure_bridge(
    netlink: &dyn Netlink,
    name: &str,
    mtu: Option<u32>,
) -> Result<Link, CniError> {
    let link = match netlink
        .link_by_name(name)
        .await
        .map_err(nl(format!("looking up bridge {name:?}")))?
    {
        Some(link) => link,
        None => match netlink.create_bridge(name, mtu).await {
            Ok(link) => link,
            // another ADD created it meanwhile
            Err(e) if e.is_exists() => netlink
                .link_by_name(name)
                .await
                .map_err(nl(format!("looking up bridge {name:?}")))?
                .ok_or_else(|| CniError::plugin(format!("bridge {name:?} vanished"), "retry"))?,
            Err(e) => {
                return Err(CniError::plugin(
                    format!("failed to create bridge {name:?}"),
                    e,
                ))
            }
        },
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::plugin(
            format!("{name:?} already exists but is not a bridge"),
            format!("kind {:?}", link.kind),
        ));
    }
    if !link.up {
        netlink
            .set_link_up(link.index)
            .await
            .map_err(nl(format!("failed to set bridge {name:?} up")))?;
    }
    Ok(link)
}

/// Puts `address` on the bridge; another IPv4 address there is an error unless `force`.
async fn ensure_bridge_address(
    netlink: &dyn Netlink,
    bridge: &Link,
    address: Ipv4Net,
    force: bool,
) -> Result<(), CniError> {
    let existing = netlink
        .addresses(bridge.index)
        .await
        .map_err(nl(format!("reading the addresses of {:?}", bridge.name)))?;
    for other in existing {
        if other == address {
            return Ok(());
        }
        if !force {
            return Err(CniError::plugin(
                format!(
                    "{:?} already has an IP address different from {address}",
                    bridge.name
                ),
                format!("it has {other}; set forceAddress to replace it"),
            ));
        }
        netlink
            .remove_address(bridge.index, other)
            .await
            .map_err(nl(format!("removing {other} from {:?}", bridge.name)))?;
    }
    netlink
        .add_address(bridge.index, address)
        .await
        .map_err(nl(format!("adding {address} to {:?}", bridge.name)))
}

/// A host-side veth name as the reference plugin makes them (`veth` + 8 hex digits).
fn random_veth_name() -> String {
    format!("veth{:08x}", rand::random::<u32>())
}

/// The default gateway of a network (its first address).
fn first_address(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

async fn add(deps: &Deps, ctx: &Context, conf: &BridgeConf) -> Result<CniResult, CniError> {
    let netns = ctx
        .netns
        .clone()
        .expect("ADD has CNI_NETNS (checked with the environment)");
    let is_gateway = conf.is_gateway || conf.is_default_gateway;
    let bridge = ensure_bridge(deps.netlink.as_ref(), conf.bridge_name(), conf.mtu).await?;
    let pod =
        deps.netlink.in_netns(&netns).await.map_err(|e| {
            CniError::plugin(format!("failed to open netns {:?}", netns.display()), e)
        })?;
    if pod
        .link_by_name(&ctx.ifname)
        .await
        .map_err(nl("looking up the container interface"))?
        .is_some()
    {
        return Err(CniError::plugin(
            format!(
                "container veth name provided ({}) already exists",
                ctx.ifname
            ),
            netns.display(),
        ));
    }
    let mtu = conf.mtu.or(Some(bridge.mtu).filter(|m| *m > 0));
    let mut host_veth = None;
    for _ in 0..5 {
        let spec = VethSpec {
            name: random_veth_name(),
            peer_name: ctx.ifname.clone(),
            mtu,
            peer_netns: Some(netns.clone()),
        };
        match deps.netlink.create_veth(&spec).await {
            Ok(link) => {
                host_veth = Some(link);
                break;
            }
            Err(e)
                if e.is_exists()
                    && deps
                        .netlink
                        .link_by_name(&spec.name)
                        .await
                        .ok()
                        .flatten()
                        .is_some() =>
            {
                continue
            }
            Err(e) => return Err(CniError::plugin("failed to create the veth pair", e)),
        }
    }
    let host_veth = host_veth.ok_or_else(|| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "failed to pick a free host veth name",
            "",
        )
    })?;
    let configured = async {
        deps.netlink
            .set_link_master(host_veth.index, Some(bridge.index))
            .await
            .map_err(nl(format!(
                "failed to connect {:?} to bridge {:?}",
                host_veth.name, bridge.name
            )))?;
        if conf.hairpin_mode {
            deps.netlink
                .set_hairpin(host_veth.index, true)
                .await
                .map_err(nl(format!(
                    "failed to set hairpin mode on {:?}",
                    host_veth.name
                )))?;
        }
        deps.netlink
            .set_link_up(host_veth.index)
            .await
            .map_err(nl(format!("failed to set {:?} up", host_veth.name)))?;
        Ok::<(), CniError>(())
    }
    .await;
    let container = pod
        .link_by_name(&ctx.ifname)
        .await
        .map_err(nl("looking up the container interface"))?;
    let container = match (configured, container) {
        (Ok(()), Some(link)) => link,
        (result, _) => {
            let _ = deps.netlink.delete_link(host_veth.index).await;
            result?;
            return Err(CniError::plugin(
                "the container end of the veth pair is missing",
                ctx.ifname.clone(),
            ));
        }
    };

    // IPAM, released again if anything after it fails
    let ipam_out = match deps
        .delegate
        .invoke(conf.ipam_type(), Command::Add, &ctx.stdin, ctx)
    {
        Ok(out) => out,
        Err(e) => {
            let _ = deps.netlink.delete_link(host_veth.index).await;
            return Err(e);
        }
    };
    let configured = configure(
        deps,
        ctx,
        conf,
        is_gateway,
        &bridge,
        &host_veth,
        &container,
        pod.as_ref(),
        ipam_out,
    )
    .await;
    if configured.is_err() {
        let _ = deps
            .delegate
            .invoke(conf.ipam_type(), Command::Del, &ctx.stdin, ctx);
        let _ = deps.netlink.delete_link(host_veth.index).await;
    }
    configured
}

#[allow(clippy::too_many_arguments)]
async fn configure(
    deps: &Deps,
    ctx: &Context,
    conf: &BridgeConf,
    is_gateway: bool,
    bridge: &Link,
    host_veth: &Link,
    container: &Link,
    pod: &dyn Netlink,
    ipam_out: Option<Value>,
) -> Result<CniResult, CniError> {
    let ipam_out = ipam_out
        .ok_or_else(|| CniError::plugin("IPAM plugin returned no result", conf.ipam_type()))?;
    let mut result = CniResult::from_value(&ipam_out)?;
    if result.ips.is_empty() {
        return Err(CniError::plugin(
            "IPAM plugin returned missing IP config",
            conf.ipam_type(),
        ));
    }
    let mut gateways = Vec::new();
    for ip in &mut result.ips {
        let address = ip.ipv4().ok_or_else(|| {
            CniError::unsupported(format!(
                "address {}: mini's bridge is IPv4 only",
                ip.address
            ))
        })?;
        ip.interface = Some(2);
        if is_gateway && ip.gateway.is_none() {
            ip.gateway = Some(first_address(address).to_string());
        }
        if let Some(gw) = ip.gateway_v4() {
            gateways.push((address, gw));
        }
    }
    if conf.is_default_gateway {
        if let Some((_, gw)) = gateways.first() {
            result
                .routes
                .retain(|r| r.dst_v4().map(|d| d.prefix_len) != Some(0));
            result.routes.push(Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(gw.to_string()),
            });
        }
    }

    // inside the pod: up, addresses, routes
    pod.set_link_up(container.index)
        .await
        .map_err(nl(format!("failed to set {:?} up", ctx.ifname)))?;
    for ip in &result.ips {
        let address = ip.ipv4().expect("checked above");
        pod.add_address(container.index, address)
            .await
            .map_err(nl(format!("failed to add {address} to {:?}", ctx.ifname)))?;
    }
    for route in &result.routes {
        let dst = route.dst_v4().ok_or_else(|| {
            CniError::unsupported(format!("route {}: mini's bridge is IPv4 only", route.dst))
        })?;
        let gateway = route
            .gw_v4()
            .or_else(|| gateways.first().map(|(_, gw)| *gw));
        // a pinned pool address (/32) has no subnet holding its gateway: the gateway is onlink
        let onlink = gateway.is_some_and(|gw| {
            gateways
                .iter()
                .any(|(address, _)| address.prefix_len == 32 && !address.contains(gw))
        });
        let entry = RouteEntry {
            dst: dst.trunc(),
            gateway,
            link_index: container.index,
            onlink,
        };
        pod.set_route(entry)
            .await
            .map_err(nl(format!("failed to add route {dst} via {gateway:?}")))?;
    }

    // on the host: the gateway address on the bridge, forwarding
    if is_gateway {
        for (address, gw) in &gateways {
            let prefix_len = if address.prefix_len == 32 && !address.contains(*gw) {
                // a pinned pool address: the bridge keeps the node range's prefix, and the host
                // routes the address into the bridge
                deps.netlink
                    .set_route(RouteEntry {
                        dst: *address,
                        gateway: None,
                        link_index: bridge.index,
                        onlink: false,
                    })
                    .await
                    .map_err(nl(format!("failed to route {address} into the bridge")))?;
                ipam_subnet_prefix(&ctx.stdin, *gw).ok_or_else(|| {
                    CniError::invalid_config(format!(
                        "gateway {gw} of the /32 address {address} is in no ipam range subnet"
                    ))
                })?
            } else {
                address.prefix_len
            };
            let on_bridge = Ipv4Net::new(*gw, prefix_len).expect("prefix of an address");
            ensure_bridge_address(deps.netlink.as_ref(), bridge, on_bridge, conf.force_address)
                .await?;
        }
        deps.host
            .set_sysctl("net.ipv4.ip_forward", "1")
            .map_err(|e| CniError::plugin("failed to enable IP forwarding", e))?;
    }

    // the bridge's MAC may change as ports join: read it last
    let bridge_now = deps
        .netlink
        .link_by_index(bridge.index)
        .await
        .map_err(nl("reading the bridge"))?
        .unwrap_or_else(|| bridge.clone());
    let mac = |l: &Link| l.mac.map(|m| m.to_string());
    result.interfaces = vec![
        Interface {
            name: bridge_now.name.clone(),
            mac: mac(&bridge_now),
            sandbox: None,
        },
        Interface {
            name: host_veth.name.clone(),
            mac: mac(host_veth),
            sandbox: None,
        },
        Interface {
            name: ctx.ifname.clone(),
            mac: mac(container),
            sandbox: ctx.netns.as_ref().map(|p| p.display().to_string()),
        },
    ];
    if conf.dns.is_some() {
        result.dns = conf.dns.clone();
    }
    Ok(result)
}

/// The prefix length of the IPAM range subnet holding `gateway` (`ipam.ranges` or
/// `ipam.subnet` of the config on stdin).
fn ipam_subnet_prefix(stdin: &[u8], gateway: Ipv4Addr) -> Option<u8> {
    let conf: Value = serde_json::from_slice(stdin).ok()?;
    let ipam = conf.get("ipam")?;
    let ranges = ipam
        .get("ranges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|r| r.get("subnet"));
    ranges
        .chain(ipam.get("subnet"))
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse::<Ipv4Net>().ok())
        .find(|net| net.contains(gateway))
        .map(|net| net.prefix_len)
}

async fn del(deps: &Deps, ctx: &Context, conf: &BridgeConf) -> Result<(), CniError> {
    deps.delegate
        .invoke(conf.ipam_type(), Command::Del, &ctx.stdin, ctx)?;
    let Some(netns) = &ctx.netns else {
        return Ok(());
    };
    let pod = match deps.netlink.in_netns(netns).await {
        Ok(pod) => pod,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => {
            return Err(CniError::plugin(
                format!("failed to open netns {:?}", netns.display()),
                e,
            ))
        }
    };
    if let Some(link) = pod
        .link_by_name(&ctx.ifname)
        .await
        .map_err(nl("looking up the container interface"))?
    {
        // deleting one end deletes the pair
        match pod.delete_link(link.index).await {
            Err(e) if !e.is_not_found() => {
                return Err(CniError::plugin(
                    format!("failed to delete {:?}", ctx.ifname),
                    e,
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

async fn check(deps: &Deps, ctx: &Context, conf: &BridgeConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("required prevResult missing"))?;
    let prev = CniResult::from_value(prev)?;
    deps.delegate
        .invoke(conf.ipam_type(), Command::Check, &ctx.stdin, ctx)?;
    let bridge = deps
        .netlink
        .link_by_name(conf.bridge_name())
        .await
        .map_err(nl("looking up the bridge"))?
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .ok_or_else(|| CniError::plugin("bridge is missing", conf.bridge_name()))?;
    let netns = ctx
        .netns
        .clone()
        .expect("CHECK has CNI_NETNS (checked with the environment)");
    let pod =
        deps.netlink.in_netns(&netns).await.map_err(|e| {
            CniError::plugin(format!("failed to open netns {:?}", netns.display()), e)
        })?;
    let container = pod
        .link_by_name(&ctx.ifname)
        .await
        .map_err(nl("looking up the container interface"))?
        .ok_or_else(|| CniError::plugin("container interface is missing", ctx.ifname.clone()))?;
    let have = pod
        .addresses(container.index)
        .await
        .map_err(nl("reading the container addresses"))?;
    let container_slot = prev
        .interfaces
        .iter()
        .position(|i| i.name == ctx.ifname && i.sandbox.is_some());
    for ip in prev.ips.iter().filter(|ip| ip.interface == container_slot) {
        let Some(address) = ip.ipv4() else { continue };
        if !have.contains(&address) {
            return Err(CniError::plugin(
                format!("{} is missing on {:?}", address, ctx.ifname),
                netns.display(),
            ));
        }
    }
    let routes = pod
        .routes(container.index)
        .await
        .map_err(nl("reading the container routes"))?;
    for route in &prev.routes {
        let Some(dst) = route.dst_v4() else { continue };
        if !routes.iter().any(|r| r.dst == dst.trunc()) {
            return Err(CniError::plugin(
                format!("route {dst} is missing"),
                netns.display(),
            ));
        }
    }
    for iface in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name != bridge.name)
    {
        let link = deps
            .netlink
            .link_by_name(&iface.name)
            .await
            .map_err(nl("looking up the host veth"))?
            .ok_or_else(|| CniError::plugin("host veth is missing", iface.name.clone()))?;
        if link.master != Some(bridge.index) {
            return Err(CniError::plugin(
                format!("{:?} is not a port of {:?}", iface.name, bridge.name),
                "",
            ));
        }
    }
    Ok(())
}

pub async fn run(deps: &Deps, ctx: &Context) -> Result<Option<Value>, CniError> {
    let conf: BridgeConf = crate::types::decode(&ctx.stdin)?;
    let version = conf.common.cni_version.clone();
    match ctx.command {
        Command::Add => {
            conf.check()?;
            Ok(Some(add(deps, ctx, &conf).await?.to_json(&version)))
        }
        Command::Del => del(deps, ctx, &conf).await.map(|()| None),
        Command::Check => {
            conf.check()?;
            check(deps, ctx, &conf).await.map(|()| None)
        }
        Command::Gc => deps
            .delegate
            .invoke(conf.ipam_type(), Command::Gc, &ctx.stdin, ctx)
            .map(|_| None),
        Command::Status => deps
            .delegate
            .invoke(conf.ipam_type(), Command::Status, &ctx.stdin, ctx)
            .map(|_| None),
        Command::Version => Ok(None),
    }
}
