//! Unit tests of the plugins over the fakes: `FakeNetlink` (host and pod namespaces),
//! `FakeNft`, `FakeHost`, and host-local run in-process as the bridge's IPAM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mini_sys::netlink::{FakeNetlink, Ipv4Net, Netlink};
use mini_sys::nft::FakeNft;
use serde_json::{json, Value};

use crate::types::code;
use crate::*;

/// Runs host-local in this process (what `ExecDelegate` would run from `CNI_PATH`).
struct InProcessIpam;

impl Delegate for InProcessIpam {
    fn invoke(
        &self,
        plugin: &str,
        command: Command,
        stdin: &[u8],
        ctx: &Context,
    ) -> Result<Option<Value>, CniError> {
        assert_eq!(plugin, "host-local");
        let mut ctx = ctx.clone();
        ctx.command = command;
        ctx.stdin = stdin.to_vec();
        hostlocal::run(&ctx)
    }
}

struct World {
    host_net: Arc<FakeNetlink>,
    nft: Arc<FakeNft>,
    host: Arc<mini_sys::FakeHost>,
    deps: Deps,
    data: tempfile::TempDir,
}

const NETNS: &str = "/var/run/netns/cni-test";

fn world() -> World {
    let host_net = Arc::new(FakeNetlink::new());
    host_net.add_link("eth0", 1500, &["192.0.2.10/24".parse().expect("cidr")]);
    host_net.add_netns(NETNS);
    let nft = Arc::new(FakeNft::new());
    let host = Arc::new(mini_sys::FakeHost::default());
    let deps = Deps {
        netlink: host_net.clone(),
        nft: nft.clone(),
        host: host.clone(),
        delegate: Arc::new(InProcessIpam),
    };
    World {
        host_net,
        nft,
        host,
        deps,
        data: tempfile::tempdir().expect("tempdir"),
    }
}

fn bridge_conf(data: &Path, version: &str) -> Value {
    json!({
        "cniVersion": version, "name": "mini", "type": "bridge", "bridge": "mini0",
        "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1450,
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.42.1.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    })
}

fn ctx(command: Command, id: &str, netns: Option<&str>, conf: &Value) -> Context {
    Context {
        command,
        container_id: id.into(),
        netns: netns.map(PathBuf::from),
        ifname: "eth0".into(),
        args: vec![("IgnoreUnknown".into(), "1".into())],
        path: vec![PathBuf::from("/nonexistent")],
        stdin: serde_json::to_vec(conf).expect("json"),
    }
}

#[tokio::test]
async fn bridge_add_creates_bridge_veth_address_and_default_route() {
    let w = world();
    let conf = bridge_conf(w.data.path(), "1.0.0");
    let out = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("add")
    .expect("result");
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(out["interfaces"][0]["name"], "mini0");
    assert_eq!(out["interfaces"][2]["name"], "eth0");
    assert_eq!(out["interfaces"][2]["sandbox"], NETNS);
    assert_eq!(out["ips"][0]["address"], "10.42.1.2/24");
    assert_eq!(out["ips"][0]["gateway"], "10.42.1.1");
    assert_eq!(out["ips"][0]["interface"], 2);

    let bridge = w.host_net.link("mini0").expect("bridge created");
    assert!(bridge.link.up);
    assert_eq!(bridge.link.mtu, 1450);
    assert!(bridge
        .addresses
        .contains(&"10.42.1.1/24".parse::<Ipv4Net>().expect("cidr")));
    let veth_name = out["interfaces"][1]["name"].as_str().expect("veth name");
    assert!(veth_name.starts_with("veth"));
    let veth = w.host_net.link(veth_name).expect("host veth");
    assert_eq!(veth.link.master, Some(bridge.link.index));
    assert!(veth.hairpin);
    assert!(veth.link.up);
    assert_eq!(veth.link.mtu, 1450);

    let pod = w.host_net.in_netns(Path::new(NETNS)).await.expect("netns");
    let eth0 = pod
        .link_by_name("eth0")
        .await
        .expect("get")
        .expect("eth0 in pod");
    assert!(eth0.up);
    assert_eq!(eth0.mtu, 1450);
    assert_eq!(
        pod.addresses(eth0.index).await.expect("addresses"),
        vec!["10.42.1.2/24".parse::<Ipv4Net>().expect("cidr")]
    );
    let routes = pod.routes(eth0.index).await.expect("routes");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].dst.prefix_len, 0);
    assert_eq!(routes[0].gateway, Some("10.42.1.1".parse().expect("ip")));
    assert!(w.host.calls().contains(&mini_sys::FakeCall::Sysctl(
        "net.ipv4.ip_forward".into(),
        "1".into()
    )));

    // CHECK with the result as prevResult passes
    let mut checked = conf.clone();
    checked["prevResult"] = out.clone();
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Check, "c1", Some(NETNS), &checked),
    )
    .await
    .expect("check");
}

