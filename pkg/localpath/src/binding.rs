//! The decisions of the PV controller, free of I/O: whether a PersistentVolume can satisfy a
//! claim (upstream's `findMatchingVolume`: class, access modes, volume mode, selector,
//! capacity, smallest fit first, a claim's own pre-bound volume before any other), the PV the
//! provisioner creates for a claim on a node, and the node picked for Immediate binding.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::{CLEANUP_FINALIZER, NODE_DIR_ANNOTATION, PROVISIONED_BY_ANNOTATION, PROVISIONER};

pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A storage quantity in milli-units (0 when absent or unparsable).
pub fn quantity_milli(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| mini_api::Quantity::parse(&q.0).ok())
        .map(|q| q.milli())
        .unwrap_or(0)
}

/// The storage a claim requests.
pub fn claim_request(pvc: &PersistentVolumeClaim) -> Option<&Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

/// The storage a volume offers.
pub fn volume_capacity(pv: &PersistentVolume) -> Option<&Quantity> {
    pv.spec.as_ref()?.capacity.as_ref()?.get("storage")
}

/// The claim's class name ("" for none).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// The volume's class name ("" for none).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

/// The claim's `namespace/name`.
pub fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether `pv.spec.claimRef` names this claim (and, when it carries a uid, this instance).
pub fn is_claimed_by(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == pvc.metadata.name
        && r.namespace == pvc.metadata.namespace
        && (r.uid.is_none() || r.uid == pvc.metadata.uid)
}

/// Whether the volume has a claimRef at all.
pub fn is_claimed(pv: &PersistentVolume) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some()
}

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map(String::as_str).unwrap_or("Filesystem")
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Whether `pv` can satisfy `pvc` by its properties (class, access modes, volume mode,
/// selector, capacity), ignoring who claims it.
pub fn volume_fits(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), pvc.spec.as_ref()) else {
        return false;
    };
    if pv.metadata.deletion_timestamp.is_some() || volume_class(pv) != claim_class(pvc) {
        return false;
    }
    let offered = vs.access_modes.as_deref().unwrap_or_default();
    if !cs
        .access_modes
        .iter()
        .flatten()
        .all(|m| offered.contains(m))
    {
        return false;
    }
    if volume_mode(vs.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return false;
    }
    if let Some(sel) = &cs.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !selector_matches(sel, &labels) {
            return false;
        }
    }
    quantity_milli(volume_capacity(pv)) >= quantity_milli(claim_request(pvc))
}

/// Whether the volume is free to be bound: no claimRef and not Released/Failed.
fn is_available(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    !is_claimed(pv) && !matches!(phase, Some("Released") | Some("Failed"))
}

/// The volume `pvc` should bind to: the one named by `spec.volumeName`, else one pre-bound to
/// the claim, else the smallest available one that fits.
pub fn find_volume<'a>(
    pvs: &'a [PersistentVolume],
    pvc: &PersistentVolumeClaim,
) -> Option<&'a PersistentVolume> {
    let wanted = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(name) = wanted {
        return pvs.iter().find(|pv| {
            pv.metadata.name.as_deref() == Some(name)
                && (is_claimed_by(pv, pvc) || is_available(pv))
                && volume_fits(pv, pvc)
        });
    }
    if let Some(pv) = pvs
        .iter()
        .find(|pv| is_claimed_by(pv, pvc) && volume_fits(pv, pvc))
    {
        return Some(pv);
    }
    pvs.iter()
        .filter(|pv| is_available(pv) && volume_fits(pv, pvc))
        .min_by_key(|pv| {
            (
                quantity_milli(volume_capacity(pv)),
                pv.metadata.name.clone().unwrap_or_default(),
            )
        })
}

/// The directory name of a claim's volume: `pvc-<uid>_<namespace>_<name>`.
pub fn volume_dir_name(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "pvc-{}_{}_{}",
        pvc.metadata.uid.as_deref().unwrap_or_default(),
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The PV name the provisioner gives a claim's volume: `pvc-<uid>` (upstream's convention).
pub fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

/// The node's local-path directory, from its annotation.
pub fn node_dir(node: &Node) -> Option<&str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(NODE_DIR_ANNOTATION)
        .map(String::as_str)
        .filter(|d| d.starts_with('/'))
}

/// The node's `kubernetes.io/hostname` label (its name when the label is missing).
pub fn node_hostname(node: &Node) -> String {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HOSTNAME_LABEL))
        .cloned()
        .or_else(|| node.metadata.name.clone())
        .unwrap_or_default()
}

/// Whether a StorageClass is served by this provisioner.
pub fn is_ours(class: &StorageClass) -> bool {
    class.provisioner == PROVISIONER
}

/// Whether a class binds at the first consumer.
pub fn waits_for_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

