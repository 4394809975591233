//! NetworkPolicy enforcement, run by every agent: watches NetworkPolicies, Pods and
//! Namespaces and keeps one nftables table that mini owns (`ip mini-netpol`, apart from the
//! proxy's `ip mini`) in step with them.
//!
//! # Where packets are policed
//! One base chain on the `forward` hook (filter priority 0). Pod-to-pod traffic on one node
//! crosses the `mini0` bridge, which hands it to the IPv4 hooks (br_netfilter with
//! `bridge-nf-call-iptables`, set up by the overlay); traffic between nodes is routed through
//! the VXLAN device. Both pass `forward` on the sending node (egress of the source pod) and on
//! the receiving node (ingress of the destination pod). The proxy's Service DNAT runs earlier
//! (prerouting) and its masquerade later (postrouting), so policies see pod addresses, as
//! upstream. Traffic from or to the node itself (kubelet probes, node-local DNS) is not
//! policed, as with most upstream network plugins.
//!
//! # Flat cost per packet
//! The base chain looks the source up in the verdict map `egress-pods` and the destination in
//! `ingress-pods` (local pods some policy isolates). A hit jumps to that pod's own chain,
//! whose rules are only those of the policies selecting the pod; each rule matches its peers
//! with one set lookup (a hash set of pod addresses from podSelector/namespaceSelector, an
//! interval set for ipBlocks minus their excepts) and its ports with compares on the
//! protocol and port or port range (named ports resolved per pod from container ports).
//! An allow `return`s (so egress and ingress are both checked); the end of the chain denies.
//! Policies selecting no pod of this node add nothing to this node's table, and a packet's
//! cost does not grow with the number of policies that do not select its pods.
//!
//! # Cutting established connections
//! The original direction of every connection is evaluated on every packet (no
//! `ct state established accept` short cut); only reply-direction packets and related ICMP
//! errors pass unconditionally. A connection that becomes denied therefore stops at its next
//! packet: established TCP is answered with a reset (so both ends learn at once), everything
//! else is dropped. No conntrack entries need deleting and no race exists between a policy
//! change and the connections it affects.
//!
//! # Incremental updates
//! Every sync computes the desired table and sends only the differences in one atomic
//! batch: pod set elements, rewritten ipBlock sets, changed per-pod chains, verdict map
//! elements. The table is rebuilt whole at start, after a failed apply, and when a periodic
//! listing shows it was changed behind the agent's back.

mod model;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector;
use kube::Api;
use mini_runtime::watch::spawn_store;
use mini_sys::nft::{Nft, NftError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use model::{desired, pod_chain, selector_matches, Inputs, PodInfo, EGRESS_MAP, INGRESS_MAP};
pub use table::{Desired, SetElems, FAMILY, TABLE};

/// How long to gather watch events before one sync.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the table is listed to catch changes made behind our back.
const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// What went wrong in policy enforcement.
#[derive(Debug, thiserror::Error)]
pub enum NetpolError {
    #[error("programming nftables table ip {TABLE}: {0}")]
    Nft(#[from] NftError),
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Whether the table was rebuilt whole.
    pub full: bool,
    /// nft commands in the batch (0: nothing changed, nothing applied).
    pub commands: usize,
    /// Time spent in nft.
    pub apply_time: Duration,
}

/// Keeps the table in step with the policies: remembers what it applied and sends only the
/// differences. Usable without a cluster (tests, benchmarks).
pub struct Enforcer {
    nft: Arc<dyn Nft>,
    node_name: String,
    applied: Option<Desired>,
}

impl Enforcer {
    pub fn new(nft: Arc<dyn Nft>, node_name: impl Into<String>) -> Enforcer {
        Enforcer {
            nft,
            node_name: node_name.into(),
            applied: None,
        }
    }

    /// The table this node should have for `inputs`.
    pub fn desired(&self, inputs: &Inputs) -> Desired {
        model::desired(inputs, &self.node_name)
    }

    /// Programs the table: the differences from the last successful sync, or the whole
    /// table on the first sync, after a failure or after `check` found it tampered with.
    pub async fn sync(&mut self, inputs: &Inputs) -> Result<SyncStats, NetpolError> {
        let desired = self.desired(inputs);
        let base = self
            .applied
            .as_ref()
            .filter(|a| table::incremental_ok(a, &desired));
        let commands = table::diff(base, &desired);
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
        let result = self.nft.apply(&table::batch(commands)).await;
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
                // The batch is atomic, so the kernel kept the old table; rebuild to be sure.
                self.applied = None;
                Err(e.into())
            }
        }
    }

    /// Lists the table and forgets what was applied (so the next sync rebuilds it) when it
    /// is gone or its chains, rules, sets or elements are not the ones applied. Returns
    /// whether it was intact.
    pub async fn check(&mut self) -> Result<bool, NetpolError> {
        let Some(applied) = &self.applied else {
            return Ok(false);
        };
        let listing = self.nft.list_table(FAMILY, TABLE).await?;
        let intact = listing
            .as_deref()
            .and_then(table::Shape::from_listing)
            .is_some_and(|shape| shape == table::Shape::of(applied));
        if !intact {
            self.applied = None;
        }
        Ok(intact)
    }
}

