//! Simulated nodes for load testing (like kwok): they register, hold leases, report capacity,
//! and mark pods bound to them Running with made-up IPs — no containers run. A pod annotated
//! `sim.mini.dev/complete-after: <seconds>` finishes with phase Succeeded after that long, so
//! Jobs complete. This is a test tool, never a way to run workloads. `samples` posts the
//! monitoring history such nodes would have sent, for benchmarks of the metrics store.

pub mod samples;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The label every simulated node carries.
pub const SIMULATED_LABEL: &str = "node.mini.dev/simulated";
/// Pods with this annotation (seconds) succeed that long after they start.
pub const COMPLETE_AFTER_ANNOTATION: &str = "sim.mini.dev/complete-after";

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes are named `<prefix><index>`, index from `first_index`.
    pub prefix: String,
    pub first_index: usize,
    pub count: usize,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub lease_interval: Duration,
    pub labels: BTreeMap<String, String>,
    /// Concurrent status writes when many pods land at once.
    pub write_concurrency: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            prefix: "sim-node-".into(),
            first_index: 0,
            count: 3,
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            lease_interval: Duration::from_secs(10),
            labels: BTreeMap::new(),
            write_concurrency: 32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("api request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching pods failed: {0}")]
    Watch(#[from] watcher::Error),
    #[error("simulated monitoring load: {0}")]
    Load(String),
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The made-up InternalIP of simulated node `index` (198.18.0.0/15, the benchmarking range).
fn node_ip(index: usize) -> String {
    format!("198.18.{}.{}", (index / 250) % 256, index % 250 + 1)
}

fn node_object(config: &SimConfig, index: usize) -> serde_json::Value {
    let name = format!("{}{index}", config.prefix);
    let mut labels: BTreeMap<String, String> = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert(SIMULATED_LABEL.into(), "true".into());
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"node.mini.dev/simulated-by": "mini sim nodes"}},
        "spec": {},
    })
}

fn node_status(config: &SimConfig, index: usize) -> serde_json::Value {
    let name = format!("{}{index}", config.prefix);
    let now = now_rfc3339();
    let resources = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.max_pods.to_string(), "ephemeral-storage": "100Gi"});
    let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "simulated node is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip(index)}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"machineID": format!("sim-{index}"), "systemUUID": format!("sim-{index}"), "bootID": "sim",
            "kernelVersion": "simulated", "osImage": "mini simulated node", "containerRuntimeVersion": "sim://0",
            "kubeletVersion": "v1.33.0-sim", "kubeProxyVersion": "v1.33.0-sim", "operatingSystem": "linux", "architecture": "amd64"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }})
}

/// Registers the nodes (creating or refreshing them) and reports them Ready.
async fn register(client: &kube::Client, config: &SimConfig) -> Result<(), SimError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let indexes: Vec<usize> = (config.first_index..config.first_index + config.count).collect();
    futures::stream::iter(indexes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let obj: Node = serde_json::from_value(node_object(config, i)).expect("valid node");
                match nodes.create(&PostParams::default(), &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(SimError::from(e)),
                }
                let name = format!("{}{i}", config.prefix);
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(node_status(config, i)),
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(config.write_concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Renews every node's lease each interval, spreading the writes over the interval.
async fn heartbeat(
    client: kube::Client,
    config: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let names: Vec<String> = (config.first_index..config.first_index + config.count)
        .map(|i| format!("{}{i}", config.prefix))
        .collect();
    let mut ticks = 0u64;
    loop {
        futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let leases = leases.clone();
                let nodes = nodes.clone();
                async move {
                    let lease = Lease {
                        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(name.clone()),
                            lease_duration_seconds: Some(40),
                            renew_time: Some(now_micro()),
                            ..Default::default()
                        }),
                    };
                    let patch = PatchParams::apply("mini-simnode").force();
                    let mut lease_json = serde_json::to_value(&lease).expect("valid lease");
                    lease_json["apiVersion"] = json!("coordination.k8s.io/v1");
                    lease_json["kind"] = json!("Lease");
                    if let Err(e) = leases.patch(&name, &patch, &Patch::Apply(lease_json)).await {
                        tracing::warn!(node = name, error = %e, "renewing lease failed");
                    }
                    // a fresh Ready heartbeat now and then, as a kubelet does
                    if ticks.is_multiple_of(6) {
                        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated node is posting ready status", "lastHeartbeatTime": now_rfc3339()}]}});
                        let _ = nodes.patch_status(&name, &PatchParams::default(), &Patch::Strategic(status)).await;
                    }
                }
            })
            .buffer_unordered(config.write_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        ticks += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.lease_interval) => {}
        }
    }
}

/// Per-pod bookkeeping: made-up IPs, one per node range.
struct IpBook {
    next: HashMap<String, u32>,
}

impl IpBook {
    fn pod_ip(&mut self, node_index: usize, node: &str) -> String {
        let n = self.next.entry(node.to_string()).or_insert(2);
        let ip = format!(
            "10.{}.{}.{}",
            200 + (node_index / 256) % 50,
            node_index % 256,
            *n % 254 + 1
        );
        *n += 1;
        ip
    }
}

fn running_status(pod: &Pod, pod_ip: &str, host_ip: &str) -> serde_json::Value {
    let now = now_rfc3339();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| json!({
            "name": c.name, "image": c.image.clone().unwrap_or_default(),
            "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
            "containerID": format!("sim://{}-{}", pod.metadata.name.clone().unwrap_or_default(), c.name),
            "ready": true, "started": true, "restartCount": 0,
            "state": {"running": {"startedAt": now}}, "lastState": {},
        })).collect())
        .unwrap_or_default();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": now,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "containerStatuses": containers,
    }})
}

