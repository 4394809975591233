//! Unit tests of the Node authorizer's decisions.

use serde_json::json;

use super::*;

fn attrs(
    verb: &str,
    group: &str,
    resource: &str,
    sub: &str,
    ns: &str,
    name: &str,
) -> RequestAttributes {
    RequestAttributes {
        verb: verb.into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
        path: String::new(),
    }
}

fn graph() -> Graph {
    let mut g = Graph::default();
    let pod = json!({"metadata": {"namespace": "ns", "name": "p"}, "spec": {
        "nodeName": "a", "serviceAccountName": "sa",
        "volumes": [{"name": "s", "secret": {"secretName": "db"}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
    g.set_pod(("ns".into(), "p".into()), Some(&pod));
    g.set_claim(
        ("ns".into(), "data".into()),
        Some(&json!({"spec": {"volumeName": "pv1"}})),
    );
    g
}

fn allowed(node: &str, a: &RequestAttributes) -> bool {
    decide(&graph(), node, a, &mini_rbac::node_rules()).decision == Decision::Allow
}

#[test]
fn node_identity_needs_prefix_and_group() {
    let u = |name: &str, groups: &[&str]| UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    assert_eq!(
        node_identity(&u("system:node:a", &[NODES_GROUP])),
        Some("a")
    );
    assert_eq!(
        node_identity(&u("system:node:a", &["system:authenticated"])),
        None
    );
    assert_eq!(node_identity(&u("alice", &[NODES_GROUP])), None);
    assert_eq!(node_identity(&u("system:node:", &[NODES_GROUP])), Some(""));
}

#[test]
fn decide_secret_of_own_pod_allowed_other_nodes_refused() {
    assert!(allowed("a", &attrs("get", "", "secrets", "", "ns", "db")));
    let out = decide(
        &graph(),
        "b",
        &attrs("get", "", "secrets", "", "ns", "db"),
        &mini_rbac::node_rules(),
    );
    assert_eq!(
        out.decision,
        Decision::NoOpinion {
            reason: "no relationship found between node 'b' and this object".into()
        }
    );
    assert!(out.query.is_some(), "a graph denial is re-checked");
}

#[test]
fn decide_secret_list_needs_a_name_and_writes_are_refused() {
    assert!(allowed("a", &attrs("watch", "", "secrets", "", "ns", "db")));
    assert!(!allowed("a", &attrs("list", "", "secrets", "", "ns", "")));
    assert!(!allowed(
        "a",
        &attrs("update", "", "secrets", "", "ns", "db")
    ));
    assert!(!allowed("a", &attrs("get", "", "secrets", "", "", "db")));
    let out = decide(
        &graph(),
        "a",
        &attrs("list", "", "secrets", "", "ns", ""),
        &mini_rbac::node_rules(),
    );
    assert!(out.query.is_none(), "not a graph question");
}

#[test]
fn decide_claims_volumes_and_tokens_follow_the_graph() {
    assert!(allowed(
        "a",
        &attrs("get", "", "persistentvolumeclaims", "", "ns", "data")
    ));
    assert!(!allowed(
        "a",
        &attrs("list", "", "persistentvolumeclaims", "", "ns", "data")
    ));
    assert!(!allowed(
        "b",
        &attrs("get", "", "persistentvolumeclaims", "", "ns", "data")
    ));
    assert!(allowed(
        "a",
        &attrs(
            "patch",
            "",
            "persistentvolumeclaims",
            "status",
            "ns",
            "data"
        )
    ));
    assert!(allowed(
        "a",
        &attrs("get", "", "persistentvolumes", "", "", "pv1")
    ));
    assert!(!allowed(
        "b",
        &attrs("get", "", "persistentvolumes", "", "", "pv1")
    ));
    assert!(allowed(
        "a",
        &attrs("create", "", "serviceaccounts", "token", "ns", "sa")
    ));
    assert!(!allowed(
        "a",
        &attrs("create", "", "serviceaccounts", "token", "ns", "other")
    ));
    assert!(!allowed(
        "b",
        &attrs("create", "", "serviceaccounts", "token", "ns", "sa")
    ));
    assert!(!allowed(
        "a",
        &attrs("get", "", "serviceaccounts", "", "ns", "sa")
    ));
}

#[test]
fn decide_lease_only_own_in_node_lease_namespace() {
    let l = |verb: &str, ns: &str, name: &str| {
        attrs(verb, "coordination.k8s.io", "leases", "", ns, name)
    };
    assert!(allowed("a", &l("update", NODE_LEASE_NAMESPACE, "a")));
    assert!(allowed("a", &l("create", NODE_LEASE_NAMESPACE, "")));
    assert!(!allowed("a", &l("update", NODE_LEASE_NAMESPACE, "b")));
    assert!(!allowed("a", &l("update", "kube-system", "a")));
    assert!(!allowed("a", &l("list", NODE_LEASE_NAMESPACE, "")));
}

#[test]
fn decide_other_resources_follow_the_node_rules() {
    assert!(allowed("a", &attrs("watch", "", "pods", "", "", "")));
    assert!(
        allowed("a", &attrs("patch", "", "nodes", "", "", "b")),
        "admission refuses it"
    );
    assert!(allowed(
        "a",
        &attrs("get", "registry.mini.dev", "repositories", "", "ns", "r")
    ));
    assert!(!allowed("a", &attrs("delete", "", "nodes", "", "", "a")));
    assert!(!allowed(
        "a",
        &attrs("create", "", "namespaces", "", "", "")
    ));
    assert!(
        !allowed("", &attrs("watch", "", "pods", "", "", "")),
        "unknown node"
    );
}
