//! The per-pod worker: a level-triggered sync of one pod onto CRI (sandbox, images, init
//! containers in order, app containers, restarts with back-off, probes), status reporting,
//! and termination (preStop, grace, sandbox removal, volume teardown, API delete).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, HostIP, ObjectReference, Pod, PodIP, PodStatus,
};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use mini_cri::{proto, Runtime};
use mini_runtime::EventType;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::probe::{self, ProbeKind, ProbeState, ProbeTarget, ProbeTiming};
use crate::spec::{self, pod_name, pod_namespace};
use crate::{env, status, Kubelet, PodUpdate};

pub(crate) fn attempt_of(c: &proto::Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

fn uid_selector(uid: &str) -> HashMap<String, String> {
    [(spec::LABEL_POD_UID.to_string(), uid.to_string())]
        .into_iter()
        .collect()
}

/// The newest ready sandbox of a pod.
pub(crate) async fn ready_sandbox(
    runtime: &dyn Runtime,
    uid: &str,
) -> Result<Option<proto::PodSandbox>, mini_cri::CriError> {
    let mut list = runtime
        .list_pod_sandbox(Some(proto::PodSandboxFilter {
            label_selector: uid_selector(uid),
            ..Default::default()
        }))
        .await?;
    list.retain(|s| s.state == proto::PodSandboxState::SandboxReady as i32);
    list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(list.into_iter().next())
}

/// The grace period for stopping a pod: the deletion's, else the spec's (default 30 s).
pub(crate) fn grace_period(pod: &Pod) -> Duration {
    let spec_grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let grace = match pod.metadata.deletion_grace_period_seconds {
        Some(d) => d.min(spec_grace),
        None => spec_grace,
    };
    Duration::from_secs(grace.max(0) as u64)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn pod_ref(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

fn container_path(pod: &Pod, name: &str) -> String {
    let is_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| v.iter().any(|c| c.name == name));
    if is_init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

/// Records an Event in the background: an Event is never worth blocking a sync for.
pub(crate) fn event(
    kl: &Kubelet,
    pod: &Pod,
    container: Option<&str>,
    type_: EventType,
    reason: &str,
    message: String,
) {
    let recorder = kl.events.clone();
    let regarding = pod_ref(pod, container.map(|c| container_path(pod, c)));
    let reason = reason.to_string();
    tokio::spawn(async move {
        if let Err(e) = recorder.record(&regarding, type_, &reason, &message).await {
            tracing::debug!(error = %e, reason, "recording event");
        }
    });
}

/// Runs a container's preStop hook (exec or httpGet), bounded by `grace`.
async fn run_pre_stop(
    kl: &Kubelet,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    pod_ip: Option<IpAddr>,
    grace: Duration,
) {
    let Some(handler) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    else {
        return;
    };
    let target = ProbeTarget {
        runtime: kl.runtime.clone(),
        container_id: container_id.to_string(),
        container: container.clone(),
        pod_ip,
    };
    let as_probe = k8s_openapi::api::core::v1::Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Default::default()
    };
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(grace)).await;
        return;
    }
    if let probe::Outcome::Failure(message) =
        probe::run_once(&target, &as_probe, grace.max(Duration::from_secs(1))).await
    {
        event(
            kl,
            pod,
            Some(&container.name),
            EventType::Warning,
            "FailedPreStopHook",
            format!("PreStopHook failed: {message}"),
        );
    }
}

