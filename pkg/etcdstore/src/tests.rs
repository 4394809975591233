//! Integration tests against a real 3-member etcd cluster: the store conformance suite, the
//! watch cache's floor, quorum loss and recovery, TLS and bad endpoints.

use std::sync::Arc;
use std::time::Duration;

use mini_store::conformance::{assert_no_event, next};
use mini_store::{Store, StoreError, WatchEvent};

use crate::cluster::Cluster;
use crate::{EtcdConfig, EtcdError, EtcdStore};

/// A store on a fresh cluster for one conformance case.
async fn open_for_conformance() -> (Arc<dyn Store>, Cluster) {
    let cluster = Cluster::start().await;
    let store = EtcdStore::connect(cluster.config())
        .await
        .expect("connect to the test cluster");
    (Arc::new(store), cluster)
}

mini_store::store_conformance_tests!(open_for_conformance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_older_than_connect_revision_returns_compacted() {
    let cluster = Cluster::start().await;
    let first = EtcdStore::connect(cluster.config()).await.unwrap();
    let a = first.create("/a", b"1".to_vec()).await.unwrap();
    let second = EtcdStore::connect(cluster.config()).await.unwrap();
    assert_eq!(second.current_revision(), a.mod_revision);
    let err = second.watch("/", a.mod_revision - 1).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { oldest, .. } if oldest == a.mod_revision + 1),
        "{err}"
    );
    // a write through the first store reaches a watcher of the second
    let mut rx = second.watch("/", a.mod_revision).unwrap();
    let b = first.create("/b", b"2".to_vec()).await.unwrap();
    let event = next(&mut rx).await;
    assert_eq!((event.key(), event.revision()), ("/b", b.mod_revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_larger_than_one_page_is_one_snapshot() {
    let cluster = Cluster::start().await;
    let store = EtcdStore::connect(cluster.config()).await.unwrap();
    let total = crate::LIST_PAGE * 2 + 7;
    for i in 0..total {
        store
            .create(&format!("/big/{i:05}"), vec![b'x'; 64])
            .await
            .unwrap();
    }
    let page = store.list("/big/", None, 0).await.unwrap();
    assert_eq!(page.items.len(), total);
    assert!(!page.more);
    assert_eq!(page.revision, store.current_revision());
    let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);

    let limited = store
        .list("/big/", None, crate::LIST_PAGE + 3)
        .await
        .unwrap();
    assert_eq!(limited.items.len(), crate::LIST_PAGE + 3);
    assert!(limited.more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_fails_writes_as_unavailable_serves_reads_and_recovers() {
    let mut cluster = Cluster::start().await;
    let store = EtcdStore::connect(cluster.config()).await.unwrap();
    let before = store.create("/q/a", b"1".to_vec()).await.unwrap();
    let mut rx = store.watch("/q/", before.mod_revision).unwrap();

    cluster.kill_member(0);
    let one_down = tokio::time::timeout(
        Duration::from_secs(20),
        retry_until_ok(|| store.create("/q/b", b"2".to_vec())),
    )
    .await
    .expect("writes work with one member down");
    assert_eq!(next(&mut rx).await.revision(), one_down.mod_revision);

    // a member that knows a leader keeps reads linearizable (a slow cluster is no outage)
    assert!(store.a_member_knows_a_leader().await);

    cluster.kill_member(1);
    let err = store.create("/q/c", b"3".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // the watch cache stays open while etcd has no quorum
    assert_no_event(&mut rx).await;
    assert_eq!(store.watcher_count(), 1);
    // reads are served from the live member's own copy meanwhile, as a watch cache would
    assert_eq!(
        store.get("/q/a").await.expect("read without quorum"),
        Some(before.clone())
    );
    let listed = store
        .list("/q/", None, 0)
        .await
        .expect("list without quorum");
    let keys: Vec<&str> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/q/a", "/q/b"]);
    assert!(!store.a_member_knows_a_leader().await);
    let err = store.create("/q/c", b"3".to_vec()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let not_ready = store.check_ready().await.unwrap_err();
    assert!(
        matches!(not_ready, StoreError::Unavailable(_)),
        "{not_ready}"
    );

    cluster.start_member(0);
    cluster.start_member(1);
    cluster.wait_healthy().await;
    let after = tokio::time::timeout(
        Duration::from_secs(30),
        retry_until_ok(|| async {
            // an attempt that timed out may still have been committed
            match store.create("/q/d", b"4".to_vec()).await {
                Err(StoreError::AlreadyExists { .. }) => store
                    .get("/q/d")
                    .await?
                    .ok_or_else(|| StoreError::Backend("/q/d vanished".to_string())),
                other => other,
            }
        }),
    )
    .await
    .expect("writes work again once a quorum is back");
    store
        .check_ready()
        .await
        .expect("ready again once a quorum is back");
    // the write that failed during the outage may have been committed once a quorum returned
    let event = loop {
        let event = next(&mut rx).await;
        if event.key() != "/q/c" {
            break event;
        }
    };
    assert_eq!(
        (event.key(), event.revision()),
        ("/q/d", after.mod_revision)
    );
}

/// Retries `write` every 200 ms until it succeeds.
async fn retry_until_ok<F, Fut, T>(write: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match write().await {
            Ok(value) => return value,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_behind_the_watch_cache_keeps_watchers() {
    let cluster = Cluster::start().await;
    let store = EtcdStore::connect(cluster.config()).await.unwrap();
    let mut rx = store.watch("/", store.current_revision()).unwrap();
    let a = store.create("/a", b"1".to_vec()).await.unwrap();
    assert_eq!(next(&mut rx).await.revision(), a.mod_revision);
    // another client compacts etcd; the cache has every event, so nothing changes
    let other = crate::client::Etcd::new(&cluster.config()).unwrap();
    other
        .compact(crate::pb::etcdserverpb::CompactionRequest {
            revision: crate::convert::to_i64(a.mod_revision),
            physical: false,
        })
        .await
        .unwrap();
    let b = store.create("/b", b"2".to_vec()).await.unwrap();
    match next(&mut rx).await {
        WatchEvent::Put { kv, .. } => assert_eq!(kv.mod_revision, b.mod_revision),
        other => panic!("expected put, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_works() {
    let cluster = Cluster::start_tls().await;
    let store = EtcdStore::connect(cluster.config()).await.unwrap();
    let kv = store.create("/tls/a", b"1".to_vec()).await.unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap(), Some(kv));

    // without the client certificate etcd refuses the connection
    let mut config = cluster.config();
    config.cert_file = None;
    config.key_file = None;
    config.request_timeout = Duration::from_secs(2);
    let err = EtcdStore::connect(config).await.err().expect("refused");
    let endpoint = &cluster.endpoints()[0];
    assert!(
        matches!(err, EtcdError::Unreachable { .. }) && err.to_string().contains(endpoint),
        "{err}"
    );

    // a CA that did not sign the servers' certificates
    let mut config = cluster.config();
    config.ca_file = cluster.tls().map(|tls| tls.client_cert.clone());
    config.request_timeout = Duration::from_secs(2);
    assert!(EtcdStore::connect(config).await.is_err());
}

#[tokio::test]
async fn wrong_endpoint_fails_naming_it() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut config = EtcdConfig::new(vec![endpoint.clone()]);
    config.request_timeout = Duration::from_secs(2);
    let err = EtcdStore::connect(config)
        .await
        .err()
        .expect("no etcd there");
    let message = err.to_string();
    assert!(message.contains(&endpoint), "{message}");

    let err = EtcdStore::connect(EtcdConfig::new(vec!["127.0.0.1:2379".to_string()]))
        .await
        .err()
        .expect("not a URL");
    assert!(matches!(err, EtcdError::BadEndpoint { .. }), "{err}");
    let err = EtcdStore::connect(EtcdConfig::new(Vec::new()))
        .await
        .err()
        .expect("no endpoints");
    assert!(matches!(err, EtcdError::NoEndpoints), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_space_compacts_behind_history_and_defragments_members() {
    let cluster = Cluster::start().await;
    let mut config = cluster.config();
    config.history_events = 100;
    let store = EtcdStore::connect(config).await.unwrap();
    let value = vec![b'x'; 4096];
    for round in 0..2 {
        for i in 0..1500 {
            store
                .create(&format!("/churn/{i:05}"), value.clone())
                .await
                .unwrap();
        }
        for i in 0..1500 {
            store.delete(&format!("/churn/{i:05}"), None).await.unwrap();
        }
        let _ = round;
    }
    let live = store.create("/kept", b"v".to_vec()).await.unwrap();
    // the watch cache has seen every write once its history moved past them
    for _ in 0..100 {
        if store.oldest_retained_revision() > live.mod_revision - 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = store.member_space().await.unwrap();
    let report = store.reclaim_space().await.unwrap();
    assert!(report.compacted >= live.mod_revision - 100, "{report:?}");
    assert_eq!(report.members.len(), 3);
    for (member, earlier) in report.members.iter().zip(&before) {
        assert!(member.defragmented, "{member:?} (before: {earlier:?})");
        assert!(
            member.db_size < earlier.db_size,
            "{member:?} (before: {earlier:?})"
        );
    }
    // revisions behind the window are gone from etcd, the live key is not
    assert_eq!(store.get("/kept").await.unwrap().unwrap().value, b"v");
    let err = store.watch("/", report.compacted - 1).unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
}
