//! Unit tests of the registry over its HTTP API with a fake `Access` and a sled store in a temp dir.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mini_rbac::UserInfo;

use crate::*;

/// Grants by Basic user: `admin` everything, `reader` get/list, `ns-a` everything in namespace `a`.
pub(crate) struct FakeAccess;

#[async_trait::async_trait]
impl Access for FakeAccess {
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        _peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, String> {
        let Some(v) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let v = v.to_str().map_err(|e| e.to_string())?;
        let b64 = v.strip_prefix("Basic ").ok_or("not basic")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| e.to_string())?;
        let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;
        let (user, pass) = raw.split_once(':').ok_or("no colon")?;
        if pass != "pw" {
            return Err("bad password".into());
        }
        Ok(Some(UserInfo {
            name: user.to_string(),
            groups: vec!["system:authenticated".into()],
        }))
    }
    async fn allowed(
        &self,
        user: Option<&UserInfo>,
        verb: &str,
        namespace: Option<&str>,
        _repository: &str,
    ) -> bool {
        match user.map(|u| u.name.as_str()) {
            Some("admin") => true,
            Some("reader") => verb == "get" || verb == "list",
            Some("ns-a") => namespace == Some("a"),
            _ => false,
        }
    }
}

pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn mini_store::Store>,
    pub reg: Arc<Registry>,
}

pub(crate) fn config(root: &std::path::Path) -> RegistryConfig {
    RegistryConfig {
        root: root.join("registry"),
        gc_grace: Duration::from_secs(3600),
        max_manifest_bytes: 64 << 10,
        hosts: vec!["10.0.0.1:6443".into()],
        ..RegistryConfig::default()
    }
}

pub(crate) async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn mini_store::Store> =
        Arc::new(mini_store::SledStore::open(&dir.path().join("db")).unwrap());
    let reg = Registry::open(config(dir.path()), store.clone(), Arc::new(FakeAccess))
        .await
        .unwrap();
    Env { dir, store, reg }
}

impl Env {
    pub async fn reopen(&mut self, cfg: RegistryConfig) {
        self.reg = Registry::open(cfg, self.store.clone(), Arc::new(FakeAccess))
            .await
            .unwrap();
    }
}

pub(crate) fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"))
    )
}

pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub(crate) async fn call(
    reg: &Registry,
    user: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(u) = user {
        b = b.header("authorization", basic(u));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync();
    let r = reg.handle(b.body(body).unwrap(), None).await;
    let (parts, body) = r.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        parts.headers["docker-distribution-api-version"],
        "registry/2.0"
    );
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub(crate) fn digest(data: &[u8]) -> String {
    names::Digest::sha256_of(data).to_string()
}

pub(crate) async fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let a = call(
        reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[],
        data.to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    d
}

/// Pushes a config + one layer + an OCI manifest; returns the manifest digest.
pub(crate) async fn push_image(reg: &Registry, repo: &str, tag: &str, layer: &[u8]) -> String {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        digest(layer)
    );
    let c = push_blob(reg, repo, config.as_bytes()).await;
    let l = push_blob(reg, repo, layer).await;
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    })
    .to_string();
    let a = call(
        reg,
        Some("admin"),
        Method::PUT,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("content-type", manifest::OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert_eq!(a.header("docker-content-digest"), digest(m.as_bytes()));
    digest(m.as_bytes())
}

#[tokio::test]
async fn base_anonymous_unauthorized_with_basic_challenge() {
    let e = env().await;
    let a = call(&e.reg, None, Method::GET, "/v2/", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Basic realm=\"mini\"");
    let a = call(&e.reg, Some("reader"), Method::GET, "/v2/", &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], b"{}");
}

