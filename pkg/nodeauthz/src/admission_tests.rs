//! Unit tests of the NodeRestriction decisions.

use serde_json::json;

use super::*;

fn write<'a>(
    operation: Operation,
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    name: &'a str,
    old: Option<&'a Value>,
    new: Option<&'a Value>,
) -> Write<'a> {
    Write {
        node: "a",
        operation,
        group,
        resource,
        subresource,
        namespace: "ns",
        name,
        old,
        new,
        own_node: None,
    }
}

fn node_obj(labels: Value, taints: Value) -> Value {
    json!({"metadata": {"name": "a", "labels": labels}, "spec": {"taints": taints}})
}

#[test]
fn admit_node_other_node_is_refused() {
    let n = node_obj(json!({}), json!([]));
    let err = admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "b",
        Some(&n),
        Some(&n),
    ))
    .expect_err("other node");
    assert_eq!(err, "node \"a\" is not allowed to modify node \"b\"");
    assert!(admit(&write(
        Operation::Delete,
        "",
        "nodes",
        "",
        "b",
        Some(&n),
        None
    ))
    .is_err());
    assert!(admit(&write(
        Operation::Update,
        "",
        "nodes",
        "status",
        "a",
        Some(&n),
        Some(&n)
    ))
    .is_ok());
}

#[test]
fn admit_node_restriction_labels_are_refused_on_create_and_update() {
    let plain = node_obj(
        json!({"kubernetes.io/hostname": "a", "example.com/x": "1"}),
        json!([]),
    );
    assert!(admit(&write(
        Operation::Create,
        "",
        "nodes",
        "",
        "a",
        None,
        Some(&plain)
    ))
    .is_ok());
    let reserved = node_obj(
        json!({"node-restriction.kubernetes.io/x": "1", "kubernetes.io/hostname": "a"}),
        json!([]),
    );
    let err = admit(&write(
        Operation::Create,
        "",
        "nodes",
        "",
        "a",
        None,
        Some(&reserved),
    ))
    .expect_err("reserved label");
    assert!(err.contains("node-restriction.kubernetes.io/x"), "{err}");
    let err = admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "a",
        Some(&plain),
        Some(&reserved),
    ))
    .expect_err("reserved label");
    assert!(err.contains("not allowed to modify labels"), "{err}");
    // removing one an admin set is a modification too
    assert!(admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "a",
        Some(&reserved),
        Some(&plain)
    ))
    .is_err());
    // an admin-set one left alone is fine
    assert!(admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "a",
        Some(&reserved),
        Some(&reserved)
    ))
    .is_ok());
}

#[test]
fn forbidden_labels_match_upstream_domains() {
    assert_eq!(
        forbidden_labels([
            "node-role.kubernetes.io/control-plane",
            "foo.node-restriction.kubernetes.io/x",
            "node.kubernetes.io/instance-type",
            "x.kubelet.kubernetes.io/y",
            "topology.kubernetes.io/zone",
            "example.k8s.io/z",
            "mini.dev/pool",
            "plain",
        ]),
        vec![
            "example.k8s.io/z".to_string(),
            "foo.node-restriction.kubernetes.io/x".to_string(),
            "node-role.kubernetes.io/control-plane".to_string(),
        ]
    );
}

#[test]
fn admit_node_taint_changes_are_refused() {
    let old = node_obj(json!({}), json!([{"key": "k", "effect": "NoSchedule"}]));
    let new = node_obj(json!({}), json!([]));
    let err = admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "a",
        Some(&old),
        Some(&new),
    ))
    .expect_err("taints");
    assert_eq!(err, "node \"a\" is not allowed to modify taints");
    let none = json!({"metadata": {"name": "a"}, "spec": {}});
    assert!(admit(&write(
        Operation::Update,
        "",
        "nodes",
        "",
        "a",
        Some(&none),
        Some(&new)
    ))
    .is_ok());
    // registering with taints is fine
    assert!(admit(&write(
        Operation::Create,
        "",
        "nodes",
        "",
        "a",
        None,
        Some(&old)
    ))
    .is_ok());
}

fn bound_pod(node: &str) -> Value {
    json!({"metadata": {"name": "p", "uid": "u1", "labels": {"app": "x"}}, "spec": {"nodeName": node}})
}

#[test]
fn admit_pod_status_only_for_own_pods_without_label_changes() {
    let mine = bound_pod("a");
    let theirs = bound_pod("b");
    assert!(admit(&write(
        Operation::Update,
        "",
        "pods",
        "status",
        "p",
        Some(&mine),
        Some(&mine)
    ))
    .is_ok());
    assert!(admit(&write(
        Operation::Update,
        "",
        "pods",
        "status",
        "p",
        Some(&theirs),
        Some(&theirs)
    ))
    .is_err());
    let mut relabelled = mine.clone();
    relabelled["metadata"]["labels"]["app"] = json!("y");
    assert!(admit(&write(
        Operation::Update,
        "",
        "pods",
        "status",
        "p",
        Some(&mine),
        Some(&relabelled)
    ))
    .is_err());
}

