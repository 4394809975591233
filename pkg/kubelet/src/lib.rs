//! mini's kubelet: watches the pods bound to this node and drives them onto a CRI runtime --
//! sandboxes, images, init and app containers, probes, restarts with back-off, deletion -- and
//! reports pod status. State lives in CRI (labels carry pod uid and container name), so a
//! restarted kubelet adopts running containers instead of recreating them.

mod env;
mod probe;
mod spec;
mod status;
pub mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use mini_cri::{proto, Runtime};
use mini_sys::Host;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use volumes::VolumeBackend;

/// Node-level settings of the kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// Per-pod directories (volumes) live under `<pods_dir>/<uid>`.
    pub pods_dir: PathBuf,
    /// Container logs: `<logs_dir>/<ns>_<name>_<uid>/<container>/<n>.log`.
    pub logs_dir: PathBuf,
    /// The cluster DNS service IPs for `ClusterFirst` pods (empty: pods get the host's DNS).
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The host resolv.conf used by `dnsPolicy: Default`.
    pub resolv_conf: PathBuf,
    /// Where pods' pool addresses are left for the CNI IPAM (`None`: static pod IPs are off).
    pub pinned_ip_dir: Option<PathBuf>,
}

/// Intervals and back-offs; the defaults are upstream's, tests shorten them.
#[derive(Debug, Clone)]
pub struct KubeletTiming {
    /// How often CRI is relisted to notice containers that exited (upstream's PLEG: 1 s).
    pub relist_interval: Duration,
    /// How often every pod worker resyncs without an event.
    pub resync_interval: Duration,
    /// First CrashLoopBackOff delay, doubled up to `crash_backoff_max`.
    pub crash_backoff_initial: Duration,
    pub crash_backoff_max: Duration,
    /// A container that ran this long resets its back-off.
    pub crash_backoff_reset: Duration,
    /// Image pull back-off (ImagePullBackOff), doubled up to the max.
    pub image_backoff_initial: Duration,
    pub image_backoff_max: Duration,
    /// A pull that takes longer fails with ErrImagePull.
    pub image_pull_timeout: Duration,
    /// How often configMap/secret/token volume contents are refreshed.
    pub volume_refresh: Duration,
    /// How often CRI sandboxes of pods unknown to the API are cleaned up.
    pub housekeeping_interval: Duration,
    /// Grace period for containers of pods that vanished from the API.
    pub orphan_grace: Duration,
    /// The length of one "second" in probe fields (tests use milliseconds).
    pub probe_second: Duration,
}

impl Default for KubeletTiming {
    fn default() -> Self {
        KubeletTiming {
            relist_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            crash_backoff_initial: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            crash_backoff_reset: Duration::from_secs(600),
            image_backoff_initial: Duration::from_secs(10),
            image_backoff_max: Duration::from_secs(300),
            image_pull_timeout: Duration::from_secs(60),
            volume_refresh: Duration::from_secs(60),
            housekeeping_interval: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(30),
            probe_second: Duration::from_secs(1),
        }
    }
}

/// What the kubelet's public calls fail with.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The pod or container is not known on this node (the agent answers 404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served in the current state (e.g. the container is not running).
    #[error("{0}")]
    BadRequest(String),
    #[error("container runtime: {0}")]
    Runtime(#[from] mini_cri::CriError),
    #[error("kubernetes api: {0}")]
    Api(#[from] kube::Error),
}

/// A pod's network as the runtime created it (port-forward enters `netns_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub sandbox_id: String,
    pub ip: Option<IpAddr>,
    pub netns_path: Option<PathBuf>,
}

/// What a pod worker receives.
#[derive(Debug, Clone)]
pub(crate) enum PodUpdate {
    Present(Arc<Pod>),
    /// The pod object is gone from the API.
    Gone,
}

struct PodHandle {
    namespace: String,
    name: String,
    tx: watch::Sender<PodUpdate>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    running: Arc<AtomicBool>,
}

/// The kubelet. Build with `new`, start with `run`.
pub struct Kubelet {
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
    host: Arc<dyn Host>,
    config: KubeletConfig,
    timing: KubeletTiming,
    volumes: Arc<dyn VolumeBackend>,
    events: Arc<mini_runtime::EventRecorder>,
    pods: Mutex<HashMap<String, PodHandle>>,
    stopping: AtomicBool,
}