#[tokio::test]
async fn wrong_password_unauthorized() {
    let e = env().await;
    let mut b = Request::builder().uri("/v2/");
    b = b.header(
        "authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:nope")
        ),
    );
    let body = Full::new(Bytes::new())
        .map_err(|n| match n {})
        .boxed_unsync();
    let r = e.reg.handle(b.body(body).unwrap(), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn blob_monolithic_upload_served_with_range() {
    let e = env().await;
    let data = b"0123456789abcdef".to_vec();
    let d = push_blob(&e.reg, "a/app", &data).await;
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        &format!("/v2/a/app/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], &data[..]);
    assert_eq!(a.header("docker-content-digest"), d);
    let a = call(
        &e.reg,
        Some("reader"),
        Method::HEAD,
        &format!("/v2/a/app/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), "16");
    assert!(a.body.is_empty());
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        &format!("/v2/a/app/blobs/{d}"),
        &[("range", "bytes=10-")],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&a.body[..], b"abcdef");
    assert_eq!(a.header("content-range"), "bytes 10-15/16");
    // Not linked into another repository.
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        &format!("/v2/a/other/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UNKNOWN");
}

#[tokio::test]
async fn blob_wrong_digest_refused_nothing_stored() {
    let e = env().await;
    let wrong = digest(b"other");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/a/app/blobs/uploads/?digest={wrong}"),
        &[],
        "payload",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "DIGEST_INVALID");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::HEAD,
        &format!("/v2/a/app/blobs/{wrong}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(e.reg.disk.list_blobs().await.unwrap().is_empty());
    let uploads = std::fs::read_dir(e.dir.path().join("registry/uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0);
}

async fn start_session(reg: &Registry, repo: &str) -> String {
    let a = call(
        reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert!(!a.header("docker-upload-uuid").is_empty());
    a.header("location")
}

#[tokio::test]
async fn chunked_upload_out_of_order_416_then_completes() {
    let e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[("content-range", "0-4")],
        "hello",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.header("range"), "0-4");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[("content-range", "9-10")],
        "xx",
    )
    .await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(a.header("range"), "0-4");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[("content-range", "5-10")],
        " world",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.header("range"), "0-10");
    let d = digest(b"hello world!");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        "!",
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.header("location"), format!("/v2/a/app/blobs/{d}"));
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_interrupted_resumes_after_restart() {
    let mut e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    call(&e.reg, Some("admin"), Method::PATCH, &loc, &[], "first-").await;
    let cfg = config(e.dir.path());
    e.reopen(cfg).await;
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.header("range"), "0-5");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[("content-range", "6-11")],
        "second",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let d = digest(b"first-second");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn upload_record_with_truncated_file_reopens_consistent() {
    let mut e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[],
        "0123456789",
    )
    .await;
    let id = loc.rsplit('/').next().unwrap().to_string();
    // A crash lost the tail of the file (the record survived).
    let path = e.dir.path().join("registry/uploads").join(&id);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4)
        .unwrap();
    // And a stray temp file plus an orphan blob (renamed, but no link record yet).
    std::fs::write(e.dir.path().join("registry/uploads/tmp-stray"), b"x").unwrap();
    let orphan = names::Digest::sha256_of(b"orphan");
    e.reg.disk.write_blob(&orphan, b"orphan").await.unwrap();
    e.reopen(config(e.dir.path())).await;
    assert!(!e.dir.path().join("registry/uploads/tmp-stray").exists());
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.header("range"), "0-3");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::HEAD,
        &format!("/v2/a/app/blobs/{orphan}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[("content-range", "4-9")],
        "456789",
    )
    .await;
    let d = digest(b"0123456789");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    // The orphan blob is collected once out of its grace period.
    let mut cfg = config(e.dir.path());
    cfg.gc_grace = Duration::ZERO;
    e.reopen(cfg).await;
    let r = e.reg.gc().await.unwrap();
    assert!(r.blobs_deleted >= 1);
    assert!(e.reg.disk.blob_size(&orphan).await.is_none());
}

