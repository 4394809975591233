//! The running scheduler: watch tasks feeding the cache and queue, the decision loop, bounded
//! concurrent bindings, and a side-effect worker for Events and unschedulable status patches.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use mini_runtime::{EventRecorder, EventType};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::algorithm::Algorithm;
use crate::cache::{Cache, NodeChange};
use crate::info::{NodeSpec, PodInfo};
use crate::queue::{Queue, QueueTimings};
use crate::{SchedulerConfig, SchedulerError};

/// Side effects that must not slow the decision loop; dropped (like upstream's event
/// broadcaster does) when the buffer is full.
enum Effect {
    Event {
        pod: ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: String,
    },
    Unschedulable {
        namespace: String,
        name: String,
        message: String,
        transition: bool,
    },
}

const EFFECT_BUFFER: usize = 4096;
const EFFECT_PARALLELISM: usize = 8;

struct State {
    cache: Cache,
    queue: Queue,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    config: SchedulerConfig,
    effects: mpsc::Sender<Effect>,
    volumes: crate::volumebinding::VolumeBinding,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn effect(&self, e: Effect) {
        if self.effects.try_send(e).is_err() {
            debug!("scheduler side-effect buffer full; dropping an event");
        }
    }

    fn ours(&self, pod: &PodInfo) -> bool {
        pod.scheduler_name.is_empty() || pod.scheduler_name == self.config.scheduler_name
    }
}

fn pod_ref(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()),
        ..Default::default()
    }
}

pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let (tx, rx) = mpsc::channel(EFFECT_BUFFER);
    let timings = QueueTimings {
        initial_backoff: config.initial_backoff,
        max_backoff: config.max_backoff,
        unschedulable_flush: config.unschedulable_flush,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            cache: Cache::default(),
            queue: Queue::new(timings),
        }),
        wake: Notify::new(),
        config: config.clone(),
        effects: tx,
        volumes: crate::volumebinding::VolumeBinding::start(&client),
    });
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(0usize);
    let synced_tx = Arc::new(synced_tx);
    let stop = shutdown.child_token();

    let tasks = vec![
        tokio::spawn(watch_nodes(
            Api::all(client.clone()),
            shared.clone(),
            synced_tx.clone(),
            stop.clone(),
        )),
        tokio::spawn(watch_pods(
            Api::all(client.clone()),
            shared.clone(),
            synced_tx.clone(),
            stop.clone(),
        )),
        tokio::spawn(watch_namespaces(
            Api::all(client.clone()),
            shared.clone(),
            synced_tx.clone(),
            stop.clone(),
        )),
        tokio::spawn(crate::ippool::watch_pools(
            Api::all(client.clone()),
            stop.clone(),
        )),
        tokio::spawn(flush_loop(shared.clone(), stop.clone())),
        tokio::spawn(volume_changes(shared.clone(), stop.clone())),
        tokio::spawn(effects_loop(client.clone(), rx, stop.clone())),
    ];

    // Like upstream, decide nothing before the caches have synced once.
    let synced = tokio::select! {
        _ = stop.cancelled() => false,
        r = synced_rx.wait_for(|n| *n >= 3) => r.is_ok(),
    };
    if synced {
        info!(scheduler = %config.scheduler_name, "scheduler caches synced; scheduling");
        schedule_loop(client, shared, stop.clone()).await;
    }
    stop.cancel();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn schedule_loop(client: kube::Client, shared: Arc<Shared>, stop: CancellationToken) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut alg = Algorithm::new(shared.config.percentage_of_nodes_to_score, seed);
    let bindings = Arc::new(Semaphore::new(shared.config.parallel_bindings.max(1)));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = bindings.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let attempt = loop {
            if let Some(a) = shared.lock().queue.pop() {
                break a;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.wake.notified() => {}
            }
        };
        let pod = attempt.info;
        let decision = {
            let mut st = shared.lock();
            if pod.deleting || st.cache.is_placed(&pod.uid) || !st.queue.contains(&pod.uid) {
                st.queue.remove(&pod.uid);
                continue;
            }
            let State { cache, queue } = &mut *st;
            let decided = shared
                .volumes
                .prepare(&pod, cache.present.len())
                .and_then(|p| alg.schedule(cache, &p).map_err(|d| d.message()));
            match decided {
                Ok(idx) => {
                    let node = cache.nodes[idx].spec.name.clone();
                    cache.add_pod(pod.clone(), &node, true);
                    Ok(node)
                }
                Err(message) => {
                    queue.unschedulable(&pod.uid, attempt.moves);
                    Err(message)
                }
            }
        };
        match decision {
            Ok(node) => {
                debug!(pod = %pod.key(), %node, "assumed; binding");
                tokio::spawn(bind(client.clone(), shared.clone(), pod, node, permit));
            }
            Err(message) => {
                drop(permit);
                debug!(pod = %pod.key(), %message, "unschedulable");
                let unchanged = pod
                    .scheduled_condition
                    .as_ref()
                    .is_some_and(|(s, r, m)| s == "False" && r == "Unschedulable" && *m == message);
                if !unchanged {
                    shared.effect(Effect::Unschedulable {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        message: message.clone(),
                        transition: pod
                            .scheduled_condition
                            .as_ref()
                            .is_none_or(|(s, _, _)| s != "False"),
                    });
                }
                shared.effect(Effect::Event {
                    pod: pod_ref(&pod),
                    type_: EventType::Warning,
                    reason: "FailedScheduling",
                    message,
                });
            }
        }
    }
}

