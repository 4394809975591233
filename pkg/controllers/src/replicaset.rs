//! The ReplicaSet and ReplicationController controllers: keep `spec.replicas` pods from the
//! template running (slow-start creates, upstream's deletion ranking on scale down), adopt
//! orphans matching the selector, release pods that stopped matching, and report status.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_api::LabelSelector;
use mini_runtime::owner::{controller_of, controller_ref};
use mini_runtime::{EventRecorder, EventType};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Context, ControllerError};

/// Upstream's cap on creations/deletions per sync.
const BURST_REPLICAS: usize = 500;
/// The first slow-start batch size.
const SLOW_START_INITIAL_BATCH: usize = 1;
/// Annotation upstream reads to rank pods for deletion.
const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Periodic resync, as a safety net for missed events.
const RESYNC: Duration = Duration::from_secs(300);

/// What the ReplicaSet and ReplicationController controllers have in common.
pub(crate) trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The event source component.
    const COMPONENT: &'static str;
    fn desired_replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    /// `None` when the object has no selector (it then matches nothing).
    fn label_selector(&self) -> Result<Option<LabelSelector>, String>;
    fn pod_template(&self) -> Option<&PodTemplateSpec>;
    /// The status in ReplicaSet form (the RC status has the same shape).
    fn replica_status(&self) -> ReplicaSetStatus;
    fn set_replica_status(&mut self, status: ReplicaSetStatus);
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn label_selector(&self) -> Result<Option<LabelSelector>, String> {
        let Some(sel) = self.spec.as_ref().map(|s| &s.selector) else {
            return Ok(None);
        };
        let v = serde_json::to_value(sel).map_err(|e| e.to_string())?;
        LabelSelector::from_json(&v).map(Some).map_err(|e| e.0)
    }

    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }

    fn set_replica_status(&mut self, status: ReplicaSetStatus) {
        self.status = Some(status);
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn label_selector(&self) -> Result<Option<LabelSelector>, String> {
        let Some(sel) = self.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            return Ok(None);
        };
        if sel.is_empty() {
            return Ok(None);
        }
        let v = serde_json::json!({ "matchLabels": sel });
        LabelSelector::from_json(&v).map(Some).map_err(|e| e.0)
    }

    fn pod_template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        self.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    fn set_replica_status(&mut self, status: ReplicaSetStatus) {
        self.status = serde_json::to_value(status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
    }
}

/// Per-controller state shared by reconciles.
struct Shared {
    ctx: Arc<Context>,
    recorder: EventRecorder,
}

/// Runs the ReplicaSet controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    run_generic::<ReplicaSet>(ctx).await
}

/// Runs the ReplicationController controller (same logic, map selector) until shutdown.
pub(crate) async fn run_replication_controllers(ctx: Arc<Context>) -> Result<(), ControllerError> {
    run_generic::<ReplicationController>(ctx).await
}

async fn run_generic<K: Replicated>(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let shared = Arc::new(Shared {
        recorder: EventRecorder::new(client.clone(), K::COMPONENT),
        ctx: ctx.clone(),
    });
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let kind = K::kind(&()).to_string();
    let token = ctx.shutdown.clone();
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod: Pod| {
                let ns = pod.namespace().unwrap_or_default();
                match controller_of(&pod.metadata) {
                    Some(r) if r.kind == kind => vec![ObjectRef::<K>::new(&r.name).within(&ns)],
                    Some(_) => Vec::new(),
                    // an orphan: every owner in its namespace whose selector matches may adopt it
                    None => {
                        let labels = label_map(&pod.metadata);
                        store
                            .state()
                            .iter()
                            .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
                            .filter(|o| {
                                matches!(o.label_selector(), Ok(Some(s)) if s.matches(Some(&labels)))
                            })
                            .map(|o| ObjectRef::from_obj(o.as_ref()))
                            .collect()
                    }
                }
            },
        )
        .graceful_shutdown_on(async move { token.cancelled().await })
        .run(reconcile::<K>, error_policy::<K>, shared)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "replica controller reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy<K: Replicated>(_obj: Arc<K>, err: &ControllerError, _s: Arc<Shared>) -> Action {
    match err {
        ControllerError::Kube(kube::Error::Api(e)) if e.code == 409 => {
            Action::requeue(Duration::from_millis(200))
        }
        _ => Action::requeue(Duration::from_secs(2)),
    }
}

