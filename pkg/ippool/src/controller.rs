//! The allocator controller the server runs: watches pods, pools, allocations, StatefulSets
//! and nodes, and carries out `plan::plan` after every change (debounced) and every 10 s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use mini_runtime::{EventRecorder, EventType};
use mini_sys::netlink::Ipv4Net;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::plan::{plan, Action, Networks, PodRef, State};
use crate::types::{IpAllocation, IpPool};
use crate::{api_err, IpPoolError, ALLOCATED_ANNOTATION};

/// What the allocator needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    /// `--cluster-cidr`.
    pub cluster_cidr: String,
    /// `--service-cidr`.
    pub service_cidr: String,
    /// How often the whole state is planned again without events.
    pub resync_interval: Duration,
}

impl AllocatorConfig {
    pub fn new(cluster_cidr: impl Into<String>, service_cidr: impl Into<String>) -> Self {
        AllocatorConfig {
            cluster_cidr: cluster_cidr.into(),
            service_cidr: service_cidr.into(),
            resync_interval: Duration::from_secs(10),
        }
    }

    fn networks(&self) -> Result<Networks, IpPoolError> {
        let parse = |flag: &'static str, value: &str| {
            value.parse::<Ipv4Net>().map_err(|_| IpPoolError::Config {
                flag,
                value: value.to_string(),
            })
        };
        Ok(Networks {
            cluster: parse("--cluster-cidr", &self.cluster_cidr)?,
            service: parse("--service-cidr", &self.service_cidr)?,
        })
    }
}

fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, kind = %K::kind(&()), "ippool watch failed; retrying");
            }
            changed.notify_one();
        }
    });
    (reader, task)
}

/// Applies the CRDs, then runs the allocator until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: AllocatorConfig,
    shutdown: CancellationToken,
) -> Result<(), IpPoolError> {
    let networks = config.networks()?;
    // the CRDs first; the API server may still be settling, so failures are retried
    loop {
        match crate::crd::ensure(&client).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "applying the ip pool CRDs failed; retrying in 2s")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    let changed = Arc::new(Notify::new());
    let (pods, t1) = watch(Api::<Pod>::all(client.clone()), changed.clone());
    let (pools, t2) = watch(Api::<IpPool>::all(client.clone()), changed.clone());
    let (allocations, t3) = watch(Api::<IpAllocation>::all(client.clone()), changed.clone());
    let (stateful_sets, t4) = watch(Api::<StatefulSet>::all(client.clone()), changed.clone());
    let (nodes, t5) = watch(Api::<Node>::all(client.clone()), changed.clone());
    let tasks = [t1, t2, t3, t4, t5];
    let ready = async {
        pods.wait_until_ready().await.ok()?;
        pools.wait_until_ready().await.ok()?;
        allocations.wait_until_ready().await.ok()?;
        stateful_sets.wait_until_ready().await.ok()?;
        nodes.wait_until_ready().await.ok()
    };
    tokio::select! {
        _ = shutdown.cancelled() => { tasks.iter().for_each(|t| t.abort()); return Ok(()); }
        _ = ready => {}
    }
    tracing::info!("ip pool allocator started");
    let mut allocator = Allocator {
        client: client.clone(),
        recorder: EventRecorder::new(client, "ippool-allocator"),
        told: HashMap::new(),
        created: HashMap::new(),
        released: HashMap::new(),
    };
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = config.resync_interval;
        let state = allocator.state(&pods, &pools, &allocations, &stateful_sets, &nodes);
        for action in plan(&state, &networks) {
            if let Err(e) = allocator.apply(action).await {
                tracing::warn!(error = %e, "ip pool allocation step failed; retrying");
                delay = Duration::from_secs(1);
            }
        }
    }
    tasks.iter().for_each(|t| t.abort());
    Ok(())
}

