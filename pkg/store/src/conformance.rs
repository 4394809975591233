//! The backend-independent test suite every [`Store`] must pass (feature `conformance`).
//!
//! Each case takes a freshly opened store and a key root of its own, and checks revisions
//! relative to the store's revision when the case starts, so the same cases run on sled and on
//! a real etcd cluster. [`store_conformance_tests!`](crate::store_conformance_tests) turns them
//! into one `#[tokio::test]` per case for a backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;

use crate::{ListPage, Revision, Store, StoreError, WatchEvent, WatchReceiver};

/// Generates one test per conformance case. `$open` is an async fn returning
/// `(Arc<dyn Store>, guard)`; the guard (a temporary directory, a test cluster) lives until the
/// case ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($open:path) => {
        $crate::store_conformance_tests!(@cases $open;
            crud_operations_track_create_and_mod_revisions,
            create_existing_key_returns_already_exists,
            update_or_delete_missing_key_returns_not_found,
            stale_expected_revision_returns_conflict,
            list_paginates_with_start_after_and_limit,
            list_prefix_excludes_sibling_prefix,
            watch_replays_history_then_delivers_live_events_in_order,
            watch_from_current_revision_gets_only_live_events,
            watch_filters_events_by_prefix,
            compact_makes_older_watches_compacted,
            dropping_the_store_closes_watch_channels,
            concurrent_creates_get_distinct_revisions_in_watch_order
        );
    };
    (@cases $open:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, guard) = $open().await;
                $crate::conformance::$case(
                    store,
                    concat!("/conformance/", stringify!($case), "/"),
                )
                .await;
                drop(guard);
            }
        )*
    };
}

fn value(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Receives the next event, failing the test if none arrives soon.
pub async fn next(rx: &mut WatchReceiver) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10s")
        .expect("the channel is open")
}

/// Fails the test if an event arrives within a short while.
pub async fn assert_no_event(rx: &mut WatchReceiver) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

fn keys(page: &ListPage) -> Vec<String> {
    page.items.iter().map(|kv| kv.key.clone()).collect()
}

pub async fn crud_operations_track_create_and_mod_revisions(store: Arc<dyn Store>, root: &str) {
    let (a, b) = (format!("{root}a"), format!("{root}b"));
    let base = store.current_revision();
    assert_eq!(store.get(&a).await.unwrap(), None);

    let created = store.create(&a, value("one")).await.unwrap();
    assert_eq!(created.create_revision, base + 1);
    assert_eq!(created.mod_revision, base + 1);
    assert_eq!(store.current_revision(), base + 1);
    assert_eq!(store.get(&a).await.unwrap(), Some(created.clone()));

    store.create(&b, value("b")).await.unwrap();
    let updated = store.update(&a, value("two"), None).await.unwrap();
    assert_eq!(updated.create_revision, base + 1);
    assert_eq!(updated.mod_revision, base + 3);
    assert_eq!(updated.value, value("two"));
    assert_eq!(store.get(&a).await.unwrap(), Some(updated.clone()));

    let deleted = store.delete(&a, None).await.unwrap();
    assert_eq!(deleted.revision, base + 4);
    assert_eq!(deleted.prev, updated);
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(store.current_revision(), base + 4);

    let recreated = store.create(&a, value("three")).await.unwrap();
    assert_eq!(recreated.create_revision, base + 5);
    assert_eq!(recreated.mod_revision, base + 5);
}

pub async fn create_existing_key_returns_already_exists(store: Arc<dyn Store>, root: &str) {
    let a = format!("{root}a");
    store.create(&a, value("one")).await.unwrap();
    let base = store.current_revision();
    let err = store.create(&a, value("two")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { ref key } if *key == a),
        "{err}"
    );
    assert_eq!(
        store.current_revision(),
        base,
        "a failed write uses no revision"
    );
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, value("one"));
}

