//! Cluster DNS for `mini agent`: a hickory-server answering `<cluster domain>` (Services,
//! headless endpoints, SRV, ExternalName, pods) from a watch cache of Services, EndpointSlices
//! and Pods, and forwarding every other name to the host's upstream resolvers with a short
//! deadline (SERVFAIL, never a hang, when none answers).
//!
//! Load, then build, then run: [`DnsConfig`] binds nothing, [`start`] takes bound sockets
//! (tests use port 0), [`run`] binds `config.listen` and serves until `shutdown`.

mod cache;
mod forward;
mod handler;
mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use forward::{ForwardError, Forwarder};

/// Where the host keeps its resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The conventional cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// How long a forwarded query may take, all attempts together (pods give up on a name within
/// 2 s even with no upstream reachable).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// TTL of cluster records (CoreDNS's `kubernetes` plugin default).
pub const DEFAULT_TTL: u32 = 5;
/// How long an idle TCP client connection is kept.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the DNS server serves and where it forwards.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address for both UDP and TCP (the agent uses `<node ip>:10053`).
    pub listen: SocketAddr,
    /// Authoritative domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Resolvers for every other name; empty means every other name gets SERVFAIL at once.
    pub upstreams: Vec<SocketAddr>,
    /// Deadline for one forwarded query, all attempts together.
    pub upstream_timeout: Duration,
    /// TTL of cluster records, seconds.
    pub ttl: u32,
}

impl DnsConfig {
    /// Defaults with the given upstreams: `cluster.local`, 1.5 s upstream deadline, TTL 5 s.
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            listen,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            upstreams,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            ttl: DEFAULT_TTL,
        }
    }

    /// Defaults with the nameservers of resolv.conf file `path` (the host's is
    /// [`HOST_RESOLV_CONF`]) as upstreams; none when the file is missing or unreadable, as on
    /// an air-gapped node, and then every name outside the cluster domain gets SERVFAIL.
    pub fn with_resolv_conf(listen: SocketAddr, path: &std::path::Path) -> DnsConfig {
        let upstreams = std::fs::read_to_string(path)
            .map(|text| upstreams_from_resolv_conf(&text))
            .unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "dns: no upstream resolvers: cannot read the resolver configuration");
                Vec::new()
            });
        DnsConfig::new(listen, upstreams)
    }
}

/// The `nameserver` lines of a resolv.conf as port-53 socket addresses (IPv6 link-local
/// addresses with a `%zone` are skipped: a zone needs an interface index).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What can stop the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {domain:?}: {source}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("binding the dns {proto} socket on {addr} failed: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the dns socket's local address failed: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("the dns server stopped: {0}")]
    Serve(String),
}

/// A started DNS server.
pub struct DnsServer {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    cache: Arc<cache::ClusterCache>,
    task: JoinHandle<Result<(), DnsError>>,
}

impl DnsServer {
    /// Where the UDP socket listens.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Where the TCP listener listens.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Waits until the Service, EndpointSlice and Pod caches hold a full list (until then
    /// cluster names get SERVFAIL; forwarding works from the start).
    pub async fn wait_synced(&self) {
        self.cache.wait_synced().await
    }

    /// Waits for the server to stop (after the shutdown token is cancelled).
    pub async fn join(self) -> Result<(), DnsError> {
        self.task
            .await
            .map_err(|e| DnsError::Serve(format!("the server task failed: {e}")))?
    }
}

/// Serves on already-bound sockets until `shutdown` is cancelled: starts the watches and the
/// hickory server and returns at once.
pub fn start(
    client: kube::Client,
    config: DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: CancellationToken,
) -> Result<DnsServer, DnsError> {
    let zone =
        zone::Zone::new(&config.cluster_domain, config.ttl).map_err(|source| DnsError::Domain {
            domain: config.cluster_domain.clone(),
            source,
        })?;
    let udp_addr = udp.local_addr().map_err(DnsError::LocalAddr)?;
    let tcp_addr = tcp.local_addr().map_err(DnsError::LocalAddr)?;
    // never forward to ourselves (a resolv.conf naming this server would loop)
    let upstreams: Vec<SocketAddr> = config
        .upstreams
        .iter()
        .copied()
        .filter(|u| *u != udp_addr && *u != config.listen)
        .collect();
    if upstreams.is_empty() {
        tracing::warn!(
            "dns: no upstream resolvers; names outside {} get SERVFAIL",
            config.cluster_domain
        );
    }
    let cache = Arc::new(cache::ClusterCache::default());
    cache.spawn_watches(client, &shutdown);
    let handler = handler::DnsHandler {
        cache: cache.clone(),
        zone,
        forwarder: Forwarder::new(upstreams, config.upstream_timeout),
    };
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
    let task = tokio::spawn(async move {
        let result = tokio::select! {
            _ = shutdown.cancelled() => server.shutdown_gracefully().await,
            result = server.block_until_done() => result,
        };
        result.map_err(|e| DnsError::Serve(e.to_string()))
    });
    tracing::info!(%udp_addr, %tcp_addr, "dns: serving");
    Ok(DnsServer {
        udp_addr,
        tcp_addr,
        cache,
        task,
    })
}

/// Binds `config.listen` (UDP and TCP) and serves until `shutdown` is cancelled.
pub async fn run(
    client: kube::Client,
    config: DnsConfig,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let addr = config.listen;
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            proto: "udp",
            addr,
            source,
        })?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| DnsError::Bind {
            proto: "tcp",
            addr,
            source,
        })?;
    start(client, config, udp, tcp, shutdown)?.join().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_from_resolv_conf_reads_nameservers_only() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver   fd00::53 # v6\n\
                    ;nameserver 10.9.9.9\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().expect("addr"),
            "[fd00::53]:53".parse().expect("addr"),
        ];
        assert_eq!(upstreams_from_resolv_conf(text), expected);
        assert!(upstreams_from_resolv_conf("").is_empty());
    }

    #[test]
    fn with_resolv_conf_missing_file_means_no_upstreams() {
        let listen: SocketAddr = "127.0.0.1:10053".parse().expect("addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = DnsConfig::with_resolv_conf(listen, &dir.path().join("nope"));
        assert!(missing.upstreams.is_empty());
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").expect("writing");
        let config = DnsConfig::with_resolv_conf(listen, &path);
        assert_eq!(
            config.upstreams,
            vec!["192.0.2.53:53".parse().expect("addr")]
        );
    }

    #[test]
    fn dns_config_new_uses_documented_defaults() {
        let c = DnsConfig::new("127.0.0.1:10053".parse().expect("addr"), vec![]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
        assert_eq!(c.ttl, 5);
    }
}
