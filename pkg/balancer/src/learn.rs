//! Learning the servers: the `default/kubernetes` Endpoints list every live server (each server
//! keeps it current, `mini-peers`), read through the balancer itself every period.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use kube::Api;
use tokio_util::sync::CancellationToken;

use crate::Balancer;

/// The `ip:port` of every address of `endpoints`, in order, without duplicates.
pub fn addresses_of(endpoints: &Endpoints) -> Vec<String> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<i32> = subset
            .ports
            .iter()
            .flatten()
            .filter(|p| p.name.as_deref().is_none_or(|n| n == "https"))
            .map(|p| p.port)
            .collect();
        for address in subset.addresses.iter().flatten() {
            for port in &ports {
                let entry = if address.ip.contains(':') {
                    format!("[{}]:{port}", address.ip)
                } else {
                    format!("{}:{port}", address.ip)
                };
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
    }
    out
}

/// Reads the `kubernetes` Endpoints every `period` and hands their addresses to `balancer`
/// until `stop`. An empty or unreadable list leaves the known servers as they are.
pub async fn learn(
    client: kube::Client,
    balancer: Arc<Balancer>,
    period: Duration,
    stop: CancellationToken,
) {
    let api: Api<Endpoints> = Api::namespaced(client, "default");
    loop {
        match api.get_opt("kubernetes").await {
            Ok(Some(endpoints)) => {
                let learned = addresses_of(&endpoints);
                if !learned.is_empty() {
                    balancer.set_servers(&learned);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading the kubernetes endpoints failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}
