//! `host-local` IPAM: hands out addresses from the ranges of its config and keeps the leases on
//! disk the way the reference plugin does: one file per IP (`<dataDir>/<network>/<ip>`, holding
//! `<container id>\r\n<ifname>`), `last_reserved_ip.<range set>` to go round-robin, and a `lock`
//! file that is flock'ed around every change. An address is reusable once released.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mini_sys::netlink::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use crate::types::{code, decode, CniError, CniResult, Command, Context, IpConfig, Route};

/// Where leases live when the config names no `dataDir` (the reference plugin's default).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";

/// One range of a range set, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RangeConf {
    pub subnet: String,
    #[serde(rename = "rangeStart", default)]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The `ipam` section of the config.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(rename = "dataDir", default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    /// The single-range form (`subnet`, `rangeStart`, ... directly in `ipam`).
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    pub range_end: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(rename = "resolvConf", default)]
    pub resolv_conf: Option<String>,
    /// mini's extension: where the kubelet leaves a pod's pool address (`mini_ippool::pinned`);
    /// a pod with a request there gets exactly that address (as a /32, routed by the node).
    #[serde(rename = "pinnedDir", default)]
    pub pinned_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
struct HostLocalConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    ipam: Option<IpamConf>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    #[serde(default)]
    ifname: String,
}

