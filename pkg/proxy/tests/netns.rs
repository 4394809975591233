//! Root-only test against the real kernel: programs the table with `NftNetlink` inside a
//! network namespace this test creates (`minipx<pid>`), checks the `nft -j list table`
//! listing round-trips, and sends real traffic from a second namespace (a "pod") to a
//! ClusterIP and to a Service without endpoints. Skips with a reason without root or nft.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_proxy::{Endpoint, Proto, Proxier, ProxyConfig, ServicePort};
use mini_sys::nft::Nft;
use mini_sys::nft_netlink::NftNetlink;

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn skip_reason() -> Option<String> {
    match sh(&["id", "-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        _ => return Some("needs root (network namespaces, nftables)".into()),
    }
    if sh(&["nft", "--version"]).is_err() {
        return Some("needs the nft binary".into());
    }
    None
}

/// Network namespaces deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

fn port(name: &str, ip: [u8; 4], endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        namespace: "default".into(),
        name: name.into(),
        port_name: "http".into(),
        proto: Proto::Tcp,
        port: 80,
        cluster_ip: Ipv4Addr::from(ip),
        node_port: None,
        external_ips: Vec::new(),
        external_local: false,
        affinity_timeout: None,
        local_endpoints: endpoints.iter().filter(|e| e.local).cloned().collect(),
        endpoints,
    }
}

fn ep(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::from(ip),
        port,
        local: true,
    }
}

