//! The [`Store`] on an external etcd cluster (v3 API, etcd 3.4 and later).
//!
//! Revisions are etcd's: every write is one transaction whose header revision becomes the
//! object's `mod_revision`; preconditions are transaction compares (`create_revision == 0` for
//! create, `mod_revision == expected` for update and delete). One etcd watch over the whole key
//! space (with previous values) feeds an in-memory [`Hub`], so API watchers are served from
//! memory and keep working while etcd has no quorum; the hub starts at etcd's revision when the
//! store connects, so an older watch gets `Compacted` (the API server answers 410 and clients
//! list again). A broken etcd watch reconnects from the last revision it delivered; if etcd
//! compacted past it, every watcher is closed and the hub starts over.

mod client;
mod convert;
mod maintenance;
mod watch;

/// The etcd v3 API, generated from the vendored `proto/` files and committed (building needs no
/// `protoc`; `codegen_tests` keeps it in step). Left exactly as generated.
#[allow(clippy::all, rustdoc::all)]
pub mod pb {
    /// Messages and clients of etcd's gRPC services (package `etcdserverpb`).
    #[rustfmt::skip]
    pub mod etcdserverpb; /// Stored key-values and watch events (package `mvccpb`).
    #[rustfmt::skip]
    pub mod mvccpb; /// Users and roles (package `authpb`).
    #[rustfmt::skip]
    pub mod authpb;
}

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use mini_store::{
    Deleted, Hub, KeyValue, ListPage, Revision, Store, StoreError, WatchReceiver,
    DEFAULT_HISTORY_EVENTS, WATCH_CHANNEL_CAPACITY,
};

pub use maintenance::{MemberSpace, SpaceReport};

use client::Etcd;
use convert::{
    compare_create, compare_mod, from_etcd, header_revision, op, prefix_end, to_i64,
    unavailable_or_backend,
};
use pb::etcdserverpb::compare::CompareResult;
use pb::etcdserverpb::{
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// How long one etcd request may take before it fails as unavailable.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Items fetched per etcd range request; larger listings are read in pages at one revision.
const LIST_PAGE: usize = 500;
/// Retries of a read that etcd answered `Unavailable`, each after a growing pause.
const READ_RETRIES: u32 = 5;
const READ_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// While etcd has no quorum: how long a read waits for a linearizable answer before it reads a
/// member's own copy (and the first linearizable answer ends the outage).
const QUORUM_PROBE: Duration = Duration::from_millis(500);
/// How long one member may take to answer a member-local (serializable) read when etcd has no
/// quorum, before the next member is asked.
const LOCAL_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the etcd cluster is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs (`https://host:2379` or `http://host:2379`).
    pub endpoints: Vec<String>,
    /// CA bundle that signed the etcd servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for etcd's client certificate authentication.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Deadline of each etcd request.
    pub request_timeout: Duration,
    /// Events kept in memory for watch replay.
    pub history_events: usize,
}

impl EtcdConfig {
    /// A configuration for `endpoints` with default timeouts and history and no TLS files.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            history_events: DEFAULT_HISTORY_EVENTS,
        }
    }
}

/// Why the store could not connect.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given: pass --datastore-endpoint https://HOST:2379[,...]")]
    NoEndpoints,
    #[error("the etcd endpoint {endpoint:?} is not an http:// or https:// URL")]
    BadEndpoint { endpoint: String },
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--datastore-certfile and --datastore-keyfile must be given together")]
    PartialIdentity,
    #[error("setting up the etcd client for {endpoints}: {message}")]
    Client { endpoints: String, message: String },
    #[error("cannot use the etcd datastore: {details}; check --datastore-endpoint and --datastore-cafile/certfile/keyfile")]
    Unreachable { details: String },
}

/// State shared with the watch task, under one lock so publishing and subscribing serialize.
struct WatchState {
    hub: Hub,
    /// The revision of the last event (or progress notification) the etcd watch delivered.
    seen: Revision,
}

struct Shared {
    watch: Mutex<WatchState>,
    /// The highest revision seen in any etcd response header.
    revision: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.watch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn observe(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }
}

