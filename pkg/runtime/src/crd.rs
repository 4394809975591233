//! Waiting for a CustomResourceDefinition mini applied itself (the Addon and IP pool kinds) to be
//! Established before its kind is used.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

/// Why a CRD could not be waited for.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("reading CustomResourceDefinition {name}: {message}")]
    Read { name: String, message: String },
    #[error("CustomResourceDefinition {name} is not Established after {secs}s")]
    NotEstablished { name: String, secs: u64 },
}

/// Polls the CRD `name` every 250 ms until its `Established` condition is `True`, for at most
/// `timeout`.
pub async fn wait_established(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<(), CrdError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let established = crds
            .get_opt(name)
            .await
            .map_err(|e| CrdError::Read {
                name: name.to_string(),
                message: match e {
                    kube::Error::Api(status) if !status.message.is_empty() => status.message,
                    other => other.to_string(),
                },
            })?
            .and_then(|crd| crd.status)
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CrdError::NotEstablished {
                name: name.to_string(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
