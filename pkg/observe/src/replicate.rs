//! Replication between the servers of a cluster: a sample or log batch a node posted to this
//! server is, once stored here, queued for every other live server and posted to it marked as a
//! replica (stored there, never forwarded again). One bounded queue per peer, sent oldest first
//! with backoff, so a peer that is briefly away gets the backlog when it is back; when a queue is
//! full its oldest batches are dropped and counted. The node's ingest never waits for a peer.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use mini_rbac::UserInfo;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::route::{LOGS_PATH, SAMPLES_PATH};

/// The request header that marks a batch as a replica from another server.
pub const REPLICA_HEADER: &str = "x-mini-replica";

/// What a batch holds (and so where it is posted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Samples,
    Logs,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Samples => SAMPLES_PATH,
            Kind::Logs => LOGS_PATH,
        }
    }
}

/// Whether `user` may post replicas: a server's own client identity (the API server's client
/// certificate, `system:kube-apiserver-kubelet-client` in `system:masters`), nobody else.
pub(crate) fn may_replicate(user: &UserInfo) -> bool {
    mini_certs::is_server_identity(&user.name, &user.groups)
}

/// Why a post to a peer did not store the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The peer is away, not ready or failed: send again later.
    #[error("sending to the peer failed, will retry: {0}")]
    Retry(String),
    /// The peer refused the batch itself (400, 413, 422): sending it again cannot help.
    #[error("the peer refused the batch: {0}")]
    Rejected(String),
}

/// Posts a batch to a peer server.
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        peer: SocketAddr,
        kind: Kind,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), SendError>>;
}

/// Bounds and timings of the forwarding.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Bytes queued per peer at most (the oldest batches go first beyond).
    pub max_queue_bytes: usize,
    /// Batches queued per peer at most.
    pub max_queue_batches: usize,
    /// First wait after a failed send; doubled up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A peer not listed live for this long is forgotten with its queue (until then it keeps
    /// receiving batches into its queue, so a restart gets the backlog).
    pub forget_after: Duration,
}

impl Default for ForwardConfig {
    fn default() -> ForwardConfig {
        ForwardConfig {
            max_queue_bytes: 64 << 20,
            max_queue_batches: 4096,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// The forwarding's figures (on `/metrics`).
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Batches a peer stored.
    pub forwarded: AtomicU64,
    /// Batches dropped unsent: queue full, or the peer forgotten.
    pub dropped: AtomicU64,
    /// Batches a peer refused for good.
    pub rejected: AtomicU64,
    /// Failed sends (each retried).
    pub failed_sends: AtomicU64,
    /// Replicas this server received from its peers and stored.
    pub received: AtomicU64,
}

struct Entry {
    seq: u64,
    kind: Kind,
    body: Bytes,
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    bytes: usize,
    next_seq: u64,
    /// Drops not yet logged.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

struct PeerQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    stop: CancellationToken,
    last_seen: Mutex<Instant>,
}

impl PeerQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Forwards stored batches to the peer servers.
pub struct Forwarder {
    config: ForwardConfig,
    transport: Arc<dyn Transport>,
    peers: Mutex<BTreeMap<SocketAddr, Arc<PeerQueue>>>,
    pub(crate) stats: ForwardStats,
    shutdown: CancellationToken,
}

/// How long between two log lines about drops for one peer.
const DROP_LOG_EVERY: Duration = Duration::from_secs(30);

impl Forwarder {
    pub fn new(
        config: ForwardConfig,
        transport: Arc<dyn Transport>,
        shutdown: CancellationToken,
    ) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            config,
            transport,
            peers: Mutex::new(BTreeMap::new()),
            stats: ForwardStats::default(),
            shutdown,
        })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, Arc<PeerQueue>>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The peers live now (this server not among them): new ones get a queue and a sender;
    /// ones not listed for [`ForwardConfig::forget_after`] are forgotten with their queue.
    pub fn set_peers(self: &Arc<Self>, live: &[SocketAddr]) {
        let now = Instant::now();
        let mut peers = self.peers();
        for addr in live {
            if let Some(queue) = peers.get(addr) {
                *queue
                    .last_seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                continue;
            }
            let queue = Arc::new(PeerQueue {
                state: Mutex::new(QueueState::default()),
                ready: Notify::new(),
                stop: self.shutdown.child_token(),
                last_seen: Mutex::new(now),
            });
            peers.insert(*addr, queue.clone());
            tracing::info!(peer = %addr, "replicating metrics and logs to a peer server");
            tokio::spawn(self.clone().send_loop(*addr, queue));
        }
        let forget = self.config.forget_after;
        peers.retain(|addr, queue| {
            let seen = *queue
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.duration_since(seen) < forget {
                return true;
            }
            queue.stop.cancel();
            let left = queue.lock().entries.len() as u64;
            self.stats.dropped.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(peer = %addr, dropped = left, "forgot a peer server gone for {}s, with its unsent batches", forget.as_secs());
            false
        });
    }

    /// The peers with a queue.
    pub fn peer_list(&self) -> Vec<SocketAddr> {
        self.peers().keys().copied().collect()
    }

    /// Batches and bytes queued over all peers.
    pub fn queued(&self) -> (usize, usize) {
        self.peers().values().fold((0, 0), |(n, b), q| {
            let s = q.lock();
            (n + s.entries.len(), b + s.bytes)
        })
    }

