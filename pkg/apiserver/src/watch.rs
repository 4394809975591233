//! Watch: newline-delimited JSON events over a chunked response, from the store's watch.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use mini_api::{meta, ApiError, FieldSelector, LabelSelector, ResourceInfo};
use mini_store::{StoreError, WatchEvent};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::body::Body;
use crate::handlers::{list_matching, selectors, Ctx};
use crate::request::Query;
use crate::table;

/// Default lifetime of a watch without `timeoutSeconds`: long, so `kubectl get -w` stays up.
const DEFAULT_WATCH_SECONDS: u64 = 3600;
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Encoder {
    res: ResourceInfo,
    query: Query,
    as_table: bool,
    columns_sent: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.as_table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            let t = table::table_with(
                &self.res,
                std::slice::from_ref(obj),
                &self.query,
                rv,
                !self.columns_sent,
            );
            self.columns_sent = true;
            t
        } else {
            obj.clone()
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut m = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": m});
        self.event("BOOKMARK", &obj)
    }
}

fn matches(labels: &LabelSelector, fields: &FieldSelector, obj: &Value) -> bool {
    labels.matches_object(obj) && fields.matches(obj)
}

pub async fn watch(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (labels, mut fields) = selectors(ctx)?;
    if let Some(name) = &ctx.info.name {
        fields
            .requirements
            .push(mini_api::selector::FieldRequirement {
                field: "metadata.name".into(),
                value: name.clone(),
                negated: false,
            });
    }
    let store = ctx.server.inner.store.clone();
    let rv_param = ctx
        .query
        .get("resourceVersion")
        .unwrap_or_default()
        .to_string();
    let send_initial = match ctx.query.get("sendInitialEvents") {
        Some(v) => v == "true",
        None => rv_param.is_empty() || rv_param == "0",
    };
    let bookmarks = ctx.query.flag("allowWatchBookmarks");
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WATCH_SECONDS);
    let prefix = ctx.res.namespace_prefix(ctx.namespace());
    let mut encoder = Encoder {
        res: ctx.res.clone(),
        query: ctx.query.clone(),
        as_table: table::wants_table(ctx.headers),
        columns_sent: false,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Value> = Vec::new();
    let start_rv = if send_initial {
        let info = crate::request::RequestInfo {
            name: None,
            ..ctx.info.clone()
        };
        let q = Query::parse(Some(""));
        let list_ctx = Ctx {
            info: &info,
            query: &q,
            ..*ctx
        };
        let listed = list_matching(&list_ctx, &labels, &fields).await?;
        for (kv, obj) in listed.items {
            initial.push(match obj {
                Some(o) => o,
                None => meta::from_storage(&kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            });
        }
        listed.revision
    } else {
        rv_param
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}")))?
    };
    let events = match store.watch(&prefix, start_rv) {
        Ok(rx) => Some(rx),
        Err(StoreError::Compacted { requested, oldest }) => {
            let status =
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
                    .to_status();
            let line = encoder.event("ERROR", &status);
            let _ = tx.try_send(line);
            None
        }
        Err(e) => return Err(crate::handlers::store_error(e)),
    };
    let initial_end = send_initial && ctx.query.get("sendInitialEvents") == Some("true");
    let gauge = ctx.server.inner.metrics.watch_started(&ctx.res.plural);
    tokio::spawn(async move {
        let _gauge = gauge;
        for obj in &initial {
            if tx.send(encoder.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if initial_end && bookmarks && tx.send(encoder.bookmark(start_rv, true)).await.is_err() {
            return;
        }
        let Some(mut events) = events else { return };
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        let mut last_rv = start_rv;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(encoder.bookmark(last_rv, false)).await.is_err() { return; }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    let line = match ev {
                        WatchEvent::Put { kv, prev } => {
                            last_rv = kv.mod_revision;
                            let Ok(obj) = meta::from_storage(&kv.value, kv.mod_revision) else { continue };
                            let now_match = matches(&labels, &fields, &obj);
                            let was_match = prev.as_ref().and_then(|p| serde_json::from_slice::<Value>(&p.value).ok()).map(|p| matches(&labels, &fields, &p));
                            match (was_match, now_match) {
                                (None, true) | (Some(false), true) => encoder.event("ADDED", &obj),
                                (Some(true), true) => encoder.event("MODIFIED", &obj),
                                (Some(true), false) => encoder.event("DELETED", &obj),
                                _ => continue,
                            }
                        }
                        WatchEvent::Delete(d) => {
                            last_rv = d.revision;
                            let Ok(obj) = meta::from_storage(&d.prev.value, d.revision) else { continue };
                            if !matches(&labels, &fields, &obj) { continue }
                            encoder.event("DELETED", &obj)
                        }
                    };
                    if tx.send(line).await.is_err() { return; }
                }
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let body = StreamBody::new(stream).boxed_unsync();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}
