//! The API server's node side over real TLS: joining with the token (certificates, node
//! identity, name conflicts), the node RBAC, and proxying logs, exec and resource metrics to
//! a small in-test HTTPS "agent" that accepts only the kubelet client certificate.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::Client;
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_certs::{CertAuthority, IssuedCert, SubjectAltNames};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "joinsecret0123456789";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A real API server on 127.0.0.1 with a PKI and a join token.
struct Cluster {
    dir: TempDir,
    addr: SocketAddr,
    ca_pem: String,
    ca: Arc<CertAuthority>,
    pki: mini_certs::ServerPki,
    token: String,
    admin: Client,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let sans = SubjectAltNames {
        dns: vec!["localhost".into()],
        ips: vec![LOCALHOST],
    };
    let pki = mini_certs::ensure_server_pki(&dir.path().join("tls"), &sans).unwrap();
    let ca_pem = pki.ca.cert_pem().to_string();
    let ca = Arc::new(CertAuthority::from_pem(&ca_pem, &pki.ca.key_pem()).unwrap());
    let store = mini_store::SledStore::open(&dir.path().join("db")).unwrap();
    let config = ApiServerConfig {
        join_secret: Some(SECRET.into()),
        ca_pem: ca_pem.clone(),
        ca: Some(ca.clone()),
        kubelet_client: Some(pki.apiserver_client.clone()),
        ..ApiServerConfig::for_tests()
    };
    let server = ApiServer::new(Arc::new(store), config).await.unwrap();
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = mini_certs::server_tls_config(&pki.serving, &ca_pem).unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(mini_apiserver::serve(
        server,
        listener,
        tls,
        shutdown.clone(),
    ));
    let admin = client_for(&dir, addr, &ca_pem, &pki.admin, "admin").await;
    Cluster {
        token: mini_certs::JoinToken::format(&ca_pem, SECRET),
        dir,
        addr,
        ca_pem,
        ca,
        pki,
        admin,
        shutdown,
    }
}

/// A kube client authenticating with `cert` (through a kubeconfig, as a person would).
async fn client_for(
    dir: &TempDir,
    addr: SocketAddr,
    ca_pem: &str,
    cert: &IssuedCert,
    name: &str,
) -> Client {
    let path = dir.path().join(format!("{name}.kubeconfig"));
    mini_certs::write_kubeconfig(&path, &format!("https://{addr}"), ca_pem, cert, 0o600).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// One HTTPS request over a fresh HTTP/1.1 connection; the response with its streaming body.
async fn https(
    addr: SocketAddr,
    ca_pem: &str,
    cert: Option<&IssuedCert>,
    req: Request<Full<Bytes>>,
) -> Response<hyper::body::Incoming> {
    let tls = mini_certs::client_tls_config(ca_pem, cert).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await.unwrap()
}

async fn body_json(resp: Response<hyper::body::Incoming>) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not json ({e}): {}", String::from_utf8_lossy(&bytes)))
}

struct Joined {
    client_cert: String,
    client_key: String,
    serving_cert: String,
    serving_key: String,
}

/// Posts a join request; the response status and JSON body, plus the generated keys.
async fn join(c: &Cluster, token: &str, node: &str, password: &str) -> (StatusCode, Value, Joined) {
    // the CSR asks for admin rights: the server must ignore its subject
    let (client_csr, client_key) =
        mini_certs::generate_csr("system:admin", &SubjectAltNames::default()).unwrap();
    let serving_sans = SubjectAltNames {
        dns: vec![node.into()],
        ips: vec![LOCALHOST],
    };
    let (serving_csr, serving_key) = mini_certs::generate_csr(node, &serving_sans).unwrap();
    let body = json!({"nodeName": node, "nodePassword": password,
                      "clientCSR": client_csr, "servingCSR": serving_csr});
    let req = Request::post("/v1-mini/node-join")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = https(c.addr, &c.ca_pem, None, req).await;
    let status = resp.status();
    let value = body_json(resp).await;
    let joined = Joined {
        client_cert: value["clientCert"].as_str().unwrap_or_default().into(),
        client_key,
        serving_cert: value["servingCert"].as_str().unwrap_or_default().into(),
        serving_key,
    };
    (status, value, joined)
}

async fn apply(client: &Client, path: &str, obj: Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&obj).unwrap())
        .unwrap();
    client
        .request_text(req)
        .await
        .unwrap_or_else(|e| panic!("creating {path}: {e}"));
}

fn lease(node: &str, renew: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": node, "namespace": "kube-node-lease"},
           "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                    "renewTime": renew.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}})
}

