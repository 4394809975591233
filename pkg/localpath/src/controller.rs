//! The server's PV controller (a kube client, run next to the other controllers): watches
//! claims, volumes, StorageClasses and nodes, and on every change (and every few seconds)
//! brings each claim and volume one step closer to where it should be: binding claims to
//! fitting volumes (phases Pending/Bound/Lost, Available/Bound/Released/Failed and upstream's
//! `pv.kubernetes.io/bind-completed` / `bound-by-controller` annotations), provisioning
//! local-path volumes, and reclaiming released ones through the node's agent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use mini_runtime::{EventRecorder, EventType};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::binding::{self, Reclaim};
use crate::{
    LocalPathError, AGENT_ROUTE, BETA_STORAGE_PROVISIONER_ANNOTATION, BIND_COMPLETED_ANNOTATION,
    BOUND_BY_CONTROLLER_ANNOTATION, CLEANUP_FINALIZER, PROVISIONER, SELECTED_NODE_ANNOTATION,
    STORAGE_PROVISIONER_ANNOTATION,
};

/// Every object is looked at again at least this often (retries of failed steps).
const RESYNC: Duration = Duration::from_secs(5);
/// A failed directory removal is retried after this long.
const CLEANUP_RETRY: Duration = Duration::from_secs(10);
/// Events are named after this component.
pub const COMPONENT: &str = "persistentvolume-controller";

struct Controller {
    client: kube::Client,
    recorder: EventRecorder,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
    /// What was last reported per (object uid, reason), so a pass does not repeat Events.
    reported: Mutex<HashMap<(String, String), String>>,
    /// Volumes whose directory removal failed, with when to try again.
    cleanup_after: Mutex<HashMap<String, Instant>>,
    /// Volumes written while syncing claims in this pass: their snapshot is stale, so they
    /// wait for the next pass.
    touched: Mutex<HashSet<String>>,
}

fn watch<K>(
    api: Api<K>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(e)) => debug!(error = %e, "local-path watch failed; retrying"),
                    None => return,
                },
            }
        }
    });
    (reader, task)
}

