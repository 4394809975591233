//! The DNS server's watch cache: Services, EndpointSlices and Pods digested into the few facts
//! DNS answers need, indexed by the names DNS asks for, kept current by list+watch.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A service port as DNS sees it: its name, lowercase protocol and number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortInfo {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// What a Service name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    /// A virtual IP (one per family).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoint addresses.
    Headless,
    /// A CNAME to another name.
    ExternalName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    pub kind: ServiceKind,
    pub ports: Vec<PortInfo>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    pub service: String,
    pub endpoints: Vec<EndpointInfo>,
    pub ports: Vec<PortInfo>,
}

type NsName = (String, String);

fn key_of<K: kube::Resource>(obj: &K) -> NsName {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// A table fed by one watch: applies and deletes objects of one kind.
pub(crate) trait Table: Default + Send + Sync + 'static {
    type Obj: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    fn apply(&mut self, obj: &Self::Obj);
    fn delete(&mut self, obj: &Self::Obj);
}

#[derive(Default)]
pub(crate) struct ServiceTable {
    by_name: HashMap<NsName, Arc<ServiceInfo>>,
}

impl ServiceTable {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceInfo>> {
        self.by_name
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn namespace_has_services(&self, namespace: &str) -> bool {
        self.by_name.keys().any(|(ns, _)| ns == namespace)
    }

    #[cfg(test)]
    pub(crate) fn insert(&mut self, namespace: &str, name: &str, info: ServiceInfo) {
        self.by_name
            .insert((namespace.to_string(), name.to_string()), Arc::new(info));
    }
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    ips.into_iter().filter_map(|s| s.parse().ok()).collect()
}

pub(crate) fn digest_service(svc: &Service) -> ServiceInfo {
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(
            spec.external_name
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        )
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips = parse_ips(spec.cluster_ips.iter().flatten());
        if ips.is_empty() {
            ips = parse_ips(spec.cluster_ip.iter());
        }
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PortInfo {
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()).to_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    ServiceInfo { kind, ports }
}

impl Table for ServiceTable {
    type Obj = Service;
    fn apply(&mut self, obj: &Service) {
        self.by_name
            .insert(key_of(obj), Arc::new(digest_service(obj)));
    }
    fn delete(&mut self, obj: &Service) {
        self.by_name.remove(&key_of(obj));
    }
}

/// EndpointSlices grouped by the Service they belong to (`kubernetes.io/service-name`).
#[derive(Default)]
pub(crate) struct SliceTable {
    /// (namespace, service) -> slice name -> slice
    by_service: HashMap<NsName, BTreeMap<String, Arc<SliceInfo>>>,
    /// (namespace, slice name) -> service, to move or drop a slice whose label changed
    owner: HashMap<NsName, String>,
}

impl SliceTable {
    pub fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<SliceInfo>> {
        self.by_service
            .get(&(namespace.to_string(), service.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn insert(&mut self, namespace: &str, slice_name: &str, info: SliceInfo) {
        let key = (namespace.to_string(), slice_name.to_string());
        self.remove(&key);
        self.owner.insert(key, info.service.clone());
        self.by_service
            .entry((namespace.to_string(), info.service.clone()))
            .or_default()
            .insert(slice_name.to_string(), Arc::new(info));
    }

    fn remove(&mut self, key: &NsName) {
        if let Some(service) = self.owner.remove(key) {
            let skey = (key.0.clone(), service);
            if let Some(m) = self.by_service.get_mut(&skey) {
                m.remove(&key.1);
                if m.is_empty() {
                    self.by_service.remove(&skey);
                }
            }
        }
    }
}

pub(crate) fn digest_slice(slice: &EndpointSlice) -> Option<SliceInfo> {
    let service = slice.labels().get("kubernetes.io/service-name")?.clone();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| EndpointInfo {
            addresses: parse_ips(e.addresses.iter()),
            hostname: e.hostname.clone().map(|h| h.to_ascii_lowercase()),
            // an unset condition means "unknown", which consumers treat as ready
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortInfo {
                name: p.name.clone().unwrap_or_default(),
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    Some(SliceInfo {
        service,
        endpoints,
        ports,
    })
}

impl Table for SliceTable {
    type Obj = EndpointSlice;
    fn apply(&mut self, obj: &EndpointSlice) {
        let (ns, name) = key_of(obj);
        match digest_slice(obj) {
            Some(info) => self.insert(&ns, &name, info),
            None => self.remove(&(ns, name)),
        }
    }
    fn delete(&mut self, obj: &EndpointSlice) {
        self.remove(&key_of(obj));
    }
}

/// Pod IPs per namespace (for `<a-b-c-d>.<ns>.pod.<domain>`, verified like CoreDNS's
/// `pods verified`).
#[derive(Default)]
pub(crate) struct PodTable {
    ips_of: HashMap<NsName, Vec<IpAddr>>,
    count: HashMap<(String, IpAddr), u32>,
}

impl PodTable {
    pub fn has_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        self.count.contains_key(&(namespace.to_string(), ip))
    }

    pub(crate) fn insert(&mut self, namespace: &str, name: &str, ips: Vec<IpAddr>) {
        let key = (namespace.to_string(), name.to_string());
        self.remove(&key);
        for ip in &ips {
            *self.count.entry((namespace.to_string(), *ip)).or_default() += 1;
        }
        if !ips.is_empty() {
            self.ips_of.insert(key, ips);
        }
    }

    fn remove(&mut self, key: &NsName) {
        for ip in self.ips_of.remove(key).unwrap_or_default() {
            let ckey = (key.0.clone(), ip);
            if let Some(n) = self.count.get_mut(&ckey) {
                *n -= 1;
                if *n == 0 {
                    self.count.remove(&ckey);
                }
            }
        }
    }
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips = parse_ips(status.pod_ip.iter());
    }
    ips
}

impl Table for PodTable {
    type Obj = Pod;
    fn apply(&mut self, obj: &Pod) {
        let (ns, name) = key_of(obj);
        self.insert(&ns, &name, pod_ips(obj));
    }
    fn delete(&mut self, obj: &Pod) {
        self.remove(&key_of(obj));
    }
}

const SERVICES_SYNCED: u8 = 1;
const SLICES_SYNCED: u8 = 2;
const PODS_SYNCED: u8 = 4;
const ALL_SYNCED: u8 = SERVICES_SYNCED | SLICES_SYNCED | PODS_SYNCED;

/// The three tables and whether each has seen its first full list.
pub(crate) struct ClusterCache {
    pub services: RwLock<ServiceTable>,
    pub slices: RwLock<SliceTable>,
    pub pods: RwLock<PodTable>,
    synced: watch::Sender<u8>,
}

impl Default for ClusterCache {
    fn default() -> Self {
        ClusterCache {
            services: RwLock::default(),
            slices: RwLock::default(),
            pods: RwLock::default(),
            synced: watch::Sender::new(0),
        }
    }
}

/// Reads a table, ignoring poisoning (writers only swap plain data in).
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl ClusterCache {
    /// True once every table has been filled from a full list.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow() == ALL_SYNCED
    }

    /// Waits until every table has been filled from a full list.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // the sender lives in self, so this only ends when the condition holds
        let _ = rx.wait_for(|m| *m == ALL_SYNCED).await;
    }

    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        self.synced.send_replace(ALL_SYNCED);
    }