/// The labels of an object as a JSON map, the form `LabelSelector` matches.
pub(crate) fn label_map(meta: &ObjectMeta) -> serde_json::Map<String, serde_json::Value> {
    meta.labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

fn now_chrono() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

async fn reconcile<K: Replicated>(
    obj: Arc<K>,
    shared: Arc<Shared>,
) -> Result<Action, ControllerError> {
    let client = shared.ctx.client.clone();
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.uid().unwrap_or_default();
    let owners: Api<K> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = obj
        .label_selector()
        .map_err(|reason| ControllerError::Invalid {
            object: format!("{ns}/{name}"),
            reason,
        })?;
    let deleting = obj.meta().deletion_timestamp.is_some();

    // claim: owned pods that still match, adopt matching orphans, release the rest
    let pods = pods_api.list(&ListParams::default()).await?.items;
    let mut owned: Vec<Pod> = Vec::new();
    let mut can_adopt: Option<bool> = None;
    for pod in pods {
        let matches = selector
            .as_ref()
            .is_some_and(|s| s.matches(Some(&label_map(&pod.metadata))));
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if !deleting {
                    release_pod(&pods_api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if !matches || deleting || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if can_adopt.is_none() {
                    // recheck with a live read that the owner is still there and not going away
                    let fresh = owners.get_opt(&name).await?;
                    can_adopt = Some(fresh.is_some_and(|f| {
                        f.uid().as_deref() == Some(uid.as_str())
                            && f.meta().deletion_timestamp.is_none()
                    }));
                }
                if can_adopt == Some(true) {
                    if let Some(p) = adopt_pod(&pods_api, &pod, &*obj).await? {
                        owned.push(p);
                    }
                }
            }
        }
    }

    let active: Vec<Pod> = owned
        .into_iter()
        .filter(mini_runtime::pod::is_active)
        .collect();
    let manage_err = if deleting {
        None
    } else {
        manage_replicas(&shared, &*obj, &pods_api, &active).await
    };

    // status
    let now = now_chrono();
    let min_ready = obj.min_ready_seconds();
    let template_labels = obj
        .pod_template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count() as i32;
    let ready = active
        .iter()
        .filter(|p| mini_runtime::pod::is_ready(p))
        .count() as i32;
    let available = active
        .iter()
        .filter(|p| mini_runtime::pod::is_available(p, min_ready, now))
        .count() as i32;
    let old = obj.replica_status();
    let mut status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: obj.meta().generation,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    set_failure_condition(&mut status, manage_err.as_ref());
    if status != old {
        let mut updated = (*obj).clone();
        updated.set_replica_status(status);
        owners
            .replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }

    if let Some((_, msg)) = manage_err {
        return Err(ControllerError::Other(msg));
    }
    // a ready pod becomes available minReadySeconds after its Ready transition
    if min_ready > 0 {
        let next = active
            .iter()
            .filter(|p| {
                mini_runtime::pod::is_ready(p)
                    && !mini_runtime::pod::is_available(p, min_ready, now)
            })
            .filter_map(ready_since)
            .map(|since| since + min_ready as i64 - now.timestamp())
            .min();
        if let Some(secs) = next {
            return Ok(Action::requeue(Duration::from_secs(secs.max(0) as u64 + 1)));
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// Seconds since the epoch of the pod's Ready condition's last transition.
fn ready_since(pod: &Pod) -> Option<i64> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_second())
}

/// Adds or clears the `ReplicaFailure` condition after a manage pass.
fn set_failure_condition(status: &mut ReplicaSetStatus, err: Option<&(String, String)>) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let existing = conds.iter().position(|c| c.type_ == "ReplicaFailure");
    match (err, existing) {
        (Some((reason, msg)), None) => conds.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.clone()),
            message: Some(msg.clone()),
            last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        }),
        (None, Some(i)) => {
            conds.remove(i);
        }
        _ => {}
    }
    if conds.is_empty() {
        status.conditions = None;
    }
}

