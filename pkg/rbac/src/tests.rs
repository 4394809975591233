//! Tests of the authorizer, the rules listing and the bootstrap policy.

use serde_json::{json, Value};

use crate::*;

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn res(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> RequestAttributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    RequestAttributes {
        verb: verb.into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
        path: String::new(),
    }
}

fn non_res(verb: &str, path: &str) -> RequestAttributes {
    RequestAttributes {
        verb: verb.into(),
        path: path.into(),
        ..RequestAttributes::default()
    }
}

fn role(namespace: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": rules})
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role_binding(namespace: &str, kind: &str, role: &str, subjects: Value) -> Value {
    json!({
        "kind": "RoleBinding",
        "metadata": {"name": format!("{role}-binding"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": subjects,
    })
}

fn cluster_role_binding(role: &str, subjects: Value) -> Value {
    json!({
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{role}-binding")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn user_subject(name: &str) -> Value {
    json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}])
}

fn allowed(policy: &PolicySnapshot, user: &UserInfo, attrs: &RequestAttributes) -> bool {
    authorize(policy, user, attrs) == Decision::Allow
}

fn deny(reason: &str) -> Decision {
    Decision::Deny {
        reason: reason.into(),
    }
}

fn bootstrap_policy() -> PolicySnapshot {
    PolicySnapshot {
        cluster_roles: bootstrap_cluster_roles(),
        cluster_role_bindings: bootstrap_cluster_role_bindings(),
        ..PolicySnapshot::default()
    }
}

/// The bootstrap policy with `role` stripped of its stored rules (so aggregation must be
/// resolved at evaluation time) and bound to `bob` in `default`.
fn bootstrap_with_bob_bound_to(cluster_role_name: &str) -> PolicySnapshot {
    let mut policy = bootstrap_policy();
    for r in &mut policy.cluster_roles {
        if r["aggregationRule"].is_object() {
            r["rules"] = json!([]);
        }
    }
    policy.role_bindings.push(role_binding(
        "default",
        "ClusterRole",
        cluster_role_name,
        user_subject("bob"),
    ));
    policy
}

fn pods_reader_policy() -> PolicySnapshot {
    PolicySnapshot {
        roles: vec![role(
            "default",
            "pod-reader",
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
        )],
        role_bindings: vec![role_binding(
            "default",
            "Role",
            "pod-reader",
            user_subject("bob"),
        )],
        ..PolicySnapshot::default()
    }
}

#[test]
fn masters_any_request_allowed() {
    let admin = user("admin", &["system:masters", "system:authenticated"]);
    let empty = PolicySnapshot::default();
    assert!(allowed(
        &empty,
        &admin,
        &res("delete", "apps", "deployments", "x", "y")
    ));
    assert!(allowed(&empty, &admin, &non_res("get", "/metrics")));
}

#[test]
fn no_bindings_request_denied_without_reason() {
    let bob = user("bob", &["system:authenticated"]);
    let empty = PolicySnapshot::default();
    assert_eq!(
        authorize(&empty, &bob, &res("list", "", "pods", "default", "")),
        deny("")
    );
}

#[test]
fn role_binding_to_role_grants_only_in_its_namespace() {
    let policy = pods_reader_policy();
    let bob = user("bob", &[]);
    assert!(allowed(
        &policy,
        &bob,
        &res("list", "", "pods", "default", "")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "pods", "default", "p")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("list", "", "pods", "other", "")
    ));
    assert!(!allowed(&policy, &bob, &res("list", "", "pods", "", "")));
    assert!(!allowed(
        &policy,
        &bob,
        &res("delete", "", "pods", "default", "p")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("list", "", "services", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("list", "apps", "pods", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &user("alice", &[]),
        &res("list", "", "pods", "default", "")
    ));
}

#[test]
fn role_binding_to_role_of_other_namespace_not_found() {
    let mut policy = pods_reader_policy();
    policy.role_bindings = vec![role_binding(
        "other",
        "Role",
        "pod-reader",
        user_subject("bob"),
    )];
    assert_eq!(
        authorize(
            &policy,
            &user("bob", &[]),
            &res("list", "", "pods", "other", "")
        ),
        deny("RBAC: role.rbac.authorization.k8s.io \"pod-reader\" not found")
    );
}

#[test]
fn role_binding_to_cluster_role_grants_only_in_its_namespace() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "secret-reader",
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]),
        )],
        role_bindings: vec![role_binding(
            "dev",
            "ClusterRole",
            "secret-reader",
            user_subject("bob"),
        )],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "secrets", "dev", "s")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "secrets", "prod", "s")
    ));
}