/// A range after defaults and checks: addresses `start..=end` of `subnet`, `gateway` skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub subnet: Ipv4Net,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    /// Fills in the defaults of the reference plugin (start: network+1, end: broadcast-1,
    /// gateway: network+1) and checks what was given.
    pub fn from_conf(conf: &RangeConf) -> Result<Range, CniError> {
        let subnet: Ipv4Net = conf.subnet.parse().map_err(|_| {
            if conf.subnet.contains(':') {
                CniError::unsupported(format!(
                    "subnet {}: mini's host-local is IPv4 only",
                    conf.subnet
                ))
            } else {
                CniError::invalid_config(format!("subnet {:?} is not a CIDR", conf.subnet))
            }
        })?;
        if subnet.addr != subnet.network() {
            return Err(CniError::invalid_config(format!(
                "network {subnet} has host bits set: for a prefix of length {} the network address is {}",
                subnet.prefix_len,
                subnet.network()
            )));
        }
        if subnet.prefix_len > 30 {
            return Err(CniError::invalid_config(format!(
                "network {subnet} is too small to allocate from"
            )));
        }
        let network = u32::from(subnet.network());
        let broadcast = network | (u32::MAX >> subnet.prefix_len);
        let parse = |what: &str,
                     value: &Option<String>,
                     default: u32|
         -> Result<Ipv4Addr, CniError> {
            match value {
                None => Ok(Ipv4Addr::from(default)),
                Some(text) => {
                    let ip: Ipv4Addr = text.parse().map_err(|_| {
                        CniError::invalid_config(format!("{what} {text:?} is not an IPv4 address"))
                    })?;
                    if !subnet.contains(ip) {
                        return Err(CniError::invalid_config(format!(
                            "{what} {ip} is not in network {subnet}"
                        )));
                    }
                    Ok(ip)
                }
            }
        };
        let start = parse("rangeStart", &conf.range_start, network + 1)?;
        let end = parse("rangeEnd", &conf.range_end, broadcast - 1)?;
        let gateway = parse("gateway", &conf.gateway, network + 1)?;
        if u32::from(start) > u32::from(end) {
            return Err(CniError::invalid_config(format!(
                "rangeStart {start} is after rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(ip))
    }
}

/// A range set: one address is allocated from each set.
pub type RangeSet = Vec<Range>;

/// The range sets of an `ipam` section (`ranges`, or the single-range form).
pub fn range_sets(ipam: &IpamConf) -> Result<Vec<RangeSet>, CniError> {
    let mut confs = ipam.ranges.clone();
    if let Some(subnet) = &ipam.subnet {
        confs.insert(
            0,
            vec![RangeConf {
                subnet: subnet.clone(),
                range_start: ipam.range_start.clone(),
                range_end: ipam.range_end.clone(),
                gateway: ipam.gateway.clone(),
            }],
        );
    }
    if confs.is_empty() {
        return Err(CniError::invalid_config(
            "host-local: no IP ranges specified (set ipam.ranges)",
        ));
    }
    let sets = confs
        .iter()
        .map(|set| {
            if set.is_empty() {
                return Err(CniError::invalid_config("host-local: empty range set"));
            }
            set.iter()
                .map(Range::from_conf)
                .collect::<Result<RangeSet, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<&Range> = sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.contains(b.start) || a.contains(b.end) || b.contains(a.start) {
                return Err(CniError::invalid_config(format!(
                    "host-local: ranges {}-{} and {}-{} overlap",
                    a.start, a.end, b.start, b.end
                )));
            }
        }
    }
    Ok(sets)
}

/// The lease directory of one network, held locked (flock on its `lock` file) while alive.
pub struct Store {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::IO,
        format!("host-local: {what} {}", path.display()),
        e.to_string(),
    )
}

impl Store {
    /// Opens (creating it) `<data_dir>/<network>` and locks it.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, CniError> {
        if network.is_empty() || network.contains('/') || network == "." || network == ".." {
            return Err(CniError::invalid_config(format!(
                "host-local: network name {network:?} cannot name a directory"
            )));
        }
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error("opening", &lock_path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_error("locking", &lock_path, e))?;
        Ok(Store { dir, _lock: lock })
    }

    fn lease_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Takes `ip` for `id`/`ifname`; `false` when it is taken already.
    pub fn reserve(
        &self,
        id: &str,
        ifname: &str,
        ip: Ipv4Addr,
        range_set: usize,
    ) -> Result<bool, CniError> {
        let path = self.lease_path(ip);
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_error("creating", &path, e)),
        };
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if let Err(e) = file.write_all(content.as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(io_error("writing", &path, e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        std::fs::write(&last, ip.to_string()).map_err(|e| io_error("writing", &last, e))?;
        Ok(true)
    }

    /// Takes `ip` for `id`/`ifname` without touching the round-robin state (a pinned pool
    /// address); `false` when another container holds it.
    pub fn reserve_exact(&self, id: &str, ifname: &str, ip: Ipv4Addr) -> Result<bool, CniError> {
        if self.get_by_id(id, ifname)?.contains(&ip) {
            return Ok(true);
        }
        let path = self.lease_path(ip);
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_error("creating", &path, e)),
        };
        let content = format!("{}{LINE_BREAK}{ifname}", id.trim());
        if let Err(e) = file.write_all(content.as_bytes()) {
            let _ = std::fs::remove_file(&path);
            return Err(io_error("writing", &path, e));
        }
        Ok(true)
    }

    /// The address last reserved from range set `range_set`.
    pub fn last_reserved(&self, range_set: usize) -> Option<Ipv4Addr> {
        let path = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Every lease: address and the `(container id, ifname)` it belongs to (ifname empty for
    /// leases written by plugins that stored only the id).
    pub fn leases(&self) -> Result<Vec<(Ipv4Addr, String, String)>, CniError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io_error("reading", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("reading", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Ok(content) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let content = content.trim();
            let (id, ifname) = content
                .split_once(LINE_BREAK)
                .map(|(id, ifname)| (id.trim(), ifname.trim()))
                .unwrap_or((content, ""));
            out.push((ip, id.to_string(), ifname.to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// The addresses leased to `id`/`ifname` (leases holding only the id match too).
    pub fn get_by_id(&self, id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, CniError> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|(_, lid, lif)| lid == id.trim() && (lif == ifname || lif.is_empty()))
            .map(|(ip, _, _)| ip)
            .collect())
    }

    /// Releases one address (missing is fine).
    pub fn release(&self, ip: Ipv4Addr) -> Result<(), CniError> {
        let path = self.lease_path(ip);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing", &path, e)),
        }
    }

    /// Releases what `id`/`ifname` holds; releasing nothing is not an error.
    pub fn release_by_id(&self, id: &str, ifname: &str) -> Result<Vec<Ipv4Addr>, CniError> {
        let ips = self.get_by_id(id, ifname)?;
        for ip in &ips {
            self.release(*ip)?;
        }
        Ok(ips)
    }
}

/// Allocates one address of `set` (index `range_set`) for `id`/`ifname`: round-robin after the
/// last reserved address, skipping the gateways; returns the address with its range.
pub fn allocate(
    store: &Store,
    set: &RangeSet,
    range_set: usize,
    id: &str,
    ifname: &str,
) -> Result<(Ipv4Net, Ipv4Addr), CniError> {
    for held in store.get_by_id(id, ifname)? {
        if set.iter().any(|r| r.contains(held)) {
            return Err(CniError::plugin(
                "host-local: duplicate allocation is not allowed",
                format!("{held} has been allocated to {id}"),
            ));
        }
    }
    // the address after the last reserved one, if it is in this set; else the set's start
    let (mut range_index, mut next) = (0, u64::from(u32::from(set[0].start)));
    if let Some(last) = store.last_reserved(range_set) {
        if let Some(i) = set.iter().position(|r| r.contains(last)) {
            range_index = i;
            next = u64::from(u32::from(last)) + 1;
        }
    }
    let total: u64 = set
        .iter()
        .map(|r| u64::from(u32::from(r.end) - u32::from(r.start)) + 1)
        .sum();
    let mut tried = 0;
    while tried <= total {
        let range = &set[range_index];
        if next > u64::from(u32::from(range.end)) {
            range_index = (range_index + 1) % set.len();
            next = u64::from(u32::from(set[range_index].start));
            continue;
        }
        tried += 1;
        let ip = Ipv4Addr::from(next as u32);
        next += 1;
        if ip == range.gateway {
            continue;
        }
        if store.reserve(id, ifname, ip, range_set)? {
            let address = Ipv4Net::new(ip, range.subnet.prefix_len).expect("prefix from a subnet");
            return Ok((address, range.gateway));
        }
    }
    let ranges: Vec<String> = set
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect();
    Err(CniError::new(
        code::NO_ADDRESS,
        "host-local: no IP addresses available in range set",
        ranges.join(","),
    ))
}

fn ipam_of(conf: &HostLocalConf) -> Result<&IpamConf, CniError> {
    conf.ipam
        .as_ref()
        .ok_or_else(|| CniError::invalid_config("host-local: IPAM config missing 'ipam' key"))
}

/// Refuses what the built-in plugin does not do (requested IPs, resolvConf), clearly.
fn refuse_unsupported(
    ctx: &Context,
    conf: &HostLocalConf,
    ipam: &IpamConf,
) -> Result<(), CniError> {
    if ctx.arg("IP").is_some() {
        return Err(CniError::unsupported(
            "CNI_ARGS IP: mini's host-local does not hand out requested addresses",
        ));
    }
    let asks_ips = |v: &Option<Value>, pointer: &str| {
        v.as_ref()
            .and_then(|v| v.pointer(pointer))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if asks_ips(&conf.args, "/cni/ips") || asks_ips(&conf.runtime_config, "/ips") {
        return Err(CniError::unsupported(
            "ips (args.cni.ips / runtimeConfig.ips): mini's host-local does not hand out requested addresses",
        ));
    }
    if ipam.resolv_conf.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(CniError::unsupported(
            "ipam.resolvConf: mini's host-local does not read DNS settings; set dns in the network config",
        ));
    }
    let ignore_unknown = ctx
        .arg("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !ignore_unknown {
        let unknown: Vec<&str> = ctx
            .args
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "IgnoreUnknown")
            .collect();
        if !unknown.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                "ARGS: unknown args",
                format!("{unknown:?} (set IgnoreUnknown=1 to ignore them)"),
            ));
        }
    }
    Ok(())
}