pub async fn update_or_delete_missing_key_returns_not_found(store: Arc<dyn Store>, root: &str) {
    let missing = format!("{root}missing");
    let base = store.current_revision();
    let err = store.update(&missing, value("x"), None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref key } if *key == missing),
        "{err}"
    );
    let err = store
        .update(&missing, value("x"), Some(base))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store
        .update(&missing, value("x"), Some(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.delete(&missing, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = store.delete(&missing, Some(base)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(store.current_revision(), base);
    assert_eq!(store.get(&missing).await.unwrap(), None);
}

pub async fn stale_expected_revision_returns_conflict(store: Arc<dyn Store>, root: &str) {
    let a = format!("{root}a");
    let base = store.current_revision();
    store.create(&a, value("one")).await.unwrap();
    let updated = store
        .update(&a, value("two"), Some(base + 1))
        .await
        .unwrap();
    assert_eq!(updated.mod_revision, base + 2);

    let err = store
        .update(&a, value("three"), Some(base + 1))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!((key, expected, actual), (a.clone(), base + 1, base + 2));
        }
        other => panic!("expected conflict, got {other}"),
    }
    let err = store.delete(&a, Some(base + 1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual, .. } if actual == base + 2),
        "{err}"
    );
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, value("two"));

    let deleted = store.delete(&a, Some(base + 2)).await.unwrap();
    assert_eq!(deleted.revision, base + 3);
}

pub async fn list_paginates_with_start_after_and_limit(store: Arc<dyn Store>, root: &str) {
    let pods = format!("{root}registry/pods/");
    let pod = |name: &str| format!("{pods}{name}");
    for name in ["e", "a", "c", "b", "d"] {
        store.create(&pod(name), value(name)).await.unwrap();
    }

    let all = store.list(&pods, None, 0).await.unwrap();
    assert_eq!(keys(&all), ["a", "b", "c", "d", "e"].map(pod));
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision());

    let first = store.list(&pods, None, 2).await.unwrap();
    assert_eq!(keys(&first), [pod("a"), pod("b")]);
    assert!(first.more);

    let second = store.list(&pods, Some(&pod("b")), 2).await.unwrap();
    assert_eq!(keys(&second), [pod("c"), pod("d")]);
    assert!(second.more);

    let last = store.list(&pods, Some(&pod("d")), 2).await.unwrap();
    assert_eq!(keys(&last), [pod("e")]);
    assert!(!last.more);

    let exact = store.list(&pods, None, 5).await.unwrap();
    assert_eq!(exact.items.len(), 5);
    assert!(!exact.more, "no key follows the fifth");

    let past_end = store.list(&pods, Some(&pod("e")), 2).await.unwrap();
    assert!(past_end.items.is_empty());
    assert!(!past_end.more);

    let before_prefix = store.list(&pods, Some(root), 1).await.unwrap();
    assert_eq!(keys(&before_prefix), [pod("a")]);
}

pub async fn list_prefix_excludes_sibling_prefix(store: Arc<dyn Store>, root: &str) {
    let pods = format!("{root}registry/pods/");
    store.create(&format!("{pods}a"), value("1")).await.unwrap();
    store
        .create(&format!("{root}registry/podsx/a"), value("2"))
        .await
        .unwrap();
    store
        .create(&format!("{root}registry/pod"), value("3"))
        .await
        .unwrap();
    store.create(&format!("{pods}b"), value("4")).await.unwrap();

    let page = store.list(&pods, None, 0).await.unwrap();
    assert_eq!(keys(&page), [format!("{pods}a"), format!("{pods}b")]);
    assert!(!page.more);

    let page = store
        .list(&pods, Some(&format!("{pods}a")), 1)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(!page.more, "the sibling prefix does not count as more");

    let everything = store.list(root, None, 0).await.unwrap();
    assert_eq!(everything.items.len(), 4, "only keys are listed");
}

pub async fn watch_replays_history_then_delivers_live_events_in_order(
    store: Arc<dyn Store>,
    root: &str,
) {
    let p = format!("{root}p/");
    let key = |name: &str| format!("{p}{name}");
    let base = store.current_revision();
    store.create(&key("a"), value("1")).await.unwrap();
    store.create(&key("b"), value("2")).await.unwrap();
    store.update(&key("a"), value("3"), None).await.unwrap();

    let mut rx = store.watch(&p, base + 1).unwrap();
    store.delete(&key("b"), None).await.unwrap();
    store.create(&key("c"), value("5")).await.unwrap();

    let mut revisions = Vec::new();
    for _ in 0..4 {
        revisions.push(next(&mut rx).await.revision());
    }
    assert_eq!(revisions, [2, 3, 4, 5].map(|r| base + r));
    assert_no_event(&mut rx).await;

    let mut rx = store.watch(&p, base + 2).unwrap();
    match next(&mut rx).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(kv.mod_revision, base + 3);
            assert_eq!(kv.create_revision, base + 1);
            assert_eq!(kv.value, value("3"));
            assert_eq!(prev.unwrap().value, value("1"));
        }
        other => panic!("expected put, got {other:?}"),
    }
    match next(&mut rx).await {
        WatchEvent::Delete(deleted) => {
            assert_eq!(deleted.revision, base + 4);
            assert_eq!(deleted.prev.key, key("b"));
            assert_eq!(deleted.prev.value, value("2"));
            assert_eq!(deleted.prev.mod_revision, base + 2);
        }
        other => panic!("expected delete, got {other:?}"),
    }
    match next(&mut rx).await {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(kv.key, key("c"));
            assert_eq!(prev, None);
        }
        other => panic!("expected put, got {other:?}"),
    }
    assert_no_event(&mut rx).await;
}

