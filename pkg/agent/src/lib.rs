//! mini agent: join by token, register the node, run containerd and the kubelet, serve port 10250.
//!
//! [`start`] reads top to bottom as the start order: identity and join, containerd and images,
//! Node registration and lease, CNI config once the server assigned a pod CIDR, the kubelet,
//! the log shipper (`mini_logship`),
//! the node API. [`RunningAgent::wait`] is the shutdown order.

mod backend;
pub mod cni;
pub mod config;
mod fsutil;
pub mod image_sync;
pub mod imported;
pub mod join;
mod loadtest_image;
pub mod node;
pub mod registry;
pub mod registry_push;
pub mod server;
pub mod stats;

#[cfg(test)]
mod testutil;

pub use config::{
    parse_node_labels, parse_node_taints, parse_registry_mirrors, AgentConfig, AgentProgress,
    ContainerRuntimeMode, ProgressHook,
};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use mini_sys::Host;
use tokio_util::sync::CancellationToken;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{flag} {value:?}: {reason}")]
    Config {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}; pass the token printed by `mini server` (K10<ca hash>::server:<secret>) or by `mini token create` (K10<ca hash>::<id>.<secret>)")]
    Token(String),
    #[error("the CA of {server} does not match the join token's CA hash (token: sha256 {expected}, server: sha256 {actual}): wrong server or wrong token")]
    CaHashMismatch {
        server: String,
        expected: String,
        actual: String,
    },
    #[error("{server} refused the join token: {message}; check --token")]
    JoinRefused { server: String, message: String },
    #[error("node name {node:?} is already used by another machine ({message}); pick another with --node-name")]
    NodeNameConflict { node: String, message: String },
    #[error("joining the cluster failed: {0}")]
    Join(String),
    #[error("cannot reach the server {server}: {reason}")]
    ServerUnreachable { server: String, reason: String },
    #[error("node identity {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] mini_sys::SysError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: Box<kube::Error>,
    },
    #[error("serving the node API failed: {0}")]
    Serve(String),
    #[error("container runtime: {0}")]
    Runtime(String),
}

/// A started agent: registered, kubelet running, node API serving.
pub struct RunningAgent {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// Where the node API listens (the kubelet port; useful when 0 was asked).
    pub node_api_address: SocketAddr,
    /// A client with the node's identity.
    pub client: kube::Client,
    kubelet: Arc<mini_kubelet::Kubelet>,
    containerd: Option<mini_cri::SupervisorHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drain_on_stop: bool,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("node_name", &self.node_name)
            .field("node_ip", &self.node_ip)
            .field("node_api_address", &self.node_api_address)
            .finish()
    }
}

/// Runs the agent until `shutdown` is cancelled (SIGTERM/SIGINT in `mini agent`).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    // a process of its own: its memory is kept lean as the server's is
    tokio::spawn(mini_sys::alloc::keep_lean(
        shutdown.clone().cancelled_owned(),
    ));
    let host: Arc<dyn Host> = Arc::new(mini_sys::LinuxHost);
    start(config, host, shutdown).await?.wait().await
}

/// Removes what the agent programmed into the host's network: the `mini.1` VXLAN device (its
/// routes, FDB and neighbour entries go with it), the `mini0` bridge and mini's nftables table.
/// Pods keep their own network namespaces; stop them first (`--drain-on-stop`).
pub async fn cleanup_network() -> Result<(), AgentError> {
    let netlink = mini_sys::netlink::RtNetlink::connect()
        .map_err(|e| AgentError::Serve(format!("opening netlink: {e}")))?;
    mini_overlay::cleanup(&netlink)
        .await
        .map_err(|e| AgentError::Serve(format!("removing the overlay: {e}")))?;
    mini_proxy::cleanup(&mini_sys::nft_netlink::NftNetlink::new())
        .await
        .map_err(|e| AgentError::Serve(format!("removing the nftables table: {e}")))?;
    mini_netpol::cleanup(&mini_sys::nft_netlink::NftNetlink::new())
        .await
        .map_err(|e| AgentError::Serve(format!("removing the network policy table: {e}")))?;
    Ok(())
}

/// The client-side load balancer's loopback port unless `--lb-server-port` (k3s' too).
pub const DEFAULT_LB_PORT: u16 = 6444;

/// The `host:port` the balancer dials for a server URL's authority (HTTPS: 443 unless given).
fn balancer_target(authority: &str) -> String {
    let has_port = !authority.ends_with(']')
        && authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:443")
    }
}

