//! Netlink (links, addresses, routes, neighbours, FDB) behind the `Netlink` trait: `RtNetlink`
//! speaks rtnetlink to the kernel of the network namespace it was opened in, `FakeNetlink` keeps
//! the same state in memory for unit tests that run without root.
//!
//! The calls are the ones a flannel-style VXLAN overlay needs (a vxlan link, its address, FDB
//! entries (`bridge fdb append ... self permanent`), permanent neighbour entries and onlink routes)
//! and the ones the built-in CNI plugins need (a bridge, veth pairs whose peer is created in a
//! pod's network namespace, bridge ports with hairpin, links moved between namespaces, and a
//! handle on another namespace by its path). IPv4 only, like the cluster network.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// A netlink call that failed: which call, on what, and why.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The kernel refused the request (`source` carries the errno).
    #[error("netlink {call} {target}: {source}")]
    Kernel {
        call: &'static str,
        target: String,
        source: std::io::Error,
    },
    /// The conversation failed (socket gone, an answer that cannot be read).
    #[error("netlink {call} {target}: {message}")]
    Protocol {
        call: &'static str,
        target: String,
        message: String,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The thing asked for does not exist (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL))
    }

    /// The thing to create exists already (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(EEXIST)
    }

    fn kernel(call: &'static str, target: impl fmt::Display, errno: i32) -> NetlinkError {
        NetlinkError::Kernel {
            call,
            target: target.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    fn from_rtnetlink(call: &'static str, target: impl fmt::Display, e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(message) => match message.code {
                Some(code) => NetlinkError::kernel(call, target, -code.get()),
                None => NetlinkError::Protocol {
                    call,
                    target: target.to_string(),
                    message: "an error message without an error code".to_string(),
                },
            },
            other => NetlinkError::Protocol {
                call,
                target: target.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// An IPv4 network or interface address with its prefix length (`10.42.1.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// A CIDR string that is not `a.b.c.d/n` with n <= 32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR (a.b.c.d/n)")]
pub struct Ipv4NetParseError(pub String);

impl Ipv4Net {
    /// `addr/prefix_len`; `None` when `prefix_len` > 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Net> {
        (prefix_len <= 32).then_some(Ipv4Net { addr, prefix_len })
    }

    /// A single address (`/32`).
    pub fn host(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net {
            addr,
            prefix_len: 32,
        }
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The network address (host bits cleared): `10.42.1.0` for `10.42.1.7/24`.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// This network with its host bits cleared.
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net {
            addr: self.network(),
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether `other` lies entirely in this network.
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = Ipv4NetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Ipv4NetParseError(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, len).ok_or_else(bad)
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC string that is not six `:`-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = s.trim().split(':');
        for byte in bytes.iter_mut() {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(MacParseError(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(bytes))
    }
}

impl MacAddr {
    fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

/// A vxlan link to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// Source address of the encapsulated packets (the node's underlay IP).
    pub local: Ipv4Addr,
    /// UDP destination port (8472 for flannel's vxlan).
    pub port: u16,
    /// Whether the device learns FDB entries from received packets (off for the overlay).
    pub learning: bool,
    pub mtu: u32,
    /// The underlay device the tunnel sends through (`dev`), if pinned.
    pub underlay_index: Option<u32>,
}

/// The vxlan settings of an existing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    pub underlay_index: Option<u32>,
}

/// A network link as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The hardware address, when the link has an Ethernet one.
    pub mac: Option<MacAddr>,
    pub up: bool,
    /// The link kind (`vxlan`, `bridge`, `veth`, ...); `None` for plain devices.
    pub kind: Option<String>,
    /// Set for vxlan links.
    pub vxlan: Option<VxlanInfo>,
    /// The index of the bridge (or bond) this link is a port of.
    pub master: Option<u32>,
}

/// A veth pair to create: `name` here, `peer_name` in the namespace at `peer_netns` (here when
/// `None`), both with `mtu` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    pub name: String,
    pub peer_name: String,
    pub mtu: Option<u32>,
    pub peer_netns: Option<PathBuf>,
}

/// A forwarding-database entry on a vxlan link: frames for `mac` go to the VTEP at `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: Ipv4Addr,
}

/// A permanent neighbour (ARP) entry: `ip` resolves to `mac` on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A main-table IPv4 route: `dst` via `gateway` out of link `link_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteEntry {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub link_index: u32,
    /// The gateway is reachable on the link without a covering subnet (`onlink`).
    pub onlink: bool,
}

