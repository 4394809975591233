//! Encryption at rest through a real in-process API server and kube-rs: Secrets are sealed in
//! the raw store yet read back through the API (get, list, watch), keys rotate online, an
//! interrupted pass resumes after a restart, and only administrators reach the endpoints.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams, WatchEvent as KubeWatchEvent, WatchParams};
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_encryption::{client, Encryption};
use mini_rbac::UserInfo;
use mini_store::{
    Deleted, KeyValue, ListPage, Revision, SledStore, Store, StoreError, WatchReceiver,
};
use tokio_util::sync::CancellationToken;

const MARKER: &str = "hunter2-plaintext-marker";

struct Cluster {
    raw: Arc<dyn Store>,
    enc: Arc<Encryption>,
    api: ApiServer,
    shutdown: CancellationToken,
}

impl Cluster {
    /// An API server over `raw` with encryption (`enabled`) for the server dir `dir`.
    async fn start(dir: &std::path::Path, raw: Arc<dyn Store>, enabled: bool) -> Cluster {
        let enc = Encryption::open(dir, raw.clone(), enabled).unwrap();
        let api = ApiServer::new(enc.store(), ApiServerConfig::for_tests())
            .await
            .unwrap();
        mini_encryption::install(&api, enc.clone());
        let shutdown = CancellationToken::new();
        enc.start(shutdown.clone());
        Cluster {
            raw,
            enc,
            api,
            shutdown,
        }
    }

    fn admin(&self) -> kube::Client {
        kube::Client::new(self.api.local_service(ApiServer::admin_user()), "default")
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin(), "default")
    }
}

fn sled(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SledStore::open(&dir.join("db")).unwrap())
}

fn secret(name: &str, value: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.to_string());
    s.data = Some(
        [(
            "password".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )]
        .into_iter()
        .collect(),
    );
    s
}

fn password(s: &Secret) -> String {
    String::from_utf8(s.data.as_ref().unwrap()["password"].0.clone()).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn raw_value(raw: &Arc<dyn Store>, name: &str) -> Vec<u8> {
    raw.get(&format!("/registry/core/secrets/default/{name}"))
        .await
        .unwrap()
        .unwrap()
        .value
}

#[tokio::test]
async fn secret_is_sealed_in_the_raw_store_and_read_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), sled(dir.path()), true).await;
    let secrets = c.secrets();
    let mut watch = secrets
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    secrets
        .create(&PostParams::default(), &secret("db", MARKER))
        .await
        .unwrap();

    let stored = raw_value(&c.raw, "db").await;
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key-"), "{stored:?}");
    assert!(!contains(&stored, MARKER.as_bytes()));
    assert!(!contains(&stored, b"aHVudGVyMi1wbGFpbnRleHQtbWFya2Vy")); // base64 of it
    assert!(!contains(&stored, b"\"kind\""));

    assert_eq!(password(&secrets.get("db").await.unwrap()), MARKER);
    let listed = secrets.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(password(&listed.items[0]), MARKER);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(KubeWatchEvent::Added(s)) => {
                assert_eq!(password(&s), MARKER);
                break;
            }
            Some(KubeWatchEvent::Bookmark(_)) => continue,
            other => panic!("unexpected watch event {other:?}"),
        }
    }

    // other resources stay plain
    let raw_ns = c
        .raw
        .get("/registry/core/namespaces/default")
        .await
        .unwrap();
    assert!(raw_ns.unwrap().value.starts_with(b"{"));

    // the key file is owner-only
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(mini_encryption::CONFIG_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    c.shutdown.cancel();
}

