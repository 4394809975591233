//! Tests of the node API: client-certificate checks and routes over real TLS on loopback.

use super::*;
use mini_certs::{CertAuthority, SubjectAltNames};
use serde_json::json;

struct TestBackend;

#[async_trait]
impl NodeBackend for TestBackend {
    async fn container_log_path(
        &self,
        _namespace: &str,
        pod: &str,
        _container: &str,
        _previous: bool,
    ) -> Result<PathBuf, BackendError> {
        Err(BackendError::NotFound(format!("pod {pod:?} not found")))
    }
    async fn container_running(&self, _: &str, _: &str, _: &str) -> Result<bool, BackendError> {
        Ok(false)
    }
    async fn exec_url(
        &self,
        _: &str,
        pod: &str,
        _: &str,
        _: Vec<String>,
        _: ExecOptions,
    ) -> Result<String, BackendError> {
        Err(BackendError::NotFound(format!("pod {pod:?} not found")))
    }
    async fn attach_url(
        &self,
        _: &str,
        pod: &str,
        _: &str,
        _: ExecOptions,
    ) -> Result<String, BackendError> {
        Err(BackendError::NotFound(format!("pod {pod:?} not found")))
    }
    async fn pod_network(&self, _: &str, pod: &str) -> Result<PodNet, BackendError> {
        Err(BackendError::NotFound(format!("pod {pod:?} not found")))
    }
    async fn stats_summary(&self) -> Result<Value, BackendError> {
        Ok(json!({"node": {"nodeName": "n1"}, "pods": []}))
    }
    async fn stats_live(
        &self,
        pods: &[mini_nodestats::PodKey],
    ) -> Result<mini_nodestats::LiveReading, BackendError> {
        // the sampler's real readers over a fake cgroup v2 host with one container of shop/web
        let fs = Arc::new(mini_nodestats::FakeFs::new());
        fs.set("/proc/mounts", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        fs.set("/proc/stat", "cpu  200 0 0 100 0 0 0 0 0 0\n");
        fs.set("/proc/meminfo", "MemTotal: 10 kB\nMemAvailable: 4 kB\n");
        fs.set("/proc/5/cgroup", "0::/kubepods/web/app\n");
        let dir = "/sys/fs/cgroup/kubepods/web/app";
        fs.set(format!("{dir}/cpu.stat"), "usage_usec 750\n");
        fs.set(format!("{dir}/memory.current"), "4096\n");
        fs.set(format!("{dir}/memory.stat"), "inactive_file 1024\n");
        let sampler = mini_nodestats::Sampler::new(
            mini_nodestats::NodeStatsConfig::new("n1", std::path::Path::new("/data")),
            fs,
            None,
        );
        let web = mini_nodestats::pods::ContainerRef {
            id: "c1".into(),
            namespace: "shop".into(),
            pod: "web".into(),
            container: "app".into(),
            pid: Some(5),
            ..Default::default()
        };
        sampler
            .live_containers(1_000, &[web], pods)
            .map_err(|e| BackendError::Internal(e.to_string()))
    }
    async fn metrics(&self) -> Result<String, BackendError> {
        Ok("process_resident_memory_bytes 1.0\n# EOF\n".into())
    }
    async fn pods(&self) -> Result<Value, BackendError> {
        Ok(json!({"kind": "PodList", "apiVersion": "v1", "items": []}))
    }
    async fn commit_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<mini_cri::ContainerLayer, BackendError> {
        if (namespace, pod, container) != ("default", "web", "app") {
            return Err(BackendError::NotFound(format!("pod {pod:?} not found")));
        }
        let chunks = [b"layer ".as_slice(), b"bytes".as_slice()].map(|c| Ok(Bytes::from_static(c)));
        Ok(mini_cri::ContainerLayer {
            image_ref: "docker.io/library/busybox:1".into(),
            image_digest: Some("sha256:aa".into()),
            layer_digest: "sha256:bb".into(),
            size: 11,
            diff_id: "sha256:cc".into(),
            media_type: mini_cri::commit::LAYER_MEDIA_TYPE.into(),
            content: Box::pin(futures::stream::iter(chunks)),
        })
    }
    async fn read_log(
        &self,
        _: PathBuf,
        _: LogQuery,
        _: CancellationToken,
    ) -> Result<Body, BackendError> {
        Err(BackendError::Internal("unused".into()))
    }
    async fn remove_local_path(&self, name: &str) -> Result<bool, BackendError> {
        if !mini_localpath::dirs::is_plain_name(name) {
            return Err(BackendError::BadRequest(format!("bad name {name:?}")));
        }
        Ok(name == "pvc-present")
    }
}

struct Fixture {
    ca: CertAuthority,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Fixture {
    let ca = CertAuthority::generate("test-ca").expect("ca");
    let serving = ca
        .issue_server(
            "node",
            &SubjectAltNames {
                dns: vec![],
                ips: vec!["127.0.0.1".parse().expect("ip")],
            },
        )
        .expect("serving");
    let tls = tls_config(&serving, ca.cert_pem()).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        tls,
        Arc::new(TestBackend),
        Arc::new(mini_sys::FakeHost::default()),
        shutdown.clone(),
    ));
    Fixture { ca, addr, shutdown }
}

