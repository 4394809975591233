//! Pull-through: a mirrored repository fetched from an upstream registry — Debian's docker-registry
//! (distribution 2.8.2) with htpasswd Basic auth, and an in-test upstream using the Bearer token flow.

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mini_registry::Upstream;

/// bcrypt of "pw" (htpasswd for docker-registry).
const HTPASSWD: &str = "up:$2b$04$rwFKmbCYSs71wn.4TLU.Fe72JlIbnKM5H3hNkaJbVnaDNZjUK6Dbu\n";

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Upstreamd {
    child: std::process::Child,
    addr: String,
}

impl Drop for Upstreamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_docker_registry(dir: &Path) -> Upstreamd {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: upstream\n    path: {ht}\n",
        root = s(&dir.join("upstream-data")),
        ht = s(&dir.join("htpasswd")),
    );
    std::fs::write(dir.join("upstream.yml"), config).unwrap();
    let child = std::process::Command::new("docker-registry")
        .args(["serve", &s(&dir.join("upstream.yml"))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        sleep_ms(100).await;
    }
    Upstreamd { child, addr }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_through_docker_registry_basic_auth_cached() {
    if !have("docker-registry") || !have("skopeo") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let upstream = start_docker_registry(work.path()).await;
    let tar = image_tarball(work.path(), "app:v1", "amd64", "from upstream");
    let (ok, _, err) = run(
        "skopeo",
        args(&[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "up:pw",
            &format!("oci-archive:{}", s(&tar)),
            &format!("docker://{}/library/app:v1", upstream.addr),
        ]),
    )
    .await;
    assert!(ok, "seeding the upstream failed: {err}");
    let url = format!("http://{}", upstream.addr);
    let server = serve_with(|c| {
        c.upstreams = vec![
            Upstream {
                host: "mirror.example".into(),
                url: url.clone(),
                username: Some("up".into()),
                password: Some("pw".into()),
            },
            Upstream {
                host: "badcreds.example".into(),
                url: url.clone(),
                username: Some("up".into()),
                password: Some("wrong".into()),
            },
        ]
    })
    .await;
    let pull = |repo: &str, out: &Path| {
        args(&[
            "--insecure-policy",
            "copy",
            "--src-cert-dir",
            &s(&server.cert_dir),
            "--src-creds",
            "reader:pw",
            &format!("docker://{}/{repo}", server.host),
            &format!("oci:{}:x", s(out)),
        ])
    };
    let out = work.path().join("pulled");
    let (ok, _, err) = run("skopeo", pull("mirror.example/library/app:v1", &out)).await;
    assert!(ok, "pull-through failed: {err}");
    let repos = server.registry.repositories(None).await.unwrap();
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0].name, "mirror.example/library/app");
    assert_eq!(repos[0].namespace, None);
    // Wrong upstream credentials: the pull fails.
    let (ok, _, _) = run(
        "skopeo",
        pull("badcreds.example/library/app:v1", &work.path().join("bad")),
    )
    .await;
    assert!(!ok, "pulled with wrong upstream credentials");
    assert_eq!(payload_of(&out), "from upstream");
    // The upstream moves the tag; once the cached tag is old, a pull sees the new image.
    let tar2 = image_tarball(work.path(), "app:v1", "amd64", "moved upstream tag");
    let (ok, _, err) = run(
        "skopeo",
        args(&[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "up:pw",
            &format!("oci-archive:{}", s(&tar2)),
            &format!("docker://{}/library/app:v1", upstream.addr),
        ]),
    )
    .await;
    assert!(ok, "{err}");
    age_tags(&server.store, 1000).await;
    let out2 = work.path().join("pulled-moved");
    let (ok, _, err) = run("skopeo", pull("mirror.example/library/app:v1", &out2)).await;
    assert!(ok, "{err}");
    assert_eq!(payload_of(&out2), "moved upstream tag");
    // Cached: the upstream is gone, the (stale) tag still pulls.
    drop(upstream);
    age_tags(&server.store, 1000).await;
    let out3 = work.path().join("pulled-again");
    let (ok, _, err) = run("skopeo", pull("mirror.example/library/app:v1", &out3)).await;
    assert!(ok, "cached pull failed: {err}");
    assert_eq!(payload_of(&out3), "moved upstream tag");
    // Unknown upstream content is MANIFEST_UNKNOWN-ish failure, not a hang.
    let (ok, _, _) = run(
        "skopeo",
        pull("mirror.example/library/none:v1", &work.path().join("none")),
    )
    .await;
    assert!(!ok);
}

/// The payload file of the image in an OCI layout directory written by skopeo.
fn payload_of(dir: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer = std::fs::read(blob(m["layers"][0]["digest"].as_str().unwrap())).unwrap();
    let reader: Box<dyn std::io::Read> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&layer[..]))
    } else {
        Box::new(&layer[..])
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
    panic!("no payload");
}

/// An upstream that wants a bearer token from its realm (Basic `up:pw` there), serving one blob.
async fn bearer_upstream(blob: Bytes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{addr}/token");
    let blob = Arc::new(blob);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let realm = realm.clone();
            let blob = blob.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let realm = realm.clone();
                        let blob = blob.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or("").to_string();
                            let r = if path == "/token" {
                                if auth == "Basic dXA6cHc="
                                    && query.contains("scope=repository%3Alib%2Fx%3Apull")
                                {
                                    http::Response::new(Full::new(Bytes::from(
                                        r#"{"token":"t0k"}"#,
                                    )))
                                } else {
                                    let mut r = http::Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                                    r
                                }
                            } else if auth != "Bearer t0k" {
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                                r.headers_mut().insert("www-authenticate", format!(
                                "Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:lib/x:pull\"").parse().unwrap());
                                r
                            } else if path.starts_with("/v2/lib/x/blobs/") {
                                http::Response::new(Full::new((*blob).clone()))
                            } else {
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = http::StatusCode::NOT_FOUND;
                                r
                            };
                            Ok::<_, Infallible>(r)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_through_bearer_challenge_token_fetched() {
    let blob = Bytes::from_static(b"layer bytes behind a bearer token");
    let addr = bearer_upstream(blob.clone()).await;
    let server = serve_with(|c| {
        c.upstreams = vec![Upstream {
            host: "bearer.example".into(),
            url: format!("http://{addr}"),
            username: Some("up".into()),
            password: Some("pw".into()),
        }]
    })
    .await;
    let digest = mini_registry::names::Digest::sha256_of(&blob);
    let req = http::Request::get(format!("/v2/bearer.example/lib/x/blobs/{digest}"))
        .header("authorization", "Basic cmVhZGVyOnB3")
        .body(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .unwrap();
    let r = server.registry.handle(req, None).await;
    assert_eq!(r.status(), http::StatusCode::OK);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, blob);
    // A digest the upstream serves with other content is refused.
    let wrong = mini_registry::names::Digest::sha256_of(b"something else");
    let req = http::Request::get(format!("/v2/bearer.example/lib/x/blobs/{wrong}"))
        .header("authorization", "Basic cmVhZGVyOnB3")
        .body(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .unwrap();
    let r = server.registry.handle(req, None).await;
    assert_eq!(r.status(), http::StatusCode::BAD_GATEWAY);
}
