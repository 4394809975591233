//! Node registration and lease tests against the in-process API server.

use super::*;
use k8s_openapi::api::coordination::v1::Lease;
use mini_sys::FakeHost;
use mini_testenv::TestEnv;

fn registration() -> NodeRegistration {
    NodeRegistration {
        name: "node-a".into(),
        hostname: "host-a".into(),
        node_ip: "192.0.2.10".parse().expect("ip"),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        taints: crate::parse_node_taints(&["dedicated=gpu:NoSchedule"]).expect("taint"),
        kubelet_port: 10250,
        data_dir: PathBuf::from("/var/lib/mini"),
        control_plane: true,
    }
}

fn ready() -> Health {
    Health {
        ready: true,
        message: "kubelet is posting ready status".into(),
        runtime_version: "containerd://1.6.20".into(),
    }
}

fn node_client(env: &TestEnv) -> kube::Client {
    env.client_as("system:node:node-a", &["system:nodes"])
}

#[tokio::test]
async fn register_new_node_has_labels_taints_and_status() {
    let env = TestEnv::start().await;
    let host = FakeHost::default();
    register(&node_client(&env), &registration(), &host, &ready())
        .await
        .expect("register");
    let node = Api::<Node>::all(env.admin_client())
        .get("node-a")
        .await
        .expect("node");
    let v = serde_json::to_value(&node).expect("json");
    let labels = &v["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["beta.kubernetes.io/arch"], "amd64");
    assert_eq!(labels[CONTROL_PLANE_LABEL], "true");
    assert_eq!(labels["zone"], "a");
    assert_eq!(v["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(v["spec"]["taints"][0]["effect"], "NoSchedule");
    let status = &v["status"];
    assert_eq!(status["capacity"]["cpu"], "4");
    assert_eq!(status["capacity"]["memory"], format!("{}Ki", 8u64 << 20));
    assert_eq!(status["capacity"]["pods"], "110");
    assert_eq!(
        status["capacity"]["ephemeral-storage"],
        format!("{}Ki", 100u64 << 20)
    );
    assert_eq!(status["allocatable"]["pods"], "110");
    assert_eq!(status["addresses"][0]["type"], "InternalIP");
    assert_eq!(status["addresses"][0]["address"], "192.0.2.10");
    assert_eq!(status["addresses"][1]["address"], "host-a");
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let info = &status["nodeInfo"];
    assert_eq!(info["kubeletVersion"], KUBELET_VERSION);
    assert_eq!(info["containerRuntimeVersion"], "containerd://1.6.20");
    assert_eq!(info["osImage"], "Fake Linux 1");
    assert_eq!(info["kernelVersion"], "6.1.0-fake");
    assert_eq!(info["machineID"], "fake-machine-id");
    let conditions = status["conditions"].as_array().expect("conditions");
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "KubeletReady");
    assert!(ready["lastHeartbeatTime"].is_string());
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = conditions.iter().find(|c| c["type"] == kind).expect(kind);
        assert_eq!(c["status"], "False", "{kind}");
    }
}

#[tokio::test]
async fn register_existing_node_keeps_foreign_taints_and_adds_ours() {
    let env = TestEnv::start().await;
    let host = FakeHost::default();
    let nodes = Api::<Node>::all(env.admin_client());
    let existing: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"keep": "me"}},
        "spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &existing)
        .await
        .expect("create");
    let mut reg = registration();
    reg.control_plane = false;
    register(&node_client(&env), &reg, &host, &ready())
        .await
        .expect("register");
    let v = serde_json::to_value(nodes.get("node-a").await.expect("node")).expect("json");
    assert_eq!(v["metadata"]["labels"]["keep"], "me");
    assert_eq!(v["metadata"]["labels"]["zone"], "a");
    assert!(v["metadata"]["labels"].get(CONTROL_PLANE_LABEL).is_none());
    let keys: Vec<&str> = v["spec"]["taints"]
        .as_array()
        .expect("taints")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(keys, ["node.kubernetes.io/unreachable", "dedicated"]);
}

#[tokio::test]
async fn register_not_ready_runtime_reports_kubelet_not_ready() {
    let env = TestEnv::start().await;
    let host = FakeHost::default();
    let health = Health {
        ready: false,
        message: "container runtime unreachable".into(),
        runtime_version: String::new(),
    };
    let node = register(&node_client(&env), &registration(), &host, &health)
        .await
        .expect("register");
    let v = serde_json::to_value(node).expect("json");
    let ready = v["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "KubeletNotReady");
}

#[tokio::test]
async fn renew_lease_creates_then_advances_renew_time() {
    let env = TestEnv::start().await;
    let client = node_client(&env);
    register(&client, &registration(), &FakeHost::default(), &ready())
        .await
        .expect("register");
    renew_lease(&client, "node-a").await.expect("create lease");
    let leases: Api<Lease> = Api::namespaced(env.admin_client(), LEASE_NAMESPACE);
    let first = leases.get("node-a").await.expect("lease");
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
    assert_eq!(spec.lease_duration_seconds, Some(LEASE_DURATION_SECONDS));
    assert_eq!(
        first.metadata.owner_references.expect("owner")[0].kind,
        "Node"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    renew_lease(&client, "node-a").await.expect("renew");
    let second = leases.get("node-a").await.expect("lease");
    let t1 = spec.renew_time.expect("renew time").0;
    let t2 = second.spec.expect("spec").renew_time.expect("renew time").0;
    assert!(t2 > t1, "{t1} -> {t2}");
}

#[test]
fn with_heartbeat_unchanged_status_keeps_transition_time() {
    let before = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    let same = with_heartbeat(
        json!({"conditions": [{"type": "Ready", "status": "True"}]}),
        Some(&before),
    );
    assert_eq!(
        same["conditions"][0]["lastTransitionTime"],
        "2020-01-01T00:00:00Z"
    );
    let flipped = with_heartbeat(
        json!({"conditions": [{"type": "Ready", "status": "False"}]}),
        Some(&before),
    );
    assert_ne!(
        flipped["conditions"][0]["lastTransitionTime"],
        "2020-01-01T00:00:00Z"
    );
}
