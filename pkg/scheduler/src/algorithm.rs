//! One scheduling decision (upstream `schedulePod`): filter nodes round-robin from where the
//! last pod stopped until enough feasible nodes are found (`percentageOfNodesToScore`), score
//! them and pick the best, breaking ties randomly. Failures explain themselves in upstream's
//! `0/N nodes are available: ...` format.

use std::collections::BTreeMap;

use crate::cache::Cache;
use crate::filters::{filter, prefilter, Failure};
use crate::info::PodInfo;
use crate::scores::{prescore, score};

/// Upstream `minFeasibleNodesToFind`.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream `minFeasibleNodesPercentageToFind`.
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// How many feasible nodes to look for among `all` (upstream `numFeasibleNodesToFind`);
/// `percentage` 0 means adaptive (50% at 100 nodes down to 10% at 5,000, at least 5%).
pub fn num_feasible_nodes_to_find(all: usize, percentage: u32) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return all;
    }
    let pct = if percentage == 0 {
        50usize
            .saturating_sub(all / 125)
            .max(MIN_FEASIBLE_PERCENTAGE)
    } else {
        percentage as usize
    };
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why no node fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub total_nodes: usize,
    /// Reason → number of nodes.
    pub reasons: BTreeMap<String, usize>,
    /// Nodes where preemption could help in principle / could not.
    pub resolvable: usize,
    pub unresolvable: usize,
}

impl Diagnosis {
    /// Upstream's FitError message. The preemption part is what upstream's DefaultPreemption
    /// reports when no pod has a lower priority than this one (mini does not preempt).
    pub fn message(&self) -> String {
        if self.total_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut hist: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        hist.sort();
        let mut pre = Vec::new();
        if self.resolvable > 0 {
            pre.push(format!(
                "{} No preemption victims found for incoming pod",
                self.resolvable
            ));
        }
        if self.unresolvable > 0 {
            pre.push(format!(
                "{} Preemption is not helpful for scheduling",
                self.unresolvable
            ));
        }
        pre.sort();
        format!(
            "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {}.",
            hist.join(", "),
            pre.join(", "),
            n = self.total_nodes
        )
    }
}

/// The decision loop's own state: the round-robin start and a random source for ties.
#[derive(Debug)]
pub struct Algorithm {
    next_start: usize,
    rng: u64,
    percentage: u32,
}