#[tokio::test]
async fn bridge_del_removes_veth_and_releases_address_and_is_idempotent() {
    let w = world();
    let conf = bridge_conf(w.data.path(), "0.4.0");
    let out = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("add")
    .expect("result");
    assert_eq!(out["ips"][0]["version"], "4");
    let veth_name = out["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Del, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("del");
    assert!(w.host_net.link(&veth_name).is_none());
    assert!(!w.data.path().join("mini").join("10.42.1.2").exists());
    // again, then with the namespace gone, then with no namespace at all
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Del, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("second del");
    w.host_net.remove_netns(Path::new(NETNS));
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Del, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("del without netns");
    run_plugin("bridge", &w.deps, &ctx(Command::Del, "c1", None, &conf))
        .await
        .expect("del with empty CNI_NETNS");
}

#[tokio::test]
async fn bridge_add_twice_in_same_netns_fails_and_keeps_first() {
    let w = world();
    let conf = bridge_conf(w.data.path(), "1.0.0");
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("add");
    let err = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c2", Some(NETNS), &conf),
    )
    .await
    .expect_err("eth0 exists");
    assert!(err.msg.contains("already exists"), "{err}");
    // the failed ADD leaked no lease
    assert!(!w.data.path().join("mini").join("10.42.1.3").exists());
}

#[tokio::test]
async fn bridge_add_bridge_with_other_address_fails_unless_force_address() {
    let w = world();
    let bridge = w
        .host_net
        .create_bridge("mini0", None)
        .await
        .expect("bridge");
    w.host_net
        .add_address(bridge.index, "10.42.9.1/24".parse().expect("cidr"))
        .await
        .expect("address");
    let mut conf = bridge_conf(w.data.path(), "1.0.0");
    let err = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect_err("different address");
    assert!(err.msg.contains("already has an IP address"), "{err}");
    assert!(
        !w.data.path().join("mini").join("10.42.1.2").exists(),
        "lease released"
    );
    conf["forceAddress"] = json!(true);
    run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("forced");
    let addresses = w.host_net.link("mini0").expect("bridge").addresses;
    assert_eq!(addresses.len(), 1);
    assert!(addresses.contains(&"10.42.1.1/24".parse::<Ipv4Net>().expect("cidr")));
}

#[tokio::test]
async fn bridge_refuses_unsupported_options_and_bad_versions() {
    let w = world();
    let mut conf = bridge_conf(w.data.path(), "1.0.0");
    conf["ipMasq"] = json!(true);
    let err = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect_err("ipMasq");
    assert_eq!(err.code, code::UNSUPPORTED_FIELD);
    assert!(err.details.contains("ipMasq"));
    let old = bridge_conf(w.data.path(), "0.2.0");
    let err = run_plugin(
        "bridge",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &old),
    )
    .await
    .expect_err("version");
    assert_eq!(err.code, code::INCOMPATIBLE_VERSION);
    let err = run_plugin(
        "bridge",
        &w.deps,
        &Context {
            stdin: b"not json".to_vec(),
            ..ctx(Command::Add, "c1", Some(NETNS), &conf)
        },
    )
    .await
    .expect_err("decode");
    assert_eq!(err.code, code::DECODE);
}

