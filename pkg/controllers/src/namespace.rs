//! The namespace controller (upstream `pkg/controller/namespace`): empties terminating
//! namespaces through the API — `deletecollection` (or list + delete) on every namespaced
//! resource discovery finds — reports progress in the namespace's status conditions, and once
//! nothing is left removes the `kubernetes` finalizer through `namespaces/<n>/finalize`, after
//! which the API server deletes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::{json, Value};

use crate::garbagecollector::WorkQueue;
use crate::{Context, ControllerError};

/// The finalizer the namespace controller owns in `spec.finalizers`.
const FINALIZER: &str = "kubernetes";

/// The condition types the controller maintains, in upstream's order, with the reason and
/// message each has when nothing is wrong.
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
];

/// Where a terminating namespace stands after one reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing (more) to do: finalized, gone, or not terminating.
    Done,
    /// Content remains or a step failed; try again later.
    Waiting(String),
}

/// What one pass of deleting the content found.
#[derive(Default)]
struct Content {
    discovery_error: Option<String>,
    delete_errors: Vec<String>,
    /// "resource.group" -> objects left
    remaining: BTreeMap<String, usize>,
    /// finalizer -> objects left carrying it
    finalizers: BTreeMap<String, usize>,
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Deletes every object of the namespaced resource `ar` in `namespace`, then counts what is
/// left (objects still finalizing, pods terminating gracefully).
async fn delete_resource(
    client: &kube::Client,
    namespace: &str,
    ar: &ApiResource,
    collection: bool,
    content: &mut Content,
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let label = format!("{}.{}", ar.plural, ar.group);
    let mut listed_delete = !collection;
    if collection {
        match api
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(status_code(&e), Some(404 | 405)) => listed_delete = true,
            Err(e) => return Err(format!("{label}: {e}")),
        }
    }
    if listed_delete {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        for obj in list.items {
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = obj.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(format!("{label}: {e}")),
            }
        }
    }
    let left = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("{label}: {e}"))?;
    if !left.items.is_empty() {
        content.remaining.insert(label, left.items.len());
        for obj in &left.items {
            for f in obj.metadata.finalizers.iter().flatten() {
                *content.finalizers.entry(f.clone()).or_default() += 1;
            }
        }
    }
    Ok(())
}

/// Deletes all content of `namespace` once.
async fn delete_content(client: &kube::Client, namespace: &str) -> Content {
    let mut content = Content::default();
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(d) => d,
        Err(e) => {
            content.discovery_error = Some(format!("discovery failed: {e}"));
            return content;
        }
    };
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let collection = caps.supports_operation(verbs::DELETE_COLLECTION);
            if !collection && !caps.supports_operation(verbs::DELETE) {
                continue;
            }
            if let Err(e) = delete_resource(client, namespace, &ar, collection, &mut content).await
            {
                content.delete_errors.push(e);
            }
        }
    }
    content
}

/// The conditions upstream's namespace deleter reports for `content`.
fn desired_conditions(content: &Content) -> Vec<(&'static str, bool, String, String)> {
    CONDITIONS
        .iter()
        .map(|(ty, ok_reason, ok_message)| {
            let failure = match *ty {
                "NamespaceDeletionDiscoveryFailure" => content
                    .discovery_error
                    .clone()
                    .map(|m| ("DiscoveryFailed".to_string(), m)),
                "NamespaceDeletionContentFailure" if !content.delete_errors.is_empty() => {
                    let mut errs = content.delete_errors.clone();
                    errs.sort();
                    Some((
                        "ContentDeletionFailed".to_string(),
                        format!(
                            "Failed to delete all resource types, {} remaining: {}",
                            errs.len(),
                            errs.join(", ")
                        ),
                    ))
                }
                "NamespaceContentRemaining" if !content.remaining.is_empty() => {
                    let parts: Vec<String> = content
                        .remaining
                        .iter()
                        .map(|(r, n)| format!("{r} has {n} resource instances"))
                        .collect();
                    Some((
                        "SomeResourcesRemain".to_string(),
                        format!("Some resources are remaining: {}", parts.join(", ")),
                    ))
                }
                "NamespaceFinalizersRemaining" if !content.finalizers.is_empty() => {
                    let parts: Vec<String> = content
                        .finalizers
                        .iter()
                        .map(|(f, n)| format!("{f} in {n} resource instances"))
                        .collect();
                    Some((
                        "SomeFinalizerRemain".to_string(),
                        format!("Some finalizers are remaining: {}", parts.join(", ")),
                    ))
                }
                _ => None,
            };
            match failure {
                Some((reason, message)) => (*ty, true, reason, message),
                None => (*ty, false, ok_reason.to_string(), ok_message.to_string()),
            }
        })
        .collect()
}

