//! The ruleset: the desired state of the `ip mini` table computed from the Service ports
//! (modelled on upstream kube-proxy's nftables mode), and the diff between two states as one
//! batch of nftables JSON commands.
//!
//! Layout:
//! - `nat-prerouting` / `nat-output` jump to `services`, which looks up
//!   `ip daddr . meta l4proto . th dport` in the `service-ips` verdict map (ClusterIPs,
//!   LoadBalancer and external IPs) and, for local destinations, `meta l4proto . th dport` in
//!   `service-nodeports` -- so lookup cost stays flat however many Services there are.
//! - `svc-<key>` marks traffic from outside the pod ranges (the cluster CIDR and the CIDRs of
//!   IP pools) for masquerade, honours ClientIP
//!   affinity (`aff-<key>__<ep>` sets), and picks an endpoint with `numgen random mod N vmap`.
//! - `ext-<key>` is the entry for NodePort/LoadBalancer/external IP traffic: Cluster policy
//!   masquerades and goes to `svc-<key>`; Local policy short-circuits pod and node traffic to
//!   `svc-<key>` and sends the rest only to this node's endpoints (or drops it).
//! - `ep-<key>__<ip>/<port>` marks hairpin traffic (source == endpoint) and DNATs.
//! - Services without endpoints are in `no-endpoint-services` / `no-endpoint-nodeports`, looked
//!   up by filter chains on new connections, which reject at once (ICMP port unreachable:
//!   "connection refused"), as is anything else sent to the service CIDR.
//! - `nat-postrouting` masquerades marked packets and pod traffic leaving the pod ranges.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{json, Value};

use crate::service::{Endpoint, Proto, ServicePort};
use crate::{Ipv4Cidr, TABLE};

const FAMILY: &str = "ip";
/// The packet mark bit that asks `masquerading` to SNAT (upstream kube-proxy's).
const MASQ_MARK: u32 = 0x4000;

pub(crate) const SERVICE_IPS: &str = "service-ips";
pub(crate) const SERVICE_NODEPORTS: &str = "service-nodeports";
pub(crate) const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub(crate) const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const MAPS: [&str; 4] = [
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
];
const REJECT_CHAIN: &str = "reject-chain";
const MARK_CHAIN: &str = "mark-for-masquerade";
const DNS_CHAIN: &str = "node-local-dns";

/// A key of one of the four verdict maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapKey {
    /// `ipv4_addr . inet_proto . inet_service`
    Addr(Ipv4Addr, Proto, u16),
    /// `inet_proto . inet_service`
    Port(Proto, u16),
}

impl MapKey {
    fn to_json(&self) -> Value {
        match self {
            MapKey::Addr(ip, proto, port) => {
                json!({"concat": [ip.to_string(), proto.nft(), port]})
            }
            MapKey::Port(proto, port) => json!({"concat": [proto.nft(), port]}),
        }
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    kind: &'static str,
    hook: &'static str,
    prio: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChainSpec {
    pub hook: Option<Hook>,
    /// Each rule is its JSON `expr` array.
    pub rules: Vec<Value>,
}

/// The whole table as it should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub(crate) chains: BTreeMap<String, ChainSpec>,
    /// Affinity sets by name -> timeout in seconds.
    pub(crate) sets: BTreeMap<String, u32>,
    /// Verdict map name -> key -> chain to `goto`.
    pub(crate) maps: BTreeMap<&'static str, BTreeMap<MapKey, String>>,
}

impl Desired {
    pub fn chain_count(&self) -> usize {
        self.chains.len()
    }

    /// The chain an element of `map` sends `key` to.
    pub fn map_target(&self, map: &str, key: &MapKey) -> Option<&str> {
        self.maps.get(map)?.get(key).map(String::as_str)
    }

    /// The rules of a chain.
    pub fn chain_rules(&self, chain: &str) -> Option<&[Value]> {
        self.chains.get(chain).map(|c| c.rules.as_slice())
    }
}

/// What the ruleset is built from besides the Services.
#[derive(Debug, Clone)]
pub(crate) struct RuleConfig {
    pub cluster_cidr: Ipv4Cidr,
    /// Pod addresses outside the cluster CIDR: the CIDRs of IP pools (`mini.dev/v1` IPPool).
    /// Traffic from and to them is pod traffic like the cluster CIDR's.
    pub pool_cidrs: Vec<Ipv4Cidr>,
    pub service_cidr: Ipv4Cidr,
    pub dns: Option<(Ipv4Addr, SocketAddr)>,
}

// ---- JSON expression helpers -------------------------------------------------------------

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// Matches `field` (`saddr`/`daddr`) outside every one of the pod ranges.
fn outside(pod_ranges: &[Value], field: &str) -> Vec<Value> {
    pod_ranges
        .iter()
        .map(|range| matches("!=", payload("ip", field), range.clone()))
        .collect()
}

fn prefix(cidr: &Ipv4Cidr) -> Value {
    json!({"prefix": {"addr": cidr.addr.to_string(), "len": cidr.len}})
}

fn jump(target: &str) -> Value {
    json!({"jump": {"target": target}})
}

fn goto(target: &str) -> Value {
    json!({"goto": {"target": target}})
}

fn fib_local(flag: &str) -> Value {
    matches(
        "==",
        json!({"fib": {"result": "type", "flags": [flag]}}),
        json!("local"),
    )
}

fn ct_new() -> Value {
    matches("in", json!({"ct": {"key": "state"}}), json!("new"))
}

fn dnat(proto: Proto, ip: Ipv4Addr, port: u16) -> Value {
    json!([
        matches("==", meta("l4proto"), json!(proto.nft())),
        {"dnat": {"addr": ip.to_string(), "port": port}}
    ])
}

fn rule(statements: Vec<Value>) -> Value {
    Value::Array(statements)
}

/// `numgen random mod N vmap { 0 : goto a, 1 : goto b, ... }`, or a plain goto for one.
fn pick(chains: &[String]) -> Value {
    if let [only] = chains {
        return rule(vec![goto(only)]);
    }
    let pairs: Vec<Value> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| json!([i, goto(c)]))
        .collect();
    rule(vec![json!({"vmap": {
        "key": {"numgen": {"mode": "random", "mod": chains.len()}},
        "data": {"set": pairs}
    }})])
}

