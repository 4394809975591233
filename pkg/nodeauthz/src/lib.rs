//! Node isolation for the API server: upstream's Node authorizer (a node's credentials read
//! only the secrets, configmaps, claims, volumes and service account tokens of pods bound to
//! it) and the NodeRestriction admission checks (it writes only its own Node, Lease and pods'
//! status).
//!
//! [`NodeAuthorizer`] keeps a graph of bound pods and what they reference, fed by watches of
//! the store; a denial is re-checked against the store before it is final, so a graph a few
//! events behind never refuses a kubelet that fetches a secret right after its pod is bound.
//! mini's extension: every agent is also the ingress controller, so a node may `get` the TLS
//! secrets of Ingresses that mini's controller serves.

pub mod admission;
pub mod authorizer;
pub mod certificates;
mod feed;
pub mod graph;

use std::sync::{Arc, RwLock};

use mini_rbac::{RequestAttributes, UserInfo};
use mini_store::Store;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use admission::{admit, Operation, Write};
pub use authorizer::{node_identity, Decision, NODES_GROUP, NODE_USER_PREFIX};
pub use graph::Graph;

/// The Node authorizer with its graph. Dropping it stops the feed.
pub struct NodeAuthorizer {
    graph: Arc<RwLock<Graph>>,
    store: Arc<dyn Store>,
    /// What the node authorizer grants beyond the graph (the `system:node` ClusterRole's
    /// rules, built in, as upstream's `NodeRules()`).
    node_rules: Vec<Value>,
    _stop: DropGuard,
}

impl std::fmt::Debug for NodeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuthorizer").finish_non_exhaustive()
    }
}

impl NodeAuthorizer {
    /// Starts following pods, claims, volumes, ingresses and ingress classes in `store`.
    /// Must be called inside a tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let graph = Arc::new(RwLock::new(Graph::default()));
        let stop = CancellationToken::new();
        for resource in graph::Resource::ALL {
            tokio::spawn(feed::follow(
                store.clone(),
                graph.clone(),
                resource,
                stop.child_token(),
            ));
        }
        NodeAuthorizer {
            graph,
            store,
            node_rules: mini_rbac::node_rules(),
            _stop: stop.drop_guard(),
        }
    }

    /// The decision for `user`: [`Decision::NoOpinion`] (with an empty reason) for users that
    /// are not nodes, so the next authorizer decides.
    pub async fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision {
        let Some(node) = node_identity(user) else {
            return Decision::NoOpinion {
                reason: String::new(),
            };
        };
        let outcome = {
            let graph = self.graph.read().expect("node graph lock poisoned");
            authorizer::decide(&graph, node, attrs, &self.node_rules)
        };
        let Some(query) = outcome.query else {
            return outcome.decision;
        };
        // the graph may be a few events behind: ask the store before refusing
        match feed::graph_for(self.store.as_ref(), &query).await {
            Ok(fresh) if authorizer::answers(&fresh, node, &query) => Decision::Allow,
            Ok(_) => outcome.decision,
            Err(e) => {
                tracing::warn!(error = %e, node, "node authorizer: reading the store to re-check a denial failed");
                outcome.decision
            }
        }
    }

    /// How many bound pods the graph holds.
    pub fn bound_pods(&self) -> usize {
        self.graph
            .read()
            .expect("node graph lock poisoned")
            .pod_count()
    }
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
