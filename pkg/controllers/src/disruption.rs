//! The disruption controller: keeps each policy/v1 PodDisruptionBudget's status (expected,
//! healthy and desired pod counts, `disruptionsAllowed`, the `DisruptionAllowed` condition and
//! the `disruptedPods` the eviction subresource records) accurate, so evictions can be admitted
//! or refused with 429 from `status.disruptionsAllowed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use mini_api::LabelSelector;
use mini_runtime::{EventRecorder, EventType};

use crate::{Context, ControllerError};

/// How long a pod the eviction subresource recorded in `disruptedPods` is assumed to be on its
/// way out before it counts as healthy again (upstream `DeletionTimeout`).
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);
/// Periodic resync: catches pods whose labels moved out of a selector and controller rescales.
const RESYNC: Duration = Duration::from_secs(30);

struct State {
    ctx: Arc<Context>,
    recorder: EventRecorder,
}

/// `GetScaledValueFromIntOrPercent`: an int as is, `"N%"` of `total`, rounded up or down.
fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let num = pct * total as i64;
            let v = if round_up {
                (num + 99).div_euclid(100)
            } else {
                num.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

fn is_percent(v: &IntOrString) -> bool {
    matches!(v, IntOrString::String(_))
}

/// The selector as mini's matcher wants it; a missing selector selects nothing (policy/v1).
fn selector_of(pdb: &PodDisruptionBudget) -> Result<Option<LabelSelector>, String> {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let json = serde_json::to_value(sel).map_err(|e| e.to_string())?;
    LabelSelector::from_json(&json)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn labels_json(pod: &Pod) -> serde_json::Map<String, serde_json::Value> {
    pod.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

fn pod_matches(sel: &LabelSelector, pod: &Pod) -> bool {
    sel.matches(Some(&labels_json(pod)))
}

fn controller_ref(pod: &Pod) -> Option<&OwnerReference> {
    mini_runtime::owner::controller_of(&pod.metadata)
}

/// Upstream `buildDisruptedPodMap`: entries for pods that still exist, are not being deleted
/// and whose eviction is recent; also the earliest time one of them expires.
fn build_disrupted_map(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let Some(recorded) = recorded else {
        return (out, None);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let Some(at) = recorded.get(name) else {
            continue;
        };
        let expires = at.0.checked_add(DELETION_TIMEOUT).unwrap_or(Timestamp::MAX);
        if expires < now {
            // the eviction never turned into a deletion; the pod counts again
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        out.insert(name.to_string(), at.clone());
    }
    (out, recheck)
}

/// Ready pods not being deleted and not recently evicted.
fn count_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !p.metadata
                .name
                .as_ref()
                .is_some_and(|n| disrupted.contains_key(n))
        })
        .filter(|p| mini_runtime::pod::is_ready(p))
        .count() as i32
}

/// Upstream `SetStatusCondition` for `DisruptionAllowed`: the transition time moves only when
/// the status flips.
fn set_condition(
    conditions: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let now = Time(Timestamp::now());
    match conditions
        .iter_mut()
        .find(|c| c.type_ == "DisruptionAllowed")
    {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// The scale of one controller, keyed so pods of the same controller count it once.
async fn scale_of(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, kube::Error> {
    let group = owner
        .api_version
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    let replicas =
        |s: k8s_openapi::api::autoscaling::v1::Scale| s.spec.and_then(|s| s.replicas).unwrap_or(0);
    let missing = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let result = match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let Some(rs) = rss.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            // a Deployment's ReplicaSets are counted through the Deployment's scale
            if let Some(d) =
                mini_runtime::owner::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")
            {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                deployments
                    .get_scale(&d.name)
                    .await
                    .map(|s| Some((format!("Deployment/{}", d.name), replicas(s))))
            } else {
                rss.get_scale(&owner.name)
                    .await
                    .map(|s| Some((format!("ReplicaSet/{}", owner.name), replicas(s))))
            }
        }
        ("apps", "Deployment") => Api::<Deployment>::namespaced(client.clone(), namespace)
            .get_scale(&owner.name)
            .await
            .map(|s| Some((format!("Deployment/{}", owner.name), replicas(s)))),
        ("apps", "StatefulSet") => Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .get_scale(&owner.name)
            .await
            .map(|s| Some((format!("StatefulSet/{}", owner.name), replicas(s)))),
        ("", "ReplicationController") => {
            Api::<ReplicationController>::namespaced(client.clone(), namespace)
                .get_scale(&owner.name)
                .await
                .map(|s| Some((format!("ReplicationController/{}", owner.name), replicas(s))))
        }
        _ => {
            // any other kind with a scale subresource (upstream `getScaleController`)
            let (g, v) = owner
                .api_version
                .split_once('/')
                .unwrap_or(("", owner.api_version.as_str()));
            let gvk = kube::api::GroupVersionKind::gvk(g, v, &owner.kind);
            let Ok((ar, _)) = kube::discovery::pinned_kind(client, &gvk).await else {
                return Ok(None);
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
            api.get_scale(&owner.name).await.map(|s| {
                Some((
                    format!("{}/{}/{}", owner.api_version, owner.kind, owner.name),
                    replicas(s),
                ))
            })
        }
    };
    match result {
        Err(e) if missing(&e) => Ok(None),
        other => other,
    }
}

/// Upstream `getExpectedScale`: the sum of the scales of the pods' controllers. Pods without a
/// controller, or whose controller has no scale, count one each (upstream leaves them out and
/// warns; counting them keeps percentages meaningful for bare pods).
async fn expected_scale(
    client: &kube::Client,
    namespace: &str,
    pods: &[Pod],
) -> Result<(i32, Vec<String>), kube::Error> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut resolved: HashMap<String, Option<String>> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(owner) = controller_ref(pod) else {
            unmanaged.push(name);
            continue;
        };
        let owner_key = format!("{}/{}/{}", owner.api_version, owner.kind, owner.name);
        let key = match resolved.get(&owner_key) {
            Some(k) => k.clone(),
            None => {
                let found = scale_of(client, namespace, owner).await?;
                let key = found.map(|(k, n)| {
                    scales.insert(k.clone(), n);
                    k
                });
                resolved.insert(owner_key, key.clone());
                key
            }
        };
        if key.is_none() {
            unmanaged.push(name);
        }
    }
    Ok((
        scales.values().sum::<i32>() + unmanaged.len() as i32,
        unmanaged,
    ))
}

/// Upstream `getExpectedPodCount`: (expected, desiredHealthy, unmanaged pods).
async fn expected_and_desired(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    namespace: &str,
    pods: &[Pod],
) -> Result<(i32, i32, Vec<String>), String> {
    let spec = pdb.spec.as_ref();
    if let Some(max_unavailable) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let (expected, unmanaged) = expected_scale(client, namespace, pods)
            .await
            .map_err(|e| e.to_string())?;
        let max = scaled_value(max_unavailable, expected, true)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    if let Some(min_available) = spec.and_then(|s| s.min_available.as_ref()) {
        if !is_percent(min_available) {
            return Ok((
                pods.len() as i32,
                scaled_value(min_available, 0, true)?,
                Vec::new(),
            ));
        }
        let (expected, unmanaged) = expected_scale(client, namespace, pods)
            .await
            .map_err(|e| e.to_string())?;
        return Ok((
            expected,
            scaled_value(min_available, expected, true)?,
            unmanaged,
        ));
    }
    Ok((pods.len() as i32, 0, Vec::new()))
}

fn status_changed(
    old: Option<&PodDisruptionBudgetStatus>,
    new: &PodDisruptionBudgetStatus,
) -> bool {
    let Some(old) = old else { return true };
    let norm = |s: &PodDisruptionBudgetStatus| {
        let mut s = s.clone();
        if s.disrupted_pods.as_ref().is_some_and(BTreeMap::is_empty) {
            s.disrupted_pods = None;
        }
        if s.conditions.as_ref().is_some_and(Vec::is_empty) {
            s.conditions = None;
        }
        s
    };
    norm(old) != norm(new)
}

async fn write_status(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), ControllerError> {
    if !status_changed(pdb.status.as_ref(), &status) {
        return Ok(());
    }
    let (Some(ns), Some(name)) = (
        pdb.metadata.namespace.as_deref(),
        pdb.metadata.name.as_deref(),
    ) else {
        return Ok(());
    };
    let mut updated = pdb.clone();
    updated.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    api.replace_status(name, &PostParams::default(), &updated)
        .await?;
    Ok(())
}

/// Upstream `failSafe`: when the status cannot be computed, allow no disruptions.
async fn fail_safe(
    state: &State,
    pdb: &PodDisruptionBudget,
    reason: &str,
) -> Result<(), ControllerError> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let mut conditions = status.conditions.take().unwrap_or_default();
    set_condition(
        &mut conditions,
        "False",
        "SyncFailed",
        reason,
        pdb.metadata.generation,
    );
    status.conditions = Some(conditions);
    write_status(&state.ctx.client, pdb, status).await
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    state: Arc<State>,
) -> Result<Action, ControllerError> {
    let Some(ns) = pdb.metadata.namespace.as_deref() else {
        return Ok(Action::await_change());
    };
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &state.ctx.client;
    let pdb_ref = kube::Resource::object_ref(pdb.as_ref(), &());
    let selector = match selector_of(&pdb) {
        Ok(s) => s,
        Err(e) => {
            fail_safe(&state, &pdb, &format!("invalid selector: {e}")).await?;
            return Ok(Action::requeue(RESYNC));
        }
    };
    let pods: Vec<Pod> = match &selector {
        None => Vec::new(),
        Some(sel) => Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&sel.to_query()))
            .await?
            .items
            .into_iter()
            .filter(|p| pod_matches(sel, p))
            .collect(),
    };
    if pods.is_empty() {
        let _ = state
            .recorder
            .record(
                &pdb_ref,
                EventType::Normal,
                "NoPods",
                "No matching pods found",
            )
            .await;
    }
    let (expected, desired, unmanaged) = match expected_and_desired(client, &pdb, ns, &pods).await {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("Failed to calculate the number of expected pods: {e}");
            let _ = state
                .recorder
                .record(
                    &pdb_ref,
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    &msg,
                )
                .await;
            fail_safe(&state, &pdb, &e).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    if !unmanaged.is_empty() {
        tracing::debug!(
            pdb = pdb.metadata.name.as_deref().unwrap_or_default(),
            pods = ?unmanaged,
            "pods without a scalable controller count one each"
        );
    }
    let now = Timestamp::now();
    let (disrupted, recheck) = build_disrupted_map(&pdb, &pods, now);
    let healthy = count_healthy(&pods, &disrupted);
    let allowed = (healthy - desired).max(0);
    let mut conditions = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if allowed > 0 {
        set_condition(
            &mut conditions,
            "True",
            "SufficientPods",
            "",
            pdb.metadata.generation,
        );
    } else {
        set_condition(
            &mut conditions,
            "False",
            "InsufficientPods",
            "",
            pdb.metadata.generation,
        );
    }
    let status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: Some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: Some(conditions),
    };
    write_status(client, &pdb, status).await?;
    let next = recheck
        .and_then(|t| {
            let secs = t.as_second() - now.as_second() + 1;
            u64::try_from(secs).ok().map(Duration::from_secs)
        })
        .map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(next))
}

