//! Where a snapshot is read from, and the server's [`Snapshotter`] that reads the store and
//! the keyring and writes the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mini_store::{KeyValue, Revision, SledStore, Store};

use crate::dir::{self, Entry};
use crate::format::Snapshot;
use crate::{io_err, SnapshotError, KEYRING_FILE};

/// The store a snapshot reads, below the encryption layer (values stay sealed; the keyring
/// travels with them).
#[derive(Clone)]
pub enum Source {
    /// The embedded store: every key is read while writes wait, at one revision.
    Sled(Arc<SledStore>),
    /// An etcd cluster: one range over every key at one revision (the store reads its pages
    /// at the first page's revision).
    Etcd(Arc<dyn Store>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

impl Source {
    /// `sled` or `etcd`, as written in the header.
    pub fn backend(&self) -> &'static str {
        match self {
            Source::Sled(_) => "sled",
            Source::Etcd(_) => "etcd",
        }
    }

    /// Every key at one revision.
    pub async fn read_all(&self) -> Result<(Revision, Vec<KeyValue>), SnapshotError> {
        match self {
            Source::Sled(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.read_all())
                    .await
                    .map_err(|e| SnapshotError::Client(format!("reading the store: {e}")))?
                    .map_err(SnapshotError::from)
            }
            Source::Etcd(store) => {
                let page = store.list("", None, 0).await?;
                Ok((page.revision, page.items))
            }
        }
    }
}

/// Takes snapshots of one server's store into its snapshot directory.
#[derive(Debug)]
pub struct Snapshotter {
    source: Source,
    server_dir: PathBuf,
    dir: PathBuf,
    /// One snapshot at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Snapshotter {
    /// Snapshots of `source` with the keyring under `server_dir`, written into `dir`.
    pub fn new(source: Source, server_dir: &Path, dir: &Path) -> Snapshotter {
        Snapshotter {
            source,
            server_dir: server_dir.to_path_buf(),
            dir: dir.to_path_buf(),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the store and the keyring and writes snapshot `name`.
    pub async fn save(&self, name: &str) -> Result<Entry, SnapshotError> {
        let _busy = self.busy.lock().await;
        let keyring_path = self.server_dir.join(KEYRING_FILE);
        let (revision, items) = self.source.read_all().await?;
        let keyring = match tokio::fs::read(&keyring_path).await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&keyring_path)(e)),
        };
        let snapshot = Snapshot::new(self.source.backend(), name, revision, keyring, items);
        let dir = self.dir.clone();
        let entry = tokio::task::spawn_blocking(move || dir::write(&dir, &snapshot))
            .await
            .map_err(|e| SnapshotError::Client(format!("writing the snapshot: {e}")))??;
        tracing::info!(file = %entry.file, revision, keys = entry.header.keys, "snapshot saved");
        Ok(entry)
    }
}