async fn bind(
    client: kube::Client,
    shared: Arc<Shared>,
    pod: Arc<PodInfo>,
    node: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let res = match shared
        .volumes
        .select_node(&api.clone().into_client(), &pod, &node)
        .await
    {
        Ok(()) => {
            api.create_subresource::<_, serde_json::Value>(
                "binding",
                &pod.name,
                &PostParams::default(),
                &binding,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match res {
        Ok(_) => {
            shared.lock().queue.done(&pod.uid);
            shared.effect(Effect::Event {
                pod: pod_ref(&pod),
                type_: EventType::Normal,
                reason: "Scheduled",
                message: format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace, pod.name, node
                ),
            });
        }
        Err(e) => {
            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            {
                let mut st = shared.lock();
                if st.cache.is_assumed(&pod.uid) {
                    st.cache.remove_pod(&pod.uid);
                }
                if gone {
                    // Deleted, or bound by someone else: the watch tells the rest.
                    st.queue.remove(&pod.uid);
                } else {
                    st.queue.backoff(&pod.uid);
                }
                // The forgotten reservation may let parked pods fit.
                st.queue.move_all();
            }
            shared.wake.notify_one();
            if gone {
                debug!(pod = %pod.key(), error = %e, "binding rejected");
            } else {
                warn!(pod = %pod.key(), %node, error = %e, "binding failed; will retry");
                shared.effect(Effect::Event {
                    pod: pod_ref(&pod),
                    type_: EventType::Warning,
                    reason: "FailedScheduling",
                    message: format!("binding rejected: {e}"),
                });
            }
        }
    }
}

/// Claim, volume and class changes may let parked pods with volumes fit.
async fn volume_changes(shared: Arc<Shared>, stop: CancellationToken) {
    let wake = || {
        if shared.lock().queue.move_all() > 0 {
            shared.wake.notify_one();
        }
    };
    shared.volumes.forward_changes(wake, stop).await;
}

/// Retries due backoffs and stale unschedulable pods.
async fn flush_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let moved = shared.lock().queue.flush(Instant::now());
        if moved > 0 {
            shared.wake.notify_one();
        }
    }
}

async fn effects_loop(
    client: kube::Client,
    mut rx: mpsc::Receiver<Effect>,
    stop: CancellationToken,
) {
    let recorder = Arc::new(EventRecorder::new(
        client.clone(),
        crate::DEFAULT_SCHEDULER_NAME,
    ));
    let limit = Arc::new(Semaphore::new(EFFECT_PARALLELISM));
    loop {
        let effect = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let recorder = recorder.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match effect {
                Effect::Event {
                    pod,
                    type_,
                    reason,
                    message,
                } => {
                    if let Err(e) = recorder.record(&pod, type_, reason, &message).await {
                        debug!(error = %e, "recording a scheduler event failed");
                    }
                }
                Effect::Unschedulable {
                    namespace,
                    name,
                    message,
                    transition,
                } => {
                    let mut cond = serde_json::json!({
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": null,
                    });
                    if transition {
                        cond["lastTransitionTime"] =
                            serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
                                .unwrap_or_default();
                    }
                    let patch = serde_json::json!({"status": {"conditions": [cond]}});
                    let api: Api<Pod> = Api::namespaced(client, &namespace);
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        debug!(pod = %format!("{namespace}/{name}"), error = %e, "updating PodScheduled failed");
                    }
                }
            }
        });
    }
}

/// Tracks which objects a (re)list delivered, to drop the ones it did not.
#[derive(Default)]
struct Relist {
    seen: Option<HashSet<String>>,
}

impl Relist {
    fn start(&mut self) {
        self.seen = Some(HashSet::new());
    }

    fn saw(&mut self, key: &str) {
        if let Some(s) = &mut self.seen {
            s.insert(key.to_string());
        }
    }

