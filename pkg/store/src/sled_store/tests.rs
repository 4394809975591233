//! Unit tests for the sled store: CRUD, preconditions, listing, persistence and watch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;

use super::*;

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path()).expect("open store")
}

fn value(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Receives the next event, failing the test if none arrives soon.
async fn next(rx: &mut WatchReceiver) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5s")
        .expect("the channel is open")
}

fn assert_no_event(rx: &mut WatchReceiver) {
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_operations_track_create_and_mod_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.current_revision(), 0);
    assert_eq!(store.get("/a").await.unwrap(), None);

    let created = store.create("/a", value("one")).await.unwrap();
    assert_eq!(created.create_revision, 1);
    assert_eq!(created.mod_revision, 1);
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.get("/a").await.unwrap(), Some(created.clone()));

    store.create("/b", value("b")).await.unwrap();
    let updated = store.update("/a", value("two"), None).await.unwrap();
    assert_eq!(updated.create_revision, 1);
    assert_eq!(updated.mod_revision, 3);
    assert_eq!(updated.value, value("two"));
    assert_eq!(store.get("/a").await.unwrap(), Some(updated.clone()));

    let deleted = store.delete("/a", None).await.unwrap();
    assert_eq!(deleted.revision, 4);
    assert_eq!(deleted.prev, updated);
    assert_eq!(store.get("/a").await.unwrap(), None);
    assert_eq!(store.current_revision(), 4);

    let recreated = store.create("/a", value("three")).await.unwrap();
    assert_eq!(recreated.create_revision, 5);
    assert_eq!(recreated.mod_revision, 5);
}

#[tokio::test]
async fn create_existing_key_returns_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/a", value("one")).await.unwrap();
    let err = store.create("/a", value("two")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if key == "/a"),
        "{err}"
    );
    assert_eq!(
        store.current_revision(),
        1,
        "a failed write uses no revision"
    );
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, value("one"));
}

#[tokio::test]
async fn update_or_delete_missing_key_returns_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let err = store
        .update("/missing", value("x"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref key } if key == "/missing"),
        "{err}"
    );
    let err = store
        .update("/missing", value("x"), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.delete("/missing", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.current_revision(), 0);
}

#[tokio::test]
async fn stale_expected_revision_returns_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/a", value("one")).await.unwrap();
    let updated = store.update("/a", value("two"), Some(1)).await.unwrap();
    assert_eq!(updated.mod_revision, 2);

    let err = store
        .update("/a", value("three"), Some(1))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!((key.as_str(), expected, actual), ("/a", 1, 2));
        }
        other => panic!("expected conflict, got {other}"),
    }
    let err = store.delete("/a", Some(1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 2, .. }),
        "{err}"
    );
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, value("two"));

    let deleted = store.delete("/a", Some(2)).await.unwrap();
    assert_eq!(deleted.revision, 3);
}

#[tokio::test]
async fn list_paginates_with_start_after_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for name in ["e", "a", "c", "b", "d"] {
        store
            .create(&format!("/registry/pods/{name}"), value(name))
            .await
            .unwrap();
    }
    let keys =
        |page: &ListPage| -> Vec<String> { page.items.iter().map(|kv| kv.key.clone()).collect() };

    let all = store.list("/registry/pods/", None, 0).await.unwrap();
    assert_eq!(
        keys(&all),
        ["a", "b", "c", "d", "e"].map(|n| format!("/registry/pods/{n}"))
    );
    assert!(!all.more);
    assert_eq!(all.revision, 5);

    let first = store.list("/registry/pods/", None, 2).await.unwrap();
    assert_eq!(keys(&first), ["/registry/pods/a", "/registry/pods/b"]);
    assert!(first.more);

    let second = store
        .list("/registry/pods/", Some("/registry/pods/b"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&second), ["/registry/pods/c", "/registry/pods/d"]);
    assert!(second.more);

    let last = store
        .list("/registry/pods/", Some("/registry/pods/d"), 2)
        .await
        .unwrap();
    assert_eq!(keys(&last), ["/registry/pods/e"]);
    assert!(!last.more);

    let exact = store.list("/registry/pods/", None, 5).await.unwrap();
    assert_eq!(exact.items.len(), 5);
    assert!(!exact.more, "no key follows the fifth");

    let past_end = store
        .list("/registry/pods/", Some("/registry/pods/e"), 2)
        .await
        .unwrap();
    assert!(past_end.items.is_empty());
    assert!(!past_end.more);

    let before_prefix = store.list("/registry/pods/", Some("/a"), 1).await.unwrap();
    assert_eq!(keys(&before_prefix), ["/registry/pods/a"]);
}

