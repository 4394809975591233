//! The registry over TLS on 127.0.0.1, driven by the real clients installed here: skopeo, podman and
//! containerd's ctr.

mod common;

use std::path::Path;

use common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

async fn skopeo_copy(
    server: &Server,
    src: &str,
    dst: &str,
    creds: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let certs = s(&server.cert_dir);
    let mut a = args(&["--insecure-policy", "copy", "--retry-times", "0"]);
    a.extend(extra.iter().map(|x| x.to_string()));
    if dst.starts_with("docker://") {
        a.extend(args(&["--dest-cert-dir", &certs, "--dest-creds", creds]));
    }
    if src.starts_with("docker://") {
        a.extend(args(&["--src-cert-dir", &certs, "--src-creds", creds]));
    }
    a.push(src.to_string());
    a.push(dst.to_string());
    run("skopeo", a).await
}

/// The payload file inside the first layer of an OCI layout directory's image.
fn payload_of_layout(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    loop {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
        if let Some(children) = m["manifests"].as_array() {
            digest = children[0]["digest"].as_str().unwrap().to_string();
            continue;
        }
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        let bytes = std::fs::read(blob(layer)).unwrap();
        let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        } else {
            Box::new(&bytes[..])
        };
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("payload.txt") {
                let mut out = String::new();
                std::io::Read::read_to_string(&mut entry, &mut out).unwrap();
                return out;
            }
        }
        panic!("no payload in the pulled image");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copy_push_then_pull_image_intact() {
    if !have("skopeo") {
        return;
    }
    let server = serve().await;
    let tar = image_tarball(server.dir.path(), "app:v1", "amd64", "hello from skopeo");
    let dst = format!("docker://{}/default/app:v1", server.host);
    let (ok, _, err) = skopeo_copy(
        &server,
        &format!("oci-archive:{}", s(&tar)),
        &dst,
        "admin:pw",
        &[],
    )
    .await;
    assert!(ok, "skopeo push failed: {err}");
    let out = server.dir.path().join("pulled");
    let (ok, _, err) = skopeo_copy(
        &server,
        &dst,
        &format!("oci:{}:v1", s(&out)),
        "reader:pw",
        &[],
    )
    .await;
    assert!(ok, "skopeo pull failed: {err}");
    assert_eq!(payload_of_layout(&out), "hello from skopeo");
    let tags = server
        .registry
        .tags(Some("default/app"), None)
        .await
        .unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].tag, "v1");
    // The tags list through skopeo.
    let (ok, stdout, err) = run(
        "skopeo",
        args(&[
            "list-tags",
            "--cert-dir",
            &s(&server.cert_dir),
            "--creds",
            "reader:pw",
            &format!("docker://{}/default/app", server.host),
        ]),
    )
    .await;
    assert!(ok, "{err}");
    assert!(stdout.contains("\"v1\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_push_reader_denied_403() {
    if !have("skopeo") {
        return;
    }
    let server = serve().await;
    let tar = image_tarball(server.dir.path(), "app:v1", "amd64", "denied");
    let dst = format!("docker://{}/default/app:v1", server.host);
    let (ok, _, err) = skopeo_copy(
        &server,
        &format!("oci-archive:{}", s(&tar)),
        &dst,
        "reader:pw",
        &[],
    )
    .await;
    assert!(!ok, "a reader could push");
    assert!(err.contains("denied") || err.contains("403"), "{err}");
    let (ok, _, err) = skopeo_copy(
        &server,
        &format!("oci-archive:{}", s(&tar)),
        &dst,
        "admin:wrong",
        &[],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    assert!(server.registry.tags(None, None).await.unwrap().is_empty());
}

/// Writes an OCI layout directory whose index.json names an image index of two platforms.
fn multiarch_layout(dir: &Path, amd64: &Path, arm64: &Path) -> std::path::PathBuf {
    let layout = dir.join("multi");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut children = Vec::new();
    for (tar, arch) in [(amd64, "amd64"), (arm64, "arm64")] {
        let mut ar = tar::Archive::new(std::fs::File::open(tar).unwrap());
        let mut index = None;
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if let Some(name) = path
                .trim_start_matches("./")
                .strip_prefix("blobs/sha256/")
                .filter(|n| !n.is_empty())
            {
                std::fs::write(layout.join("blobs/sha256").join(name), &data).unwrap();
            } else if path.trim_start_matches("./") == "index.json" {
                index = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
            }
        }
        let m = &index.unwrap()["manifests"][0];
        children.push(serde_json::json!({
            "mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let idx = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}).to_string();
    let d = mini_registry::names::Digest::sha256_of(idx.as_bytes());
    std::fs::write(layout.join("blobs/sha256").join(&d.hex), &idx).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d.to_string(), "size": idx.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    layout
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_multiplatform_index_push_pull_both_platforms() {
    if !have("skopeo") {
        return;
    }
    let server = serve().await;
    let amd = image_tarball(server.dir.path(), "multi:v1", "amd64", "amd64 payload");
    let arm = image_tarball(server.dir.path(), "multi:v1", "arm64", "arm64 payload!");
    let layout = multiarch_layout(server.dir.path(), &amd, &arm);
    let dst = format!("docker://{}/team-a/multi:v1", server.host);
    let (ok, _, err) = skopeo_copy(
        &server,
        &format!("oci:{}:multi", s(&layout)),
        &dst,
        "admin:pw",
        &["--all"],
    )
    .await;
    assert!(ok, "skopeo push --all failed: {err}");
    let out = server.dir.path().join("pulled-multi");
    let (ok, _, err) = skopeo_copy(
        &server,
        &dst,
        &format!("oci:{}:v1", s(&out)),
        "reader:pw",
        &["--all"],
    )
    .await;
    assert!(ok, "skopeo pull --all failed: {err}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let nested: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(top)).unwrap())
            .unwrap();
    let archs: Vec<&str> = nested["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, vec!["amd64", "arm64"]);
    // One platform only.
    let out = server.dir.path().join("pulled-arm");
    let (ok, _, err) = skopeo_copy(
        &server,
        &dst,
        &format!("oci:{}:v1", s(&out)),
        "reader:pw",
        &["--override-arch", "arm64"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(payload_of_layout(&out), "arm64 payload!");
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_push_pull_image_intact() {
    if !have("podman") || !have("skopeo") {
        return;
    }
    let server = serve().await;
    let tar = image_tarball(server.dir.path(), "podapp:v1", "amd64", "hello from podman");
    let root = server.dir.path().join("podman-root");
    let runroot = server.dir.path().join("podman-runroot");
    let podman = |extra: &[&str]| {
        let mut a = args(&[
            "--root",
            &s(&root),
            "--runroot",
            &s(&runroot),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let (ok, _, err) = run("podman", podman(&["load", "-i", &s(&tar)])).await;
    assert!(ok, "podman load failed: {err}");
    let local = "docker.io/library/podapp:v1";
    let remote = format!("{}/default/podapp:v1", server.host);
    let (ok, _, err) = run("podman", podman(&["tag", local, &remote])).await;
    assert!(ok, "{err}");
    let certs = s(&server.cert_dir);
    let (ok, _, err) = run(
        "podman",
        podman(&["push", "--cert-dir", &certs, "--creds", "admin:pw", &remote]),
    )
    .await;
    assert!(ok, "podman push failed: {err}");
    let (ok, _, err) = run("podman", podman(&["rmi", "-a", "-f"])).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        "podman",
        podman(&[
            "pull",
            "--cert-dir",
            &certs,
            "--creds",
            "reader:pw",
            &remote,
        ]),
    )
    .await;
    assert!(ok, "podman pull failed: {err}");
    let (ok, stdout, err) = run(
        "podman",
        podman(&["image", "inspect", "--format", "{{.Architecture}}", &remote]),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(stdout.trim(), "amd64");
    let _ = run("podman", podman(&["rmi", "-a", "-f"])).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_push_pull_through_private_containerd() {
    if !have("ctr") || !have("containerd") || !have("skopeo") {
        return;
    }
    let server = serve().await;
    let base = server.dir.path().join("containerd");
    let sock = base.join("c.sock");
    let mut child = start_containerd(&base).await;
    let ctr = |extra: &[&str]| {
        let mut a = args(&["--address", &s(&sock), "-n", "regtest"]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let tar = image_tarball(server.dir.path(), "ctrapp:v1", "amd64", "hello from ctr");
    let result = async {
        let (ok, _, err) = run(
            "ctr",
            ctr(&["images", "import", "--all-platforms", &s(&tar)]),
        )
        .await;
        assert!(ok, "ctr import failed: {err}");
        let remote = format!("{}/default/ctrapp:v1", server.host);
        let (ok, _, err) = run(
            "ctr",
            ctr(&["images", "tag", "docker.io/library/ctrapp:v1", &remote]),
        )
        .await;
        assert!(ok, "{err}");
        let ca = s(&server.ca_file);
        // containerd treats 127.0.0.1 as plain HTTP unless a hosts.toml says otherwise.
        let hosts_dir = base.join("certs.d");
        std::fs::create_dir_all(hosts_dir.join(&server.host)).unwrap();
        std::fs::write(
            hosts_dir.join(&server.host).join("hosts.toml"),
            format!(
                "server = \"https://{h}\"\n[host.\"https://{h}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  ca = \"{ca}\"\n",
                h = server.host
            ),
        )
        .unwrap();
        let hd = s(&hosts_dir);
        let (ok, _, err) = run(
            "ctr",
            ctr(&[
                "images",
                "push",
                "--hosts-dir",
                &hd,
                "--user",
                "admin:pw",
                &remote,
            ]),
        )
        .await;
        assert!(ok, "ctr push failed: {err}");
        let (ok, _, err) = run(
            "ctr",
            ctr(&["images", "rm", &remote, "docker.io/library/ctrapp:v1"]),
        )
        .await;
        assert!(ok, "{err}");
        let (ok, _, err) = run(
            "ctr",
            ctr(&[
                "images",
                "pull",
                "--hosts-dir",
                &hd,
                "--user",
                "reader:pw",
                &remote,
            ]),
        )
        .await;
        assert!(ok, "ctr pull failed: {err}");
        let (ok, stdout, _) = run("ctr", ctr(&["images", "ls", "-q"])).await;
        assert!(ok && stdout.contains(&remote), "{stdout}");
        // A reader may not push a new tag (the blobs exist, the manifest PUT is refused).
        let remote2 = format!("{}/default/ctrapp:v2", server.host);
        let (ok, _, err) = run("ctr", ctr(&["images", "tag", &remote, &remote2])).await;
        assert!(ok, "{err}");
        let (ok, _, err) = run(
            "ctr",
            ctr(&[
                "images",
                "push",
                "--hosts-dir",
                &hd,
                "--user",
                "reader:pw",
                &remote2,
            ]),
        )
        .await;
        assert!(!ok, "a reader could push");
        assert!(err.contains("403") || err.contains("denied"), "{err}");
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_wrong_digest_upload_refused_nothing_stored() {
    if !have("curl") {
        return;
    }
    let server = serve().await;
    let body = server.dir.path().join("body");
    std::fs::write(&body, b"the real content").unwrap();
    let wrong = mini_registry::names::Digest::sha256_of(b"something else");
    let ca = s(&server.ca_file);
    let url = format!(
        "https://{}/v2/default/app/blobs/uploads/?digest={wrong}",
        server.host
    );
    let (ok, stdout, err) = run(
        "curl",
        args(&[
            "-sS",
            "-w",
            "\n%{http_code}",
            "--cacert",
            &ca,
            "-u",
            "admin:pw",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", s(&body)),
            &url,
        ]),
    )
    .await;
    assert!(ok, "{err}");
    assert!(stdout.ends_with("\n400"), "{stdout}");
    assert!(stdout.contains("DIGEST_INVALID"), "{stdout}");
    let head = format!("https://{}/v2/default/app/blobs/{wrong}", server.host);
    let (_, stdout, _) = run(
        "curl",
        args(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-I",
            "--cacert",
            &ca,
            "-u",
            "admin:pw",
            &head,
        ]),
    )
    .await;
    assert_eq!(stdout, "404");
    // Anonymous: 401 with the Basic challenge.
    let (_, stdout, _) = run(
        "curl",
        args(&[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            &ca,
            &format!("https://{}/v2/", server.host),
        ]),
    )
    .await;
    assert!(stdout.contains(" 401"), "{stdout}");
    assert!(
        stdout
            .to_lowercase()
            .contains("www-authenticate: basic realm=\"mini\""),
        "{stdout}"
    );
}

/// A private containerd (no CRI) under `base`, listening on `base/c.sock`.
async fn start_containerd(base: &Path) -> std::process::Child {
    std::fs::create_dir_all(base).unwrap();
    let sock = base.join("c.sock");
    let config = base.join("config.toml");
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .unwrap();
    let child = std::process::Command::new("containerd")
        .args([
            "--config",
            &s(&config),
            "--root",
            &s(&base.join("root")),
            "--state",
            &s(&base.join("state")),
            "--address",
            &s(&sock),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        sleep_ms(100).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_pull_mirror_hosts_toml_override_path_served() {
    if !have("ctr") || !have("containerd") {
        return;
    }
    let server = serve().await;
    let tar = image_tarball(
        server.dir.path(),
        "ctrmirror:v1",
        "amd64",
        "mirrored for containerd",
    );
    let refs = server.registry.import_archive(&tar).await.unwrap();
    assert_eq!(refs, vec!["docker.io/library/ctrmirror:v1"]);
    let base = server.dir.path().join("containerd");
    let sock = base.join("c.sock");
    let mut child = start_containerd(&base).await;
    // The node layout of the design: certs.d/docker.io/hosts.toml points at /v2/docker.io on the server.
    let hosts_dir = base.join("certs.d");
    std::fs::create_dir_all(hosts_dir.join("docker.io")).unwrap();
    std::fs::write(
        hosts_dir.join("docker.io/hosts.toml"),
        format!(
            "[host.\"https://{h}/v2/docker.io\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n  ca = \"{ca}\"\n",
            h = server.host,
            ca = s(&server.ca_file)
        ),
    )
    .unwrap();
    let (ok, _, err) = run(
        "ctr",
        args(&[
            "--address",
            &s(&sock),
            "-n",
            "regtest",
            "images",
            "pull",
            "--hosts-dir",
            &s(&hosts_dir),
            "--user",
            "reader:pw",
            "docker.io/library/ctrmirror:v1",
        ]),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "ctr pull through the mirror failed: {err}");
}
