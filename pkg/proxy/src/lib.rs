//! The built-in kube-proxy: watches Services and EndpointSlices and keeps one nftables table
//! that mini owns (`ip mini`) in step with them -- ClusterIP, NodePort, LoadBalancer and
//! external IPs, both external traffic policies, ClientIP affinity, hairpin masquerade,
//! immediate rejection for Services without endpoints, pod egress masquerade and node-local
//! DNS. Changes are applied as differences (map elements, changed chains) in one atomic nft
//! batch; the table is rebuilt whole at start and whenever someone else changed it.

mod rules;
mod service;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use mini_sys::nft::{Nft, NftError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use rules::{Desired, MapKey};
pub use service::{service_ports, Endpoint, Proto, ServicePort};

/// The table mini owns (family `ip`).
pub const TABLE: &str = "mini";
/// How long to gather watch events before one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the table is listed to catch changes made behind our back.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// What went wrong in the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error("programming nftables table ip {TABLE}: {0}")]
    Nft(#[from] NftError),
}

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProxyError::Config(format!("{s:?} is not an IPv4 CIDR (like 10.42.0.0/16)"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        // Normalise to the network address: nft rejects a prefix with host bits set.
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
}

/// Node-local DNS: connections to the cluster DNS Service IP on port 53 (UDP and TCP) go to
/// this node's DNS server instead of being load-balanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLocalDns {
    /// The `kube-dns` Service IP (10.43.0.10).
    pub service_ip: IpAddr,
    /// Where this node's DNS server listens: an address of this node (not 127.0.0.1, which
    /// pod traffic cannot be DNATed to), e.g. node_ip:10053.
    pub listen: SocketAddr,
}

/// How the proxy is set up on this node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: String,
    /// The pod network (10.42.0.0/16): traffic from outside it to a ClusterIP is masqueraded,
    /// pod traffic leaving it is masqueraded.
    pub cluster_cidr: String,
    /// The Service network (10.43.0.0/16): new connections to it that match no Service port
    /// are rejected.
    pub service_cidr: String,
    pub dns: Option<NodeLocalDns>,
}

impl ProxyConfig {
    fn rule_config(&self) -> Result<rules::RuleConfig, ProxyError> {
        let dns = match &self.dns {
            None => None,
            Some(NodeLocalDns {
                service_ip: IpAddr::V4(ip),
                listen: listen @ SocketAddr::V4(_),
            }) => Some((*ip, *listen)),
            Some(other) => {
                return Err(ProxyError::Config(format!(
                    "node-local dns {other:?}: only IPv4 is supported"
                )))
            }
        };
        Ok(rules::RuleConfig {
            cluster_cidr: self.cluster_cidr.parse()?,
            pool_cidrs: Vec::new(),
            service_cidr: self.service_cidr.parse()?,
            dns,
        })
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Whether the table was rebuilt whole.
    pub full: bool,
    /// nft commands in the batch (0: nothing changed, nothing applied).
    pub commands: usize,
    /// Time spent in `nft`.
    pub apply_time: Duration,
}

/// Keeps the table in step with Service ports: remembers what it applied and sends only
/// the differences. Usable without a cluster (benchmarks, tests).
pub struct Proxier {
    nft: Arc<dyn Nft>,
    config: rules::RuleConfig,
    applied: Option<Desired>,
}

impl Proxier {
    pub fn new(nft: Arc<dyn Nft>, config: &ProxyConfig) -> Result<Proxier, ProxyError> {
        Ok(Proxier {
            nft,
            config: config.rule_config()?,
            applied: None,
        })
    }

    /// Sets the CIDRs of the cluster's IP pools (pod addresses outside the cluster CIDR);
    /// the next sync programs them. Unparsable CIDRs are skipped.
    pub fn set_pool_cidrs(&mut self, cidrs: &[String]) {
        let mut parsed: Vec<Ipv4Cidr> = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
        parsed.sort_by_key(|c| (u32::from(c.addr), c.len));
        parsed.dedup();
        self.config.pool_cidrs = parsed;
    }

    /// The table this proxier would program for `ports`.
    pub fn desired(&self, ports: &[ServicePort]) -> Desired {
        rules::desired(ports, &self.config)
    }

