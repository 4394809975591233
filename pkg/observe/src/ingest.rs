//! Ingestion from the nodes: sample batches into the time-series store and log batches into the
//! log store, each accepted only from the node it names (or an administrator), with the node's
//! labels set by the server so one node cannot write another's figures. A stored batch goes on
//! to the other servers ([`crate::replicate`]); a replica from one of them is stored the same way.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use k8s_openapi::api::core::v1::Event;
use kube::api::PostParams;
use mini_apiserver::{ApiServer, Body};
use mini_logship::wire::LogBatch;
use mini_nodestats::wire::SampleBatch;
use mini_rbac::UserInfo;
use serde_json::json;

use crate::replicate::Kind;
use crate::route::{json_response, status_response};
use crate::Observe;

/// Points stamped further ahead than this (a node whose clock runs fast) are refused: the
/// metrics store measures retention from its newest point.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// At most one "log storage full" event per this long.
const FULL_EVENT_EVERY: Duration = Duration::from_secs(60);

/// Whether `user` may post figures or logs for `node`: the node itself (its client
/// certificate, `system:node:<name>` in `system:nodes`) or an administrator.
pub(crate) fn may_ingest_for(user: &UserInfo, node: &str) -> bool {
    let is = |group: &str| user.groups.iter().any(|g| g == group);
    if is("system:masters") {
        return true;
    }
    is("system:nodes") && user.name.strip_prefix("system:node:") == Some(node)
}

fn refuse_node(user: &UserInfo, node: &str) -> Response<Body> {
    status_response(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{} may not send figures or logs for node {node:?}: only that node's own credentials may",
            user.name
        ),
    )
}

/// Sets `node` and `instance` to the posting node.
fn with_node(mut labels: BTreeMap<String, String>, node: &str) -> BTreeMap<String, String> {
    labels.insert("node".to_string(), node.to_string());
    labels.insert("instance".to_string(), node.to_string());
    labels
}

pub(crate) async fn samples(
    observe: &Arc<Observe>,
    user: &UserInfo,
    body: Bytes,
    replica: bool,
) -> Response<Body> {
    let batch: SampleBatch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the sample batch is not valid JSON: {e}"),
            )
        }
    };
    if batch.node.is_empty() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the sample batch names no node",
        );
    }
    if !may_ingest_for(user, &batch.node) {
        return refuse_node(user, &batch.node);
    }
    let mut refused = 0usize;
    let mut future = 0usize;
    let latest = chrono::Utc::now().timestamp_millis() + MAX_FUTURE_MS;
    let series: Vec<mini_tsdb::SeriesPoints> = batch
        .series
        .into_iter()
        .filter(|s| {
            let named = s.labels.get("__name__").is_some_and(|n| !n.is_empty());
            refused += usize::from(!named);
            named
        })
        .map(|mut s| {
            let before = s.samples.len();
            s.samples.retain(|(t, _)| *t <= latest);
            future += before - s.samples.len();
            (with_node(s.labels, &batch.node), s.samples)
        })
        .collect();
    if future > 0 {
        tracing::warn!(node = %batch.node, points = future, "refused sample points stamped more than 5 minutes ahead; check the node's clock");
    }
    let points: usize = series.iter().map(|(_, p)| p.len()).sum();
    let tsdb = observe.tsdb.clone();
    let count = series.len();
    let appended = tokio::task::spawn_blocking(move || tsdb.append(&series)).await;
    match appended {
        Ok(Ok(_)) => {
            observe
                .stats
                .samples
                .fetch_add(points as u64, Ordering::Relaxed);
            observe.replicated(Kind::Samples, body, replica);
            json_response(
                StatusCode::OK,
                &json!({"series": count, "samples": points, "refusedSeries": refused, "refusedFuturePoints": future}),
            )
        }
        Ok(Err(e)) => {
            observe.stats.sample_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %batch.node, error = %e, "storing a sample batch failed");
            status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("storing the samples failed: {e}"),
            )
        }
        Err(e) => status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("storing the samples panicked: {e}"),
        ),
    }
}

pub(crate) async fn logs(
    observe: &Arc<Observe>,
    user: &UserInfo,
    body: Bytes,
    replica: bool,
) -> Response<Body> {
    let mut batch: LogBatch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the log batch is not valid JSON: {e}"),
            )
        }
    };
    if batch.node.is_empty() {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the log batch names no node",
        );
    }
    if !may_ingest_for(user, &batch.node) {
        return refuse_node(user, &batch.node);
    }
    for stream in &mut batch.streams {
        stream.labels.insert("node".to_string(), batch.node.clone());
    }
    let lines: usize = batch.streams.iter().map(|s| s.entries.len()).sum();
    let store = observe.logs.clone();
    let node = batch.node.clone();
    let ingested = tokio::task::spawn_blocking(move || store.ingest(&batch)).await;
    match ingested {
        Ok(Ok(_)) => {
            observe
                .stats
                .log_lines
                .fetch_add(lines as u64, Ordering::Relaxed);
            observe.replicated(Kind::Logs, body, replica);
            json_response(StatusCode::OK, &json!({"lines": lines}))
        }
        Ok(Err(e)) if matches!(e, mini_logstore::LogStoreError::Full) => {
            observe
                .stats
                .log_batches_refused
                .fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "the log store is full ({e}); node {node} keeps its lines and retries; free disk space or lower the log retention"
            );
            observe.events.report(&observe.api, &node, &message);
            status_response(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                &message,
            )
        }
        Ok(Err(e)) => {
            observe.stats.log_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%node, error = %e, "storing a log batch failed");
            status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("storing the log lines failed: {e}"),
            )
        }
        Err(e) => status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("storing the log lines panicked: {e}"),
        ),
    }
}

/// Warning events for a full log store, at most one per [`FULL_EVENT_EVERY`].
#[derive(Default)]
pub(crate) struct FullDiskEvents {
    last: Mutex<Option<Instant>>,
}

impl FullDiskEvents {
    pub(crate) fn report(&self, api: &ApiServer, node: &str, message: &str) {
        {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < FULL_EVENT_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(node, "{message}");
        let client = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "mini-log-store-full-", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node},
            "reason": "LogStorageFull",
            "message": message,
            "type": "Warning",
            "source": {"component": "mini-logstore"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        tokio::spawn(async move {
            let events: kube::Api<Event> = kube::Api::namespaced(client, "default");
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::warn!(error = %e, "recording the log-store-full event failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn may_ingest_for_own_node_only() {
        let node = user("system:node:a", &["system:nodes", "system:authenticated"]);
        assert!(may_ingest_for(&node, "a"));
        assert!(!may_ingest_for(&node, "b"));
    }

    #[test]
    fn may_ingest_for_admin_any_node() {
        assert!(may_ingest_for(&user("admin", &["system:masters"]), "x"));
    }

    #[test]
    fn may_ingest_for_plain_user_refused() {
        let u = user("system:node:a", &["system:authenticated"]);
        assert!(!may_ingest_for(&u, "a"), "a name alone is not a node");
        assert!(!may_ingest_for(&user("alice", &["dev"]), "a"));
    }

    #[test]
    fn with_node_overrides_claimed_node_labels() {
        let labels = BTreeMap::from([
            ("node".to_string(), "other".to_string()),
            ("__name__".to_string(), "node_load1".to_string()),
        ]);
        let labels = with_node(labels, "a");
        assert_eq!(labels["node"], "a");
        assert_eq!(labels["instance"], "a");
    }
}
