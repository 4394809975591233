//! The endpoints controller: keeps one core/v1 Endpoints object per Service with a selector,
//! listing the IPs of the matching pods (ready ones in `addresses`, the others in
//! `notReadyAddresses`) grouped into subsets by their resolved port sets, as upstream does.
//! It also hosts the small work queue and watch plumbing the endpointslice controller shares.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::{Context, ControllerError};

/// Annotation upstream stamps with the time of the change that triggered the last update.
pub(crate) const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Label upstream puts on the endpoints of headless services.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// A namespaced object's `(namespace, name)`.
pub(crate) type Key = (String, String);

/// A de-duplicating work queue with delayed and backed-off requeues.
pub(crate) struct WorkQueue<T: Eq + Hash + Clone> {
    ready: VecDeque<T>,
    queued: HashSet<T>,
    delayed: HashMap<T, Instant>,
    failures: HashMap<T, u32>,
}

impl<T: Eq + Hash + Clone> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            delayed: HashMap::new(),
            failures: HashMap::new(),
        }
    }
}

impl<T: Eq + Hash + Clone> WorkQueue<T> {
    /// Queues `item` for processing now.
    pub(crate) fn add(&mut self, item: T) {
        self.delayed.remove(&item);
        if self.queued.insert(item.clone()) {
            self.ready.push_back(item);
        }
    }

    /// Queues `item` after `delay` (the earliest of several requests wins).
    pub(crate) fn add_after(&mut self, item: T, delay: Duration) {
        if self.queued.contains(&item) {
            return;
        }
        let at = Instant::now() + delay;
        let entry = self.delayed.entry(item).or_insert(at);
        if at < *entry {
            *entry = at;
        }
    }

    /// Requeues `item` with an exponential back-off (100 ms doubling up to 30 s).
    pub(crate) fn retry(&mut self, item: T) {
        let n = self.failures.entry(item.clone()).or_insert(0);
        *n = (*n + 1).min(10);
        let delay = Duration::from_millis(100 * (1u64 << *n)).min(Duration::from_secs(30));
        self.add_after(item, delay);
    }

    /// Resets the back-off of `item` after a successful sync.
    pub(crate) fn forget(&mut self, item: &T) {
        self.failures.remove(item);
    }

    /// Moves the delayed items that are due to the ready queue.
    pub(crate) fn promote_due(&mut self) {
        let now = Instant::now();
        let due: Vec<T> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for item in due {
            self.add(item);
        }
    }

    /// When the next delayed item becomes due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let item = self.ready.pop_front()?;
        self.queued.remove(&item);
        Some(item)
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending::<()>().await,
    }
}

/// A reflector over `api`: the store it fills and the stream of watch events (which must be
/// polled for the store to fill). Watch errors are logged and retried with back-off.
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, BoxStream<'static, watcher::Event<K>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .filter_map(|r| async move {
            match r {
                Ok(ev) => Some(ev),
                Err(e) => {
                    tracing::warn!(error = %e, kind = K::kind(&()).as_ref(), "watch failed; retrying");
                    None
                }
            }
        })
        .boxed();
    (reader, stream)
}

/// The object an event is about (none for the `Init`/`InitDone` markers).
pub(crate) fn event_object<K>(ev: &watcher::Event<K>) -> Option<&K> {
    match ev {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => {
            Some(o)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// The key of a namespaced object.
pub(crate) fn key_of<K: Resource>(obj: &K) -> Key {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// The selector of a Service that this controller manages endpoints for: `None` for services
/// without one (or with an empty one, which upstream stores as none) and for
/// `default/kubernetes`, which the API server maintains itself.
pub(crate) fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    if svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes")
    {
        return None;
    }
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether `labels` carry every `key=value` of a Service selector.
pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pods of the service's namespace its selector matches.
pub(crate) fn selected_pods(pods: &Store<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = managed_selector(svc) else {
        return Vec::new();
    };
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let mut out = pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns.as_str())
            && selector_matches(selector, p.labels())
    });
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

/// The services whose endpoints may change when `pod` changes: every service with a
/// selector in its namespace (labels may have changed, so the old match is unknown).
pub(crate) fn services_for_pod(services: &Store<Service>, pod: &Pod) -> Vec<Key> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    services
        .state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str()) && managed_selector(s).is_some()
        })
        .iter()
        .map(|s| key_of(s.as_ref()))
        .collect()
}

