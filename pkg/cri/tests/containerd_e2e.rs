//! End-to-end test of the managed containerd and the gRPC CRI client: a private containerd in a
//! fresh network namespace, a locally built busybox image, one pod sandbox and one container,
//! exec, a containerd crash and restart, adoption by a second supervisor, and clean-up.
//! Needs root, containerd, ctr, runc, nsenter, ip, busybox-static and the CNI plugins (mini's
//! built-in ones with `MINI_BIN=<built mini binary>`, else a system plugin dir); run by hand:
//! `MINI_BIN=target/debug/mini cargo test -p mini-cri --test containerd_e2e -- --ignored --nocapture`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mini_cri::proto::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, CreateContainerRequest,
    ExecRequest, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    RunPodSandboxRequest,
};
use mini_cri::{ContainerdConfig, GrpcRuntime, Runtime, Supervisor};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const BUSYBOX_IMAGE: &str = "mini.local/busybox:e2e";
const PAUSE_IMAGE: &str = "mini.local/pause:e2e";

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".to_string());
    }
    for tool in ["containerd", "ctr", "runc", "nsenter", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not in PATH"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("/bin/busybox (busybox-static) missing".to_string());
    }
    if mini_bin().is_none() && mini_cri::containerd::detect_cni_bin_dir().is_none() {
        return Some("no CNI plugins (set MINI_BIN to the built mini binary)".to_string());
    }
    None
}

/// The mini binary whose built-in CNI plugins the test uses (`MINI_BIN`), if given.
fn mini_bin() -> Option<PathBuf> {
    std::env::var_os("MINI_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

/// A CNI bin dir: links to `MINI_BIN` under the plugin names, else the system's plugins.
fn cni_bin_dir(root: &Path) -> PathBuf {
    let Some(mini) = mini_bin() else {
        return mini_cri::containerd::detect_cni_bin_dir().expect("checked as a prerequisite");
    };
    let dir = root.join("cni-bin");
    std::fs::create_dir_all(&dir).expect("cni bin dir");
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        std::os::unix::fs::symlink(&mini, dir.join(name)).expect("plugin link");
    }
    dir
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Cleans up whatever the test leaves behind when it fails half-way: the container processes
/// (found by the cgroups of the sandboxes and containers it created), the shims and containerd
/// of this instance (found by its unique socket path), mounts under the data dir, cgroups, the
/// pod network namespaces and the test's own netns.
struct Cleanup {
    root: PathBuf,
    socket: PathBuf,
    netns: String,
    /// Sandbox and container ids created so far.
    ids: Mutex<Vec<String>>,
    /// Pod network namespaces (`/var/run/netns/cni-...`) created by CNI for our sandboxes.
    pod_netns: Mutex<Vec<String>>,
}

impl Cleanup {
    fn created(&self, id: &str) {
        self.ids.lock().expect("ids").push(id.to_string());
    }
}

fn kill_pids_where(what: &str, matches: impl Fn(i32) -> Option<String>) -> usize {
    let mut killed = 0;
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Some(description) = matches(pid) {
                eprintln!("cleanup: killing leftover {what} pid {pid}: {description}");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed += 1;
            }
        }
    }
    killed
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        let socket = self.socket.to_string_lossy().to_string();
        let in_our_cgroup = |pid: i32| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            ids.iter()
                .find(|id| cgroup.contains(&format!("/k8s.io/{id}")))
                .map(|id| format!("in cgroup of {id}"))
        };
        let of_our_containerd = |pid: i32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&socket).then_some(cmdline)
        };
        let mut killed = kill_pids_where("container", in_our_cgroup);
        killed += kill_pids_where("containerd", of_our_containerd);
        if killed > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let root = self.root.to_string_lossy().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&root))
            .collect();
        targets.reverse();
        for target in targets {
            eprintln!("cleanup: unmounting {target}");
            let _ = Command::new("umount").args(["-l", target]).status();
        }
        for id in &ids {
            for controller in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = controller.path().join("k8s.io").join(id);
                if dir.is_dir() {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        let pod_netns = self.pod_netns.lock().map(|v| v.clone()).unwrap_or_default();
        for name in pod_netns.iter().chain(std::iter::once(&self.netns)) {
            if Path::new("/var/run/netns").join(name).exists() {
                let _ = Command::new("ip").args(["netns", "delete", name]).status();
            }
        }
    }
}