struct Allocator {
    client: kube::Client,
    recorder: EventRecorder,
    /// Pod uid → (last warning reason, when), so a waiting pod is told again only now and then.
    told: HashMap<String, (&'static str, Instant)>,
    /// Allocations this allocator created or released that the watch may not show yet.
    created: HashMap<String, (IpAllocation, Instant)>,
    released: HashMap<String, Instant>,
}

const CACHE_GRACE: Duration = Duration::from_secs(30);

impl Allocator {
    fn state(
        &mut self,
        pods: &Store<Pod>,
        pools: &Store<IpPool>,
        allocations: &Store<IpAllocation>,
        stateful_sets: &Store<StatefulSet>,
        nodes: &Store<Node>,
    ) -> State {
        let mut by_name: BTreeMap<String, IpAllocation> = allocations
            .state()
            .iter()
            .map(|a| (a.metadata.name.clone().unwrap_or_default(), (**a).clone()))
            .collect();
        self.created
            .retain(|name, (_, at)| !by_name.contains_key(name) && at.elapsed() < CACHE_GRACE);
        for (name, (a, _)) in &self.created {
            by_name.insert(name.clone(), a.clone());
        }
        self.released
            .retain(|name, at| by_name.contains_key(name) && at.elapsed() < CACHE_GRACE);
        for name in self.released.keys() {
            by_name.remove(name);
        }
        State {
            pods: pods.state().iter().map(|p| (**p).clone()).collect(),
            pools: pools.state().iter().map(|p| (**p).clone()).collect(),
            allocations: by_name.into_values().collect(),
            stateful_sets: stateful_sets
                .state()
                .iter()
                .map(|s| {
                    (
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.metadata.name.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            nodes: nodes
                .state()
                .iter()
                .map(|n| {
                    (
                        n.metadata.name.clone().unwrap_or_default(),
                        n.metadata.labels.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    async fn annotate(&self, pod: &PodRef, address: &str) -> Result<(), IpPoolError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let patch = serde_json::json!({
            "metadata": {"uid": pod.uid, "annotations": {ALLOCATED_ANNOTATION: address}}
        });
        match api
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // the pod went (or is another incarnation): the next pass sees it
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!(
                "annotating pod {}/{} with its address",
                pod.namespace, pod.name
            ))(e)),
        }
    }

    async fn event(&mut self, pod: &PodRef, type_: EventType, reason: &'static str, message: &str) {
        if type_ == EventType::Warning {
            if let Some((last, at)) = self.told.get(&pod.uid) {
                if *last == reason && at.elapsed() < Duration::from_secs(60) {
                    return;
                }
            }
            self.told.insert(pod.uid.clone(), (reason, Instant::now()));
        } else {
            self.told.remove(&pod.uid);
        }
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        if let Err(e) = self
            .recorder
            .record(&regarding, type_, reason, message)
            .await
        {
            tracing::debug!(error = %e, "recording an ip pool event failed");
        }
    }

    async fn apply(&mut self, action: Action) -> Result<(), IpPoolError> {
        let allocations: Api<IpAllocation> = Api::all(self.client.clone());
        match action {
            Action::Allocate { pod, allocation } => {
                let name = allocation.metadata.name.clone().unwrap_or_default();
                match allocations
                    .create(&PostParams::default(), &allocation)
                    .await
                {
                    Ok(created) => {
                        self.created.insert(name, (created, Instant::now()));
                    }
                    // someone holds it already: the watch brings it, the next pass decides
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                    Err(e) => return Err(api_err(format!("creating the IPAllocation {name}"))(e)),
                }
                tracing::info!(
                    pod = %format!("{}/{}", pod.namespace, pod.name),
                    address = allocation.spec.address,
                    pool = allocation.spec.pool,
                    "allocated a pool address"
                );
                self.annotate(&pod, &allocation.spec.address).await?;
                let message = format!(
                    "address {} of IPPool {} allocated",
                    allocation.spec.address, allocation.spec.pool
                );
                self.event(&pod, EventType::Normal, "IPAllocated", &message)
                    .await;
            }
            Action::Annotate { pod, address } => self.annotate(&pod, &address).await?,
            Action::Update { name, spec } => {
                let patch = serde_json::json!({"spec": spec});
                allocations
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_err(format!("updating the IPAllocation {name}")))?;
                self.created.remove(&name);
            }
            Action::Release { name, reason } => {
                match allocations.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(api_err(format!("releasing the IPAllocation {name}"))(e)),
                }
                self.created.remove(&name);
                self.released.insert(name.clone(), Instant::now());
                tracing::info!(allocation = name, reason, "released a pool address");
            }
            Action::Warn {
                pod,
                reason,
                message,
            } => self.event(&pod, EventType::Warning, reason, &message).await,
            Action::PoolStatus { name, status } => {
                let pools: Api<IpPool> = Api::all(self.client.clone());
                let patch = serde_json::json!({"status": status});
                if let Some(refused) = status.conditions.iter().find(|c| c.status == "False") {
                    // a refused pool is also told as an event (kubectl describe ippool)
                    let regarding = ObjectReference {
                        api_version: Some(format!(
                            "{}/{}",
                            crate::types::GROUP,
                            crate::types::VERSION
                        )),
                        kind: Some("IPPool".into()),
                        name: Some(name.clone()),
                        ..Default::default()
                    };
                    if let Err(e) = self
                        .recorder
                        .record(
                            &regarding,
                            EventType::Warning,
                            &refused.reason,
                            &refused.message,
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "recording an ip pool event failed");
                    }
                }
                match pools
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(api_err(format!("writing the status of IPPool {name}"))(e))
                    }
                }
            }
        }
        Ok(())
    }
}
