//! The node IPAM controller (upstream's range allocator): carves one pod range per node out of
//! the cluster CIDR and records it in `spec.podCIDR`/`spec.podCIDRs`. The set of used ranges
//! is always derived from the nodes themselves (plus allocations not yet seen back through the
//! watch), so a restart never hands out a range twice and a deleted node's range is free again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use mini_runtime::{EventRecorder, EventType};

use crate::endpoints::{event_object, is_conflict, is_not_found, reflect, sleep_until, WorkQueue};
use crate::{Context, ControllerError};

/// An IPv4 cluster range split into equal node ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CidrSet {
    base: u32,
    cluster_prefix: u8,
    node_prefix: u8,
}

impl CidrSet {
    fn new(cluster_cidr: &str, node_prefix: u8) -> Result<CidrSet, ControllerError> {
        let invalid = |reason: &str| ControllerError::Invalid {
            object: format!("cluster cidr {cluster_cidr}"),
            reason: reason.to_string(),
        };
        let (ip, prefix) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| invalid("not in address/prefix form"))?;
        let ip: Ipv4Addr = ip
            .trim()
            .parse()
            .map_err(|_| invalid("only ipv4 cluster cidrs are supported"))?;
        let prefix: u8 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| invalid("bad prefix length"))?;
        if node_prefix < prefix || node_prefix > 32 {
            return Err(invalid(&format!(
                "node mask size {node_prefix} does not fit in the cluster range"
            )));
        }
        if node_prefix - prefix > 24 {
            return Err(invalid("too many node ranges"));
        }
        Ok(CidrSet {
            base: u32::from(ip) & mask(prefix),
            cluster_prefix: prefix,
            node_prefix,
        })
    }

    fn len(&self) -> u32 {
        1u32 << (self.node_prefix - self.cluster_prefix)
    }

    fn cidr(&self, index: u32) -> String {
        let size = if self.node_prefix == 32 {
            1
        } else {
            1u32 << (32 - self.node_prefix)
        };
        let ip = Ipv4Addr::from(self.base + index * size);
        format!("{ip}/{}", self.node_prefix)
    }

    /// The index of a node range in this set, if `cidr` is exactly one.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if prefix != self.node_prefix {
            return None;
        }
        let ip = u32::from(ip);
        if ip & mask(self.cluster_prefix) != self.base {
            return None;
        }
        let shift = 32 - u32::from(self.node_prefix);
        let offset = ip - self.base;
        let index = if shift == 32 { 0 } else { offset >> shift };
        Some(index)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The node's pod ranges.
fn node_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut out: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if let Some(c) = spec.and_then(|s| s.pod_cidr.clone()) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

struct Allocator {
    set: CidrSet,
    /// Allocations written but maybe not yet seen through the watch: node name → index.
    pending: HashMap<String, u32>,
    /// Nodes already told their range could not be allocated.
    reported: HashSet<String>,
}

impl Allocator {
    /// The used indices: every node's range plus pending allocations.
    fn used(&self, nodes: &Store<Node>) -> BTreeSet<u32> {
        let mut used: BTreeSet<u32> = nodes
            .state()
            .iter()
            .flat_map(|n| node_cidrs(n))
            .filter_map(|c| self.set.index_of(&c))
            .collect();
        used.extend(self.pending.values().copied());
        used
    }

    /// Forgets pending allocations the store has caught up with.
    fn settle(&mut self, nodes: &Store<Node>) {
        self.pending.retain(|name, _| {
            nodes
                .get(&ObjectRef::new(name))
                .is_some_and(|n| node_cidrs(&n).is_empty())
        });
    }

    fn next_free(&self, nodes: &Store<Node>) -> Option<u32> {
        let used = self.used(nodes);
        (0..self.set.len()).find(|i| !used.contains(i))
    }
}