#[tokio::test]
async fn upload_record_without_file_removed_on_open() {
    let mut e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    let id = loc.rsplit('/').next().unwrap().to_string();
    std::fs::remove_file(e.dir.path().join("registry/uploads").join(&id)).unwrap();
    e.reopen(config(e.dir.path())).await;
    assert!(e.store.get(&meta::upload_key(&id)).await.unwrap().is_none());
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn expire_uploads_stale_session_removed() {
    let mut e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    let mut cfg = config(e.dir.path());
    cfg.upload_timeout = Duration::ZERO;
    e.reopen(cfg).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(e.reg.expire_uploads().await.unwrap(), 1);
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifest_missing_blob_manifest_blob_unknown() {
    let e = env().await;
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"nope"), "size": 4},
        "layers": [],
    });
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/app/manifests/v1",
        &[("content-type", manifest::OCI_MANIFEST)],
        m.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifest_tag_and_digest_get_and_delete() {
    let e = env().await;
    let md = push_image(&e.reg, "a/app", "v1", b"layer-1").await;
    for r in ["v1", md.as_str()] {
        let a = call(
            &e.reg,
            Some("reader"),
            Method::GET,
            &format!("/v2/a/app/manifests/{r}"),
            &[],
            "",
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), manifest::OCI_MANIFEST);
        assert_eq!(a.header("docker-content-digest"), md);
        assert_eq!(digest(&a.body), md);
    }
    // Wrong digest reference.
    let body = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        "/v2/a/app/manifests/v1",
        &[],
        "",
    )
    .await
    .body;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        &format!("/v2/a/app/manifests/{}", digest(b"x")),
        &[("content-type", manifest::OCI_MANIFEST)],
        body,
    )
    .await;
    assert_eq!(a.code(), "DIGEST_INVALID");
    // Tag delete keeps the manifest; digest delete removes it.
    let a = call(
        &e.reg,
        Some("admin"),
        Method::DELETE,
        "/v2/a/app/manifests/v1",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        "/v2/a/app/manifests/v1",
        &[],
        "",
    )
    .await;
    assert_eq!(a.code(), "MANIFEST_UNKNOWN");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::DELETE,
        &format!("/v2/a/app/manifests/{md}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = call(
        &e.reg,
        Some("reader"),
        Method::HEAD,
        &format!("/v2/a/app/manifests/{md}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifest_too_large_413() {
    let e = env().await;
    let big = format!(r#"{{"schemaVersion":2,"x":"{}"}}"#, "a".repeat(70 << 10));
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/app/manifests/v1",
        &[("content-type", manifest::OCI_MANIFEST)],
        big,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.code(), "MANIFEST_INVALID");
}

#[tokio::test]
async fn index_requires_children_then_accepted() {
    let e = env().await;
    let child = push_image(&e.reg, "a/multi", "amd64", b"l-amd64").await;
    let size = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        &format!("/v2/a/multi/manifests/{child}"),
        &[],
        "",
    )
    .await
    .body
    .len();
    let idx = |d: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [
        {"mediaType": manifest::OCI_MANIFEST, "digest": d, "size": size, "platform": {"architecture": "amd64", "os": "linux"}}]}).to_string()
    };
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/multi/manifests/all",
        &[("content-type", manifest::OCI_INDEX)],
        idx(&digest(b"missing")),
    )
    .await;
    assert_eq!(a.code(), "MANIFEST_BLOB_UNKNOWN");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/multi/manifests/all",
        &[("content-type", manifest::OCI_INDEX)],
        idx(&child),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let t = e.reg.tags(Some("a/multi"), None).await.unwrap();
    let all = t.iter().find(|t| t.tag == "all").unwrap();
    assert_eq!(all.media_type, manifest::OCI_INDEX);
    assert!(all.size > size as u64);
}

#[tokio::test]
async fn tags_list_paged_with_link_header() {
    let e = env().await;
    for t in ["a", "b", "c"] {
        push_image(&e.reg, "a/app", t, b"layer").await;
    }
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        "/v2/a/app/tags/list?n=2",
        &[],
        "",
    )
    .await;
    assert_eq!(a.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        a.header("link"),
        "</v2/a/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        "/v2/a/app/tags/list?n=2&last=b",
        &[],
        "",
    )
    .await;
    assert_eq!(a.json()["tags"], serde_json::json!(["c"]));
    assert_eq!(a.header("link"), "");
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        "/v2/a/none/tags/list",
        &[],
        "",
    )
    .await;
    assert_eq!(a.code(), "NAME_UNKNOWN");
}

