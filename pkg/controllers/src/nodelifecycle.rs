//! The node lifecycle controller with taint-based eviction: watches node heartbeats (the
//! node's `kube-node-lease` Lease and its `Ready` condition), marks nodes whose kubelet went
//! quiet for longer than the grace period as `Unknown`, keeps the `not-ready`/`unreachable`/
//! `unschedulable`/pressure taints in sync with the node, and evicts pods from nodes with
//! `NoExecute` taints they do not tolerate (or tolerate only for `tolerationSeconds`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::{EventRecorder, EventType};

use crate::endpoints::{
    event_object, is_conflict, is_not_found, reflect, sleep_until, Key, WorkQueue,
};
use crate::{Context, ControllerError};

pub(crate) const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub(crate) const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub(crate) const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Conditions the controller turns `Unknown` when the kubelet goes quiet.
const MONITORED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// NoSchedule taints mirroring node conditions that are `True`.
const CONDITION_TAINTS: [(&str, &str); 4] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
const REASON_UNKNOWN: &str = "NodeStatusUnknown";
const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";

/// What the controller observed of a node's heartbeats.
struct Health {
    /// When a heartbeat last changed, by this process's monotonic clock (first sight counts).
    probe: Instant,
    lease_renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    /// The Ready status seen at the last sync, for NodeReady/NodeNotReady events.
    last_ready: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    Node(String),
    Pod(Key),
}

struct State {
    nodes: Store<Node>,
    pods: Store<Pod>,
    health: HashMap<String, Health>,
    /// First sight of NoExecute taints lacking `timeAdded`: (node, key, value) → time.
    untimed: HashMap<(String, String, String), Timestamp>,
    recorder: EventRecorder,
}

impl State {
    fn observe(&mut self, node: &str) -> &mut Health {
        self.health
            .entry(node.to_string())
            .or_insert_with(|| Health {
                probe: Instant::now(),
                lease_renew: None,
                heartbeat: None,
                last_ready: None,
            })
    }

    fn observe_lease(&mut self, lease: &Lease) {
        let renew = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0);
        let h = self.observe(&lease.name_any());
        if renew.is_some() && renew != h.lease_renew {
            h.lease_renew = renew;
            h.probe = Instant::now();
        }
    }

    fn observe_node(&mut self, node: &Node) {
        // only heartbeats the kubelet posted count, not the Unknown this controller writes
        let heartbeat = condition(node, "Ready")
            .filter(|c| {
                !matches!(
                    c.reason.as_deref(),
                    Some(REASON_UNKNOWN) | Some(REASON_NEVER_UPDATED)
                )
            })
            .and_then(|c| c.last_heartbeat_time.clone())
            .map(|t| t.0);
        let h = self.observe(&node.name_any());
        if heartbeat.is_some() && heartbeat > h.heartbeat {
            h.heartbeat = heartbeat;
            h.probe = Instant::now();
        }
    }

    fn pods_on(&self, node: &str) -> Vec<Key> {
        self.pods
            .state_filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .iter()
            .map(|p| crate::endpoints::key_of(p.as_ref()))
            .collect()
    }

    async fn event(
        &self,
        obj: &k8s_openapi::api::core::v1::ObjectReference,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self
            .recorder
            .record(obj, EventType::Normal, reason, message)
            .await
        {
            tracing::warn!(error = %e, reason, "recording an event failed");
        }
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The node's conditions with the monitored ones turned `Unknown`; `None` when all already are.
fn unknown_conditions(node: &Node) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in MONITORED_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        time_added: (effect == "NoExecute").then(now),
        value: None,
    }
}

fn is_managed(t: &Taint) -> bool {
    let key = t.key.as_str();
    key == TAINT_NOT_READY
        || key == TAINT_UNREACHABLE
        || (t.effect == "NoSchedule"
            && (key == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, k)| *k == key)))
}

