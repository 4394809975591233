//! The node's HTTPS API on port 10250, used only by the API server: container logs, exec,
//! attach, port-forward, `/stats/summary`, `/stats/live` (the node's and some pods' CPU and
//! memory read now, `?pod=<namespace>/<name>` repeatable), `/metrics` (the agent's own), `/pods`, `/healthz`,
//! and `POST /commit` (a container's filesystem changes as a gzip layer, for `mini commit`),
//! and `DELETE /localpath/<name>` (the server's local-path provisioner removing a released
//! volume's directory).
//!
//! TLS requires a client certificate chaining to the cluster CA; after the handshake the
//! certificate's CN must be exactly `system:kube-apiserver-kubelet-client` (else 403).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use mini_certs::IssuedCert;
use mini_streams::ExecOptions;
use mini_sys::Host;
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::AgentError;

/// The only client allowed: the API server.
pub const API_SERVER_CLIENT_CN: &str = "system:kube-apiserver-kubelet-client";

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Why a node call failed; mapped to the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Internal(String),
}

/// Where a pod's network is, for port-forward.
#[derive(Debug, Clone, Default)]
pub struct PodNet {
    pub ip: Option<IpAddr>,
    pub netns_path: Option<PathBuf>,
}

/// What the routes need from the kubelet and the stats sampler.
#[async_trait]
pub trait NodeBackend: Send + Sync + 'static {
    async fn container_log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, BackendError>;
    async fn container_running(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<bool, BackendError>;
    /// Streaming URL of the runtime for an exec.
    async fn exec_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        opts: ExecOptions,
    ) -> Result<String, BackendError>;
    async fn attach_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: ExecOptions,
    ) -> Result<String, BackendError>;
    async fn pod_network(&self, namespace: &str, pod: &str) -> Result<PodNet, BackendError>;
    async fn stats_summary(&self) -> Result<Value, BackendError>;
    /// The node's and `pods`' cumulative CPU and working set, read now (`GET /stats/live`).
    async fn stats_live(
        &self,
        pods: &[mini_nodestats::PodKey],
    ) -> Result<mini_nodestats::LiveReading, BackendError> {
        let _ = pods;
        Err(BackendError::NotFound(
            "this node serves no live stats".into(),
        ))
    }
    /// The agent's own metrics in Prometheus text (`GET /metrics`).
    async fn metrics(&self) -> Result<String, BackendError> {
        Err(BackendError::NotFound("this node serves no metrics".into()))
    }
    /// The pods bound to this node, as a PodList.
    async fn pods(&self) -> Result<Value, BackendError>;
    /// Commits a container (its current instance): the layer of its filesystem changes, streamed.
    async fn commit_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<mini_cri::ContainerLayer, BackendError>;
    /// Reads a container log: the body stream ends at EOF, or (follow) once `stop` fires.
    async fn read_log(
        &self,
        path: PathBuf,
        opts: LogQuery,
        stop: CancellationToken,
    ) -> Result<Body, BackendError>;
    /// Removes `<local-path dir>/<name>` (a released local-path volume); false if already gone.
    async fn remove_local_path(&self, name: &str) -> Result<bool, BackendError>;
}

/// The `containerLogs` query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub timestamps: bool,
    pub previous: bool,
    pub limit_bytes: Option<i64>,
}

