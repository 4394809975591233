//! The Deployment controller: one ReplicaSet per pod template (named by upstream-style
//! pod-template-hash), RollingUpdate and Recreate rollouts, proportional scaling, pause,
//! revision annotations for `kubectl rollout history/undo`, history cleanup, and the
//! Progressing/Available conditions `kubectl rollout status` reads.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaSelector, ObjectMeta, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_api::LabelSelector;
use mini_runtime::owner::{controller_of, controller_ref};
use mini_runtime::{EventRecorder, EventType};

use crate::replicaset::label_map;
use crate::{Context, ControllerError};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const MAX_REV_HISTORY_CHARS: usize = 2000;

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const REPLICA_FAILURE: &str = "ReplicaFailure";
const NEW_RS_REASON: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
const PAUSED_REASON: &str = "DeploymentPaused";
const RESUMED_REASON: &str = "DeploymentResumed";
const MIN_AVAILABLE_REASON: &str = "MinimumReplicasAvailable";
const MIN_UNAVAILABLE_REASON: &str = "MinimumReplicasUnavailable";

/// Periodic resync, as a safety net for missed events.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a Recreate rollout rechecks for old pods that are still terminating.
const OLD_PODS_RECHECK: Duration = Duration::from_secs(1);

struct Shared {
    ctx: Arc<Context>,
    recorder: EventRecorder,
}

/// Runs the Deployment controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let shared = Arc::new(Shared {
        recorder: EventRecorder::new(client.clone(), "deployment-controller"),
        ctx: ctx.clone(),
    });
    let token = ctx.shutdown.clone();
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
    .graceful_shutdown_on(async move { token.cancelled().await })
    .run(reconcile, error_policy, shared)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "deployment reconcile failed");
        }
    })
    .await;
    Ok(())
}

fn error_policy(_d: Arc<Deployment>, err: &ControllerError, _s: Arc<Shared>) -> Action {
    match err {
        ControllerError::Kube(kube::Error::Api(e)) if e.code == 409 => {
            Action::requeue(Duration::from_millis(200))
        }
        _ => Action::requeue(Duration::from_secs(2)),
    }
}

