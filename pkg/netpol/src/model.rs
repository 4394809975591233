//! From NetworkPolicies, Pods and Namespaces to the table this node should have: which local
//! pods are isolated (per direction), the rules of their chains and the peer address sets
//! those rules look up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use crate::table::{Desired, SetElems};

/// Name of the base chain (hook forward).
pub const FORWARD: &str = "forward";
/// Verdict map: local pod IP -> jump to its ingress chain.
pub const INGRESS_MAP: &str = "ingress-pods";
/// Verdict map: local pod IP -> jump to its egress chain.
pub const EGRESS_MAP: &str = "egress-pods";

/// A pod as policies see it: only pods with an IPv4 address on the pod network that have not
/// finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub node: String,
    /// Named container ports: (name, protocol number, port).
    pub named_ports: Vec<(String, u8, u16)>,
}

impl PodInfo {
    /// `None` for pods policies do not apply to: no IPv4 address yet, host network, or
    /// finished (Succeeded/Failed).
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let spec = pod.spec.as_ref()?;
        let status = pod.status.as_ref()?;
        if spec.host_network == Some(true)
            || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        {
            return None;
        }
        let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
        let mut named_ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) else {
                    continue;
                };
                if let Some(proto) = proto_number(p.protocol.as_deref()) {
                    named_ports.push((name.clone(), proto, port));
                }
            }
        }
        Some(PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node: spec.node_name.clone().unwrap_or_default(),
            named_ports,
        })
    }

    fn named_port(&self, name: &str, proto: u8) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| n == name && *p == proto)
            .map(|(_, _, port)| *port)
    }
}

/// What the table is computed from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub policies: Vec<NetworkPolicy>,
    pub pods: Vec<PodInfo>,
    /// Namespace name -> its labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// `TCP` (the default), `UDP`, `SCTP` as protocol numbers; `None` for anything else.
fn proto_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// Whether `labels` satisfy a metav1.LabelSelector (`{}` selects everything; an unknown
/// operator selects nothing, as the API server would have refused it).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let got = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => got.is_some_and(|g| values.contains(g)),
                "NotIn" => got.is_none_or(|g| !values.contains(g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

/// A short, unique name prefix for a policy's sets: `<namespace>.<name>` (namespaces have no
/// dots, so it cannot collide); `:` separates the suffixes (names never contain one).
fn policy_key(ns: &str, name: &str) -> String {
    format!("{ns}.{name}")
}

/// Which way a rule looks: ingress rules match the source against peers and the destination
/// port on the selected pod; egress rules the destination against peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn tag(self) -> &'static str {
        match self {
            Dir::Ingress => "i",
            Dir::Egress => "e",
        }
    }

    fn peer_field(self) -> &'static str {
        match self {
            Dir::Ingress => "saddr",
            Dir::Egress => "daddr",
        }
    }
}

/// A port entry after resolution: a protocol and optionally a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortMatch {
    proto: u8,
    range: Option<(u16, u16)>,
}

impl PortMatch {
    fn statements(&self) -> Vec<Value> {
        let mut out = vec![
            json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                                            "right": self.proto}}),
        ];
        let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
        match self.range {
            None => {}
            Some((a, b)) if a == b => {
                out.push(json!({"match": {"op": "==", "left": dport, "right": a}}));
            }
            Some((a, b)) => {
                out.push(json!({"match": {"op": ">=", "left": dport.clone(), "right": a}}));
                out.push(json!({"match": {"op": "<=", "left": dport, "right": b}}));
            }
        }
        out
    }
}

/// A numeric port entry (`port`, `port`+`endPort`, or none); `Err(name)` for a named port.
fn numeric_port(p: &NetworkPolicyPort) -> Option<Result<PortMatch, String>> {
    let proto = proto_number(p.protocol.as_deref())?;
    Some(match &p.port {
        None => Ok(PortMatch { proto, range: None }),
        Some(IntOrString::Int(n)) => {
            let start = u16::try_from(*n).ok()?;
            let end = match p.end_port {
                Some(e) => u16::try_from(e).ok().filter(|e| *e >= start)?,
                None => start,
            };
            Ok(PortMatch {
                proto,
                range: Some((start, end)),
            })
        }
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            Ok(n) => Ok(PortMatch {
                proto,
                range: Some((n, n)),
            }),
            Err(_) => Err(name.clone()),
        },
    })
}

/// The peers of one rule, resolved.
struct Peers<'a> {
    /// `from`/`to` absent or empty: everything.
    any: bool,
    /// Whether some peer is a pod/namespace selector (then a pod set exists, maybe empty).
    has_selectors: bool,
    pods: Vec<&'a PodInfo>,
    /// Merged, disjoint address ranges from ipBlocks (inclusive ends).
    ranges: Vec<(u32, u32)>,
    has_blocks: bool,
}

