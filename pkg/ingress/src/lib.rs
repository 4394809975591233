//! The built-in ingress controller. Every agent runs [`run`]: it watches Ingresses,
//! IngressClasses, Services and EndpointSlices, keeps a route table for the Ingresses of mini's
//! IngressClass (controller `mini.dev/ingress`) and serves them as a reverse proxy on the node's
//! HTTP and HTTPS ports while such a class exists. The server runs [`run_status`], which fills
//! `status.loadBalancer` of those Ingresses with the nodes' addresses.

pub mod certs;
pub mod proxy;
pub mod routes;
pub mod status;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Api;
use mini_runtime::watch::spawn_store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use proxy::Proxy;
pub use routes::{MiniClasses, RouteTable, CONTROLLER};
pub use status::run_status;

/// How long to gather watch events before rebuilding the routes.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often referenced TLS Secrets are read again (rotated certificates).
const CERT_REFRESH: Duration = Duration::from_secs(10);
/// How long to wait before binding a busy port again.
const BIND_RETRY: Duration = Duration::from_secs(10);
/// The name on the certificate served to names no Secret covers.
pub const DEFAULT_CERT_NAME: &str = "mini-ingress.invalid";

/// What went wrong in the ingress controller.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("ingress certificate: {0}")]
    Certificate(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: Box<kube::Error>,
    },
}

/// Where the agent's ingress proxy listens.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// This node's name (for Events about ports that cannot be bound).
    pub node_name: String,
    /// Cleartext HTTP/1.1 and h2c port (0: do not listen).
    pub http_port: u16,
    /// TLS port with HTTP/2 and HTTP/1.1 by ALPN (0: do not listen).
    pub https_port: u16,
    pub bind_address: IpAddr,
}

impl IngressConfig {
    pub fn new(node_name: impl Into<String>, http_port: u16, https_port: u16) -> Self {
        IngressConfig {
            node_name: node_name.into(),
            http_port,
            https_port,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// Runs the agent's ingress proxy until `shutdown`. Watch and API errors are logged and
/// retried; only a failure to make the default certificate is returned.
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    let resolver = Arc::new(tls::SniResolver::new(Arc::new(tls::self_signed(
        DEFAULT_CERT_NAME,
    )?)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));
    let proxy = Arc::new(Proxy::new());
    let recorder = Arc::new(
        mini_runtime::EventRecorder::new(client.clone(), "mini-ingress")
            .with_host(&config.node_name),
    );

    let changed = Arc::new(Notify::new());
    let mut watches = tokio::task::JoinSet::new();
    let ingresses = spawn_store(
        &mut watches,
        "ingresses",
        Api::<Ingress>::all(client.clone()),
        &changed,
    );
    let classes = spawn_store(
        &mut watches,
        "ingressclasses",
        Api::<IngressClass>::all(client.clone()),
        &changed,
    );
    let services = spawn_store(
        &mut watches,
        "services",
        Api::<Service>::all(client.clone()),
        &changed,
    );
    let slices = spawn_store(
        &mut watches,
        "endpointslices",
        Api::<EndpointSlice>::all(client.clone()),
        &changed,
    );
    let ready = async {
        let _ = ingresses.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = ready => {}
    }
    tracing::info!(node = %config.node_name, "ingress caches synced");

    let mut cache = certs::CertCache::default();
    let mut listening: Option<CancellationToken> = None;
    let mut refresh = tokio::time::interval(CERT_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refetch = false;
    loop {
        let mini = MiniClasses::from_classes(classes.state().iter().map(|c| c.as_ref()));
        let table = RouteTable::build(
            &mini,
            &ingresses.state(),
            &services.state(),
            &slices.state(),
        );
        let tls_refs = table.tls.clone();
        let secrets = table.tls_secrets();
        tracing::debug!(ingresses = table.ingresses.len(), "ingress routes updated");
        proxy.set_routes(table);
        cache.fetch(&client, &secrets, refetch).await;
        resolver.set(cache.host_map(&tls_refs));
        match (mini.active(), &listening) {
            (true, None) => {
                let stop = shutdown.child_token();
                for (port, tls) in [
                    (config.http_port, None),
                    (config.https_port, Some(acceptor.clone())),
                ] {
                    if port == 0 {
                        continue;
                    }
                    tokio::spawn(listen(
                        proxy.clone(),
                        SocketAddr::new(config.bind_address, port),
                        tls,
                        Listen {
                            recorder: recorder.clone(),
                            node_name: config.node_name.clone(),
                            stop: stop.clone(),
                            shutdown: shutdown.clone(),
                        },
                    ));
                }
                listening = Some(stop);
            }
            (false, Some(stop)) => {
                tracing::info!("no IngressClass with controller {CONTROLLER}: the ingress proxy stops listening");
                stop.cancel();
                listening = None;
            }
            _ => {}
        }
        refetch = false;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = refresh.tick() => refetch = true,
        }
    }
    watches.abort_all();
    Ok(())
}

struct Listen {
    recorder: Arc<mini_runtime::EventRecorder>,
    node_name: String,
    stop: CancellationToken,
    shutdown: CancellationToken,
}

/// One socket bound to `address` per CPU, sharing the port with `SO_REUSEPORT`: each becomes
/// one worker's listener.
pub fn bind_workers(address: SocketAddr) -> std::io::Result<Vec<tokio::net::TcpSocket>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sockets = Vec::with_capacity(workers);
    let mut address = address;
    for _ in 0..workers {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        // port 0: the others join the port the first one got
        address = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Binds `address` (retrying every 10 s while it is taken) and serves it until `stop`.
async fn listen(
    proxy: Arc<Proxy>,
    address: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    l: Listen,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        match bind_workers(address) {
            Ok(sockets) => {
                tracing::info!(%address, scheme, workers = sockets.len(), "ingress proxy listening");
                proxy
                    .serve_on_workers(sockets, tls, l.stop, l.shutdown)
                    .await;
                return;
            }
            Err(e) => {
                let message = format!(
                    "the ingress cannot listen on {address} ({scheme}): {e}; retrying every {}s (free the port or set --ingress-{scheme}-port)",
                    BIND_RETRY.as_secs()
                );
                tracing::warn!("{message}");
                let node = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(l.node_name.clone()),
                    ..Default::default()
                };
                if let Err(e) = l
                    .recorder
                    .record(
                        &node,
                        mini_runtime::EventType::Warning,
                        "IngressPortUnavailable",
                        &message,
                    )
                    .await
                {
                    tracing::debug!(error = %e, "recording the ingress port event failed");
                }
                tokio::select! {
                    _ = l.stop.cancelled() => return,
                    _ = tokio::time::sleep(BIND_RETRY) => {}
                }
            }
        }
    }
}
