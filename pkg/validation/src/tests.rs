//! Tests of strict decoding, duplicates and defaulting of built-in kinds.

use serde_json::{json, Value};

use crate::{apply_defaults, duplicate_fields, is_builtin, unknown_fields};

fn pod_spec() -> Value {
    json!({
        "serviceAccountName": "web",
        "securityContext": {"runAsNonRoot": true, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                                "topologyKey": "kubernetes.io/hostname"}
        }]}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
        "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
        "containers": [{
            "name": "web",
            "image": "nginx:1.25",
            "args": ["--port", "8080"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}
            ],
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": 0.25, "memory": "64Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 3},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "failureThreshold": 30},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true}],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        }],
        "volumes": [
            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "a.conf"}]}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
            {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}}
        ],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app": "web"}}}]
    })
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "labels": {"app": "web"}, "annotations": {"note": "x"}})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}}, "spec": pod_spec()})
}

pub(crate) fn widget_schema() -> Value {
    json!({
        "type": "object",
        "description": "A widget",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3, "format": "int32"},
                    "mode": {"type": "string", "enum": ["fast", "slow"], "pattern": "^[a-z]+$"},
                    "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "closed": {"type": "object", "additionalProperties": false},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                              "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "maxItems": 5},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                    "nested": {"type": "object", "default": {}, "properties": {"deep": {"type": "object",
                        "properties": {"flag": {"type": "boolean", "default": false, "nullable": true}}}}}
                },
                "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "too big"}]
            },
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}, "x-kubernetes-preserve-unknown-fields": true}
        }
    })
}

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": widget_schema()}
            }],
            "conversion": {"strategy": "None"}
        }
    })
}

