//! Filters (upstream's Filter plugins, in upstream's order): NodeUnschedulable,
//! TaintToleration (plus the node Ready condition, reported like the `not-ready` taint),
//! NodeAffinity (nodeSelector and required terms), NodePorts, NodeResourcesFit,
//! PodTopologySpread (DoNotSchedule) and InterPodAffinity. Per-pod state that needs the whole
//! cluster (topology counts) is computed once per pod in [`prefilter`].

use std::collections::HashMap;

use crate::cache::{Cache, NodeInfo};
use crate::info::{tolerated, NodeTaint, PodInfo};

pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Why a node did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unschedulable,
    NotReady,
    /// Index into the node's taints.
    Taint(usize),
    NodeAffinity,
    Ports,
    /// Bits: [`TOO_MANY_PODS`], [`NO_CPU`], [`NO_MEMORY`], [`NO_EPHEMERAL`].
    Resources(u8),
    SpreadMissingLabel,
    Spread,
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
}

pub const TOO_MANY_PODS: u8 = 1;
pub const NO_CPU: u8 = 2;
pub const NO_MEMORY: u8 = 4;
pub const NO_EPHEMERAL: u8 = 8;

impl Failure {
    /// Upstream's reason strings for this failure on `node`.
    pub fn reasons(&self, node: &NodeInfo) -> Vec<String> {
        match self {
            Failure::Unschedulable => vec!["node(s) were unschedulable".into()],
            Failure::NotReady => vec![format!(
                "node(s) had untolerated taint {{{NOT_READY_TAINT}: }}"
            )],
            Failure::Taint(i) => {
                let t = &node.spec.taints[*i];
                vec![format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key, t.value
                )]
            }
            Failure::NodeAffinity => {
                vec!["node(s) didn't match Pod's node affinity/selector".into()]
            }
            Failure::Ports => {
                vec!["node(s) didn't have free ports for the requested pod ports".into()]
            }
            Failure::Resources(bits) => {
                let mut v = Vec::new();
                if bits & TOO_MANY_PODS != 0 {
                    v.push("Too many pods".into());
                }
                if bits & NO_CPU != 0 {
                    v.push("Insufficient cpu".into());
                }
                if bits & NO_MEMORY != 0 {
                    v.push("Insufficient memory".into());
                }
                if bits & NO_EPHEMERAL != 0 {
                    v.push("Insufficient ephemeral-storage".into());
                }
                v
            }
            Failure::SpreadMissingLabel => {
                vec![
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                ]
            }
            Failure::Spread => vec!["node(s) didn't match pod topology spread constraints".into()],
            Failure::PodAffinity => vec!["node(s) didn't match pod affinity rules".into()],
            Failure::PodAntiAffinity => vec!["node(s) didn't match pod anti-affinity rules".into()],
            Failure::ExistingAntiAffinity => {
                vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()]
            }
        }
    }

    /// Whether evicting pods could help (upstream `Unschedulable` vs
    /// `UnschedulableAndUnresolvable`).
    pub fn resolvable(&self) -> bool {
        matches!(
            self,
            Failure::Ports
                | Failure::Resources(_)
                | Failure::Spread
                | Failure::PodAntiAffinity
                | Failure::ExistingAntiAffinity
        )
    }
}

type Pair = (String, String);

/// Hard topology spread state for one constraint.
#[derive(Debug, Default)]
struct SpreadCounts {
    counts: HashMap<String, i64>,
    min: i64,
    self_match: i64,
}

/// Per-pod state computed once over the whole cluster.
#[derive(Debug, Default)]
pub struct PreFilter {
    tolerates_unschedulable: bool,
    tolerates_not_ready: bool,
    /// Domains where an existing pod's required anti-affinity forbids this pod.
    existing_anti: HashMap<Pair, u32>,
    /// Pods matching all of this pod's required affinity terms, per domain.
    affinity_counts: HashMap<Pair, u32>,
    /// Pods matching any of this pod's required anti-affinity terms, per domain.
    anti_counts: HashMap<Pair, u32>,
    matches_own_affinity: bool,
    spread: Vec<SpreadCounts>,
}

