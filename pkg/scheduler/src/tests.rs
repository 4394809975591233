//! Integration tests: the scheduler against the in-process API server, with the
//! `system:kube-scheduler` identity, as `mini server` runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mini_testenv::TestEnv;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{run, SchedulerConfig};

const WAIT: Duration = Duration::from_secs(15);

struct Harness {
    env: TestEnv,
    admin: kube::Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Harness {
    let env = TestEnv::start().await;
    let admin = env.admin_client();
    let stop = CancellationToken::new();
    let client = env.scheduler_client();
    let token = stop.clone();
    tokio::spawn(async move {
        run(client, SchedulerConfig::default(), token)
            .await
            .expect("scheduler run");
    });
    Harness { env, admin, stop }
}

fn node_spec(name: &str, labels: Value, taints: Value) -> Value {
    let mut l = json!({"kubernetes.io/hostname": name});
    if let Value::Object(m) = labels {
        for (k, v) in m {
            l[k] = v;
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": l},
        "spec": {"taints": taints},
    })
}

impl Harness {
    async fn node_full(
        &self,
        name: &str,
        cpu: &str,
        labels: Value,
        taints: Value,
        ready: bool,
        pods: &str,
    ) {
        let api: Api<Node> = Api::all(self.admin.clone());
        let node: Node =
            serde_json::from_value(node_spec(name, labels, taints)).expect("node json");
        api.create(&PostParams::default(), &node)
            .await
            .expect("create node");
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": pods},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": pods},
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady"}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
    }

    async fn node(&self, name: &str, cpu: &str, labels: Value, taints: Value) {
        self.node_full(name, cpu, labels, taints, true, "110").await
    }

    async fn pod(&self, name: &str, cpu: &str, spec: Value, labels: Value) {
        self.pod_meta(name, cpu, spec, json!({"labels": labels}))
            .await
    }