/// Starts the client-side load balancer on loopback `port` towards the `--server` address and
/// points `config.server_url` at it. It runs until the process ends (no shutdown token: the
/// agent's clients need it while pods drain). The server's own address stays a registry alias,
/// the name pods' images use.
async fn start_balancer(
    config: &mut AgentConfig,
    port: u16,
) -> Result<Arc<mini_balancer::Balancer>, AgentError> {
    let target = balancer_target(&registry::registry_host(&config.server_url)?);
    let bind_err = |e: std::io::Error| AgentError::Config {
        flag: "--lb-server-port",
        value: port.to_string(),
        reason: format!("listening on 127.0.0.1 failed: {e}"),
    };
    let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await
    {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
            tracing::warn!(port, "the load balancer's port is taken; using a free one");
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(bind_err)?
        }
        Err(e) => return Err(bind_err(e)),
    };
    let local = listener.local_addr().map_err(bind_err)?;
    let balancer = mini_balancer::Balancer::new(&target);
    let dialer: Arc<dyn mini_balancer::Dialer> = Arc::new(mini_balancer::TcpDialer::default());
    let stop = CancellationToken::new();
    tokio::spawn(
        balancer
            .clone()
            .serve(Arc::new(listener), dialer.clone(), stop.clone()),
    );
    // /readyz over TLS with the cluster CA (once joined): a server without its datastore is
    // skipped like a dead one
    let probe: Arc<dyn mini_balancer::Probe> = Arc::new(mini_balancer::ReadyzProbe {
        dialer,
        ca_file: config.tls_dir().join(join::CA_FILE),
        timeout: std::time::Duration::from_secs(5),
    });
    tokio::spawn(balancer.clone().run_health_checks(
        probe,
        std::time::Duration::from_secs(2),
        stop,
    ));
    tracing::info!(%local, server = target, "agent clients go through the load balancer");
    config.registry_aliases.push(target.clone());
    config.registry_name = Some(target);
    config.server_url = format!("https://{local}");
    Ok(balancer)
}

/// Port of this node's cluster DNS server on the node IP (the proxy DNATs the kube-dns
/// Service IP's port 53 to it).
pub const DNS_PORT: u16 = 10053;

