//! Root-only end-to-end test of the overlay on the real kernel: two "nodes" (network namespaces
//! joined by a veth underlay), each with a `mini0` bridge and a "pod" namespace behind it, get
//! their vxlan devices and remote entries from `ensure_device` + `reconcile_remotes` over
//! `RtNetlink`; TCP then crosses the overlay pod to pod in both directions. Skips (saying why)
//! when not root or without `ip`. Namespaces are `miniov<pid>*` and are removed at the end.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_overlay::{
    cleanup, configure_host, ensure_device, reconcile_remotes, OverlayConfig, RemoteNode, Vtep,
};
use mini_sys::netlink::{Ipv4Net, Netlink, RtNetlink};
use mini_sys::LinuxHost;

/// Runs `f` on a fresh thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Runs the future `f` builds on a current-thread runtime inside network namespace `ns`, so
/// the netlink socket it opens talks to that namespace's kernel state.
fn block_in_netns<T, Fut>(ns: &str, f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T>,
{
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The namespaces of the test; deleted on drop (pass or fail).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct TestNode {
    ns: String,
    pod_ns: String,
    node_ip: Ipv4Addr,
    pod_cidr: Ipv4Net,
    pod_ip: Ipv4Addr,
}

impl TestNode {
    fn config(&self) -> OverlayConfig {
        OverlayConfig::new(
            self.ns.clone(),
            self.node_ip,
            "10.42.0.0/16".parse().expect("cidr"),
        )
    }

    /// Bridge `mini0` with the podCIDR's `.1`, and a pod namespace with `.5` behind it.
    fn wire_pod(&self) {
        let gateway = format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.pod_cidr.network()) + 1),
            self.pod_cidr.prefix_len
        );
        let gateway_ip = gateway.split('/').next().unwrap_or_default().to_string();
        let pod = format!("{}/{}", self.pod_ip, self.pod_cidr.prefix_len);
        let (ns, pod_ns) = (self.ns.as_str(), self.pod_ns.as_str());
        ip(&["-n", ns, "link", "add", "mini0", "type", "bridge"]);
        ip(&["-n", ns, "addr", "add", &gateway, "dev", "mini0"]);
        ip(&["-n", ns, "link", "set", "mini0", "up"]);
        ip(&[
            "-n", ns, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns",
            pod_ns,
        ]);
        ip(&["-n", ns, "link", "set", "vpod", "master", "mini0", "up"]);
        ip(&["-n", pod_ns, "link", "set", "lo", "up"]);
        ip(&["-n", pod_ns, "addr", "add", &pod, "dev", "eth0"]);
        ip(&["-n", pod_ns, "link", "set", "eth0", "up"]);
        ip(&["-n", pod_ns, "route", "add", "default", "via", &gateway_ip]);
    }

    fn remote(&self, vtep: &Vtep) -> RemoteNode {
        RemoteNode {
            name: self.ns.clone(),
            pod_cidr: self.pod_cidr,
            vtep_mac: vtep.mac,
            public_ip: self.node_ip,
        }
    }
}

/// Sets up the node's host side and its vxlan device; returns the device and the time it took.
fn set_up_node(node: &TestNode) -> (Vtep, Duration) {
    let config = node.config();
    let pod_cidr = node.pod_cidr;
    block_in_netns(&node.ns, move || async move {
        configure_host(&LinuxHost).expect("sysctls in the node namespace");
        let netlink = RtNetlink::connect().expect("netlink");
        let started = Instant::now();
        let vtep = ensure_device(&netlink, &config, pod_cidr)
            .await
            .expect("ensure_device");
        (vtep, started.elapsed())
    })
}

/// Reconciles the node's remote entries twice (the second pass must find nothing to do);
/// returns the first pass's time.
fn program_remotes(node: &TestNode, vtep: &Vtep, remotes: Vec<RemoteNode>) -> Duration {
    let vtep = vtep.clone();
    block_in_netns(&node.ns, move || async move {
        let netlink = RtNetlink::connect().expect("netlink");
        let started = Instant::now();
        let stats = reconcile_remotes(&netlink, &vtep, &remotes)
            .await
            .expect("reconcile");
        let elapsed = started.elapsed();
        assert_eq!(
            (stats.fdb_added, stats.neighbours_set, stats.routes_set),
            (remotes.len(), remotes.len(), remotes.len()),
            "{stats:?}"
        );
        let again = reconcile_remotes(&netlink, &vtep, &remotes)
            .await
            .expect("reconcile again");
        assert!(
            !again.changed(),
            "a converged kernel reads back as converged: {again:?}"
        );
        elapsed
    })
}

