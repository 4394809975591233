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
        annotations: BTreeMap::from([(
            "storage.mini.dev/local-path-dir".to_string(),
            "/var/lib/mini/storage".to_string(),
        )]),
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
    assert!(
        labels.get(CONTROL_PLANE_LABEL).is_none(),
        "the server sets it"
    );
    assert_eq!(labels["zone"], "a");
    assert_eq!(
        v["metadata"]["annotations"]["storage.mini.dev/local-path-dir"],
        "/var/lib/mini/storage"
    );
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
async fn register_existing_node_keeps_its_labels_and_taints_and_adds_our_labels() {
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
    let reg = registration();
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
    // a node may not change its own taints (NodeRestriction): ours apply at registration only
    assert_eq!(keys, ["node.kubernetes.io/unreachable"]);
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

/// A runtime whose readiness the test flips.
struct FlipHealth(std::sync::Mutex<bool>);

impl FlipHealth {
    fn new(ready: bool) -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(ready)))
    }

    fn set(&self, ready: bool) {
        *self.0.lock().expect("lock") = ready;
    }
}

#[async_trait]
impl HealthSource for FlipHealth {
    async fn health(&self) -> Health {
        let ready = *self.0.lock().expect("lock");
        Health {
            ready,
            message: if ready {
                "runtime ready"
            } else {
                "NetworkReady is false"
            }
            .into(),
            runtime_version: "containerd://1.6.20".into(),
        }
    }
}

/// The Ready condition's status as the server has it.
async fn ready_status(env: &TestEnv) -> String {
    let node = Api::<Node>::all(env.admin_client())
        .get("node-a")
        .await
        .expect("node");
    let v = serde_json::to_value(node).expect("json");
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits (up to 30 s, far below any interval the tests leave running) for Ready=`want`.
async fn wait_ready_status(env: &TestEnv, want: &str) {
    for _ in 0..600 {
        if ready_status(env).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Ready never became {want}");
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn start_gate_closed_reports_not_ready_then_runtime_health_once_open() {
    let gate = StartGate::new(FlipHealth::new(true));
    let closed = gate.health().await;
    assert!(!closed.ready);
    assert!(closed.message.contains("starting"), "{}", closed.message);
    assert_eq!(closed.runtime_version, "containerd://1.6.20");
    gate.open();
    let open = gate.health().await;
    assert!(open.ready);
    assert_eq!(open.message, "runtime ready");
}

#[tokio::test]
async fn status_loop_woken_when_start_finishes_posts_ready_at_once() {
    let env = TestEnv::start().await;
    let host: Arc<dyn Host> = Arc::new(FakeHost::default());
    let gate = Arc::new(StartGate::new(FlipHealth::new(true)));
    let client = node_client(&env);
    register(
        &client,
        &registration(),
        host.as_ref(),
        &gate.health().await,
    )
    .await
    .expect("register");
    assert_eq!(ready_status(&env).await, "False");
    let (wake, shutdown) = (StatusWake::default(), CancellationToken::new());
    // every interval an hour: only the wake can send the new status
    let timing = StatusTiming {
        interval: HOUR,
        not_ready_poll: HOUR,
        max_age: HOUR,
    };
    let task = tokio::spawn(run_status_loop(
        client,
        registration(),
        host,
        gate.clone(),
        wake.clone(),
        timing,
        shutdown.clone(),
    ));
    gate.open();
    wake.wake();
    wait_ready_status(&env, "True").await;
    shutdown.cancel();
    task.await.expect("loop");
}

#[tokio::test]
async fn status_loop_not_ready_polls_fast_until_ready_then_slows_down() {
    let env = TestEnv::start().await;
    let host: Arc<dyn Host> = Arc::new(FakeHost::default());
    let runtime = FlipHealth::new(false);
    let client = node_client(&env);
    register(
        &client,
        &registration(),
        host.as_ref(),
        &runtime.health().await,
    )
    .await
    .expect("register");
    let shutdown = CancellationToken::new();
    let timing = StatusTiming {
        interval: HOUR,
        not_ready_poll: Duration::from_millis(20),
        max_age: HOUR,
    };
    let task = tokio::spawn(run_status_loop(
        client,
        registration(),
        host,
        runtime.clone(),
        StatusWake::default(),
        timing,
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready_status(&env).await, "False");
    // the runtime turns ready (NetworkReady after the CNI config): sent without a wake
    runtime.set(true);
    wait_ready_status(&env, "True").await;
    // once Ready was sent the loop is back to the (hour-long) refresh interval
    runtime.set(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready_status(&env).await, "True");
    shutdown.cancel();
    task.await.expect("loop");
}