#[test]
fn cluster_role_binding_grants_everywhere() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "node-reader",
            json!([{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["nodes", "pods"]}]),
        )],
        cluster_role_bindings: vec![cluster_role_binding("node-reader", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(&policy, &bob, &res("list", "", "nodes", "", "")));
    assert!(allowed(&policy, &bob, &res("list", "", "pods", "", "")));
    assert!(allowed(
        &policy,
        &bob,
        &res("watch", "", "pods", "kube-system", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("delete", "", "nodes", "", "n1")
    ));
}

#[test]
fn resource_names_named_get_allowed_unnamed_denied() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "one-cm",
            json!([{"verbs": ["get", "list", "watch", "create", "update", "deletecollection"],
                    "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"]}]),
        )],
        cluster_role_bindings: vec![cluster_role_binding("one-cm", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "configmaps", "default", "settings")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("update", "", "configmaps", "default", "settings")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "configmaps", "default", "other")
    ));
    for verb in ["list", "watch", "create", "deletecollection"] {
        assert!(
            !allowed(&policy, &bob, &res(verb, "", "configmaps", "default", "")),
            "{verb} without a name must not match a rule with resourceNames"
        );
    }
}

#[test]
fn subresources_exact_and_star_slash_match() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "sub",
            json!([
                {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
                {"verbs": ["get", "update"], "apiGroups": ["*"], "resources": ["*/scale"]},
                {"verbs": ["get"], "apiGroups": [""], "resources": ["services/*"]},
            ]),
        )],
        cluster_role_bindings: vec![cluster_role_binding("sub", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "pods/log", "default", "p")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "pods", "default", "p")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "pods/exec", "default", "p")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("update", "apps", "deployments/scale", "d", "x")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "replicationcontrollers/scale", "d", "x")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "apps", "deployments", "d", "x")
    ));
    // Like upstream, `resource/*` is not a wildcard.
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "services/proxy", "d", "x")
    ));
}

#[test]
fn wildcards_star_matches_verbs_groups_resources_and_subresources() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "all-apps",
            json!([
                {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*"]},
                {"verbs": ["get"], "apiGroups": ["*"], "resources": ["widgets"]},
            ]),
        )],
        cluster_role_bindings: vec![cluster_role_binding("all-apps", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(
        &policy,
        &bob,
        &res("deletecollection", "apps", "deployments", "d", "")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("patch", "apps", "statefulsets/scale", "d", "s")
    ));
    assert!(!allowed(&policy, &bob, &res("get", "", "pods", "d", "p")));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "example.com", "widgets", "d", "w")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("list", "example.com", "widgets", "d", "")
    ));
}

#[test]
fn non_resource_urls_exact_and_trailing_star_prefix() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "urls",
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*", "/logs*"]},
                   {"verbs": ["post"], "nonResourceURLs": ["/webhook"]}]),
        )],
        cluster_role_bindings: vec![cluster_role_binding("urls", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(&policy, &bob, &non_res("get", "/healthz")));
    assert!(!allowed(&policy, &bob, &non_res("get", "/healthz/etcd")));
    assert!(allowed(&policy, &bob, &non_res("get", "/api/v1")));
    assert!(allowed(&policy, &bob, &non_res("get", "/api/")));
    assert!(!allowed(&policy, &bob, &non_res("get", "/api")));
    assert!(allowed(&policy, &bob, &non_res("get", "/logsfoo/bar")));
    assert!(!allowed(&policy, &bob, &non_res("post", "/healthz")));
    assert!(allowed(&policy, &bob, &non_res("post", "/webhook")));
    assert!(!allowed(&policy, &bob, &non_res("get", "/metrics")));
}

#[test]
fn non_resource_rules_in_role_binding_do_not_apply() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "urls",
            json!([{"verbs": ["get"], "nonResourceURLs": ["*"]}]),
        )],
        role_bindings: vec![role_binding(
            "default",
            "ClusterRole",
            "urls",
            user_subject("bob"),
        )],
        ..PolicySnapshot::default()
    };
    assert!(!allowed(
        &policy,
        &user("bob", &[]),
        &non_res("get", "/healthz")
    ));
}

