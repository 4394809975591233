//! Shared helpers of the integration tests: a TLS server around the registry on 127.0.0.1, a fake
//! `Access` granting by Basic password, and test images.

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mini_rbac::UserInfo;
use mini_registry::{Access, Registry, RegistryConfig};
use tokio_util::sync::CancellationToken;

/// `admin:pw` may do everything, `reader:pw` may pull only; everyone else is anonymous.
pub struct PasswordAccess;

#[async_trait::async_trait]
impl Access for PasswordAccess {
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, String> {
        if let Some(p) = peer {
            return Ok(Some(p.clone()));
        }
        let Some(v) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let v = v.to_str().map_err(|e| e.to_string())?;
        let b64 = v.strip_prefix("Basic ").ok_or("only basic credentials")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| e.to_string())?;
        let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;
        match raw.split_once(':') {
            Some((user @ ("admin" | "reader"), "pw")) => Ok(Some(UserInfo {
                name: user.to_string(),
                groups: vec!["system:authenticated".into()],
            })),
            _ => Err("wrong user or password".into()),
        }
    }
    async fn allowed(
        &self,
        user: Option<&UserInfo>,
        verb: &str,
        _namespace: Option<&str>,
        _repository: &str,
    ) -> bool {
        match user.map(|u| u.name.as_str()) {
            Some("admin") => true,
            Some("reader") => matches!(verb, "get" | "list"),
            _ => false,
        }
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub host: String,
    /// A directory with `ca.crt` (for `--cert-dir`).
    pub cert_dir: PathBuf,
    pub ca_file: PathBuf,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn mini_store::Store>,
    pub shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn serve() -> Server {
    serve_with(|_| {}).await
}

pub async fn serve_with(tweak: impl FnOnce(&mut RegistryConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn mini_store::Store> =
        Arc::new(mini_store::SledStore::open(&dir.path().join("db")).unwrap());
    let mut config = RegistryConfig {
        root: dir.path().join("registry"),
        ..RegistryConfig::default()
    };
    tweak(&mut config);
    let registry = Registry::open(config, store.clone(), Arc::new(PasswordAccess))
        .await
        .unwrap();
    let ca = mini_certs::CertAuthority::generate("mini-registry-test-ca").unwrap();
    let serving = ca
        .issue_server(
            "127.0.0.1",
            &mini_certs::SubjectAltNames {
                dns: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
        )
        .unwrap();
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let ca_file = cert_dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let tls = mini_certs::server_tls_config(&serving, ca.cert_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let reg = registry.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let acceptor = acceptor.clone();
            let reg = reg.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let reg = reg.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.map_err(std::io::Error::other).boxed_unsync();
                            let req = http::Request::from_parts(parts, body);
                            Ok::<_, Infallible>(reg.handle(req, None).await)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server {
        dir,
        host,
        cert_dir,
        ca_file,
        registry,
        store,
        shutdown,
    }
}

/// A test image as an OCI layout tarball (one layer with a few files), for `arch`.
pub fn image_tarball(dir: &Path, name: &str, arch: &str, payload: &str) -> PathBuf {
    let spec = mini_images::ImageSpec {
        name: name.to_string(),
        files: vec![mini_images::ImageFile {
            path: "/data/payload.txt".into(),
            mode: 0o644,
            contents: payload.as_bytes().to_vec(),
        }],
        symlinks: vec![],
        entrypoint: vec!["/bin/true".into()],
        cmd: vec![],
        env: vec!["PATH=/bin".into()],
        working_dir: None,
        architecture: Some(arch.to_string()),
    };
    let bytes = mini_images::build_image_tarball(&spec).unwrap();
    let path = dir.join(format!("{}-{arch}.tar", payload.len()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Whether a client binary is installed; prints why a test is skipped otherwise.
pub fn have(binary: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("skipping: {binary} is not installed");
    }
    found
}

/// Runs a command in a blocking task; returns (success, stdout, stderr).
pub async fn run(cmd: &str, args: Vec<String>) -> (bool, String, String) {
    let cmd = cmd.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&cmd)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Moves every tag record's push time `secs` into the past.
pub async fn age_tags(store: &Arc<dyn mini_store::Store>, secs: i64) {
    let page = store.list("/mini-registry/tags/", None, 0).await.unwrap();
    for kv in page.items {
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v["pushed"] = (v["pushed"].as_i64().unwrap() - secs).into();
        store
            .update(&kv.key, serde_json::to_vec(&v).unwrap(), None)
            .await
            .unwrap();
    }
}
