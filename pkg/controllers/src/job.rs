//! The job controller: runs a Job's pods until enough of them succeed (NonIndexed or Indexed
//! completion), or fails the Job on its backoff limit or active deadline; honours `suspend`,
//! `parallelism` and the retry back-off, and keeps `status` and the Complete/Failed (with the
//! interim SuccessCriteriaMet/FailureTarget) conditions as upstream does.
//!
//! Differences from upstream: no `batch.kubernetes.io/job-tracking` pod finalizer, so
//! `status.succeeded`/`failed` are derived from the pods that exist (and never decrease):
//! a terminated pod deleted before the controller saw it is not counted. Orphan pods matching
//! the selector are not adopted. Pod failure and success policies are not implemented.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::owner::{controller_ref, is_controlled_by};
use mini_runtime::pod::{is_active, is_ready, is_terminal};
use mini_runtime::{EventRecorder, EventType};

use crate::{Context, ControllerError};

pub(crate) const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
pub(crate) const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

const DEFAULT_BACKOFF_LIMIT: i32 = 6;
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

struct State {
    client: kube::Client,
    recorder: EventRecorder,
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let state = Arc::new(State {
        client: ctx.client.clone(),
        recorder: EventRecorder::new(ctx.client.clone(), "job-controller"),
    });
    let token = ctx.shutdown.clone();
    Controller::new(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(token.cancelled_owned())
    .run(reconcile, error_policy, state)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "job reconcile failed");
        }
    })
    .await;
    Ok(())
}

fn error_policy(job: Arc<Job>, err: &ControllerError, _: Arc<State>) -> Action {
    tracing::warn!(job = %job.name_any(), error = %err, "syncing job failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(job: Arc<Job>, st: Arc<State>) -> Result<Action, ControllerError> {
    sync(&job, &st, Timestamp::now()).await
}

/// Whether the Job has a `Complete` or `Failed` condition that is `True`.
pub(crate) fn is_finished(status: Option<&JobStatus>) -> bool {
    finished_condition(status).is_some()
}

/// The `Complete` or `Failed` condition that is `True`, if any.
pub(crate) fn finished_condition(status: Option<&JobStatus>) -> Option<&JobCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_true(status: &JobStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == "True")
}

/// Sets a condition, keeping its transition time when the status does not change.
fn set_condition(
    status: &mut JobStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conds.push(JobCondition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// Parses `status.completedIndexes` (`"1,3-5,7"`), keeping indexes below `completions`.
pub(crate) fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<i32>(), b.trim().parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            for i in a.max(0)..=b.min(completions - 1) {
                out.insert(i);
            }
        }
    }
    out
}

/// Formats indexes as `status.completedIndexes` does: sorted ranges, `"1,3-5,7"`.
pub(crate) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The retry delay before creating a replacement after `failures` consecutive failures:
/// 10 s doubling, capped at 6 min; zero without failures.
pub(crate) fn backoff_delay(failures: usize) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(16) as u32;
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

fn pod_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)
        .or_else(|| pod.labels().get(COMPLETION_INDEX))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// When the pod finished: the latest container termination, else its last condition change,