#[tokio::test]
async fn list_prefix_excludes_sibling_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/registry/pods/a", value("1")).await.unwrap();
    store.create("/registry/podsx/a", value("2")).await.unwrap();
    store.create("/registry/pod", value("3")).await.unwrap();
    store.create("/registry/pods/b", value("4")).await.unwrap();

    let page = store.list("/registry/pods/", None, 0).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/pods/a", "/registry/pods/b"]);
    assert!(!page.more);

    let page = store
        .list("/registry/pods/", Some("/registry/pods/a"), 1)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(!page.more, "the sibling prefix does not count as more");

    let everything = store.list("", None, 0).await.unwrap();
    assert_eq!(
        everything.items.len(),
        4,
        "the revision record is not a key"
    );
}

#[tokio::test]
async fn revision_survives_reopen_and_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store.create("/a", value("a")).await.unwrap();
        store.create("/b", value("b")).await.unwrap();
        store.update("/a", value("a2"), None).await.unwrap();
        store.delete("/b", None).await.unwrap();
        assert_eq!(store.current_revision(), 4);
    }
    let store = open(&dir);
    assert_eq!(store.current_revision(), 4);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 3));
    assert_eq!(a.value, value("a2"));
    assert_eq!(store.get("/b").await.unwrap(), None);
    let c = store.create("/c", value("c")).await.unwrap();
    assert_eq!(c.mod_revision, 5, "the deletion's revision is not reused");
}

/// Leaves the store at `dir` as a process that stopped without closing it would: the
/// clean-close marker of the last close removed.
fn forget_clean_close(dir: &tempfile::TempDir) {
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("open sled");
    db.remove(CLEAN_CLOSE_KEY).expect("remove marker");
    db.flush().expect("flush");
}

#[tokio::test]
async fn reopen_after_unclean_stop_continues_past_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store.create("/a", value("a")).await.unwrap();
        store.create("/b", value("b")).await.unwrap();
    }
    forget_clean_close(&dir);
    let store = open(&dir);
    assert_eq!(store.current_revision(), 2 + RESTART_REVISION_GAP);
    // a watcher resuming from a revision the last process handed out lists again
    let err = store.watch("/", 2).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested: 2, .. }),
        "{err}"
    );
    let c = store.create("/c", value("c")).await.unwrap();
    assert_eq!(c.mod_revision, 3 + RESTART_REVISION_GAP);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!(a.mod_revision, 1, "stored objects keep their revisions");
}

#[tokio::test]
async fn reopen_after_clean_close_twice_keeps_counting() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=3u64 {
        let store = open(&dir);
        assert_eq!(store.current_revision(), round - 1);
        store
            .create(&format!("/k{round}"), value("v"))
            .await
            .unwrap();
    }
    forget_clean_close(&dir);
    // the jump is recorded at open: a second unclean stop with no writes jumps again
    drop(open(&dir));
    forget_clean_close(&dir);
    assert_eq!(open(&dir).current_revision(), 3 + 2 * RESTART_REVISION_GAP);
}

#[tokio::test]
async fn watch_replays_history_then_delivers_live_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/p/a", value("1")).await.unwrap();
    store.create("/p/b", value("2")).await.unwrap();
    store.update("/p/a", value("3"), None).await.unwrap();

    let mut rx = store.watch("/p/", 1).unwrap();
    store.delete("/p/b", None).await.unwrap();
    store.create("/p/c", value("5")).await.unwrap();

    let revisions: Vec<Revision> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .iter()
    .map(WatchEvent::revision)
    .collect();
    assert_eq!(revisions, [2, 3, 4, 5]);
    assert_no_event(&mut rx);

    let mut rx = store.watch("/p/", 2).unwrap();
    match next(&mut rx).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(kv.mod_revision, 3);
            assert_eq!(kv.create_revision, 1);
            assert_eq!(prev.unwrap().value, value("1"));
        }
        other => panic!("expected put, got {other:?}"),
    }
    match next(&mut rx).await {
        WatchEvent::Delete(deleted) => {
            assert_eq!(deleted.revision, 4);
            assert_eq!(deleted.prev.key, "/p/b");
            assert_eq!(deleted.prev.value, value("2"));
        }
        other => panic!("expected delete, got {other:?}"),
    }
    match next(&mut rx).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(kv.key, "/p/c");
            assert_eq!(prev, None);
        }
        other => panic!("expected put, got {other:?}"),
    }
    assert_no_event(&mut rx);
}

