//! Unit tests: policies to desired rules and sets, incremental diffs, the enforcer's sync and
//! tamper check with `FakeNft`, and (root only) the batches applied to a real kernel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use mini_sys::nft::FakeNft;
use serde_json::{json, Value};

use super::*;
use crate::table::{diff, Shape};

fn pod(ns: &str, name: &str, ip: &str, node: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: ip.parse().expect("ip"),
        node: node.into(),
        named_ports: Vec::new(),
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name}, "spec": spec,
    }))
    .expect("policy")
}

fn inputs(policies: Vec<NetworkPolicy>, pods: Vec<PodInfo>) -> Inputs {
    let mut namespaces = BTreeMap::new();
    namespaces.insert(
        "default".to_string(),
        BTreeMap::from([("team".to_string(), "a".to_string())]),
    );
    namespaces.insert(
        "other".to_string(),
        BTreeMap::from([("team".to_string(), "b".to_string())]),
    );
    Inputs {
        policies,
        pods,
        namespaces,
    }
}

fn cluster() -> Vec<PodInfo> {
    vec![
        pod("default", "web", "10.42.0.5", "n1", &[("app", "web")]),
        pod("default", "client", "10.42.0.6", "n1", &[("app", "client")]),
        pod("default", "remote", "10.42.1.7", "n2", &[("app", "client")]),
        pod("other", "tool", "10.42.1.8", "n2", &[("app", "client")]),
    ]
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn addrs(d: &Desired, set: &str) -> Vec<String> {
    match d.sets.get(set) {
        Some(SetElems::Addrs(ips)) => ips.iter().map(ToString::to_string).collect(),
        other => panic!("set {set}: {other:?}"),
    }
}

fn deny_all() -> NetworkPolicy {
    policy(
        "default",
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
    )
}

#[test]
fn desired_without_policies_has_only_the_base_chain() {
    let d = desired(&inputs(Vec::new(), cluster()), "n1");
    assert_eq!(d.chains.keys().collect::<Vec<_>>(), ["forward"]);
    assert!(d.sets.is_empty());
    assert!(d.maps.values().all(BTreeMap::is_empty));
    let forward = d.chain_rules("forward").expect("forward");
    assert_eq!(forward[0][0]["match"]["right"], "reply");
    assert_eq!(forward[2][0]["vmap"]["data"], "@egress-pods");
    assert_eq!(forward[3][0]["vmap"]["data"], "@ingress-pods");
}

#[test]
fn desired_default_deny_ingress_isolates_the_selected_local_pod_only() {
    let d = desired(&inputs(vec![deny_all()], cluster()), "n1");
    assert_eq!(
        d.map_target(INGRESS_MAP, ip("10.42.0.5")),
        Some("ingress:10.42.0.5")
    );
    assert_eq!(d.map_target(INGRESS_MAP, ip("10.42.0.6")), None);
    assert!(d.maps[EGRESS_MAP].is_empty());
    let rules = d.chain_rules("ingress:10.42.0.5").expect("chain");
    assert_eq!(rules.len(), 2, "only the deny rules: {rules:?}");
    assert_eq!(rules[0][1]["reject"]["type"], "tcp reset");
    assert_eq!(rules[1][1], json!({"drop": null}));
    // Node n2 runs no selected pod: nothing but the base chain.
    let d2 = desired(&inputs(vec![deny_all()], cluster()), "n2");
    assert_eq!(d2.chains.len(), 1);
}

#[test]
fn desired_pod_selector_allow_matches_same_namespace_pods_on_every_node() {
    let allow = policy(
        "default",
        "allow",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    );
    let d = desired(&inputs(vec![deny_all(), allow], cluster()), "n1");
    assert_eq!(
        addrs(&d, "default.allow:i0:pods"),
        ["10.42.0.6", "10.42.1.7"]
    );
    let rules = d.chain_rules("ingress:10.42.0.5").expect("chain");
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0],
        json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                          "right": "@default.allow:i0:pods"}}, {"return": null}])
    );
}

