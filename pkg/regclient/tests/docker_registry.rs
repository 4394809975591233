//! The client against the reference registry: Debian's `docker-registry` (distribution 2.8.2)
//! started per test on a free loopback port with filesystem storage in a temp dir (plain http,
//! and TLS with htpasswd Basic auth), killed by PID at the end; `skopeo` checks what a real
//! client sees.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_regclient::client::BlobSource;
use mini_regclient::commands;
use mini_regclient::{pull, push_archive, ClientConfig, Credentials, PullFormat, RegistryClient};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A docker-registry process; killed (by its PID) and its storage removed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ca_pem: Option<String>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Options {
    tls: bool,
    htpasswd: Option<(&'static str, &'static str)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts docker-registry, or `None` (the test is skipped) when it is not installed.
fn start_registry(opts: Options) -> Option<Registry> {
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipping: {REGISTRY_BIN} is not installed (apt-get install docker-registry)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        root = dir.path().join("data").display()
    );
    let mut ca_pem = None;
    if opts.tls {
        let ca = mini_certs::CertAuthority::generate("regclient-test-ca").unwrap();
        let serving = ca
            .issue_server(
                "127.0.0.1",
                &mini_certs::SubjectAltNames {
                    dns: vec!["localhost".into()],
                    ips: vec!["127.0.0.1".parse().unwrap()],
                },
            )
            .unwrap();
        std::fs::write(dir.path().join("tls.crt"), &serving.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &serving.key_pem).unwrap();
        config.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display()
        ));
        ca_pem = Some(ca.cert_pem().to_string());
    }
    if let Some((user, password)) = opts.htpasswd {
        let hash = bcrypt::hash(password, 5).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: regclient-test\n    path: {}\n",
            dir.path().join("htpasswd").display()
        ));
    }
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let registry = Registry {
        child,
        port,
        dir,
        ca_pem,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not listen on {port}: {}",
            std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(registry)
}

impl Registry {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> ClientConfig {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut c = ClientConfig::new(format!("{scheme}://{}", self.host()));
        c.ca_pem = self.ca_pem.clone();
        c
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(self.config()).unwrap()
    }
}

/// A one-layer image tarball (OCI layout) named `names[0]`, written into `dir`.
fn image_tarball(dir: &Path, name: &str, payload: &[u8]) -> PathBuf {
    let spec = mini_images::ImageSpec {
        name: name.to_string(),
        files: vec![mini_images::ImageFile {
            path: "/data/payload".into(),
            mode: 0o644,
            contents: payload.to_vec(),
        }],
        entrypoint: vec!["/bin/sh".into()],
        ..Default::default()
    };
    let bytes = mini_images::build_image_tarball(&spec).unwrap();
    let path = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn skopeo_digest(reference: &str, creds: Option<&str>) -> Option<String> {
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skopeo not installed: the real-client check is skipped");
        return None;
    }
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["Digest"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn plain_registry_push_pull_roundtrip_digests_match() {
    let Some(reg) = start_registry(Options {
        tls: false,
        htpasswd: None,
    }) else {
        return;
    };
    let client = reg.client();
    client.ping().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let own = format!("{}/default/app:v1", reg.host());
    let tarball = image_tarball(work.path(), &own, b"hello registry\n");
    let pushed = push_archive(&client, &tarball, &reg.host()).await.unwrap();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].repository, "default/app");
    assert_eq!(pushed[0].tag, "v1");
    let digest = pushed[0].digest.clone();

    // The registry sees the same manifest; a real client does too.
    let head = client
        .head_manifest("default/app", "v1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.digest, digest);
    assert_eq!(
        client.tags("default/app").await.unwrap(),
        vec!["v1".to_string()]
    );
    if let Some(d) = skopeo_digest(&own, None) {
        assert_eq!(d, digest);
    }

    // Pull into a layout, and into an archive that pushes again to a mirror-named repository.
    let layout = work.path().join("layout");
    let info = pull(&client, "default/app", "v1", &layout, PullFormat::Layout)
        .await
        .unwrap();
    assert_eq!(info.digest, digest);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(layout.join("blobs/sha256").join(hex).exists());

    let archive = work.path().join("pulled.tar");
    pull(&client, "default/app", "v1", &archive, PullFormat::Archive)
        .await
        .unwrap();
    // The pulled archive names the image <host>/default/app:v1: pushing it again is a no-op.
    let again = push_archive(&client, &archive, &reg.host()).await.unwrap();
    assert_eq!(again[0].repository, "default/app");
    assert_eq!(again[0].digest, digest);

    let rows = commands::list_images(&client, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].tag.as_str(), rows[0].digest.as_str()),
        ("v1", digest.as_str())
    );
    assert!(rows[0].size > 0);
}