#[tokio::test]
async fn rotate_keys_moves_every_secret_to_the_new_key_and_retires_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), sled(dir.path()), true).await;
    let secrets = c.secrets();
    for i in 0..5 {
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("s{i}"), &format!("{MARKER}{i}")),
            )
            .await
            .unwrap();
    }
    let admin = c.admin();
    let before = client::status(&admin).await.unwrap();
    let old_key = before.resources[0].write_key.clone();
    assert_eq!(before.resources[0].keys.len(), 1);
    assert_eq!(before.resources[0].keys[0].values, 5);

    let started = client::rotate_keys(&admin).await.unwrap();
    assert_ne!(started.write_keys[0], old_key);
    let outcome = client::wait(&admin, started.run, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(outcome.rewritten, 5);
    assert_eq!(outcome.retired, vec![old_key.clone()]);

    let after = client::status(&admin).await.unwrap();
    let entry = &after.resources[0];
    assert_eq!(entry.write_key, started.write_keys[0]);
    assert_eq!(entry.keys.len(), 1, "{after:?}");
    assert_eq!(entry.keys[0].values, 5);
    assert_eq!(entry.plain_values, 0);
    let text = std::fs::read_to_string(dir.path().join(mini_encryption::CONFIG_FILE)).unwrap();
    let config = mini_encryption::EncryptionConfiguration::parse(&text, "config").unwrap();
    let names: Vec<&str> = config.resources[0].providers[0]
        .aesgcm
        .as_ref()
        .unwrap()
        .keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![started.write_keys[0].split_once(':').unwrap().1]
    );
    assert!(!dir.path().join(mini_encryption::PROGRESS_FILE).exists());

    let new_name = started.write_keys[0].split_once(':').unwrap().1;
    for i in 0..5 {
        let stored = raw_value(&c.raw, &format!("s{i}")).await;
        assert!(
            stored.starts_with(format!("k8s:enc:aesgcm:v1:{new_name}:").as_bytes()),
            "{stored:?}"
        );
        let read = secrets.get(&format!("s{i}")).await.unwrap();
        assert_eq!(password(&read), format!("{MARKER}{i}"));
    }

    // a plain reencrypt now has nothing to move and nothing to retire
    let again = client::reencrypt(&admin).await.unwrap();
    let outcome = client::wait(&admin, again.run, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!((outcome.rewritten, outcome.unchanged), (0, 5));
    assert!(outcome.retired.is_empty());
    c.shutdown.cancel();
}

/// A store that cancels `token` once `remaining` more updates went through.
struct CancelAfterUpdates {
    inner: Arc<dyn Store>,
    remaining: AtomicI64,
    token: CancellationToken,
}

#[async_trait]
impl Store for CancelAfterUpdates {
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
        let kv = self.inner.update(key, value, expected).await?;
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.token.cancel();
        }
        Ok(kv)
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
async fn interrupted_pass_resumes_after_a_restart_and_then_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sled(dir.path());
    let token = CancellationToken::new();
    let counting = Arc::new(CancelAfterUpdates {
        inner: raw.clone(),
        remaining: AtomicI64::new(i64::MAX),
        token: token.clone(),
    });
    // first server: its passes stop with `token`
    let enc = Encryption::open(dir.path(), counting.clone(), true).unwrap();
    let api = ApiServer::new(enc.store(), ApiServerConfig::for_tests())
        .await
        .unwrap();
    mini_encryption::install(&api, enc.clone());
    enc.start(token.clone());
    let admin = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    for i in 0..30 {
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("s{i:02}"), &format!("v{i}")),
            )
            .await
            .unwrap();
    }
    let old_key = client::status(&admin).await.unwrap().resources[0]
        .write_key
        .clone();
    counting.remaining.store(10, Ordering::SeqCst);
    let started = client::rotate_keys(&admin).await.unwrap();
    let err = client::wait(&admin, started.run, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    let progress = dir.path().join(mini_encryption::PROGRESS_FILE);
    assert!(progress.exists());
    let status = enc.status().await.unwrap();
    let pass = status.pass.expect("an unfinished pass");
    assert!(!pass.running);
    assert_eq!(
        pass.after.as_deref(),
        Some("/registry/core/secrets/default/s09")
    );
    assert_eq!(status.resources[0].keys.len(), 2, "both keys kept");

    // second server over the same data: it resumes on its own at start
    let c = Cluster::start(dir.path(), raw.clone(), true).await;
    let outcome = loop {
        if let Some(last) = c.enc.status().await.unwrap().last_pass {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome.result, "completed", "{outcome:?}");
    // 10 before the stop and 20 after it: nothing walked twice
    assert_eq!((outcome.rewritten, outcome.unchanged), (30, 0));
    assert_eq!(outcome.retired, vec![old_key]);
    assert!(!progress.exists());
    for i in 0..30 {
        let read = c.secrets().get(&format!("s{i:02}")).await.unwrap();
        assert_eq!(password(&read), format!("v{i}"));
    }
    c.shutdown.cancel();
}

#[tokio::test]
async fn endpoints_answer_403_to_a_user_who_is_not_an_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), sled(dir.path()), true).await;
    let alice = kube::Client::new(
        c.api.local_service(UserInfo {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        }),
        "default",
    );
    for result in [
        client::status(&alice).await.map(|_| ()),
        client::rotate_keys(&alice).await.map(|_| ()),
        client::reencrypt(&alice).await.map(|_| ()),
    ] {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("cluster administrators"), "{err}");
    }
    let response = tower::ServiceExt::oneshot(
        c.api.local_service(UserInfo {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        }),
        http::Request::get(mini_encryption::STATUS_PATH)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    c.shutdown.cancel();
}