fn resolve_peers<'a>(
    peers: Option<&[NetworkPolicyPeer]>,
    policy_ns: &str,
    inputs: &'a Inputs,
) -> Peers<'a> {
    let peers = peers.unwrap_or_default();
    let mut out = Peers {
        any: peers.is_empty(),
        has_selectors: false,
        pods: Vec::new(),
        ranges: Vec::new(),
        has_blocks: false,
    };
    let mut seen = BTreeSet::new();
    let no_labels = BTreeMap::new();
    for peer in peers {
        if let Some(block) = &peer.ip_block {
            out.has_blocks = true;
            out.ranges.extend(block_ranges(block));
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue;
        }
        out.has_selectors = true;
        for pod in &inputs.pods {
            let ns_ok = match &peer.namespace_selector {
                None => pod.namespace == policy_ns,
                Some(sel) => selector_matches(
                    sel,
                    inputs.namespaces.get(&pod.namespace).unwrap_or(&no_labels),
                ),
            };
            let pod_ok = peer
                .pod_selector
                .as_ref()
                .is_none_or(|sel| selector_matches(sel, &pod.labels));
            if ns_ok && pod_ok && seen.insert((&pod.namespace, &pod.name)) {
                out.pods.push(pod);
            }
        }
    }
    out.ranges = merge(out.ranges);
    out
}

/// An ipBlock as disjoint inclusive ranges: its CIDR minus each `except`. IPv6 blocks and
/// unparsable CIDRs (refused by the API server's validation) give nothing.
fn block_ranges(block: &IPBlock) -> Vec<(u32, u32)> {
    let Some((start, end)) = cidr_range(&block.cidr) else {
        return Vec::new();
    };
    let mut ranges = vec![(start, end)];
    for ex in block.except.iter().flatten() {
        let Some((xs, xe)) = cidr_range(ex) else {
            continue;
        };
        ranges = ranges
            .into_iter()
            .flat_map(|(s, e)| {
                let mut keep = Vec::new();
                if xe < s || xs > e {
                    keep.push((s, e));
                } else {
                    if xs > s {
                        keep.push((s, xs - 1));
                    }
                    if xe < e {
                        keep.push((xe + 1, e));
                    }
                }
                keep
            })
            .collect();
    }
    ranges
}

/// The first and last address of an IPv4 CIDR.
fn cidr_range(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let start = u32::from(addr) & mask;
    Some((start, start | !mask))
}

/// Sorts and merges overlapping or adjacent ranges (an interval set must not overlap).
fn merge(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn lookup(dir: Dir, set: &str) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": dir.peer_field()}},
                     "right": format!("@{set}")}})
}

fn rule_with(mut head: Vec<Value>, ports: &PortMatch) -> Value {
    head.extend(ports.statements());
    head.push(json!({"return": null}));
    Value::Array(head)
}

/// The chain of a local pod for one direction.
pub fn pod_chain(ingress: bool, ip: Ipv4Addr) -> String {
    format!("{}:{ip}", if ingress { "ingress" } else { "egress" })
}

/// Rules of one policy rule for one selected pod, adding the sets they use to `sets`.
#[allow(clippy::too_many_arguments)]
fn rule_rules(
    dir: Dir,
    set_prefix: &str,
    peers: &Peers<'_>,
    ports: Option<&[NetworkPolicyPort]>,
    target: &PodInfo,
    inputs: &Inputs,
    sets: &mut BTreeMap<String, SetElems>,
    out: &mut Vec<Value>,
) {
    let pod_set = format!("{set_prefix}:pods");
    let cidr_set = format!("{set_prefix}:cidr");
    // The same for every pod the policy selects: built once.
    if peers.has_selectors {
        sets.entry(pod_set.clone())
            .or_insert_with(|| SetElems::Addrs(peers.pods.iter().map(|p| p.ip).collect()));
    }
    if peers.has_blocks {
        sets.entry(cidr_set.clone()).or_insert_with(|| {
            SetElems::Ranges(
                peers
                    .ranges
                    .iter()
                    .map(|(s, e)| (Ipv4Addr::from(*s), Ipv4Addr::from(*e)))
                    .collect(),
            )
        });
    }
    // Where the peer address may be: nothing to match (any), the pod set, the ipBlock set.
    let mut heads: Vec<Vec<Value>> = Vec::new();
    if peers.any {
        heads.push(Vec::new());
    }
    if peers.has_selectors {
        heads.push(vec![lookup(dir, &pod_set)]);
    }
    if peers.has_blocks {
        heads.push(vec![lookup(dir, &cidr_set)]);
    }
    let ports = ports.unwrap_or_default();
    let mut matches: Vec<PortMatch> = Vec::new();
    if ports.is_empty() {
        for head in &heads {
            let mut r = head.clone();
            r.push(json!({"return": null}));
            out.push(Value::Array(r));
        }
        return;
    }
    for (j, p) in ports.iter().enumerate() {
        match numeric_port(p) {
            None => {}
            Some(Ok(m)) => matches.push(m),
            Some(Err(name)) => {
                let Some(proto) = proto_number(p.protocol.as_deref()) else {
                    continue;
                };
                match dir {
                    // The port name is the selected pod's own.
                    Dir::Ingress => {
                        if let Some(n) = target.named_port(&name, proto) {
                            matches.push(PortMatch {
                                proto,
                                range: Some((n, n)),
                            });
                        }
                    }
                    // The port name is each destination pod's: one set per number it
                    // resolves to (ipBlock peers have no port names).
                    Dir::Egress => {
                        let candidates: Vec<&PodInfo> = if peers.any {
                            inputs.pods.iter().collect()
                        } else {
                            peers.pods.clone()
                        };
                        let mut by_port: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
                        for pod in candidates {
                            if let Some(n) = pod.named_port(&name, proto) {
                                by_port.entry(n).or_default().insert(pod.ip);
                            }
                        }
                        for (n, ips) in by_port {
                            let set = format!("{set_prefix}:port{j}:{n}");
                            sets.insert(set.clone(), SetElems::Addrs(ips));
                            out.push(rule_with(
                                vec![lookup(dir, &set)],
                                &PortMatch {
                                    proto,
                                    range: Some((n, n)),
                                },
                            ));
                        }
                    }
                }
            }
        }
    }
    for m in &matches {
        for head in &heads {
            out.push(rule_with(head.clone(), m));
        }
    }
}

