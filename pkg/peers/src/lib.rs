//! The servers of a cluster find each other, as upstream's lease endpoint reconciler does: each
//! server keeps a `coordination.k8s.io` Lease of its own in `kube-system` (label
//! `apiserver.kubernetes.io/identity=kube-apiserver`, its `host:port` in an annotation), renewed
//! every few seconds, and sets the `default/kubernetes` Endpoints and EndpointSlice to the
//! addresses of every Lease renewed within its duration — so a server that stopped renewing
//! drops out within one lease duration, and agents learn the server list from there. A server
//! that shuts down deletes its Lease, so the others drop it at once. Lease ages are measured on
//! the reader's clock against the writer's `renewTime` (servers' clocks are assumed to agree
//! within a few seconds, as upstream's apiserver identity leases assume).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

/// The label every server's Lease carries (upstream's apiserver identity label).
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// Its value.
pub const IDENTITY_VALUE: &str = "kube-apiserver";
/// The annotation holding the server's `ip:port` as agents and pods reach it.
pub const ENDPOINT_ANNOTATION: &str = "mini.dev/apiserver-endpoint";

/// This server and the timings of its Lease.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Unique among the servers and stable across restarts (the leader-election identity).
    pub identity: String,
    /// The address agents and pods reach this server at (advertise address and port).
    pub endpoint: SocketAddr,
    /// How long a Lease counts as live after its last renewal.
    pub lease_duration: Duration,
    /// Between renewals (and Endpoints reconciliations).
    pub renew_period: Duration,
}

impl PeerConfig {
    /// Upstream's timings: a 15 s lease renewed every 5 s (a dead server is gone within 20 s).
    pub fn new(identity: &str, endpoint: SocketAddr) -> Self {
        PeerConfig {
            identity: identity.into(),
            endpoint,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
        }
    }