fn service_tuple() -> Value {
    json!({"concat": [payload("ip", "daddr"), meta("l4proto"), payload("th", "dport")]})
}

fn port_tuple() -> Value {
    json!({"concat": [meta("l4proto"), payload("th", "dport")]})
}

fn base(kind: &'static str, hook: &'static str, prio: i32, rules: Vec<Value>) -> ChainSpec {
    ChainSpec {
        hook: Some(Hook { kind, hook, prio }),
        rules,
    }
}

fn regular(rules: Vec<Value>) -> ChainSpec {
    ChainSpec { hook: None, rules }
}

fn ep_chain(key: &str, ep: &Endpoint) -> String {
    format!("ep-{key}__{}/{}", ep.ip, ep.port)
}

fn affinity_set(key: &str, ep: &Endpoint) -> String {
    format!("aff-{key}__{}/{}", ep.ip, ep.port)
}

/// The desired table for these Service ports.
pub(crate) fn desired(ports: &[ServicePort], config: &RuleConfig) -> Desired {
    let mut d = Desired::default();
    let pod_ranges: Vec<Value> = std::iter::once(&config.cluster_cidr)
        .chain(config.pool_cidrs.iter())
        .map(prefix)
        .collect();
    let cluster = &pod_ranges;
    let loopback = Ipv4Cidr {
        addr: Ipv4Addr::new(127, 0, 0, 0),
        len: 8,
    };
    let multicast = Ipv4Cidr {
        addr: Ipv4Addr::new(224, 0, 0, 0),
        len: 4,
    };

    // Fixed skeleton.
    let to_services = vec![rule(vec![jump("services")])];
    d.chains.insert(
        "nat-prerouting".into(),
        base("nat", "prerouting", -100, to_services.clone()),
    );
    d.chains.insert(
        "nat-output".into(),
        base("nat", "output", -100, to_services),
    );
    d.chains.insert(
        "nat-postrouting".into(),
        base(
            "nat",
            "postrouting",
            100,
            std::iter::once(rule(vec![jump("masquerading")]))
                .chain(pod_ranges.iter().map(|range| {
                    let mut exprs = vec![matches("==", payload("ip", "saddr"), range.clone())];
                    exprs.extend(outside(cluster, "daddr"));
                    exprs.push(matches("!=", payload("ip", "daddr"), prefix(&multicast)));
                    exprs.push(json!({"masquerade": {"flags": "fully-random"}}));
                    rule(exprs)
                }))
                .collect(),
        ),
    );
    let endpoints_check = rule(vec![ct_new(), jump("endpoints-check")]);
    let cluster_ips_check = rule(vec![ct_new(), jump("cluster-ips-check")]);
    d.chains.insert(
        "filter-input".into(),
        base("filter", "input", -110, vec![endpoints_check.clone()]),
    );
    d.chains.insert(
        "filter-forward".into(),
        base(
            "filter",
            "forward",
            -110,
            vec![endpoints_check.clone(), cluster_ips_check.clone()],
        ),
    );
    d.chains.insert(
        "filter-output".into(),
        base("filter", "output", -110, vec![endpoints_check]),
    );
    // After nat-output's DNAT: whatever still heads for the service CIDR matched no Service.
    d.chains.insert(
        "filter-output-post-dnat".into(),
        base("filter", "output", -90, vec![cluster_ips_check]),
    );
    d.chains.insert(
        "services".into(),
        regular(vec![
            rule(vec![
                json!({"vmap": {"key": service_tuple(), "data": format!("@{SERVICE_IPS}")}}),
            ]),
            rule(vec![
                fib_local("daddr"),
                matches("!=", payload("ip", "daddr"), prefix(&loopback)),
                json!({"vmap": {"key": port_tuple(), "data": format!("@{SERVICE_NODEPORTS}")}}),
            ]),
        ]),
    );
    d.chains.insert(
        "endpoints-check".into(),
        regular(vec![
            rule(vec![json!({"vmap": {"key": service_tuple(), "data": format!("@{NO_ENDPOINT_SERVICES}")}})]),
            rule(vec![
                fib_local("daddr"),
                matches("!=", payload("ip", "daddr"), prefix(&loopback)),
                json!({"vmap": {"key": port_tuple(), "data": format!("@{NO_ENDPOINT_NODEPORTS}")}}),
            ]),
        ]),
    );
    d.chains.insert(
        "cluster-ips-check".into(),
        regular(vec![rule(vec![
            matches("==", payload("ip", "daddr"), prefix(&config.service_cidr)),
            json!({"reject": null}),
        ])]),
    );
    d.chains.insert(
        MARK_CHAIN.into(),
        regular(vec![rule(vec![json!({"mangle": {
            "key": meta("mark"),
            "value": {"|": [meta("mark"), MASQ_MARK]}
        }})])]),
    );
    d.chains.insert(
        "masquerading".into(),
        regular(vec![
            rule(vec![
                matches("==", json!({"&": [meta("mark"), MASQ_MARK]}), json!(0)),
                json!({"return": null}),
            ]),
            rule(vec![json!({"mangle": {
                "key": meta("mark"),
                "value": {"^": [meta("mark"), MASQ_MARK]}
            }})]),
            rule(vec![json!({"masquerade": {"flags": "fully-random"}})]),
        ]),
    );
    d.chains.insert(
        REJECT_CHAIN.into(),
        regular(vec![rule(vec![json!({"reject": null})])]),
    );
    for map in MAPS {
        d.maps.insert(map, BTreeMap::new());
    }

    // Node-local DNS first: its keys win over the (endpoint-less) kube-dns Service.
    if let Some((service_ip, listen)) = config.dns {
        if let std::net::IpAddr::V4(listen_ip) = listen.ip() {
            let mut rules = Vec::new();
            for proto in [Proto::Udp, Proto::Tcp] {
                rules.push(dnat(proto, listen_ip, listen.port()));
                insert_first(
                    &mut d,
                    SERVICE_IPS,
                    MapKey::Addr(service_ip, proto, 53),
                    DNS_CHAIN,
                );
            }
            d.chains.insert(DNS_CHAIN.into(), regular(rules));
        }
    }

    for sp in ports {
        add_service_port(&mut d, sp, cluster);
    }
    d
}

