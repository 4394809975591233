//! NodeRestriction: what a node's credentials may write, as upstream's admission plugin —
//! only its own Node (not its taints, nor `node-restriction.kubernetes.io/` and other
//! reserved labels), its own Lease, the status of its pods, evictions and deletions of its
//! pods, mirror pods bound to it, and tokens bound to its pods.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::authorizer::NODE_LEASE_NAMESPACE;

/// A write operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// One write by a node.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The node doing it (from its credentials).
    pub node: &'a str,
    pub operation: Operation,
    pub group: &'a str,
    /// The resource's plural (`pods`, `nodes`, ...).
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The stored object (update, delete; for `pods/eviction` and `serviceaccounts/token`
    /// the pod concerned, `None` when it does not exist).
    pub old: Option<&'a Value>,
    /// The object written (create, update; the Eviction or TokenRequest body).
    pub new: Option<&'a Value>,
    /// The node's own Node object, when a mirror pod names it as owner.
    pub own_node: Option<&'a Value>,
}

/// The annotation that marks a mirror pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Labels under this prefix (and its subdomains) are reserved for administrators: nodes can
/// never set them, so workloads may rely on them for placement.
pub const NODE_RESTRICTION_LABEL_DOMAIN: &str = "node-restriction.kubernetes.io";

/// The `kubernetes.io`/`k8s.io` labels a kubelet may set on its own Node.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
const KUBELET_LABEL_DOMAINS: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_domain(key: &str) -> &str {
    key.split_once('/').map(|(d, _)| d).unwrap_or_default()
}

fn in_domain(domain: &str, of: &str) -> bool {
    domain == of
        || domain
            .strip_suffix(of)
            .is_some_and(|head| head.ends_with('.'))
}

/// Whether a kubelet may set `key` on its own Node (upstream's `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_DOMAINS
            .iter()
            .any(|d| in_domain(label_domain(key), d))
}

/// Labels a node may not set or change on its own Node: `node-restriction.kubernetes.io/`
/// ones, and `kubernetes.io`/`k8s.io` ones outside the kubelet set.
pub fn forbidden_labels<'a>(modified: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = BTreeSet::new();
    for key in modified {
        let domain = label_domain(key);
        let reserved = in_domain(domain, NODE_RESTRICTION_LABEL_DOMAIN);
        let kubernetes = in_domain(domain, "kubernetes.io") || in_domain(domain, "k8s.io");
        if reserved || (kubernetes && !is_kubelet_label(key)) {
            out.insert(key.to_string());
        }
    }
    out.into_iter().collect()
}

fn labels(obj: Option<&Value>) -> Map<String, Value> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
        .cloned()
        .unwrap_or_default()
}

/// Keys whose value differs between `new` and `old` (added, changed or removed).
fn modified_labels(new: &Map<String, Value>, old: &Map<String, Value>) -> BTreeSet<String> {
    new.keys()
        .chain(old.keys())
        .filter(|k| new.get(*k) != old.get(*k))
        .cloned()
        .collect()
}

/// NodeRestriction: `Err` says why the write is refused (the 403 message's tail).
pub fn admit(w: &Write) -> Result<(), String> {
    match (w.group, w.resource) {
        ("", "nodes") => node(w),
        ("", "pods") => match w.subresource {
            "" => pod(w),
            "status" => pod_status(w),
            "eviction" => pod_eviction(w),
            other => Err(format!(
                "unexpected subresource {other:?}, only 'status' and 'eviction' subresources are allowed"
            )),
        },
        ("", "persistentvolumeclaims") if w.subresource == "status" => claim_status(w),
        ("", "serviceaccounts") if w.subresource == "token" => token(w),
        ("coordination.k8s.io", "leases") => lease(w),
        _ => Ok(()),
    }
}

fn node(w: &Write) -> Result<(), String> {
    let node = w.node;
    if w.name != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {:?}",
            w.name
        ));
    }
    match w.operation {
        Operation::Create => {
            let new = w.new.unwrap_or(&Value::Null);
            if !new["spec"]["configSource"].is_null() {
                return Err(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let labels = labels(w.new);
            let forbidden = forbidden_labels(labels.keys().map(String::as_str));
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                ));
            }
        }
        Operation::Update => {
            let (new, old) = (w.new.unwrap_or(&Value::Null), w.old.unwrap_or(&Value::Null));
            let source = &new["spec"]["configSource"];
            if !source.is_null() && *source != old["spec"]["configSource"] {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if taints(new) != taints(old) {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            let modified = modified_labels(&labels(w.new), &labels(w.old));
            let forbidden = forbidden_labels(modified.iter().map(String::as_str));
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to modify labels: {}",
                    forbidden.join(", ")
                ));
            }
        }
        Operation::Delete => {}
    }
    Ok(())
}

/// Taints compared as upstream's semantic equality: absent and empty are the same.
fn taints(node: &Value) -> Vec<Value> {
    node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn bound_node(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p["spec"]["nodeName"].as_str())
        .unwrap_or_default()
}