/// Whether a pod belongs in the endpoints at all (upstream `ShouldPodBeInEndpoints`): it has
/// an IP, has not finished, and is not terminating unless `include_terminating`.
pub(crate) fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if mini_runtime::pod::is_terminal(pod) {
        return false;
    }
    if pod_ip(pod).is_none() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The pod's IPv4 address (endpoints are single-stack IPv4 here).
pub(crate) fn pod_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let mut candidates: Vec<&str> = Vec::new();
    if let Some(ip) = status.pod_ip.as_deref() {
        candidates.push(ip);
    }
    for ip in status.pod_ips.iter().flatten() {
        candidates.push(ip.ip.as_str());
    }
    candidates
        .into_iter()
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
}

/// Resolves a service port's `targetPort` for `pod` (upstream `FindPort`): a number as is, a
/// name looked up among the pod's container ports of the same protocol.
pub(crate) fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The hostname a pod publishes under the service: its `spec.hostname` when its subdomain is
/// the service's name.
pub(crate) fn pod_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| hostname.to_string())
}

/// A reference to a pod, as endpoints carry them.
pub(crate) fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The time of the latest change among the service and its pods, for the trigger-time
/// annotation (pod readiness transitions, else creation).
pub(crate) fn last_change_time(svc: &Service, pods: &[Arc<Pod>]) -> Option<Time> {
    let mut latest = svc.metadata.creation_timestamp.clone();
    for pod in pods {
        let t = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| pod.metadata.creation_timestamp.clone());
        if let Some(t) = t {
            if latest.as_ref().is_none_or(|l| l.0 < t.0) {
                latest = Some(t);
            }
        }
    }
    latest
}

/// Labels of the objects published for `svc`: the service's own, plus the headless marker.
pub(crate) fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Whether an API error is a 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409 (conflict or already exists).
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The subsets upstream computes for `svc` over `pods`, repacked and sorted.
fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses.unwrap_or(false);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.unwrap_or_default();
    // each address with the ports it serves and whether it is ready
    let mut entries: Vec<(EndpointAddress, bool, Vec<EndpointPort>)> = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        let address = EndpointAddress {
            ip,
            hostname: pod_hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = tolerate_unready || mini_runtime::pod::is_ready(pod);
        if ports.is_empty() {
            if headless {
                entries.push((address, ready, Vec::new()));
            }
            continue;
        }
        let mut eps: Vec<EndpointPort> = ports
            .iter()
            .filter_map(|sp| {
                find_port(pod, sp).map(|n| EndpointPort {
                    name: sp.name.clone(),
                    port: n,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        if eps.is_empty() {
            continue;
        }
        sort_ports(&mut eps);
        entries.push((address, ready, eps));
    }
    // repack: addresses with identical port sets share a subset
    let mut groups: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for (address, ready, ports) in entries {
        let group_key = serde_json::to_string(&ports).unwrap_or_default();
        let subset = groups.entry(group_key).or_insert_with(|| EndpointSubset {
            ports: (!ports.is_empty()).then(|| ports.clone()),
            ..Default::default()
        });
        let list = if ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let mut subsets: Vec<EndpointSubset> = groups.into_values().collect();
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            list.sort_by(|a, b| {
                (&a.ip, a.target_ref.as_ref().and_then(|r| r.uid.as_ref()))
                    .cmp(&(&b.ip, b.target_ref.as_ref().and_then(|r| r.uid.as_ref())))
            });
        }
    }
    subsets
}

fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
}

/// Normalises subsets for comparison (the server may drop empty lists).
fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let mut out: Vec<EndpointSubset> = subsets.cloned().unwrap_or_default();
    for s in &mut out {
        if s.addresses.as_ref().is_some_and(|a| a.is_empty()) {
            s.addresses = None;
        }
        if s.not_ready_addresses.as_ref().is_some_and(|a| a.is_empty()) {
            s.not_ready_addresses = None;
        }
        if s.ports.as_ref().is_some_and(|a| a.is_empty()) {
            s.ports = None;
        }
        if let Some(p) = s.ports.as_mut() {
            for port in p.iter_mut() {
                if port.protocol.is_none() {
                    port.protocol = Some("TCP".into());
                }
            }
            sort_ports(p);
        }
    }
    out
}