    /// The Lease's name: `apiserver-` and the identity made a DNS label.
    pub fn lease_name(&self) -> String {
        let mut name: String = format!("apiserver-{}", self.identity)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        name.truncate(63);
        name.trim_end_matches('-').to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("{what}: api request failed: {source}")]
    Api {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: &'static str) -> impl FnOnce(kube::Error) -> PeersError {
    move |source| PeersError::Api { what, source }
}

/// The endpoints of the Leases renewed within their duration at `now` (unix milliseconds),
/// sorted and without duplicates.
pub fn live_endpoints(leases: &[Lease], now_ms: i64) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = leases
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0.as_millisecond();
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
            if renewed + duration <= now_ms {
                return None;
            }
            lease
                .metadata
                .annotations
                .as_ref()?
                .get(ENDPOINT_ANNOTATION)?
                .parse()
                .ok()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `kubernetes` Endpoints subsets for `endpoints`: one subset per port, addresses sorted.
pub fn subsets(endpoints: &[SocketAddr]) -> Vec<EndpointSubset> {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for e in endpoints {
        by_port
            .entry(e.port())
            .or_default()
            .push(e.ip().to_string());
    }
    by_port
        .into_iter()
        .map(|(port, ips)| EndpointSubset {
            addresses: Some(
                ips.into_iter()
                    .map(|ip| EndpointAddress {
                        ip,
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: i32::from(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .collect()
}

/// The `kubernetes` EndpointSlice's endpoints and ports for `endpoints` (a slice has one port
/// list: the servers on the most common port).
pub fn slice_parts(endpoints: &[SocketAddr]) -> (Vec<Endpoint>, Vec<SlicePort>) {
    let mut count: BTreeMap<u16, usize> = BTreeMap::new();
    for e in endpoints {
        *count.entry(e.port()).or_default() += 1;
    }
    let Some(port) = count
        .iter()
        .max_by_key(|(port, n)| (**n, std::cmp::Reverse(**port)))
        .map(|(p, _)| *p)
    else {
        return (Vec::new(), Vec::new());
    };
    let items = endpoints
        .iter()
        .filter(|e| e.port() == port)
        .map(|e| Endpoint {
            addresses: vec![e.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let ports = vec![SlicePort {
        name: Some("https".into()),
        port: Some(i32::from(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    (items, ports)
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Creates or renews this server's Lease.
async fn renew(leases: &Api<Lease>, config: &PeerConfig) -> Result<(), PeersError> {
    let name = config.lease_name();
    let spec = LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        renew_time: Some(now()),
        ..Default::default()
    };
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        labels: Some(BTreeMap::from([(
            IDENTITY_LABEL.to_string(),
            IDENTITY_VALUE.to_string(),
        )])),
        annotations: Some(BTreeMap::from([(
            ENDPOINT_ANNOTATION.to_string(),
            config.endpoint.to_string(),
        )])),
        ..Default::default()
    };
    match leases
        .get_opt(&name)
        .await
        .map_err(api_err("reading this server's lease"))?
    {
        Some(mut lease) => {
            lease.spec = Some(spec);
            lease.metadata.labels = metadata.labels;
            lease.metadata.annotations = metadata.annotations;
            leases
                .replace(&name, &PostParams::default(), &lease)
                .await
                .map_err(api_err("renewing this server's lease"))?;
        }
        None => {
            let lease = Lease {
                metadata,
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(api_err("creating this server's lease"))?;
        }
    }
    Ok(())
}

/// Sets the `kubernetes` Endpoints and EndpointSlice to `live` when they differ.
async fn reconcile(client: &kube::Client, live: &[SocketAddr]) -> Result<bool, PeersError> {
    let mut changed = false;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    if let Some(mut current) = endpoints
        .get_opt("kubernetes")
        .await
        .map_err(api_err("reading the kubernetes endpoints"))?
    {
        let wanted = subsets(live);
        if current.subsets.as_deref().unwrap_or_default() != wanted.as_slice() {
            current.subsets = Some(wanted);
            endpoints
                .replace("kubernetes", &PostParams::default(), &current)
                .await
                .map_err(api_err("updating the kubernetes endpoints"))?;
            changed = true;
        }
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    if let Some(mut current) = slices
        .get_opt("kubernetes")
        .await
        .map_err(api_err("reading the kubernetes endpoint slice"))?
    {
        let (items, ports) = slice_parts(live);
        if current.endpoints != items || current.ports.as_deref().unwrap_or_default() != ports {
            current.endpoints = items;
            current.ports = Some(ports);
            slices
                .replace("kubernetes", &PostParams::default(), &current)
                .await
                .map_err(api_err("updating the kubernetes endpoint slice"))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The endpoints (`ip:port`) of the servers whose Lease is live now, sorted: for a server's
/// components that talk to the other servers (the registry's replication).
pub async fn live_servers(client: &kube::Client) -> Result<Vec<SocketAddr>, PeersError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let list = leases
        .list(&ListParams::default().labels(&format!("{IDENTITY_LABEL}={IDENTITY_VALUE}")))
        .await
        .map_err(api_err("listing the servers' leases"))?;
    Ok(live_endpoints(
        &list.items,
        Timestamp::now().as_millisecond(),
    ))
}

/// One round: renew this server's Lease, then list the live ones into the Endpoints.
async fn round(client: &kube::Client, config: &PeerConfig) -> Result<(), PeersError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    renew(&leases, config).await?;
    let mut live = live_servers(client).await?;
    // this server is live whatever the clocks say: it just renewed
    if !live.contains(&config.endpoint) {
        live.push(config.endpoint);
        live.sort();
    }
    if reconcile(client, &live).await? {
        tracing::info!(servers = ?live, "the kubernetes endpoints list the live servers");
    }
    Ok(())
}

/// Keeps this server's Lease and the `kubernetes` Endpoints current until `stop`; then deletes
/// the Lease so the other servers drop this one at once.
pub async fn run(client: kube::Client, config: PeerConfig, stop: CancellationToken) {
    loop {
        if let Err(e) = round(&client, &config).await {
            tracing::warn!(error = %e, "keeping the server list current failed; retrying");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(config.renew_period) => {}
        }
    }
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let deleted = tokio::time::timeout(
        Duration::from_secs(2),
        leases.delete(&config.lease_name(), &DeleteParams::default()),
    )
    .await;
    if let Ok(Err(e)) = deleted {
        tracing::debug!(error = %e, "deleting this server's lease at shutdown failed");
    }
}

#[cfg(test)]
mod tests;

/// An HTTPS client to the other servers (HTTP/1.1, bodies sent in one piece).
pub type PeerClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A [`PeerClient`] with `tls` (the server's client certificate and the cluster CA, swapped
/// online); idle connections are kept a minute.
pub fn peer_client(tls: &rustls::ClientConfig) -> PeerClient {
    let mut tls = tls.clone();
    // hyper-rustls sets the ALPN protocols itself (HTTP/1.1 only)
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}