#[tokio::test]
async fn join_with_token_returns_certs_that_act_as_the_node() {
    let c = cluster().await;
    let (status, body, joined) = join(&c, &c.token, "n1", "pw-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["caCert"], c.ca_pem.as_str());
    let node_cert = IssuedCert {
        cert_pem: joined.client_cert.clone(),
        key_pem: joined.client_key.clone(),
    };
    let node = client_for(&c.dir, c.addr, &c.ca_pem, &node_cert, "n1").await;
    // register, report status, renew the lease
    apply(
        &node,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await;
    let patch = Request::patch("/api/v1/nodes/n1/status")
        .header("content-type", "application/merge-patch+json")
        .body(
            serde_json::to_vec(&json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}))
            .unwrap(),
        )
        .unwrap();
    node.request_text(patch).await.unwrap();
    apply(
        &node,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        lease("n1", chrono::Utc::now()),
    )
    .await;
    // but not delete namespaces; the 403 names the node identity
    let delete = Request::delete("/api/v1/namespaces/default")
        .body(Vec::new())
        .unwrap();
    match node.request_text(delete).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("User \"system:node:n1\""),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    // the serving certificate works as a TLS server identity for the node IP
    let serving = IssuedCert {
        cert_pem: joined.serving_cert,
        key_pem: joined.serving_key,
    };
    mini_certs::kubelet_server_tls_config(&serving, &c.ca_pem).unwrap();
}

#[tokio::test]
async fn join_with_wrong_token_or_identity_is_refused() {
    let c = cluster().await;
    let wrong = mini_certs::JoinToken::format(&c.ca_pem, "not-the-secret");
    let (status, body, _) = join(&c, &wrong, "n1", "pw").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["kind"], "Status");
    // an authenticated user who is not the join token: 403
    let req = Request::post("/v1-mini/node-join")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = https(c.addr, &c.ca_pem, Some(&c.pki.admin), req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // invalid node name: 422
    let (status, body, _) = join(&c, &c.token, "Bad_Name", "pw").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn join_name_conflict_refused_while_alive_taken_over_when_stale() {
    let c = cluster().await;
    assert_eq!(join(&c, &c.token, "n2", "first").await.0, StatusCode::OK);
    apply(
        &c.admin,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
    )
    .await;
    apply(
        &c.admin,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        lease("n2", chrono::Utc::now()),
    )
    .await;
    let (status, body, _) = join(&c, &c.token, "n2", "second").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("in use by another machine"),
        "{body}"
    );
    // the first machine re-joining (agent restart) is fine
    assert_eq!(join(&c, &c.token, "n2", "first").await.0, StatusCode::OK);
    // the lease goes stale: the new machine takes the name over and an event says so
    let stale = lease("n2", chrono::Utc::now() - chrono::Duration::seconds(120));
    let patch = Request::patch("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2")
        .header("content-type", "application/merge-patch+json")
        .body(serde_json::to_vec(&json!({"spec": stale["spec"]})).unwrap())
        .unwrap();
    c.admin.request_text(patch).await.unwrap();
    let (status, body, _) = join(&c, &c.token, "n2", "second").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = c
        .admin
        .request_text(
            Request::get("/api/v1/namespaces/default/events")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(events.contains("NodePasswordTakeover"), "{events}");
}

/// What the fake agent saw and lets the test control.
struct FakeAgent {
    addr: SocketAddr,
    /// Released by the test to let the log stream send its second line.
    release_logs: Arc<tokio::sync::Notify>,
    /// The request URIs the agent received.
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

fn summary() -> Value {
    json!({"node": {"nodeName": "n1",
                    "cpu": {"time": "2025-01-01T00:00:00Z", "usageNanoCores": 250000000u64},
                    "memory": {"time": "2025-01-01T00:00:00Z", "workingSetBytes": 104857600u64}},
           "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"},
                     "containers": [{"name": "c",
                                     "cpu": {"time": "2025-01-01T00:00:01Z", "usageNanoCores": 1234567u64},
                                     "memory": {"time": "2025-01-01T00:00:01Z", "workingSetBytes": 10485760u64}}]}]})
}

type AgentBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn agent_handle(
    mut req: Request<hyper::body::Incoming>,
    release: Arc<tokio::sync::Notify>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
) -> Result<Response<AgentBody>, Infallible> {
    let uri = req.uri().to_string();
    seen.lock().unwrap().push(uri.clone());
    let full = |b: &'static [u8]| Full::new(Bytes::from_static(b)).boxed();
    if uri.starts_with("/containerLogs/default/web/c") {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(
                    b"line 1\n",
                ))))
                .await;
            release.notified().await;
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(
                    b"line 2\n",
                ))))
                .await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        return Ok(Response::builder()
            .header("content-type", "text/plain")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap());
    }
    if uri.starts_with("/exec/default/web/c") {
        let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            // echo stdin (channel 0) back on stdout (channel 1)
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(data) = msg {
                    let mut out = vec![1u8];
                    out.extend_from_slice(&data[1..]);
                    ws.send(Message::Binary(out.into())).await.unwrap();
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", "v5.channel.k8s.io")
            .body(full(b""))
            .unwrap());
    }
    if uri.starts_with("/stats/summary") {
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(summary().to_string())).boxed())
            .unwrap());
    }
    Ok(Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(full(b"not found"))
        .unwrap())
}