/// The netlink calls the node side makes. Everything acts on the network namespace the
/// implementation was opened in.
#[async_trait::async_trait]
pub trait Netlink: Send + Sync + 'static {
    /// The link called `name`, `None` when there is none.
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError>;
    /// The link with index `index`, `None` when there is none.
    async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError>;
    /// The link holding the address `ip`, `None` when no link has it.
    async fn link_with_address(&self, ip: IpAddr) -> Result<Option<Link>, NetlinkError>;
    /// Creates a vxlan link (down); fails with EEXIST if the name is taken.
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<Link, NetlinkError>;
    /// Deletes a link; everything on it (addresses, routes, FDB, neighbours) goes with it.
    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError>;
    /// Sets a link administratively up.
    async fn set_link_up(&self, index: u32) -> Result<(), NetlinkError>;
    /// Sets a link's MTU.
    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError>;
    /// The IPv4 addresses on a link.
    async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError>;
    /// Adds an IPv4 address to a link; an address already there is not an error.
    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError>;
    /// Removes an IPv4 address from a link; an address not there is not an error.
    async fn remove_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError>;
    /// The permanent FDB entries with a remote IPv4 destination on a link.
    async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError>;
    /// Appends an FDB entry (`bridge fdb append MAC dev LINK dst IP self permanent`); an entry
    /// already there is not an error.
    async fn add_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError>;
    /// Removes one FDB entry; an entry not there is not an error.
    async fn remove_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError>;
    /// The permanent IPv4 neighbour entries on a link.
    async fn neighbours(&self, index: u32) -> Result<Vec<NeighbourEntry>, NetlinkError>;
    /// Sets a permanent neighbour entry, replacing one for the same IP.
    async fn set_neighbour(&self, index: u32, entry: NeighbourEntry) -> Result<(), NetlinkError>;
    /// Removes a neighbour entry; an entry not there is not an error.
    async fn remove_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError>;
    /// The main-table IPv4 routes out of a link.
    async fn routes(&self, index: u32) -> Result<Vec<RouteEntry>, NetlinkError>;
    /// Sets a route, replacing one for the same destination.
    async fn set_route(&self, route: RouteEntry) -> Result<(), NetlinkError>;
    /// Removes a route; a route not there is not an error.
    async fn remove_route(&self, route: RouteEntry) -> Result<(), NetlinkError>;
    /// Creates a bridge (up); fails with EEXIST if the name is taken.
    async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link, NetlinkError>;
    /// Creates a veth pair (both ends down); returns the end created here. Fails with EEXIST if
    /// either name is taken in its namespace, ENOENT if the peer's namespace does not exist.
    async fn create_veth(&self, spec: &VethSpec) -> Result<Link, NetlinkError>;
    /// Sets a link administratively down.
    async fn set_link_down(&self, index: u32) -> Result<(), NetlinkError>;
    /// Makes a link a port of the bridge `master` (`None`: of no bridge).
    async fn set_link_master(&self, index: u32, master: Option<u32>) -> Result<(), NetlinkError>;
    /// Sets hairpin mode on a bridge port (frames may leave by the port they came in on).
    async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError>;
    /// Renames a link (it must be down).
    async fn rename_link(&self, index: u32, name: &str) -> Result<(), NetlinkError>;
    /// Moves a link into the network namespace at `netns` (it loses its addresses and routes).
    async fn move_link_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError>;
    /// A handle on the network namespace at `netns` (e.g. `/var/run/netns/NAME`); fails with
    /// ENOENT (`is_not_found`) when there is no such namespace.
    async fn in_netns(&self, netns: &Path) -> Result<Arc<dyn Netlink>, NetlinkError>;
}

/// The real kernel over rtnetlink.
#[derive(Debug, Clone)]
pub struct RtNetlink {
    handle: Handle,
    /// The kernel serves one dump at a time per netlink socket and answers EBUSY to a dump
    /// started while another runs, so the dumps of all clones of this handle take turns.
    dump_turn: Arc<tokio::sync::Mutex<()>>,
}

impl RtNetlink {
    /// Opens a netlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub fn connect() -> Result<RtNetlink, NetlinkError> {
        let (connection, handle, _messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(RtNetlink::with_handle(handle))
    }

    /// Opens a netlink socket in the network namespace at `netns_path` (e.g.
    /// `/var/run/netns/NAME`) without moving the caller: a short-lived thread enters the
    /// namespace and creates the socket, which stays bound to that namespace; the connection
    /// task runs on the current tokio runtime.
    pub fn connect_in_netns(netns_path: &std::path::Path) -> Result<RtNetlink, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        let path = netns_path.to_path_buf();
        let opened = std::thread::spawn(move || -> Result<_, NetlinkError> {
            let _context = runtime.enter();
            let file = std::fs::File::open(&path).map_err(|e| NetlinkError::Kernel {
                call: "open netns",
                target: path.display().to_string(),
                source: e,
            })?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetlinkError::kernel("setns", path.display(), e as i32))?;
            let (connection, handle, _messages) =
                rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
            Ok((connection, handle))
        })
        .join()
        .map_err(|_| NetlinkError::Protocol {
            call: "open netns",
            target: netns_path.display().to_string(),
            message: "the namespace thread panicked".into(),
        })?;
        let (connection, handle) = opened?;
        tokio::spawn(connection);
        Ok(RtNetlink::with_handle(handle))
    }

    fn with_handle(handle: Handle) -> RtNetlink {
        RtNetlink {
            handle,
            dump_turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Runs one dump (or get) request to its end while no other request of this socket dumps.
    async fn dump<T, Fut>(&self, request: impl FnOnce() -> Fut) -> Result<T, rtnetlink::Error>
    where
        Fut: std::future::Future<Output = Result<T, rtnetlink::Error>>,
    {
        let _turn = self.dump_turn.lock().await;
        request().await
    }

    /// The kernel's address messages of the link `index` (filtered in the kernel and again here).
    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, NetlinkError> {
        let messages: Vec<AddressMessage> = self
            .dump(|| {
                self.handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect()
            })
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("list addresses", format!("index {index}"), e)
            })?;
        Ok(messages
            .into_iter()
            .filter(|m| m.header.index == index)
            .collect())
    }

    async fn links(
        &self,
        request: rtnetlink::LinkGetRequest,
        target: &str,
    ) -> Result<Option<Link>, NetlinkError> {
        let first = self
            .dump(|| request.execute().try_collect::<Vec<LinkMessage>>())
            .await;
        match first {
            Ok(messages) => Ok(messages.first().map(parse_link)),
            Err(e) => {
                let e = NetlinkError::from_rtnetlink("get link", target, e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn ack(
        &self,
        call: &'static str,
        target: String,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut answers = handle
            .request(request)
            .map_err(|e| NetlinkError::from_rtnetlink(call, &target, e))?;
        while let Some(answer) = futures::StreamExt::next(&mut answers).await {
            if let NetlinkPayload::Error(e) = answer.payload {
                if let Some(code) = e.code {
                    return Err(NetlinkError::kernel(call, &target, -code.get()));
                }
            }
        }
        Ok(())
    }

    fn fdb_message(index: u32, entry: FdbEntry) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                entry.dst,
            )));
        message
    }

    fn route_message(route: RouteEntry) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len)
            .output_interface(route.link_index);
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        } else {
            builder = builder.scope(RouteScope::Link);
        }
        if route.onlink {
            builder = builder.onlink();
        }
        builder.build()
    }
}