#[tokio::test]
async fn plain_registry_pause_image_under_docker_name_goes_to_mirror_repository() {
    let Some(reg) = start_registry(Options {
        tls: false,
        htpasswd: None,
    }) else {
        return;
    };
    let client = reg.client();
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("pause.tar");
    std::fs::write(&tarball, mini_images::pause_image_tarball()).unwrap();
    let pushed = push_archive(&client, &tarball, &reg.host()).await.unwrap();
    assert_eq!(pushed[0].repository, "mini.local/pause");
    assert_eq!(pushed[0].tag, "3.10");
    if let Some(d) = skopeo_digest(&format!("{}/mini.local/pause:3.10", reg.host()), None) {
        assert_eq!(d, pushed[0].digest);
    }
}

#[tokio::test]
async fn plain_registry_chunked_upload_of_20mib_random_layer_is_verified() {
    let Some(reg) = start_registry(Options {
        tls: false,
        htpasswd: None,
    }) else {
        return;
    };
    let mut config = reg.config();
    config.chunk_size = 4 << 20;
    let client = RegistryClient::new(config).unwrap();
    let mut data = vec![0u8; 20 << 20];
    rand::fill(&mut data[..]);
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, &data).unwrap();
    let source = BlobSource::File {
        file: std::sync::Arc::new(file),
        offset: 0,
        len: data.len() as u64,
    };
    client
        .upload_blob("bench/big", &digest, source)
        .await
        .unwrap();
    assert_eq!(
        client.blob_exists("bench/big", &digest).await.unwrap(),
        Some(data.len() as u64)
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("blob");
    let size = client
        .download_blob("bench/big", &digest, &out)
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // The same bytes through a reader: digest computed while streaming.
    let (reader_digest, reader_size) = client
        .upload_blob_reader("bench/reader", &data[..])
        .await
        .unwrap();
    assert_eq!(
        (reader_digest.as_str(), reader_size),
        (digest.as_str(), data.len() as u64)
    );

    // A wrong expected digest is refused by the registry and the file removed locally.
    let bad = format!("sha256:{}", "0".repeat(64));
    let err = client
        .download_blob("bench/big", &bad, &out)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn plain_registry_mount_paging_and_delete_work() {
    let Some(reg) = start_registry(Options {
        tls: false,
        htpasswd: None,
    }) else {
        return;
    };
    let mut config = reg.config();
    config.page_size = 2;
    let client = RegistryClient::new(config).unwrap();
    let work = tempfile::tempdir().unwrap();
    let tarball = image_tarball(work.path(), &format!("{}/team/a:v1", reg.host()), b"a");
    let pushed = push_archive(&client, &tarball, &reg.host()).await.unwrap();
    let digest = pushed[0].digest.clone();
    let (info, manifest) = client.get_manifest("team/a", "v1").await.unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(
        info.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );

    // Cross-repository mount of every blob, then the same manifest under five tags.
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for repo in ["team/b", "team/c"] {
        for blob in &blobs {
            assert!(client.mount_blob(repo, blob, "team/a").await.unwrap());
        }
    }
    for tag in ["t1", "t2", "t3", "t4", "t5"] {
        client
            .put_manifest("team/b", tag, &info.media_type, manifest.clone())
            .await
            .unwrap();
    }
    client
        .put_manifest("team/c", "x", &info.media_type, manifest.clone())
        .await
        .unwrap();
    let mut tags = client.tags("team/b").await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(
        client.catalog().await.unwrap(),
        vec!["team/a", "team/b", "team/c"]
    );

    // distribution 2.8 cannot delete a tag alone: the error says how to delete by digest.
    let err = commands::remove(&client, &["team/a:v1".to_string()])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("mini images rm team/a@<digest>"),
        "{err}"
    );
    let deleted = commands::remove(&client, &[format!("team/a@{digest}")])
        .await
        .unwrap();
    assert_eq!(deleted, vec![format!("team/a@{digest}")]);
    assert_eq!(client.head_manifest("team/a", "v1").await.unwrap(), None);
}