#[test]
fn desired_namespace_selector_alone_and_with_pod_selector() {
    let p = policy(
        "default",
        "ns",
        json!({"podSelector": {},
               "ingress": [
                 {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]},
                 {"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
                            "podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let d = desired(&inputs(vec![p], cluster()), "n1");
    assert_eq!(addrs(&d, "default.ns:i0:pods"), ["10.42.1.8"]);
    assert_eq!(addrs(&d, "default.ns:i1:pods"), ["10.42.0.5"]);
    // `podSelector: {}` isolates both local pods of the namespace.
    assert_eq!(d.maps[INGRESS_MAP].len(), 2);
}

#[test]
fn desired_ip_block_except_becomes_disjoint_ranges() {
    let p = policy(
        "default",
        "egress",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16", "10.99.0.0/24"]}},
                                  {"ipBlock": {"cidr": "10.42.0.5/32"}}],
                           "ports": [{"protocol": "TCP", "port": 80}]}]}),
    );
    let d = desired(&inputs(vec![p], cluster()), "n1");
    let want: Vec<(Ipv4Addr, Ipv4Addr)> = vec![
        (ip("10.0.0.0"), ip("10.41.255.255")),
        (ip("10.42.0.5"), ip("10.42.0.5")),
        (ip("10.43.0.0"), ip("10.98.255.255")),
        (ip("10.99.1.0"), ip("10.255.255.255")),
    ];
    assert_eq!(
        d.sets.get("default.egress:e0:cidr"),
        Some(&SetElems::Ranges(want))
    );
    assert!(!d.sets.contains_key("default.egress:e0:pods"));
    let rules = d.chain_rules("egress:10.42.0.6").expect("chain");
    assert_eq!(rules[0][0]["match"]["left"]["payload"]["field"], "daddr");
    assert_eq!(rules[0][1]["match"]["right"], 6);
    assert_eq!(rules[0][2]["match"]["right"], 80);
    assert!(d.maps[INGRESS_MAP].is_empty(), "egress only");
}

#[test]
fn desired_ports_ranges_and_protocols() {
    let p = policy(
        "default",
        "ports",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": 8000, "endPort": 8080}, {"protocol": "UDP", "port": 53},
                                       {"protocol": "SCTP"}]}]}),
    );
    let d = desired(&inputs(vec![p], cluster()), "n1");
    let rules = d.chain_rules("ingress:10.42.0.5").expect("chain");
    // No `from`: any source, so no lookup.
    assert_eq!(
        rules[0],
        json!([
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 6}},
            {"match": {"op": ">=", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 8000}},
            {"match": {"op": "<=", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 8080}},
            {"return": null}])
    );
    assert_eq!(rules[1][0]["match"]["right"], 17);
    assert_eq!(rules[1][1]["match"]["right"], 53);
    assert_eq!(
        rules[2],
        json!([{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 132}}, {"return": null}])
    );
    assert_eq!(rules.len(), 5);
}

#[test]
fn desired_named_ports_resolve_on_the_target_for_ingress_and_per_peer_for_egress() {
    let mut pods = cluster();
    pods[0].named_ports = vec![("http".into(), 6, 8080)];
    pods[2].named_ports = vec![("http".into(), 6, 9090)];
    pods[3].named_ports = vec![("http".into(), 6, 8080), ("dns".into(), 17, 53)];
    let ing = policy(
        "default",
        "ing",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    );
    let eg = policy(
        "default",
        "eg",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "http"}]}]}),
    );
    let d = desired(&inputs(vec![ing, eg], pods), "n1");
    // Ingress: web names 8080; client names nothing, so it allows nothing.
    let web = d.chain_rules("ingress:10.42.0.5").expect("web");
    assert_eq!(web.len(), 3);
    assert_eq!(web[0][1]["match"]["right"], 8080);
    assert_eq!(d.chain_rules("ingress:10.42.0.6").expect("client").len(), 2);
    // Egress to any pod naming "http": one set per number.
    assert_eq!(
        addrs(&d, "default.eg:e0:port0:8080"),
        ["10.42.0.5", "10.42.1.8"]
    );
    assert_eq!(addrs(&d, "default.eg:e0:port0:9090"), ["10.42.1.7"]);
    let client = d.chain_rules("egress:10.42.0.6").expect("egress");
    assert_eq!(client.len(), 4);
    assert_eq!(client[1][2]["match"]["right"], 9090);
}

#[test]
fn desired_policy_types_default_from_the_rules_present() {
    let both = policy(
        "default",
        "both",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}),
    );
    let d = desired(&inputs(vec![both], cluster()), "n1");
    assert_eq!(d.maps[INGRESS_MAP].len(), 1);
    assert_eq!(d.maps[EGRESS_MAP].len(), 1);
    // `egress: [{}]` allows everything: one bare return before the deny rules.
    assert_eq!(
        d.chain_rules("egress:10.42.0.5").expect("chain")[0],
        json!([{"return": null}])
    );
}

#[test]
fn selector_matches_expressions_like_upstream() {
    let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
    let sel = |v: Value| serde_json::from_value(v).expect("selector");
    assert!(selector_matches(&sel(json!({})), &labels));
    assert!(selector_matches(
        &sel(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]})),
        &labels
    ));
    assert!(!selector_matches(
        &sel(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]})),
        &labels
    ));
    assert!(selector_matches(
        &sel(json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]})),
        &labels
    ));
    assert!(!selector_matches(
        &sel(json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]})),
        &labels
    ));
}

fn allow_clients() -> NetworkPolicy {
    policy(
        "default",
        "allow",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )
}

