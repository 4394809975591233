//! Unit tests of fetching from peers and of the replicator: two registries on one store (two
//! servers of a cluster), the peer served over plain HTTP on loopback, and a lying peer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mini_regclient::{ClientConfig, Credentials, RegistryClient};

use crate::tests::{call, config, digest, push_blob, push_image, Answer, FakeAccess};
use crate::*;

/// A request without body or headers, as the administrator.
async fn admin(reg: &Registry, method: Method, path: &str) -> Answer {
    call(reg, Some("admin"), method, path, &[], "").await
}

/// Two servers' registries on one store, each with its own disk.
struct Pair {
    _dir: tempfile::TempDir,
    a: Arc<Registry>,
    b: Arc<Registry>,
}

async fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn mini_store::Store> =
        Arc::new(mini_store::SledStore::open(&dir.path().join("db")).unwrap());
    let a = Registry::open(
        config(&dir.path().join("a")),
        store.clone(),
        Arc::new(FakeAccess),
    )
    .await
    .unwrap();
    let b = Registry::open(config(&dir.path().join("b")), store, Arc::new(FakeAccess))
        .await
        .unwrap();
    Pair { _dir: dir, a, b }
}

/// Serves `answer` on a loopback port over HTTP/1; returns the port.
async fn serve<F, Fut>(answer: F) -> u16
where
    F: Fn(http::Request<RequestBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<ResponseBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (parts, body) = req.into_parts();
                    let body = body.map_err(std::io::Error::other).boxed_unsync();
                    let fut = answer(http::Request::from_parts(parts, body));
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// A registry served as a peer.
async fn serve_registry(reg: Arc<Registry>) -> u16 {
    serve(move |req| {
        let reg = reg.clone();
        async move { reg.handle(req, None).await }
    })
    .await
}

/// A peer that answers every GET with the same wrong bytes.
async fn serve_liar() -> u16 {
    serve(|_req| async {
        http::Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(
                Full::new(Bytes::from_static(b"not what you asked for"))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    })
    .await
}

fn peer_client(port: u16) -> Arc<RegistryClient> {
    let mut c = ClientConfig::new(format!("http://127.0.0.1:{port}"));
    c.credentials = Credentials::Basic {
        username: "admin".into(),
        password: "pw".into(),
    };
    c.timeout = Duration::from_secs(10);
    c.headers = vec![(PEER_HEADER.into(), "1".into())];
    Arc::new(RegistryClient::new(c).unwrap())
}

struct FakePeers(Vec<Arc<RegistryClient>>);

#[async_trait::async_trait]
impl Peers for FakePeers {
    async fn registries(&self) -> Vec<Arc<RegistryClient>> {
        self.0.clone()
    }
}

fn on_disk(reg: &Registry, d: &str) -> bool {
    reg.disk
        .blob_path(&names::Digest::parse(d).unwrap())
        .is_file()
}

/// Files left in the uploads directory (a rejected fetch leaves none).
fn upload_files(reg: &Registry) -> usize {
    std::fs::read_dir(reg.config.root.join("uploads"))
        .unwrap()
        .count()
}

/// The config and layer digests of the image manifest `m` in `repo` of `reg`.
async fn blobs_of(reg: &Registry, repo: &str, m: &str) -> Vec<String> {
    let (_, rec) = reg.resolve(repo, m).await.unwrap().unwrap();
    rec.blobs
}

#[tokio::test]
async fn peer_fetch_blob_pushed_through_other_server_served_and_stored() {
    let p = pair().await;
    let m = push_image(&p.a, "default/app", "v1", b"layer one").await;
    let layer = digest(b"layer one");
    // without peers the second server knows the blob but cannot serve it
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/blobs/{layer}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UNKNOWN");
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/blobs/{layer}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.as_ref(), b"layer one");
    assert!(on_disk(&p.b, &layer));
    // HEAD of the config fetches it too; the manifest by tag comes from the peer as well
    let config = blobs_of(&p.a, "default/app", &m).await[0].clone();
    let a = admin(
        &p.b,
        Method::HEAD,
        &format!("/v2/default/app/blobs/{config}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(on_disk(&p.b, &config));
    let a = admin(&p.b, Method::GET, "/v2/default/app/manifests/v1").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(digest(&a.body), m);
    assert!(on_disk(&p.b, &m));
}

#[tokio::test]
async fn peer_fetch_wrong_digest_not_stored_next_peer_used() {
    let p = pair().await;
    let m = push_image(&p.a, "default/app", "v1", b"layer one").await;
    let layer = digest(b"layer one");
    let liar = peer_client(serve_liar().await);
    p.b.set_peers(Arc::new(FakePeers(vec![
        liar,
        peer_client(serve_registry(p.a.clone()).await),
    ])));
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/blobs/{layer}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.as_ref(), b"layer one");
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/manifests/{m}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(digest(&a.body), m);
    assert_eq!(upload_files(&p.b), 0);
}

#[tokio::test]
async fn peer_fetch_only_liar_blob_unknown_nothing_stored() {
    let p = pair().await;
    let m = push_image(&p.a, "default/app", "v1", b"layer one").await;
    let layer = digest(b"layer one");
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(serve_liar().await)])));
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/blobs/{layer}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UNKNOWN");
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/manifests/{m}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "MANIFEST_UNKNOWN");
    assert!(!on_disk(&p.b, &layer));
    assert!(!on_disk(&p.b, &m));
    assert_eq!(upload_files(&p.b), 0);
}