#[tokio::test]
async fn real_nft_table_round_trips_and_carries_traffic_in_a_netns() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let node = format!("minipx{}", std::process::id());
    let pod = format!("{node}p");
    let _guard = Namespaces(vec![node.clone(), pod.clone()]);
    let node_ns = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", node.as_str()];
        full.extend_from_slice(args);
        sh(&full).expect("command in node netns")
    };
    sh(&["ip", "netns", "add", &node]).expect("add node netns");
    sh(&["ip", "netns", "add", &pod]).expect("add pod netns");
    // pod (10.42.0.2) --veth-- node (10.42.0.1); the "endpoint" 10.42.5.5 lives on the node's
    // loopback; the node has a default route (over a spare veth) so unknown VIPs are forwarded.
    let veth_node = format!("mpx{}n", std::process::id() % 100_000);
    node_ns(&["ip", "link", "set", "lo", "up"]);
    node_ns(&[
        "ip", "link", "add", &veth_node, "type", "veth", "peer", "name", "eth0", "netns", &pod,
    ]);
    node_ns(&["ip", "addr", "add", "10.42.0.1/24", "dev", &veth_node]);
    node_ns(&["ip", "link", "set", &veth_node, "up"]);
    node_ns(&["ip", "addr", "add", "10.42.5.5/32", "dev", "lo"]);
    node_ns(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    node_ns(&["ip", "link", "set", "d1", "up"]);
    node_ns(&["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"]);
    node_ns(&["ip", "link", "set", "d0", "up"]);
    node_ns(&["ip", "route", "add", "default", "via", "192.0.2.2"]);
    node_ns(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let pod_ns = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", pod.as_str()];
        full.extend_from_slice(args);
        sh(&full).expect("command in pod netns")
    };
    pod_ns(&["ip", "link", "set", "lo", "up"]);
    pod_ns(&["ip", "addr", "add", "10.42.0.2/24", "dev", "eth0"]);
    pod_ns(&["ip", "link", "set", "eth0", "up"]);
    pod_ns(&["ip", "route", "add", "default", "via", "10.42.0.1"]);

    let nft: Arc<dyn Nft> = Arc::new(NftNetlink::in_netns(node.clone()));
    let config = ProxyConfig {
        node_name: "n1".into(),
        cluster_cidr: "10.42.0.0/16".into(),
        service_cidr: "10.43.0.0/16".into(),
        dns: Some(mini_proxy::NodeLocalDns {
            service_ip: "10.43.0.10".parse().expect("ip"),
            listen: "10.42.0.1:10053".parse().expect("addr"),
        }),
    };
    let mut proxier = Proxier::new(nft.clone(), &config).expect("proxier");
    let mut web = port(
        "web",
        [10, 43, 0, 5],
        vec![ep([10, 42, 5, 5], 8080), ep([10, 42, 5, 5], 8081)],
    );
    web.node_port = Some(30080);
    web.external_ips = vec![Ipv4Addr::new(10, 42, 0, 1)];
    web.affinity_timeout = Some(30);
    let empty = port("empty", [10, 43, 0, 6], Vec::new());
    let ports = vec![web.clone(), empty.clone()];
    let stats = proxier.sync(&ports).await.expect("full sync");
    assert!(stats.full);
    assert!(
        proxier.check().await.expect("list"),
        "listing does not match what was applied"
    );

    // Incremental: one endpoint goes away.
    web.endpoints.truncate(1);
    web.local_endpoints.truncate(1);
    let ports = vec![web.clone(), empty.clone()];
    let stats = proxier.sync(&ports).await.expect("incremental sync");
    assert!(!stats.full);
    assert!(
        proxier.check().await.expect("list"),
        "listing after the incremental change"
    );

    // Real traffic: a listener on the endpoint, a client in the pod namespace.
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &node, "python3", "-c",
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('10.42.5.5',8080))\ns.listen(8)\nprint('up',flush=True)\nfor _ in range(2):\n  c,a=s.accept()\n  c.sendall(('hello '+a[0]).encode())\n  c.close()\n"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("listener");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sh(&["ip", "netns", "exec", &node, "ss", "-ltn", "sport = :8080"])
        .map(|o| !o.contains("10.42.5.5"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = |target: &str| {
        sh(&["ip", "netns", "exec", &pod, "python3", "-c", &format!(
            "import socket\ns=socket.create_connection(('{target}',80),timeout=3)\nprint(s.recv(100).decode())\n"
        )])
    };
    let reply = client("10.43.0.5").expect("connect to the ClusterIP");
    // The pod is inside the cluster CIDR: not masqueraded, the endpoint sees its address.
    assert_eq!(reply.trim(), "hello 10.42.0.2");
    let reply = client("10.42.0.1").expect("connect to the external IP");
    assert!(reply.starts_with("hello "), "{reply}");

    let started = Instant::now();
    let refused = client("10.43.0.6").expect_err("no endpoints");
    assert!(refused.contains("ConnectionRefused"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reject took {:?}",
        started.elapsed()
    );

    let _ = listener.kill();
    let _ = listener.wait();
    mini_proxy::cleanup(nft.as_ref()).await.expect("cleanup");
    assert_eq!(
        nft.list_table("ip", mini_proxy::TABLE).await.expect("list"),
        None
    );
}

/// Builds `n` Services with two endpoints each.
fn many(n: usize) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 1);
            let mut p = port(
                &format!("svc{i}"),
                [10, 43, 100 + hi, lo],
                vec![
                    ep([10, 42, 100 + hi, lo], 8080),
                    ep([10, 42, 200 + hi, lo], 8080),
                ],
            );
            p.node_port = Some(30000 + i as u16 % 2700);
            p
        })
        .collect()
}