/// rustls config of the node API: our serving cert; a client cert chaining to the CA required.
pub fn tls_config(
    serving: &IssuedCert,
    ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, AgentError> {
    let tls_err = |what: &str, e: &dyn std::fmt::Display| AgentError::Serve(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls_pemfile::certs(&mut serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("serving certificate", &e))?;
    let key = rustls_pemfile::private_key(&mut serving.key_pem.as_bytes())
        .map_err(|e| tls_err("serving key", &e))?
        .ok_or_else(|| AgentError::Serve("serving key: no private key in pem".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls_err("cluster ca", &e))?;
        roots.add(cert).map_err(|e| tls_err("cluster ca", &e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err("client verifier", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("tls versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("serving certificate", &e))?;
    // upgraded streams (exec, attach, port-forward) need HTTP/1.1
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the node API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    backend: Arc<dyn NodeBackend>,
    host: Arc<dyn Host>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a node API connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let backend = backend.clone();
        let host = host.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "node API tls handshake failed");
                    return;
                }
            };
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| mini_certs::identity_from_der(c).ok())
                .map(|id| id.user);
            let authorized = client.as_deref() == Some(API_SERVER_CLIENT_CN);
            let service = hyper::service::service_fn(move |req| {
                let backend = backend.clone();
                let host = host.clone();
                let client = client.clone();
                let shutdown = shutdown.clone();
                async move {
                    if !authorized {
                        return Ok::<_, Infallible>(text(
                            StatusCode::FORBIDDEN,
                            format!(
                                "forbidden: user {:?} may not use the node API",
                                client.unwrap_or_default()
                            ),
                        ));
                    }
                    Ok(route(req, backend, host, shutdown).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "node API connection ended");
            }
        });
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn text(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(message))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn json_response(value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn error_response(e: BackendError) -> Response<Body> {
    match e {
        BackendError::NotFound(m) => text(StatusCode::NOT_FOUND, m),
        BackendError::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        BackendError::Internal(m) => text(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

fn boxed_full(r: Response<Full<Bytes>>) -> Response<Body> {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

/// Decodes `%XX` and `+` of a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query as name -> values (in order).
pub fn parse_query(query: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    map
}

fn flag(q: &HashMap<String, Vec<String>>, name: &str) -> Result<bool, BackendError> {
    match q.get(name).and_then(|v| v.last()).map(String::as_str) {
        None => Ok(false),
        Some("" | "true" | "1" | "True") => Ok(true),
        Some("false" | "0" | "False") => Ok(false),
        Some(other) => Err(BackendError::BadRequest(format!(
            "query parameter {name}={other:?} is not a boolean"
        ))),
    }
}

fn number(q: &HashMap<String, Vec<String>>, name: &str) -> Result<Option<i64>, BackendError> {
    q.get(name)
        .and_then(|v| v.last())
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                BackendError::BadRequest(format!("query parameter {name}={v:?} is not an integer"))
            })
        })
        .transpose()
}

/// Parses the `containerLogs` query.
pub fn log_query(q: &HashMap<String, Vec<String>>) -> Result<LogQuery, BackendError> {
    let since_time = q.get("sinceTime").and_then(|v| v.last()).cloned();
    if let Some(t) = &since_time {
        chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
            BackendError::BadRequest(format!("sinceTime {t:?} is not an RFC 3339 time"))
        })?;
    }
    Ok(LogQuery {
        follow: flag(q, "follow")?,
        tail_lines: number(q, "tailLines")?,
        since_seconds: number(q, "sinceSeconds")?,
        since_time,
        timestamps: flag(q, "timestamps")?,
        previous: flag(q, "previous")?,
        limit_bytes: number(q, "limitBytes")?,
    })
}

fn exec_options(q: &HashMap<String, Vec<String>>) -> Result<ExecOptions, BackendError> {
    Ok(ExecOptions {
        stdin: flag(q, "stdin")?,
        stdout: flag(q, "stdout")?,
        stderr: flag(q, "stderr")?,
        tty: flag(q, "tty")?,
    })
}

async fn route(
    req: Request<Incoming>,
    backend: Arc<dyn NodeBackend>,
    host: Arc<dyn Host>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let result = match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => return text(StatusCode::OK, "ok"),
        (&Method::GET, ["pods"]) => backend.pods().await.map(|v| json_response(&v)),
        (&Method::GET, ["metrics"]) => backend.metrics().await.map(|text| {
            Response::builder()
                .status(StatusCode::OK)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(full(text))
                .unwrap_or_else(|_| Response::new(full("")))
        }),
        (&Method::GET, ["stats", "summary"]) => {
            backend.stats_summary().await.map(|v| json_response(&v))
        }
        (&Method::GET, ["stats", "live"]) => stats_live(backend, &query).await,
        (&Method::POST, ["commit"]) => commit(backend, &query).await,
        (&Method::DELETE, [mini_localpath::AGENT_ROUTE, name]) => backend
            .remove_local_path(name)
            .await
            .map(|removed| text(StatusCode::OK, if removed { "removed" } else { "absent" })),
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            logs(backend, ns, pod, container, &query, shutdown).await
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            match exec_options(&query) {
                Ok(opts) => {
                    let command = query.get("command").cloned().unwrap_or_default();
                    if command.is_empty() {
                        Err(BackendError::BadRequest("exec needs a command".into()))
                    } else {
                        match backend.exec_url(ns, pod, container, command, opts).await {
                            Ok(url) => Ok(boxed_full(
                                mini_streams::serve_remotecommand(req, opts, url).await,
                            )),
                            Err(e) => Err(e),
                        }
                    }
                }
                Err(e) => Err(e),
            }
        }
        (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
            match exec_options(&query) {
                Ok(opts) => match backend.attach_url(ns, pod, container, opts).await {
                    Ok(url) => Ok(boxed_full(
                        mini_streams::serve_remotecommand(req, opts, url).await,
                    )),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
            match backend.pod_network(ns, pod).await {
                Ok(net) => {
                    let dialer = PodDialer { host, net };
                    Ok(boxed_full(
                        mini_streams::serve_portforward(req, dialer).await,
                    ))
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(BackendError::NotFound(format!(
            "{method} {path}: no such route"
        ))),
    };
    result.unwrap_or_else(error_response)
}

/// `GET /stats/live?pod=<namespace>/<name>...`.
async fn stats_live(
    backend: Arc<dyn NodeBackend>,
    q: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, BackendError> {
    let pods = q
        .get("pod")
        .into_iter()
        .flatten()
        .map(|p| {
            mini_nodestats::PodKey::parse(p).ok_or_else(|| {
                BackendError::BadRequest(format!(
                    "query parameter pod={p:?} is not <namespace>/<name>"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reading = backend.stats_live(&pods).await?;
    let value = serde_json::to_value(reading).map_err(|e| BackendError::Internal(e.to_string()))?;
    Ok(json_response(&value))
}

async fn logs(
    backend: Arc<dyn NodeBackend>,
    ns: &str,
    pod: &str,
    container: &str,
    query: &HashMap<String, Vec<String>>,
    shutdown: CancellationToken,
) -> Result<Response<Body>, BackendError> {
    let opts = log_query(query)?;
    let path = backend
        .container_log_path(ns, pod, container, opts.previous)
        .await?;
    let stop = shutdown.child_token();
    if opts.follow && !opts.previous {
        // follow ends when the container stops running (checked every second)
        let (backend, stop, ns, pod, container) = (
            backend.clone(),
            stop.clone(),
            ns.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                if !matches!(
                    backend.container_running(&ns, &pod, &container).await,
                    Ok(true)
                ) {
                    stop.cancel();
                    return;
                }
            }
        });
    }
    let body = backend.read_log(path, opts, stop.clone()).await?;
    // the stop token ends the watcher when the client goes away and the body is dropped
    let guard = stop.drop_guard();
    let body = BodyWithGuard {
        inner: body,
        _guard: guard,
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed(body))
        .map_err(|e| BackendError::Internal(e.to_string()))
}

/// Response headers of `POST /commit`.
pub const HEADER_IMAGE_REF: &str = "mini-image-ref";
pub const HEADER_IMAGE_DIGEST: &str = "mini-image-digest";
pub const HEADER_DIFF_ID: &str = "mini-diff-id";
pub const HEADER_LAYER_DIGEST: &str = "mini-layer-digest";

/// `POST /commit?namespace=NS&pod=P&container=C`: 200 with the gzip layer as the body and its facts in
/// the `Mini-*` headers; 400 without the three parameters, 404 for an unknown pod or container.
async fn commit(
    backend: Arc<dyn NodeBackend>,
    query: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, BackendError> {
    let param = |name: &str| {
        query
            .get(name)
            .and_then(|v| v.last())
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                BackendError::BadRequest(format!(
                    "commit needs the query parameters namespace, pod and container ({name} is missing)"
                ))
            })
    };
    let (namespace, pod, container) = (param("namespace")?, param("pod")?, param("container")?);
    let layer = backend
        .commit_container(&namespace, &pod, &container)
        .await?;
    tracing::info!(
        pod = format!("{namespace}/{pod}"),
        container,
        image = layer.image_ref,
        layer = layer.layer_digest,
        size = layer.size,
        "committing a container"
    );
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, layer.media_type.as_str())
        .header(http::header::CONTENT_LENGTH, layer.size)
        .header(HEADER_IMAGE_REF, layer.image_ref.as_str())
        .header(HEADER_DIFF_ID, layer.diff_id.as_str())
        .header(HEADER_LAYER_DIGEST, layer.layer_digest.as_str());
    if let Some(digest) = &layer.image_digest {
        response = response.header(HEADER_IMAGE_DIGEST, digest.as_str());
    }
    // the runtime's stream is not Sync (hyper's boxed body must be): a task forwards it; a client
    // that goes away drops the receiver, which ends the task and releases the runtime's lease
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut content = layer.content;
    tokio::spawn(async move {
        while let Some(chunk) = futures::StreamExt::next(&mut content).await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    response
        .body(BodyExt::boxed(ChannelBody(rx)))
        .map_err(|e| BackendError::Internal(format!("building the commit response: {e}")))
}

/// A body fed by a channel of chunks.
struct ChannelBody(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(hyper::body::Frame::data)))
    }
}

/// A body that cancels a token when dropped.
struct BodyWithGuard {
    inner: Body,
    _guard: tokio_util::sync::DropGuard,
}

impl hyper::body::Body for BodyWithGuard {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// Dials into a pod for port-forward: its localhost from inside its netns, else its IP.
struct PodDialer {
    host: Arc<dyn Host>,
    net: PodNet,
}

#[async_trait]
impl mini_streams::PortDialer for PodDialer {
    async fn dial(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        if let Some(netns) = self.net.netns_path.clone() {
            let host = self.host.clone();
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let joined = tokio::task::spawn_blocking(move || host.connect_in_netns(&netns, target))
                .await
                .map_err(std::io::Error::other)?;
            match joined {
                Ok(stream) => {
                    stream.set_nonblocking(true)?;
                    return tokio::net::TcpStream::from_std(stream);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward inside the pod netns failed; trying the pod IP")
                }
            }
        }
        let ip = self.net.ip.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "pod has no network namespace or IP",
            )
        })?;
        tokio::net::TcpStream::connect((ip, port)).await
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