impl Kubelet {
    /// A kubelet with upstream timing and `mini_volumes` for volumes.
    pub fn new(
        client: kube::Client,
        runtime: Arc<dyn Runtime>,
        host: Arc<dyn Host>,
        config: KubeletConfig,
    ) -> Arc<Self> {
        let volumes = volumes::mini_volumes_backend(client.clone(), host.clone(), &config);
        Self::with_parts(
            client,
            runtime,
            host,
            config,
            KubeletTiming::default(),
            volumes,
        )
    }

    /// A kubelet with explicit timing and volume backend (tests, benchmarks).
    pub fn with_parts(
        client: kube::Client,
        runtime: Arc<dyn Runtime>,
        host: Arc<dyn Host>,
        config: KubeletConfig,
        timing: KubeletTiming,
        volumes: Arc<dyn VolumeBackend>,
    ) -> Arc<Self> {
        let events = Arc::new(
            mini_runtime::EventRecorder::new(client.clone(), "kubelet")
                .with_host(&config.node_name),
        );
        Arc::new(Kubelet {
            client,
            runtime,
            host,
            config,
            timing,
            volumes,
            events,
            pods: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        })
    }

    fn pods_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodHandle>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches pods with `spec.nodeName` == this node and runs one worker per pod until
    /// `shutdown`; workers stop without touching containers (pods keep running).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), KubeletError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.config.node_name));
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        let relist = tokio::spawn(self.clone().relist_loop(shutdown.child_token()));
        let mut init_seen: Option<HashSet<String>> = None;
        let mut synced_once = false;
        let mut housekeeping = tokio::time::interval(self.timing.housekeeping_interval);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = housekeeping.tick() => {
                    if synced_once {
                        self.cleanup_orphans().await;
                    }
                }
                event = stream.next() => match event {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pod watch failed; running pods keep running, retrying");
                    }
                    Some(Ok(watcher::Event::Init)) => init_seen = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        if let Some(seen) = init_seen.as_mut() {
                            seen.insert(spec::pod_uid(&pod));
                        }
                        self.pod_seen(pod);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(seen) = init_seen.take() {
                            let gone: Vec<String> = self
                                .pods_lock()
                                .keys()
                                .filter(|uid| !seen.contains(*uid))
                                .cloned()
                                .collect();
                            for uid in gone {
                                self.pod_gone(&uid);
                            }
                        }
                        synced_once = true;
                        self.cleanup_orphans().await;
                    }
                    Some(Ok(watcher::Event::Apply(pod))) => self.pod_seen(pod),
                    Some(Ok(watcher::Event::Delete(pod))) => self.pod_gone(&spec::pod_uid(&pod)),
                }
            }
        }
        relist.abort();
        for handle in self.pods_lock().values() {
            handle.cancel.cancel();
        }
        Ok(())
    }

    fn pod_seen(self: &Arc<Self>, pod: Pod) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let uid = spec::pod_uid(&pod);
        if uid.is_empty() {
            return;
        }
        let pod = Arc::new(pod);
        let mut pods = self.pods_lock();
        if let Some(handle) = pods.get(&uid) {
            handle.tx.send_replace(PodUpdate::Present(pod));
            return;
        }
        let (tx, rx) = watch::channel(PodUpdate::Present(pod.clone()));
        let wake = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let running = Arc::new(AtomicBool::new(false));
        pods.insert(
            uid.clone(),
            PodHandle {
                namespace: spec::pod_namespace(&pod),
                name: spec::pod_name(&pod),
                tx,
                wake: wake.clone(),
                cancel: cancel.clone(),
                running: running.clone(),
            },
        );
        let worker = worker::PodWorker::new(self.clone(), uid, rx, wake, cancel, running);
        tokio::spawn(worker.run());
    }

    fn pod_gone(&self, uid: &str) {
        if let Some(handle) = self.pods_lock().get(uid) {
            handle.tx.send_replace(PodUpdate::Gone);
        }
    }

    /// Called by a worker when it is done with its pod.
    pub(crate) fn worker_finished(&self, uid: &str) {
        self.pods_lock().remove(uid);
    }

    /// Wakes pod workers whose containers changed state since the last relist (PLEG).
    async fn relist_loop(self: Arc<Self>, cancel: CancellationToken) {
        let mut last: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.timing.relist_interval) => {}
            }
            let Ok(containers) = self.runtime.list_containers(None).await else {
                continue;
            };
            let mut now: HashMap<String, Vec<(String, i32)>> = HashMap::new();
            for c in containers {
                if let Some(uid) = c.labels.get(spec::LABEL_POD_UID) {
                    now.entry(uid.clone())
                        .or_default()
                        .push((c.id.clone(), c.state));
                }
            }
            for v in now.values_mut() {
                v.sort();
            }
            let pods = self.pods_lock();
            for (uid, handle) in pods.iter() {
                if now.get(uid) != last.get(uid) {
                    handle.wake.notify_one();
                }
            }
            drop(pods);
            last = now;
        }
    }

    /// Stops and removes CRI sandboxes whose pod is not bound to this node any more (deleted
    /// while the agent was down, or force-deleted).
    async fn cleanup_orphans(&self) {
        let sandboxes = match self.runtime.list_pod_sandbox(None).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "listing sandboxes for cleanup");
                return;
            }
        };
        let known: HashSet<String> = self.pods_lock().keys().cloned().collect();
        let mut orphans: HashSet<String> = HashSet::new();
        for s in &sandboxes {
            if let Some(uid) = s.labels.get(spec::LABEL_POD_UID) {
                if s.labels.contains_key(spec::LABEL_MANAGED) && !known.contains(uid) {
                    orphans.insert(uid.clone());
                }
            }
        }
        for uid in orphans {
            tracing::info!(pod_uid = %uid, "cleaning up the containers of a pod that is gone from the api");
            worker::kill_pod_by_uid(self, &uid, None, self.timing.orphan_grace).await;
            if let Err(e) = self.volumes.teardown(&uid).await {
                tracing::warn!(pod_uid = %uid, error = %e, "tearing down volumes of a removed pod");
            }
        }
    }

    fn pod_uid_of(&self, namespace: &str, pod: &str) -> Result<String, KubeletError> {
        self.pods_lock()
            .iter()
            .find(|(_, h)| h.namespace == namespace && h.name == pod)
            .map(|(uid, _)| uid.clone())
            .ok_or_else(|| {
                KubeletError::NotFound(format!("pod {namespace}/{pod} not found on this node"))
            })
    }

    /// The containers of one pod container name, newest attempt first.
    async fn container_instances(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(String, Vec<proto::Container>), KubeletError> {
        let uid = self.pod_uid_of(namespace, pod)?;
        let filter = proto::ContainerFilter {
            label_selector: [
                (spec::LABEL_POD_UID.to_string(), uid.clone()),
                (
                    spec::LABEL_CONTAINER_NAME.to_string(),
                    container.to_string(),
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let mut list = self.runtime.list_containers(Some(filter)).await?;
        list.sort_by_key(|c| std::cmp::Reverse(worker::attempt_of(c)));
        if list.is_empty() {
            return Err(KubeletError::NotFound(format!(
                "container {container:?} in pod {namespace}/{pod} not found"
            )));
        }
        Ok((uid, list))
    }

    /// The log file of a container (`previous`: the instance before the current one).
    pub async fn container_log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, KubeletError> {
        let (uid, list) = self.container_instances(namespace, pod, container).await?;
        let chosen = if previous { list.get(1) } else { list.first() };
        let Some(c) = chosen else {
            return Err(KubeletError::NotFound(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            )));
        };
        Ok(
            mini_logs::pod_log_dir(&self.config.logs_dir, namespace, pod, &uid).join(
                mini_logs::container_log_relpath(container, worker::attempt_of(c)),
            ),
        )
    }

    /// Whether the current instance of the container is running (`logs -f` stops when not).
    pub async fn container_running(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<bool, KubeletError> {
        let (_, list) = self.container_instances(namespace, pod, container).await?;
        Ok(list
            .first()
            .is_some_and(|c| c.state == proto::ContainerState::ContainerRunning as i32))
    }

    async fn running_container_id(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, KubeletError> {
        let (_, list) = self.container_instances(namespace, pod, container).await?;
        match list.first() {
            Some(c) if c.state == proto::ContainerState::ContainerRunning as i32 => {
                Ok(c.id.clone())
            }
            _ => Err(KubeletError::BadRequest(format!(
                "container {container} is not running in pod {namespace}/{pod}"
            ))),
        }
    }

    /// The image a pod's container was created from, as its spec names it (normalised:
    /// `busybox` -> `docker.io/library/busybox:latest`); `None` if the pod or container is not known.
    fn spec_image(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let pods = self.pods_lock();
        let handle = pods
            .values()
            .find(|h| h.namespace == namespace && h.name == pod)?;
        let PodUpdate::Present(pod) = &*handle.tx.borrow() else {
            return None;
        };
        let spec = pod.spec.as_ref()?;
        let image = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == container)
            .and_then(|c| c.image.clone())
            .or_else(|| {
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .find(|c| c.name == container)
                    .and_then(|c| c.image.clone())
            })?;
        Some(mini_cri::normalize_image_ref(&image))
    }

    /// Commits the current instance of a container (running or exited): its filesystem changes
    /// against its image as one gzip layer from the runtime, with the image reference of the pod
    /// spec and the image's digest.
    pub async fn commit_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<mini_cri::ContainerLayer, KubeletError> {
        let (_, list) = self.container_instances(namespace, pod, container).await?;
        let Some(current) = list.first() else {
            return Err(KubeletError::NotFound(format!(
                "container {container:?} in pod {namespace}/{pod} not found"
            )));
        };
        let image = self
            .spec_image(namespace, pod, container)
            .unwrap_or_default();
        Ok(self.runtime.container_layer(&current.id, &image).await?)
    }

    /// Prepares a streaming exec in the runtime; returns its streaming URL.
    #[allow(clippy::too_many_arguments)]
    pub async fn exec_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<String, KubeletError> {
        let container_id = self.running_container_id(namespace, pod, container).await?;
        Ok(self
            .runtime
            .exec(proto::ExecRequest {
                container_id,
                cmd: command,
                tty,
                stdin,
                stdout,
                // With a tty, stderr is merged into stdout (CRI refuses both).
                stderr: stderr && !tty,
            })
            .await?)
    }

    /// Prepares a streaming attach in the runtime; returns its streaming URL.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<String, KubeletError> {
        let container_id = self.running_container_id(namespace, pod, container).await?;
        Ok(self
            .runtime
            .attach(proto::AttachRequest {
                container_id,
                stdin,
                tty,
                stdout,
                stderr: stderr && !tty,
            })
            .await?)
    }

    /// The pod's sandbox, IP and network namespace.
    pub async fn pod_network(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<PodNetwork, KubeletError> {
        let uid = self.pod_uid_of(namespace, pod)?;
        let sandbox = worker::ready_sandbox(self.runtime.as_ref(), &uid)
            .await?
            .ok_or_else(|| {
                KubeletError::NotFound(format!("pod {namespace}/{pod} has no running sandbox"))
            })?;
        let status = self.runtime.pod_sandbox_status(&sandbox.id, true).await?;
        let ip = status
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .and_then(|n| n.ip.parse().ok());
        Ok(PodNetwork {
            sandbox_id: sandbox.id,
            ip,
            netns_path: netns_from_info(&status.info),
        })
    }

    /// The number of pods with a running sandbox.
    pub fn running_pod_count(&self) -> usize {
        self.pods_lock()
            .values()
            .filter(|h| h.running.load(Ordering::SeqCst))
            .count()
    }

    /// Stops every pod's containers (preStop hooks, grace periods) and sandboxes, for
    /// `--drain-on-stop`. Pod workers stop first so nothing restarts.
    pub async fn stop_all_pods(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let pods: Vec<(String, Option<Arc<Pod>>)> = self
            .pods_lock()
            .iter()
            .map(|(uid, h)| {
                h.cancel.cancel();
                let pod = match &*h.tx.borrow() {
                    PodUpdate::Present(p) => Some(p.clone()),
                    PodUpdate::Gone => None,
                };
                (uid.clone(), pod)
            })
            .collect();
        let mut uids: HashSet<String> = HashSet::new();
        let mut tasks = Vec::new();
        for (uid, pod) in pods {
            uids.insert(uid.clone());
            let grace = pod
                .as_deref()
                .map(worker::grace_period)
                .unwrap_or(self.timing.orphan_grace);
            tasks.push(async move {
                worker::kill_pod_by_uid(self, &uid, pod.as_deref(), grace).await;
            });
        }
        futures::future::join_all(tasks).await;
        // Sandboxes of pods this kubelet never saw (e.g. the API was unreachable).
        if let Ok(sandboxes) = self.runtime.list_pod_sandbox(None).await {
            for s in sandboxes {
                if let Some(uid) = s.labels.get(spec::LABEL_POD_UID) {
                    if s.labels.contains_key(spec::LABEL_MANAGED) && uids.insert(uid.clone()) {
                        worker::kill_pod_by_uid(self, uid, None, self.timing.orphan_grace).await;
                    }
                }
            }
        }
    }
}

/// containerd's verbose sandbox info: `info` is JSON with `runtimeSpec.linux.namespaces`.
fn netns_from_info(info: &HashMap<String, String>) -> Option<PathBuf> {
    let raw = info.get("info")?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    v.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))
        .and_then(|ns| ns.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests;
