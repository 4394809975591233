//! Upstream defaulting of built-in kinds (SetDefaults_* plus the few admission defaults
//! every cluster applies to pods), on the JSON form of the object.

use serde_json::{json, Map, Value};

type Obj = Map<String, Value>;

/// Sets `key` to `value` when absent or null.
fn def(m: &mut Obj, key: &str, value: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// The object at `key`, created (empty) when absent or null.
fn child<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    if matches!(m.get(key), None | Some(Value::Null)) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at `key` when present.
fn existing<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

fn each_obj(m: &mut Obj, key: &str, mut f: impl FnMut(&mut Obj)) {
    if let Some(Value::Array(items)) = m.get_mut(key) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

fn str_of<'a>(m: &'a Obj, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

pub(crate) fn apply(group: &str, version: &str, kind: &str, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (group, version, kind) {
        ("", "v1", "Pod") => pod(o),
        ("", "v1", "PodTemplate") => {
            if let Some(t) = existing(o, "template") {
                pod_template(t);
            }
        }
        ("", "v1", "ReplicationController") => replication_controller(o),
        ("", "v1", "Service") => service(o),
        ("", "v1", "Secret") => def(o, "type", json!("Opaque")),
        ("", "v1", "Namespace") => namespace(o),
        ("", "v1", "Node") => node(o),
        ("", "v1", "PersistentVolume") => persistent_volume(o),
        ("", "v1", "PersistentVolumeClaim") => pvc(o),
        ("", "v1", "Endpoints") => each_obj(o, "subsets", |s| {
            each_obj(s, "ports", |p| def(p, "protocol", json!("TCP")))
        }),
        ("", "v1", "LimitRange") => limit_range(o),
        ("apps", "v1", "Deployment") => deployment(o),
        ("apps", "v1", "ReplicaSet") => {
            if let Some(spec) = existing(o, "spec") {
                def(spec, "replicas", json!(1));
                template_of(spec);
            }
        }
        ("apps", "v1", "StatefulSet") => stateful_set(o),
        ("apps", "v1", "DaemonSet") => daemon_set(o),
        ("batch", "v1", "Job") => job(o),
        ("batch", "v1", "CronJob") => cron_job(o),
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => hpa_v2(o),
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            if let Some(spec) = existing(o, "spec") {
                def(spec, "minReplicas", json!(1));
            }
        }
        ("discovery.k8s.io", "v1", "EndpointSlice") => each_obj(o, "ports", |p| {
            def(p, "name", json!(""));
            def(p, "protocol", json!("TCP"));
        }),
        ("networking.k8s.io", "v1", "NetworkPolicy") => network_policy(o),
        ("networking.k8s.io", "v1", "Ingress") => {
            if let Some(spec) = existing(o, "spec") {
                each_obj(spec, "rules", |r| {
                    if let Some(http) = existing(r, "http") {
                        each_obj(http, "paths", |p| {
                            def(p, "pathType", json!("ImplementationSpecific"))
                        });
                    }
                });
            }
        }
        ("rbac.authorization.k8s.io", "v1", "RoleBinding" | "ClusterRoleBinding") => {
            each_obj(o, "subjects", |s| {
                let group = match str_of(s, "kind") {
                    Some("User" | "Group") => "rbac.authorization.k8s.io",
                    _ => "",
                };
                if str_of(s, "apiGroup").is_none_or(str::is_empty) && !group.is_empty() {
                    s.insert("apiGroup".into(), json!(group));
                }
            })
        }
        ("storage.k8s.io", "v1", "StorageClass") => {
            def(o, "reclaimPolicy", json!("Delete"));
            def(o, "volumeBindingMode", json!("Immediate"));
        }
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => crd(o),
        _ => {}
    }
}

fn pod(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    pod_spec(spec);
    // SetDefaults_PodSpec / SetDefaults_Pod (pods only, not templates).
    def(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers"] {
        each_obj(spec, key, |c| {
            if let Some(res) = existing(c, "resources") {
                let limits = res.get("limits").and_then(Value::as_object).cloned();
                if let Some(limits) = limits.filter(|l| !l.is_empty()) {
                    if let Some(req) = child(res, "requests") {
                        for (k, v) in limits {
                            req.entry(k).or_insert(v);
                        }
                    }
                }
            }
        });
    }
    // ServiceAccount admission.
    let deprecated = str_of(spec, "serviceAccount")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let name = str_of(spec, "serviceAccountName")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let sa = name.or(deprecated).unwrap_or_else(|| "default".to_string());
    spec.insert("serviceAccountName".into(), json!(sa.clone()));
    spec.insert("serviceAccount".into(), json!(sa));
    // Priority admission (no global default PriorityClass).
    if str_of(spec, "priorityClassName").is_none_or(str::is_empty) {
        def(spec, "priority", json!(0));
    }
    // DefaultTolerationSeconds admission.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if tolerations.is_null() {
        *tolerations = json!([]);
    }
    if let Value::Array(list) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let covered = list.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                (k == key || (k.is_empty() && op == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !covered {
                list.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }));
            }
        }
    }
}