pub async fn watch_from_current_revision_gets_only_live_events(store: Arc<dyn Store>, root: &str) {
    let first = store.create(&format!("{root}a"), value("1")).await.unwrap();
    // a watch from the revision a write was just acknowledged at gets exactly what follows
    let mut current = store.watch(root, first.mod_revision).unwrap();
    assert_no_event(&mut current).await;
    let second = store.create(&format!("{root}b"), value("2")).await.unwrap();
    let event = next(&mut current).await;
    assert_eq!(event.revision(), second.mod_revision);
    assert_eq!(event.key(), second.key);
    assert_no_event(&mut current).await;
}

pub async fn watch_filters_events_by_prefix(store: Arc<dyn Store>, root: &str) {
    let pods = format!("{root}registry/pods/");
    let base = store.current_revision();
    store.create(&format!("{pods}a"), value("1")).await.unwrap();
    store
        .create(&format!("{root}registry/podsx/a"), value("2"))
        .await
        .unwrap();
    let mut rx = store.watch(&pods, base).unwrap();
    store
        .create(&format!("{root}registry/podsx/b"), value("3"))
        .await
        .unwrap();
    store.create(&format!("{pods}b"), value("4")).await.unwrap();

    let first = next(&mut rx).await;
    assert_eq!(
        (first.key(), first.revision()),
        (format!("{pods}a").as_str(), base + 1)
    );
    let second = next(&mut rx).await;
    assert_eq!(
        (second.key(), second.revision()),
        (format!("{pods}b").as_str(), base + 4)
    );
    assert_no_event(&mut rx).await;
}

pub async fn compact_makes_older_watches_compacted(store: Arc<dyn Store>, root: &str) {
    let base = store.current_revision();
    for i in 0..5 {
        store
            .create(&format!("{root}k{i}"), value("v"))
            .await
            .unwrap();
    }
    store.compact(base + 3).await.unwrap();
    let err = store.watch(root, base + 2).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, oldest }
            if requested == base + 2 && oldest == base + 4),
        "{err}"
    );
    let mut rx = store.watch(root, base + 3).unwrap();
    assert_eq!(next(&mut rx).await.revision(), base + 4);
    assert_eq!(next(&mut rx).await.revision(), base + 5);

    // Compacting past the current revision stops at it.
    store.compact(base + 100).await.unwrap();
    assert!(store.watch(root, base + 4).is_err());
    let mut rx = store.watch(root, base + 5).unwrap();
    let six = store
        .create(&format!("{root}k6"), value("v"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.revision(), six.mod_revision);
}

pub async fn dropping_the_store_closes_watch_channels(store: Arc<dyn Store>, root: &str) {
    let mut rx = store.watch(root, store.current_revision()).unwrap();
    drop(store);
    let closed = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(closed.expect("the channel closes within 10s"), None);
}

pub async fn concurrent_creates_get_distinct_revisions_in_watch_order(
    store: Arc<dyn Store>,
    root: &str,
) {
    let tasks = 16;
    let per_task = 25;
    let base = store.current_revision();
    let mut watch = store.watch(root, base).unwrap();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = Arc::clone(&store);
        let root = root.to_string();
        handles.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..per_task {
                let kv = store
                    .create(&format!("{root}c/{task:02}/{i:03}"), value("v"))
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
    let total = (tasks * per_task) as Revision;
    let expected: Vec<Revision> = (base + 1..=base + total).collect();
    assert_eq!(revisions, expected);

    let mut seen = Vec::new();
    for _ in 0..total {
        seen.push(next(&mut watch).await.revision());
    }
    assert_eq!(seen, expected, "watch order = revision order");
    let page = store.list(&format!("{root}c/"), None, 0).await.unwrap();
    assert_eq!(page.items.len(), tasks * per_task);
}
