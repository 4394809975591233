//! Resolving bindings to rules: subject matching, role lookup and ClusterRole aggregation.

use serde_json::Value;

use crate::rule::PolicyRule;
use crate::selector::selector_matches;
use crate::{PolicySnapshot, UserInfo};

/// Why a binding's rules could not be resolved; the `Display` form is upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("clusterrole.rbac.authorization.k8s.io \"{0}\" not found")]
    ClusterRoleNotFound(String),
    #[error("role.rbac.authorization.k8s.io \"{0}\" not found")]
    RoleNotFound(String),
    #[error("unsupported role reference kind: \"{0}\"")]
    UnsupportedRoleRefKind(String),
}

/// Formats errors like apimachinery's `utilerrors.NewAggregate(...).Error()`: one message
/// as is, several deduplicated, comma-separated and bracketed.
pub(crate) fn aggregate_message(errors: &[ResolveError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for err in errors {
        let msg = err.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = obj;
    for key in path {
        match cur.get(key) {
            Some(v) => cur = v,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn name_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

fn namespace_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "namespace"])
}

/// Whether a subject of a binding in `binding_namespace` ("" for ClusterRoleBindings)
/// names `user`. ServiceAccount subjects default to the binding's namespace.
fn subject_applies(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let name = str_at(subject, &["name"]);
    match str_at(subject, &["kind"]) {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let sa_namespace = match str_at(subject, &["namespace"]) {
                "" => binding_namespace,
                ns => ns,
            };
            if sa_namespace.is_empty() {
                return false;
            }
            user.name
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(ns, sa)| ns == sa_namespace && sa == name)
        }
        _ => false,
    }
}

fn binding_applies(binding: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| subject_applies(s, user, binding_namespace))
        })
}

fn find_cluster_role<'a>(cluster_roles: &'a [Value], name: &str) -> Option<&'a Value> {
    cluster_roles.iter().find(|r| name_of(r) == name)
}

/// The effective rules of `role` among `cluster_roles`: its own rules, or, when it has an
/// `aggregationRule`, the deduplicated union of the (recursively effective) rules of every
/// other ClusterRole matched by one of its `clusterRoleSelectors` — what upstream's
/// aggregation controller would have written into it.
pub(crate) fn cluster_role_rules(cluster_roles: &[Value], role: &Value) -> Vec<PolicyRule> {
    let mut visiting = Vec::new();
    effective_rules(cluster_roles, role, &mut visiting)
}

fn effective_rules<'a>(
    cluster_roles: &'a [Value],
    role: &'a Value,
    visiting: &mut Vec<&'a str>,
) -> Vec<PolicyRule> {
    let Some(aggregation) = role.get("aggregationRule").filter(|a| !a.is_null()) else {
        return PolicyRule::list_from_role(role);
    };
    let own_name = name_of(role);
    visiting.push(own_name);
    let selectors = aggregation
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rules: Vec<PolicyRule> = Vec::new();
    // Upstream sorts matching roles by name before merging.
    let mut members: Vec<&Value> = cluster_roles
        .iter()
        .filter(|candidate| {
            let name = name_of(candidate);
            name != own_name
                && !visiting.contains(&name)
                && selectors.iter().any(|s| {
                    selector_matches(s, candidate.get("metadata").and_then(|m| m.get("labels")))
                })
        })
        .collect();
    members.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    for member in members {
        for rule in effective_rules(cluster_roles, member, visiting) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    visiting.pop();
    rules
}

/// The rules a binding's `roleRef` points at. `binding_namespace` is "" for
/// ClusterRoleBindings; a RoleBinding may reference a Role of its own namespace or a
/// ClusterRole.
fn role_ref_rules(
    policy: &PolicySnapshot,
    binding: &Value,
    binding_namespace: &str,
) -> Result<Vec<PolicyRule>, ResolveError> {
    let kind = str_at(binding, &["roleRef", "kind"]);
    let name = str_at(binding, &["roleRef", "name"]);
    match kind {
        "ClusterRole" => find_cluster_role(&policy.cluster_roles, name)
            .map(|role| cluster_role_rules(&policy.cluster_roles, role))
            .ok_or_else(|| ResolveError::ClusterRoleNotFound(name.to_owned())),
        "Role" => policy
            .roles
            .iter()
            .find(|r| name_of(r) == name && namespace_of(r) == binding_namespace)
            .map(PolicyRule::list_from_role)
            .ok_or_else(|| ResolveError::RoleNotFound(name.to_owned())),
        other => Err(ResolveError::UnsupportedRoleRefKind(other.to_owned())),
    }
}

/// Visits the rules granted to `user` in `namespace` (ClusterRoleBindings first, then the
/// namespace's RoleBindings when `namespace` is not empty), like upstream's
/// `VisitRulesFor`. The visitor returns `false` to stop early.
pub(crate) fn visit_rules_for(
    policy: &PolicySnapshot,
    user: &UserInfo,
    namespace: &str,
    mut visitor: impl FnMut(Result<&PolicyRule, ResolveError>) -> bool,
) {
    for binding in &policy.cluster_role_bindings {
        if !binding_applies(binding, user, "") {
            continue;
        }
        match role_ref_rules(policy, binding, "") {
            Ok(rules) => {
                for rule in &rules {
                    if !visitor(Ok(rule)) {
                        return;
                    }
                }
            }
            Err(err) => {
                if !visitor(Err(err)) {
                    return;
                }
            }
        }
    }
    if namespace.is_empty() {
        return;
    }
    for binding in &policy.role_bindings {
        if namespace_of(binding) != namespace || !binding_applies(binding, user, namespace) {
            continue;
        }
        match role_ref_rules(policy, binding, namespace) {
            Ok(rules) => {
                for rule in &rules {
                    if !visitor(Ok(rule)) {
                        return;
                    }
                }
            }
            Err(err) => {
                if !visitor(Err(err)) {
                    return;
                }
            }
        }
    }
}
