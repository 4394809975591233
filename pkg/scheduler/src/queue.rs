//! The scheduling queue (upstream's three queues): an active heap ordered by priority then
//! arrival, a backoff heap for pods whose attempt hit an error, and the unschedulable set that
//! cluster changes (and a periodic flush) move back to active.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::info::PodInfo;

/// Where a pending pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    at: Where,
    seq: u64,
    attempts: u32,
    unschedulable_since: Instant,
}

/// Backoff and flush timings.
#[derive(Debug, Clone, Copy)]
pub struct QueueTimings {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often.
    pub unschedulable_flush: Duration,
}

/// A pod handed out for one scheduling attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub info: Arc<PodInfo>,
    /// The move counter when the attempt started (upstream `schedulingCycle`).
    pub moves: u64,
}

/// Pending pods by uid and where each waits.
#[derive(Debug)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    seq: u64,
    moves: u64,
    timings: QueueTimings,
}

impl Queue {
    pub fn new(timings: QueueTimings) -> Queue {
        Queue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            seq: 0,
            moves: 0,
            timings,
        }
    }

    fn push_active(&mut self, uid: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(uid) {
            e.at = Where::Active;
            e.seq = seq;
            self.active
                .push((e.info.priority, Reverse(seq), uid.to_string()));
        }
    }

    /// A new or updated pending pod. Returns whether it became active (a new pod).
    pub fn upsert(&mut self, info: Arc<PodInfo>) -> bool {
        if let Some(e) = self.entries.get_mut(&info.uid) {
            e.info = info;
            return false;
        }
        let uid = info.uid.clone();
        self.entries.insert(
            uid.clone(),
            Entry {
                info,
                at: Where::Active,
                seq: 0,
                attempts: 0,
                unschedulable_since: Instant::now(),
            },
        );
        self.push_active(&uid);
        true
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// The pod is gone or no longer pending.
    pub fn remove(&mut self, uid: &str) {
        self.entries.remove(uid);
        self.unschedulable.remove(uid);
    }

    /// The next active pod, marked in flight.
    pub fn pop(&mut self) -> Option<Attempt> {
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&uid) else {
                continue;
            };
            if e.at != Where::Active || e.seq != seq {
                continue;
            }
            e.at = Where::InFlight;
            e.attempts += 1;
            return Some(Attempt {
                info: e.info.clone(),
                moves: self.moves,
            });
        }
        None
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The attempt found no node. If the cluster changed meanwhile, retry after backoff;
    /// otherwise park it until something changes.
    pub fn unschedulable(&mut self, uid: &str, attempt_moves: u64) {
        if attempt_moves != self.moves {
            self.backoff(uid);
            return;
        }
        if let Some(e) = self.entries.get_mut(uid) {
            e.at = Where::Unschedulable;
            e.unschedulable_since = Instant::now();
            self.unschedulable.insert(uid.to_string());
        }
    }

    /// Retry after the pod's backoff (1 s doubling up to the maximum).
    pub fn backoff(&mut self, uid: &str) {
        let t = self.timings;
        if let Some(e) = self.entries.get_mut(uid) {
            let exp = e.attempts.saturating_sub(1).min(16);
            let d = t
                .initial_backoff
                .saturating_mul(1 << exp)
                .min(t.max_backoff);
            e.at = Where::Backoff;
            self.seq += 1;
            e.seq = self.seq;
            self.backoff
                .push(Reverse((Instant::now() + d, self.seq, uid.to_string())));
        }
    }

    /// Bound: forget the pod.
    pub fn done(&mut self, uid: &str) {
        self.remove(uid);
    }

    /// A cluster change that may make unschedulable pods fit: move them all to active.
    pub fn move_all(&mut self) -> usize {
        self.moves += 1;
        let uids: Vec<String> = self.unschedulable.drain().collect();
        let n = uids.len();
        for uid in uids {
            self.push_active(&uid);
        }
        n
    }

    /// Moves due backoffs, and unschedulable pods parked longer than the flush interval, to
    /// active. Returns how many moved.
    pub fn flush(&mut self, now: Instant) -> usize {
        let mut moved = 0;
        while let Some(Reverse((at, seq, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, uid))) = self.backoff.pop() else {
                break;
            };
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.at == Where::Backoff && e.seq == seq)
            {
                self.push_active(&uid);
                moved += 1;
            }
        }
        let flush = self.timings.unschedulable_flush;
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|u| {
                self.entries
                    .get(*u)
                    .is_some_and(|e| now.duration_since(e.unschedulable_since) >= flush)
            })
            .cloned()
            .collect();
        for uid in stale {
            self.unschedulable.remove(&uid);
            self.push_active(&uid);
            moved += 1;
        }
        moved
    }

    /// Uids of all pending pods (relist reconciliation).
    pub fn uids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> QueueTimings {
        QueueTimings {
            initial_backoff: Duration::from_millis(0),
            max_backoff: Duration::from_millis(0),
            unschedulable_flush: Duration::from_secs(60),
        }
    }

    fn pod(uid: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: uid.into(),
            priority,
            ..Default::default()
        })
    }

    #[test]
    fn queue_pops_by_priority_then_fifo() {
        let mut q = Queue::new(timings());
        q.upsert(pod("a", 0));
        q.upsert(pod("b", 10));
        q.upsert(pod("c", 0));
        assert!(!q.upsert(pod("a", 0)));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop().map(|a| a.info.uid.clone())).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
    }

    #[test]
    fn queue_unschedulable_waits_for_move_or_flush() {
        let mut q = Queue::new(timings());
        q.upsert(pod("a", 0));
        let a = q.pop().expect("a");
        q.unschedulable("a", a.moves);
        assert!(q.pop().is_none());
        assert_eq!(q.flush(Instant::now()), 0);
        assert_eq!(q.move_all(), 1);
        let a = q.pop().expect("a again");
        // A move during the attempt sends it to backoff instead of parking it.
        q.move_all();
        q.unschedulable("a", a.moves);
        assert_eq!(q.flush(Instant::now() + Duration::from_millis(1)), 1);
        assert!(q.pop().is_some());
        q.unschedulable("a", q.moves);
        assert_eq!(q.flush(Instant::now() + Duration::from_secs(61)), 1);
    }

    #[test]
    fn queue_removed_pods_are_skipped() {
        let mut q = Queue::new(timings());
        q.upsert(pod("a", 0));
        q.remove("a");
        assert!(q.pop().is_none());
        assert!(q.uids().is_empty());
    }
}
