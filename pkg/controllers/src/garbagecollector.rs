//! The garbage collector (upstream `pkg/controller/garbagecollector`): a dependency graph of
//! every listable and watchable resource, keyed by uid with ownerReference edges, and a work
//! queue that deletes dependents whose owners are all gone (Background), deletes dependents
//! before their owner (Foreground, `foregroundDeletion` finalizer) or strips the owner's
//! references from its dependents (Orphan, `orphan` finalizer).
//!
//! The graph is only a cache used to find dependents; every decision re-reads the objects it
//! is about through the API (an owner missing from the cache is looked up by name, and a uid
//! that doesn't match the object of that name counts as gone). After a restart the watchers'
//! initial lists re-enqueue every owned object, so the collector re-derives everything.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use mini_runtime::{EventRecorder, EventType};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Context, ControllerError};

/// The finalizer a Foreground deletion puts on the owner.
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer an Orphan deletion puts on the owner.
const ORPHAN: &str = "orphan";
/// How often discovery runs again to pick up (or drop) custom resources.
const REDISCOVERY: Duration = Duration::from_secs(30);
/// How long the workers wait for the watchers' initial lists before they start anyway.
const SYNC_DEADLINE: Duration = Duration::from_secs(10);
/// Concurrent workers.
const WORKERS: usize = 4;

// ---------------------------------------------------------------------------------------------
// work queue
// ---------------------------------------------------------------------------------------------

/// A de-duplicating work queue in the style of client-go's: a key is never handed to two
/// workers at once, a key added while it is processed is handed out again afterwards, and
/// failed keys come back after an exponential back-off.
pub(crate) struct WorkQueue<K> {
    state: Mutex<QueueState<K>>,
    notify: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

struct QueueState<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub(crate) fn new(base_delay: Duration, max_delay: Duration) -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
            base_delay,
            max_delay,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub(crate) fn add(&self, key: K) {
        let mut s = self.lock();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub(crate) fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = q.upgrade() {
                q.add(key);
            }
        });
    }

    /// Queues `key` again after a back-off that doubles with each consecutive failure.
    pub(crate) fn add_rate_limited(self: &Arc<Self>, key: K) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        let delay = self.base_delay.saturating_mul(factor).min(self.max_delay);
        self.add_after(key, delay);
    }

    /// Resets `key`'s back-off.
    pub(crate) fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on, or `None` once `shutdown` is cancelled.
    pub(crate) async fn next(&self, shutdown: &CancellationToken) -> Option<K> {
        loop {
            {
                let mut s = self.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.notify.notified() => {}
            }
        }
    }

    /// Marks `key` as processed; if it was added meanwhile it is queued again.
    pub(crate) fn done(&self, key: &K) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the dependency graph
// ---------------------------------------------------------------------------------------------

/// A discovered resource the collector can read and delete.
#[derive(Debug, Clone)]
struct Known {
    ar: ApiResource,
    namespaced: bool,
}

/// A group and resource (plural), the identity of a watched resource across versions.
type ResKey = (String, String);

