//! The objects the benchmark writes: a realistic (~1.5 KB) pod and a small ConfigMap.

use serde_json::{json, Value};

/// A pod shaped like one a Deployment would create: labels, annotations, an owner
/// reference, one container with env, ports, resources, probes and mounts, and a volume.
pub fn pod(namespace: &str, name: &str, index: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "bench-web",
                "app.kubernetes.io/instance": "bench",
                "app.kubernetes.io/component": "frontend",
                "pod-template-hash": "7d9c6b5f8d",
                "shard": format!("s{}", index % 16)
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9102",
                "kubectl.kubernetes.io/default-container": "web"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "bench-web-7d9c6b5f8d",
                "uid": "6f0c2a4e-3b1d-4c5e-9f8a-1b2c3d4e5f60",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example.com/bench/web:1.27.3",
                "imagePullPolicy": "IfNotPresent",
                "args": ["--listen=:8080", "--metrics=:9102", "--log-level=info"],
                "ports": [
                    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}
                ],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "GOMAXPROCS", "value": "2"},
                    {"name": "UPSTREAM_URL", "value": "http://bench-api.bench.svc.cluster.local:8080"}
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}
                },
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 10,
                    "failureThreshold": 3
                },
                "livenessProbe": {
                    "httpGet": {"path": "/livez", "port": "http"},
                    "initialDelaySeconds": 5,
                    "periodSeconds": 20
                },
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/web", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "bench-web-config"}}
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "terminationGracePeriodSeconds": 30,
            "serviceAccountName": "default"
        }
    })
}

/// A ConfigMap carrying a sequence number, for watch delivery.
pub fn config_map(namespace: &str, name: &str, seq: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"seq": seq.to_string()}
    })
}

/// A namespace object.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_serialized_is_about_one_and_a_half_kb() {
        let len = serde_json::to_vec(&pod("bench", "pod-000123", 123))
            .unwrap()
            .len();
        assert!((1300..=1800).contains(&len), "pod is {len} bytes");
    }

    #[test]
    fn config_map_seq_is_string_data() {
        let cm = config_map("ns", "cm", 7);
        assert_eq!(cm["data"]["seq"], "7");
    }
}
