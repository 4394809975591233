//! The store layer: values of configured resources are sealed on create and update, and every
//! sealed value is opened on get, list, delete and in watch events. Writers hold the
//! manager's write gate across sealing and the write, so once a rotation returns no value can
//! land with the previous key.

use std::sync::Arc;

use async_trait::async_trait;
use mini_store::{
    Deleted, KeyValue, ListPage, Revision, Store, StoreError, WatchEvent, WatchReceiver,
};

use crate::cipher::Keyring;
use crate::Encryption;

/// Wraps the cluster's store; build it with [`Encryption::store`].
pub struct EncryptingStore {
    pub(crate) enc: Arc<Encryption>,
}

fn open_kv(ring: &Keyring, kv: KeyValue) -> Result<KeyValue, StoreError> {
    let value = ring
        .open(&kv.key, kv.value)
        .map_err(crate::EncryptionError::into_store)?;
    Ok(KeyValue { value, ..kv })
}

fn open_event(ring: &Keyring, ev: WatchEvent) -> Result<WatchEvent, StoreError> {
    Ok(match ev {
        WatchEvent::Put { kv, prev } => WatchEvent::Put {
            kv: open_kv(ring, kv)?,
            prev: prev.map(|p| open_kv(ring, p)).transpose()?,
        },
        WatchEvent::Delete(d) => WatchEvent::Delete(Deleted {
            prev: open_kv(ring, d.prev)?,
            revision: d.revision,
        }),
    })
}

/// Whether a stored value is sealed (plain ones come back as they are, without a copy).
fn is_sealed(kv: &KeyValue) -> bool {
    crate::cipher::Sealing::of(&kv.value) != crate::cipher::Sealing::Plain
}

/// Opens with the keyring in force; a value that does not open (sealed with a key another
/// server just added) makes a server of several read the datastore's keyring once and try again.
async fn open_fresh<T, F>(enc: &Encryption, open: F) -> Result<T, StoreError>
where
    F: Fn(&Keyring) -> Result<T, StoreError>,
{
    match open(&enc.keyring()) {
        Ok(v) => Ok(v),
        Err(e) if enc.shared.get().is_none() => Err(e),
        Err(e) => {
            tracing::info!(error = %e, "a stored value does not open with this keyring; reading the datastore's");
            if let Err(confirm) = enc.confirm().await {
                tracing::warn!(error = %confirm, "reading the datastore's keyring failed");
                return Err(e);
            }
            open(&enc.keyring())
        }
    }
}

impl EncryptingStore {
    fn inner(&self) -> &Arc<dyn Store> {
        &self.enc.inner
    }

    /// Seals `value` for `key` and runs `write` with it under the write gate; the result
    /// carries the plain value back.
    async fn sealed_write<F, Fut>(
        &self,
        key: &str,
        value: Vec<u8>,
        write: F,
    ) -> Result<KeyValue, StoreError>
    where
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<KeyValue, StoreError>>,
    {
        if self.enc.keyring().entry_for(key).is_none() {
            return write(value).await;
        }
        // several servers: a keyring not confirmed for a while may miss a rotation
        if self.enc.needs_confirming() {
            self.enc
                .confirm()
                .await
                .map_err(crate::EncryptionError::into_store)?;
        }
        let _gate = self.enc.gate.read().await;
        // the ring may have changed while waiting for the gate
        let sealed = self
            .enc
            .keyring()
            .seal(key, &value)
            .map_err(crate::EncryptionError::into_store)?;
        let kv = write(sealed).await?;
        Ok(KeyValue { value, ..kv })
    }
}

#[async_trait]
impl Store for EncryptingStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self.inner().get(key).await? {
            Some(kv) if !is_sealed(&kv) => Ok(Some(kv)),
            Some(kv) => Ok(Some(
                open_fresh(&self.enc, |ring| open_kv(ring, kv.clone())).await?,
            )),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let page = self.inner().list(prefix, start_after, limit).await?;
        if !page.items.iter().any(is_sealed) {
            return Ok(page);
        }
        let items = open_fresh(&self.enc, |ring| {
            page.items
                .iter()
                .map(|kv| open_kv(ring, kv.clone()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        Ok(ListPage { items, ..page })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let inner = self.inner().clone();
        self.sealed_write(key, value, |v| async move { inner.create(key, v).await })
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let inner = self.inner().clone();
        self.sealed_write(key, value, |v| async move {
            inner.update(key, v, expected).await
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        let d = self.inner().delete(key, expected).await?;
        if !is_sealed(&d.prev) {
            return Ok(d);
        }
        Ok(Deleted {
            prev: open_fresh(&self.enc, |ring| open_kv(ring, d.prev.clone())).await?,
            revision: d.revision,
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        if !self.enc.keyring().covers_prefix(prefix) {
            return self.inner().watch(prefix, after);
        }
        let mut source = self.inner().watch(prefix, after)?;
        let (tx, rx) = tokio::sync::mpsc::channel(mini_store::WATCH_CHANNEL_CAPACITY);
        let enc = self.enc.clone();
        tokio::spawn(async move {
            while let Some(ev) = source.recv().await {
                let ev = match open_fresh(&enc, |ring| open_event(ring, ev.clone())).await {
                    Ok(ev) => ev,
                    Err(e) => {
                        // ending the watch makes the client list again, which reports it
                        tracing::error!(error = %e, "ending a watch: a stored value does not decrypt");
                        return;
                    }
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn current_revision(&self) -> Revision {
        self.inner().current_revision()
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner().compact(revision).await
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.inner().check_ready().await
    }
}
