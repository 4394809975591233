//! Patch strategies and merge keys of lists (and atomic maps) in built-in kinds, following the
//! `patchStrategy`/`patchMergeKey` and `listType`/`structType` markers of upstream's types.

use crate::ListStrategy;
use serde_json::Value;

/// Built-in (group, kind) pairs known to this table; everything else is treated like a CRD.
const BUILTIN: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Node"),
    ("", "Namespace"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "Event"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("", "ComponentStatus"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("coordination.k8s.io", "Lease"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("apiregistration.k8s.io", "APIService"),
    ("events.k8s.io", "Event"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

/// Whether (group, kind) is a built-in kind known to the strategy table.
pub fn is_builtin(group: &str, kind: &str) -> bool {
    BUILTIN.iter().any(|(g, k)| *g == group && *k == kind)
}

/// Where the PodSpec sits inside objects of this kind (as field names from the root).
fn pod_spec_prefixes(group: &str, kind: &str) -> &'static [&'static [&'static str]] {
    match (group, kind) {
        ("", "Pod") => &[&["spec"]],
        ("", "PodTemplate") => &[&["template", "spec"], &["spec", "template", "spec"]],
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => &[&["spec", "template", "spec"]],
        ("batch", "CronJob") => &[&["spec", "jobTemplate", "spec", "template", "spec"]],
        _ => &[],
    }
}

/// Where ObjectMeta sits inside objects of this kind (the root, plus pod templates).
fn object_meta_prefix(group: &str, kind: &str, prefix: &[&str]) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match (group, kind) {
        ("", "PodTemplate") => prefix == ["template"],
        ("apps", "StatefulSet") => {
            prefix == ["spec", "template"] || prefix == ["spec", "volumeClaimTemplates"]
        }
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "DaemonSet")
        | ("batch", "Job") => prefix == ["spec", "template"],
        ("batch", "CronJob") => {
            prefix == ["spec", "jobTemplate"]
                || prefix == ["spec", "jobTemplate", "spec", "template"]
        }
        _ => false,
    }
}

/// Lists of a PodSpec, relative to the PodSpec.
fn pod_spec_list(rel: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match rel {
        ["containers" | "initContainers" | "ephemeralContainers"] => MergeByKey("name"),
        ["volumes"] => MergeByKey("name"),
        ["imagePullSecrets"] => MergeByKey("name"),
        ["hostAliases"] => MergeByKey("ip"),
        ["topologySpreadConstraints"] => MergeByKey("topologyKey"),
        ["resourceClaims"] => MergeByKey("name"),
        ["schedulingGates"] => MergeByKey("name"),
        ["containers" | "initContainers" | "ephemeralContainers", field] => match *field {
            "env" => MergeByKey("name"),
            "ports" => MergeByKey("containerPort"),
            "volumeMounts" => MergeByKey("mountPath"),
            "volumeDevices" => MergeByKey("devicePath"),
            // Upstream marks resizePolicy `listType=atomic` without a patch strategy.
            _ => Atomic,
        },
        _ => Atomic,
    }
}

/// The list strategy of built-in kinds at `path`; see [`crate::list_strategy`].
pub fn lookup(group: &str, kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    if !is_builtin(group, kind) {
        return Atomic;
    }
    // ObjectMeta lists.
    if let [prefix @ .., "metadata", last] = path {
        if object_meta_prefix(group, kind, prefix) {
            return match *last {
                "finalizers" => MergePrimitives,
                "ownerReferences" => MergeByKey("uid"),
                _ => Atomic,
            };
        }
    }
    // PodSpec lists.
    for prefix in pod_spec_prefixes(group, kind) {
        if path.len() > prefix.len() && path[..prefix.len()] == **prefix {
            return pod_spec_list(&path[prefix.len()..]);
        }
    }
    match (group, kind, path) {
        (_, _, ["status", "conditions"]) => MergeByKey("type"),
        ("", "Pod", ["status", "podIPs" | "hostIPs"]) => MergeByKey("ip"),
        ("", "Service", ["spec", "ports"]) => MergeByKey("port"),
        ("", "Node", ["spec", "podCIDRs"]) => MergePrimitives,
        ("", "Node", ["status", "addresses"]) => MergeByKey("type"),
        ("", "ServiceAccount", ["secrets"]) => MergeByKey("name"),
        _ => Atomic,
    }
}

/// Key fields of an associative list for server-side apply (upstream `listMapKey`s), with the
/// default used when an element leaves a key out. `None` when the list is not keyed.
pub(crate) fn associative_keys(
    group: &str,
    kind: &str,
    path: &[&str],
) -> Option<Vec<(&'static str, Option<Value>)>> {
    match lookup(group, kind, path) {
        ListStrategy::MergeByKey("containerPort") => Some(vec![
            ("containerPort", None),
            ("protocol", Some(Value::from("TCP"))),
        ]),
        ListStrategy::MergeByKey("port") => {
            Some(vec![("port", None), ("protocol", Some(Value::from("TCP")))])
        }
        ListStrategy::MergeByKey("topologyKey") => {
            Some(vec![("topologyKey", None), ("whenUnsatisfiable", None)])
        }
        ListStrategy::MergeByKey(key) => Some(vec![(key, None)]),
        _ => None,
    }
}

/// Maps (structs) that upstream marks `structType=atomic` / `mapType=atomic`: owned and applied
/// as a whole.
pub(crate) fn map_is_atomic(group: &str, kind: &str, path: &[&str]) -> bool {
    if !is_builtin(group, kind) {
        return false;
    }
    matches!(
        (group, kind, path),
        (
            "apps" | "batch",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job",
            ["spec", "selector"]
        ) | ("", "Service", ["spec", "selector"])
            | ("policy", "PodDisruptionBudget", ["spec", "selector"])
            | (
                _,
                _,
                [
                    ..,
                    "valueFrom",
                    "fieldRef" | "resourceFieldRef" | "secretKeyRef" | "configMapKeyRef"
                ]
            )
    )
}
