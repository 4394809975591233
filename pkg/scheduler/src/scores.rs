//! Scores (upstream's Score plugins with the default weights): TaintToleration ×3,
//! NodeAffinity ×2, PodTopologySpread ×2 (ScheduleAnyway constraints, or default spreading of a
//! controller's pods by hostname), InterPodAffinity ×2, NodeResourcesFit least-allocated ×1 and
//! NodeResourcesBalancedAllocation ×1. Each plugin's scores are normalised to 0–100 over the
//! feasible nodes before the weighted sum.

use std::collections::HashMap;

use crate::cache::{Cache, NodeInfo};
use crate::filters::node_affinity_matches;
use crate::info::{tolerated, PodInfo, Resources};

pub const MAX_SCORE: i64 = 100;

const W_TAINT: i64 = 3;
const W_NODE_AFFINITY: i64 = 2;
const W_SPREAD: i64 = 2;
const W_POD_AFFINITY: i64 = 2;
const W_LEAST: i64 = 1;
const W_BALANCED: i64 = 1;
/// Upstream `hardPodAffinityWeight`: existing pods' required affinity counts this much.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

fn least_one(requested: i64, alloc: i64) -> i64 {
    if alloc <= 0 || requested > alloc {
        0
    } else {
        (alloc - requested) * MAX_SCORE / alloc
    }
}

/// NodeResourcesFit LeastAllocated over cpu and memory (non-zero requests), weight 1 each.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let req = node.non_zero_requested + pod.non_zero;
    let alloc = node.spec.allocatable;
    (least_one(req.milli_cpu, alloc.milli_cpu) + least_one(req.memory, alloc.memory)) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − std-dev of the cpu and memory fractions).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let req: Resources = node.requested + pod.requests;
    let alloc = node.spec.allocatable;
    let frac = |r: i64, a: i64| {
        if a <= 0 {
            1.0
        } else {
            (r as f64 / a as f64).min(1.0)
        }
    };
    let c = frac(req.milli_cpu, alloc.milli_cpu);
    let m = frac(req.memory, alloc.memory);
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * MAX_SCORE as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms `node` matches.
pub fn node_affinity_raw(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_terms
        .iter()
        .filter(|(_, t)| t.matches(node.name(), node.labels()))
        .map(|(w, _)| *w)
        .sum()
}

/// PreferNoSchedule taints the pod does not tolerate.
pub fn taint_raw(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&pod.tolerations, t))
        .count() as i64
}

/// Upstream `DefaultNormalizeScore`.
pub fn normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            raw.iter_mut().for_each(|s| *s = MAX_SCORE);
        }
        return;
    }
    for s in raw.iter_mut() {
        let v = MAX_SCORE * *s / max;
        *s = if reverse { MAX_SCORE - v } else { v };
    }
}

/// Per-pod scoring state computed once over the cluster.
#[derive(Debug, Default)]
pub struct PreScore {
    /// InterPodAffinity: topology key → value → weight.
    affinity: HashMap<String, HashMap<String, i64>>,
    /// Soft spread constraints: (topology key, counts per value) each.
    spread: Vec<(String, HashMap<String, i64>)>,
    /// Default spreading by the controller owner.
    owner: Option<String>,
}

fn add_weight(map: &mut HashMap<String, HashMap<String, i64>>, key: &str, node: &NodeInfo, w: i64) {
    if let Some(v) = node.labels().get(key) {
        *map.entry(key.to_string())
            .or_default()
            .entry(v.clone())
            .or_default() += w;
    }
}

