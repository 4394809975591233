//! The `IPPool` and `IPAllocation` CustomResourceDefinitions, applied by the server at start
//! (server-side apply, field manager `mini`) and waited for until Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use crate::types::GROUP;
use crate::{api_err, IpPoolError};

fn string() -> Value {
    json!({"type": "string"})
}

/// The IPPool CRD.
pub fn ippool_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("ippools.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"plural": "ippools", "singular": "ippool", "kind": "IPPool", "listKind": "IPPoolList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"},
                    {"name": "Allocated", "type": "integer", "jsonPath": ".status.allocated"},
                    {"name": "Size", "type": "integer", "jsonPath": ".status.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["cidr"],
                            "properties": {
                                "cidr": {"type": "string", "description": "the pool's IPv4 CIDR; must not overlap the cluster CIDR, the service CIDR or another pool"},
                                "nodeSelector": {"type": "object", "additionalProperties": string(), "description": "only nodes with these labels run the pool's pods"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "size": {"type": "integer"},
                                "allocated": {"type": "integer"},
                                "conditions": {"type": "array", "items": {
                                    "type": "object",
                                    "properties": {"type": string(), "status": string(), "reason": string(), "message": string()},
                                }},
                            },
                        },
                    },
                }},
            }],
        },
    })
}

/// The IPAllocation CRD.
pub fn ipallocation_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("ipallocations.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"plural": "ipallocations", "singular": "ipallocation", "kind": "IPAllocation", "listKind": "IPAllocationList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [
                    {"name": "Address", "type": "string", "jsonPath": ".spec.address"},
                    {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
                    {"name": "Namespace", "type": "string", "jsonPath": ".spec.owner.namespace"},
                    {"name": "Owner", "type": "string", "jsonPath": ".spec.owner.name"},
                    {"name": "Node", "type": "string", "jsonPath": ".spec.node"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["pool", "address", "kind", "owner"],
                            "properties": {
                                "pool": string(),
                                "address": string(),
                                "kind": {"type": "string", "enum": ["Pod", "StatefulSet"]},
                                "owner": {"type": "object", "properties": {"namespace": string(), "name": string(), "uid": string()}},
                                "statefulSet": string(),
                                "node": string(),
                            },
                        },
                    },
                }},
            }],
        },
    })
}

/// Whether the kind of the CRD `name` can be listed.
async fn served(client: &kube::Client, name: &str) -> bool {
    let params = kube::api::ListParams::default().limit(1);
    if name.starts_with("ippools.") {
        Api::<crate::IpPool>::all(client.clone())
            .list(&params)
            .await
            .is_ok()
    } else {
        Api::<crate::IpAllocation>::all(client.clone())
            .list(&params)
            .await
            .is_ok()
    }
}

/// Applies both CRDs and waits until the API server serves them.
pub async fn ensure(client: &kube::Client) -> Result<(), IpPoolError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("mini").force();
    for crd in [ippool_crd(), ipallocation_crd()] {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(api_err(format!("applying the CRD {name}")))?;
        let mut waited = Duration::ZERO;
        loop {
            let established = api
                .get_opt(&name)
                .await
                .map_err(api_err(format!("reading the CRD {name}")))?
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            // (a CRD created by apply may lack the status conditions: being served is enough)
            if established || served(client, &name).await {
                break;
            }
            if waited > Duration::from_secs(30) {
                return Err(IpPoolError::NotEstablished(name));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            waited += Duration::from_millis(200);
        }
    }
    Ok(())
}