/// GET `path` presenting `client` (if any); the status, or the connection error.
async fn get(
    f: &Fixture,
    client: Option<&IssuedCert>,
    path: &str,
) -> Result<(StatusCode, String), String> {
    send(f, client, Method::GET, path)
        .await
        .map(|(status, _, body)| (status, body))
}

/// `method` `path` presenting `client` (if any); the status, headers and body, or the connection error.
async fn send(
    f: &Fixture,
    client: Option<&IssuedCert>,
    method: Method,
    path: &str,
) -> Result<(StatusCode, http::HeaderMap, String), String> {
    let tls = mini_certs::client_tls_config(f.ca.cert_pem(), client).expect("client tls");
    let tcp = tokio::net::TcpStream::connect(f.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "node")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn node_api_api_server_cert_is_served() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let (status, body) = get(&f, Some(&client), "/healthz").await.expect("get");
    assert_eq!((status, body.trim()), (StatusCode::OK, "ok"));
    let (status, body) = get(&f, Some(&client), "/stats/summary").await.expect("get");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["node"]["nodeName"],
        "n1"
    );
}

#[tokio::test]
async fn node_api_metrics_are_served_as_openmetrics_text() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let (status, body) = get(&f, Some(&client), "/metrics").await.expect("get");
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("process_resident_memory_bytes"), "{body}");
}

