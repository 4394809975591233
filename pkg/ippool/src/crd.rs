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

/// Applies both CRDs and waits until they are Established.
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
        mini_runtime::crd::wait_established(client, &name, Duration::from_secs(30))
            .await
            .map_err(|_| IpPoolError::NotEstablished(name))?;
    }
    Ok(())
}
