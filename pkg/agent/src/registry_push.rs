//! Pushes the image tarballs this node imported from `<data>/agent/images/` to the cluster
//! registry (with the node's client certificate), so every node can pull them, not just the one
//! they were copied to. Each tarball's content is pushed once ([`PushLedger`]); a failed push
//! is retried on the next round.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::imported::PushLedger;
use crate::join::Credentials;

/// How often the imported tarballs are looked at.
const PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The registry client of this node: the server it joined, the cluster CA, its certificate.
pub fn registry_client(
    config: &AgentConfig,
    creds: &Credentials,
) -> Result<mini_regclient::RegistryClient, mini_regclient::RegClientError> {
    let mut client_config = mini_regclient::ClientConfig::new(config.server_url.clone());
    client_config.ca_pem = Some(creds.ca_pem.clone());
    client_config.client_cert = Some(creds.client.clone());
    mini_regclient::RegistryClient::new(client_config)
}

/// Pushes what the importer imported and the ledger has not seen, until `shutdown`.
pub async fn run(
    config: AgentConfig,
    client: mini_regclient::RegistryClient,
    shutdown: CancellationToken,
) {
    let ledger = PushLedger::open(&config);
    // images are named after the server (`10.0.0.1:6443/default/app:v1`) even when the client
    // reaches it through the agent's load balancer on loopback
    let name_host = config
        .registry_name
        .clone()
        .unwrap_or_else(|| client.host().to_string());
    loop {
        match ledger.to_push(&config) {
            Ok(tarballs) => {
                for tarball in tarballs {
                    match mini_regclient::push_archive(&client, &tarball.path, &name_host).await {
                        Ok(pushed) => {
                            let refs: Vec<String> =
                                pushed.iter().map(|p| p.reference(&name_host)).collect();
                            tracing::info!(file = %tarball.path.display(), images = ?refs, "image tarball pushed to the cluster registry");
                            if let Err(e) = ledger.mark_pushed(&tarball.sha256) {
                                tracing::warn!(error = %e, "recording a pushed tarball failed; it is pushed again later");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(file = %tarball.path.display(), error = %e, "pushing an image tarball to the cluster registry failed; retrying later");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the pushed-images ledger failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PUSH_INTERVAL) => {}
        }
    }
}