fn pod(w: &Write) -> Result<(), String> {
    let node = w.node;
    match w.operation {
        Operation::Create => mirror_pod(w),
        Operation::Delete => {
            if bound_node(w.old) != node {
                return Err(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        Operation::Update => Err(format!(
            "unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods"
        )),
    }
}

fn mirror_pod(w: &Write) -> Result<(), String> {
    let node = w.node;
    let pod = w.new.unwrap_or(&Value::Null);
    if pod["metadata"]["annotations"]
        .get(MIRROR_POD_ANNOTATION)
        .is_none()
    {
        return Err(format!(
            "pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        ));
    }
    if bound_node(Some(pod)) != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if owners.len() > 1 {
        return Err(format!(
            "node {node:?} can only create pods with a single owner reference set to itself"
        ));
    }
    if let Some(owner) = owners.first() {
        if owner["apiVersion"] != "v1" || owner["kind"] != "Node" || owner["name"] != node {
            return Err(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ));
        }
        if owner["controller"] != true {
            return Err(format!(
                "node {node:?} can only create pods with a controller owner reference set to itself"
            ));
        }
        if owner["blockOwnerDeletion"] == true {
            return Err(format!(
                "node {node:?} must not set blockOwnerDeletion on an owner reference"
            ));
        }
        let uid = w.own_node.map(|n| &n["metadata"]["uid"]);
        if uid != Some(&owner["uid"]) {
            return Err(format!(
                "node {node} UID mismatch: expected {} got {}",
                uid.and_then(Value::as_str).unwrap_or_default(),
                owner["uid"].as_str().unwrap_or_default()
            ));
        }
    }
    let spec = &pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    // everything a pod can reference, through the graph's own extraction
    let mut probe = pod.clone();
    probe["spec"]["nodeName"] = Value::String(node.to_string());
    let refs = crate::graph::pod_refs(&probe)
        .map(|r| r.refs)
        .unwrap_or_default();
    for (kind, what) in [
        (crate::graph::Kind::Secret, "secrets"),
        (crate::graph::Kind::ConfigMap, "configmaps"),
        (
            crate::graph::Kind::PersistentVolumeClaim,
            "persistentvolumeclaims",
        ),
        (crate::graph::Kind::ResourceClaim, "resourceclaims"),
    ] {
        if refs.iter().any(|(k, _)| *k == kind) {
            return Err(format!(
                "node {node:?} can not create pods that reference {what}"
            ));
        }
    }
    Ok(())
}

fn pod_status(w: &Write) -> Result<(), String> {
    let node = w.node;
    if w.operation != Operation::Update {
        return Err(format!("unexpected operation {:?}", w.operation));
    }
    if bound_node(w.old) != node {
        return Err(format!(
            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
        ));
    }
    if labels(w.new) != labels(w.old) {
        return Err(format!(
            "node {node:?} cannot update labels through pod status"
        ));
    }
    let claims = |p: Option<&Value>| {
        p.map(|p| p["status"]["resourceClaimStatuses"].clone())
            .filter(|v| !v.is_null())
            .unwrap_or(Value::Array(Vec::new()))
    };
    if claims(w.new) != claims(w.old) {
        return Err(format!(
            "node {node:?} cannot update resource claim statues"
        ));
    }
    Ok(())
}

fn pod_eviction(w: &Write) -> Result<(), String> {
    let node = w.node;
    if w.operation != Operation::Create {
        return Err(format!("unexpected operation {:?}", w.operation));
    }
    if bound_node(w.old) != node {
        return Err(format!(
            "node {node} can only evict pods with spec.nodeName set to itself"
        ));
    }
    Ok(())
}

fn claim_status(w: &Write) -> Result<(), String> {
    let node = w.node;
    if w.operation != Operation::Update {
        return Err(format!("unexpected operation {:?}", w.operation));
    }
    let strip = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or(Value::Null);
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(s) = v["status"].as_object_mut() {
            for k in [
                "capacity",
                "conditions",
                "allocatedResources",
                "allocatedResourceStatuses",
            ] {
                s.remove(k);
            }
        }
        v
    };
    if strip(w.new) != strip(w.old) {
        return Err(format!(
            "node {node:?} is not allowed to update fields other than status.capacity and status.conditions"
        ));
    }
    Ok(())
}

/// The pod a TokenRequest is bound to (`spec.boundObjectRef` of kind Pod), by name.
pub fn token_bound_pod(request: &Value) -> Option<&str> {
    let r = &request["spec"]["boundObjectRef"];
    (r["kind"] == "Pod")
        .then(|| r["name"].as_str())
        .flatten()
        .filter(|n| !n.is_empty())
}

fn token(w: &Write) -> Result<(), String> {
    let node = w.node;
    if w.operation != Operation::Create {
        return Ok(());
    }
    let request = w.new.unwrap_or(&Value::Null);
    let r = &request["spec"]["boundObjectRef"];
    if r.is_null()
        || r["apiVersion"] != "v1"
        || r["kind"] != "Pod"
        || token_bound_pod(request).is_none()
    {
        return Err("node requested token not bound to a pod".to_string());
    }
    let Some(uid) = r["uid"].as_str().filter(|u| !u.is_empty()) else {
        return Err("node requested token with a pod binding without a uid".to_string());
    };
    let Some(pod) = w.old else {
        return Err("node requested token bound to a pod that does not exist".to_string());
    };
    if pod["metadata"]["uid"].as_str() != Some(uid) {
        return Err(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if bound_node(Some(pod)) != node {
        return Err(
            "node requested token bound to a pod scheduled on a different node".to_string(),
        );
    }
    Ok(())
}

fn lease(w: &Write) -> Result<(), String> {
    if w.namespace != NODE_LEASE_NAMESPACE || w.operation != Operation::Create {
        return Ok(());
    }
    let name = w
        .new
        .and_then(|l| l["metadata"]["name"].as_str())
        .unwrap_or(w.name);
    if name != w.node {
        return Err(
            "can only access node lease with the same name as the requesting node".to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