#[tokio::test]
async fn plain_registry_manifest_with_unknown_blob_error_names_code() {
    let Some(reg) = start_registry(Options {
        tls: false,
        htpasswd: None,
    }) else {
        return;
    };
    let client = reg.client();
    let missing = format!("sha256:{}", "a".repeat(64));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": missing, "size": 2},
        "layers": [],
    });
    let err = client
        .put_manifest(
            "x/y",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MANIFEST_BLOB_UNKNOWN"), "{err}");
    assert!(
        err.to_string()
            .contains("registry answered MANIFEST_BLOB_UNKNOWN: "),
        "{err}"
    );
}

#[tokio::test]
async fn tls_registry_with_htpasswd_needs_basic_credentials() {
    let Some(reg) = start_registry(Options {
        tls: true,
        htpasswd: Some(("pusher", "s3cret")),
    }) else {
        return;
    };
    let anonymous = reg.client();
    let err = anonymous.ping().await.unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let mut wrong = reg.config();
    wrong.credentials = Credentials::Basic {
        username: "pusher".into(),
        password: "nope".into(),
    };
    let err = RegistryClient::new(wrong)
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let mut config = reg.config();
    config.credentials = Credentials::Basic {
        username: "pusher".into(),
        password: "s3cret".into(),
    };
    let client = RegistryClient::new(config).unwrap();
    client.ping().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let own = format!("{}/secure/app:v2", reg.host());
    let tarball = image_tarball(work.path(), &own, b"over tls\n");
    let pushed = push_archive(&client, &tarball, &reg.host()).await.unwrap();
    if let Some(d) = skopeo_digest(&own, Some("pusher:s3cret")) {
        assert_eq!(d, pushed[0].digest);
    }
    let layout = work.path().join("layout");
    let info = pull(&client, "secure/app", "v2", &layout, PullFormat::Layout)
        .await
        .unwrap();
    assert_eq!(info.digest, pushed[0].digest);

    // A client that does not trust the registry's CA fails with a TLS reason.
    let mut untrusted = reg.config();
    untrusted.ca_pem = Some(
        mini_certs::CertAuthority::generate("other-ca")
            .unwrap()
            .cert_pem()
            .to_string(),
    );
    let err = RegistryClient::new(untrusted)
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tls handshake with the registry failed"),
        "{err}"
    );
}

#[tokio::test]
async fn kubeconfig_client_against_tls_registry_pushes_lists_and_removes() {
    let Some(reg) = start_registry(Options {
        tls: true,
        htpasswd: None,
    }) else {
        return;
    };
    let ca_pem = reg.ca_pem.clone().unwrap();
    let ca = mini_certs::CertAuthority::generate("client-ca").unwrap();
    let client_cert = ca
        .issue_client("admin", &["system:masters".into()])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("admin.kubeconfig");
    std::fs::write(
        &kubeconfig,
        mini_certs::kubeconfig_yaml(&format!("https://{}", reg.host()), &ca_pem, &client_cert),
    )
    .unwrap();
    let config = mini_regclient::kubeconfig::client_config_from_kubeconfig(&kubeconfig).unwrap();
    let client = RegistryClient::new(config).unwrap();
    assert_eq!(client.host(), reg.host());

    let files = vec![
        image_tarball(work.path(), &format!("{}/default/one:v1", reg.host()), b"1"),
        image_tarball(work.path(), &format!("{}/default/two:v2", reg.host()), b"2"),
    ];
    let pushed = commands::push_files(&client, &files).await.unwrap();
    let refs: Vec<String> = pushed.iter().map(|p| p.reference(client.host())).collect();
    assert_eq!(
        refs,
        vec![
            format!("{}/default/one:v1", reg.host()),
            format!("{}/default/two:v2", reg.host())
        ]
    );
    let table = commands::format_table(&commands::list_images(&client, None).await.unwrap());
    assert!(table.starts_with("REPOSITORY "), "{table}");
    assert!(table.contains("default/one   v1 "), "{table}");
    assert!(table.contains("default/two   v2 "), "{table}");

    let gone = format!("{}/default/two@{}", reg.host(), pushed[1].digest);
    commands::remove(&client, &[gone]).await.unwrap();
    let rows = commands::list_images(&client, Some("default/two"))
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}
