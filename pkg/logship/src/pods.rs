//! Pod labels for the log streams: a pod reflector of this node (field selector
//! `spec.nodeName=<node>`), read through the [`PodLabels`] trait.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// The labels of this node's pods by pod UID.
pub trait PodLabels: Send + Sync {
    fn snapshot(&self) -> HashMap<String, BTreeMap<String, String>>;
}

/// [`PodLabels`] from a reflector store.
#[derive(Clone)]
pub struct PodStore(pub Store<Pod>);

impl PodLabels for PodStore {
    fn snapshot(&self) -> HashMap<String, BTreeMap<String, String>> {
        self.0
            .state()
            .iter()
            .filter_map(|p| {
                let uid = p.metadata.uid.clone()?;
                Some((uid, p.metadata.labels.clone().unwrap_or_default()))
            })
            .collect()
    }
}

/// A store of this node's pods and the future that keeps it filled (run it as a task).
pub fn watch_node_pods(
    client: kube::Client,
    node: &str,
) -> (
    PodStore,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (store, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector(writer, watcher(Api::<Pod>::all(client), config)).default_backoff();
    let driver = async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "pod watch for log labels failed; backing off");
            }
        }
    };
    (PodStore(store), driver)
}

/// Fixed labels, for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct StaticPodLabels(pub HashMap<String, BTreeMap<String, String>>);

impl PodLabels for StaticPodLabels {
    fn snapshot(&self) -> HashMap<String, BTreeMap<String, String>> {
        self.0.clone()
    }
}