/// else its creation.
fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max();
    terminated
        .or_else(|| {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether `spec.manualSelector` is set: the pods then carry only the template's labels.
fn manual_selector(spec: &JobSpec) -> bool {
    spec.manual_selector == Some(true)
}

/// The Job's pods: those its selector matches (or, while the API server does not generate the
/// selector, those labelled with its uid) and that it controls.
async fn list_pods(api: &Api<Pod>, job: &Job, uid: &str) -> Result<Vec<Pod>, ControllerError> {
    let selector = job.spec.as_ref().and_then(|s| s.selector.as_ref());
    let pods = match selector {
        Some(sel) => {
            let sel = crate::label_selector(sel, &format!("job {}", job.name_any()))?;
            api.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|p| serde_json::to_value(p).is_ok_and(|v| sel.matches_object(&v)))
                .collect::<Vec<_>>()
        }
        None => {
            api.list(&ListParams::default().labels(&format!("{CONTROLLER_UID_LABEL}={uid}")))
                .await?
                .items
        }
    };
    Ok(pods
        .into_iter()
        .filter(|p| is_controlled_by(&p.metadata, uid))
        .collect())
}

/// The pod the Job creates, for `index` when its completion mode is Indexed.
pub(crate) fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let manual = manual_selector(&spec);
    let template = spec.template;
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.namespace = job.namespace();
    meta.generate_name = Some(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    if !manual {
        labels.insert(CONTROLLER_UID_LABEL.into(), uid.clone());
        labels.insert(LEGACY_CONTROLLER_UID_LABEL.into(), uid.clone());
        labels.insert(JOB_NAME_LABEL.into(), name.clone());
        labels.insert(LEGACY_JOB_NAME_LABEL.into(), name.clone());
    }
    let mut pod_spec = template.spec.unwrap_or_default();
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if pod_spec.hostname.is_none() {
            pod_spec.hostname = Some(format!("{name}-{i}"));
        }
    }
    meta.owner_references = Some(vec![controller_ref(job)]);
    meta.resource_version = None;
    meta.uid = None;
    Pod {
        metadata: meta,
        spec: Some(pod_spec),
        status: None,
    }
}