/// A TCP round trip from `from_ns` to `to` (a listener in `to_ns`).
fn tcp_round_trip(from_ns: &str, to_ns: &str, to: Ipv4Addr) -> Result<Duration, String> {
    let addr = SocketAddr::from((to, 7000));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let to_ns = to_ns.to_string();
    let done = Arc::new(AtomicBool::new(false));
    let server_done = done.clone();
    let server = std::thread::spawn(move || {
        in_netns(&to_ns, move || {
            let listener = TcpListener::bind(addr).expect("bind in pod");
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = ready_tx.send(());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !server_done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        let mut buf = [0u8; 4];
                        if stream.read_exact(&mut buf).is_ok() {
                            let _ = stream.write_all(&buf);
                        }
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    });
    ready_rx.recv().map_err(|e| format!("listener: {e}"))?;
    let result = in_netns(from_ns, move || -> Result<Duration, String> {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        stream.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf != b"ping" {
            return Err(format!("echo answered {buf:?}"));
        }
        Ok(started.elapsed())
    });
    done.store(true, Ordering::Relaxed);
    let _ = server.join();
    result
}

/// Whether the test can run here; prints why not.
fn can_run(test: &str) -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping {test}: needs root (network namespaces, vxlan links)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: the ip command (iproute2) is not installed");
        return false;
    }
    true
}

/// Two nodes `miniov<pid><tag>a|b` joined by a veth underlay (172.31.250.0/24), each with a
/// `mini0` bridge and a pod namespace (`...pa|pb`) behind it.
fn two_nodes(tag: &str) -> (Namespaces, TestNode, TestNode) {
    let prefix = format!("miniov{}{tag}", std::process::id());
    let names: Vec<String> = ["a", "b", "pa", "pb"]
        .iter()
        .map(|s| format!("{prefix}{s}"))
        .collect();
    let namespaces = Namespaces(names.clone());
    for ns in &namespaces.0 {
        ip(&["netns", "add", ns]);
    }
    let a = TestNode {
        ns: names[0].clone(),
        pod_ns: names[2].clone(),
        node_ip: Ipv4Addr::new(172, 31, 250, 1),
        pod_cidr: "10.42.1.0/24".parse().expect("cidr"),
        pod_ip: Ipv4Addr::new(10, 42, 1, 5),
    };
    let b = TestNode {
        ns: names[1].clone(),
        pod_ns: names[3].clone(),
        node_ip: Ipv4Addr::new(172, 31, 250, 2),
        pod_cidr: "10.42.2.0/24".parse().expect("cidr"),
        pod_ip: Ipv4Addr::new(10, 42, 2, 5),
    };
    // The underlay: one veth between the two nodes.
    ip(&[
        "-n", &a.ns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.ns,
    ]);
    for node in [&a, &b] {
        ip(&["-n", &node.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &node.ns,
            "addr",
            "add",
            &format!("{}/24", node.node_ip),
            "dev",
            "ul0",
        ]);
        ip(&["-n", &node.ns, "link", "set", "ul0", "up"]);
        node.wire_pod();
    }

    (namespaces, a, b)
}

#[test]
fn overlay_two_netns_nodes_pods_reach_each_other_across_vxlan() {
    if !can_run("overlay_two_netns_nodes_pods_reach_each_other_across_vxlan") {
        return;
    }
    let (namespaces, a, b) = two_nodes("");
    let (vtep_a, setup_a) = set_up_node(&a);
    let (vtep_b, setup_b) = set_up_node(&b);
    assert_eq!(vtep_a.mtu, 1450, "veth underlay 1500 - 50");
    assert_ne!(vtep_a.mac, vtep_b.mac);

    // The device as the kernel reports it.
    let device = block_in_netns(&a.ns, || async {
        let netlink = RtNetlink::connect().expect("netlink");
        netlink
            .link_by_name("mini.1")
            .await
            .expect("get mini.1")
            .expect("mini.1 exists")
    });
    let vxlan = device.vxlan.clone().expect("mini.1 is a vxlan link");
    assert_eq!(
        (vxlan.vni, vxlan.port, vxlan.learning, vxlan.local),
        (1, 8472, false, Some(a.node_ip))
    );
    assert!(device.up);
    assert_eq!(device.mac, Some(vtep_a.mac));

    let program_a = program_remotes(&a, &vtep_a, vec![b.remote(&vtep_b)]);
    let program_b = program_remotes(&b, &vtep_b, vec![a.remote(&vtep_a)]);
    println!(
        "overlay programming: device setup {:?} / {:?}, one remote node's entries {:?} / {:?}",
        setup_a, setup_b, program_a, program_b
    );

    let a_to_b = tcp_round_trip(&a.pod_ns, &b.pod_ns, b.pod_ip).expect("pod a -> pod b");
    let b_to_a = tcp_round_trip(&b.pod_ns, &a.pod_ns, a.pod_ip).expect("pod b -> pod a");
    println!("pod-to-pod TCP connect+echo across the overlay: a->b {a_to_b:?}, b->a {b_to_a:?}");

    // Node b leaves: a's entries for it go, and a's pod can no longer reach b's.
    let vtep = vtep_a.clone();
    block_in_netns(&a.ns, move || async move {
        let netlink = RtNetlink::connect().expect("netlink");
        let stats = reconcile_remotes(&netlink, &vtep, &[])
            .await
            .expect("reconcile to none");
        assert_eq!(
            (
                stats.fdb_removed,
                stats.neighbours_removed,
                stats.routes_removed
            ),
            (1, 1, 1),
            "{stats:?}"
        );
        assert!(netlink
            .fdb_entries(vtep.index)
            .await
            .expect("fdb")
            .is_empty());
        assert!(netlink
            .neighbours(vtep.index)
            .await
            .expect("neigh")
            .is_empty());
        assert!(netlink
            .routes(vtep.index)
            .await
            .expect("routes")
            .iter()
            .all(|r| r.gateway.is_none()));
    });
    assert!(
        tcp_round_trip(&a.pod_ns, &b.pod_ns, b.pod_ip).is_err(),
        "pod a reaches pod b after node b's entries were removed"
    );

    // `mini agent cleanup` leaves nothing behind.
    block_in_netns(&a.ns, || async {
        let netlink = RtNetlink::connect().expect("netlink");
        cleanup(&netlink).await.expect("cleanup");
        cleanup(&netlink).await.expect("cleanup is idempotent");
        assert!(netlink.link_by_name("mini.1").await.expect("get").is_none());
        assert!(netlink.link_by_name("mini0").await.expect("get").is_none());
    });
    drop(namespaces);
}

