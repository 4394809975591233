//! RBAC authorizer and the default cluster roles.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

use serde_json::Value;

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
    Deny { reason: String },
}

/// Upstream RBAC semantics; members of `system:masters` are always allowed.
pub fn authorize(policy: &PolicySnapshot, user: &UserInfo, attrs: &RequestAttributes) -> Decision { todo!() }

/// The rules that apply to `user` in `namespace`, for SelfSubjectRulesReview
/// (`status.resourceRules`, `status.nonResourceRules` as JSON arrays).
pub fn rules_for(policy: &PolicySnapshot, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>) { todo!() }

/// The bootstrap ClusterRoles (cluster-admin, admin, edit, view, system:discovery,
/// system:basic-user, system:public-info-viewer, system:node, system:kube-scheduler,
/// system:kube-controller-manager, ...), as JSON objects with apiVersion and kind.
pub fn bootstrap_cluster_roles() -> Vec<Value> { todo!() }

/// The bootstrap ClusterRoleBindings (cluster-admin → system:masters, system:discovery →
/// system:authenticated, system:node → system:nodes, ...).
pub fn bootstrap_cluster_role_bindings() -> Vec<Value> { todo!() }