#[test]
fn service_account_subject_matches_namespaced_username() {
    let policy = PolicySnapshot {
        roles: vec![role(
            "apps",
            "cm-editor",
            json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"]}]),
        )],
        role_bindings: vec![
            role_binding(
                "apps",
                "Role",
                "cm-editor",
                json!([{"kind": "ServiceAccount", "name": "builder", "namespace": "apps"}]),
            ),
            // Without a namespace the subject defaults to the binding's namespace.
            role_binding(
                "apps",
                "Role",
                "cm-editor",
                json!([{"kind": "ServiceAccount", "name": "deployer"}]),
            ),
        ],
        cluster_roles: vec![cluster_role(
            "pod-lister",
            json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]),
        )],
        // A ClusterRoleBinding SA subject needs its namespace.
        cluster_role_bindings: vec![cluster_role_binding(
            "pod-lister",
            json!([{"kind": "ServiceAccount", "name": "builder"}]),
        )],
    };
    let builder = user(
        "system:serviceaccount:apps:builder",
        &["system:serviceaccounts"],
    );
    let deployer = user("system:serviceaccount:apps:deployer", &[]);
    let other_ns = user("system:serviceaccount:other:builder", &[]);
    assert!(allowed(
        &policy,
        &builder,
        &res("create", "", "configmaps", "apps", "")
    ));
    assert!(allowed(
        &policy,
        &deployer,
        &res("delete", "", "configmaps", "apps", "c")
    ));
    assert!(!allowed(
        &policy,
        &other_ns,
        &res("create", "", "configmaps", "apps", "")
    ));
    assert!(!allowed(
        &policy,
        &user("builder", &[]),
        &res("create", "", "configmaps", "apps", "")
    ));
    assert!(!allowed(
        &policy,
        &builder,
        &res("list", "", "pods", "", "")
    ));
}

#[test]
fn group_subject_matches_member() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "ns-reader",
            json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["namespaces"]}]),
        )],
        cluster_role_bindings: vec![cluster_role_binding(
            "ns-reader",
            json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"}]),
        )],
        ..PolicySnapshot::default()
    };
    assert!(allowed(
        &policy,
        &user("carol", &["devs"]),
        &res("list", "", "namespaces", "", "")
    ));
    assert!(!allowed(
        &policy,
        &user("devs", &[]),
        &res("list", "", "namespaces", "", "")
    ));
}