/// The hostPath PV for `pvc` on `node` (in `dir`), pre-bound to the claim.
pub fn provisioned_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &Node,
    dir: &str,
) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let mut capacity = BTreeMap::new();
    if let Some(q) = claim_request(pvc) {
        capacity.insert("storage".to_string(), q.clone());
    }
    let path = format!("{}/{}", dir.trim_end_matches('/'), volume_dir_name(pvc));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(volume_name(pvc)),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY_ANNOTATION.to_string(),
                PROVISIONER.to_string(),
            )])),
            finalizers: Some(vec![CLEANUP_FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(capacity),
            access_modes: spec.access_modes.clone(),
            volume_mode: spec.volume_mode.clone(),
            storage_class_name: class.metadata.name.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".to_string()),
            ),
            mount_options: class.mount_options.clone(),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".to_string()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.to_string(),
                            operator: "In".to_string(),
                            values: Some(vec![node_hostname(node)]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            claim_ref: Some(claim_ref(pvc)),
            ..Default::default()
        }),
        status: None,
    }
}

/// An ObjectReference to the claim, as `spec.claimRef` carries it.
pub fn claim_ref(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: pvc.metadata.namespace.clone(),
        name: pvc.metadata.name.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Whether a node can take new volumes: Ready, schedulable, with a local-path directory.
pub fn node_usable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    ready && !unschedulable && node_dir(node).is_some()
}

/// The node an Immediate claim's volume goes to: a usable node, spread by the claim's uid.
pub fn pick_node<'a>(nodes: &'a [Node], pvc: &PersistentVolumeClaim) -> Option<&'a Node> {
    let mut usable: Vec<&Node> = nodes.iter().filter(|n| node_usable(n)).collect();
    if usable.is_empty() {
        return None;
    }
    usable.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let seed = pvc
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Some(usable[seed % usable.len()])
}

/// What to do with a volume whose claim is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reclaim {
    /// `Retain`: leave the volume (and its data) Released.
    Keep,
    /// `Delete` of a volume we provisioned: remove `<dir name>` on `node`, then the PV.
    RemoveDirectory { node: String, name: String },
    /// `Delete` of a volume we cannot clean (not ours, or its path is not where we put it).
    Unsupported(String),
}

/// The node a provisioned volume's node affinity names.
pub fn volume_node(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .first()?
        .match_expressions
        .as_ref()?
        .iter()
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")?
        .values
        .as_ref()?
        .first()
        .cloned()
}

/// Whether we provisioned this volume.
pub fn provisioned_by_us(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY_ANNOTATION))
        .is_some_and(|p| p == PROVISIONER)
}

