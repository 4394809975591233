//! The re-encryption pass against writes racing it: a value changed between the pass's read
//! and its compare-and-swap is re-read and sealed in its new form, a value deleted meanwhile is
//! skipped, and the old key is still retired at the end.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mini_encryption::{Encryption, Sealing};
use mini_store::{
    Deleted, KeyValue, ListPage, Revision, SledStore, Store, StoreError, WatchReceiver,
};
use tokio_util::sync::CancellationToken;

const CHANGED: &str = "/registry/core/secrets/default/changed";
const DELETED: &str = "/registry/core/secrets/default/deleted";
const STEADY: &str = "/registry/core/secrets/default/steady";

/// Before the first compare-and-swap on `CHANGED` it writes that key itself; before the first
/// on `DELETED` it deletes it: what a client racing the pass would do.
struct Racing {
    inner: Arc<dyn Store>,
    raced: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Store for Racing {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(prefix, start_after, limit).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let first = expected.is_some() && {
            let mut raced = self.raced.lock().unwrap();
            let first = !raced.iter().any(|k| k == key);
            raced.push(key.to_string());
            first
        };
        if first && key == CHANGED {
            self.inner
                .update(key, b"{\"concurrent\":true}".to_vec(), None)
                .await?;
        }
        if first && key == DELETED {
            self.inner.delete(key, None).await?;
        }
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        self.inner.delete(key, expected).await
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        self.inner.watch(prefix, after)
    }
    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

#[tokio::test]
async fn pass_rereads_a_value_changed_under_it_and_skips_one_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let racing = Arc::new(Racing {
        inner: raw.clone(),
        raced: Default::default(),
    });
    let enc = Encryption::open(dir.path(), racing, true).unwrap();
    let shutdown = CancellationToken::new();
    enc.start(shutdown.clone());
    let store = enc.store();
    for key in [CHANGED, DELETED, STEADY] {
        store.create(key, b"{\"v\":1}".to_vec()).await.unwrap();
    }
    let old = enc.keyring().write_sealing(0);

    let started = enc.rotate_keys().await.unwrap();
    let outcome = loop {
        if let Some(last) = enc.status().await.unwrap().last_pass {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(outcome.run, started.run);
    assert_eq!(outcome.result, "completed", "{outcome:?}");
    assert_eq!(outcome.rewritten, 2);
    assert_eq!(outcome.retired, vec![old.to_string()]);

    let new = enc.keyring().write_sealing(0);
    assert_ne!(new, old);
    let changed = raw.get(CHANGED).await.unwrap().unwrap();
    assert_eq!(Sealing::of(&changed.value), new);
    assert_eq!(
        store.get(CHANGED).await.unwrap().unwrap().value,
        b"{\"concurrent\":true}"
    );
    assert!(raw.get(DELETED).await.unwrap().is_none());
    assert_eq!(
        Sealing::of(&raw.get(STEADY).await.unwrap().unwrap().value),
        new
    );
    shutdown.cancel();
    enc.stopped().await;
}
