//! Volume binding (upstream's VolumeBinding plugin, for mini's binder): a pod's
//! PersistentVolumeClaims must exist; a claim bound to a volume restricts the pod to the nodes
//! of the volume's node affinity; an unbound claim of a WaitForFirstConsumer class is fine and
//! gets the chosen node in `volume.kubernetes.io/selected-node` just before the pod is bound
//! (the provisioner then creates the volume there); an unbound claim of any other class keeps
//! the pod Pending until the binder has bound it. Claims, volumes and classes come from
//! watch caches; their changes retry the parked pods.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PodSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::info::{NodeTerm, PodInfo};

pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";

/// The claim names of a pod's `persistentVolumeClaim` volumes.
pub fn pod_claims(spec: &PodSpec) -> Vec<String> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// Watch caches of claims, volumes and classes.
pub struct VolumeBinding {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    changed: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn cache<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
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
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::debug!(error = %e, "volume watch failed; retrying"),
            }
        }
    });
    (reader, task)
}

/// A claim unbound in a WaitForFirstConsumer class: needs the selected node.
fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

impl VolumeBinding {
    /// Starts the caches.
    pub fn start(client: &kube::Client) -> VolumeBinding {
        let changed = Arc::new(Notify::new());
        let (claims, t1) = cache(Api::all(client.clone()), changed.clone());
        let (volumes, t2) = cache(Api::all(client.clone()), changed.clone());
        let (classes, t3) = cache(Api::all(client.clone()), changed.clone());
        VolumeBinding {
            claims,
            volumes,
            classes,
            changed,
            tasks: vec![t1, t2, t3],
        }
    }

    /// Calls `on_change` after claims, volumes or classes changed, until `stop`; then stops
    /// the caches.
    pub async fn forward_changes(&self, on_change: impl Fn(), stop: CancellationToken) {
        let _ = tokio::join!(
            self.claims.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.classes.wait_until_ready()
        );
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.changed.notified() => on_change(),
            }
        }
        for t in &self.tasks {
            t.abort();
        }
    }

    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(namespace))
    }

    fn class_of(&self, pvc: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = pvc.spec.as_ref()?.storage_class_name.as_deref()?;
        self.classes.get(&ObjectRef::new(name))
    }

    /// The pod as the filters should see it (its volumes' node affinity added to its own), or
    /// upstream's FailedScheduling message for `total_nodes` nodes when it cannot be placed yet.
    pub fn prepare(&self, pod: &Arc<PodInfo>, total_nodes: usize) -> Result<Arc<PodInfo>, String> {
        if pod.claims.is_empty() {
            return Ok(pod.clone());
        }
        let mut volume_terms: Vec<Vec<NodeTerm>> = Vec::new();
        let mut unbound_immediate = false;
        for name in &pod.claims {
            let Some(pvc) = self.claim(&pod.namespace, name) else {
                return Err(unresolvable(
                    &format!("persistentvolumeclaim \"{name}\" not found"),
                    total_nodes,
                ));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return Err(unresolvable(
                    &format!("persistentvolumeclaim \"{name}\" is being deleted"),
                    total_nodes,
                ));
            }
            let volume = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty());
            match volume {
                Some(v) => {
                    let Some(pv) = self.volumes.get(&ObjectRef::new(&v)) else {
                        return Err(unresolvable(
                            &format!("pvc {name} bound to non-existent pv {v}"),
                            total_nodes,
                        ));
                    };
                    if let Some(sel) = pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_affinity.as_ref())
                        .and_then(|a| a.required.as_ref())
                    {
                        volume_terms.push(
                            sel.node_selector_terms
                                .iter()
                                .map(NodeTerm::compile)
                                .collect(),
                        );
                    }
                }
                None if waits_for_consumer(self.class_of(&pvc).as_deref()) => {}
                None => unbound_immediate = true,
            }
        }
        if unbound_immediate {
            return Err(unresolvable(
                "pod has unbound immediate PersistentVolumeClaims",
                total_nodes,
            ));
        }
        if volume_terms.is_empty() {
            return Ok(pod.clone());
        }
        let mut info = (**pod).clone();
        let mut terms = info.required_node_terms.take();
        for vt in volume_terms {
            terms = Some(match terms {
                None => vt,
                Some(existing) => and_terms(&existing, &vt),
            });
        }
        info.required_node_terms = terms;
        Ok(Arc::new(info))
    }

    /// Writes `volume.kubernetes.io/selected-node: <node>` on the pod's unbound claims of
    /// WaitForFirstConsumer classes (before the pod is bound).
    pub async fn select_node(
        &self,
        client: &kube::Client,
        pod: &PodInfo,
        node: &str,
    ) -> Result<(), kube::Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &pod.namespace);
        for name in &pod.claims {
            let Some(pvc) = self.claim(&pod.namespace, name) else {
                continue;
            };
            let unbound = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_none_or(str::is_empty);
            let selected = pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE_ANNOTATION));
            if !unbound
                || selected.map(String::as_str) == Some(node)
                || !waits_for_consumer(self.class_of(&pvc).as_deref())
            {
                continue;
            }
            let patch =
                serde_json::json!({"metadata": {"annotations": {SELECTED_NODE_ANNOTATION: node}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }
}

/// Both sets of ORed terms must hold: every pair ANDed.
fn and_terms(a: &[NodeTerm], b: &[NodeTerm]) -> Vec<NodeTerm> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let mut t = x.clone();
            t.exprs.extend(y.exprs.iter().cloned());
            t.fields.extend(y.fields.iter().cloned());
            out.push(t);
        }
    }
    out
}

