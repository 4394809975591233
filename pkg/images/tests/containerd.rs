//! End-to-end import into a real, private containerd (root only; skipped with a printed reason otherwise):
//! the pause image and a busybox image built here are imported from a directory, re-import is skipped as
//! unchanged, `ctr images ls` shows them pinned, the layers are unpacked into overlayfs, and `ctr run`
//! starts a container from the imported busybox.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mini_images::archive::{open_bytes, TarIndex};
use mini_images::layout::plan;
use mini_images::{
    build_image_tarball, chain_ids, pause_image_tarball, ImageFile, ImageImporter, ImageSpec,
    ImageSymlink, PAUSE_IMAGE,
};

const BUSYBOX: &str = "/bin/busybox";

/// A private containerd, stopped by PID (SIGTERM, then SIGKILL) when dropped.
struct PrivateContainerd {
    child: Child,
    socket: PathBuf,
}

impl PrivateContainerd {
    fn start(dir: &Path) -> PrivateContainerd {
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = true\n",
        )
        .unwrap();
        let socket = dir.join("containerd.sock");
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = PrivateContainerd { child, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !me.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up; see {}",
                dir.join("containerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .args(["-n", "k8s.io", "--address"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not root".into());
    }
    for bin in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| o.status.success());
        if found.ok() != Some(true) {
            return Some(format!("{bin} not installed"));
        }
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

fn busybox_spec() -> ImageSpec {
    let links = ["sh", "sleep", "httpd", "nc", "cat", "ls", "echo", "env"];
    ImageSpec {
        name: "busybox:1.0".into(),
        files: vec![ImageFile {
            path: "/bin/busybox".into(),
            mode: 0o755,
            contents: std::fs::read(BUSYBOX).unwrap(),
        }],
        symlinks: links
            .iter()
            .map(|l| ImageSymlink {
                path: format!("/bin/{l}"),
                target: "busybox".into(),
            })
            .collect(),
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "sleep 3600".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

/// Re-packs an OCI-layout tarball as a gzip-compressed docker-archive (`docker save` format) tagged `tag`.
fn docker_archive_gz(oci: &[u8], tag: &str) -> Vec<u8> {
    use mini_images::layout::BlobData;
    let p = plan(TarIndex::build(open_bytes(oci, "t").unwrap(), "t").unwrap()).unwrap();
    let image = &p.images[0];
    let BlobData::Inline(config) = &image.config.data else {
        panic!("inline config")
    };
    let BlobData::Member(layer) = image.layers[0].data else {
        panic!("layer member")
    };
    let layer = p.tar.read_member(layer).unwrap();
    let config_name = format!("{}.json", &image.config.desc.digest[7..]);
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["0123/layer.tar"]}]);
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        (config_name.as_str(), config.as_slice()),
        ("0123/layer.tar", layer.as_slice()),
        ("manifest.json", &serde_json::to_vec(&manifest).unwrap()[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn top_chain_id(tarball: &[u8]) -> String {
    let p = plan(TarIndex::build(open_bytes(tarball, "t").unwrap(), "t").unwrap()).unwrap();
    chain_ids(&p.images[0].diff_ids).last().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_real_containerd_runs_busybox() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED import_into_real_containerd_runs_busybox: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let containerd = PrivateContainerd::start(dir.path());
    let state = dir.path().join("importer");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();

    let busybox = build_image_tarball(&busybox_spec()).unwrap();
    // Exercise decompression: busybox as zstd, the pause image as plain tar.
    std::fs::write(
        images.join("busybox.tar.zst"),
        zstd::stream::encode_all(busybox.as_slice(), 3).unwrap(),
    )
    .unwrap();
    std::fs::write(images.join("pause.tar"), pause_image_tarball()).unwrap();
    std::fs::write(
        images.join("app.tar.gz"),
        docker_archive_gz(&busybox, "example.com/team/app:2"),
    )
    .unwrap();
    std::fs::write(images.join("notes.txt"), b"not an image").unwrap();

    let importer = ImageImporter::connect(&containerd.socket, &state)
        .await
        .unwrap();
    importer.ensure_pause_image().await.unwrap();

    let first = importer.import_dir(&images).await.unwrap();
    let mut names: Vec<String> = first.imported.iter().flat_map(|(_, n)| n.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "docker.io/library/busybox:1.0".to_string(),
            "example.com/team/app:2".to_string(),
            PAUSE_IMAGE.to_string()
        ],
        "{first:?}"
    );
    assert_eq!(first.failed.len(), 1, "{first:?}");
    assert!(
        first.failed[0].1.contains("notes.txt") && first.failed[0].1.contains("not a tarball"),
        "{first:?}"
    );

    let second = importer.import_dir(&images).await.unwrap();
    assert!(
        second.imported.is_empty(),
        "re-import must skip unchanged files: {second:?}"
    );
    assert_eq!(second.unchanged.len(), 3, "{second:?}");

    // A fresh importer (agent restart) also skips them, from the state file.
    let restarted = ImageImporter::connect(&containerd.socket, &state)
        .await
        .unwrap();
    let third = restarted.import_dir(&images).await.unwrap();
    assert!(
        third.imported.is_empty() && third.unchanged.len() == 3,
        "{third:?}"
    );

    let ls = containerd.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    for name in [
        "docker.io/library/busybox:1.0",
        "example.com/team/app:2",
        PAUSE_IMAGE,
    ] {
        let line = ls
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{ls}"));
        assert!(line.contains("io.cri-containerd.pinned=pinned"), "{line}");
        assert!(line.contains("io.cri-containerd.image=managed"), "{line}");
    }

    // Unpacked by the import itself (ctr run would otherwise unpack on its own).
    let snaps = containerd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    let snaps = String::from_utf8_lossy(&snaps.stdout);
    for tarball in [&busybox, &pause_image_tarball()] {
        let chain = top_chain_id(tarball);
        assert!(
            snaps
                .lines()
                .any(|l| l.starts_with(&chain) && l.contains("Committed")),
            "{chain} not committed:\n{snaps}"
        );
    }

    let run = containerd.ctr(&[
        "run",
        "--rm",
        "docker.io/library/busybox:1.0",
        "t1",
        "/bin/busybox",
        "echo",
        "hello",
    ]);
    assert!(
        run.status.success(),
        "ctr run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "hello");
    let run = containerd.ctr(&[
        "run",
        "--rm",
        "example.com/team/app:2",
        "t2",
        "/bin/busybox",
        "echo",
        "from-docker-archive",
    ]);
    assert!(
        run.status.success(),
        "ctr run of the docker-archive image failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "from-docker-archive"
    );

    // The pause image runs in a container and stops on SIGTERM (it installs a handler as PID 1).
    let started = containerd.ctr(&["run", "-d", PAUSE_IMAGE, "p1"]);
    assert!(
        started.status.success(),
        "ctr run pause failed: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let tasks = String::from_utf8_lossy(&containerd.ctr(&["tasks", "ls"]).stdout).to_string();
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("p1") && l.contains("RUNNING")),
        "{tasks}"
    );
    assert!(containerd.ctr(&["tasks", "kill", "p1"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = String::from_utf8_lossy(&containerd.ctr(&["tasks", "ls"]).stdout).to_string();
        if tasks
            .lines()
            .any(|l| l.starts_with("p1") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pause did not stop on SIGTERM: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    containerd.ctr(&["tasks", "rm", "p1"]);
    containerd.ctr(&["containers", "rm", "p1"]);
    drop(containerd);
}