/// What the graph remembers about one object.
#[derive(Debug, Clone)]
struct Node {
    res: Arc<Known>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Node {
    fn from_object(res: &Arc<Known>, obj: &DynamicObject) -> Option<(String, Node)> {
        let uid = obj.metadata.uid.clone()?;
        let owners = obj
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        Some((
            uid,
            Node {
                res: res.clone(),
                namespace: obj.metadata.namespace.clone(),
                name: obj.metadata.name.clone().unwrap_or_default(),
                owners,
                deleting: obj.metadata.deletion_timestamp.is_some(),
                finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
            },
        ))
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid -> uids of objects that reference it (the owner need not be in `nodes`)
    dependents: HashMap<String, HashSet<String>>,
    by_resource: HashMap<ResKey, HashSet<String>>,
}

impl Graph {
    fn unlink(&mut self, uid: &str, owners: &[OwnerReference]) {
        for r in owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }

    /// Records `node`; returns the uids worth processing because of the change.
    fn upsert(&mut self, key: &ResKey, uid: String, node: Node) -> Vec<String> {
        let mut wake = Vec::new();
        let old = self.nodes.get(&uid).cloned();
        if let Some(old) = &old {
            self.unlink(&uid, &old.owners);
        }
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.by_resource
            .entry(key.clone())
            .or_default()
            .insert(uid.clone());
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        let deletion_changed = old
            .as_ref()
            .is_none_or(|o| o.deleting != node.deleting || o.finalizers != node.finalizers);
        if !node.owners.is_empty() && (owners_changed || deletion_changed) {
            wake.push(uid.clone());
        }
        if node.deleting && (node.has_finalizer(FOREGROUND) || node.has_finalizer(ORPHAN)) {
            wake.push(uid.clone());
        }
        if owners_changed || deletion_changed {
            // owners waiting for their dependents may be unblocked by this change
            let old_owners = old.iter().flat_map(|o| o.owners.iter());
            for r in node.owners.iter().chain(old_owners) {
                if self
                    .nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
                {
                    wake.push(r.uid.clone());
                }
            }
        }
        self.nodes.insert(uid, node);
        wake
    }

    /// Forgets the object `uid`; returns the uids worth processing because it is gone.
    fn remove(&mut self, key: &ResKey, uid: &str) -> Vec<String> {
        let mut wake = Vec::new();
        if let Some(set) = self.by_resource.get_mut(key) {
            set.remove(uid);
        }
        let Some(node) = self.nodes.remove(uid) else {
            return wake;
        };
        self.unlink(uid, &node.owners);
        if let Some(deps) = self.dependents.get(uid) {
            wake.extend(deps.iter().cloned());
        }
        for r in &node.owners {
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(Node::deleting_dependents)
            {
                wake.push(r.uid.clone());
            }
        }
        wake
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// the collector
// ---------------------------------------------------------------------------------------------

struct Gc {
    client: kube::Client,
    graph: Mutex<Graph>,
    /// (group, kind) -> resource, for resolving ownerReferences
    kinds: Mutex<HashMap<(String, String), Arc<Known>>>,
    /// watched resources not yet through their initial list
    unsynced: Mutex<HashSet<ResKey>>,
    queue: Arc<WorkQueue<String>>,
    events: EventRecorder,
    /// poked when CustomResourceDefinitions change, to run discovery again early
    rediscover: Notify,
}

/// How an owner reference looks from the dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or the name now belongs to another object).
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
    /// A namespaced owner of a cluster-scoped object: can't exist, so treated as gone.
    Invalid,
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Gc {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn api(&self, res: &Known, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if res.namespaced => Api::namespaced_with(self.client.clone(), ns, &res.ar),
            _ => Api::all_with(self.client.clone(), &res.ar),
        }
    }

    fn wake(&self, uids: Vec<String>) {
        for uid in uids {
            self.queue.add(uid);
        }
    }

    fn kinds_has(&self, group: &str, kind: &str) -> bool {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.contains_key(&(group.to_string(), kind.to_string()))
    }

    fn resolve(&self, r: &OwnerReference) -> Option<Arc<Known>> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds
            .get(&(group_of(&r.api_version).to_string(), r.kind.clone()))
            .cloned()
    }

    /// The live state of the owner `r` of an object in `namespace`.
    async fn owner_state(
        &self,
        namespace: Option<&str>,
        r: &OwnerReference,
    ) -> Result<OwnerState, ControllerError> {
        let Some(res) = self.resolve(r) else {
            // discovery may just not have caught up with a new custom resource
            self.rediscover.notify_one();
            return Err(ControllerError::Other(format!(
                "cannot resolve owner kind {} {}",
                r.api_version, r.kind
            )));
        };
        if res.namespaced && namespace.is_none() {
            // a cluster-scoped object can't be owned by a namespaced one: the reference is
            // unresolvable, as upstream treats it
            return Ok(OwnerState::Invalid);
        }
        let owner = self.api(&res, namespace).get_opt(&r.name).await?;
        Ok(match owner {
            None => OwnerState::Dangling,
            Some(o) if o.metadata.uid.as_deref() != Some(r.uid.as_str()) => OwnerState::Dangling,
            Some(o)
                if o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| f.iter().any(|x| x == FOREGROUND)) =>
            {
                OwnerState::Waiting
            }
            Some(_) => OwnerState::Solid,
        })
    }

    /// One pass over the object `uid`.
    async fn process(&self, uid: &str) -> Result<(), ControllerError> {
        let Some(node) = self.graph().nodes.get(uid).cloned() else {
            return Ok(());
        };
        let api = self.api(&node.res, node.namespace.as_deref());
        let Some(live) = api.get_opt(&node.name).await? else {
            return Ok(());
        };
        if live.metadata.uid.as_deref() != Some(uid) {
            // the name now belongs to another object; the watch will remove this one
            return Ok(());
        }
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        if live.metadata.deletion_timestamp.is_some() {
            if finalizers.iter().any(|f| f == ORPHAN) {
                return self.orphan_dependents(uid, &api, &live).await;
            }
            if finalizers.iter().any(|f| f == FOREGROUND) {
                return self.delete_dependents(uid, &api, &live).await;
            }
            return Ok(());
        }
        let owners: Vec<OwnerReference> = live
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        if owners.is_empty() {
            return Ok(());
        }
        let mut solid = 0usize;
        let mut gone: HashSet<String> = HashSet::new();
        let mut waiting = 0usize;
        for r in &owners {
            match self
                .owner_state(live.metadata.namespace.as_deref(), r)
                .await?
            {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => {
                    gone.insert(r.uid.clone());
                }
                OwnerState::Invalid => {
                    gone.insert(r.uid.clone());
                    let regarding = ObjectReference {
                        api_version: Some(node.res.ar.api_version.clone()),
                        kind: Some(node.res.ar.kind.clone()),
                        name: Some(node.name.clone()),
                        uid: Some(uid.to_string()),
                        ..ObjectReference::default()
                    };
                    let message = format!(
                        "ownerRef [{}/{}, namespace: , name: {}, uid: {}] does not exist in namespace \"\"",
                        r.api_version, r.kind, r.name, r.uid
                    );
                    if let Err(e) = self
                        .events
                        .record(
                            &regarding,
                            EventType::Warning,
                            "OwnerRefInvalidNamespace",
                            &message,
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "recording an event failed");
                    }
                }
                OwnerState::Waiting => {
                    waiting += 1;
                    gone.insert(r.uid.clone());
                }
            }
        }
        if solid > 0 {
            if gone.is_empty() {
                return Ok(());
            }
            // a living owner keeps the object: only the references to the others go
            tracing::debug!(uid, name = node.name, "removing dangling owner references");
            return self.remove_owner_refs(&api, &node.name, uid, &gone).await;
        }
        let dependents = self.graph().dependents_of(uid);
        let policy = if waiting > 0 && !dependents.is_empty() {
            if dependents.iter().any(|(_, d)| d.deleting_dependents()) {
                // a dependent of ours waits for its dependents while an owner of ours waits
                // for us: possibly a cycle. Stop blocking our owners so it can't deadlock.
                self.unblock_owner_refs(&api, &live).await?;
            }
            PropagationPolicy::Foreground
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(
            uid,
            name = node.name,
            ?policy,
            "deleting object whose owners are gone"
        );
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the references to the owners in `owner_uids` from the object `name` (`uid`),
    /// with the resourceVersion it was read at as precondition (retried on conflict).
    async fn remove_owner_refs(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        uid: &str,
        owner_uids: &HashSet<String>,
    ) -> Result<(), ControllerError> {
        for _ in 0..5 {
            let Some(obj) = api.get_opt(name).await? else {
                return Ok(());
            };
            if obj.metadata.uid.as_deref() != Some(uid) {
                return Ok(());
            }
            let refs = obj.metadata.owner_references.clone().unwrap_or_default();
            let kept: Vec<&OwnerReference> = refs
                .iter()
                .filter(|r| !owner_uids.contains(&r.uid))
                .collect();
            if kept.len() == refs.len() {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) },
                "resourceVersion": obj.metadata.resource_version,
            }});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControllerError::Other(format!(
            "conflicts removing owner references from {name}"
        )))
    }

    /// Sets `blockOwnerDeletion: false` on every ownerReference of `obj`.
    async fn unblock_owner_refs(
        &self,
        api: &Api<DynamicObject>,
        obj: &DynamicObject,
    ) -> Result<(), ControllerError> {
        let mut refs = obj.metadata.owner_references.clone().unwrap_or_default();
        if !refs.iter().any(|r| r.block_owner_deletion == Some(true)) {
            return Ok(());
        }
        for r in &mut refs {
            r.block_owner_deletion = Some(false);
        }
        let name = obj.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {
            "ownerReferences": refs,
            "resourceVersion": obj.metadata.resource_version,
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `finalizer` from the object read as `obj` (resourceVersion precondition).
    async fn remove_finalizer(
        &self,
        api: &Api<DynamicObject>,
        obj: &DynamicObject,
        finalizer: &str,
    ) -> Result<(), ControllerError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        let mut current = obj.clone();
        for _ in 0..5 {
            let fins = current.metadata.finalizers.clone().unwrap_or_default();
            let kept: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
            if kept.len() == fins.len() {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "finalizers": if kept.is_empty() { Value::Null } else { json!(kept) },
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(404) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => match api.get_opt(&name).await? {
                    Some(o) if o.metadata.uid.as_deref() == Some(uid.as_str()) => current = o,
                    _ => return Ok(()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(ControllerError::Other(format!(
            "conflicts removing finalizer {finalizer} from {name}"
        )))
    }

    /// Orphan: strips the owner `uid` from every dependent, then drops the `orphan` finalizer.
    async fn orphan_dependents(
        &self,
        uid: &str,
        api: &Api<DynamicObject>,
        owner: &DynamicObject,
    ) -> Result<(), ControllerError> {
        let deps = self.graph().dependents_of(uid);
        let owner_uids: HashSet<String> = [uid.to_string()].into();
        for (dep_uid, dep) in deps {
            let dep_api = self.api(&dep.res, dep.namespace.as_deref());
            self.remove_owner_refs(&dep_api, &dep.name, &dep_uid, &owner_uids)
                .await?;
        }
        tracing::debug!(uid, "dependents orphaned; removing the orphan finalizer");
        self.remove_finalizer(api, owner, ORPHAN).await
    }

    /// Foreground: deletes the dependents of `uid`; once none that block owner deletion remain,
    /// drops the `foregroundDeletion` finalizer (and with it the owner).
    async fn delete_dependents(
        &self,
        uid: &str,
        api: &Api<DynamicObject>,
        owner: &DynamicObject,
    ) -> Result<(), ControllerError> {
        let deps = self.graph().dependents_of(uid);
        let blocking = deps
            .iter()
            .filter(|(_, d)| {
                d.owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            })
            .count();
        for (dep_uid, dep) in &deps {
            if !dep.deleting || dep.deleting_dependents() {
                self.queue.add(dep_uid.clone());
            }
        }
        if blocking > 0 {
            tracing::debug!(uid, blocking, "owner waits for blocking dependents");
            return Ok(());
        }
        tracing::debug!(
            uid,
            "no blocking dependents left; removing foregroundDeletion"
        );
        self.remove_finalizer(api, owner, FOREGROUND).await
    }

    fn mark_unsynced(&self, key: &ResKey, unsynced: bool) {
        let mut s = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        if unsynced {
            s.insert(key.clone());
        } else {
            s.remove(key);
        }
    }

    fn synced(&self) -> bool {
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Feeds one resource's watch into the graph until the task is aborted.
    async fn watch_resource(self: Arc<Self>, key: ResKey, res: Arc<Known>) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &res.ar);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut relist: Option<HashSet<String>> = None;
        let is_crd = key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions";
        while let Some(ev) = stream.next().await {
            if is_crd {
                if let Ok(Event::Apply(crd) | Event::InitApply(crd) | Event::Delete(crd)) = &ev {
                    let served = self.kinds_has(
                        crd.data["spec"]["group"].as_str().unwrap_or_default(),
                        crd.data["spec"]["names"]["kind"]
                            .as_str()
                            .unwrap_or_default(),
                    );
                    if served == matches!(ev, Ok(Event::Delete(_))) {
                        self.rediscover.notify_one();
                    }
                }
            }
            match ev {
                Ok(Event::Init) => relist = Some(HashSet::new()),
                Ok(Event::InitApply(obj)) | Ok(Event::Apply(obj)) => {
                    if let Some((uid, node)) = Node::from_object(&res, &obj) {
                        if let Some(seen) = relist.as_mut() {
                            seen.insert(uid.clone());
                        }
                        let wake = self.graph().upsert(&key, uid, node);
                        self.wake(wake);
                    }
                }
                Ok(Event::InitDone) => {
                    // objects that vanished while the watch was down: deleted
                    let seen = relist.take().unwrap_or_default();
                    let wake = {
                        let mut g = self.graph();
                        let stale: Vec<String> = g
                            .by_resource
                            .get(&key)
                            .into_iter()
                            .flatten()
                            .filter(|u| !seen.contains(*u))
                            .cloned()
                            .collect();
                        stale
                            .iter()
                            .flat_map(|u| g.remove(&key, u))
                            .collect::<Vec<_>>()
                    };
                    self.wake(wake);
                    self.mark_unsynced(&key, false);
                }
                Ok(Event::Delete(obj)) => {
                    if let Some(uid) = obj.metadata.uid.as_deref() {
                        let wake = self.graph().remove(&key, uid);
                        self.wake(wake);
                    }
                }
                Err(e) => {
                    tracing::debug!(resource = ?key, error = %e, "garbage collector watch failed")
                }
            }
        }
    }

    /// Drops every object of a resource that is no longer served.
    fn forget_resource(&self, key: &ResKey) {
        let wake = {
            let mut g = self.graph();
            let uids: Vec<String> = g.by_resource.remove(key).into_iter().flatten().collect();
            uids.iter()
                .flat_map(|u| g.remove(key, u))
                .collect::<Vec<_>>()
        };
        self.wake(wake);
        self.mark_unsynced(key, false);
    }
}

/// One discovery pass: updates the kind map and starts/stops the per-resource watchers.
async fn sync_resources(
    gc: &Arc<Gc>,
    watchers: &mut HashMap<ResKey, JoinHandle<()>>,
) -> Result<(), ControllerError> {
    let discovery = Discovery::new(gc.client.clone()).run().await?;
    let mut kinds = HashMap::new();
    let mut wanted: HashMap<ResKey, Arc<Known>> = HashMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let known = Arc::new(Known {
                namespaced: caps.scope == Scope::Namespaced,
                ar: ar.clone(),
            });
            if caps.supports_operation(verbs::GET) {
                kinds.insert((ar.group.clone(), ar.kind.clone()), known.clone());
            }
            let is_event =
                ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io");
            if !is_event
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::WATCH)
            {
                wanted.insert((ar.group.clone(), ar.plural.clone()), known);
            }
        }
    }
    *gc.kinds.lock().unwrap_or_else(|e| e.into_inner()) = kinds;
    let gone: Vec<ResKey> = watchers
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(h) = watchers.remove(&key) {
            h.abort();
        }
        tracing::info!(resource = ?key, "garbage collector stops watching a removed resource");
        gc.forget_resource(&key);
    }
    for (key, known) in wanted {
        if watchers.contains_key(&key) {
            continue;
        }
        gc.mark_unsynced(&key, true);
        let h = tokio::spawn(gc.clone().watch_resource(key.clone(), known));
        watchers.insert(key, h);
    }
    Ok(())
}

