//! Restoring a snapshot into a stopped cluster: the whole file is checked first, then the
//! store is replaced and the keyring put back. Every revision handed out afterwards is above
//! every revision issued before, and older ones answer `Compacted` (410).

use std::path::Path;

use futures::stream::{self, StreamExt, TryStreamExt};
use mini_store::{Revision, Store};

use crate::format::Snapshot;
use crate::{io_err, SnapshotError, KEYRING_FILE, KEYRING_PROGRESS_FILE};

/// Concurrent writes while restoring into etcd.
const ETCD_WRITERS: usize = 32;
/// Where the servers' leader-election Leases are stored.
const SERVER_LEASES: &str = "/registry/leases/kube-system/";

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The highest revision issued before the restore.
    pub previous: Revision,
    /// The revision the store continues from.
    pub revision: Revision,
    pub keys: usize,
    pub keyring: bool,
}

/// Reads and checks a whole snapshot file (magic, version, checksum, every record).
pub fn load(path: &Path) -> Result<Snapshot, SnapshotError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    Snapshot::decode(&bytes)
}

/// Restores the snapshot file at `path` into the stopped cluster of `server_dir`: its sled
/// store, or the etcd cluster of `etcd`. The whole file is checked before anything is touched.
pub async fn restore_file(
    server_dir: &Path,
    path: &Path,
    etcd: Option<mini_etcdstore::EtcdConfig>,
) -> Result<(Snapshot, Restored), SnapshotError> {
    let snapshot = load(path).map_err(|e| match e {
        SnapshotError::Io { .. } => e,
        other => SnapshotError::Client(format!("{}: {other}", path.display())),
    })?;
    let restored = match etcd {
        None => restore_sled(server_dir, &snapshot)?,
        Some(config) => {
            let store = mini_etcdstore::EtcdStore::connect(config).await?;
            restore_etcd(&store, server_dir, &snapshot).await?
        }
    };
    Ok((snapshot, restored))
}

/// The keyring written beside its final place, to be renamed over it once the store is
/// restored (so a refused store restore leaves the keyring as it was).
struct StagedKeyring {
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
}

fn stage_keyring(
    server_dir: &Path,
    snapshot: &Snapshot,
) -> Result<Option<StagedKeyring>, SnapshotError> {
    let Some(keyring) = &snapshot.keyring else {
        return Ok(None);
    };
    let path = server_dir.join(KEYRING_FILE);
    let parent = path.parent().unwrap_or(server_dir);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = path.with_extension("json.restore");
    write_private(&tmp, keyring)?;
    Ok(Some(StagedKeyring { tmp, path }))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

fn finish_keyring(server_dir: &Path, staged: Option<StagedKeyring>) -> Result<bool, SnapshotError> {
    let Some(staged) = staged else {
        return Ok(false);
    };
    std::fs::rename(&staged.tmp, &staged.path).map_err(io_err(&staged.path))?;
    let progress = server_dir.join(KEYRING_PROGRESS_FILE);
    match std::fs::remove_file(&progress) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&progress)(e)),
    }
    Ok(true)
}

/// Restores `snapshot` into the embedded store of `<server_dir>/db` (the server must be
/// stopped: a running one holds the store and the restore is refused untouched).
pub fn restore_sled(server_dir: &Path, snapshot: &Snapshot) -> Result<Restored, SnapshotError> {
    let staged = stage_keyring(server_dir, snapshot)?;
    let restored = match mini_store::restore_sled(
        &server_dir.join("db"),
        snapshot.header.revision,
        &snapshot.items,
    ) {
        Ok(restored) => restored,
        Err(e) => {
            if let Some(staged) = &staged {
                let _ = std::fs::remove_file(&staged.tmp);
            }
            return Err(e.into());
        }
    };
    let keyring = finish_keyring(server_dir, staged)?;
    Ok(Restored {
        previous: restored.previous,
        revision: restored.revision,
        keys: restored.keys,
        keyring,
    })
}