pub fn prescore(cache: &Cache, pod: &PodInfo) -> PreScore {
    let mut pre = PreScore::default();
    // This pod's preferred terms against existing pods.
    if !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty() {
        for &i in &cache.present {
            let node = &cache.nodes[i];
            for other in &node.pods {
                for t in &pod.preferred_affinity {
                    if t.matches(other, &cache.namespaces) {
                        add_weight(&mut pre.affinity, &t.topology_key, node, t.weight);
                    }
                }
                for t in &pod.preferred_anti_affinity {
                    if t.matches(other, &cache.namespaces) {
                        add_weight(&mut pre.affinity, &t.topology_key, node, -t.weight);
                    }
                }
            }
        }
    }
    // Existing pods' terms against this pod.
    for (existing, node_name) in cache.affinity_pods.values() {
        let Some(node) = cache.node_index(node_name).map(|i| &cache.nodes[i]) else {
            continue;
        };
        for t in &existing.required_affinity {
            if t.matches(pod, &cache.namespaces) {
                add_weight(
                    &mut pre.affinity,
                    &t.topology_key,
                    node,
                    HARD_POD_AFFINITY_WEIGHT,
                );
            }
        }
        for t in &existing.preferred_affinity {
            if t.matches(pod, &cache.namespaces) {
                add_weight(&mut pre.affinity, &t.topology_key, node, t.weight);
            }
        }
        for t in &existing.preferred_anti_affinity {
            if t.matches(pod, &cache.namespaces) {
                add_weight(&mut pre.affinity, &t.topology_key, node, -t.weight);
            }
        }
    }
    // Spreading.
    if pod.spread.is_empty() {
        pre.owner = pod.owner_uid.clone();
    } else {
        for c in pod.spread.iter().filter(|c| !c.hard) {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for &i in &cache.present {
                let node = &cache.nodes[i];
                let Some(v) = node.labels().get(&c.topology_key) else {
                    continue;
                };
                if c.honor_node_affinity && !node_affinity_matches(pod, node) {
                    continue;
                }
                let n = node
                    .pods
                    .iter()
                    .filter(|p| {
                        p.namespace == pod.namespace && !p.deleting && c.selector.matches(&p.labels)
                    })
                    .count() as i64;
                *counts.entry(v.clone()).or_default() += n;
            }
            pre.spread.push((c.topology_key.clone(), counts));
        }
    }
    pre
}