/// Brings the Endpoints of service `key` in line with the pods it selects.
async fn sync_service(
    ctx: &Context,
    services: &Store<Service>,
    pods: &Store<Pod>,
    key: &Key,
) -> Result<(), ControllerError> {
    let (ns, name) = key;
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let Some(svc) = services.get(&ObjectRef::new(name).within(ns)) else {
        // the service is gone: its endpoints go too (they carry no owner reference)
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(namespace = %ns, name = %name, "deleted endpoints of deleted service")
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    };
    if managed_selector(&svc).is_none() {
        return Ok(());
    }
    let selected = selected_pods(pods, &svc);
    let subsets = desired_subsets(&svc, &selected);
    let labels = service_labels(&svc);
    let current = api.get_opt(name).await?;
    match current {
        Some(mut current) => {
            let same_subsets = normalized(current.subsets.as_ref()) == normalized(Some(&subsets));
            let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
            if same_subsets && same_labels {
                return Ok(());
            }
            if !same_subsets {
                if let Some(t) = last_change_time(&svc, &selected) {
                    current
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(TRIGGER_TIME_ANNOTATION.into(), rfc3339(&t));
                }
            }
            current.metadata.labels = Some(labels);
            current.subsets = Some(subsets);
            api.replace(name, &PostParams::default(), &current).await?;
        }
        None => {
            let annotations = last_change_time(&svc, &selected)
                .map(|t| BTreeMap::from([(TRIGGER_TIME_ANNOTATION.to_string(), rfc3339(&t))]));
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations,
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            api.create(&PostParams::default(), &ep).await?;
        }
    }
    Ok(())
}

/// A timestamp as RFC 3339 with second precision, as upstream writes it.
pub(crate) fn rfc3339(t: &Time) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

enum Msg {
    Service(Box<watcher::Event<Service>>),
    Pod(Box<watcher::Event<Pod>>),
    Endpoints(Box<watcher::Event<Endpoints>>),
}

