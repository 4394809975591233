//! Snapshots on a real etcd (Debian's etcd-server, one member on loopback): save reads every
//! key at one revision, restore rewrites the keys above every earlier revision and compacts
//! etcd so older watches are refused.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_etcdstore::{EtcdConfig, EtcdStore};
use mini_snapshot::{load, restore_etcd, Snapshotter, Source};
use mini_store::{Store, StoreError};

/// One etcd member on free loopback ports, killed (by its PID) when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("/usr/bin/etcd")
            .arg("--name=s0")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=s0={peer_url}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        let etcd = Etcd {
            child,
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while EtcdStore::connect(etcd.config()).await.is_err() {
            assert!(Instant::now() < deadline, "etcd did not start within 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd
    }

    fn config(&self) -> EtcdConfig {
        let mut config = EtcdConfig::new(vec![self.endpoint.clone()]);
        config.request_timeout = Duration::from_secs(3);
        config
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("server");
    std::fs::create_dir_all(dir.join("cred")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_save_then_restore_brings_keys_back_above_every_revision() {
    let etcd = Etcd::start().await;
    let root = tempfile::tempdir().unwrap();
    let server = server_dir(root.path());
    std::fs::write(server.join(mini_snapshot::KEYRING_FILE), b"keys").unwrap();
    let store: Arc<EtcdStore> = Arc::new(EtcdStore::connect(etcd.config()).await.unwrap());
    for i in 0..700 {
        store
            .create(&format!("/registry/configmaps/a/cm{i:03}"), vec![b'v'; 100])
            .await
            .unwrap();
    }
    let snapshotter = Snapshotter::new(
        Source::Etcd(store.clone() as Arc<dyn Store>),
        &server,
        &server.join("db").join("snapshots"),
    );
    let entry = snapshotter.save("on-demand").await.unwrap();
    assert_eq!(entry.header.backend, "etcd");
    assert_eq!(entry.header.keys, 700);
    assert_eq!(entry.header.revision, store.current_revision());

    // after the snapshot: deletions and new keys
    for i in 0..10 {
        store
            .delete(&format!("/registry/configmaps/a/cm{i:03}"), None)
            .await
            .unwrap();
    }
    store
        .create("/registry/configmaps/a/later", b"x".to_vec())
        .await
        .unwrap();
    std::fs::write(server.join(mini_snapshot::KEYRING_FILE), b"later keys").unwrap();
    let last = store.current_revision();
    drop(snapshotter);
    drop(store);

    let snapshot = load(&entry.path).unwrap();
    let fresh = EtcdStore::connect(etcd.config()).await.unwrap();
    let restored = restore_etcd(&fresh, &server, &snapshot).await.unwrap();
    assert_eq!(restored.previous, last);
    assert!(restored.revision > last, "{restored:?}");
    assert_eq!(
        std::fs::read(server.join(mini_snapshot::KEYRING_FILE)).unwrap(),
        b"keys"
    );
    drop(fresh);

    // a server starting afterwards sees the snapshot's keys, all above the old revisions
    let store = EtcdStore::connect(etcd.config()).await.unwrap();
    let page = store.list("/registry/", None, 0).await.unwrap();
    assert_eq!(page.items.len(), 700);
    assert!(page.items.iter().all(|kv| kv.mod_revision > last));
    assert!(store
        .get("/registry/configmaps/a/later")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get("/registry/configmaps/a/cm000")
        .await
        .unwrap()
        .is_some());
    let err = store.watch("/", last).unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
}
