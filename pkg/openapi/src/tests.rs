//! Tests of the group-version documents and the index.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;

fn res(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceDoc {
    ResourceDoc {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        subresources: Vec::new(),
        crd_schema: None,
    }
}

fn with_subs(mut r: ResourceDoc, subs: &[&str]) -> ResourceDoc {
    r.subresources = subs.iter().map(|s| s.to_string()).collect();
    r
}

/// Every built-in resource, grouped by group-version, roughly as the API server serves them.
fn builtin_resources() -> BTreeMap<(String, String), Vec<ResourceDoc>> {
    let list = vec![
        with_subs(
            res("", "v1", "Namespace", "namespaces", false),
            &["status", "finalize"],
        ),
        with_subs(
            res("", "v1", "Pod", "pods", true),
            &[
                "status",
                "binding",
                "eviction",
                "log",
                "exec",
                "attach",
                "portforward",
                "proxy",
                "ephemeralcontainers",
                "resize",
            ],
        ),
        with_subs(
            res("", "v1", "Service", "services", true),
            &["status", "proxy"],
        ),
        res("", "v1", "Endpoints", "endpoints", true),
        res("", "v1", "ConfigMap", "configmaps", true),
        res("", "v1", "Secret", "secrets", true),
        with_subs(
            res("", "v1", "ServiceAccount", "serviceaccounts", true),
            &["token"],
        ),
        with_subs(res("", "v1", "Node", "nodes", false), &["status", "proxy"]),
        res("", "v1", "Event", "events", true),
        with_subs(
            res("", "v1", "PersistentVolume", "persistentvolumes", false),
            &["status"],
        ),
        with_subs(
            res(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
            ),
            &["status"],
        ),
        with_subs(
            res("", "v1", "ResourceQuota", "resourcequotas", true),
            &["status"],
        ),
        res("", "v1", "LimitRange", "limitranges", true),
        with_subs(
            res(
                "",
                "v1",
                "ReplicationController",
                "replicationcontrollers",
                true,
            ),
            &["status", "scale"],
        ),
        res("", "v1", "PodTemplate", "podtemplates", true),
        res("", "v1", "Binding", "bindings", true),
        res("", "v1", "ComponentStatus", "componentstatuses", false),
        with_subs(
            res("apps", "v1", "Deployment", "deployments", true),
            &["status", "scale"],
        ),
        with_subs(
            res("apps", "v1", "ReplicaSet", "replicasets", true),
            &["status", "scale"],
        ),
        with_subs(
            res("apps", "v1", "StatefulSet", "statefulsets", true),
            &["status", "scale"],
        ),
        with_subs(
            res("apps", "v1", "DaemonSet", "daemonsets", true),
            &["status"],
        ),
        res(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
        ),
        with_subs(res("batch", "v1", "Job", "jobs", true), &["status"]),
        with_subs(res("batch", "v1", "CronJob", "cronjobs", true), &["status"]),
        with_subs(
            res(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                true,
            ),
            &["status"],
        ),
        with_subs(
            res(
                "autoscaling",
                "v1",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                true,
            ),
            &["status"],
        ),
        with_subs(
            res(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
            ),
            &["status"],
        ),
        res("coordination.k8s.io", "v1", "Lease", "leases", true),
        res(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        with_subs(
            res("networking.k8s.io", "v1", "Ingress", "ingresses", true),
            &["status"],
        ),
        res(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            false,
        ),
        res(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        res("networking.k8s.io", "v1", "IPAddress", "ipaddresses", false),
        with_subs(
            res(
                "networking.k8s.io",
                "v1",
                "ServiceCIDR",
                "servicecidrs",
                false,
            ),
            &["status"],
        ),
        res("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        res(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        res(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            false,
        ),
        res("storage.k8s.io", "v1", "CSIDriver", "csidrivers", false),
        res("storage.k8s.io", "v1", "CSINode", "csinodes", false),
        res(
            "storage.k8s.io",
            "v1",
            "CSIStorageCapacity",
            "csistoragecapacities",
            true,
        ),
        with_subs(
            res(
                "storage.k8s.io",
                "v1",
                "VolumeAttachment",
                "volumeattachments",
                false,
            ),
            &["status"],
        ),
        res("events.k8s.io", "v1", "Event", "events", true),
        with_subs(
            res(
                "certificates.k8s.io",
                "v1",
                "CertificateSigningRequest",
                "certificatesigningrequests",
                false,
            ),
            &["status", "approval"],
        ),
        with_subs(
            res(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
            &["status"],
        ),
        with_subs(
            res(
                "apiregistration.k8s.io",
                "v1",
                "APIService",
                "apiservices",
                false,
            ),
            &["status"],
        ),
        res(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
        ),
        res(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
        ),
        res(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
        ),
        res(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
        ),
        res(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
        ),
        res(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
        ),
        res(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        res(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        with_subs(
            res(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingAdmissionPolicy",
                "validatingadmissionpolicies",
                false,
            ),
            &["status"],
        ),
        res(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
        ),
        res(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            false,
        ),
        res("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false),
        with_subs(
            res(
                "flowcontrol.apiserver.k8s.io",
                "v1",
                "FlowSchema",
                "flowschemas",
                false,
            ),
            &["status"],
        ),
        with_subs(
            res(
                "flowcontrol.apiserver.k8s.io",
                "v1",
                "PriorityLevelConfiguration",
                "prioritylevelconfigurations",
                false,
            ),
            &["status"],
        ),
    ];
    let mut by_gv: BTreeMap<(String, String), Vec<ResourceDoc>> = BTreeMap::new();
    for r in list {
        by_gv
            .entry((r.group.clone(), r.version.clone()))
            .or_default()
            .push(r);
    }
    by_gv
}

fn resources_of(group: &str, version: &str) -> Vec<ResourceDoc> {
    builtin_resources()
        .remove(&(group.to_string(), version.to_string()))
        .unwrap_or_default()
}

fn core_doc() -> Value {
    group_version_document("", "v1", &resources_of("", "v1"))
}

fn apps_doc() -> Value {
    group_version_document("apps", "v1", &resources_of("apps", "v1"))
}

/// Resolves a `#/components/schemas/...` reference inside `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let name = reference.strip_prefix("#/components/schemas/")?;
    doc["components"]["schemas"].get(name)
}

/// The reference of a property: a direct `$ref` or a single-element `allOf`.
fn property_ref(property: &Value) -> Option<&str> {
    property["$ref"]
        .as_str()
        .or_else(|| property["allOf"][0]["$ref"].as_str())
}

/// Follows `schema.properties[field]` to the referenced schema.
fn follow<'a>(doc: &'a Value, schema: &'a Value, field: &str) -> &'a Value {
    let property = &schema["properties"][field];
    assert!(property.is_object(), "no property {field}");
    let reference = property_ref(property).unwrap_or_else(|| panic!("{field} has no $ref"));
    resolve(doc, reference).unwrap_or_else(|| panic!("{reference} does not resolve"))
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s);
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn has_field_validation(op: &Value) -> bool {
    op["parameters"].as_array().is_some_and(|params| {
        params
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    })
}

#[test]
fn core_configmap_patch_has_field_validation_and_gvk() {
    let doc = core_doc();
    let op = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        op["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(op["x-kubernetes-action"], "patch");
    assert!(has_field_validation(op));
    assert!(op.get("requestBody").is_none());
    assert!(op["responses"]["200"].is_object());
}

#[test]
fn core_document_every_patch_op_has_no_request_body() {
    let doc = core_doc();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op.get("requestBody").is_none(), "{method} {path}");
            if method == "patch" {
                assert!(has_field_validation(op), "{path}");
                assert!(op["x-kubernetes-group-version-kind"].is_object(), "{path}");
            }
        }
    }
}

#[test]
fn core_nodes_cluster_scoped_path_has_no_namespace() {
    let doc = core_doc();
    let paths = doc["paths"].as_object().unwrap();
    let op = &paths["/api/v1/nodes/{name}"]["patch"];
    assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Node");
    assert!(paths.contains_key("/api/v1/nodes"));
    assert!(paths.contains_key("/api/v1/nodes/{name}/status"));
    assert!(!paths
        .keys()
        .any(|p| p.contains("namespaces/{namespace}/nodes")));
    // Namespaces themselves are cluster-scoped too.
    assert!(paths.contains_key("/api/v1/namespaces/{name}"));
}

#[test]
fn core_pod_subresources_have_their_kinds() {
    let doc = core_doc();
    let paths = &doc["paths"];
    let eviction = &paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
    assert_eq!(
        eviction["x-kubernetes-group-version-kind"],
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    );
    let status = &paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"];
    assert_eq!(status["x-kubernetes-group-version-kind"]["kind"], "Pod");
    assert!(has_field_validation(status));
    let exec = &paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
    assert_eq!(exec["get"]["x-kubernetes-action"], "connect");
    let token = &paths["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"]["post"];
    assert_eq!(
        token["x-kubernetes-group-version-kind"]["kind"],
        "TokenRequest"
    );
    // Binding is create-only: a collection POST and no item path.
    assert!(paths["/api/v1/namespaces/{namespace}/bindings"]["post"].is_object());
    assert!(paths
        .get("/api/v1/namespaces/{namespace}/bindings/{name}")
        .is_none());
    // Cross-namespace list.
    assert_eq!(paths["/api/v1/pods"]["get"]["x-kubernetes-action"], "list");
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.policy.v1.Eviction"]["x-kubernetes-group-version-kind"],
        json!([{"group": "policy", "version": "v1", "kind": "Eviction"}])
    );
}

#[test]
fn apps_deployment_schema_has_gvk_and_resolvable_strategy_chain() {
    let doc = apps_doc();
    let deployment = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    assert_eq!(deployment["type"], "object");
    assert!(deployment["description"]
        .as_str()
        .unwrap()
        .contains("Deployment"));
    assert!(deployment["properties"]["spec"]["description"].is_string());

    let spec = follow(&doc, deployment, "spec");
    assert_eq!(spec["type"], "object");
    assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(spec["properties"]["strategy"]["description"].is_string());

    let strategy = follow(&doc, spec, "strategy");
    assert!(strategy["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert!(strategy["properties"]["type"]["description"].is_string());
    let rolling = follow(&doc, strategy, "rollingUpdate");
    assert!(rolling["properties"]["maxSurge"].is_object());

    let metadata = follow(&doc, deployment, "metadata");
    assert!(metadata["properties"]["labels"].is_object());
    assert!(doc["components"]["schemas"]
        .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        .is_some());

    // The pod template's containers, as `kubectl explain deployment.spec.template.spec.containers`.
    let template = follow(&doc, spec, "template");
    let pod_spec = follow(&doc, template, "spec");
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["type"], "array");
    let container_ref = containers["items"]["$ref"].as_str().unwrap();
    assert!(resolve(&doc, container_ref).is_some());
}

#[test]
fn apps_deployment_scale_subresource_uses_autoscaling_scale() {
    let doc = apps_doc();
    let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert!(has_field_validation(&scale["patch"]));
    let schema = &doc["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "autoscaling", "version": "v1", "kind": "Scale"}])
    );
}

#[test]
fn builtin_documents_every_ref_resolves_and_every_kind_is_tagged() {
    for ((group, version), resources) in builtin_resources() {
        let started = Instant::now();
        let doc = group_version_document(&group, &version, &resources);
        let elapsed = started.elapsed();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty(), "{group}/{version}");
        for reference in refs {
            assert!(
                resolve(&doc, reference).is_some(),
                "{group}/{version}: {reference} does not resolve"
            );
        }
        for r in &resources {
            let tagged = doc["components"]["schemas"]
                .as_object()
                .unwrap()
                .values()
                .any(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| {
                            gvks.contains(
                                &json!({"group": group, "version": version, "kind": r.kind}),
                            )
                        })
                });
            assert!(tagged, "{group}/{version} {} has no tagged schema", r.kind);
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let collection = if r.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{prefix}/{}", r.plural)
            };
            assert!(
                doc["paths"][&collection]["post"].is_object(),
                "{collection} has no POST"
            );
        }
        // Operation ids are unique within a document.
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(id) = op["operationId"].as_str() {
                    assert!(
                        ids.insert(id.to_string()),
                        "{group}/{version}: duplicate {id}"
                    );
                }
            }
        }
        println!("{group}/{version}: built in {elapsed:?}");
    }
}

