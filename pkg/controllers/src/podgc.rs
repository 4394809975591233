//! The pod garbage collector: deletes the oldest terminated pods beyond
//! `terminated_pod_gc_threshold`, force-deletes pods bound to nodes that no longer exist
//! (marking running ones Failed with a `DisruptionTarget` condition first), and force-deletes
//! unscheduled pods that are terminating. Runs every 20 s and soon after pod or node changes.
//!
//! Difference from upstream: terminating pods on out-of-service tainted NotReady nodes are not
//! force-deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use mini_runtime::pod::is_terminal;
use tokio::time::Instant;

use crate::{Context, ControllerError};

/// How often a full pass runs without any change seen.
const PERIOD: Duration = Duration::from_secs(20);
/// Passes are at least this far apart however often things change.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let pods = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|_| ());
    let nodes = watcher(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|_| ());
    let mut changes = std::pin::pin!(futures::stream::select(pods, nodes));
    let mut last: Option<Instant> = None;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            change = changes.next() => {
                if change.is_none() {
                    return Err(ControllerError::Other("pod and node watches ended".into()));
                }
                let soonest = last.map_or_else(Instant::now, |l| l + MIN_INTERVAL);
                next = next.min(soonest.max(Instant::now()));
            }
            _ = tokio::time::sleep_until(next) => {
                if let Err(e) = gc(&ctx).await {
                    tracing::warn!(error = %e, "pod gc pass failed");
                }
                let now = Instant::now();
                last = Some(now);
                next = now + PERIOD;
            }
        }
    }
}

/// The terminated pods to delete so that at most `threshold` remain: the oldest first.
/// A threshold of 0 disables this.
pub(crate) fn terminated_to_delete(pods: &[Pod], threshold: usize) -> Vec<&Pod> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&Pod> = pods
        .iter()
        .filter(|p| is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    let excess = terminated.len() - threshold;
    terminated.truncate(excess);
    terminated
}

async fn force_delete(client: &kube::Client, pod: &Pod) -> Result<(), ControllerError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Marks a pod of a deleted node Failed with a `DisruptionTarget` condition (as upstream does
/// before deleting it), unless it has finished already.
async fn mark_failed(client: &kube::Client, pod: &Pod) -> Result<(), ControllerError> {
    if is_terminal(pod) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let now = jiff::Timestamp::now().to_string();
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "DisruptionTarget")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByPodGC",
        "message": "PodGC: node no longer exists",
        "lastTransitionTime": now,
    }));
    let patch = serde_json::json!({ "status": { "phase": "Failed", "conditions": conditions } });
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One pass over all pods.
async fn gc(ctx: &Context) -> Result<(), ControllerError> {
    let client = &ctx.client;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let nodes: BTreeSet<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();

    for pod in terminated_to_delete(&pods, ctx.config.terminated_pod_gc_threshold) {
        tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "deleting terminated pod");
        force_delete(client, pod).await?;
    }

    // Pods bound to nodes missing from the list: confirm each node is really gone first.
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in &pods {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            if !node.is_empty() && !nodes.contains(node) {
                by_node.entry(node).or_default().push(pod);
            }
        }
    }
    let node_api = Api::<Node>::all(client.clone());
    for (node, orphans) in by_node {
        if node_api.get_opt(node).await?.is_some() {
            continue;
        }
        for pod in orphans {
            tracing::info!(pod = %pod.name_any(), node, "deleting pod of a node that no longer exists");
            mark_failed(client, pod).await?;
            force_delete(client, pod).await?;
        }
    }

    // Terminating pods no kubelet will ever finish.
    for pod in &pods {
        let unscheduled = pod
            .spec
            .as_ref()
            .is_none_or(|s| s.node_name.as_deref().unwrap_or("").is_empty());
        if unscheduled && pod.metadata.deletion_timestamp.is_some() {
            tracing::info!(pod = %pod.name_any(), "force-deleting unscheduled terminating pod");
            force_delete(client, pod).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use kube::api::PostParams;
    use mini_testenv::TestEnv;
    use tokio_util::sync::CancellationToken;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod json")
    }

    async fn names(api: &Api<Pod>) -> Vec<String> {
        let mut n: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn terminated_to_delete_takes_oldest_over_threshold() {
        let mk = |name: &str, created: &str, phase: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase}
            }))
            .expect("pod")
        };
        let pods = vec![
            mk("c", "2024-01-03T00:00:00Z", "Succeeded"),
            mk("a", "2024-01-01T00:00:00Z", "Failed"),
            mk("r", "2023-01-01T00:00:00Z", "Running"),
            mk("b", "2024-01-02T00:00:00Z", "Succeeded"),
        ];
        let del: Vec<String> = terminated_to_delete(&pods, 1)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(del, vec!["a", "b"]);
        assert!(terminated_to_delete(&pods, 3).is_empty());
        assert!(terminated_to_delete(&pods, 0).is_empty());
    }

    #[tokio::test]
    async fn podgc_deletes_oldest_terminated_over_threshold_and_orphans_of_deleted_node() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let api: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}
        }))
        .expect("node json");
        Api::<Node>::all(admin.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        for i in 0..4 {
            api.create(
                &PostParams::default(),
                &pod(&format!("done-{i}"), Some("n1")),
            )
            .await
            .expect("pod");
            let patch = serde_json::json!({"status": {"phase": "Succeeded"}});
            api.patch_status(
                &format!("done-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("status");
            // Distinct creation seconds make "oldest" well defined.
            if i < 3 {
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        }
        api.create(&PostParams::default(), &pod("orphan", Some("gone")))
            .await
            .expect("pod");
        api.create(&PostParams::default(), &pod("running", Some("n1")))
            .await
            .expect("pod");

        let token = CancellationToken::new();
        let config = ControllerConfig {
            terminated_pod_gc_threshold: 2,
            ..Default::default()
        };
        tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config,
            shutdown: token.clone(),
        })));
        let want = vec!["done-2", "done-3", "running"];
        let start = Instant::now();
        loop {
            let got = names(&api).await;
            if got == want {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "pods left: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        token.cancel();
    }
}
