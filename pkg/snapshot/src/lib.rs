//! Snapshots of the datastore (`mini snapshot save|ls|delete|prune|restore`, and scheduled by
//! the server): one consistent revision of every key plus the encryption keyring in a
//! checksummed file, restored into a stopped cluster above every revision it ever issued.
//!
//! ```text
//!   POST /v1-mini/snapshot/save ─▶ Snapshotter ─ Source (sled: read under the write lock,
//!   cron schedule ───────────────▶     │           etcd: one range at one revision)
//!                                      ▼
//!                <data-dir>/server/db/snapshots/<name>-<time>.snap  (format.rs)
//!                                      │
//!   mini snapshot restore FILE ────────┴─▶ checks the whole file, then replaces the store
//! ```

mod client;
mod dir;
mod format;
mod restore;
mod route;
mod schedule;
mod source;

pub use client::save_via_server;
pub use dir::{default_dir, delete, list, prune, resolve, write, Entry};
pub use format::{read_header, Header, Snapshot, FORMAT, MAGIC, VERSION};
pub use restore::{load, restore_etcd, restore_file, restore_sled, Restored};
pub use route::{install, SAVE_PATH};
pub use schedule::{parse_cron, run_schedule, Schedule, DEFAULT_CRON, DEFAULT_KEEP};
pub use source::{Snapshotter, Source};

/// The keyring file under `<data-dir>/server/` (kept in step with `mini_encryption`).
pub const KEYRING_FILE: &str = "cred/encryption-config.json";
/// The progress of an unfinished re-encryption pass, under `<data-dir>/server/`; it describes
/// the data before a restore, so restoring removes it.
pub const KEYRING_PROGRESS_FILE: &str = "cred/encryption-progress.json";
/// The name of snapshots taken by `mini snapshot save` without `--name`.
pub const ON_DEMAND: &str = "on-demand";
/// The name of snapshots the server takes on its schedule.
pub const SCHEDULED: &str = "scheduled";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a mini snapshot (it does not start with the mini snapshot header); refusing it")]
    Foreign,
    #[error("the snapshot is corrupt: {0}; refusing it (nothing was changed)")]
    Corrupt(String),
    #[error("{0}")]
    Format(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] mini_store::StoreError),
    #[error(transparent)]
    Etcd(#[from] mini_etcdstore::EtcdError),
    #[error("snapshot name {0:?} is not valid: use lowercase letters, digits, '-' and '.'")]
    BadName(String),
    #[error("snapshot {0} not found (see mini snapshot ls)")]
    NotFound(String),
    #[error("snapshot schedule {expression:?} is not a cron expression: {reason}")]
    Schedule { expression: String, reason: String },
    #[error("{0}")]
    Client(String),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}