/// A Node named after the test node, with its podCIDR (what the server's node IPAM sets).
fn node_object(node: &TestNode) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.ns},
        "spec": {"podCIDR": node.pod_cidr.to_string()},
    }))
    .expect("node object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_two_netns_nodes_with_api_server_pods_reach_each_other_then_node_removal_cuts_it() {
    if !can_run(
        "run_two_netns_nodes_with_api_server_pods_reach_each_other_then_node_removal_cuts_it",
    ) {
        return;
    }
    let (namespaces, a, b) = two_nodes("r");
    let env = mini_testenv::TestEnv::start().await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(env.admin_client());
    for node in [&a, &b] {
        nodes
            .create(&kube::api::PostParams::default(), &node_object(node))
            .await
            .expect("create node");
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for node in [&a, &b] {
        configure_host_in(&node.ns);
        let netlink =
            RtNetlink::connect_in_netns(Path::new(&format!("/var/run/netns/{}", node.ns)))
                .expect("netlink in the node namespace");
        let mut config = node.config();
        config.resync_interval = Duration::from_millis(500);
        let client = env.client_as(&format!("system:node:{}", node.ns), &["system:nodes"]);
        tasks.push(tokio::spawn(mini_overlay::run(
            client,
            config,
            Arc::new(netlink) as Arc<dyn Netlink>,
            shutdown.clone(),
        )));
    }

    // Both directions work once both agents have seen each other.
    let (from, to, to_ip) = (a.pod_ns.clone(), b.pod_ns.clone(), b.pod_ip);
    let (back_from, back_to, back_ip) = (b.pod_ns.clone(), a.pod_ns.clone(), a.pod_ip);
    let reachable = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tcp_round_trip(&from, &to, to_ip).is_ok()
                && tcp_round_trip(&back_from, &back_to, back_ip).is_ok()
            {
                return Some(started.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("round trip thread");
    let reachable = reachable.expect("pods on the two nodes never reached each other");
    println!("run(): from start to pod-to-pod traffic both ways: {reachable:?}");

    // Node b is deleted from the cluster: a's entries for it go within a resync.
    nodes
        .delete(&b.ns, &kube::api::DeleteParams::default())
        .await
        .expect("delete node b");
    let removed_at = Instant::now();
    let netlink_a = RtNetlink::connect_in_netns(Path::new(&format!("/var/run/netns/{}", a.ns)))
        .expect("netlink in a");
    let device = netlink_a
        .link_by_name("mini.1")
        .await
        .expect("get mini.1")
        .expect("mini.1 exists");
    loop {
        let fdb = netlink_a.fdb_entries(device.index).await.expect("fdb");
        let neigh = netlink_a.neighbours(device.index).await.expect("neigh");
        let routes = netlink_a.routes(device.index).await.expect("routes");
        if fdb.is_empty() && neigh.is_empty() && routes.iter().all(|r| r.gateway.is_none()) {
            break;
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(10),
            "node b's entries stayed on a: {fdb:?} {neigh:?} {routes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "run(): node deletion to entries removed: {:?}",
        removed_at.elapsed()
    );

    shutdown.cancel();
    for task in tasks {
        task.await.expect("run task").expect("run ends cleanly");
    }
    drop(namespaces);
}

/// `configure_host` with the real host, inside `ns` (sysctls under /proc/sys/net are per
/// namespace).
fn configure_host_in(ns: &str) {
    in_netns(ns, || {
        configure_host(&LinuxHost).expect("sysctls in the node namespace")
    });
}