#[tokio::test]
async fn watch_from_current_revision_gets_only_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/a", value("1")).await.unwrap();
    let mut current = store.watch("/", 1).unwrap();
    let mut future = store.watch("/", 100).unwrap();
    assert_no_event(&mut current);
    store.create("/b", value("2")).await.unwrap();
    assert_eq!(next(&mut current).await.revision(), 2);
    assert_eq!(next(&mut future).await.revision(), 2);
}

#[tokio::test]
async fn watch_filters_events_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/registry/pods/a", value("1")).await.unwrap();
    store.create("/registry/podsx/a", value("2")).await.unwrap();
    let mut rx = store.watch("/registry/pods/", 0).unwrap();
    store.create("/registry/podsx/b", value("3")).await.unwrap();
    store.create("/registry/pods/b", value("4")).await.unwrap();

    let first = next(&mut rx).await;
    assert_eq!((first.key(), first.revision()), ("/registry/pods/a", 1));
    let second = next(&mut rx).await;
    assert_eq!((second.key(), second.revision()), ("/registry/pods/b", 4));
    assert_no_event(&mut rx);
}

#[tokio::test]
async fn watch_older_than_retained_history_returns_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with_history(dir.path(), 3).unwrap();
    for i in 0..5 {
        store.create(&format!("/k{i}"), value("v")).await.unwrap();
    }
    // History holds revisions 3, 4 and 5.
    assert_eq!(store.oldest_retained_revision(), 3);
    let err = store.watch("/", 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 1,
                oldest: 3
            }
        ),
        "{err}"
    );
    let mut rx = store.watch("/", 2).unwrap();
    let revisions = [
        next(&mut rx).await.revision(),
        next(&mut rx).await.revision(),
        next(&mut rx).await.revision(),
    ];
    assert_eq!(revisions, [3, 4, 5]);
}

#[tokio::test]
async fn watch_after_reopen_is_compacted_below_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store.create("/a", value("1")).await.unwrap();
        store.create("/b", value("2")).await.unwrap();
    }
    let store = open(&dir);
    let err = store.watch("/", 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Compacted {
                requested: 1,
                oldest: 3
            }
        ),
        "{err}"
    );
    let mut rx = store.watch("/", 2).unwrap();
    store.create("/c", value("3")).await.unwrap();
    assert_eq!(next(&mut rx).await.revision(), 3);
}

#[tokio::test]
async fn compact_drops_history_up_to_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5 {
        store.create(&format!("/k{i}"), value("v")).await.unwrap();
    }
    store.compact(3).await.unwrap();
    assert_eq!(store.oldest_retained_revision(), 4);
    assert!(matches!(
        store.watch("/", 2),
        Err(StoreError::Compacted {
            requested: 2,
            oldest: 4
        })
    ));
    let mut rx = store.watch("/", 3).unwrap();
    assert_eq!(next(&mut rx).await.revision(), 4);
    assert_eq!(next(&mut rx).await.revision(), 5);

    // Compacting past the current revision stops at it.
    store.compact(100).await.unwrap();
    assert_eq!(store.oldest_retained_revision(), 6);
    assert!(store.watch("/", 4).is_err());
    assert!(store.watch("/", 5).is_ok());
}

#[tokio::test]
async fn slow_watcher_is_dropped_without_blocking_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.set_watch_live_capacity(8);
    let mut slow = store.watch("/", 0).unwrap();
    let mut fast = store.watch("/", 0).unwrap();

    for i in 0..20 {
        let key = format!("/k{i:02}");
        let write = store.create(&key, value("v"));
        tokio::time::timeout(Duration::from_secs(5), write)
            .await
            .expect("writes are not blocked by a full watcher")
            .unwrap();
        assert_eq!(next(&mut fast).await.revision(), i + 1);
    }
    assert_eq!(store.watcher_count(), 1, "the slow watcher was dropped");

    let mut received = Vec::new();
    while let Some(event) = slow.recv().await {
        received.push(event.revision());
    }
    assert_eq!(
        received,
        (1..=8).collect::<Vec<_>>(),
        "buffered events, then close"
    );
}

