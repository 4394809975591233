//! Watch helpers for the agents' table programmers (proxy, network policy, ingress): a
//! reflector stream driven to its end, waking the sync loop on every event.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher;
use tokio::sync::Notify;

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