#[test]
fn builtin_schemas_use_upstream_names() {
    for b in builtin::BUILTIN_KINDS {
        let name = (b.schema_name)();
        assert!(
            name.starts_with("io.k8s.") && name.ends_with(&format!(".{}.{}", b.version, b.kind)),
            "{name}"
        );
    }
    let doc = core_doc();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "io.k8s.api.core.v1.Pod",
        "io.k8s.api.core.v1.PodSpec",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
}

#[test]
fn documents_only_contain_reachable_schemas() {
    let doc = group_version_document(
        "coordination.k8s.io",
        "v1",
        &resources_of("coordination.k8s.io", "v1"),
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("io.k8s.api.coordination.v1.Lease"));
    assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
    assert!(!schemas.contains_key("io.k8s.api.apps.v1.Deployment"));
    assert!(schemas.len() < 20, "{} schemas", schemas.len());
}

fn widget(subresources: &[&str]) -> ResourceDoc {
    ResourceDoc {
        group: "example.com".into(),
        version: "v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
        namespaced: true,
        subresources: subresources.iter().map(|s| s.to_string()).collect(),
        crd_schema: Some(json!({
            "type": "object",
            "description": "A widget.",
            "properties": {
                "spec": {
                    "type": "object",
                    "description": "The widget's spec.",
                    "properties": {"size": {"type": "integer", "description": "How big."}}
                }
            }
        })),
    }
}