#[tokio::test]
async fn real_nft_apply_time_for_one_change_with_10_and_5000_services() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let ns = format!("minipx{}t", std::process::id());
    let _guard = Namespaces(vec![ns.clone()]);
    sh(&["ip", "netns", "add", &ns]).expect("add netns");
    let config = ProxyConfig {
        node_name: "n1".into(),
        cluster_cidr: "10.42.0.0/16".into(),
        service_cidr: "10.43.0.0/16".into(),
        dns: None,
    };
    for n in [10, 5000] {
        let nft: Arc<dyn Nft> = Arc::new(NftNetlink::in_netns(ns.clone()));
        let mut proxier = Proxier::new(nft, &config).expect("proxier");
        let mut ports = many(n);
        let full = proxier.sync(&ports).await.expect("full sync");
        // One change: an endpoint of one Service goes away.
        ports[n / 2].endpoints.truncate(1);
        let started = Instant::now();
        let change = proxier.sync(&ports).await.expect("incremental sync");
        let total = started.elapsed();
        assert!(!change.full);
        println!(
            "proxy apply: services={n} full_rebuild_ms={} change_commands={} change_nft_ms={} change_total_ms={}",
            full.apply_time.as_millis(),
            change.commands,
            change.apply_time.as_millis(),
            total.as_millis()
        );
        assert!(proxier.check().await.expect("list"));

        // The same two batches through `nft -j -f`, for comparison.
        let fake = Arc::new(mini_sys::nft::FakeNft::new());
        let mut recorder = Proxier::new(fake.clone(), &config).expect("proxier");
        let mut ports = many(n);
        recorder.sync(&ports).await.expect("record full");
        ports[n / 2].endpoints.truncate(1);
        recorder.sync(&ports).await.expect("record change");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nft_ms = Vec::new();
        for (i, batch) in fake.batches().iter().enumerate() {
            let file = dir.path().join(format!("b{i}.json"));
            std::fs::write(&file, batch).expect("write batch");
            let started = Instant::now();
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "-j",
                "-f",
                file.to_str().expect("path"),
            ])
            .expect("nft -f");
            nft_ms.push(started.elapsed().as_millis());
        }
        println!(
            "nft -j -f of the same batches: services={n} full_rebuild_ms={} change_ms={}",
            nft_ms[0], nft_ms[1]
        );
    }
}

/// `nft -j list table ip mini` in a namespace, without handles, metainfo and element expiry
/// (the parts that differ between two equal tables), elements sorted (hash order).
fn nft_listing(ns: &str) -> serde_json::Value {
    let out = sh(&[
        "ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip", "mini",
    ])
    .expect("nft list table");
    let mut doc: serde_json::Value = serde_json::from_str(&out).expect("listing json");
    normalise(&mut doc);
    doc
}

fn normalise(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.remove("handle");
            o.remove("expires");
            o.values_mut().for_each(normalise);
            if let Some(serde_json::Value::Array(elems)) = o.get_mut("elem") {
                elems.sort_by_key(|e| e.to_string());
            }
        }
        serde_json::Value::Array(a) => {
            a.retain(|x| x.get("metainfo").is_none());
            a.iter_mut().for_each(normalise);
        }
        _ => {}
    }
}

/// What `NftNetlink::list_table` must agree on with nft's own listing: everything, except that
/// of the rule expressions it decodes only the jump and goto statements.
fn with_only_jump_and_goto_expressions(mut doc: serde_json::Value) -> serde_json::Value {
    for obj in doc["nftables"].as_array_mut().expect("array") {
        if let Some(rule) = obj.get_mut("rule").and_then(|r| r.as_object_mut()) {
            let verdicts: Vec<serde_json::Value> = rule
                .remove("expr")
                .and_then(|e| e.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.get("jump").is_some() || e.get("goto").is_some())
                .collect();
            if !verdicts.is_empty() {
                rule.insert("expr".into(), serde_json::Value::Array(verdicts));
            }
        }
    }
    doc
}

