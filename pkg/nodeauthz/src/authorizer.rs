//! The Node authorizer's decision for one request, over a graph: reads of secrets,
//! configmaps, claims and volumes only through the node's pods, tokens only for their service
//! accounts, its own Lease; everything else by the static node rules, as upstream.

use mini_rbac::{RequestAttributes, UserInfo};

use crate::graph::{Graph, Kind};

/// The group every node's credentials carry.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of a node's credentials.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of the nodes' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is: `Some(name)` for `system:node:<name>` in `system:nodes` (`name` may be
/// empty: a node credential that names no node), `None` for everybody else.
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// What the Node authorizer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed here; the next authorizer (RBAC) decides. `reason` joins the 403 message.
    NoOpinion {
        reason: String,
    },
}

fn no_opinion(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion {
        reason: reason.into(),
    }
}

/// What a request would need the graph for, so a denial can be re-checked against the store
/// before it is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphQuery {
    /// `kind` `namespace/name` reached through the node's pods (`tls`: or the TLS secret of
    /// an Ingress mini serves).
    Object {
        kind: Kind,
        namespace: String,
        name: String,
        tls: bool,
    },
    /// The PV `name`.
    Volume { name: String },
}

/// The outcome of [`decide`]: a decision, and for a graph denial what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub query: Option<GraphQuery>,
}

impl From<Decision> for Outcome {
    fn from(decision: Decision) -> Self {
        Outcome {
            decision,
            query: None,
        }
    }
}

/// The Node authorizer over `graph` for `node` (see [`node_identity`]).
pub fn decide(
    graph: &Graph,
    node: &str,
    attrs: &RequestAttributes,
    node_rules: &[serde_json::Value],
) -> Outcome {
    if node.is_empty() {
        return no_opinion("unknown node for user").into();
    }
    if attrs.resource_request {
        let sub = attrs.subresource.as_str();
        match (attrs.api_group.as_str(), attrs.resource.as_str()) {
            ("", "secrets") => return read_object(graph, node, Kind::Secret, attrs, true),
            ("", "configmaps") => return read_object(graph, node, Kind::ConfigMap, attrs, false),
            ("", "persistentvolumeclaims") if sub == "status" => {
                if !matches!(attrs.verb.as_str(), "update" | "patch") {
                    return no_opinion("can only update the status of this type").into();
                }
                return graph_check(graph, node, Kind::PersistentVolumeClaim, attrs, false);
            }
            ("", "persistentvolumeclaims") => {
                return get_only(attrs).unwrap_or_else(|| {
                    graph_check(graph, node, Kind::PersistentVolumeClaim, attrs, false)
                })
            }
            ("resource.k8s.io", "resourceclaims") => {
                return get_only(attrs)
                    .unwrap_or_else(|| graph_check(graph, node, Kind::ResourceClaim, attrs, false))
            }
            ("", "persistentvolumes") => {
                if let Some(refused) = get_only(attrs) {
                    return refused;
                }
                if attrs.name.is_empty() {
                    return no_opinion("No Object name found").into();
                }
                if graph.reaches_volume(node, &attrs.name) {
                    return Decision::Allow.into();
                }
                return Outcome {
                    decision: no_relationship(node),
                    query: Some(GraphQuery::Volume {
                        name: attrs.name.clone(),
                    }),
                };
            }
            ("", "serviceaccounts") => {
                if attrs.verb != "create" || sub != "token" || attrs.name.is_empty() {
                    return no_opinion("can only create tokens for individual service accounts")
                        .into();
                }
                return graph_check(graph, node, Kind::ServiceAccount, attrs, false);
            }
            ("coordination.k8s.io", "leases") => return lease(node, attrs).into(),
            ("storage.k8s.io", "csinodes") => return csi_node(node, attrs).into(),
            _ => {}
        }
    }
    // nodes and pods are not subdivided (upstream without AuthorizeNodeWithSelectors): every
    // mini agent watches all nodes for the overlay and all pods for DNS and policies
    if mini_rbac::rules_allow(node_rules, attrs) {
        Decision::Allow.into()
    } else {
        no_opinion("").into()
    }
}