/// Runs the PV controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> Result<(), LocalPathError> {
    let wake = Arc::new(Notify::new());
    let stop = shutdown.child_token();
    let (claims, t1) = watch(Api::all(client.clone()), wake.clone(), stop.clone());
    let (volumes, t2) = watch(Api::all(client.clone()), wake.clone(), stop.clone());
    let (classes, t3) = watch(Api::all(client.clone()), wake.clone(), stop.clone());
    let (nodes, t4) = watch(Api::all(client.clone()), wake.clone(), stop.clone());
    let ctl = Controller {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        claims,
        volumes,
        classes,
        nodes,
        reported: Mutex::new(HashMap::new()),
        cleanup_after: Mutex::new(HashMap::new()),
        touched: Mutex::new(HashSet::new()),
    };
    let ready = async {
        let _ = ctl.claims.wait_until_ready().await;
        let _ = ctl.volumes.wait_until_ready().await;
        let _ = ctl.classes.wait_until_ready().await;
        let _ = ctl.nodes.wait_until_ready().await;
    };
    let synced = tokio::select! {
        _ = stop.cancelled() => false,
        _ = ready => true,
    };
    if synced {
        info!("local-path provisioner and volume binder running");
        loop {
            ctl.pass().await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wake.notified() => {
                    // let a burst of changes land before the next pass
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }
    stop.cancel();
    for t in [t1, t2, t3, t4] {
        t.abort();
    }
    Ok(())
}

fn object_ref<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Controller {
    async fn pass(&self) {
        let claims: Vec<PersistentVolumeClaim> =
            self.claims.state().iter().map(|c| (**c).clone()).collect();
        let volumes: Vec<PersistentVolume> =
            self.volumes.state().iter().map(|v| (**v).clone()).collect();
        for pvc in &claims {
            if let Err(e) = self.sync_claim(pvc, &volumes).await {
                debug!(claim = %binding::claim_key(pvc), error = %e, "syncing claim failed; will retry");
            }
        }
        let touched = std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner()));
        for pv in volumes
            .iter()
            .filter(|v| !touched.contains(v.metadata.name.as_deref().unwrap_or_default()))
        {
            if let Err(e) = self.sync_volume(pv, &claims).await {
                debug!(volume = pv.metadata.name.as_deref().unwrap_or_default(), error = %e, "syncing volume failed; will retry");
            }
        }
    }

    /// Records an Event unless the same reason and message were reported for the object last.
    async fn report<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let key = (
            obj.meta().uid.clone().unwrap_or_default(),
            reason.to_string(),
        );
        {
            let mut seen = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if seen.get(&key).map(String::as_str) == Some(message) {
                return;
            }
            seen.insert(key, message.to_string());
        }
        if let Err(e) = self
            .recorder
            .record(&object_ref(obj), type_, reason, message)
            .await
        {
            debug!(error = %e, "recording a volume event failed");
        }
    }

    fn touch(&self, volume: &str) {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(volume.to_string());
    }

    fn nodes(&self) -> Vec<Node> {
        self.nodes.state().iter().map(|n| (**n).clone()).collect()
    }

    async fn sync_claim(
        &self,
        pvc: &PersistentVolumeClaim,
        volumes: &[PersistentVolume],
    ) -> Result<(), LocalPathError> {
        if pvc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let phase = pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        let volume_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty());
        if let Some(name) = &volume_name {
            match volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(name))
            {
                Some(pv) if binding::is_claimed_by(pv, pvc) => {
                    return self.finish_binding(pv, pvc).await;
                }
                Some(pv) if phase == "Pending" && binding::find_volume(volumes, pvc).is_some() => {
                    return self.bind(pv, pvc).await;
                }
                None if phase == "Bound" => {
                    self.set_claim_phase(pvc, "Lost").await?;
                    self.report(
                        pvc,
                        EventType::Warning,
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    )
                    .await;
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
        if let Some(pv) = binding::find_volume(volumes, pvc) {
            return self.bind(pv, pvc).await;
        }
        self.provision(pvc).await
    }

    /// Claims `pv` for `pvc`, then binds the claim.
    async fn bind(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), LocalPathError> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        self.touch(&name);
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut pv = pv.clone();
        if !binding::is_claimed_by(&pv, pvc)
            || pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.is_none())
        {
            let mut patch = json!({"spec": {"claimRef": binding::claim_ref(pvc)}});
            if !binding::is_claimed(&pv) {
                patch["metadata"] =
                    json!({"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}});
            }
            pv = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(volume = %name, claim = %binding::claim_key(pvc), "volume claimed");
        }
        self.finish_binding(&pv, pvc).await
    }

    /// With `pv` claimed for `pvc`: the volume's phase Bound, the claim's volumeName,
    /// annotations and phase Bound.
    async fn finish_binding(
        &self,
        pv: &PersistentVolume,
        pvc: &PersistentVolumeClaim,
    ) -> Result<(), LocalPathError> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        self.touch(&name);
        let pv_phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        if pv_phase != Some("Bound") {
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let claim = pvc.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let annotations = pvc.metadata.annotations.clone().unwrap_or_default();
        let spec_volume = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if spec_volume != Some(name.as_str())
            || annotations
                .get(BIND_COMPLETED_ANNOTATION)
                .map(String::as_str)
                != Some("yes")
        {
            let mut patch = json!({
                "metadata": {"annotations": {BIND_COMPLETED_ANNOTATION: "yes"}},
                "spec": {"volumeName": name},
            });
            if spec_volume.is_none_or(str::is_empty) {
                patch["metadata"]["annotations"][BOUND_BY_CONTROLLER_ANNOTATION] = json!("yes");
            }
            api.patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let status = pvc.status.clone().unwrap_or_default();
        let vs = pv.spec.clone().unwrap_or_default();
        if status.phase.as_deref() != Some("Bound")
            || status.capacity != vs.capacity
            || status.access_modes != vs.access_modes
        {
            let patch = json!({"status": {
                "phase": "Bound",
                "accessModes": vs.access_modes,
                "capacity": vs.capacity,
            }});
            api.patch_status(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(volume = %name, claim = %binding::claim_key(pvc), "claim bound");
        }
        Ok(())
    }

    async fn set_claim_phase(
        &self,
        pvc: &PersistentVolumeClaim,
        phase: &str,
    ) -> Result<(), LocalPathError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(
            self.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        api.patch_status(
            pvc.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await?;
        Ok(())
    }

    /// No volume fits: provision one when the claim's class is ours and a node is known.
    async fn provision(&self, pvc: &PersistentVolumeClaim) -> Result<(), LocalPathError> {
        let class_name = binding::claim_class(pvc);
        if class_name.is_empty() {
            self.report(
                pvc,
                EventType::Normal,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
            .await;
            return Ok(());
        }
        let Some(class) = self
            .classes
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(class_name))
        else {
            self.report(
                pvc,
                EventType::Warning,
                "ProvisioningFailed",
                &format!("storageclass.storage.k8s.io {class_name:?} not found"),
            )
            .await;
            return Ok(());
        };
        if !binding::is_ours(&class) {
            self.report(
                pvc,
                EventType::Normal,
                "ExternalProvisioning",
                &format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                ),
            )
            .await;
            return Ok(());
        }
        let nodes = self.nodes();
        let node = if binding::waits_for_consumer(&class) {
            let selected = pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE_ANNOTATION));
            let Some(selected) = selected else {
                self.report(
                    pvc,
                    EventType::Normal,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                )
                .await;
                return Ok(());
            };
            match nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(selected))
            {
                Some(n) => n.clone(),
                None => {
                    self.report(
                        pvc,
                        EventType::Warning,
                        "ProvisioningFailed",
                        &format!("selected node {selected:?} does not exist"),
                    )
                    .await;
                    return Ok(());
                }
            }
        } else {
            match binding::pick_node(&nodes, pvc) {
                Some(n) => n.clone(),
                None => {
                    self.report(
                        pvc,
                        EventType::Warning,
                        "ProvisioningFailed",
                        "no ready, schedulable node with a local-path directory (annotation storage.mini.dev/local-path-dir) to put the volume on",
                    )
                    .await;
                    return Ok(());
                }
            }
        };
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let Some(dir) = binding::node_dir(&node) else {
            self.report(
                pvc,
                EventType::Warning,
                "ProvisioningFailed",
                &format!(
                    "node {node_name:?} has no local-path directory (annotation {}); is its agent older than this server?",
                    crate::NODE_DIR_ANNOTATION
                ),
            )
            .await;
            return Ok(());
        };
        let annotations = pvc.metadata.annotations.clone().unwrap_or_default();
        if annotations
            .get(STORAGE_PROVISIONER_ANNOTATION)
            .map(String::as_str)
            != Some(PROVISIONER)
        {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(
                self.client.clone(),
                pvc.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let patch = json!({"metadata": {"annotations": {
                STORAGE_PROVISIONER_ANNOTATION: PROVISIONER,
                BETA_STORAGE_PROVISIONER_ANNOTATION: PROVISIONER,
            }}});
            api.patch(
                pvc.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        let pv = binding::provisioned_volume(pvc, &class, &node, dir);
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(e) => {
                self.report(
                    pvc,
                    EventType::Warning,
                    "ProvisioningFailed",
                    &format!("creating persistentvolume {name}: {e}"),
                )
                .await;
                return Err(e.into());
            }
        }
        info!(volume = %name, claim = %binding::claim_key(pvc), node = %node_name, "provisioned a local-path volume");
        self.report(
            pvc,
            EventType::Normal,
            "ProvisioningSucceeded",
            &format!("Successfully provisioned volume {name} on node {node_name}"),
        )
        .await;
        Ok(())
    }

    async fn set_volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> Result<(), LocalPathError> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut status = json!({"phase": phase});
        if let Some(m) = message {
            status["message"] = json!(m);
        }
        api.patch_status(
            pv.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        Ok(())
    }

    async fn sync_volume(
        &self,
        pv: &PersistentVolume,
        claims: &[PersistentVolumeClaim],
    ) -> Result<(), LocalPathError> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
        if pv.metadata.deletion_timestamp.is_some() {
            if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
                return Ok(());
            }
            // the volume is going: its directory goes first when the policy says Delete
            if let Reclaim::RemoveDirectory { node, name: dir } =
                binding::reclaim(pv, &self.nodes())
            {
                if !self.remove_directory(pv, &node, &dir).await {
                    return Ok(());
                }
            }
            let rest: Vec<&String> = finalizers
                .iter()
                .filter(|f| *f != CLEANUP_FINALIZER)
                .collect();
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
            )
            .await?;
            return Ok(());
        }
        let phase = pv
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            if phase != "Available" {
                self.set_volume_phase(pv, "Available", None).await?;
            }
            return Ok(());
        };
        let claim = claims.iter().find(|c| {
            c.metadata.name == claim_ref.name && c.metadata.namespace == claim_ref.namespace
        });
        let claim_uid_matches =
            |c: &PersistentVolumeClaim| claim_ref.uid.is_none() || c.metadata.uid == claim_ref.uid;
        match claim {
            Some(c) if claim_uid_matches(c) => {
                let bound_here =
                    c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str());
                if bound_here && phase != "Bound" {
                    self.set_volume_phase(pv, "Bound", None).await?;
                } else if !bound_here && phase.is_empty() {
                    self.set_volume_phase(pv, "Available", None).await?;
                }
                Ok(())
            }
            _ if claim_ref.uid.is_none() => {
                // pre-bound to a claim that does not exist yet: it stays for that claim
                if phase != "Available" {
                    self.set_volume_phase(pv, "Available", None).await?;
                }
                Ok(())
            }
            _ => {
                if phase != "Released" && phase != "Failed" {
                    // the cache may lag: ask the API before releasing anything
                    let api: Api<PersistentVolumeClaim> = Api::namespaced(
                        self.client.clone(),
                        claim_ref.namespace.as_deref().unwrap_or_default(),
                    );
                    match api
                        .get_opt(claim_ref.name.as_deref().unwrap_or_default())
                        .await?
                    {
                        Some(c) if claim_uid_matches(&c) => return Ok(()),
                        _ => {}
                    }
                    self.set_volume_phase(pv, "Released", None).await?;
                    info!(volume = %name, claim = ?claim_ref.name, "volume released");
                }
                self.reclaim(pv, phase == "Failed").await
            }
        }
    }

    /// A released volume: Retain keeps it, Delete removes its directory and then the PV.
    async fn reclaim(&self, pv: &PersistentVolume, failed: bool) -> Result<(), LocalPathError> {
        match binding::reclaim(pv, &self.nodes()) {
            Reclaim::Keep => Ok(()),
            Reclaim::Unsupported(message) => {
                if !failed {
                    self.set_volume_phase(pv, "Failed", Some(&message)).await?;
                }
                self.report(pv, EventType::Warning, "VolumeFailedDelete", &message)
                    .await;
                Ok(())
            }
            Reclaim::RemoveDirectory { node, name } => {
                if self.remove_directory(pv, &node, &name).await {
                    let api: Api<PersistentVolume> = Api::all(self.client.clone());
                    match api
                        .delete(
                            pv.metadata.name.as_deref().unwrap_or_default(),
                            &DeleteParams::default(),
                        )
                        .await
                    {
                        Ok(_) => {
                            info!(volume = ?pv.metadata.name, "released volume deleted");
                        }
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }

    /// Asks `node`'s agent (through the API server's node proxy) to remove the directory.
    /// False (with a Warning Event on the volume) while that fails; retried later.
    async fn remove_directory(&self, pv: &PersistentVolume, node: &str, dir: &str) -> bool {
        let key = pv.metadata.name.clone().unwrap_or_default();
        {
            let due = self.cleanup_after.lock().unwrap_or_else(|e| e.into_inner());
            if due.get(&key).is_some_and(|t| Instant::now() < *t) {
                return false;
            }
        }
        match remove_on_node(&self.client, node, dir).await {
            Ok(()) => {
                self.cleanup_after
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                info!(volume = %key, %node, directory = %dir, "volume directory removed");
                true
            }
            Err(e) => {
                self.cleanup_after
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), Instant::now() + CLEANUP_RETRY);
                let message = format!(
                    "removing directory {dir} on node {node} failed (retrying every {}s): {e}",
                    CLEANUP_RETRY.as_secs()
                );
                warn!(volume = %key, "{message}");
                self.report(pv, EventType::Warning, "VolumeFailedDelete", &message)
                    .await;
                false
            }
        }
    }
}

/// `DELETE /api/v1/nodes/<node>/proxy/localpath/<dir>`: the agent removes `<its dir>/<dir>`.
pub async fn remove_on_node(
    client: &kube::Client,
    node: &str,
    dir: &str,
) -> Result<(), LocalPathError> {
    let bad = |message: String| LocalPathError::Request {
        node: node.to_string(),
        message,
    };
    if !crate::dirs::is_plain_name(dir) || !crate::dirs::is_plain_name(node) {
        return Err(bad(format!("{dir:?} or {node:?} is not a plain name")));
    }
    let uri = format!("/api/v1/nodes/{node}/proxy/{AGENT_ROUTE}/{dir}");
    let req = http::Request::delete(uri)
        .body(Vec::new())
        .map_err(|e| bad(e.to_string()))?;
    client.request_text(req).await?;
    Ok(())
}
