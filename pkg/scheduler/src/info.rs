//! Compact, pre-parsed views of pods and nodes (what the filters and scores read), built once
//! per watch event so the per-node hot loops never touch the API objects.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Add, Sub};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::quantity::{milli_value, value};

/// Labels as the API objects carry them.
pub type Labels = BTreeMap<String, String>;

/// Scoring defaults for containers without requests (upstream `DefaultMilliCPURequest`,
/// `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// The resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu + o.milli_cpu,
            memory: self.memory + o.memory,
            ephemeral: self.ephemeral + o.ephemeral,
        }
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu - o.milli_cpu,
            memory: self.memory - o.memory,
            ephemeral: self.ephemeral - o.ephemeral,
        }
    }
}

impl Resources {
    fn max(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
            ephemeral: self.ephemeral.max(o.ephemeral),
        }
    }

    fn from_map(
        map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        if let Some(map) = map {
            for (k, q) in map {
                match k.as_str() {
                    "cpu" => r.milli_cpu = milli_value(&q.0),
                    "memory" => r.memory = value(&q.0),
                    "ephemeral-storage" => r.ephemeral = value(&q.0),
                    _ => {}
                }
            }
        }
        r
    }
}

/// A `hostPort` a pod occupies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Same port and protocol, and the addresses overlap (equal, or either is the wildcard).
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// A selector requirement operator (label selectors and node selector terms share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt,
            "Lt" => Op::Lt,
            _ => return None,
        })
    }
}

/// One `key op values` requirement; `op` is `None` for an unknown operator (matches nothing).
#[derive(Debug, Clone)]
pub struct Requirement {
    pub key: String,
    pub op: Option<Op>,
    pub values: Vec<String>,
}

impl Requirement {
    /// Evaluates against the value `key` has (`None`: absent).
    pub fn matches_value(&self, v: Option<&str>) -> bool {
        match (self.op, v) {
            (Some(Op::In), Some(v)) => self.values.iter().any(|x| x == v),
            (Some(Op::In), None) => false,
            (Some(Op::NotIn), Some(v)) => !self.values.iter().any(|x| x == v),
            (Some(Op::NotIn), None) => true,
            (Some(Op::Exists), v) => v.is_some(),
            (Some(Op::DoesNotExist), v) => v.is_none(),
            (Some(op @ (Op::Gt | Op::Lt)), Some(v)) => {
                let (Ok(have), Some(Ok(want))) = (
                    v.parse::<i64>(),
                    self.values.first().map(|x| x.parse::<i64>()),
                ) else {
                    return false;
                };
                if op == Op::Gt {
                    have > want
                } else {
                    have < want
                }
            }
            _ => false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }

    fn from_node(r: &NodeSelectorRequirement) -> Requirement {
        Requirement {
            key: r.key.clone(),
            op: Op::parse(&r.operator),
            values: r.values.clone().unwrap_or_default(),
        }
    }

    fn from_label(r: &LabelSelectorRequirement) -> Requirement {
        // Gt/Lt are not valid in label selectors.
        let op = Op::parse(&r.operator).filter(|o| !matches!(o, Op::Gt | Op::Lt));
        Requirement {
            key: r.key.clone(),
            op,
            values: r.values.clone().unwrap_or_default(),
        }
    }
}

/// A compiled metav1 LabelSelector. A missing selector matches nothing; an empty one, everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub reqs: Vec<Requirement>,
    pub nothing: bool,
}

impl Selector {
    pub fn compile(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector {
                reqs: Vec::new(),
                nothing: true,
            };
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Some(Op::In),
                values: vec![v.clone()],
            });
        }
        for r in sel.match_expressions.iter().flatten() {
            reqs.push(Requirement::from_label(r));
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// A node selector term: all expressions (on labels) and fields (on `metadata.name`) hold.
#[derive(Debug, Clone)]
pub struct NodeTerm {
    pub exprs: Vec<Requirement>,
    pub fields: Vec<Requirement>,
}

impl NodeTerm {
    pub(crate) fn compile(t: &NodeSelectorTerm) -> NodeTerm {
        NodeTerm {
            exprs: t
                .match_expressions
                .iter()
                .flatten()
                .map(Requirement::from_node)
                .collect(),
            fields: t
                .match_fields
                .iter()
                .flatten()
                .map(Requirement::from_node)
                .collect(),
        }
    }

    /// An empty term matches no node (upstream).
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if self.exprs.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.exprs.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| {
                // metadata.name is the only supported field.
                r.key == "metadata.name" && r.matches_value(Some(name))
            })
    }
}