/// The node's taints with the ones this controller manages brought in line with its
/// conditions and `spec.unschedulable` (existing ones kept as they are, with their
/// `timeAdded`); `None` when nothing changes.
fn desired_taints(node: &Node) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => {
            wanted.push((TAINT_NOT_READY, "NoSchedule"));
            wanted.push((TAINT_NOT_READY, "NoExecute"));
        }
        Some("Unknown") => {
            wanted.push((TAINT_UNREACHABLE, "NoSchedule"));
            wanted.push((TAINT_UNREACHABLE, "NoExecute"));
        }
        _ => {}
    }
    for (type_, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == "True") {
            wanted.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(t) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    for (k, e) in wanted {
        if !next.iter().any(|t| t.key == k && t.effect == e) {
            next.push(taint(k, e));
        }
    }
    (next != current).then_some(next)
}

/// Upstream `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// When a pod must go because of `taints` (NoExecute ones with the time each was added):
/// `Some(None)` at once (a taint it does not tolerate), `Some(Some(t))` at `t` (the earliest
/// taint added + the `tolerationSeconds` of the first toleration matching it), `None` never.
fn eviction_time(
    tolerations: &[Toleration],
    taints: &[(Taint, Timestamp)],
) -> Option<Option<Timestamp>> {
    let mut earliest: Option<Timestamp> = None;
    for (taint, added) in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(None);
        };
        let Some(secs) = t.toleration_seconds else {
            continue;
        };
        let at = added
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs.max(0)))
            .unwrap_or(*added);
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    earliest.map(Some)
}

/// Monitors one node: marks it Unknown when its heartbeats stopped, syncs its taints, and
/// returns when to look again.
async fn sync_node(
    ctx: &Context,
    state: &mut State,
    name: &str,
) -> Result<Option<Duration>, ControllerError> {
    let Some(node) = state.nodes.get(&ObjectRef::new(name)) else {
        state.health.remove(name);
        return Ok(None);
    };
    let mut node: Node = (*node).clone();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let grace = ctx.config.node_monitor_grace_period;
    let probe = state.observe(name).probe;
    let silent = probe.elapsed();
    let mut recheck = None;
    if silent > grace {
        if let Some(conditions) = unknown_conditions(&node) {
            let was = condition(&node, "Ready").map(|c| c.status.clone());
            node.status.get_or_insert_with(Default::default).conditions = Some(conditions);
            node = api
                .replace_status(name, &PostParams::default(), &node)
                .await?;
            tracing::info!(
                node = name,
                silent_ms = silent.as_millis() as u64,
                "node stopped posting status; marked unknown"
            );
            if was.as_deref() != Some("Unknown") {
                let r = node.object_ref(&());
                state
                    .event(
                        &r,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
            }
        }
    } else {
        recheck = Some(grace - silent + Duration::from_millis(50));
    }
    let ready = condition(&node, "Ready").map(|c| c.status.clone());
    let last = std::mem::replace(&mut state.observe(name).last_ready, ready.clone());
    if last.is_some() && last != ready {
        let r = node.object_ref(&());
        match (last.as_deref(), ready.as_deref()) {
            (Some("True"), Some("False")) => {
                state
                    .event(
                        &r,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await
            }
            (_, Some("True")) => {
                state
                    .event(
                        &r,
                        "NodeReady",
                        &format!("Node {name} status is now: NodeReady"),
                    )
                    .await
            }
            _ => {}
        }
    }
    if let Some(taints) = desired_taints(&node) {
        node.spec.get_or_insert_with(Default::default).taints = Some(taints);
        api.replace(name, &PostParams::default(), &node).await?;
    }
    Ok(recheck)
}

/// Evicts one pod if its node's NoExecute taints say so; returns when to look again.
async fn sync_pod(
    ctx: &Context,
    state: &mut State,
    key: &Key,
) -> Result<Option<Duration>, ControllerError> {
    let (ns, name) = key;
    let Some(pod) = state.pods.get(&ObjectRef::new(name).within(ns)) else {
        return Ok(None);
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(None);
    };
    let Some(node) = state.nodes.get(&ObjectRef::new(&node_name)) else {
        return Ok(None);
    };
    let mut taints: Vec<(Taint, Timestamp)> = Vec::new();
    for t in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        if t.effect != "NoExecute" {
            continue;
        }
        let added = match &t.time_added {
            Some(at) => at.0,
            None => *state
                .untimed
                .entry((
                    node_name.clone(),
                    t.key.clone(),
                    t.value.clone().unwrap_or_default(),
                ))
                .or_insert_with(Timestamp::now),
        };
        taints.push((t.clone(), added));
    }
    if taints.is_empty() {
        return Ok(None);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let when = match eviction_time(&tolerations, &taints) {
        None => return Ok(None),
        Some(when) => when,
    };
    if let Some(at) = when {
        let left = at.duration_since(Timestamp::now());
        if left.is_positive() {
            let left = Duration::try_from(left).unwrap_or_default();
            return Ok(Some(left + Duration::from_millis(10)));
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let r = pod.object_ref(&());
    state
        .event(
            &r,
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
    let disruption = serde_json::json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": now(),
    }]}});
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(disruption))
        .await
    {
        if !is_not_found(&e) {
            tracing::debug!(error = %e, "adding the DisruptionTarget condition failed");
        }
    }
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, pod = %name, node = %node_name, "evicted pod for a NoExecute taint");
            Ok(None)
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

