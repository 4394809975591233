//! Static pod IPs: a pod asking for an address of an `IPPool` (`ipam.mini.dev/pool`, or an
//! `ipam.mini.dev/address` inside a pool) may only run on nodes matching the pool's
//! `nodeSelector`. The pools are watched; their selectors are folded into the pod's nodeSelector
//! when its `PodInfo` is built, so NodeAffinity filters on them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use mini_ippool::{IpPool, ADDRESS_ANNOTATION, POOL_ANNOTATION};
use mini_sys::netlink::Ipv4Net;
use tokio_util::sync::CancellationToken;

/// A pool's CIDR (when it parses) and node selector.
type PoolSelector = (Option<Ipv4Net>, BTreeMap<String, String>);

/// Pool name → its selector, for the pools that have a node selector.
static POOLS: RwLock<BTreeMap<String, PoolSelector>> = RwLock::new(BTreeMap::new());

fn remember(pool: &IpPool) {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let mut pools = POOLS.write().unwrap_or_else(|e| e.into_inner());
    match &pool.spec.node_selector {
        Some(selector) if !selector.is_empty() => {
            let cidr = pool.spec.cidr.trim().parse().ok();
            pools.insert(name, (cidr, selector.clone()));
        }
        _ => {
            pools.remove(&name);
        }
    }
}

/// The node labels the pod's pool requires (empty when it asks for no pool or the pool has
/// no selector).
pub(crate) fn pool_node_selector(pod: &Pod) -> Vec<(String, String)> {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let pools = POOLS.read().unwrap_or_else(|e| e.into_inner());
    let by_name = annotations.get(POOL_ANNOTATION).and_then(|p| pools.get(p));
    let by_address = || {
        let ip: Ipv4Addr = annotations.get(ADDRESS_ANNOTATION)?.trim().parse().ok()?;
        pools
            .values()
            .find(|(cidr, _)| cidr.is_some_and(|c| c.contains(ip)))
    };
    by_name
        .or_else(by_address)
        .map(|(_, selector)| {
            selector
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps the pools' node selectors until `stop` (the CRD may appear after the scheduler
/// starts: the watch retries with back-off).
pub(crate) async fn watch_pools(api: Api<IpPool>, stop: CancellationToken) {
    let mut stream =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Vec<IpPool> = Vec::new();
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        match ev {
            Ok(Event::Apply(pool)) => remember(&pool),
            Ok(Event::Delete(pool)) => {
                let name = pool.metadata.name.unwrap_or_default();
                POOLS
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
            }
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pool)) => listing.push(pool),
            Ok(Event::InitDone) => {
                POOLS.write().unwrap_or_else(|e| e.into_inner()).clear();
                for pool in listing.drain(..) {
                    remember(&pool);
                }
            }
            Err(e) => tracing::debug!(error = %e, "ip pool watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn pool_node_selector_by_pool_name_or_address() {
        let mut pool = IpPool::default();
        pool.metadata.name = Some("sched-test-rack1".into());
        pool.spec.cidr = "10.97.3.0/24".into();
        pool.spec.node_selector = Some(BTreeMap::from([("rack".into(), "r1".into())]));
        remember(&pool);
        let pod = |k: &str, v: &str| Pod {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let want = vec![("rack".to_string(), "r1".to_string())];
        assert_eq!(
            pool_node_selector(&pod(POOL_ANNOTATION, "sched-test-rack1")),
            want
        );
        assert_eq!(
            pool_node_selector(&pod(ADDRESS_ANNOTATION, "10.97.3.9")),
            want
        );
        assert!(pool_node_selector(&pod(ADDRESS_ANNOTATION, "10.97.4.9")).is_empty());
        assert!(pool_node_selector(&pod(POOL_ANNOTATION, "other")).is_empty());
    }
}