/// Inserts a map element unless the key is taken (first writer wins, so two Services that
/// claim the same LoadBalancer IP and port cannot make the batch fail).
fn insert_first(d: &mut Desired, map: &'static str, key: MapKey, chain: &str) -> bool {
    let entries = d.maps.entry(map).or_default();
    if entries.contains_key(&key) {
        tracing::debug!(map, ?key, "map key already taken; skipped");
        return false;
    }
    entries.insert(key, chain.to_string());
    true
}

fn add_service_port(d: &mut Desired, sp: &ServicePort, cluster: &[Value]) {
    let key = sp.key();
    let vip_keys: Vec<MapKey> = std::iter::once(sp.cluster_ip)
        .chain(sp.external_ips.iter().copied())
        .map(|ip| MapKey::Addr(ip, sp.proto, sp.port))
        .collect();
    if sp.endpoints.is_empty() {
        for k in vip_keys {
            // A tuple already served (node-local DNS for the endpoint-less kube-dns
            // Service) must not be rejected before its DNAT.
            if d.map_target(SERVICE_IPS, &k).is_none() {
                insert_first(d, NO_ENDPOINT_SERVICES, k, REJECT_CHAIN);
            }
        }
        if let Some(np) = sp.node_port {
            insert_first(
                d,
                NO_ENDPOINT_NODEPORTS,
                MapKey::Port(sp.proto, np),
                REJECT_CHAIN,
            );
        }
        return;
    }
    // The (ClusterIP) key taken means another port already owns this tuple: nothing to add.
    let svc_chain = format!("svc-{key}");
    let ext_chain = format!("ext-{key}");
    let mut claimed = false;
    if insert_first(d, SERVICE_IPS, vip_keys[0].clone(), &svc_chain) {
        claimed = true;
    }
    let external_target = if sp.has_external() {
        &ext_chain
    } else {
        &svc_chain
    };
    for k in &vip_keys[1..] {
        claimed |= insert_first(d, SERVICE_IPS, k.clone(), external_target);
    }
    if let Some(np) = sp.node_port {
        claimed |= insert_first(
            d,
            SERVICE_NODEPORTS,
            MapKey::Port(sp.proto, np),
            external_target,
        );
    }
    if !claimed {
        return;
    }

    // Endpoint chains.
    let ep_chains: Vec<String> = sp.endpoints.iter().map(|e| ep_chain(&key, e)).collect();
    for (ep, chain) in sp.endpoints.iter().zip(&ep_chains) {
        let mut rules = vec![rule(vec![
            matches("==", payload("ip", "saddr"), json!(ep.ip.to_string())),
            jump(MARK_CHAIN),
        ])];
        if let Some(timeout) = sp.affinity_timeout {
            let set = affinity_set(&key, ep);
            d.sets.insert(set.clone(), timeout);
            rules.push(rule(vec![json!({"set": {
                "op": "update", "elem": payload("ip", "saddr"), "set": format!("@{set}")
            }})]));
        }
        rules.push(dnat(sp.proto, ep.ip, ep.port));
        d.chains.insert(chain.clone(), regular(rules));
    }
    let affinity_rules = |eps: &[Endpoint]| -> Vec<Value> {
        if sp.affinity_timeout.is_none() {
            return Vec::new();
        }
        eps.iter()
            .map(|e| {
                rule(vec![
                    matches(
                        "==",
                        payload("ip", "saddr"),
                        json!(format!("@{}", affinity_set(&key, e))),
                    ),
                    goto(&ep_chain(&key, e)),
                ])
            })
            .collect()
    };

    // Service chain: cluster traffic.
    let mut rules = vec![rule(
        outside(cluster, "saddr")
            .into_iter()
            .chain(std::iter::once(jump(MARK_CHAIN)))
            .collect(),
    )];
    rules.extend(affinity_rules(&sp.endpoints));
    rules.push(pick(&ep_chains));
    d.chains.insert(svc_chain.clone(), regular(rules));

    // External chain: NodePort, LoadBalancer and external IP traffic.
    if sp.has_external() {
        let rules = if sp.external_local {
            let mut rules: Vec<Value> = cluster
                .iter()
                .map(|range| {
                    rule(vec![
                        matches("==", payload("ip", "saddr"), range.clone()),
                        goto(&svc_chain),
                    ])
                })
                .collect();
            rules.push(rule(vec![fib_local("saddr"), jump(MARK_CHAIN)]));
            rules.push(rule(vec![fib_local("saddr"), goto(&svc_chain)]));
            rules.extend(affinity_rules(&sp.local_endpoints));
            if sp.local_endpoints.is_empty() {
                rules.push(rule(vec![json!({"drop": null})]));
            } else {
                let local: Vec<String> = sp
                    .local_endpoints
                    .iter()
                    .map(|e| ep_chain(&key, e))
                    .collect();
                rules.push(pick(&local));
            }
            rules
        } else {
            vec![rule(vec![jump(MARK_CHAIN)]), rule(vec![goto(&svc_chain)])]
        };
        d.chains.insert(ext_chain, regular(rules));
    }
}

