//! The scheduler's view of the cluster: nodes, the pods bound (or assumed bound) to each, and
//! namespace labels. Assumed pods (bound by us, not yet seen bound in the watch) are counted at
//! once so a burst of decisions never overcommits a node.

use std::collections::HashMap;
use std::sync::Arc;

use crate::info::{HostPort, Labels, NodeSpec, PodInfo, Resources};

/// A node and what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub spec: NodeSpec,
    /// False while we only know the node from pods bound to it.
    pub present: bool,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    pub host_ports: Vec<HostPort>,
    /// Pods per controller owner uid (default spreading).
    pub owner_counts: HashMap<String, u32>,
}

impl NodeInfo {
    fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested = self.requested + pod.requests;
        self.non_zero_requested = self.non_zero_requested + pod.non_zero;
        self.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(o) = &pod.owner_uid {
            *self.owner_counts.entry(o.clone()).or_default() += 1;
        }
        self.pods.push(pod);
    }

    fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let pos = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(pos);
        self.requested = self.requested - pod.requests;
        self.non_zero_requested = self.non_zero_requested - pod.non_zero;
        for hp in &pod.host_ports {
            if let Some(i) = self.host_ports.iter().position(|h| h == hp) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(o) = &pod.owner_uid {
            if let Some(c) = self.owner_counts.get_mut(o) {
                *c -= 1;
                if *c == 0 {
                    self.owner_counts.remove(o);
                }
            }
        }
        Some(pod)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn labels(&self) -> &Labels {
        &self.spec.labels
    }
}

#[derive(Debug, Clone)]
struct Placement {
    node: String,
    assumed: bool,
}

/// What changed when the cache applied a node update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Something filters read changed.
    Updated,
    Unchanged,
}

/// Nodes, bound pods and namespaces.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Indices of present nodes, in a stable order.
    pub present: Vec<usize>,
    placements: HashMap<String, Placement>,
    pub namespaces: HashMap<String, Labels>,
    /// Bound pods with pod (anti-)affinity terms and their node, by uid (existing-pod
    /// affinity checks).
    pub affinity_pods: HashMap<String, (Arc<PodInfo>, String)>,
}

impl Cache {
    fn rebuild_present(&mut self) {
        self.present = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].present)
            .collect();
    }

    fn node_slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.nodes.push(NodeInfo {
            spec: NodeSpec {
                name: name.to_string(),
                ..Default::default()
            },
            ..Default::default()
        });
        let i = self.nodes.len() - 1;
        self.index.insert(name.to_string(), i);
        i
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn set_node(&mut self, spec: NodeSpec) -> NodeChange {
        let i = self.node_slot(&spec.name.clone());
        let node = &mut self.nodes[i];
        let change = if !node.present {
            NodeChange::Added
        } else if node.spec != spec {
            NodeChange::Updated
        } else {
            NodeChange::Unchanged
        };
        node.spec = spec;
        if !node.present {
            node.present = true;
            self.rebuild_present();
        }
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.get(name).copied() else {
            return;
        };
        if !self.nodes[i].pods.is_empty() {
            // Keep the pods' accounting until they go; the node just stops being a candidate.
            self.nodes[i].present = false;
        } else {
            self.index.remove(name);
            self.nodes.swap_remove(i);
            if i < self.nodes.len() {
                let moved = self.nodes[i].spec.name.clone();
                self.index.insert(moved, i);
            }
        }
        self.rebuild_present();
    }

    /// Node names currently known as present (relist reconciliation).
    pub fn node_names(&self) -> Vec<String> {
        self.present
            .iter()
            .map(|i| self.nodes[*i].spec.name.clone())
            .collect()
    }

    /// Places (or re-places) a pod on `node`; `assumed` marks our own not-yet-confirmed binding.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&pod.uid);
        let i = self.node_slot(node);
        if pod.has_affinity_terms() {
            self.affinity_pods
                .insert(pod.uid.clone(), (pod.clone(), node.to_string()));
        }
        self.placements.insert(
            pod.uid.clone(),
            Placement {
                node: node.to_string(),
                assumed,
            },
        );
        self.nodes[i].add_pod(pod);
    }

    /// Removes a pod wherever it is placed. Returns whether it was.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(p) = self.placements.remove(uid) else {
            return false;
        };
        self.affinity_pods.remove(uid);
        if let Some(i) = self.index.get(&p.node).copied() {
            self.nodes[i].remove_pod(uid);
            if !self.nodes[i].present && self.nodes[i].pods.is_empty() {
                self.remove_node(&p.node);
            }
        }
        true
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.placements.get(uid).is_some_and(|p| p.assumed)
    }

    pub fn is_placed(&self, uid: &str) -> bool {
        self.placements.contains_key(uid)
    }

    /// Uids of pods placed from the watch (not assumed), for relist reconciliation.
    pub fn confirmed_pod_uids(&self) -> Vec<String> {
        self.placements
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(u, _)| u.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, cpu: i64) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: uid.into(),
            requests: Resources {
                milli_cpu: cpu,
                ..Default::default()
            },
            owner_uid: Some("rs".into()),
            ..Default::default()
        })
    }

    #[test]
    fn cache_assumed_pod_counts_until_removed() {
        let mut c = Cache::default();
        assert_eq!(
            c.set_node(NodeSpec {
                name: "n1".into(),
                ..Default::default()
            }),
            NodeChange::Added
        );
        c.add_pod(pod("a", 100), "n1", true);
        c.add_pod(pod("b", 200), "n1", false);
        let n = &c.nodes[c.node_index("n1").expect("node")];
        assert_eq!(n.requested.milli_cpu, 300);
        assert_eq!(n.owner_counts.get("rs"), Some(&2));
        assert!(c.is_assumed("a"));
        // Confirmation replaces the assumed placement without double counting.
        c.add_pod(pod("a", 100), "n1", false);
        assert!(!c.is_assumed("a"));
        assert!(c.remove_pod("b"));
        let n = &c.nodes[c.node_index("n1").expect("node")];
        assert_eq!(n.requested.milli_cpu, 100);
        assert_eq!(n.pods.len(), 1);
    }

    #[test]
    fn cache_pods_on_unknown_nodes_wait_for_the_node() {
        let mut c = Cache::default();
        c.add_pod(pod("a", 100), "later", false);
        assert_eq!(c.present.len(), 0);
        c.set_node(NodeSpec {
            name: "later".into(),
            ..Default::default()
        });
        assert_eq!(c.present.len(), 1);
        assert_eq!(c.nodes[c.present[0]].requested.milli_cpu, 100);
        c.remove_node("later");
        assert_eq!(c.present.len(), 0);
        c.remove_pod("a");
        assert!(c.node_index("later").is_none());
    }
}
