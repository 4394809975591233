//! Unit tests of the node graph: reference extraction and reachability.

use serde_json::json;

use super::*;

fn pod(ns: &str, name: &str, node: &str, spec: Value) -> Value {
    let mut spec = spec;
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn k(ns: &str, name: &str) -> ObjKey {
    (ns.to_string(), name.to_string())
}

#[test]
fn pod_refs_every_reference_kind_is_found() {
    let p = pod(
        "ns",
        "web",
        "a",
        json!({
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}],
            "ephemeralContainers": [{"envFrom": [{"secretRef": {"name": "debug"}}]}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "configMap": {"name": "vol-cm"}},
                {"name": "p", "projected": {"sources": [
                    {"secret": {"name": "proj-secret"}}, {"configMap": {"name": "kube-root-ca.crt"}},
                    {"serviceAccountToken": {"path": "token"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                {"name": "x", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-secret"}}},
                {"name": "r", "rbd": {"secretRef": {"name": "rbd-secret"}}}
            ],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
        }),
    );
    let refs = pod_refs(&p).expect("bound pod").refs;
    for (kind, name) in [
        (Kind::ServiceAccount, "sa"),
        (Kind::Secret, "pull"),
        (Kind::Secret, "init-env"),
        (Kind::Secret, "env-secret"),
        (Kind::Secret, "debug"),
        (Kind::Secret, "vol-secret"),
        (Kind::Secret, "proj-secret"),
        (Kind::Secret, "csi-secret"),
        (Kind::Secret, "rbd-secret"),
        (Kind::ConfigMap, "env-cm"),
        (Kind::ConfigMap, "envfrom-cm"),
        (Kind::ConfigMap, "vol-cm"),
        (Kind::ConfigMap, "kube-root-ca.crt"),
        (Kind::PersistentVolumeClaim, "data"),
        (Kind::PersistentVolumeClaim, "web-e"),
        (Kind::ResourceClaim, "gpu-claim"),
    ] {
        assert!(refs.contains(&(kind, name.to_string())), "{kind:?} {name}");
    }
    assert_eq!(refs.len(), 16);
}

#[test]
fn pod_refs_unbound_pod_is_none() {
    assert!(pod_refs(&pod("ns", "p", "", json!({"serviceAccountName": "sa"}))).is_none());
}

#[test]
fn reaches_secret_only_from_the_node_its_pod_is_bound_to() {
    let mut g = Graph::default();
    let spec = json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]});
    g.set_pod(k("ns", "p"), Some(&pod("ns", "p", "a", spec)));
    assert!(g.reaches("a", Kind::Secret, "ns", "db"));
    assert!(!g.reaches("b", Kind::Secret, "ns", "db"));
    assert!(!g.reaches("a", Kind::Secret, "other", "db"));
    assert!(!g.reaches("a", Kind::ConfigMap, "ns", "db"));
}

#[test]
fn set_pod_rebinding_and_deletion_move_and_drop_edges() {
    let mut g = Graph::default();
    let spec = json!({"containers": [{"envFrom": [{"configMapRef": {"name": "cfg"}}]}]});
    g.set_pod(k("ns", "p"), Some(&pod("ns", "p", "a", spec.clone())));
    g.set_pod(k("ns", "q"), Some(&pod("ns", "q", "a", spec.clone())));
    g.set_pod(k("ns", "p"), None);
    assert!(
        g.reaches("a", Kind::ConfigMap, "ns", "cfg"),
        "q still uses it"
    );
    g.set_pod(k("ns", "q"), Some(&pod("ns", "q", "b", spec)));
    assert!(!g.reaches("a", Kind::ConfigMap, "ns", "cfg"));
    assert!(g.reaches("b", Kind::ConfigMap, "ns", "cfg"));
    g.set_pod(k("ns", "q"), None);
    assert!(!g.reaches("b", Kind::ConfigMap, "ns", "cfg"));
    assert_eq!(g.pod_count(), 0);
    assert!(g.edges.is_empty());
}

#[test]
fn reaches_volume_and_its_secrets_through_a_bound_claim() {
    let mut g = Graph::default();
    let spec = json!({"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]});
    g.set_pod(k("ns", "p"), Some(&pod("ns", "p", "a", spec)));
    let pv = json!({"metadata": {"name": "pv1"}, "spec": {
        "claimRef": {"namespace": "ns", "name": "data"},
        "csi": {"driver": "d", "nodeStageSecretRef": {"name": "stage"},
                "nodePublishSecretRef": {"name": "pub", "namespace": "storage"}}}});
    g.set_volume("pv1", Some(&pv));
    assert!(!g.reaches_volume("a", "pv1"), "claim not bound yet");
    g.set_claim(
        k("ns", "data"),
        Some(&json!({"spec": {"volumeName": "pv1"}})),
    );
    assert!(g.reaches("a", Kind::PersistentVolumeClaim, "ns", "data"));
    assert!(g.reaches_volume("a", "pv1"));
    assert!(!g.reaches_volume("b", "pv1"));
    assert!(g.reaches("a", Kind::Secret, "ns", "stage"));
    assert!(g.reaches("a", Kind::Secret, "storage", "pub"));
    assert!(!g.reaches("b", Kind::Secret, "storage", "pub"));
    g.set_claim(k("ns", "data"), None);
    assert!(!g.reaches_volume("a", "pv1"));
    assert!(!g.reaches("a", Kind::Secret, "storage", "pub"));
}

fn class(name: &str, controller: &str, default: bool) -> Value {
    json!({"metadata": {"name": name, "annotations":
            {"ingressclass.kubernetes.io/is-default-class": default.to_string()}},
           "spec": {"controller": controller}})
}

#[test]
fn is_mini_tls_secret_follows_the_ingress_class() {
    let mut g = Graph::default();
    let ing = |class: Option<&str>, secret: &str| {
        let mut i = json!({"spec": {"tls": [{"hosts": ["a.example"], "secretName": secret}]}});
        if let Some(c) = class {
            i["spec"]["ingressClassName"] = json!(c);
        }
        i
    };
    g.set_class("mini", Some(&class("mini", MINI_INGRESS_CONTROLLER, false)));
    g.set_class(
        "nginx",
        Some(&class("nginx", "k8s.io/ingress-nginx", false)),
    );
    g.set_ingress(k("ns", "a"), Some(&ing(Some("mini"), "a-tls")));
    g.set_ingress(k("ns", "b"), Some(&ing(Some("nginx"), "b-tls")));
    g.set_ingress(k("ns", "c"), Some(&ing(None, "c-tls")));
    assert!(g.is_mini_tls_secret("ns", "a-tls"));
    assert!(!g.is_mini_tls_secret("other", "a-tls"));
    assert!(!g.is_mini_tls_secret("ns", "b-tls"));
    assert!(!g.is_mini_tls_secret("ns", "c-tls"), "no default class");
    g.set_class("mini", Some(&class("mini", MINI_INGRESS_CONTROLLER, true)));
    assert!(g.is_mini_tls_secret("ns", "c-tls"), "mini is the default");
    g.set_ingress(k("ns", "a"), None);
    assert!(!g.is_mini_tls_secret("ns", "a-tls"));
    g.set_class("mini", None);
    assert!(!g.is_mini_tls_secret("ns", "c-tls"));
}

#[test]
fn resource_key_of_splits_namespaced_and_cluster_keys() {
    assert_eq!(
        Resource::Pods.key_of("/registry/core/pods/ns/p"),
        Some(k("ns", "p"))
    );
    assert_eq!(
        Resource::Volumes.key_of("/registry/core/persistentvolumes/pv1"),
        Some(k("", "pv1"))
    );
    assert_eq!(Resource::Pods.key_of("/registry/core/secrets/ns/p"), None);
}
