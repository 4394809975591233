//! The DaemonSet controller: one pod per eligible node (node selector, required node affinity,
//! taints against the template's tolerations plus the ones upstream adds to every daemon pod),
//! each pinned to its node by a required `matchFields` affinity on `metadata.name` for the
//! scheduler to bind; RollingUpdate (maxUnavailable / maxSurge) or OnDelete, with
//! ControllerRevision history.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::{EventRecorder, EventType};
use serde_json::json;

use crate::history::{self, REVISION_HASH_LABEL};
use crate::{Context, ControllerError};

/// The (deprecated upstream, still set) label holding the DaemonSet generation a pod came from.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// How often a DaemonSet is reconciled with nothing changing.
const RESYNC: Duration = Duration::from_secs(300);

struct State {
    client: kube::Client,
    recorder: EventRecorder,
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let state = Arc::new(State {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), "daemonset-controller"),
    });
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let controller = controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<ControllerRevision>::all(client.clone()),
            watcher::Config::default(),
        )
        // any node change may change where daemon pods belong: resync every DaemonSet
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_node: Node| {
                store
                    .state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        });
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {}
        _ = controller => {}
    }
    Ok(())
}

fn error_policy(ds: Arc<DaemonSet>, err: &ControllerError, _: Arc<State>) -> Action {
    tracing::warn!(daemonset = %ds.name_any(), error = %err, "daemonset sync failed");
    Action::requeue(Duration::from_secs(2))
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`).
pub(crate) fn implicit_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut out = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    out
}

/// The template's pod spec with the implicit tolerations merged in (an equal toleration is
/// replaced, as upstream's `AddOrUpdateTolerationInPod`).
fn daemon_pod_spec(spec: &DaemonSetSpec) -> PodSpec {
    let mut pod = spec.template.spec.clone().unwrap_or_default();
    let mut tols = pod.tolerations.take().unwrap_or_default();
    for t in implicit_tolerations(pod.host_network == Some(true)) {
        tols.retain(|x| {
            !(x.key == t.key
                && x.operator.as_deref().unwrap_or("Equal") == "Exists"
                && x.effect == t.effect)
        });
        tols.push(t);
    }
    pod.tolerations = Some(tols);
    pod
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// Whether `node` satisfies the required node selector (terms ORed, requirements ANDed).
fn node_selector_matches(sel: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.name_any();
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let v = (r.key == "metadata.name").then_some(name.as_str());
                requirement_matches(r, v)
            })
    })
}

/// Upstream `NodeShouldRunDaemonPod`: (should run a new pod, may keep an existing one).
pub(crate) fn node_should_run(node: &Node, pod: &PodSpec) -> (bool, bool) {
    if node.metadata.deletion_timestamp.is_some() {
        return (false, true);
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = pod
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| node_selector_matches(sel, node));
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let tols = pod.tolerations.as_deref().unwrap_or_default();
    let (mut run, mut keep) = (true, true);
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
    {
        if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
            continue;
        }
        if tols.iter().any(|t| tolerates(t, taint)) {
            continue;
        }
        run = false;
        if taint.effect == "NoExecute" {
            keep = false;
        }
    }
    (run, keep)
}

/// The required affinity pinning a pod to `node` (upstream
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the node terms are replaced, the rest kept).
fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let mut na = affinity.node_affinity.take().unwrap_or_default();
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    affinity.node_affinity = Some(NodeAffinity { ..na });
    affinity
}

/// The node a daemon pod is for: its `nodeName`, else its `metadata.name` affinity.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let sel = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    sel.node_selector_terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let vals = r.values.as_deref().unwrap_or_default();
            (r.key == "metadata.name" && r.operator == "In" && vals.len() == 1)
                .then(|| vals[0].clone())
        })
    })
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .map(String::as_str)
}

fn is_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn available(pod: &Pod, min_ready: i32) -> bool {
    mini_runtime::pod::is_available(pod, min_ready, chrono::Utc::now())
}

fn creation_key(pod: &Pod) -> (Option<i64>, String) {
    (
        pod.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        pod.name_any(),
    )
}

/// `maxUnavailable`/`maxSurge` against `total` (percentages round up, as upstream).
fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(p) => i32::try_from((p * i64::from(total) + 99) / 100).unwrap_or(i32::MAX),
                None => s.parse().unwrap_or(default),
            }
        }
    }
}

struct Sync<'a> {
    state: &'a State,
    ds: &'a DaemonSet,
    name: String,
    pods: Api<Pod>,
}

impl Sync<'_> {
    async fn event(&self, type_: EventType, reason: &str, message: String) {
        let r = self.ds.object_ref(&());
        if let Err(e) = self
            .state
            .recorder
            .record(&r, type_, reason, &message)
            .await
        {
            tracing::debug!(error = %e, "recording a daemonset event failed");
        }
    }

    async fn create_on(
        &self,
        node: &str,
        spec: &PodSpec,
        hash: &str,
    ) -> Result<(), ControllerError> {
        let ds_spec = self.ds.spec.clone().unwrap_or_default();
        let tmeta = ds_spec.template.metadata.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
        labels.insert(REVISION_HASH_LABEL.into(), hash.to_string());
        if let Some(g) = self.ds.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
        }
        let mut spec = spec.clone();
        spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", self.name)),
                namespace: self.ds.namespace(),
                labels: Some(labels),
                annotations: tmeta.annotations,
                finalizers: tmeta.finalizers,
                owner_references: Some(vec![mini_runtime::owner::controller_ref(self.ds)]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                )
                .await;
                Err(e.into())
            }
        }
    }

    async fn delete(&self, pod: &Pod) -> Result<(), ControllerError> {
        self.delete_with(pod, None).await
    }

    /// Deletes `pod`; `grace` 0 forces it (no kubelet is left to finish a graceful deletion
    /// on a node that is gone).
    async fn delete_with(&self, pod: &Pod, grace: Option<u32>) -> Result<(), ControllerError> {
        let name = pod.name_any();
        let dp = DeleteParams {
            grace_period_seconds: grace,
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods.delete(&name, &dp).await {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedDelete",
                    format!("Error deleting: {e}"),
                )
                .await;
                Err(e.into())
            }
        }
    }

    /// The pods this DaemonSet controls, adopting matching orphans.
    async fn claim_pods(
        &self,
        selector: &mini_api::LabelSelector,
        uid: &str,
    ) -> Result<Vec<Pod>, ControllerError> {
        let mut out = Vec::new();
        for pod in self.pods.list(&ListParams::default()).await?.items {
            if mini_runtime::owner::is_controlled_by(&pod.metadata, uid) {
                out.push(pod);
                continue;
            }
            if mini_runtime::owner::controller_of(&pod.metadata).is_none()
                && pod.metadata.deletion_timestamp.is_none()
                && self.ds.metadata.deletion_timestamp.is_none()
                && crate::statefulset::labels_match(selector, pod.metadata.labels.as_ref())
            {
                let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
                owners.push(mini_runtime::owner::controller_ref(self.ds));
                let patch = json!({"metadata": {"ownerReferences": owners, "uid": pod.uid()}});
                match self
                    .pods
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(p) => out.push(p),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }
}

/// Pods grouped by target node, oldest first; pods with no node go under "".
fn by_node(pods: &[Pod]) -> BTreeMap<String, Vec<&Pod>> {
    let mut m: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        m.entry(target_node(p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    for v in m.values_mut() {
        v.sort_by_key(|p| creation_key(p));
    }
    m
}

async fn reconcile(cached: Arc<DaemonSet>, state: Arc<State>) -> Result<Action, ControllerError> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let sets: Api<DaemonSet> = Api::namespaced(state.client.clone(), &ns);
    let Some(ds) = sets.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = ds.spec.clone() else {
        return Ok(Action::await_change());
    };
    let uid = ds.uid().unwrap_or_default();
    let selector = crate::label_selector(&spec.selector, &format!("daemonset {ns}/{name}"))?;
    if selector.is_empty() {
        return Ok(Action::await_change());
    }
    let status = ds.status.clone().unwrap_or_default();
    let owner = history::Owner {
        name: &name,
        namespace: &ns,
        reference: mini_runtime::owner::controller_ref(&ds),
        template: &spec.template,
        annotations: ds
            .metadata
            .annotations
            .clone()
            .map(|mut a| {
                a.remove("deprecated.daemonset.template.generation");
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
                a
            })
            .filter(|a| !a.is_empty()),
    };
    let revs = history::sync(
        &state.client,
        &owner,
        None,
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let hash = history::hash_of(&revs.update);
    let sync = Sync {
        state: &state,
        ds: &ds,
        name: name.clone(),
        pods: Api::namespaced(state.client.clone(), &ns),
    };
    let nodes = Api::<Node>::all(state.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pod_spec = daemon_pod_spec(&spec);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut requeue = RESYNC;

    if ds.metadata.deletion_timestamp.is_none() {
        let pods = sync.claim_pods(&selector, &uid).await?;
        let changed = manage(&sync, &spec, &nodes, &pods, &pod_spec, &hash).await?;
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if !changed && rolling {
            if let Some(w) = rolling_update(&sync, &spec, &nodes, &pods, &pod_spec, &hash).await? {
                requeue = requeue.min(w);
            }
        }
    }

    // status from what exists now
    let pods = sync.claim_pods(&selector, &uid).await?;
    let grouped = by_node(&pods);
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: Some(revs.collision_count),
        conditions: status.conditions.clone(),
        ..Default::default()
    };
    let (mut ready, mut avail, mut updated) = (0, 0, 0);
    for node in &nodes {
        let (want, _) = node_should_run(node, &pod_spec);
        let on: Vec<&Pod> = grouped
            .get(&node.name_any())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if want {
            st.desired_number_scheduled += 1;
            if let Some(pod) = on.first() {
                st.current_number_scheduled += 1;
                if mini_runtime::pod::is_ready(pod) {
                    ready += 1;
                    if available(pod, min_ready) {
                        avail += 1;
                    } else {
                        requeue = requeue.min(Duration::from_secs(1));
                    }
                }
                if on.iter().any(|p| pod_hash(p) == Some(hash.as_str())) {
                    updated += 1;
                }
            }
        } else if !on.is_empty() {
            st.number_misscheduled += 1;
        }
    }
    st.number_ready = ready;
    st.number_available = Some(avail);
    st.updated_number_scheduled = Some(updated);
    st.number_unavailable = Some((st.desired_number_scheduled - avail).max(0));
    if ds.status.as_ref() != Some(&st) {
        let patch = json!({"status": st});
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    let mut live: Vec<String> = pods
        .iter()
        .filter_map(|p| pod_hash(p).map(str::to_string))
        .collect();
    live.push(revs.update.metadata.name.clone().unwrap_or_default());
    history::truncate(
        &state.client,
        &ns,
        &revs.all,
        &live,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    Ok(Action::requeue(requeue))
}

/// Upstream `manage`: a pod on every node that should run one, none elsewhere, failed and
/// duplicate pods removed. Returns whether anything was created or deleted.
async fn manage(
    sync: &Sync<'_>,
    spec: &DaemonSetSpec,
    nodes: &[Node],
    pods: &[Pod],
    pod_spec: &PodSpec,
    hash: &str,
) -> Result<bool, ControllerError> {
    let grouped = by_node(pods);
    let surge = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.as_ref())
        .is_some_and(|s| scaled(Some(s), 1, 0) > 0);
    let mut changed = false;
    let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for node in nodes {
        let node_name = node.name_any();
        let (run, keep) = node_should_run(node, pod_spec);
        let on: Vec<&Pod> = grouped.get(&node_name).cloned().unwrap_or_default();
        if run && on.is_empty() {
            sync.create_on(&node_name, pod_spec, hash).await?;
            changed = true;
        } else if keep {
            let mut running = Vec::new();
            for p in on {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if is_failed(p) {
                    sync.delete(p).await?;
                    changed = true;
                    continue;
                }
                running.push(p);
            }
            if !run && running.is_empty() {
                continue;
            }
            if running.len() > 1 {
                // keep the oldest; with surge keep the oldest old and the oldest updated pod
                let mut kept_old = false;
                let mut kept_new = false;
                for p in running {
                    let is_new = pod_hash(p) == Some(hash);
                    let keep_it = if !surge {
                        !(kept_old || kept_new)
                    } else if is_new {
                        !kept_new
                    } else {
                        !kept_old
                    };
                    if keep_it {
                        if is_new && surge {
                            kept_new = true;
                        } else {
                            kept_old = true;
                        }
                    } else {
                        sync.delete(p).await?;
                        changed = true;
                    }
                }
            }
        } else {
            for p in on
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                sync.delete(p).await?;
                changed = true;
            }
        }
    }
    // pods for nodes that no longer exist (or that name no node): forced, since no kubelet
    // will finish a graceful deletion (upstream leaves these to pod GC)
    for (node, on) in &grouped {
        if node_names.contains(node) {
            continue;
        }
        for p in on.iter() {
            if p.metadata.deletion_timestamp.is_some()
                && p.metadata.deletion_grace_period_seconds == Some(0)
            {
                continue;
            }
            sync.delete_with(p, Some(0)).await?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Upstream `rollingUpdate`: replace old pods, at most `maxUnavailable` unavailable at once
/// (or, with `maxSurge`, start the new pod first and remove the old one once it is available).
async fn rolling_update(
    sync: &Sync<'_>,
    spec: &DaemonSetSpec,
    nodes: &[Node],
    pods: &[Pod],
    pod_spec: &PodSpec,
    hash: &str,
) -> Result<Option<Duration>, ControllerError> {
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let grouped = by_node(pods);
    let desired: Vec<String> = nodes
        .iter()
        .filter(|n| node_should_run(n, pod_spec).0)
        .map(|n| n.name_any())
        .collect();
    let total = i32::try_from(desired.len()).unwrap_or(i32::MAX);
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), total, 0).max(0);
    let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), total, 1).max(0);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let mut wait = None;
    let mut note_wait = |p: &Pod| {
        if mini_runtime::pod::is_ready(p) && !available(p, min_ready) {
            wait = Some(Duration::from_secs(1));
        }
    };
    // per node: (new pod, old pod) among live pods; nodes with more than one of a kind are
    // left to `manage`
    let mut slots = Vec::new();
    for node in &desired {
        let live: Vec<&Pod> = grouped
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let new: Vec<&Pod> = live
            .iter()
            .copied()
            .filter(|p| pod_hash(p) == Some(hash))
            .collect();
        let old: Vec<&Pod> = live
            .iter()
            .copied()
            .filter(|p| pod_hash(p) != Some(hash))
            .collect();
        if new.len() > 1 || old.len() > 1 {
            slots.push((node, None, None, false));
        } else {
            slots.push((node, new.first().copied(), old.first().copied(), true));
        }
    }

    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace: Vec<&Pod> = Vec::new();
        let mut candidates: Vec<&Pod> = Vec::new();
        for (_, new, old, ok) in &slots {
            if !ok {
                unavailable += 1;
                continue;
            }
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(n), None) => {
                    if !available(n, min_ready) {
                        note_wait(n);
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if !available(o, min_ready) {
                        replace.push(o);
                    } else if unavailable < max_unavailable {
                        candidates.push(o);
                    }
                }
            }
        }
        let budget = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        replace.extend(candidates.into_iter().take(budget));
        for p in replace {
            sync.delete(p).await?;
        }
        return Ok(wait);
    }

    // surge: create the new pod beside the old one, delete the old once the new is available
    let mut surging = 0;
    let mut unavailable = 0;
    for (_, new, old, ok) in &slots {
        if !ok {
            continue;
        }
        if let (Some(n), Some(_)) = (new, old) {
            if !available(n, min_ready) {
                surging += 1;
            }
        }
        if let (Some(n), None) = (new, old) {
            if !available(n, min_ready) {
                unavailable += 1;
            }
        }
    }
    for (node, new, old, ok) in &slots {
        if !ok {
            continue;
        }
        match (new, old) {
            (None, Some(o)) if !available(o, min_ready) || surging < max_surge => {
                if available(o, min_ready) {
                    surging += 1;
                }
                sync.create_on(node, pod_spec, hash).await?;
            }
            (Some(n), Some(o)) => {
                if available(n, min_ready) {
                    sync.delete(o).await?;
                } else if !mini_runtime::pod::is_ready(n)
                    && !available(o, min_ready)
                    && unavailable < max_unavailable
                {
                    // neither is serving: nothing to protect
                    unavailable += 1;
                    sync.delete(o).await?;
                } else {
                    note_wait(n);
                }
            }
            _ => {}
        }
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statefulset::tests::{eventually, make_ready};
    use crate::ControllerConfig;
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;

    struct Harness {
        env: mini_testenv::TestEnv,
        token: CancellationToken,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.token.cancel();
        }
    }

    fn start(env: mini_testenv::TestEnv) -> Harness {
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        });
        tokio::spawn(run(ctx));
        Harness { env, token }
    }

    async fn add_node(client: &kube::Client, name: &str, labels: Value, taints: Value) {
        let mut l = json!({"kubernetes.io/hostname": name});
        for (k, v) in labels.as_object().into_iter().flatten() {
            l[k] = v.clone();
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": l},
            "spec": {"taints": taints},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}
            }
        }))
        .unwrap();
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }

    fn daemonset(name: &str, extra: Value) -> DaemonSet {
        let mut v = json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "agent:1"}]}
                }
            }
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                spec.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    async fn live_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
        pods.list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    fn nodes_of(pods: &[Pod]) -> Vec<String> {
        let mut n: Vec<String> = pods.iter().filter_map(target_node).collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn daemonset_ready_nodes_get_one_pinned_pod_each_with_implicit_tolerations_and_status() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        add_node(&admin, "n1", json!({}), json!([])).await;
        add_node(&admin, "n2", json!({}), json!([])).await;
        let sets: Api<DaemonSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        sets.create(&PostParams::default(), &daemonset("agent", json!({})))
            .await
            .unwrap();
        let created = eventually("a pod per node", || async {
            let p = live_pods(&pods, "agent").await;
            (nodes_of(&p) == ["n1", "n2"]).then_some(p)
        })
        .await;
        for p in &created {
            let spec = p.spec.clone().unwrap();
            assert!(spec.node_name.is_none(), "the scheduler binds daemon pods");
            let terms = spec
                .affinity
                .unwrap()
                .node_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .unwrap()
                .node_selector_terms;
            assert_eq!(terms.len(), 1);
            let f = &terms[0].match_fields.as_ref().unwrap()[0];
            assert_eq!(
                (f.key.as_str(), f.operator.as_str()),
                ("metadata.name", "In")
            );
            let tols = spec.tolerations.unwrap();
            for (key, effect) in [
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ] {
                let t = tols
                    .iter()
                    .find(|t| t.key.as_deref() == Some(key))
                    .unwrap_or_else(|| panic!("missing toleration {key}"));
                assert_eq!(t.effect.as_deref(), Some(effect));
                assert_eq!(t.operator.as_deref(), Some("Exists"));
                assert!(t.toleration_seconds.is_none());
            }
            assert!(!tols
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
            assert!(pod_hash(p).is_some());
        }
        let st = eventually("desired 2", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.desired_number_scheduled == 2 && s.current_number_scheduled == 2).then_some(s)
        })
        .await;
        assert_eq!(st.number_ready, 0);
        assert_eq!(st.number_unavailable, Some(2));
        assert_eq!(st.updated_number_scheduled, Some(2));
        for p in &created {
            make_ready(&pods, &p.name_any()).await;
        }
        let st = eventually("ready 2", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.number_ready == 2).then_some(s)
        })
        .await;
        assert_eq!(st.number_available, Some(2));
        assert_eq!(st.number_unavailable, Some(0));
        assert_eq!(st.number_misscheduled, 0);
        assert_eq!(st.observed_generation, Some(1));
    }

    #[tokio::test]
    async fn daemonset_untolerated_taint_and_nodeselector_mismatch_get_no_pod() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        add_node(&admin, "ok", json!({"disk": "ssd"}), json!([])).await;
        add_node(
            &admin,
            "tainted",
            json!({"disk": "ssd"}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        )
        .await;
        add_node(
            &admin,
            "tolerated",
            json!({"disk": "ssd"}),
            json!([{"key": "gpu", "effect": "NoSchedule"}]),
        )
        .await;
        add_node(&admin, "hdd", json!({"disk": "hdd"}), json!([])).await;
        let sets: Api<DaemonSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let mut ds = daemonset("agent", json!({}));
        let tspec = ds.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        tspec.node_selector = Some(BTreeMap::from([("disk".into(), "ssd".into())]));
        tspec.tolerations = Some(vec![Toleration {
            key: Some("gpu".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        sets.create(&PostParams::default(), &ds).await.unwrap();
        eventually("desired 2", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.desired_number_scheduled == 2).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            nodes_of(&live_pods(&pods, "agent").await),
            ["ok", "tolerated"]
        );
    }

    #[tokio::test]
    async fn daemonset_node_added_later_gets_pod_and_deleted_node_loses_it() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        add_node(&admin, "n1", json!({}), json!([])).await;
        let sets: Api<DaemonSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        sets.create(&PostParams::default(), &daemonset("agent", json!({})))
            .await
            .unwrap();
        eventually("pod on n1", || async {
            (nodes_of(&live_pods(&pods, "agent").await) == ["n1"]).then_some(())
        })
        .await;
        add_node(&admin, "n2", json!({}), json!([])).await;
        eventually("pod on n2", || async {
            (nodes_of(&live_pods(&pods, "agent").await) == ["n1", "n2"]).then_some(())
        })
        .await;
        // bind n1's pod as the scheduler would: its deletion can no longer be graceful
        let on_n1 = live_pods(&pods, "agent")
            .await
            .into_iter()
            .find(|p| target_node(p).as_deref() == Some("n1"))
            .unwrap();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": on_n1.name_any()},
            "target": {"kind": "Node", "name": "n1"}
        });
        pods.create_subresource::<Value, Value>(
            "binding",
            &on_n1.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
        .unwrap();
        assert_eq!(
            pods.get(&on_n1.name_any())
                .await
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .as_deref(),
            Some("n1")
        );
        Api::<Node>::all(admin.clone())
            .delete("n1", &DeleteParams::default())
            .await
            .unwrap();
        eventually("n1 pod gone", || async {
            pods.get_opt(&on_n1.name_any())
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        assert_eq!(nodes_of(&live_pods(&pods, "agent").await), ["n2"]);
        eventually("desired 1", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.desired_number_scheduled == 1 && s.current_number_scheduled == 1).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn daemonset_rolling_update_replaces_pods_within_max_unavailable() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        for n in ["n1", "n2", "n3"] {
            add_node(&admin, n, json!({}), json!([])).await;
        }
        let sets: Api<DaemonSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let revs: Api<ControllerRevision> = Api::namespaced(admin.clone(), "default");
        let extra = json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}});
        sets.create(&PostParams::default(), &daemonset("agent", extra))
            .await
            .unwrap();
        let first = eventually("3 pods", || async {
            let p = live_pods(&pods, "agent").await;
            (p.len() == 3).then_some(p)
        })
        .await;
        let old_hash = pod_hash(&first[0]).unwrap().to_string();
        for p in &first {
            make_ready(&pods, &p.name_any()).await;
        }
        eventually("available 3", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.number_available == Some(3)).then_some(())
        })
        .await;
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
        sets.patch("agent", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        let image = |p: &Pod| {
            p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap()
        };
        for round in 1..=3 {
            let new = eventually("one more new pod", || async {
                let p = live_pods(&pods, "agent").await;
                let new: Vec<Pod> = p.into_iter().filter(|p| image(p) == "agent:2").collect();
                (new.len() == round).then_some(new)
            })
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let all = live_pods(&pods, "agent").await;
            let old = all
                .iter()
                .filter(|p| pod_hash(p) == Some(old_hash.as_str()))
                .count();
            assert_eq!(old, 3 - round, "at most one pod unavailable at a time");
            assert_eq!(all.len(), 3);
            for p in new.iter().filter(|p| !mini_runtime::pod::is_ready(p)) {
                assert_ne!(pod_hash(p), Some(old_hash.as_str()));
                make_ready(&pods, &p.name_any()).await;
            }
        }
        let st = eventually("rolled out", || async {
            let s = sets.get("agent").await.unwrap().status?;
            (s.updated_number_scheduled == Some(3) && s.number_available == Some(3)).then_some(s)
        })
        .await;
        assert_eq!(st.observed_generation, Some(2));
        let names: Vec<i64> = revs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn host_network_pods_tolerate_network_unavailable_and_noexecute_taint_evicts() {
        assert!(implicit_tolerations(true)
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}
        }))
        .unwrap();
        assert_eq!(node_should_run(&node, &PodSpec::default()), (false, false));
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}
        }))
        .unwrap();
        assert_eq!(node_should_run(&node, &PodSpec::default()), (true, true));
    }
}
