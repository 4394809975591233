//! Tests: protobuf bodies built with `k8s-pb` exactly as kubectl sends them.

use std::collections::BTreeMap;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use crate::{decode, ProtobufError, MAGIC};

fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// ObjectMeta as Go's marshaller writes it: every non-pointer field present, the
/// creation timestamp as an empty message.
fn object_meta(name: &str, namespace: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: map(labels),
        ..Default::default()
    }
}

fn quantity(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

#[test]
fn configmap_with_data_decodes_to_json() {
    let cm = core::ConfigMap {
        metadata: Some(object_meta("cfg", "default", &[])),
        data: map(&[("a", "1"), ("b", "two")]),
        ..Default::default()
    };
    let got = decode(&body("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "creationTimestamp": null},
            "data": {"a": "1", "b": "two"}})
    );
}

#[test]
fn secret_binary_data_becomes_base64() {
    let secret = core::Secret {
        metadata: Some(object_meta("s", "", &[])),
        data: [
            ("bin".to_string(), vec![0u8, 159, 146, 150]),
            ("k".to_string(), b"value".to_vec()),
        ]
        .into_iter()
        .collect(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let got = decode(&body("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"bin": "AJ+Slg==", "k": "dmFsdWU="}, "type": "Opaque"})
    );
}

#[test]
fn namespace_keeps_empty_spec_and_status() {
    let ns = core::Namespace {
        metadata: Some(object_meta("team", "", &[])),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: s(""),
            ..Default::default()
        }),
    };
    let got = decode(&body("v1", "Namespace", &ns)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team", "creationTimestamp": null},
            "spec": {}, "status": {}})
    );
}

#[test]
fn service_ports_target_port_int_and_string() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        ..Default::default()
    };
    let svc = core::Service {
        metadata: Some(object_meta("web", "", &[("app", "web")])),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "80-8080",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "https",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("https"),
                    },
                ),
            ],
            selector: map(&[("app", "web")]),
            r#type: s("ClusterIP"),
            cluster_ip: s(""),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            ..Default::default()
        }),
    };
    let got = decode(&body("v1", "Service", &svc)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "ports": [
                    {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"}
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}})
    );
}

#[test]
fn deployment_from_kubectl_create_deployment() {
    use k8s_pb::api::apps::v1 as apps;
    let labels = [("app", "web")];
    let deploy = apps::Deployment {
        metadata: Some(object_meta("web", "", &labels)),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: map(&labels),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(object_meta("", "", &labels)),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("nginx"),
                        image: s("nginx"),
                        working_dir: s(""),
                        resources: Some(core::ResourceRequirements::default()),
                        termination_message_path: s(""),
                        image_pull_policy: s(""),
                        stdin: Some(false),
                        stdin_once: Some(false),
                        tty: Some(false),
                        ..Default::default()
                    }],
                    restart_policy: s(""),
                    dns_policy: s(""),
                    service_account_name: s(""),
                    host_network: Some(false),
                    host_pid: Some(false),
                    host_ipc: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s(""),
                ..Default::default()
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = decode(&body("apps/v1", "Deployment", &deploy)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
                },
                "strategy": {}
            },
            "status": {}})
    );
}

#[test]
fn deployment_with_zero_replicas_keeps_them() {
    use k8s_pb::api::apps::v1 as apps;
    let deploy = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("zero"),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&body("apps/v1", "Deployment", &deploy)).unwrap();
    assert_eq!(got["spec"], json!({"replicas": 0}));
}

#[test]
fn serviceaccount_decodes() {
    let sa = core::ServiceAccount {
        metadata: Some(object_meta("robot", "ns1", &[])),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let got = decode(&body("v1", "ServiceAccount", &sa)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": "ns1", "creationTimestamp": null},
            "automountServiceAccountToken": false})
    );
}

#[test]
fn self_subject_access_review_from_auth_can_i() {
    use k8s_pb::api::authorization::v1 as authz;
    let review = authz::SelfSubjectAccessReview {
        metadata: Some(object_meta("", "", &[])),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("get"),
                group: s(""),
                version: s(""),
                resource: s("pods"),
                subresource: s(""),
                name: s(""),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: s(""),
            evaluation_error: s(""),
        }),
    };
    let got = decode(&body(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &review,
    ))
    .unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}},
            "status": {"allowed": false}})
    );
}

#[test]
fn token_request_from_create_token() {
    use k8s_pb::api::authentication::v1 as authn;
    let request = authn::TokenRequest {
        metadata: Some(object_meta("robot", "default", &[])),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec![
                "https://kubernetes.default.svc".to_string(),
                "api".to_string(),
            ],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        status: Some(authn::TokenRequestStatus {
            token: s(""),
            expiration_timestamp: Some(meta::Time::default()),
        }),
    };
    let got = decode(&body("authentication.k8s.io/v1", "TokenRequest", &request)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": "robot", "namespace": "default", "creationTimestamp": null},
            "spec": {"audiences": ["https://kubernetes.default.svc", "api"], "expirationSeconds": 3600},
            "status": {"token": "", "expirationTimestamp": null}})
    );
}

