//! Unit tests: the overlay loop against `FakeNetlink` and the in-process API server.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use mini_sys::netlink::{
    FakeNetlink, FdbEntry, Ipv4Net, MacAddr, NeighbourEntry, Netlink, RouteEntry,
};
use mini_sys::FakeHost;
use mini_testenv::TestEnv;
use tokio_util::sync::CancellationToken;

use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test cidr")
}

fn mac(s: &str) -> MacAddr {
    s.parse().expect("test mac")
}

fn config() -> OverlayConfig {
    let mut config = OverlayConfig::new("n1", Ipv4Addr::new(192, 168, 7, 11), net("10.42.0.0/16"));
    config.resync_interval = Duration::from_millis(200);
    config
}

fn node(name: &str, pod_cidr: &str, annotations: &[(&str, String)]) -> Node {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"podCIDR": pod_cidr},
    }))
    .expect("test node")
}

fn flannel_annotations(vtep_mac: &str, public_ip: &str) -> Vec<(&'static str, String)> {
    vec![
        (BACKEND_TYPE_ANNOTATION, "vxlan".to_string()),
        (
            BACKEND_DATA_ANNOTATION,
            format!(r#"{{"VNI":1,"VtepMAC":"{vtep_mac}"}}"#),
        ),
        (PUBLIC_IP_ANNOTATION, public_ip.to_string()),
        (KUBE_SUBNET_MANAGER_ANNOTATION, "true".to_string()),
    ]
}

/// A fake kernel with the underlay `eth0` holding the node IP.
fn fake_kernel() -> Arc<FakeNetlink> {
    let fake = Arc::new(FakeNetlink::new());
    fake.add_link("eth0", 1500, &[net("192.168.7.11/24")]);
    fake
}

/// Polls `check` until it holds (10 s at most).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// FDB entries, neighbours (IP -> MAC) and routes (dst, gateway) on one device.
type Entries = (
    Vec<FdbEntry>,
    BTreeMap<Ipv4Addr, MacAddr>,
    Vec<(Ipv4Net, Option<Ipv4Addr>)>,
);

/// The entries on `mini.1`.
fn entries(fake: &FakeNetlink) -> Entries {
    let Some(link) = fake.link("mini.1") else {
        return (Vec::new(), BTreeMap::new(), Vec::new());
    };
    let routes = fake
        .all_routes()
        .into_iter()
        .filter(|r| r.link_index == link.link.index)
        .map(|r| (r.dst, r.gateway))
        .collect();
    (link.fdb.into_iter().collect(), link.neighbours, routes)
}

struct Running {
    fake: Arc<FakeNetlink>,
    nodes: Api<Node>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), OverlayError>>,
    _env: TestEnv,
}

/// A server with our node `n1` (podCIDR 10.42.1.0/24) and the overlay running for it as the
/// node identity the agent uses.
async fn start() -> Running {
    let env = TestEnv::start().await;
    let nodes: Api<Node> = Api::all(env.admin_client());
    nodes
        .create(&PostParams::default(), &node("n1", "10.42.1.0/24", &[]))
        .await
        .expect("create n1");
    let fake = fake_kernel();
    let shutdown = CancellationToken::new();
    let client = env.client_as("system:node:n1", &["system:nodes"]);
    let task = tokio::spawn(run(
        client,
        config(),
        fake.clone() as Arc<dyn Netlink>,
        shutdown.clone(),
    ));
    Running {
        fake,
        nodes,
        shutdown,
        task,
        _env: env,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run stops on shutdown")
            .expect("run task");
        result.expect("run returns Ok on shutdown");
    }
}

#[tokio::test]
async fn run_own_node_device_created_and_annotations_published() {
    let running = start().await;
    let nodes = running.nodes.clone();
    let mut published = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while published.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "annotations never published"
        );
        let n1 = nodes.get("n1").await.expect("get n1");
        let annotations = n1.metadata.annotations.unwrap_or_default();
        if annotations.contains_key(BACKEND_DATA_ANNOTATION) {
            published = Some(annotations);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let annotations = published.expect("published");
    let device = running.fake.link("mini.1").expect("mini.1 exists");
    let data: BackendData =
        serde_json::from_str(&annotations[BACKEND_DATA_ANNOTATION]).expect("backend-data json");
    assert_eq!(data.vni, 1);
    assert_eq!(data.vtep_mac, device.link.mac.expect("mac").to_string());
    assert_eq!(annotations[BACKEND_TYPE_ANNOTATION], "vxlan");
    assert_eq!(annotations[PUBLIC_IP_ANNOTATION], "192.168.7.11");
    assert_eq!(annotations[KUBE_SUBNET_MANAGER_ANNOTATION], "true");
    assert_eq!(device.link.mtu, 1450);
    assert!(device.link.up);
    let vxlan = device.link.vxlan.clone().expect("vxlan info");
    assert_eq!(vxlan.vni, 1);
    assert_eq!(vxlan.port, 8472);
    assert!(!vxlan.learning);
    assert_eq!(vxlan.local, Some(Ipv4Addr::new(192, 168, 7, 11)));
    assert_eq!(
        device.addresses.into_iter().collect::<Vec<_>>(),
        vec![net("10.42.1.0/32")]
    );
    running.stop().await;
}

