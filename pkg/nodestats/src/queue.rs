//! The bounded queue of batches waiting for the server: kept in order, oldest dropped (and
//! counted) when full; nothing is ever merged, reordered or made up.

use std::collections::VecDeque;

use crate::wire::SampleBatch;

#[derive(Debug)]
pub struct BatchQueue {
    capacity: usize,
    items: VecDeque<SampleBatch>,
}

impl BatchQueue {
    /// A queue of at most `capacity` batches (at least 1).
    pub fn new(capacity: usize) -> BatchQueue {
        BatchQueue {
            capacity: capacity.max(1),
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
        self.items.push_back(batch);
        dropped
    }

    /// The oldest batch, the next to send.
    pub fn front(&self) -> Option<&SampleBatch> {
        self.items.front()
    }

    /// Removes the oldest batch once the server accepted it.
    pub fn pop_front(&mut self) -> Option<SampleBatch> {
        self.items.pop_front()
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
        assert_eq!(q.front(), Some(&batch(1)));
        assert_eq!(q.front(), Some(&batch(1)));
        assert_eq!(q.push(batch(2)), 1, "capacity is at least one");
        assert_eq!(q.pop_front(), Some(batch(2)));
    }
}