/// An HTTPS agent on 127.0.0.1 with a serving cert from the cluster CA, accepting only the
/// kubelet client certificate (the same TLS config the real agent uses).
async fn fake_agent(c: &Cluster) -> FakeAgent {
    let serving =
        c.ca.issue_server(
            "n1",
            &SubjectAltNames {
                dns: vec![],
                ips: vec![LOCALHOST],
            },
        )
        .unwrap();
    let tls = mini_certs::kubelet_server_tls_config(&serving, &c.ca_pem).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release_logs = Arc::new(tokio::sync::Notify::new());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (release, log) = (release_logs.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(stream) = acceptor.accept(tcp).await else {
                continue;
            };
            let (release, log) = (release.clone(), log.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    agent_handle(req, release.clone(), log.clone())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FakeAgent {
        addr,
        release_logs,
        seen,
    }
}

/// A Ready node `name` whose agent listens on `port`, and a Running pod `web` on it.
async fn node_and_pod(c: &Cluster, name: &str, port: u16) {
    apply(
        &c.admin,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
    )
    .await;
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    c.admin
        .request_text(
            Request::patch(format!("/api/v1/nodes/{name}/status"))
                .header("content-type", "application/merge-patch+json")
                .body(serde_json::to_vec(&status).unwrap())
                .unwrap(),
        )
        .await
        .unwrap();
    apply(
        &c.admin,
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"nodeName": name, "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
}

#[tokio::test]
async fn pod_logs_are_streamed_from_the_agent() {
    let c = cluster().await;
    let agent = fake_agent(&c).await;
    node_and_pod(&c, "n1", agent.addr.port()).await;
    let req = Request::get("/api/v1/namespaces/default/pods/web/log?follow=true&tailLines=5")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = https(c.addr, &c.ca_pem, Some(&c.pki.admin), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // the first line arrives while the agent still holds the second one back
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first log line was not streamed")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"line 1\n"));
    agent.release_logs.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"line 2\n"));
    let seen = agent.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["/containerLogs/default/web/c?follow=true&tailLines=5"]
    );
}

#[tokio::test]
async fn pod_exec_websocket_round_trips_through_the_proxy() {
    let c = cluster().await;
    let agent = fake_agent(&c).await;
    node_and_pod(&c, "n1", agent.addr.port()).await;
    let tls = mini_certs::client_tls_config(&c.ca_pem, Some(&c.pki.admin)).unwrap();
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::IpAddress(c.addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let url = format!(
        "wss://{}/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true",
        c.addr
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws.send(Message::Binary(b"\x00hello".to_vec().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no reply through the proxy")
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::Binary(b"\x01hello".to_vec().into()));
    let seen = agent.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["/exec/default/web/c?command=cat&stdin=true&stdout=true"]
    );
}

#[tokio::test]
async fn resource_metrics_come_from_the_agent_summary() {
    let c = cluster().await;
    let agent = fake_agent(&c).await;
    node_and_pod(&c, "n1", agent.addr.port()).await;
    let pods: Value = serde_json::from_str(
        &c.admin
            .request_text(
                Request::get(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb",
                )
                .body(Vec::new())
                .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pods["kind"], "PodMetricsList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "web");
    assert_eq!(pods["items"][0]["window"], "10s");
    assert_eq!(
        pods["items"][0]["containers"],
        json!([{"name": "c", "usage": {"cpu": "1234567n", "memory": "10240Ki"}}])
    );
    let node: Value = serde_json::from_str(
        &c.admin
            .request_text(
                Request::get("/apis/metrics.k8s.io/v1beta1/nodes/n1")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        node["usage"],
        json!({"cpu": "250000000n", "memory": "102400Ki"})
    );
    // a selector matching nothing, and a pod without numbers
    let none = c
        .admin
        .request_text(
            Request::get(
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dother",
            )
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(none.contains("\"items\":[]"), "{none}");
    match c
        .admin
        .request_text(
            Request::get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/absent")
                .body(Vec::new())
                .unwrap(),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    // discovery advertises the group so `kubectl top` finds it
    let apis = c
        .admin
        .request_text(Request::get("/apis").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(apis.contains("metrics.k8s.io"), "{apis}");
}

#[tokio::test]
async fn pod_logs_with_unreachable_agent_fail_fast_with_503() {
    let c = cluster().await;
    // a port nobody listens on
    let closed = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    node_and_pod(&c, "n1", port).await;
    let started = Instant::now();
    let req = Request::get("/api/v1/namespaces/default/pods/web/log")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = https(c.addr, &c.ca_pem, Some(&c.pki.admin), req).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status = body_json(resp).await;
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("error dialing backend"),
        "{status}"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}
