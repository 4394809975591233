//! Tests of the replication to peer servers: the forwarder against a fake peer (queue bound,
//! retry, refusals) and the ingest endpoints (a replica is stored, not forwarded again, only
//! from a server identity, and stored once however often it arrives).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use http::Request;
use mini_logship::wire::{LogBatch, LogEntry, LogStream};
use mini_nodestats::wire::{SampleBatch, SeriesSamples};

use super::*;
use crate::route::body_of;
use crate::Observe;

/// A peer that stores what it is sent while `up`, refuses everything while `refuse`.
#[derive(Default)]
struct FakePeer {
    up: AtomicBool,
    refuse: AtomicBool,
    got: Mutex<Vec<(SocketAddr, Kind, Bytes)>>,
    attempts: AtomicU64,
}

impl FakePeer {
    fn got(&self) -> Vec<Bytes> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.2.clone())
            .collect()
    }
}

impl Transport for Arc<FakePeer> {
    fn send(
        &self,
        peer: SocketAddr,
        kind: Kind,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), SendError>> {
        let me = self.clone();
        Box::pin(async move {
            me.attempts.fetch_add(1, Ordering::SeqCst);
            if me.refuse.load(Ordering::SeqCst) {
                return Err(SendError::Rejected("status 400: bad".into()));
            }
            if !me.up.load(Ordering::SeqCst) {
                return Err(SendError::Retry("connection refused".into()));
            }
            me.got.lock().unwrap().push((peer, kind, body));
            Ok(())
        })
    }
}

fn config() -> ForwardConfig {
    ForwardConfig {
        max_queue_bytes: 1 << 20,
        max_queue_batches: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        forget_after: Duration::from_secs(600),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still not so after 10 s: {what}");
}

fn forwarder(peer: &Arc<FakePeer>, config: ForwardConfig) -> Arc<Forwarder> {
    Forwarder::new(config, Arc::new(peer.clone()), CancellationToken::new())
}

#[tokio::test]
async fn forward_peer_up_receives_every_batch_in_order() {
    let peer = Arc::new(FakePeer::default());
    peer.up.store(true, Ordering::SeqCst);
    let f = forwarder(&peer, config());
    f.set_peers(&[addr(1), addr(2)]);
    for i in 0..3 {
        f.forward(Kind::Logs, Bytes::from(format!("b{i}")));
    }
    until("both peers have 3 batches", || peer.got().len() == 6).await;
    let to_one: Vec<Bytes> = peer
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.0 == addr(1))
        .map(|g| g.2.clone())
        .collect();
    assert_eq!(to_one, ["b0", "b1", "b2"]);
    assert_eq!(f.stats.forwarded.load(Ordering::SeqCst), 6);
    until("queues empty", || f.queued() == (0, 0)).await;
}