// ---- Diff ----------------------------------------------------------------------------------

fn table_obj() -> Value {
    json!({"table": {"family": FAMILY, "name": TABLE}})
}

fn chain_obj(name: &str, hook: Option<&Hook>) -> Value {
    let mut chain = json!({"family": FAMILY, "table": TABLE, "name": name});
    if let Some(h) = hook {
        chain["type"] = json!(h.kind);
        chain["hook"] = json!(h.hook);
        chain["prio"] = json!(h.prio);
        chain["policy"] = json!("accept");
    }
    json!({"chain": chain})
}

fn rule_obj(chain: &str, expr: &Value) -> Value {
    json!({"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}})
}

fn set_obj(name: &str, timeout: u32) -> Value {
    json!({"set": {"family": FAMILY, "table": TABLE, "name": name, "type": "ipv4_addr",
                   "flags": ["timeout"], "timeout": timeout}})
}

fn map_obj(name: &str) -> Value {
    let key_type = if name == SERVICE_NODEPORTS || name == NO_ENDPOINT_NODEPORTS {
        json!(["inet_proto", "inet_service"])
    } else {
        json!(["ipv4_addr", "inet_proto", "inet_service"])
    };
    json!({"map": {"family": FAMILY, "table": TABLE, "name": name, "type": key_type, "map": "verdict"}})
}

fn elements_obj(map: &str, elems: Vec<Value>) -> Value {
    json!({"element": {"family": FAMILY, "table": TABLE, "name": map, "elem": elems}})
}

fn cmd(verb: &str, obj: Value) -> Value {
    json!({ verb: obj })
}

/// The commands that turn `applied` into `desired`; with no `applied` (first sync, or the
/// table was changed behind our back) the table is deleted and recreated in the same batch.
pub(crate) fn diff(applied: Option<&Desired>, desired: &Desired) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(old) = applied else {
        // `add` first so `delete` cannot fail on a missing table.
        out.push(cmd("add", table_obj()));
        out.push(cmd("delete", table_obj()));
        out.push(cmd("add", table_obj()));
        for (name, timeout) in &desired.sets {
            out.push(cmd("add", set_obj(name, *timeout)));
        }
        for map in desired.maps.keys() {
            out.push(cmd("add", map_obj(map)));
        }
        for (name, spec) in &desired.chains {
            out.push(cmd("add", chain_obj(name, spec.hook.as_ref())));
        }
        for (name, spec) in &desired.chains {
            for r in &spec.rules {
                out.push(cmd("add", rule_obj(name, r)));
            }
        }
        for (map, entries) in &desired.maps {
            if !entries.is_empty() {
                let elems = entries
                    .iter()
                    .map(|(k, chain)| json!([k.to_json(), goto(chain)]))
                    .collect();
                out.push(cmd("add", elements_obj(map, elems)));
            }
        }
        return out;
    };

    // 1. new sets, 2. new chains, 3. rules of new and changed chains.
    for (name, timeout) in &desired.sets {
        if !old.sets.contains_key(name) {
            out.push(cmd("add", set_obj(name, *timeout)));
        }
    }
    for (name, spec) in &desired.chains {
        if !old.chains.contains_key(name) {
            out.push(cmd("add", chain_obj(name, spec.hook.as_ref())));
        }
    }
    for (name, spec) in &desired.chains {
        match old.chains.get(name) {
            Some(prev) if prev.rules == spec.rules => continue,
            Some(_) => out.push(cmd("flush", chain_obj(name, None))),
            None => {}
        }
        for r in &spec.rules {
            out.push(cmd("add", rule_obj(name, r)));
        }
    }
    // 4. map elements: removed or retargeted ones out, new or retargeted ones in.
    for map in MAPS {
        let empty = BTreeMap::new();
        let before = old.maps.get(map).unwrap_or(&empty);
        let after = desired.maps.get(map).unwrap_or(&empty);
        let gone: Vec<Value> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| k.to_json())
            .collect();
        if !gone.is_empty() {
            out.push(cmd("delete", elements_obj(map, gone)));
        }
        let new: Vec<Value> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, chain)| json!([k.to_json(), goto(chain)]))
            .collect();
        if !new.is_empty() {
            out.push(cmd("add", elements_obj(map, new)));
        }
    }
    // 5. chains no longer wanted: flush them all first (they may jump to each other), then
    //    delete; 6. then the affinity sets only they used.
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !desired.chains.contains_key(*name))
        .collect();
    for name in &removed {
        out.push(cmd("flush", chain_obj(name, None)));
    }
    for name in &removed {
        out.push(cmd("delete", chain_obj(name, None)));
    }
    for name in old.sets.keys() {
        if !desired.sets.contains_key(name) {
            out.push(cmd("delete", set_obj(name, 0)));
        }
    }
    out
}