/// A [`Store`] on an etcd cluster. Share it as `Arc<dyn Store>`; dropping it stops the etcd
/// watch and closes every watch channel.
pub struct EtcdStore {
    client: Etcd,
    shared: Arc<Shared>,
    timeout: Duration,
    watch_task: tokio::task::JoinHandle<()>,
    /// For per-member maintenance (status, defragmentation).
    config: EtcdConfig,
    /// Set while etcd has no quorum: reads then give a linearizable read only
    /// [`QUORUM_PROBE`] before they fall back to a member's own copy.
    quorum_lost: std::sync::atomic::AtomicBool,
    /// One channel per member, for those member-local reads.
    members: Vec<Etcd>,
    /// The member that answered the last member-local read (asked first next time).
    last_local: std::sync::atomic::AtomicUsize,
}

impl EtcdStore {
    /// Waits (at most the request timeout) until the watch cache received every event up to
    /// `revision` and returns the revision it received through, never above `revision`.
    /// Compacting etcd past events the cache has not received yet would cancel its etcd watch
    /// and make every watcher of this server list again.
    async fn delivered_through(&self, revision: Revision) -> Revision {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let seen = self.shared.lock().seen;
            if seen >= revision || tokio::time::Instant::now() >= deadline {
                return seen.min(revision);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

/// The whole error chain of `error` on one line.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A gRPC status on one line: its code, message and the transport error behind it.
pub(crate) fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        let cause = describe(source);
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

impl EtcdStore {
    /// Connects to the cluster and reads its revision; fails naming each endpoint and why it
    /// could not be used when the cluster does not answer within the request timeout.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        if let Some(endpoint) = config
            .endpoints
            .iter()
            .find(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(EtcdError::BadEndpoint {
                endpoint: endpoint.clone(),
            });
        }
        let client = Etcd::new(&config)?;
        let members = Etcd::per_member(&config)?;
        let revision = match read_revision(&client, config.request_timeout).await {
            Ok(revision) => revision,
            Err(_) => {
                let details = probe_endpoints(&config).await;
                return Err(EtcdError::Unreachable { details });
            }
        };
        let shared = Arc::new(Shared {
            watch: Mutex::new(WatchState {
                hub: Hub::new(config.history_events, revision, WATCH_CHANNEL_CAPACITY),
                seen: revision,
            }),
            revision: AtomicU64::new(revision),
        });
        let watch_task = tokio::spawn(watch::run(
            client.clone(),
            Arc::clone(&shared),
            revision,
            config.request_timeout,
        ));
        tracing::info!(endpoints = %config.endpoints.join(","), revision, "connected to etcd");
        Ok(EtcdStore {
            client,
            shared,
            timeout: config.request_timeout,
            watch_task,
            config,
            quorum_lost: std::sync::atomic::AtomicBool::new(false),
            members,
            last_local: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The oldest revision a watch can start after without getting `Compacted`, plus one.
    pub fn oldest_retained_revision(&self) -> Revision {
        self.shared.lock().hub.oldest_retained()
    }

    /// Number of registered watchers (closed ones are pruned on the next event).
    pub fn watcher_count(&self) -> usize {
        self.shared.lock().hub.watcher_count()
    }

    /// Runs one etcd request with the store's deadline.
    async fn call<T, F>(&self, what: &str, request: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        tracing::trace!(what, "etcd request");
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(status)) => Err(unavailable_or_backend(what, &status)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: etcd did not answer within {:?} (is a quorum of its members up?)",
                self.timeout
            ))),
        }
    }

    /// Runs a range read, linearizable, with the store's deadline. When etcd has no quorum (the
    /// read is unavailable or times out, and no member knows of a leader) the read is served
    /// from a live member's own copy
    /// (serializable), as a watch cache would serve it: data as of the last committed write,
    /// which no write can change until a quorum is back. Writes keep failing meanwhile.
    async fn read(&self, what: &str, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        use std::sync::atomic::Ordering;
        let lost = self.quorum_lost.load(Ordering::Relaxed);
        let budget = if lost {
            QUORUM_PROBE.min(self.timeout)
        } else {
            self.timeout
        };
        let deadline = tokio::time::Instant::now() + budget;
        let linearizable = match self.read_until(what, request.clone(), deadline).await {
            Ok(response) => {
                if lost && self.quorum_lost.swap(false, Ordering::Relaxed) {
                    tracing::info!("etcd answers linearizable reads again");
                }
                return Ok(response);
            }
            Err(StoreError::Unavailable(reason)) => reason,
            Err(other) => return Err(other),
        };
        // a slow cluster that still has a leader is not an outage: a member's own copy could
        // then lag behind writes already acknowledged, so the read fails instead
        if !lost && self.a_member_knows_a_leader().await {
            return Err(StoreError::Unavailable(linearizable));
        }
        match self.read_local(request).await {
            Ok(response) => {
                if !self.quorum_lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %linearizable, "etcd has no quorum: reads are served from a member's own copy until it is back; writes fail");
                }
                Ok(response)
            }
            Err(local) => Err(StoreError::Unavailable(format!(
                "{linearizable}; no member answered from its own copy either ({local})"
            ))),
        }
    }

    /// Whether any member that answers its status within [`LOCAL_READ_TIMEOUT`] knows of a
    /// leader (asked all at once).
    async fn a_member_knows_a_leader(&self) -> bool {
        let asks = self
            .members
            .iter()
            .map(|member| tokio::time::timeout(LOCAL_READ_TIMEOUT, member.leader()));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .any(|answer| matches!(answer, Ok(Ok(leader)) if leader != 0))
    }

    /// Reads a live member's own copy (serializable, no leader needed): each member in turn,
    /// starting with the one that answered last, each for at most [`LOCAL_READ_TIMEOUT`].
    async fn read_local(&self, request: RangeRequest) -> Result<RangeResponse, String> {
        use std::sync::atomic::Ordering;
        let count = self.members.len();
        let first = self.last_local.load(Ordering::Relaxed);
        let mut last_error = String::from("no members");
        for offset in 0..count {
            let index = (first + offset) % count;
            let read = self.members[index].range_local(request.clone());
            match tokio::time::timeout(LOCAL_READ_TIMEOUT, read).await {
                Ok(Ok(response)) => {
                    self.last_local.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(status)) => last_error = describe_status(&status),
                Err(_) => last_error = format!("no answer within {LOCAL_READ_TIMEOUT:?}"),
            }
        }
        Err(last_error)
    }

    /// Runs a range read until `deadline`, retried while etcd answers `Unavailable`: a member
    /// that is down refuses connections and the balanced channel may still pick it until it
    /// notices, while the live members would answer. Reads change nothing, so a retry is safe
    /// (writes are not retried: a lost answer may hide an applied compare-and-swap).
    async fn read_until(
        &self,
        what: &str,
        request: RangeRequest,
        deadline: tokio::time::Instant,
    ) -> Result<RangeResponse, StoreError> {
        let started = tokio::time::Instant::now();
        let mut attempt: u32 = 0;
        loop {
            match tokio::time::timeout_at(deadline, self.client.range(request.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status))
                    if status.code() == tonic::Code::Unavailable
                        && attempt < READ_RETRIES
                        && tokio::time::Instant::now() + READ_RETRY_PAUSE * (attempt + 1)
                            < deadline =>
                {
                    attempt += 1;
                    tracing::debug!(what, attempt, error = %status.message(), "etcd read unavailable; retrying");
                    tokio::time::sleep(READ_RETRY_PAUSE * attempt).await;
                }
                Ok(Err(status)) => return Err(unavailable_or_backend(what, &status)),
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "{what}: etcd did not answer within {:?} (is a quorum of its members up?)",
                        deadline.saturating_duration_since(started)
                    )))
                }
            }
        }
    }

    async fn txn(
        &self,
        what: &str,
        compare: Vec<Compare>,
        success: request_op::Request,
        failure: Option<request_op::Request>,
    ) -> Result<TxnResponse, StoreError> {
        let txn = TxnRequest {
            compare,
            success: vec![op(success)],
            failure: failure.into_iter().map(op).collect(),
        };
        let response = self.call(what, self.client.txn(txn)).await?;
        self.shared
            .observe(header_revision(response.header.as_ref()));
        Ok(response)
    }

    /// The current value of `key` read in the failure branch of a transaction.
    fn failed_read(key: &str, response: &TxnResponse) -> Result<Option<KeyValue>, StoreError> {
        for op in &response.responses {
            if let Some(response_op::Response::ResponseRange(range)) = &op.response {
                return range.kvs.first().map(from_etcd).transpose();
            }
        }
        Err(StoreError::Backend(format!(
            "etcd answered the transaction on {key} without its read"
        )))
    }

    /// The precondition failed: explain why from the key's current state.
    fn precondition_failed(
        key: &str,
        expected: Option<Revision>,
        response: &TxnResponse,
    ) -> StoreError {
        match Self::failed_read(key, response) {
            Err(error) => error,
            Ok(None) => StoreError::NotFound {
                key: key.to_string(),
            },
            Ok(Some(current)) => StoreError::Conflict {
                key: key.to_string(),
                expected: expected.unwrap_or_default(),
                actual: current.mod_revision,
            },
        }
    }

    /// The compares of an update or delete: the key exists and, with `expected`, has that mod
    /// revision.
    fn preconditions(key: &str, expected: Option<Revision>) -> Vec<Compare> {
        let mut compares = vec![compare_create(key, CompareResult::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(compare_mod(key, to_i64(expected)));
        }
        compares
    }
}

