//! The bounded queue of batches waiting for the server: kept in order, oldest dropped (and
//! counted) when full; nothing is ever merged, reordered or made up.

use std::collections::VecDeque;

use crate::wire::SampleBatch;

/// Queued batches, each with a sequence number so the sender can tell whether the batch it
/// sent is still the oldest (the sampler may have dropped it meanwhile).
#[derive(Debug)]
pub struct BatchQueue {
    capacity: usize,
    next_seq: u64,
    items: VecDeque<(u64, SampleBatch)>,
}

impl BatchQueue {
    /// A queue of at most `capacity` batches (at least 1).
    pub fn new(capacity: usize) -> BatchQueue {
        BatchQueue {
            capacity: capacity.max(1),
            next_seq: 0,
            items: VecDeque::new(),
        }
    }

    /// Appends a batch; returns how many of the oldest batches were dropped to make room.
    pub fn push(&mut self, batch: SampleBatch) -> usize {
        let mut dropped = 0;
        while self.items.len() >= self.capacity {
            self.items.pop_front();
            dropped += 1;
        }
        self.items.push_back((self.next_seq, batch));
        self.next_seq += 1;
        dropped
    }

    /// The oldest batch and its sequence number, the next to send.
    pub fn front(&self) -> Option<(u64, &SampleBatch)> {
        self.items.front().map(|(seq, b)| (*seq, b))
    }

    /// Removes the oldest batch.
    pub fn pop_front(&mut self) -> Option<SampleBatch> {
        self.items.pop_front().map(|(_, b)| b)
    }

    /// Removes batch `seq` once the server accepted it, if it is still the oldest (false when
    /// it was dropped while being sent).
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.items.front().is_some_and(|(s, _)| *s == seq) {
            self.items.pop_front();
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(t: i64) -> SampleBatch {
        SampleBatch {
            node: "n1".into(),
            series: vec![crate::wire::SeriesSamples {
                labels: [("__name__".to_string(), "node_load1".to_string())].into(),
                samples: vec![(t, 1.0)],
            }],
        }
    }

    #[test]
    fn batch_queue_full_drops_oldest_and_keeps_order() {
        let mut q = BatchQueue::new(3);
        for t in 1..=3 {
            assert_eq!(q.push(batch(t)), 0);
        }
        assert_eq!(q.push(batch(4)), 1);
        assert_eq!(q.len(), 3);
        let times: Vec<i64> = std::iter::from_fn(|| q.pop_front())
            .map(|b| b.series[0].samples[0].0)
            .collect();
        assert_eq!(times, vec![2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn batch_queue_front_is_kept_until_popped() {
        let mut q = BatchQueue::new(0);
        q.push(batch(1));
        assert_eq!(q.front(), Some((0, &batch(1))));
        assert_eq!(q.front(), Some((0, &batch(1))));
        assert_eq!(q.push(batch(2)), 1, "capacity is at least one");
        assert_eq!(q.pop_front(), Some(batch(2)));
    }

    #[test]
    fn batch_queue_ack_of_a_dropped_batch_removes_nothing() {
        let mut q = BatchQueue::new(1);
        q.push(batch(1));
        let (sent, _) = q.front().expect("front");
        q.push(batch(2)); // full: batch 1 dropped while it was being sent
        assert!(!q.ack(sent));
        assert_eq!(q.len(), 1);
        let (next, _) = q.front().expect("front");
        assert!(q.ack(next));
        assert!(q.is_empty());
    }
}