/// The network namespace CNI made for a sandbox (its name under /var/run/netns, else its path),
/// from the verbose sandbox status.
fn sandbox_netns_name(info: &HashMap<String, String>) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let path = info
        .get("runtimeSpec")?
        .pointer("/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()?
        .to_string();
    // containerd 1.6 with a private state dir pins the netns under that dir: keep the full
    // path then (`Path::new("/var/run/netns").join` of an absolute path is the path itself)
    let name = path
        .strip_prefix("/var/run/netns/")
        .or_else(|| path.strip_prefix("/run/netns/"))
        .map(str::to_string);
    Some(name.unwrap_or(path))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An OCI image-layout tarball with two images sharing one busybox layer.
fn build_oci_archive(path: &Path) {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    let mut layer = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    for name in ["bin/", "tmp/", "etc/", "proc/", "sys/", "dev/"] {
        layer
            .append_data(&mut dir.clone(), name, std::io::empty())
            .expect("dir entry");
    }
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_mode(0o755);
    file.set_size(busybox.len() as u64);
    file.set_mtime(0);
    layer
        .append_data(&mut file, "bin/busybox", busybox.as_slice())
        .expect("busybox entry");
    for applet in [
        "sh", "sleep", "cat", "echo", "ls", "hostname", "true", "false",
    ] {
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        link.set_mtime(0);
        layer
            .append_link(&mut link, format!("bin/{applet}"), "busybox")
            .expect("symlink entry");
    }
    let layer = layer.into_inner().expect("layer tar");
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));

    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    for (name, entrypoint) in [
        (BUSYBOX_IMAGE, vec!["/bin/sleep", "3600"]),
        (PAUSE_IMAGE, vec!["/bin/sleep", "2147483647"]),
    ] {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Entrypoint": entrypoint, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .expect("config json");
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        }))
        .expect("manifest json");
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next(),
            },
        }));
        blobs.push((config_digest, config));
        blobs.push((manifest_digest, manifest));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": manifests,
    }))
    .expect("index json");

    let file = std::fs::File::create(path).expect("create archive");
    let mut archive = tar::Builder::new(file);
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        archive
            .append_data(&mut header, name, data)
            .expect("archive entry");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for (digest, data) in &blobs {
        let hex = digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), data);
    }
    archive
        .into_inner()
        .expect("finish archive")
        .flush()
        .expect("flush");
}

fn write_cni_conf(dir: &Path, ipam_dir: &Path) {
    std::fs::create_dir_all(dir).expect("cni dir");
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "minitest",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "minitest0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.250.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "loopback"},
        ],
    });
    std::fs::write(
        dir.join("10-minitest.conflist"),
        serde_json::to_vec_pretty(&conf).expect("conf json"),
    )
    .expect("write conflist");
}

fn sandbox_config(log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "e2e".to_string(),
            uid: "e2e-uid-1".to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: "e2e".to_string(),
        log_directory: log_dir.to_string_lossy().to_string(),
        labels: HashMap::from([("app".to_string(), "e2e".to_string())]),
        ..Default::default()
    }
}

/// Writes a line to the container's stdout (its process's fd 1, from the host), which containerd
/// logs.
async fn echo_to_container_log(runtime: &GrpcRuntime, id: &str, text: &str) {
    let status = runtime.container_status(id, true).await.expect("status");
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info json");
    let pid = info
        .get("pid")
        .and_then(|p| p.as_u64())
        .expect("container pid");
    let mut stdout = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/1"))
        .expect("the container's stdout");
    stdout
        .write_all(format!("{text}\n").as_bytes())
        .expect("writing to the container's stdout");
}

/// Waits (bounded) until the log file holds `text`.
async fn wait_for_text(path: &Path, text: &str) {
    let t = Instant::now();
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{text:?} never reached {}: {content:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn container_state(runtime: &GrpcRuntime, id: &str) -> i32 {
    runtime
        .container_status(id, false)
        .await
        .expect("container status")
        .status
        .expect("status body")
        .state
}

fn shim_alive_for(sandbox_id: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("containerd-shim") && cmdline.contains(sandbox_id)
            })
        })
        .unwrap_or(false)
}

