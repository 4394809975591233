//! Tests of create/update validation of built-in kinds.

use serde_json::{json, Value};

use crate::{apply_defaults, validate_create, validate_update, FieldError};

fn err(reason: &str, field: &str, message: &str) -> FieldError {
    FieldError {
        reason: reason.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn deployment() -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}});
    apply_defaults("apps", "v1", "Deployment", &mut d);
    d
}

fn create(g: &str, k: &str, obj: &Value) -> Vec<FieldError> {
    validate_create(g, "v1", k, obj)
}

#[test]
fn valid_defaulted_objects_have_no_errors() {
    assert_eq!(create("apps", "Deployment", &deployment()), vec![]);
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "volumeMounts": [{"name": "v", "mountPath": "/v"}], "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}],
        "volumes": [{"name": "v"}]}});
    apply_defaults("", "v1", "Pod", &mut pod);
    assert_eq!(create("", "Pod", &pod), vec![]);
    let mut svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    apply_defaults("", "v1", "Service", &mut svc);
    assert_eq!(create("", "Service", &svc), vec![]);
    let mut job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "x"}]}}}});
    apply_defaults("batch", "v1", "Job", &mut job);
    assert_eq!(create("batch", "Job", &job), vec![]);
    let cm = json!({"metadata": {"name": "c"}, "data": {"a.conf": "x", "KEY_1": "y"}});
    assert_eq!(create("", "ConfigMap", &cm), vec![]);
}

#[test]
fn deployment_negative_replicas_rejected() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueInvalid",
            "spec.replicas",
            "Invalid value: -1: must be greater than or equal to 0"
        )]
    );
}

#[test]
fn bad_name_rejected_with_rfc1123_subdomain_message() {
    let mut d = deployment();
    d["metadata"]["name"] = json!("Bad_Name");
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueInvalid",
            "metadata.name",
            "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )]
    );
}

#[test]
fn namespace_and_service_names_use_label_rules() {
    let ns = json!({"metadata": {"name": "a.b"}});
    let errs = create("", "Namespace", &ns);
    assert_eq!(errs.len(), 1);
    assert!(errs[0]
        .message
        .starts_with("Invalid value: \"a.b\": a lowercase RFC 1123 label must consist"));
    let svc = json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}});
    let errs = create("", "Service", &svc);
    assert_eq!(errs[0].field, "metadata.name");
    assert!(
        errs[0].message.contains("a DNS-1035 label must consist"),
        "{errs:?}"
    );
}

#[test]
fn missing_name_required() {
    let cm = json!({"metadata": {}});
    assert_eq!(
        create("", "ConfigMap", &cm),
        vec![err(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required"
        )]
    );
}

#[test]
fn selector_mismatch_rejected() {
    let mut d = deployment();
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other", "tier": "x"});
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueInvalid",
            "spec.template.metadata.labels",
            "Invalid value: map[string]string{\"app\":\"other\", \"tier\":\"x\"}: `selector` does not match template `labels`"
        )]
    );
}

#[test]
fn missing_and_empty_selector_rejected() {
    let mut d = deployment();
    d["spec"].as_object_mut().unwrap().shift_remove("selector");
    let errs = create("apps", "Deployment", &d);
    assert_eq!(
        errs[0],
        err("FieldValueRequired", "spec.selector", "Required value")
    );
    d["spec"]["selector"] = json!({});
    let errs = create("apps", "Deployment", &d);
    assert_eq!(
        errs,
        vec![err(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
        )]
    );
}

#[test]
fn missing_image_rejected() {
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .shift_remove("image");
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueRequired",
            "spec.template.spec.containers[0].image",
            "Required value"
        )]
    );
}