// ---------------------------------------------------------------------------------------------
// small helpers over the typed objects

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, ties by name (upstream `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t != "Recreate")
}

fn progress_deadline(d: &Deployment) -> Option<i64> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
        .map(i64::from)
}

fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// `intOrPercent` of `total`, percentages rounded up or down (upstream
/// `GetScaledValueFromIntOrPercent`).
fn scaled_value(
    v: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> Result<i32, String> {
    let v = v
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.to_string()));
    match v {
        IntOrString::Int(i) => Ok(i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let prod = pct * total as i64;
            Ok(if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            } as i32)
        }
    }
}

/// (maxSurge, maxUnavailable) resolved against the desired count (upstream
/// `ResolveFenceposts`): surge rounds up, unavailable rounds down, never both zero.
fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    let desired = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), "25%", desired, true)?;
    let mut unavailable = scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        desired,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).map(|f| f.0).unwrap_or(0)
}

fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if !is_rolling(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).map(|f| f.1.min(desired)).unwrap_or(0)
}

/// Upstream's pod-template-hash: FNV-32a over the template (here its canonical JSON) and the
/// collision count, the decimal sum rendered with the safe-encode alphabet.
pub(crate) fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    write(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        write(&buf);
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// A template as JSON without the pod-template-hash label and with empty maps dropped.
fn template_value_ignoring_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
        if m.annotations.as_ref().is_some_and(|a| a.is_empty()) {
            m.annotations = None;
        }
        if *m == ObjectMeta::default() {
            t.metadata = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Upstream `EqualIgnoreHash`.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_value_ignoring_hash(a) == template_value_ignoring_hash(b)
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(now()),
        last_update_time: Some(now()),
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// Upstream `SetDeploymentCondition`: same status and reason is a no-op; same status keeps the
/// transition time.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get_condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            status.conditions = None;
        }
    }
}

fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn sum<F: Fn(&ReplicaSet) -> i32>(rss: &[&ReplicaSet], f: F) -> i32 {
    rss.iter().map(|rs| f(rs)).sum()
}

// ---------------------------------------------------------------------------------------------
// the per-deployment sync

/// Everything one reconcile works on: the deployment (kept at its latest resourceVersion),
/// its new ReplicaSet (if any) and its old ones.
struct Sync<'a> {
    shared: &'a Shared,
    d: Deployment,
    d_api: Api<Deployment>,
    rs_api: Api<ReplicaSet>,
    d_ref: ObjectReference,
    new_rs: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
    requeue: Option<Duration>,
}

async fn reconcile(d: Arc<Deployment>, shared: Arc<Shared>) -> Result<Action, ControllerError> {
    let client = shared.ctx.client.clone();
    let ns = d.namespace().unwrap_or_default();
    let mut s = Sync {
        shared: &shared,
        d: (*d).clone(),
        d_api: Api::namespaced(client.clone(), &ns),
        rs_api: Api::namespaced(client, &ns),
        d_ref: d.object_ref(&()),
        new_rs: None,
        old: Vec::new(),
        requeue: None,
    };
    s.sync().await?;
    Ok(Action::requeue(s.requeue.unwrap_or(RESYNC)))
}

impl Sync<'_> {
    fn name(&self) -> String {
        self.d.name_any()
    }

    async fn event(&self, t: EventType, reason: &str, msg: &str) {
        if let Err(e) = self
            .shared
            .recorder
            .record(&self.d_ref, t, reason, msg)
            .await
        {
            tracing::debug!(error = %e, reason, "recording event failed");
        }
    }

    fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn invalid(&self, reason: String) -> ControllerError {
        ControllerError::Invalid {
            object: format!("{}/{}", self.d.namespace().unwrap_or_default(), self.name()),
            reason,
        }
    }

    async fn sync(&mut self) -> Result<(), ControllerError> {
        let selector_json = self
            .d
            .spec
            .as_ref()
            .map(|s| serde_json::to_value(&s.selector).unwrap_or_default())
            .unwrap_or_default();
        let selector = LabelSelector::from_json(&selector_json).map_err(|e| self.invalid(e.0))?;
        if selector.is_empty() {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
            let generation = self.d.metadata.generation;
            let status = self.d.status.clone().unwrap_or_default();
            if status.observed_generation < generation {
                let status = DeploymentStatus {
                    observed_generation: generation,
                    ..status
                };
                self.update_status(status).await?;
            }
            return Ok(());
        }
        let rs_list = self.claim_replica_sets(&selector).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            self.split(rs_list);
            return self.sync_status_only().await;
        }
        self.check_paused_conditions().await?;
        if is_paused(&self.d) {
            return self.sync_scale(rs_list).await;
        }
        self.split(rs_list);
        if self.is_scaling_event() {
            self.sync_new_rs(false).await?;
            return self.sync_scale_split().await;
        }
        if is_rolling(&self.d) {
            self.rollout_rolling().await
        } else {
            self.rollout_recreate(&selector).await
        }
    }

    /// Lists the namespace's ReplicaSets, adopting matching orphans and releasing owned ones
    /// that stopped matching; returns those the deployment controls.
    async fn claim_replica_sets(
        &mut self,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, ControllerError> {
        let uid = self.d.uid().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for rs in self.rs_api.list(&ListParams::default()).await?.items {
            let matches = selector.matches(Some(&label_map(&rs.metadata)));
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(rs);
                    } else if !deleting {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        let patch = serde_json::json!({"metadata": {
                            "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) },
                            "resourceVersion": rs.metadata.resource_version,
                        }});
                        self.patch_rs_ignoring_gone(&rs.name_any(), &patch).await?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref(&self.d));
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": refs,
                        "resourceVersion": rs.metadata.resource_version,
                    }});
                    if let Some(adopted) =
                        self.patch_rs_ignoring_gone(&rs.name_any(), &patch).await?
                    {
                        owned.push(adopted);
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    async fn patch_rs_ignoring_gone(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Option<ReplicaSet>, ControllerError> {
        match self
            .rs_api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Splits the controlled ReplicaSets into the new one (template matches, oldest first) and
    /// the old ones.
    fn split(&mut self, mut rs_list: Vec<ReplicaSet>) {
        rs_list.sort_by(by_creation);
        let t = template(&self.d);
        let idx = rs_list.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|rt| equal_ignore_hash(rt, &t))
        });
        self.new_rs = idx.map(|i| rs_list.remove(i));
        self.old = rs_list;
    }

    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new_rs.iter()).collect()
    }

    fn status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    async fn update_status(&mut self, status: DeploymentStatus) -> Result<(), ControllerError> {
        let mut d = self.d.clone();
        d.status = Some(status);
        self.d = self
            .d_api
            .replace_status(&self.name(), &PostParams::default(), &d)
            .await?;
        Ok(())
    }

    /// Sets the deployment's own revision annotation (upstream `SetDeploymentRevision`).
    async fn set_deployment_revision(&mut self, rev: &str) -> Result<(), ControllerError> {
        if annotation(&self.d.metadata, REVISION) == Some(rev) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev}}});
        self.d = self
            .d_api
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Upstream `checkPausedConditions`.
    async fn check_paused_conditions(&mut self) -> Result<(), ControllerError> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.status();
        let cond = get_condition(&status, PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED_REASON));
        let paused = is_paused(&self.d);
        if paused && !paused_cond {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    PAUSED_REASON,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    RESUMED_REASON,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        self.update_status(status).await
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet was sized for a different replica count.
    fn is_scaling_event(&self) -> bool {
        let want = replicas(&self.d);
        self.all()
            .into_iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(|rs| {
                annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok())
            })
            .any(|desired| desired != want)
    }

    /// Paused (or deleting-free scaling) path: `sync` in upstream.
    async fn sync_scale(&mut self, rs_list: Vec<ReplicaSet>) -> Result<(), ControllerError> {
        self.split(rs_list);
        self.sync_new_rs(false).await?;
        self.sync_scale_split().await
    }

    async fn sync_scale_split(&mut self) -> Result<(), ControllerError> {
        self.scale().await?;
        if is_paused(&self.d) {
            self.cleanup().await?;
        }
        self.sync_status_only().await
    }

    async fn sync_status_only(&mut self) -> Result<(), ControllerError> {
        let status = self.calculate_status();
        if Some(&status) != self.d.status.as_ref() {
            self.update_status(status).await?;
        }
        Ok(())
    }

    /// Upstream `getNewReplicaSet`: syncs the existing new ReplicaSet's annotations and
    /// minReadySeconds, or creates it when `create`.
    async fn sync_new_rs(&mut self, create: bool) -> Result<(), ControllerError> {
        let max_old = self.old.iter().map(revision).max().unwrap_or(0);
        let new_revision = (max_old + 1).to_string();
        if let Some(existing) = self.new_rs.clone() {
            let mut rs = existing.clone();
            let annotations_changed = self.set_new_rs_annotations(&mut rs, &new_revision, true);
            let min_ready = min_ready_seconds(&self.d);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = Some(min_ready);
                let patch = serde_json::json!({
                    "metadata": {"annotations": rs.metadata.annotations},
                    "spec": {"minReadySeconds": min_ready},
                });
                self.new_rs = Some(
                    self.rs_api
                        .patch(
                            &rs.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await?,
                );
                return Ok(());
            }
            let rev = annotation(&rs.metadata, REVISION)
                .unwrap_or_default()
                .to_string();
            if !rev.is_empty() {
                self.set_deployment_revision(&rev).await?;
            }
            let status = self.status();
            if progress_deadline(&self.d).is_some() && get_condition(&status, PROGRESSING).is_none()
            {
                let mut status = status;
                let msg = format!("Found new replica set {:?}", rs.name_any());
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS_REASON, msg),
                );
                self.update_status(status).await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }

        let status = self.status();
        let mut tmpl = template(&self.d);
        let hash = compute_hash(&tmpl, status.collision_count);
        tmpl.metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: MetaSelector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let rs_name = format!("{}-{}", self.name(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: self.d.namespace(),
                owner_references: Some(vec![controller_ref(&self.d)]),
                labels: tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready_seconds(&self.d)),
                selector,
                template: Some(tmpl),
            }),
            status: None,
        };
        let new_count = self.new_rs_new_replicas(&rs)?;
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(new_count);
        }
        self.set_new_rs_annotations(&mut rs, &new_revision, false);
        let mut already_exists = false;
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                already_exists = true;
                let existing = self.rs_api.get(&rs_name).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template(&self.d)));
                if !(ours && same) {
                    // a hash collision: bump collisionCount so the next sync picks a new name
                    let mut status = self.status();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.update_status(status).await?;
                    return Err(ControllerError::Other(format!(
                        "replica set {rs_name} already exists with a different template (hash collision)"
                    )));
                }
                existing
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {rs_name:?}: {e}");
                if progress_deadline(&self.d).is_some() {
                    let mut status = self.status();
                    set_condition(
                        &mut status,
                        new_condition(PROGRESSING, "False", FAILED_RS_CREATE_REASON, msg.clone()),
                    );
                    self.update_status(status).await?;
                }
                self.event(EventType::Warning, FAILED_RS_CREATE_REASON, &msg)
                    .await;
                return Err(e.into());
            }
        };
        if !already_exists && new_count > 0 {
            let msg = format!("Scaled up replica set {rs_name} to {new_count} from 0");
            self.event(EventType::Normal, "ScalingReplicaSet", &msg)
                .await;
        }
        self.set_deployment_revision(&new_revision).await?;
        if !already_exists && progress_deadline(&self.d).is_some() {
            let mut status = self.status();
            let msg = format!("Created new replica set {rs_name:?}");
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_RS_REASON, msg),
            );
            self.update_status(status).await?;
        }
        self.new_rs = Some(created);
        Ok(())
    }

    /// Upstream `SetNewReplicaSetAnnotations`; returns whether anything changed.
    fn set_new_rs_annotations(
        &self,
        rs: &mut ReplicaSet,
        new_revision: &str,
        exists: bool,
    ) -> bool {
        let mut changed = false;
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in self.d.metadata.annotations.iter().flatten() {
            let skip = matches!(
                k.as_str(),
                LAST_APPLIED
                    | REVISION
                    | REVISION_HISTORY
                    | DESIRED_REPLICAS
                    | MAX_REPLICAS
                    | ROLLBACK_TO
            );
            if skip || annotations.get(k) == Some(v) {
                continue;
            }
            annotations.insert(k.clone(), v.clone());
            changed = true;
        }
        let old_revision = annotations.get(REVISION).cloned();
        let old_int: i64 = match old_revision.as_deref() {
            None | Some("") => 0,
            Some(v) => match v.parse() {
                Ok(n) => n,
                Err(_) => return changed,
            },
        };
        let new_int: i64 = new_revision.parse().unwrap_or(0);
        if old_int < new_int {
            annotations.insert(REVISION.into(), new_revision.to_string());
            changed = true;
            // a template coming back (undo): keep the revisions it had in the history
            if let Some(old) = old_revision.filter(|o| !o.is_empty()) {
                let history = annotations
                    .get(REVISION_HISTORY)
                    .cloned()
                    .unwrap_or_default();
                if history.is_empty() {
                    annotations.insert(REVISION_HISTORY.into(), old);
                } else {
                    let mut parts: Vec<&str> = history.split(',').collect();
                    let mut total = history.len() + old.len() + 1;
                    let mut start = 0;
                    while total > MAX_REV_HISTORY_CHARS && start < parts.len() {
                        total -= parts[start].len() + 1;
                        start += 1;
                    }
                    if total <= MAX_REV_HISTORY_CHARS {
                        parts = parts.split_off(start);
                        parts.push(&old);
                        annotations.insert(REVISION_HISTORY.into(), parts.join(","));
                    }
                }
            }
        }
        if !exists {
            changed |= set_replicas_annotations(
                rs,
                replicas(&self.d),
                replicas(&self.d) + max_surge(&self.d),
            );
        }
        changed
    }

    /// Upstream `NewRSNewReplicas`: how big the new ReplicaSet may be right now.
    fn new_rs_new_replicas(&self, new_rs: &ReplicaSet) -> Result<i32, ControllerError> {
        let want = replicas(&self.d);
        if !is_rolling(&self.d) {
            return Ok(want);
        }
        let (surge, _) = fenceposts(&self.d).map_err(|e| self.invalid(e))?;
        // every ReplicaSet's size: the old ones plus this new one
        let current: i32 = self.old.iter().map(rs_replicas).sum::<i32>() + rs_replicas(new_rs);
        let max_total = want + surge;
        if current >= max_total {
            return Ok(rs_replicas(new_rs));
        }
        let up = (max_total - current).min(want - rs_replicas(new_rs));
        Ok(rs_replicas(new_rs) + up)
    }

    /// Resizes one ReplicaSet (and its replica annotations); records ScalingReplicaSet.
    async fn scale_rs(&mut self, name: &str, new_scale: i32) -> Result<bool, ControllerError> {
        let Some(rs) = self
            .all()
            .into_iter()
            .find(|r| r.name_any() == name)
            .cloned()
        else {
            return Ok(false);
        };
        let old_scale = rs_replicas(&rs);
        let size_changed = old_scale != new_scale;
        let mut probe = rs.clone();
        let want = replicas(&self.d);
        let annotations_changed =
            set_replicas_annotations(&mut probe, want, want + max_surge(&self.d));
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: want.to_string(),
                MAX_REPLICAS: (want + max_surge(&self.d)).to_string(),
            }},
            "spec": {"replicas": new_scale},
        });
        let updated = self
            .rs_api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if self.new_rs.as_ref().is_some_and(|n| n.name_any() == name) {
            self.new_rs = Some(updated);
        } else if let Some(slot) = self.old.iter_mut().find(|r| r.name_any() == name) {
            *slot = updated;
        }
        if size_changed {
            let op = if new_scale > old_scale { "up" } else { "down" };
            let msg = format!("Scaled {op} replica set {name} to {new_scale} from {old_scale}");
            self.event(EventType::Normal, "ScalingReplicaSet", &msg)
                .await;
        }
        Ok(size_changed)
    }

    /// Upstream `scale`: proportional scaling across active ReplicaSets.
    async fn scale(&mut self) -> Result<(), ControllerError> {
        let want = replicas(&self.d);
        if let Some(target) = self.find_active_or_latest() {
            if rs_replicas(&target) != want {
                self.scale_rs(&target.name_any(), want).await?;
            }
            return Ok(());
        }
        if self.new_rs.as_ref().is_some_and(|n| self.is_saturated(n)) {
            let names: Vec<String> = self
                .old
                .iter()
                .filter(|r| rs_replicas(r) > 0)
                .map(|r| r.name_any())
                .collect();
            for n in names {
                self.scale_rs(&n, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let mut active: Vec<ReplicaSet> = self
            .all()
            .into_iter()
            .filter(|r| rs_replicas(r) > 0)
            .cloned()
            .collect();
        let total: i32 = active.iter().map(rs_replicas).sum();
        let allowed = if want > 0 {
            want + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        match to_add.cmp(&0) {
            // larger first; ties: newer first when adding, older first when removing
            Ordering::Greater => active.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(b, a))
            }),
            Ordering::Less => active.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(a, b))
            }),
            Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for rs in &active {
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        for (i, rs) in active.iter().enumerate() {
            let mut size = sizes[i];
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(&rs.name_any(), size).await?;
        }
        Ok(())
    }

    /// Upstream `GetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let want = replicas(&self.d);
        if want == 0 {
            return -rs_replicas(rs);
        }
        let deployment_replicas = want + max_surge(&self.d);
        let annotated = annotation(&rs.metadata, MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or_else(|| self.status().replicas.unwrap_or(0));
        if annotated == 0 {
            return 0;
        }
        let size =
            f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
        size.round() as i32 - rs_replicas(rs)
    }

    /// Upstream `FindActiveOrLatest`.
    fn find_active_or_latest(&self) -> Option<ReplicaSet> {
        if self.new_rs.is_none() && self.old.is_empty() {
            return None;
        }
        let active: Vec<&ReplicaSet> = self
            .all()
            .into_iter()
            .filter(|r| rs_replicas(r) > 0)
            .collect();
        match active.len() {
            0 => self
                .new_rs
                .clone()
                .or_else(|| self.old.iter().max_by(|a, b| by_creation(a, b)).cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        }
    }

    /// Upstream `IsSaturated`.
    fn is_saturated(&self, rs: &ReplicaSet) -> bool {
        let want = replicas(&self.d);
        let desired =
            annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
        desired == Some(want) && rs_replicas(rs) == want && rs_available(rs) == want
    }

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<(), ControllerError> {
        self.sync_new_rs(true).await?;
        if self.reconcile_new_rs().await? {
            return self.sync_rollout_status().await;
        }
        if self.reconcile_old_rses().await? {
            return self.sync_rollout_status().await;
        }
        if self.deployment_complete(&self.status()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    async fn reconcile_new_rs(&mut self) -> Result<bool, ControllerError> {
        let Some(new_rs) = self.new_rs.clone() else {
            return Ok(false);
        };
        let want = replicas(&self.d);
        let cur = rs_replicas(&new_rs);
        if cur == want {
            return Ok(false);
        }
        if cur > want {
            return self.scale_rs(&new_rs.name_any(), want).await;
        }
        let count = self.new_rs_new_replicas(&new_rs)?;
        self.scale_rs(&new_rs.name_any(), count).await
    }

    async fn reconcile_old_rses(&mut self) -> Result<bool, ControllerError> {
        let old_count: i32 = self.old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = sum(&self.all(), rs_replicas);
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = self
            .new_rs
            .as_ref()
            .map(|n| rs_replicas(n) - rs_available(n))
            .unwrap_or(0);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // clean up unhealthy old replicas first
        self.old.sort_by(by_creation);
        let mut cleaned = 0;
        let names: Vec<(String, i32, i32)> = self
            .old
            .iter()
            .map(|r| (r.name_any(), rs_replicas(r), rs_available(r)))
            .collect();
        for (name, spec, avail) in names {
            if cleaned >= max_scaled_down {
                break;
            }
            if spec == 0 || spec == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(spec - avail);
            self.scale_rs(&name, spec - down).await?;
            cleaned += down;
        }
        // then scale down healthy ones while availability allows
        let available = sum(&self.all(), rs_available);
        let mut scaled = 0;
        if available > min_available {
            let total_down = available - min_available;
            self.old.sort_by(by_creation);
            let names: Vec<(String, i32)> = self
                .old
                .iter()
                .map(|r| (r.name_any(), rs_replicas(r)))
                .collect();
            for (name, spec) in names {
                if scaled >= total_down {
                    break;
                }
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total_down - scaled);
                self.scale_rs(&name, spec - down).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream `rolloutRecreate`.
    async fn rollout_recreate(&mut self, selector: &LabelSelector) -> Result<(), ControllerError> {
        self.sync_new_rs(false).await?;
        let active_old: Vec<String> = self
            .old
            .iter()
            .filter(|r| rs_replicas(r) > 0)
            .map(|r| r.name_any())
            .collect();
        let mut scaled_down = false;
        for n in active_old {
            scaled_down |= self.scale_rs(&n, 0).await?;
        }
        if scaled_down {
            return self.sync_rollout_status().await;
        }
        if self.old_pods_running(selector).await? {
            self.requeue_after(OLD_PODS_RECHECK);
            return self.sync_rollout_status().await;
        }
        if self.new_rs.is_none() {
            self.sync_new_rs(true).await?;
        }
        if let Some(n) = self.new_rs.as_ref().map(|n| n.name_any()) {
            let want = replicas(&self.d);
            self.scale_rs(&n, want).await?;
        }
        if self.deployment_complete(&self.status()) {
            self.cleanup().await?;
        }
        self.sync_rollout_status().await
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or pods they control are
    /// not yet terminal (including ones still terminating).
    async fn old_pods_running(&self, selector: &LabelSelector) -> Result<bool, ControllerError> {
        if self.old.iter().map(rs_status_replicas).sum::<i32>() > 0 {
            return Ok(true);
        }
        let old_uids: Vec<String> = self.old.iter().filter_map(|r| r.uid()).collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let pods: Api<Pod> = Api::namespaced(
            self.shared.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let lp = ListParams::default().labels(&selector.to_query());
        Ok(pods.list(&lp).await?.items.iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && !mini_runtime::pod::is_terminal(p)
        }))
    }

    /// Upstream `cleanupDeployment`: deletes the oldest unused ReplicaSets beyond
    /// revisionHistoryLimit.
    async fn cleanup(&mut self) -> Result<(), ControllerError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<ReplicaSet> = self
            .old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(&rs) != 0
                || rs_replicas(&rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.old.retain(|r| r.metadata.uid != rs.metadata.uid);
        }
        Ok(())
    }

    /// Upstream `calculateStatus`.
    fn calculate_status(&self) -> DeploymentStatus {
        let all = self.all();
        let available = sum(&all, rs_available);
        let total = sum(&all, rs_replicas);
        let unavailable = (total - available).max(0);
        let old = self.status();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nonzero(sum(&all, rs_status_replicas)),
            updated_replicas: nonzero(self.new_rs.as_ref().map(rs_status_replicas).unwrap_or(0)),
            ready_replicas: nonzero(sum(&all, rs_ready)),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero(unavailable),
            collision_count: old.collision_count,
            conditions: old.conditions.clone(),
            terminating_replicas: old.terminating_replicas,
        };
        if available >= replicas(&self.d) - max_unavailable(&self.d) {
            set_condition(
                &mut status,
                new_condition(
                    AVAILABLE,
                    "True",
                    MIN_AVAILABLE_REASON,
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut status,
                new_condition(
                    AVAILABLE,
                    "False",
                    MIN_UNAVAILABLE_REASON,
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        status
    }

    /// Upstream `DeploymentComplete`.
    fn deployment_complete(&self, st: &DeploymentStatus) -> bool {
        let want = replicas(&self.d);
        st.updated_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.observed_generation >= self.d.metadata.generation
    }

    /// Upstream `DeploymentProgressing`.
    fn deployment_progressing(&self, new: &DeploymentStatus) -> bool {
        let old = self.status();
        let g = |v: Option<i32>| v.unwrap_or(0);
        let old_old = g(old.replicas) - g(old.updated_replicas);
        let new_old = g(new.replicas) - g(new.updated_replicas);
        g(new.updated_replicas) > g(old.updated_replicas)
            || new_old < old_old
            || g(new.ready_replicas) > g(old.ready_replicas)
            || g(new.available_replicas) > g(old.available_replicas)
    }

    /// Upstream `DeploymentTimedOut`.
    fn deployment_timed_out(&self, st: &DeploymentStatus) -> bool {
        let Some(deadline) = progress_deadline(&self.d) else {
            return false;
        };
        let Some(cond) = get_condition(st, PROGRESSING) else {
            return false;
        };
        match cond.reason.as_deref() {
            Some(NEW_RS_AVAILABLE_REASON) => false,
            Some(TIMED_OUT_REASON) => true,
            _ => cond
                .last_update_time
                .as_ref()
                .is_some_and(|t| t.0.as_second() + deadline < Timestamp::now().as_second()),
        }
    }

    /// Upstream `syncRolloutStatus`: status plus the Progressing and ReplicaFailure conditions.
    async fn sync_rollout_status(&mut self) -> Result<(), ControllerError> {
        let mut new_status = self.calculate_status();
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut new_status, PROGRESSING);
        }
        let current = get_condition(&self.status(), PROGRESSING).cloned();
        let complete_already = new_status.replicas == new_status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
        let new_rs_name = self.new_rs.as_ref().map(|n| n.name_any());
        let subject = |what: &str| match &new_rs_name {
            Some(n) => format!("ReplicaSet {n:?} {what}"),
            None => format!("Deployment {:?} {what}", self.name()),
        };
        if deadline.is_some() && !complete_already {
            if self.deployment_complete(&new_status) {
                let msg = subject("has successfully progressed.");
                set_condition(
                    &mut new_status,
                    new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE_REASON, msg),
                );
            } else if self.deployment_progressing(&new_status) {
                let msg = subject("is progressing.");
                let mut cond = new_condition(PROGRESSING, "True", RS_UPDATED_REASON, msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut new_status, PROGRESSING);
                }
                set_condition(&mut new_status, cond);
            } else if self.deployment_timed_out(&new_status) {
                let msg = subject("has timed out progressing.");
                set_condition(
                    &mut new_status,
                    new_condition(PROGRESSING, "False", TIMED_OUT_REASON, msg),
                );
            }
        }
        match self.replica_failure() {
            Some(c) => set_condition(&mut new_status, c),
            None => remove_condition(&mut new_status, REPLICA_FAILURE),
        }
        if Some(&new_status) == self.d.status.as_ref() {
            self.requeue_stuck(&new_status);
            return Ok(());
        }
        self.update_status(new_status).await
    }

    /// The first ReplicaFailure condition of the new ReplicaSet, else of any other.
    fn replica_failure(&self) -> Option<DeploymentCondition> {
        let to_cond = |rs: &ReplicaSet| {
            rs.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == REPLICA_FAILURE))
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    last_transition_time: c.last_transition_time.clone(),
                    last_update_time: c.last_transition_time.clone(),
                })
        };
        self.new_rs
            .as_ref()
            .and_then(to_cond)
            .or_else(|| self.all().into_iter().find_map(to_cond))
    }

    /// Upstream `requeueStuckDeployment`: check again when the progress deadline passes.
    fn requeue_stuck(&mut self, new_status: &DeploymentStatus) {
        let Some(deadline) = progress_deadline(&self.d) else {
            return;
        };
        let Some(cond) = get_condition(&self.status(), PROGRESSING).cloned() else {
            return;
        };
        if self.deployment_complete(new_status) || cond.reason.as_deref() == Some(TIMED_OUT_REASON)
        {
            return;
        }
        let Some(from) = cond.last_update_time.as_ref().map(|t| t.0.as_second()) else {
            return;
        };
        let after = from + deadline - Timestamp::now().as_second();
        self.requeue_after(Duration::from_secs(after.max(0) as u64 + 1));
    }
}