/// The base chain: replies pass (only the original direction is policed, on every packet,
/// so a connection that becomes denied stops at its next packet), then the source's egress
/// chain and the destination's ingress chain when those pods are local and isolated.
fn forward_rules() -> Vec<Value> {
    vec![
        json!([{"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}},
               {"accept": null}]),
        json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "related"}},
               {"accept": null}]),
        json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}},
                         "data": format!("@{EGRESS_MAP}")}}]),
        json!([{"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                         "data": format!("@{INGRESS_MAP}")}}]),
    ]
}

/// The end of every pod chain: nothing allowed the packet. Packets of established TCP
/// connections are answered with a reset (the connection was allowed once and is cut now);
/// everything else is dropped.
fn deny_rules() -> Vec<Value> {
    vec![
        json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}},
               {"reject": {"type": "tcp reset"}}]),
        json!([{"counter": null}, {"drop": null}]),
    ]
}

/// Which directions a policy isolates (upstream defaulting of `policyTypes`).
fn policy_types(policy: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = &policy.spec else {
        return (false, false);
    };
    match &spec.policy_types {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// The whole table for `node`.
pub fn desired(inputs: &Inputs, node: &str) -> Desired {
    let mut d = Desired::default();
    d.chains.insert(FORWARD.to_string(), forward_rules());
    let mut policies: Vec<&NetworkPolicy> = inputs.policies.iter().collect();
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let local: Vec<&PodInfo> = inputs.pods.iter().filter(|p| p.node == node).collect();
    // Per isolated local pod and direction: its allow rules, in policy order.
    let mut ingress: BTreeMap<Ipv4Addr, Vec<Value>> = BTreeMap::new();
    let mut egress: BTreeMap<Ipv4Addr, Vec<Value>> = BTreeMap::new();
    for policy in policies {
        let Some(spec) = &policy.spec else {
            continue;
        };
        let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        let (isolates_in, isolates_out) = policy_types(policy);
        let selected: Vec<&PodInfo> = local
            .iter()
            .copied()
            .filter(|p| {
                p.namespace == ns
                    && spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, &p.labels))
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let key = policy_key(ns, name);
        for (dir, isolates, rules, chains) in [
            (
                Dir::Ingress,
                isolates_in,
                spec.ingress.as_ref().map(|r| {
                    r.iter()
                        .map(|r| (r.from.as_deref(), r.ports.as_deref()))
                        .collect::<Vec<_>>()
                }),
                &mut ingress,
            ),
            (
                Dir::Egress,
                isolates_out,
                spec.egress.as_ref().map(|r| {
                    r.iter()
                        .map(|r| (r.to.as_deref(), r.ports.as_deref()))
                        .collect::<Vec<_>>()
                }),
                &mut egress,
            ),
        ] {
            if !isolates {
                continue;
            }
            for pod in &selected {
                chains.entry(pod.ip).or_default();
            }
            for (r, (peers, ports)) in rules.unwrap_or_default().into_iter().enumerate() {
                let resolved = resolve_peers(peers, ns, inputs);
                let prefix = format!("{key}:{}{r}", dir.tag());
                for pod in &selected {
                    let mut out = Vec::new();
                    rule_rules(
                        dir,
                        &prefix,
                        &resolved,
                        ports,
                        pod,
                        inputs,
                        &mut d.sets,
                        &mut out,
                    );
                    chains.entry(pod.ip).or_default().extend(out);
                }
            }
        }
    }
    for (is_ingress, chains, map) in [(true, ingress, INGRESS_MAP), (false, egress, EGRESS_MAP)] {
        let entries = d.maps.entry(map).or_default();
        for (ip, mut rules) in chains {
            let chain = pod_chain(is_ingress, ip);
            rules.extend(deny_rules());
            entries.insert(ip, chain.clone());
            d.chains.insert(chain, rules);
        }
    }
    d
}