/// Starts everything and returns once the node is registered and the node API serves.
pub async fn start(
    config: AgentConfig,
    host: Arc<dyn Host>,
    shutdown: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    // 1. who we are: node name (flag, else the one remembered, else the hostname) and IP
    let hostname = host.hostname()?;
    let node_name = match &config.node_name {
        Some(n) => n.clone(),
        None => join::NodeSecret::load(&config.password_file())?
            .map(|s| s.node_name)
            .unwrap_or_else(|| hostname.clone()),
    };
    let node_ip = match config.node_ip {
        Some(ip) => ip,
        None => host.route_source_ip(server_ip(&config.server_url).await?)?,
    };
    tracing::info!(node = node_name, %node_ip, server = config.server_url, "starting the agent");
    // 1b. the client-side load balancer: every client below reaches the servers through it
    let mut config = config;
    let balancer = match config.load_balancer {
        Some(port) if !config.control_plane => Some(start_balancer(&mut config, port).await?),
        _ => None,
    };

    // 2. join: CA pinned by the token, certificates signed by the server
    config.report(AgentProgress::Joining(config.server_url.clone()));
    let creds = join::join(&join::JoinRequestInfo {
        server_url: &config.server_url,
        token: &config.token,
        tls_dir: &config.tls_dir(),
        password_file: &config.password_file(),
        node_name: &node_name,
        hostname: &hostname,
        node_ips: &[node_ip],
    })
    .await?;
    // renewed online through the API at two thirds of their life, swapped without a restart
    let certs = mini_certrotate::AgentCerts::new(
        mini_certrotate::AgentCertsConfig {
            server_url: config.server_url.clone(),
            node_name: node_name.clone(),
            ca_file: config.tls_dir().join(join::CA_FILE),
            client_cert_file: config.tls_dir().join(join::CLIENT_CERT_FILE),
            client_key_file: config.tls_dir().join(join::CLIENT_KEY_FILE),
            serving_cert_file: config.tls_dir().join(join::SERVING_CERT_FILE),
            serving_key_file: config.tls_dir().join(join::SERVING_KEY_FILE),
            kubeconfig_file: config.kubeconfig_file(),
        },
        &creds.ca_pem,
        &creds.client,
        &creds.serving,
    )
    .map_err(|e| AgentError::Join(e.to_string()))?;
    let client = kube_client(&config, &creds, &certs)?;
    // the balancer learns every server from the kubernetes Endpoints (read through itself)
    if let Some(balancer) = &balancer {
        tokio::spawn(mini_balancer::learn(
            client.clone(),
            balancer.clone(),
            std::time::Duration::from_secs(10),
            CancellationToken::new(),
        ));
    }

    // 3. containerd (managed or external), then the pause image and the air-gap images
    // the CNI plugins are this binary under their names (no containernetworking-plugins)
    cni::install_plugins(&config.cni_bin_dir())?;
    config.report(AgentProgress::StartingContainerd);
    // the cluster registry and its mirrors for containerd (hosts.toml is read per pull)
    let certs_dir = config.registry_certs_dir();
    if let Err(e) = registry::write_hosts(&config, &certs_dir) {
        tracing::error!(error = %e, "the node cannot pull through the cluster registry");
    }
    let (containerd, socket) = match &config.container_runtime {
        ContainerRuntimeMode::Managed => {
            let mut cd = mini_cri::ContainerdConfig::new(
                config.containerd_dir(),
                mini_images::PAUSE_IMAGE,
                config.cni_conf_dir(),
            );
            cd.cni_bin_dir = Some(config.cni_bin_dir());
            std::fs::create_dir_all(config.cni_conf_dir())
                .map_err(|e| fsutil::io_err(&config.cni_conf_dir(), e))?;
            // its own token: containerd outlives the root shutdown until pods are drained
            let handle = mini_cri::Supervisor::start(cd, CancellationToken::new())
                .await
                .map_err(|e| AgentError::Runtime(e.to_string()))?;
            let socket = handle.socket().to_path_buf();
            (Some(handle), socket)
        }
        ContainerRuntimeMode::External(socket) => {
            tracing::info!(
                socket = %socket.display(),
                cni_bin_dir = %config.cni_bin_dir().display(),
                cni_conf_dir = %config.cni_conf_dir().display(),
                registry_config_path = %certs_dir.display(),
                "using an external containerd: its CRI cni bin_dir, conf_dir and registry config_path must be these"
            );
            (None, socket.clone())
        }
    };
    let grpc =
        mini_cri::GrpcRuntime::connect(&socket).map_err(|e| AgentError::Runtime(e.to_string()))?;
    registry::log_runtime_check(&grpc, &certs_dir).await;
    let runtime: Arc<dyn mini_cri::Runtime> = Arc::new(grpc);
    let importer = mini_images::ImageImporter::connect(&socket, &config.agent_dir())
        .await
        .map_err(|e| AgentError::Runtime(format!("connecting the image importer: {e}")))?;
    importer
        .ensure_pause_image()
        .await
        .map_err(|e| AgentError::Runtime(format!("importing the pause image: {e}")))?;
    std::fs::create_dir_all(config.images_dir())
        .map_err(|e| fsutil::io_err(&config.images_dir(), e))?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        certs.clone().run(client.clone(), shutdown.clone()),
    ));
    {
        let (dir, stop) = (config.images_dir(), shutdown.clone());
        // watch_dir imports what is there now, then what appears
        tasks.push(tokio::spawn(
            async move { importer.watch_dir(dir, stop).await },
        ));
    }
    if !config.control_plane {
        // the server re-serves its air-gap images; the server's own node shares its directory
        let sync = image_sync::ImageSync::new(
            config.server_url.clone(),
            config.token.clone(),
            join::verified_tls(&creds.ca_pem)?,
            config.images_dir(),
        );
        tasks.push(tokio::spawn(sync.run(shutdown.clone())));
        // what this node imported goes to the cluster registry (the server imports its own)
        match registry_push::registry_client(&config, &creds) {
            Ok(registry) => tasks.push(tokio::spawn(registry_push::run(
                config.clone(),
                registry,
                shutdown.clone(),
            ))),
            Err(e) => {
                tracing::error!(error = %e, "no client for the cluster registry: this node's image tarballs stay local")
            }
        }
    }

    // 4. the Node object, its status loop and its lease
    config.report(AgentProgress::RegisteringNode(node_name.clone()));
    // Ready needs the runtime (RuntimeReady, NetworkReady) and this start to be finished
    let start_gate = Arc::new(node::StartGate::new(Arc::new(node::CriHealth(
        runtime.clone(),
    ))));
    let health: Arc<dyn node::HealthSource> = start_gate.clone();
    let status_wake = node::StatusWake::default();
    let registration = node::NodeRegistration {
        name: node_name.clone(),
        hostname: hostname.clone(),
        node_ip,
        labels: config.node_labels.clone(),
        taints: config.node_taints.clone(),
        kubelet_port: config.kubelet_port,
        data_dir: config.data_dir.clone(),
        annotations: std::collections::BTreeMap::from([(
            mini_localpath::NODE_DIR_ANNOTATION.to_string(),
            config.local_path_dir().display().to_string(),
        )]),
    };
    node::register(
        &client,
        &registration,
        host.as_ref(),
        &health.health().await,
    )
    .await?;
    // the load test generator image, imported when the first generator pod lands here
    tasks.push(tokio::spawn(loadtest_image::run(
        client.clone(),
        node_name.clone(),
        socket.clone(),
        config.agent_dir(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(node::run_lease_loop(
        client.clone(),
        node_name.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(node::run_status_loop(
        client.clone(),
        registration,
        host.clone(),
        health,
        status_wake.clone(),
        node::StatusTiming::default(),
        shutdown.clone(),
    )));

    // 5. pod network: once node IPAM gave us a pod CIDR
    config.report(AgentProgress::WaitingForPodCidr);
    let Some(pod_cidr) = cni::wait_for_pod_cidr(&client, &node_name, &shutdown).await else {
        return Err(AgentError::Serve(
            "shut down while waiting for a pod CIDR".into(),
        ));
    };
    if let Err(e) = mini_overlay::configure_host(host.as_ref()) {
        tracing::warn!(error = %e, "setting the pod network sysctls failed");
    }
    let netlink: Arc<dyn mini_sys::netlink::Netlink> = Arc::new(
        mini_sys::netlink::RtNetlink::connect()
            .map_err(|e| AgentError::Serve(format!("opening netlink: {e}")))?,
    );
    // the underlay MTU from netlink (sysfs may belong to another network namespace)
    let underlay_mtu = match netlink.link_with_address(node_ip).await {
        Ok(Some(link)) => link.mtu,
        Ok(None) => cni::DEFAULT_MTU,
        Err(e) => {
            tracing::warn!(error = %e, "reading the underlay MTU failed; assuming 1500");
            cni::DEFAULT_MTU
        }
    };
    cni::write_conflist(
        &config.cni_conf_dir(),
        &cni::PodNetworkConfig {
            pod_cidr,
            mtu: mini_overlay::mtu_for_underlay(underlay_mtu),
            ipam_dir: config.agent_dir().join("cni").join("ipam"),
        },
    )?;
    // the VXLAN overlay: our VTEP published on the Node, routes to every other node's pods
    {
        let underlay_ip = match &config.flannel_iface {
            Some(iface) => mini_overlay::interface_ipv4(netlink.as_ref(), iface)
                .await
                .map_err(|e| AgentError::Serve(e.to_string()))?,
            None => mini_overlay::ipv4_node_ip(node_ip).ok_or_else(|| AgentError::Config {
                flag: "--node-ip",
                value: node_ip.to_string(),
                reason: "the VXLAN overlay needs an IPv4 node address".into(),
            })?,
        };
        let cluster_cidr: mini_sys::netlink::Ipv4Net =
            config
                .cluster_cidr
                .parse()
                .map_err(
                    |e: mini_sys::netlink::Ipv4NetParseError| AgentError::Config {
                        flag: "--cluster-cidr",
                        value: config.cluster_cidr.clone(),
                        reason: e.to_string(),
                    },
                )?;
        let overlay =
            mini_overlay::OverlayConfig::new(node_name.clone(), underlay_ip, cluster_cidr);
        // static pod IPs: /32 routes for pool addresses (into the bridge or over the overlay)
        tasks.push(tokio::spawn(mini_ippool::routes::run(
            client.clone(),
            overlay.clone(),
            cni::BRIDGE_NAME.to_string(),
            netlink.clone(),
            shutdown.clone(),
        )));
        let (overlay_client, stop) = (client.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = mini_overlay::run(overlay_client, overlay, netlink, stop).await {
                tracing::error!(error = %e, "the VXLAN overlay stopped");
            }
        }));
    }

    // 6. Services and names: the built-in proxy (one nftables table) and this node's DNS
    //    server, which the proxy makes reachable at the kube-dns Service IP
    let dns_listen = SocketAddr::new(node_ip, DNS_PORT);
    {
        let proxy_config = mini_proxy::ProxyConfig {
            node_name: node_name.clone(),
            cluster_cidr: config.cluster_cidr.clone(),
            service_cidr: config.service_cidr.clone(),
            dns: Some(mini_proxy::NodeLocalDns {
                service_ip: config.cluster_dns,
                listen: dns_listen,
            }),
        };
        let nft: Arc<dyn mini_sys::nft::Nft> = Arc::new(mini_sys::nft_netlink::NftNetlink::new());
        let (proxy_client, stop) = (client.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = mini_proxy::run(proxy_client, proxy_config, nft, stop).await {
                tracing::error!(error = %e, "the service proxy stopped");
            }
        }));
        // NetworkPolicies: one more table, policing pod traffic on the forward hook (after
        // the proxy's DNAT). Disabled, the table is removed so no stale policy lingers.
        let netpol_nft: Arc<dyn mini_sys::nft::Nft> =
            Arc::new(mini_sys::nft_netlink::NftNetlink::new());
        if config.disable_network_policy {
            if let Err(e) = mini_netpol::cleanup(netpol_nft.as_ref()).await {
                tracing::warn!(error = %e, "removing the network policy table failed");
            }
        } else {
            let (netpol_client, stop, name) = (client.clone(), shutdown.clone(), node_name.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = mini_netpol::run(netpol_client, name, netpol_nft, stop).await {
                    tracing::error!(error = %e, "network policy enforcement stopped");
                }
            }));
        }
        let mut dns = mini_dns::DnsConfig::with_resolv_conf(dns_listen, config.resolv_conf_path());
        dns.cluster_domain = config.cluster_domain.clone();
        let (dns_client, stop) = (client.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = mini_dns::run(dns_client, dns, stop).await {
                tracing::error!(error = %e, "the cluster DNS server stopped");
            }
        }));
    }

    // 6b. the ingress proxy on the node's HTTP and HTTPS ports, while mini's IngressClass exists
    {
        let ingress = mini_ingress::IngressConfig::new(
            node_name.clone(),
            config.ingress_http_port,
            config.ingress_https_port,
        );
        let (ingress_client, stop) = (client.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = mini_ingress::run(ingress_client, ingress, stop).await {
                tracing::error!(error = %e, "the ingress proxy stopped");
            }
        }));
    }

    // 7. the kubelet
    let kubelet = mini_kubelet::Kubelet::new(
        client.clone(),
        runtime.clone(),
        host.clone(),
        mini_kubelet::KubeletConfig {
            node_name: node_name.clone(),
            node_ip,
            pods_dir: config.pods_dir(),
            logs_dir: config.logs_dir(),
            cluster_dns: vec![config.cluster_dns],
            cluster_domain: config.cluster_domain.clone(),
            resolv_conf: config.resolv_conf_path().to_path_buf(),
            pinned_ip_dir: Some(cni::pinned_dir(
                &config.agent_dir().join("cni").join("ipam"),
            )),
        },
    );
    {
        let (kubelet, stop) = (kubelet.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = kubelet.run(stop.clone()).await {
                tracing::error!(error = %e, "the kubelet stopped; shutting the agent down");
                stop.cancel();
            }
        }));
    }

    // 7b. container logs shipped to the server (the shipper also rotates the files)
    {
        let mut logship = mini_logship::LogShipConfig::new(
            node_name.clone(),
            config.logs_dir(),
            config.agent_dir().join("logship"),
        );
        logship.max_file_bytes = config.container_log_max_bytes;
        logship.max_files = config.container_log_max_files.max(1);
        let (client, runtime, stop) = (client.clone(), runtime.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = mini_logship::run(client, runtime, logship, stop).await {
                tracing::error!(error = %e, "container logs are not shipped to the server");
            }
        }));
    }

    // 8. the node API on the kubelet port
    //    node, pod and container samples every 10 s, shipped to the server; the same samples
    //    answer /stats/summary and the agent's /metrics
    let sampler = mini_nodestats::Sampler::new(
        mini_nodestats::NodeStatsConfig::new(node_name.clone(), &config.data_dir),
        Arc::new(mini_nodestats::RealFs),
        Some(runtime.clone()),
    );
    tasks.push(tokio::spawn(mini_nodestats::run(
        sampler.clone(),
        Arc::new(mini_nodestats::ApiSink::new(client.clone())),
        shutdown.clone(),
    )));
    let stats = stats::StatsSampler::new(sampler);
    let address = SocketAddr::from(([0, 0, 0, 0], config.kubelet_port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| AgentError::Serve(format!("binding {address}: {e}")))?;
    let node_api_address = listener
        .local_addr()
        .map_err(|e| AgentError::Serve(format!("reading the bound address: {e}")))?;
    let backend = Arc::new(backend::KubeletBackend {
        kubelet: kubelet.clone(),
        stats,
        client: client.clone(),
        node_name: node_name.clone(),
        local_path: mini_localpath::LocalPathDir::new(
            config.local_path_dir(),
            Arc::new(mini_localpath::HostDirOps),
        ),
    });
    tasks.push(tokio::spawn(server::serve(
        listener,
        certs
            .kubelet_tls()
            .map_err(|e| AgentError::Serve(e.to_string()))?,
        backend,
        host.clone(),
        shutdown.clone(),
    )));
    // started: Ready follows the runtime's health now, sent at once rather than at the next refresh
    start_gate.open();
    status_wake.wake();
    tracing::info!(node = node_name, %node_api_address, "agent ready");
    config.report(AgentProgress::Ready);
    Ok(RunningAgent {
        node_name,
        node_ip,
        node_api_address,
        client,
        kubelet,
        containerd,
        tasks,
        drain_on_stop: config.drain_on_stop,
        shutdown,
    })
}