fn parse_link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: message.header.flags.contains(LinkFlags::Up),
        kind: None,
        vxlan: None,
        master: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Controller(index) if *index != 0 => link.master = Some(*index),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            let mut vxlan = VxlanInfo {
                                vni: 0,
                                local: None,
                                port: 0,
                                learning: false,
                                underlay_index: None,
                            };
                            for item in data {
                                match item {
                                    InfoVxlan::Id(vni) => vxlan.vni = *vni,
                                    InfoVxlan::Local(ip) => vxlan.local = Some(*ip),
                                    InfoVxlan::Port(port) => vxlan.port = *port,
                                    InfoVxlan::Learning(on) => vxlan.learning = *on,
                                    InfoVxlan::Link(index) if *index != 0 => {
                                        vxlan.underlay_index = Some(*index)
                                    }
                                    _ => {}
                                }
                            }
                            link.vxlan = Some(vxlan);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.kind.as_deref() != Some("vxlan") {
        link.vxlan = None;
    }
    link
}

fn neighbour_ip(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // AF_BRIDGE (FDB) messages carry the remote as raw bytes: the parser keys on the family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn neighbour_mac(message: &NeighbourMessage) -> Option<MacAddr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

fn address_net(message: &AddressMessage) -> Option<Ipv4Net> {
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point).
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    Ipv4Net::new(local.or(address)?, message.header.prefix_len)
}