#[test]
fn crd_document_has_schema_with_gvk_and_metadata_ref() {
    let doc = group_version_document("example.com", "v1", &[widget(&["status", "scale"])]);
    let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(schema["description"], "A widget.");
    assert_eq!(
        schema["properties"]["spec"]["properties"]["size"]["type"],
        "integer"
    );
    assert_eq!(schema["properties"]["apiVersion"]["type"], "string");
    assert_eq!(schema["properties"]["kind"]["type"], "string");
    let metadata = follow(&doc, schema, "metadata");
    assert!(metadata["properties"]["name"].is_object());

    let patch =
        &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "example.com", "version": "v1", "kind": "Widget"})
    );
    assert!(has_field_validation(patch));
    let scale = &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}/scale"];
    assert_eq!(
        scale["get"]["x-kubernetes-group-version-kind"]["kind"],
        "Scale"
    );

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for reference in refs {
        assert!(resolve(&doc, reference).is_some(), "{reference}");
    }
}

#[test]
fn unknown_builtin_kind_gets_an_open_schema() {
    let r = res(
        "resource.k8s.io",
        "v1beta1",
        "DeviceClass",
        "deviceclasses",
        false,
    );
    let doc = group_version_document("resource.k8s.io", "v1beta1", &[r]);
    let schema = &doc["components"]["schemas"]["io.k8s.api.resource.v1beta1.DeviceClass"];
    assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        schema["x-kubernetes-group-version-kind"][0]["kind"],
        "DeviceClass"
    );
    assert!(
        doc["paths"]["/apis/resource.k8s.io/v1beta1/deviceclasses/{name}"]["patch"].is_object()
    );
}