/// Stops every container (preStop first) and sandbox of a pod, then removes them.
pub(crate) async fn kill_pod_by_uid(kl: &Kubelet, uid: &str, pod: Option<&Pod>, grace: Duration) {
    let runtime = kl.runtime.as_ref();
    let containers = runtime
        .list_containers(Some(proto::ContainerFilter {
            label_selector: uid_selector(uid),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    let sandboxes = runtime
        .list_pod_sandbox(Some(proto::PodSandboxFilter {
            label_selector: uid_selector(uid),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    let mut pod_ip = None;
    for s in &sandboxes {
        if let Ok(st) = runtime.pod_sandbox_status(&s.id, false).await {
            pod_ip = pod_ip.or_else(|| {
                st.status
                    .and_then(|s| s.network)
                    .and_then(|n| n.ip.parse().ok())
            });
        }
    }
    let running: Vec<&proto::Container> = containers
        .iter()
        .filter(|c| c.state == proto::ContainerState::ContainerRunning as i32)
        .collect();
    let stops = running.iter().map(|c| async move {
        let name = c
            .labels
            .get(spec::LABEL_CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        let spec_container = pod.and_then(|p| p.spec.as_ref()).and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|x| x.name == name)
                .cloned()
        });
        let started = Instant::now();
        if let (Some(p), Some(sc)) = (pod, spec_container.as_ref()) {
            event(
                kl,
                p,
                Some(&name),
                EventType::Normal,
                "Killing",
                format!("Stopping container {name}"),
            );
            run_pre_stop(kl, p, sc, &c.id, pod_ip, grace).await;
        }
        let left = grace.saturating_sub(started.elapsed());
        if let Err(e) = runtime.stop_container(&c.id, left.as_secs() as i64).await {
            tracing::warn!(container = %c.id, error = %e, "stopping container");
        }
    });
    futures::future::join_all(stops).await;
    for s in &sandboxes {
        if let Err(e) = runtime.stop_pod_sandbox(&s.id).await {
            tracing::warn!(sandbox = %s.id, error = %e, "stopping sandbox");
        }
    }
    for c in &containers {
        let _ = runtime.remove_container(&c.id).await;
    }
    for s in &sandboxes {
        if let Err(e) = runtime.remove_pod_sandbox(&s.id).await {
            tracing::warn!(sandbox = %s.id, error = %e, "removing sandbox");
        }
    }
}

/// Back-off state of one container or image.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    /// When the thing last failed (wall clock nanos).
    since: i64,
}

/// One CRI container instance with its full status.
#[derive(Debug, Clone)]
struct Instance {
    attempt: u32,
    status: proto::ContainerStatus,
}

impl Instance {
    fn state(&self) -> proto::ContainerState {
        proto::ContainerState::try_from(self.status.state)
            .unwrap_or(proto::ContainerState::ContainerUnknown)
    }
    fn id(&self) -> &str {
        &self.status.id
    }
}

/// What CRI holds for the pod right now.
#[derive(Debug, Default)]
struct Observed {
    sandbox: Option<proto::PodSandbox>,
    stale_sandboxes: Vec<proto::PodSandbox>,
    max_sandbox_attempt: Option<u32>,
    /// Per container name, newest attempt first.
    containers: HashMap<String, Vec<Instance>>,
}

impl Observed {
    fn latest(&self, name: &str) -> Option<&Instance> {
        self.containers.get(name).and_then(|v| v.first())
    }
}

struct ProbeHandle {
    state: Arc<Mutex<ProbeState>>,
    cancel: CancellationToken,
}

pub(crate) struct PodWorker {
    kl: Arc<Kubelet>,
    uid: String,
    rx: watch::Receiver<PodUpdate>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    running: Arc<AtomicBool>,
    last_pod: Option<Arc<Pod>>,
    crash_backoff: HashMap<String, Backoff>,
    image_backoff: HashMap<String, Backoff>,
    /// Why a container has no running instance (reason, message).
    waiting: HashMap<String, (String, String)>,
    probes: HashMap<(String, ProbeKind), ProbeHandle>,
    /// Readiness of running containers from before this worker started (agent restart).
    initial_ready: HashMap<String, bool>,
    pod_ips: Option<(String, Vec<String>)>,
    volumes_at: Option<(String, Instant)>,
    mounts: HashMap<String, Vec<proto::Mount>>,
    next_wake: Option<Duration>,
    last_sent: Option<PodStatus>,
    /// The pod was told it waits for its pool address (told once).
    told_pool_wait: bool,
}

enum Step {
    Continue,
    Done,
}

impl PodWorker {
    pub(crate) fn new(
        kl: Arc<Kubelet>,
        uid: String,
        rx: watch::Receiver<PodUpdate>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
        running: Arc<AtomicBool>,
    ) -> PodWorker {
        PodWorker {
            kl,
            uid,
            rx,
            wake,
            cancel,
            running,
            last_pod: None,
            crash_backoff: HashMap::new(),
            image_backoff: HashMap::new(),
            waiting: HashMap::new(),
            probes: HashMap::new(),
            initial_ready: HashMap::new(),
            pod_ips: None,
            volumes_at: None,
            mounts: HashMap::new(),
            next_wake: None,
            last_sent: None,
            told_pool_wait: false,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            let update = self.rx.borrow_and_update().clone();
            let step = match update {
                PodUpdate::Present(pod) => {
                    if self.last_pod.is_none() {
                        self.remember_initial_readiness(&pod);
                    }
                    self.last_pod = Some(pod.clone());
                    self.sync(&pod).await
                }
                PodUpdate::Gone => {
                    self.terminate(false).await;
                    Step::Done
                }
            };
            if matches!(step, Step::Done) {
                break;
            }
            let sleep = self
                .next_wake
                .take()
                .unwrap_or(self.kl.timing.resync_interval)
                .min(self.kl.timing.resync_interval);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                changed = self.rx.changed() => if changed.is_err() { break },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        for (_, p) in self.probes.drain() {
            p.cancel.cancel();
        }
        if !self.cancel.is_cancelled() {
            self.kl.worker_finished(&self.uid);
        }
    }

    fn remember_initial_readiness(&mut self, pod: &Pod) {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone());
        for cs in statuses.into_iter().flatten() {
            if let Some(id) = cs
                .container_id
                .as_deref()
                .and_then(|i| i.strip_prefix("containerd://"))
            {
                self.initial_ready.insert(id.to_string(), cs.ready);
            }
        }
    }

    fn wake_after(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(10));
        self.next_wake = Some(self.next_wake.map_or(d, |w| w.min(d)));
    }

    async fn observe(&mut self) -> Result<Observed, mini_cri::CriError> {
        let runtime = self.kl.runtime.clone();
        let mut sandboxes = runtime
            .list_pod_sandbox(Some(proto::PodSandboxFilter {
                label_selector: uid_selector(&self.uid),
                ..Default::default()
            }))
            .await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let mut obs = Observed {
            max_sandbox_attempt: sandboxes
                .iter()
                .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt))
                .max(),
            ..Default::default()
        };
        for s in sandboxes {
            if obs.sandbox.is_none() && s.state == proto::PodSandboxState::SandboxReady as i32 {
                obs.sandbox = Some(s);
            } else {
                obs.stale_sandboxes.push(s);
            }
        }
        let containers = runtime
            .list_containers(Some(proto::ContainerFilter {
                label_selector: uid_selector(&self.uid),
                ..Default::default()
            }))
            .await?;
        for c in containers {
            let Some(name) = c.labels.get(spec::LABEL_CONTAINER_NAME).cloned() else {
                continue;
            };
            let status = match runtime.container_status(&c.id, false).await {
                Ok(r) => match r.status {
                    Some(s) => s,
                    None => continue,
                },
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            obs.containers.entry(name).or_default().push(Instance {
                attempt: attempt_of(&c),
                status,
            });
        }
        for v in obs.containers.values_mut() {
            v.sort_by_key(|i| std::cmp::Reverse(i.attempt));
        }
        Ok(obs)
    }

    async fn sync(&mut self, pod: &Arc<Pod>) -> Step {
        if pod.metadata.deletion_timestamp.is_some() {
            self.terminate(true).await;
            return Step::Done;
        }
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e, "reading pod state from the runtime");
                self.wake_after(Duration::from_secs(1));
                return Step::Continue;
            }
        };
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        let obs = if terminal {
            self.stop_terminal_pod(&obs).await;
            obs
        } else {
            match self.drive(pod, obs).await {
                Some(o) => o,
                None => return Step::Continue,
            }
        };
        self.running
            .store(obs.sandbox.is_some() && !terminal, Ordering::SeqCst);
        self.manage_probes(pod, &obs);
        self.report_status(pod, &obs).await;
        Step::Continue
    }

    /// A Succeeded/Failed pod keeps its exited containers (for logs) but not its sandbox.
    async fn stop_terminal_pod(&mut self, obs: &Observed) {
        for (_, p) in self.probes.drain() {
            p.cancel.cancel();
        }
        if let Some(s) = &obs.sandbox {
            for v in obs.containers.values() {
                for i in v
                    .iter()
                    .filter(|i| i.state() == proto::ContainerState::ContainerRunning)
                {
                    let _ = self.kl.runtime.stop_container(i.id(), 0).await;
                }
            }
            if let Err(e) = self.kl.runtime.stop_pod_sandbox(&s.id).await {
                tracing::warn!(sandbox = %s.id, error = %e, "stopping the sandbox of a finished pod");
            }
        }
    }

    /// Makes CRI match the pod spec one step at a time; returns the state to report.
    async fn drive(&mut self, pod: &Arc<Pod>, mut obs: Observed) -> Option<Observed> {
        let Some(sandbox) = self.ensure_sandbox(pod, &obs).await else {
            return Some(obs);
        };
        if obs.sandbox.as_ref().map(|s| &s.id) != Some(&sandbox.id) {
            obs.stale_sandboxes.extend(obs.sandbox.take());
            obs.sandbox = Some(sandbox.clone());
        }
        if let Err(message) = self.ensure_volumes(pod, &sandbox.id).await {
            let names: Vec<String> = all_containers(pod).map(|c| c.name.clone()).collect();
            for n in names {
                self.waiting
                    .insert(n, ("ContainerCreating".into(), message.clone()));
            }
            event(
                &self.kl,
                pod,
                None,
                EventType::Warning,
                "FailedMount",
                message,
            );
            self.wake_after(Duration::from_secs(2));
            return Some(obs);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut changed = false;
        // Init containers, in order.
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            let latest = obs.latest(&c.name).cloned();
            match latest.as_ref().map(|i| (i.state(), i.status.exit_code)) {
                Some((proto::ContainerState::ContainerExited, 0)) => continue,
                Some((proto::ContainerState::ContainerRunning, _)) => {
                    init_done = false;
                    break;
                }
                Some((proto::ContainerState::ContainerExited, _)) if policy == "Never" => {
                    init_done = false;
                    break;
                }
                _ => {
                    changed |= self
                        .start_or_backoff(pod, c, latest.as_ref(), &sandbox, &obs)
                        .await;
                    init_done = false;
                    break;
                }
            }
        }
        if init_done {
            for c in &spec.containers {
                let latest = obs.latest(&c.name).cloned();
                let restart = match latest.as_ref() {
                    None => true,
                    Some(i) => match i.state() {
                        proto::ContainerState::ContainerRunning => {
                            if let Some((kind, message)) = self.failed_probe(i.id()) {
                                self.kill_for_probe(pod, c, i, kind, &message).await;
                                changed = true;
                                // the next pass sees the killed instance as exited and applies
                                // the restart policy and crash back-off to it
                                self.wake_after(Duration::from_millis(100));
                                false
                            } else {
                                false
                            }
                        }
                        proto::ContainerState::ContainerExited => match policy.as_str() {
                            "Always" => true,
                            "OnFailure" => i.status.exit_code != 0,
                            _ => false,
                        },
                        _ => true,
                    },
                };
                if restart {
                    changed |= self
                        .start_or_backoff(pod, c, latest.as_ref(), &sandbox, &obs)
                        .await;
                }
            }
        }
        if changed {
            match self.observe().await {
                Ok(o) => Some(o),
                Err(_) => Some(obs),
            }
        } else {
            Some(obs)
        }
    }

    async fn ensure_sandbox(&mut self, pod: &Pod, obs: &Observed) -> Option<proto::PodSandbox> {
        if let Some(s) = &obs.sandbox {
            return Some(s.clone());
        }
        // A dead sandbox: its containers go with it, the pod starts over in a new one.
        for s in &obs.stale_sandboxes {
            for v in obs.containers.values() {
                for i in v
                    .iter()
                    .filter(|i| i.state() == proto::ContainerState::ContainerRunning)
                {
                    let _ = self.kl.runtime.stop_container(i.id(), 0).await;
                }
            }
            let _ = self.kl.runtime.stop_pod_sandbox(&s.id).await;
        }
        if let Err(message) = self.pinned_address(pod) {
            if !self.told_pool_wait {
                self.told_pool_wait = true;
                event(
                    &self.kl,
                    pod,
                    None,
                    EventType::Normal,
                    "WaitingForPoolAddress",
                    message.clone(),
                );
            }
            for c in all_containers(pod) {
                self.waiting.insert(
                    c.name.clone(),
                    ("ContainerCreating".into(), message.clone()),
                );
            }
            self.wake_after(Duration::from_secs(2));
            return None;
        }
        let attempt = obs.max_sandbox_attempt.map_or(0, |a| a + 1);
        let log_dir = mini_logs::pod_log_dir(
            &self.kl.config.logs_dir,
            &pod_namespace(pod),
            &pod_name(pod),
            &self.uid,
        );
        if let Err(e) = tokio::fs::create_dir_all(&log_dir).await {
            tracing::warn!(dir = %log_dir.display(), error = %e, "creating the pod log directory");
        }
        let node_hostname = self
            .kl
            .host
            .hostname()
            .unwrap_or_else(|_| self.kl.config.node_name.clone());
        let resolv = spec::read_resolv_conf(&self.kl.config.resolv_conf);
        let config = spec::sandbox_config(pod, &self.kl.config, &node_hostname, &resolv, attempt);
        match self
            .kl
            .runtime
            .run_pod_sandbox(proto::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        {
            Ok(id) => {
                self.pod_ips = None;
                for s in &obs.stale_sandboxes {
                    let _ = self.kl.runtime.remove_pod_sandbox(&s.id).await;
                }
                Some(proto::PodSandbox {
                    id,
                    created_at: now_nanos(),
                    state: proto::PodSandboxState::SandboxReady as i32,
                    ..Default::default()
                })
            }
            Err(e) => {
                let message = format!("Failed to create pod sandbox: {e}");
                event(
                    &self.kl,
                    pod,
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    message.clone(),
                );
                for c in all_containers(pod) {
                    self.waiting.insert(
                        c.name.clone(),
                        ("ContainerCreating".into(), message.clone()),
                    );
                }
                self.wake_after(Duration::from_secs(2));
                None
            }
        }
    }

    /// A pod asking for a pool address (`ipam.mini.dev/pool` or `/address`) gets its sandbox
    /// only once the allocator annotated it `ipam.mini.dev/allocated`; the address is then left
    /// for the CNI IPAM (`mini_ippool::pinned`). Other pods' stale requests are removed.
    fn pinned_address(&self, pod: &Pod) -> Result<(), String> {
        let Some(dir) = &self.kl.config.pinned_ip_dir else {
            return Ok(());
        };
        let (namespace, name) = (pod_namespace(pod), pod_name(pod));
        let annotations = pod.metadata.annotations.as_ref();
        if !mini_ippool::wants_pool_address(annotations) {
            if let Err(e) = mini_ippool::pinned::remove_request(dir, &namespace, &name) {
                tracing::warn!(error = %e, "removing a stale pool address request");
            }
            return Ok(());
        }
        let allocated = annotations
            .and_then(|a| a.get(mini_ippool::ALLOCATED_ANNOTATION))
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .ok_or_else(|| {
                format!(
                    "waiting for the IP pool allocator to assign an address ({} not set yet)",
                    mini_ippool::ALLOCATED_ANNOTATION
                )
            })?;
        let request = mini_ippool::pinned::PinnedRequest {
            address: allocated,
            uid: self.uid.clone(),
        };
        mini_ippool::pinned::write_request(dir, &namespace, &name, &request)
            .map_err(|e| format!("handing the pool address {allocated} to the network plugin: {e}"))
    }

    async fn ensure_volumes(&mut self, pod: &Pod, sandbox_id: &str) -> Result<(), String> {
        let fresh = self.volumes_at.as_ref().is_some_and(|(id, at)| {
            id == sandbox_id && at.elapsed() < self.kl.timing.volume_refresh
        });
        if fresh {
            return Ok(());
        }
        let mounts = self.kl.volumes.setup(pod).await?;
        self.mounts = mounts;
        self.volumes_at = Some((sandbox_id.to_string(), Instant::now()));
        Ok(())
    }

    /// Pod IPs from the sandbox (cached per sandbox); the node IP with host networking.
    async fn pod_ips(&mut self, sandbox_id: &str, pod: &Pod) -> Vec<String> {
        if let Some((id, ips)) = &self.pod_ips {
            if id == sandbox_id {
                return ips.clone();
            }
        }
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ips = if host_network {
            vec![self.kl.config.node_ip.to_string()]
        } else {
            match self.kl.runtime.pod_sandbox_status(sandbox_id, false).await {
                Ok(r) => r
                    .status
                    .and_then(|s| s.network)
                    .map(|n| {
                        std::iter::once(n.ip)
                            .chain(n.additional_ips.into_iter().map(|i| i.ip))
                            .filter(|i| !i.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => return Vec::new(),
            }
        };
        self.pod_ips = Some((sandbox_id.to_string(), ips.clone()));
        ips
    }

    fn failed_probe(&self, container_id: &str) -> Option<(ProbeKind, String)> {
        for kind in [ProbeKind::Startup, ProbeKind::Liveness] {
            if let Some(h) = self.probes.get(&(container_id.to_string(), kind)) {
                let s = h.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.result == Some(false) {
                    return Some((kind, s.last_failure.clone()));
                }
            }
        }
        None
    }

    async fn kill_for_probe(
        &mut self,
        pod: &Pod,
        c: &Container,
        i: &Instance,
        kind: ProbeKind,
        failure: &str,
    ) {
        tracing::info!(container = %c.name, probe = kind.name(), failure, "probe failed, killing container");
        let message = format!(
            "Container {} failed {} probe, will be restarted",
            c.name,
            kind.name().to_lowercase()
        );
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Normal,
            "Killing",
            message,
        );
        let grace = grace_period(pod);
        run_pre_stop(&self.kl, pod, c, i.id(), None, grace).await;
        if let Err(e) = self
            .kl
            .runtime
            .stop_container(i.id(), grace.as_secs() as i64)
            .await
        {
            tracing::warn!(container = %i.id(), error = %e, "stopping a container that failed its probe");
        }
        for kind in [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ] {
            if let Some(h) = self.probes.remove(&(i.id().to_string(), kind)) {
                h.cancel.cancel();
            }
        }
    }

    /// Starts the next instance of `c` unless it is in back-off; true when CRI changed.
    async fn start_or_backoff(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        latest: Option<&Instance>,
        sandbox: &proto::PodSandbox,
        obs: &Observed,
    ) -> bool {
        let timing = self.kl.timing.clone();
        // Created but never started (the agent died in between): start it.
        if let Some(i) = latest.filter(|i| i.state() == proto::ContainerState::ContainerCreated) {
            if i.status.labels.is_empty()
                || obs.sandbox.as_ref().is_some_and(|s| s.id == sandbox.id)
            {
                return match self.kl.runtime.start_container(i.id()).await {
                    Ok(()) => {
                        self.waiting.remove(&c.name);
                        true
                    }
                    Err(e) => {
                        let _ = self.kl.runtime.remove_container(i.id()).await;
                        self.waiting
                            .insert(c.name.clone(), ("RunContainerError".into(), e.to_string()));
                        true
                    }
                };
            }
        }
        let exited = latest.filter(|i| i.state() == proto::ContainerState::ContainerExited);
        if let Some(i) = exited {
            let ran =
                Duration::from_nanos((i.status.finished_at - i.status.started_at).max(0) as u64);
            if ran >= timing.crash_backoff_reset {
                self.crash_backoff.remove(&c.name);
            }
            if let Some(b) = self.crash_backoff.get(&c.name).copied() {
                let since = Duration::from_nanos(
                    (now_nanos() - i.status.finished_at.max(b.since)).max(0) as u64,
                );
                if since < b.delay {
                    let message = format!(
                        "back-off {:?} restarting failed container={} pod={}_{}({})",
                        b.delay,
                        c.name,
                        pod_name(pod),
                        pod_namespace(pod),
                        self.uid
                    );
                    if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        event(
                            &self.kl,
                            pod,
                            Some(&c.name),
                            EventType::Warning,
                            "BackOff",
                            "Back-off restarting failed container".into(),
                        );
                    }
                    self.waiting
                        .insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
                    self.wake_after(b.delay - since);
                    return false;
                }
            }
            let next = self
                .crash_backoff
                .get(&c.name)
                .map_or(timing.crash_backoff_initial, |b| {
                    (b.delay * 2).min(timing.crash_backoff_max)
                });
            self.crash_backoff.insert(
                c.name.clone(),
                Backoff {
                    delay: next,
                    since: now_nanos(),
                },
            );
        }
        let attempt = latest.map_or(0, |i| i.attempt + 1);
        match self.start_container(pod, c, attempt, sandbox).await {
            Ok(()) => {
                self.waiting.remove(&c.name);
                // Keep the previous instance (for `logs -p`), remove older ones.
                if let Some(v) = obs.containers.get(&c.name) {
                    for old in v.iter().skip(1) {
                        let _ = self.kl.runtime.remove_container(old.id()).await;
                    }
                }
                true
            }
            Err((reason, message)) => {
                self.waiting.insert(c.name.clone(), (reason, message));
                self.wake_after(Duration::from_secs(1));
                true
            }
        }
    }

    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Result<String, (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let spec = proto::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tag = image.rsplit('/').next().unwrap_or("");
            if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let present = match self.kl.runtime.image_status(&spec).await {
            Ok(p) => p,
            Err(e) => {
                return Err((
                    "ErrImagePull".into(),
                    format!("checking image {image:?}: {e}"),
                ))
            }
        };
        match (policy.as_str(), present) {
            ("Never", Some(img)) | ("IfNotPresent", Some(img)) => {
                return Ok(if img.id.is_empty() { image } else { img.id });
            }
            ("Never", None) => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                return Err(("ErrImageNeverPull".into(), message));
            }
            _ => {}
        }
        let timing = self.kl.timing.clone();
        if let Some(b) = self.image_backoff.get(&image).copied() {
            let since = Duration::from_nanos((now_nanos() - b.since).max(0) as u64);
            if since < b.delay {
                let message = format!("Back-off pulling image {image:?}");
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "BackOff",
                    message.clone(),
                );
                self.wake_after(b.delay - since);
                return Err(("ImagePullBackOff".into(), message));
            }
        }
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Normal,
            "Pulling",
            format!("Pulling image {image:?}"),
        );
        let started = Instant::now();
        let pulled = tokio::time::timeout(
            timing.image_pull_timeout,
            self.kl.runtime.pull_image(&spec, None),
        )
        .await;
        let error = match pulled {
            Ok(Ok(image_ref)) => {
                self.image_backoff.remove(&image);
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                return Ok(if image_ref.is_empty() {
                    image
                } else {
                    image_ref
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("pull timed out after {:?}", timing.image_pull_timeout),
        };
        let next = self
            .image_backoff
            .get(&image)
            .map_or(timing.image_backoff_initial, |b| {
                (b.delay * 2).min(timing.image_backoff_max)
            });
        self.image_backoff.insert(
            image.clone(),
            Backoff {
                delay: next,
                since: now_nanos(),
            },
        );
        self.wake_after(next);
        let message = format!("Failed to pull image {image:?}: {error}");
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Warning,
            "Failed",
            message.clone(),
        );
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Warning,
            "Failed",
            "Error: ErrImagePull".into(),
        );
        Err(("ErrImagePull".into(), message))
    }

    async fn start_container(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        attempt: u32,
        sandbox: &proto::PodSandbox,
    ) -> Result<(), (String, String)> {
        let image_ref = self.ensure_image(pod, c).await?;
        if let Some(message) = spec::run_as_non_root_violation(pod, c) {
            return Err(("CreateContainerConfigError".into(), message));
        }
        // The pod as the downward API sees it: IPs from the sandbox.
        let ips = self.pod_ips(&sandbox.id, pod).await;
        let mut view = (**pod).clone();
        let st = view.status.get_or_insert_with(Default::default);
        st.pod_ip = ips.first().cloned();
        st.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
        st.host_ip = Some(self.kl.config.node_ip.to_string());
        st.host_ips = Some(vec![HostIP {
            ip: self.kl.config.node_ip.to_string(),
        }]);
        let memory = self
            .kl
            .host
            .memory()
            .map(|m| m.total_bytes as f64)
            .unwrap_or(0.0);
        let sources = env::EnvSources {
            client: &self.kl.client,
            allocatable: env::NodeAllocatable {
                cpu_cores: self.kl.host.cpu_count() as f64,
                memory_bytes: memory,
            },
        };
        let envs = match env::container_env(&sources, &view, c).await {
            Ok(e) => e,
            Err(e) => {
                let message = e.to_string();
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                return Err(("CreateContainerConfigError".into(), message));
            }
        };
        let mounts = self.mounts.get(&c.name).cloned().unwrap_or_default();
        let mut labels: HashMap<String, String> = [
            (spec::LABEL_POD_NAME, pod_name(pod)),
            (spec::LABEL_POD_NAMESPACE, pod_namespace(pod)),
            (spec::LABEL_POD_UID, self.uid.clone()),
            (spec::LABEL_CONTAINER_NAME, c.name.clone()),
            (spec::LABEL_MANAGED, "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        labels.retain(|_, v| !v.is_empty());
        let termination_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let annotations: HashMap<String, String> = [
            (
                spec::ANNOTATION_RESTART_COUNT.to_string(),
                attempt.to_string(),
            ),
            (
                spec::ANNOTATION_TERMINATION_MESSAGE_PATH.to_string(),
                termination_path,
            ),
        ]
        .into_iter()
        .collect();
        let config = proto::ContainerConfig {
            metadata: Some(proto::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(proto::ImageSpec {
                image: image_ref,
                user_specified_image: c.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: env::expand_all(&c.command.clone().unwrap_or_default(), &envs),
            args: env::expand_all(&c.args.clone().unwrap_or_default(), &envs),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: envs
                .into_iter()
                .map(|(key, value)| proto::KeyValue { key, value })
                .collect(),
            mounts,
            labels,
            annotations,
            log_path: mini_logs::container_log_relpath(&c.name, attempt)
                .to_string_lossy()
                .into_owned(),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            linux: Some(proto::LinuxContainerConfig {
                resources: Some(spec::linux_resources(c)),
                security_context: Some(spec::linux_security_context(pod, c)),
            }),
            ..Default::default()
        };
        let resolv = spec::read_resolv_conf(&self.kl.config.resolv_conf);
        let node_hostname = self
            .kl
            .host
            .hostname()
            .unwrap_or_else(|_| self.kl.config.node_name.clone());
        let sandbox_attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
        let sandbox_config = spec::sandbox_config(
            pod,
            &self.kl.config,
            &node_hostname,
            &resolv,
            sandbox_attempt,
        );
        let id = match self
            .kl
            .runtime
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: sandbox.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let message = e.to_string();
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                return Err(("CreateContainerError".into(), message));
            }
        };
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        if let Err(e) = self.kl.runtime.start_container(&id).await {
            let message = e.to_string();
            event(
                &self.kl,
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {message}"),
            );
            return Err(("RunContainerError".into(), message));
        }
        event(
            &self.kl,
            pod,
            Some(&c.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", c.name),
        );
        if let Some(post_start) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = ProbeTarget {
                runtime: self.kl.runtime.clone(),
                container_id: id.clone(),
                container: c.clone(),
                pod_ip: ips.first().and_then(|i| i.parse().ok()),
            };
            let as_probe = k8s_openapi::api::core::v1::Probe {
                exec: post_start.exec.clone(),
                http_get: post_start.http_get.clone(),
                tcp_socket: post_start.tcp_socket.clone(),
                ..Default::default()
            };
            if let probe::Outcome::Failure(message) =
                probe::run_once(&target, &as_probe, Duration::from_secs(30)).await
            {
                event(
                    &self.kl,
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPostStartHook",
                    message.clone(),
                );
                let _ = self.kl.runtime.stop_container(&id, 0).await;
                return Err(("PostStartHookError".into(), message));
            }
        }
        Ok(())
    }

    /// Starts probe tasks for running containers, stops those of containers gone.
    fn manage_probes(&mut self, pod: &Pod, obs: &Observed) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut live: Vec<(String, ProbeKind)> = Vec::new();
        let pod_ip = self
            .pod_ips
            .as_ref()
            .and_then(|(_, ips)| ips.first())
            .and_then(|ip| ip.parse().ok());
        for c in &spec.containers {
            let Some(i) = obs.latest(&c.name) else {
                continue;
            };
            if i.state() != proto::ContainerState::ContainerRunning {
                continue;
            }
            let started = self.started(c, i.id());
            let probes = [
                (ProbeKind::Startup, c.startup_probe.clone()),
                (
                    ProbeKind::Liveness,
                    c.liveness_probe.clone().filter(|_| started),
                ),
                (
                    ProbeKind::Readiness,
                    c.readiness_probe.clone().filter(|_| started),
                ),
            ];
            for (kind, p) in probes {
                let Some(p) = p else { continue };
                let key = (i.id().to_string(), kind);
                live.push(key.clone());
                if self.probes.contains_key(&key) {
                    continue;
                }
                let state = Arc::new(Mutex::new(ProbeState::default()));
                if kind == ProbeKind::Readiness {
                    if let Some(ready) = self.initial_ready.get(i.id()) {
                        state.lock().unwrap_or_else(|e| e.into_inner()).result = Some(*ready);
                    }
                }
                let cancel = self.cancel.child_token();
                let target = ProbeTarget {
                    runtime: self.kl.runtime.clone(),
                    container_id: i.id().to_string(),
                    container: c.clone(),
                    pod_ip,
                };
                let kl = self.kl.clone();
                let pod_for_events = Arc::new(pod.clone());
                let cname = c.name.clone();
                let on_failure: probe::FailureHook = Arc::new(move |kind, message: &str| {
                    event(
                        &kl,
                        &pod_for_events,
                        Some(&cname),
                        EventType::Warning,
                        "Unhealthy",
                        format!("{} probe failed: {message}", kind.name()),
                    );
                });
                let timing = ProbeTiming::of(&p, kind, self.kl.timing.probe_second);
                tokio::spawn(probe::probe_loop(
                    target,
                    p,
                    kind,
                    timing,
                    state.clone(),
                    self.wake.clone(),
                    cancel.clone(),
                    on_failure,
                ));
                self.probes.insert(key, ProbeHandle { state, cancel });
            }
        }
        self.probes.retain(|key, h| {
            let keep = live.contains(key);
            if !keep {
                h.cancel.cancel();
            }
            keep
        });
    }

    fn probe_result(&self, container_id: &str, kind: ProbeKind) -> Option<bool> {
        self.probes
            .get(&(container_id.to_string(), kind))
            .and_then(|h| h.state.lock().unwrap_or_else(|e| e.into_inner()).result)
    }

    fn started(&self, c: &Container, container_id: &str) -> bool {
        c.startup_probe.is_none()
            || self.probe_result(container_id, ProbeKind::Startup) == Some(true)
    }

    fn container_status(&self, c: &Container, obs: &Observed, init: bool) -> ContainerStatus {
        let instances = obs.containers.get(&c.name).cloned().unwrap_or_default();
        let latest = instances.first();
        let mut state = latest.map(|i| status::state_of(&i.status));
        let mut last_state = instances
            .get(1)
            .filter(|i| i.state() == proto::ContainerState::ContainerExited)
            .map(|i| k8s_openapi::api::core::v1::ContainerState {
                terminated: Some(status::terminated(&i.status)),
                ..Default::default()
            });
        let running = latest.is_some_and(|i| i.state() == proto::ContainerState::ContainerRunning);
        if let Some((reason, message)) = self.waiting.get(&c.name) {
            if !running {
                if let Some(i) =
                    latest.filter(|i| i.state() == proto::ContainerState::ContainerExited)
                {
                    last_state = Some(k8s_openapi::api::core::v1::ContainerState {
                        terminated: Some(status::terminated(&i.status)),
                        ..Default::default()
                    });
                }
                state = Some(status::waiting(
                    reason,
                    Some(message.clone()).filter(|m| !m.is_empty()),
                ));
            }
        }
        let state = state.unwrap_or_else(|| {
            status::waiting(
                if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
                None,
            )
        });
        let started = running && latest.is_some_and(|i| self.started(c, i.id()));
        let ready = if init {
            state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
        } else {
            started
                && latest.is_some_and(|i| {
                    c.readiness_probe.is_none()
                        || self.probe_result(i.id(), ProbeKind::Readiness) == Some(true)
                })
        };
        ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: latest
                .map(|i| i.status.image_ref.clone())
                .unwrap_or_default(),
            container_id: latest.map(|i| format!("containerd://{}", i.id())),
            restart_count: latest.map_or(0, |i| i.attempt as i32),
            ready,
            started: Some(started),
            state: Some(state),
            last_state: Some(last_state.unwrap_or_default()),
            ..Default::default()
        }
    }

    async fn report_status(&mut self, pod: &Arc<Pod>, obs: &Observed) {
        let spec = pod.spec.clone().unwrap_or_default();
        let old = pod.status.clone();
        let mut new = old.clone().unwrap_or_default();
        let init: Vec<ContainerStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, obs, true))
            .collect();
        let containers: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, obs, false))
            .collect();
        let old_phase = old.as_ref().and_then(|s| s.phase.clone());
        let phase = match old_phase.as_deref() {
            Some("Succeeded") | Some("Failed") => old_phase.clone().unwrap_or_default(),
            _ => status::phase(pod, &init, &containers),
        };
        new.conditions = Some(status::conditions(
            pod,
            old.as_ref(),
            &phase,
            &init,
            &containers,
        ));
        new.phase = Some(phase);
        new.container_statuses = Some(containers);
        new.init_container_statuses = if init.is_empty() { None } else { Some(init) };
        new.host_ip = Some(self.kl.config.node_ip.to_string());
        new.host_ips = Some(vec![HostIP {
            ip: self.kl.config.node_ip.to_string(),
        }]);
        if let Some(s) = &obs.sandbox {
            let ips = self.pod_ips(&s.id, pod).await;
            if !ips.is_empty() {
                new.pod_ip = ips.first().cloned();
                new.pod_ips = Some(ips.into_iter().map(|ip| PodIP { ip }).collect());
            }
        }
        if new.start_time.is_none() {
            new.start_time = Some(status::now());
        }
        if old.as_ref() == Some(&new) || self.last_sent.as_ref() == Some(&new) && old.is_none() {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.kl.client.clone(), &pod_namespace(pod));
        let patch = serde_json::json!({ "status": new });
        match api
            .patch_status(
                &pod_name(pod),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last_sent = Some(new),
            Err(e) => {
                tracing::debug!(pod = %pod_name(pod), error = %e, "updating pod status; will retry");
                self.wake_after(Duration::from_secs(2));
            }
        }
    }

    /// Stops the pod's containers and sandbox, tears down volumes; with `delete`, removes the
    /// pod object (grace 0, uid precondition) as the kubelet does once it is gone from the node.
    async fn terminate(&mut self, delete: bool) {
        for (_, p) in self.probes.drain() {
            p.cancel.cancel();
        }
        self.running.store(false, Ordering::SeqCst);
        let pod = self.last_pod.clone();
        let grace = pod
            .as_deref()
            .map_or(self.kl.timing.orphan_grace, grace_period);
        kill_pod_by_uid(&self.kl, &self.uid, pod.as_deref(), grace).await;
        if let Err(e) = self.kl.volumes.teardown(&self.uid).await {
            tracing::warn!(pod_uid = %self.uid, error = %e, "tearing down volumes");
        }
        if let Some(pod) = pod.as_deref() {
            let dir = mini_logs::pod_log_dir(
                &self.kl.config.logs_dir,
                &pod_namespace(pod),
                &pod_name(pod),
                &self.uid,
            );
            let _ = tokio::fs::remove_dir_all(&dir).await;
            if delete {
                let api: Api<Pod> = Api::namespaced(self.kl.client.clone(), &pod_namespace(pod));
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&pod_name(pod), &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(pod = %pod_name(pod), error = %e, "deleting the terminated pod object")
                    }
                }
            }
        }
    }
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}