#[tokio::test]
async fn encryption_off_writes_plain_but_still_reads_sealed_values() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sled(dir.path());
    let on = Cluster::start(dir.path(), raw.clone(), true).await;
    on.secrets()
        .create(&PostParams::default(), &secret("sealed", MARKER))
        .await
        .unwrap();
    on.shutdown.cancel();

    let off = Cluster::start(dir.path(), raw.clone(), false).await;
    off.secrets()
        .create(&PostParams::default(), &secret("plain", "visible"))
        .await
        .unwrap();
    assert!(raw_value(&raw, "plain").await.starts_with(b"{"));
    assert!(raw_value(&raw, "sealed").await.starts_with(b"k8s:enc:"));
    assert_eq!(
        password(&off.secrets().get("sealed").await.unwrap()),
        MARKER
    );
    let err = client::rotate_keys(&off.admin()).await.unwrap_err();
    assert!(
        err.to_string().contains("--secrets-encryption=false"),
        "{err}"
    );
    let status = client::status(&off.admin()).await.unwrap();
    assert!(!status.enabled);
    assert_eq!(status.resources[0].write_key, "identity");
    assert_eq!(status.resources[0].plain_values, 1);
    assert_eq!(status.resources[0].keys[0].values, 1);
    off.shutdown.cancel();
}

#[tokio::test]
async fn existing_plain_secrets_are_sealed_when_encryption_first_starts() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sled(dir.path());
    // a cluster from before encryption existed: no configuration, values plain
    let old = Cluster::start(dir.path(), raw.clone(), false).await;
    old.secrets()
        .create(&PostParams::default(), &secret("legacy", MARKER))
        .await
        .unwrap();
    old.shutdown.cancel();
    assert!(raw_value(&raw, "legacy").await.starts_with(b"{"));

    let new = Cluster::start(dir.path(), raw.clone(), true).await;
    let outcome = loop {
        if let Some(last) = new.enc.status().await.unwrap().last_pass {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome.result, "completed");
    assert_eq!(outcome.rewritten, 1);
    assert!(raw_value(&raw, "legacy")
        .await
        .starts_with(b"k8s:enc:aesgcm:"));
    assert_eq!(
        password(&new.secrets().get("legacy").await.unwrap()),
        MARKER
    );
    new.shutdown.cancel();
}

#[tokio::test]
async fn a_value_sealed_with_an_unknown_key_is_a_clear_api_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), sled(dir.path()), true).await;
    let foreign = mini_encryption::Keyring::new(
        mini_encryption::EncryptionConfiguration::parse(
            r#"{"resources":[{"resources":["secrets"],"providers":[
            {"secretbox":{"keys":[{"name":"lost","secret":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="}]}}]}]}"#,
            "test",
        )
        .unwrap(),
        true,
    )
    .unwrap();
    let key = "/registry/core/secrets/default/alien";
    let plain = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "alien", "namespace": "default", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"},
    }))
    .unwrap();
    c.raw
        .create(key, foreign.seal(key, &plain).unwrap())
        .await
        .unwrap();
    let err = c.secrets().get("alien").await.unwrap_err().to_string();
    assert!(err.contains("\"lost\""), "{err}");
    assert!(err.contains("does not hold"), "{err}");
    let status = client::status(&c.admin()).await.unwrap();
    let lost = status.resources[0]
        .keys
        .iter()
        .find(|k| k.name == "lost")
        .unwrap();
    assert!(!lost.configured);
    assert_eq!(lost.values, 1);
    c.shutdown.cancel();
}