/// The pool address the kubelet left for the pod named in `CNI_ARGS`, if any.
fn pinned_request(ctx: &Context, ipam: &IpamConf) -> Result<Option<Ipv4Addr>, CniError> {
    let (Some(dir), Some(namespace), Some(name)) = (
        ipam.pinned_dir.as_ref(),
        ctx.arg("K8S_POD_NAMESPACE"),
        ctx.arg("K8S_POD_NAME"),
    ) else {
        return Ok(None);
    };
    mini_ippool::pinned::read_request(dir, namespace, name, ctx.arg("K8S_POD_UID"))
        .map(|r| r.map(|r| r.address))
        .map_err(|e| {
            CniError::new(
                code::IO,
                "host-local: reading the pinned pool address",
                e.to_string(),
            )
        })
}

/// Runs one host-local invocation; `Some` is the JSON to print.
pub fn run(ctx: &Context) -> Result<Option<Value>, CniError> {
    let conf: HostLocalConf = decode(&ctx.stdin)?;
    let version = conf.cni_version.clone();
    let data_dir = |ipam: &IpamConf| {
        ipam.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    };
    match ctx.command {
        Command::Add => {
            let ipam = ipam_of(&conf)?;
            refuse_unsupported(ctx, &conf, ipam)?;
            let sets = range_sets(ipam)?;
            let store = Store::open(&data_dir(ipam), &conf.name)?;
            let mut result = CniResult::default();
            if let Some(pinned) = pinned_request(ctx, ipam)? {
                // a pool address: exactly it, as a /32; its gateway is the bridge's
                if !store.reserve_exact(&ctx.container_id, &ctx.ifname, pinned)? {
                    return Err(CniError::new(
                        code::NO_ADDRESS,
                        "host-local: the pinned pool address is held by another container on this node",
                        pinned.to_string(),
                    ));
                }
                let gateway = sets[0][0].gateway;
                result
                    .ips
                    .push(IpConfig::v4(Ipv4Net::host(pinned), Some(gateway), None));
            }
            for (i, set) in sets.iter().enumerate().skip(result.ips.len()) {
                match allocate(&store, set, i, &ctx.container_id, &ctx.ifname) {
                    Ok((address, gateway)) => {
                        result.ips.push(IpConfig::v4(address, Some(gateway), None))
                    }
                    Err(e) => {
                        // all or nothing, as the reference plugin: what this call took goes back
                        if i > 0 {
                            let _ = store.release_by_id(&ctx.container_id, &ctx.ifname);
                        }
                        return Err(e);
                    }
                }
            }
            for route in &ipam.routes {
                if route.dst_v4().is_none() {
                    return Err(CniError::invalid_config(format!(
                        "host-local: route dst {:?} is not an IPv4 CIDR",
                        route.dst
                    )));
                }
                result.routes.push(route.clone());
            }
            Ok(Some(result.to_json(&version)))
        }
        Command::Del => {
            let ipam = ipam_of(&conf)?;
            let store = Store::open(&data_dir(ipam), &conf.name)?;
            store.release_by_id(&ctx.container_id, &ctx.ifname)?;
            Ok(None)
        }
        Command::Check => {
            let ipam = ipam_of(&conf)?;
            let sets = range_sets(ipam)?;
            let store = Store::open(&data_dir(ipam), &conf.name)?;
            let held = store.get_by_id(&ctx.container_id, &ctx.ifname)?;
            if held.is_empty() {
                return Err(CniError::plugin(
                    "host-local: failed to find address added by container",
                    &ctx.container_id,
                ));
            }
            for ip in held {
                if !sets.iter().flatten().any(|r| r.contains(ip)) {
                    return Err(CniError::plugin(
                        "host-local: address of the container is in no configured range",
                        format!("{ip} held by {}", ctx.container_id),
                    ));
                }
            }
            Ok(None)
        }
        Command::Gc => {
            let ipam = ipam_of(&conf)?;
            let store = Store::open(&data_dir(ipam), &conf.name)?;
            let valid: BTreeSet<(String, String)> = conf
                .valid_attachments
                .iter()
                .flatten()
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .collect();
            for (ip, id, ifname) in store.leases()? {
                let kept = valid.contains(&(id.clone(), ifname.clone()))
                    || (ifname.is_empty() && valid.iter().any(|(v, _)| *v == id));
                if !kept {
                    store.release(ip)?;
                }
            }
            Ok(None)
        }
        Command::Status => Ok(None),
        Command::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(command: Command, id: &str, stdin: &Value) -> Context {
        Context {
            command,
            container_id: id.into(),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), "p".into()),
            ],
            path: Vec::new(),
            stdin: serde_json::to_vec(stdin).expect("json"),
        }
    }

    fn conf(dir: &Path, subnet: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "mini", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": dir, "ranges": [[{"subnet": subnet}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }

    #[test]
    fn range_defaults_skip_network_gateway_and_broadcast() {
        let r = Range::from_conf(&RangeConf {
            subnet: "10.42.1.0/24".into(),
            range_start: None,
            range_end: None,
            gateway: None,
        })
        .expect("range");
        assert_eq!(r.start, Ipv4Addr::new(10, 42, 1, 1));
        assert_eq!(r.end, Ipv4Addr::new(10, 42, 1, 254));
        assert_eq!(r.gateway, Ipv4Addr::new(10, 42, 1, 1));
        let host_bits = Range::from_conf(&RangeConf {
            subnet: "10.42.1.5/24".into(),
            range_start: None,
            range_end: None,
            gateway: None,
        });
        assert_eq!(host_bits.expect_err("host bits").code, code::INVALID_CONFIG);
        let v6 = Range::from_conf(&RangeConf {
            subnet: "fd00::/64".into(),
            range_start: None,
            range_end: None,
            gateway: None,
        });
        assert_eq!(v6.expect_err("v6").code, code::UNSUPPORTED_FIELD);
    }

    #[test]
    fn host_local_add_writes_lease_files_like_the_reference_plugin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run(&ctx(Command::Add, "c1", &conf(dir.path(), "10.42.1.0/24")))
            .expect("add")
            .expect("result");
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["ips"][0]["address"], "10.42.1.2/24");
        assert_eq!(out["ips"][0]["gateway"], "10.42.1.1");
        assert_eq!(out["routes"][0]["dst"], "0.0.0.0/0");
        let net = dir.path().join("mini");
        assert_eq!(
            std::fs::read_to_string(net.join("10.42.1.2")).expect("lease"),
            "c1\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(net.join("last_reserved_ip.0")).expect("last"),
            "10.42.1.2"
        );
        assert!(net.join("lock").is_file());
    }

    #[test]
    fn host_local_allocate_release_reuse_goes_round_robin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = conf(dir.path(), "10.42.1.0/29"); // .2 .. .6 usable (.1 is the gateway)
        let mut got = Vec::new();
        for id in ["a", "b", "c", "d", "e"] {
            let out = run(&ctx(Command::Add, id, &c))
                .expect("add")
                .expect("result");
            got.push(
                out["ips"][0]["address"]
                    .as_str()
                    .expect("address")
                    .to_string(),
            );
        }
        assert_eq!(
            got,
            [
                "10.42.1.2/29",
                "10.42.1.3/29",
                "10.42.1.4/29",
                "10.42.1.5/29",
                "10.42.1.6/29"
            ]
        );
        let full = run(&ctx(Command::Add, "f", &c)).expect_err("range exhausted");
        assert_eq!(full.code, code::NO_ADDRESS);
        // releasing b frees .3; the next allocation wraps round to it
        run(&ctx(Command::Del, "b", &c)).expect("del");
        run(&ctx(Command::Del, "b", &c)).expect("second del is fine");
        let out = run(&ctx(Command::Add, "f", &c))
            .expect("add")
            .expect("result");
        assert_eq!(out["ips"][0]["address"], "10.42.1.3/29");
        // a second ADD for the same container and interface is refused
        let dup = run(&ctx(Command::Add, "f", &c)).expect_err("duplicate");
        assert!(dup.msg.contains("duplicate"), "{dup}");
        run(&ctx(Command::Check, "f", &c)).expect("check finds the lease");
        let missing = run(&ctx(Command::Check, "zz", &c)).expect_err("no lease");
        assert_eq!(missing.code, code::PLUGIN);
    }

    #[test]
    fn host_local_del_without_data_dir_entry_is_ok() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = conf(&dir.path().join("never"), "10.42.1.0/24");
        assert_eq!(run(&ctx(Command::Del, "x", &c)).expect("del"), None);
    }

    #[test]
    fn host_local_gc_releases_leases_not_in_valid_attachments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = conf(dir.path(), "10.42.1.0/24");
        run(&ctx(Command::Add, "keep", &c)).expect("add");
        run(&ctx(Command::Add, "drop", &c)).expect("add");
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
        run(&ctx(Command::Gc, "", &gc)).expect("gc");
        let store = Store::open(dir.path(), "mini").expect("store");
        let leases: Vec<String> = store
            .leases()
            .expect("leases")
            .into_iter()
            .map(|l| l.1)
            .collect();
        assert_eq!(leases, vec!["keep".to_string()]);
    }

    #[test]
    fn host_local_refuses_requested_ips_and_unknown_args() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = conf(dir.path(), "10.42.1.0/24");
        let mut with_ip = ctx(Command::Add, "c", &c);
        with_ip.args.push(("IP".into(), "10.42.1.9".into()));
        assert_eq!(run(&with_ip).expect_err("IP").code, code::UNSUPPORTED_FIELD);
        let mut strict = ctx(Command::Add, "c", &c);
        strict.args = vec![("FOO".into(), "1".into())];
        assert_eq!(run(&strict).expect_err("unknown").code, code::INVALID_ENV);
        let no_ipam = ctx(
            Command::Add,
            "c",
            &json!({"cniVersion": "1.0.0", "name": "n"}),
        );
        assert_eq!(
            run(&no_ipam).expect_err("no ipam").code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn host_local_pinned_request_hands_out_exactly_that_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pinned = dir.path().join("pinned");
        let mut stdin = conf(dir.path(), "10.42.1.0/24");
        stdin["ipam"]["pinnedDir"] = json!(pinned);
        let mut add = ctx(Command::Add, "c1", &stdin);
        add.args.push(("K8S_POD_NAMESPACE".into(), "ns".into()));
        // no request: an address of the node's range
        let out = run(&add).expect("add").expect("result");
        assert_eq!(out["ips"][0]["address"], "10.42.1.2/24");
        run(&ctx(Command::Del, "c1", &stdin)).expect("del");
        mini_ippool::pinned::write_request(
            &pinned,
            "ns",
            "p",
            &mini_ippool::pinned::PinnedRequest {
                address: "10.99.0.5".parse().expect("ip"),
                uid: String::new(),
            },
        )
        .expect("request");
        let out = run(&add).expect("add").expect("result");
        assert_eq!(out["ips"][0]["address"], "10.99.0.5/32");
        assert_eq!(out["ips"][0]["gateway"], "10.42.1.1");
        // another container cannot take it on this node; DEL releases it
        let mut other = ctx(Command::Add, "c2", &stdin);
        other.args.push(("K8S_POD_NAMESPACE".into(), "ns".into()));
        assert!(run(&other).is_err());
        run(&ctx(Command::Del, "c1", &stdin)).expect("del");
        let out = run(&other).expect("add").expect("result");
        assert_eq!(out["ips"][0]["address"], "10.99.0.5/32");
    }
}
