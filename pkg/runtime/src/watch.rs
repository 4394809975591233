//! Watch helpers for the agents' table programmers (proxy, network policy, ingress, IP pool
//! routes): a reflector stream driven to its end, waking the sync loop on every event.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// A store of every object `api` lists, kept by a task on `tasks` (watch with the default
/// config and backoff) that pokes `changed` on every event.
pub fn spawn_store<K>(
    tasks: &mut JoinSet<()>,
    what: &'static str,
    api: Api<K>,
    changed: &Arc<Notify>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tasks.spawn(notify_on_events(what, stream, changed.clone()));
    reader
}

/// Drives one reflector stream, poking `changed` on every event; errors are logged at debug
/// (the stream's own backoff retries them).
pub async fn notify_on_events<K, S>(what: &'static str, stream: S, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::debug!(watch = what, error = %e, "watch error; backing off"),
        }
    }
}