/// Upstream's FitError text for a PreFilter rejection (UnschedulableAndUnresolvable).
fn unresolvable(message: &str, total_nodes: usize) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    format!(
        "0/{n} nodes are available: {message}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
        n = total_nodes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn binding() -> (
        VolumeBinding,
        reflector::store::Writer<PersistentVolumeClaim>,
        reflector::store::Writer<PersistentVolume>,
        reflector::store::Writer<StorageClass>,
    ) {
        let (claims, cw) = reflector::store();
        let (volumes, vw) = reflector::store();
        let (classes, sw) = reflector::store();
        (
            VolumeBinding {
                claims,
                volumes,
                classes,
                changed: Arc::new(Notify::new()),
                tasks: Vec::new(),
            },
            cw,
            vw,
            sw,
        )
    }

    fn pod_with_claims(claims: &[&str]) -> Arc<PodInfo> {
        let vols: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": vols}
        }))
        .unwrap();
        Arc::new(PodInfo::from_pod(&pod))
    }

    fn pvc(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        let mut spec = json!({"storageClassName": class});
        if let Some(v) = volume {
            spec["volumeName"] = json!(v);
        }
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": "mini.dev/local-path", "volumeBindingMode": mode}))
            .unwrap()
    }

    fn pv_on(name: &str, host: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}}))
            .unwrap()
    }

    #[test]
    fn prepare_missing_claim_is_unschedulable_with_upstream_message() {
        let (vb, ..) = binding();
        let err = vb.prepare(&pod_with_claims(&["data"]), 2).unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: persistentvolumeclaim \"data\" not found. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn prepare_unbound_immediate_claim_waits_and_wffc_claim_passes() {
        let (vb, mut cw, _, mut sw) = binding();
        sw.apply_watcher_event(&Event::Apply(class("imm", "Immediate")));
        sw.apply_watcher_event(&Event::Apply(class("late", "WaitForFirstConsumer")));
        cw.apply_watcher_event(&Event::Apply(pvc("a", "imm", None)));
        cw.apply_watcher_event(&Event::Apply(pvc("b", "late", None)));
        let err = vb.prepare(&pod_with_claims(&["a"]), 1).unwrap_err();
        assert!(
            err.contains("pod has unbound immediate PersistentVolumeClaims"),
            "{err}"
        );
        let ok = vb.prepare(&pod_with_claims(&["b"]), 1).unwrap();
        assert!(ok.required_node_terms.is_none());
    }

    #[test]
    fn prepare_bound_claim_adds_volume_node_affinity() {
        let (vb, mut cw, mut vw, _) = binding();
        cw.apply_watcher_event(&Event::Apply(pvc("a", "x", Some("pv-a"))));
        vw.apply_watcher_event(&Event::Apply(pv_on("pv-a", "node-2")));
        let info = vb.prepare(&pod_with_claims(&["a"]), 2).unwrap();
        let terms = info.required_node_terms.as_ref().unwrap();
        let labels = |h: &str| {
            crate::info::Labels::from([("kubernetes.io/hostname".to_string(), h.to_string())])
        };
        assert!(terms.iter().any(|t| t.matches("n2", &labels("node-2"))));
        assert!(!terms.iter().any(|t| t.matches("n1", &labels("node-1"))));
    }

    #[test]
    fn and_terms_requires_both_sides() {
        let (vb, mut cw, mut vw, _) = binding();
        cw.apply_watcher_event(&Event::Apply(pvc("a", "x", Some("pv-a"))));
        cw.apply_watcher_event(&Event::Apply(pvc("b", "x", Some("pv-b"))));
        vw.apply_watcher_event(&Event::Apply(pv_on("pv-a", "node-1")));
        vw.apply_watcher_event(&Event::Apply(pv_on("pv-b", "node-2")));
        let info = vb.prepare(&pod_with_claims(&["a", "b"]), 2).unwrap();
        let terms = info.required_node_terms.as_ref().unwrap();
        for h in ["node-1", "node-2"] {
            let l =
                crate::info::Labels::from([("kubernetes.io/hostname".to_string(), h.to_string())]);
            assert!(!terms.iter().any(|t| t.matches(h, &l)));
        }
    }
}