/// Sets the desired/max replica annotations; returns whether they changed.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [
        (DESIRED_REPLICAS, desired.to_string()),
        (MAX_REPLICAS, max.to_string()),
    ] {
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicaset::testutil::{live_pods, mark_ready, spawn, wait_for};
    use tokio_util::sync::CancellationToken;

    fn deployment(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {"kubernetes.io/change-cause": "initial"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": strategy,
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
                },
            },
        }))
        .expect("valid deployment")
    }

    fn rolling(surge: i32, unavailable: i32) -> serde_json::Value {
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    struct Env {
        env: mini_testenv::TestEnv,
        admin: kube::Client,
        d_api: Api<Deployment>,
        rs_api: Api<ReplicaSet>,
        rs_token: CancellationToken,
        d_token: CancellationToken,
    }

    async fn start() -> Env {
        let env = mini_testenv::TestEnv::start().await;
        let admin = env.admin_client();
        let rs_token = spawn(&env, crate::replicaset::run);
        let d_token = spawn(&env, run);
        Env {
            d_api: Api::namespaced(admin.clone(), "default"),
            rs_api: Api::namespaced(admin.clone(), "default"),
            admin,
            env,
            rs_token,
            d_token,
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            self.rs_token.cancel();
            self.d_token.cancel();
        }
    }

    impl Env {
        async fn owned_rses(&self, d: &str) -> Vec<ReplicaSet> {
            let uid = self.d_api.get(d).await.unwrap().uid().unwrap();
            let mut v: Vec<ReplicaSet> = self
                .rs_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|r| controller_of(&r.metadata).is_some_and(|c| c.uid == uid))
                .collect();
            v.sort_by_key(revision);
            v
        }

        async fn set_image(&self, d: &str, image: &str) {
            let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
            self.d_api
                .patch(d, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .unwrap();
        }

        /// Marks every live not-ready pod ready; returns how many are ready afterwards.
        async fn ready_all(&self) {
            for p in live_pods(&self.admin, "default").await {
                if !mini_runtime::pod::is_ready(&p) {
                    mark_ready(&self.admin, &p).await;
                }
            }
        }

        /// Waits until `kubectl rollout status` would report success, marking pods ready.
        async fn wait_rolled_out(&self, d: &str) -> Deployment {
            wait_for(15, "rollout complete", || async {
                self.ready_all().await;
                let dep = self.d_api.get(d).await.unwrap();
                let s = dep.status.clone().unwrap_or_default();
                let want = replicas(&dep);
                let done = s.observed_generation >= dep.metadata.generation
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want;
                done.then_some(dep)
            })
            .await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_new_creates_hashed_replicaset_with_revision_1() {
        let e = start().await;
        e.d_api
            .create(&PostParams::default(), &deployment("web", 2, rolling(1, 0)))
            .await
            .unwrap();
        let dep = e.wait_rolled_out("web").await;
        let rses = e.owned_rses("web").await;
        assert_eq!(rses.len(), 1);
        let rs = &rses[0];
        let hash = compute_hash(&template(&dep), None);
        assert_eq!(rs.name_any(), format!("web-{hash}"));
        assert_eq!(rs.labels().get(HASH_LABEL), Some(&hash));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap().get(HASH_LABEL),
            Some(&hash)
        );
        let a = rs.annotations();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("2"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("initial")
        );
        assert_eq!(annotation(&dep.metadata, REVISION), Some("1"));
        for p in live_pods(&e.admin, "default").await {
            assert_eq!(p.labels().get(HASH_LABEL), Some(&hash));
        }
        // the hash is stable and follows the template
        let mut other = template(&dep);
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_eq!(compute_hash(&template(&dep), None), hash);
        assert_ne!(compute_hash(&other, None), hash);
        assert_ne!(compute_hash(&template(&dep), Some(1)), hash);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_template_change_rolls_update_within_max_unavailable() {
        let e = start().await;
        e.d_api
            .create(
                &PostParams::default(),
                &deployment("roll", 4, rolling(1, 1)),
            )
            .await
            .unwrap();
        e.wait_rolled_out("roll").await;
        e.set_image("roll", "nginx:2").await;
        let min_ready = 4 - 1;
        let max_total = std::cell::Cell::new(0);
        wait_for(15, "rolling update done", || async {
            // observe, then play the kubelet for one pod at a time
            let pods = live_pods(&e.admin, "default").await;
            let ready = pods
                .iter()
                .filter(|p| mini_runtime::pod::is_ready(p))
                .count();
            assert!(
                ready >= min_ready,
                "only {ready} ready pods during the rollout"
            );
            if let Some(p) = pods.iter().find(|p| !mini_runtime::pod::is_ready(p)) {
                mark_ready(&e.admin, p).await;
            }
            let rses = e.owned_rses("roll").await;
            // maxSurge bounds the replica sets' sizes (pods of a shrinking set may linger a
            // moment). The server's lists are not point-in-time snapshots, so only count two
            // identical consecutive reads.
            let again = e.owned_rses("roll").await;
            let versions = |v: &[ReplicaSet]| {
                v.iter()
                    .map(|r| r.metadata.resource_version.clone())
                    .collect::<Vec<_>>()
            };
            if versions(&rses) == versions(&again) {
                let total: i32 = rses.iter().map(rs_replicas).sum();
                max_total.set(max_total.get().max(total));
            }
            let dep = e.d_api.get("roll").await.unwrap();
            let s = dep.status.clone().unwrap_or_default();
            let done = rses.len() == 2
                && rs_replicas(&rses[0]) == 0
                && s.updated_replicas == Some(4)
                && s.replicas == Some(4)
                && s.available_replicas == Some(4)
                && s.observed_generation >= dep.metadata.generation;
            done.then_some(())
        })
        .await;
        assert!(
            max_total.get() <= 5,
            "surge exceeded: {} replicas",
            max_total.get()
        );
        let rses = e.owned_rses("roll").await;
        assert_eq!(revision(&rses[1]), 2);
        assert_eq!(
            rses[1]
                .spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref(),
            Some("nginx:2")
        );
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(e.admin.clone(), "default");
        assert!(events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|ev| ev.reason.as_deref() == Some("ScalingReplicaSet")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_recreate_scales_old_to_zero_first() {
        let e = start().await;
        let d = deployment("rec", 2, serde_json::json!({"type": "Recreate"}));
        e.d_api.create(&PostParams::default(), &d).await.unwrap();
        e.wait_rolled_out("rec").await;
        let old_hash = e.owned_rses("rec").await[0].labels()[HASH_LABEL].clone();
        e.set_image("rec", "nginx:2").await;
        wait_for(15, "recreate done", || async {
            let pods = live_pods(&e.admin, "default").await;
            let old = pods
                .iter()
                .filter(|p| p.labels().get(HASH_LABEL) == Some(&old_hash))
                .count();
            let new = pods.len() - old;
            assert!(
                old == 0 || new == 0,
                "old and new pods coexist: {old} old, {new} new"
            );
            e.ready_all().await;
            let dep = e.d_api.get("rec").await.unwrap();
            let s = dep.status.unwrap_or_default();
            (new == 2 && s.updated_replicas == Some(2) && s.available_replicas == Some(2))
                .then_some(())
        })
        .await;
        let rses = e.owned_rses("rec").await;
        assert_eq!((rs_replicas(&rses[0]), rs_replicas(&rses[1])), (0, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_template_revert_reuses_old_replicaset_with_revision_3() {
        let e = start().await;
        e.d_api
            .create(
                &PostParams::default(),
                &deployment("undo", 2, rolling(1, 0)),
            )
            .await
            .unwrap();
        e.wait_rolled_out("undo").await;
        let first = e.owned_rses("undo").await[0].name_any();
        e.set_image("undo", "nginx:2").await;
        e.wait_rolled_out("undo").await;
        e.set_image("undo", "nginx:1").await;
        let dep = e.wait_rolled_out("undo").await;
        let rses = e.owned_rses("undo").await;
        assert_eq!(rses.len(), 2, "the old replica set is reused");
        let newest = rses.last().unwrap();
        assert_eq!(newest.name_any(), first);
        assert_eq!(revision(newest), 3);
        assert_eq!(annotation(&newest.metadata, REVISION_HISTORY), Some("1"));
        assert_eq!(rs_replicas(newest), 2);
        assert_eq!(annotation(&dep.metadata, REVISION), Some("3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_revision_history_limit_prunes_old_replicasets() {
        let e = start().await;
        let mut d = deployment("hist", 1, rolling(1, 0));
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        e.d_api.create(&PostParams::default(), &d).await.unwrap();
        e.wait_rolled_out("hist").await;
        for image in ["nginx:2", "nginx:3", "nginx:4"] {
            e.set_image("hist", image).await;
            e.wait_rolled_out("hist").await;
        }
        let rses = wait_for(15, "old replica sets pruned", || async {
            let rses = e.owned_rses("hist").await;
            (rses.len() == 2).then_some(rses)
        })
        .await;
        assert_eq!(rses.iter().map(revision).collect::<Vec<_>>(), [3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_paused_does_not_roll_but_scales() {
        let e = start().await;
        e.d_api
            .create(
                &PostParams::default(),
                &deployment("pause", 2, rolling(1, 0)),
            )
            .await
            .unwrap();
        e.wait_rolled_out("pause").await;
        let pp = PatchParams::default();
        e.d_api
            .patch(
                "pause",
                &pp,
                &Patch::Merge(serde_json::json!({"spec": {"paused": true}})),
            )
            .await
            .unwrap();
        e.set_image("pause", "nginx:2").await;
        e.d_api
            .patch(
                "pause",
                &pp,
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})),
            )
            .await
            .unwrap();
        let dep = wait_for(15, "paused condition and scale", || async {
            e.ready_all().await;
            let dep = e.d_api.get("pause").await.unwrap();
            let s = dep.status.clone().unwrap_or_default();
            let paused = get_condition(&s, PROGRESSING)
                .is_some_and(|c| c.reason.as_deref() == Some(PAUSED_REASON));
            (paused
                && s.available_replicas == Some(3)
                && s.observed_generation >= dep.metadata.generation)
                .then_some(dep)
        })
        .await;
        let rses = e.owned_rses("pause").await;
        assert_eq!(rses.len(), 1, "no rollout while paused");
        assert_eq!(rs_replicas(&rses[0]), 3);
        assert_eq!(dep.status.unwrap().updated_replicas, None);

        e.d_api
            .patch(
                "pause",
                &pp,
                &Patch::Merge(serde_json::json!({"spec": {"paused": false}})),
            )
            .await
            .unwrap();
        e.wait_rolled_out("pause").await;
        assert_eq!(e.owned_rses("pause").await.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_conditions_report_availability_progress_and_deadline() {
        let e = start().await;
        e.d_api
            .create(
                &PostParams::default(),
                &deployment("cond", 2, rolling(1, 0)),
            )
            .await
            .unwrap();
        e.wait_rolled_out("cond").await;
        let dep = wait_for(15, "complete conditions", || async {
            let dep = e.d_api.get("cond").await.unwrap();
            let s = dep.status.clone().unwrap_or_default();
            get_condition(&s, PROGRESSING)
                .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON))
                .then_some(dep)
        })
        .await
        .clone();
        let s = dep.status.clone().unwrap();
        let avail = get_condition(&s, AVAILABLE).unwrap();
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_deref()),
            ("True", Some(MIN_AVAILABLE_REASON))
        );
        assert_eq!(get_condition(&s, PROGRESSING).unwrap().status, "True");
        assert_eq!(s.observed_generation, dep.metadata.generation);

        // pods that never become ready: the deadline passes
        let mut stuck = deployment("stuck", 2, rolling(1, 0));
        stuck.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
        e.d_api
            .create(&PostParams::default(), &stuck)
            .await
            .unwrap();
        let s = wait_for(15, "progress deadline exceeded", || async {
            let s = e
                .d_api
                .get("stuck")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            get_condition(&s, PROGRESSING)
                .is_some_and(|c| {
                    c.reason.as_deref() == Some(TIMED_OUT_REASON) && c.status == "False"
                })
                .then_some(s)
        })
        .await;
        let avail = get_condition(&s, AVAILABLE).unwrap();
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_deref()),
            ("False", Some(MIN_UNAVAILABLE_REASON))
        );
        assert_eq!(s.unavailable_replicas, Some(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployment_controller_restart_mid_rollout_converges() {
        let mut e = start().await;
        e.d_api
            .create(
                &PostParams::default(),
                &deployment("restart", 3, rolling(1, 1)),
            )
            .await
            .unwrap();
        e.wait_rolled_out("restart").await;
        e.set_image("restart", "nginx:2").await;
        wait_for(15, "rollout started", || async {
            (e.owned_rses("restart").await.len() == 2).then_some(())
        })
        .await;
        // stop both controllers mid-rollout, let a pod become ready meanwhile, then restart
        e.d_token.cancel();
        e.rs_token.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        e.ready_all().await;
        e.rs_token = spawn(&e.env, crate::replicaset::run);
        e.d_token = spawn(&e.env, run);
        e.wait_rolled_out("restart").await;
        let rses = e.owned_rses("restart").await;
        assert_eq!(rses.len(), 2);
        assert_eq!((rs_replicas(&rses[0]), rs_replicas(&rses[1])), (0, 3));
        assert_eq!(revision(&rses[1]), 2);
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let mut d = deployment(
            "f",
            10,
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        assert_eq!(fenceposts(&d).unwrap(), (3, 2));
        d.spec.as_mut().unwrap().replicas = Some(1);
        assert_eq!(fenceposts(&d).unwrap(), (1, 0));
        let zero = deployment("z", 3, rolling(0, 0));
        assert_eq!(fenceposts(&zero).unwrap(), (0, 1));
        let rec = deployment("r", 3, serde_json::json!({"type": "Recreate"}));
        assert_eq!((max_surge(&rec), max_unavailable(&rec)), (0, 0));
    }
}