#[test]
fn pod_spec_errors_reported_with_paths() {
    let pod = json!({"metadata": {"name": "p"}, "spec": {
        "restartPolicy": "Sometimes", "dnsPolicy": "ClusterFirst",
        "containers": [
            {"name": "c", "image": "x", "ports": [{"containerPort": 70000}],
             "volumeMounts": [{"name": "missing", "mountPath": "/m"}],
             "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
            {"name": "c", "image": "y"}
        ],
        "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}});
    let errs = create("", "Pod", &pod);
    let expected = vec![
        err("FieldValueDuplicate", "spec.volumes[1].name", "Duplicate value: \"v\""),
        err("FieldValueInvalid", "spec.containers[0].ports[0].containerPort", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        err("FieldValueInvalid", "spec.containers[0].resources.requests[cpu]", "Invalid value: \"2\": must be less than or equal to cpu limit of 1"),
        err("FieldValueNotFound", "spec.containers[0].volumeMounts[0].name", "Not found: \"missing\""),
        err("FieldValueDuplicate", "spec.containers[1].name", "Duplicate value: \"c\""),
        err(
            "FieldValueNotSupported",
            "spec.restartPolicy",
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
    ];
    assert_eq!(errs, expected);
    let empty = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
    assert_eq!(
        create("", "Pod", &empty),
        vec![err(
            "FieldValueRequired",
            "spec.containers",
            "Required value"
        )]
    );
}

#[test]
fn labels_and_annotations_syntax_and_size() {
    let cm = json!({"metadata": {"name": "c", "labels": {"bad key": "v", "ok": "bad value!"},
        "annotations": {"big": "x".repeat(300 * 1024)}}});
    let errs = create("", "ConfigMap", &cm);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].field, "metadata.labels");
    assert!(errs[0].message.starts_with(
        "Invalid value: \"bad key\": name part must consist of alphanumeric characters"
    ));
    assert!(errs[1]
        .message
        .starts_with("Invalid value: \"bad value!\": a valid label must be an empty string"));
    assert_eq!(
        errs[2],
        err(
            "FieldValueTooLong",
            "metadata.annotations",
            "Too long: may not be more than 262144 bytes"
        )
    );
}

#[test]
fn config_map_and_secret_keys_and_size() {
    let cm = json!({"metadata": {"name": "c"}, "data": {"bad/key": "x"}});
    let errs = create("", "ConfigMap", &cm);
    assert_eq!(errs[0].field, "data[bad/key]");
    assert!(errs[0].message.starts_with(
        "Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters"
    ));
    let big = json!({"metadata": {"name": "c"}, "data": {"a": "x".repeat(1024 * 1024 + 1)}});
    assert_eq!(
        create("", "ConfigMap", &big),
        vec![err(
            "FieldValueTooLong",
            "[]",
            "Too long: may not be more than 1048576 bytes"
        )]
    );
    let tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA=="}});
    assert_eq!(
        create("", "Secret", &tls),
        vec![err("FieldValueRequired", "data[tls.key]", "Required value")]
    );
}

#[test]
fn service_rules() {
    let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "Weird", "clusterIP": "abc",
        "ports": [{"port": 0, "name": "a"}, {"port": 80, "name": "a", "nodePort": 80}]}});
    let errs = create("", "Service", &svc);
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.type",
            "spec.clusterIPs[0]",
            "spec.ports[0].port",
            "spec.ports[1].name",
            "spec.ports[1].nodePort"
        ]
    );
    assert_eq!(
        errs[0].message,
        "Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
    );
    let np = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
    assert_eq!(
        create("", "Service", &np),
        vec![err(
            "FieldValueInvalid",
            "spec.ports[0].nodePort",
            "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
        )]
    );
    let no_ports = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}});
    assert_eq!(
        create("", "Service", &no_ports),
        vec![err("FieldValueRequired", "spec.ports", "Required value")]
    );
    let headless = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "None"}});
    assert_eq!(create("", "Service", &headless), vec![]);
    let ext = json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName"}});
    assert_eq!(
        create("", "Service", &ext),
        vec![err(
            "FieldValueRequired",
            "spec.externalName",
            "Required value"
        )]
    );
}