/// Weighted totals for the `feasible` node indices.
pub fn score(cache: &Cache, pod: &PodInfo, pre: &PreScore, feasible: &[usize]) -> Vec<i64> {
    let nodes: Vec<&NodeInfo> = feasible.iter().map(|i| &cache.nodes[*i]).collect();
    let mut total: Vec<i64> = nodes
        .iter()
        .map(|n| W_LEAST * least_allocated(pod, n) + W_BALANCED * balanced_allocation(pod, n))
        .collect();
    let mut add = |raw: Vec<i64>, w: i64| {
        for (t, r) in total.iter_mut().zip(raw) {
            *t += w * r;
        }
    };

    if !pod.preferred_node_terms.is_empty() {
        let mut raw: Vec<i64> = nodes.iter().map(|n| node_affinity_raw(pod, n)).collect();
        normalize(&mut raw, false);
        add(raw, W_NODE_AFFINITY);
    }

    let mut raw: Vec<i64> = nodes.iter().map(|n| taint_raw(pod, n)).collect();
    normalize(&mut raw, true);
    add(raw, W_TAINT);

    if !pre.affinity.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                pre.affinity
                    .iter()
                    .filter_map(|(k, vals)| n.labels().get(k).and_then(|v| vals.get(v)))
                    .sum()
            })
            .collect();
        let (min, max) = (
            raw.iter().copied().min().unwrap_or(0),
            raw.iter().copied().max().unwrap_or(0),
        );
        let raw = raw
            .into_iter()
            .map(|s| {
                if max > min {
                    MAX_SCORE * (s - min) / (max - min)
                } else {
                    0
                }
            })
            .collect();
        add(raw, W_POD_AFFINITY);
    }

    let spread_raw: Option<Vec<Option<i64>>> = if let Some(owner) = &pre.owner {
        Some(
            nodes
                .iter()
                .map(|n| Some(n.owner_counts.get(owner).copied().unwrap_or(0) as i64))
                .collect(),
        )
    } else if !pre.spread.is_empty() {
        Some(
            nodes
                .iter()
                .map(|n| {
                    let mut sum = 0;
                    for (key, counts) in &pre.spread {
                        let v = n.labels().get(key)?;
                        sum += counts.get(v).copied().unwrap_or(0);
                    }
                    Some(sum)
                })
                .collect(),
        )
    } else {
        None
    };
    if let Some(raw) = spread_raw {
        let present = raw.iter().flatten();
        let max = present.clone().copied().max().unwrap_or(0);
        let min = present.copied().min().unwrap_or(0);
        let raw = raw
            .into_iter()
            .map(|s| match s {
                None => 0,
                Some(_) if max == 0 => MAX_SCORE,
                Some(s) => MAX_SCORE * (max + min - s) / max,
            })
            .collect();
        add(raw, W_SPREAD);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{node, pod};
    use crate::info::{NodeTaint, NodeTerm, Requirement};
    use std::sync::Arc;

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let mut c = Cache::default();
        c.set_node(node("busy", 1000, &[]));
        c.set_node(node("idle", 1000, &[]));
        c.add_pod(Arc::new(pod("a", 800, &[])), "busy", false);
        let p = pod("b", 100, &[]);
        assert!(least_allocated(&p, &c.nodes[1]) > least_allocated(&p, &c.nodes[0]));
    }

    #[test]
    fn balanced_allocation_is_100_for_equal_fractions() {
        let mut c = Cache::default();
        c.set_node(node("n", 1000, &[]));
        let mut p = pod("b", 500, &[]);
        p.requests.memory = 4 << 30;
        assert_eq!(balanced_allocation(&p, &c.nodes[0]), 100);
        p.requests.memory = 0;
        assert_eq!(balanced_allocation(&p, &c.nodes[0]), 75);
    }

    #[test]
    fn normalize_scales_to_max_and_reverses() {
        let mut raw = vec![0, 5, 10];
        normalize(&mut raw, false);
        assert_eq!(raw, vec![0, 50, 100]);
        let mut raw = vec![0, 1, 2];
        normalize(&mut raw, true);
        assert_eq!(raw, vec![100, 50, 0]);
        let mut raw = vec![0, 0];
        normalize(&mut raw, true);
        assert_eq!(raw, vec![100, 100]);
    }

    #[test]
    fn score_spreads_controller_pods_and_honours_preferences() {
        let mut c = Cache::default();
        c.set_node(node("n1", 4000, &[("disk", "ssd")]));
        c.set_node(node("n2", 4000, &[]));
        let mut sibling = pod("s", 100, &[]);
        sibling.owner_uid = Some("rs".into());
        c.add_pod(Arc::new(sibling), "n1", false);
        let mut p = pod("p", 100, &[]);
        p.owner_uid = Some("rs".into());
        let pre = prescore(&c, &p);
        let before = score(&c, &p, &pre, &c.present);
        assert!(before[1] > before[0], "{before:?}");
        // A preferred node affinity adds its normalised, weighted score.
        p.preferred_node_terms = vec![(
            100,
            NodeTerm {
                exprs: vec![Requirement {
                    key: "disk".into(),
                    op: Some(crate::info::Op::In),
                    values: vec!["ssd".into()],
                }],
                fields: vec![],
            },
        )];
        let s = score(&c, &p, &pre, &c.present);
        assert_eq!(s[0] - before[0], 200, "{s:?}");
        assert_eq!(s[1], before[1]);
    }

    #[test]
    fn score_prefer_no_schedule_taint_lowers_node() {
        let mut c = Cache::default();
        let mut t = node("t", 1000, &[]);
        t.taints.push(NodeTaint {
            key: "soft".into(),
            value: String::new(),
            effect: "PreferNoSchedule".into(),
        });
        c.set_node(t);
        c.set_node(node("u", 1000, &[]));
        let p = pod("p", 100, &[]);
        let s = score(&c, &p, &prescore(&c, &p), &c.present);
        assert!(s[1] > s[0], "{s:?}");
    }
}
