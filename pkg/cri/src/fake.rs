//! `FakeRuntime`: an in-memory CRI runtime for the kubelet's unit tests. It keeps sandboxes,
//! containers and images with CRI states and the metadata/labels/annotations from the requests,
//! logs every call, and has knobs to make containers exit, execs answer, pulls fail, or the next
//! call of a method fail.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::proto::{
    AttachRequest, Container, ContainerAttributes, ContainerConfig, ContainerFilter,
    ContainerState, ContainerStats, ContainerStatsFilter, ContainerStatus, ContainerStatusResponse,
    CpuUsage, CreateContainerRequest, ExecRequest, ExecSyncResponse, Image, ImageSpec, MemoryUsage,
    NamespaceMode, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatus, PodSandboxStatusResponse, PortForwardRequest,
    RunPodSandboxRequest, RuntimeCondition, RuntimeStatus, StatusResponse, UInt64Value,
    VersionResponse,
};
use crate::{normalize_image_ref, ContainerLayer, CriError, Runtime};

/// One call the fake received: the CRI method name (`RunPodSandbox`, `StartContainer`, ...)
/// and its main argument (sandbox/container id, image, or sandbox name for creations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    pub method: &'static str,
    pub target: String,
}

/// A streaming request the fake was asked to prepare.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeStreamRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

#[derive(Debug, Clone)]
struct FakeSandbox {
    id: String,
    config: PodSandboxConfig,
    runtime_handler: String,
    state: PodSandboxState,
    created_at: i64,
    ip: String,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    id: String,
    sandbox_id: String,
    config: ContainerConfig,
    image_ref: String,
    state: ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    message: String,
    log_path: String,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    next_ip: u32,
    sandboxes: BTreeMap<String, FakeSandbox>,
    containers: BTreeMap<String, FakeContainer>,
    /// Keyed by normalized image name.
    images: BTreeMap<String, Image>,
    pull_failures: HashMap<String, String>,
    failures: HashMap<String, VecDeque<CriError>>,
    exec_results: HashMap<Vec<String>, ExecSyncResponse>,
    container_exec_results: HashMap<(String, Vec<String>), ExecSyncResponse>,
    stats: HashMap<String, ContainerStats>,
    stop_exit: (i32, String),
    /// Container name -> (exit code, reason) applied as soon as such a container starts.
    exit_on_start: HashMap<String, (i32, String)>,
    runtime_ready: bool,
    network_ready: bool,
    calls: Vec<FakeCall>,
    stream_requests: Vec<FakeStreamRequest>,
    /// Container id -> the layer a commit of it answers.
    layers: HashMap<String, FakeLayer>,
}

/// What [`FakeRuntime::set_container_layer`] makes a commit answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLayer {
    pub content: Vec<u8>,
    pub layer_digest: String,
    pub diff_id: String,
    pub image_digest: Option<String>,
}

/// In-memory `Runtime` for tests. Share it as `Arc<FakeRuntime>`: the kubelet gets it as a
/// `dyn Runtime`, the test keeps a handle to turn the knobs and read the call log.
///
/// Defaults: runtime and network ready; no images (pulls succeed and add the image); execs
/// answer exit code 0 with empty output; stopping a running container ends it with exit code
/// 137 and reason `Error` (the process did not handle SIGTERM); stopping a sandbox stops its
/// containers the same way; removing a sandbox removes its containers.
#[derive(Debug)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn fake_digest(name: &str) -> String {
    let mut out = String::from("sha256:");
    for salt in 0u8..4 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut hasher);
        name.hash(&mut hasher);
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn id_matches(id: &str, wanted: &str) -> bool {
    wanted.is_empty() || id.starts_with(wanted)
}

fn rpc(method: &'static str, code: &str, message: String) -> CriError {
    CriError::Rpc {
        method,
        code: code.to_string(),
        message,
    }
}

fn state_name(state: ContainerState) -> &'static str {
    state.as_str_name()
}

fn host_network(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == NamespaceMode::Node as i32)
}