#[test]
fn admit_pod_delete_and_eviction_only_for_own_pods() {
    let mine = bound_pod("a");
    let theirs = bound_pod("b");
    assert!(admit(&write(
        Operation::Delete,
        "",
        "pods",
        "",
        "p",
        Some(&mine),
        None
    ))
    .is_ok());
    assert!(admit(&write(
        Operation::Delete,
        "",
        "pods",
        "",
        "p",
        Some(&theirs),
        None
    ))
    .is_err());
    let ev = json!({"metadata": {"name": "p"}});
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "eviction",
        "p",
        Some(&mine),
        Some(&ev)
    ))
    .is_ok());
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "eviction",
        "p",
        Some(&theirs),
        Some(&ev)
    ))
    .is_err());
    assert!(admit(&write(
        Operation::Update,
        "",
        "pods",
        "",
        "p",
        Some(&mine),
        Some(&mine)
    ))
    .is_err());
}

#[test]
fn admit_pod_create_only_plain_mirror_pods_bound_to_itself() {
    let mirror = |spec: Value| json!({"metadata": {"name": "m", "annotations": {MIRROR_POD_ANNOTATION: "h"}}, "spec": spec});
    let ok = mirror(json!({"nodeName": "a", "containers": [{"name": "c"}]}));
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "",
        "m",
        None,
        Some(&ok)
    ))
    .is_ok());
    let plain = json!({"metadata": {"name": "m"}, "spec": {"nodeName": "a"}});
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "",
        "m",
        None,
        Some(&plain)
    ))
    .is_err());
    let elsewhere = mirror(json!({"nodeName": "b"}));
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "",
        "m",
        None,
        Some(&elsewhere)
    ))
    .is_err());
    let secret =
        mirror(json!({"nodeName": "a", "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}));
    let err = admit(&write(
        Operation::Create,
        "",
        "pods",
        "",
        "m",
        None,
        Some(&secret),
    ))
    .expect_err("secret");
    assert!(err.contains("reference secrets"), "{err}");
    let sa = mirror(json!({"nodeName": "a", "serviceAccountName": "default"}));
    assert!(admit(&write(
        Operation::Create,
        "",
        "pods",
        "",
        "m",
        None,
        Some(&sa)
    ))
    .is_err());
}

#[test]
fn admit_token_only_bound_to_own_existing_pod() {
    let req = |uid: &str| json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": uid}}});
    let mine = bound_pod("a");
    let theirs = bound_pod("b");
    let ok = req("u1");
    assert!(admit(&write(
        Operation::Create,
        "",
        "serviceaccounts",
        "token",
        "sa",
        Some(&mine),
        Some(&ok)
    ))
    .is_ok());
    assert!(admit(&write(
        Operation::Create,
        "",
        "serviceaccounts",
        "token",
        "sa",
        Some(&theirs),
        Some(&ok)
    ))
    .is_err());
    let stale = req("u2");
    assert!(admit(&write(
        Operation::Create,
        "",
        "serviceaccounts",
        "token",
        "sa",
        Some(&mine),
        Some(&stale)
    ))
    .is_err());
    let unbound = json!({"spec": {}});
    let err = admit(&write(
        Operation::Create,
        "",
        "serviceaccounts",
        "token",
        "sa",
        Some(&mine),
        Some(&unbound),
    ))
    .expect_err("unbound");
    assert_eq!(err, "node requested token not bound to a pod");
    assert_eq!(token_bound_pod(&ok), Some("p"));
}

#[test]
fn admit_lease_create_only_own_name() {
    let lease = |name: &str| json!({"metadata": {"name": name}});
    let mut w = write(
        Operation::Create,
        "coordination.k8s.io",
        "leases",
        "",
        "",
        None,
        None,
    );
    w.namespace = NODE_LEASE_NAMESPACE;
    let own = lease("a");
    w.new = Some(&own);
    assert!(admit(&w).is_ok());
    let other = lease("b");
    w.new = Some(&other);
    assert!(admit(&w).is_err());
}

#[test]
fn admit_claim_status_only_capacity_and_conditions() {
    let old =
        json!({"metadata": {"name": "c", "resourceVersion": "1"}, "status": {"phase": "Bound"}});
    let resized = json!({"metadata": {"name": "c"}, "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}}});
    let rephased = json!({"metadata": {"name": "c"}, "status": {"phase": "Lost"}});
    assert!(admit(&write(
        Operation::Update,
        "",
        "persistentvolumeclaims",
        "status",
        "c",
        Some(&old),
        Some(&resized)
    ))
    .is_ok());
    assert!(admit(&write(
        Operation::Update,
        "",
        "persistentvolumeclaims",
        "status",
        "c",
        Some(&old),
        Some(&rephased)
    ))
    .is_err());
}
