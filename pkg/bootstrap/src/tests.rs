//! Tests of sealing and of loading/saving the shared files against a real (sled) store.

use std::path::Path;

use std::sync::Arc;

use mini_store::{SledStore, Store};

use super::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap()
}

fn first_server(dir: &Path) {
    write(dir, "tls/ca.crt", "CA CERT");
    write(dir, "tls/ca.key", "CA KEY");
    write(dir, "tls/service-account.key", "SA KEY");
    write(dir, "cred/encryption-config.json", "{\"keys\":1}");
}

#[test]
fn seal_open_with_same_secret_round_trips() {
    let sealed = seal(b"hello", "s3cret").unwrap();
    assert_eq!(open(&sealed, "s3cret").unwrap(), b"hello");
    assert!(!sealed.ciphertext.contains("hello"));
}

#[test]
fn open_with_other_secret_is_wrong_token() {
    let sealed = seal(b"hello", "s3cret").unwrap();
    assert!(matches!(
        open(&sealed, "other"),
        Err(BootstrapError::WrongToken)
    ));
}

#[tokio::test]
async fn save_then_load_into_empty_dir_writes_every_shared_file() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    assert!(save(&store, one.path(), "tok").await.unwrap());
    let raw = store.get(KEY).await.unwrap().unwrap().value;
    assert!(!String::from_utf8_lossy(&raw).contains("CA KEY"));

    let loaded = load(&store, two.path(), "tok", true).await.unwrap();
    assert!(loaded.found);
    assert_eq!(loaded.written.len(), 4);
    assert_eq!(read(two.path(), "tls/ca.key"), "CA KEY");
    assert_eq!(
        read(two.path(), "cred/encryption-config.json"),
        "{\"keys\":1}"
    );
    // nothing changed: saving again writes nothing
    assert!(!save(&store, two.path(), "tok").await.unwrap());
}

#[tokio::test]
async fn load_with_wrong_token_is_refused() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    save(&store, one.path(), "tok").await.unwrap();
    let err = load(&store, two.path(), "nope", true).await.unwrap_err();
    assert!(matches!(err, BootstrapError::WrongToken), "{err}");
    assert!(!two.path().join("tls/ca.key").exists());
}

#[tokio::test]
async fn load_joining_empty_datastore_is_no_cluster() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = load(&store, dir.path(), "tok", true).await.unwrap_err();
    assert!(matches!(err, BootstrapError::NoCluster), "{err}");
    let first = load(&store, dir.path(), "tok", false).await.unwrap();
    assert!(!first.found);
}

#[tokio::test]
async fn load_with_other_ca_is_foreign_cluster() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    save(&store, one.path(), "tok").await.unwrap();
    write(two.path(), "tls/ca.crt", "ANOTHER CA");
    let err = load(&store, two.path(), "tok", false).await.unwrap_err();
    assert!(
        matches!(err, BootstrapError::ForeignCluster { .. }),
        "{err}"
    );
    assert_eq!(read(two.path(), "tls/ca.crt"), "ANOTHER CA");
}

#[tokio::test]
async fn save_newer_keyring_reaches_other_server_on_load() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    save(&store, one.path(), "tok").await.unwrap();
    load(&store, two.path(), "tok", true).await.unwrap();
    // a rotation on server one, later than everything stored
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(one.path(), "cred/encryption-config.json", "{\"keys\":2}");
    assert!(save(&store, one.path(), "tok").await.unwrap());
    let loaded = load(&store, two.path(), "tok", true).await.unwrap();
    assert_eq!(
        loaded.written,
        vec!["cred/encryption-config.json".to_string()]
    );
    assert_eq!(
        read(two.path(), "cred/encryption-config.json"),
        "{\"keys\":2}"
    );
}

/// Server one rotates its CA: the old one becomes the previous CA beside a new one.
fn rotate_ca(dir: &Path) {
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(dir, "tls/ca-previous.crt", &read(dir, "tls/ca.crt"));
    write(dir, "tls/ca-cross.crt", "CROSS");
    write(dir, "tls/rotation.json", "{\"retireCaAt\":1}");
    write(dir, "tls/ca.key", "NEW CA KEY");
    write(dir, "tls/ca.crt", "NEW CA CERT");
}

#[tokio::test]
async fn save_rotated_ca_reaches_other_server_on_refresh() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    save(store.as_ref(), one.path(), "tok").await.unwrap();
    load(store.as_ref(), two.path(), "tok", true).await.unwrap();
    let shared = Shared::new(store.clone(), two.path().into(), "tok".into(), "two".into());
    let mut changes = shared.subscribe();
    assert!(shared.refresh().await.unwrap().is_empty());

    rotate_ca(one.path());
    assert!(save(store.as_ref(), one.path(), "tok").await.unwrap());
    let mut written = shared.refresh().await.unwrap();
    written.sort();
    assert_eq!(
        written,
        vec![
            "tls/ca-cross.crt",
            "tls/ca-previous.crt",
            "tls/ca.crt",
            "tls/ca.key",
            "tls/rotation.json"
        ]
    );
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    assert_eq!(read(two.path(), "tls/ca.crt"), "NEW CA CERT");
    assert_eq!(read(two.path(), "tls/ca-previous.crt"), "CA CERT");
    // a restart of server one with the rotated CA is not a foreign cluster either way
    load(store.as_ref(), one.path(), "tok", false)
        .await
        .unwrap();
    assert!(!save(store.as_ref(), two.path(), "tok").await.unwrap());
    assert!(shared.refresh().await.unwrap().is_empty());
    assert!(!changes.has_changed().unwrap());
}

