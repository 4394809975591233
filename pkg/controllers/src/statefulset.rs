//! The StatefulSet controller: stable pods `<set>-<ordinal>` with per-ordinal claims from
//! `volumeClaimTemplates`, created and removed in order (OrderedReady) or all at once
//! (Parallel), rolled to the update revision from the highest ordinal down to `partition`
//! (or left for the user to delete with OnDelete), with ControllerRevision history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::{EventRecorder, EventType};
use serde_json::{json, Value};

use crate::history::{self, REVISION_HASH_LABEL};
use crate::{Context, ControllerError};

/// The label naming a StatefulSet pod.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a StatefulSet pod's ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// How often a set is reconciled with nothing changing (upstream's informer resync).
const RESYNC: Duration = Duration::from_secs(300);

struct State {
    client: kube::Client,
    recorder: EventRecorder,
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let state = Arc::new(State {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), "statefulset-controller"),
    });
    let controller = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
    .owns(
        Api::<ControllerRevision>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, state)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "statefulset reconcile failed");
        }
    });
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {}
        _ = controller => {}
    }
    Ok(())
}

fn error_policy(set: Arc<StatefulSet>, err: &ControllerError, _: Arc<State>) -> Action {
    tracing::warn!(statefulset = %set.name_any(), error = %err, "statefulset sync failed");
    Action::requeue(Duration::from_secs(2))
}

/// Ordinal of `pod` if it is named `<set>-<n>`.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse::<i32>().ok().filter(|n| *n >= 0)
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && mini_runtime::pod::is_ready(pod)
}

fn is_running_and_available(pod: &Pod, min_ready_seconds: i32) -> bool {
    is_running_and_ready(pod)
        && mini_runtime::pod::is_available(pod, min_ready_seconds, chrono::Utc::now())
}

fn is_healthy(pod: &Pod, min_ready_seconds: i32) -> bool {
    !is_terminating(pod) && is_running_and_available(pod, min_ready_seconds)
}

fn revision_label(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
        .map(String::as_str)
}

pub(crate) fn labels_match(
    selector: &mini_api::LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let map: serde_json::Map<String, Value> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    selector.matches(Some(&map))
}

fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!(
        "{}-{set}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or_default()
    )
}

