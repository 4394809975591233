//! Unit tests for the sled store: the conformance suite, persistence and sled's watch limits.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;

use super::compact::REWRITE_SLACK;
use super::*;

/// Runs `open` until the directory's file lock is free: sled's own background threads may hold
/// it for a moment after the previous store (or database) of a reopen test was dropped.
fn when_unlocked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    for _ in 0..100 {
        match open() {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("open: {e}"),
            Ok(opened) => return opened,
        }
    }
    panic!("the directory stayed locked for 2 s after the previous store was dropped")
}

fn open(dir: &tempfile::TempDir) -> SledStore {
    open_path(dir.path())
}

fn open_path(path: &Path) -> SledStore {
    when_unlocked(|| SledStore::open(path))
}

/// A fresh store for one conformance case; the directory lives as long as the case.
async fn open_for_conformance() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(open(&dir)), dir)
}

crate::store_conformance_tests!(open_for_conformance);

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
    let db = when_unlocked(|| sled::Config::new().path(dir.path()).open());
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
async fn watch_from_future_revision_gets_next_live_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/a", value("1")).await.unwrap();
    let mut future = store.watch("/", 100).unwrap();
    assert_no_event(&mut future);
    store.create("/b", value("2")).await.unwrap();
    assert_eq!(next(&mut future).await.revision(), 2);
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

/// Writes `count` keys of `size` bytes under `/churn/` and deletes them again.
async fn churn(store: &SledStore, count: usize, size: usize) {
    for i in 0..count {
        store
            .create(&format!("/churn/{i:05}"), vec![b'x'; size])
            .await
            .unwrap();
    }
    for i in 0..count {
        store.delete(&format!("/churn/{i:05}"), None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_space_after_deleting_keys_gives_space_back_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(db_dir.join("snapshots")).unwrap();
    std::fs::write(db_dir.join("snapshots").join("keep.snap"), b"not sled's").unwrap();
    let store = SledStore::open(&db_dir).unwrap();
    let kept = store.create("/kept", value("v")).await.unwrap();
    churn(&store, 4000, 4096).await;
    let mut rx = store.watch("/", store.current_revision()).unwrap();
    let before = store.space().unwrap();
    let reclaimed = store.reclaim_space(false).unwrap();
    assert!(reclaimed.rewritten, "{before:?} -> {reclaimed:?}");
    assert!(
        reclaimed.on_disk < before.on_disk / 2
            && reclaimed.on_disk <= 2 * reclaimed.live + REWRITE_SLACK,
        "{before:?} -> {reclaimed:?}"
    );
    // nothing lost: the kept key, the revision, the watcher, the other files
    assert_eq!(store.get("/kept").await.unwrap(), Some(kept));
    let revision = store.current_revision();
    let kv = store.create("/after", value("a")).await.unwrap();
    assert_eq!(kv.mod_revision, revision + 1);
    let mut last = 0;
    while last < kv.mod_revision {
        last = next(&mut rx).await.revision();
    }
    assert_eq!(
        std::fs::read(db_dir.join("snapshots").join("keep.snap")).unwrap(),
        b"not sled's"
    );
    assert!(!dir.path().join("db.rewrite").exists());
    // a second pass finds nothing to do
    assert!(!store.reclaim_space(false).unwrap().rewritten);
    let live = store.space().unwrap().live;
    drop(store);
    let store = open_path(&db_dir);
    assert_eq!(
        store.space().unwrap().live,
        live,
        "the count kept by writes matches a scan"
    );
    assert_eq!(store.current_revision(), kv.mod_revision);
    assert_eq!(
        store.get("/after").await.unwrap().unwrap().value,
        value("a")
    );
}

#[tokio::test]
async fn reclaim_space_small_store_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store.create("/a", value("1")).await.unwrap();
    assert!(!store.reclaim_space(false).unwrap().rewritten);
    assert!(store.reclaim_space(true).unwrap().rewritten);
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, value("1"));
}

/// A store at `<dir>/db` holding `/old`, and a copy at `<dir>/db.rewrite` holding `/new`,
/// as a rewrite leaves them before the swap.
async fn half_rewritten(dir: &Path) {
    {
        let store = open_path(&dir.join("db"));
        store.create("/old", value("o")).await.unwrap();
    }
    let next = dir.join("db.rewrite");
    let fresh = sled::Config::new().path(&next).open().unwrap();
    fresh.insert(data_key("/new"), encode(1, 1, b"n")).unwrap();
    fresh.insert(REVISION_KEY, &1u64.to_be_bytes()).unwrap();
    fresh.flush().unwrap();
    drop(fresh);
}

#[tokio::test]
async fn open_finishes_interrupted_rewrite_with_manifest() {
    let dir = tempfile::tempdir().unwrap();
    half_rewritten(dir.path()).await;
    let next = dir.path().join("db.rewrite");
    let names: Vec<String> = std::fs::read_dir(&next)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    std::fs::write(next.join("rewrite-complete"), names.join("\n")).unwrap();
    let store = open_path(&dir.path().join("db"));
    assert!(store.get("/new").await.unwrap().is_some());
    assert!(store.get("/old").await.unwrap().is_none());
    assert!(!next.exists());
}

#[tokio::test]
async fn open_discards_unfinished_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    half_rewritten(dir.path()).await;
    let store = open_path(&dir.path().join("db"));
    assert!(store.get("/old").await.unwrap().is_some());
    assert!(store.get("/new").await.unwrap().is_none());
    assert!(!dir.path().join("db.rewrite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_space_during_writes_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    churn(&store, 2000, 4096).await;
    for i in 0..500 {
        store
            .create(&format!("/base/{i:04}"), vec![b'b'; 512])
            .await
            .unwrap();
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..600 {
                let kv = store
                    .create(&format!("/during/{i:04}"), vec![b'd'; 256])
                    .await
                    .unwrap();
                if i % 3 == 0 && i < 500 {
                    store.delete(&format!("/base/{i:04}"), None).await.unwrap();
                }
                acked.push(kv);
            }
            acked
        })
    };
    let reclaimer = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.reclaim_space(true).unwrap())
    };
    assert!(reclaimer.await.unwrap().rewritten);
    let acked = writer.await.unwrap();
    for kv in &acked {
        assert_eq!(
            store.get(&kv.key).await.unwrap().as_ref(),
            Some(kv),
            "{}",
            kv.key
        );
    }
    for i in 0..500 {
        let present = store.get(&format!("/base/{i:04}")).await.unwrap().is_some();
        assert_eq!(present, i % 3 != 0, "/base/{i:04}");
    }
    let revision = store.current_revision();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.current_revision(), revision);
    assert_eq!(
        store.list("/during/", None, 0).await.unwrap().items.len(),
        600
    );
}

#[tokio::test]
async fn reclaim_space_keeps_the_watch_window_and_refuses_older() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with_history(dir.path(), 100).unwrap();
    churn(&store, 300, 1024).await;
    assert!(store.reclaim_space(true).unwrap().rewritten);
    let current = store.current_revision();
    let err = store.watch("/", current - 150).unwrap_err();
    assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
    let mut rx = store.watch("/churn/", current - 50).unwrap();
    assert_eq!(next(&mut rx).await.revision(), current - 49);
}
