//! The Node object and its Lease: registration (labels, taints, capacity, addresses, nodeInfo),
//! the status refresh loop and lease renewal. Fail-static: while the server is unreachable the
//! loops keep retrying quietly; nothing here ever stops pods.
//!
//! Ready is sent as soon as it is true, not at the next 10 s refresh: the Ready condition also
//! needs the agent's start to be finished ([`StartGate`]: pod network configured, kubelet
//! running, node API serving), opening the gate wakes the status loop ([`StatusWake`]), and
//! while the last status sent says NotReady the loop checks every [`NOT_READY_POLL`] (the
//! runtime's NetworkReady turns true a moment after the CNI config is written).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams, PostParams};
use mini_sys::Host;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::AgentError;

/// The kubelet version mini reports.
pub const KUBELET_VERSION: &str = "v1.33.0-mini";
/// Pods per node.
pub const MAX_PODS: u32 = 110;
/// How often the status is checked (and sent when it changed) and the lease renewed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// The status is sent at least this often even when nothing changed.
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(60);
/// How often the status is checked while the last one sent says NotReady (upstream's kubelet
/// polls fast at start too), so Ready is sent as soon as it turns true.
pub const NOT_READY_POLL: Duration = Duration::from_millis(500);
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// What the node is, as registered.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub name: String,
    pub hostname: String,
    pub node_ip: IpAddr,
    /// `--node-label`s (applied on top of the well-known labels).
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub kubelet_port: u16,
    /// Whose filesystem is reported as ephemeral-storage.
    pub data_dir: PathBuf,
    /// Annotations the agent owns on its Node (e.g. the local-path directory).
    pub annotations: BTreeMap<String, String>,
}

/// The node's health as the kubelet sees it: drives the Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    pub message: String,
    /// `containerd://<version>`, empty while unknown.
    pub runtime_version: String,
}

/// Where the Ready condition comes from (the CRI runtime in the agent).
#[async_trait]
pub trait HealthSource: Send + Sync {
    async fn health(&self) -> Health;
}

/// Health from CRI `Version` and `Status` (RuntimeReady and NetworkReady).
pub struct CriHealth(pub Arc<dyn mini_cri::Runtime>);

#[async_trait]
impl HealthSource for CriHealth {
    async fn health(&self) -> Health {
        let runtime_version = match self.0.version().await {
            Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
            Err(_) => String::new(),
        };
        let (ready, message) = match self.0.status().await {
            Ok(status) => {
                let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
                let failing: Vec<String> = conditions
                    .iter()
                    .filter(|c| !c.status)
                    .map(|c| format!("{} is false: {} {}", c.r#type, c.reason, c.message))
                    .collect();
                if conditions.is_empty() {
                    (false, "container runtime reports no status".to_string())
                } else if failing.is_empty() {
                    (true, "kubelet is posting ready status".to_string())
                } else {
                    (
                        false,
                        format!("container runtime not ready: {}", failing.join("; ")),
                    )
                }
            }
            Err(e) => (false, format!("container runtime unreachable: {e}")),
        };
        Health {
            ready,
            message,
            runtime_version,
        }
    }
}

/// Ready also needs the agent's own start to be finished: until [`StartGate::open`] (pod
/// network configured, kubelet running, node API serving) the gate reports NotReady with the
/// runtime's version; afterwards it reports the runtime's health unchanged.
pub struct StartGate {
    runtime: Arc<dyn HealthSource>,
    open: AtomicBool,
}

impl StartGate {
    pub fn new(runtime: Arc<dyn HealthSource>) -> Self {
        Self {
            runtime,
            open: AtomicBool::new(false),
        }
    }

    /// The agent finished starting; Ready follows the runtime's health from now on.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl HealthSource for StartGate {
    async fn health(&self) -> Health {
        let health = self.runtime.health().await;
        if self.open.load(Ordering::SeqCst) {
            return health;
        }
        Health {
            ready: false,
            message: "kubelet is starting: pod network, kubelet and node API not up yet"
                .to_string(),
            runtime_version: health.runtime_version,
        }
    }
}

/// Wakes the status loop to check the status now (and send it when it changed), e.g. when the
/// agent finished starting. A wake before the loop waits is kept, not lost.
#[derive(Clone, Default)]
pub struct StatusWake(Arc<tokio::sync::Notify>);

impl StatusWake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// The status loop's intervals (tests shorten or lengthen them).
#[derive(Debug, Clone, Copy)]
pub struct StatusTiming {
    /// Check interval while the node is Ready (and while the server is unreachable).
    pub interval: Duration,
    /// Check interval while the last status sent says NotReady.
    pub not_ready_poll: Duration,
    /// Send at least this often even when nothing changed.
    pub max_age: Duration,
}

impl Default for StatusTiming {
    fn default() -> Self {
        Self {
            interval: STATUS_INTERVAL,
            not_ready_poll: NOT_READY_POLL,
            max_age: STATUS_MAX_AGE,
        }
    }
}

/// Whether a sent status has Ready=True.
fn is_ready(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// Upstream's `GOARCH` spelling of the machine.
pub fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" | "armv6l" => "arm",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Well-known labels plus `--node-label`s.
pub fn node_labels(
    reg: &NodeRegistration,
    host: &dyn Host,
) -> Result<BTreeMap<String, String>, AgentError> {
    let arch = go_arch(&host.kernel()?.machine).to_string();
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), reg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch),
    ]);
    // the server labels its own node CONTROL_PLANE_LABEL: NodeRestriction forbids a node to
    // set node-role labels on itself
    labels.extend(reg.labels.clone());
    Ok(labels)
}