#[test]
fn binding_to_missing_role_deny_reason_names_it() {
    let policy = PolicySnapshot {
        cluster_role_bindings: vec![cluster_role_binding("view", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert_eq!(
        authorize(&policy, &bob, &res("list", "", "pods", "default", "")),
        deny("RBAC: clusterrole.rbac.authorization.k8s.io \"view\" not found")
    );
    // A binding that does not apply to the user is not resolved.
    assert_eq!(
        authorize(
            &policy,
            &user("alice", &[]),
            &res("list", "", "pods", "default", "")
        ),
        deny("")
    );
}

#[test]
fn several_missing_roles_reason_aggregated_and_deduplicated() {
    let policy = PolicySnapshot {
        cluster_role_bindings: vec![
            cluster_role_binding("view", user_subject("bob")),
            cluster_role_binding("view", user_subject("bob")),
        ],
        role_bindings: vec![role_binding("default", "Role", "gone", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    assert_eq!(
        authorize(
            &policy,
            &user("bob", &[]),
            &res("list", "", "pods", "default", "")
        ),
        deny(
            "RBAC: [clusterrole.rbac.authorization.k8s.io \"view\" not found, \
             role.rbac.authorization.k8s.io \"gone\" not found]"
        )
    );
}

#[test]
fn missing_role_but_other_binding_allows() {
    let mut policy = pods_reader_policy();
    policy
        .cluster_role_bindings
        .push(cluster_role_binding("view", user_subject("bob")));
    assert!(allowed(
        &policy,
        &user("bob", &[]),
        &res("get", "", "pods", "default", "p")
    ));
}

#[test]
fn aggregation_view_reads_but_cannot_write_or_read_secrets() {
    let policy = bootstrap_with_bob_bound_to("view");
    let bob = user("bob", &["system:authenticated"]);
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "pods", "default", "p")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "pods/log", "default", "p")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("list", "apps", "deployments", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("create", "apps", "deployments", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("create", "", "pods", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("get", "", "secrets", "default", "s")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("list", "", "pods", "other", "")
    ));
}

#[test]
fn aggregation_edit_creates_deployments_and_reads_secrets() {
    let policy = bootstrap_with_bob_bound_to("edit");
    let bob = user("bob", &["system:authenticated"]);
    assert!(allowed(
        &policy,
        &bob,
        &res("create", "apps", "deployments", "default", "")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "secrets", "default", "s")
    ));
    // Via view, aggregated into edit.
    assert!(allowed(
        &policy,
        &bob,
        &res("list", "", "pods", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("create", RBAC_GROUP, "rolebindings", "default", "")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("update", "", "resourcequotas", "default", "q")
    ));
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

#[test]
fn aggregation_admin_creates_rolebindings() {
    let policy = bootstrap_with_bob_bound_to("admin");
    let bob = user("bob", &["system:authenticated"]);
    assert!(allowed(
        &policy,
        &bob,
        &res("create", RBAC_GROUP, "rolebindings", "default", "")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("create", "apps", "deployments", "default", "")
    ));
    assert!(allowed(
        &policy,
        &bob,
        &res("get", "", "pods", "default", "p")
    ));
    assert!(!allowed(
        &policy,
        &bob,
        &res("create", RBAC_GROUP, "clusterroles", "", "")
    ));
}

#[test]
fn aggregation_match_expressions_select_roles() {
    let policy = PolicySnapshot {
        cluster_roles: vec![
            json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [
                {"matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "skip", "operator": "DoesNotExist"},
                ]},
                {"matchExpressions": [
                    {"key": "extra", "operator": "Exists"},
                    {"key": "tier", "operator": "NotIn", "values": ["c"]},
                ]},
            ]}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            json!({"metadata": {"name": "a", "labels": {"tier": "a"}},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "b", "labels": {"tier": "b", "skip": "x"}},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
            json!({"metadata": {"name": "c", "labels": {"tier": "c", "extra": "1"}},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]}),
            json!({"metadata": {"name": "d", "labels": {"extra": "1"}},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["services"]}]}),
        ],
        cluster_role_bindings: vec![cluster_role_binding("agg", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    let bob = user("bob", &[]);
    assert!(allowed(&policy, &bob, &res("get", "", "pods", "", "x")));
    assert!(!allowed(&policy, &bob, &res("get", "", "secrets", "", "x")));
    assert!(!allowed(&policy, &bob, &res("get", "", "nodes", "", "x")));
    assert!(allowed(&policy, &bob, &res("get", "", "services", "", "x")));
    // The stored rules of an aggregated role are replaced by the aggregation.
    assert!(!allowed(&policy, &bob, &res("delete", "", "pods", "", "x")));
    let rules = effective_cluster_role_rules(&policy.cluster_roles, "agg").unwrap_or_default();
    assert_eq!(rules.len(), 2);
}

#[test]
fn aggregation_cycle_terminates() {
    let policy = PolicySnapshot {
        cluster_roles: vec![
            json!({"metadata": {"name": "x", "labels": {"agg": "y"}},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "x"}}]}}),
            json!({"metadata": {"name": "y", "labels": {"agg": "x"}},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "y"}}]}}),
        ],
        cluster_role_bindings: vec![cluster_role_binding("x", user_subject("bob"))],
        ..PolicySnapshot::default()
    };
    assert!(!allowed(
        &policy,
        &user("bob", &[]),
        &res("get", "", "pods", "", "p")
    ));
}