impl FakeRuntime {
    pub fn new() -> Self {
        FakeRuntime {
            state: Mutex::new(State {
                next_id: 0,
                next_ip: 2,
                sandboxes: BTreeMap::new(),
                containers: BTreeMap::new(),
                images: BTreeMap::new(),
                pull_failures: HashMap::new(),
                failures: HashMap::new(),
                exec_results: HashMap::new(),
                container_exec_results: HashMap::new(),
                stats: HashMap::new(),
                stop_exit: (137, "Error".to_string()),
                exit_on_start: HashMap::new(),
                runtime_ready: true,
                network_ready: true,
                calls: Vec::new(),
                stream_requests: Vec::new(),
                layers: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; keep the state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs the call and returns the queued failure for `method`, if any.
    fn enter(&self, method: &'static str, target: &str) -> Result<MutexGuard<'_, State>, CriError> {
        let mut state = self.lock();
        state.calls.push(FakeCall {
            method,
            target: target.to_string(),
        });
        if let Some(error) = state.failures.get_mut(method).and_then(VecDeque::pop_front) {
            return Err(error);
        }
        Ok(state)
    }

    // ---- knobs -------------------------------------------------------------------------

    /// Makes a commit of `container_id` answer `layer`; without it a commit fails (FailedPrecondition).
    pub fn set_container_layer(&self, container_id: &str, layer: FakeLayer) {
        self.lock().layers.insert(container_id.to_string(), layer);
    }

    /// Makes the next call of `method` (CRI name, e.g. `"StartContainer"`) fail with `error`.
    /// Several queued failures are returned by successive calls.
    pub fn fail_next(&self, method: &str, error: CriError) {
        self.lock()
            .failures
            .entry(method.to_string())
            .or_default()
            .push_back(error);
    }

    /// Adds an image as if it had been pulled or imported; returns its id.
    pub fn add_image(&self, image: &str) -> String {
        let mut state = self.lock();
        insert_image(&mut state, image)
    }

    /// Removes an image so that `image_status` reports it absent.
    pub fn remove_image_named(&self, image: &str) {
        self.lock().images.remove(&normalize_image_ref(image));
    }

    /// Makes every pull of `image` fail with `message` until `clear_pull_failure`.
    pub fn fail_pulls(&self, image: &str, message: &str) {
        self.lock()
            .pull_failures
            .insert(normalize_image_ref(image), message.to_string());
    }

    pub fn clear_pull_failure(&self, image: &str) {
        self.lock()
            .pull_failures
            .remove(&normalize_image_ref(image));
    }

    /// Ends a container as if its process exited: state EXITED with `exit_code` and `reason`
    /// (`"Completed"`, `"Error"`, `"OOMKilled"`; empty picks Completed/Error from the code).
    pub fn exit_container(&self, container_id: &str, exit_code: i32, reason: &str) -> bool {
        let mut state = self.lock();
        let Some(container) = state.containers.get_mut(container_id) else {
            return false;
        };
        finish(container, exit_code, reason);
        true
    }

    /// Makes every container named `container_name` (CRI metadata name) exit with `exit_code`
    /// and `reason` right after it starts, attempt after attempt (crash loops, init containers
    /// that complete), until `clear_exit_on_start`.
    pub fn set_exit_on_start(&self, container_name: &str, exit_code: i32, reason: &str) {
        self.lock()
            .exit_on_start
            .insert(container_name.to_string(), (exit_code, reason.to_string()));
    }

    pub fn clear_exit_on_start(&self, container_name: &str) {
        self.lock().exit_on_start.remove(container_name);
    }

    /// Sets the answer of `exec_sync` for `cmd` in any container.
    pub fn set_exec_result(&self, cmd: &[&str], exit_code: i32, stdout: &str, stderr: &str) {
        let cmd = cmd.iter().map(|s| s.to_string()).collect();
        self.lock().exec_results.insert(
            cmd,
            ExecSyncResponse {
                stdout: stdout.as_bytes().to_vec(),
                stderr: stderr.as_bytes().to_vec(),
                exit_code,
            },
        );
    }

    /// Sets the answer of `exec_sync` for `cmd` in one container (wins over `set_exec_result`).
    pub fn set_container_exec_result(
        &self,
        container_id: &str,
        cmd: &[&str],
        exit_code: i32,
        stdout: &str,
        stderr: &str,
    ) {
        let cmd = cmd.iter().map(|s| s.to_string()).collect();
        self.lock().container_exec_results.insert(
            (container_id.to_string(), cmd),
            ExecSyncResponse {
                stdout: stdout.as_bytes().to_vec(),
                stderr: stderr.as_bytes().to_vec(),
                exit_code,
            },
        );
    }

    /// Sets what `list_container_stats` reports for a container (attributes are filled in).
    pub fn set_container_stats(&self, container_id: &str, stats: ContainerStats) {
        self.lock().stats.insert(container_id.to_string(), stats);
    }

    /// Exit code and reason a running container gets when it is stopped (default 137/Error).
    pub fn set_stop_result(&self, exit_code: i32, reason: &str) {
        self.lock().stop_exit = (exit_code, reason.to_string());
    }

    /// The RuntimeReady and NetworkReady conditions `status` reports.
    pub fn set_ready(&self, runtime_ready: bool, network_ready: bool) {
        let mut state = self.lock();
        state.runtime_ready = runtime_ready;
        state.network_ready = network_ready;
    }

    // ---- inspection --------------------------------------------------------------------

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The targets of the calls of one method, in order.
    pub fn calls_of(&self, method: &str) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .map(|c| c.target.clone())
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The exec/attach/port-forward requests prepared so far.
    pub fn stream_requests(&self) -> Vec<FakeStreamRequest> {
        self.lock().stream_requests.clone()
    }

    /// The state of a container, if it exists.
    pub fn container_state(&self, container_id: &str) -> Option<ContainerState> {
        self.lock().containers.get(container_id).map(|c| c.state)
    }

    /// The config a container was created with.
    pub fn container_config(&self, container_id: &str) -> Option<ContainerConfig> {
        self.lock()
            .containers
            .get(container_id)
            .map(|c| c.config.clone())
    }

    /// The config a sandbox was created with.
    pub fn sandbox_config(&self, sandbox_id: &str) -> Option<PodSandboxConfig> {
        self.lock()
            .sandboxes
            .get(sandbox_id)
            .map(|s| s.config.clone())
    }

    pub fn sandbox_count(&self) -> usize {
        self.lock().sandboxes.len()
    }

    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }
}

fn insert_image(state: &mut State, image: &str) -> String {
    let name = normalize_image_ref(image);
    let id = fake_digest(&name);
    let repo = name.split('@').next().unwrap_or(&name);
    let repo = match repo.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => repo,
    };
    state.images.insert(
        name.clone(),
        Image {
            id: id.clone(),
            repo_tags: vec![name.clone()],
            repo_digests: vec![format!("{repo}@{id}")],
            size: 1 << 20,
            uid: None,
            username: String::new(),
            spec: Some(ImageSpec {
                image: name,
                ..Default::default()
            }),
            pinned: false,
        },
    );
    id
}

fn find_image<'a>(state: &'a State, image: &str) -> Option<&'a Image> {
    if let Some(found) = state.images.get(&normalize_image_ref(image)) {
        return Some(found);
    }
    state
        .images
        .values()
        .find(|i| i.id == image || i.repo_digests.iter().any(|d| d == image))
}

fn finish(container: &mut FakeContainer, exit_code: i32, reason: &str) {
    container.state = ContainerState::ContainerExited;
    container.finished_at = now_nanos();
    if container.started_at == 0 {
        container.started_at = container.finished_at;
    }
    container.exit_code = exit_code;
    container.reason = if !reason.is_empty() {
        reason.to_string()
    } else if exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
}

fn container_status(c: &FakeContainer) -> ContainerStatus {
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: c.state as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: c.config.image.clone(),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.clone(),
        resources: None,
        image_id: c.image_ref.clone(),
        user: None,
    }
}

