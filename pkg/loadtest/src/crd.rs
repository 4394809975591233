//! The `LoadTest` CustomResourceDefinition (`loadtest.mini.dev/v1`, namespaced, with a status
//! subresource and printer columns), applied by the server at start and waited for until
//! Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use crate::spec::{GROUP, PLURAL, VERSION};
use crate::{api_err, LoadTestError};

fn t(kind: &str, description: &str) -> Value {
    json!({"type": kind, "description": description})
}

/// The LoadTest CRD.
pub fn loadtest_crd() -> Value {
    let latency = json!({"type": "object", "properties": {
        "p50": {"type": "number"}, "p90": {"type": "number"}, "p99": {"type": "number"},
        "p999": {"type": "number"}, "max": {"type": "number"}, "mean": {"type": "number"},
    }});
    let spec = json!({
        "type": "object",
        "required": ["target"],
        "properties": {
            "target": t("string", "svc/NAME[:PORT][/PATH], ingress/NAME[/PATH] or an http:// URL"),
            "method": t("string", "HTTP method (GET)"),
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": t("string", "request body"),
            "rate": t("integer", "requests per second over all generators (open model, the default)"),
            "users": t("integer", "concurrent users over all generators (closed model)"),
            "duration": t("string", "how long to send, e.g. 60s (at most 1h)"),
            "rampUp": t("string", "linear ramp to the full rate or user count, e.g. 10s"),
            "generators": t("integer", "generator pods, one per node"),
            "timeout": t("string", "per-request timeout (10s)"),
            "connections": t("integer", "connections per generator (open model)"),
            "thresholds": {"type": "array", "items": {"type": "string"}, "description": "e.g. p99<200ms, errors<1%"},
            "cancel": t("boolean", "set to stop the run now"),
        },
    });
    let thresholds = json!({"type": "array", "items": {"type": "object", "properties": {
        "threshold": {"type": "string"}, "actual": {"type": "number"}, "passed": {"type": "boolean"},
    }}});
    let status = json!({
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed", "Cancelled"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "url": {"type": "string"},
            "startTime": {"type": "string"},
            "completionTime": {"type": "string"},
            "generators": {"type": "integer"},
            "requests": {"type": "integer"},
            "errors": {"type": "integer"},
            "requestedRate": {"type": "number"},
            "achievedRate": {"type": "number"},
            "latency": latency,
            "thresholds": thresholds,
            "passed": {"type": "boolean"},
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{PLURAL}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "loadtest", "kind": "LoadTest", "listKind": "LoadTestList", "shortNames": ["lt"]},
            "versions": [{
                "name": VERSION, "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Target", "type": "string", "jsonPath": ".spec.target"},
                    {"name": "Rate", "type": "integer", "jsonPath": ".spec.rate"},
                    {"name": "Users", "type": "integer", "jsonPath": ".spec.users", "priority": 1},
                    {"name": "Generators", "type": "integer", "jsonPath": ".spec.generators"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Requests", "type": "integer", "jsonPath": ".status.requests"},
                    {"name": "Achieved", "type": "number", "jsonPath": ".status.achievedRate"},
                    {"name": "P99-ms", "type": "number", "jsonPath": ".status.latency.p99"},
                    {"name": "Errors", "type": "integer", "jsonPath": ".status.errors"},
                    {"name": "Passed", "type": "boolean", "jsonPath": ".status.passed"},
                    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    })
}

/// Applies the CRD and waits until it is Established.
pub async fn ensure(client: &kube::Client) -> Result<(), LoadTestError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = loadtest_crd();
    let name = format!("{PLURAL}.{GROUP}");
    api.patch(
        &name,
        &PatchParams::apply("mini").force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(api_err(format!("applying the CRD {name}")))?;
    mini_runtime::crd::wait_established(client, &name, Duration::from_secs(30))
        .await
        .map_err(|_| {
            LoadTestError::Http(format!(
                "the CRD {name} did not become Established within 30s; check the API server log"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_is_namespaced_with_status_and_columns() {
        let crd = loadtest_crd();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = &crd["spec"]["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for c in ["Target", "Phase", "Achieved", "P99-ms", "Passed"] {
            assert!(columns.contains(&c), "{c}");
        }
    }
}
