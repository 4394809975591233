//! The reverse proxy: accepts HTTP/1.1 and HTTP/2 (TLS with ALPN, or cleartext prior
//! knowledge), routes each request through the current route table and forwards it over pooled
//! keep-alive connections to a backend pod, passing WebSocket upgrades and streaming bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::routes::RouteTable;

type Body = BoxBody<Bytes, hyper::Error>;

/// The current routes, shared by every worker thread; swapped whole on each change.
pub struct Proxy {
    routes: RwLock<Arc<RouteTable>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    pub fn new() -> Proxy {
        Proxy {
            routes: RwLock::new(Arc::new(RouteTable::default())),
        }
    }

    /// Swaps the route table; requests already forwarded and open connections are unaffected.
    pub fn set_routes(&self, table: RouteTable) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves each bound socket on a worker thread of its own (nginx's worker model): every
    /// worker is a single-threaded runtime with its own listener (the sockets share the port
    /// through `SO_REUSEPORT`, so the kernel spreads connections) and its own upstream pool,
    /// so a request, its client connection and its upstream connection never change threads.
    /// A worker stops accepting at `stop` and ends once its connections have closed, or at
    /// `shutdown`.
    /// Returns once every worker listens.
    pub async fn serve_on_workers(
        self: Arc<Self>,
        sockets: Vec<TcpSocket>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let mut listening = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            let (proxy, tls, stop, shutdown) =
                (self.clone(), tls.clone(), stop.clone(), shutdown.clone());
            let (ready, ready_rx) = tokio::sync::oneshot::channel::<()>();
            listening.push(ready_rx);
            let spawned = std::thread::Builder::new()
                .name(format!("ingress-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            tracing::warn!(error = %e, "starting an ingress worker failed");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let listener = match socket.listen(LISTEN_BACKLOG) {
                            Ok(listener) => {
                                let _ = ready.send(());
                                listener
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "an ingress worker cannot listen");
                                return;
                            }
                        };
                        proxy.serve(listener, tls, stop, shutdown.clone()).await;
                        // let open connections (and upgraded streams) finish on this thread
                        let metrics = tokio::runtime::Handle::current().metrics();
                        while metrics.num_alive_tasks() > 0 {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    });
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "starting an ingress worker thread failed");
            }
        }
        for ready in listening {
            // an error means the worker could not listen (logged there)
            let _ = ready.await;
        }
    }

    /// Accepts connections on `listener` until `stop`; each connection is served until it closes
    /// or `shutdown` (connections outlive `stop`, so disabling a port drops nothing in flight).
    /// The connections accepted here share one upstream pool.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let forwarder = Arc::new(Forwarder::new(self));
        loop {
            let (stream, remote) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "ingress accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (forwarder, tls, shutdown) = (forwarder.clone(), tls.clone(), shutdown.clone());
            tokio::spawn(async move {
                let served = async {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => forwarder.serve_connection(stream, remote, true).await,
                            Err(e) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        },
                        None => forwarder.serve_connection(stream, remote, false).await,
                    }
                };
                tokio::select! {
                    _ = served => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

/// Pending connections the kernel queues per worker socket.
const LISTEN_BACKLOG: u32 = 1024;

/// One worker's forwarding state: the shared routes and this worker's upstream pool.
struct Forwarder {
    proxy: Arc<Proxy>,
    client: Client<HttpConnector, Incoming>,
    builder: auto::Builder<TokioExecutor>,
}

impl Forwarder {
    fn new(proxy: Arc<Proxy>) -> Forwarder {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(http);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(hyper_util::rt::TokioTimer::new());
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(1024);
        Forwarder {
            proxy,
            client,
            builder,
        }
    }

    async fn serve_connection<I>(self: Arc<Self>, io: I, remote: SocketAddr, https: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let forwarder = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let forwarder = forwarder.clone();
            async move { Ok::<_, Infallible>(forwarder.handle(req, remote, https).await) }
        });
        if let Err(e) = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%remote, error = %e, "ingress connection ended with an error");
        }
    }

    /// Routes and forwards one request.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        let Some(host) = request_host(&req) else {
            return error(StatusCode::BAD_REQUEST, "the request names no host\n");
        };
        let table = self.proxy.routes();
        let Some(backend) = table.route(&host, req.uri().path()) else {
            return error(
                StatusCode::NOT_FOUND,
                "404 page not found: no ingress rule for this host and path\n",
            );
        };
        let Some(endpoint) = backend.pick() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 service unavailable: the backend service has no ready endpoint\n",
            );
        };
        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid request path\n"),
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        forwarded_headers(&mut parts.headers, &host, remote, https);
        if let Some(protocol) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        let mut resp = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(backend = %backend.name, %endpoint, error = %e, "backend request failed");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "502 bad gateway: the backend did not answer\n",
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let (mut client, mut upstream) =
                                (TokioIo::new(client), TokioIo::new(upstream));
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, empty());
            }
        }
        strip_hop_by_hop(resp.headers_mut());
        resp.map(|b| b.boxed())
    }
}

