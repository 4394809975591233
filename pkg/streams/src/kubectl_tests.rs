//! Interop with the real kubectl binary (Go spdystream, gorilla websocket): a minimal fake API
//! server hands kubectl's exec and port-forward upgrades to our handlers. Skipped, with a printed
//! reason, when kubectl is not on PATH.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::portforward::tests::{echo_server, EchoDialer};
use crate::remotecommand::tests::fake_runtime;
use crate::testutil::serve_http;
use crate::{serve_portforward, serve_remotecommand, ExecOptions};

fn kubectl_available() -> bool {
    match std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!(
                "skipping: kubectl not found on PATH, cannot check interop with the real client"
            );
            false
        }
    }
}

fn json(body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn query_flag(req: &Request<Incoming>, name: &str) -> bool {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1"))
}

type Upgrades = Arc<Mutex<Vec<String>>>;

/// The fake API server, and the Upgrade headers of the streaming requests it received.
async fn fake_apiserver(runtime: SocketAddr, echo: SocketAddr) -> (SocketAddr, Upgrades) {
    let upgrades: Upgrades = Arc::default();
    let seen = upgrades.clone();
    let addr = serve_http(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
        let path = req.uri().path().to_string();
        if path.ends_with("/exec") || path.ends_with("/portforward") {
            let upgrade = req
                .headers()
                .get(http::header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(upgrade);
        }
        match path.as_str() {
            "/api" => json(serde_json::json!({"kind":"APIVersions","versions":["v1"],
                "serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]})),
            "/apis" => json(serde_json::json!({"kind":"APIGroupList","apiVersion":"v1","groups":[]})),
            "/api/v1" => json(serde_json::json!({"kind":"APIResourceList","groupVersion":"v1","resources":[
                {"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
                {"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
                {"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]})),
            "/api/v1/namespaces/default/pods/x" => json(serde_json::json!({"apiVersion":"v1","kind":"Pod",
                "metadata":{"name":"x","namespace":"default","uid":"u1"},
                "spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":80}]}]},
                "status":{"phase":"Running"}})),
            "/api/v1/namespaces/default/pods/x/exec" => {
                let opts = ExecOptions {
                    stdin: query_flag(&req, "stdin"),
                    stdout: query_flag(&req, "stdout"),
                    stderr: query_flag(&req, "stderr"),
                    tty: query_flag(&req, "tty"),
                };
                serve_remotecommand(req, opts, format!("http://{runtime}/exec/t")).await
            }
            "/api/v1/namespaces/default/pods/x/portforward" => {
                serve_portforward(req, EchoDialer { echo }).await
            }
            _ => {
                let mut r = json(serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure",
                    "reason":"NotFound","code":404,"message":"not found"}));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        }
        }
    })
    .await;
    (addr, upgrades)
}

fn assert_upgrades(upgrades: &Upgrades, websockets: bool) {
    let seen = upgrades.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let want = if websockets { "websocket" } else { "SPDY/3.1" };
    assert!(
        !seen.is_empty() && seen.iter().all(|u| u.eq_ignore_ascii_case(want)),
        "want only {want} upgrades, saw {seen:?}"
    );
}

fn kubeconfig(dir: &tempfile::TempDir, api: SocketAddr) -> std::path::PathBuf {
    let path = dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{api}\n\
users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: default\n\
current-context: x\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket_v5_streams_and_exits_with_code_3() {
    kubectl_exec(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy_streams_and_exits_with_code_3() {
    kubectl_exec(false).await;
}

/// `websockets = false` sets kubectl's KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false: plain SPDY/3.1.
async fn kubectl_exec(websockets: bool) {
    if !kubectl_available() {
        return;
    }
    let (api, upgrades) = fake_apiserver(fake_runtime().await, echo_server().await).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(&dir, api);
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["exec", "-i", "x", "--", "sh", "-c", "exit 3"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"from kubectl").await.expect("write stdin");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("kubectl exec finishes")
        .expect("kubectl output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FROM KUBECTL",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("warn"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_upgrades(&upgrades, websockets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_tunnel_echoes() {
    kubectl_port_forward(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy_echoes() {
    kubectl_port_forward(false).await;
}

/// `websockets = false` sets kubectl's KUBECTL_PORT_FORWARD_WEBSOCKETS=false: plain SPDY/3.1.
async fn kubectl_port_forward(websockets: bool) {
    if !kubectl_available() {
        return;
    }
    let (api, upgrades) = fake_apiserver(fake_runtime().await, echo_server().await).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(&dir, api);
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["port-forward", "--address", "127.0.0.1", "pod/x", ":80"])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kubectl");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl prints the forwarding line")
        .expect("read line")
        .expect("a line");
    // "Forwarding from 127.0.0.1:NNNNN -> 80"
    let port: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"));
    for round in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to kubectl");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + round) as u8).collect();
        let (mut r, mut w) = tcp.split();
        let send = async {
            w.write_all(&payload).await.expect("send");
            w.shutdown().await.expect("half-close");
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let (_, got) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(send, recv) })
                .await
                .expect("echo through kubectl completes");
        got.expect("read echo");
        assert!(
            back == payload,
            "round {round}: got {} bytes back",
            back.len()
        );
    }
    child.kill().await.expect("stop kubectl");
    assert_upgrades(&upgrades, websockets);
}
