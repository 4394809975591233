//! Reads the kernel's nf_tables dump messages back into the JSON objects `nft -j list table`
//! prints: the table, its chains, named sets and maps with their elements, and its rules
//! (chain, handle, and of the expressions only the jump/goto verdicts: what a caller needs to
//! find the rules that reference a chain before deleting it).

use serde_json::{json, Map, Value};

use super::encode::SetInfo;
use super::types::{self, Dtype};
use super::wire::{self, be32, be64, find, string};

pub fn family_name(family: u8) -> &'static str {
    match family {
        2 => "ip",
        10 => "ip6",
        1 => "inet",
        3 => "arp",
        7 => "bridge",
        5 => "netdev",
        _ => "unknown",
    }
}

/// The attributes of an nf_tables message payload (after `nfgenmsg`).
fn top(payload: &[u8]) -> Vec<(u16, &[u8])> {
    wire::attrs(payload.get(4..).unwrap_or_default())
}

pub fn table(family: u8, payload: &[u8]) -> Value {
    let a = top(payload);
    let mut t = Map::new();
    t.insert("family".into(), family_name(family).into());
    t.insert(
        "name".into(),
        find(&a, wire::table::NAME)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    if let Some(h) = find(&a, wire::table::HANDLE).and_then(be64) {
        t.insert("handle".into(), h.into());
    }
    json!({ "table": t })
}

/// The table a chain, set or rule message belongs to (attribute 1 in all three).
pub fn table_of(payload: &[u8]) -> Option<String> {
    find(&top(payload), 1).map(string)
}

pub fn chain(family: u8, payload: &[u8]) -> Value {
    let a = top(payload);
    let mut c = Map::new();
    c.insert("family".into(), family_name(family).into());
    c.insert(
        "table".into(),
        find(&a, wire::chain::TABLE)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    c.insert(
        "name".into(),
        find(&a, wire::chain::NAME)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    if let Some(h) = find(&a, wire::chain::HANDLE).and_then(be64) {
        c.insert("handle".into(), h.into());
    }
    if let Some(hook) = find(&a, wire::chain::HOOK) {
        let h = wire::attrs(hook);
        if let Some(t) = find(&a, wire::chain::TYPE) {
            c.insert("type".into(), string(t).into());
        }
        let name = match find(&h, wire::chain::HOOK_NUM).and_then(be32) {
            Some(0) => "prerouting",
            Some(1) => "input",
            Some(2) => "forward",
            Some(3) => "output",
            Some(4) => "postrouting",
            _ => "unknown",
        };
        c.insert("hook".into(), name.into());
        if let Some(p) = find(&h, wire::chain::HOOK_PRIORITY).and_then(be32) {
            c.insert("prio".into(), (p as i32).into());
        }
        let policy = match find(&a, wire::chain::POLICY).and_then(be32) {
            Some(0) => "drop",
            _ => "accept",
        };
        c.insert("policy".into(), policy.into());
    }
    json!({ "chain": c })
}

/// A set or map: its name, what its elements look like, and its JSON (without elements).
pub struct SetListing {
    pub name: String,
    pub info: SetInfo,
    pub is_map: bool,
    pub anonymous: bool,
    pub json: Map<String, Value>,
}

pub fn set(family: u8, payload: &[u8]) -> Result<SetListing, String> {
    let a = top(payload);
    let name = find(&a, wire::set::NAME).map(string).unwrap_or_default();
    let flags = find(&a, wire::set::FLAGS).and_then(be32).unwrap_or(0);
    let key_type = find(&a, wire::set::KEY_TYPE).and_then(be32).unwrap_or(0);
    let key = types::split_concat_id(key_type)
        .ok_or_else(|| format!("set {name} has key type {key_type:#x}, which is not supported"))?;
    let data =
        match find(&a, wire::set::DATA_TYPE).and_then(be32) {
            None => None,
            Some(wire::data::TYPE_VERDICT) => Some(Dtype::Verdict),
            Some(t) => Some(Dtype::from_id(t).ok_or_else(|| {
                format!("map {name} has value type {t:#x}, which is not supported")
            })?),
        };
    let is_map = flags & wire::set::F_MAP != 0;
    let mut j = Map::new();
    j.insert("family".into(), family_name(family).into());
    j.insert("name".into(), name.clone().into());
    j.insert(
        "table".into(),
        find(&a, wire::set::TABLE)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    let type_json = match key.as_slice() {
        [one] => Value::from(one.name()),
        many => Value::from(many.iter().map(|t| t.name()).collect::<Vec<_>>()),
    };
    j.insert("type".into(), type_json);
    if let Some(h) = find(&a, wire::set::HANDLE).and_then(be64) {
        j.insert("handle".into(), h.into());
    }
    if let (true, Some(d)) = (is_map, data) {
        j.insert("map".into(), d.name().into());
    }
    if let Some(size) = find(&a, wire::set::DESC)
        .and_then(|d| find(&wire::attrs(d), wire::set::DESC_SIZE))
        .and_then(be32)
    {
        j.insert("size".into(), size.into());
    }
    let mut flag_names = Vec::new();
    for (bit, n) in [
        (wire::set::F_CONSTANT, "constant"),
        (wire::set::F_INTERVAL, "interval"),
        (wire::set::F_TIMEOUT, "timeout"),
    ] {
        if flags & bit != 0 {
            flag_names.push(n);
        }
    }
    if !flag_names.is_empty() {
        j.insert("flags".into(), flag_names.into());
    }
    if let Some(t) = find(&a, wire::set::TIMEOUT).and_then(be64) {
        j.insert("timeout".into(), (t / 1000).into());
    }
    Ok(SetListing {
        name,
        info: SetInfo {
            key,
            data,
            flags,
            id: None,
        },
        is_map,
        anonymous: flags & wire::set::F_ANONYMOUS != 0,
        json: j,
    })
}

/// A set whose key or value type is not one this module knows: listed by name, table and raw
/// type numbers (without elements) rather than failing the whole listing.
pub fn unknown_set(family: u8, payload: &[u8]) -> Value {
    let a = top(payload);
    let flags = find(&a, wire::set::FLAGS).and_then(be32).unwrap_or(0);
    let kind = if flags & wire::set::F_MAP != 0 {
        "map"
    } else {
        "set"
    };
    let mut j = Map::new();
    j.insert("family".into(), family_name(family).into());
    j.insert(
        "name".into(),
        find(&a, wire::set::NAME)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    j.insert(
        "table".into(),
        find(&a, wire::set::TABLE)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    j.insert(
        "type".into(),
        find(&a, wire::set::KEY_TYPE)
            .and_then(be32)
            .unwrap_or(0)
            .into(),
    );
    let mut object = Map::new();
    object.insert(kind.into(), Value::Object(j));
    Value::Object(object)
}

fn verdict_json(v: &[u8]) -> Value {
    let a = wire::attrs(v);
    let code = find(&a, wire::data::VERDICT_CODE)
        .and_then(be32)
        .map(|c| c as i32);
    let chain = find(&a, wire::data::VERDICT_CHAIN).map(string);
    match code {
        Some(wire::verdict::ACCEPT) => json!({"accept": null}),
        Some(wire::verdict::DROP) => json!({"drop": null}),
        Some(wire::verdict::RETURN) => json!({"return": null}),
        Some(wire::verdict::CONTINUE) => json!({"continue": null}),
        Some(wire::verdict::JUMP) => json!({"jump": {"target": chain.unwrap_or_default()}}),
        Some(wire::verdict::GOTO) => json!({"goto": {"target": chain.unwrap_or_default()}}),
        other => json!({ "verdict": other }),
    }
}

/// The elements of one element-dump message, as nft prints them. Interval ends are skipped
/// (an interval is listed by its first value).
pub fn elements(info: &SetInfo, payload: &[u8], out: &mut Vec<Value>) {
    let a = top(payload);
    let Some(list) = find(&a, wire::elem::LIST_ELEMENTS) else {
        return;
    };
    for (_, e) in wire::attrs(list) {
        let ea = wire::attrs(e);
        let flags = find(&ea, wire::elem::FLAGS).and_then(be32).unwrap_or(0);
        if flags & wire::elem::F_INTERVAL_END != 0 {
            continue;
        }
        let key = find(&ea, wire::elem::KEY)
            .and_then(|k| find(&wire::attrs(k), wire::data::VALUE))
            .map(|k| types::decode_key(&info.key, k))
            .unwrap_or(Value::Null);
        let timeout = find(&ea, wire::elem::TIMEOUT).and_then(be64);
        let key = match timeout {
            Some(t) => {
                let mut inner = json!({"val": key, "timeout": t / 1000});
                if let Some(x) = find(&ea, wire::elem::EXPIRATION).and_then(be64) {
                    inner["expires"] = (x / 1000).into();
                }
                json!({ "elem": inner })
            }
            None => key,
        };
        let data = find(&ea, wire::elem::DATA).map(|d| {
            let da = wire::attrs(d);
            match (
                find(&da, wire::data::VERDICT),
                find(&da, wire::data::VALUE),
                info.data,
            ) {
                (Some(v), _, _) => verdict_json(v),
                (None, Some(v), Some(t)) => t.decode(v),
                _ => Value::Null,
            }
        });
        out.push(match data {
            Some(d) => json!([key, d]),
            None => key,
        });
    }
}

pub fn rule(family: u8, payload: &[u8]) -> Value {
    let a = top(payload);
    let mut r = Map::new();
    r.insert("family".into(), family_name(family).into());
    r.insert(
        "table".into(),
        find(&a, wire::rule::TABLE)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    r.insert(
        "chain".into(),
        find(&a, wire::rule::CHAIN)
            .map(string)
            .unwrap_or_default()
            .into(),
    );
    if let Some(h) = find(&a, wire::rule::HANDLE).and_then(be64) {
        r.insert("handle".into(), h.into());
    }
    let verdicts = find(&a, wire::rule::EXPRESSIONS)
        .map(rule_verdicts)
        .unwrap_or_default();
    if !verdicts.is_empty() {
        r.insert("expr".into(), Value::Array(verdicts));
    }
    json!({ "rule": r })
}

/// `NFTA_IMMEDIATE_DATA`: the value an `immediate` expression loads.
const IMMEDIATE_DATA: u16 = 2;

/// The jump and goto statements among a rule's expressions (`immediate` loads of a verdict with
/// a chain), as `{"jump": {"target": chain}}` / `{"goto": ...}`.
fn rule_verdicts(expressions: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    for (kind, elem) in wire::attrs(expressions) {
        if kind != wire::LIST_ELEM {
            continue;
        }
        let e = wire::attrs(elem);
        if find(&e, wire::expr::NAME).map(string).as_deref() != Some("immediate") {
            continue;
        }
        let Some(verdict) = find(&e, wire::expr::DATA)
            .map(wire::attrs)
            .and_then(|d| find(&d, IMMEDIATE_DATA).map(wire::attrs))
            .and_then(|v| find(&v, wire::data::VERDICT).map(wire::attrs))
        else {
            continue;
        };
        let code = find(&verdict, wire::data::VERDICT_CODE)
            .and_then(be32)
            .map(|c| c as i32);
        let chain = find(&verdict, wire::data::VERDICT_CHAIN).map(string);
        match (code, chain) {
            (Some(wire::verdict::JUMP), Some(c)) => out.push(json!({"jump": {"target": c}})),
            (Some(wire::verdict::GOTO), Some(c)) => out.push(json!({"goto": {"target": c}})),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft_netlink::encode::Encoder;

    /// The kernel dumps sets, elements and chains with the attributes they were created with
    /// (plus handles): decoding the encoder's own messages must give nft's listing shape.
    #[test]
    fn decoded_messages_read_like_nft_listing() {
        let mut lookup = |_: u8, _: &str, _: &str| Ok(None);
        let doc = r#"{"nftables":[
            {"add":{"map":{"family":"ip","table":"mini","name":"service-nodeports","type":["inet_proto","inet_service"],"map":"verdict"}}},
            {"add":{"set":{"family":"ip","table":"mini","name":"aff","type":"ipv4_addr","flags":["timeout"],"timeout":30}}},
            {"add":{"chain":{"family":"ip","table":"mini","name":"nat-output","type":"nat","hook":"output","prio":-100,"policy":"accept"}}},
            {"add":{"element":{"family":"ip","table":"mini","name":"service-nodeports","elem":[[{"concat":["tcp",30080]},{"goto":{"target":"ext-x"}}]]}}},
            {"add":{"element":{"family":"ip","table":"mini","name":"aff","elem":[{"elem":{"val":"10.42.0.2","timeout":30}}]}}}
        ]}"#;
        let batch = Encoder::new(1, &mut lookup).document(doc).expect("encode");
        let msgs = wire::messages(&batch.bytes).expect("parse");
        let map = set(2, msgs[1].payload).expect("map");
        assert!(map.is_map && !map.anonymous);
        assert_eq!(
            Value::Object(map.json.clone()),
            json!({"family": "ip", "name": "service-nodeports", "table": "mini",
                   "type": ["inet_proto", "inet_service"], "map": "verdict"})
        );
        let aff = set(2, msgs[2].payload).expect("set");
        assert_eq!(
            Value::Object(aff.json.clone()),
            json!({"family": "ip", "name": "aff", "table": "mini", "type": "ipv4_addr",
                   "flags": ["timeout"], "timeout": 30})
        );
        assert_eq!(
            chain(2, msgs[3].payload),
            json!({"chain": {"family": "ip", "table": "mini", "name": "nat-output",
                   "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}})
        );
        let mut elems = Vec::new();
        elements(&map.info, msgs[4].payload, &mut elems);
        elements(&aff.info, msgs[5].payload, &mut elems);
        assert_eq!(
            elems,
            vec![
                json!([{"concat": ["tcp", 30080]}, {"goto": {"target": "ext-x"}}]),
                json!({"elem": {"val": "10.42.0.2", "timeout": 30}})
            ]
        );
    }

    /// A rule is listed with its chain and handle and, of its expressions, the jumps and gotos
    /// (what a caller needs to delete the rules that reference a chain).
    #[test]
    fn decoded_rule_lists_its_jump_and_goto_targets() {
        let mut lookup = |_: u8, _: &str, _: &str| Ok(None);
        let doc = r#"{"nftables":[
            {"add":{"rule":{"family":"ip","table":"mini-portmap","chain":"prerouting","expr":[
                {"match":{"op":"==","left":{"fib":{"result":"type","flags":["daddr"]}},"right":"local"}},
                {"jump":{"target":"dnat-abc"}}]}}},
            {"add":{"rule":{"family":"ip","table":"mini-portmap","chain":"output","expr":[
                {"goto":{"target":"snat-abc"}}]}}},
            {"add":{"rule":{"family":"ip","table":"mini-portmap","chain":"output","expr":[{"accept":null}]}}}
        ]}"#;
        let batch = Encoder::new(1, &mut lookup).document(doc).expect("encode");
        let msgs = wire::messages(&batch.bytes).expect("parse");
        assert_eq!(
            rule(2, msgs[1].payload),
            json!({"rule": {"family": "ip", "table": "mini-portmap", "chain": "prerouting",
                   "expr": [{"jump": {"target": "dnat-abc"}}]}})
        );
        assert_eq!(
            rule(2, msgs[2].payload),
            json!({"rule": {"family": "ip", "table": "mini-portmap", "chain": "output",
                   "expr": [{"goto": {"target": "snat-abc"}}]}})
        );
        assert_eq!(
            rule(2, msgs[3].payload),
            json!({"rule": {"family": "ip", "table": "mini-portmap", "chain": "output"}})
        );
    }

    #[test]
    fn set_of_an_unknown_type_is_listed_by_name_not_an_error() {
        let mut b = wire::Builder::new();
        b.begin_nft(wire::NEWSET, 0, 1, 2);
        b.put_str(wire::set::TABLE, "mini");
        b.put_str(wire::set::NAME, "odd");
        b.put_u32(wire::set::FLAGS, wire::set::F_MAP);
        b.put_u32(wire::set::KEY_TYPE, 63);
        b.end();
        let msgs = wire::messages(&b.buf).expect("parse");
        assert!(set(2, msgs[0].payload).is_err());
        assert_eq!(
            unknown_set(2, msgs[0].payload),
            json!({"map": {"family": "ip", "name": "odd", "table": "mini", "type": 63}})
        );
    }
}