/// A pod (anti-)affinity term with its namespaces resolved against the owning pod.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub selector: Selector,
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
    pub weight: i64,
}

impl AffinityTerm {
    fn compile(
        t: &PodAffinityTerm,
        pod_ns: &str,
        pod_labels: &Labels,
        weight: i64,
    ) -> AffinityTerm {
        let mut selector = Selector::compile(t.label_selector.as_ref());
        // matchLabelKeys / mismatchLabelKeys merge the owning pod's values into the selector.
        if !selector.nothing {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.reqs.push(Requirement {
                        key: k.clone(),
                        op: Some(Op::In),
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.reqs.push(Requirement {
                        key: k.clone(),
                        op: Some(Op::NotIn),
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let namespaces = t.namespaces.clone().unwrap_or_default();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::compile(Some(s)));
        let namespaces = if namespaces.is_empty() && namespace_selector.is_none() {
            vec![pod_ns.to_string()]
        } else {
            namespaces
        };
        AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: &HashMap<String, Labels>) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                static EMPTY: Labels = BTreeMap::new();
                s.matches(namespace_labels.get(&pod.namespace).unwrap_or(&EMPTY))
            });
        ns_ok && self.selector.matches(&pod.labels)
    }
}

/// A compiled topology spread constraint.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: Selector,
    pub min_domains: i64,
    pub hard: bool,
    pub honor_node_affinity: bool,
    pub honor_taints: bool,
}

/// A toleration, pre-parsed.
#[derive(Debug, Clone)]
pub struct Tol {
    pub key: String,
    pub exists: bool,
    pub value: String,
    pub effect: String,
}

impl Tol {
    fn compile(t: &Toleration) -> Tol {
        Tol {
            key: t.key.clone().unwrap_or_default(),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.clone().unwrap_or_default(),
        }
    }

    /// Upstream `ToleratesTaint`.
    pub fn tolerates(&self, taint: &NodeTaint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // An empty key needs Exists.
        !self.key.is_empty() && self.value == taint.value
    }
}

/// Whether any of `tols` tolerates `taint`.
pub fn tolerated(tols: &[Tol], taint: &NodeTaint) -> bool {
    tols.iter().any(|t| t.tolerates(taint))
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTaint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// What the scheduler knows about a pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub scheduler_name: String,
    pub node_name: String,
    pub priority: i32,
    pub deleting: bool,
    pub terminal: bool,
    pub requests: Resources,
    /// Requests with upstream's non-zero defaults, for scoring.
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    pub node_selector: Vec<(String, String)>,
    pub required_node_terms: Option<Vec<NodeTerm>>,
    pub preferred_node_terms: Vec<(i64, NodeTerm)>,
    pub tolerations: Vec<Tol>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    pub spread: Vec<SpreadConstraint>,
    /// The controller owner's uid (for default spreading).
    pub owner_uid: Option<String>,
    /// The current PodScheduled condition (status, reason, message), to skip no-op patches.
    pub scheduled_condition: Option<(String, String, String)>,
    /// The PersistentVolumeClaims the pod's volumes name (volume binding).
    pub claims: Vec<String>,
}