/// Deletion order for excess active pods: unscheduled, then not ready, then newest first.
fn deletion_rank(pod: &Pod) -> (bool, bool, std::cmp::Reverse<Option<Timestamp>>) {
    let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    (
        scheduled,
        is_ready(pod),
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

struct Sync<'a> {
    st: &'a State,
    job: &'a Job,
    pods: Api<Pod>,
}

impl Sync<'_> {
    async fn event(&self, type_: EventType, reason: &str, message: &str) {
        let r = self.job.object_ref(&());
        if let Err(e) = self.st.recorder.record(&r, type_, reason, message).await {
            tracing::debug!(error = %e, reason, "recording job event failed");
        }
    }

    /// Deletes pods; returns how many are gone at once (the rest wait for graceful termination).
    async fn delete_pods(&self, pods: &[&Pod]) -> Result<usize, ControllerError> {
        let mut gone = 0;
        for pod in pods {
            let name = pod.name_any();
            match self.pods.delete(&name, &DeleteParams::default()).await {
                Ok(either) => {
                    if either.is_right() {
                        gone += 1;
                    }
                    self.event(
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => gone += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(gone)
    }

    async fn create_pods(&self, indexes: &[Option<i32>]) -> Result<usize, ControllerError> {
        let mut created = 0;
        for index in indexes {
            let pod = new_pod(self.job, *index);
            match self.pods.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    created += 1;
                    self.event(
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    )
                    .await;
                }
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                    self.event(
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {}", e.message),
                    )
                    .await;
                    return Err(kube::Error::Api(e).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(created)
    }
}

async fn sync(job: &Job, st: &State, now: Timestamp) -> Result<Action, ControllerError> {
    if job.metadata.deletion_timestamp.is_some() || is_finished(job.status.as_ref()) {
        return Ok(Action::await_change());
    }
    let Some(uid) = job.uid() else {
        return Ok(Action::await_change());
    };
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let s = Sync {
        st,
        job,
        pods: Api::namespaced(st.client.clone(), &ns),
    };
    let pods = list_pods(&s.pods, job, &uid).await?;

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = match (spec.completions, spec.parallelism) {
        (Some(c), _) => Some(c.max(0)),
        (None, None) => Some(1),
        (None, Some(_)) if indexed => Some(1),
        (None, Some(_)) => None,
    };
    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);

    let mut active: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p))
        .count();
    let succeeded_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .collect();
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| phase(p) == Some("Failed")).collect();

    let mut completed = BTreeSet::new();
    let succeeded = if indexed {
        let c = completions.unwrap_or(1);
        completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""), c);
        for i in succeeded_pods
            .iter()
            .filter_map(|p| pod_index(p))
            .filter(|i| *i < c)
        {
            completed.insert(i);
        }
        completed.len() as i32
    } else {
        old.succeeded.unwrap_or(0).max(succeeded_pods.len() as i32)
    };
    let failed = old.failed.unwrap_or(0).max(failed_pods.len() as i32);

    let mut status = old.clone();
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed));
    }
    let mut requeue: Option<Duration> = None;

    let suspended = spec.suspend == Some(true);
    if suspended {
        let gone = s.delete_pods(&active).await?;
        let remaining = active.len() - gone;
        if !condition_true(&old, "Suspended") {
            set_condition(
                &mut status,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                now,
            );
            s.event(EventType::Normal, "Suspended", "Job suspended")
                .await;
        }
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some((terminating + remaining) as i32);
        write_status(&s, &old, &status).await?;
        return Ok(Action::await_change());
    }
    if condition_true(&old, "Suspended") {
        set_condition(
            &mut status,
            "Suspended",
            false,
            "JobResumed",
            "Job resumed",
            now,
        );
        status.start_time = Some(Time(now));
        s.event(EventType::Normal, "Resumed", "Job resumed").await;
    }
    let start = status.start_time.get_or_insert(Time(now)).0;

    // Failure: backoff limit or active deadline (or a FailureTarget set earlier).
    let mut failure: Option<(String, String)> = condition(&old, "FailureTarget")
        .filter(|c| c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    if failure.is_none() && failed > backoff_limit {
        failure = Some((
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into(),
        ));
    }
    if failure.is_none() {
        if let Some(ads) = spec.active_deadline_seconds {
            let deadline = start.as_second().saturating_add(ads);
            if now.as_second() >= deadline {
                failure = Some((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                let left =
                    Duration::from_millis(((deadline * 1000) - now.as_millisecond()).max(0) as u64);
                requeue = Some(left);
            }
        }
    }

    let success = !condition_true(&old, "FailureTarget")
        && (condition_true(&old, "SuccessCriteriaMet")
            || match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            });

    if let Some((reason, message)) = failure.filter(|_| !success) {
        let gone = s.delete_pods(&active).await?;
        let remaining = terminating + active.len() - gone;
        set_condition(&mut status, "FailureTarget", true, &reason, &message, now);
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(remaining as i32);
        if remaining == 0 {
            set_condition(&mut status, "Failed", true, &reason, &message, now);
            s.event(EventType::Warning, &reason, &message).await;
        }
        write_status(&s, &old, &status).await?;
        return Ok(if remaining == 0 {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(1))
        });
    }
    if success {
        let gone = s.delete_pods(&active).await?;
        let remaining = terminating + active.len() - gone;
        let message = "Reached expected number of succeeded pods";
        set_condition(
            &mut status,
            "SuccessCriteriaMet",
            true,
            "CompletionsReached",
            message,
            now,
        );
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating = Some(remaining as i32);
        if remaining == 0 {
            set_condition(
                &mut status,
                "Complete",
                true,
                "CompletionsReached",
                message,
                now,
            );
            status.completion_time = Some(Time(now));
            s.event(EventType::Normal, "Completed", "Job completed")
                .await;
        }
        write_status(&s, &old, &status).await?;
        return Ok(if remaining == 0 {
            Action::await_change()
        } else {
            Action::requeue(Duration::from_secs(1))
        });
    }

    // Manage the active pods.
    let mut to_delete: Vec<&Pod> = Vec::new();
    let mut to_create: Vec<Option<i32>> = Vec::new();
    if indexed {
        let c = completions.unwrap_or(1);
        let mut seen = BTreeSet::new();
        let mut keep = Vec::new();
        for p in active.iter().copied() {
            match pod_index(p) {
                Some(i) if i < c && !completed.contains(&i) && seen.insert(i) => keep.push(p),
                _ => to_delete.push(p),
            }
        }
        let want = parallelism.min(c - completed.len() as i32).max(0) as usize;
        if keep.len() > want {
            keep.sort_by_key(|p| std::cmp::Reverse(pod_index(p)));
            to_delete.extend(keep.drain(..keep.len() - want));
        }
        let pending = (0..c).filter(|i| !completed.contains(i) && !seen.contains(i));
        to_create = pending.take(want - keep.len()).map(Some).collect();
    } else {
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded),
            None if succeeded > 0 => active.len() as i32,
            None => parallelism,
        }
        .max(0) as usize;
        if active.len() > want {
            let mut sorted = active.clone();
            sorted.sort_by_key(|p| deletion_rank(p));
            to_delete.extend(sorted.into_iter().take(active.len() - want));
        } else {
            to_create = vec![None; want - active.len()];
        }
    }

    if !to_create.is_empty() {
        // Retry back-off: consecutive failures since the last success.
        let last_success = succeeded_pods.iter().filter_map(|p| finish_time(p)).max();
        let recent: Vec<Timestamp> = failed_pods
            .iter()
            .filter_map(|p| finish_time(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        if let Some(last) = recent.iter().max() {
            let delay = backoff_delay(recent.len());
            let ready_at = last.as_millisecond() + delay.as_millis() as i64;
            if now.as_millisecond() < ready_at {
                let wait = Duration::from_millis((ready_at - now.as_millisecond()) as u64);
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                to_create.clear();
            }
        }
    }

    let gone = s.delete_pods(&to_delete).await?;
    let deleted: BTreeSet<String> = to_delete.iter().map(|p| p.name_any()).collect();
    active.retain(|p| !deleted.contains(&p.name_any()));
    let created = s.create_pods(&to_create).await?;

    status.active = Some((active.len() + created) as i32);
    status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
    status.terminating = Some((terminating + to_delete.len() - gone) as i32);
    write_status(&s, &old, &status).await?;
    Ok(match requeue {
        Some(d) => Action::requeue(d.max(Duration::from_millis(100))),
        None => Action::await_change(),
    })
}

async fn write_status(
    s: &Sync<'_>,
    old: &JobStatus,
    status: &JobStatus,
) -> Result<(), ControllerError> {
    if old == status {
        return Ok(());
    }
    let api: Api<Job> =
        Api::namespaced(s.st.client.clone(), &s.job.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &s.job.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use mini_testenv::TestEnv;
    use tokio_util::sync::CancellationToken;

    async fn start() -> (TestEnv, CancellationToken) {
        let env = TestEnv::start().await;
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        });
        tokio::spawn(run(ctx));
        (env, token)
    }

    async fn create_job(env: &TestEnv, name: &str, spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = serde_json::json!({
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        });
        let job: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("job json");
        Api::<Job>::namespaced(env.admin_client(), "default")
            .create(&PostParams::default(), &job)
            .await
            .expect("creating the job")
    }

    async fn pods_of(env: &TestEnv, job: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(env.admin_client(), "default")
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
            .await
            .expect("listing pods")
            .items
    }

    async fn active_pods(env: &TestEnv, job: &str) -> Vec<Pod> {
        pods_of(env, job)
            .await
            .into_iter()
            .filter(is_active)
            .collect()
    }

    /// Polls `f` every 100 ms for up to `secs` seconds.
    async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
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

    /// Plays the kubelet: the pod ends in `phase` with its container's exit code.
    async fn finish(env: &TestEnv, pod: &Pod, phase: &str) {
        let code = if phase == "Succeeded" { 0 } else { 1 };
        let patch = serde_json::json!({"status": {
            "phase": phase,
            "containerStatuses": [{
                "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "finishedAt": Timestamp::now().to_string()}}
            }]
        }});
        Api::<Pod>::namespaced(env.admin_client(), "default")
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("patching pod status");
    }

    async fn get_job(env: &TestEnv, name: &str) -> Job {
        Api::<Job>::namespaced(env.admin_client(), "default")
            .get(name)
            .await
            .expect("getting the job")
    }

    async fn wait_condition(env: &TestEnv, name: &str, type_: &str) -> Job {
        eventually(15, &format!("condition {type_}"), || async {
            let job = get_job(env, name).await;
            job.status
                .as_ref()
                .is_some_and(|s| condition_true(s, type_))
                .then_some(job)
        })
        .await
    }

    #[test]
    fn backoff_delay_doubles_from_ten_seconds_and_caps_at_six_minutes() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(2), Duration::from_secs(20));
        assert_eq!(backoff_delay(4), Duration::from_secs(80));
        assert_eq!(backoff_delay(6), Duration::from_secs(320));
        assert_eq!(backoff_delay(7), Duration::from_secs(360));
        assert_eq!(backoff_delay(100), Duration::from_secs(360));
    }

    #[test]
    fn completed_indexes_round_trip_as_sorted_ranges() {
        let set = parse_indexes("0,2-4, 7,9-9", 10);
        assert_eq!(
            set.iter().copied().collect::<Vec<_>>(),
            vec![0, 2, 3, 4, 7, 9]
        );
        assert_eq!(format_indexes(&set), "0,2-4,7,9");
        assert_eq!(format_indexes(&parse_indexes("3-20", 5)), "3-4");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn new_pod_without_selector_carries_uid_labels_and_index() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "idx", "namespace": "ns", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}}}
        }))
        .expect("job json");
        let pod = new_pod(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("idx-2-"));
        let labels = pod.labels();
        assert_eq!(
            labels.get(CONTROLLER_UID_LABEL).map(String::as_str),
            Some("u-1")
        );
        assert_eq!(
            labels.get("controller-uid").map(String::as_str),
            Some("u-1")
        );
        assert_eq!(labels.get(JOB_NAME_LABEL).map(String::as_str), Some("idx"));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("idx"));
        assert_eq!(labels.get("app").map(String::as_str), Some("x"));
        assert_eq!(
            pod.annotations().get(COMPLETION_INDEX).map(String::as_str),
            Some("2")
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.hostname.as_deref()),
            Some("idx-2")
        );
        assert!(is_controlled_by(&pod.metadata, "u-1"));
    }

    #[tokio::test]
    async fn job_completions_three_parallelism_two_completes_after_three_successes() {
        let (env, token) = start().await;
        create_job(
            &env,
            "pi",
            serde_json::json!({"completions": 3, "parallelism": 2}),
        )
        .await;
        let first = eventually(15, "two active pods", || async {
            let pods = active_pods(&env, "pi").await;
            (pods.len() == 2).then_some(pods)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            active_pods(&env, "pi").await.len(),
            2,
            "never more than parallelism"
        );
        for p in &first {
            finish(&env, p, "Succeeded").await;
        }
        // Only one completion remains: exactly one more pod.
        let last = eventually(15, "the third pod", || async {
            let pods = active_pods(&env, "pi").await;
            (pods.len() == 1).then_some(pods)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            active_pods(&env, "pi").await.len(),
            1,
            "never more than remaining completions"
        );
        finish(&env, &last[0], "Succeeded").await;
        let job = wait_condition(&env, "pi", "Complete").await;
        let status = job.status.expect("status");
        assert_eq!(status.succeeded, Some(3));
        assert_eq!(status.active, Some(0));
        assert!(status.completion_time.is_some() && status.start_time.is_some());
        assert!(condition_true(&status, "SuccessCriteriaMet"));
        assert_eq!(pods_of(&env, "pi").await.len(), 3);
        token.cancel();
    }

    #[tokio::test]
    async fn job_backoff_limit_exceeded_fails_and_deletes_active_pods() {
        let (env, token) = start().await;
        create_job(
            &env,
            "bad",
            serde_json::json!({"completions": 2, "parallelism": 2, "backoffLimit": 0}),
        )
        .await;
        let pods = eventually(15, "two active pods", || async {
            let pods = active_pods(&env, "bad").await;
            (pods.len() == 2).then_some(pods)
        })
        .await;
        finish(&env, &pods[0], "Failed").await;
        let job = wait_condition(&env, "bad", "Failed").await;
        let status = job.status.expect("status");
        let failed = condition(&status, "Failed").expect("failed condition");
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert!(condition_true(&status, "FailureTarget"));
        assert_eq!(status.failed, Some(1));
        assert!(status.completion_time.is_none());
        assert!(
            active_pods(&env, "bad").await.is_empty(),
            "the other pod is deleted"
        );
        token.cancel();
    }

    #[tokio::test]
    async fn job_active_deadline_fails_with_deadline_exceeded() {
        let (env, token) = start().await;
        create_job(
            &env,
            "slow",
            serde_json::json!({"activeDeadlineSeconds": 1}),
        )
        .await;
        let job = wait_condition(&env, "slow", "Failed").await;
        let failed = condition(job.status.as_ref().expect("status"), "Failed")
            .cloned()
            .expect("condition");
        assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
        assert!(active_pods(&env, "slow").await.is_empty());
        token.cancel();
    }

    #[tokio::test]
    async fn job_suspend_deletes_active_pods_and_sets_suspended() {
        let (env, token) = start().await;
        create_job(
            &env,
            "sus",
            serde_json::json!({"parallelism": 2, "completions": 4}),
        )
        .await;
        eventually(15, "two active pods", || async {
            (active_pods(&env, "sus").await.len() == 2).then_some(())
        })
        .await;
        Api::<Job>::namespaced(env.admin_client(), "default")
            .patch(
                "sus",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
            )
            .await
            .expect("suspending");
        let job = wait_condition(&env, "sus", "Suspended").await;
        eventually(15, "pods deleted", || async {
            active_pods(&env, "sus").await.is_empty().then_some(())
        })
        .await;
        assert_eq!(job.status.and_then(|s| s.active), Some(0));
        // Resuming starts pods again.
        Api::<Job>::namespaced(env.admin_client(), "default")
            .patch(
                "sus",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
            )
            .await
            .expect("resuming");
        eventually(15, "pods again", || async {
            (active_pods(&env, "sus").await.len() == 2).then_some(())
        })
        .await;
        let job = get_job(&env, "sus").await;
        assert!(!condition_true(
            job.status.as_ref().expect("status"),
            "Suspended"
        ));
        token.cancel();
    }

    #[tokio::test]
    async fn job_indexed_tracks_completed_indexes() {
        let (env, token) = start().await;
        create_job(
            &env,
            "idx",
            serde_json::json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        )
        .await;
        let pods = eventually(15, "three indexed pods", || async {
            let pods = active_pods(&env, "idx").await;
            (pods.len() == 3).then_some(pods)
        })
        .await;
        let mut indexes: Vec<i32> = pods.iter().filter_map(pod_index).collect();
        indexes.sort();
        assert_eq!(indexes, vec![0, 1, 2]);
        let by_index = |i: i32| {
            pods.iter()
                .find(|p| pod_index(p) == Some(i))
                .cloned()
                .expect("pod")
        };
        finish(&env, &by_index(1), "Succeeded").await;
        eventually(15, "completedIndexes 1", || async {
            let job = get_job(&env, "idx").await;
            (job.status.and_then(|s| s.completed_indexes).as_deref() == Some("1")).then_some(())
        })
        .await;
        finish(&env, &by_index(0), "Succeeded").await;
        finish(&env, &by_index(2), "Succeeded").await;
        let job = wait_condition(&env, "idx", "Complete").await;
        let status = job.status.expect("status");
        assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
        assert_eq!(status.succeeded, Some(3));
        token.cancel();
    }
}