#[tokio::test]
async fn node_api_stats_live_reads_the_node_and_the_requested_pods() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let (status, body) = get(
        &f,
        Some(&client),
        "/stats/live?pod=shop%2Fweb&pod=shop/gone",
    )
    .await
    .expect("get");
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["nodeName"], "n1");
    assert_eq!(v["timeMs"], 1_000);
    assert_eq!(v["node"]["usageCoreNanoSeconds"], 2_000_000_000u64);
    assert_eq!(v["node"]["workingSetBytes"], 6 * 1024);
    assert_eq!(
        v["pods"],
        json!([{"namespace": "shop", "name": "web", "containers": 1,
                "usageCoreNanoSeconds": 750_000, "workingSetBytes": 3072}])
    );
    let (status, body) = get(&f, Some(&client), "/stats/live").await.expect("get");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["pods"],
        json!([])
    );
    let (status, body) = get(&f, Some(&client), "/stats/live?pod=web")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("is not <namespace>/<name>"), "{body}");
    let other =
        f.ca.issue_client("system:node:other", &["system:nodes".to_string()])
            .expect("client");
    let (status, _) = get(&f, Some(&other), "/stats/live").await.expect("get");
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn node_api_other_common_name_is_forbidden() {
    let f = start().await;
    let client =
        f.ca.issue_client("system:node:other", &["system:nodes".to_string()])
            .expect("client");
    let (status, _) = get(&f, Some(&client), "/healthz").await.expect("get");
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn node_api_without_client_cert_fails_tls() {
    let f = start().await;
    assert!(get(&f, None, "/healthz").await.is_err());
}

#[tokio::test]
async fn node_api_cert_from_another_ca_fails_tls() {
    let f = start().await;
    let other = CertAuthority::generate("other-ca").expect("ca");
    let client = other
        .issue_client(API_SERVER_CLIENT_CN, &[])
        .expect("client");
    assert!(get(&f, Some(&client), "/healthz").await.is_err());
}

#[tokio::test]
async fn node_api_unknown_pod_is_404_and_bad_query_is_400() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let (status, _) = get(&f, Some(&client), "/containerLogs/default/nope/app")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = get(
        &f,
        Some(&client),
        "/containerLogs/default/nope/app?tailLines=x",
    )
    .await
    .expect("get");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = get(&f, Some(&client), "/exec/default/nope/app?command=sh")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&f, Some(&client), "/nowhere").await.expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn node_api_commit_streams_layer_with_mini_headers() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let path = "/commit?namespace=default&pod=web&container=app";
    let (status, headers, body) = send(&f, Some(&client), Method::POST, path)
        .await
        .expect("post");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "layer bytes");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(
        header("Mini-Image-Ref"),
        Some("docker.io/library/busybox:1")
    );
    assert_eq!(header("Mini-Image-Digest"), Some("sha256:aa"));
    assert_eq!(header("Mini-Layer-Digest"), Some("sha256:bb"));
    assert_eq!(header("Mini-Diff-Id"), Some("sha256:cc"));
    assert_eq!(header("Content-Length"), Some("11"));
    assert_eq!(
        header("Content-Type"),
        Some("application/vnd.oci.image.layer.v1.tar+gzip")
    );

    let missing = "/commit?namespace=default&pod=web";
    let (status, _, body) = send(&f, Some(&client), Method::POST, missing)
        .await
        .expect("post");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("container"), "{body}");
    let unknown = "/commit?namespace=default&pod=nope&container=app";
    let (status, _, _) = send(&f, Some(&client), Method::POST, unknown)
        .await
        .expect("post");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&f, Some(&client), path).await.expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND, "commit is POST only");

    let node =
        f.ca.issue_client("system:node:other", &["system:nodes".to_string()])
            .expect("client");
    let (status, _, _) = send(&f, Some(&node), Method::POST, path)
        .await
        .expect("post");
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn parse_query_repeated_and_encoded_values_are_decoded() {
    let q = parse_query(Some("command=sh&command=-c&command=echo%20hi+there&tty=1"));
    assert_eq!(q["command"], ["sh", "-c", "echo hi there"]);
    assert!(flag(&q, "tty").expect("flag"));
    let logs = log_query(&parse_query(Some(
        "follow=true&tailLines=10&sinceTime=2024-01-01T00:00:00Z",
    )))
    .expect("logs");
    assert!(logs.follow);
    assert_eq!(logs.tail_lines, Some(10));
    assert!(log_query(&parse_query(Some("sinceTime=yesterday"))).is_err());
}

#[tokio::test]
async fn node_api_localpath_delete_removes_only_plain_names() {
    let f = start().await;
    let client =
        f.ca.issue_client(API_SERVER_CLIENT_CN, &[])
            .expect("client");
    let del = |path: &'static str| send(&f, Some(&client), Method::DELETE, path);
    let (status, _, body) = del("/localpath/pvc-present").await.expect("delete");
    assert_eq!((status, body.trim()), (StatusCode::OK, "removed"));
    let (status, _, body) = del("/localpath/pvc-gone").await.expect("delete");
    assert_eq!((status, body.trim()), (StatusCode::OK, "absent"));
    let (status, _, _) = del("/localpath/..").await.expect("delete");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = del("/localpath/a%2F..%2Fb").await.expect("delete");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = del("/localpath/a/b").await.expect("delete");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&f, Some(&client), "/localpath/pvc-present")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let node =
        f.ca.issue_client("system:node:other", &["system:nodes".to_string()])
            .expect("client");
    let (status, _, _) = send(&f, Some(&node), Method::DELETE, "/localpath/pvc-present")
        .await
        .expect("delete");
    assert_eq!(status, StatusCode::FORBIDDEN);
}