fn attributes(c: &FakeContainer) -> ContainerAttributes {
    ContainerAttributes {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<VersionResponse, CriError> {
        let _state = self.enter("Version", "")?;
        Ok(VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: "fake".to_string(),
            runtime_version: "1.0.0".to_string(),
            runtime_api_version: "v1".to_string(),
        })
    }

    async fn status(&self) -> Result<StatusResponse, CriError> {
        let state = self.enter("Status", "")?;
        let condition = |kind: &str, ready: bool| RuntimeCondition {
            r#type: kind.to_string(),
            status: ready,
            reason: if ready {
                String::new()
            } else {
                "FakeNotReady".to_string()
            },
            message: String::new(),
        };
        Ok(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", state.runtime_ready),
                    condition("NetworkReady", state.network_ready),
                ],
            }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(&self, request: RunPodSandboxRequest) -> Result<String, CriError> {
        let config = request.config.unwrap_or_default();
        let name = config
            .metadata
            .as_ref()
            .map(|m| format!("{}/{}", m.namespace, m.name))
            .unwrap_or_default();
        let mut state = self.enter("RunPodSandbox", &name)?;
        if config.metadata.is_none() {
            return Err(rpc(
                "RunPodSandbox",
                "InvalidArgument",
                "sandbox config must include metadata".to_string(),
            ));
        }
        state.next_id += 1;
        let id = format!("sandbox{:058}", state.next_id);
        let ip = if host_network(&config) {
            String::new()
        } else {
            state.next_ip += 1;
            format!("10.88.{}.{}", state.next_ip / 250, state.next_ip % 250 + 2)
        };
        state.sandboxes.insert(
            id.clone(),
            FakeSandbox {
                id: id.clone(),
                config,
                runtime_handler: request.runtime_handler,
                state: PodSandboxState::SandboxReady,
                created_at: now_nanos(),
                ip,
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let mut state = self.enter("StopPodSandbox", sandbox_id)?;
        let (code, reason) = state.stop_exit.clone();
        let Some(sandbox) = state.sandboxes.get_mut(sandbox_id) else {
            return Err(CriError::NotFound(format!(
                "StopPodSandbox: sandbox {sandbox_id:?} not found"
            )));
        };
        sandbox.state = PodSandboxState::SandboxNotready;
        for container in state.containers.values_mut() {
            if container.sandbox_id == sandbox_id
                && container.state != ContainerState::ContainerExited
            {
                finish(container, code, &reason);
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), CriError> {
        let mut state = self.enter("RemovePodSandbox", sandbox_id)?;
        // CRI: removing a sandbox that does not exist succeeds.
        state.sandboxes.remove(sandbox_id);
        state.containers.retain(|_, c| c.sandbox_id != sandbox_id);
        Ok(())
    }

    async fn pod_sandbox_status(
        &self,
        sandbox_id: &str,
        _verbose: bool,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        let state = self.enter("PodSandboxStatus", sandbox_id)?;
        let Some(s) = state.sandboxes.get(sandbox_id) else {
            return Err(CriError::NotFound(format!(
                "PodSandboxStatus: sandbox {sandbox_id:?} not found"
            )));
        };
        Ok(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: s.state as i32,
                created_at: s.created_at,
                network: Some(PodSandboxNetworkStatus {
                    ip: s.ip.clone(),
                    additional_ips: Vec::new(),
                }),
                linux: None,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            }),
            ..Default::default()
        })
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CriError> {
        let state = self.enter("ListPodSandbox", "")?;
        let filter = filter.unwrap_or_default();
        Ok(state
            .sandboxes
            .values()
            .filter(|s| id_matches(&s.id, &filter.id))
            .filter(|s| filter.state.is_none_or(|v| v.state == s.state as i32))
            .filter(|s| labels_match(&s.config.labels, &filter.label_selector))
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: s.state as i32,
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect())
    }

    async fn create_container(&self, request: CreateContainerRequest) -> Result<String, CriError> {
        let config = request.config.unwrap_or_default();
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut state = self.enter("CreateContainer", &name)?;
        let sandbox_id = request.pod_sandbox_id;
        let Some(sandbox) = state.sandboxes.get(&sandbox_id) else {
            return Err(CriError::NotFound(format!(
                "CreateContainer: sandbox {sandbox_id:?} not found"
            )));
        };
        if sandbox.state != PodSandboxState::SandboxReady {
            return Err(rpc(
                "CreateContainer",
                "Unknown",
                format!("sandbox {sandbox_id:?} is not ready"),
            ));
        }
        let log_dir = sandbox.config.log_directory.clone();
        if config.metadata.is_none() {
            return Err(rpc(
                "CreateContainer",
                "InvalidArgument",
                "container config must include metadata".to_string(),
            ));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let Some(image_ref) = find_image(&state, &image).map(|i| i.id.clone()) else {
            return Err(rpc(
                "CreateContainer",
                "Unknown",
                format!("failed to get image {image:?}: not found"),
            ));
        };
        let log_path = if log_dir.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            format!("{}/{}", log_dir.trim_end_matches('/'), config.log_path)
        };
        state.next_id += 1;
        let id = format!("container{:056}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                sandbox_id,
                config,
                image_ref,
                state: ContainerState::ContainerCreated,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                log_path,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        let mut state = self.enter("StartContainer", container_id)?;
        let state = &mut *state;
        let Some(container) = state.containers.get_mut(container_id) else {
            return Err(CriError::NotFound(format!(
                "StartContainer: container {container_id:?} not found"
            )));
        };
        if container.state != ContainerState::ContainerCreated {
            return Err(rpc(
                "StartContainer",
                "Unknown",
                format!(
                    "container {container_id:?} is in {} state",
                    state_name(container.state)
                ),
            ));
        }
        container.state = ContainerState::ContainerRunning;
        container.started_at = now_nanos();
        let name = container.config.metadata.as_ref().map(|m| m.name.as_str());
        if let Some((code, reason)) = name.and_then(|n| state.exit_on_start.get(n)) {
            finish(container, *code, reason);
        }
        Ok(())
    }

    async fn stop_container(
        &self,
        container_id: &str,
        _timeout_seconds: i64,
    ) -> Result<(), CriError> {
        let mut state = self.enter("StopContainer", container_id)?;
        let (code, reason) = state.stop_exit.clone();
        let Some(container) = state.containers.get_mut(container_id) else {
            return Err(CriError::NotFound(format!(
                "StopContainer: container {container_id:?} not found"
            )));
        };
        if container.state != ContainerState::ContainerExited {
            finish(container, code, &reason);
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let mut state = self.enter("RemoveContainer", container_id)?;
        // CRI: removing a container that does not exist succeeds.
        state.containers.remove(container_id);
        state.stats.remove(container_id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CriError> {
        let state = self.enter("ListContainers", "")?;
        let filter = filter.unwrap_or_default();
        Ok(state
            .containers
            .values()
            .filter(|c| id_matches(&c.id, &filter.id))
            .filter(|c| id_matches(&c.sandbox_id, &filter.pod_sandbox_id))
            .filter(|c| filter.state.is_none_or(|v| v.state == c.state as i32))
            .filter(|c| labels_match(&c.config.labels, &filter.label_selector))
            .map(|c| Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.image_ref.clone(),
            })
            .collect())
    }

    async fn container_status(
        &self,
        container_id: &str,
        _verbose: bool,
    ) -> Result<ContainerStatusResponse, CriError> {
        let state = self.enter("ContainerStatus", container_id)?;
        let Some(container) = state.containers.get(container_id) else {
            return Err(CriError::NotFound(format!(
                "ContainerStatus: container {container_id:?} not found"
            )));
        };
        Ok(ContainerStatusResponse {
            status: Some(container_status(container)),
            info: HashMap::new(),
        })
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _timeout_seconds: i64,
    ) -> Result<ExecSyncResponse, CriError> {
        let state = self.enter("ExecSync", container_id)?;
        let Some(container) = state.containers.get(container_id) else {
            return Err(CriError::NotFound(format!(
                "ExecSync: container {container_id:?} not found"
            )));
        };
        if container.state != ContainerState::ContainerRunning {
            return Err(rpc(
                "ExecSync",
                "Unknown",
                format!(
                    "container {container_id:?} is in {} state",
                    state_name(container.state)
                ),
            ));
        }
        let key = (container_id.to_string(), cmd);
        let answer = state
            .container_exec_results
            .get(&key)
            .or_else(|| state.exec_results.get(&key.1))
            .cloned()
            .unwrap_or_default();
        Ok(answer)
    }

    async fn exec(&self, request: ExecRequest) -> Result<String, CriError> {
        let mut state = self.enter("Exec", &request.container_id)?;
        let running = state
            .containers
            .get(&request.container_id)
            .map(|c| c.state == ContainerState::ContainerRunning);
        match running {
            None => Err(CriError::NotFound(format!(
                "Exec: container {:?} not found",
                request.container_id
            ))),
            Some(false) => Err(rpc(
                "Exec",
                "Unknown",
                format!("container {:?} is not running", request.container_id),
            )),
            Some(true) => {
                state.stream_requests.push(FakeStreamRequest::Exec(request));
                let n = state.stream_requests.len();
                Ok(format!("http://127.0.0.1:0/exec/fake{n}"))
            }
        }
    }

    async fn attach(&self, request: AttachRequest) -> Result<String, CriError> {
        let mut state = self.enter("Attach", &request.container_id)?;
        if !state.containers.contains_key(&request.container_id) {
            return Err(CriError::NotFound(format!(
                "Attach: container {:?} not found",
                request.container_id
            )));
        }
        state
            .stream_requests
            .push(FakeStreamRequest::Attach(request));
        let n = state.stream_requests.len();
        Ok(format!("http://127.0.0.1:0/attach/fake{n}"))
    }

    async fn port_forward(&self, request: PortForwardRequest) -> Result<String, CriError> {
        let mut state = self.enter("PortForward", &request.pod_sandbox_id)?;
        if !state.sandboxes.contains_key(&request.pod_sandbox_id) {
            return Err(CriError::NotFound(format!(
                "PortForward: sandbox {:?} not found",
                request.pod_sandbox_id
            )));
        }
        state
            .stream_requests
            .push(FakeStreamRequest::PortForward(request));
        let n = state.stream_requests.len();
        Ok(format!("http://127.0.0.1:0/portforward/fake{n}"))
    }

    async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, CriError> {
        let state = self.enter("ListContainerStats", "")?;
        let filter = filter.unwrap_or_default();
        let now = now_nanos();
        Ok(state
            .containers
            .values()
            .filter(|c| id_matches(&c.id, &filter.id))
            .filter(|c| id_matches(&c.sandbox_id, &filter.pod_sandbox_id))
            .filter(|c| labels_match(&c.config.labels, &filter.label_selector))
            .map(|c| {
                let mut stats = state.stats.get(&c.id).cloned().unwrap_or(ContainerStats {
                    attributes: None,
                    cpu: Some(CpuUsage {
                        timestamp: now,
                        usage_core_nano_seconds: Some(UInt64Value { value: 0 }),
                        usage_nano_cores: Some(UInt64Value { value: 0 }),
                    }),
                    memory: Some(MemoryUsage {
                        timestamp: now,
                        working_set_bytes: Some(UInt64Value { value: 0 }),
                        ..Default::default()
                    }),
                    writable_layer: None,
                    swap: None,
                });
                if stats.attributes.is_none() {
                    stats.attributes = Some(attributes(c));
                }
                stats
            })
            .collect())
    }

    async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        let state = self.enter("ListImages", "")?;
        Ok(state.images.values().cloned().collect())
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>, CriError> {
        let state = self.enter("ImageStatus", &image.image)?;
        Ok(find_image(&state, &image.image).cloned())
    }

    async fn pull_image(
        &self,
        image: &ImageSpec,
        _sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut state = self.enter("PullImage", &image.image)?;
        if let Some(message) = state.pull_failures.get(&normalize_image_ref(&image.image)) {
            return Err(rpc("PullImage", "Unknown", message.clone()));
        }
        if let Some(found) = find_image(&state, &image.image) {
            return Ok(found.id.clone());
        }
        Ok(insert_image(&mut state, &image.image))
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<(), CriError> {
        let mut state = self.enter("RemoveImage", &image.image)?;
        let key = find_image(&state, &image.image).and_then(|i| i.repo_tags.first().cloned());
        if let Some(key) = key {
            state.images.remove(&key);
        }
        Ok(())
    }

    async fn container_layer(
        &self,
        container_id: &str,
        image: &str,
    ) -> Result<ContainerLayer, CriError> {
        let state = self.enter("ContainerLayer", container_id)?;
        let Some(container) = state.containers.get(container_id) else {
            return Err(CriError::NotFound(format!(
                "ContainerLayer: container {container_id:?} not found"
            )));
        };
        let Some(layer) = state.layers.get(container_id).cloned() else {
            return Err(rpc(
                "ContainerLayer",
                "FailedPrecondition",
                "no layer set for this container (FakeRuntime::set_container_layer)".into(),
            ));
        };
        let image_ref = if image.is_empty() {
            container
                .config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default()
        } else {
            image.to_string()
        };
        let size = layer.content.len() as u64;
        let chunk = Ok(bytes::Bytes::from(layer.content));
        Ok(ContainerLayer {
            image_ref,
            image_digest: layer.image_digest,
            layer_digest: layer.layer_digest,
            size,
            diff_id: layer.diff_id,
            media_type: crate::commit::LAYER_MEDIA_TYPE.to_string(),
            content: Box::pin(futures::stream::iter([chunk])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        ContainerMetadata, ContainerStateValue, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
        NamespaceOption, PodSandboxMetadata, PodSandboxStateValue,
    };

    fn sandbox_request(name: &str, labels: &[(&str, &str)]) -> RunPodSandboxRequest {
        RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.to_string(),
                    uid: format!("uid-{name}"),
                    namespace: "default".to_string(),
                    attempt: 0,
                }),
                log_directory: format!("/var/log/pods/default_{name}"),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: [("note".to_string(), name.to_string())].into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    fn container_request(sandbox_id: &str, name: &str, image: &str) -> CreateContainerRequest {
        CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                log_path: format!("{name}/0.log"),
                labels: [("io.kubernetes.container.name".to_string(), name.to_string())].into(),
                ..Default::default()
            }),
            sandbox_config: None,
        }
    }

    async fn running_container(fake: &FakeRuntime) -> (String, String) {
        fake.add_image("busybox");
        let sandbox = fake
            .run_pod_sandbox(sandbox_request("web", &[("app", "web")]))
            .await
            .expect("sandbox");
        let container = fake
            .create_container(container_request(&sandbox, "main", "busybox"))
            .await
            .expect("create");
        fake.start_container(&container).await.expect("start");
        (sandbox, container)
    }

    #[tokio::test]
    async fn fake_container_lifecycle_states_follow_cri() {
        let fake = FakeRuntime::new();
        let (sandbox, container) = running_container(&fake).await;
        let status = fake
            .container_status(&container, false)
            .await
            .expect("status")
            .status
            .expect("status body");
        assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        assert_eq!(status.log_path, "/var/log/pods/default_web/main/0.log");
        assert_eq!(status.metadata.expect("metadata").name, "main");
        assert!(status.image_ref.starts_with("sha256:"));

        let again = fake.start_container(&container).await;
        assert!(again.is_err(), "starting a running container must fail");

        fake.stop_container(&container, 5).await.expect("stop");
        let status = fake
            .container_status(&container, false)
            .await
            .expect("status")
            .status
            .expect("status body");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert_eq!((status.exit_code, status.reason.as_str()), (137, "Error"));

        fake.remove_pod_sandbox(&sandbox).await.expect("remove");
        assert_eq!(fake.container_count(), 0);
        assert!(fake
            .container_status(&container, false)
            .await
            .expect_err("gone")
            .is_not_found());
        // Removing again is not an error (CRI idempotence).
        fake.remove_pod_sandbox(&sandbox)
            .await
            .expect("remove again");
    }

    #[tokio::test]
    async fn fake_exit_container_reports_code_and_reason() {
        let fake = FakeRuntime::new();
        let (_, container) = running_container(&fake).await;
        assert!(fake.exit_container(&container, 137, "OOMKilled"));
        let status = fake
            .container_status(&container, false)
            .await
            .expect("status")
            .status
            .expect("status body");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        assert_eq!(status.exit_code, 137);
        assert_eq!(status.reason, "OOMKilled");
        assert!(status.finished_at >= status.started_at);

        let (_, other) = running_container(&fake).await;
        fake.exit_container(&other, 0, "");
        let status = fake.container_status(&other, false).await.expect("status");
        assert_eq!(status.status.expect("body").reason, "Completed");
    }

    #[tokio::test]
    async fn fake_exit_on_start_ends_every_attempt() {
        let fake = FakeRuntime::new();
        fake.set_exit_on_start("main", 1, "");
        let (sandbox, first) = running_container(&fake).await;
        assert_eq!(
            fake.container_state(&first),
            Some(ContainerState::ContainerExited)
        );
        let second = fake
            .create_container(container_request(&sandbox, "main", "busybox"))
            .await
            .expect("create");
        fake.start_container(&second).await.expect("start");
        let status = fake.container_status(&second, false).await.expect("status");
        let status = status.status.expect("body");
        assert_eq!((status.exit_code, status.reason.as_str()), (1, "Error"));
        fake.clear_exit_on_start("main");
        let third = fake
            .create_container(container_request(&sandbox, "main", "busybox"))
            .await
            .expect("create");
        fake.start_container(&third).await.expect("start");
        assert_eq!(
            fake.container_state(&third),
            Some(ContainerState::ContainerRunning)
        );
    }

    #[tokio::test]
    async fn fake_exec_sync_answers_configured_results() {
        let fake = FakeRuntime::new();
        let (_, container) = running_container(&fake).await;
        fake.set_exec_result(&["cat", "/tmp/healthy"], 1, "", "no such file");
        let answer = fake
            .exec_sync(&container, vec!["cat".into(), "/tmp/healthy".into()], 1)
            .await
            .expect("exec");
        assert_eq!(answer.exit_code, 1);
        assert_eq!(answer.stderr, b"no such file");

        fake.set_container_exec_result(&container, &["cat", "/tmp/healthy"], 0, "ok", "");
        let answer = fake
            .exec_sync(&container, vec!["cat".into(), "/tmp/healthy".into()], 1)
            .await
            .expect("exec");
        assert_eq!(
            (answer.exit_code, answer.stdout.as_slice()),
            (0, &b"ok"[..])
        );

        let default = fake
            .exec_sync(&container, vec!["true".into()], 1)
            .await
            .expect("exec");
        assert_eq!(default.exit_code, 0);

        fake.exit_container(&container, 0, "");
        assert!(fake
            .exec_sync(&container, vec!["true".into()], 1)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn fake_images_absent_until_pulled_and_pull_failures_apply() {
        let fake = FakeRuntime::new();
        let spec = ImageSpec {
            image: "nginx:1.25".to_string(),
            ..Default::default()
        };
        assert!(fake.image_status(&spec).await.expect("status").is_none());
        fake.fail_pulls("nginx:1.25", "pull access denied");
        let error = fake.pull_image(&spec, None).await.expect_err("fails");
        assert!(error.to_string().contains("pull access denied"), "{error}");
        fake.clear_pull_failure("docker.io/library/nginx:1.25");
        let id = fake.pull_image(&spec, None).await.expect("pull");
        let image = fake
            .image_status(&spec)
            .await
            .expect("status")
            .expect("present");
        assert_eq!(image.id, id);
        assert_eq!(image.repo_tags, vec!["docker.io/library/nginx:1.25"]);
        fake.remove_image_named("nginx:1.25");
        assert!(fake.image_status(&spec).await.expect("status").is_none());
    }

    #[tokio::test]
    async fn fake_create_container_without_image_fails() {
        let fake = FakeRuntime::new();
        let sandbox = fake
            .run_pod_sandbox(sandbox_request("a", &[]))
            .await
            .expect("sandbox");
        let error = fake
            .create_container(container_request(&sandbox, "main", "missing:1"))
            .await
            .expect_err("no image");
        assert!(error.to_string().contains("missing:1"), "{error}");
    }

    #[tokio::test]
    async fn fake_fail_next_fails_only_the_next_call() {
        let fake = FakeRuntime::new();
        fake.fail_next(
            "RunPodSandbox",
            CriError::Rpc {
                method: "RunPodSandbox",
                code: "Unknown".to_string(),
                message: "cni failed".to_string(),
            },
        );
        let error = fake
            .run_pod_sandbox(sandbox_request("a", &[]))
            .await
            .expect_err("queued failure");
        assert!(error.to_string().contains("cni failed"));
        fake.run_pod_sandbox(sandbox_request("a", &[]))
            .await
            .expect("second call succeeds");
        assert_eq!(
            fake.calls_of("RunPodSandbox"),
            vec!["default/a".to_string(), "default/a".to_string()]
        );
        assert_eq!(fake.sandbox_count(), 1);
    }

    #[tokio::test]
    async fn fake_list_filters_by_id_state_labels_and_sandbox() {
        let fake = FakeRuntime::new();
        fake.add_image("busybox");
        let a = fake
            .run_pod_sandbox(sandbox_request("a", &[("app", "a")]))
            .await
            .expect("a");
        let b = fake
            .run_pod_sandbox(sandbox_request("b", &[("app", "b")]))
            .await
            .expect("b");
        fake.stop_pod_sandbox(&b).await.expect("stop b");

        let by_label = fake
            .list_pod_sandbox(Some(PodSandboxFilter {
                label_selector: [("app".to_string(), "a".to_string())].into(),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert_eq!(by_label.len(), 1);
        assert_eq!(by_label[0].id, a);
        assert_eq!(
            by_label[0].annotations.get("note").map(String::as_str),
            Some("a")
        );

        let ready = fake
            .list_pod_sandbox(Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert_eq!(ready.iter().map(|s| &s.id).collect::<Vec<_>>(), vec![&a]);

        let by_id = fake
            .list_pod_sandbox(Some(PodSandboxFilter {
                id: b.clone(),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].state, PodSandboxState::SandboxNotready as i32);

        let c1 = fake
            .create_container(container_request(&a, "one", "busybox"))
            .await
            .expect("c1");
        let c2 = fake
            .create_container(container_request(&a, "two", "busybox"))
            .await
            .expect("c2");
        fake.start_container(&c2).await.expect("start c2");

        let running = fake
            .list_containers(Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert_eq!(running.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c2]);

        let named = fake
            .list_containers(Some(ContainerFilter {
                pod_sandbox_id: a.clone(),
                label_selector: [(
                    "io.kubernetes.container.name".to_string(),
                    "one".to_string(),
                )]
                .into(),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert_eq!(named.iter().map(|c| &c.id).collect::<Vec<_>>(), vec![&c1]);

        let in_b = fake
            .list_containers(Some(ContainerFilter {
                pod_sandbox_id: b.clone(),
                ..Default::default()
            }))
            .await
            .expect("list");
        assert!(in_b.is_empty());
    }

    #[tokio::test]
    async fn fake_stop_pod_sandbox_stops_its_containers() {
        let fake = FakeRuntime::new();
        let (sandbox, container) = running_container(&fake).await;
        fake.set_stop_result(143, "Error");
        fake.stop_pod_sandbox(&sandbox).await.expect("stop");
        assert_eq!(
            fake.container_state(&container),
            Some(ContainerState::ContainerExited)
        );
        let status = fake
            .container_status(&container, false)
            .await
            .expect("status");
        assert_eq!(status.status.expect("body").exit_code, 143);
        assert!(fake
            .create_container(container_request(&sandbox, "late", "busybox"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn fake_host_network_sandbox_has_no_pod_ip() {
        let fake = FakeRuntime::new();
        let mut request = sandbox_request("host", &[]);
        if let Some(config) = request.config.as_mut() {
            config.linux = Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let host = fake.run_pod_sandbox(request).await.expect("host");
        let pod = fake
            .run_pod_sandbox(sandbox_request("pod", &[]))
            .await
            .expect("pod");
        let ip = |resp: PodSandboxStatusResponse| {
            resp.status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default()
        };
        assert_eq!(
            ip(fake.pod_sandbox_status(&host, false).await.expect("s")),
            ""
        );
        let pod_ip = ip(fake.pod_sandbox_status(&pod, false).await.expect("s"));
        assert!(pod_ip.starts_with("10.88."), "{pod_ip}");
    }

    #[tokio::test]
    async fn fake_container_stats_filled_with_attributes() {
        let fake = FakeRuntime::new();
        let (_, container) = running_container(&fake).await;
        fake.set_container_stats(
            &container,
            ContainerStats {
                cpu: Some(CpuUsage {
                    timestamp: 1,
                    usage_core_nano_seconds: Some(UInt64Value { value: 5_000 }),
                    usage_nano_cores: None,
                }),
                ..Default::default()
            },
        );
        let stats = fake.list_container_stats(None).await.expect("stats");
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].attributes.as_ref().expect("attrs").id, container);
        assert_eq!(
            stats[0]
                .cpu
                .as_ref()
                .and_then(|c| c.usage_core_nano_seconds.as_ref())
                .map(|v| v.value),
            Some(5_000)
        );
    }

    #[tokio::test]
    async fn fake_status_reports_configured_readiness() {
        let fake = FakeRuntime::new();
        fake.set_ready(true, false);
        let status = fake.status().await.expect("status");
        let conditions = status.status.expect("body").conditions;
        let network = conditions
            .iter()
            .find(|c| c.r#type == "NetworkReady")
            .expect("network condition");
        assert!(!network.status);
    }
}