#[tokio::test]
async fn load_with_ca_unrelated_to_rotated_one_is_foreign_cluster() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    rotate_ca(one.path());
    save(&store, one.path(), "tok").await.unwrap();
    write(two.path(), "tls/ca.crt", "ANOTHER CA");
    write(two.path(), "tls/ca-previous.crt", "YET ANOTHER CA");
    let err = load(&store, two.path(), "tok", false).await.unwrap_err();
    assert!(
        matches!(err, BootstrapError::ForeignCluster { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn save_rotated_keyring_reaches_running_server_on_refresh() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    let first = Shared::new(store.clone(), one.path().into(), "tok".into(), "one".into());
    assert!(first.publish().await.unwrap());
    load(store.as_ref(), two.path(), "tok", true).await.unwrap();
    let second = Shared::new(store.clone(), two.path().into(), "tok".into(), "two".into());
    second.refresh().await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(one.path(), "cred/encryption-config.json", "{\"keys\":2}");
    assert!(first.publish().await.unwrap());
    assert_eq!(
        second.refresh().await.unwrap(),
        vec!["cred/encryption-config.json".to_string()]
    );
    assert_eq!(
        read(two.path(), "cred/encryption-config.json"),
        "{\"keys\":2}"
    );
}

fn quick_wait(stale_ms: u64, timeout_ms: u64) -> WriterWait {
    WriterWait {
        stale_after: std::time::Duration::from_millis(stale_ms),
        timeout: std::time::Duration::from_millis(timeout_ms),
        poll: std::time::Duration::from_millis(10),
    }
}

#[tokio::test]
async fn wait_writers_other_server_on_old_key_is_lagging() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let one = Shared::new(store.clone(), dir.path().into(), "tok".into(), "one".into());
    let two = Shared::new(store.clone(), dir.path().into(), "tok".into(), "two".into());
    one.announce(&["aesgcm:key2".into()]).await.unwrap();
    two.announce(&["aesgcm:key1".into()]).await.unwrap();
    let new = vec!["aesgcm:key2".to_string()];
    // two keeps its heartbeat going on the old key: never stale, so lagging at the timeout
    let heartbeat = {
        let two = two.clone();
        tokio::spawn(async move {
            loop {
                two.announce(&["aesgcm:key1".into()]).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let err = one
        .wait_writers(&new, quick_wait(10_000, 200))
        .await
        .unwrap_err();
    heartbeat.abort();
    assert!(
        matches!(&err, BootstrapError::Lagging(s) if s == "two"),
        "{err}"
    );
    // it picks up the new key: the wait ends with nobody down
    two.announce(&new).await.unwrap();
    assert!(one
        .wait_writers(&new, quick_wait(10_000, 200))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn wait_writers_silent_server_counts_as_down() {
    let db = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db.path().join("db")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let one = Shared::new(store.clone(), dir.path().into(), "tok".into(), "one".into());
    let three = Shared::new(
        store.clone(),
        dir.path().into(),
        "tok".into(),
        "three".into(),
    );
    three.announce(&["aesgcm:key1".into()]).await.unwrap();
    let down = one
        .wait_writers(&["aesgcm:key2".into()], quick_wait(50, 5_000))
        .await
        .unwrap();
    assert_eq!(down, vec!["three".to_string()]);
}

#[tokio::test]
async fn load_written_copy_carries_record_time_so_later_change_elsewhere_wins() {
    let db = tempfile::tempdir().unwrap();
    let store = SledStore::open(&db.path().join("db")).unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    first_server(one.path());
    save(&store, one.path(), "tok").await.unwrap();
    load(&store, two.path(), "tok", true).await.unwrap();
    let modified = |dir: &Path| {
        std::fs::metadata(dir.join("cred/encryption-config.json"))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    // the written copy is as old as the first server's, not as the moment of writing
    assert_eq!(modified(two.path()), modified(one.path()));
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(one.path(), "cred/encryption-config.json", "{\"keys\":2}");
    save(&store, one.path(), "tok").await.unwrap();
    // server two saving its (older) copy does not put the old keyring back
    assert!(!save(&store, two.path(), "tok").await.unwrap());
    load(&store, two.path(), "tok", true).await.unwrap();
    assert_eq!(
        read(two.path(), "cred/encryption-config.json"),
        "{\"keys\":2}"
    );
}