async fn worker(gc: Arc<Gc>, shutdown: CancellationToken) {
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    while !gc.synced() && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    while let Some(uid) = gc.queue.next(&shutdown).await {
        let result = tokio::select! {
            _ = shutdown.cancelled() => { gc.queue.done(&uid); return; }
            r = gc.process(&uid) => r,
        };
        match result {
            Ok(()) => gc.queue.forget(&uid),
            Err(e) => {
                tracing::debug!(uid, error = %e, "garbage collection failed; retrying");
                gc.queue.add_rate_limited(uid.clone());
            }
        }
        gc.queue.done(&uid);
    }
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let gc = Arc::new(Gc {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: Mutex::new(HashMap::new()),
        unsynced: Mutex::new(HashSet::new()),
        queue: WorkQueue::new(Duration::from_millis(50), Duration::from_secs(300)),
        rediscover: Notify::new(),
        events: EventRecorder::new(ctx.client.clone(), "garbage-collector-controller"),
    });
    let mut watchers: HashMap<ResKey, JoinHandle<()>> = HashMap::new();
    // the first discovery must succeed before anything else makes sense
    loop {
        match sync_resources(&gc, &mut watchers).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "garbage collector discovery failed"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(worker(gc.clone(), ctx.shutdown.clone()));
    }
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(REDISCOVERY) => {}
            _ = gc.rediscover.notified() => {
                // let the API server finish serving the new resource (and debounce)
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if let Err(e) = sync_resources(&gc, &mut watchers).await {
            tracing::warn!(error = %e, "garbage collector discovery failed");
        }
    }
    for (_, h) in watchers {
        h.abort();
    }
    while workers.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;
    use mini_testenv::TestEnv;
    use std::future::Future;

    const NS: &str = "default";

    /// A test server with the collector running until dropped.
    struct Running {
        env: TestEnv,
        token: CancellationToken,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.token.cancel();
        }
    }

    fn spawn_gc(env: &TestEnv) -> CancellationToken {
        let token = CancellationToken::new();
        tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        })));
        token
    }

    async fn start() -> Running {
        let env = TestEnv::start().await;
        let token = spawn_gc(&env);
        Running { env, token }
    }

    fn configmaps(env: &TestEnv) -> Api<ConfigMap> {
        Api::namespaced(env.admin_client(), NS)
    }

    fn owner_ref(
        api_version: &str,
        kind: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        block: bool,
    ) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            controller: None,
            block_owner_deletion: block.then_some(true),
        }
    }

    async fn create_cm(
        env: &TestEnv,
        name: &str,
        owners: Vec<OwnerReference>,
        finalizers: &[&str],
    ) -> ConfigMap {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers},
            "data": {"k": "v"},
        }))
        .expect("configmap");
        configmaps(env)
            .create(&PostParams::default(), &cm)
            .await
            .expect("creating configmap")
    }

    fn cm_ref(cm: &ConfigMap, block: bool) -> OwnerReference {
        owner_ref("v1", "ConfigMap", &cm.metadata, block)
    }

    async fn eventually<F, Fut>(what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if f().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn gone(api: &Api<ConfigMap>, name: &str) -> bool {
        api.get_opt(name).await.expect("get").is_none()
    }

    async fn drop_finalizers(api: &Api<ConfigMap>, name: &str) {
        let patch = json!({"metadata": {"finalizers": null}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("removing finalizers");
    }
    use k8s_openapi::api::rbac::v1::ClusterRole;

    #[tokio::test]
    async fn background_owner_deleted_dependents_collected_and_shared_dependent_keeps_living_owner()
    {
        let r = start().await;
        let api = configmaps(&r.env);
        let owner = create_cm(&r.env, "owner", vec![], &[]).await;
        let other = create_cm(&r.env, "other-owner", vec![], &[]).await;
        create_cm(&r.env, "only-child", vec![cm_ref(&owner, false)], &[]).await;
        create_cm(
            &r.env,
            "shared-child",
            vec![cm_ref(&owner, false), cm_ref(&other, true)],
            &[],
        )
        .await;
        api.delete("owner", &DeleteParams::default())
            .await
            .expect("deleting owner");
        eventually("only-child deleted", || gone(&api, "only-child")).await;
        eventually("shared-child loses the dangling reference", || async {
            let c = api
                .get("shared-child")
                .await
                .expect("shared-child survives");
            let refs = c.metadata.owner_references.unwrap_or_default();
            refs.len() == 1 && refs[0].uid == other.metadata.uid.clone().unwrap_or_default()
        })
        .await;
        assert!(api.get_opt("other-owner").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn background_owner_recreated_with_same_name_dependent_still_collected() {
        let r = start().await;
        let api = configmaps(&r.env);
        let owner = create_cm(&r.env, "phoenix", vec![], &[]).await;
        let stale = cm_ref(&owner, false);
        api.delete("phoenix", &DeleteParams::default())
            .await
            .expect("deleting owner");
        create_cm(&r.env, "phoenix", vec![], &[]).await;
        create_cm(&r.env, "orphaned-by-uid", vec![stale], &[]).await;
        eventually("dependent of the old uid deleted", || {
            gone(&api, "orphaned-by-uid")
        })
        .await;
        assert!(api.get_opt("phoenix").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn restart_owner_deleted_while_stopped_dependent_collected_on_start() {
        let env = TestEnv::start().await;
        let api = configmaps(&env);
        let owner = create_cm(&env, "before", vec![], &[]).await;
        create_cm(&env, "left-behind", vec![cm_ref(&owner, false)], &[]).await;
        api.delete("before", &DeleteParams::default())
            .await
            .expect("deleting owner");
        let token = spawn_gc(&env);
        eventually("dependent collected after start", || {
            gone(&api, "left-behind")
        })
        .await;
        token.cancel();
    }

    #[tokio::test]
    async fn foreground_owner_stays_until_blocking_chain_gone_then_disappears() {
        let r = start().await;
        let api = configmaps(&r.env);
        // owner -> mid (blocking) -> leaf (blocking, held by a finalizer); owner -> loose (not blocking)
        let owner = create_cm(&r.env, "deploy", vec![], &[]).await;
        let mid = create_cm(&r.env, "replicaset", vec![cm_ref(&owner, true)], &[]).await;
        create_cm(
            &r.env,
            "pod",
            vec![cm_ref(&mid, true)],
            &["example.com/hold"],
        )
        .await;
        create_cm(&r.env, "loose", vec![cm_ref(&owner, false)], &[]).await;
        api.delete("deploy", &DeleteParams::foreground())
            .await
            .expect("deleting owner");
        eventually("leaf being deleted", || async {
            api.get("pod")
                .await
                .expect("pod held")
                .metadata
                .deletion_timestamp
                .is_some()
        })
        .await;
        eventually("non-blocking dependent deleted", || gone(&api, "loose")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let o = api
            .get("deploy")
            .await
            .expect("owner waits for its dependents");
        assert!(o
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FOREGROUND.to_string()));
        let m = api.get("replicaset").await.expect("mid waits for the leaf");
        assert!(m.metadata.deletion_timestamp.is_some());
        drop_finalizers(&api, "pod").await;
        eventually("leaf gone", || gone(&api, "pod")).await;
        eventually("mid gone", || gone(&api, "replicaset")).await;
        eventually("owner gone", || gone(&api, "deploy")).await;
    }

    #[tokio::test]
    async fn orphan_dependents_survive_without_owner_reference_and_owner_gone() {
        let r = start().await;
        let api = configmaps(&r.env);
        let owner = create_cm(&r.env, "parent", vec![], &[]).await;
        let other = create_cm(&r.env, "step-parent", vec![], &[]).await;
        create_cm(&r.env, "kid-a", vec![cm_ref(&owner, true)], &[]).await;
        create_cm(
            &r.env,
            "kid-b",
            vec![cm_ref(&owner, false), cm_ref(&other, false)],
            &[],
        )
        .await;
        api.delete("parent", &DeleteParams::orphan())
            .await
            .expect("deleting owner");
        eventually("owner gone", || gone(&api, "parent")).await;
        let a = api.get("kid-a").await.expect("kid-a survives");
        assert!(a.metadata.owner_references.unwrap_or_default().is_empty());
        let b = api.get("kid-b").await.expect("kid-b survives");
        let refs = b.metadata.owner_references.unwrap_or_default();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "step-parent");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(api.get_opt("kid-a").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn custom_resource_owner_and_dependent_collected() {
        let r = start().await;
        let admin = r.env.admin_client();
        let crd_ar = ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        };
        let crds: Api<DynamicObject> = Api::all_with(admin.clone(), &crd_ar);
        let crd: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .expect("crd");
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("creating crd");
        let ar = ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        let widgets: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NS, &ar);
        let widget = |name: &str, owners: Vec<OwnerReference>| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": name, "ownerReferences": owners}, "spec": {"size": 1}}))
            .expect("widget")
        };
        let mut owner_widget = None;
        for _ in 0..100 {
            match widgets
                .create(&PostParams::default(), &widget("w-owner", vec![]))
                .await
            {
                Ok(w) => {
                    owner_widget = Some(w);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let owner_widget = owner_widget.expect("custom resource served");
        let api = configmaps(&r.env);
        let cm_owner = create_cm(&r.env, "cm-owner", vec![], &[]).await;
        create_cm(
            &r.env,
            "owned-by-widget",
            vec![owner_ref(
                "example.com/v1",
                "Widget",
                &owner_widget.metadata,
                false,
            )],
            &[],
        )
        .await;
        widgets
            .create(
                &PostParams::default(),
                &widget("w-owned", vec![cm_ref(&cm_owner, false)]),
            )
            .await
            .expect("creating owned widget");
        widgets
            .delete("w-owner", &DeleteParams::default())
            .await
            .expect("deleting widget");
        api.delete("cm-owner", &DeleteParams::default())
            .await
            .expect("deleting configmap");
        eventually("configmap owned by a widget deleted", || {
            gone(&api, "owned-by-widget")
        })
        .await;
        eventually("widget owned by a configmap deleted", || async {
            widgets.get_opt("w-owned").await.expect("get").is_none()
        })
        .await;
    }

    #[tokio::test]
    async fn workqueue_key_added_while_processing_is_handed_out_again() {
        let q: Arc<WorkQueue<String>> =
            WorkQueue::new(Duration::from_millis(1), Duration::from_millis(10));
        let token = CancellationToken::new();
        q.add("a".into());
        q.add("a".into());
        let k = q.next(&token).await.expect("key");
        q.add("a".into());
        assert!(q.lock().queue.is_empty(), "not handed out while processing");
        q.done(&k);
        assert_eq!(q.next(&token).await.as_deref(), Some("a"));
        q.done(&k);
        assert!(
            q.lock().queue.is_empty(),
            "done without a new add does not requeue"
        );
        token.cancel();
        assert_eq!(q.next(&token).await, None);
    }

    #[tokio::test]
    async fn foreground_ownership_cycle_does_not_deadlock() {
        let r = start().await;
        let api = configmaps(&r.env);
        let a = create_cm(&r.env, "cycle-a", vec![], &[]).await;
        let b = create_cm(&r.env, "cycle-b", vec![cm_ref(&a, true)], &[]).await;
        let patch = json!({"metadata": {"ownerReferences": [cm_ref(&b, true)]}});
        api.patch("cycle-a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("closing the cycle");
        api.delete("cycle-a", &DeleteParams::foreground())
            .await
            .expect("deleting a");
        eventually("both gone", || async {
            gone(&api, "cycle-a").await && gone(&api, "cycle-b").await
        })
        .await;
    }

    #[tokio::test]
    async fn cluster_scoped_dependent_of_namespaced_owner_deleted_with_warning_event() {
        let r = start().await;
        let owner = create_cm(&r.env, "ns-owner", vec![], &[]).await;
        let roles: Api<ClusterRole> = Api::all(r.env.admin_client());
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": "owned-role", "ownerReferences": [cm_ref(&owner, false)]},
            "rules": [],
        }))
        .expect("clusterrole");
        roles
            .create(&PostParams::default(), &role)
            .await
            .expect("creating clusterrole");
        eventually("cluster-scoped dependent deleted", || async {
            roles.get_opt("owned-role").await.expect("get").is_none()
        })
        .await;
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(r.env.admin_client(), NS);
        eventually("warning event recorded", || async {
            events
                .list(&Default::default())
                .await
                .expect("events")
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("OwnerRefInvalidNamespace"))
        })
        .await;
        assert!(configmaps(&r.env)
            .get_opt("ns-owner")
            .await
            .expect("get")
            .is_some());
    }
}
