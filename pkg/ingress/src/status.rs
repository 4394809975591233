//! The server side of the ingress: `status.loadBalancer.ingress` of every mini-class Ingress
//! holds the nodes' InternalIP addresses (every node's proxy serves every Ingress).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Patch, PatchParams};
use kube::Api;
use mini_runtime::watch::spawn_store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::routes::MiniClasses;
use crate::DEBOUNCE;

/// How often every Ingress is checked again even without a change (failed writes are retried).
const RESYNC: Duration = Duration::from_secs(30);

/// The sorted InternalIP addresses of `nodes`.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let ips: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .flat_map(|n| {
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    ips.into_iter().collect()
}

/// The addresses `status.loadBalancer.ingress` holds now.
pub fn current_addresses(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .iter()
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// The status patches to send: `(namespace, name, addresses)` for each served Ingress whose
/// status differs from `addresses`.
pub fn pending(
    classes: &MiniClasses,
    ingresses: &[Arc<Ingress>],
    addresses: &[String],
) -> Vec<(String, String, Vec<String>)> {
    ingresses
        .iter()
        .filter(|i| classes.serves(i) && i.metadata.deletion_timestamp.is_none())
        .filter(|i| current_addresses(i) != addresses)
        .filter_map(|i| {
            Some((
                i.metadata.namespace.clone()?,
                i.metadata.name.clone()?,
                addresses.to_vec(),
            ))
        })
        .collect()
}

/// Keeps the status of mini-class Ingresses in step with the nodes until `shutdown`.
pub async fn run_status(client: kube::Client, shutdown: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let mut watches = tokio::task::JoinSet::new();
    let ingresses = spawn_store(
        &mut watches,
        "ingresses",
        Api::<Ingress>::all(client.clone()),
        &changed,
    );
    let classes = spawn_store(
        &mut watches,
        "ingressclasses",
        Api::<IngressClass>::all(client.clone()),
        &changed,
    );
    let nodes = spawn_store(
        &mut watches,
        "nodes",
        Api::<Node>::all(client.clone()),
        &changed,
    );
    let ready = async {
        let _ = ingresses.wait_until_ready().await;
        let _ = classes.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = ready => {}
    }
    loop {
        let mini = MiniClasses::from_classes(classes.state().iter().map(|c| c.as_ref()));
        let addresses = node_addresses(&nodes.state());
        for (ns, name, ips) in pending(&mini, &ingresses.state(), &addresses) {
            let list: Vec<_> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": list}}});
            let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(ingress = format!("{ns}/{name}"), addresses = ?ips, "ingress status updated")
                }
                Err(e) => {
                    tracing::warn!(ingress = format!("{ns}/{name}"), error = %e, "updating the ingress status failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
    watches.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}
            }))
            .expect("node"),
        )
    }

    fn ingress(name: &str, class: &str, ips: &[&str]) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ingressClassName": class},
                "status": {"loadBalancer": {"ingress": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}}
            }))
            .expect("ingress"),
        )
    }

    #[test]
    fn pending_lists_only_served_ingresses_whose_addresses_differ() {
        let classes = MiniClasses::from_classes(&[serde_json::from_value::<IngressClass>(
            json!({"metadata": {"name": "mini"}, "spec": {"controller": crate::CONTROLLER}}),
        )
        .expect("class")]);
        let addresses = node_addresses(&[node("b", "10.0.0.2"), node("a", "10.0.0.1")]);
        assert_eq!(
            addresses,
            vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()]
        );
        let ings = vec![
            ingress("stale", "mini", &["10.0.0.1"]),
            ingress("fresh", "mini", &["10.0.0.1", "10.0.0.2"]),
            ingress("other", "nginx", &[]),
        ];
        let todo = pending(&classes, &ings, &addresses);
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].1, "stale");
    }
}