#[async_trait::async_trait]
impl Netlink for RtNetlink {
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.links(self.handle.link().get().match_name(name), name)
            .await
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        self.links(
            self.handle.link().get().match_index(index),
            &format!("index {index}"),
        )
        .await
    }

    async fn link_with_address(&self, ip: IpAddr) -> Result<Option<Link>, NetlinkError> {
        let addresses: Vec<AddressMessage> = self
            .dump(|| self.handle.address().get().execute().try_collect())
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("list addresses", ip, e))?;
        let index = addresses.iter().find_map(|message| {
            message
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(local) | AddressAttribute::Address(local) if *local == ip))
                .then_some(message.header.index)
        });
        match index {
            Some(index) => self.link_by_index(index).await,
            None => Ok(None),
        }
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<Link, NetlinkError> {
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .learning(spec.learning)
            .mtu(spec.mtu);
        if let Some(index) = spec.underlay_index {
            builder = builder.dev(index);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("create vxlan", &spec.name, e))?;
        self.link_by_name(&spec.name)
            .await?
            .ok_or_else(|| NetlinkError::kernel("get link", &spec.name, ENODEV))
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("delete link", format!("index {index}"), e))
    }

    async fn set_link_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("set link up", format!("index {index}"), e))
    }

    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("set link mtu", format!("index {index} mtu {mtu}"), e)
            })
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let messages = self.address_messages(index).await?;
        Ok(messages.iter().filter_map(address_net).collect())
    }

    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError> {
        let result = self
            .handle
            .address()
            .add(index, IpAddr::V4(address.addr), address.prefix_len)
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink(
                    "add address",
                    format!("{address} on index {index}"),
                    e,
                )
            });
        match result {
            Err(e) if e.is_exists() => Ok(()),
            other => other,
        }
    }

    async fn remove_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError> {
        let messages = self.address_messages(index).await?;
        for message in messages {
            if address_net(&message) == Some(address) {
                let result = self
                    .handle
                    .address()
                    .del(message)
                    .execute()
                    .await
                    .map_err(|e| {
                        NetlinkError::from_rtnetlink(
                            "remove address",
                            format!("{address} on index {index}"),
                            e,
                        )
                    });
                match result {
                    Err(e) if e.is_not_found() => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }

    async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let messages: Vec<NeighbourMessage> = self
            .dump(|| {
                self.handle
                    .neighbours()
                    .get()
                    .set_address_family(AddressFamily::Bridge)
                    .execute()
                    .try_collect()
            })
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("list fdb", format!("index {index}"), e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                Some(FdbEntry {
                    mac: neighbour_mac(m)?,
                    dst: neighbour_ip(m)?,
                })
            })
            .collect())
    }

    async fn add_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        // NLM_F_APPEND: a MAC may have several remotes, and appending an existing one is a no-op.
        self.ack(
            "append fdb",
            format!("{} dst {} on index {index}", entry.mac, entry.dst),
            RouteNetlinkMessage::NewNeighbour(Self::fdb_message(index, entry)),
            NLM_F_CREATE | NLM_F_APPEND,
        )
        .await
    }

    async fn remove_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        let result = self
            .ack(
                "remove fdb",
                format!("{} dst {} on index {index}", entry.mac, entry.dst),
                RouteNetlinkMessage::DelNeighbour(Self::fdb_message(index, entry)),
                0,
            )
            .await;
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<NeighbourEntry>, NetlinkError> {
        let messages: Vec<NeighbourMessage> = self
            .dump(|| {
                self.handle
                    .neighbours()
                    .get()
                    .set_address_family(AddressFamily::Inet)
                    .execute()
                    .try_collect()
            })
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("list neighbours", format!("index {index}"), e)
            })?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                Some(NeighbourEntry {
                    ip: neighbour_ip(m)?,
                    mac: neighbour_mac(m)?,
                })
            })
            .collect())
    }

    async fn set_neighbour(&self, index: u32, entry: NeighbourEntry) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(entry.ip))
            .link_layer_address(&entry.mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink(
                    "set neighbour",
                    format!("{} lladdr {} on index {index}", entry.ip, entry.mac),
                    e,
                )
            })
    }

    async fn remove_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = index;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let result = self
            .handle
            .neighbours()
            .del(message)
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink(
                    "remove neighbour",
                    format!("{ip} on index {index}"),
                    e,
                )
            });
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    async fn routes(&self, index: u32) -> Result<Vec<RouteEntry>, NetlinkError> {
        let messages: Vec<RouteMessage> = self
            .dump(|| {
                self.handle
                    .route()
                    .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                    .execute()
                    .try_collect()
            })
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("list routes", format!("index {index}"), e)
            })?;
        let mut routes = Vec::new();
        for message in &messages {
            let mut oif = None;
            let mut table = u32::from(message.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    _ => {}
                }
            }
            if oif != Some(index) || table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            let Some(dst) = Ipv4Net::new(dst, message.header.destination_prefix_length) else {
                continue;
            };
            routes.push(RouteEntry {
                dst,
                gateway,
                link_index: index,
                onlink: message.header.flags.contains(RouteFlags::Onlink),
            });
        }
        Ok(routes)
    }

    async fn set_route(&self, route: RouteEntry) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(Self::route_message(route))
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("set route", route_target(&route), e))
    }

    async fn remove_route(&self, route: RouteEntry) -> Result<(), NetlinkError> {
        let result = self
            .handle
            .route()
            .del(Self::route_message(route))
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("remove route", route_target(&route), e));
        match result {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
    async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link, NetlinkError> {
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("create bridge", name, e))?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::kernel("get link", name, ENODEV))
    }

    async fn create_veth(&self, spec: &VethSpec) -> Result<Link, NetlinkError> {
        let target = format!("{} peer {}", spec.name, spec.peer_name);
        // the peer is created straight in its namespace (IFLA_NET_NS_FD in the peer's message),
        // so its name never meets the names of this namespace
        let netns = match &spec.peer_netns {
            Some(path) => Some(open_netns(path)?),
            None => None,
        };
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.clone());
        let mut builder = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.name.clone());
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
            builder = builder.mtu(mtu);
        }
        if let Some(file) = &netns {
            peer = peer.setns_by_fd(file.as_raw_fd());
        }
        let message = builder
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        let result = self.handle.link().add(message).execute().await;
        drop(netns);
        result.map_err(|e| NetlinkError::from_rtnetlink("create veth", &target, e))?;
        self.link_by_name(&spec.name)
            .await?
            .ok_or_else(|| NetlinkError::kernel("get link", &spec.name, ENODEV))
    }

    async fn set_link_down(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink("set link down", format!("index {index}"), e))
    }

    async fn set_link_master(&self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        let builder = LinkUnspec::new_with_index(index);
        let builder = match master {
            Some(master) => builder.controller(master),
            None => builder.nocontroller(),
        };
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink(
                    "set link master",
                    format!("index {index} master {master:?}"),
                    e,
                )
            })
    }

    async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        // bridge port settings travel in RTM_NEWLINK (RTM_SETLINK ignores IFLA_INFO_SLAVE_DATA)
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(on).build())
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("set hairpin", format!("index {index} {on}"), e)
            })
    }

    async fn rename_link(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(name.to_string())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                NetlinkError::from_rtnetlink("rename link", format!("index {index} to {name}"), e)
            })
    }

    async fn move_link_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError> {
        let file = open_netns(netns)?;
        let result = self
            .handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await;
        drop(file);
        result.map_err(|e| {
            NetlinkError::from_rtnetlink(
                "move link",
                format!("index {index} to {}", netns.display()),
                e,
            )
        })
    }

    async fn in_netns(&self, netns: &Path) -> Result<Arc<dyn Netlink>, NetlinkError> {
        Ok(Arc::new(RtNetlink::connect_in_netns(netns)?))
    }
}

/// Opens a network namespace file (kept open while its fd is in a request).
fn open_netns(path: &Path) -> Result<std::fs::File, NetlinkError> {
    std::fs::File::open(path).map_err(|e| NetlinkError::Kernel {
        call: "open netns",
        target: path.display().to_string(),
        source: e,
    })
}

fn route_target(route: &RouteEntry) -> String {
    match route.gateway {
        Some(gateway) => format!("{} via {gateway} dev index {}", route.dst, route.link_index),
        None => format!("{} dev index {}", route.dst, route.link_index),
    }
}

/// One link of a `FakeNetlink`, with everything attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub link: Link,
    pub addresses: BTreeSet<Ipv4Net>,
    pub fdb: BTreeSet<FdbEntry>,
    /// IP -> MAC.
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Hairpin mode of a bridge port.
    pub hairpin: bool,
    /// The other end of a veth: its namespace (`""` for the first one) and index.
    pub peer: Option<(PathBuf, u32)>,
}

#[derive(Debug, Default)]
struct FakeState {
    links: BTreeMap<u32, FakeLink>,
    /// Destination -> route (the main table keys routes by destination).
    routes: BTreeMap<Ipv4Net, RouteEntry>,
    next_index: u32,
    /// Calls that change something, in order (`"add_fdb mini.1 ..."`), for tests.
    calls: Vec<String>,
}