#[test]
fn basic_user_any_authenticated_creates_selfsubjectaccessreviews() {
    let policy = bootstrap_policy();
    let anyone = user("someone", &["system:authenticated"]);
    let authz = "authorization.k8s.io";
    assert!(allowed(
        &policy,
        &anyone,
        &res("create", authz, "selfsubjectaccessreviews", "", "")
    ));
    assert!(allowed(
        &policy,
        &anyone,
        &res("create", authz, "selfsubjectrulesreviews", "", "")
    ));
    assert!(allowed(
        &policy,
        &anyone,
        &res(
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            "",
            ""
        )
    ));
    assert!(allowed(&policy, &anyone, &non_res("get", "/apis/apps/v1")));
    assert!(!allowed(
        &policy,
        &anyone,
        &res("create", authz, "subjectaccessreviews", "", "")
    ));
    assert!(!allowed(
        &policy,
        &anyone,
        &res("list", "", "pods", "default", "")
    ));
    let anonymous = user("system:anonymous", &["system:unauthenticated"]);
    assert!(!allowed(
        &policy,
        &anonymous,
        &res("create", authz, "selfsubjectaccessreviews", "", "")
    ));
    assert!(allowed(&policy, &anonymous, &non_res("get", "/healthz")));
    assert!(allowed(&policy, &anonymous, &non_res("get", "/version")));
    assert!(!allowed(&policy, &anonymous, &non_res("get", "/api")));
}

#[test]
fn node_rules_let_kubelet_update_node_status_but_rbac_alone_grants_nodes_nothing() {
    let policy = bootstrap_policy();
    let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
    let rules = crate::node_rules();
    // the system:node binding has no subjects: the Node authorizer grants these
    assert!(!allowed(
        &policy,
        &node,
        &res("get", "", "secrets", "default", "s")
    ));
    assert!(!allowed(
        &policy,
        &node,
        &res("update", "", "nodes/status", "", "n1")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("update", "", "nodes/status", "", "n1")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("patch", "", "nodes/status", "", "n1")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("create", "", "nodes", "", "")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("watch", "", "pods", "", "")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("patch", "", "pods/status", "default", "p")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res(
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-node-lease",
            "n1"
        )
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("list", "discovery.k8s.io", "endpointslices", "", "")
    ));
    assert!(crate::rules_allow(
        &rules,
        &res("create", "", "serviceaccounts/token", "default", "sa")
    ));
    assert!(!crate::rules_allow(
        &rules,
        &res("delete", "", "nodes", "", "n2")
    ));
    assert!(!crate::rules_allow(
        &rules,
        &res("create", "", "secrets", "default", "")
    ));
}

#[test]
fn bootstrap_roles_carry_upstream_metadata() {
    let roles = bootstrap_cluster_roles();
    let names: Vec<&str> = roles
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    for expected in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:aggregate-to-admin",
        "system:aggregate-to-edit",
        "system:aggregate-to-view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:kube-dns",
        "system:node-proxier",
        "system:monitoring",
        "system:auth-delegator",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
    ] {
        assert!(names.contains(&expected), "missing {expected}");
    }
    for role in &roles {
        assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(role["kind"], "ClusterRole");
        assert_eq!(
            role["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        assert_eq!(
            role["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
            "true"
        );
    }
    let view = roles.iter().find(|r| r["metadata"]["name"] == "view");
    let view = view.cloned().unwrap_or_default();
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]
            ["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    // Pre-aggregated, with upstream's sorted lists.
    assert_eq!(view["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    let public = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "system:public-info-viewer")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        public["rules"][0]["nonResourceURLs"],
        json!(["/healthz", "/livez", "/readyz", "/version", "/version/"])
    );
}

#[test]
fn bootstrap_bindings_reference_existing_roles() {
    let roles = bootstrap_cluster_roles();
    let bindings = bootstrap_cluster_role_bindings();
    for binding in &bindings {
        let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
        assert!(
            roles.iter().any(|r| r["metadata"]["name"] == role),
            "binding to missing role {role}"
        );
        assert_eq!(binding["kind"], "ClusterRoleBinding");
        assert_eq!(
            binding["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
    }
    let subjects = |name: &str| -> Value {
        bindings
            .iter()
            .find(|b| b["metadata"]["name"] == name)
            .map(|b| b["subjects"].clone())
            .unwrap_or_default()
    };
    assert_eq!(subjects("cluster-admin")[0]["name"], "system:masters");
    assert_eq!(subjects("system:node"), serde_json::json!([]));
    assert_eq!(
        subjects("system:public-info-viewer")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        subjects("system:kube-dns")[0],
        json!({"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"})
    );
    let policy = bootstrap_policy();
    let scheduler = user("system:kube-scheduler", &["system:authenticated"]);
    assert!(allowed(
        &policy,
        &scheduler,
        &res("create", "", "pods/binding", "default", "p")
    ));
    let dns = user("system:serviceaccount:kube-system:kube-dns", &[]);
    assert!(allowed(
        &policy,
        &dns,
        &res("watch", "", "services", "", "")
    ));
    let proxy = user("system:kube-proxy", &[]);
    assert!(allowed(
        &policy,
        &proxy,
        &res("list", "discovery.k8s.io", "endpointslices", "", "")
    ));
}

#[test]
fn rules_for_masters_star_rules_first() {
    let policy = bootstrap_policy();
    let admin = user("admin", &["system:masters", "system:authenticated"]);
    let (resource, non_resource) = rules_for(&policy, &admin, "default");
    assert_eq!(
        resource.first(),
        Some(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}))
    );
    assert_eq!(
        non_resource.first(),
        Some(&json!({"verbs": ["*"], "nonResourceURLs": ["*"]}))
    );
    let (resource, non_resource) = rules_for(&PolicySnapshot::default(), &admin, "default");
    assert_eq!(
        resource,
        vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})]
    );
    assert_eq!(
        non_resource,
        vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})]
    );
}