enum Msg {
    Node(Box<watcher::Event<Node>>),
    Lease(Box<watcher::Event<Lease>>),
    Pod(Box<watcher::Event<Pod>>),
}

/// Runs the node lifecycle controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let (nodes, node_events) = reflect(Api::<Node>::all(client.clone()), Default::default());
    let (_leases, lease_events) = reflect(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        Default::default(),
    );
    let (pods, pod_events) = reflect(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("spec.nodeName!="),
    );
    let mut events = futures::stream::select_all(vec![
        node_events.map(|e| Msg::Node(Box::new(e))).boxed(),
        lease_events.map(|e| Msg::Lease(Box::new(e))).boxed(),
        pod_events.map(|e| Msg::Pod(Box::new(e))).boxed(),
    ]);
    let mut state = State {
        nodes,
        pods,
        health: HashMap::new(),
        untimed: HashMap::new(),
        recorder: EventRecorder::new(client.clone(), "node-controller"),
    };
    let mut synced = [false; 3];
    let mut started = false;
    let mut queue: WorkQueue<Work> = WorkQueue::default();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        queue.promote_due();
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Ok(()),
            msg = events.next() => {
                let Some(msg) = msg else {
                    return Err(ControllerError::Other("node lifecycle watch streams ended".into()));
                };
                match msg {
                    Msg::Node(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[0] = true; }
                        match ev.as_ref() {
                            watcher::Event::Delete(n) => {
                                let name = n.name_any();
                                state.health.remove(&name);
                                state.untimed.retain(|(node, _, _), _| *node != name);
                            }
                            _ => {
                                if let Some(n) = event_object(&ev) {
                                    state.observe_node(n);
                                    queue.add(Work::Node(n.name_any()));
                                    for p in state.pods_on(&n.name_any()) { queue.add(Work::Pod(p)); }
                                }
                            }
                        }
                    }
                    Msg::Lease(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[1] = true; }
                        if let (Some(l), false) = (event_object(&ev), matches!(*ev, watcher::Event::Delete(_))) {
                            state.observe_lease(l);
                            queue.add(Work::Node(l.name_any()));
                        }
                    }
                    Msg::Pod(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[2] = true; }
                        if let (Some(p), false) = (event_object(&ev), matches!(*ev, watcher::Event::Delete(_))) {
                            queue.add(Work::Pod(crate::endpoints::key_of(p)));
                        }
                    }
                }
                if !started && synced.iter().all(|s| *s) {
                    started = true;
                }
            }
            _ = std::future::ready(()), if started && queue.has_ready() => {
                let Some(work) = queue.pop() else { continue };
                let result = match &work {
                    Work::Node(name) => sync_node(&ctx, &mut state, name).await,
                    Work::Pod(key) => sync_pod(&ctx, &mut state, key).await,
                };
                match result {
                    Ok(again) => {
                        queue.forget(&work);
                        if let Some(d) = again { queue.add_after(work, d); }
                    }
                    Err(e) => {
                        if !matches!(&e, ControllerError::Kube(k) if is_conflict(k)) {
                            tracing::warn!(work = ?work, error = %e, "node lifecycle sync failed");
                        }
                        queue.retry(work);
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
            _ = tick.tick(), if started => {
                // the monitor pass upstream runs every node-monitor-period
                for n in state.nodes.state() { queue.add(Work::Node(n.name_any())); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::eventually;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{Container, NodeSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use mini_testenv::TestEnv;
    use serde_json::json;
    use std::collections::BTreeMap;
    use tokio_util::sync::CancellationToken;

    fn start(env: &TestEnv) -> CancellationToken {
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: crate::ControllerConfig {
                node_monitor_grace_period: Duration::from_secs(2),
                ..Default::default()
            },
            shutdown: token.clone(),
        });
        tokio::spawn(run(ctx));
        token
    }

    /// Creates a node posting Ready and its lease.
    async fn create_node(client: &kube::Client, name: &str, taints: Vec<Taint>) {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..Default::default()
            }),
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await.unwrap();
        post_ready(client, name).await;
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.into()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        leases.create(&PostParams::default(), &lease).await.unwrap();
    }

    async fn post_ready(client: &kube::Client, name: &str) {
        let nodes: Api<Node> = Api::all(client.clone());
        let status = json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now(), "lastTransitionTime": now(),
        }]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
            .await
            .unwrap();
    }

    async fn renew(client: &kube::Client, name: &str) {
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let patch = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
        leases
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Renews the lease (and posts Ready) every 300 ms until the token is cancelled.
    fn keep_alive(client: kube::Client, name: &str) -> CancellationToken {
        let stop = CancellationToken::new();
        let (s, name) = (stop.clone(), name.to_string());
        tokio::spawn(async move {
            while !s.is_cancelled() {
                renew(&client, &name).await;
                post_ready(&client, &name).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        stop
    }

    fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
    }

    #[tokio::test]
    async fn node_lease_fresh_then_stale_then_renewed_goes_ready_unknown_ready() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        create_node(&admin, "n1", Vec::new()).await;
        let token = start(&env);
        let nodes: Api<Node> = Api::all(admin.clone());

        // a fresh lease keeps the node Ready past the grace period
        let alive = keep_alive(admin.clone(), "n1");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let n = nodes.get("n1").await.unwrap();
        assert_eq!(
            condition(&n, "Ready").map(|c| c.status.as_str()),
            Some("True")
        );
        assert!(n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.is_empty()));
        alive.cancel();

        // a stale lease turns the monitored conditions Unknown and taints the node
        let n = eventually("node unknown and unreachable", || async {
            let n = nodes.get("n1").await.unwrap();
            (has_taint(&n, TAINT_UNREACHABLE, "NoExecute")
                && has_taint(&n, TAINT_UNREACHABLE, "NoSchedule"))
            .then_some(n)
        })
        .await;
        for type_ in MONITORED_CONDITIONS {
            let c = condition(&n, type_).unwrap_or_else(|| panic!("condition {type_}"));
            assert_eq!(c.status, "Unknown", "{type_}");
        }
        let ready = condition(&n, "Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let no_exec = n
            .spec
            .as_ref()
            .unwrap()
            .taints
            .as_ref()
            .unwrap()
            .iter()
            .find(|t| t.effect == "NoExecute")
            .unwrap();
        assert!(no_exec.time_added.is_some());
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(admin.clone(), "default");
        eventually("a NodeNotReady event", || async {
            let list = events.list(&Default::default()).await.unwrap();
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("NodeNotReady"))
                .then_some(())
        })
        .await;

        // renewed lease and Ready again: the taints go
        let alive = keep_alive(admin.clone(), "n1");
        eventually("taints removed", || async {
            let n = nodes.get("n1").await.unwrap();
            (condition(&n, "Ready").is_some_and(|c| c.status == "True")
                && n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_none_or(|t| t.is_empty()))
            .then_some(())
        })
        .await;
        alive.cancel();
        token.cancel();
    }

    #[tokio::test]
    async fn node_unschedulable_mirrors_noschedule_taint() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        create_node(&admin, "cordoned", Vec::new()).await;
        let alive = keep_alive(admin.clone(), "cordoned");
        let token = start(&env);
        let nodes: Api<Node> = Api::all(admin.clone());
        nodes
            .patch(
                "cordoned",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .unwrap();
        eventually("unschedulable taint", || async {
            has_taint(
                &nodes.get("cordoned").await.unwrap(),
                TAINT_UNSCHEDULABLE,
                "NoSchedule",
            )
            .then_some(())
        })
        .await;
        nodes
            .patch(
                "cordoned",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": false}})),
            )
            .await
            .unwrap();
        eventually("unschedulable taint removed", || async {
            (!has_taint(
                &nodes.get("cordoned").await.unwrap(),
                TAINT_UNSCHEDULABLE,
                "NoSchedule",
            ))
            .then_some(())
        })
        .await;
        alive.cancel();
        token.cancel();
    }

    async fn create_pod(
        client: &kube::Client,
        name: &str,
        node: &str,
        tolerations: Vec<Toleration>,
    ) {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("app".to_string(), "t".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                tolerations: Some(tolerations),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    fn toleration(key: Option<&str>, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    /// Deleted, or marked for (graceful) deletion: bound pods wait for their node.
    async fn evicted(pods: &Api<Pod>, name: &str) -> bool {
        pods.get_opt(name)
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    }

    #[tokio::test]
    async fn pods_on_unreachable_node_are_evicted_per_their_tolerations() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        // a NoExecute taint of the operator's: pods not tolerating it must go at once
        let maintenance = Taint {
            key: "example.com/maintenance".into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        };
        create_node(&admin, "n2", vec![maintenance]).await;
        let alive = keep_alive(admin.clone(), "n2");
        let token = start(&env);
        create_pod(&admin, "intolerant", "n2", Vec::new()).await;
        create_pod(
            &admin,
            "brief",
            "n2",
            vec![
                toleration(Some("example.com/maintenance"), None),
                toleration(Some(TAINT_UNREACHABLE), Some(1)),
            ],
        )
        .await;
        create_pod(&admin, "forever", "n2", vec![toleration(None, None)]).await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        eventually("intolerant pod evicted", || async {
            evicted(&pods, "intolerant").await.then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !evicted(&pods, "brief").await,
            "brief tolerates the node while it is reachable"
        );

        // the node goes quiet: unreachable NoExecute, tolerated for 1 s by "brief"
        alive.cancel();
        let nodes: Api<Node> = Api::all(admin.clone());
        let n = eventually("unreachable taint", || async {
            let n = nodes.get("n2").await.unwrap();
            has_taint(&n, TAINT_UNREACHABLE, "NoExecute").then_some(n)
        })
        .await;
        let added = n
            .spec
            .unwrap()
            .taints
            .unwrap()
            .into_iter()
            .find(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute")
            .and_then(|t| t.time_added)
            .unwrap();
        eventually("brief pod evicted", || async {
            evicted(&pods, "brief").await.then_some(())
        })
        .await;
        let waited = Timestamp::now().duration_since(added.0);
        assert!(waited.as_millis() >= 900, "evicted after only {waited:?}");
        assert!(waited.as_secs() < 5, "evicted only after {waited:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!evicted(&pods, "forever").await);
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(admin.clone(), "default");
        let list = events.list(&Default::default()).await.unwrap();
        assert!(list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("TaintManagerEviction")
                && e.involved_object.name.as_deref() == Some("intolerant")));
        token.cancel();
    }

    #[test]
    fn eviction_time_follows_first_matching_toleration() {
        let t0 = Timestamp::now();
        let unreachable = taint(TAINT_UNREACHABLE, "NoExecute");
        let other = Taint {
            key: "x".into(),
            effect: "NoExecute".into(),
            value: Some("y".into()),
            time_added: None,
        };
        assert_eq!(eviction_time(&[], &[(unreachable.clone(), t0)]), Some(None));
        let tol = [toleration(Some(TAINT_UNREACHABLE), Some(5))];
        let at = eviction_time(&tol, &[(unreachable.clone(), t0)])
            .unwrap()
            .unwrap();
        assert_eq!(at.duration_since(t0).as_secs(), 5);
        assert_eq!(
            eviction_time(
                &[toleration(None, None)],
                &[(unreachable.clone(), t0), (other.clone(), t0)]
            ),
            None
        );
        let eq = Toleration {
            key: Some("x".into()),
            operator: Some("Equal".into()),
            value: Some("z".into()),
            ..Default::default()
        };
        assert_eq!(eviction_time(&[eq], &[(other, t0)]), Some(None));
    }
}