    /// Programs the table for `ports`: the differences from the last successful sync, or the
    /// whole table on the first sync, after a failure or after `check` found it tampered with.
    pub async fn sync(&mut self, ports: &[ServicePort]) -> Result<SyncStats, ProxyError> {
        let desired = self.desired(ports);
        let base = self
            .applied
            .as_ref()
            .filter(|a| rules::incremental_ok(a, &desired));
        let commands = rules::diff(base, &desired);
        let full = base.is_none();
        if commands.is_empty() {
            return Ok(SyncStats {
                full,
                commands: 0,
                apply_time: Duration::ZERO,
            });
        }
        let count = commands.len();
        let started = Instant::now();
        let result = self.nft.apply(&rules::batch(commands)).await;
        let apply_time = started.elapsed();
        match result {
            Ok(()) => {
                self.applied = Some(desired);
                Ok(SyncStats {
                    full,
                    commands: count,
                    apply_time,
                })
            }
            Err(e) => {
                // The kernel kept the old table (the batch is atomic), but rebuild to be sure.
                self.applied = None;
                Err(e.into())
            }
        }
    }

    /// Lists the table and forgets what was applied (so the next sync rebuilds it) when the
    /// table is gone or its chains, rules, sets or map elements are not the ones applied.
    /// Returns whether it was intact.
    pub async fn check(&mut self) -> Result<bool, ProxyError> {
        let Some(applied) = &self.applied else {
            return Ok(false);
        };
        let listing = self.nft.list_table("ip", TABLE).await?;
        let intact = listing
            .as_deref()
            .and_then(rules::Shape::from_listing)
            .is_some_and(|shape| shape == rules::Shape::of(applied));
        if !intact {
            self.applied = None;
        }
        Ok(intact)
    }
}

/// Runs the proxy until `shutdown`: watches Services and EndpointSlices, and after each burst
/// of changes (debounced) programs the differences. Fails only on an invalid `config`; nft
/// and watch errors are logged and retried. The table is left in place on shutdown (traffic
/// keeps flowing across an agent restart); `cleanup` removes it.
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    nft: Arc<dyn Nft>,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let mut proxier = Proxier::new(nft, &config)?;
    let changed = Arc::new(Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let mut watches = tokio::task::JoinSet::new();
    {
        let changed = changed.clone();
        let stream = reflector(
            services_writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        watches.spawn(mini_runtime::watch::notify_on_events(
            "services", stream, changed,
        ));
    }
    {
        let changed = changed.clone();
        let stream = reflector(
            slices_writer,
            watcher(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        watches.spawn(mini_runtime::watch::notify_on_events(
            "endpointslices",
            stream,
            changed,
        ));
    }
    // IP pools (`mini.dev/v1`, created by the server): their pods are pod traffic too. Not
    // waited for: a server without the kind leaves the pod ranges at the cluster CIDR.
    let pool_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("mini.dev", "v1", "IPPool"),
        "ippools",
    );
    let pools_writer = reflector::store::Writer::<DynamicObject>::new(pool_resource.clone());
    let pools = pools_writer.as_reader();
    {
        let changed = changed.clone();
        let stream = reflector(
            pools_writer,
            watcher(
                Api::<DynamicObject>::all_with(client, &pool_resource),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        watches.spawn(mini_runtime::watch::notify_on_events(
            "ippools", stream, changed,
        ));
    }
    let ready = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = ready => {}
    }
    tracing::info!(node = %config.node_name, "service proxy caches synced");
    let mut retry = Duration::from_millis(500);
    let mut next_check = tokio::time::Instant::now() + CHECK_INTERVAL;
    loop {
        let pool_cidrs: Vec<String> = pools
            .state()
            .iter()
            .filter_map(|p| p.data["spec"]["cidr"].as_str().map(str::to_string))
            .collect();
        proxier.set_pool_cidrs(&pool_cidrs);
        let ports = service_ports(&services.state(), &slices.state(), &config.node_name);
        let wait = match proxier.sync(&ports).await {
            Ok(stats) => {
                if stats.commands > 0 {
                    tracing::debug!(
                        full = stats.full,
                        commands = stats.commands,
                        service_ports = ports.len(),
                        apply_ms = stats.apply_time.as_millis() as u64,
                        "nftables table updated"
                    );
                }
                retry = Duration::from_millis(500);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = retry.as_millis() as u64, "service proxy sync failed");
                let wait = retry;
                retry = (retry * 2).min(Duration::from_secs(30));
                Some(wait)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified(), if wait.is_none() => {
                tokio::time::sleep(DEBOUNCE).await;
            }
            _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
            _ = tokio::time::sleep_until(next_check) => {
                next_check = tokio::time::Instant::now() + CHECK_INTERVAL;
                match proxier.check().await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("table ip {TABLE} changed behind the proxy; rebuilding it"),
                    Err(e) => tracing::warn!(error = %e, "listing table ip {TABLE} failed"),
                }
            }
        }
    }
    watches.abort_all();
    Ok(())
}

/// Removes the table (for `mini agent cleanup`); a missing table is not an error.
pub async fn cleanup(nft: &dyn Nft) -> Result<(), ProxyError> {
    let table = serde_json::json!({"table": {"family": "ip", "name": TABLE}});
    let batch = serde_json::json!({"nftables": [{"add": table.clone()}, {"delete": table}]});
    nft.apply(&batch.to_string()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_sys::nft::FakeNft;

    fn config() -> ProxyConfig {
        ProxyConfig {
            node_name: "n1".into(),
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            dns: None,
        }
    }

    fn web(ips: &[&str]) -> Vec<ServicePort> {
        vec![ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            proto: Proto::Tcp,
            port: 80,
            cluster_ip: Ipv4Addr::new(10, 43, 0, 5),
            node_port: None,
            external_ips: Vec::new(),
            external_local: false,
            affinity_timeout: None,
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().expect("ip"),
                    port: 8080,
                    local: false,
                })
                .collect(),
            local_endpoints: Vec::new(),
        }]
    }

    #[test]
    fn cidr_parse_normalises_host_bits_and_rejects_garbage() {
        let c: Ipv4Cidr = "10.42.3.7/16".parse().expect("cidr");
        assert_eq!(
            c,
            Ipv4Cidr {
                addr: Ipv4Addr::new(10, 42, 0, 0),
                len: 16
            }
        );
        assert!("10.42.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Ipv4Cidr>().is_err());
    }

    #[tokio::test]
    async fn proxier_first_sync_is_full_then_incremental_then_nothing() {
        let nft = Arc::new(FakeNft::new());
        let mut p = Proxier::new(nft.clone(), &config()).expect("proxier");
        let first = p.sync(&web(&["10.42.0.5"])).await.expect("sync");
        assert!(first.full);
        assert!(nft.batches()[0].contains(r#"{"delete":{"table":{"family":"ip","name":"mini"}}}"#));
        let second = p
            .sync(&web(&["10.42.0.5", "10.42.1.5"]))
            .await
            .expect("sync");
        assert!(!second.full);
        assert!(!nft.batches()[1].contains(r#""delete":{"table""#));
        let third = p
            .sync(&web(&["10.42.0.5", "10.42.1.5"]))
            .await
            .expect("sync");
        assert_eq!(third.commands, 0);
        assert_eq!(nft.batches().len(), 2);
    }

    #[tokio::test]
    async fn proxier_rebuilds_after_a_failed_apply_or_a_tampered_table() {
        let nft = Arc::new(FakeNft::new());
        let mut p = Proxier::new(nft.clone(), &config()).expect("proxier");
        p.sync(&web(&["10.42.0.5"])).await.expect("sync");
        nft.fail_next_apply("Error: Could not process rule");
        assert!(p.sync(&web(&["10.42.1.5"])).await.is_err());
        assert!(p.sync(&web(&["10.42.1.5"])).await.expect("retry").full);

        // The table is missing: check says so and the next sync rebuilds it.
        nft.set_listing(None);
        assert!(!p.check().await.expect("check"));
        assert!(p.sync(&web(&["10.42.1.5"])).await.expect("sync").full);

        // A listing with the applied shape is intact; a missing rule is not.
        let applied = p.applied.clone().expect("applied");
        let mut objects = vec![serde_json::json!({"table": {"family": "ip", "name": TABLE}})];
        for (name, chain) in &applied.chains {
            objects.push(serde_json::json!({"chain": {"name": name}}));
            for r in &chain.rules {
                objects.push(serde_json::json!({"rule": {"chain": name, "expr": r}}));
            }
        }
        for (map, elems) in &applied.maps {
            let elem: Vec<_> = elems.keys().map(|_| serde_json::json!([])).collect();
            objects.push(serde_json::json!({"map": {"name": map, "elem": elem}}));
        }
        nft.set_listing(Some(serde_json::json!({"nftables": objects}).to_string()));
        assert!(p.check().await.expect("check"));
        objects.retain(|o| o.get("rule").is_none_or(|r| r["chain"] != "services"));
        nft.set_listing(Some(serde_json::json!({"nftables": objects}).to_string()));
        assert!(!p.check().await.expect("check"));
        assert!(p.sync(&web(&["10.42.1.5"])).await.expect("sync").full);
    }

    #[tokio::test]
    async fn cleanup_deletes_the_table_even_when_missing() {
        let nft = FakeNft::new();
        cleanup(&nft).await.expect("cleanup");
        assert_eq!(
            nft.batches(),
            vec![r#"{"nftables":[{"add":{"table":{"family":"ip","name":"mini"}}},{"delete":{"table":{"family":"ip","name":"mini"}}}]}"#.to_string()]
        );
    }
}