impl RunningAgent {
    /// Waits for shutdown, then stops in order: (drain pods if asked), the loops and the node
    /// API, then the managed containerd process -- its shims keep the containers running.
    pub async fn wait(self) -> Result<(), AgentError> {
        self.shutdown.cancelled().await;
        if self.drain_on_stop {
            tracing::info!("stopping every pod before exiting (--drain-on-stop)");
            self.kubelet.stop_all_pods().await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        if let Some(containerd) = self.containerd {
            containerd.stop().await;
        }
        tracing::info!("agent stopped; pods keep running");
        Ok(())
    }
}

/// A client with the node's identity, trusting only the cluster CA (both swapped online by
/// `certs`); also written as `<data>/agent/kubelet.kubeconfig` for debugging.
fn kube_client(
    config: &AgentConfig,
    creds: &join::Credentials,
    certs: &mini_certrotate::AgentCerts,
) -> Result<kube::Client, AgentError> {
    let yaml = mini_certs::kubeconfig_yaml(&config.server_url, &creds.ca_pem, &creds.client);
    fsutil::write_private(&config.kubeconfig_file(), yaml.as_bytes())?;
    certs
        .kube_client()
        .map_err(|e| AgentError::Join(format!("building the node client: {e}")))
}

/// The server's address (resolving its name), to find the interface that routes there.
async fn server_ip(server_url: &str) -> Result<IpAddr, AgentError> {
    let bad = |reason: String| AgentError::Config {
        flag: "--server",
        value: server_url.to_string(),
        reason,
    };
    let uri: http::Uri = server_url
        .parse()
        .map_err(|e| bad(format!("not a URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| bad("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let port = uri.port_u16().unwrap_or(443);
    let mut addresses = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad(format!("resolving {host}: {e}")))?;
    addresses
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| bad(format!("{host} resolves to no address")))
}

/// `mini images import`: imports one image tarball into containerd (the agent's managed one
/// under `data_dir` unless `containerd_socket` is given); returns the image names.
pub async fn import_image_file(
    file: &std::path::Path,
    containerd_socket: Option<PathBuf>,
    data_dir: &std::path::Path,
) -> Result<Vec<String>, AgentError> {
    let mut config = AgentConfig::new("", "");
    config.data_dir = data_dir.to_path_buf();
    let socket = containerd_socket.unwrap_or_else(|| {
        mini_cri::ContainerdConfig::new(
            config.containerd_dir(),
            mini_images::PAUSE_IMAGE,
            config.cni_conf_dir(),
        )
        .socket_path()
    });
    let importer = mini_images::ImageImporter::connect(&socket, &config.agent_dir())
        .await
        .map_err(|e| {
            AgentError::Runtime(format!(
                "connecting to containerd at {}: {e}",
                socket.display()
            ))
        })?;
    importer
        .import_file(file)
        .await
        .map_err(|e| AgentError::Runtime(format!("importing {}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::balancer_target;

    #[test]
    fn balancer_target_without_port_is_https_port() {
        assert_eq!(balancer_target("10.0.0.1:6443"), "10.0.0.1:6443");
        assert_eq!(balancer_target("server.example"), "server.example:443");
        assert_eq!(balancer_target("[fd00::1]:6443"), "[fd00::1]:6443");
        assert_eq!(balancer_target("[fd00::1]"), "[fd00::1]:443");
    }
}
