//! The nftables table `ip mini-netpol` as data (`Desired`), the nft JSON commands that move the
//! kernel from what was applied to what is desired (`diff`: only changed set elements, chains
//! and map elements; the whole table on the first sync), and the shape check of a listing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::model::{EGRESS_MAP, FORWARD, INGRESS_MAP};

/// The table's family.
pub const FAMILY: &str = "ip";
/// The table mini's policy enforcement owns.
pub const TABLE: &str = "mini-netpol";

/// Elements of a peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetElems {
    /// Pod addresses (a hash set: elements are added and deleted one by one).
    Addrs(BTreeSet<Ipv4Addr>),
    /// ipBlock ranges, disjoint and sorted, inclusive (an interval set, rewritten whole when
    /// the policy changes).
    Ranges(Vec<(Ipv4Addr, Ipv4Addr)>),
}

impl SetElems {
    fn interval(&self) -> bool {
        matches!(self, SetElems::Ranges(_))
    }

    fn json(&self) -> Vec<Value> {
        match self {
            SetElems::Addrs(ips) => ips.iter().map(|ip| json!(ip.to_string())).collect(),
            SetElems::Ranges(ranges) => ranges.iter().map(|(s, e)| range_json(*s, *e)).collect(),
        }
    }
}

fn range_json(s: Ipv4Addr, e: Ipv4Addr) -> Value {
    if s == e {
        json!(s.to_string())
    } else {
        json!({"range": [s.to_string(), e.to_string()]})
    }
}

/// The whole table as it should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// Chain name -> rules (each its JSON `expr` array); `forward` is the base chain.
    pub chains: BTreeMap<String, Vec<Value>>,
    pub sets: BTreeMap<String, SetElems>,
    /// Verdict map -> local pod IP -> the chain to jump to.
    pub maps: BTreeMap<&'static str, BTreeMap<Ipv4Addr, String>>,
}

impl Desired {
    /// The rules of a chain.
    pub fn chain_rules(&self, chain: &str) -> Option<&[Value]> {
        self.chains.get(chain).map(Vec::as_slice)
    }

    /// The chain a verdict map sends `ip` to.
    pub fn map_target(&self, map: &str, ip: Ipv4Addr) -> Option<&str> {
        self.maps.get(map)?.get(&ip).map(String::as_str)
    }
}

fn table_obj() -> Value {
    json!({"table": {"family": FAMILY, "name": TABLE}})
}

fn chain_obj(name: &str) -> Value {
    let mut chain = json!({"family": FAMILY, "table": TABLE, "name": name});
    if name == FORWARD {
        chain["type"] = json!("filter");
        chain["hook"] = json!("forward");
        chain["prio"] = json!(0);
        chain["policy"] = json!("accept");
    }
    json!({"chain": chain})
}