#[test]
fn diff_new_peer_pod_is_one_element_add_and_nothing_else() {
    let before = desired(&inputs(vec![allow_clients()], cluster()), "n1");
    let mut pods = cluster();
    pods.push(pod(
        "default",
        "c3",
        "10.42.2.9",
        "n3",
        &[("app", "client")],
    ));
    let after = desired(&inputs(vec![allow_clients()], pods), "n1");
    let cmds = diff(Some(&before), &after);
    assert_eq!(
        cmds,
        vec![
            json!({"add": {"element": {"family": "ip", "table": "mini-netpol",
                                         "name": "default.allow:i0:pods", "elem": ["10.42.2.9"]}}})
        ]
    );
    assert!(diff(Some(&after), &after).is_empty());
}

#[test]
fn diff_removing_the_policy_removes_map_element_then_chain_then_set() {
    let before = desired(&inputs(vec![allow_clients()], cluster()), "n1");
    let after = desired(&inputs(Vec::new(), cluster()), "n1");
    let cmds: Vec<String> = diff(Some(&before), &after)
        .iter()
        .map(|c| {
            let (verb, obj) = c.as_object().expect("obj").iter().next().expect("one");
            let (kind, body) = obj.as_object().expect("obj").iter().next().expect("one");
            format!(
                "{verb} {kind} {}",
                body["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        cmds,
        [
            "delete element ingress-pods",
            "flush chain ingress:10.42.0.5",
            "delete chain ingress:10.42.0.5",
            "delete set default.allow:i0:pods"
        ]
    );
}

#[test]
fn diff_changed_ip_block_rewrites_the_interval_set() {
    let p = |cidr: &str| {
        policy(
            "default",
            "b",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}),
        )
    };
    let before = desired(&inputs(vec![p("192.168.0.0/24")], cluster()), "n1");
    let after = desired(&inputs(vec![p("192.168.1.0/24")], cluster()), "n1");
    let cmds = diff(Some(&before), &after);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(cmds[0]["flush"]["set"]["name"], "default.b:i0:cidr");
    assert_eq!(
        cmds[1]["add"]["element"]["elem"],
        json!([{"range": ["192.168.1.0", "192.168.1.255"]}])
    );
}

#[test]
fn desired_thousand_policies_elsewhere_leave_the_target_chain_alone() {
    let mut policies = vec![deny_all(), allow_clients()];
    for i in 0..1000 {
        policies.push(policy(
            "default",
            &format!("p{i}"),
            json!({"podSelector": {"matchLabels": {"app": format!("other{i}")}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        ));
    }
    let d = desired(&inputs(policies, cluster()), "n1");
    assert_eq!(d.chain_rules("ingress:10.42.0.5").expect("chain").len(), 3);
    assert_eq!(d.sets.len(), 1);
}

#[tokio::test]
async fn enforcer_first_sync_is_full_then_incremental_then_nothing() {
    let nft = Arc::new(FakeNft::new());
    let mut e = Enforcer::new(nft.clone(), "n1");
    let first = e
        .sync(&inputs(vec![deny_all()], cluster()))
        .await
        .expect("sync");
    assert!(first.full);
    assert!(
        nft.batches()[0].contains(r#"{"delete":{"table":{"family":"ip","name":"mini-netpol"}}}"#)
    );
    assert!(nft.batches()[0].contains(r#""hook":"forward""#));
    let second = e
        .sync(&inputs(vec![deny_all(), allow_clients()], cluster()))
        .await
        .expect("sync");
    assert!(!second.full);
    assert!(!nft.batches()[1].contains(r#""delete":{"table""#));
    let third = e
        .sync(&inputs(vec![deny_all(), allow_clients()], cluster()))
        .await
        .expect("sync");
    assert_eq!(third.commands, 0);
    assert_eq!(nft.batches().len(), 2);
}

#[tokio::test]
async fn enforcer_rebuilds_after_a_failed_apply_or_a_tampered_table() {
    let nft = Arc::new(FakeNft::new());
    let mut e = Enforcer::new(nft.clone(), "n1");
    let all = inputs(vec![deny_all(), allow_clients()], cluster());
    e.sync(&all).await.expect("sync");
    nft.fail_next_apply("Error: No such file or directory");
    assert!(e.sync(&inputs(vec![deny_all()], cluster())).await.is_err());
    assert!(e.sync(&all).await.expect("retry").full);

    nft.set_listing(None);
    assert!(!e.check().await.expect("check"));
    assert!(e.sync(&all).await.expect("sync").full);

    // A listing with the applied shape is intact; a missing set element is not.
    let applied = e.applied.clone().expect("applied");
    let mut objects = vec![json!({"table": {"family": "ip", "name": TABLE}})];
    for (name, rules) in &applied.chains {
        objects.push(json!({"chain": {"name": name}}));
        for r in rules {
            objects.push(json!({"rule": {"chain": name, "expr": r}}));
        }
    }
    for (name, elems) in &applied.sets {
        let elem: Vec<Value> = match elems {
            SetElems::Addrs(ips) => ips.iter().map(|i| json!(i.to_string())).collect(),
            SetElems::Ranges(_) => Vec::new(),
        };
        objects.push(json!({"set": {"name": name, "elem": elem}}));
    }
    for (map, elems) in &applied.maps {
        let elem: Vec<Value> = elems.keys().map(|_| json!([])).collect();
        objects.push(json!({"map": {"name": map, "elem": elem}}));
    }
    let listing = json!({"nftables": objects}).to_string();
    assert_eq!(Shape::from_listing(&listing), Some(Shape::of(&applied)));
    nft.set_listing(Some(listing));
    assert!(e.check().await.expect("check"));
    for o in objects.iter_mut() {
        if let Some(elem) = o.pointer_mut("/set/elem").and_then(Value::as_array_mut) {
            elem.pop();
        }
    }
    nft.set_listing(Some(json!({"nftables": objects}).to_string()));
    assert!(!e.check().await.expect("check"));
    assert!(e.sync(&all).await.expect("sync").full);
}

#[tokio::test]
async fn cleanup_deletes_the_table_even_when_missing() {
    let nft = FakeNft::new();
    cleanup(&nft).await.expect("cleanup");
    assert_eq!(
        nft.batches(),
        vec![r#"{"nftables":[{"add":{"table":{"family":"ip","name":"mini-netpol"}}},{"delete":{"table":{"family":"ip","name":"mini-netpol"}}}]}"#.to_string()]
    );
}

/// Root-only: full and incremental batches of every construct (pod sets, ipBlock ranges,
/// named and ranged ports, both maps) apply to a real kernel through netlink in a scratch
/// network namespace, and the listing has the applied shape. Skips without root.
#[tokio::test]
async fn enforcer_batches_apply_to_the_kernel_and_list_intact() {
    let run = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = format!("np-unit{}", std::process::id());
    assert!(run(&["ip", "netns", "add", &ns]), "ip netns add");
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _guard = Guard(ns.clone());
    let nft: Arc<dyn mini_sys::nft::Nft> =
        Arc::new(mini_sys::nft_netlink::NftNetlink::in_netns(&ns));
    let mut e = Enforcer::new(nft.clone(), "n1");
    let mut pods = cluster();
    pods[0].named_ports = vec![("http".into(), 6, 8080)];
    let rich = policy(
        "default",
        "rich",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                                     {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}}],
                            "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}, {"protocol": "UDP", "port": 53}]}],
               "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}),
    );
    let first = e
        .sync(&inputs(vec![deny_all(), rich.clone()], pods.clone()))
        .await
        .expect("full sync");
    assert!(first.full);
    assert!(e.check().await.expect("check"), "intact after full sync");
    pods.push(pod(
        "default",
        "c3",
        "10.42.2.9",
        "n3",
        &[("app", "client")],
    ));
    pods.remove(1);
    let second = e
        .sync(&inputs(vec![rich], pods.clone()))
        .await
        .expect("incremental sync");
    assert!(!second.full);
    assert!(
        e.check().await.expect("check"),
        "intact after incremental sync"
    );
    let third = e
        .sync(&inputs(Vec::new(), pods))
        .await
        .expect("removal sync");
    assert!(!third.full);
    assert!(e.check().await.expect("check"), "intact after removal");
    cleanup(nft.as_ref()).await.expect("cleanup");
    assert_eq!(
        nft.list_table(FAMILY, TABLE).await.expect("list"),
        None,
        "table removed"
    );
}

#[test]
fn diff_new_selected_local_pod_adds_its_chain_before_its_map_element() {
    let before = desired(&inputs(vec![deny_all()], cluster()), "n1");
    let mut pods = cluster();
    pods.push(pod("default", "web2", "10.42.0.8", "n1", &[("app", "web")]));
    let after = desired(&inputs(vec![deny_all()], pods), "n1");
    let cmds = diff(Some(&before), &after);
    let kinds: Vec<String> = cmds
        .iter()
        .map(|c| {
            let (verb, obj) = c.as_object().expect("obj").iter().next().expect("one");
            let (kind, body) = obj.as_object().expect("obj").iter().next().expect("one");
            let name = body["name"].as_str().or(body["chain"].as_str());
            format!("{verb} {kind} {}", name.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "add chain ingress:10.42.0.8",
            "add rule ingress:10.42.0.8",
            "add rule ingress:10.42.0.8",
            "add element ingress-pods"
        ]
    );
    assert_eq!(
        cmds[3]["add"]["element"]["elem"],
        json!([["10.42.0.8", {"jump": {"target": "ingress:10.42.0.8"}}]])
    );
}
