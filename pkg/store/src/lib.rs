//! The key-value store trait with revisions and watch, and its sled backend.
//!
//! [`SledStore`] is the production backend: one global revision persisted with every write,
//! group-committed fsyncs, and an in-memory event history that feeds watchers.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod flush;
mod hub;
mod sled_store;

pub use hub::Hub;

pub use sled_store::{
    restore_sled, Restored, SledSpace, SledStore, DEFAULT_HISTORY_EVENTS, WATCH_CHANNEL_CAPACITY,
};

use async_trait::async_trait;

/// One global, monotonic revision; it is the Kubernetes `resourceVersion`.
pub type Revision = u64;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A deleted key: its last value and the revision of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub prev: KeyValue,
    pub revision: Revision,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created (`prev` is `None`) or updated.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    Delete(Deleted),
}

impl WatchEvent {
    /// The revision at which the change happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete(deleted) => deleted.revision,
        }
    }

    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete(deleted) => &deleted.prev.key,
        }
    }
}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The store revision the page was read at.
    pub revision: Revision,
    /// More keys follow the last item.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted; oldest retained is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("store backend failed: {0}")]
    Backend(String),
    /// The backend cannot be reached or cannot commit (an etcd cluster without quorum); the
    /// request may succeed when retried later.
    #[error("store backend unavailable: {0}")]
    Unavailable(String),
}

/// Events for one watcher, in revision order. The channel closes when the watcher falls too far
/// behind or the store shuts down; the client then re-lists.
pub type WatchReceiver = tokio::sync::mpsc::Receiver<WatchEvent>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Keys starting with `prefix`, strictly after `start_after` when given, in key order,
    /// at most `limit` items (`0` = no limit).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;
    /// Creates `key`; fails with `AlreadyExists` if present.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;
    /// Replaces `key`; with `expected` the current mod revision must match (`Conflict` otherwise).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError>;
    /// Deletes `key`; with `expected` the current mod revision must match.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError>;
    /// Events for keys under `prefix` with revision > `after`, replayed from history and then
    /// live. `Compacted` when `after` is older than the retained history.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError>;
    fn current_revision(&self) -> Revision;
    /// Drops history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
    /// Whether the store answers with its current state and can take writes now (`/readyz`):
    /// by default one read; a store that may answer reads from a stale copy (etcd without a
    /// quorum) checks with a read that needs the current state.
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.get("/mini/readyz").await.map(drop)
    }
}