#[test]
fn index_lists_documents_with_matching_hashes() {
    let core = core_doc();
    let apps = apps_doc();
    let crd = group_version_document("example.com", "v1", &[widget(&[])]);
    let idx = index(&[
        ("".into(), "v1".into(), core.clone()),
        ("apps".into(), "v1".into(), apps.clone()),
        ("example.com".into(), "v1".into(), crd.clone()),
    ]);
    let paths = idx["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 3);
    assert_eq!(
        paths["api/v1"]["serverRelativeURL"],
        format!("/openapi/v3/api/v1?hash={}", document_hash(&core))
    );
    assert_eq!(
        paths["apis/apps/v1"]["serverRelativeURL"],
        format!("/openapi/v3/apis/apps/v1?hash={}", document_hash(&apps))
    );
    assert_eq!(
        paths["apis/example.com/v1"]["serverRelativeURL"],
        format!(
            "/openapi/v3/apis/example.com/v1?hash={}",
            document_hash(&crd)
        )
    );
}

#[test]
fn document_hash_is_stable_and_content_sensitive() {
    let a = apps_doc();
    let b = apps_doc();
    assert_eq!(document_hash(&a), document_hash(&b));
    let hash = document_hash(&a);
    assert!(hash
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    assert_eq!(hash.len(), 128);
    let other = group_version_document(
        "apps",
        "v1",
        &[res("apps", "v1", "Deployment", "deployments", true)],
    );
    assert_ne!(document_hash(&a), document_hash(&other));
}

#[test]
fn apps_document_serialized_size_is_reasonable() {
    let started = Instant::now();
    let doc = apps_doc();
    let built = started.elapsed();
    let bytes = serde_json::to_vec(&doc).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap().len();
    let paths = doc["paths"].as_object().unwrap().len();
    println!(
        "apps/v1: {} bytes, {schemas} schemas, {paths} paths, built in {built:?}",
        bytes.len()
    );
    assert!(bytes.len() > 50_000, "{} bytes", bytes.len());
    assert!(bytes.len() < 2_000_000, "{} bytes", bytes.len());
    let core = serde_json::to_vec(&core_doc()).unwrap();
    println!("core/v1: {} bytes", core.len());
    assert!(core.len() < 4_000_000, "{} bytes", core.len());
}
