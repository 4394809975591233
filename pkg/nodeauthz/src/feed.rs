//! Keeping the graph current from the store: list each followed resource, then watch it from
//! the listing's revision; a closed or compacted watch relists. Also the direct look-up that
//! re-checks a denial against the store, so a graph a few events behind never causes a
//! spurious 403 (a kubelet asking for a secret right after its pod was bound).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mini_store::{Store, StoreError, WatchEvent};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::authorizer::GraphQuery;
use crate::graph::{Graph, Kind, Resource};

fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

async fn list_values(store: &dyn Store, prefix: &str) -> Result<(Vec<Value>, u64), StoreError> {
    let mut out = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = store.list(prefix, start.as_deref(), 0).await?;
        out.extend(page.items.iter().filter_map(|kv| parse(&kv.value)));
        if !page.more || page.items.is_empty() {
            return Ok((out, page.revision));
        }
        start = page.items.last().map(|kv| kv.key.clone());
    }
}

/// Follows `resource` into `graph` until `stop`.
pub async fn follow(
    store: Arc<dyn Store>,
    graph: Arc<RwLock<Graph>>,
    resource: Resource,
    stop: CancellationToken,
) {
    loop {
        let listed = tokio::select! {
            _ = stop.cancelled() => return,
            listed = list_values(store.as_ref(), resource.prefix()) => listed,
        };
        let (objects, revision) = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(prefix = resource.prefix(), error = %e, "node authorizer: listing failed; retrying");
                if pause(&stop).await {
                    return;
                }
                continue;
            }
        };
        {
            let mut g = graph.write().expect("node graph lock poisoned");
            g.clear(resource);
            g.load(resource, &objects);
        }
        let mut events = match store.watch(resource.prefix(), revision) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(prefix = resource.prefix(), error = %e, "node authorizer: watching failed; relisting");
                if pause(&stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            };
            let Some(event) = event else { break };
            let Some(key) = resource.key_of(event.key()) else {
                continue;
            };
            let obj = match &event {
                WatchEvent::Put { kv, .. } => parse(&kv.value),
                WatchEvent::Delete(_) => None,
            };
            graph
                .write()
                .expect("node graph lock poisoned")
                .apply(resource, key, obj.as_ref());
        }
        tracing::debug!(
            prefix = resource.prefix(),
            "node authorizer: watch closed; relisting"
        );
    }
}

/// Waits a moment before retrying; true when stopped meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
    }
}

async fn get_value(store: &dyn Store, key: &str) -> Result<Option<Value>, StoreError> {
    Ok(store.get(key).await?.and_then(|kv| parse(&kv.value)))
}

/// A graph of just what `query` depends on, read from the store now: the pods (and claims,
/// their volumes, ingresses and classes as needed) of the one namespace involved.
pub async fn graph_for(store: &dyn Store, query: &GraphQuery) -> Result<Graph, StoreError> {
    let mut graph = Graph::default();
    let (namespace, volume, with_volumes, tls) = match query {
        GraphQuery::Object {
            kind,
            namespace,
            tls,
            ..
        } => (namespace.clone(), None, *kind == Kind::Secret, *tls),
        GraphQuery::Volume { name } => {
            let key = format!("{}{name}", Resource::Volumes.prefix());
            let Some(pv) = get_value(store, &key).await? else {
                return Ok(graph);
            };
            let Some(ns) = pv["spec"]["claimRef"]["namespace"].as_str() else {
                return Ok(graph);
            };
            (ns.to_string(), Some(pv), true, false)
        }
    };
    let in_namespace = |r: Resource| format!("{}{namespace}/", r.prefix());
    let (pods, _) = list_values(store, &in_namespace(Resource::Pods)).await?;
    graph.load(Resource::Pods, &pods);
    if with_volumes {
        let (claims, _) = list_values(store, &in_namespace(Resource::Claims)).await?;
        graph.load(Resource::Claims, &claims);
        match volume {
            Some(pv) => graph.load(Resource::Volumes, &[pv]),
            None => {
                for claim in &claims {
                    if let Some(pv) = claim["spec"]["volumeName"].as_str() {
                        let key = format!("{}{pv}", Resource::Volumes.prefix());
                        if let Some(pv) = get_value(store, &key).await? {
                            graph.load(Resource::Volumes, &[pv]);
                        }
                    }
                }
            }
        }
    }
    if tls {
        let (ingresses, _) = list_values(store, &in_namespace(Resource::Ingresses)).await?;
        graph.load(Resource::Ingresses, &ingresses);
        let (classes, _) = list_values(store, Resource::IngressClasses.prefix()).await?;
        graph.load(Resource::IngressClasses, &classes);
    }
    Ok(graph)
}