/// The request's host, lowercase without a port: the URI authority (HTTP/2) or the Host header.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let h = h.trim();
            if h.starts_with('[') {
                h.split_once(']').map(|(ip, _)| format!("{ip}]"))?
            } else {
                h.split(':').next().unwrap_or_default().to_string()
            }
        }
    };
    (!raw.is_empty()).then(|| raw.to_ascii_lowercase())
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the headers that describe one hop (and those the Connection header names).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Sets Host and X-Forwarded-For/-Proto/-Host for the backend.
fn forwarded_headers(headers: &mut HeaderMap, host: &str, remote: SocketAddr, https: bool) {
    if !headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let client = remote.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn error(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_strips_port_and_lowercases() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "Example.COM:8080")
            .body(())
            .expect("req");
        assert_eq!(request_host(&req).as_deref(), Some("example.com"));
        let h2 = Request::builder()
            .uri("https://a.example.com/x")
            .body(())
            .expect("req");
        assert_eq!(request_host(&h2).as_deref(), Some("a.example.com"));
        let none = Request::builder().uri("/x").body(()).expect("req");
        assert_eq!(request_host(&none), None);
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_headers_come() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        forwarded_headers(
            &mut h,
            "a.example.com",
            "10.0.0.9:5555".parse().expect("addr"),
            true,
        );
        assert!(h.get("x-private").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example.com");
        assert_eq!(h[header::HOST], "a.example.com");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn upgrade_protocol_needs_connection_upgrade() {
        let ws = Request::builder()
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .expect("req");
        assert_eq!(upgrade_protocol(&ws).expect("upgrade"), "websocket");
        let plain = Request::builder()
            .header("upgrade", "websocket")
            .body(())
            .expect("req");
        assert!(upgrade_protocol(&plain).is_none());
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use crate::routes::MiniClasses;
    use http_body_util::Empty;
    use serde_json::json;

    /// A loopback backend answering `NAME host=<Host> xff=<X-Forwarded-For> proto=<...>`.
    async fn backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_string()
                            };
                            let text = format!(
                                "{name} host={} xff={} proto={} path={}",
                                h("host"),
                                h("x-forwarded-for"),
                                h("x-forwarded-proto"),
                                req.uri()
                            );
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    fn table(routes: &[(&str, SocketAddr)]) -> RouteTable {
        let classes = MiniClasses::from_classes(&[serde_json::from_value(json!({
            "metadata": {"name": "mini", "annotations": {crate::routes::DEFAULT_CLASS_ANNOTATION: "true"}},
            "spec": {"controller": crate::CONTROLLER}
        }))
        .expect("class")]);
        let mut services = Vec::new();
        let mut slices = Vec::new();
        let mut rules = Vec::new();
        for (i, (host, addr)) in routes.iter().enumerate() {
            let svc = format!("svc{i}");
            services.push(Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": svc, "namespace": "default"},
                    "spec": {"ports": [{"port": 80}]}
                }))
                .expect("service"),
            ));
            slices.push(Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": svc, "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": svc}},
                    "addressType": "IPv4",
                    "ports": [{"port": addr.port()}],
                    "endpoints": [{"addresses": [addr.ip().to_string()]}]
                }))
                .expect("slice"),
            ));
            rules.push(json!({"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}));
        }
        rules.push(json!({"host": "empty.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "nope", "port": {"number": 80}}}}]}}));
        let ingress = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "i", "namespace": "default"},
                "spec": {"rules": rules}
            }))
            .expect("ingress"),
        );
        RouteTable::build(&classes, &[ingress], &services, &slices)
    }

    async fn get(
        client: &Client<HttpConnector, Empty<Bytes>>,
        proxy: SocketAddr,
        host: &str,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .uri(format!("http://{proxy}/p?q=1"))
            .header("host", host)
            .body(Empty::new())
            .expect("request");
        let resp = client.request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn proxy_routes_forwards_headers_and_follows_a_route_swap_on_one_connection() {
        let (a, b) = (backend("a").await, backend("b").await);
        let proxy = Arc::new(Proxy::new());
        proxy.set_routes(table(&[("a.test", a)]));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(
            proxy
                .clone()
                .serve(listener, None, stop.clone(), stop.clone()),
        );
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(HttpConnector::new());

        let (status, body) = get(&client, address, "A.test:80").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            "a host=A.test:80 xff=127.0.0.1 proto=http path=/p?q=1"
        );
        assert_eq!(
            get(&client, address, "other.test").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&client, address, "empty.test").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        proxy.set_routes(table(&[("a.test", b)]));
        let (status, body) = get(&client, address, "a.test").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("b "), "{body}");
        stop.cancel();
    }

    #[tokio::test]
    async fn workers_share_one_port_and_keep_open_connections_after_stop() {
        let a = backend("a").await;
        let proxy = Arc::new(Proxy::new());
        proxy.set_routes(table(&[("a.test", a)]));
        let sockets = crate::bind_workers("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let address = sockets[0].local_addr().expect("addr");
        for socket in &sockets {
            assert_eq!(socket.local_addr().expect("addr"), address);
        }
        let (stop, shutdown) = (CancellationToken::new(), CancellationToken::new());
        proxy
            .clone()
            .serve_on_workers(sockets, None, stop.clone(), shutdown.clone())
            .await;
        // a fresh connection per request: the kernel spreads them over the workers
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(HttpConnector::new());
        for _ in 0..8 {
            let (status, body) = get(&fresh, address, "a.test").await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.starts_with("a "), "{body}");
        }
        let kept = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(HttpConnector::new());
        assert_eq!(get(&kept, address, "a.test").await.0, StatusCode::OK);

        stop.cancel();
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(address).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "stopped workers still accept connections");
        let (status, body) = get(&kept, address, "a.test").await;
        assert_eq!(status, StatusCode::OK, "the open connection outlives stop");
        assert!(body.starts_with("a "), "{body}");
        shutdown.cancel();
    }
}