fn container_requests(c: &Container) -> (Resources, Resources) {
    let res = c.resources.as_ref();
    let req = Resources::from_map(res.and_then(|r| r.requests.as_ref()));
    let lim = Resources::from_map(res.and_then(|r| r.limits.as_ref()));
    let has = |name: &str| {
        res.and_then(|r| r.requests.as_ref())
            .is_some_and(|m| m.contains_key(name))
    };
    // Requests default to limits (the API server's defaulting does the same).
    let r = Resources {
        milli_cpu: if has("cpu") {
            req.milli_cpu
        } else {
            lim.milli_cpu
        },
        memory: if has("memory") {
            req.memory
        } else {
            lim.memory
        },
        ephemeral: if has("ephemeral-storage") {
            req.ephemeral
        } else {
            lim.ephemeral
        },
    };
    let nz = Resources {
        milli_cpu: if r.milli_cpu == 0 && !has("cpu") {
            DEFAULT_MILLI_CPU
        } else {
            r.milli_cpu
        },
        memory: if r.memory == 0 && !has("memory") {
            DEFAULT_MEMORY
        } else {
            r.memory
        },
        ephemeral: r.ephemeral,
    };
    (r, nz)
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let labels = meta.labels.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let mut info = PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            terminal: mini_runtime::pod::is_terminal(pod),
            owner_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            scheduled_condition: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
                .map(|c| {
                    (
                        c.status.clone(),
                        c.reason.clone().unwrap_or_default(),
                        c.message.clone().unwrap_or_default(),
                    )
                }),
            ..Default::default()
        };
        if let Some(spec) = &pod.spec {
            info.scheduler_name = spec.scheduler_name.clone().unwrap_or_default();
            info.node_name = spec.node_name.clone().unwrap_or_default();
            info.priority = spec.priority.unwrap_or(0);
            info.claims = crate::volumebinding::pod_claims(spec);
            // Requests: containers add up, init containers take the max (restartable sidecars
            // add to both), then overhead.
            let mut sum = Resources::default();
            let mut sum_nz = Resources::default();
            for c in &spec.containers {
                let (r, nz) = container_requests(c);
                sum = sum + r;
                sum_nz = sum_nz + nz;
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        info.host_ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|i| !i.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            port: hp,
                        });
                    }
                }
            }
            let mut sidecars = Resources::default();
            let mut sidecars_nz = Resources::default();
            let mut init_max = Resources::default();
            let mut init_max_nz = Resources::default();
            for c in spec.init_containers.iter().flatten() {
                let (r, nz) = container_requests(c);
                if c.restart_policy.as_deref() == Some("Always") {
                    sum = sum + r;
                    sum_nz = sum_nz + nz;
                    sidecars = sidecars + r;
                    sidecars_nz = sidecars_nz + nz;
                } else {
                    init_max = init_max.max(r + sidecars);
                    init_max_nz = init_max_nz.max(nz + sidecars_nz);
                }
            }
            let overhead = Resources::from_map(spec.overhead.as_ref());
            info.requests = sum.max(init_max) + overhead;
            info.non_zero = sum_nz.max(init_max_nz) + overhead;

            info.node_selector = spec
                .node_selector
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(crate::ippool::pool_node_selector(pod))
                .collect();
            info.tolerations = spec
                .tolerations
                .iter()
                .flatten()
                .map(Tol::compile)
                .collect();
            if let Some(aff) = &spec.affinity {
                if let Some(na) = &aff.node_affinity {
                    info.required_node_terms = na
                        .required_during_scheduling_ignored_during_execution
                        .as_ref()
                        .map(|ns| {
                            ns.node_selector_terms
                                .iter()
                                .map(NodeTerm::compile)
                                .collect()
                        });
                    info.preferred_node_terms = na
                        .preferred_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                        .map(|p| (p.weight as i64, NodeTerm::compile(&p.preference)))
                        .collect();
                }
                let compile =
                    |t: &PodAffinityTerm, w: i64| AffinityTerm::compile(t, &namespace, &labels, w);
                if let Some(pa) = &aff.pod_affinity {
                    info.required_affinity = pa
                        .required_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                        .map(|t| compile(t, 1))
                        .collect();
                    info.preferred_affinity = pa
                        .preferred_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                        .map(|w| compile(&w.pod_affinity_term, w.weight as i64))
                        .collect();
                }
                if let Some(pa) = &aff.pod_anti_affinity {
                    info.required_anti_affinity = pa
                        .required_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                        .map(|t| compile(t, 1))
                        .collect();
                    info.preferred_anti_affinity = pa
                        .preferred_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten()
                        .map(|w| compile(&w.pod_affinity_term, w.weight as i64))
                        .collect();
                }
            }
            for c in spec.topology_spread_constraints.iter().flatten() {
                let mut selector = Selector::compile(c.label_selector.as_ref());
                if !selector.nothing {
                    for k in c.match_label_keys.iter().flatten() {
                        if let Some(v) = labels.get(k) {
                            selector.reqs.push(Requirement {
                                key: k.clone(),
                                op: Some(Op::In),
                                values: vec![v.clone()],
                            });
                        }
                    }
                }
                info.spread.push(SpreadConstraint {
                    max_skew: c.max_skew.max(1) as i64,
                    topology_key: c.topology_key.clone(),
                    selector,
                    min_domains: c.min_domains.unwrap_or(1).max(1) as i64,
                    hard: c.when_unsatisfiable != "ScheduleAnyway",
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                });
            }
        }
        info.labels = labels;
        info.namespace = namespace;
        info
    }

    /// Whether this pod carries any pod (anti-)affinity terms.
    pub fn has_affinity_terms(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the scheduler knows about a node object (the cache adds the pods on it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<NodeTaint>,
    pub ready: bool,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
}

impl NodeSpec {
    pub fn from_node(node: &Node) -> NodeSpec {
        let status = node.status.as_ref();
        let alloc_map = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let allowed_pods = alloc_map
            .and_then(|m| m.get("pods"))
            .map(|q| value(&q.0))
            .unwrap_or(0);
        NodeSpec {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .map(|t| NodeTaint {
                    key: t.key.clone(),
                    value: t.value.clone().unwrap_or_default(),
                    effect: t.effect.clone(),
                })
                .collect(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            allocatable: Resources::from_map(alloc_map),
            allowed_pods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            op: Op::parse(op),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn requirement_operators_match_like_upstream() {
        let labels: Labels = [
            ("zone".to_string(), "a".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]
        .into();
        assert!(req("zone", "In", &["a", "b"]).matches(&labels));
        assert!(!req("zone", "NotIn", &["a"]).matches(&labels));
        assert!(req("missing", "NotIn", &["a"]).matches(&labels));
        assert!(req("zone", "Exists", &[]).matches(&labels));
        assert!(req("missing", "DoesNotExist", &[]).matches(&labels));
        assert!(req("cores", "Gt", &["4"]).matches(&labels));
        assert!(!req("cores", "Lt", &["4"]).matches(&labels));
        assert!(!req("zone", "Gt", &["4"]).matches(&labels));
        assert!(!req("zone", "Bogus", &["a"]).matches(&labels));
    }

    #[test]
    fn node_term_empty_matches_nothing_and_fields_match_name() {
        let labels = Labels::new();
        let empty = NodeTerm {
            exprs: vec![],
            fields: vec![],
        };
        assert!(!empty.matches("n1", &labels));
        let by_name = NodeTerm {
            exprs: vec![],
            fields: vec![req("metadata.name", "In", &["n1"])],
        };
        assert!(by_name.matches("n1", &labels));
        assert!(!by_name.matches("n2", &labels));
    }

    #[test]
    fn selector_missing_matches_nothing_empty_matches_everything() {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        assert!(!Selector::compile(None).matches(&labels));
        assert!(Selector::compile(Some(&LabelSelector::default())).matches(&labels));
    }

    #[test]
    fn toleration_matching_follows_upstream_rules() {
        let taint = NodeTaint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoSchedule".into(),
        };
        let tol = |key: &str, exists: bool, value: &str, effect: &str| Tol {
            key: key.into(),
            exists,
            value: value.into(),
            effect: effect.into(),
        };
        assert!(tol("k", false, "v", "NoSchedule").tolerates(&taint));
        assert!(tol("k", false, "v", "").tolerates(&taint));
        assert!(!tol("k", false, "w", "").tolerates(&taint));
        assert!(tol("k", true, "", "").tolerates(&taint));
        assert!(tol("", true, "", "").tolerates(&taint));
        assert!(!tol("k", true, "", "NoExecute").tolerates(&taint));
    }

    #[test]
    fn pod_requests_take_init_container_max_and_overhead() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m"}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
                "overhead": {"cpu": "10m"}
            }
        }))
        .expect("pod json");
        let info = PodInfo::from_pod(&pod);
        assert_eq!(info.requests.milli_cpu, 1010);
        assert_eq!(info.requests.memory, 64 * 1024 * 1024);
        assert_eq!(info.non_zero.memory, 64 * 1024 * 1024 + DEFAULT_MEMORY);
        assert_eq!(info.host_ports.len(), 1);
        assert_eq!(info.host_ports[0].port, 8080);
    }
}
