//! The TTL-after-finished controller: deletes a finished Job (Complete or Failed) with
//! `spec.ttlSecondsAfterFinished` that long after it finished, with background propagation so
//! the garbage collector removes its pods.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::job::finished_condition;
use crate::{Context, ControllerError};

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    Controller::new(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
    .run(reconcile, error_policy, Arc::new(ctx.client.clone()))
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "ttl reconcile failed");
        }
    })
    .await;
    Ok(())
}

fn error_policy(job: Arc<Job>, err: &ControllerError, _: Arc<kube::Client>) -> Action {
    tracing::warn!(job = %job.name_any(), error = %err, "ttl-after-finished failed");
    Action::requeue(Duration::from_secs(5))
}

/// When the Job expires: its finish time plus its TTL; `None` if it has no TTL or is running.
pub(crate) fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let cond = finished_condition(job.status.as_ref())?;
    let finished = cond
        .last_transition_time
        .as_ref()
        .or(job.status.as_ref()?.completion_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    Timestamp::from_millisecond(
        finished
            .as_millisecond()
            .saturating_add(i64::from(ttl) * 1000),
    )
    .ok()
}

async fn reconcile(job: Arc<Job>, client: Arc<kube::Client>) -> Result<Action, ControllerError> {
    let Some(expiry) = expires_at(&job) else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    if now < expiry {
        let wait = (expiry.as_millisecond() - now.as_millisecond()).max(0) as u64;
        return Ok(Action::requeue(Duration::from_millis(wait + 50)));
    }
    // Check a fresh copy: the TTL may have been changed since the cache saw it.
    let api: Api<Job> = Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
    let fresh = match api.get_opt(&job.name_any()).await? {
        Some(j) if j.uid() == job.uid() => j,
        _ => return Ok(Action::await_change()),
    };
    match expires_at(&fresh) {
        Some(e) if e <= now => {}
        Some(_) => return Ok(Action::requeue(Duration::from_secs(1))),
        None => return Ok(Action::await_change()),
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: fresh.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&fresh.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(job = %fresh.name_any(), "deleted finished job after its ttl");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::requeue(Duration::from_secs(1))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use kube::api::{Patch, PatchParams, PostParams};
    use mini_testenv::TestEnv;
    use tokio_util::sync::CancellationToken;

    fn job(name: &str, ttl: Option<i32>) -> Job {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "suspend": true,
                "ttlSecondsAfterFinished": ttl,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
            }
        }))
        .expect("job json")
    }

    async fn finish(api: &Api<Job>, name: &str) {
        let now = Timestamp::now().to_string();
        let patch = serde_json::json!({"status": {
            "startTime": now, "completionTime": now,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("finishing the job");
    }

    #[test]
    fn expiry_is_finish_time_plus_ttl_and_none_while_running() {
        let mut j = job("a", Some(30));
        assert_eq!(expires_at(&j), None);
        j.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2024-05-01T10:00:00Z"}]
        }))
        .expect("status");
        assert_eq!(
            expires_at(&j),
            Some("2024-05-01T10:00:30Z".parse().expect("ts"))
        );
        assert_eq!(expires_at(&job("b", None)), None);
    }

    #[tokio::test]
    async fn ttl_deletes_finished_job_after_one_second() {
        let env = TestEnv::start().await;
        let token = CancellationToken::new();
        tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        })));
        let api: Api<Job> = Api::namespaced(env.admin_client(), "default");
        for (name, ttl) in [("short", Some(1)), ("forever", None)] {
            api.create(&PostParams::default(), &job(name, ttl))
                .await
                .expect("create");
            finish(&api, name).await;
        }
        let finished = tokio::time::Instant::now();
        loop {
            if api.get_opt("short").await.expect("get").is_none() {
                break;
            }
            assert!(
                finished.elapsed() < Duration::from_secs(10),
                "job not deleted after its ttl"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            finished.elapsed() >= Duration::from_millis(900),
            "deleted before its ttl"
        );
        assert!(api.get_opt("forever").await.expect("get").is_some());
        token.cancel();
    }
}