/// `current` with the controller's conditions set to `desired`; `None` when nothing changes.
/// lastTransitionTime moves only when a condition's status does.
fn merge_conditions(
    current: &[Value],
    desired: &[(&'static str, bool, String, String)],
) -> Option<Vec<Value>> {
    let mut out: Vec<Value> = current.to_vec();
    let mut changed = false;
    for (ty, failing, reason, message) in desired {
        let status = if *failing { "True" } else { "False" };
        match out.iter_mut().find(|c| c["type"] == *ty) {
            None => {
                out.push(json!({"type": ty, "status": status, "reason": reason,
                                "message": message, "lastTransitionTime": now()}));
                changed = true;
            }
            Some(c) => {
                if c["status"] != status || c["reason"] != *reason || c["message"] != *message {
                    if c["status"] != status {
                        c["lastTransitionTime"] = json!(now());
                    }
                    c["status"] = json!(status);
                    c["reason"] = json!(reason);
                    c["message"] = json!(message);
                    changed = true;
                }
            }
        }
    }
    changed.then_some(out)
}

/// One pass over the namespace `name`: deletes its content, records the conditions and, once
/// it is empty, removes the `kubernetes` finalizer.
pub(crate) async fn reconcile(
    client: &kube::Client,
    name: &str,
) -> Result<Progress, ControllerError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Progress::Done);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Progress::Done);
    }
    let has_finalizer = |ns: &Namespace| {
        ns.spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
    };
    if !has_finalizer(&ns) {
        return Ok(Progress::Done);
    }
    let content = delete_content(client, name).await;
    let desired = desired_conditions(&content);
    let current: Vec<Value> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .collect()
        })
        .unwrap_or_default();
    let changed = merge_conditions(&current, &desired);
    if let Some(conditions) = changed {
        let patch = json!({"status": {"conditions": conditions}});
        match namespaces
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Ok(Progress::Done),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = content.discovery_error {
        return Ok(Progress::Waiting(e));
    }
    if !content.delete_errors.is_empty() {
        return Ok(Progress::Waiting(content.delete_errors.join(", ")));
    }
    if !content.remaining.is_empty() {
        let left: Vec<String> = content.remaining.keys().cloned().collect();
        return Ok(Progress::Waiting(format!(
            "content remaining: {}",
            left.join(", ")
        )));
    }
    // empty: hand the namespace back to the API server without our finalizer
    let Some(mut ns) = namespaces.get_opt(name).await? else {
        return Ok(Progress::Done);
    };
    if !has_finalizer(&ns) {
        return Ok(Progress::Done);
    }
    if let Some(spec) = ns.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|x| x != FINALIZER);
        }
    }
    match namespaces
        .replace_subresource("finalize", name, &PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(Progress::Done),
        Err(e) if status_code(&e) == Some(404) => Ok(Progress::Done),
        Err(e) if status_code(&e) == Some(409) => {
            Ok(Progress::Waiting("conflict finalizing".into()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let queue: Arc<WorkQueue<String>> =
        WorkQueue::new(Duration::from_millis(500), Duration::from_secs(5));
    let worker = {
        let queue = queue.clone();
        let client = ctx.client.clone();
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            while let Some(name) = queue.next(&shutdown).await {
                match reconcile(&client, &name).await {
                    Ok(Progress::Done) => queue.forget(&name),
                    Ok(Progress::Waiting(why)) => {
                        tracing::debug!(namespace = name, why, "namespace not empty yet");
                        queue.add_rate_limited(name.clone());
                    }
                    Err(e) => {
                        tracing::warn!(namespace = name, error = %e, "namespace deletion failed");
                        queue.add_rate_limited(name.clone());
                    }
                }
                queue.done(&name);
            }
        })
    };
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let ev = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            ev = stream.next() => ev,
        };
        match ev {
            Some(Ok(Event::Apply(ns))) | Some(Ok(Event::InitApply(ns))) => {
                if ns.metadata.deletion_timestamp.is_some() {
                    if let Some(name) = ns.metadata.name {
                        queue.add(name);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "namespace watch failed"),
            None => break,
        }
    }
    worker.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use k8s_openapi::api::core::v1::ConfigMap;
    use mini_testenv::TestEnv;
    use std::future::Future;
    use tokio_util::sync::CancellationToken;

    /// Keeps a namespace in the store after its spec finalizer is gone, so the tests can see
    /// what the controller did (and the API server's own cleanup can't remove it first).
    const HOLD: &str = "example.com/ns-hold";

    async fn eventually<F, Fut>(what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if f().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_ns(api: &Api<Namespace>, name: &str, finalizers: &[&str]) {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "finalizers": finalizers}}))
                .expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("creating namespace");
    }

    async fn create_cm(api: &Api<ConfigMap>, name: &str, finalizers: &[&str]) {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "finalizers": finalizers}}))
                .expect("configmap");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("creating configmap");
    }

    fn spec_finalizers(ns: &Namespace) -> Vec<String> {
        ns.spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default()
    }

    fn condition(ns: &Namespace, ty: &str) -> Option<(String, String, String)> {
        ns.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == ty)
            .map(|c| {
                (
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    }

    async fn drop_metadata_finalizers<K>(api: &Api<K>, name: &str)
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let patch = json!({"metadata": {"finalizers": null}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("removing finalizers");
    }

    #[tokio::test]
    async fn namespace_with_finalizing_content_stays_terminating_with_conditions_until_content_gone_then_finalized(
    ) {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let nss: Api<Namespace> = Api::all(admin.clone());
        create_ns(&nss, "doomed", &[HOLD]).await;
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "doomed");
        create_cm(&cms, "held", &["example.com/hold"]).await;
        create_cm(&cms, "plain", &[]).await;
        let token = CancellationToken::new();
        tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        })));
        nss.delete("doomed", &DeleteParams::default())
            .await
            .expect("deleting namespace");
        eventually("content-remaining conditions", || async {
            let ns = nss.get("doomed").await.expect("namespace terminating");
            let content = condition(&ns, "NamespaceContentRemaining");
            let fins = condition(&ns, "NamespaceFinalizersRemaining");
            content.is_some_and(|(s, r, m)| {
                s == "True" && r == "SomeResourcesRemain" && m.contains("configmaps. has 1")
            }) && fins.is_some_and(|(s, _, m)| {
                s == "True" && m.contains("example.com/hold in 1 resource instances")
            })
        })
        .await;
        let ns = nss.get("doomed").await.expect("namespace");
        assert_eq!(spec_finalizers(&ns), vec![FINALIZER.to_string()]);
        assert_eq!(
            ns.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Terminating")
        );
        assert_eq!(
            condition(&ns, "NamespaceDeletionDiscoveryFailure").map(|c| c.0),
            Some("False".to_string())
        );
        let held = cms.get("held").await.expect("held configmap stays");
        assert!(held.metadata.deletion_timestamp.is_some());
        assert!(cms.get_opt("plain").await.expect("get").is_none());
        // let the finalizing content go: the controller finalizes the namespace
        drop_metadata_finalizers(&cms, "held").await;
        eventually("kubernetes finalizer removed", || async {
            let ns = nss.get("doomed").await.expect("held by the test finalizer");
            spec_finalizers(&ns).is_empty()
                && condition(&ns, "NamespaceContentRemaining")
                    .is_some_and(|(s, r, _)| s == "False" && r == "ContentRemoved")
        })
        .await;
        drop_metadata_finalizers(&nss, "doomed").await;
        eventually("namespace gone", || async {
            nss.get_opt("doomed").await.expect("get").is_none()
        })
        .await;
        token.cancel();
    }

    #[tokio::test]
    async fn reconcile_empty_terminating_namespace_finalizes_and_namespace_disappears() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let nss: Api<Namespace> = Api::all(admin.clone());
        create_ns(&nss, "empty", &[]).await;
        create_ns(&nss, "alive", &[]).await;
        nss.delete("empty", &DeleteParams::default())
            .await
            .expect("deleting namespace");
        let client = env.controllers_client();
        assert_eq!(
            reconcile(&client, "empty").await.expect("reconcile"),
            Progress::Done
        );
        eventually("namespace gone", || async {
            nss.get_opt("empty").await.expect("get").is_none()
        })
        .await;
        // a namespace that isn't terminating is left alone
        assert_eq!(
            reconcile(&client, "alive").await.expect("reconcile"),
            Progress::Done
        );
        let alive = nss.get("alive").await.expect("alive stays");
        assert_eq!(spec_finalizers(&alive), vec![FINALIZER.to_string()]);
        assert!(alive.metadata.deletion_timestamp.is_none());
    }

    #[tokio::test]
    async fn reconcile_namespace_with_held_content_keeps_finalizer_and_namespace() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let nss: Api<Namespace> = Api::all(admin.clone());
        create_ns(&nss, "busy", &[]).await;
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "busy");
        create_cm(&cms, "held", &["example.com/hold"]).await;
        create_cm(&cms, "plain", &[]).await;
        nss.delete("busy", &DeleteParams::default())
            .await
            .expect("deleting namespace");
        let client = env.controllers_client();
        let progress = reconcile(&client, "busy").await.expect("reconcile");
        assert!(
            matches!(&progress, Progress::Waiting(why) if why.contains("configmaps")),
            "{progress:?}"
        );
        let ns = nss
            .get("busy")
            .await
            .expect("namespace stays while content remains");
        assert_eq!(spec_finalizers(&ns), vec![FINALIZER.to_string()]);
        let held = cms.get("held").await.expect("held configmap stays");
        assert!(held.metadata.deletion_timestamp.is_some());
        assert!(cms.get_opt("plain").await.expect("get").is_none());
    }

    #[test]
    fn conditions_unchanged_content_no_update_and_transition_time_kept() {
        let content = Content::default();
        let desired = desired_conditions(&content);
        let first = merge_conditions(&[], &desired).expect("all conditions added");
        assert_eq!(first.len(), CONDITIONS.len());
        assert!(first.iter().all(|c| c["status"] == "False"));
        assert!(merge_conditions(&first, &desired).is_none());
        let mut failing = Content::default();
        failing.remaining.insert("pods.".into(), 2);
        let next = merge_conditions(&first, &desired_conditions(&failing)).expect("changed");
        let c = next
            .iter()
            .find(|c| c["type"] == "NamespaceContentRemaining")
            .expect("condition");
        assert_eq!(c["status"], "True");
        assert_eq!(
            c["message"],
            "Some resources are remaining: pods. has 2 resource instances"
        );
    }
}