fn rule_obj(chain: &str, expr: &Value) -> Value {
    json!({"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}})
}

fn set_obj(name: &str, interval: bool) -> Value {
    let mut set = json!({"family": FAMILY, "table": TABLE, "name": name, "type": "ipv4_addr"});
    if interval {
        set["flags"] = json!(["interval"]);
    }
    json!({"set": set})
}

fn map_obj(name: &str) -> Value {
    json!({"map": {"family": FAMILY, "table": TABLE, "name": name, "type": "ipv4_addr", "map": "verdict"}})
}

fn elements_obj(set: &str, elems: Vec<Value>) -> Value {
    json!({"element": {"family": FAMILY, "table": TABLE, "name": set, "elem": elems}})
}

fn map_elem(ip: Ipv4Addr, chain: &str) -> Value {
    json!([ip.to_string(), {"jump": {"target": chain}}])
}

fn cmd(verb: &str, obj: Value) -> Value {
    json!({ verb: obj })
}

const MAPS: [&str; 2] = [INGRESS_MAP, EGRESS_MAP];

/// The commands that turn `applied` into `desired`; with no `applied` (first sync, a failed
/// apply, or a table changed behind our back) the table is deleted and recreated in the same
/// batch, so traffic never sees it half-built.
pub fn diff(applied: Option<&Desired>, desired: &Desired) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(old) = applied else {
        out.push(cmd("add", table_obj()));
        out.push(cmd("delete", table_obj()));
        out.push(cmd("add", table_obj()));
        for (name, elems) in &desired.sets {
            out.push(cmd("add", set_obj(name, elems.interval())));
            let e = elems.json();
            if !e.is_empty() {
                out.push(cmd("add", elements_obj(name, e)));
            }
        }
        for map in MAPS {
            out.push(cmd("add", map_obj(map)));
        }
        for name in desired.chains.keys() {
            out.push(cmd("add", chain_obj(name)));
        }
        for (name, rules) in &desired.chains {
            for r in rules {
                out.push(cmd("add", rule_obj(name, r)));
            }
        }
        for map in MAPS {
            let elems: Vec<Value> = desired
                .maps
                .get(map)
                .into_iter()
                .flatten()
                .map(|(ip, chain)| map_elem(*ip, chain))
                .collect();
            if !elems.is_empty() {
                out.push(cmd("add", elements_obj(map, elems)));
            }
        }
        return out;
    };

    // 1. sets: new ones whole; pod sets by element; ipBlock sets rewritten when changed.
    for (name, elems) in &desired.sets {
        match (old.sets.get(name), elems) {
            (None, _) => {
                out.push(cmd("add", set_obj(name, elems.interval())));
                let e = elems.json();
                if !e.is_empty() {
                    out.push(cmd("add", elements_obj(name, e)));
                }
            }
            (Some(prev), _) if prev == elems => {}
            (Some(SetElems::Addrs(before)), SetElems::Addrs(after)) => {
                let gone: Vec<Value> = before
                    .difference(after)
                    .map(|ip| json!(ip.to_string()))
                    .collect();
                if !gone.is_empty() {
                    out.push(cmd("delete", elements_obj(name, gone)));
                }
                let new: Vec<Value> = after
                    .difference(before)
                    .map(|ip| json!(ip.to_string()))
                    .collect();
                if !new.is_empty() {
                    out.push(cmd("add", elements_obj(name, new)));
                }
            }
            (Some(_), _) => {
                out.push(cmd("flush", set_obj(name, true)));
                let e = elems.json();
                if !e.is_empty() {
                    out.push(cmd("add", elements_obj(name, e)));
                }
            }
        }
    }
    // 2. new chains, then the rules of new and changed chains.
    for name in desired.chains.keys() {
        if !old.chains.contains_key(name) {
            out.push(cmd("add", chain_obj(name)));
        }
    }
    for (name, rules) in &desired.chains {
        match old.chains.get(name) {
            Some(prev) if prev == rules => continue,
            Some(_) => out.push(cmd("flush", chain_obj(name))),
            None => {}
        }
        for r in rules {
            out.push(cmd("add", rule_obj(name, r)));
        }
    }
    // 3. map elements: removed or retargeted ones out, new or retargeted ones in.
    for map in MAPS {
        let empty = BTreeMap::new();
        let before = old.maps.get(map).unwrap_or(&empty);
        let after = desired.maps.get(map).unwrap_or(&empty);
        let gone: Vec<Value> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| json!(k.to_string()))
            .collect();
        if !gone.is_empty() {
            out.push(cmd("delete", elements_obj(map, gone)));
        }
        let new: Vec<Value> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, chain)| map_elem(*k, chain))
            .collect();
        if !new.is_empty() {
            out.push(cmd("add", elements_obj(map, new)));
        }
    }
    // 4. chains no longer wanted (unreferenced now): flush, then delete; 5. their sets.
    let removed: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !desired.chains.contains_key(*name))
        .collect();
    for name in &removed {
        out.push(cmd("flush", chain_obj(name)));
    }
    for name in &removed {
        out.push(cmd("delete", chain_obj(name)));
    }
    for (name, elems) in &old.sets {
        if !desired.sets.contains_key(name) {
            out.push(cmd("delete", set_obj(name, elems.interval())));
        }
    }
    out
}

/// Whether `diff` can move from `applied` to `desired` in place: a set that changed kind
/// (hash vs interval) needs a rebuild.
pub fn incremental_ok(applied: &Desired, desired: &Desired) -> bool {
    desired.sets.iter().all(|(name, e)| {
        applied
            .sets
            .get(name)
            .is_none_or(|prev| prev.interval() == e.interval())
    })
}

/// The batch document for a list of commands.
pub fn batch(commands: Vec<Value>) -> String {
    json!({"nftables": commands}).to_string()
}

/// What a listing must show for the table to be the one applied: chains with their rule
/// counts, set names with element counts of pod sets, element counts per map.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Shape {
    pub chains: BTreeMap<String, usize>,
    /// Set name -> element count (`None` for interval sets, whose listing merges ranges).
    pub sets: BTreeMap<String, Option<usize>>,
    pub maps: BTreeMap<String, usize>,
}

impl Shape {
    pub fn of(d: &Desired) -> Shape {
        Shape {
            chains: d.chains.iter().map(|(n, r)| (n.clone(), r.len())).collect(),
            sets: d
                .sets
                .iter()
                .map(|(n, e)| {
                    let count = match e {
                        SetElems::Addrs(ips) => Some(ips.len()),
                        SetElems::Ranges(_) => None,
                    };
                    (n.clone(), count)
                })
                .collect(),
            maps: MAPS
                .iter()
                .map(|m| (m.to_string(), d.maps.get(m).map_or(0, BTreeMap::len)))
                .collect(),
        }
    }

    /// From `nft -j list table` output; `None` if it cannot be read.
    pub fn from_listing(listing: &str) -> Option<Shape> {
        let doc: Value = serde_json::from_str(listing).ok()?;
        let mut shape = Shape::default();
        let count = |o: &Value| o.get("elem").and_then(Value::as_array).map_or(0, Vec::len);
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
                let interval = set
                    .get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|x| x == "interval"));
                shape.sets.insert(
                    set.get("name")?.as_str()?.to_string(),
                    (!interval).then(|| count(set)),
                );
            } else if let Some(map) = obj.get("map") {
                shape
                    .maps
                    .insert(map.get("name")?.as_str()?.to_string(), count(map));
            }
        }
        Some(shape)
    }
}