/// Defaults of a `template` (PodTemplateSpec) held by `spec`.
fn template_of(spec: &mut Obj) {
    if let Some(t) = existing(spec, "template") {
        pod_template(t);
    }
}

fn pod_template(t: &mut Obj) {
    if let Some(spec) = existing(t, "spec") {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut Obj) {
    def(spec, "dnsPolicy", json!("ClusterFirst"));
    def(spec, "restartPolicy", json!("Always"));
    def(spec, "terminationGracePeriodSeconds", json!(30));
    def(spec, "securityContext", json!({}));
    def(spec, "schedulerName", json!("default-scheduler"));
    let deprecated = str_of(spec, "serviceAccount")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(sa) = deprecated {
        if str_of(spec, "serviceAccountName").is_none_or(str::is_empty) {
            spec.insert("serviceAccountName".into(), json!(sa));
        }
    }
    let name = str_of(spec, "serviceAccountName")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(sa) = name {
        if str_of(spec, "serviceAccount").is_none_or(str::is_empty) {
            spec.insert("serviceAccount".into(), json!(sa));
        }
    }
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        each_obj(spec, key, |c| container(c, host_network));
    }
    each_obj(spec, "volumes", volume);
}

fn container(c: &mut Obj, host_network: bool) {
    def(c, "terminationMessagePath", json!("/dev/termination-log"));
    def(c, "terminationMessagePolicy", json!("File"));
    if str_of(c, "imagePullPolicy").is_none_or(str::is_empty) {
        let image = str_of(c, "image").unwrap_or("");
        let policy = if image_tag_is_latest(image) {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    each_obj(c, "ports", |p| {
        def(p, "protocol", json!("TCP"));
        if host_network {
            if let Some(cp) = p.get("containerPort").cloned() {
                def(p, "hostPort", cp);
            }
        }
    });
    each_obj(c, "env", |e| {
        if let Some(vf) = existing(e, "valueFrom") {
            if let Some(fr) = existing(vf, "fieldRef") {
                def(fr, "apiVersion", json!("v1"));
            }
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, probe) {
            def(p, "timeoutSeconds", json!(1));
            def(p, "periodSeconds", json!(10));
            def(p, "successThreshold", json!(1));
            def(p, "failureThreshold", json!(3));
            handler(p);
            if let Some(g) = existing(p, "grpc") {
                def(g, "service", json!(""));
            }
        }
    }
    if let Some(lc) = existing(c, "lifecycle") {
        for h in ["postStart", "preStop"] {
            if let Some(h) = existing(lc, h) {
                handler(h);
            }
        }
    }
}

fn handler(h: &mut Obj) {
    if let Some(g) = existing(h, "httpGet") {
        if str_of(g, "path").is_none_or(str::is_empty) {
            g.insert("path".into(), json!("/"));
        }
        if str_of(g, "scheme").is_none_or(str::is_empty) {
            g.insert("scheme".into(), json!("HTTP"));
        }
    }
}

/// `Always` when the image has no tag (and no digest) or the tag is `latest`.
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

const SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Obj) {
    if !SOURCES
        .iter()
        .any(|s| v.get(*s).is_some_and(|x| !x.is_null()))
    {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = existing(v, src) {
            def(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = existing(v, "hostPath") {
        def(h, "type", json!(""));
    }
    if let Some(d) = existing(v, "downwardAPI") {
        each_obj(d, "items", downward_item);
    }
    if let Some(p) = existing(v, "projected") {
        each_obj(p, "sources", |s| {
            if let Some(d) = existing(s, "downwardAPI") {
                each_obj(d, "items", downward_item);
            }
        });
    }
    if let Some(e) = existing(v, "ephemeral") {
        if let Some(t) = existing(e, "volumeClaimTemplate") {
            if let Some(spec) = existing(t, "spec") {
                def(spec, "volumeMode", json!("Filesystem"));
            }
        }
    }
}

fn downward_item(i: &mut Obj) {
    if let Some(fr) = existing(i, "fieldRef") {
        def(fr, "apiVersion", json!("v1"));
    }
}

fn replication_controller(o: &mut Obj) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    if let Some(labels) = &template_labels {
        if let Some(meta) = child(o, "metadata") {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                meta.insert("labels".into(), labels.clone());
            }
        }
    }
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    if let Some(labels) = template_labels {
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
        {
            spec.insert("selector".into(), labels);
        }
    }
    def(spec, "replicas", json!(1));
    template_of(spec);
}

fn service(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    def(spec, "type", json!("ClusterIP"));
    def(spec, "sessionAffinity", json!("None"));
    let ty = str_of(spec, "type").unwrap_or("ClusterIP").to_string();
    if str_of(spec, "sessionAffinity") == Some("ClientIP") {
        if let Some(cfg) = child(spec, "sessionAffinityConfig") {
            if let Some(ip) = child(cfg, "clientIP") {
                def(ip, "timeoutSeconds", json!(10800));
            }
        }
    }
    each_obj(spec, "ports", |p| {
        def(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            match p.get("targetPort") {
                None | Some(Value::Null) => {
                    p.insert("targetPort".into(), port);
                }
                Some(Value::String(s)) if s.is_empty() => {
                    p.insert("targetPort".into(), port);
                }
                Some(Value::Number(n)) if n.as_i64() == Some(0) => {
                    p.insert("targetPort".into(), port);
                }
                _ => {}
            }
        }
    });
    if ty == "NodePort" || ty == "LoadBalancer" {
        def(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        def(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        def(spec, "internalTrafficPolicy", json!("Cluster"));
        let families_given = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !families_given {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
        def(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
}

fn namespace(o: &mut Obj) {
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        if let Some(meta) = child(o, "metadata") {
            if let Some(labels) = child(meta, "labels") {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    if let Some(spec) = child(o, "spec") {
        def(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(o, "status") {
        if str_of(status, "phase").is_none_or(str::is_empty) {
            status.insert("phase".into(), json!("Active"));
        }
    }
}

fn node(o: &mut Obj) {
    if let Some(status) = existing(o, "status") {
        if let Some(cap) = status.get("capacity").cloned() {
            def(status, "allocatable", cap);
        }
    }
}

fn persistent_volume(o: &mut Obj) {
    if let Some(spec) = child(o, "spec") {
        def(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        def(spec, "volumeMode", json!("Filesystem"));
        if let Some(h) = existing(spec, "hostPath") {
            def(h, "type", json!(""));
        }
    }
    if let Some(status) = child(o, "status") {
        def(status, "phase", json!("Pending"));
    }
}

fn pvc(o: &mut Obj) {
    if let Some(spec) = child(o, "spec") {
        def(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(o, "status") {
        def(status, "phase", json!("Pending"));
    }
}

fn limit_range(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    each_obj(spec, "limits", |item| {
        if str_of(item, "type") != Some("Container") {
            return;
        }
        let mut default = item
            .get("default")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut request = item
            .get("defaultRequest")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(max) = item.get("max").and_then(Value::as_object) {
            for (k, v) in max {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for (k, v) in &default {
            request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Some(min) = item.get("min").and_then(Value::as_object) {
            for (k, v) in min {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if !default.is_empty() {
            item.insert("default".into(), Value::Object(default));
        }
        if !request.is_empty() {
            item.insert("defaultRequest".into(), Value::Object(request));
        }
    });
}

fn deployment(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    def(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        if str_of(strategy, "type").is_none_or(str::is_empty) {
            strategy.insert("type".into(), json!("RollingUpdate"));
        }
        if str_of(strategy, "type") == Some("RollingUpdate") {
            if let Some(ru) = child(strategy, "rollingUpdate") {
                def(ru, "maxUnavailable", json!("25%"));
                def(ru, "maxSurge", json!("25%"));
            }
        }
    }
    def(spec, "revisionHistoryLimit", json!(10));
    def(spec, "progressDeadlineSeconds", json!(600));
    template_of(spec);
}

fn stateful_set(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    def(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(us) = child(spec, "updateStrategy") {
        if str_of(us, "type").is_none_or(str::is_empty) {
            us.insert("type".into(), json!("RollingUpdate"));
        }
        if str_of(us, "type") == Some("RollingUpdate") {
            if let Some(ru) = child(us, "rollingUpdate") {
                def(ru, "partition", json!(0));
            }
        }
    }
    if let Some(p) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        for k in ["whenDeleted", "whenScaled"] {
            if str_of(p, k).is_none_or(str::is_empty) {
                p.insert(k.into(), json!("Retain"));
            }
        }
    }
    def(spec, "replicas", json!(1));
    def(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
    each_obj(spec, "volumeClaimTemplates", |t| {
        if let Some(s) = child(t, "spec") {
            def(s, "volumeMode", json!("Filesystem"));
        }
        if let Some(s) = child(t, "status") {
            def(s, "phase", json!("Pending"));
        }
    });
}

fn daemon_set(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    if let Some(us) = child(spec, "updateStrategy") {
        if str_of(us, "type").is_none_or(str::is_empty) {
            us.insert("type".into(), json!("RollingUpdate"));
        }
        if str_of(us, "type") == Some("RollingUpdate") {
            if let Some(ru) = child(us, "rollingUpdate") {
                def(ru, "maxUnavailable", json!(1));
                def(ru, "maxSurge", json!(0));
            }
        }
    }
    def(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
}

fn job_spec(spec: &mut Obj) {
    template_of(spec);
}

fn job(o: &mut Obj) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(meta) = child(o, "metadata") {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                meta.insert("labels".into(), labels);
            }
        }
    }
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    let unset = |s: &Obj, k: &str| matches!(s.get(k), None | Some(Value::Null));
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    def(spec, "parallelism", json!(1));
    if unset(spec, "backoffLimit") {
        let limit = if unset(spec, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    def(spec, "completionMode", json!("NonIndexed"));
    def(spec, "suspend", json!(false));
    if let Some(pfp) = existing(spec, "podFailurePolicy") {
        each_obj(pfp, "rules", |rule| {
            each_obj(rule, "onPodConditions", |c| {
                if str_of(c, "status").is_none_or(str::is_empty) {
                    c.insert("status".into(), json!("True"));
                }
            });
        });
    }
    if unset(spec, "podReplacementPolicy") {
        let policy = if unset(spec, "podFailurePolicy") {
            "TerminatingOrFailed"
        } else {
            "Failed"
        };
        spec.insert("podReplacementPolicy".into(), json!(policy));
    }
    job_spec(spec);
}

fn cron_job(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    def(spec, "concurrencyPolicy", json!("Allow"));
    def(spec, "suspend", json!(false));
    def(spec, "successfulJobsHistoryLimit", json!(3));
    def(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(jt) = existing(spec, "jobTemplate") {
        if let Some(js) = existing(jt, "spec") {
            job_spec(js);
        }
    }
}

fn hpa_v2(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    def(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
            }]),
        );
    }
    if let Some(b) = existing(spec, "behavior") {
        if let Some(up) = child(b, "scaleUp") {
            def(up, "stabilizationWindowSeconds", json!(0));
            def(up, "selectPolicy", json!("Max"));
            if up
                .get("policies")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                up.insert(
                    "policies".into(),
                    json!([
                        {"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15}
                    ]),
                );
            }
        }
        if let Some(down) = child(b, "scaleDown") {
            def(down, "selectPolicy", json!("Max"));
            if down
                .get("policies")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                down.insert(
                    "policies".into(),
                    json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                );
            }
        }
    }
}

fn network_policy(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        each_obj(spec, dir, |rule| {
            each_obj(rule, "ports", |p| def(p, "protocol", json!("TCP")))
        });
    }
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

fn crd(o: &mut Obj) {
    let Some(spec) = existing(o, "spec") else {
        return;
    };
    if let Some(conv) = child(spec, "conversion") {
        if str_of(conv, "strategy").is_none_or(str::is_empty) {
            conv.insert("strategy".into(), json!("None"));
        }
        if str_of(conv, "strategy") == Some("Webhook") {
            if let Some(svc) = existing(conv, "webhook")
                .and_then(|w| existing(w, "clientConfig"))
                .and_then(|c| existing(c, "service"))
            {
                def(svc, "port", json!(443));
            }
        }
    }
    if let Some(names) = existing(spec, "names") {
        let kind = str_of(names, "kind").unwrap_or("").to_string();
        if str_of(names, "singular").is_none_or(str::is_empty) && !kind.is_empty() {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if str_of(names, "listKind").is_none_or(str::is_empty) && !kind.is_empty() {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
}
