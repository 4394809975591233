//! The watch hub: a ring of recent events plus the registered watchers.
//!
//! The hub lives under the store's write lock, so publishing an event and registering a
//! watcher are serialized: a new watcher gets every retained event after its revision and then
//! every live event, with no gap and no duplicate.

use std::collections::VecDeque;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{Revision, StoreError, WatchEvent, WatchReceiver};

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
}

pub(crate) struct Hub {
    /// Events with revisions `floor + 1 ..= floor + history.len()`, one per revision.
    history: VecDeque<WatchEvent>,
    /// Maximum number of retained events.
    history_events: usize,
    /// Every event with a revision above `floor` is in `history`.
    floor: Revision,
    watchers: Vec<Watcher>,
    /// Room for live events in each watcher's channel (on top of its replayed events).
    live_capacity: usize,
}

impl Hub {
    /// An empty hub for a store whose current revision is `current`.
    pub(crate) fn new(history_events: usize, current: Revision, live_capacity: usize) -> Hub {
        Hub {
            history: VecDeque::new(),
            history_events,
            floor: current,
            watchers: Vec::new(),
            live_capacity: live_capacity.max(1),
        }
    }

    /// The oldest revision whose events are still retained (`floor + 1`).
    pub(crate) fn oldest_retained(&self) -> Revision {
        self.floor + 1
    }

    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    #[cfg(test)]
    pub(crate) fn set_live_capacity(&mut self, live_capacity: usize) {
        self.live_capacity = live_capacity.max(1);
    }

    /// Sends `event` to matching watchers and records it in the history. Watchers whose
    /// channel is full or closed are dropped; the client re-lists.
    pub(crate) fn publish(&mut self, event: WatchEvent) {
        let key = event.key();
        self.watchers.retain(|watcher| {
            if watcher.tx.is_closed() {
                return false;
            }
            if !key.starts_with(&watcher.prefix) {
                return true;
            }
            match watcher.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(
                        prefix = %watcher.prefix,
                        "dropping a watcher that fell behind"
                    );
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        let revision = event.revision();
        if self.history_events == 0 {
            self.floor = revision;
            return;
        }
        self.history.push_back(event);
        while self.history.len() > self.history_events {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.revision();
            }
        }
    }

    /// Registers a watcher for keys under `prefix` with events after `after`.
    pub(crate) fn subscribe(
        &mut self,
        prefix: &str,
        after: Revision,
        current: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        if after < self.floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.oldest_retained(),
            });
        }
        // History is contiguous: the event with revision `after + 1` is at `after - floor`.
        let start = usize::try_from(after - self.floor).unwrap_or(usize::MAX);
        let replay: Vec<&WatchEvent> = if after >= current {
            Vec::new()
        } else {
            self.history
                .iter()
                .skip(start)
                .filter(|event| event.key().starts_with(prefix))
                .collect()
        };
        let (tx, rx) = mpsc::channel(replay.len() + self.live_capacity);
        for event in replay {
            // The channel was sized to hold the whole replay.
            if tx.try_send(event.clone()).is_err() {
                return Err(StoreError::Backend(
                    "replaying watch history overflowed the channel".to_string(),
                ));
            }
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(rx)
    }

    /// Drops history up to and including `revision` (never beyond `current`).
    pub(crate) fn compact(&mut self, revision: Revision, current: Revision) {
        let upto = revision.min(current);
        while self
            .history
            .front()
            .is_some_and(|event| event.revision() <= upto)
        {
            self.history.pop_front();
        }
        self.floor = self.floor.max(upto);
    }
}