#[test]
fn job_and_cronjob_rules() {
    let job = json!({"metadata": {"name": "j"}, "spec": {"parallelism": -1, "template": {"spec": {
        "restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}});
    assert_eq!(
        create("batch", "Job", &job),
        vec![
            err(
                "FieldValueInvalid",
                "spec.parallelism",
                "Invalid value: -1: must be greater than or equal to 0"
            ),
            err(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ),
        ]
    );
    let cj = json!({"metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}});
    assert_eq!(
        create("batch", "CronJob", &cj),
        vec![err("FieldValueRequired", "spec.schedule", "Required value")]
    );
}

#[test]
fn deployment_strategy_rules() {
    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueForbidden",
            "spec.strategy.rollingUpdate",
            "Forbidden: may not be specified when strategy `type` is 'Recreate'"
        )]
    );
    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    assert_eq!(
        create("apps", "Deployment", &d),
        vec![err(
            "FieldValueInvalid",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
        )]
    );
}

#[test]
fn update_selector_is_immutable() {
    let old = deployment();
    let mut new = deployment();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    assert_eq!(
        validate_update("apps", "v1", "Deployment", &new, &old),
        vec![err(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        )]
    );
    let mut scaled = deployment();
    scaled["spec"]["replicas"] = json!(5);
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    assert_eq!(
        validate_update("apps", "v1", "Deployment", &scaled, &old),
        vec![]
    );
}

#[test]
fn update_pod_spec_only_image_may_change() {
    let mut old =
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
    apply_defaults("", "v1", "Pod", &mut old);
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("b");
    assert_eq!(validate_update("", "v1", "Pod", &new, &old), vec![]);
    new["spec"]["restartPolicy"] = json!("Never");
    let errs = validate_update("", "v1", "Pod", &new, &old);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert_eq!(errs[0].reason, "FieldValueForbidden");
    assert!(errs[0].message.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));
}

#[test]
fn update_immutable_configmap_statefulset_service_job() {
    let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
    let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
    assert_eq!(
        validate_update("", "v1", "ConfigMap", &new, &old),
        vec![err(
            "FieldValueForbidden",
            "data",
            "Forbidden: field is immutable when `immutable` is set"
        )]
    );
    let mut sts_old = json!({"metadata": {"name": "s"}, "spec": {"serviceName": "a", "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    apply_defaults("apps", "v1", "StatefulSet", &mut sts_old);
    let mut sts_new = sts_old.clone();
    sts_new["spec"]["replicas"] = json!(3);
    assert_eq!(
        validate_update("apps", "v1", "StatefulSet", &sts_new, &sts_old),
        vec![]
    );
    sts_new["spec"]["serviceName"] = json!("b");
    let errs = validate_update("apps", "v1", "StatefulSet", &sts_new, &sts_old);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        (errs[0].field.as_str(), errs[0].reason.as_str()),
        ("spec", "FieldValueForbidden")
    );
    let svc_old = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [{"port": 80}]}});
    let svc_new = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.43.0.11", "clusterIPs": ["10.43.0.11"], "ports": [{"port": 80}]}});
    assert_eq!(
        validate_update("", "v1", "Service", &svc_new, &svc_old),
        vec![err(
            "FieldValueInvalid",
            "spec.clusterIPs[0]",
            "Invalid value: \"10.43.0.11\": may not change once set"
        )]
    );
    let job_old = json!({"metadata": {"name": "j"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
    let mut job_new = job_old.clone();
    job_new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
    let errs = validate_update("batch", "v1", "Job", &job_new, &job_old);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.template");
    assert!(errs[0].message.ends_with(": field is immutable"));
}

#[test]
fn update_name_is_immutable() {
    let old = json!({"metadata": {"name": "a"}});
    let new = json!({"metadata": {"name": "b"}});
    assert_eq!(
        validate_update("", "v1", "ConfigMap", &new, &old),
        vec![err(
            "FieldValueInvalid",
            "metadata.name",
            "Invalid value: \"b\": field is immutable"
        )]
    );
}

#[test]
fn rbac_crd_hpa_ingress_rules() {
    let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Thing", "name": "x"},
        "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]});
    assert_eq!(
        validate_create("rbac.authorization.k8s.io", "v1", "RoleBinding", &rb),
        vec![err(
            "FieldValueNotSupported",
            "roleRef.kind",
            "Unsupported value: \"Thing\": supported values: \"Role\", \"ClusterRole\""
        )]
    );
    let crd = json!({"metadata": {"name": "wrong.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
    assert_eq!(
        validate_create(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            &crd
        ),
        vec![err(
            "FieldValueInvalid",
            "metadata.name",
            "Invalid value: \"wrong.example.com\": must be spec.names.plural+\".\"+spec.group"
        )]
    );
    let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "minReplicas": 3, "maxReplicas": 2}});
    assert_eq!(
        validate_create("autoscaling", "v2", "HorizontalPodAutoscaler", &hpa),
        vec![err(
            "FieldValueInvalid",
            "spec.maxReplicas",
            "Invalid value: 2: must be greater than or equal to `minReplicas`"
        )]
    );
    let ing = json!({"metadata": {"name": "i"}, "spec": {"rules": [{"http": {"paths": [{"path": "api", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    assert_eq!(
        validate_create("networking.k8s.io", "v1", "Ingress", &ing),
        vec![err(
            "FieldValueInvalid",
            "spec.rules[0].http.paths[0].path",
            "Invalid value: \"api\": must be an absolute path"
        )]
    );
}

#[test]
fn finalizer_names_standard_or_qualified_for_builtins_only() {
    let cm = json!({"metadata": {"name": "c", "finalizers": ["kubernetes.io/pvc-protection", "orphan", "custom"]}});
    assert_eq!(
        create("", "ConfigMap", &cm),
        vec![err(
            "FieldValueInvalid",
            "metadata.finalizers[2]",
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        )]
    );
    // Custom resources are validated with an empty GVK for their metadata.
    assert_eq!(validate_create("", "", "", &cm), vec![]);
}

#[test]
fn statefulset_mounts_of_claim_templates_are_valid_unknown_mounts_are_not() {
    let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"serviceName": "web", "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "x",
                                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
    apply_defaults("apps", "v1", "StatefulSet", &mut sts);
    assert_eq!(create("apps", "StatefulSet", &sts), vec![]);
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = json!("other");
    assert_eq!(create("apps", "StatefulSet", &sts).len(), 1);
}