#[tokio::test]
async fn forward_peer_down_gets_backlog_when_back() {
    let peer = Arc::new(FakePeer::default());
    let f = forwarder(&peer, config());
    f.set_peers(&[addr(1)]);
    f.forward(Kind::Samples, Bytes::from_static(b"s0"));
    f.forward(Kind::Logs, Bytes::from_static(b"l0"));
    until("a few failed attempts", || {
        peer.attempts.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(peer.got().is_empty());
    assert_eq!(f.queued().0, 2, "failed batches stay queued");
    peer.up.store(true, Ordering::SeqCst);
    until("the backlog arrived", || peer.got().len() == 2).await;
    assert_eq!(peer.got(), ["s0", "l0"]);
    let kinds: Vec<Kind> = peer.got.lock().unwrap().iter().map(|g| g.1).collect();
    assert_eq!(kinds, [Kind::Samples, Kind::Logs]);
    assert!(f.stats.failed_sends.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn forward_queue_full_drops_oldest_and_counts() {
    let peer = Arc::new(FakePeer::default());
    let f = forwarder(&peer, config());
    f.set_peers(&[addr(1)]);
    for i in 0..5 {
        f.forward(Kind::Logs, Bytes::from(format!("b{i}")));
    }
    assert_eq!(f.queued().0, 3, "bounded by max_queue_batches");
    assert_eq!(f.stats.dropped.load(Ordering::SeqCst), 2);
    peer.up.store(true, Ordering::SeqCst);
    until("the newest three arrived", || peer.got().len() == 3).await;
    assert_eq!(peer.got(), ["b2", "b3", "b4"]);
}

#[tokio::test]
async fn forward_queue_bytes_bound_drops_oldest() {
    let peer = Arc::new(FakePeer::default());
    let f = forwarder(
        &peer,
        ForwardConfig {
            max_queue_bytes: 10,
            max_queue_batches: 100,
            ..config()
        },
    );
    f.set_peers(&[addr(1)]);
    for _ in 0..4 {
        f.forward(Kind::Logs, Bytes::from_static(b"1234"));
    }
    assert_eq!(f.queued(), (2, 8));
    assert_eq!(f.stats.dropped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn forward_refused_batch_dropped_not_retried() {
    let peer = Arc::new(FakePeer::default());
    peer.refuse.store(true, Ordering::SeqCst);
    let f = forwarder(&peer, config());
    f.set_peers(&[addr(1)]);
    f.forward(Kind::Logs, Bytes::from_static(b"bad"));
    until("refused", || f.stats.rejected.load(Ordering::SeqCst) == 1).await;
    until("queue empty", || f.queued() == (0, 0)).await;
    assert_eq!(peer.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn set_peers_gone_past_forget_after_dropped_with_queue() {
    let peer = Arc::new(FakePeer::default());
    let f = forwarder(
        &peer,
        ForwardConfig {
            forget_after: Duration::from_millis(50),
            ..config()
        },
    );
    f.set_peers(&[addr(1), addr(2)]);
    f.forward(Kind::Logs, Bytes::from_static(b"x"));
    // addr(2) still listed: kept; addr(1) not listed: kept until forget_after
    f.set_peers(&[addr(2)]);
    assert_eq!(f.peer_list(), [addr(1), addr(2)]);
    tokio::time::sleep(Duration::from_millis(80)).await;
    f.set_peers(&[addr(2)]);
    assert_eq!(f.peer_list(), [addr(2)]);
    assert_eq!(f.stats.dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn classify_statuses_retry_or_refuse() {
    assert!(classify(200, "").is_ok());
    assert!(matches!(classify(400, ""), Err(SendError::Rejected(_))));
    assert!(matches!(classify(413, ""), Err(SendError::Rejected(_))));
    assert!(
        matches!(classify(404, ""), Err(SendError::Rejected(_))),
        "a peer without the stores"
    );
    for retried in [401, 403, 429, 500, 503, 507] {
        assert!(matches!(classify(retried, ""), Err(SendError::Retry(_))));
    }
}

#[test]
fn may_replicate_server_identity_only() {
    let user = |name: &str, groups: &[&str]| UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    assert!(may_replicate(&user(
        mini_certs::APISERVER_CLIENT_USER,
        &["system:masters"]
    )));
    assert!(!may_replicate(&user("system:admin", &["system:masters"])));
    assert!(!may_replicate(&user("system:node:a", &["system:nodes"])));
    assert!(!may_replicate(&user(
        mini_certs::APISERVER_CLIENT_USER,
        &["system:authenticated"]
    )));
}

// --- the ingest endpoints with a forwarder to a fake peer ---

struct Server {
    observe: Arc<Observe>,
    peer: Arc<FakePeer>,
    _env: mini_testenv::TestEnv,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let env = mini_testenv::TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::ObserveConfig::new(dir.path(), &crate::Retention::default());
    let observe = crate::start(&env.server, config, CancellationToken::new())
        .await
        .unwrap();
    let peer = Arc::new(FakePeer::default());
    peer.up.store(true, Ordering::SeqCst);
    let f = forwarder(&peer, config_for_server());
    f.set_peers(&[addr(1)]);
    assert!(observe.forwarder.set(f).is_ok());
    Server {
        observe,
        peer,
        _env: env,
        _dir: dir,
    }
}

fn config_for_server() -> ForwardConfig {
    ForwardConfig {
        max_queue_batches: 100,
        ..config()
    }
}

fn node_user() -> UserInfo {
    UserInfo {
        name: "system:node:a".into(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    }
}

fn server_user() -> UserInfo {
    UserInfo {
        name: mini_certs::APISERVER_CLIENT_USER.into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

async fn post(
    s: &Server,
    path: &str,
    body: &[u8],
    user: UserInfo,
    replica: bool,
) -> http::StatusCode {
    let mut req = Request::post(path);
    if replica {
        req = req.header(REPLICA_HEADER, "1");
    }
    let req = req.body(body_of(body.to_vec())).unwrap();
    crate::route::answer(s.observe.clone(), req, Some(user))
        .await
        .status()
}

fn log_body() -> Vec<u8> {
    let batch = LogBatch {
        node: "a".into(),
        streams: vec![LogStream {
            labels: BTreeMap::from([
                ("namespace".into(), "default".into()),
                ("pod".into(), "p".into()),
                ("container".into(), "c".into()),
                ("stream".into(), "stdout".into()),
            ]),
            pod_labels: BTreeMap::new(),
            source: "a/uid/c/0/0".into(),
            entries: vec![
                LogEntry {
                    offset: 0,
                    timestamp_ns: crate::now_ns() - 2_000_000,
                    line: "first".into(),
                },
                LogEntry {
                    offset: 10,
                    timestamp_ns: crate::now_ns() - 1_000_000,
                    line: "second".into(),
                },
            ],
        }],
    };
    serde_json::to_vec(&batch).unwrap()
}

fn sample_body() -> Vec<u8> {
    let now = chrono::Utc::now().timestamp_millis();
    let batch = SampleBatch {
        node: "a".into(),
        series: vec![SeriesSamples {
            labels: BTreeMap::from([("__name__".into(), "node_load1".into())]),
            samples: vec![(now - 10_000, 1.0), (now, 2.0)],
        }],
    };
    serde_json::to_vec(&batch).unwrap()
}

#[tokio::test]
async fn ingest_node_batch_forwarded_to_peers() {
    let s = server().await;
    let (logs, samples) = (log_body(), sample_body());
    assert_eq!(post(&s, LOGS_PATH, &logs, node_user(), false).await, 200);
    assert_eq!(
        post(&s, SAMPLES_PATH, &samples, node_user(), false).await,
        200
    );
    until("both batches forwarded", || s.peer.got().len() == 2).await;
    assert_eq!(s.peer.got(), [logs, samples]);
}

#[tokio::test]
async fn ingest_replica_stored_not_forwarded_again() {
    let s = server().await;
    assert_eq!(
        post(&s, LOGS_PATH, &log_body(), server_user(), true).await,
        200
    );
    assert_eq!(
        post(&s, SAMPLES_PATH, &sample_body(), server_user(), true).await,
        200
    );
    assert_eq!(s.observe.logs.stats().lines, 2);
    assert_eq!(s.observe.tsdb.stats().samples.raw, 2);
    let f = s.observe.forwarder().unwrap();
    assert_eq!(f.stats.received.load(Ordering::SeqCst), 2);
    assert_eq!(f.queued(), (0, 0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.peer.got().is_empty(), "a replica is never forwarded");
}

#[tokio::test]
async fn ingest_replica_from_node_or_admin_forbidden() {
    let s = server().await;
    assert_eq!(
        post(&s, LOGS_PATH, &log_body(), node_user(), true).await,
        403
    );
    let admin = UserInfo {
        name: "system:admin".into(),
        groups: vec!["system:masters".into()],
    };
    assert_eq!(
        post(&s, SAMPLES_PATH, &sample_body(), admin, true).await,
        403
    );
    assert_eq!(s.observe.logs.stats().lines, 0);
}

#[tokio::test]
async fn ingest_replica_twice_stored_once() {
    let s = server().await;
    let (logs, samples) = (log_body(), sample_body());
    // the node's own post, then the same batches again as replicas (a peer forwarding what the
    // node also sent here after a retry), then once more
    assert_eq!(post(&s, LOGS_PATH, &logs, node_user(), false).await, 200);
    assert_eq!(
        post(&s, SAMPLES_PATH, &samples, node_user(), false).await,
        200
    );
    for _ in 0..2 {
        assert_eq!(post(&s, LOGS_PATH, &logs, server_user(), true).await, 200);
        assert_eq!(
            post(&s, SAMPLES_PATH, &samples, server_user(), true).await,
            200
        );
    }
    assert_eq!(s.observe.logs.stats().lines, 2, "log lines stored once");
    assert_eq!(s.observe.logs.stats().duplicates, 4);
    let t = s.observe.tsdb.stats();
    assert_eq!(t.samples.raw, 2, "samples stored once");
    assert_eq!(t.out_of_order_dropped + t.duplicates_dropped, 4);
}