/// Restores `snapshot` into the etcd cluster behind `store` (every mini server on it must be
/// stopped): deletes every key, writes the snapshot's keys (etcd gives them new revisions,
/// all above the old ones), then compacts etcd to the new revision so older ones answer 410.
pub async fn restore_etcd(
    store: &dyn Store,
    server_dir: &Path,
    snapshot: &Snapshot,
) -> Result<Restored, SnapshotError> {
    let existing = store.list("", None, 0).await?;
    let holders = held_leases(&existing.items, chrono::Utc::now());
    if !holders.is_empty() {
        return Err(SnapshotError::Client(format!(
            "servers still run on this etcd (leases held by {}): stop every server before restoring",
            holders.join(", ")
        )));
    }
    let staged = stage_keyring(server_dir, snapshot)?;
    let previous = existing.revision;
    stream::iter(existing.items.iter().map(Ok::<_, SnapshotError>))
        .try_for_each_concurrent(ETCD_WRITERS, |kv| async move {
            match store.delete(&kv.key, None).await {
                Ok(_) | Err(mini_store::StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    stream::iter(snapshot.items.iter())
        .map(|kv| async move { store.create(&kv.key, kv.value.clone()).await })
        .buffer_unordered(ETCD_WRITERS)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let revision = store.list("", None, 1).await?.revision;
    store.compact(revision).await?;
    let keyring = finish_keyring(server_dir, staged)?;
    Ok(Restored {
        previous,
        revision,
        keys: snapshot.items.len(),
        keyring,
    })
}

/// The holders of the servers' leader-election Leases renewed within their lease duration of
/// `now`: servers that still run (a server that stopped cleanly released its Leases).
fn held_leases(items: &[mini_store::KeyValue], now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let mut holders = Vec::new();
    for kv in items.iter().filter(|kv| kv.key.starts_with(SERVER_LEASES)) {
        let Ok(lease) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
            continue;
        };
        let spec = &lease["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or_default();
        let renewed = spec["renewTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(15);
        if let Some(renewed) = renewed {
            let expires = renewed.with_timezone(&chrono::Utc) + chrono::Duration::seconds(duration);
            if !holder.is_empty() && expires > now && !holders.iter().any(|h| h == holder) {
                holders.push(holder.to_string());
            }
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::source::{Snapshotter, Source};
    use mini_store::{SledStore, StoreError};

    fn open(path: &Path) -> SledStore {
        for _ in 0..100 {
            match SledStore::open(path) {
                Err(StoreError::Backend(m)) if m.contains("could not acquire lock") => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => return opened.expect("open store"),
            }
        }
        panic!("the store stayed locked")
    }

    async fn seeded(server_dir: &Path) -> (crate::dir::Entry, Revision) {
        let store = Arc::new(open(&server_dir.join("db")));
        store
            .create("/registry/namespaces/a", b"ns".to_vec())
            .await
            .unwrap();
        store
            .create("/registry/configmaps/a/x", b"1".to_vec())
            .await
            .unwrap();
        std::fs::create_dir_all(server_dir.join("cred")).unwrap();
        std::fs::write(server_dir.join(KEYRING_FILE), b"keys-at-snapshot").unwrap();
        let snapshotter = Snapshotter::new(
            Source::Sled(Arc::clone(&store)),
            server_dir,
            &server_dir.join("db").join("snapshots"),
        );
        let entry = snapshotter.save("on-demand").await.unwrap();
        // after the snapshot: more writes, a deletion, a new key
        store
            .delete("/registry/configmaps/a/x", None)
            .await
            .unwrap();
        for i in 0..5 {
            store
                .create(&format!("/registry/configmaps/a/n{i}"), b"2".to_vec())
                .await
                .unwrap();
        }
        std::fs::write(server_dir.join(KEYRING_FILE), b"keys-later").unwrap();
        let last = store.current_revision();
        drop(snapshotter);
        drop(store);
        (entry, last)
    }

    #[tokio::test]
    async fn restore_sled_brings_back_keys_keyring_and_bumps_revision() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, last) = seeded(dir.path()).await;
        assert_eq!(entry.header.revision, 2);
        assert!(entry.header.keyring);
        let snapshot = load(&entry.path).unwrap();
        let restored = restore_sled(dir.path(), &snapshot).unwrap();
        assert_eq!(restored.previous, last);
        assert!(restored.revision > last, "{restored:?}");
        assert!(restored.keyring);
        assert_eq!(
            std::fs::read(dir.path().join(KEYRING_FILE)).unwrap(),
            b"keys-at-snapshot"
        );

        let store = open(&dir.path().join("db"));
        assert_eq!(store.current_revision(), restored.revision);
        let page = store.list("/registry/", None, 0).await.unwrap();
        let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/registry/configmaps/a/x", "/registry/namespaces/a"]);
        // every revision handed out before the restore is gone: watchers list again
        for old in [0, entry.header.revision, last] {
            let err = store.watch("/", old).unwrap_err();
            assert!(matches!(err, StoreError::Compacted { .. }), "{old}: {err}");
        }
        let kv = store
            .create("/registry/configmaps/a/new", b"3".to_vec())
            .await
            .unwrap();
        assert!(kv.mod_revision > last);
    }

    #[tokio::test]
    async fn restore_sled_while_store_open_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, last) = seeded(dir.path()).await;
        let snapshot = load(&entry.path).unwrap();
        let running = open(&dir.path().join("db"));
        let err = restore_sled(dir.path(), &snapshot).unwrap_err();
        assert!(err.to_string().contains("stop the server"), "{err}");
        assert_eq!(running.current_revision(), last);
        assert_eq!(
            std::fs::read(dir.path().join(KEYRING_FILE)).unwrap(),
            b"keys-later"
        );
        assert!(running
            .get("/registry/configmaps/a/n0")
            .await
            .unwrap()
            .is_some());
    }

    fn lease(key: &str, holder: &str, renewed: &str) -> mini_store::KeyValue {
        mini_store::KeyValue {
            key: key.to_string(),
            value: serde_json::to_vec(&serde_json::json!({
                "kind": "Lease",
                "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": 15}
            }))
            .unwrap(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    #[test]
    fn held_leases_names_only_fresh_holders() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:20Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let items = vec![
            lease(
                "/registry/leases/kube-system/kube-scheduler",
                "server-a",
                "2026-01-01T00:00:10.000000Z",
            ),
            lease(
                "/registry/leases/kube-system/kube-controller-manager",
                "server-b",
                "2026-01-01T00:00:01.000000Z",
            ),
            lease(
                "/registry/leases/kube-system/released",
                "",
                "2026-01-01T00:00:19.000000Z",
            ),
            lease(
                "/registry/leases/kube-node-lease/node-1",
                "node-1",
                "2026-01-01T00:00:19.000000Z",
            ),
        ];
        assert_eq!(held_leases(&items, now), ["server-a"]);
    }

    #[tokio::test]
    async fn load_corrupted_file_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (entry, last) = seeded(dir.path()).await;
        let mut bytes = std::fs::read(&entry.path).unwrap();
        let at = bytes.len() - 40;
        bytes[at] ^= 0xff;
        std::fs::write(&entry.path, &bytes).unwrap();
        assert!(matches!(
            load(&entry.path).unwrap_err(),
            SnapshotError::Corrupt(_)
        ));
        let store = open(&dir.path().join("db"));
        assert_eq!(store.current_revision(), last);
    }
}