#[test]
fn hpa_autoscaling_v2_from_autoscale() {
    use k8s_pb::api::autoscaling::v2 as hpa;
    let object = hpa::HorizontalPodAutoscaler {
        metadata: Some(object_meta("web", "", &[])),
        spec: Some(hpa::HorizontalPodAutoscalerSpec {
            scale_target_ref: Some(hpa::CrossVersionObjectReference {
                kind: s("Deployment"),
                name: s("web"),
                api_version: s("apps/v1"),
            }),
            min_replicas: Some(1),
            max_replicas: Some(5),
            metrics: vec![hpa::MetricSpec {
                r#type: s("Resource"),
                resource: Some(hpa::ResourceMetricSource {
                    name: s("cpu"),
                    target: Some(hpa::MetricTarget {
                        r#type: s("Utilization"),
                        average_utilization: Some(80),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }],
            behavior: None,
        }),
        status: Some(hpa::HorizontalPodAutoscalerStatus {
            current_replicas: Some(0),
            desired_replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = decode(&body("autoscaling/v2", "HorizontalPodAutoscaler", &object)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]
            },
            "status": {"desiredReplicas": 0}})
    );
}

#[test]
fn hpa_autoscaling_v1_decodes() {
    use k8s_pb::api::autoscaling::v1 as hpa;
    let object = hpa::HorizontalPodAutoscaler {
        metadata: Some(object_meta("web", "", &[])),
        spec: Some(hpa::HorizontalPodAutoscalerSpec {
            scale_target_ref: Some(hpa::CrossVersionObjectReference {
                kind: s("Deployment"),
                name: s("web"),
                api_version: s("apps/v1"),
            }),
            min_replicas: Some(2),
            max_replicas: Some(10),
            target_cpu_utilization_percentage: Some(50),
        }),
        status: Some(hpa::HorizontalPodAutoscalerStatus {
            current_replicas: Some(0),
            desired_replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = decode(&body("autoscaling/v1", "HorizontalPodAutoscaler", &object)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50
            },
            "status": {"currentReplicas": 0, "desiredReplicas": 0}})
    );
}

#[test]
fn job_with_quantity_resources_and_timestamps() {
    use k8s_pb::api::batch::v1 as batch;
    let job = batch::Job {
        metadata: Some(meta::ObjectMeta {
            name: s("pi"),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_704_164_705),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(batch::JobSpec {
            backoff_limit: Some(0),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("pi"),
                        image: s("perl"),
                        command: vec!["perl".to_string(), "-e".to_string()],
                        resources: Some(core::ResourceRequirements {
                            limits: [("memory".to_string(), quantity("128Mi"))]
                                .into_iter()
                                .collect(),
                            requests: [("cpu".to_string(), quantity("500m"))]
                                .into_iter()
                                .collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    restart_policy: s("Never"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(batch::JobStatus {
            active: Some(0),
            succeeded: Some(0),
            failed: Some(0),
            start_time: Some(meta::Time {
                seconds: Some(1_704_164_706),
                nanos: Some(999_999_999),
            }),
            ..Default::default()
        }),
    };
    let got = decode(&body("batch/v1", "Job", &job)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "creationTimestamp": "2024-01-02T03:05:05Z"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "containers": [{"name": "pi", "image": "perl", "command": ["perl", "-e"],
                            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "500m"}}}],
                        "restartPolicy": "Never"
                    }
                }
            },
            "status": {"startTime": "2024-01-02T03:05:06Z"}})
    );
}

#[test]
fn event_micro_time_keeps_microseconds() {
    use k8s_pb::api::events::v1 as events;
    let event = events::Event {
        metadata: Some(meta::ObjectMeta {
            name: s("e"),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_164_645),
            nanos: Some(123_456_789),
        }),
        reason: s("Started"),
        ..Default::default()
    };
    let got = decode(&body("events.k8s.io/v1", "Event", &event)).unwrap();
    assert_eq!(got["eventTime"], json!("2024-01-02T03:04:05.123456Z"));
    assert_eq!(got["reason"], json!("Started"));
}

#[test]
fn raw_extension_embeds_json() {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::apimachinery::pkg::runtime::RawExtension;
    let revision = apps::ControllerRevision {
        metadata: Some(meta::ObjectMeta {
            name: s("rev"),
            ..Default::default()
        }),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"x":1}}"#.to_vec()),
        }),
        revision: Some(3),
    };
    let got = decode(&body("apps/v1", "ControllerRevision", &revision)).unwrap();
    assert_eq!(got["data"], json!({"spec": {"x": 1}}));
    assert_eq!(got["revision"], json!(3));
}