/// One realistic manifest per built-in kind.
fn samples() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        (
            "",
            "v1",
            "Namespace",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"env": "dev"}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        ),
        (
            "",
            "v1",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web-0"), "spec": pod_spec(),
            "status": {"phase": "Running", "podIP": "10.0.0.5", "startTime": "2024-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z", "lastProbeTime": null}]}}),
        ),
        (
            "",
            "v1",
            "Service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web"), "spec": {
            "type": "NodePort", "selector": {"app": "web"}, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"},
                      {"name": "metrics", "port": 9090, "targetPort": 9090}],
            "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "externalTrafficPolicy": "Local"}}),
        ),
        (
            "",
            "v1",
            "Endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web"),
            "subsets": [{"addresses": [{"ip": "10.0.0.5", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}}],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}),
        ),
        (
            "",
            "v1",
            "ConfigMap",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"),
            "data": {"a.conf": "x=1\n", "empty": ""}, "binaryData": {"blob": "AAEC"}, "immutable": false}),
        ),
        (
            "",
            "v1",
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("s"), "type": "Opaque",
            "data": {"password": "cGFzc3dvcmQ=", "empty": ""}, "stringData": {"user": "admin"}}),
        ),
        (
            "",
            "v1",
            "ServiceAccount",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("web"),
            "secrets": [{"name": "tok"}], "imagePullSecrets": [{"name": "reg"}], "automountServiceAccountToken": false}),
        ),
        (
            "",
            "v1",
            "Node",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
            "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": 110},
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:00:00Z", "reason": "KubeletReady", "message": "ok"}],
                       "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1", "osImage": "Linux",
                                    "containerRuntimeVersion": "containerd://1.7", "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}}),
        ),
        (
            "",
            "v1",
            "Event",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default", "apiVersion": "v1"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal", "count": 1,
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z", "eventTime": null,
            "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler", "reportingInstance": ""}),
        ),
        (
            "",
            "v1",
            "PersistentVolume",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
                     "hostPath": {"path": "/mnt/data", "type": "DirectoryOrCreate"}, "storageClassName": "local",
                     "claimRef": {"name": "data", "namespace": "default"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}}}}),
        ),
        (
            "",
            "v1",
            "PersistentVolumeClaim",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "local",
                     "selector": {"matchLabels": {"tier": "fast"}}}}),
        ),
        (
            "",
            "v1",
            "ResourceQuota",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta("q"),
            "spec": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi"}, "scopes": ["NotTerminating"]}}),
        ),
        (
            "",
            "v1",
            "LimitRange",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": meta("lr"),
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "250m"}, "max": {"cpu": "2"}}]}}),
        ),
        (
            "",
            "v1",
            "ReplicationController",
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("rc"),
            "spec": {"replicas": 2, "selector": {"app": "web"}, "template": template()}}),
        ),
        (
            "",
            "v1",
            "PodTemplate",
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("pt"), "template": template()}),
        ),
        (
            "",
            "v1",
            "Binding",
            json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-0", "namespace": "default"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}),
        ),
        (
            "apps",
            "v1",
            "Deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"), "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "0%"}},
            "minReadySeconds": 5, "revisionHistoryLimit": 5, "progressDeadlineSeconds": 300, "template": template()}}),
        ),
        (
            "apps",
            "v1",
            "ReplicaSet",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("web-5d8"),
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1}}),
        ),
        (
            "apps",
            "v1",
            "StatefulSet",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db"), "spec": {
            "serviceName": "db", "replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template(),
            "podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}}),
        ),
        (
            "apps",
            "v1",
            "DaemonSet",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent"), "spec": {
            "selector": {"matchLabels": {"app": "web"}}, "template": template(),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}}}),
        ),
        (
            "apps",
            "v1",
            "ControllerRevision",
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta("db-7f"),
            "revision": 2, "data": {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "y"}]}}}, "$patch": "replace"}}),
        ),
        (
            "batch",
            "v1",
            "Job",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("migrate"), "spec": {
            "completions": 1, "parallelism": 1, "backoffLimit": 2, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 100,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "migrate:1"}]}}}}),
        ),
        (
            "batch",
            "v1",
            "CronJob",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("nightly"), "spec": {
            "schedule": "0 3 * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 100,
            "jobTemplate": {"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox", "command": ["date"]}]}}}}}}),
        ),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": meta("web"), "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": 100}}},
                {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}}, "target": {"type": "Value", "value": "30"}}}
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}}),
        ),
        (
            "autoscaling",
            "v1",
            "Scale",
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta("web"),
            "spec": {"replicas": 4}, "status": {"replicas": 3, "selector": "app=web"}}),
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("web"),
            "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}}),
        ),
        (
            "policy",
            "v1",
            "Eviction",
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web-0", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Background"}}),
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2024-01-01T00:00:00.000000Z", "leaseTransitions": 0}}),
        ),
        (
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-1", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "default"}, "zone": "a"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "Ingress",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["example.com"], "secretName": "tls"}],
                     "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                     "rules": [{"host": "example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                        {"path": "/static", "pathType": "Exact", "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}}]}}]}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "IngressClass",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {"kind": "Params", "name": "p", "scope": "Cluster"}}}),
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("deny"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                                  "ports": [{"protocol": "TCP", "port": 80}, {"port": "http", "endPort": 90}]}],
                     "egress": [{}]}}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader"),
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"], "resourceNames": ["a"]}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta("reader"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "default"}, {"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "agg", "labels": {"rbac.example.com/aggregate": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-agg": "true"}}]},
            "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "agg"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agg"},
            "subjects": [{"kind": "Group", "name": "system:masters", "apiGroup": "rbac.authorization.k8s.io"}]}),
        ),
        (
            "storage.k8s.io",
            "v1",
            "StorageClass",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": true, "parameters": {"type": "ssd"}, "mountOptions": ["noatime"]}),
        ),
        (
            "events.k8s.io",
            "v1",
            "Event",
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "kubelet", "reportingInstance": "node-1",
            "action": "Pulling", "reason": "Pulling", "regarding": {"kind": "Pod", "name": "web-0"}, "note": "pulling", "type": "Normal",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}}),
        ),
        (
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "csr-1"}, "spec": {"request": "LS0tLS1CRUdJTg==", "signerName": "kubernetes.io/kube-apiserver-client",
            "expirationSeconds": 86400, "usages": ["client auth"], "groups": ["system:authenticated"], "extra": {"k": ["v"]}},
            "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "ok", "lastUpdateTime": "2024-01-01T00:00:00Z"}], "certificate": "AAAA"}}),
        ),
        (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            crd(),
        ),
        (
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": "web"}, "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "u"}}}),
        ),
        (
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": "abc", "audiences": ["api"]}}),
        ),
        (
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": null}, "status": {"userInfo": {"username": "admin", "groups": ["system:masters"], "extra": {"a": ["b"]}}}}),
        ),
        (
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods", "group": "", "subresource": "log"}}}),
        ),
        (
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": "default"}}),
        ),
        (
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "jane", "groups": ["dev"], "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}),
        ),
    ]
}