    async fn pod_meta(&self, name: &str, cpu: &str, spec: Value, meta: Value) {
        let mut container =
            json!({"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu}}});
        if let Some(ports) = spec.get("ports") {
            container["ports"] = ports.clone();
        }
        let mut s = json!({"containers": [container]});
        if let Value::Object(m) = spec {
            for (k, v) in m {
                if k != "ports" {
                    s[k] = v;
                }
            }
        }
        let mut metadata = json!({"name": name, "namespace": "default"});
        if let Value::Object(m) = meta {
            for (k, v) in m {
                metadata[k] = v;
            }
        }
        let pod: Pod = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": s}),
        )
        .expect("pod json");
        Api::<Pod>::namespaced(self.admin.clone(), "default")
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    async fn node_of(&self, name: &str) -> Option<String> {
        Api::<Pod>::namespaced(self.admin.clone(), "default")
            .get(name)
            .await
            .expect("get pod")
            .spec
            .and_then(|s| s.node_name)
    }

    async fn wait_bound(&self, name: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(n) = self.node_of(name).await {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} was not scheduled in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_event(&self, pod: &str, reason: &str) -> String {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        let deadline = Instant::now() + WAIT;
        loop {
            let events = api.list(&ListParams::default()).await.expect("list events");
            if let Some(e) = events.items.iter().rev().find(|e| {
                e.involved_object.name.as_deref() == Some(pod)
                    && e.reason.as_deref() == Some(reason)
            }) {
                return e.message.clone().unwrap_or_default();
            }
            assert!(Instant::now() < deadline, "no {reason} event for {pod}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scheduled_condition(&self, name: &str) -> Option<(String, String)> {
        let pod = Api::<Pod>::namespaced(self.admin.clone(), "default")
            .get(name)
            .await
            .expect("get pod");
        pod.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")
            .map(|c| (c.status, c.reason.unwrap_or_default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_cpu_request_binds_to_only_fitting_node() {
    let h = start().await;
    h.node("n1", "1", json!({}), json!([])).await;
    h.node("n2", "4", json!({}), json!([])).await;
    h.node("n3", "1", json!({}), json!([])).await;
    h.pod("big", "2", json!({}), json!({})).await;
    assert_eq!(h.wait_bound("big").await, "n2");
    let msg = h.wait_event("big", "Scheduled").await;
    assert_eq!(msg, "Successfully assigned default/big to n2");
    assert_eq!(
        h.scheduled_condition("big").await,
        Some(("True".into(), String::new()))
    );
    drop(h.env.server.clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_replicaset_pods_spread_across_three_nodes() {
    let h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.node(n, "4", json!({}), json!([])).await;
    }
    for i in 0..6 {
        let meta = json!({
            "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                "uid": "11111111-2222-3333-4444-555555555555", "controller": true}],
        });
        h.pod_meta(&format!("web-{i}"), "100m", json!({}), meta)
            .await;
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..6 {
        *per_node
            .entry(h.wait_bound(&format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|c| *c == 2), "{per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_node_selector_and_required_affinity_pick_matching_nodes() {
    let h = start().await;
    h.node("n1", "4", json!({"disk": "hdd", "cores": "4"}), json!([]))
        .await;
    h.node("n2", "4", json!({"disk": "ssd", "cores": "16"}), json!([]))
        .await;
    h.node("n3", "4", json!({"disk": "hdd", "cores": "8"}), json!([]))
        .await;
    h.pod(
        "sel",
        "100m",
        json!({"nodeSelector": {"disk": "ssd"}}),
        json!({}),
    )
    .await;
    // DaemonSet-style: matchFields on metadata.name.
    let by_name = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n3"]}]}]}}}});
    h.pod("ds", "100m", by_name, json!({})).await;
    let gt = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "cores", "operator": "Gt", "values": ["5"]},
            {"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}});
    h.pod("gt", "100m", gt, json!({})).await;
    assert_eq!(h.wait_bound("sel").await, "n2");
    assert_eq!(h.wait_bound("ds").await, "n3");
    assert_eq!(h.wait_bound("gt").await, "n3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_taints_skip_untolerated_nodes_and_allow_tolerated() {
    let h = start().await;
    h.node(
        "gpu",
        "4",
        json!({}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    .await;
    h.node(
        "evict",
        "4",
        json!({}),
        json!([{"key": "maint", "effect": "NoExecute"}]),
    )
    .await;
    h.node("plain", "1", json!({}), json!([])).await;
    h.pod("any", "100m", json!({}), json!({})).await;
    assert_eq!(h.wait_bound("any").await, "plain");
    let tolerating = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "gpu"},
    });
    h.pod("gpu-job", "100m", tolerating, json!({})).await;
    assert_eq!(h.wait_bound("gpu-job").await, "gpu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_host_port_conflict_moves_second_pod() {
    let h = start().await;
    h.node("n1", "4", json!({}), json!([])).await;
    h.node("n2", "4", json!({}), json!([])).await;
    let ports = json!({"ports": [{"containerPort": 80, "hostPort": 8080}]});
    h.pod("a", "100m", ports.clone(), json!({})).await;
    let first = h.wait_bound("a").await;
    h.pod("b", "100m", ports.clone(), json!({})).await;
    let second = h.wait_bound("b").await;
    assert_ne!(first, second);
    h.pod("c", "100m", ports, json!({})).await;
    let msg = h.wait_event("c", "FailedScheduling").await;
    assert!(
        msg.starts_with("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_pod_anti_affinity_by_hostname_one_per_node() {
    let h = start().await;
    for n in ["n1", "n2", "n3"] {
        h.node(n, "4", json!({}), json!([])).await;
    }
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut nodes = std::collections::HashSet::new();
    for i in 0..3 {
        h.pod(
            &format!("db-{i}"),
            "100m",
            anti.clone(),
            json!({"app": "db"}),
        )
        .await;
    }
    for i in 0..3 {
        nodes.insert(h.wait_bound(&format!("db-{i}")).await);
    }
    assert_eq!(nodes.len(), 3);
    h.pod("db-3", "100m", anti, json!({"app": "db"})).await;
    let msg = h.wait_event("db-3", "FailedScheduling").await;
    assert!(
        msg.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{msg}"
    );
    assert_eq!(h.node_of("db-3").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_topology_spread_do_not_schedule_balances_zones() {
    let h = start().await;
    h.node(
        "a1",
        "4",
        json!({"topology.kubernetes.io/zone": "a"}),
        json!([]),
    )
    .await;
    h.node(
        "a2",
        "4",
        json!({"topology.kubernetes.io/zone": "a"}),
        json!([]),
    )
    .await;
    h.node(
        "b1",
        "4",
        json!({"topology.kubernetes.io/zone": "b"}),
        json!([]),
    )
    .await;
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
    for i in 0..6 {
        h.pod(
            &format!("w-{i}"),
            "100m",
            spread.clone(),
            json!({"app": "web"}),
        )
        .await;
    }
    let mut zones: HashMap<&str, usize> = HashMap::new();
    for i in 0..6 {
        let node = h.wait_bound(&format!("w-{i}")).await;
        *zones
            .entry(if node == "b1" { "b" } else { "a" })
            .or_default() += 1;
    }
    assert_eq!(zones.get("a"), Some(&3), "{zones:?}");
    assert_eq!(zones.get("b"), Some(&3), "{zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_unschedulable_pod_reports_then_fits_new_node() {
    let h = start().await;
    h.node("small", "1", json!({}), json!([])).await;
    h.node(
        "cp",
        "8",
        json!({}),
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
    )
    .await;
    h.node_full("down", "8", json!({}), json!([]), false, "110")
        .await;
    h.pod("wants-4", "4", json!({}), json!({})).await;
    let msg = h.wait_event("wants-4", "FailedScheduling").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }, 1 node(s) had untolerated taint \
         {node.kubernetes.io/not-ready: }. preemption: 0/3 nodes are available: 1 No preemption \
         victims found for incoming pod, 2 Preemption is not helpful for scheduling."
    );
    let deadline = Instant::now() + WAIT;
    while h.scheduled_condition("wants-4").await != Some(("False".into(), "Unschedulable".into())) {
        assert!(Instant::now() < deadline, "PodScheduled=False not set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.node("roomy", "8", json!({}), json!([])).await;
    assert_eq!(h.wait_bound("wants-4").await, "roomy");
}

/// Throughput against the API server: 1,000 nodes, 10,000 pending pods, scheduler started after
/// they exist. Prints pods/s. Run with
/// `cargo test --release -p mini-scheduler -- --ignored --nocapture scheduler_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run in release"]
async fn scheduler_throughput_1000_nodes_10000_pods() {
    use futures::StreamExt;
    let nodes: usize = std::env::var("SCHED_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let pods: usize = std::env::var("SCHED_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let env = TestEnv::start().await;
    let admin = env.admin_client();
    let node_api: Api<Node> = Api::all(admin.clone());
    let t = Instant::now();
    futures::stream::iter(0..nodes)
        .map(|i| {
            let api = node_api.clone();
            async move {
                let name = format!("node-{i}");
                let node: Node =
                    serde_json::from_value(node_spec(&name, json!({}), json!([]))).expect("node");
                api.create(&PostParams::default(), &node)
                    .await
                    .expect("create node");
                let status = json!({"status": {
                    "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("node status");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let pod_api: Api<Pod> = Api::namespaced(admin.clone(), "default");
    futures::stream::iter(0..pods)
        .map(|i| {
            let api = pod_api.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("p-{i}"), "labels": {"app": format!("a{}", i % 10)},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("rs-{}", i % 10),
                            "uid": format!("00000000-0000-0000-0000-00000000000{}", i % 10), "controller": true}]},
                    "spec": {"containers": [{"name": "c", "image": "nginx",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
                }))
                .expect("pod");
                api.create(&PostParams::default(), &pod).await.expect("create pod");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!("setup: {nodes} nodes, {pods} pods in {:?}", t.elapsed());

    let stop = CancellationToken::new();
    let client = env.scheduler_client();
    let token = stop.clone();
    let start = Instant::now();
    let handle = tokio::spawn(async move { run(client, SchedulerConfig::default(), token).await });
    let unbound = ListParams::default().fields("spec.nodeName=").limit(1);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = pod_api.list_metadata(&unbound).await.expect("list");
        let left = l.items.len() as u64 + l.metadata.remaining_item_count.unwrap_or(0) as u64;
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{left} pods still pending"
        );
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "scheduled {pods} pods on {nodes} nodes in {secs:.2}s: {:.0} pods/s (incl. initial list)",
        pods as f64 / secs
    );
    stop.cancel();
    handle.await.expect("join").expect("run");
}