    /// Spawns the three watches; they end when `shutdown` is cancelled.
    pub fn spawn_watches(self: &Arc<Self>, client: Client, shutdown: &CancellationToken) {
        tokio::spawn(watch_into(
            Api::<Service>::all(client.clone()),
            self.clone(),
            |c: &ClusterCache| &c.services,
            SERVICES_SYNCED,
            shutdown.clone(),
        ));
        tokio::spawn(watch_into(
            Api::<EndpointSlice>::all(client.clone()),
            self.clone(),
            |c: &ClusterCache| &c.slices,
            SLICES_SYNCED,
            shutdown.clone(),
        ));
        tokio::spawn(watch_into(
            Api::<Pod>::all(client),
            self.clone(),
            |c: &ClusterCache| &c.pods,
            PODS_SYNCED,
            shutdown.clone(),
        ));
    }
}

/// Feeds one watch into its table: a relist is built aside and swapped in whole, so readers
/// never see a half-listed table.
async fn watch_into<T: Table>(
    api: Api<T::Obj>,
    cache: Arc<ClusterCache>,
    table: fn(&ClusterCache) -> &RwLock<T>,
    bit: u8,
    shutdown: CancellationToken,
) {
    let kind = std::any::type_name::<T::Obj>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut pending: Option<T> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => ev,
        };
        match event {
            None => return,
            Some(Err(error)) => tracing::warn!(%error, kind, "dns: watch failed, retrying"),
            Some(Ok(Event::Init)) => pending = Some(T::default()),
            Some(Ok(Event::InitApply(obj))) => pending.get_or_insert_with(T::default).apply(&obj),
            Some(Ok(Event::InitDone)) => {
                *write(table(&cache)) = pending.take().unwrap_or_default();
                cache.synced.send_modify(|m| *m |= bit);
                tracing::debug!(kind, "dns: cache synced");
            }
            Some(Ok(Event::Apply(obj))) => write(table(&cache)).apply(&obj),
            Some(Ok(Event::Delete(obj))) => write(table(&cache)).delete(&obj),
        }
    }
}