#[tokio::test]
async fn netlink_and_nft_program_the_same_table_from_the_proxy_batches() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let ours = format!("minipx{}a", std::process::id());
    let theirs = format!("minipx{}b", std::process::id());
    let _guard = Namespaces(vec![ours.clone(), theirs.clone()]);
    sh(&["ip", "netns", "add", &ours]).expect("add netns");
    sh(&["ip", "netns", "add", &theirs]).expect("add netns");

    let config = ProxyConfig {
        node_name: "n1".into(),
        cluster_cidr: "10.42.0.0/16".into(),
        service_cidr: "10.43.0.0/16".into(),
        dns: Some(mini_proxy::NodeLocalDns {
            service_ip: "10.43.0.10".parse().expect("ip"),
            listen: "10.77.0.11:10053".parse().expect("addr"),
        }),
    };
    let mut web = port(
        "web",
        [10, 43, 0, 5],
        vec![ep([10, 42, 5, 5], 8080), ep([10, 42, 6, 5], 8081)],
    );
    web.endpoints[1].local = false;
    web.local_endpoints.truncate(1);
    web.node_port = Some(30080);
    web.external_ips = vec![Ipv4Addr::new(10, 77, 0, 20)];
    web.affinity_timeout = Some(30);
    let mut local = port("local", [10, 43, 0, 7], vec![ep([10, 42, 5, 9], 9090)]);
    local.node_port = Some(30090);
    local.external_local = true;
    local.proto = Proto::Udp;
    let mut remote_only = local.clone();
    remote_only.name = "remote".into();
    remote_only.cluster_ip = Ipv4Addr::new(10, 43, 0, 8);
    remote_only.node_port = Some(30091);
    remote_only.endpoints[0].local = false;
    remote_only.local_endpoints.clear();
    let empty = port("empty", [10, 43, 0, 6], Vec::new());
    let mut fewer = web.clone();
    fewer.endpoints.truncate(1);
    fewer.local_endpoints.truncate(1);
    let mut moved = fewer.clone();
    moved.endpoints[0].port = 8082;
    moved.affinity_timeout = None;
    let steps = [
        vec![
            web.clone(),
            local.clone(),
            remote_only.clone(),
            empty.clone(),
        ],
        vec![
            fewer.clone(),
            local.clone(),
            remote_only.clone(),
            empty.clone(),
        ],
        vec![moved, empty.clone()],
        vec![],
        many(40),
    ];

    let fake = Arc::new(mini_sys::nft::FakeNft::new());
    let mut proxier = Proxier::new(fake.clone(), &config).expect("proxier");
    let netlink = NftNetlink::in_netns(&ours);
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, ports) in steps.iter().enumerate() {
        let before = fake.batches().len();
        proxier.sync(ports).await.expect("sync");
        for batch in &fake.batches()[before..] {
            netlink
                .apply(batch)
                .await
                .unwrap_or_else(|e| panic!("step {i}: netlink: {e}"));
            let file = dir.path().join(format!("step{i}.json"));
            std::fs::write(&file, batch).expect("write batch");
            let path = file.to_str().expect("utf-8 path");
            sh(&["ip", "netns", "exec", &theirs, "nft", "-j", "-f", path])
                .unwrap_or_else(|e| panic!("step {i}: nft: {e}"));
        }
        let programmed = nft_listing(&ours);
        assert_eq!(programmed, nft_listing(&theirs), "step {i}");
        let mut listed: serde_json::Value = serde_json::from_str(
            &netlink
                .list_table("ip", mini_proxy::TABLE)
                .await
                .expect("list")
                .expect("table exists"),
        )
        .expect("json");
        normalise(&mut listed);
        assert_eq!(
            listed,
            with_only_jump_and_goto_expressions(programmed),
            "step {i}: NftNetlink's listing"
        );
    }

    // A failing command is named, and the batch changes nothing.
    let bad = r#"{"nftables":[{"add":{"chain":{"family":"ip","table":"mini","name":"fine"}}},{"add":{"rule":{"family":"ip","table":"mini","chain":"svc-missing","expr":[{"accept":null}]}}}]}"#;
    let e = netlink.apply(bad).await.expect_err("missing chain");
    assert!(
        e.to_string()
            .starts_with("nft add rule ip mini svc-missing: No such file or directory"),
        "{e}"
    );
    let listing = netlink
        .list_table("ip", mini_proxy::TABLE)
        .await
        .expect("list")
        .expect("table");
    assert!(!listing.contains("\"fine\""), "the batch was not atomic");

    mini_proxy::cleanup(&netlink).await.expect("cleanup");
    assert_eq!(
        netlink
            .list_table("ip", mini_proxy::TABLE)
            .await
            .expect("list"),
        None
    );
}
