//! `metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, as metrics-server serves them, from
//! the node agents' `/stats/summary` (the kubelet Summary API subset).
//!
//! Every Ready node is scraped on demand through the same TLS as the node proxy; a scrape is
//! reused for [`CACHE_FOR`]. A node that cannot be scraped is left out (and logged); a pod
//! without numbers is omitted from lists and 404 on get, as metrics-server does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mini_api::{meta, ApiError, LabelSelector};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::handlers::{store_error, Ctx};
use crate::nodeproxy::{self, NodeAddress};
use crate::ApiServer;

/// How long one scrape of all nodes is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(10);
/// The window metrics-server reports.
const WINDOW: &str = "10s";
/// How long one node's summary may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Summaries larger than this are refused.
const MAX_SUMMARY_BYTES: usize = 16 << 20;

/// Usage figures of one container, pod or node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub working_set_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    #[serde(default)]
    pub cpu: Option<CpuStats>,
    #[serde(default)]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

/// The kubelet Summary API subset mini's agents serve at `/stats/summary`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// `(cpu, memory, timestamp)` when both figures are present.
fn usage(cpu: Option<&CpuStats>, memory: Option<&MemoryStats>) -> Option<(Value, String)> {
    let cores = cpu?.usage_nano_cores?;
    let bytes = memory?.working_set_bytes?;
    let time = cpu
        .and_then(|c| c.time.clone())
        .or_else(|| memory.and_then(|m| m.time.clone()))
        .unwrap_or_else(meta::now_rfc3339);
    Some((
        json!({"cpu": format!("{cores}n"), "memory": format!("{}Ki", bytes / 1024)}),
        time,
    ))
}

/// One scrape of every reachable Ready node.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// node name → summary
    pub nodes: HashMap<String, Summary>,
}

/// The last scrape and when it was taken; one scrape at a time.
#[derive(Default)]
pub(crate) struct Cache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Scrape>)>>,
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

async fn list_objects(server: &ApiServer, prefix: &str) -> Result<Vec<Value>, ApiError> {
    let page = server
        .inner
        .store
        .list(prefix, None, 0)
        .await
        .map_err(store_error)?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

/// One node's summary.
async fn scrape_node(server: &ApiServer, addr: NodeAddress) -> Result<Summary, String> {
    let req = Request::get("/stats/summary?only_cpu_and_memory=true")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = nodeproxy::send(server, addr, req)
            .await
            .map_err(|e| e.message)?;
        if resp.status() != StatusCode::OK {
            return Err(format!("agent answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_SUMMARY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the summary: {e}"))?
            .to_bytes();
        serde_json::from_slice::<Summary>(&body).map_err(|e| format!("decoding the summary: {e}"))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The current scrape, taken anew when older than [`CACHE_FOR`].
pub(crate) async fn scrape(server: &ApiServer) -> Result<Arc<Scrape>, ApiError> {
    let mut last = server.inner.resource_metrics.last.lock().await;
    if let Some((at, scrape)) = last.as_ref() {
        if at.elapsed() < CACHE_FOR {
            return Ok(scrape.clone());
        }
    }
    let nodes = list_objects(server, "/registry/core/nodes/").await?;
    let jobs = nodes.iter().filter(|n| is_ready(n)).filter_map(|n| {
        let name = meta::name(n).to_string();
        let addr = nodeproxy::node_address(n)?;
        Some(async move { (name, scrape_node(server, addr).await) })
    });
    let mut scrape = Scrape::default();
    for (name, result) in futures::future::join_all(jobs).await {
        match result {
            Ok(summary) => {
                scrape.nodes.insert(name, summary);
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "scraping node resource usage failed")
            }
        }
    }
    let scrape = Arc::new(scrape);
    *last = Some((Instant::now(), scrape.clone()));
    Ok(scrape)
}

fn node_metrics(node: &Value, summary: &Summary) -> Option<Value> {
    let (usage, timestamp) = usage(summary.node.cpu.as_ref(), summary.node.memory.as_ref())?;
    let mut metadata = json!({"name": meta::name(node), "creationTimestamp": meta::now_rfc3339()});
    if let Some(labels) = node["metadata"].get("labels") {
        metadata["labels"] = labels.clone();
    }
    Some(
        json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": metadata, "timestamp": timestamp, "window": WINDOW, "usage": usage}),
    )
}

fn pod_metrics(pod: &Value, stats: &PodStats) -> Option<Value> {
    let mut timestamp = None;
    let mut containers = Vec::new();
    for c in &stats.containers {
        let (usage, time) = usage(c.cpu.as_ref(), c.memory.as_ref())?;
        timestamp.get_or_insert(time);
        containers.push(json!({"name": c.name, "usage": usage}));
    }
    let timestamp = timestamp?;
    let mut metadata = json!({"name": meta::name(pod), "namespace": meta::namespace(pod),
                              "creationTimestamp": meta::now_rfc3339()});
    if let Some(labels) = pod["metadata"].get("labels") {
        metadata["labels"] = labels.clone();
    }
    Some(
        json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": metadata, "timestamp": timestamp, "window": WINDOW,
                "containers": containers}),
    )
}