#[test]
fn formats_match_go() {
    assert_eq!(crate::json::rfc3339(0, None), "1970-01-01T00:00:00Z");
    assert_eq!(
        crate::json::rfc3339(951_782_400, None),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(crate::json::go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(crate::json::go_duration(1_500_000_000), "1.5s");
    assert_eq!(crate::json::go_duration(150_000_000), "150ms");
    assert_eq!(crate::json::go_duration(0), "0s");
}

#[test]
fn missing_magic_is_no_magic() {
    let cm = core::ConfigMap::default();
    let mut bytes = body("v1", "ConfigMap", &cm);
    bytes.drain(..4);
    assert!(matches!(decode(&bytes), Err(ProtobufError::NoMagic)));
    assert!(matches!(decode(b"{}"), Err(ProtobufError::NoMagic)));
}

#[test]
fn garbage_is_decode_error() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend([0xff, 0xff, 0xff, 0x0f, 0x12]);
    assert!(matches!(decode(&bytes), Err(ProtobufError::Decode(_))));
    // A valid envelope whose object is truncated.
    let mut bytes = MAGIC.to_vec();
    bytes.extend(
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("ConfigMap"),
            }),
            raw: Some(vec![0x0a, 0x10, 0x01]),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert!(matches!(decode(&bytes), Err(ProtobufError::Decode(_))));
}

#[test]
fn unsupported_kind_is_reported() {
    let cm = core::ConfigMap::default();
    let err = decode(&body("example.com/v1", "Widget", &cm)).unwrap_err();
    assert!(matches!(
        err,
        ProtobufError::UnsupportedKind { ref api_version, ref kind }
            if api_version == "example.com/v1" && kind == "Widget"
    ));
}

#[test]
fn policy_names_exist_in_the_schema() {
    let schema = crate::schema::Schema::get();
    for entry in crate::policy::OMIT_ZERO
        .iter()
        .chain(crate::policy::KEEP_EMPTY_STRING)
    {
        let (message, field) = entry.rsplit_once('.').unwrap();
        let found = schema.messages().any(|m| {
            m.name.eq_ignore_ascii_case(message) && m.fields.iter().any(|f| f.json == field)
        });
        assert!(found, "{entry} is not in the schema");
    }
}

#[test]
fn every_resource_kind_resolves() {
    let schema = crate::schema::Schema::get();
    for (api_version, kind) in [
        ("v1", "Namespace"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("policy/v1", "PodDisruptionBudget"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("networking.k8s.io/v1", "Ingress"),
        ("batch/v1", "CronJob"),
        ("v1", "ResourceQuota"),
        ("authentication.k8s.io/v1", "SelfSubjectReview"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("v1", "DeleteOptions"),
    ] {
        assert!(
            schema.for_kind(api_version, kind).is_some(),
            "{api_version} {kind}"
        );
    }
}

#[test]
fn inline_embedded_structs_are_lifted_into_their_parent() {
    use k8s_pb::api::networking::v1 as networking;
    let ingress = networking::Ingress {
        metadata: Some(object_meta("web", "default", &[])),
        spec: Some(networking::IngressSpec {
            rules: vec![networking::IngressRule {
                host: s("a.example"),
                ingress_rule_value: Some(networking::IngressRuleValue {
                    http: Some(networking::HttpIngressRuleValue {
                        paths: vec![networking::HttpIngressPath {
                            path: s("/"),
                            path_type: s("Prefix"),
                            backend: Some(networking::IngressBackend {
                                service: Some(networking::IngressServiceBackend {
                                    name: s("web"),
                                    port: Some(networking::ServiceBackendPort {
                                        number: Some(80),
                                        ..Default::default()
                                    }),
                                }),
                                ..Default::default()
                            }),
                        }],
                    }),
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = decode(&body("networking.k8s.io/v1", "Ingress", &ingress)).unwrap();
    assert_eq!(
        got["spec"]["rules"][0],
        json!({"host": "a.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}})
    );

    let pod = core::Pod {
        metadata: Some(object_meta("p", "default", &[])),
        spec: Some(core::PodSpec {
            volumes: vec![core::Volume {
                name: s("cfg"),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: s("settings"),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            containers: vec![core::Container {
                name: s("c"),
                image: s("busybox"),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        exec: Some(core::ExecAction {
                            command: vec!["true".into()],
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = decode(&body("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        got["spec"]["volumes"][0],
        json!({"name": "cfg", "configMap": {"name": "settings"}})
    );
    assert_eq!(
        got["spec"]["containers"][0]["readinessProbe"],
        json!({"exec": {"command": ["true"]}, "periodSeconds": 5})
    );
}