#[tokio::test]
async fn run_remote_nodes_added_removed_and_changed_entries_follow() {
    let running = start().await;
    let fake = running.fake.clone();
    let nodes = running.nodes.clone();
    let pp = PostParams::default();
    nodes
        .create(
            &pp,
            &node(
                "n2",
                "10.42.2.0/24",
                &flannel_annotations("02:00:00:00:00:02", "192.168.7.12"),
            ),
        )
        .await
        .expect("create n2");
    nodes
        .create(
            &pp,
            &node(
                "n3",
                "10.42.3.0/24",
                &flannel_annotations("02:00:00:00:00:03", "192.168.7.13"),
            ),
        )
        .await
        .expect("create n3");
    // A node without annotations yet (its agent has not started) gets nothing.
    nodes
        .create(&pp, &node("n4", "10.42.4.0/24", &[]))
        .await
        .expect("create n4");

    let two = (
        vec![
            FdbEntry {
                mac: mac("02:00:00:00:00:02"),
                dst: Ipv4Addr::new(192, 168, 7, 12),
            },
            FdbEntry {
                mac: mac("02:00:00:00:00:03"),
                dst: Ipv4Addr::new(192, 168, 7, 13),
            },
        ],
        BTreeMap::from([
            (Ipv4Addr::new(10, 42, 2, 0), mac("02:00:00:00:00:02")),
            (Ipv4Addr::new(10, 42, 3, 0), mac("02:00:00:00:00:03")),
        ]),
        vec![
            (net("10.42.2.0/24"), Some(Ipv4Addr::new(10, 42, 2, 0))),
            (net("10.42.3.0/24"), Some(Ipv4Addr::new(10, 42, 3, 0))),
        ],
    );
    eventually("entries for n2 and n3", || entries(&fake) == two).await;
    assert!(fake.all_routes().iter().all(|r| r.onlink));

    // n3 leaves: its three entries go, n2's stay.
    nodes
        .delete("n3", &DeleteParams::default())
        .await
        .expect("delete n3");
    let one = (
        vec![two.0[0]],
        BTreeMap::from([(Ipv4Addr::new(10, 42, 2, 0), mac("02:00:00:00:00:02"))]),
        vec![two.2[0]],
    );
    eventually("n3's entries removed", || entries(&fake) == one).await;

    // n2's VTEP MAC changes (its device was recreated): FDB and neighbour follow.
    let patch = serde_json::json!({"metadata": {"annotations": {
        BACKEND_DATA_ANNOTATION: r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:22"}"#,
    }}});
    nodes
        .patch("n2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch n2");
    let changed = (
        vec![FdbEntry {
            mac: mac("02:00:00:00:00:22"),
            dst: Ipv4Addr::new(192, 168, 7, 12),
        }],
        BTreeMap::from([(Ipv4Addr::new(10, 42, 2, 0), mac("02:00:00:00:00:22"))]),
        vec![two.2[0]],
    );
    eventually("n2's entries replaced", || entries(&fake) == changed).await;
    running.stop().await;
}