/// The inputs from the watch caches.
fn inputs(
    policies: &reflector::Store<NetworkPolicy>,
    pods: &reflector::Store<Pod>,
    namespaces: &reflector::Store<Namespace>,
) -> Inputs {
    Inputs {
        policies: policies.state().iter().map(|p| (**p).clone()).collect(),
        pods: pods
            .state()
            .iter()
            .filter_map(|p| PodInfo::from_pod(p))
            .collect(),
        namespaces: namespaces
            .state()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Runs policy enforcement until `shutdown`: watches NetworkPolicies, Pods and Namespaces
/// and after each burst of changes (debounced) programs the differences. nft and watch
/// errors are logged and retried. The table stays on shutdown (policies keep holding across
/// an agent restart); `cleanup` removes it.
pub async fn run(
    client: kube::Client,
    node_name: String,
    nft: Arc<dyn Nft>,
    shutdown: CancellationToken,
) -> Result<(), NetpolError> {
    let mut enforcer = Enforcer::new(nft, node_name.clone());
    let changed = Arc::new(Notify::new());
    let mut watches = tokio::task::JoinSet::new();
    let policies = spawn_store(
        &mut watches,
        "networkpolicies",
        Api::<NetworkPolicy>::all(client.clone()),
        &changed,
    );
    let pods = spawn_store(
        &mut watches,
        "pods",
        Api::<Pod>::all(client.clone()),
        &changed,
    );
    let namespaces = spawn_store(
        &mut watches,
        "namespaces",
        Api::<Namespace>::all(client),
        &changed,
    );
    let ready = async {
        let _ = policies.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        let _ = namespaces.wait_until_ready().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = ready => {}
    }
    tracing::info!(node = %node_name, "network policy caches synced");
    let mut retry = Duration::from_millis(500);
    let mut next_check = tokio::time::Instant::now() + CHECK_INTERVAL;
    loop {
        let current = inputs(&policies, &pods, &namespaces);
        let wait = match enforcer.sync(&current).await {
            Ok(stats) => {
                if stats.commands > 0 {
                    tracing::debug!(
                        full = stats.full,
                        commands = stats.commands,
                        policies = current.policies.len(),
                        apply_ms = stats.apply_time.as_millis() as u64,
                        "network policy table updated"
                    );
                }
                retry = Duration::from_millis(500);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = retry.as_millis() as u64, "network policy sync failed");
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
                match enforcer.check().await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("table ip {TABLE} changed behind the agent; rebuilding it"),
                    Err(e) => tracing::warn!(error = %e, "listing table ip {TABLE} failed"),
                }
            }
        }
    }
    watches.abort_all();
    Ok(())
}

/// Removes the table (agent cleanup, `--disable-network-policy`, killall); a missing table
/// is not an error.
pub async fn cleanup(nft: &dyn Nft) -> Result<(), NetpolError> {
    let table = serde_json::json!({"table": {"family": FAMILY, "name": TABLE}});
    let batch = serde_json::json!({"nftables": [{"add": table.clone()}, {"delete": table}]});
    nft.apply(&batch.to_string()).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