/// Creates or deletes pods so `active` reaches the desired count. Returns the failure reason
/// and message when a create or delete failed.
async fn manage_replicas<K: Replicated>(
    shared: &Shared,
    owner: &K,
    pods_api: &Api<Pod>,
    active: &[Pod],
) -> Option<(String, String)> {
    let desired = owner.desired_replicas().max(0) as usize;
    let owner_ref = owner.object_ref(&());
    if active.len() < desired {
        let mut remaining = (desired - active.len()).min(BURST_REPLICAS);
        let template = owner.pod_template().cloned().unwrap_or_default();
        let pod = pod_from_template(owner, &template);
        let pp = PostParams::default();
        let mut batch = remaining.min(SLOW_START_INITIAL_BATCH);
        while batch > 0 {
            let results =
                futures::future::join_all((0..batch).map(|_| pods_api.create(&pp, &pod))).await;
            let mut failure = None;
            for r in results {
                match r {
                    Ok(p) => {
                        let msg = format!("Created pod: {}", p.name_any());
                        record(
                            shared,
                            &owner_ref,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &msg,
                        )
                        .await;
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {e}");
                        record(shared, &owner_ref, EventType::Warning, "FailedCreate", &msg).await;
                        failure = Some(("FailedCreate".to_string(), e.to_string()));
                    }
                }
            }
            if failure.is_some() {
                // the rest of the slow start is skipped: the next sync retries
                return failure;
            }
            remaining -= batch;
            batch = (batch * 2).min(remaining);
        }
    } else if active.len() > desired {
        let count = (active.len() - desired).min(BURST_REPLICAS);
        let victims = pods_to_delete(active, count);
        let dp = DeleteParams::default();
        let names: Vec<String> = victims.iter().map(|p| p.name_any()).collect();
        let results =
            futures::future::join_all(names.iter().map(|n| pods_api.delete(n, &dp))).await;
        let mut failure = None;
        for (pod, r) in victims.iter().zip(results) {
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {}", pod.name_any());
                    record(
                        shared,
                        &owner_ref,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &msg,
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    let msg = format!("Error deleting: {e}");
                    record(shared, &owner_ref, EventType::Warning, "FailedDelete", &msg).await;
                    failure = Some(("FailedDelete".to_string(), e.to_string()));
                }
            }
        }
        return failure;
    }
    None
}

async fn record(
    shared: &Shared,
    obj: &k8s_openapi::api::core::v1::ObjectReference,
    t: EventType,
    reason: &str,
    msg: &str,
) {
    if let Err(e) = shared.recorder.record(obj, t, reason, msg).await {
        tracing::debug!(error = %e, reason, "recording event failed");
    }
}

/// The pod an owner creates from its template.
fn pod_from_template<K: Replicated>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Sets the owner's controller reference on an orphan (resourceVersion-guarded).
async fn adopt_pod<K: Replicated>(
    pods_api: &Api<Pod>,
    pod: &Pod,
    owner: &K,
) -> Result<Option<Pod>, ControllerError> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": refs,
            "resourceVersion": pod.metadata.resource_version,
        }
    });
    match pods_api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(p) => Ok(Some(p)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Drops the owner's reference from a pod that no longer matches the selector.
async fn release_pod(pods_api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), ControllerError> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) },
            "resourceVersion": pod.metadata.resource_version,
        }
    });
    match pods_api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The `count` pods to delete first, in upstream's order: unassigned before assigned,