#[test]
#[ignore = "needs root and containerd; run by hand with --ignored"]
fn containerd_supervisor_and_grpc_runtime_run_a_pod() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipping containerd e2e test: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mcri")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let root = dir.path().to_path_buf();
    let netns = format!("minicri{}", std::process::id());
    let mut config = ContainerdConfig::new(root.join("c"), PAUSE_IMAGE, root.join("cni"));
    config.cni_bin_dir = Some(cni_bin_dir(&root));
    config.launcher = vec![
        "nsenter".into(),
        format!("--net=/var/run/netns/{netns}").into(),
    ];
    let socket = config.socket_path();
    let cleanup = Cleanup {
        root: root.clone(),
        socket: socket.clone(),
        netns: netns.clone(),
        ids: Mutex::new(Vec::new()),
        pod_netns: Mutex::new(Vec::new()),
    };
    run("ip", &["netns", "add", &netns]);
    run("ip", &["-n", &netns, "link", "set", "lo", "up"]);
    write_cni_conf(&root.join("cni"), &root.join("ipam"));
    let archive = root.join("images.tar");
    build_oci_archive(&archive);

    // The first supervisor runs on its own runtime so that dropping the runtime abandons it
    // the way a SIGKILLed agent would.
    let agent1 = tokio::runtime::Runtime::new().expect("runtime 1");
    let main = tokio::runtime::Runtime::new().expect("runtime 2");
    let shutdown = CancellationToken::new();

    let started = Instant::now();
    let first = agent1
        .block_on(Supervisor::start(config.clone(), shutdown.clone()))
        .expect("start containerd");
    eprintln!(
        "containerd start until CRI ready: {:?} (pid {})",
        started.elapsed(),
        first.pid()
    );
    assert!(!first.adopted());

    let socket_str = socket.to_string_lossy().to_string();
    run(
        "ctr",
        &[
            "-n",
            "k8s.io",
            "--address",
            &socket_str,
            "images",
            "import",
            &archive.to_string_lossy(),
        ],
    );

    let runtime = main.block_on(async { GrpcRuntime::connect(&socket).expect("client") });
    let (sandbox_id, container_id, pod_netns) = main.block_on(async {
        let version = runtime.version().await.expect("version");
        assert_eq!(version.runtime_api_version, "v1");
        let image = runtime
            .image_status(&ImageSpec {
                image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            })
            .await
            .expect("image status")
            .expect("imported image present");
        assert!(image.id.starts_with("sha256:"));
        assert!(runtime
            .image_status(&ImageSpec {
                image: "mini.local/absent:1".to_string(),
                ..Default::default()
            })
            .await
            .expect("image status")
            .is_none());

        let log_dir = root.join("logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let sandbox = sandbox_config(&log_dir);
        let t = Instant::now();
        let sandbox_id = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox");
        eprintln!("RunPodSandbox: {:?}", t.elapsed());
        cleanup.created(&sandbox_id);
        let status = runtime
            .pod_sandbox_status(&sandbox_id, true)
            .await
            .expect("sandbox status");
        let pod_netns = sandbox_netns_name(&status.info).expect("pod netns in verbose info");
        cleanup
            .pod_netns
            .lock()
            .expect("netns")
            .push(pod_netns.clone());
        let status = status.status.expect("status body");
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        assert!(ip.starts_with("10.250.0."), "pod ip {ip:?}");
        assert_eq!(status.labels.get("app").map(String::as_str), Some("e2e"));

        let t = Instant::now();
        let container_id = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "main".to_string(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: BUSYBOX_IMAGE.to_string(),
                        ..Default::default()
                    }),
                    log_path: "main/0.log".to_string(),
                    labels: HashMap::from([("role".to_string(), "main".to_string())]),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox),
            })
            .await
            .expect("CreateContainer");
        cleanup.created(&container_id);
        runtime
            .start_container(&container_id)
            .await
            .expect("StartContainer");
        eprintln!("CreateContainer+StartContainer: {:?}", t.elapsed());
        assert_eq!(
            container_state(&runtime, &container_id).await,
            ContainerState::ContainerRunning as i32
        );

        let listed = runtime
            .list_containers(Some(ContainerFilter {
                pod_sandbox_id: sandbox_id.clone(),
                label_selector: HashMap::from([("role".to_string(), "main".to_string())]),
                ..Default::default()
            }))
            .await
            .expect("list containers");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, container_id);

        let t = Instant::now();
        let exec = runtime
            .exec_sync(
                &container_id,
                vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hello; echo oops >&2; hostname; exit 3".into(),
                ],
                10,
            )
            .await
            .expect("ExecSync");
        eprintln!("ExecSync: {:?}", t.elapsed());
        assert_eq!(String::from_utf8_lossy(&exec.stdout), "hello\ne2e\n");
        assert_eq!(String::from_utf8_lossy(&exec.stderr), "oops\n");
        assert_eq!(exec.exit_code, 3);

        let url = runtime
            .exec(ExecRequest {
                container_id: container_id.clone(),
                cmd: vec!["sh".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .expect("Exec");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert!(!url.starts_with("http://127.0.0.1:0/"), "{url}");

        // log rotation: the file is renamed away and ReopenContainerLog has containerd write a
        // new one at the container's log path (what mini's log shipper does)
        let log = log_dir.join("main/0.log");
        let rotated = log_dir.join("main/0.log.rotated");
        echo_to_container_log(&runtime, &container_id, "before-rotation").await;
        wait_for_text(&log, "before-rotation").await;
        std::fs::rename(&log, &rotated).expect("rename the log away");
        runtime
            .reopen_container_log(&container_id)
            .await
            .expect("ReopenContainerLog");
        assert!(log.is_file(), "containerd created no new log file");
        echo_to_container_log(&runtime, &container_id, "after-rotation").await;
        wait_for_text(&log, "after-rotation").await;
        let old = std::fs::read_to_string(&rotated).expect("rotated log");
        assert!(
            old.contains("before-rotation") && !old.contains("after-rotation"),
            "{old}"
        );

        let missing = runtime
            .container_status("0123456789abcdef", false)
            .await
            .expect_err("no such container");
        assert!(missing.is_not_found(), "{missing:?}");
        (sandbox_id, container_id, pod_netns)
    });

    // containerd dies: the supervisor starts it again and the container keeps running.
    let old_pid = first.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old_pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill containerd");
    let t = Instant::now();
    while first.restarts() == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "no restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    main.block_on(async {
        runtime
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready after restart");
        eprintln!("containerd restart until CRI ready: {:?}", t.elapsed());
        assert_eq!(
            container_state(&runtime, &container_id).await,
            ContainerState::ContainerRunning as i32
        );
    });
    let restarted_pid = first.pid();
    assert_ne!(restarted_pid, old_pid);

    // The agent is SIGKILLed (its runtime vanishes without stopping anything); the next agent
    // adopts the running containerd instead of starting a second one.
    drop(first);
    drop(agent1);
    let second = main
        .block_on(Supervisor::start(config.clone(), CancellationToken::new()))
        .expect("adopt containerd");
    assert!(second.adopted());
    assert_eq!(second.pid(), restarted_pid);

    // Stopping containerd leaves the containers running (the shims are separate processes).
    main.block_on(second.stop());
    assert!(
        !Path::new(&format!("/proc/{restarted_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{restarted_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "containerd still running after stop"
    );
    assert!(shim_alive_for(&sandbox_id), "shim died with containerd");

    let third = main
        .block_on(Supervisor::start(config.clone(), shutdown.clone()))
        .expect("start containerd again");
    assert!(!third.adopted());
    main.block_on(async {
        runtime
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        assert_eq!(
            container_state(&runtime, &container_id).await,
            ContainerState::ContainerRunning as i32
        );
        let t = Instant::now();
        runtime
            .stop_container(&container_id, 1)
            .await
            .expect("StopContainer");
        eprintln!("StopContainer: {:?}", t.elapsed());
        let status = runtime
            .container_status(&container_id, false)
            .await
            .expect("status")
            .status
            .expect("body");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        // sleep is not PID 1 (the pause process is, in the pod's pid namespace): SIGTERM ends it.
        assert_eq!(status.exit_code, 143);
        runtime
            .remove_container(&container_id)
            .await
            .expect("RemoveContainer");
        let t = Instant::now();
        runtime
            .stop_pod_sandbox(&sandbox_id)
            .await
            .expect("StopPodSandbox");
        runtime
            .remove_pod_sandbox(&sandbox_id)
            .await
            .expect("RemovePodSandbox");
        eprintln!("StopPodSandbox+RemovePodSandbox: {:?}", t.elapsed());
        assert!(runtime
            .list_pod_sandbox(None)
            .await
            .expect("list")
            .is_empty());
        assert!(
            !Path::new("/var/run/netns").join(&pod_netns).exists(),
            "pod netns {pod_netns} left after RemovePodSandbox"
        );
    });

    // Cancelling the shutdown token stops containerd too.
    let third_pid = third.pid();
    shutdown.cancel();
    main.block_on(third.stop());
    assert!(
        !Path::new(&format!("/proc/{third_pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{third_pid}/cmdline"))
                .map(|c| c.is_empty())
                .unwrap_or(true)
    );
    assert!(!config.pid_path().exists());
}
