//! Committing a container through a real containerd 1.6 (root only; skipped with a printed reason
//! otherwise): a private containerd started by `Supervisor`, the pause image and a busybox image
//! imported with mini-images, a host-network pod running busybox, a file written into it by exec, then
//! `Runtime::container_layer`: the streamed bytes match the layer digest, they gunzip to a tar holding
//! the file whose sha256 is the diff ID, the image reference and manifest digest are reported, and the
//! commit's lease is released afterwards.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mini_cri::proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RunPodSandboxRequest,
};
use mini_cri::{ContainerdConfig, Runtime, Supervisor};
use mini_images::archive::{open_bytes, TarIndex};
use mini_images::layout::plan;
use mini_images::{build_image_tarball, ImageFile, ImageImporter, ImageSymlink};
use mini_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use mini_proto::containerd::services::leases::v1::ListRequest;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "mini.local/commit-base:1";

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    for bin in ["containerd", "runc", "containerd-shim-runc-v2"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success());
        if found.ok() != Some(true) {
            return Some(format!("{bin} not installed"));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("{BUSYBOX} missing (busybox-static)"));
    }
    if mini_cri::containerd::detect_cni_bin_dir().is_none() {
        return Some("no CNI plugin directory (containernetworking-plugins)".into());
    }
    None
}

/// Cleans up after a failure half-way: processes in the cgroups of the test's sandbox and container,
/// the shims and containerd of this instance (their command lines name its socket), and mounts under the
/// test's directory.
struct Cleanup {
    root: PathBuf,
    socket: String,
    ids: Mutex<Vec<String>>,
}

fn kill_where(matches: impl Fn(i32) -> bool) -> usize {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != std::process::id() as i32 && matches(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        let mut killed = kill_where(|pid| {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            ids.iter()
                .any(|id| cgroup.contains(&format!("/k8s.io/{id}")))
        });
        killed += kill_where(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|arg| arg == self.socket)
        });
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
            let _ = Command::new("umount").args(["-l", target]).status();
        }
        for id in &ids {
            for controller in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(controller.path().join("k8s.io").join(id));
            }
        }
    }
}

fn busybox_tarball() -> Vec<u8> {
    build_image_tarball(&mini_images::ImageSpec {
        name: IMAGE.into(),
        files: vec![ImageFile {
            path: "/bin/busybox".into(),
            mode: 0o755,
            contents: std::fs::read(BUSYBOX).expect("read busybox"),
        }],
        symlinks: ["sh", "sleep", "echo", "mkdir"]
            .iter()
            .map(|l| ImageSymlink {
                path: format!("/bin/{l}"),
                target: "busybox".into(),
            })
            .collect(),
        entrypoint: vec!["/bin/sleep".into()],
        cmd: vec!["3600".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    })
    .expect("build image")
}

fn sandbox_config(log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "commit".into(),
            uid: "commit-uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.to_string_lossy().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_layer_of_running_container_holds_written_file() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED container_layer_of_running_container_holds_written_file: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mcommit")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let root = dir.path().to_path_buf();
    let mut config =
        ContainerdConfig::new(root.join("c"), mini_images::PAUSE_IMAGE, root.join("cni"));
    config.cni_bin_dir = mini_cri::containerd::detect_cni_bin_dir();
    let socket = config.socket_path();
    let cleanup = Cleanup {
        root: root.clone(),
        socket: socket.to_string_lossy().to_string(),
        ids: Mutex::new(Vec::new()),
    };
    let handle = Supervisor::start(config.clone(), CancellationToken::new())
        .await
        .expect("start containerd");

    let importer = ImageImporter::connect(&socket, &root.join("importer"))
        .await
        .expect("importer");
    importer.ensure_pause_image().await.expect("pause image");
    let tarball = busybox_tarball();
    let names = importer
        .import_bytes(&tarball, "busybox.tar")
        .await
        .expect("import busybox");
    assert_eq!(names, [IMAGE]);
    let manifest_digest = plan(TarIndex::build(open_bytes(&tarball, "t").unwrap(), "t").unwrap())
        .unwrap()
        .images[0]
        .manifest
        .desc
        .digest
        .clone();

    let runtime = handle.runtime().expect("client");
    let log_dir = root.join("logs");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let sandbox = sandbox_config(&log_dir);
    let sandbox_id = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox");
    cleanup.ids.lock().unwrap().push(sandbox_id.clone());
    let container_id = runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                log_path: "main/0.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox),
        })
        .await
        .expect("CreateContainer");
    cleanup.ids.lock().unwrap().push(container_id.clone());
    runtime
        .start_container(&container_id)
        .await
        .expect("StartContainer");
    let exec = runtime
        .exec_sync(
            &container_id,
            vec![
                "sh".into(),
                "-c".into(),
                "mkdir -p /data && echo committed > /data/hello.txt".into(),
            ],
            30,
        )
        .await
        .expect("ExecSync");
    assert_eq!(exec.exit_code, 0, "{exec:?}");

    let t = Instant::now();
    let layer = runtime
        .container_layer(&container_id, "")
        .await
        .expect("commit the container");
    eprintln!("container_layer: {:?} {layer:?}", t.elapsed());
    assert_eq!(layer.image_ref, IMAGE);
    assert_eq!(
        layer.image_digest.as_deref(),
        Some(manifest_digest.as_str())
    );
    assert_eq!(
        layer.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let size = layer.size;
    let (layer_digest, diff_id) = (layer.layer_digest.clone(), layer.diff_id.clone());
    let mut bytes = Vec::new();
    let mut content = layer.content;
    while let Some(chunk) = content.next().await {
        bytes.extend_from_slice(&chunk.expect("layer chunk"));
    }
    drop(content);
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(sha256(&bytes), layer_digest);
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut tar_bytes)
        .expect("gunzip");
    assert_eq!(sha256(&tar_bytes), diff_id);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        files.insert(path, data);
    }
    assert_eq!(
        files.get("data/hello.txt").map(|d| d.as_slice()),
        Some(&b"committed\n"[..]),
        "layer entries: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert!(
        !files.contains_key("bin/busybox"),
        "the layer holds only the changes"
    );

    // the lease goes once the stream is done
    let mut leases = LeasesClient::new(mini_proto::connect_unix(&socket).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = leases
            .list(mini_proto::with_namespace(
                ListRequest {
                    filters: Vec::new(),
                },
                "k8s.io",
            ))
            .await
            .expect("list leases")
            .into_inner()
            .leases;
        let left: Vec<String> = list
            .into_iter()
            .map(|l| l.id)
            .filter(|id| id.starts_with("mini-commit-"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "commit leases left: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    runtime
        .stop_container(&container_id, 0)
        .await
        .expect("stop container");
    runtime
        .remove_container(&container_id)
        .await
        .expect("remove container");
    runtime
        .stop_pod_sandbox(&sandbox_id)
        .await
        .expect("stop sandbox");
    runtime
        .remove_pod_sandbox(&sandbox_id)
        .await
        .expect("remove sandbox");
    handle.stop().await;
    drop(cleanup);
}