    /// Queues `body` (a stored batch) for every peer; never waits.
    pub fn forward(&self, kind: Kind, body: Bytes) {
        let peers: Vec<(SocketAddr, Arc<PeerQueue>)> =
            self.peers().iter().map(|(a, q)| (*a, q.clone())).collect();
        for (addr, queue) in peers {
            let dropped = {
                let mut s = queue.lock();
                let seq = s.next_seq;
                s.next_seq += 1;
                s.bytes += body.len();
                s.entries.push_back(Entry {
                    seq,
                    kind,
                    body: body.clone(),
                });
                let mut dropped = 0u64;
                while s.entries.len() > 1
                    && (s.entries.len() > self.config.max_queue_batches
                        || s.bytes > self.config.max_queue_bytes)
                {
                    if let Some(old) = s.entries.pop_front() {
                        s.bytes -= old.body.len();
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    s.unlogged_drops += dropped;
                    if s.last_drop_log
                        .is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY)
                    {
                        tracing::warn!(peer = %addr, dropped = s.unlogged_drops, "the replication queue to a peer server is full: dropped its oldest batches (that server misses them)");
                        s.unlogged_drops = 0;
                        s.last_drop_log = Some(Instant::now());
                    }
                }
                dropped
            };
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            queue.ready.notify_one();
        }
    }

    /// Sends `queue` to `addr` oldest first until the peer is forgotten or the server stops.
    async fn send_loop(self: Arc<Self>, addr: SocketAddr, queue: Arc<PeerQueue>) {
        let mut backoff = self.config.min_backoff;
        let mut failing = false;
        let mut last_refusal_log: Option<Instant> = None;
        loop {
            let front = {
                let s = queue.lock();
                s.entries.front().map(|e| (e.seq, e.kind, e.body.clone()))
            };
            let Some((seq, kind, body)) = front else {
                tokio::select! {
                    () = queue.stop.cancelled() => return,
                    () = queue.ready.notified() => continue,
                }
            };
            let sent = tokio::select! {
                () = queue.stop.cancelled() => return,
                sent = self.transport.send(addr, kind, body) => sent,
            };
            let done = match sent {
                Ok(()) => {
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        tracing::info!(peer = %addr, "replicating to the peer server again");
                    }
                    failing = false;
                    backoff = self.config.min_backoff;
                    true
                }
                Err(SendError::Rejected(message)) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    if last_refusal_log.is_none_or(|t: Instant| t.elapsed() >= DROP_LOG_EVERY) {
                        tracing::warn!(peer = %addr, %message, "a peer server refused a replicated batch; dropped (counted in mini_observe_replica_rejected_batches_total)");
                        last_refusal_log = Some(Instant::now());
                    }
                    true
                }
                Err(SendError::Retry(message)) => {
                    self.stats.failed_sends.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(peer = %addr, %message, "replicating to a peer server failed; its batches stay queued and are retried");
                    }
                    failing = true;
                    false
                }
            };
            if done {
                let mut s = queue.lock();
                // a full queue may have dropped it meanwhile
                if s.entries.front().is_some_and(|e| e.seq == seq) {
                    if let Some(e) = s.entries.pop_front() {
                        s.bytes -= e.body.len();
                    }
                }
                continue;
            }
            tokio::select! {
                () = queue.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// Posts batches to peers over HTTPS with the server's client certificate, trusting the
/// cluster CA (a TLS configuration whose certificates swap online).
pub struct HttpTransport {
    client: mini_peers::PeerClient,
}

/// How long one post to a peer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpTransport {
    pub fn new(tls: &rustls::ClientConfig) -> HttpTransport {
        HttpTransport {
            client: mini_peers::peer_client(tls),
        }
    }
}

/// What a peer's answer means: 2xx stored, 400/413/422 refused for good (and 404: a peer
/// started with `--disable observe` has no store), anything else retried.
pub fn classify(status: u16, message: &str) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        400 | 404 | 413 | 422 => Err(SendError::Rejected(format!("status {status}: {message}"))),
        _ => Err(SendError::Retry(format!("status {status}: {message}"))),
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        peer: SocketAddr,
        kind: Kind,
        body: Bytes,
    ) -> BoxFuture<'static, Result<(), SendError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let request = http::Request::post(format!("https://{peer}{}", kind.path()))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(REPLICA_HEADER, "1")
                .body(Full::new(body))
                .map_err(|e| SendError::Rejected(format!("building the request: {e}")))?;
            let answer = async {
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| SendError::Retry(format!("posting to {peer}: {e}")))?;
                let status = response.status().as_u16();
                let text = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                    .unwrap_or_default();
                classify(status, &text)
            };
            tokio::time::timeout(SEND_TIMEOUT, answer)
                .await
                .map_err(|_| {
                    SendError::Retry(format!(
                        "posting to {peer}: no answer within {}s",
                        SEND_TIMEOUT.as_secs()
                    ))
                })?
        })
    }
}

/// How often the peer list is read from the servers' Leases.
const PEERS_EVERY: Duration = Duration::from_secs(5);

/// Keeps `forwarder`'s peers the live servers' Leases (`kube-system`, see `mini-peers`) other
/// than `own` until `shutdown`.
pub async fn follow_peers(
    forwarder: Arc<Forwarder>,
    client: kube::Client,
    own: SocketAddr,
    shutdown: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let selector = format!(
        "{}={}",
        mini_peers::IDENTITY_LABEL,
        mini_peers::IDENTITY_VALUE
    );
    let mut every = tokio::time::interval(PEERS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match leases.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => {
                let now = chrono::Utc::now().timestamp_millis();
                let live: Vec<SocketAddr> = mini_peers::live_endpoints(&list.items, now)
                    .into_iter()
                    .filter(|a| *a != own)
                    .collect();
                forwarder.set_peers(&live);
            }
            Err(e) => {
                tracing::debug!(error = %e, "listing the servers' leases for replication failed; retrying");
            }
        }
    }
}

#[cfg(test)]
#[path = "replicate_tests.rs"]
mod tests;
