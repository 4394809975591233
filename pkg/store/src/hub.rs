//! The watch hub: a ring of recent events plus the registered watchers.
//!
//! The hub lives under the store's write lock, so publishing an event and registering a
//! watcher are serialized: a new watcher gets every retained event after its revision and then
//! every live event, with no gap and no duplicate. Backends that learn of their own writes
//! later than they acknowledge them (etcd) feed the hub from a watch and register watchers with
//! [`Hub::subscribe_after`], which also holds back live events up to the requested revision.

use std::collections::VecDeque;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{Revision, StoreError, WatchEvent, WatchReceiver};

struct Watcher {
    prefix: String,
    /// Live events at or below this revision are not sent.
    skip_through: Revision,
    tx: mpsc::Sender<WatchEvent>,
}

/// Recent events and the watchers they go to.
pub struct Hub {
    /// Every event with a revision above `floor`, in revision order (a backend may publish
    /// several events of one revision).
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
    pub fn new(history_events: usize, current: Revision, live_capacity: usize) -> Hub {
        Hub {
            history: VecDeque::new(),
            history_events,
            floor: current,
            watchers: Vec::new(),
            live_capacity: live_capacity.max(1),
        }
    }

    /// The oldest revision whose events are still retained (`floor + 1`).
    pub fn oldest_retained(&self) -> Revision {
        self.floor + 1
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Closes every watcher's channel (their clients list again) and forgets the history: every
    /// event up to `floor` is then unavailable.
    pub fn reset(&mut self, floor: Revision) {
        self.watchers.clear();
        self.history.clear();
        self.floor = floor;
    }

    #[cfg(test)]
    pub(crate) fn set_live_capacity(&mut self, live_capacity: usize) {
        self.live_capacity = live_capacity.max(1);
    }

    /// Sends `event` to matching watchers and records it in the history. Watchers whose
    /// channel is full or closed are dropped; the client re-lists.
    pub fn publish(&mut self, event: WatchEvent) {
        let key = event.key();
        self.watchers.retain(|watcher| {
            if watcher.tx.is_closed() {
                return false;
            }
            if !key.starts_with(&watcher.prefix) || event.revision() <= watcher.skip_through {
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

    /// Registers a watcher for keys under `prefix` with events after `after`; `current` is the
    /// revision of the last published event.
    pub fn subscribe(
        &mut self,
        prefix: &str,
        after: Revision,
        current: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        self.register(prefix, after, current, after.min(current))
    }

    /// Like [`Hub::subscribe`], for a backend whose writes may be acknowledged before they are
    /// published here: live events up to and including `after` are not sent either, so a
    /// watcher starting from a revision the hub has not seen yet gets exactly the later events.
    pub fn subscribe_after(
        &mut self,
        prefix: &str,
        after: Revision,
        current: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        self.register(prefix, after, current, after)
    }

    fn register(
        &mut self,
        prefix: &str,
        after: Revision,
        current: Revision,
        skip_through: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        if after < self.floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.oldest_retained(),
            });
        }
        let start = self
            .history
            .partition_point(|event| event.revision() <= after);
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
            skip_through,
            tx,
        });
        Ok(rx)
    }

    /// Every retained event with a revision above `after`, in order; `None` when some of them
    /// are no longer retained.
    pub fn events_after(&self, after: Revision) -> Option<Vec<WatchEvent>> {
        if after < self.floor {
            return None;
        }
        let start = self
            .history
            .partition_point(|event| event.revision() <= after);
        Some(self.history.iter().skip(start).cloned().collect())
    }

    /// Drops history up to and including `revision` (never beyond `current`).
    pub fn compact(&mut self, revision: Revision, current: Revision) {
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
