//! `/readyz` reads the datastore: ok while it answers, 500 with upstream's `[-]etcd failed`
//! once it fails (an agent's balancer then skips this server); `/livez` stays ok.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_store::{
    Deleted, KeyValue, ListPage, Revision, SledStore, Store, StoreError, WatchReceiver,
};
use tower::ServiceExt;

/// A sled store whose reads fail once `gone` is set (a datastore lost under the server).
struct Losable {
    inner: SledStore,
    gone: Arc<AtomicBool>,
}

impl Losable {
    fn check(&self) -> Result<(), StoreError> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Losable {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.check()?;
        self.inner.list(prefix, start_after, limit).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.check()?;
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.check()?;
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        self.check()?;
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

async fn get(server: &ApiServer, path: &str) -> (StatusCode, String) {
    let response = server
        .local_service(ApiServer::admin_user())
        .oneshot(
            Request::get(path)
                .body(Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readyz_datastore_gone_answers_500_livez_stays_ok() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Arc::new(AtomicBool::new(false));
    let store = Losable {
        inner: SledStore::open(&dir.path().join("db")).unwrap(),
        gone: gone.clone(),
    };
    let server = ApiServer::new(Arc::new(store), ApiServerConfig::for_tests())
        .await
        .unwrap();
    assert_eq!(get(&server, "/readyz").await, (StatusCode::OK, "ok".into()));
    gone.store(true, Ordering::SeqCst);
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.starts_with("[-]etcd failed"), "{body}");
    assert_eq!(get(&server, "/livez").await, (StatusCode::OK, "ok".into()));
    gone.store(false, Ordering::SeqCst);
    assert_eq!(get(&server, "/readyz").await.0, StatusCode::OK);
}
