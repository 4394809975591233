//! RBAC authorizer and the default cluster roles.
//!
//! Implements upstream's `plugin/pkg/auth/authorizer/rbac` semantics over RBAC objects kept
//! as `rbac.authorization.k8s.io/v1` JSON, plus the bootstrap policy the API server seeds.

mod bootstrap;
mod resolver;
mod rule;
mod selector;

use serde_json::{json, Value};

pub use bootstrap::{bootstrap_cluster_role_bindings, bootstrap_cluster_roles, node_rules};
pub use resolver::ResolveError;

use resolver::{aggregate_message, visit_rules_for};

/// The group whose members are always allowed (upstream's `user.SystemPrivilegedGroup`).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The authenticated user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    /// Includes `system:authenticated` for authenticated users.
    pub groups: Vec<String>,
}

/// What a request does, as upstream's authorizer.Attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestAttributes {
    /// get, list, watch, create, update, patch, delete, deletecollection, or for non-resource
    /// requests the lowercase HTTP method.
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty for cluster-scoped requests.
    pub namespace: String,
    /// Empty when not naming one object.
    pub name: String,
    /// The URL path, for non-resource requests.
    pub path: String,
}

/// The RBAC objects in force, as stored JSON.
#[derive(Debug, Clone, Default)]
pub struct PolicySnapshot {
    pub roles: Vec<Value>,
    pub cluster_roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// `reason` is the upstream-style explanation appended to the 403 message.
    Deny {
        reason: String,
    },
}

/// Upstream RBAC semantics; members of `system:masters` are always allowed.
///
/// Bindings are visited until a rule allows the request; otherwise the deny reason is
/// `RBAC: ` followed by the errors met on the way (e.g. a binding to a missing role), or
/// empty when there were none.
pub fn authorize(policy: &PolicySnapshot, user: &UserInfo, attrs: &RequestAttributes) -> Decision {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Decision::Allow;
    }
    let mut allowed = false;
    let mut errors = Vec::new();
    visit_rules_for(policy, user, &attrs.namespace, |item| {
        match item {
            Ok(rule) => {
                if rule.allows(attrs) {
                    allowed = true;
                    return false;
                }
            }
            Err(err) => errors.push(err),
        }
        true
    });
    if allowed {
        return Decision::Allow;
    }
    let reason = if errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", aggregate_message(&errors))
    };
    Decision::Deny { reason }
}

/// Whether any of `rules` (PolicyRule JSON) grants the request (upstream's `RulesAllow`).
pub fn rules_allow(rules: &[Value], attrs: &RequestAttributes) -> bool {
    rules
        .iter()
        .any(|r| rule::PolicyRule::from_json(r).allows(attrs))
}

/// The rules that apply to `user` in `namespace`, for SelfSubjectRulesReview
/// (`status.resourceRules`, `status.nonResourceRules` as JSON arrays).
///
/// Like upstream's union of the privileged-group rule resolver and RBAC: members of
/// `system:masters` get the `*` rules first, followed by whatever their bindings grant.
/// A rule with resources yields a resource rule, one with nonResourceURLs a non-resource
/// rule. Bindings to missing roles contribute nothing.
pub fn rules_for(
    policy: &PolicySnapshot,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<Value>, Vec<Value>) {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    visit_rules_for(policy, user, namespace, |item| {
        if let Ok(rule) = item {
            if !rule.resources.is_empty() {
                resource_rules.push(rule.to_resource_rule_json());
            }
            if !rule.non_resource_urls.is_empty() {
                non_resource_rules.push(rule.to_non_resource_rule_json());
            }
        }
        true
    });
    (resource_rules, non_resource_rules)
}

/// The effective rules of the ClusterRole `name` as PolicyRule JSON: its `rules`, or for a
/// role with an `aggregationRule` the union of the rules of the ClusterRoles its selectors
/// match (what upstream's aggregation controller writes into it). `None` if no such role.
pub fn effective_cluster_role_rules(cluster_roles: &[Value], name: &str) -> Option<Vec<Value>> {
    let role = cluster_roles.iter().find(|r| {
        r.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            == Some(name)
    })?;
    Some(
        resolver::cluster_role_rules(cluster_roles, role)
            .iter()
            .map(rule::PolicyRule::to_json)
            .collect(),
    )
}

#[cfg(test)]
mod tests;