/// A read of the single key `key`.
fn get_request(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..RangeRequest::default()
    }
}

/// Reads the cluster's current revision (a linearizable read through the leader).
pub(crate) async fn read_revision(client: &Etcd, timeout: Duration) -> Result<Revision, String> {
    let request = RangeRequest {
        count_only: true,
        ..get_request("/")
    };
    match tokio::time::timeout(timeout, client.range(request)).await {
        Ok(Ok(response)) => Ok(header_revision(response.header.as_ref())),
        Ok(Err(status)) => Err(describe_status(&status)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Tries every endpoint on its own (at once) and says, per endpoint, why it cannot be used.
async fn probe_endpoints(config: &EtcdConfig) -> String {
    let tls = client::tls_config(config).ok().flatten();
    let mut probes = tokio::task::JoinSet::new();
    for (index, url) in config.endpoints.iter().enumerate() {
        let (url, tls) = (url.clone(), tls.clone());
        let timeout = config.request_timeout;
        probes.spawn(async move {
            let report = match probe(&url, tls, timeout).await {
                Ok(()) => format!("{url} answers alone but the cluster has no leader"),
                Err(reason) => format!("{url}: {reason}"),
            };
            (index, report)
        });
    }
    let mut reports: Vec<(usize, String)> = probes.join_all().await;
    reports.sort();
    let reports: Vec<String> = reports.into_iter().map(|(_, report)| report).collect();
    reports.join("; ")
}

/// Connects to one endpoint (TCP and TLS handshake) and reads through it.
async fn probe(
    url: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
    timeout: Duration,
) -> Result<(), String> {
    let endpoint = client::endpoint(url, tls.as_ref(), timeout).map_err(|e| e.to_string())?;
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(error)) => return Err(describe(&error)),
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    read_revision(&Etcd::from_channel(channel), timeout)
        .await
        .map(drop)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .read(&format!("reading {key}"), get_request(key))
            .await?;
        self.shared
            .observe(header_revision(response.header.as_ref()));
        response.kvs.first().map(from_etcd).transpose()
    }

    /// Reads in pages of [`LIST_PAGE`] items; every page after the first is read at the first
    /// page's revision, so the listing is one consistent snapshot.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let range_end = prefix_end(prefix);
        let mut start: Vec<u8> = match start_after {
            Some(after) if after >= prefix => [after.as_bytes(), b"\0"].concat(),
            _ if prefix.is_empty() => vec![0],
            _ => prefix.as_bytes().to_vec(),
        };
        let mut items = Vec::new();
        let mut revision: Revision = 0;
        loop {
            let want = if limit == 0 {
                LIST_PAGE
            } else {
                (limit - items.len()).min(LIST_PAGE)
            };
            let request = RangeRequest {
                key: start.clone(),
                range_end: range_end.clone(),
                limit: to_i64(want as u64),
                revision: to_i64(revision),
                ..RangeRequest::default()
            };
            let response = self.read(&format!("listing {prefix}"), request).await?;
            if revision == 0 {
                revision = header_revision(response.header.as_ref());
                self.shared.observe(revision);
            }
            for item in &response.kvs {
                items.push(from_etcd(item)?);
            }
            let more = response.more;
            let done = limit > 0 && items.len() >= limit;
            match items.last() {
                Some(last) if more && !done => start = [last.key.as_bytes(), b"\0"].concat(),
                _ => {
                    return Ok(ListPage {
                        items,
                        revision,
                        more,
                    })
                }
            }
        }
    }

    /// A linearizable read only: while etcd has no quorum, reads are answered from a member's
    /// own copy, but the server is not ready (writes fail).
    async fn check_ready(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.read_until("checking readiness", get_request("/mini/readyz"), deadline)
            .await
            .map(drop)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.clone(),
            ..PutRequest::default()
        });
        let response = self
            .txn(
                &format!("creating {key}"),
                vec![compare_create(key, CompareResult::Equal, 0)],
                put,
                None,
            )
            .await?;
        if !response.succeeded {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let revision = header_revision(response.header.as_ref());
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let put = request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.clone(),
            prev_kv: true,
            ..PutRequest::default()
        });
        let read = request_op::Request::RequestRange(get_request(key));
        let response = self
            .txn(
                &format!("updating {key}"),
                Self::preconditions(key, expected),
                put,
                Some(read),
            )
            .await?;
        if !response.succeeded {
            return Err(Self::precondition_failed(key, expected, &response));
        }
        let revision = header_revision(response.header.as_ref());
        let create_revision = response
            .responses
            .iter()
            .find_map(|op| match &op.response {
                Some(response_op::Response::ResponsePut(put)) => {
                    put.prev_kv.as_ref().map(|prev| prev.create_revision)
                }
                _ => None,
            })
            .map(convert::to_revision)
            .ok_or_else(|| {
                StoreError::Backend(format!("etcd did not return the previous value of {key}"))
            })?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            prev_kv: true,
            ..DeleteRangeRequest::default()
        });
        let read = request_op::Request::RequestRange(get_request(key));
        let response = self
            .txn(
                &format!("deleting {key}"),
                Self::preconditions(key, expected),
                delete,
                Some(read),
            )
            .await?;
        if !response.succeeded {
            return Err(Self::precondition_failed(key, expected, &response));
        }
        let revision = header_revision(response.header.as_ref());
        let prev = response
            .responses
            .iter()
            .find_map(|op| match &op.response {
                Some(response_op::Response::ResponseDeleteRange(delete)) => {
                    delete.prev_kvs.first().map(from_etcd)
                }
                _ => None,
            })
            .transpose()?
            .ok_or_else(|| {
                StoreError::Backend(format!("etcd did not return the deleted value of {key}"))
            })?;
        Ok(Deleted { prev, revision })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        let mut state = self.shared.lock();
        let seen = state.seen;
        state.hub.subscribe_after(prefix, after, seen)
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Compacts etcd's history up to `revision` (never beyond the current revision, nor beyond
    /// what the watch cache received within the request timeout) and drops
    /// the watch cache's events up to it.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let upto = self
            .delivered_through(revision.min(self.current_revision()))
            .await;
        if upto == 0 {
            return Ok(());
        }
        let request = CompactionRequest {
            revision: to_i64(upto),
            physical: false,
        };
        match self
            .call(
                &format!("compacting etcd to revision {upto}"),
                self.client.compact(request),
            )
            .await
        {
            Ok(_) => {}
            // already compacted at least this far
            Err(StoreError::Backend(message)) if message.contains("has been compacted") => {}
            Err(error) => return Err(error),
        }
        self.shared.lock().hub.compact(upto, upto);
        Ok(())
    }
}

#[cfg(test)]
mod cluster;
#[cfg(test)]
mod codegen_tests;
#[cfg(test)]
mod tests;