#[test]
fn unknown_fields_realistic_samples_report_nothing() {
    for (g, v, k, obj) in samples() {
        assert!(is_builtin(g, v, k), "{g}/{v} {k} should be built in");
        let unknown = unknown_fields(g, v, k, &obj).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(
            unknown.is_empty(),
            "{k}: unexpected unknown fields {unknown:?}"
        );
    }
}

#[test]
fn samples_cover_every_listed_kind() {
    assert_eq!(samples().len(), 46);
    assert!(!is_builtin("example.com", "v1", "Widget"));
}

#[test]
fn unknown_fields_top_level_and_metadata_reported() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labelz": {}}, "dta": {"a": "b"}});
    assert_eq!(
        unknown_fields("", "v1", "ConfigMap", &obj).unwrap(),
        vec!["metadata.labelz", "dta"]
    );
}

#[test]
fn unknown_fields_deep_in_deployment_template_reported() {
    let mut obj = samples()
        .into_iter()
        .find(|s| s.2 == "Deployment")
        .unwrap()
        .3;
    obj["spec"]["foo"] = json!(1);
    obj["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("nginx");
    obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPortt"] = json!(1);
    obj["spec"]["strategy"]["rollingUpdate"]["extra"] = json!({"a": 1});
    let got = unknown_fields("apps", "v1", "Deployment", &obj).unwrap();
    assert_eq!(
        got,
        vec![
            "spec.strategy.rollingUpdate.extra",
            "spec.template.spec.containers[0].ports[0].hostPortt",
            "spec.template.spec.containers[0].imagee",
            "spec.foo",
        ]
    );
}

#[test]
fn unknown_fields_null_values_ignored_empty_values_count() {
    let obj =
        json!({"metadata": {"name": "a", "bogus": null}, "data": {}, "extra": {}, "list": []});
    assert_eq!(
        unknown_fields("", "v1", "ConfigMap", &obj).unwrap(),
        vec!["extra", "list"]
    );
}

#[test]
fn unknown_fields_missing_required_fields_are_not_decode_errors() {
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
        "spec": {"template": {"spec": {"containers": [{"image": "nginx", "ports": [{"name": "x"}], "bogus": 1}]}}}});
    assert_eq!(
        unknown_fields("apps", "v1", "Deployment", &obj).unwrap(),
        vec!["spec.template.spec.containers[0].bogus"]
    );
    let svc = json!({"spec": {"ports": [{"name": "a", "targetPort": 80}]}});
    assert!(unknown_fields("", "v1", "Service", &svc)
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_fields_int_or_string_quantity_time_bytes_not_reported() {
    let obj = json!({"metadata": {"name": "p", "creationTimestamp": "2024-05-01T10:00:00Z"}, "spec": {"containers": [{
        "name": "c", "image": "i",
        "resources": {"limits": {"cpu": 1, "memory": "1.5Gi"}, "requests": {"cpu": "0.5", "memory": 1e9}},
        "livenessProbe": {"httpGet": {"port": 8080}}, "readinessProbe": {"httpGet": {"port": "http"}}}]}});
    assert!(unknown_fields("", "v1", "Pod", &obj).unwrap().is_empty());
    let secret =
        json!({"metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}, "type": "kubernetes.io/tls"});
    assert!(unknown_fields("", "v1", "Secret", &secret)
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_fields_crd_schema_with_preserve_and_additional_properties_not_reported() {
    assert!(unknown_fields(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        &crd()
    )
    .unwrap()
    .is_empty());
    let mut bad = crd();
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["propertiez"] =
        json!({});
    assert_eq!(
        unknown_fields(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            &bad
        )
        .unwrap(),
        vec!["spec.versions[0].schema.openAPIV3Schema.properties.spec.propertiez"]
    );
}

#[test]
fn unknown_fields_raw_extension_content_not_reported() {
    let obj = json!({"metadata": {"name": "r"}, "revision": 1, "data": {"anything": {"goes": [1, {"x": null}]}}});
    assert!(unknown_fields("apps", "v1", "ControllerRevision", &obj)
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_fields_wrong_type_is_decode_error_naming_field() {
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
        "spec": {"replicas": "three", "selector": {}, "template": {}}});
    let err = unknown_fields("apps", "v1", "Deployment", &obj).unwrap_err();
    assert_eq!(
        err.0,
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    let obj =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": 5}]}});
    let err = unknown_fields("", "v1", "Pod", &obj).unwrap_err();
    assert_eq!(
        err.0,
        "json: cannot unmarshal number into Go struct field Container.spec.containers.image of type string"
    );
    let obj = json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}});
    assert!(unknown_fields("", "v1", "Secret", &obj).is_err());
}

#[test]
fn duplicate_fields_reports_repeated_keys_by_path() {
    let raw = br#"{"metadata":{"name":"a","name":"b","labels":{"x":"1","x":"2"}},"spec":{"containers":[{"name":"c","image":"i","image":"j"}]},"kind":"Pod","kind":"Pod"}"#;
    assert_eq!(
        duplicate_fields(raw),
        vec![
            "metadata.name",
            "metadata.labels.x",
            "spec.containers[0].image",
            "kind"
        ]
    );
    assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
}

#[test]
fn defaults_minimal_deployment_matches_upstream() {
    let mut obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
    apply_defaults("apps", "v1", "Deployment", &mut obj);
    let expected = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        "imagePullPolicy": "Always"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                    "securityContext": {}, "schedulerName": "default-scheduler"}},
            "replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600}});
    assert_eq!(obj, expected);
}

#[test]
fn defaults_pod_containers_probes_env_and_admission() {
    let mut obj = json!({"metadata": {"name": "p"}, "spec": {"containers": [{
        "name": "c", "image": "nginx:1.25",
        "resources": {"limits": {"cpu": "1"}},
        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "livenessProbe": {"httpGet": {"port": 80}}}], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}});
    apply_defaults("", "v1", "Pod", &mut obj);
    let spec = &obj["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["resources"]["requests"], json!({"cpu": "1"}));
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10,
               "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
    assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
    assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
    assert!(obj.get("status").is_none());
}

#[test]
fn defaults_image_pull_policy_follows_tag() {
    for (image, policy) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("registry:5000/nginx", "Always"),
        ("registry:5000/nginx:1.2", "IfNotPresent"),
        ("nginx@sha256:abc", "IfNotPresent"),
    ] {
        let mut obj = json!({"spec": {"containers": [{"name": "c", "image": image}]}});
        apply_defaults("", "v1", "Pod", &mut obj);
        assert_eq!(
            obj["spec"]["containers"][0]["imagePullPolicy"], policy,
            "{image}"
        );
    }
}

#[test]
fn defaults_service_statefulset_daemonset_job_cronjob() {
    let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    apply_defaults("", "v1", "Service", &mut svc);
    assert_eq!(
        svc["spec"],
        json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "sessionAffinity": "None",
               "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"})
    );
    let mut sts = json!({"spec": {"selector": {}, "template": {"spec": {"containers": []}}}});
    apply_defaults("apps", "v1", "StatefulSet", &mut sts);
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(sts["spec"]["revisionHistoryLimit"], 10);
    let mut ds = json!({"spec": {"template": {"spec": {"containers": []}}}});
    apply_defaults("apps", "v1", "DaemonSet", &mut ds);
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    let mut job = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never", "containers": []}}}});
    apply_defaults("batch", "v1", "Job", &mut job);
    assert_eq!(job["spec"]["completions"], 1);
    assert_eq!(job["spec"]["parallelism"], 1);
    assert_eq!(job["spec"]["backoffLimit"], 6);
    assert_eq!(job["spec"]["completionMode"], "NonIndexed");
    assert_eq!(job["spec"]["suspend"], false);
    assert_eq!(job["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["metadata"]["labels"], json!({"a": "b"}));
    let mut cj = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
    apply_defaults("batch", "v1", "CronJob", &mut cj);
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(cj["spec"]["suspend"], false);
}

#[test]
fn defaults_namespace_secret_pvc_hpa_crd() {
    let mut ns = json!({"metadata": {"name": "team"}});
    apply_defaults("", "v1", "Namespace", &mut ns);
    assert_eq!(
        ns,
        json!({"metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "team"}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    );
    let mut s = json!({"metadata": {"name": "s"}});
    apply_defaults("", "v1", "Secret", &mut s);
    assert_eq!(s["type"], "Opaque");
    let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"]}});
    apply_defaults("", "v1", "PersistentVolumeClaim", &mut pvc);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let mut pv = json!({"spec": {}});
    apply_defaults("", "v1", "PersistentVolume", &mut pv);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let mut hpa =
        json!({"spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}});
    apply_defaults("autoscaling", "v2", "HorizontalPodAutoscaler", &mut hpa);
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    let mut c = crd();
    c["spec"].as_object_mut().unwrap().remove("conversion");
    c["spec"]["names"]
        .as_object_mut()
        .unwrap()
        .remove("singular");
    apply_defaults(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        &mut c,
    );
    assert_eq!(c["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(c["spec"]["names"]["singular"], "widget");
    assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
}

#[test]
fn defaults_keep_given_values() {
    let mut d = json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "template": {"spec": {
        "restartPolicy": "Always", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}}}});
    apply_defaults("apps", "v1", "Deployment", &mut d);
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Never"
    );
}

#[test]
fn unknown_fields_empty_structs_round_trip() {
    let obj = json!({"metadata": {"name": "d", "labels": {}, "annotations": {}}, "spec": {"selector": {}, "strategy": {},
        "template": {"metadata": {}, "spec": {"securityContext": {}, "containers": [{"name": "c", "image": "i",
            "resources": {}, "env": [], "ports": []}], "volumes": [{"name": "v", "emptyDir": {}}]}}}});
    assert_eq!(
        unknown_fields("apps", "v1", "Deployment", &obj).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn defaults_job_pod_failure_policy_condition_status() {
    let mut job = json!({"spec": {"podFailurePolicy": {"rules": [{"action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget"}]}]}, "template": {"spec": {"containers": []}}}});
    apply_defaults("batch", "v1", "Job", &mut job);
    assert_eq!(
        job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );
    assert_eq!(job["spec"]["podReplacementPolicy"], "Failed");
}

#[test]
fn realistic_samples_validate_without_errors_after_defaulting() {
    for (g, v, k, mut obj) in samples() {
        apply_defaults(g, v, k, &mut obj);
        let errs = crate::validate_create(g, v, k, &obj);
        assert!(errs.is_empty(), "{k}: {errs:?}");
        let errs = crate::validate_update(g, v, k, &obj, &obj);
        assert!(errs.is_empty(), "{k} (update): {errs:?}");
        let unknown = unknown_fields(g, v, k, &obj).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(
            unknown.is_empty(),
            "{k}: defaults introduced unknown fields {unknown:?}"
        );
    }
}

#[test]
fn unknown_fields_time_variants_decode() {
    let obj = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00.123Z",
        "deletionTimestamp": "2024-01-01T02:00:00+02:00"},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    assert!(unknown_fields("", "v1", "Pod", &obj).unwrap().is_empty());
    let lease = json!({"metadata": {"name": "l"}, "spec": {"renewTime": "2024-01-01T00:00:00.123456Z", "acquireTime": "2024-01-01T00:00:00Z"}});
    assert!(unknown_fields("coordination.k8s.io", "v1", "Lease", &lease)
        .unwrap()
        .is_empty());
    let bad = json!({"metadata": {"name": "p", "creationTimestamp": "yesterday"}});
    assert!(unknown_fields("", "v1", "Pod", &bad).is_err());
}

/// Every JSON-pointer of an object node inside `v`.
fn object_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            out.push(at.clone());
            for (k, x) in m {
                object_pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                object_pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn unknown_fields_fast_path_agrees_with_round_trip() {
    for (g, v, k, obj) in samples() {
        let mut pointers = Vec::new();
        object_pointers(&obj, String::new(), &mut pointers);
        for ptr in pointers {
            let mut bad = obj.clone();
            if let Some(Value::Object(m)) = bad.pointer_mut(&ptr) {
                m.insert("zzUnknown".into(), json!({"x": 1}));
            }
            let fast = unknown_fields(g, v, k, &bad).map_err(|e| e.to_string());
            let slow =
                crate::builtin::round_trip_unknown_fields(g, v, k, &bad).map_err(|e| e.to_string());
            assert_eq!(fast, slow, "{k} with an unknown field at {ptr:?}");
        }
    }
}

#[test]
fn duplicate_fields_in_large_objects_and_escaped_keys_reported() {
    let mut raw = String::from("{\"data\":{");
    for i in 0..40 {
        raw.push_str(&format!("\"k{i}\":\"v\","));
    }
    raw.push_str("\"k3\":\"again\",\"k\\u0033\":\"escaped\"},\"list\":[{\"a\":1,\"a\":2}]}");
    assert_eq!(
        duplicate_fields(raw.as_bytes()),
        vec!["data.k3", "list[0].a"]
    );
}