#[tokio::test]
async fn version_lists_supported_versions() {
    let w = world();
    let out = run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Version, "", None, &json!({"cniVersion": "1.0.0"})),
    )
    .await
    .expect("version")
    .expect("answer");
    assert!(out["supportedVersions"]
        .as_array()
        .expect("list")
        .contains(&json!("0.4.0")));
    assert!(out["supportedVersions"]
        .as_array()
        .expect("list")
        .contains(&json!("1.0.0")));
}

#[tokio::test]
async fn loopback_add_sets_lo_up_and_del_tolerates_missing_netns() {
    let w = world();
    let conf = json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"});
    let mut c = ctx(Command::Add, "c1", Some(NETNS), &conf);
    c.ifname = "lo".into();
    let out = run_plugin("loopback", &w.deps, &c)
        .await
        .expect("add")
        .expect("result");
    assert_eq!(out["interfaces"][0]["name"], "lo");
    assert_eq!(out["ips"][0]["address"], "127.0.0.1/8");
    let pod = w.host_net.in_netns(Path::new(NETNS)).await.expect("netns");
    assert!(pod.link_by_name("lo").await.expect("get").expect("lo").up);
    c.command = Command::Check;
    run_plugin("loopback", &w.deps, &c).await.expect("check");
    c.command = Command::Del;
    run_plugin("loopback", &w.deps, &c).await.expect("del");
    assert!(!pod.link_by_name("lo").await.expect("get").expect("lo").up);
    w.host_net.remove_netns(Path::new(NETNS));
    run_plugin("loopback", &w.deps, &c)
        .await
        .expect("del without netns");
}

fn portmap_conf(prev: Option<Value>) -> Value {
    let mut conf = json!({
        "cniVersion": "1.0.0", "name": "mini", "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.10"}
        ]}
    });
    if let Some(prev) = prev {
        conf["prevResult"] = prev;
    }
    conf
}

fn prev_result() -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "mini0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": NETNS}],
        "ips": [{"address": "10.42.1.5/24", "gateway": "10.42.1.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})
}

#[tokio::test]
async fn portmap_add_programs_dnat_and_masquerade_chains_and_passes_result_through() {
    let w = world();
    w.host_net
        .add_link("mini0", 1450, &["192.0.2.10/24".parse().expect("cidr")]);
    let conf = portmap_conf(Some(prev_result()));
    let out = run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &conf),
    )
    .await
    .expect("add")
    .expect("result");
    assert_eq!(out["ips"][0]["address"], "10.42.1.5/24");
    let batches = w.nft.batches();
    assert_eq!(batches.len(), 1);
    let batch: Value = serde_json::from_str(&batches[0]).expect("json");
    let text = batch.to_string();
    let suffix = portmap::chain_suffix("mini", "c1");
    assert!(text.contains(&format!("dnat-{suffix}")));
    assert!(text.contains(&format!("snat-{suffix}")));
    assert!(
        text.contains(r#"{"dnat":{"addr":"10.42.1.5","port":80}}"#),
        "{text}"
    );
    assert!(text.contains(r#""right":"192.0.2.10""#), "{text}");
    assert!(text.contains(r#"{"masquerade":null}"#));
    assert!(w.host.calls().iter().any(|c| matches!(c,
        mini_sys::FakeCall::Sysctl(k, v) if k.ends_with(".route_localnet") && v == "1")));
}

#[tokio::test]
async fn portmap_del_deletes_jumps_by_handle_and_the_container_chains() {
    let w = world();
    let suffix = portmap::chain_suffix("mini", "c1");
    let listing = json!({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "ip", "name": "mini-portmap", "handle": 1}},
        {"chain": {"family": "ip", "table": "mini-portmap", "name": "prerouting", "handle": 1}},
        {"chain": {"family": "ip", "table": "mini-portmap", "name": format!("dnat-{suffix}"), "handle": 4}},
        {"chain": {"family": "ip", "table": "mini-portmap", "name": format!("snat-{suffix}"), "handle": 5}},
        {"chain": {"family": "ip", "table": "mini-portmap", "name": "dnat-other", "handle": 6}},
        {"rule": {"family": "ip", "table": "mini-portmap", "chain": "prerouting", "handle": 7,
                  "expr": [{"jump": {"target": format!("dnat-{suffix}")}}]}},
        {"rule": {"family": "ip", "table": "mini-portmap", "chain": "prerouting", "handle": 8,
                  "expr": [{"jump": {"target": "dnat-other"}}]}},
        {"rule": {"family": "ip", "table": "mini-portmap", "chain": "postrouting", "handle": 9,
                  "expr": [{"jump": {"target": format!("snat-{suffix}")}}]}}
    ]});
    w.nft.set_listing(Some(listing.to_string()));
    run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Del, "c1", Some(NETNS), &portmap_conf(None)),
    )
    .await
    .expect("del");
    let batch: Value = serde_json::from_str(&w.nft.batches()[0]).expect("json");
    let commands = batch["nftables"].as_array().expect("commands");
    let handles: Vec<i64> = commands
        .iter()
        .filter_map(|c| c.pointer("/delete/rule/handle").and_then(Value::as_i64))
        .collect();
    assert_eq!(handles, vec![7, 9]);
    let deleted: Vec<&str> = commands
        .iter()
        .filter_map(|c| c.pointer("/delete/chain/name").and_then(Value::as_str))
        .collect();
    assert_eq!(
        deleted,
        vec![format!("dnat-{suffix}"), format!("snat-{suffix}")]
    );
    // no table at all: nothing to do
    w.nft.set_listing(None);
    run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Del, "c2", Some(NETNS), &portmap_conf(None)),
    )
    .await
    .expect("del without table");
    assert_eq!(w.nft.batches().len(), 1);
}

