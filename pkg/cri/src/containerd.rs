//! The node's own containerd: `ContainerdConfig` renders its config.toml (CRI plugin set up for
//! this machine), and `Supervisor` runs it as a private instance in its own process group,
//! waits until CRI answers, restarts it with back-off when it dies, adopts one left running by
//! an earlier agent (restarting it when its config.toml changed), and stops it on shutdown
//! without touching the containers (the runc shims are separate processes and keep running).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::grpc::{Deadlines, GrpcRuntime};
use crate::CriError;

/// Longest path a unix socket may have (`sun_path` is 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// containerd also listens on `<address>.ttrpc`.
const TTRPC_SUFFIX: &str = ".ttrpc";

/// Where CNI plugins are looked for, in order.
pub const CNI_BIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// Plugins the node never uses; disabling them keeps start-up fast and the log quiet.
/// (`io.containerd.runtime.v1.linux` must stay: containerd 1.6's tasks service needs it.)
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A containerd that ran this long before dying restarts after the minimum back-off again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What starting or supervising containerd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(
        "containerd socket path {path} is {len} bytes, but unix socket paths are limited to \
         {max} bytes (containerd also adds {TTRPC_SUFFIX:?}): use a shorter data dir or socket path"
    )]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error(
        "no CNI plugin directory found (looked in /usr/lib/cni and /opt/cni/bin): set the CNI \
         bin dir (the agent installs mini's built-in plugins into <data-dir>/agent/cni/bin)"
    )]
    NoCniBinDir,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd exited during start-up ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "containerd did not answer CRI within {timeout:?}: {source}; last lines of {log}:\n{tail}"
    )]
    NotReady {
        timeout: Duration,
        log: PathBuf,
        tail: String,
        #[source]
        source: Box<CriError>,
    },
    #[error(
        "a containerd that is not ours answers on {socket} ({pid_file} names no live containerd \
         for this socket): stop it or use another data dir"
    )]
    SocketInUse { socket: PathBuf, pid_file: PathBuf },
    #[error(transparent)]
    Cri(#[from] CriError),
}