/// GET and LIST of `nodes` and `pods` in `metrics.k8s.io`.
pub(crate) async fn handle(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let verb = ctx.info.verb.as_str();
    if !matches!(verb, "get" | "list") || ctx.info.subresource.is_some() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let scrape = scrape(ctx.server).await?;
    let nodes_resource = ctx.res.plural == "nodes";
    let mut items: Vec<Value> = Vec::new();
    if nodes_resource {
        let prefix = match verb {
            "get" => format!("/registry/core/nodes/{}", ctx.name()),
            _ => "/registry/core/nodes/".to_string(),
        };
        for node in list_objects(ctx.server, &prefix).await? {
            if verb == "get" && meta::name(&node) != ctx.name() {
                continue;
            }
            if !labels.matches_object(&node) {
                continue;
            }
            if let Some(m) = scrape
                .nodes
                .get(meta::name(&node))
                .and_then(|s| node_metrics(&node, s))
            {
                items.push(m);
            }
        }
    } else {
        let stats: HashMap<(&str, &str), &PodStats> = scrape
            .nodes
            .values()
            .flat_map(|s| &s.pods)
            .map(|p| ((p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str()), p))
            .collect();
        let prefix = match (ctx.namespace(), verb) {
            (Some(ns), "get") => format!("/registry/core/pods/{ns}/{}", ctx.name()),
            (Some(ns), _) => format!("/registry/core/pods/{ns}/"),
            (None, _) => "/registry/core/pods/".to_string(),
        };
        for pod in list_objects(ctx.server, &prefix).await? {
            if verb == "get" && meta::name(&pod) != ctx.name() {
                continue;
            }
            if !labels.matches_object(&pod) {
                continue;
            }
            if let Some(m) = stats
                .get(&(meta::namespace(&pod), meta::name(&pod)))
                .and_then(|s| pod_metrics(&pod, s))
            {
                items.push(m);
            }
        }
    }
    if verb == "get" {
        let Some(item) = items.pop() else {
            return Err(ApiError::not_found(
                "metrics.k8s.io",
                &ctx.res.plural,
                ctx.name(),
            ));
        };
        return Ok(crate::handlers::respond_object(ctx, StatusCode::OK, &item));
    }
    items.sort_by(|a, b| {
        (meta::namespace(a), meta::name(a)).cmp(&(meta::namespace(b), meta::name(b)))
    });
    if crate::table::wants_table(ctx.headers) {
        return Ok(body::json(
            StatusCode::OK,
            &crate::table::table(ctx.res, &items, ctx.query, "", false),
        ));
    }
    Ok(body::json(
        StatusCode::OK,
        &json!({"kind": ctx.res.list_kind(), "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {}, "items": items}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        serde_json::from_value(json!({
            "node": {"nodeName": "n1",
                     "cpu": {"time": "2025-01-01T00:00:00Z", "usageNanoCores": 250000000},
                     "memory": {"time": "2025-01-01T00:00:00Z", "workingSetBytes": 1048576}},
            "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                      "containers": [{"name": "c",
                                      "cpu": {"time": "2025-01-01T00:00:01Z", "usageNanoCores": 1234567},
                                      "memory": {"time": "2025-01-01T00:00:01Z", "workingSetBytes": 10485760}}]},
                     {"podRef": {"name": "starting", "namespace": "default"},
                      "containers": [{"name": "c"}]}]}))
        .unwrap()
    }

    #[test]
    fn node_metrics_formats_usage_like_metrics_server() {
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &summary()).unwrap();
        assert_eq!(m["usage"], json!({"cpu": "250000000n", "memory": "1024Ki"}));
        assert_eq!(m["window"], "10s");
        assert_eq!(m["timestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn pod_metrics_omits_pods_without_numbers() {
        let s = summary();
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}});
        let m = pod_metrics(&pod, &s.pods[0]).unwrap();
        assert_eq!(
            m["containers"],
            json!([{"name": "c", "usage": {"cpu": "1234567n", "memory": "10240Ki"}}])
        );
        assert_eq!(m["metadata"]["namespace"], "default");
        assert!(pod_metrics(&pod, &s.pods[1]).is_none());
    }
}
