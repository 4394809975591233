//! `events.k8s.io/v1` Events are the same objects as core/v1 Events, as upstream: this store
//! layer maps keys under the events.k8s.io prefix onto the core events keys and converts the
//! JSON between the two shapes on the way in and out (watch included).

use std::sync::Arc;

use async_trait::async_trait;
use mini_store::{
    Deleted, KeyValue, ListPage, Revision, Store, StoreError, WatchEvent, WatchReceiver,
};
use serde_json::{Map, Value};

const ALIAS_PREFIX: &str = "/registry/events.k8s.io/events/";
const CORE_PREFIX: &str = "/registry/core/events/";

/// (events.k8s.io field, core/v1 field)
const FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Re-shapes stored JSON: `to_events` true maps core → events.k8s.io, false the other way.
/// Output keeps `apiVersion`, `kind`, `metadata` first, as the storage form requires.
fn convert(bytes: &[u8], to_events: bool) -> Vec<u8> {
    let Ok(Value::Object(src)) = serde_json::from_slice::<Value>(bytes) else {
        return bytes.to_vec();
    };
    let mut out = Map::new();
    let (api_version, kind) = if to_events {
        ("events.k8s.io/v1", "Event")
    } else {
        ("v1", "Event")
    };
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String(kind.into()));
    if let Some(m) = src.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    for (events_field, core_field) in FIELDS {
        let (from, to) = if to_events {
            (core_field, events_field)
        } else {
            (events_field, core_field)
        };
        if let Some(v) = src.get(*from) {
            if !v.is_null() {
                out.insert((*to).to_string(), v.clone());
            }
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_else(|_| bytes.to_vec())
}

fn to_core_key(key: &str) -> Option<String> {
    key.strip_prefix(ALIAS_PREFIX)
        .map(|rest| format!("{CORE_PREFIX}{rest}"))
}

fn to_alias_kv(kv: KeyValue) -> KeyValue {
    let key = kv
        .key
        .strip_prefix(CORE_PREFIX)
        .map(|rest| format!("{ALIAS_PREFIX}{rest}"))
        .unwrap_or(kv.key);
    KeyValue {
        key,
        value: convert(&kv.value, true),
        ..kv
    }
}

/// Wraps a store so the events.k8s.io prefix reads and writes the core events.
pub struct EventsAliasStore {
    inner: Arc<dyn Store>,
}

impl EventsAliasStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        EventsAliasStore { inner }
    }
}

#[async_trait]
impl Store for EventsAliasStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match to_core_key(key) {
            Some(core) => Ok(self.inner.get(&core).await?.map(to_alias_kv)),
            None => self.inner.get(key).await,
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        match to_core_key(prefix) {
            Some(core) => {
                let start = start_after.and_then(to_core_key);
                let page = self
                    .inner
                    .list(&core, start.as_deref().or(start_after), limit)
                    .await?;
                Ok(ListPage {
                    items: page.items.into_iter().map(to_alias_kv).collect(),
                    ..page
                })
            }
            None => self.inner.list(prefix, start_after, limit).await,
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        match to_core_key(key) {
            Some(core) => Ok(to_alias_kv(
                self.inner.create(&core, convert(&value, false)).await?,
            )),
            None => self.inner.create(key, value).await,
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        match to_core_key(key) {
            Some(core) => Ok(to_alias_kv(
                self.inner
                    .update(&core, convert(&value, false), expected)
                    .await?,
            )),
            None => self.inner.update(key, value, expected).await,
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        match to_core_key(key) {
            Some(core) => {
                let d = self.inner.delete(&core, expected).await?;
                Ok(Deleted {
                    prev: to_alias_kv(d.prev),
                    revision: d.revision,
                })
            }
            None => self.inner.delete(key, expected).await,
        }
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        let Some(core) = to_core_key(prefix) else {
            return self.inner.watch(prefix, after);
        };
        let mut source = self.inner.watch(&core, after)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(ev) = source.recv().await {
                let ev = match ev {
                    WatchEvent::Put { kv, prev } => WatchEvent::Put {
                        kv: to_alias_kv(kv),
                        prev: prev.map(to_alias_kv),
                    },
                    WatchEvent::Delete(d) => WatchEvent::Delete(Deleted {
                        prev: to_alias_kv(d.prev),
                        revision: d.revision,
                    }),
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.inner.check_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn convert_core_event_to_events_v1_and_back_keeps_fields() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "Started",
            "type": "Normal", "count": 2, "source": {"component": "x"}, "reportingComponent": "x"});
        let ev: Value =
            serde_json::from_slice(&convert(&serde_json::to_vec(&core).unwrap(), true)).unwrap();
        assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(ev["deprecatedCount"], 2);
        assert_eq!(ev["reportingController"], "x");
        let back: Value =
            serde_json::from_slice(&convert(&serde_json::to_vec(&ev).unwrap(), false)).unwrap();
        assert_eq!(back, core);
    }

    #[tokio::test]
    async fn alias_store_reads_core_events_under_the_events_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(mini_store::SledStore::open(dir.path()).unwrap());
        let store = EventsAliasStore::new(inner.clone());
        let core =
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "message": "m"});
        inner
            .create(
                "/registry/core/events/d/e",
                serde_json::to_vec(&core).unwrap(),
            )
            .await
            .unwrap();
        let page = store
            .list("/registry/events.k8s.io/events/d/", None, 0)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].key, "/registry/events.k8s.io/events/d/e");
        let v: Value = serde_json::from_slice(&page.items[0].value).unwrap();
        assert_eq!(v["note"], "m");
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "f"}, "note": "n", "regarding": {"name": "p"}});
        store
            .create(
                "/registry/events.k8s.io/events/d/f",
                serde_json::to_vec(&new).unwrap(),
            )
            .await
            .unwrap();
        let stored: Value = serde_json::from_slice(
            &inner
                .get("/registry/core/events/d/f")
                .await
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(stored["message"], "n");
        assert_eq!(stored["involvedObject"]["name"], "p");
        let mut w = store
            .watch("/registry/events.k8s.io/events/", store.current_revision())
            .unwrap();
        inner
            .delete("/registry/core/events/d/e", None)
            .await
            .unwrap();
        match w.recv().await.unwrap() {
            WatchEvent::Delete(d) => assert_eq!(d.prev.key, "/registry/events.k8s.io/events/d/e"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