#[tokio::test]
async fn peer_fetch_blob_no_server_has_blob_unknown_without_loop() {
    let p = pair().await;
    push_image(&p.a, "default/app", "v1", b"layer one").await;
    let layer = digest(b"layer one");
    // each server the other's peer; the blob lost from the disk that took it
    std::fs::remove_file(p.a.disk.blob_path(&names::Digest::parse(&layer).unwrap())).unwrap();
    p.a.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.b.clone()).await,
    )])));
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    let a = admin(&p.b, Method::GET, &format!("/v2/default/app/blobs/{layer}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "BLOB_UNKNOWN");
    let a = admin(
        &p.a,
        Method::HEAD,
        &format!("/v2/default/app/blobs/{layer}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn replicate_once_copies_every_live_manifest_then_nothing() {
    let p = pair().await;
    let m1 = push_image(&p.a, "default/app", "v1", b"layer one").await;
    let m2 = push_image(&p.a, "default/other", "v1", b"layer two").await;
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    let report = p.b.replicate_once().await.unwrap();
    assert_eq!(report.copied, 6, "{report:?}");
    assert_eq!(report.missing, 0);
    for (repo, m) in [("default/app", &m1), ("default/other", &m2)] {
        assert!(on_disk(&p.b, m));
        for b in blobs_of(&p.a, repo, m).await {
            assert!(on_disk(&p.b, &b), "{b}");
        }
    }
    assert_eq!(
        p.b.replicate_once().await.unwrap(),
        ReplicaReport::default()
    );
}

#[tokio::test]
async fn replicate_once_skips_deleted_manifests_and_unreferenced_blobs() {
    let p = pair().await;
    let m = push_image(&p.a, "default/app", "v1", b"layer one").await;
    // a blob linked but named by no manifest (a push under way, or GC's next victim)
    let loose = push_blob(&p.a, "default/app", b"loose blob").await;
    let a = admin(
        &p.a,
        Method::DELETE,
        &format!("/v2/default/app/manifests/{m}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    assert_eq!(
        p.b.replicate_once().await.unwrap(),
        ReplicaReport::default()
    );
    assert!(!on_disk(&p.b, &m));
    assert!(!on_disk(&p.b, &loose));
    assert!(!on_disk(&p.b, &digest(b"layer one")));
}

#[tokio::test]
async fn run_replicator_push_copied_on_nudge_before_period() {
    let p = pair().await;
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    let stop = tokio_util::sync::CancellationToken::new();
    // a period far beyond the test: only the watch's nudge can copy the push
    p.b.run_replicator(Duration::from_secs(3600), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = push_image(&p.a, "default/app", "v1", b"layer one").await;
    let layer = digest(b"layer one");
    let mut copied = false;
    for _ in 0..100 {
        if on_disk(&p.b, &m) && on_disk(&p.b, &layer) {
            copied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    assert!(copied, "the push was not copied to the second server");
}

#[tokio::test]
async fn upload_of_another_server_survives_this_server_restart() {
    let p = pair().await;
    let a = admin(&p.a, Method::POST, "/v2/default/app/blobs/uploads/").await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let location = a.header("location");
    // the second server restarts while the first one's upload is under way
    let b_config = p.b.config.clone();
    let store = p.b.meta.store.clone();
    drop(p.b);
    let _b = Registry::open(b_config, store, Arc::new(FakeAccess))
        .await
        .unwrap();
    let data = b"uploaded while the other server restarted";
    let d = digest(data);
    let a = call(
        &p.a,
        Some("admin"),
        Method::PUT,
        &format!("{location}?digest={d}"),
        &[],
        data.to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
}

#[tokio::test]
async fn manifest_put_on_other_server_than_blobs_fetches_them() {
    let p = pair().await;
    let layer = push_blob(&p.a, "default/app", b"layer one").await;
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layer, "size": 9},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 9}]})
    .to_string();
    let put = |reg: Arc<Registry>| {
        let m = m.clone();
        async move {
            call(
                &reg,
                Some("admin"),
                Method::PUT,
                "/v2/default/app/manifests/v1",
                &[("content-type", manifest::OCI_MANIFEST)],
                m,
            )
            .await
        }
    };
    // the blob is only on the first server's disk: without peers the second refuses
    let a = put(p.b.clone()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "MANIFEST_BLOB_UNKNOWN");
    p.b.set_peers(Arc::new(FakePeers(vec![peer_client(
        serve_registry(p.a.clone()).await,
    )])));
    let a = put(p.b.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    assert!(on_disk(&p.b, &layer));
}