#[test]
fn rules_for_view_user_lists_aggregated_and_basic_rules() {
    let policy = bootstrap_with_bob_bound_to("view");
    let bob = user("bob", &["system:authenticated"]);
    let (resource, non_resource) = rules_for(&policy, &bob, "default");
    assert!(resource.contains(&json!({
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    })));
    assert!(resource.contains(&json!({
        "verbs": ["get", "list", "watch"],
        "apiGroups": [""],
        "resources": ["namespaces"],
    })));
    assert!(resource.iter().any(|r| r["apiGroups"] == json!(["apps"])
        && r["resources"]
            .as_array()
            .is_some_and(|res| res.contains(&json!("deployments")))));
    assert!(!resource.iter().any(|r| r["verbs"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("create")))
        && r["apiGroups"] == json!(["apps"])));
    assert!(non_resource.iter().any(|r| r["nonResourceURLs"]
        .as_array()
        .is_some_and(|u| u.contains(&json!("/healthz")))));
    assert!(resource.iter().all(|r| r.get("nonResourceURLs").is_none()));

    // Another namespace only has the cluster-wide rules.
    let (elsewhere, _) = rules_for(&policy, &bob, "other");
    assert!(!elsewhere
        .iter()
        .any(|r| r["resources"] == json!(["namespaces"])));
    assert!(elsewhere.len() < resource.len());
}

#[test]
fn rules_for_view_reads_loadtests_edit_and_admin_start_them() {
    let bob = user("bob", &["system:authenticated"]);
    let on_loadtests = |rules: &[Value], verb: &str| {
        rules.iter().any(|r| {
            r["apiGroups"] == json!(["loadtest.mini.dev"])
                && r["resources"] == json!(["loadtests"])
                && r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.contains(&json!(verb)))
        })
    };
    let (view, _) = rules_for(&bootstrap_with_bob_bound_to("view"), &bob, "default");
    assert!(on_loadtests(&view, "watch"));
    assert!(!on_loadtests(&view, "create"));
    let (edit, _) = rules_for(&bootstrap_with_bob_bound_to("edit"), &bob, "default");
    assert!(on_loadtests(&edit, "create"));
    assert!(on_loadtests(&edit, "patch"));
    assert!(on_loadtests(&edit, "delete"));
    let (admin, _) = rules_for(&bootstrap_with_bob_bound_to("admin"), &bob, "default");
    assert!(on_loadtests(&admin, "create"));
}

#[test]
fn rules_for_resource_names_kept() {
    let policy = PolicySnapshot {
        cluster_roles: vec![cluster_role(
            "one-cm",
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}]),
        )],
        role_bindings: vec![role_binding(
            "ns",
            "ClusterRole",
            "one-cm",
            user_subject("bob"),
        )],
        ..PolicySnapshot::default()
    };
    let (resource, non_resource) = rules_for(&policy, &user("bob", &[]), "ns");
    assert_eq!(
        resource,
        vec![
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]})
        ]
    );
    assert!(non_resource.is_empty());
}