#[tokio::test]
async fn run_entries_deleted_by_hand_come_back_on_resync() {
    let running = start().await;
    let fake = running.fake.clone();
    running
        .nodes
        .create(
            &PostParams::default(),
            &node(
                "n2",
                "10.42.2.0/24",
                &flannel_annotations("02:00:00:00:00:02", "192.168.7.12"),
            ),
        )
        .await
        .expect("create n2");
    eventually("n2's route", || entries(&fake).2.len() == 1).await;
    let index = fake.link("mini.1").expect("mini.1").link.index;
    let route = fake.all_routes()[0];
    fake.remove_route(route).await.expect("remove route");
    fake.remove_neighbour(index, Ipv4Addr::new(10, 42, 2, 0))
        .await
        .expect("remove neighbour");
    // A stray entry nobody asked for goes too.
    fake.add_fdb(
        index,
        FdbEntry {
            mac: mac("02:00:00:00:00:99"),
            dst: Ipv4Addr::new(192, 168, 7, 99),
        },
    )
    .await
    .expect("stray fdb");
    eventually("entries restored and the stray removed", || {
        let (fdb, neigh, routes) = entries(&fake);
        fdb.len() == 1 && neigh.len() == 1 && routes.len() == 1
    })
    .await;
    // The device itself, deleted by hand, comes back (with a new MAC, republished).
    fake.delete_link(index).await.expect("delete mini.1");
    eventually("mini.1 recreated with n2's route", || {
        fake.link("mini.1").is_some() && entries(&fake).2.len() == 1
    })
    .await;
    let new_mac = fake.link("mini.1").expect("mini.1").link.mac.expect("mac");
    let nodes = running.nodes.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n1 = nodes.get("n1").await.expect("get n1");
        let data = n1
            .metadata
            .annotations
            .unwrap_or_default()
            .remove(BACKEND_DATA_ANNOTATION)
            .unwrap_or_default();
        if data.contains(&new_mac.to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new mac never published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn run_without_interface_for_node_ip_fails_with_hint() {
    let env = TestEnv::start().await;
    let nodes: Api<Node> = Api::all(env.admin_client());
    nodes
        .create(&PostParams::default(), &node("n1", "10.42.1.0/24", &[]))
        .await
        .expect("create n1");
    let fake = Arc::new(FakeNetlink::new());
    fake.add_link("eth0", 1500, &[net("192.168.9.9/24")]);
    let err = run(
        env.admin_client(),
        config(),
        fake as Arc<dyn Netlink>,
        CancellationToken::new(),
    )
    .await
    .expect_err("no interface holds the node ip");
    assert!(matches!(err, OverlayError::NoUnderlay(_)), "{err}");
    assert!(err.to_string().contains("--node-ip"), "{err}");
}

#[tokio::test]
async fn reconcile_remotes_twice_second_pass_changes_nothing() {
    let fake = fake_kernel();
    let mut config = config();
    config.vni = 1;
    let vtep = ensure_device(fake.as_ref(), &config, net("10.42.1.0/24"))
        .await
        .expect("device");
    let remotes = vec![RemoteNode {
        name: "n2".into(),
        pod_cidr: net("10.42.2.0/24"),
        vtep_mac: mac("02:00:00:00:00:02"),
        public_ip: Ipv4Addr::new(192, 168, 7, 12),
    }];
    let first = reconcile_remotes(fake.as_ref(), &vtep, &remotes)
        .await
        .expect("first pass");
    assert_eq!(
        (first.fdb_added, first.neighbours_set, first.routes_set),
        (1, 1, 1)
    );
    let calls = fake.calls().len();
    let second = reconcile_remotes(fake.as_ref(), &vtep, &remotes)
        .await
        .expect("second pass");
    assert!(!second.changed(), "{second:?}");
    assert_eq!(
        fake.calls().len(),
        calls,
        "no kernel writes on a converged pass"
    );
    let again = ensure_device(fake.as_ref(), &config, net("10.42.1.0/24"))
        .await
        .expect("device again");
    assert_eq!(
        again, vtep,
        "an existing matching device is kept (same MAC)"
    );
    assert_eq!(
        fake.calls().len(),
        calls,
        "no kernel writes for a converged device"
    );
}

#[tokio::test]
async fn ensure_device_changed_port_recreates_device() {
    let fake = fake_kernel();
    let mut config = config();
    let first = ensure_device(fake.as_ref(), &config, net("10.42.1.0/24"))
        .await
        .expect("device");
    config.port = 4789;
    let second = ensure_device(fake.as_ref(), &config, net("10.42.1.0/24"))
        .await
        .expect("device");
    assert_ne!(first.index, second.index);
    assert_eq!(
        fake.link("mini.1")
            .and_then(|l| l.link.vxlan)
            .map(|v| v.port),
        Some(4789)
    );
}

#[test]
fn remote_node_annotations_parsed_or_skipped_with_reason() {
    let config = config();
    let good = node(
        "n2",
        "10.42.2.0/24",
        &flannel_annotations("02:00:00:00:00:02", "192.168.7.12"),
    );
    assert_eq!(
        remote_node(&good, &config).expect("usable"),
        Some(RemoteNode {
            name: "n2".into(),
            pod_cidr: net("10.42.2.0/24"),
            vtep_mac: mac("02:00:00:00:00:02"),
            public_ip: Ipv4Addr::new(192, 168, 7, 12),
        })
    );
    assert_eq!(
        remote_node(&node("n2", "10.42.2.0/24", &[]), &config),
        Ok(None)
    );
    let outside = node(
        "n2",
        "10.99.2.0/24",
        &flannel_annotations("02:00:00:00:00:02", "192.168.7.12"),
    );
    assert!(remote_node(&outside, &config)
        .expect_err("outside the cluster cidr")
        .contains("outside"));
    let bad_mac = node(
        "n2",
        "10.42.2.0/24",
        &flannel_annotations("not-a-mac", "192.168.7.12"),
    );
    assert!(remote_node(&bad_mac, &config).is_err());
    let mut other_vni = flannel_annotations("02:00:00:00:00:02", "192.168.7.12");
    other_vni[1].1 = r#"{"VNI":2,"VtepMAC":"02:00:00:00:00:02"}"#.into();
    assert!(remote_node(&node("n2", "10.42.2.0/24", &other_vni), &config).is_err());
}

#[test]
fn mtu_for_underlay_subtracts_vxlan_overhead() {
    assert_eq!(mtu_for_underlay(1500), 1450);
    assert_eq!(mtu_for_underlay(9000), 8950);
    assert_eq!(mtu_for_underlay(20), 0);
}

#[test]
fn configure_host_sets_forwarding_and_bridge_netfilter() {
    let host = FakeHost::default();
    configure_host(&host).expect("sysctls");
    let calls: Vec<String> = host.calls().iter().map(|c| format!("{c:?}")).collect();
    assert!(
        calls.iter().any(|c| c.contains("net.ipv4.ip_forward")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("net.bridge.bridge-nf-call-iptables")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn cleanup_removes_vxlan_device_and_bridge_and_is_idempotent() {
    let fake = fake_kernel();
    fake.add_link("mini0", 1450, &[net("10.42.1.1/24")]);
    let vtep = ensure_device(fake.as_ref(), &config(), net("10.42.1.0/24"))
        .await
        .expect("device");
    fake.set_route(RouteEntry {
        dst: net("10.42.2.0/24"),
        gateway: Some(Ipv4Addr::new(10, 42, 2, 0)),
        link_index: vtep.index,
        onlink: true,
    })
    .await
    .expect("route");
    fake.set_neighbour(
        vtep.index,
        NeighbourEntry {
            ip: Ipv4Addr::new(10, 42, 2, 0),
            mac: mac("02:00:00:00:00:02"),
        },
    )
    .await
    .expect("neighbour");
    cleanup(fake.as_ref()).await.expect("cleanup");
    assert!(fake.link("mini.1").is_none());
    assert!(fake.link("mini0").is_none());
    assert!(fake.link("eth0").is_some());
    assert!(fake.all_routes().is_empty());
    cleanup(fake.as_ref()).await.expect("cleanup again");
}

#[tokio::test]
async fn interface_ipv4_named_interface_returns_its_address() {
    let fake = fake_kernel();
    assert_eq!(
        interface_ipv4(fake.as_ref(), "eth0").await.expect("eth0"),
        Ipv4Addr::new(192, 168, 7, 11)
    );
    assert!(matches!(
        interface_ipv4(fake.as_ref(), "eth9").await,
        Err(OverlayError::NoInterfaceAddress(_))
    ));
}

#[tokio::test]
async fn reconcile_remotes_leaves_pool_address_host_routes_alone() {
    let fake = fake_kernel();
    let vtep = ensure_device(fake.as_ref(), &config(), net("10.42.1.0/24"))
        .await
        .expect("device");
    let remotes = vec![RemoteNode {
        name: "n2".into(),
        pod_cidr: net("10.42.2.0/24"),
        vtep_mac: mac("02:00:00:00:00:02"),
        public_ip: Ipv4Addr::new(192, 168, 7, 12),
    }];
    reconcile_remotes(fake.as_ref(), &vtep, &remotes)
        .await
        .expect("first pass");
    // a /32 of mini-ippool: a pool address held by n2
    let pool_route = RouteEntry {
        dst: net("10.99.0.5/32"),
        gateway: Some(Ipv4Addr::new(10, 42, 2, 0)),
        link_index: vtep.index,
        onlink: true,
    };
    fake.set_route(pool_route).await.expect("route");
    let stats = reconcile_remotes(fake.as_ref(), &vtep, &remotes)
        .await
        .expect("second pass");
    assert!(!stats.changed(), "{stats:?}");
    assert!(fake
        .routes(vtep.index)
        .await
        .expect("routes")
        .contains(&pool_route));
}