/// `nodeSelector` and required node affinity.
pub fn node_affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let labels = node.labels();
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    match &pod.required_node_terms {
        Some(terms) => terms.iter().any(|t| t.matches(node.name(), labels)),
        None => true,
    }
}

/// The first NoSchedule/NoExecute taint the pod does not tolerate.
pub fn untolerated_taint(pod: &PodInfo, node: &NodeInfo) -> Option<usize> {
    node.spec.taints.iter().position(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerated(&pod.tolerations, t)
    })
}

fn synthetic_taint(key: &str) -> NodeTaint {
    NodeTaint {
        key: key.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    }
}

/// Computes the per-pod cluster-wide state the filters need.
pub fn prefilter(cache: &Cache, pod: &PodInfo) -> PreFilter {
    let mut st = PreFilter {
        tolerates_unschedulable: tolerated(&pod.tolerations, &synthetic_taint(UNSCHEDULABLE_TAINT)),
        tolerates_not_ready: tolerated(&pod.tolerations, &synthetic_taint(NOT_READY_TAINT)),
        ..Default::default()
    };
    // Existing pods' required anti-affinity against this pod.
    for (existing, node) in cache.affinity_pods.values() {
        for term in &existing.required_anti_affinity {
            if !term.matches(pod, &cache.namespaces) {
                continue;
            }
            let Some(n) = cache.node_index(node).map(|i| &cache.nodes[i]) else {
                continue;
            };
            if let Some(v) = n.labels().get(&term.topology_key) {
                *st.existing_anti
                    .entry((term.topology_key.clone(), v.clone()))
                    .or_default() += 1;
            }
        }
    }
    // This pod's required terms against existing pods.
    if !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty() {
        st.matches_own_affinity = pod
            .required_affinity
            .iter()
            .all(|t| t.matches(pod, &cache.namespaces));
        for &i in &cache.present {
            let node = &cache.nodes[i];
            for other in &node.pods {
                if !pod.required_affinity.is_empty()
                    && pod
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(other, &cache.namespaces))
                {
                    for t in &pod.required_affinity {
                        if let Some(v) = node.labels().get(&t.topology_key) {
                            *st.affinity_counts
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_default() += 1;
                        }
                    }
                }
                for t in &pod.required_anti_affinity {
                    if t.matches(other, &cache.namespaces) {
                        if let Some(v) = node.labels().get(&t.topology_key) {
                            *st.anti_counts
                                .entry((t.topology_key.clone(), v.clone()))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    // Hard topology spread counts.
    let hard: Vec<_> = pod.spread.iter().filter(|c| c.hard).collect();
    if !hard.is_empty() {
        let mut spread: Vec<SpreadCounts> = hard
            .iter()
            .map(|c| SpreadCounts {
                self_match: c.selector.matches(&pod.labels) as i64,
                ..Default::default()
            })
            .collect();
        for &i in &cache.present {
            let node = &cache.nodes[i];
            let labels = node.labels();
            if !hard.iter().all(|c| labels.contains_key(&c.topology_key)) {
                continue;
            }
            for (c, sc) in hard.iter().zip(spread.iter_mut()) {
                if c.honor_node_affinity && !node_affinity_matches(pod, node) {
                    continue;
                }
                if c.honor_taints && untolerated_taint(pod, node).is_some() {
                    continue;
                }
                let value = &labels[&c.topology_key];
                let n = node
                    .pods
                    .iter()
                    .filter(|p| {
                        p.namespace == pod.namespace && !p.deleting && c.selector.matches(&p.labels)
                    })
                    .count() as i64;
                *sc.counts.entry(value.clone()).or_default() += n;
            }
        }
        for (c, sc) in hard.iter().zip(spread.iter_mut()) {
            sc.min = if (sc.counts.len() as i64) < c.min_domains {
                0
            } else {
                sc.counts.values().copied().min().unwrap_or(0)
            };
        }
        st.spread = spread;
    }
    st
}

/// Runs the filters on one node; the first failing filter decides.
pub fn filter(pod: &PodInfo, st: &PreFilter, node: &NodeInfo) -> Result<(), Failure> {
    if node.spec.unschedulable && !st.tolerates_unschedulable {
        return Err(Failure::Unschedulable);
    }
    if let Some(i) = untolerated_taint(pod, node) {
        return Err(Failure::Taint(i));
    }
    if !node.spec.ready && !st.tolerates_not_ready {
        return Err(Failure::NotReady);
    }
    if !node_affinity_matches(pod, node) {
        return Err(Failure::NodeAffinity);
    }
    if pod
        .host_ports
        .iter()
        .any(|p| node.host_ports.iter().any(|h| h.conflicts(p)))
    {
        return Err(Failure::Ports);
    }
    fit(pod, node)?;
    spread(pod, st, node)?;
    inter_pod_affinity(pod, st, node)
}

/// NodeResourcesFit: pod count and each requested resource against what is left.
pub fn fit(pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
    let mut bits = 0;
    if node.pods.len() as i64 + 1 > node.spec.allowed_pods {
        bits |= TOO_MANY_PODS;
    }
    let (req, alloc, used) = (pod.requests, node.spec.allocatable, node.requested);
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        bits |= NO_CPU;
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        bits |= NO_MEMORY;
    }
    if req.ephemeral > 0 && req.ephemeral > alloc.ephemeral - used.ephemeral {
        bits |= NO_EPHEMERAL;
    }
    if bits == 0 {
        Ok(())
    } else {
        Err(Failure::Resources(bits))
    }
}

fn spread(pod: &PodInfo, st: &PreFilter, node: &NodeInfo) -> Result<(), Failure> {
    if st.spread.is_empty() {
        return Ok(());
    }
    let labels = node.labels();
    let hard = pod.spread.iter().filter(|c| c.hard);
    if !pod
        .spread
        .iter()
        .filter(|c| c.hard)
        .all(|c| labels.contains_key(&c.topology_key))
    {
        return Err(Failure::SpreadMissingLabel);
    }
    for (c, sc) in hard.zip(&st.spread) {
        let here = sc
            .counts
            .get(&labels[&c.topology_key])
            .copied()
            .unwrap_or(0);
        if here + sc.self_match - sc.min > c.max_skew {
            return Err(Failure::Spread);
        }
    }
    Ok(())
}

fn inter_pod_affinity(pod: &PodInfo, st: &PreFilter, node: &NodeInfo) -> Result<(), Failure> {
    let labels = node.labels();
    // Upstream's order: own affinity, own anti-affinity, existing pods' anti-affinity.
    if !pod.required_affinity.is_empty() {
        satisfies_affinity(pod, st, labels)?;
    }
    for t in &pod.required_anti_affinity {
        if let Some(v) = labels.get(&t.topology_key) {
            if st
                .anti_counts
                .get(&(t.topology_key.clone(), v.clone()))
                .is_some_and(|n| *n > 0)
            {
                return Err(Failure::PodAntiAffinity);
            }
        }
    }
    for ((k, v), n) in &st.existing_anti {
        if *n > 0 && labels.get(k) == Some(v) {
            return Err(Failure::ExistingAntiAffinity);
        }
    }
    Ok(())
}

/// Upstream `satisfyPodAffinity`.
fn satisfies_affinity(
    pod: &PodInfo,
    st: &PreFilter,
    labels: &crate::info::Labels,
) -> Result<(), Failure> {
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        let Some(v) = labels.get(&t.topology_key) else {
            return Err(Failure::PodAffinity);
        };
        if st
            .affinity_counts
            .get(&(t.topology_key.clone(), v.clone()))
            .is_none_or(|n| *n == 0)
        {
            pods_exist = false;
        }
    }
    if pods_exist || (st.affinity_counts.is_empty() && st.matches_own_affinity) {
        Ok(())
    } else {
        Err(Failure::PodAffinity)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::info::{
        AffinityTerm, HostPort, NodeSpec, Resources, Selector, SpreadConstraint, Tol,
    };
    use std::sync::Arc;

    pub(crate) fn node(name: &str, cpu: i64, labels: &[(&str, &str)]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            allocatable: Resources {
                milli_cpu: cpu,
                memory: 8 << 30,
                ephemeral: 0,
            },
            allowed_pods: 110,
            ..Default::default()
        }
    }

    pub(crate) fn pod(uid: &str, cpu: i64, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            name: uid.into(),
            namespace: "default".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            requests: Resources {
                milli_cpu: cpu,
                ..Default::default()
            },
            non_zero: Resources {
                milli_cpu: cpu.max(100),
                memory: crate::info::DEFAULT_MEMORY,
                ephemeral: 0,
            },
            ..Default::default()
        }
    }

    fn app_selector(app: &str) -> Selector {
        let ls = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        };
        Selector::compile(Some(&ls))
    }

    fn run(cache: &Cache, p: &PodInfo) -> Vec<(String, Result<(), Failure>)> {
        let st = prefilter(cache, p);
        cache
            .present
            .iter()
            .map(|i| {
                (
                    cache.nodes[*i].spec.name.clone(),
                    filter(p, &st, &cache.nodes[*i]),
                )
            })
            .collect()
    }

    #[test]
    fn fit_reports_every_insufficient_resource() {
        let mut c = Cache::default();
        let mut n = node("n1", 1000, &[]);
        n.allowed_pods = 1;
        c.set_node(n);
        c.add_pod(Arc::new(pod("a", 600, &[])), "n1", false);
        let res = run(&c, &pod("b", 500, &[]));
        assert_eq!(res[0].1, Err(Failure::Resources(TOO_MANY_PODS | NO_CPU)));
        let reasons = Failure::Resources(TOO_MANY_PODS | NO_CPU).reasons(&c.nodes[0]);
        assert_eq!(reasons, vec!["Too many pods", "Insufficient cpu"]);
    }

    #[test]
    fn filter_taints_unschedulable_and_not_ready_need_tolerations() {
        let mut c = Cache::default();
        let mut tainted = node("t", 1000, &[]);
        tainted.taints.push(NodeTaint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
        });
        let mut pref = node("p", 1000, &[]);
        pref.taints.push(NodeTaint {
            key: "soft".into(),
            value: String::new(),
            effect: "PreferNoSchedule".into(),
        });
        let mut cordoned = node("c", 1000, &[]);
        cordoned.unschedulable = true;
        let mut not_ready = node("r", 1000, &[]);
        not_ready.ready = false;
        for n in [tainted, pref, cordoned, not_ready] {
            c.set_node(n);
        }
        let res = run(&c, &pod("x", 100, &[]));
        assert_eq!(res[0].1, Err(Failure::Taint(0)));
        assert_eq!(
            Failure::Taint(0).reasons(&c.nodes[0]),
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        assert_eq!(res[1].1, Ok(()));
        assert_eq!(res[2].1, Err(Failure::Unschedulable));
        assert_eq!(res[3].1, Err(Failure::NotReady));
        let mut tolerant = pod("y", 100, &[]);
        tolerant.tolerations = vec![Tol {
            key: String::new(),
            exists: true,
            value: String::new(),
            effect: String::new(),
        }];
        assert!(run(&c, &tolerant).iter().all(|(_, r)| r.is_ok()));
    }

    #[test]
    fn filter_host_ports_conflict_on_overlapping_addresses() {
        let mut c = Cache::default();
        c.set_node(node("n1", 1000, &[]));
        let hp = |ip: &str| HostPort {
            protocol: "TCP".into(),
            ip: ip.into(),
            port: 80,
        };
        let mut a = pod("a", 0, &[]);
        a.host_ports = vec![hp("10.0.0.1")];
        c.add_pod(Arc::new(a), "n1", false);
        let mut b = pod("b", 0, &[]);
        b.host_ports = vec![hp("0.0.0.0")];
        assert_eq!(run(&c, &b)[0].1, Err(Failure::Ports));
        b.host_ports = vec![hp("10.0.0.2")];
        assert_eq!(run(&c, &b)[0].1, Ok(()));
    }

    #[test]
    fn filter_anti_affinity_by_hostname_and_existing_pods() {
        let mut c = Cache::default();
        c.set_node(node("n1", 1000, &[("kubernetes.io/hostname", "n1")]));
        c.set_node(node("n2", 1000, &[("kubernetes.io/hostname", "n2")]));
        let term = AffinityTerm {
            selector: app_selector("db"),
            namespaces: vec!["default".into()],
            namespace_selector: None,
            topology_key: "kubernetes.io/hostname".into(),
            weight: 1,
        };
        let mut existing = pod("a", 0, &[("app", "db")]);
        existing.required_anti_affinity = vec![term.clone()];
        c.add_pod(Arc::new(existing), "n1", false);
        // The existing pod's anti-affinity keeps another db pod off n1 ...
        let res = run(&c, &pod("b", 0, &[("app", "db")]));
        assert_eq!(res[0].1, Err(Failure::ExistingAntiAffinity));
        assert_eq!(res[1].1, Ok(()));
        // ... and a pod's own anti-affinity too.
        let mut own = pod("c", 0, &[("app", "web")]);
        own.required_anti_affinity = vec![term.clone()];
        let res = run(&c, &own);
        assert_eq!(res[0].1, Err(Failure::PodAntiAffinity));
        // Required affinity: only where a db pod runs; the first of a self-affine group anywhere.
        let mut near = pod("d", 0, &[("app", "web")]);
        near.required_affinity = vec![term.clone()];
        let res = run(&c, &near);
        assert_eq!((res[0].1, res[1].1), (Ok(()), Err(Failure::PodAffinity)));
        let mut first = pod("e", 0, &[("app", "cache")]);
        first.required_affinity = vec![AffinityTerm {
            selector: app_selector("cache"),
            ..term
        }];
        assert!(run(&c, &first).iter().all(|(_, r)| r.is_ok()));
    }

    #[test]
    fn filter_topology_spread_respects_max_skew() {
        let mut c = Cache::default();
        c.set_node(node("a1", 1000, &[("zone", "a")]));
        c.set_node(node("b1", 1000, &[("zone", "b")]));
        c.set_node(node("x", 1000, &[]));
        c.add_pod(Arc::new(pod("p1", 0, &[("app", "web")])), "a1", false);
        let mut p = pod("new", 0, &[("app", "web")]);
        p.spread = vec![SpreadConstraint {
            max_skew: 1,
            topology_key: "zone".into(),
            selector: app_selector("web"),
            min_domains: 1,
            hard: true,
            honor_node_affinity: true,
            honor_taints: false,
        }];
        let res = run(&c, &p);
        assert_eq!(res[0].1, Err(Failure::Spread));
        assert_eq!(res[1].1, Ok(()));
        assert_eq!(res[2].1, Err(Failure::SpreadMissingLabel));
        // minDomains above the domain count makes the global minimum 0.
        p.spread[0].min_domains = 3;
        p.spread[0].max_skew = 2;
        let res = run(&c, &p);
        assert_eq!((res[0].1, res[1].1), (Ok(()), Ok(())));
    }
}