fn retention(set: &StatefulSet) -> (bool, bool) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        delete(policy.and_then(|p| p.when_deleted.as_ref())),
        delete(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

/// The pod for `ordinal` from `template` at revision `revision` (upstream `newStatefulSetPod`).
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let spec = set.spec.clone().unwrap_or_default();
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH_LABEL.into(), revision.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if let Some(svc) = spec.service_name.filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(svc);
    }
    let mut volumes = pod_spec.volumes.take().unwrap_or_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let vol_name = claim.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != vol_name);
        volumes.push(Volume {
            name: vol_name,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(claim, &set_name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if !volumes.is_empty() {
        pod_spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![mini_runtime::owner::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Per-reconcile working data.
struct Sync<'a> {
    state: &'a State,
    set: &'a StatefulSet,
    ns: String,
    name: String,
    pods: Api<Pod>,
}

impl Sync<'_> {
    async fn event(&self, type_: EventType, reason: &str, message: String) {
        let r = self.set.object_ref(&());
        if let Err(e) = self
            .state
            .recorder
            .record(&r, type_, reason, &message)
            .await
        {
            tracing::debug!(error = %e, "recording a statefulset event failed");
        }
    }

    /// Creates the claims of `ordinal` that don't exist yet.
    async fn create_claims(&self, ordinal: i32) -> Result<(), ControllerError> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.client.clone(), &self.ns);
        let (when_deleted, _) = retention(self.set);
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(template, &self.name, ordinal);
            if api.get_opt(&name).await?.is_some() {
                continue;
            }
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            let owners = when_deleted.then(|| vec![mini_runtime::owner::controller_ref(self.set)]);
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.ns.clone()),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owners,
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.event(
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!(
                            "create Claim {name} Pod {}-{ordinal} in StatefulSet {} success",
                            self.name, self.name
                        ),
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.event(
                        EventType::Warning,
                        "FailedCreate",
                        format!(
                            "create Claim {name} for Pod {}-{ordinal} in StatefulSet {} failed error: {e}",
                            self.name, self.name
                        ),
                    )
                    .await;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// With `whenScaled: Delete`, hands the claims of a condemned pod to the pod so they go
    /// with it.
    async fn release_claims_to(&self, pod: &Pod, ordinal: i32) -> Result<(), ControllerError> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.client.clone(), &self.ns);
        let pod_ref = OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            controller: None,
            block_owner_deletion: None,
        };
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(template, &self.name, ordinal);
            let Some(claim) = api.get_opt(&name).await? else {
                continue;
            };
            let mut owners = claim.metadata.owner_references.clone().unwrap_or_default();
            if owners.iter().any(|o| o.uid == pod_ref.uid) {
                continue;
            }
            owners.push(pod_ref.clone());
            let patch = json!({"metadata": {"ownerReferences": owners}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    async fn create_pod(&self, pod: &Pod) -> Result<(), ControllerError> {
        let name = pod.name_any();
        match self.pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {} successful", self.name),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {e}",
                        self.name
                    ),
                )
                .await;
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), ControllerError> {
        let name = pod.name_any();
        let dp = DeleteParams {
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
                    format!("delete Pod {name} in StatefulSet {} successful", self.name),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} failed error: {e}",
                        self.name
                    ),
                )
                .await;
                Err(e.into())
            }
        }
    }

    /// The pods this set controls, adopting orphans that match its selector and name pattern.
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
            let orphan = mini_runtime::owner::controller_of(&pod.metadata).is_none();
            if orphan
                && !is_terminating(&pod)
                && self.set.metadata.deletion_timestamp.is_none()
                && labels_match(selector, pod.metadata.labels.as_ref())
                && ordinal_of(&self.name, &pod.name_any()).is_some()
            {
                let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
                owners.push(mini_runtime::owner::controller_ref(self.set));
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

/// The template a revision holds, else the set's own.
fn revision_template(rev: &ControllerRevision, set: &StatefulSet) -> PodTemplateSpec {
    history::template_of(rev).unwrap_or_else(|| set.spec.clone().unwrap_or_default().template)
}

async fn reconcile(cached: Arc<StatefulSet>, state: Arc<State>) -> Result<Action, ControllerError> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let sets: Api<StatefulSet> = Api::namespaced(state.client.clone(), &ns);
    let Some(set) = sets.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = set.spec.clone() else {
        return Ok(Action::await_change());
    };
    let uid = set.uid().unwrap_or_default();
    let selector = crate::label_selector(&spec.selector, &format!("statefulset {ns}/{name}"))?;
    if selector.is_empty() {
        // upstream: an empty selector selects nothing for a StatefulSet
        return Ok(Action::await_change());
    }
    let status = set.status.clone().unwrap_or_default();
    let owner = history::Owner {
        name: &name,
        namespace: &ns,
        reference: mini_runtime::owner::controller_ref(&set),
        template: &spec.template,
        annotations: None,
    };
    let revs = history::sync(
        &state.client,
        &owner,
        status.current_revision.as_deref(),
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let current_name = revs.current.metadata.name.clone().unwrap_or_default();
    let update_name = revs.update.metadata.name.clone().unwrap_or_default();
    let current_template = revision_template(&revs.current, &set);
    let update_template = revision_template(&revs.update, &set);

    let sync = Sync {
        state: &state,
        set: &set,
        ns: ns.clone(),
        name: name.clone(),
        pods: Api::namespaced(state.client.clone(), &ns),
    };
    let pods = sync.claim_pods(&selector, &uid).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut requeue = RESYNC;
    if set.metadata.deletion_timestamp.is_none() {
        let wait = manage(
            &sync,
            &spec,
            &pods,
            (&current_name, &current_template),
            (&update_name, &update_template),
        )
        .await?;
        if let Some(w) = wait {
            requeue = requeue.min(w);
        }
    }

    // status from what exists now
    let pods = sync.claim_pods(&selector, &uid).await?;
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: Some(revs.collision_count),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        conditions: status.conditions.clone(),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for pod in &pods {
        st.replicas += 1;
        if is_running_and_ready(pod) {
            ready += 1;
            if is_running_and_available(pod, min_ready) {
                available += 1;
            } else if min_ready > 0 {
                requeue = requeue.min(Duration::from_secs(1));
            }
        }
        if !is_terminating(pod) {
            if revision_label(pod) == Some(current_name.as_str()) {
                current += 1;
            }
            if revision_label(pod) == Some(update_name.as_str()) {
                updated += 1;
            }
        }
    }
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling
        && updated == st.replicas
        && ready == st.replicas
        && st.replicas == spec.replicas.unwrap_or(1)
    {
        st.current_replicas = Some(updated);
        st.current_revision = Some(update_name.clone());
    }
    if set.status.as_ref() != Some(&st) {
        let patch = json!({"status": st});
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    // history: keep what pods, current and update use, plus revisionHistoryLimit more
    let mut live: Vec<String> = pods
        .iter()
        .filter_map(|p| revision_label(p).map(str::to_string))
        .collect();
    live.push(st.current_revision.clone().unwrap_or_default());
    live.push(update_name);
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

/// One pass of upstream's `updateStatefulSet`: create/replace missing and failed replicas,
/// remove condemned ones, then roll. Returns a retry delay when waiting on time.
async fn manage(
    sync: &Sync<'_>,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    pods: &[Pod],
    current: (&str, &PodTemplateSpec),
    update: (&str, &PodTemplateSpec),
) -> Result<Option<Duration>, ControllerError> {
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);
    let (_, when_scaled) = retention(sync.set);

    let mut slots: Vec<Option<&Pod>> = vec![None; usize::try_from(replicas).unwrap_or(0)];
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for pod in pods {
        let Some(ord) = ordinal_of(&sync.name, &pod.name_any()) else {
            continue;
        };
        if ord >= start && ord < start + replicas {
            slots[usize::try_from(ord - start).unwrap_or(0)] = Some(pod);
        } else {
            condemned.push((ord, pod));
        }
    }
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut wait = None;
    let not_available_yet =
        |p: &Pod| is_running_and_ready(p) && !is_running_and_available(p, min_ready);

    // replicas in range: create missing, replace failed, wait on unhealthy (OrderedReady)
    for (i, slot) in slots.iter().enumerate() {
        let ord = start + i32::try_from(i).unwrap_or(0);
        match slot {
            None => {
                let (rev, template) = if rolling && i32::try_from(i).unwrap_or(0) < partition {
                    current
                } else {
                    update
                };
                sync.create_claims(ord).await?;
                sync.create_pod(&new_pod(sync.set, template, ord, rev))
                    .await?;
                if monotonic {
                    return Ok(None);
                }
            }
            Some(pod) if mini_runtime::pod::is_terminal(pod) && !is_terminating(pod) => {
                sync.delete_pod(pod).await?;
                if monotonic {
                    return Ok(None);
                }
            }
            Some(pod) => {
                if monotonic && !is_healthy(pod, min_ready) {
                    if not_available_yet(pod) {
                        wait = Some(Duration::from_secs(1));
                    }
                    return Ok(wait);
                }
                sync.create_claims(ord).await?;
            }
        }
    }

    // condemned, highest ordinal first
    for (ord, pod) in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return Ok(None);
            }
            continue;
        }
        if when_scaled {
            sync.release_claims_to(pod, *ord).await?;
        }
        sync.delete_pod(pod).await?;
        if monotonic {
            return Ok(None);
        }
    }

    if !rolling {
        return Ok(wait);
    }
    // rolling update: highest ordinal down to partition, one at a time
    for i in (usize::try_from(partition).unwrap_or(0)..slots.len()).rev() {
        let Some(pod) = slots[i] else { return Ok(wait) };
        if revision_label(pod) != Some(update.0) && !is_terminating(pod) {
            sync.delete_pod(pod).await?;
            return Ok(wait);
        }
        if !is_healthy(pod, min_ready) {
            if not_available_yet(pod) {
                wait = Some(Duration::from_secs(1));
            }
            return Ok(wait);
        }
    }
    Ok(wait)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ControllerConfig;
    use std::future::Future;
    use tokio_util::sync::CancellationToken;

    pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
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

    fn sts(name: &str, replicas: i32, extra: Value) -> StatefulSet {
        let mut v = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
                }
            }
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    pub(crate) async fn make_ready(pods: &Api<Pod>, name: &str) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}
        ]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn pod_names(pods: &Api<Pod>, app: &str) -> Vec<String> {
        let mut names: Vec<String> = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn statefulset_ordered_ready_creates_next_only_after_previous_ready() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        sets.create(&PostParams::default(), &sts("web", 2, json!({})))
            .await
            .unwrap();
        let p0 = eventually("web-0", || async { pods.get_opt("web-0").await.unwrap() }).await;
        let labels = p0.metadata.labels.clone().unwrap();
        assert_eq!(
            labels.get(POD_NAME_LABEL).map(String::as_str),
            Some("web-0")
        );
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("0"));
        assert!(labels
            .get(REVISION_HASH_LABEL)
            .is_some_and(|h| h.starts_with("web-")));
        let spec = p0.spec.clone().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            pods.get_opt("web-1").await.unwrap().is_none(),
            "web-1 created before web-0 was ready"
        );
        make_ready(&pods, "web-0").await;
        eventually("web-1", || async { pods.get_opt("web-1").await.unwrap() }).await;
        make_ready(&pods, "web-1").await;
        let st = eventually("status ready 2", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.ready_replicas == Some(2) && s.current_revision.is_some()).then_some(s)
        })
        .await;
        assert_eq!(st.replicas, 2);
        assert_eq!(st.available_replicas, Some(2));
        assert_eq!(st.current_replicas, Some(2));
        assert_eq!(st.updated_replicas, Some(2));
        assert_eq!(st.current_revision, st.update_revision);
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(st.collision_count, Some(0));
    }

    #[tokio::test]
    async fn statefulset_scale_down_removes_highest_ordinal_first() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        sets.create(&PostParams::default(), &sts("web", 3, json!({})))
            .await
            .unwrap();
        for n in ["web-0", "web-1", "web-2"] {
            eventually(n, || async { pods.get_opt(n).await.unwrap() }).await;
            make_ready(&pods, n).await;
        }
        let rv = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let mut stream = pods
            .watch(&kube::api::WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        let patch = json!({"spec": {"replicas": 1}});
        sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let mut deleted = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), async {
            while deleted.len() < 2 {
                if let Some(Ok(kube::api::WatchEvent::Deleted(p))) = stream.next().await {
                    deleted.push(p.name_any());
                }
            }
        })
        .await
        .expect("two deletions");
        assert_eq!(deleted, ["web-2", "web-1"]);
        assert_eq!(pod_names(&pods, "web").await, ["web-0"]);
        let st = eventually("status replicas 1", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.replicas == 1 && s.ready_replicas == Some(1)).then_some(s)
        })
        .await;
        assert_eq!(st.observed_generation, Some(2));
    }

    #[tokio::test]
    async fn statefulset_parallel_creates_all_pods_at_once() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        sets.create(
            &PostParams::default(),
            &sts(
                "par",
                3,
                json!({"spec": {"podManagementPolicy": "Parallel"}}),
            ),
        )
        .await
        .unwrap();
        eventually("3 pods without readiness", || async {
            (pod_names(&pods, "par").await == ["par-0", "par-1", "par-2"]).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn statefulset_volume_claim_templates_create_claims_before_pods() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
        let extra = json!({"spec": {"podManagementPolicy": "Parallel", "volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }]}});
        sets.create(&PostParams::default(), &sts("pg", 2, extra))
            .await
            .unwrap();
        for ord in 0..2 {
            let pod = eventually("pod", || async {
                pods.get_opt(&format!("pg-{ord}")).await.unwrap()
            })
            .await;
            let claim = claims.get(&format!("data-pg-{ord}")).await.unwrap();
            assert_eq!(
                claim
                    .metadata
                    .labels
                    .unwrap()
                    .get("app")
                    .map(String::as_str),
                Some("pg"),
                "claims carry the selector labels"
            );
            assert!(
                claim
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .is_empty(),
                "retain leaves claims unowned"
            );
            let vols = pod.spec.unwrap().volumes.unwrap();
            let v = vols.iter().find(|v| v.name == "data").unwrap();
            assert_eq!(
                v.persistent_volume_claim.as_ref().unwrap().claim_name,
                format!("data-pg-{ord}")
            );
        }
    }

    #[tokio::test]
    async fn statefulset_rolling_update_with_partition_updates_only_ordinals_at_or_above() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let extra = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}});
        sets.create(&PostParams::default(), &sts("web", 3, extra))
            .await
            .unwrap();
        for n in ["web-0", "web-1", "web-2"] {
            eventually(n, || async { pods.get_opt(n).await.unwrap() }).await;
            make_ready(&pods, n).await;
        }
        let old = eventually("rollout done", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.ready_replicas == Some(3)).then_some(s.update_revision?)
        })
        .await;
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}});
        sets.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        let new = eventually("new update revision", || async {
            let s = sets.get("web").await.unwrap().status?;
            s.update_revision.filter(|r| *r != old)
        })
        .await;
        let image = |p: &Pod| {
            p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap()
        };
        // web-2 first, then web-1 once web-2 is ready; web-0 stays
        let p2 = eventually("web-2 updated", || async {
            pods.get_opt("web-2")
                .await
                .unwrap()
                .filter(|p| revision_label(p) == Some(new.as_str()))
        })
        .await;
        assert_eq!(image(&p2), "nginx:2");
        let p1 = pods.get("web-1").await.unwrap();
        assert_eq!(
            revision_label(&p1),
            Some(old.as_str()),
            "web-1 waits for web-2 to be ready"
        );
        make_ready(&pods, "web-2").await;
        eventually("web-1 updated", || async {
            pods.get_opt("web-1")
                .await
                .unwrap()
                .filter(|p| revision_label(p) == Some(new.as_str()))
        })
        .await;
        make_ready(&pods, "web-1").await;
        let st = eventually("status", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.updated_replicas == Some(2) && s.ready_replicas == Some(3)).then_some(s)
        })
        .await;
        assert_eq!(
            st.current_revision.as_deref(),
            Some(old.as_str()),
            "partitioned rollout is not complete"
        );
        assert_eq!(st.current_replicas, Some(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p0 = pods.get("web-0").await.unwrap();
        assert_eq!(revision_label(&p0), Some(old.as_str()));
        assert_eq!(image(&p0), "nginx:1");
        // dropping the partition finishes the rollout
        let patch = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
        sets.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        eventually("web-0 updated", || async {
            pods.get_opt("web-0")
                .await
                .unwrap()
                .filter(|p| revision_label(p) == Some(new.as_str()))
        })
        .await;
        make_ready(&pods, "web-0").await;
        eventually("current revision is the new one", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.current_revision.as_deref() == Some(new.as_str()) && s.current_replicas == Some(3))
                .then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn statefulset_revisions_created_truncated_and_rollback_reuses_them() {
        let h = start(mini_testenv::TestEnv::start().await);
        let admin = h.env.admin_client();
        let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), "default");
        let revs: Api<ControllerRevision> = Api::namespaced(admin.clone(), "default");
        let extra = json!({"spec": {"replicas": 0, "revisionHistoryLimit": 1}});
        sets.create(&PostParams::default(), &sts("web", 0, extra))
            .await
            .unwrap();
        let list = |revs: Api<ControllerRevision>| async move {
            let mut items = revs.list(&ListParams::default()).await.unwrap().items;
            items.sort_by_key(|r| r.revision);
            items
        };
        let first = eventually("first revision", || async {
            list(revs.clone()).await.first().cloned()
        })
        .await;
        assert_eq!(first.revision, 1);
        assert!(first.metadata.name.as_deref().unwrap().starts_with("web-"));
        assert_eq!(
            first
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get(REVISION_HASH_LABEL)
                .map(String::as_str),
            first.metadata.name.as_deref().unwrap().strip_prefix("web-")
        );
        assert_eq!(
            first.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
            "replace"
        );
        assert_eq!(
            mini_runtime::owner::controller_of(&first.metadata)
                .unwrap()
                .kind,
            "StatefulSet"
        );
        for image in ["nginx:2", "nginx:3", "nginx:4"] {
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
            sets.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .unwrap();
            eventually("revision for image", || async {
                let items = list(revs.clone()).await;
                items
                    .iter()
                    .any(|r| {
                        r.data.as_ref().unwrap().0["spec"]["template"]["spec"]["containers"][0]
                            ["image"]
                            == image
                    })
                    .then_some(())
            })
            .await;
        }
        // with no pods, current == update (nginx:4): keep it plus one more
        let items = eventually("truncated to the limit", || async {
            let items = list(revs.clone()).await;
            (items.len() == 2).then_some(items)
        })
        .await;
        assert_eq!(
            items.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![3, 4]
        );
        // kubectl rollout undo: strategic-merge the previous revision's data into the set
        let data = items[0].data.clone().unwrap().0;
        sets.patch("web", &PatchParams::default(), &Patch::Strategic(&data))
            .await
            .unwrap();
        let set = sets.get("web").await.unwrap();
        assert_eq!(
            set.spec.unwrap().template.spec.unwrap().containers[0]
                .image
                .as_deref(),
            Some("nginx:3")
        );
        let reused = items[0].metadata.name.clone().unwrap();
        eventually("rolled-back revision bumped to 5", || async {
            let items = list(revs.clone()).await;
            items
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(reused.as_str()) && r.revision == 5)
                .then_some(())
        })
        .await;
        eventually("status points at it", || async {
            let s = sets.get("web").await.unwrap().status?;
            (s.update_revision.as_deref() == Some(reused.as_str())).then_some(())
        })
        .await;
    }
}
