//! Several servers on one store sharing the keyring through the bootstrap data: a key rotated
//! on one is used to read at once on the others, and the old key is retired only once every
//! live server writes with the new one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mini_bootstrap::Shared;
use mini_encryption::{Encryption, PassOutcome, Sealing};
use mini_store::{SledStore, Store};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "/registry/core/secrets/default/";

/// A server of the cluster on `store`: its keyring from the datastore (the first one's
/// generated and published), shared with `share` (false: a server that stopped following).
async fn server(
    store: &Arc<dyn Store>,
    dir: &Path,
    name: &str,
    share: bool,
    shutdown: &CancellationToken,
) -> (Arc<Encryption>, Arc<dyn Store>) {
    mini_bootstrap::load(store.as_ref(), dir, "tok", false)
        .await
        .unwrap();
    let enc = Encryption::open(dir, store.clone(), true).unwrap();
    let shared = Shared::new(store.clone(), dir.into(), "tok".into(), name.into());
    shared.publish().await.unwrap();
    if share {
        enc.share(shared, shutdown.clone());
    }
    enc.start(shutdown.clone());
    let api = enc.store();
    (enc, api)
}

async fn last_pass(enc: &Encryption, run: u64) -> PassOutcome {
    loop {
        if let Some(last) = enc.status().await.unwrap().last_pass {
            if last.run == run {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rotate_on_one_server_value_written_there_reads_on_other_at_once() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let (da, db2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shutdown = CancellationToken::new();
    let (a, api_a) = server(&store, da.path(), "a", true, &shutdown).await;
    let (b, api_b) = server(&store, db2.path(), "b", true, &shutdown).await;
    let old = a.keyring().write_sealing(0);
    assert_eq!(b.keyring().write_sealing(0), old);
    api_a
        .create(&format!("{SECRET}before"), b"{\"v\":0}".to_vec())
        .await
        .unwrap();

    let started = a.rotate_keys().await.unwrap();
    api_a
        .create(&format!("{SECRET}after"), b"{\"v\":1}".to_vec())
        .await
        .unwrap();
    let raw = store.get(&format!("{SECRET}after")).await.unwrap().unwrap();
    let new = a.keyring().write_sealing(0);
    assert_ne!(new, old);
    assert_eq!(Sealing::of(&raw.value), new);
    // b never waited for anything: the unknown key name makes it read the datastore's keyring
    assert_eq!(
        api_b
            .get(&format!("{SECRET}after"))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"{\"v\":1}"
    );
    let outcome = last_pass(&a, started.run).await;
    assert_eq!(outcome.result, "completed", "{outcome:?}");
    assert_eq!(outcome.retired, vec![old.to_string()]);
    // b follows the retirement and writes with the new key
    for _ in 0..200 {
        if b.keyring().key_sealings(0).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.keyring().key_sealings(0), vec![new.clone()]);
    api_b
        .create(&format!("{SECRET}from-b"), b"{\"v\":2}".to_vec())
        .await
        .unwrap();
    let raw = store
        .get(&format!("{SECRET}from-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Sealing::of(&raw.value), new);
    let list = api_a.list(SECRET, None, 10).await.unwrap();
    assert_eq!(list.items.len(), 3);
    shutdown.cancel();
    a.stopped().await;
}

#[tokio::test]
async fn rotate_while_other_server_still_writes_old_key_does_not_retire_it() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let (da, db2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shutdown = CancellationToken::new();
    let (a, _api_a) = server(&store, da.path(), "a", true, &shutdown).await;
    let (b, _api_b) = server(&store, db2.path(), "b", false, &shutdown).await;
    // b is up (its heartbeat keeps its record fresh) but never takes the new keyring
    let old = b.keyring().write_sealing(0);
    let beat = {
        let store = store.clone();
        let dir = db2.path().to_path_buf();
        let old = old.to_string();
        tokio::spawn(async move {
            let shared = Shared::new(store, dir, "tok".into(), "b".into());
            loop {
                shared.announce(std::slice::from_ref(&old)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = a.rotate_keys().await.unwrap();
    // the pass waits for b (up to its timeout); meanwhile the old key stays in a's keyring
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.keyring().key_sealings(0).contains(&old));
    assert!(a
        .status()
        .await
        .unwrap()
        .last_pass
        .is_none_or(|p| p.run != started.run));
    beat.abort();
    shutdown.cancel();
}
