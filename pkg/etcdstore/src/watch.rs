//! The one etcd watch that feeds the watch cache: reconnects from the last delivered revision,
//! and starts the cache over (closing every watcher) when etcd compacted past it.

use std::sync::Arc;
use std::time::Duration;

use mini_store::{Deleted, KeyValue, Revision, WatchEvent};

use crate::client::Etcd;
use crate::convert::{from_etcd, header_revision, to_i64, to_revision};
use crate::pb::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use crate::pb::mvccpb::{self, event::EventType};
use crate::{describe_status, read_revision, Shared};

/// Pause between attempts while etcd cannot be watched.
const RETRY: Duration = Duration::from_secs(1);

/// Why one etcd watch stream ended.
enum Ended {
    /// etcd no longer has the events after the last delivered revision.
    Compacted,
    /// The connection failed or the stream ended; reconnect from where it stopped.
    Broken(String),
}

/// Watches every key from `start + 1` on, forever (until the task is aborted).
pub(crate) async fn run(client: Etcd, shared: Arc<Shared>, start: Revision, timeout: Duration) {
    let mut next = start + 1;
    let mut failing = false;
    loop {
        match watch_once(&client, &shared, &mut next, &mut failing).await {
            Ended::Broken(reason) => {
                if !failing {
                    tracing::warn!(%reason, next, "the etcd watch broke; reconnecting");
                    failing = true;
                }
            }
            Ended::Compacted => match read_revision(&client, timeout).await {
                Ok(current) => {
                    tracing::warn!(
                        missed_from = next,
                        current,
                        "etcd compacted events the watch cache had not received; every watcher lists again"
                    );
                    let mut state = shared.lock();
                    state.hub.reset(current);
                    state.seen = current;
                    shared.observe(current);
                    next = current + 1;
                    continue;
                }
                Err(reason) => {
                    tracing::debug!(%reason, "reading etcd's revision after a compaction failed");
                }
            },
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Runs one watch stream until it ends; publishes its events and advances `next`.
async fn watch_once(
    client: &Etcd,
    shared: &Shared,
    next: &mut Revision,
    failing: &mut bool,
) -> Ended {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                // every key: from "\0" to the end of the key space
                key: vec![0],
                range_end: vec![0],
                start_revision: to_i64(*next),
                progress_notify: true,
                prev_kv: true,
                ..WatchCreateRequest::default()
            },
        )),
    };
    // the sender keeps the request side of the stream open
    let (_requests, mut stream) = match client.watch(create).await {
        Ok(opened) => opened,
        Err(status) => return Ended::Broken(describe_status(&status)),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ended::Broken("etcd closed the watch stream".to_string()),
            Err(status) => return Ended::Broken(describe_status(&status)),
        };
        if response.canceled {
            if response.compact_revision > 0 {
                return Ended::Compacted;
            }
            return Ended::Broken(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason
            ));
        }
        if *failing {
            tracing::info!(next, "the etcd watch is back");
            *failing = false;
        }
        let mut state = shared.lock();
        for event in &response.events {
            let Some(converted) = convert(event) else {
                continue;
            };
            let revision = converted.revision();
            state.hub.publish(converted);
            state.seen = state.seen.max(revision);
            *next = (*next).max(revision + 1);
        }
        // a progress notification: every event up to the header's revision was delivered
        if response.events.is_empty() && !response.created {
            let revision = header_revision(response.header.as_ref());
            state.seen = state.seen.max(revision);
            *next = (*next).max(revision + 1);
        }
        shared.observe(state.seen);
    }
}

/// An etcd event as a store event; `None` for keys that are not UTF-8 (not the store's).
fn convert(event: &mvccpb::Event) -> Option<WatchEvent> {
    let kv = event.kv.as_ref()?;
    let prev = event.prev_kv.as_ref().and_then(|prev| from_etcd(prev).ok());
    match EventType::try_from(event.r#type).ok()? {
        EventType::Put => {
            let kv = from_etcd(kv).ok()?;
            let prev = prev.filter(|_| kv.create_revision != kv.mod_revision);
            Some(WatchEvent::Put { kv, prev })
        }
        EventType::Delete => {
            let key = String::from_utf8(kv.key.clone()).ok()?;
            let revision = to_revision(kv.mod_revision);
            // etcd no longer had the previous value (compacted): keep the key at least
            let prev = prev.unwrap_or(KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
            });
            Some(WatchEvent::Delete(Deleted { prev, revision }))
        }
    }
}