impl FakeState {
    fn new_index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index + 1
    }

    fn has_name(&self, name: &str) -> bool {
        self.links.values().any(|l| l.link.name == name)
    }
}

/// Every namespace of one fake machine, by path (`""` is the namespace `FakeNetlink::new` made).
#[derive(Debug, Default)]
struct FakeWorld {
    namespaces: BTreeMap<PathBuf, FakeState>,
}

/// An in-memory kernel for unit tests: links, addresses, FDB, neighbours and routes behave
/// like the real ones for the calls above (deleting a link drops what hangs on it, deleting
/// one end of a veth deletes the other). `add_netns` makes more namespaces of the same fake
/// machine, reachable with `in_netns` by their path.
#[derive(Debug)]
pub struct FakeNetlink {
    world: Arc<Mutex<FakeWorld>>,
    netns: PathBuf,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        FakeNetlink::new()
    }
}

/// The state of one namespace inside the locked world.
struct StateGuard<'a> {
    world: std::sync::MutexGuard<'a, FakeWorld>,
    netns: &'a Path,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = FakeState;
    fn deref(&self) -> &FakeState {
        &self.world.namespaces[self.netns]
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut FakeState {
        self.world
            .namespaces
            .get_mut(self.netns)
            .expect("the fake namespace exists while locked")
    }
}

impl FakeNetlink {
    pub fn new() -> FakeNetlink {
        let world = FakeWorld {
            namespaces: BTreeMap::from([(PathBuf::new(), FakeState::default())]),
        };
        FakeNetlink {
            world: Arc::new(Mutex::new(world)),
            netns: PathBuf::new(),
        }
    }

    fn lock_world(&self) -> std::sync::MutexGuard<'_, FakeWorld> {
        // A test that panicked while holding the lock already failed; keep the state readable.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> StateGuard<'_> {
        let mut world = self.lock_world();
        world.namespaces.entry(self.netns.clone()).or_default();
        StateGuard {
            world,
            netns: &self.netns,
        }
    }

    /// Creates a namespace of this fake machine at `path` (with only `lo`, down) and returns a
    /// handle on it; an existing one is returned as it is.
    pub fn add_netns(&self, path: impl Into<PathBuf>) -> FakeNetlink {
        let path = path.into();
        let mut world = self.lock_world();
        world.namespaces.entry(path.clone()).or_insert_with(|| {
            let mut state = FakeState::default();
            state.links.insert(
                1,
                FakeLink {
                    link: Link {
                        index: 1,
                        name: "lo".into(),
                        mtu: 65536,
                        mac: Some(MacAddr::default()),
                        up: false,
                        kind: None,
                        vxlan: None,
                        master: None,
                    },
                    addresses: BTreeSet::from([Ipv4Net {
                        addr: Ipv4Addr::LOCALHOST,
                        prefix_len: 8,
                    }]),
                    fdb: BTreeSet::new(),
                    neighbours: BTreeMap::new(),
                    hairpin: false,
                    peer: None,
                },
            );
            state
        });
        FakeNetlink {
            world: self.world.clone(),
            netns: path,
        }
    }

    /// Removes the namespace at `path` and every link in it (veth peers elsewhere go too).
    pub fn remove_netns(&self, path: &Path) {
        let mut world = self.lock_world();
        if let Some(state) = world.namespaces.remove(path) {
            for link in state.links.values() {
                if let Some((peer_ns, peer_index)) = &link.peer {
                    remove_fake_link(&mut world, peer_ns, *peer_index);
                }
            }
        }
    }

    /// Adds a plain (ethernet-like) link, up, with `addresses`; returns its index.
    pub fn add_link(&self, name: &str, mtu: u32, addresses: &[Ipv4Net]) -> u32 {
        let mut state = self.lock();
        let index = state.new_index();
        state.links.insert(
            index,
            FakeLink {
                link: Link {
                    index,
                    name: name.to_string(),
                    mtu,
                    mac: Some(fake_mac(index)),
                    up: true,
                    kind: None,
                    vxlan: None,
                    master: None,
                },
                addresses: addresses.iter().copied().collect(),
                fdb: BTreeSet::new(),
                neighbours: BTreeMap::new(),
                hairpin: false,
                peer: None,
            },
        );
        index
    }

    /// The link called `name` with its attachments.
    pub fn link(&self, name: &str) -> Option<FakeLink> {
        self.lock()
            .links
            .values()
            .find(|l| l.link.name == name)
            .cloned()
    }

    /// All links of this namespace.
    pub fn all_links(&self) -> Vec<FakeLink> {
        self.lock().links.values().cloned().collect()
    }

    /// All routes, as the main table holds them.
    pub fn all_routes(&self) -> Vec<RouteEntry> {
        self.lock().routes.values().copied().collect()
    }

    /// The changing calls made so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn with_link<T>(
        &self,
        call: &'static str,
        index: u32,
        f: impl FnOnce(&mut FakeLink) -> T,
    ) -> Result<T, NetlinkError> {
        let mut state = self.lock();
        let link = state
            .links
            .get_mut(&index)
            .ok_or_else(|| NetlinkError::kernel(call, format!("index {index}"), ENODEV))?;
        let name = link.link.name.clone();
        let value = f(link);
        state.calls.push(format!("{call} {name}"));
        Ok(value)
    }
}

/// Removes one link of one namespace with its routes; `None` if it was not there.
fn remove_fake_link(world: &mut FakeWorld, netns: &Path, index: u32) -> Option<FakeLink> {
    let state = world.namespaces.get_mut(netns)?;
    let link = state.links.remove(&index)?;
    state.routes.retain(|_, r| r.link_index != index);
    state.calls.push(format!("delete_link {}", link.link.name));
    Some(link)
}