/// `get` of one object, no subresource; `None` when that is what was asked.
fn get_only(attrs: &RequestAttributes) -> Option<Outcome> {
    if attrs.verb != "get" {
        return Some(no_opinion("can only get individual resources of this type").into());
    }
    if !attrs.subresource.is_empty() {
        return Some(no_opinion("cannot get subresource").into());
    }
    None
}

/// get, or list/watch naming one object (`fieldSelector=metadata.name=`), of a namespaced
/// object the node's pods reference.
fn read_object(
    graph: &Graph,
    node: &str,
    kind: Kind,
    attrs: &RequestAttributes,
    tls: bool,
) -> Outcome {
    if !matches!(attrs.verb.as_str(), "get" | "list" | "watch") {
        return no_opinion("can only read resources of this type").into();
    }
    if !attrs.subresource.is_empty() {
        return no_opinion("cannot read subresource").into();
    }
    if attrs.namespace.is_empty() {
        return no_opinion("can only read namespaced object of this type").into();
    }
    // mini's extension: every node proxies Ingresses, so it may get (not list or watch)
    // their TLS secrets
    let tls = tls && attrs.verb == "get";
    if tls && !attrs.name.is_empty() && graph.is_mini_tls_secret(&attrs.namespace, &attrs.name) {
        return Decision::Allow.into();
    }
    graph_check(graph, node, kind, attrs, tls)
}

fn graph_check(
    graph: &Graph,
    node: &str,
    kind: Kind,
    attrs: &RequestAttributes,
    tls: bool,
) -> Outcome {
    if attrs.name.is_empty() {
        return no_opinion("No Object name found").into();
    }
    if attrs.namespace.is_empty() {
        return no_opinion("can only access namespaced objects of this type").into();
    }
    if graph.reaches(node, kind, &attrs.namespace, &attrs.name) {
        return Decision::Allow.into();
    }
    Outcome {
        decision: no_relationship(node),
        query: Some(GraphQuery::Object {
            kind,
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            tls,
        }),
    }
}

fn no_relationship(node: &str) -> Decision {
    no_opinion(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// Whether `graph` answers `query` for `node` with yes.
pub fn answers(graph: &Graph, node: &str, query: &GraphQuery) -> bool {
    match query {
        GraphQuery::Object {
            kind,
            namespace,
            name,
            tls,
        } => {
            graph.reaches(node, *kind, namespace, name)
                || (*tls && graph.is_mini_tls_secret(namespace, name))
        }
        GraphQuery::Volume { name } => graph.reaches_volume(node, name),
    }
}

/// The node's own Lease in `kube-node-lease` (create is checked by admission, which sees
/// the name).
fn lease(node: &str, attrs: &RequestAttributes) -> Decision {
    if !matches!(
        attrs.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no_opinion("can only get, create, update, patch, or delete a node lease");
    }
    if attrs.namespace != NODE_LEASE_NAMESPACE {
        return no_opinion(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    if attrs.verb != "create" && attrs.name != node {
        return no_opinion("can only access node lease with the same name as the requesting node");
    }
    Decision::Allow
}

/// The node's own CSINode.
fn csi_node(node: &str, attrs: &RequestAttributes) -> Decision {
    if !matches!(
        attrs.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no_opinion("can only get, create, update, patch, or delete a CSINode");
    }
    if !attrs.subresource.is_empty() {
        return no_opinion("cannot authorize CSINode subresources");
    }
    if attrs.verb != "create" && attrs.name != node {
        return no_opinion("can only access CSINode with the same name as the requesting node");
    }
    Decision::Allow
}

#[cfg(test)]
#[path = "authorizer_tests.rs"]
mod tests;