#[tokio::test]
async fn portmap_add_without_prev_result_is_invalid_config() {
    let w = world();
    let err = run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &portmap_conf(None)),
    )
    .await
    .expect_err("needs prevResult");
    assert_eq!(err.code, code::INVALID_CONFIG);
    let mut bad = portmap_conf(Some(prev_result()));
    bad["externalSetMarkChain"] = json!("KUBE-MARK-MASQ");
    let err = run_plugin(
        "portmap",
        &w.deps,
        &ctx(Command::Add, "c1", Some(NETNS), &bad),
    )
    .await
    .expect_err("unsupported");
    assert_eq!(err.code, code::UNSUPPORTED_FIELD);
}

#[tokio::test]
async fn bridge_add_pinned_pool_address_gets_onlink_gateway_and_host_route() {
    let w = world();
    let pinned = w.data.path().join("pinned");
    let mut conf = bridge_conf(w.data.path(), "1.0.0");
    conf["ipam"]["pinnedDir"] = json!(pinned);
    mini_ippool::pinned::write_request(
        &pinned,
        "ns",
        "db-0",
        &mini_ippool::pinned::PinnedRequest {
            address: "10.99.0.5".parse().expect("ip"),
            uid: "u1".into(),
        },
    )
    .expect("request");
    let mut add = ctx(Command::Add, "c1", Some(NETNS), &conf);
    add.args.extend([
        ("K8S_POD_NAMESPACE".into(), "ns".into()),
        ("K8S_POD_NAME".into(), "db-0".into()),
        ("K8S_POD_UID".into(), "u1".into()),
    ]);
    let out = run_plugin("bridge", &w.deps, &add)
        .await
        .expect("add")
        .expect("result");
    assert_eq!(out["ips"][0]["address"], "10.99.0.5/32");
    let bridge = w.host_net.link("mini0").expect("bridge created");
    assert!(bridge
        .addresses
        .contains(&"10.42.1.1/24".parse::<Ipv4Net>().expect("cidr")));
    let host_routes = w.host_net.routes(bridge.link.index).await.expect("routes");
    assert!(host_routes
        .iter()
        .any(|r| r.dst == "10.99.0.5/32".parse().expect("cidr") && r.gateway.is_none()));
    let pod = w.host_net.in_netns(Path::new(NETNS)).await.expect("netns");
    let eth0 = pod.link_by_name("eth0").await.expect("get").expect("eth0");
    let routes = pod.routes(eth0.index).await.expect("routes");
    assert_eq!(routes.len(), 1);
    assert!(routes[0].onlink);
    assert_eq!(routes[0].gateway, Some("10.42.1.1".parse().expect("ip")));
}