/// Runs the endpoints controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let (services, svc_events) = reflect(Api::<Service>::all(client.clone()), Default::default());
    let (pods, pod_events) = reflect(Api::<Pod>::all(client.clone()), Default::default());
    let (endpoints, ep_events) = reflect(Api::<Endpoints>::all(client.clone()), Default::default());
    let mut events = futures::stream::select_all(vec![
        svc_events.map(|e| Msg::Service(Box::new(e))).boxed(),
        pod_events.map(|e| Msg::Pod(Box::new(e))).boxed(),
        ep_events.map(|e| Msg::Endpoints(Box::new(e))).boxed(),
    ]);
    let mut synced = [false; 3];
    let mut started = false;
    let mut queue: WorkQueue<Key> = WorkQueue::default();
    let mut resync = tokio::time::interval(Duration::from_secs(300));
    resync.tick().await;
    loop {
        queue.promote_due();
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Ok(()),
            msg = events.next() => {
                let Some(msg) = msg else {
                    return Err(ControllerError::Other("endpoints watch streams ended".into()));
                };
                match msg {
                    Msg::Service(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[0] = true; }
                        if let Some(s) = event_object(&ev) { queue.add(key_of(s)); }
                    }
                    Msg::Pod(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[1] = true; }
                        if let Some(p) = event_object(&ev) {
                            for k in services_for_pod(&services, p) { queue.add(k); }
                        }
                    }
                    Msg::Endpoints(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[2] = true; }
                        if let Some(e) = event_object(&ev) { queue.add(key_of(e)); }
                    }
                }
                if !started && synced.iter().all(|s| *s) {
                    started = true;
                    // leftover endpoints of services deleted while no controller ran
                    for ep in endpoints.state() {
                        let key = key_of(ep.as_ref());
                        if services.get(&ObjectRef::new(&key.1).within(&key.0)).is_none() {
                            queue.add(key);
                        }
                    }
                    for s in services.state() { queue.add(key_of(s.as_ref())); }
                }
            }
            _ = std::future::ready(()), if started && queue.has_ready() => {
                let Some(key) = queue.pop() else { continue };
                match sync_service(&ctx, &services, &pods, &key).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        if !matches!(&e, ControllerError::Kube(k) if is_conflict(k)) {
                            tracing::warn!(namespace = %key.0, service = %key.1, error = %e, "syncing endpoints failed");
                        }
                        queue.retry(key);
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
            _ = resync.tick(), if started => {
                for s in services.state() { queue.add(key_of(s.as_ref())); }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use kube::api::{Patch, PatchParams};
    use mini_testenv::TestEnv;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    pub(crate) fn start(
        env: &TestEnv,
        f: fn(Arc<Context>) -> futures::future::BoxFuture<'static, Result<(), ControllerError>>,
    ) -> CancellationToken {
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: crate::ControllerConfig::default(),
            shutdown: token.clone(),
        });
        tokio::spawn(f(ctx));
        token
    }

    /// Polls `check` every 100 ms for up to 15 s.
    pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn service(name: &str, target: IntOrString, publish_not_ready: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("tier".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                publish_not_ready_addresses: Some(publish_not_ready),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates pod `name` labelled `app=app`, then gives it `ip` and readiness.
    pub(crate) async fn pod(
        client: &kube::Client,
        app: &str,
        name: &str,
        ip: &str,
        ready: bool,
        named_port: Option<i32>,
    ) -> Pod {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx".into()),
                    ports: named_port.map(|n| {
                        vec![ContainerPort {
                            name: Some("web".into()),
                            container_port: n,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        api.create(&PostParams::default(), &p).await.unwrap();
        set_pod_status(client, name, ip, ready).await
    }

    pub(crate) async fn set_pod_status(
        client: &kube::Client,
        name: &str,
        ip: &str,
        ready: bool,
    ) -> Pod {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let status = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap()
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<String> {
        let mut v: Vec<String> = list.iter().flatten().map(|a| a.ip.clone()).collect();
        v.sort();
        v
    }

    fn run_boxed(
        c: Arc<Context>,
    ) -> futures::future::BoxFuture<'static, Result<(), ControllerError>> {
        use futures::FutureExt;
        run(c).boxed()
    }

    async fn endpoints_matching<F>(
        api: &Api<Endpoints>,
        name: &str,
        what: &str,
        pred: F,
    ) -> Endpoints
    where
        F: Fn(&Endpoints) -> bool,
    {
        eventually(what, || async {
            api.get_opt(name).await.unwrap().filter(|e| pred(e))
        })
        .await
    }

    #[tokio::test]
    async fn service_with_ready_and_unready_pods_splits_addresses_and_not_ready_addresses() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let token = start(&env, run_boxed);
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        svcs.create(
            &PostParams::default(),
            &service("web", IntOrString::Int(8080), false),
        )
        .await
        .unwrap();
        pod(&admin, "web", "web-1", "10.42.0.11", true, None).await;
        pod(&admin, "web", "web-2", "10.42.0.12", true, None).await;
        pod(&admin, "web", "web-3", "10.42.0.13", false, None).await;
        pod(&admin, "other", "other-1", "10.42.0.99", true, None).await;
        let api: Api<Endpoints> = Api::namespaced(admin.clone(), "default");
        let ep = endpoints_matching(&api, "web", "ready and unready addresses", |e| {
            e.subsets.as_ref().is_some_and(|s| {
                s.len() == 1
                    && ips(&s[0].addresses) == ["10.42.0.11", "10.42.0.12"]
                    && ips(&s[0].not_ready_addresses) == ["10.42.0.13"]
            })
        })
        .await;
        let subset = &ep.subsets.as_ref().unwrap()[0];
        let port = &subset.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let addr = &subset.addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("node-a"));
        let r = addr.target_ref.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref()),
            (Some("Pod"), Some("web-1"))
        );
        assert!(r.uid.is_some());
        assert_eq!(ep.labels().get("tier").map(String::as_str), Some("web"));
        assert!(ep.annotations().contains_key(TRIGGER_TIME_ANNOTATION));

        // a pod IP change shows up
        set_pod_status(&admin, "web-1", "10.42.0.21", true).await;
        endpoints_matching(&api, "web", "the new pod ip", |e| {
            e.subsets
                .as_ref()
                .is_some_and(|s| ips(&s[0].addresses) == ["10.42.0.12", "10.42.0.21"])
        })
        .await;

        // deleting the service deletes its endpoints
        svcs.delete("web", &DeleteParams::default()).await.unwrap();
        eventually("endpoints deleted", || async {
            api.get_opt("web").await.unwrap().is_none().then_some(())
        })
        .await;
        token.cancel();
    }

    #[tokio::test]
    async fn named_target_port_resolves_per_pod_and_skips_pods_without_it() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let token = start(&env, run_boxed);
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        svcs.create(
            &PostParams::default(),
            &service("named", IntOrString::String("web".into()), false),
        )
        .await
        .unwrap();
        pod(&admin, "named", "n-1", "10.42.1.1", true, Some(8081)).await;
        pod(&admin, "named", "n-2", "10.42.1.2", true, Some(9090)).await;
        pod(&admin, "named", "n-3", "10.42.1.3", true, None).await;
        let api: Api<Endpoints> = Api::namespaced(admin.clone(), "default");
        let ep = endpoints_matching(&api, "named", "two subsets by port", |e| {
            e.subsets.as_ref().is_some_and(|s| s.len() == 2)
        })
        .await;
        let mut by_port: Vec<(i32, Vec<String>)> = ep
            .subsets
            .unwrap()
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, ips(&s.addresses)))
            .collect();
        by_port.sort();
        assert_eq!(
            by_port,
            vec![
                (8081, vec!["10.42.1.1".to_string()]),
                (9090, vec!["10.42.1.2".to_string()])
            ]
        );
        token.cancel();
    }

    #[tokio::test]
    async fn publish_not_ready_addresses_lists_unready_pods_as_addresses() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let token = start(&env, run_boxed);
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        svcs.create(
            &PostParams::default(),
            &service("pub", IntOrString::Int(80), true),
        )
        .await
        .unwrap();
        let api: Api<Endpoints> = Api::namespaced(admin.clone(), "default");
        endpoints_matching(&api, "pub", "empty endpoints", |e| {
            e.subsets.as_ref().is_none_or(|s| s.is_empty())
        })
        .await;
        pod(&admin, "pub", "pub-1", "10.42.2.1", false, None).await;
        endpoints_matching(&api, "pub", "unready pod in addresses", |e| {
            e.subsets.as_ref().is_some_and(|s| {
                s.len() == 1
                    && ips(&s[0].addresses) == ["10.42.2.1"]
                    && s[0]
                        .not_ready_addresses
                        .as_ref()
                        .is_none_or(|a| a.is_empty())
            })
        })
        .await;
        token.cancel();
    }
}