/// The node status without timestamps (so two of them compare equal when nothing changed).
pub fn node_status(
    reg: &NodeRegistration,
    host: &dyn Host,
    health: &Health,
) -> Result<Value, AgentError> {
    let kernel = host.kernel()?;
    let memory = host.memory()?;
    let fs = host.filesystem(&reg.data_dir)?;
    let os = host.os_identity()?;
    let capacity = json!({
        "cpu": host.cpu_count().to_string(),
        "memory": format!("{}Ki", memory.total_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", fs.capacity_bytes / 1024),
        "pods": MAX_PODS.to_string(),
    });
    let condition = |kind: &str, status: bool, reason: &str, message: &str| json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message});
    let (ready_reason, ready_message) = if health.ready {
        ("KubeletReady", health.message.as_str())
    } else {
        ("KubeletNotReady", health.message.as_str())
    };
    let mut node_info = json!({
        "kernelVersion": kernel.release,
        "osImage": os.pretty_name,
        "operatingSystem": "linux",
        "architecture": go_arch(&kernel.machine),
        "containerRuntimeVersion": health.runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": "",
        "machineID": os.machine_id,
        "systemUUID": os.system_uuid,
        "bootID": os.boot_id,
    });
    if node_info["systemUUID"] == "" {
        node_info["systemUUID"] = node_info["machineID"].clone();
    }
    Ok(json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": reg.node_ip.to_string()},
            {"type": "Hostname", "address": reg.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": reg.kubelet_port}},
        "nodeInfo": node_info,
        "conditions": [
            condition("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", health.ready, ready_reason, ready_message),
        ],
    }))
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Api {
        what,
        source: Box::new(source),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Creates the Node (with our taints) or brings an existing one's labels up to date (other
/// labels are kept), then sends the first status. An existing Node's taints stay as they are,
/// as upstream's kubelet leaves them: NodeRestriction forbids a node to change its own taints
/// (an admin does, with `kubectl taint`); a missing one of ours is logged.
pub async fn register(
    client: &kube::Client,
    reg: &NodeRegistration,
    host: &dyn Host,
    health: &Health,
) -> Result<Node, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = node_labels(reg, host)?;
    match nodes
        .get_opt(&reg.name)
        .await
        .map_err(api_err("reading our Node"))?
    {
        None => {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": reg.name, "labels": labels, "annotations": reg.annotations},
                "spec": {"taints": reg.taints},
            }))
            .map_err(|e| AgentError::Serve(format!("building the Node: {e}")))?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = reg.name, "registered the node"),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Box::pin(register(client, reg, host, health)).await
                }
                Err(e) => return Err(api_err("creating our Node")(e)),
            }
        }
        Some(existing) => {
            let taints = existing
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            for taint in &reg.taints {
                if !taints.contains(taint) {
                    tracing::warn!(
                        node = reg.name,
                        taint = %format!("{}={}:{}", taint.key, taint.value.clone().unwrap_or_default(), taint.effect),
                        "the node exists without this --node-taint; a node may not change its own taints: add it with kubectl taint"
                    );
                }
            }
            let patch = json!({"metadata": {"labels": labels, "annotations": reg.annotations}});
            nodes
                .patch(&reg.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(api_err("updating our Node's labels and taints"))?;
            tracing::info!(node = reg.name, "updated the existing node");
        }
    }
    let status = with_heartbeat(node_status(reg, host, health)?, None);
    nodes
        .patch_status(
            &reg.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(api_err("writing our Node's status"))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Adds lastHeartbeatTime to every condition and lastTransitionTime kept from `previous` when
/// the condition's status did not change.
fn with_heartbeat(mut status: Value, previous: Option<&Value>) -> Value {
    let now = now_rfc3339();
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions {
            let old = previous
                .and_then(|p| p["conditions"].as_array())
                .and_then(|cs| cs.iter().find(|o| o["type"] == c["type"]));
            let transition = match old {
                Some(o) if o["status"] == c["status"] => o["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            c["lastHeartbeatTime"] = json!(now);
            c["lastTransitionTime"] = transition;
        }
    }
    status
}

/// Strips the timestamps so two statuses compare on content.
fn without_times(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(conditions) = s["conditions"].as_array_mut() {
        for c in conditions {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
                o.remove("lastTransitionTime");
            }
        }
    }
    s
}

/// Every [`StatusTiming::interval`] (every [`StatusTiming::not_ready_poll`] while the last
/// status sent says NotReady, and at once when woken): recompute the status; send it when it
/// changed or when the last one is older than [`StatusTiming::max_age`]. Errors are logged
/// and retried next tick.
pub async fn run_status_loop(
    client: kube::Client,
    reg: NodeRegistration,
    host: Arc<dyn Host>,
    health: Arc<dyn HealthSource>,
    wake: StatusWake,
    timing: StatusTiming,
    shutdown: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_sent: Option<(Value, Instant)> = None;
    let mut failures = 0u32;
    loop {
        let ready_sent = last_sent.as_ref().is_some_and(|(s, _)| is_ready(s));
        let wait = if ready_sent || failures > 0 {
            timing.interval
        } else {
            timing.not_ready_poll
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = wake.woken() => {}
        }
        let h = health.health().await;
        let status = match node_status(&reg, host.as_ref(), &h) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading host facts for the node status failed");
                continue;
            }
        };
        let due = match &last_sent {
            Some((sent, at)) => without_times(sent) != status || at.elapsed() >= timing.max_age,
            None => true,
        };
        if !due {
            continue;
        }
        let status = with_heartbeat(status, last_sent.as_ref().map(|(s, _)| s));
        let patch = Patch::Merge(json!({"status": status}));
        match nodes
            .patch_status(&reg.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(node = reg.name, "node status reaches the server again");
                }
                failures = 0;
                last_sent = Some((status, Instant::now()));
            }
            Err(e) if is_not_found(&e) => {
                tracing::warn!(node = reg.name, "our Node was deleted; registering again");
                if let Err(e) = register(&client, &reg, host.as_ref(), &h).await {
                    tracing::warn!(error = %e, "registering the node again failed");
                }
                last_sent = None;
            }
            Err(e) => {
                failures += 1;
                // fail-static: say it once, then only at debug level
                if failures == 1 {
                    tracing::warn!(error = %e, "updating the node status failed; retrying every 10 s");
                } else {
                    tracing::debug!(error = %e, "updating the node status failed");
                }
            }
        }
    }
}

/// Renews `kube-node-lease/<node>` now and every [`STATUS_INTERVAL`] (created when missing).
pub async fn run_lease_loop(client: kube::Client, node_name: String, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match renew_lease(&client, &node_name).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "renewing the node lease failed; retrying every 10 s");
                } else {
                    tracing::debug!(error = %e, "renewing the node lease failed");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
    }
}

/// One renewal: merge-patch renewTime, or create the Lease (owned by our Node) when missing.
pub async fn renew_lease(client: &kube::Client, node_name: &str) -> Result<(), AgentError> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let patch = json!({"spec": {"holderIdentity": node_name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
    match leases
        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let node_uid = Api::<Node>::all(client.clone())
                .get_opt(node_name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid);
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node_name, "namespace": LEASE_NAMESPACE},
                "spec": patch["spec"],
            });
            if let Some(uid) = node_uid {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Node", "name": node_name, "uid": uid
                }]);
            }
            let lease: Lease = serde_json::from_value(lease)
                .map_err(|e| AgentError::Serve(format!("building the Lease: {e}")))?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
                .map_err(api_err("creating our Lease"))
        }
        Err(e) => Err(api_err("renewing our Lease")(e)),
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