/// Whether `diff` can move from `applied` to `desired` in place; a changed base chain hook or
/// affinity timeout needs a full rebuild.
pub(crate) fn incremental_ok(applied: &Desired, desired: &Desired) -> bool {
    let hooks_same = desired.chains.iter().all(|(name, spec)| {
        applied
            .chains
            .get(name)
            .is_none_or(|prev| prev.hook == spec.hook)
    });
    let sets_same = desired
        .sets
        .iter()
        .all(|(name, t)| applied.sets.get(name).is_none_or(|prev| prev == t));
    hooks_same && sets_same
}

/// The batch document for a list of commands.
pub(crate) fn batch(commands: Vec<Value>) -> String {
    json!({"nftables": commands}).to_string()
}

/// What a listing must show for the table to be the one we applied: chain names with their
/// rule counts, set names, and element counts per map.
#[derive(Debug, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    pub chains: BTreeMap<String, usize>,
    pub sets: Vec<String>,
    pub elements: BTreeMap<String, usize>,
}

impl Shape {
    pub fn of(d: &Desired) -> Shape {
        Shape {
            chains: d
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.rules.len()))
                .collect(),
            sets: d.sets.keys().cloned().collect(),
            elements: d
                .maps
                .iter()
                .map(|(m, e)| (m.to_string(), e.len()))
                .collect(),
        }
    }

    /// From `nft -j list table` output; `None` if it cannot be read.
    pub fn from_listing(listing: &str) -> Option<Shape> {
        let doc: Value = serde_json::from_str(listing).ok()?;
        let mut shape = Shape::default();
        for obj in doc.get("nftables")?.as_array()? {
            if let Some(chain) = obj.get("chain") {
                shape
                    .chains
                    .entry(chain.get("name")?.as_str()?.to_string())
                    .or_insert(0);
            } else if let Some(r) = obj.get("rule") {
                *shape
                    .chains
                    .entry(r.get("chain")?.as_str()?.to_string())
                    .or_insert(0) += 1;
            } else if let Some(set) = obj.get("set") {
                shape.sets.push(set.get("name")?.as_str()?.to_string());
            } else if let Some(map) = obj.get("map") {
                let n = map
                    .get("elem")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                shape
                    .elements
                    .insert(map.get("name")?.as_str()?.to_string(), n);
            }
        }
        shape.sets.sort();
        Some(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// An in-memory nftables table that applies batches with nft's rules: objects must exist
    /// before use, chains must be empty and unreferenced to be deleted, elements must exist
    /// to be deleted and must not exist to be added. Any violation fails the whole batch.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub(crate) struct Model {
        exists: bool,
        chains: BTreeMap<String, (Option<Value>, Vec<Value>)>,
        sets: BTreeMap<String, Value>,
        maps: BTreeMap<String, BTreeMap<String, Value>>,
    }

    fn targets(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, inner) in o {
                    if k == "jump" || k == "goto" {
                        if let Some(t) = inner.get("target").and_then(Value::as_str) {
                            out.push(t.to_string());
                        }
                    }
                    targets(inner, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| targets(x, out)),
            Value::String(s) if s.starts_with('@') => out.push(s.clone()),
            _ => {}
        }
    }

    impl Model {
        pub fn apply(&mut self, batch: &str) -> Result<(), String> {
            let doc: Value = serde_json::from_str(batch).map_err(|e| e.to_string())?;
            let mut next = self.clone();
            for c in doc["nftables"].as_array().ok_or("no nftables array")? {
                next.command(c)?;
            }
            next.check_references()?;
            *self = next;
            Ok(())
        }

        fn references(&self) -> Vec<String> {
            let mut out = Vec::new();
            for (_, rules) in self.chains.values() {
                rules.iter().for_each(|r| targets(r, &mut out));
            }
            for m in self.maps.values() {
                m.values().for_each(|v| targets(v, &mut out));
            }
            out
        }

        fn check_references(&self) -> Result<(), String> {
            for r in self.references() {
                let ok = match r.strip_prefix('@') {
                    Some(set) => self.sets.contains_key(set) || self.maps.contains_key(set),
                    None => self.chains.contains_key(&r),
                };
                if !ok {
                    return Err(format!("reference to missing {r}"));
                }
            }
            Ok(())
        }

        fn command(&mut self, c: &Value) -> Result<(), String> {
            let (verb, obj) = c
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or("empty command")?;
            let (kind, body) = obj
                .as_object()
                .and_then(|o| o.iter().next())
                .ok_or("empty object")?;
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if kind != "table" && !self.exists {
                return Err(format!("{verb} {kind} {name}: no table"));
            }
            match (verb.as_str(), kind.as_str()) {
                ("add", "table") => self.exists = true,
                ("delete", "table") => {
                    if !self.exists {
                        return Err("delete missing table".into());
                    }
                    *self = Model::default();
                }
                ("add", "chain") => {
                    let hook = body.get("hook").map(|_| body.clone());
                    self.chains.entry(name).or_insert((hook, Vec::new()));
                }
                ("flush", "chain") => {
                    self.chains
                        .get_mut(&name)
                        .ok_or(format!("flush missing chain {name}"))?
                        .1
                        .clear();
                }
                ("delete", "chain") => {
                    let (_, rules) = self
                        .chains
                        .get(&name)
                        .ok_or(format!("delete missing chain {name}"))?;
                    if !rules.is_empty() {
                        return Err(format!("delete non-empty chain {name}"));
                    }
                    self.chains.remove(&name);
                    if self.references().contains(&name) {
                        return Err(format!("delete referenced chain {name}"));
                    }
                }
                ("add", "rule") => {
                    let chain = body["chain"].as_str().unwrap_or_default();
                    let mut refs = Vec::new();
                    targets(&body["expr"], &mut refs);
                    for r in refs {
                        let ok = match r.strip_prefix('@') {
                            Some(s) => self.sets.contains_key(s) || self.maps.contains_key(s),
                            None => self.chains.contains_key(&r),
                        };
                        if !ok {
                            return Err(format!("rule in {chain} references missing {r}"));
                        }
                    }
                    self.chains
                        .get_mut(chain)
                        .ok_or(format!("rule in missing chain {chain}"))?
                        .1
                        .push(body["expr"].clone());
                }
                ("add", "set") => {
                    self.sets.entry(name).or_insert(body.clone());
                }
                ("delete", "set") => {
                    self.sets
                        .remove(&name)
                        .ok_or(format!("delete missing set {name}"))?;
                    if self.references().contains(&format!("@{name}")) {
                        return Err(format!("delete referenced set {name}"));
                    }
                }
                ("add", "map") => {
                    self.maps.entry(name).or_default();
                }
                ("add", "element") | ("delete", "element") => {
                    let map = self
                        .maps
                        .get_mut(&name)
                        .ok_or(format!("elements of missing map {name}"))?;
                    for e in body["elem"].as_array().ok_or("no elem")? {
                        if verb == "add" {
                            let key = e[0].to_string();
                            if !self
                                .chains
                                .contains_key(e[1]["goto"]["target"].as_str().unwrap_or_default())
                            {
                                return Err(format!(
                                    "element {key} of {name} goes to a missing chain"
                                ));
                            }
                            if map.insert(key.clone(), e[1].clone()).is_some() {
                                return Err(format!("element {key} of {name} exists"));
                            }
                        } else if map.remove(&e.to_string()).is_none() {
                            return Err(format!("delete missing element {e} of {name}"));
                        }
                    }
                }
                other => return Err(format!("unsupported command {other:?}")),
            }
            Ok(())
        }
    }

    fn cfg() -> RuleConfig {
        RuleConfig {
            cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
            pool_cidrs: Vec::new(),
            service_cidr: "10.43.0.0/16".parse().expect("cidr"),
            dns: None,
        }
    }

    fn ep(ip: &str, local: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().expect("ip"),
            port: 8080,
            local,
        }
    }

    fn web(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            proto: Proto::Tcp,
            port: 80,
            cluster_ip: Ipv4Addr::new(10, 43, 0, 5),
            node_port: None,
            external_ips: Vec::new(),
            external_local: false,
            affinity_timeout: None,
            local_endpoints: endpoints.iter().filter(|e| e.local).cloned().collect(),
            endpoints,
        }
    }

    fn vip(ip: [u8; 4], proto: Proto, port: u16) -> MapKey {
        MapKey::Addr(Ipv4Addr::from(ip), proto, port)
    }

    fn text(rules: &[Value]) -> String {
        serde_json::to_string(rules).expect("json")
    }

    fn build(d: &Desired) -> Model {
        let mut m = Model::default();
        m.apply(&batch(diff(None, d))).expect("full build applies");
        m
    }

    #[test]
    fn clusterip_two_endpoints_balances_with_numgen_over_endpoint_chains() {
        let d = desired(
            &[web(vec![ep("10.42.0.5", true), ep("10.42.1.5", false)])],
            &cfg(),
        );
        let svc = "svc-default/web/tcp/http";
        assert_eq!(
            d.map_target(SERVICE_IPS, &vip([10, 43, 0, 5], Proto::Tcp, 80)),
            Some(svc)
        );
        let rules = text(d.chain_rules(svc).expect("service chain"));
        assert!(
            rules.contains(r#""numgen":{"mode":"random","mod":2}"#),
            "{rules}"
        );
        assert!(rules.contains("ep-default/web/tcp/http__10.42.0.5/8080"));
        assert!(rules.contains("ep-default/web/tcp/http__10.42.1.5/8080"));
        // traffic from outside the pod network (the node itself) is masqueraded
        assert!(rules.contains(r#"[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.42.0.0","len":16}}}},{"jump":{"target":"mark-for-masquerade"}}]"#), "{rules}");
        let ep_rules = text(
            d.chain_rules("ep-default/web/tcp/http__10.42.1.5/8080")
                .expect("ep chain"),
        );
        assert!(
            ep_rules.contains(r#""dnat":{"addr":"10.42.1.5","port":8080}"#),
            "{ep_rules}"
        );
        let m = build(&d);
        assert!(m.chains.contains_key(svc));
    }

    #[test]
    fn endpoint_chain_marks_hairpin_traffic_for_masquerade() {
        let d = desired(&[web(vec![ep("10.42.0.5", true)])], &cfg());
        let rules = d
            .chain_rules("ep-default/web/tcp/http__10.42.0.5/8080")
            .expect("ep chain");
        assert_eq!(
            rules[0],
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.42.0.5"}},
                {"jump": {"target": "mark-for-masquerade"}}
            ])
        );
    }

    #[test]
    fn nodeport_cluster_policy_goes_through_masquerading_external_chain() {
        let mut sp = web(vec![ep("10.42.1.5", false)]);
        sp.node_port = Some(30080);
        let d = desired(&[sp], &cfg());
        let ext = "ext-default/web/tcp/http";
        assert_eq!(
            d.map_target(SERVICE_NODEPORTS, &MapKey::Port(Proto::Tcp, 30080)),
            Some(ext)
        );
        assert_eq!(
            d.chain_rules(ext).expect("ext chain"),
            &[
                json!([{"jump": {"target": "mark-for-masquerade"}}]),
                json!([{"goto": {"target": "svc-default/web/tcp/http"}}])
            ]
        );
        let services = text(d.chain_rules("services").expect("services"));
        assert!(
            services.contains(r#""fib":{"result":"type","flags":["daddr"]}"#),
            "{services}"
        );
        build(&d);
    }

    #[test]
    fn loadbalancer_ingress_ip_is_a_service_ips_key_to_the_external_chain() {
        let mut sp = web(vec![ep("10.42.1.5", false)]);
        sp.node_port = Some(30080);
        sp.external_ips = vec![Ipv4Addr::new(10, 77, 0, 11), Ipv4Addr::new(10, 77, 0, 12)];
        let d = desired(&[sp], &cfg());
        for ip in [[10, 77, 0, 11], [10, 77, 0, 12]] {
            assert_eq!(
                d.map_target(SERVICE_IPS, &vip(ip, Proto::Tcp, 80)),
                Some("ext-default/web/tcp/http")
            );
        }
        assert_eq!(
            d.map_target(SERVICE_IPS, &vip([10, 43, 0, 5], Proto::Tcp, 80)),
            Some("svc-default/web/tcp/http")
        );
        build(&d);
    }

    #[test]
    fn local_policy_sends_external_traffic_only_to_local_endpoints_or_drops() {
        let mut sp = web(vec![ep("10.42.0.5", true), ep("10.42.1.5", false)]);
        sp.node_port = Some(30080);
        sp.external_local = true;
        let d = desired(&[sp.clone()], &cfg());
        let ext = d
            .chain_rules("ext-default/web/tcp/http")
            .expect("ext chain");
        assert_eq!(
            ext.last(),
            Some(&json!([{"goto": {"target": "ep-default/web/tcp/http__10.42.0.5/8080"}}]))
        );
        assert!(!text(ext).contains("10.42.1.5"));
        // pods and the node itself still reach every endpoint through the service chain
        assert!(text(ext).contains(r#"{"goto":{"target":"svc-default/web/tcp/http"}}"#));
        sp.local_endpoints.clear();
        let d = desired(&[sp], &cfg());
        let ext = d
            .chain_rules("ext-default/web/tcp/http")
            .expect("ext chain");
        assert_eq!(ext.last(), Some(&json!([{"drop": null}])));
        build(&d);
    }

    #[test]
    fn client_ip_affinity_uses_per_endpoint_sets_with_the_timeout() {
        let mut sp = web(vec![ep("10.42.0.5", true), ep("10.42.1.5", false)]);
        sp.affinity_timeout = Some(60);
        let d = desired(&[sp], &cfg());
        let set = "aff-default/web/tcp/http__10.42.0.5/8080";
        assert_eq!(d.sets.get(set), Some(&60));
        let svc = text(d.chain_rules("svc-default/web/tcp/http").expect("svc"));
        assert!(svc.contains(&format!(r#""right":"@{set}""#)), "{svc}");
        let ep_rules = text(
            d.chain_rules("ep-default/web/tcp/http__10.42.0.5/8080")
                .expect("ep"),
        );
        assert!(
            ep_rules.contains(r#""op":"update""#) && ep_rules.contains(set),
            "{ep_rules}"
        );
        let m = build(&d);
        assert_eq!(m.sets[set]["timeout"], 60);
    }

    #[test]
    fn service_without_endpoints_is_rejected_by_the_filter_maps() {
        let mut sp = web(Vec::new());
        sp.node_port = Some(30080);
        let d = desired(&[sp], &cfg());
        assert_eq!(
            d.map_target(NO_ENDPOINT_SERVICES, &vip([10, 43, 0, 5], Proto::Tcp, 80)),
            Some(REJECT_CHAIN)
        );
        assert_eq!(
            d.map_target(NO_ENDPOINT_NODEPORTS, &MapKey::Port(Proto::Tcp, 30080)),
            Some(REJECT_CHAIN)
        );
        assert_eq!(
            d.map_target(SERVICE_IPS, &vip([10, 43, 0, 5], Proto::Tcp, 80)),
            None
        );
        assert!(d.chain_rules("svc-default/web/tcp/http").is_none());
        assert_eq!(
            d.chain_rules(REJECT_CHAIN),
            Some(&[json!([{"reject": null}])][..])
        );
        build(&d);
    }

    #[test]
    fn node_local_dns_dnats_both_protocols_and_beats_the_endpointless_kube_dns() {
        let mut config = cfg();
        config.dns = Some((
            Ipv4Addr::new(10, 43, 0, 10),
            "10.77.0.11:10053".parse().expect("addr"),
        ));
        let mut kube_dns = web(Vec::new());
        kube_dns.namespace = "kube-system".into();
        kube_dns.name = "kube-dns".into();
        kube_dns.cluster_ip = Ipv4Addr::new(10, 43, 0, 10);
        kube_dns.port = 53;
        kube_dns.proto = Proto::Udp;
        let d = desired(&[kube_dns], &config);
        for proto in [Proto::Udp, Proto::Tcp] {
            let key = vip([10, 43, 0, 10], proto, 53);
            assert_eq!(d.map_target(SERVICE_IPS, &key), Some(DNS_CHAIN));
            assert_eq!(d.map_target(NO_ENDPOINT_SERVICES, &key), None);
        }
        let dns = text(d.chain_rules(DNS_CHAIN).expect("dns chain"));
        assert!(
            dns.contains(r#""right":"udp""#) && dns.contains(r#""right":"tcp""#),
            "{dns}"
        );
        assert!(
            dns.contains(r#""dnat":{"addr":"10.77.0.11","port":10053}"#),
            "{dns}"
        );
        build(&d);
    }

    #[test]
    fn pod_traffic_leaving_the_cluster_cidr_is_masqueraded() {
        let d = desired(&[], &cfg());
        let post = text(d.chain_rules("nat-postrouting").expect("postrouting"));
        assert!(post.contains(r#"{"jump":{"target":"masquerading"}}"#));
        assert!(post.contains(r#"{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.42.0.0","len":16}}}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"10.42.0.0","len":16}}}}"#), "{post}");
        assert!(post.contains(r#"{"masquerade":{"flags":"fully-random"}}"#));
    }

    #[test]
    fn endpoint_removal_changes_only_the_service_chain_and_that_endpoint() {
        let before = desired(
            &[web(vec![ep("10.42.0.5", true), ep("10.42.1.5", false)])],
            &cfg(),
        );
        let after = desired(&[web(vec![ep("10.42.0.5", true)])], &cfg());
        let commands = diff(Some(&before), &after);
        let gone = "ep-default/web/tcp/http__10.42.1.5/8080";
        let svc = "svc-default/web/tcp/http";
        let touched: BTreeSet<(String, String)> = commands
            .iter()
            .map(|c| {
                let (verb, obj) = c
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .expect("command");
                let (kind, body) = obj
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .expect("object");
                let name = body
                    .get("chain")
                    .or(body.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (format!("{verb} {kind}"), name.to_string())
            })
            .collect();
        let expected: BTreeSet<(String, String)> = [
            ("flush chain", svc),
            ("add rule", svc),
            ("flush chain", gone),
            ("delete chain", gone),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(touched, expected);
        let mut m = build(&before);
        m.apply(&batch(commands))
            .expect("incremental batch applies");
        assert_eq!(m, build(&after));
    }

    #[test]
    fn incremental_diffs_always_reach_the_same_table_as_a_full_build() {
        let mut np = web(vec![ep("10.42.0.5", true)]);
        np.node_port = Some(30080);
        np.external_ips = vec![Ipv4Addr::new(10, 77, 0, 11)];
        let mut aff = np.clone();
        aff.affinity_timeout = Some(30);
        aff.external_local = true;
        let mut other = web(vec![ep("10.42.2.7", false)]);
        other.name = "api".into();
        other.cluster_ip = Ipv4Addr::new(10, 43, 0, 6);
        let steps: Vec<Vec<ServicePort>> = vec![
            vec![],
            vec![web(vec![ep("10.42.0.5", true), ep("10.42.1.5", false)])],
            vec![np.clone(), other.clone()],
            vec![aff.clone(), other.clone()],
            vec![web(Vec::new()), other.clone()],
            vec![np, other],
            vec![aff],
            vec![],
        ];
        let mut model = Model::default();
        let mut applied: Option<Desired> = None;
        for (i, ports) in steps.iter().enumerate() {
            let d = desired(ports, &cfg());
            let base = applied.as_ref().filter(|a| incremental_ok(a, &d));
            model
                .apply(&batch(diff(base, &d)))
                .unwrap_or_else(|e| panic!("step {i}: {e}"));
            assert_eq!(model, build(&d), "step {i}");
            applied = Some(d);
        }
    }

    #[test]
    fn shape_from_listing_counts_chains_rules_sets_and_elements() {
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "ip", "name": "mini"}},
            {"map": {"name": "service-ips", "elem": [[{"concat": ["10.43.0.5", "tcp", 80]}, {"goto": {"target": "a"}}]]}},
            {"set": {"name": "aff-x"}},
            {"chain": {"name": "a"}},
            {"chain": {"name": "b"}},
            {"rule": {"chain": "a", "expr": []}},
            {"rule": {"chain": "a", "expr": []}}
        ]});
        let shape = Shape::from_listing(&listing.to_string()).expect("shape");
        assert_eq!(
            shape.chains,
            BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 0)])
        );
        assert_eq!(shape.sets, vec!["aff-x".to_string()]);
        assert_eq!(
            shape.elements,
            BTreeMap::from([("service-ips".to_string(), 1)])
        );
    }
}