    fn finish(&mut self) -> HashSet<String> {
        self.seen.take().unwrap_or_default()
    }
}

fn watch_stream<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

async fn watch_nodes(
    api: Api<Node>,
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<usize>>,
    stop: CancellationToken,
) {
    let mut stream = std::pin::pin!(watch_stream(api));
    let mut relist = Relist::default();
    let mut first = true;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        let moved = match ev {
            Event::Init => {
                relist.start();
                false
            }
            Event::InitApply(n) | Event::Apply(n) => {
                let spec = NodeSpec::from_node(&n);
                relist.saw(&spec.name);
                let mut st = shared.lock();
                match st.cache.set_node(spec) {
                    NodeChange::Added | NodeChange::Updated => st.queue.move_all() > 0,
                    NodeChange::Unchanged => false,
                }
            }
            Event::Delete(n) => {
                let name = n.metadata.name.unwrap_or_default();
                shared.lock().cache.remove_node(&name);
                false
            }
            Event::InitDone => {
                let seen = relist.finish();
                {
                    let mut st = shared.lock();
                    for name in st.cache.node_names() {
                        if !seen.contains(&name) {
                            st.cache.remove_node(&name);
                        }
                    }
                }
                if first {
                    first = false;
                    synced.send_modify(|n| *n += 1);
                }
                false
            }
        };
        if moved {
            shared.wake.notify_one();
        }
    }
}

fn apply_pod(shared: &Shared, info: PodInfo) -> bool {
    let mut st = shared.lock();
    let uid = info.uid.clone();
    if !info.node_name.is_empty() {
        st.queue.remove(&uid);
        if info.terminal {
            // Finished pods free their node.
            return st.cache.remove_pod(&uid) && st.queue.move_all() > 0;
        }
        let node = info.node_name.clone();
        st.cache.add_pod(Arc::new(info), &node, false);
        return false;
    }
    if info.terminal || !shared.ours(&info) {
        st.queue.remove(&uid);
        return false;
    }
    if st.cache.is_assumed(&uid) {
        // Bound by us; the watch has not caught up yet.
        return false;
    }
    st.queue.upsert(Arc::new(info))
}

async fn watch_pods(
    api: Api<Pod>,
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<usize>>,
    stop: CancellationToken,
) {
    let mut stream = std::pin::pin!(watch_stream(api));
    let mut relist = Relist::default();
    let mut first = true;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        let wake = match ev {
            Event::Init => {
                relist.start();
                false
            }
            Event::InitApply(p) | Event::Apply(p) => {
                let info = PodInfo::from_pod(&p);
                relist.saw(&info.uid);
                apply_pod(&shared, info)
            }
            Event::Delete(p) => {
                let uid = p.metadata.uid.unwrap_or_default();
                let mut st = shared.lock();
                st.queue.remove(&uid);
                st.cache.remove_pod(&uid) && st.queue.move_all() > 0
            }
            Event::InitDone => {
                let seen = relist.finish();
                let wake = {
                    let mut st = shared.lock();
                    let mut freed = false;
                    for uid in st.cache.confirmed_pod_uids() {
                        if !seen.contains(&uid) {
                            freed |= st.cache.remove_pod(&uid);
                        }
                    }
                    for uid in st.queue.uids() {
                        if !seen.contains(&uid) {
                            st.queue.remove(&uid);
                        }
                    }
                    (freed && st.queue.move_all() > 0) || st.queue.has_active()
                };
                if first {
                    first = false;
                    synced.send_modify(|n| *n += 1);
                }
                wake
            }
        };
        if wake {
            shared.wake.notify_one();
        }
    }
}

async fn watch_namespaces(
    api: Api<Namespace>,
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<usize>>,
    stop: CancellationToken,
) {
    let mut stream = std::pin::pin!(watch_stream(api));
    let mut first = true;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        match ev {
            Ok(Event::InitApply(ns)) | Ok(Event::Apply(ns)) => {
                let name = ns.metadata.name.unwrap_or_default();
                let labels = ns.metadata.labels.unwrap_or_default();
                shared.lock().cache.namespaces.insert(name, labels);
            }
            Ok(Event::Delete(ns)) => {
                shared
                    .lock()
                    .cache
                    .namespaces
                    .remove(&ns.metadata.name.unwrap_or_default());
            }
            Ok(Event::Init) => {}
            Ok(Event::InitDone) => {
                if first {
                    first = false;
                    synced.send_modify(|n| *n += 1);
                }
            }
            Err(e) => warn!(error = %e, "namespace watch failed; retrying"),
        }
    }
}