#[tokio::test]
async fn referrers_filtered_by_artifact_type() {
    let e = env().await;
    let subject = push_image(&e.reg, "a/app", "v1", b"layer").await;
    let subject_size = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/a/app/manifests/v1",
        &[],
        "",
    )
    .await
    .body
    .len();
    let empty = push_blob(&e.reg, "a/app", b"{}").await;
    let sig = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": manifest::OCI_MANIFEST, "digest": subject, "size": subject_size},
        "annotations": {"k": "v"},
    }).to_string();
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        &format!("/v2/a/app/manifests/{}", digest(sig.as_bytes())),
        &[("content-type", manifest::OCI_MANIFEST)],
        sig.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.header("oci-subject"), subject);
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        &format!("/v2/a/app/referrers/{subject}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let list = a.json();
    assert_eq!(list["manifests"][0]["digest"], digest(sig.as_bytes()));
    assert_eq!(
        list["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    assert_eq!(list["manifests"][0]["annotations"]["k"], "v");
    let a = call(
        &e.reg,
        Some("reader"),
        Method::GET,
        &format!("/v2/a/app/referrers/{subject}?artifactType=application/other"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.header("oci-filters-applied"), "artifactType");
    assert_eq!(a.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn catalog_lists_only_visible_repositories_paged() {
    let e = env().await;
    push_image(&e.reg, "a/one", "v1", b"1").await;
    push_image(&e.reg, "a/two", "v1", b"2").await;
    push_image(&e.reg, "b/three", "v1", b"3").await;
    let a = call(&e.reg, Some("ns-a"), Method::GET, "/v2/_catalog", &[], "").await;
    assert_eq!(
        a.json()["repositories"],
        serde_json::json!(["a/one", "a/two"])
    );
    let a = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/_catalog?n=1&last=a/one",
        &[],
        "",
    )
    .await;
    assert_eq!(a.json()["repositories"], serde_json::json!(["a/two"]));
    assert!(a.header("link").contains("last=a/two"));
}

#[tokio::test]
async fn push_without_rights_denied_or_unauthorized() {
    let e = env().await;
    let a = call(
        &e.reg,
        Some("reader"),
        Method::POST,
        "/v2/a/app/blobs/uploads/",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "DENIED");
    let a = call(
        &e.reg,
        None,
        Method::POST,
        "/v2/a/app/blobs/uploads/",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), "Basic realm=\"mini\"");
    let a = call(
        &e.reg,
        Some("ns-a"),
        Method::POST,
        "/v2/b/app/blobs/uploads/",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn invalid_names_rejected() {
    let e = env().await;
    for p in [
        "/v2/a/../b/tags/list",
        "/v2/A/b/tags/list",
        "/v2/a//b/tags/list",
    ] {
        let a = call(&e.reg, Some("admin"), Method::GET, p, &[], "").await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{p}");
        assert_eq!(a.code(), "NAME_INVALID");
    }
}

#[tokio::test]
async fn cross_repo_mount_needs_source_access() {
    let e = env().await;
    let d = push_blob(&e.reg, "a/src", b"shared").await;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/a/dst/blobs/uploads/?mount={d}&from=a/src"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = call(
        &e.reg,
        Some("admin"),
        Method::HEAD,
        &format!("/v2/a/dst/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let d2 = push_blob(&e.reg, "b/src", b"secret").await;
    let a = call(
        &e.reg,
        Some("ns-a"),
        Method::POST,
        &format!("/v2/a/dst/blobs/uploads/?mount={d2}&from=b/src"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn summaries_and_delete_tag() {
    let e = env().await;
    push_image(&e.reg, "a/app", "v1", b"layer-a").await;
    push_image(&e.reg, "docker.io/library/busybox", "latest", b"layer-b").await;
    let repos = e.reg.repositories(None).await.unwrap();
    assert_eq!(repos.len(), 2);
    let mirror = repos
        .iter()
        .find(|r| r.name == "docker.io/library/busybox")
        .unwrap();
    assert_eq!(mirror.namespace, None);
    assert_eq!(mirror.tag_count, 1);
    assert!(mirror.total_size > 7);
    assert_eq!(e.reg.repositories(Some("a")).await.unwrap().len(), 1);
    let tags = e.reg.tags(None, Some("a")).await.unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].repository, "a/app");
    e.reg.delete_tag("a/app", "v1").await.unwrap();
    assert!(e.reg.delete_tag("a/app", "v1").await.is_err());
}

/// Pushes an image with the given layers and a config carrying `label`; returns the manifest digest.
async fn push_layers(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layers: &[&[u8]],
    label: &str,
) -> String {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Labels": {"l": label}}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    .to_string();
    let c = push_blob(reg, repo, config.as_bytes()).await;
    let mut descs = Vec::new();
    for l in layers {
        let d = push_blob(reg, repo, l).await;
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
    }
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": descs})
    .to_string();
    let a = call(
        reg,
        Some("admin"),
        Method::PUT,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("content-type", manifest::OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    digest(m.as_bytes())
}

async fn gc_env(tweak: impl FnOnce(&mut RegistryConfig)) -> Env {
    let mut e = env().await;
    let mut cfg = config(e.dir.path());
    cfg.gc_grace = Duration::ZERO;
    tweak(&mut cfg);
    e.reopen(cfg).await;
    e
}

/// Ages every tag, manifest and link record so the grace period (seconds) has passed.
async fn age_records(e: &Env, secs: i64) {
    let m = meta::Meta {
        store: e.store.clone(),
    };
    for prefix in [
        meta::all_tags_prefix(),
        meta::all_manifests_prefix(),
        meta::all_links_prefix(),
    ] {
        let (items, _) = m.list::<serde_json::Value>(&prefix, None, 0).await.unwrap();
        for (key, mut v) in items {
            for field in ["pushed", "linked"] {
                if let Some(t) = v.get(field).and_then(|t| t.as_i64()) {
                    v[field] = (t - secs).into();
                }
            }
            m.put(&key, &v).await.unwrap();
        }
    }
}

async fn exists(e: &Env, repo: &str, what: &str, reference: &str) -> bool {
    call(
        &e.reg,
        Some("admin"),
        Method::HEAD,
        &format!("/v2/{repo}/{what}/{reference}"),
        &[],
        "",
    )
    .await
    .status
        == StatusCode::OK
}

#[tokio::test]
async fn gc_untagged_manifest_deleted_shared_blobs_kept() {
    let e = gc_env(|_| {}).await;
    let m1 = push_layers(&e.reg, "a/app", "v1", &[b"shared", b"unique-1"], "one").await;
    let m2 = push_layers(&e.reg, "a/app", "v2", &[b"shared", b"unique-2"], "two").await;
    e.reg.delete_tag("a/app", "v1").await.unwrap();
    age_records(&e, 10).await;
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.manifests_deleted, 1, "{r:?}");
    assert!(!exists(&e, "a/app", "manifests", &m1).await);
    assert!(exists(&e, "a/app", "manifests", &m2).await);
    assert!(exists(&e, "a/app", "blobs", &digest(b"shared")).await);
    assert!(exists(&e, "a/app", "blobs", &digest(b"unique-2")).await);
    assert!(!exists(&e, "a/app", "blobs", &digest(b"unique-1")).await);
    assert!(e
        .reg
        .disk
        .blob_size(&names::Digest::sha256_of(b"unique-1"))
        .await
        .is_none());
    assert!(e
        .reg
        .disk
        .blob_size(&names::Digest::sha256_of(b"shared"))
        .await
        .is_some());
}

#[tokio::test]
async fn gc_old_replicaset_template_image_kept() {
    let e = gc_env(|c| c.retention.keep_last_tags = Some(1)).await;
    let old = push_layers(&e.reg, "a/app", "v1", &[b"old-layer"], "old").await;
    age_records(&e, 100).await;
    let new = push_layers(&e.reg, "a/app", "v2", &[b"new-layer"], "new").await;
    age_records(&e, 10).await;
    let rs = serde_json::json!({"kind": "ReplicaSet", "spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "10.0.0.1:6443/a/app:v1"}]}}}});
    e.store
        .create(
            "/registry/apps/replicasets/a/app-old",
            rs.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.tags_deleted, 0, "{r:?}");
    assert!(exists(&e, "a/app", "manifests", "v1").await);
    assert!(exists(&e, "a/app", "manifests", &old).await);
    assert!(exists(&e, "a/app", "blobs", &digest(b"old-layer")).await);
    assert!(exists(&e, "a/app", "manifests", &new).await);
    // Once the ReplicaSet is gone, retention drops the old tag and GC its image.
    e.store
        .delete("/registry/apps/replicasets/a/app-old", None)
        .await
        .unwrap();
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.tags_deleted, 1, "{r:?}");
    assert!(!exists(&e, "a/app", "manifests", &old).await);
    assert!(!exists(&e, "a/app", "blobs", &digest(b"old-layer")).await);
    assert!(exists(&e, "a/app", "manifests", "v2").await);
}

#[tokio::test]
async fn retention_keep_last_n_keeps_roots() {
    let e = gc_env(|c| c.retention.keep_last_tags = Some(2)).await;
    for (i, t) in ["t1", "t2", "t3", "t4"].iter().enumerate() {
        push_layers(&e.reg, "a/app", t, &[format!("layer-{t}").as_bytes()], t).await;
        age_records(&e, 100 - 10 * i as i64).await;
    }
    // A pod by digest of the oldest tag's image, another by tag through docker.io mirror naming.
    let t1 = e
        .reg
        .resolve("a/app", "t1")
        .await
        .unwrap()
        .unwrap()
        .0
        .to_string();
    let pod = serde_json::json!({"spec": {"containers": [{"name": "c", "image": format!("10.0.0.1:6443/a/app@{t1}")}]}});
    e.store
        .create("/registry/core/pods/a/p1", pod.to_string().into_bytes())
        .await
        .unwrap();
    let r = e.reg.gc().await.unwrap();
    let mut left: Vec<String> = e
        .reg
        .tags(Some("a/app"), None)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    left.sort();
    assert_eq!(left, vec!["t1", "t3", "t4"], "{r:?}");
    assert!(!exists(&e, "a/app", "blobs", &digest(b"layer-t2")).await);
    assert!(exists(&e, "a/app", "blobs", &digest(b"layer-t1")).await);
}

#[tokio::test]
async fn gc_grace_period_keeps_fresh_unreferenced_blobs() {
    let e = env().await;
    push_blob(&e.reg, "a/app", b"pushed, manifest not yet").await;
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.blobs_deleted, 0);
    assert!(exists(&e, "a/app", "blobs", &digest(b"pushed, manifest not yet")).await);
}

#[tokio::test]
async fn gc_concurrent_with_pushes_loses_nothing_committed() {
    let e = env().await;
    let reg = e.reg.clone();
    let gc = tokio::spawn(async move {
        for _ in 0..20 {
            reg.gc().await.unwrap();
        }
    });
    let mut pushed = Vec::new();
    for i in 0..10 {
        pushed.push(
            push_layers(
                &e.reg,
                "a/app",
                &format!("v{i}"),
                &[format!("l{i}").as_bytes()],
                "x",
            )
            .await,
        );
    }
    gc.await.unwrap();
    for (i, m) in pushed.iter().enumerate() {
        assert!(exists(&e, "a/app", "manifests", m).await);
        assert!(exists(&e, "a/app", "blobs", &digest(format!("l{i}").as_bytes())).await);
    }
}

fn tarball(dir: &std::path::Path, name: &str, payload: &str) -> std::path::PathBuf {
    let spec = mini_images::ImageSpec {
        name: name.to_string(),
        files: vec![mini_images::ImageFile {
            path: "/p.txt".into(),
            mode: 0o644,
            contents: payload.as_bytes().to_vec(),
        }],
        symlinks: vec![],
        entrypoint: vec!["/bin/true".into()],
        cmd: vec![],
        env: vec![],
        working_dir: None,
        architecture: Some("amd64".into()),
    };
    let path = dir.join(format!("{}.tar", payload.len()));
    std::fs::write(&path, mini_images::build_image_tarball(&spec).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn import_archive_names_mapped_to_repositories() {
    let e = env().await;
    let refs = e
        .reg
        .import_archive(&tarball(e.dir.path(), "busybox:1.36", "bb"))
        .await
        .unwrap();
    assert_eq!(refs, vec!["docker.io/library/busybox:1.36"]);
    let refs = e
        .reg
        .import_archive(&tarball(e.dir.path(), "10.0.0.1:6443/a/app:v1", "app"))
        .await
        .unwrap();
    assert_eq!(refs, vec!["a/app:v1"]);
    assert!(exists(&e, "a/app", "manifests", "v1").await);
    assert!(exists(&e, "docker.io/library/busybox", "manifests", "1.36").await);
    // Importing again is idempotent.
    let refs = e
        .reg
        .import_archive(&tarball(e.dir.path(), "10.0.0.1:6443/a/app:v1", "app"))
        .await
        .unwrap();
    assert_eq!(refs, vec!["a/app:v1"]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn commit_appends_layer_diff_id_and_history() {
    let e = env().await;
    e.reg
        .import_archive(&tarball(e.dir.path(), "10.0.0.1:6443/a/base:v1", "base"))
        .await
        .unwrap();
    let tar = b"pretend this is a tar".to_vec();
    let layer = gzip(&tar);
    let req = CommitRequest {
        base_reference: "a/base:v1".into(),
        target_repository: "b/committed".into(),
        target_tag: "snap".into(),
        diff_id: digest(&tar),
        layer_digest: Some(digest(&layer)),
    };
    let chunks: Vec<std::io::Result<Bytes>> = layer
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let d = e
        .reg
        .commit(req.clone(), futures::stream::iter(chunks))
        .await
        .unwrap();
    let m = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/b/committed/manifests/snap",
        &[],
        "",
    )
    .await;
    assert_eq!(m.header("docker-content-digest"), d);
    let m = m.json();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[1]["digest"], digest(&layer));
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let c = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        &format!(
            "/v2/b/committed/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        &[],
        "",
    )
    .await;
    let c = c.json();
    assert_eq!(c["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(c["rootfs"]["diff_ids"][1], digest(&tar));
    assert_eq!(
        c["history"].as_array().unwrap().last().unwrap()["created_by"],
        "mini commit"
    );
    assert!(
        exists(
            &e,
            "b/committed",
            "blobs",
            layers[0]["digest"].as_str().unwrap()
        )
        .await
    );
    // A layer that does not match its announced digest stores nothing.
    let bad = CommitRequest {
        target_tag: "bad".into(),
        layer_digest: Some(digest(b"other")),
        ..req
    };
    let err = e
        .reg
        .commit(bad, futures::stream::iter(vec![Ok(Bytes::from(layer))]))
        .await;
    assert!(err.is_err());
    assert!(!exists(&e, "b/committed", "manifests", "bad").await);
}

/// Mounts a small tmpfs (root only); `None` when mounting is not possible here.
fn small_tmpfs(dir: &std::path::Path, size: &str) -> Option<std::path::PathBuf> {
    let mnt = dir.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(mnt)
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn disk_full_upload_507_and_nothing_else_lost() {
    let mut e = env().await;
    let Some(mnt) = small_tmpfs(e.dir.path(), "1m") else {
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    };
    let _unmount = Unmount(mnt.clone());
    let mut cfg = config(e.dir.path());
    cfg.root = mnt.join("registry");
    e.reopen(cfg).await;
    let small = push_blob(&e.reg, "a/app", b"small blob").await;
    // Monolithic: the blob does not fit; nothing is left behind.
    let big = vec![7u8; 2 << 20];
    let a = call(
        &e.reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/a/app/blobs/uploads/?digest={}", digest(&big)),
        &[],
        big.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(a.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    assert_eq!(
        std::fs::read_dir(mnt.join("registry/uploads"))
            .unwrap()
            .count(),
        0
    );
    // Chunked: the failed chunk is rolled back, the session continues from the last good offset.
    let loc = start_session(&e.reg, "a/app").await;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[],
        vec![1u8; 100 << 10],
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let a = call(&e.reg, Some("admin"), Method::PATCH, &loc, &[], big.clone()).await;
    assert_eq!(a.status, StatusCode::INSUFFICIENT_STORAGE);
    let a = call(&e.reg, Some("admin"), Method::GET, &loc, &[], "").await;
    assert_eq!(a.header("range"), format!("0-{}", (100 << 10) - 1));
    let a = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        &format!("/v2/a/app/blobs/{small}"),
        &[],
        "",
    )
    .await;
    assert_eq!(&a.body[..], b"small blob");
    let a = call(&e.reg, Some("admin"), Method::DELETE, &loc, &[], "").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn gc_upload_in_progress_keeps_repository_blobs() {
    let e = gc_env(|_| {}).await;
    push_blob(&e.reg, "a/app", b"first layer of a slow push").await;
    let loc = start_session(&e.reg, "a/app").await;
    call(
        &e.reg,
        Some("admin"),
        Method::PATCH,
        &loc,
        &[],
        "second layer, half",
    )
    .await;
    age_records(&e, 10).await;
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.blobs_deleted, 0, "{r:?}");
    assert!(exists(&e, "a/app", "blobs", &digest(b"first layer of a slow push")).await);
    // Once the session is gone (cancelled or expired) the unreferenced blob goes.
    call(&e.reg, Some("admin"), Method::DELETE, &loc, &[], "").await;
    let r = e.reg.gc().await.unwrap();
    assert_eq!(r.blobs_deleted, 1, "{r:?}");
}

#[tokio::test]
async fn run_background_expires_stale_upload() {
    let mut e = env().await;
    let loc = start_session(&e.reg, "a/app").await;
    let mut cfg = config(e.dir.path());
    cfg.upload_timeout = Duration::ZERO;
    cfg.gc_interval = Some(Duration::ZERO);
    e.reopen(cfg).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    e.reg.run_background(shutdown.clone());
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if call(&e.reg, Some("admin"), Method::GET, &loc, &[], "")
            .await
            .status
            == StatusCode::NOT_FOUND
        {
            gone = true;
            break;
        }
    }
    shutdown.cancel();
    assert!(gone, "the stale upload was not expired");
}

#[tokio::test]
async fn manifest_unknown_media_type_refused_nothing_stored() {
    let e = env().await;
    let m = r#"{"schemaVersion":2,"mediaType":"application/x-not-a-manifest","layers":[]}"#;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/app/manifests/v1",
        &[("content-type", "application/x-not-a-manifest")],
        m,
    )
    .await;
    assert!(a.status.is_client_error(), "{:?}", a.status);
    assert!(
        matches!(a.code().as_str(), "MANIFEST_INVALID" | "UNSUPPORTED"),
        "{}",
        a.code()
    );
    let a = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/a/app/manifests/v1",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifest_invalid_json_refused_nothing_stored() {
    let e = env().await;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::PUT,
        "/v2/a/app/manifests/v1",
        &[("content-type", manifest::OCI_MANIFEST)],
        "{\"schemaVersion\": 2, \"config\": ",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "MANIFEST_INVALID");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/a/app/tags/list",
        &[],
        "",
    )
    .await;
    assert!(
        a.status == StatusCode::NOT_FOUND
            || a.json()["tags"].as_array().is_none_or(|t| t.is_empty()),
        "no tag may exist: {:?}",
        a.body
    );
}

#[tokio::test]
async fn blob_truncated_body_refused_nothing_stored() {
    let e = env().await;
    let data = b"the whole blob".to_vec();
    let d = digest(&data);
    // the client announced the full length but the connection delivered only half
    let half = data[..data.len() / 2].to_vec();
    let a = call(
        &e.reg,
        Some("admin"),
        Method::POST,
        &format!("/v2/a/app/blobs/uploads/?digest={d}"),
        &[],
        half,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "DIGEST_INVALID");
    let a = call(
        &e.reg,
        Some("admin"),
        Method::HEAD,
        &format!("/v2/a/app/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blob_path_with_dot_dot_is_name_invalid() {
    let e = env().await;
    let a = call(
        &e.reg,
        Some("admin"),
        Method::GET,
        "/v2/a/../b/tags/list",
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "NAME_INVALID");
}