/// Allocates a range to node `name` if it has none.
async fn sync_node(
    ctx: &Context,
    nodes: &Store<Node>,
    alloc: &mut Allocator,
    recorder: &EventRecorder,
    name: &str,
) -> Result<(), ControllerError> {
    alloc.settle(nodes);
    let api: Api<Node> = Api::all(ctx.client.clone());
    // the API's copy decides, not the watch cache: a cache that lags behind (or misses the
    // node) must neither hold an allocation back nor make every write a conflict
    let Some(node) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !node_cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
        alloc.reported.remove(name);
        return Ok(());
    }
    if alloc.pending.contains_key(name) {
        return Ok(());
    }
    let Some(index) = alloc.next_free(nodes) else {
        if alloc.reported.insert(name.to_string()) {
            tracing::warn!(node = name, "no pod cidr left for node");
            let r = node.object_ref(&());
            if let Err(e) = recorder
                .record(
                    &r,
                    EventType::Normal,
                    "CIDRNotAvailable",
                    &format!("Node {name} status is now: CIDRNotAvailable"),
                )
                .await
            {
                tracing::warn!(error = %e, "recording an event failed");
            }
        }
        return Err(ControllerError::Other(format!(
            "no pod cidr available for node {name}"
        )));
    };
    let cidr = alloc.set.cidr(index);
    let mut next = node.clone();
    let spec = next.spec.get_or_insert_with(Default::default);
    spec.pod_cidr = Some(cidr.clone());
    spec.pod_cidrs = Some(vec![cidr.clone()]);
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => {
            tracing::info!(node = name, cidr = %cidr, "allocated pod cidr");
            alloc.pending.insert(name.to_string(), index);
            alloc.reported.remove(name);
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the node IPAM controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let set = CidrSet::new(&ctx.config.cluster_cidr, ctx.config.node_cidr_mask_size)?;
    let mut alloc = Allocator {
        set,
        pending: HashMap::new(),
        reported: HashSet::new(),
    };
    let recorder = EventRecorder::new(ctx.client.clone(), "cidrAllocator");
    let (nodes, mut events) = reflect(Api::<Node>::all(ctx.client.clone()), Default::default());
    let mut started = false;
    let mut queue: WorkQueue<String> = WorkQueue::default();
    // a safety net besides the watch: nodes still without a range are looked at again
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    loop {
        queue.promote_due();
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Ok(()),
            ev = events.next() => {
                let Some(ev) = ev else {
                    return Err(ControllerError::Other("node watch stream ended".into()));
                };
                if matches!(ev, watcher::Event::InitDone) {
                    started = true;
                }
                let deleted = matches!(ev, watcher::Event::Delete(_));
                if let Some(n) = event_object(&ev) {
                    queue.add(n.name_any());
                }
                if started && (deleted || matches!(ev, watcher::Event::InitDone)) {
                    // a freed range may let a waiting node through
                    for n in nodes.state() {
                        if node_cidrs(&n).is_empty() {
                            queue.add(n.name_any());
                        }
                    }
                }
            }
            _ = std::future::ready(()), if started && queue.has_ready() => {
                let Some(name) = queue.pop() else { continue };
                match sync_node(&ctx, &nodes, &mut alloc, &recorder, &name).await {
                    Ok(()) => queue.forget(&name),
                    Err(ControllerError::Other(_)) => {
                        // exhausted: retried when a node goes away, and slowly meanwhile
                        queue.add_after(name, Duration::from_secs(30));
                    }
                    Err(e) => {
                        if !matches!(&e, ControllerError::Kube(k) if is_conflict(k)) {
                            tracing::warn!(node = %name, error = %e, "allocating a pod cidr failed");
                        }
                        queue.retry(name);
                    }
                }
            }
            _ = resync.tick(), if started => {
                match Api::<Node>::all(ctx.client.clone()).list(&Default::default()).await {
                    Ok(list) => {
                        for n in list.items.iter().filter(|n| node_cidrs(n).is_empty()) {
                            queue.add(n.name_any());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "listing nodes for the pod cidr resync failed"),
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
        }
    }
}

/// How often nodes without a pod range are listed from the API, whatever the watch says.
const RESYNC_EVERY: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::eventually;
    use k8s_openapi::api::core::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::{DeleteParams, ListParams};
    use mini_testenv::TestEnv;
    use tokio_util::sync::CancellationToken;

    fn start(env: &TestEnv, cidr: &str) -> CancellationToken {
        let token = CancellationToken::new();
        let ctx = Arc::new(Context {
            client: env.controllers_client(),
            config: crate::ControllerConfig {
                cluster_cidr: cidr.into(),
                ..Default::default()
            },
            shutdown: token.clone(),
        });
        tokio::spawn(run(ctx));
        token
    }

    async fn create_node(api: &Api<Node>, name: &str) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &node).await.unwrap();
    }

    async fn cidr_of(api: &Api<Node>, name: &str) -> String {
        eventually(&format!("a pod cidr on {name}"), || async {
            let n = api.get(name).await.unwrap();
            let spec = n.spec.unwrap_or_default();
            let cidr = spec.pod_cidr?;
            assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
            Some(cidr)
        })
        .await
    }

    #[test]
    fn cidr_set_maps_indices_to_ranges_and_back() {
        let set = CidrSet::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(set.len(), 256);
        assert_eq!(set.cidr(0), "10.42.0.0/24");
        assert_eq!(set.cidr(255), "10.42.255.0/24");
        assert_eq!(set.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(set.index_of("10.43.7.0/24"), None);
        assert_eq!(set.index_of("10.42.7.0/25"), None);
        assert!(CidrSet::new("10.42.0.0/16", 8).is_err());
        assert!(CidrSet::new("fd00::/48", 64).is_err());
    }

    #[tokio::test]
    async fn nodes_get_distinct_ranges_across_restart_and_freed_range_is_reused() {
        let env = TestEnv::start().await;
        let api: Api<Node> = Api::all(env.admin_client());
        let token = start(&env, "10.42.0.0/16");
        for n in ["n1", "n2", "n3"] {
            create_node(&api, n).await;
        }
        let mut cidrs = Vec::new();
        for n in ["n1", "n2", "n3"] {
            cidrs.push(cidr_of(&api, n).await);
        }
        let mut sorted = cidrs.clone();
        sorted.sort();
        assert_eq!(sorted, ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]);

        // a restarted controller rebuilds its allocations from the nodes
        token.cancel();
        let token = start(&env, "10.42.0.0/16");
        create_node(&api, "n4").await;
        assert_eq!(cidr_of(&api, "n4").await, "10.42.3.0/24");

        // a deleted node's range is handed out again
        let freed = cidrs[1].clone();
        api.delete("n2", &DeleteParams::default()).await.unwrap();
        eventually("n2 gone", || async {
            api.get_opt("n2").await.unwrap().is_none().then_some(())
        })
        .await;
        create_node(&api, "n5").await;
        assert_eq!(cidr_of(&api, "n5").await, freed);
        token.cancel();
    }

    #[tokio::test]
    async fn exhausted_range_records_cidr_not_available() {
        let env = TestEnv::start().await;
        let api: Api<Node> = Api::all(env.admin_client());
        // a /23 holds two /24s
        let token = start(&env, "10.50.0.0/23");
        for n in ["a", "b", "c"] {
            create_node(&api, n).await;
        }
        let waiting = eventually("two nodes allocated", || async {
            let mut without = Vec::new();
            for n in ["a", "b", "c"] {
                if api
                    .get(n)
                    .await
                    .unwrap()
                    .spec
                    .unwrap_or_default()
                    .pod_cidr
                    .is_none()
                {
                    without.push(n);
                }
            }
            (without.len() == 1).then(|| without[0])
        })
        .await;
        let events: Api<Event> = Api::namespaced(env.admin_client(), "default");
        eventually("a CIDRNotAvailable event", || async {
            let list = events.list(&ListParams::default()).await.unwrap();
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CIDRNotAvailable")
                        && e.involved_object.name.as_deref() == Some(waiting)
                })
                .then_some(())
        })
        .await;
        // freeing one lets the waiting node through
        let other = ["a", "b", "c"]
            .into_iter()
            .find(|n| *n != waiting)
            .unwrap_or("a");
        let freed = cidr_of(&api, other).await;
        api.delete(other, &DeleteParams::default()).await.unwrap();
        assert_eq!(cidr_of(&api, waiting).await, freed);
        token.cancel();
    }
}