/// Settings of the node's containerd. Everything lives under `root_dir`: `root/`, `state/`,
/// `containerd.sock`, `config.toml`, `containerd.log`, `containerd.pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// Data dir of this containerd instance.
    pub root_dir: PathBuf,
    /// Image used for pod sandboxes; must already be imported (no registry on the node).
    pub sandbox_image: String,
    /// CNI plugin binaries. The agent sets its own dir holding mini's built-in plugins
    /// (`<data-dir>/agent/cni/bin`); `None` picks the first of `CNI_BIN_DIRS` that has plugins.
    pub cni_bin_dir: Option<PathBuf>,
    /// CNI network configs (owned by the agent).
    pub cni_conf_dir: PathBuf,
    /// Socket path; `None` means `root_dir/containerd.sock`.
    pub socket: Option<PathBuf>,
    /// The containerd binary (looked up in PATH unless absolute).
    pub containerd_bin: PathBuf,
    /// Command prefix containerd is run under, e.g. `["nsenter", "--net=/var/run/netns/n1"]`
    /// (not `ip netns exec`, which hides the cgroup mounts from runc). Empty: run it directly.
    pub launcher: Vec<OsString>,
    /// containerd's `--log-level`.
    pub log_level: String,
    /// Streaming server port for exec/attach/port-forward; 0 picks an ephemeral port.
    pub stream_server_port: u16,
    /// How long `Supervisor::start` waits for CRI to answer.
    pub ready_timeout: Duration,
    /// How long containerd gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl ContainerdConfig {
    /// A config with defaults for everything but the data dir, sandbox image and CNI conf dir.
    pub fn new(
        root_dir: impl Into<PathBuf>,
        sandbox_image: impl Into<String>,
        cni_conf_dir: impl Into<PathBuf>,
    ) -> Self {
        ContainerdConfig {
            root_dir: root_dir.into(),
            sandbox_image: sandbox_image.into(),
            cni_bin_dir: None,
            cni_conf_dir: cni_conf_dir.into(),
            socket: None,
            containerd_bin: PathBuf::from("containerd"),
            launcher: Vec::new(),
            log_level: "info".to_string(),
            stream_server_port: 0,
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.root_dir.join("containerd.sock"))
    }
    pub fn config_path(&self) -> PathBuf {
        self.root_dir.join("config.toml")
    }
    /// containerd's `--root` (images, snapshots, metadata).
    pub fn containerd_root(&self) -> PathBuf {
        self.root_dir.join("root")
    }
    /// containerd's `--state` (sockets, task state; tmpfs-like data).
    pub fn state_dir(&self) -> PathBuf {
        self.root_dir.join("state")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root_dir.join("containerd.log")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.root_dir.join("containerd.pid")
    }
    /// The CRI plugin's registry `config_path`: one `<host>/hosts.toml` per registry host
    /// (see `registry_hosts`), read by containerd on every pull.
    pub fn certs_dir(&self) -> PathBuf {
        self.root_dir.join("certs.d")
    }

    /// Fails when the socket (or containerd's ttrpc socket next to it) would not fit in a unix
    /// socket address.
    pub fn check_socket_path(&self) -> Result<(), ContainerdError> {
        let path = self.socket_path();
        let len = path.as_os_str().len();
        let max = MAX_SOCKET_PATH - TTRPC_SUFFIX.len();
        if len > max {
            return Err(ContainerdError::SocketPathTooLong { path, len, max });
        }
        Ok(())
    }

    fn resolved_cni_bin_dir(&self) -> Result<PathBuf, ContainerdError> {
        match &self.cni_bin_dir {
            Some(dir) => Ok(dir.clone()),
            None => detect_cni_bin_dir().ok_or(ContainerdError::NoCniBinDir),
        }
    }

    /// The config.toml text (containerd config version 2). Pod network namespaces are mounted
    /// under containerd's state dir (`netns_mounts_under_state_dir`), inside mini's data dir,
    /// so `mini killall` and `mini uninstall` find every one of them there, even those of
    /// sandboxes that failed half-way.
    pub fn render(&self) -> Result<String, ContainerdError> {
        self.check_socket_path()?;
        let cni_bin_dir = self.resolved_cni_bin_dir()?;
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let mut out = String::new();
        let disabled = DISABLED_PLUGINS
            .iter()
            .map(|p| toml_str(p))
            .collect::<Vec<_>>()
            .join(", ");
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# Written by mini agent; changes are overwritten at start.\n\
             version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [{disabled}]\n\
             \n\
             [grpc]\n\
             \x20 address = {socket}\n\
             \n\
             [debug]\n\
             \x20 level = {level}\n\
             \n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n\
             \x20 path = {opt}\n\
             \n\
             [{cri}]\n\
             \x20 sandbox_image = {sandbox_image}\n\
             \x20 restrict_oom_score_adj = true\n\
             \x20 netns_mounts_under_state_dir = true\n\
             \x20 stream_server_address = \"127.0.0.1\"\n\
             \x20 stream_server_port = {port}\n\
             \x20 enable_tls_streaming = false\n\
             \n\
             [{cri}.containerd]\n\
             \x20 snapshotter = \"overlayfs\"\n\
             \x20 default_runtime_name = \"runc\"\n\
             \n\
             [{cri}.containerd.runtimes.runc]\n\
             \x20 runtime_type = \"io.containerd.runc.v2\"\n\
             \n\
             [{cri}.containerd.runtimes.runc.options]\n\
             \x20 SystemdCgroup = false\n\
             \n\
             [{cri}.cni]\n\
             \x20 bin_dir = {cni_bin}\n\
             \x20 conf_dir = {cni_conf}\n\
             \n\
             [{cri}.registry]\n\
             \x20 config_path = {certs}\n",
            root = toml_path(&self.containerd_root()),
            state = toml_path(&self.state_dir()),
            socket = toml_path(&self.socket_path()),
            level = toml_str(&self.log_level),
            opt = toml_path(&self.root_dir.join("opt")),
            sandbox_image = toml_str(&self.sandbox_image),
            port = toml_str(&self.stream_server_port.to_string()),
            cni_bin = toml_path(&cni_bin_dir),
            cni_conf = toml_path(&self.cni_conf_dir),
            certs = toml_path(&self.certs_dir()),
        );
        Ok(out)
    }

    /// Creates the data dirs and writes config.toml; returns its path.
    pub fn write_config(&self) -> Result<PathBuf, ContainerdError> {
        let text = self.render()?;
        for dir in [
            self.root_dir.clone(),
            self.containerd_root(),
            self.state_dir(),
            self.certs_dir(),
            self.cni_conf_dir.clone(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| ContainerdError::Io {
                what: "creating directory",
                path: dir.clone(),
                source,
            })?;
        }
        if let Some(parent) = self.socket_path().parent() {
            std::fs::create_dir_all(parent).map_err(|source| ContainerdError::Io {
                what: "creating socket directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let path = self.config_path();
        std::fs::write(&path, text).map_err(|source| ContainerdError::Io {
            what: "writing containerd config",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// A TOML basic string.
pub(crate) fn toml_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn toml_path(path: &Path) -> String {
    toml_str(&path.to_string_lossy())
}

/// The first of `CNI_BIN_DIRS` that holds CNI plugins (a `loopback` or `bridge` binary).
pub fn detect_cni_bin_dir() -> Option<PathBuf> {
    detect_cni_bin_dir_in(CNI_BIN_DIRS.iter().map(PathBuf::from))
}

fn detect_cni_bin_dir_in(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates
        .into_iter()
        .find(|dir| dir.join("loopback").is_file() || dir.join("bridge").is_file())
}

// ---- process helpers ------------------------------------------------------------------------

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Whether `pid` is a containerd serving `socket` (guards against pid reuse).
fn is_containerd_for(pid: u32, socket: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_containerd = args.first().is_some_and(|a| a.ends_with(b"containerd"));
    let socket = socket.as_os_str().as_encoded_bytes();
    is_containerd && args.contains(&socket)
}

fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_pid_file(path: &Path, pid: u32) -> Result<(), ContainerdError> {
    std::fs::write(path, format!("{pid}\n")).map_err(|source| ContainerdError::Io {
        what: "writing pid file",
        path: path.to_path_buf(),
        source,
    })
}

fn signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(error) = kill(Pid::from_raw(raw), sig) {
        tracing::debug!(pid, ?sig, %error, "signalling containerd");
    }
}

/// The last lines of containerd's log, for start-up errors.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn_containerd(config: &ContainerdConfig) -> Result<Child, ContainerdError> {
    let log_path = config.log_path();
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ContainerdError::Io {
                what: "opening containerd log",
                path: log_path.clone(),
                source,
            })
    };
    let (stdout, stderr) = (open_log()?, open_log()?);
    let mut command = match config.launcher.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&config.containerd_bin);
            command
        }
        None => Command::new(&config.containerd_bin),
    };
    command
        .arg("--config")
        .arg(config.config_path())
        .arg("--root")
        .arg(config.containerd_root())
        .arg("--state")
        .arg(config.state_dir())
        .arg("--address")
        .arg(config.socket_path())
        .arg("--log-level")
        .arg(&config.log_level)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Own process group: the agent's Ctrl-C and terminal signals must not reach it.
        .process_group(0)
        // Outliving the agent is intended: a restarted agent adopts it.
        .kill_on_drop(false);
    let child = command.spawn().map_err(|source| ContainerdError::Spawn {
        binary: config.containerd_bin.display().to_string(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    write_pid_file(&config.pid_path(), pid)?;
    tracing::info!(pid, socket = %config.socket_path().display(), "started containerd");
    Ok(child)
}

/// The containerd being supervised: our child, or one adopted from an earlier agent run.
enum Process {
    Child(Child),
    Adopted(u32),
}

impl Process {
    fn pid(&self) -> u32 {
        match self {
            Process::Child(child) => child.id().unwrap_or_default(),
            Process::Adopted(pid) => *pid,
        }
    }

    /// Waits until the process ends; returns a description of how.
    async fn wait(&mut self) -> String {
        match self {
            Process::Child(child) => match child.wait().await {
                Ok(status) => status.to_string(),
                Err(error) => format!("wait failed: {error}"),
            },
            Process::Adopted(pid) => {
                while process_alive(*pid) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                "adopted process ended".to_string()
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Only containerd itself is signalled: the shims run
    /// in their own process groups and keep the containers alive.
    async fn terminate(&mut self, grace: Duration) {
        let pid = self.pid();
        if pid == 0 {
            return;
        }
        signal(pid, Signal::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, ?grace, "containerd ignored SIGTERM; sending SIGKILL");
        signal(pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
    }
}

/// Starts and watches the node's containerd.
pub struct Supervisor;

impl Supervisor {
    /// Writes the config, starts containerd (or adopts the one an earlier agent left running on
    /// the same socket), waits until CRI answers, and keeps it running until `shutdown` is
    /// cancelled or `SupervisorHandle::stop` is called.
    pub async fn start(
        config: ContainerdConfig,
        shutdown: CancellationToken,
    ) -> Result<SupervisorHandle, ContainerdError> {
        // a containerd adopted from an earlier agent runs with the config.toml it started with
        let previous = std::fs::read_to_string(config.config_path()).ok();
        config.write_config()?;
        let config_changed = previous != Some(config.render()?);
        let socket = config.socket_path();
        let pid_path = config.pid_path();
        let probe = GrpcRuntime::connect_with(
            &socket,
            Deadlines {
                short: Duration::from_secs(2),
                ..Deadlines::default()
            },
        )?;

        let mut adopted = None;
        if let Some(pid) = read_pid_file(&pid_path) {
            if process_alive(pid) && is_containerd_for(pid, &socket) && config_changed {
                tracing::info!(
                    pid,
                    config = %config.config_path().display(),
                    "the running containerd has an older config; restarting it (containers keep running)"
                );
                Process::Adopted(pid).terminate(config.stop_grace).await;
            } else if process_alive(pid) && is_containerd_for(pid, &socket) {
                match probe.wait_ready(config.ready_timeout).await {
                    Ok(_) => {
                        tracing::info!(pid, "adopted running containerd");
                        adopted = Some(Process::Adopted(pid));
                    }
                    Err(error) => {
                        tracing::warn!(pid, %error, "earlier containerd does not answer; replacing it");
                        Process::Adopted(pid).terminate(config.stop_grace).await;
                    }
                }
            }
        }
        let process = match adopted {
            Some(process) => process,
            None => {
                if socket.exists() {
                    if probe.wait_ready(Duration::from_millis(500)).await.is_ok() {
                        return Err(ContainerdError::SocketInUse {
                            socket,
                            pid_file: pid_path,
                        });
                    }
                    // Left over from a containerd that died: it would refuse to listen.
                    std::fs::remove_file(&socket).map_err(|source| ContainerdError::Io {
                        what: "removing stale socket",
                        path: socket.clone(),
                        source,
                    })?;
                }
                let mut child = Process::Child(spawn_containerd(&config)?);
                let ready = tokio::select! {
                    status = child.wait() => Err(ContainerdError::ExitedEarly {
                        status,
                        log: config.log_path(),
                        tail: log_tail(&config.log_path(), 20),
                    }),
                    ready = probe.wait_ready(config.ready_timeout) => ready.map_err(|source| {
                        ContainerdError::NotReady {
                            timeout: config.ready_timeout,
                            log: config.log_path(),
                            tail: log_tail(&config.log_path(), 20),
                            source: Box::new(source),
                        }
                    }),
                };
                if let Err(error) = ready {
                    child.terminate(config.stop_grace).await;
                    let _ = std::fs::remove_file(&pid_path);
                    return Err(error);
                }
                child
            }
        };

        let adopted = matches!(process, Process::Adopted(_));
        let stop = shutdown.child_token();
        let pid = Arc::new(AtomicU32::new(process.pid()));
        let restarts = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(supervise(
            config.clone(),
            process,
            stop.clone(),
            Arc::clone(&pid),
            Arc::clone(&restarts),
        ));
        Ok(SupervisorHandle {
            socket,
            adopted,
            pid,
            restarts,
            stop,
            task,
        })
    }
}

async fn supervise(
    config: ContainerdConfig,
    initial: Process,
    stop: CancellationToken,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
) {
    let mut process = Some(initial);
    let mut started = Instant::now();
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(running) = process.as_mut() {
            tokio::select! {
                _ = stop.cancelled() => {
                    tracing::info!(pid = running.pid(), "stopping containerd");
                    running.terminate(config.stop_grace).await;
                    let _ = std::fs::remove_file(config.pid_path());
                    return;
                }
                status = running.wait() => {
                    tracing::warn!(
                        pid = running.pid(),
                        %status,
                        log = %config.log_path().display(),
                        "containerd exited; restarting in {backoff:?}"
                    );
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = MIN_BACKOFF;
                    }
                }
            }
            process = None;
            pid.store(0, Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = std::fs::remove_file(config.pid_path());
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let respawn = std::fs::remove_file(config.socket_path())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| ContainerdError::Io {
                what: "removing stale socket",
                path: config.socket_path(),
                source,
            })
            .and_then(|()| spawn_containerd(&config));
        match respawn {
            Ok(child) => {
                let child_pid = child.id().unwrap_or_default();
                pid.store(child_pid, Ordering::Relaxed);
                restarts.fetch_add(1, Ordering::Relaxed);
                started = Instant::now();
                process = Some(Process::Child(child));
            }
            Err(error) => {
                tracing::error!(%error, "restarting containerd failed; retrying in {backoff:?}");
            }
        }
    }
}

/// A running, supervised containerd.
pub struct SupervisorHandle {
    socket: PathBuf,
    adopted: bool,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SupervisorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("socket", &self.socket)
            .field("pid", &self.pid())
            .field("adopted", &self.adopted)
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl SupervisorHandle {
    /// The CRI socket (give it to `GrpcRuntime::connect`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A CRI client for this containerd.
    pub fn runtime(&self) -> Result<GrpcRuntime, CriError> {
        GrpcRuntime::connect(&self.socket)
    }

    /// The pid of the running containerd; 0 while it is being restarted.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Whether the containerd was left running by an earlier agent and adopted at start.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// How many times containerd died and was started again.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Stops containerd (SIGTERM, SIGKILL after the grace period) and waits until it is gone.
    /// Containers keep running. Also what happens when the shutdown token is cancelled; this
    /// waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "containerd supervisor task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &Path) -> ContainerdConfig {
        let mut config = ContainerdConfig::new(root, "mini.local/pause:1", root.join("cni"));
        config.cni_bin_dir = Some(PathBuf::from("/usr/lib/cni"));
        config
    }

    #[test]
    fn render_has_cri_settings_this_machine_needs() {
        let text = config(Path::new("/var/lib/mini/c"))
            .render()
            .expect("render");
        for needle in [
            "version = 2\n",
            "root = \"/var/lib/mini/c/root\"",
            "state = \"/var/lib/mini/c/state\"",
            "address = \"/var/lib/mini/c/containerd.sock\"",
            "[plugins.\"io.containerd.grpc.v1.cri\"]\n",
            "sandbox_image = \"mini.local/pause:1\"",
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            "stream_server_address = \"127.0.0.1\"",
            "stream_server_port = \"0\"",
            "enable_tls_streaming = false",
            "snapshotter = \"overlayfs\"",
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"",
            "SystemdCgroup = false",
            "bin_dir = \"/usr/lib/cni\"",
            "conf_dir = \"/var/lib/mini/c/cni\"",
            "\"io.containerd.snapshotter.v1.aufs\"",
            "\"io.containerd.snapshotter.v1.devmapper\"",
            "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/var/lib/mini/c/certs.d\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("grpc.v1.cri\", "),
            "CRI must not be disabled"
        );
    }

    #[test]
    fn render_parses_as_toml_with_registry_config_path() {
        let text = config(Path::new("/var/lib/mini/c"))
            .render()
            .expect("render");
        let doc: toml::Table = text.parse().expect("valid TOML");
        let registry = doc["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
            .as_table()
            .expect("registry table");
        assert_eq!(
            registry["config_path"].as_str(),
            Some("/var/lib/mini/c/certs.d")
        );
        assert_eq!(doc["version"].as_integer(), Some(2));
    }

    #[test]
    fn render_escapes_strings() {
        let mut config = config(Path::new("/tmp/a"));
        config.sandbox_image = "we\"ird\\image".to_string();
        let text = config.render().expect("render");
        assert!(
            text.contains(r#"sandbox_image = "we\"ird\\image""#),
            "{text}"
        );
    }

    #[test]
    fn check_socket_path_too_long_fails_with_length() {
        let long = format!("/tmp/{}", "d".repeat(100));
        let config = config(Path::new(&long));
        let error = config.render().expect_err("too long");
        match &error {
            ContainerdError::SocketPathTooLong { len, max, .. } => {
                assert_eq!(*len, long.len() + "/containerd.sock".len());
                assert_eq!(*max, 101);
            }
            other => panic!("expected SocketPathTooLong, got {other:?}"),
        }
        assert!(error.to_string().contains("shorter"), "{error}");
    }

    #[test]
    fn check_socket_path_explicit_short_socket_accepted() {
        let long = format!("/tmp/{}", "d".repeat(100));
        let mut config = config(Path::new(&long));
        config.socket = Some(PathBuf::from("/run/mini/c.sock"));
        config.check_socket_path().expect("short socket");
        assert!(config
            .render()
            .expect("render")
            .contains("address = \"/run/mini/c.sock\""));
    }

    #[test]
    fn write_config_creates_dirs_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let path = config.write_config().expect("write");
        assert_eq!(path, dir.path().join("config.toml"));
        assert!(dir.path().join("root").is_dir());
        assert!(dir.path().join("state").is_dir());
        assert!(dir.path().join("cni").is_dir());
        assert!(dir.path().join("certs.d").is_dir());
        let text = std::fs::read_to_string(path).expect("read");
        assert!(text.contains("restrict_oom_score_adj = true"));
    }

    #[test]
    fn detect_cni_bin_dir_in_picks_first_with_plugins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        let full = dir.path().join("full");
        std::fs::create_dir_all(&empty).expect("mkdir");
        std::fs::create_dir_all(&full).expect("mkdir");
        std::fs::write(full.join("loopback"), b"").expect("write");
        assert_eq!(
            detect_cni_bin_dir_in([empty.clone(), full.clone()]),
            Some(full)
        );
        assert_eq!(detect_cni_bin_dir_in([empty]), None);
    }

    #[test]
    fn process_alive_reports_self_and_not_nonsense() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }

    #[test]
    fn is_containerd_for_rejects_other_processes() {
        assert!(!is_containerd_for(
            std::process::id(),
            Path::new("/tmp/x.sock")
        ));
    }

    #[tokio::test]
    async fn start_missing_binary_fails_with_spawn_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path());
        config.containerd_bin = dir.path().join("no-such-containerd");
        let error = Supervisor::start(config, CancellationToken::new())
            .await
            .expect_err("no binary");
        assert!(
            matches!(error, ContainerdError::Spawn { .. }),
            "expected Spawn, got {error:?}"
        );
    }

    #[tokio::test]
    async fn start_binary_that_exits_fails_with_log_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-containerd");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'failed to load plugin: boom' >&2\nexit 3\n",
        )
        .expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut config = config(dir.path());
        config.containerd_bin = script;
        let error = Supervisor::start(config, CancellationToken::new())
            .await
            .expect_err("exits");
        match &error {
            ContainerdError::ExitedEarly { tail, .. } => {
                assert!(tail.contains("boom"), "{tail}")
            }
            other => panic!("expected ExitedEarly, got {other:?}"),
        }
        assert!(!dir.path().join("containerd.pid").exists());
    }
}