#[tokio::test]
async fn replay_larger_than_live_capacity_is_delivered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.set_watch_live_capacity(4);
    for i in 0..20 {
        store
            .create(&format!("/k{i:02}"), value("v"))
            .await
            .unwrap();
    }
    let mut rx = store.watch("/", 0).unwrap();
    for i in 21..=24 {
        store
            .create(&format!("/k{i:02}"), value("v"))
            .await
            .unwrap();
    }
    for expected in 1..=24 {
        assert_eq!(next(&mut rx).await.revision(), expected);
    }
    assert_eq!(store.watcher_count(), 1);
}

#[tokio::test]
async fn closed_watchers_are_removed_on_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let rx = store.watch("/other/", 0).unwrap();
    let _kept = store.watch("/", 0).unwrap();
    assert_eq!(store.watcher_count(), 2);
    drop(rx);
    store.create("/a", value("1")).await.unwrap();
    assert_eq!(store.watcher_count(), 1);
}

#[tokio::test]
async fn dropping_the_store_closes_watch_channels() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut rx = store.watch("/", 0).unwrap();
    drop(store);
    assert_eq!(rx.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_distinct_revisions_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = 16;
    let per_task = 25;
    {
        let store: Arc<dyn Store> = Arc::new(open(&dir));
        let mut watch = store.watch("/", 0).unwrap();
        let mut handles = Vec::new();
        for task in 0..tasks {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..per_task {
                    let kv = store
                        .create(&format!("/c/{task:02}/{i:03}"), value("v"))
                        .await
                        .unwrap();
                    revisions.push(kv.mod_revision);
                }
                revisions
            }));
        }
        let mut revisions = Vec::new();
        for handle in handles {
            revisions.extend(handle.await.unwrap());
        }
        revisions.sort_unstable();
        let total = (tasks * per_task) as u64;
        assert_eq!(revisions, (1..=total).collect::<Vec<_>>());

        let mut seen = Vec::new();
        for _ in 0..total {
            seen.push(next(&mut watch).await.revision());
        }
        assert_eq!(
            seen,
            (1..=total).collect::<Vec<_>>(),
            "watch order = revision order"
        );
    }
    let store = open(&dir);
    assert_eq!(store.current_revision(), (tasks * per_task) as u64);
    let page = store.list("/c/", None, 0).await.unwrap();
    assert_eq!(page.items.len(), tasks * per_task);
}

/// Throughput check; run with
/// `cargo test -p mini-store --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_creates_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    let concurrency = 16;
    let total = 10_000;
    let payload = vec![b'x'; 2048];
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..concurrency {
        let store = Arc::clone(&store);
        let payload = payload.clone();
        handles.push(tokio::spawn(async move {
            let mut i = task;
            while i < total {
                store
                    .create(
                        &format!("/registry/pods/default/pod-{i:05}"),
                        payload.clone(),
                    )
                    .await
                    .unwrap();
                i += concurrency;
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{total} creates with {concurrency} tasks: {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );

    for _ in 0..3 {
        let started = Instant::now();
        let page = store.list("/registry/pods/", None, 0).await.unwrap();
        println!(
            "list of {} items: {:.1} ms",
            page.items.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(page.items.len(), total);
    }
}

const KILL_DIR_ENV: &str = "MINI_STORE_KILL_TEST_DIR";

/// The child half of `acknowledged_writes_survive_kill_9`: writes until killed, printing
/// `ack <key> <revision>` after each acknowledged create. Does nothing when run directly.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
async fn kill_9_child_writer() {
    let Some(dir) = std::env::var_os(KILL_DIR_ENV) else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(SledStore::open(Path::new(&dir)).unwrap());
    let mut handles = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/kill/{task:02}/{i:06}");
                let kv = store.create(&key, vec![b'x'; 512]).await.unwrap();
                println!("ack {key} {}", kv.mod_revision);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sled_store::tests::kill_9_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        let (Some(key), Some(revision)) = (parts.next(), parts.next()) else {
            continue;
        };
        acked.push((key.to_string(), revision.parse::<Revision>().unwrap()));
        if acked.len() >= 500 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() >= 500,
        "the child acknowledged {} writes",
        acked.len()
    );

    let store = open(&dir);
    let max_acked = acked.iter().map(|(_, revision)| *revision).max().unwrap();
    assert!(store.current_revision() >= max_acked);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (key, revision) in &acked {
        let kv = runtime.block_on(store.get(key)).unwrap();
        assert_eq!(kv.map(|kv| kv.mod_revision), Some(*revision), "{key}");
    }
    // New writes continue after the highest surviving revision.
    let next_kv = runtime
        .block_on(store.create("/after-crash", value("v")))
        .unwrap();
    assert!(next_kv.mod_revision > max_acked);
}