impl Algorithm {
    pub fn new(percentage_of_nodes_to_score: u32, seed: u64) -> Algorithm {
        Algorithm {
            next_start: 0,
            rng: seed | 1,
            percentage: percentage_of_nodes_to_score,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Picks a node (an index into `cache.nodes`) for `pod`.
    pub fn schedule(&mut self, cache: &Cache, pod: &PodInfo) -> Result<usize, Diagnosis> {
        let all = cache.present.len();
        if all == 0 {
            return Err(Diagnosis {
                total_nodes: 0,
                reasons: BTreeMap::new(),
                resolvable: 0,
                unresolvable: 0,
            });
        }
        let want = num_feasible_nodes_to_find(all, self.percentage);
        let st = prefilter(cache, pod);
        let mut feasible = Vec::with_capacity(want.min(all));
        let mut failures: Vec<(usize, Failure)> = Vec::new();
        let start = self.next_start % all;
        let mut processed = 0;
        for k in 0..all {
            let idx = cache.present[(start + k) % all];
            processed = k + 1;
            match filter(pod, &st, &cache.nodes[idx]) {
                Ok(()) => {
                    feasible.push(idx);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(f) => failures.push((idx, f)),
            }
        }
        self.next_start = (start + processed) % all;
        if feasible.is_empty() {
            let mut d = Diagnosis {
                total_nodes: all,
                reasons: BTreeMap::new(),
                resolvable: 0,
                unresolvable: 0,
            };
            for (idx, f) in failures {
                for r in f.reasons(&cache.nodes[idx]) {
                    *d.reasons.entry(r).or_default() += 1;
                }
                if f.resolvable() {
                    d.resolvable += 1;
                } else {
                    d.unresolvable += 1;
                }
            }
            return Err(d);
        }
        if feasible.len() == 1 {
            return Ok(feasible[0]);
        }
        let pre = prescore(cache, pod);
        let scores = score(cache, pod, &pre, &feasible);
        // Reservoir sampling among the best.
        let mut best = 0;
        let mut ties = 0u64;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
                ties = 1;
            } else if *s == scores[best] {
                ties += 1;
                if self.random().is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        Ok(feasible[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::tests::{node, pod};
    use crate::info::NodeTaint;
    use std::sync::Arc;

    #[test]
    fn num_feasible_nodes_follows_upstream_percentages() {
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(100, 0), 100);
        assert_eq!(num_feasible_nodes_to_find(1000, 0), 420);
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(num_feasible_nodes_to_find(10000, 0), 500);
        assert_eq!(num_feasible_nodes_to_find(1000, 100), 1000);
        assert_eq!(num_feasible_nodes_to_find(1000, 5), 100);
    }

    #[test]
    fn schedule_failure_message_matches_upstream_format() {
        let mut c = Cache::default();
        c.set_node(node("small", 100, &[]));
        for name in ["cp1", "cp2"] {
            let mut n = node(name, 4000, &[]);
            n.taints.push(NodeTaint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            });
            c.set_node(n);
        }
        let mut alg = Algorithm::new(0, 42);
        let err = alg
            .schedule(&c, &pod("p", 500, &[]))
            .expect_err("nothing fits");
        assert_eq!(
            err.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: \
             1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            Algorithm::new(0, 1)
                .schedule(&Cache::default(), &pod("p", 0, &[]))
                .map_err(|d| d.message()),
            Err("no nodes available to schedule pods".to_string())
        );
    }

    #[test]
    fn schedule_burst_with_assumed_pods_never_overcommits() {
        let mut c = Cache::default();
        for i in 0..3 {
            c.set_node(node(&format!("n{i}"), 1000, &[]));
        }
        let mut alg = Algorithm::new(0, 7);
        for i in 0..6 {
            let p = Arc::new(pod(&format!("p{i}"), 500, &[]));
            let idx = alg.schedule(&c, &p).expect("fits");
            let name = c.nodes[idx].spec.name.clone();
            c.add_pod(p, &name, true);
        }
        assert!(c.nodes.iter().all(|n| n.requested.milli_cpu == 1000));
        assert!(alg.schedule(&c, &pod("late", 500, &[])).is_err());
    }

    #[test]
    fn schedule_ties_are_broken_randomly() {
        let mut c = Cache::default();
        for i in 0..4 {
            c.set_node(node(&format!("n{i}"), 1000, &[]));
        }
        let mut alg = Algorithm::new(0, 99);
        let picks: std::collections::HashSet<usize> = (0..64)
            .map(|_| alg.schedule(&c, &pod("p", 100, &[])).expect("fits"))
            .collect();
        assert!(picks.len() > 1);
    }

    /// Decision throughput without the API: 1,000 nodes, 10,000 pods assumed one after another.
    #[test]
    #[ignore = "benchmark; run in release"]
    fn schedule_decision_throughput_1000_nodes() {
        let mut c = Cache::default();
        for i in 0..1000 {
            let mut n = node(&format!("n{i}"), 32_000, &[("kubernetes.io/hostname", "x")]);
            n.allocatable.memory = 128 << 30;
            c.set_node(n);
        }
        let mut alg = Algorithm::new(0, 3);
        let t = std::time::Instant::now();
        for i in 0..10_000 {
            let mut p = pod(&format!("p{i}"), 100, &[("app", "web")]);
            p.owner_uid = Some(format!("rs{}", i % 10));
            let p = Arc::new(p);
            let idx = alg.schedule(&c, &p).expect("fits");
            let name = c.nodes[idx].spec.name.clone();
            c.add_pod(p, &name, true);
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "10000 decisions on 1000 nodes: {secs:.3}s, {:.0} pods/s",
            10_000.0 / secs
        );
    }
}