fn error_policy(
    pdb: Arc<PodDisruptionBudget>,
    err: &ControllerError,
    _state: Arc<State>,
) -> Action {
    tracing::debug!(
        controller = "disruption",
        pdb = pdb.metadata.name.as_deref().unwrap_or_default(),
        error = %err,
        "sync failed"
    );
    Action::requeue(Duration::from_secs(1))
}

/// The budgets whose selector matches `pod`.
fn budgets_for(
    store: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace == pod.metadata.namespace)
        .filter(|b| matches!(selector_of(b), Ok(Some(sel)) if pod_matches(&sel, pod)))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: EventRecorder::new(client.clone(), "controllermanager"),
    });
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod| budgets_for(&store, &pod),
        )
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = "disruption", error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as ApiSelector, ObjectMeta,
    };
    use kube::api::{Patch, PatchParams};
    use tokio_util::sync::CancellationToken;

    #[test]
    fn scaled_values_round_percentages_up() {
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(scaled_value(&IntOrString::Int(2), 10, true), Ok(2));
        assert_eq!(scaled_value(&s("50%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&s("50%"), 3, false), Ok(1));
        assert_eq!(scaled_value(&s("34%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&s("100%"), 4, true), Ok(4));
        assert!(scaled_value(&s("half"), 4, true).is_err());
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), "web".to_string())])
    }

    fn pdb(name: &str, min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(ApiSelector {
                    match_labels: Some(labels()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, owner: Option<OwnerReference>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels()),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn set_ready(api: &Api<Pod>, name: &str, ready: bool) {
        let status = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    async fn wait_status(
        api: &Api<PodDisruptionBudget>,
        name: &str,
        check: impl Fn(&PodDisruptionBudgetStatus) -> bool,
    ) -> PodDisruptionBudgetStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let st = api.get(name).await.unwrap().status;
            if let Some(st) = st.filter(|s| check(s)) {
                return st;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}'s status: {:?}",
                    api.get(name).await.unwrap().status
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn condition(st: &PodDisruptionBudgetStatus) -> (String, String) {
        let c = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionAllowed")
            .expect("DisruptionAllowed condition");
        (c.status.clone(), c.reason.clone())
    }

    fn start(
        env: &mini_testenv::TestEnv,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), ControllerError>>,
    ) {
        let token = CancellationToken::new();
        let task = tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: Default::default(),
            shutdown: token.clone(),
        })));
        (token, task)
    }

    #[tokio::test]
    async fn pdb_min_available_two_of_three_ready_allows_one_then_zero() {
        let env = mini_testenv::TestEnv::start().await;
        let (token, task) = start(&env);
        let admin = env.admin_client();
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        for n in ["p1", "p2", "p3"] {
            pods.create(&PostParams::default(), &pod(n, None))
                .await
                .unwrap();
            set_ready(&pods, n, true).await;
        }
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), "default");
        pdbs.create(
            &PostParams::default(),
            &pdb("web", Some(IntOrString::Int(2)), None),
        )
        .await
        .unwrap();
        let st = wait_status(&pdbs, "web", |s| s.current_healthy == 3).await;
        assert_eq!(
            (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
            (3, 2, 1)
        );
        assert_eq!(condition(&st), ("True".into(), "SufficientPods".into()));
        assert!(st.observed_generation.is_some());

        set_ready(&pods, "p3", false).await;
        let st = wait_status(&pdbs, "web", |s| s.current_healthy == 2).await;
        assert_eq!(st.disruptions_allowed, 0);
        assert_eq!(condition(&st), ("False".into(), "InsufficientPods".into()));

        // an eviction recorded in disruptedPods keeps the pod out of the healthy count
        set_ready(&pods, "p3", true).await;
        wait_status(&pdbs, "web", |s| s.current_healthy == 3).await;
        let mut cur = pdbs.get_status("web").await.unwrap();
        cur.status.as_mut().unwrap().disrupted_pods =
            Some(BTreeMap::from([("p1".to_string(), Time(Timestamp::now()))]));
        pdbs.replace_status("web", &PostParams::default(), &cur)
            .await
            .unwrap();
        let st = wait_status(&pdbs, "web", |s| s.current_healthy == 2).await;
        assert_eq!(st.disruptions_allowed, 0);

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("controller stops")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn pdb_percentages_use_the_owning_controllers_scale() {
        let env = mini_testenv::TestEnv::start().await;
        let (token, task) = start(&env);
        let admin = env.admin_client();
        // a Deployment scaled to 4 owning a ReplicaSet owning 3 pods (one is still missing)
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels()),
                ..Default::default()
            }),
            spec: pod("t", None).spec,
        };
        let selector = ApiSelector {
            match_labels: Some(labels()),
            ..Default::default()
        };
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
        let d = deployments
            .create(
                &PostParams::default(),
                &Deployment {
                    metadata: ObjectMeta {
                        name: Some("web".into()),
                        ..Default::default()
                    },
                    spec: Some(DeploymentSpec {
                        replicas: Some(4),
                        selector: selector.clone(),
                        template: template.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
        let rs = rss
            .create(
                &PostParams::default(),
                &ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some("web-abc".into()),
                        owner_references: Some(vec![mini_runtime::owner::controller_ref(&d)]),
                        ..Default::default()
                    },
                    spec: Some(ReplicaSetSpec {
                        replicas: Some(4),
                        selector,
                        template: Some(template),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        for n in ["w1", "w2", "w3"] {
            pods.create(
                &PostParams::default(),
                &pod(n, Some(mini_runtime::owner::controller_ref(&rs))),
            )
            .await
            .unwrap();
            set_ready(&pods, n, true).await;
        }
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), "default");
        pdbs.create(
            &PostParams::default(),
            &pdb("half", Some(IntOrString::String("50%".into())), None),
        )
        .await
        .unwrap();
        pdbs.create(
            &PostParams::default(),
            &pdb("max", None, Some(IntOrString::String("25%".into()))),
        )
        .await
        .unwrap();
        let st = wait_status(&pdbs, "half", |s| s.current_healthy == 3).await;
        assert_eq!(
            (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
            (4, 2, 1)
        );
        let st = wait_status(&pdbs, "max", |s| s.current_healthy == 3).await;
        // 25% of 4 rounds up to 1 unavailable: 3 must be healthy
        assert_eq!(
            (st.expected_pods, st.desired_healthy, st.disruptions_allowed),
            (4, 3, 0)
        );

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("controller stops")
            .unwrap()
            .unwrap();
    }
}