/// The reclaim decision for a released volume. `nodes` resolves the hostname label to a node
/// and its directory.
pub fn reclaim(pv: &PersistentVolume, nodes: &[Node]) -> Reclaim {
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    if policy != "Delete" {
        return Reclaim::Keep;
    }
    if !provisioned_by_us(pv) {
        return Reclaim::Unsupported(format!(
            "no deleter for volume {:?}: only volumes provisioned by {PROVISIONER} are deleted",
            pv.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    let Some(path) = pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| h.path.clone())
    else {
        return Reclaim::Unsupported("the volume has no hostPath".into());
    };
    let Some(hostname) = volume_node(pv) else {
        return Reclaim::Unsupported("the volume has no node affinity to find its node".into());
    };
    let node_name = nodes
        .iter()
        .find(|n| node_hostname(n) == hostname)
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or(hostname);
    let p = std::path::Path::new(&path);
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !crate::dirs::is_plain_name(&name) {
        return Reclaim::Unsupported(format!("volume path {path:?} has no directory name"));
    }
    Reclaim::RemoveDirectory {
        node: node_name,
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn pv(name: &str, class: &str, size: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                     "storageClassName": class, "hostPath": {"path": format!("/srv/{name}")}},
            "status": {"phase": "Available"}
        }))
        .unwrap()
    }

    pub fn pvc(
        name: &str,
        class: Option<&str>,
        size: &str,
        modes: &[&str],
    ) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": spec
        }))
        .unwrap()
    }

    fn node(name: &str, dir: Option<&str>, ready: bool) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": format!("{name}-host")}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        if let Some(d) = dir {
            n["metadata"]["annotations"] = json!({NODE_DIR_ANNOTATION: d});
        }
        serde_json::from_value(n).unwrap()
    }

    fn class(binding: &str, reclaim: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "local-path"},
            "provisioner": PROVISIONER,
            "volumeBindingMode": binding,
            "reclaimPolicy": reclaim
        }))
        .unwrap()
    }

    #[test]
    fn find_volume_smallest_fit_wins() {
        let pvs = vec![
            pv("big", "", "10Gi", &["ReadWriteOnce"]),
            pv("small", "", "1Gi", &["ReadWriteOnce"]),
            pv("tiny", "", "100Mi", &["ReadWriteOnce"]),
        ];
        let c = pvc("c", Some(""), "500Mi", &["ReadWriteOnce"]);
        assert_eq!(
            find_volume(&pvs, &c).unwrap().metadata.name.as_deref(),
            Some("small")
        );
    }

    #[test]
    fn find_volume_class_mode_and_selector_must_match() {
        let pvs = vec![pv("a", "other", "1Gi", &["ReadWriteOnce"])];
        assert!(find_volume(&pvs, &pvc("c", Some(""), "1Gi", &["ReadWriteOnce"])).is_none());
        let pvs = vec![pv("a", "", "1Gi", &["ReadWriteOnce"])];
        assert!(find_volume(&pvs, &pvc("c", Some(""), "1Gi", &["ReadWriteMany"])).is_none());
        let mut c = pvc("c", Some(""), "1Gi", &["ReadWriteOnce"]);
        c.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).unwrap());
        assert!(find_volume(&pvs, &c).is_none());
        c.spec.as_mut().unwrap().selector = Some(
            serde_json::from_value(
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fast"]}]}),
            )
            .unwrap(),
        );
        assert!(find_volume(&pvs, &c).is_some());
    }

    #[test]
    fn find_volume_claimed_or_released_volume_is_skipped() {
        let mut taken = pv("taken", "", "1Gi", &["ReadWriteOnce"]);
        taken.spec.as_mut().unwrap().claim_ref = Some(claim_ref(&pvc(
            "other",
            Some(""),
            "1Gi",
            &["ReadWriteOnce"],
        )));
        let mut released = pv("released", "", "1Gi", &["ReadWriteOnce"]);
        released.status.as_mut().unwrap().phase = Some("Released".into());
        let pvs = vec![taken, released];
        assert!(find_volume(&pvs, &pvc("c", Some(""), "1Gi", &["ReadWriteOnce"])).is_none());
    }

    #[test]
    fn find_volume_pre_bound_volume_is_preferred() {
        let c = pvc("c", Some(""), "1Gi", &["ReadWriteOnce"]);
        let mut mine = pv("mine", "", "5Gi", &["ReadWriteOnce"]);
        mine.spec.as_mut().unwrap().claim_ref = Some(claim_ref(&c));
        let pvs = vec![pv("free", "", "1Gi", &["ReadWriteOnce"]), mine];
        assert_eq!(
            find_volume(&pvs, &c).unwrap().metadata.name.as_deref(),
            Some("mine")
        );
    }

    #[test]
    fn find_volume_volume_name_restricts_to_that_volume() {
        let mut c = pvc("c", Some(""), "1Gi", &["ReadWriteOnce"]);
        c.spec.as_mut().unwrap().volume_name = Some("b".into());
        let pvs = vec![
            pv("a", "", "1Gi", &["ReadWriteOnce"]),
            pv("b", "", "2Gi", &["ReadWriteOnce"]),
        ];
        assert_eq!(
            find_volume(&pvs, &c).unwrap().metadata.name.as_deref(),
            Some("b")
        );
    }

    #[test]
    fn provisioned_volume_is_pinned_and_pre_bound() {
        let c = pvc(
            "data-web-0",
            Some("local-path"),
            "128Mi",
            &["ReadWriteOnce"],
        );
        let n = node("n1", Some("/var/lib/mini/storage"), true);
        let v = provisioned_volume(
            &c,
            &class("WaitForFirstConsumer", "Retain"),
            &n,
            "/var/lib/mini/storage/",
        );
        let spec = v.spec.as_ref().unwrap();
        assert_eq!(v.metadata.name.as_deref(), Some("pvc-uid-data-web-0"));
        assert_eq!(
            spec.host_path.as_ref().unwrap().path,
            "/var/lib/mini/storage/pvc-uid-data-web-0_default_data-web-0"
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(volume_node(&v).as_deref(), Some("n1-host"));
        assert!(is_claimed_by(&v, &c));
        assert!(volume_fits(&v, &c));
        assert!(provisioned_by_us(&v));
        assert_eq!(
            quantity_milli(volume_capacity(&v)),
            128 * 1024 * 1024 * 1000
        );
    }

    #[test]
    fn pick_node_skips_not_ready_and_unannotated_nodes() {
        let nodes = vec![
            node("a", None, true),
            node("b", Some("/d"), false),
            node("c", Some("/d"), true),
        ];
        let c = pvc("x", Some("local-path"), "1Gi", &["ReadWriteOnce"]);
        assert_eq!(
            pick_node(&nodes, &c).unwrap().metadata.name.as_deref(),
            Some("c")
        );
        assert!(pick_node(&nodes[..2], &c).is_none());
    }

    #[test]
    fn reclaim_follows_policy_and_finds_node_by_hostname() {
        let c = pvc("c", Some("local-path"), "1Gi", &["ReadWriteOnce"]);
        let n = node("n1", Some("/s"), true);
        let v = provisioned_volume(&c, &class("Immediate", "Delete"), &n, "/s");
        assert_eq!(
            reclaim(&v, std::slice::from_ref(&n)),
            Reclaim::RemoveDirectory {
                node: "n1".into(),
                name: "pvc-uid-c_default_c".into()
            }
        );
        let kept = provisioned_volume(&c, &class("Immediate", "Retain"), &n, "/s");
        assert_eq!(reclaim(&kept, std::slice::from_ref(&n)), Reclaim::Keep);
        let mut static_pv = pv("s", "", "1Gi", &["ReadWriteOnce"]);
        static_pv
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Delete".into());
        assert!(matches!(reclaim(&static_pv, &[n]), Reclaim::Unsupported(_)));
    }
}
