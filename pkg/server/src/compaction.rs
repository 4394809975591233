//! Keeping the datastore's disk use bounded while the server runs: at every interval the
//! embedded store gives back the space of deleted and rewritten keys (once its file exceeds
//! twice the live data), and on etcd the history behind the watch window is compacted and the
//! members defragmented.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The store whose space is reclaimed.
pub(crate) enum Reclaimable {
    Sled(Arc<mini_store::SledStore>),
    Etcd(Arc<mini_etcdstore::EtcdStore>),
}

/// Reclaims space every `every` (never when zero) until `shutdown`; failures are logged and
/// retried next time.
pub(crate) async fn run(store: Reclaimable, every: Duration, shutdown: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match &store {
            Reclaimable::Sled(sled) => {
                let sled = Arc::clone(sled);
                match tokio::task::spawn_blocking(move || sled.reclaim_space(false)).await {
                    Ok(Ok(space)) => tracing::debug!(?space, "datastore space checked"),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "giving the datastore's disk space back failed")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "giving the datastore's disk space back failed")
                    }
                }
            }
            Reclaimable::Etcd(etcd) => match etcd.reclaim_space().await {
                Ok(report) => tracing::debug!(?report, "etcd compacted"),
                Err(error) => tracing::warn!(%error, "compacting and defragmenting etcd failed"),
            },
        }
    }
}