/// Pending < Unknown < Running, not ready before ready, lower deletion cost first, pods
/// doubled up on a node first, ready for less time first, more restarts first, newer first.
pub(crate) fn pods_to_delete(pods: &[Pod], count: usize) -> Vec<Pod> {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods {
        if let Some(n) = node_of(p) {
            *per_node.entry(n.to_string()).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        node_of(p)
            .and_then(|n| per_node.get(n))
            .copied()
            .unwrap_or(0)
    };
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by(|a, b| compare_for_deletion(a, b, rank(a), rank(b)));
    sorted.into_iter().take(count).cloned().collect()
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn phase_ordinal(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0) as i64
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// `Less` means `a` is deleted before `b`.
fn compare_for_deletion(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize) -> Ordering {
    // unassigned < assigned
    let assigned = |p: &Pod| node_of(p).is_some();
    if assigned(a) != assigned(b) {
        return assigned(a).cmp(&assigned(b));
    }
    // Pending < Unknown < Running
    let (pa, pb) = (phase_ordinal(a), phase_ordinal(b));
    if pa != pb {
        return pa.cmp(&pb);
    }
    // not ready < ready
    let (ra, rb) = (
        mini_runtime::pod::is_ready(a),
        mini_runtime::pod::is_ready(b),
    );
    if ra != rb {
        return ra.cmp(&rb);
    }
    // lower deletion cost first
    let (ca, cb) = (deletion_cost(a), deletion_cost(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    // doubled up (more pods on the same node) first
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    // ready for less time first
    if ra && rb {
        let (ta, tb) = (ready_since(a), ready_since(b));
        if ta != tb {
            return tb.cmp(&ta);
        }
    }
    // more restarts first
    let (xa, xb) = (max_restarts(a), max_restarts(b));
    if xa != xb {
        return xb.cmp(&xa);
    }
    // newer first (no timestamp counts as newest)
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match (created(a), created(b)) {
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) if x != y => y.cmp(&x),
        _ => a.metadata.name.cmp(&b.metadata.name),
    }
}

/// Helpers the ReplicaSet and Deployment controller tests share.
#[cfg(test)]
pub(crate) mod testutil {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    use kube::ResourceExt;
    use tokio_util::sync::CancellationToken;

    use crate::{Context, ControllerConfig};

    /// Spawns a controller `run` function with the controllers' identity.
    pub(crate) fn spawn<F, Fut>(env: &mini_testenv::TestEnv, run: F) -> CancellationToken
    where
        F: FnOnce(Arc<Context>) -> Fut,
        Fut: Future<Output = Result<(), crate::ControllerError>> + Send + 'static,
    {
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        });
        tokio::spawn(run(ctx));
        token
    }

    /// Polls `f` every 100 ms until it yields a value, panicking after `secs` seconds.
    pub(crate) async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Live (not being deleted) pods in `ns`.
    pub(crate) async fn live_pods(client: &kube::Client, ns: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        api.list(&ListParams::default())
            .await
            .expect("listing pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Plays the kubelet: the pod is Running and Ready.
    pub(crate) async fn mark_ready(client: &kube::Client, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        // the pod may be gone already (scaled down under us)
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{live_pods, mark_ready, spawn, wait_for};
    use super::*;
    use k8s_openapi::api::core::v1::Event;
    use mini_runtime::pod::is_ready;

    fn rs(name: &str, app: &str, replicas: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        }))
        .expect("valid replicaset")
    }

    async fn owned_by(client: &kube::Client, uid: &str) -> Vec<Pod> {
        live_pods(client, "default")
            .await
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicaset_scale_down_creates_owned_pods_and_deletes_not_ready_first() {
        let env = mini_testenv::TestEnv::start().await;
        let admin = env.admin_client();
        let token = spawn(&env, run);
        let api: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
        let created = api
            .create(&PostParams::default(), &rs("web", "web", 3))
            .await
            .unwrap();
        let uid = created.uid().unwrap();

        let pods = wait_for(15, "3 owned pods", || async {
            let pods = owned_by(&admin, &uid).await;
            (pods.len() == 3).then_some(pods)
        })
        .await;
        for p in &pods {
            assert!(p.name_any().starts_with("web-"));
            let r = controller_of(&p.metadata).unwrap();
            assert_eq!((r.kind.as_str(), r.name.as_str()), ("ReplicaSet", "web"));
            assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        }
        mark_ready(&admin, &pods[0]).await;
        mark_ready(&admin, &pods[1]).await;
        wait_for(15, "status with 2 ready", || async {
            let s = api.get("web").await.unwrap().status.unwrap_or_default();
            (s.replicas == 3 && s.ready_replicas == Some(2) && s.available_replicas == Some(2))
                .then_some(())
        })
        .await;

        api.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
        let left = wait_for(15, "2 owned pods", || async {
            let pods = owned_by(&admin, &uid).await;
            (pods.len() == 2).then_some(pods)
        })
        .await;
        assert!(left.iter().all(is_ready), "the not-ready pod goes first");
        let status = wait_for(15, "status after scale down", || async {
            let rs = api.get("web").await.unwrap();
            let s = rs.status.clone().unwrap_or_default();
            (s.replicas == 2 && s.observed_generation == rs.metadata.generation).then_some(s)
        })
        .await;
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));

        let events: Api<Event> = Api::namespaced(admin.clone(), "default");
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert!(reasons.iter().any(|r| r == "SuccessfulCreate"));
        assert!(reasons.iter().any(|r| r == "SuccessfulDelete"));
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicaset_orphan_matching_selector_is_adopted_and_nonmatching_released() {
        let env = mini_testenv::TestEnv::start().await;
        let admin = env.admin_client();
        let pods_api: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let orphan: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orphan", "labels": {"app": "adopt"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap();
        pods_api
            .create(&PostParams::default(), &orphan)
            .await
            .unwrap();
        let token = spawn(&env, run);
        let api: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
        let uid = api
            .create(&PostParams::default(), &rs("adopter", "adopt", 1))
            .await
            .unwrap()
            .uid()
            .unwrap();
        wait_for(15, "orphan adopted", || async {
            let p = pods_api.get("orphan").await.unwrap();
            controller_of(&p.metadata)
                .is_some_and(|r| r.uid == uid)
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            owned_by(&admin, &uid).await.len(),
            1,
            "no extra pod created"
        );

        // relabel it: released, and a replacement created
        pods_api
            .patch(
                "orphan",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "other"}}})),
            )
            .await
            .unwrap();
        wait_for(15, "pod released and replaced", || async {
            let p = pods_api.get("orphan").await.unwrap();
            let owned = owned_by(&admin, &uid).await;
            (controller_of(&p.metadata).is_none()
                && owned.len() == 1
                && owned[0].name_any() != "orphan")
                .then_some(())
        })
        .await;
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicationcontroller_map_selector_creates_and_scales_pods() {
        let env = mini_testenv::TestEnv::start().await;
        let admin = env.admin_client();
        let token = spawn(&env, run_replication_controllers);
        let api: Api<ReplicationController> = Api::namespaced(admin.clone(), "default");
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "legacy"},
            "spec": {
                "replicas": 2,
                "selector": {"app": "legacy"},
                "template": {
                    "metadata": {"labels": {"app": "legacy", "tier": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        }))
        .unwrap();
        let uid = api
            .create(&PostParams::default(), &rc)
            .await
            .unwrap()
            .uid()
            .unwrap();
        let pods = wait_for(15, "2 rc pods", || async {
            let pods = owned_by(&admin, &uid).await;
            (pods.len() == 2).then_some(pods)
        })
        .await;
        assert!(pods
            .iter()
            .all(|p| controller_of(&p.metadata).unwrap().kind == "ReplicationController"));
        for p in &pods {
            mark_ready(&admin, p).await;
        }
        wait_for(15, "rc status", || async {
            let s = api.get("legacy").await.unwrap().status.unwrap_or_default();
            (s.replicas == 2 && s.ready_replicas == Some(2) && s.fully_labeled_replicas == Some(2))
                .then_some(())
        })
        .await;
        api.patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
        wait_for(15, "rc scaled to 0", || async {
            owned_by(&admin, &uid).await.is_empty().then_some(())
        })
        .await;
        token.cancel();
    }

    fn test_pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(created).unwrap().to_string(),
            },
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": [{
                "type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::from_second(created + 10).unwrap().to_string(),
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn deletion_order_prefers_unassigned_pending_unready_newer() {
        let pods = vec![
            test_pod("running-ready-old", Some("n1"), "Running", true, 100),
            test_pod("running-ready-new", Some("n2"), "Running", true, 200),
            test_pod("running-unready", Some("n3"), "Running", false, 100),
            test_pod("pending", Some("n4"), "Pending", false, 100),
            test_pod("unassigned", None, "Pending", false, 50),
        ];
        let order: Vec<String> = pods_to_delete(&pods, 5)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            [
                "unassigned",
                "pending",
                "running-unready",
                "running-ready-new",
                "running-ready-old"
            ]
        );
    }
}