fn fake_mac(index: u32) -> MacAddr {
    let [a, b, c, d] = index.to_be_bytes();
    MacAddr([0x02, 0xfa, a, b, c, d])
}

fn fake_link(index: u32, name: &str, mtu: u32, kind: &str) -> FakeLink {
    FakeLink {
        link: Link {
            index,
            name: name.to_string(),
            mtu,
            mac: Some(fake_mac(index)),
            up: false,
            kind: Some(kind.to_string()),
            vxlan: None,
            master: None,
        },
        addresses: BTreeSet::new(),
        fdb: BTreeSet::new(),
        neighbours: BTreeMap::new(),
        hairpin: false,
        peer: None,
    }
}

#[async_trait::async_trait]
impl Netlink for FakeNetlink {
    async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.link(name).map(|l| l.link))
    }

    async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        Ok(self.lock().links.get(&index).map(|l| l.link.clone()))
    }

    async fn link_with_address(&self, ip: IpAddr) -> Result<Option<Link>, NetlinkError> {
        Ok(self
            .lock()
            .links
            .values()
            .find(|l| l.addresses.iter().any(|a| IpAddr::V4(a.addr) == ip))
            .map(|l| l.link.clone()))
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<Link, NetlinkError> {
        let mut state = self.lock();
        if state.has_name(&spec.name) {
            return Err(NetlinkError::kernel("create vxlan", &spec.name, EEXIST));
        }
        if let Some(underlay) = spec.underlay_index {
            if !state.links.contains_key(&underlay) {
                return Err(NetlinkError::kernel("create vxlan", &spec.name, ENODEV));
            }
        }
        let index = state.new_index();
        let mut fake = fake_link(index, &spec.name, spec.mtu, "vxlan");
        fake.link.vxlan = Some(VxlanInfo {
            vni: spec.vni,
            local: Some(spec.local),
            port: spec.port,
            learning: spec.learning,
            underlay_index: spec.underlay_index,
        });
        let link = fake.link.clone();
        state.links.insert(index, fake);
        state.calls.push(format!("create_vxlan {}", spec.name));
        Ok(link)
    }

    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let mut world = self.lock_world();
        let link = remove_fake_link(&mut world, &self.netns, index)
            .ok_or_else(|| NetlinkError::kernel("delete link", format!("index {index}"), ENODEV))?;
        if let Some((peer_ns, peer_index)) = link.peer {
            remove_fake_link(&mut world, &peer_ns, peer_index);
        }
        Ok(())
    }

    async fn set_link_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.with_link("set_link_up", index, |l| l.link.up = true)
    }

    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.with_link("set_link_mtu", index, |l| l.link.mtu = mtu)
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Ipv4Net>, NetlinkError> {
        let state = self.lock();
        let link = state.links.get(&index).ok_or_else(|| {
            NetlinkError::kernel("list addresses", format!("index {index}"), ENODEV)
        })?;
        Ok(link.addresses.iter().copied().collect())
    }

    async fn add_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError> {
        self.with_link("add_address", index, |l| {
            l.addresses.insert(address);
        })
    }

    async fn remove_address(&self, index: u32, address: Ipv4Net) -> Result<(), NetlinkError> {
        self.with_link("remove_address", index, |l| {
            l.addresses.remove(&address);
        })
    }

    async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
        let state = self.lock();
        let link = state
            .links
            .get(&index)
            .ok_or_else(|| NetlinkError::kernel("list fdb", format!("index {index}"), ENODEV))?;
        Ok(link.fdb.iter().copied().collect())
    }

    async fn add_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        self.with_link("add_fdb", index, |l| {
            l.fdb.insert(entry);
        })
    }

    async fn remove_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        self.with_link("remove_fdb", index, |l| {
            l.fdb.remove(&entry);
        })
    }

    async fn neighbours(&self, index: u32) -> Result<Vec<NeighbourEntry>, NetlinkError> {
        let state = self.lock();
        let link = state.links.get(&index).ok_or_else(|| {
            NetlinkError::kernel("list neighbours", format!("index {index}"), ENODEV)
        })?;
        Ok(link
            .neighbours
            .iter()
            .map(|(ip, mac)| NeighbourEntry { ip: *ip, mac: *mac })
            .collect())
    }

    async fn set_neighbour(&self, index: u32, entry: NeighbourEntry) -> Result<(), NetlinkError> {
        self.with_link("set_neighbour", index, |l| {
            l.neighbours.insert(entry.ip, entry.mac);
        })
    }

    async fn remove_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        self.with_link("remove_neighbour", index, |l| {
            l.neighbours.remove(&ip);
        })
    }

    async fn routes(&self, index: u32) -> Result<Vec<RouteEntry>, NetlinkError> {
        Ok(self
            .lock()
            .routes
            .values()
            .filter(|r| r.link_index == index)
            .copied()
            .collect())
    }

    async fn set_route(&self, route: RouteEntry) -> Result<(), NetlinkError> {
        let mut state = self.lock();
        if !state.links.contains_key(&route.link_index) {
            return Err(NetlinkError::kernel(
                "set route",
                route_target(&route),
                ENODEV,
            ));
        }
        state.routes.insert(route.dst, route);
        state.calls.push(format!("set_route {}", route.dst));
        Ok(())
    }

    async fn remove_route(&self, route: RouteEntry) -> Result<(), NetlinkError> {
        let mut state = self.lock();
        if state.routes.get(&route.dst) == Some(&route) {
            state.routes.remove(&route.dst);
        }
        state.calls.push(format!("remove_route {}", route.dst));
        Ok(())
    }

    async fn create_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link, NetlinkError> {
        let mut state = self.lock();
        if state.has_name(name) {
            return Err(NetlinkError::kernel("create bridge", name, EEXIST));
        }
        let index = state.new_index();
        let mut fake = fake_link(index, name, mtu.unwrap_or(1500), "bridge");
        fake.link.up = true;
        let link = fake.link.clone();
        state.links.insert(index, fake);
        state.calls.push(format!("create_bridge {name}"));
        Ok(link)
    }

    async fn create_veth(&self, spec: &VethSpec) -> Result<Link, NetlinkError> {
        let target = format!("{} peer {}", spec.name, spec.peer_name);
        let mut world = self.lock_world();
        let peer_ns = spec
            .peer_netns
            .clone()
            .unwrap_or_else(|| self.netns.clone());
        let Some(peer_state) = world.namespaces.get(&peer_ns) else {
            return Err(NetlinkError::kernel("create veth", &target, ENOENT));
        };
        if peer_state.has_name(&spec.peer_name)
            || (peer_ns == self.netns && spec.peer_name == spec.name)
        {
            return Err(NetlinkError::kernel("create veth", &target, EEXIST));
        }
        let state = world.namespaces.entry(self.netns.clone()).or_default();
        if state.has_name(&spec.name) {
            return Err(NetlinkError::kernel("create veth", &target, EEXIST));
        }
        let mtu = spec.mtu.unwrap_or(1500);
        let index = state.new_index();
        let mut local = fake_link(index, &spec.name, mtu, "veth");
        let link = local.link.clone();
        let peer_state = world.namespaces.get_mut(&peer_ns).expect("checked above");
        let peer_index = peer_state.new_index();
        let mut peer = fake_link(peer_index, &spec.peer_name, mtu, "veth");
        // two namespaces may hand out the same index: make the MACs differ anyway
        peer.link.mac = Some(MacAddr([
            0x02,
            0xfb,
            0,
            0,
            (peer_index >> 8) as u8,
            peer_index as u8,
        ]));
        peer.peer = Some((self.netns.clone(), index));
        peer_state.links.insert(peer_index, peer);
        local.peer = Some((peer_ns, peer_index));
        let state = world
            .namespaces
            .get_mut(&self.netns)
            .expect("created above");
        state.links.insert(index, local);
        state.calls.push(format!("create_veth {target}"));
        Ok(link)
    }

    async fn set_link_down(&self, index: u32) -> Result<(), NetlinkError> {
        self.with_link("set_link_down", index, |l| l.link.up = false)
    }

    async fn set_link_master(&self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        if let Some(master) = master {
            let is_bridge = self
                .lock()
                .links
                .get(&master)
                .is_some_and(|l| l.link.kind.as_deref() == Some("bridge"));
            if !is_bridge {
                return Err(NetlinkError::kernel(
                    "set link master",
                    format!("index {index} master {master}"),
                    ENODEV,
                ));
            }
        }
        self.with_link("set_link_master", index, |l| l.link.master = master)
    }

    async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        self.with_link("set_hairpin", index, |l| l.hairpin = on)
    }

    async fn rename_link(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        if self.lock().has_name(name) {
            return Err(NetlinkError::kernel("rename link", name, EEXIST));
        }
        self.with_link("rename_link", index, |l| l.link.name = name.to_string())
    }

    async fn move_link_to_netns(&self, index: u32, netns: &Path) -> Result<(), NetlinkError> {
        let target = format!("index {index} to {}", netns.display());
        let mut world = self.lock_world();
        let Some(dest) = world.namespaces.get(netns) else {
            return Err(NetlinkError::kernel("move link", &target, ENOENT));
        };
        let name = match world
            .namespaces
            .get(&self.netns)
            .and_then(|s| s.links.get(&index))
        {
            Some(link) => link.link.name.clone(),
            None => return Err(NetlinkError::kernel("move link", &target, ENODEV)),
        };
        if dest.has_name(&name) {
            return Err(NetlinkError::kernel("move link", &target, EEXIST));
        }
        let mut link = remove_fake_link(&mut world, &self.netns, index).expect("checked above");
        let dest = world.namespaces.get_mut(netns).expect("checked above");
        let new_index = dest.new_index();
        link.link.index = new_index;
        link.link.up = false;
        link.link.master = None;
        link.addresses.clear();
        let peer = link.peer.clone();
        dest.links.insert(new_index, link);
        dest.calls.push(format!("move_link_in {name}"));
        if let Some((peer_ns, peer_index)) = peer {
            if let Some(peer) = world
                .namespaces
                .get_mut(&peer_ns)
                .and_then(|s| s.links.get_mut(&peer_index))
            {
                peer.peer = Some((netns.to_path_buf(), new_index));
            }
        }
        Ok(())
    }

    async fn in_netns(&self, netns: &Path) -> Result<Arc<dyn Netlink>, NetlinkError> {
        if !self.lock_world().namespaces.contains_key(netns) {
            return Err(NetlinkError::kernel("open netns", netns.display(), ENOENT));
        }
        Ok(Arc::new(FakeNetlink {
            world: self.world.clone(),
            netns: netns.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4net_parse_display_and_network_round_trip() {
        let net: Ipv4Net = "10.42.1.7/24".parse().expect("valid cidr");
        assert_eq!(net.to_string(), "10.42.1.7/24");
        assert_eq!(net.network(), Ipv4Addr::new(10, 42, 1, 0));
        assert_eq!(net.trunc().to_string(), "10.42.1.0/24");
        assert!(net.contains(Ipv4Addr::new(10, 42, 1, 255)));
        assert!(!net.contains(Ipv4Addr::new(10, 42, 2, 0)));
        let cluster: Ipv4Net = "10.42.0.0/16".parse().expect("valid cidr");
        assert!(cluster.contains_net(&net));
        assert!(!net.contains_net(&cluster));
        assert!("10.42.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.42.0.0".parse::<Ipv4Net>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Net>().expect("default").network(),
            Ipv4Addr::UNSPECIFIED
        );
    }

    #[test]
    fn mac_parse_and_display_round_trip_lowercase() {
        let mac: MacAddr = "AA:bb:0c:1:ee:FF".parse().expect("valid mac");
        assert_eq!(mac.to_string(), "aa:bb:0c:01:ee:ff");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:ff:00".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn netlink_error_kernel_errno_classifies_not_found_and_exists() {
        assert!(NetlinkError::kernel("x", "y", ENODEV).is_not_found());
        assert!(NetlinkError::kernel("x", "y", EEXIST).is_exists());
        assert!(!NetlinkError::kernel("x", "y", EEXIST).is_not_found());
    }

    #[tokio::test]
    async fn fake_netlink_delete_link_drops_its_routes_and_entries() {
        let fake = FakeNetlink::new();
        let eth = fake.add_link("eth0", 1500, &["192.168.1.2/24".parse().expect("cidr")]);
        let vxlan = fake
            .create_vxlan(&VxlanSpec {
                name: "v".into(),
                vni: 1,
                local: Ipv4Addr::new(192, 168, 1, 2),
                port: 8472,
                learning: false,
                mtu: 1450,
                underlay_index: Some(eth),
            })
            .await
            .expect("create");
        let route = RouteEntry {
            dst: "10.42.2.0/24".parse().expect("cidr"),
            gateway: Some(Ipv4Addr::new(10, 42, 2, 0)),
            link_index: vxlan.index,
            onlink: true,
        };
        fake.set_route(route).await.expect("route");
        assert_eq!(fake.routes(vxlan.index).await.expect("routes"), vec![route]);
        assert!(fake
            .create_vxlan(&VxlanSpec {
                name: "v".into(),
                vni: 1,
                local: Ipv4Addr::new(192, 168, 1, 2),
                port: 8472,
                learning: false,
                mtu: 1450,
                underlay_index: None,
            })
            .await
            .expect_err("duplicate name")
            .is_exists());
        fake.delete_link(vxlan.index).await.expect("delete");
        assert!(fake.all_routes().is_empty());
        assert_eq!(
            fake.link_with_address("192.168.1.2".parse().expect("ip"))
                .await
                .expect("lookup")
                .map(|l| l.name),
            Some("eth0".to_string())
        );
    }

    #[tokio::test]
    async fn fake_netlink_veth_peer_in_netns_goes_with_its_end() {
        let host = FakeNetlink::new();
        let pod = host.add_netns("/var/run/netns/pod1");
        let bridge = host.create_bridge("br0", Some(1400)).await.expect("bridge");
        let veth = host
            .create_veth(&VethSpec {
                name: "veth1".into(),
                peer_name: "eth0".into(),
                mtu: Some(1400),
                peer_netns: Some("/var/run/netns/pod1".into()),
            })
            .await
            .expect("veth");
        host.set_link_master(veth.index, Some(bridge.index))
            .await
            .expect("master");
        host.set_hairpin(veth.index, true).await.expect("hairpin");
        let fake_veth = host.link("veth1").expect("host end");
        assert_eq!(fake_veth.link.master, Some(bridge.index));
        assert!(fake_veth.hairpin);
        let inside = host
            .in_netns(Path::new("/var/run/netns/pod1"))
            .await
            .expect("netns");
        let eth0 = inside
            .link_by_name("eth0")
            .await
            .expect("get")
            .expect("peer in the pod");
        assert_eq!(eth0.mtu, 1400);
        assert!(host
            .in_netns(Path::new("/var/run/netns/nosuch"))
            .await
            .err()
            .is_some_and(|e| e.is_not_found()));
        inside.delete_link(eth0.index).await.expect("delete");
        assert!(host.link("veth1").is_none());
        assert!(pod.link("lo").is_some());
    }

    #[tokio::test]
    async fn rtnetlink_loopback_is_found_by_name_and_address() {
        let netlink = RtNetlink::connect().expect("netlink socket");
        let lo = netlink
            .link_by_name("lo")
            .await
            .expect("get lo")
            .expect("lo exists");
        assert!(lo.mtu > 0);
        let by_address = netlink
            .link_with_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("lookup");
        assert_eq!(by_address.map(|l| l.index), Some(lo.index));
        assert!(netlink
            .link_by_name("mininosuch0")
            .await
            .expect("lookup")
            .is_none());
        assert!(netlink
            .addresses(lo.index)
            .await
            .expect("addresses")
            .contains(&"127.0.0.1/8".parse().expect("cidr")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rtnetlink_concurrent_dumps_on_one_socket_all_succeed() {
        // the kernel answers EBUSY to a dump started while another runs on the same socket
        let netlink = Arc::new(RtNetlink::connect().expect("netlink socket"));
        let lo = netlink
            .link_by_name("lo")
            .await
            .expect("get lo")
            .expect("lo exists");
        let mut tasks = Vec::new();
        for round in 0..64 {
            let netlink = netlink.clone();
            tasks.push(tokio::spawn(async move {
                match round % 4 {
                    0 => netlink.routes(lo.index).await.map(|_| ()),
                    1 => netlink.addresses(lo.index).await.map(|_| ()),
                    2 => netlink.neighbours(lo.index).await.map(|_| ()),
                    _ => netlink
                        .link_with_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
                        .await
                        .map(|_| ()),
                }
            }));
        }
        for task in tasks {
            task.await.expect("task").expect("dump");
        }
    }
}
