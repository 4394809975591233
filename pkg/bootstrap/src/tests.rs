//! Tests of sealing and of loading/saving the shared files against a real (sled) store.

use std::path::Path;

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