fn succeeded_status(pod: &Pod) -> serde_json::Value {
    let now = now_rfc3339();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| json!({
            "name": c.name, "image": c.image.clone().unwrap_or_default(),
            "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
            "containerID": format!("sim://{}-{}", pod.metadata.name.clone().unwrap_or_default(), c.name),
            "ready": false, "started": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}}, "lastState": {},
        })).collect())
        .unwrap_or_default();
    json!({"status": {"phase": "Succeeded", "containerStatuses": containers,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now},
                       {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now}]}})
}

/// Writes a pod's status the way a kubelet's sync loop does: an API server that is away (a
/// restart) is waited for, so a pod bound just before the restart is not left Pending; a pod
/// that is gone or changed (404, 409) ends the attempt. Returns whether the status was written.
async fn patch_status_until_done(
    api: &Api<Pod>,
    name: &str,
    status: serde_json::Value,
    shutdown: &CancellationToken,
) -> bool {
    const ATTEMPTS: u32 = 120;
    for attempt in 1..=ATTEMPTS {
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => return true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = name, error = %e, "pod gone or changed; status not written");
                return false;
            }
            Err(e) => {
                tracing::info!(pod = name, attempt, error = %e, "writing pod status failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    false
}

/// Watches pods and plays the kubelet for those bound to the simulated nodes.
async fn run_pods(
    client: kube::Client,
    config: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let nodes: HashMap<String, usize> = (config.first_index..config.first_index + config.count)
        .map(|i| (format!("{}{i}", config.prefix), i))
        .collect();
    let all: Api<Pod> = Api::all(client.clone());
    let book = Arc::new(Mutex::new(IpBook {
        next: HashMap::new(),
    }));
    let handled: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    // like a kubelet, keep watching through API server restarts (back-off, then re-list)
    let stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let work = stream
        .filter_map(|item: Result<Pod, watcher::Error>| {
            let pod = match item {
                Ok(pod) => pod,
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    return futures::future::ready(None);
                }
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let keep = node.as_ref().is_some_and(|n| nodes.contains_key(n));
            futures::future::ready(keep.then_some(pod))
        })
        .map(|pod| {
            let client = client.clone();
            let book = book.clone();
            let handled = handled.clone();
            let nodes = &nodes;
            let shutdown = shutdown.clone();
            async move {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client, &ns);
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                let node_index = nodes.get(&node).copied().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() {
                    // the kubelet's last step of a graceful deletion
                    let dp = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }), ..Default::default() };
                    let _ = api.delete(&name, &dp).await;
                    handled.lock().expect("poisoned").remove(&uid);
                    return;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if phase == "Succeeded" || phase == "Failed" {
                    return;
                }
                if phase != "Running" && handled.lock().expect("poisoned").insert(uid.clone()) {
                    let ip = book.lock().expect("poisoned").pod_ip(node_index, &node);
                    let status = running_status(&pod, &ip, &node_ip(node_index));
                    if !patch_status_until_done(&api, &name, status, &shutdown).await {
                        handled.lock().expect("poisoned").remove(&uid);
                        return;
                    }
                    let after = pod.metadata.annotations.as_ref().and_then(|a| a.get(COMPLETE_AFTER_ANNOTATION)).and_then(|s| s.parse::<f64>().ok());
                    if let Some(secs) = after {
                        let pod = pod.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                _ = tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))) => {
                                    patch_status_until_done(&api, &name, succeeded_status(&pod), &shutdown).await;
                                }
                            }
                        });
                    }
                }
            }
        })
        .for_each_concurrent(config.write_concurrency.max(1), |f| f);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = work => {}
    }
    Ok(())
}

/// Runs the simulated nodes until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: SimConfig,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    register(&client, &config).await?;
    tracing::info!(
        count = config.count,
        prefix = config.prefix,
        "simulated nodes registered"
    );
    let hb = tokio::spawn(heartbeat(client.clone(), config.clone(), shutdown.clone()));
    let pods = run_pods(client, config, shutdown.clone()).await;
    shutdown.cancel();
    let _ = hb.await;
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn simulated_nodes_register_ready_and_run_bound_pods() {
        let env = mini_testenv::TestEnv::start().await;
        let token = CancellationToken::new();
        let config = SimConfig {
            count: 2,
            lease_interval: Duration::from_millis(500),
            ..Default::default()
        };
        let task = tokio::spawn(run(env.admin_client(), config, token.clone()));
        let nodes: Api<Node> = Api::all(env.admin_client());
        let pods: Api<Pod> = Api::namespaced(env.admin_client(), "default");
        let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {COMPLETE_AFTER_ANNOTATION: "0.5"}},
            "spec": {"nodeName": "sim-node-1", "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap();
        let mut ok = (false, false, false);
        for _ in 0..100 {
            if !ok.1 {
                if let Ok(n) = nodes.get("sim-node-1").await {
                    let ready = n.status.and_then(|s| s.conditions).is_some_and(|c| {
                        c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    if ready && !ok.0 {
                        pods.create(&PostParams::default(), &pod).await.unwrap();
                        ok.0 = true;
                    }
                }
            }
            if ok.0 {
                let p = pods.get("p").await.unwrap();
                let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
                ok.1 |= phase == "Running" || phase == "Succeeded";
                ok.2 |= phase == "Succeeded";
            }
            let lease: Result<Lease, _> = Api::namespaced(env.admin_client(), "kube-node-lease")
                .get("sim-node-0")
                .await;
            if ok.2 && lease.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        token.cancel();
        let _ = task.await;
        assert_eq!(
            ok,
            (true, true, true),
            "(node ready + pod created, pod ran, pod completed)"
        );
    }
}
