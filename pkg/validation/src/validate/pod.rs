//! Pod, pod template and pod spec validation (a subset of upstream ValidatePodSpec).

use std::collections::HashSet;

use serde_json::Value;

use super::meta::annotations;
use super::util::{
    arr, dns1123_label, dns1123_subdomain, idx, join, key_path, labels, one_of, port_name,
    port_range, quantity, quote, repr, str_at, Errs,
};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

pub(crate) fn pod(obj: &Value, e: &mut Errs) {
    match obj.get("spec") {
        Some(spec) => pod_spec(spec, "spec", e),
        None => e.required("spec", ""),
    }
}

/// ValidatePodTemplateSpec at `path`.
pub(crate) fn template(t: Option<&Value>, path: &str, e: &mut Errs) {
    let Some(t) = t else {
        e.required(path, "");
        return;
    };
    let meta = t.get("metadata");
    labels(
        meta.and_then(|m| m.get("labels")),
        &join(path, "metadata.labels"),
        e,
    );
    annotations(
        meta.and_then(|m| m.get("annotations")),
        &join(path, "metadata.annotations"),
        e,
    );
    match t.get("spec") {
        Some(spec) => pod_spec(spec, &join(path, "spec"), e),
        None => e.required(&join(path, "spec.containers"), ""),
    }
}

pub(crate) fn pod_spec(spec: &Value, path: &str, e: &mut Errs) {
    let volumes = volumes(spec, path, e);
    let containers = arr(Some(spec), "containers");
    let mut names = HashSet::new();
    if containers.is_empty() {
        e.required(&join(path, "containers"), "");
    }
    for key in ["initContainers", "containers"] {
        for (i, c) in arr(Some(spec), key).iter().enumerate() {
            container(
                c,
                &idx(&join(path, key), i),
                &volumes,
                &mut names,
                key == "initContainers",
                e,
            );
        }
    }
    one_of(
        spec.get("restartPolicy"),
        &join(path, "restartPolicy"),
        RESTART_POLICIES,
        e,
    );
    one_of(
        spec.get("dnsPolicy"),
        &join(path, "dnsPolicy"),
        DNS_POLICIES,
        e,
    );
    if str_at(spec, "dnsPolicy") == "None" && spec.get("dnsConfig").is_none() {
        e.required(
            &join(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    if let Some(v) = spec.get("activeDeadlineSeconds") {
        if !v
            .as_i64()
            .is_some_and(|n| (1..=i64::from(i32::MAX)).contains(&n))
        {
            e.invalid(
                &join(path, "activeDeadlineSeconds"),
                &repr(v),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    if let Some(v) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        if v < 0 {
            e.invalid(
                &join(path, "terminationGracePeriodSeconds"),
                &v.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
    for key in ["serviceAccountName", "nodeName"] {
        let v = str_at(spec, key);
        if !v.is_empty() {
            for msg in dns1123_subdomain(v) {
                e.invalid(&join(path, key), &quote(v), &msg);
            }
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = str_at(spec, key);
        if !v.is_empty() {
            for msg in dns1123_label(v) {
                e.invalid(&join(path, key), &quote(v), &msg);
            }
        }
    }
    labels(spec.get("nodeSelector"), &join(path, "nodeSelector"), e);
    for (i, t) in arr(Some(spec), "tolerations").iter().enumerate() {
        toleration(t, &idx(&join(path, "tolerations"), i), e);
    }
}

fn toleration(t: &Value, path: &str, e: &mut Errs) {
    let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
    match op {
        "Equal" | "" => {}
        "Exists" => {
            if !str_at(t, "value").is_empty() {
                e.invalid(
                    &join(path, "operator"),
                    &quote(str_at(t, "value")),
                    "value must be empty when `operator` is 'Exists'",
                );
            }
        }
        other => e.not_supported(&join(path, "operator"), &quote(other), &["Equal", "Exists"]),
    }
    if str_at(t, "key").is_empty() && op != "Exists" {
        e.invalid(&join(path, "operator"), &quote(op), "operator must be Exists when `key` is empty, which means \"match all values and all keys\"");
    }
    if let Some(effect) = t
        .get("effect")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        one_of(
            t.get("effect"),
            &join(path, "effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            e,
        );
        if t.get("tolerationSeconds").is_some() && effect != "NoExecute" {
            e.invalid(
                &join(path, "effect"),
                &quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
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

/// Validates `volumes` and returns their names.
fn volumes(spec: &Value, path: &str, e: &mut Errs) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in arr(Some(spec), "volumes").iter().enumerate() {
        let p = idx(&join(path, "volumes"), i);
        let name = str_at(v, "name");
        if name.is_empty() {
            e.required(&join(&p, "name"), "");
        } else {
            for msg in dns1123_label(name) {
                e.invalid(&join(&p, "name"), &quote(name), &msg);
            }
            if !names.insert(name.to_string()) {
                e.duplicate(&join(&p, "name"), &quote(name));
            }
        }
        let sources = VOLUME_SOURCES
            .iter()
            .filter(|s| v.get(**s).is_some_and(|x| !x.is_null()))
            .count();
        if sources == 0 {
            e.required(&p, "must specify a volume type");
        } else if sources > 1 {
            e.forbidden(&p, "may not specify more than 1 volume type");
        }
        if let Some(claim) = v.get("persistentVolumeClaim") {
            if str_at(claim, "claimName").is_empty() {
                e.required(&join(&p, "persistentVolumeClaim.claimName"), "");
            }
        }
        if let Some(h) = v.get("hostPath") {
            if str_at(h, "path").is_empty() {
                e.required(&join(&p, "hostPath.path"), "");
            }
        }
    }
    names
}

fn container(
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    init: bool,
    e: &mut Errs,
) {
    let name = str_at(c, "name");
    if name.is_empty() {
        e.required(&join(path, "name"), "");
    } else {
        for msg in dns1123_label(name) {
            e.invalid(&join(path, "name"), &quote(name), &msg);
        }
        if !names.insert(name.to_string()) {
            e.duplicate(&join(path, "name"), &quote(name));
        }
    }
    if str_at(c, "image").is_empty() {
        e.required(&join(path, "image"), "");
    }
    one_of(
        c.get("imagePullPolicy"),
        &join(path, "imagePullPolicy"),
        PULL_POLICIES,
        e,
    );
    one_of(
        c.get("terminationMessagePolicy"),
        &join(path, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        e,
    );
    let mut port_names = HashSet::new();
    for (i, p) in arr(Some(c), "ports").iter().enumerate() {
        let pp = idx(&join(path, "ports"), i);
        match p.get("containerPort") {
            Some(v) => port_range(v, &join(&pp, "containerPort"), e),
            None => e.required(&join(&pp, "containerPort"), ""),
        }
        if let Some(hp) = p.get("hostPort") {
            if hp.as_i64() != Some(0) {
                port_range(hp, &join(&pp, "hostPort"), e);
            }
        }
        one_of(p.get("protocol"), &join(&pp, "protocol"), PROTOCOLS, e);
        let pn = str_at(p, "name");
        if !pn.is_empty() {
            for msg in port_name(pn) {
                e.invalid(&join(&pp, "name"), &quote(pn), &msg);
            }
            if !port_names.insert(pn.to_string()) {
                e.duplicate(&join(&pp, "name"), &quote(pn));
            }
        }
    }
    for (i, env) in arr(Some(c), "env").iter().enumerate() {
        let ep = idx(&join(path, "env"), i);
        let n = str_at(env, "name");
        if n.is_empty() {
            e.required(&join(&ep, "name"), "");
        } else if n.contains('=') || !n.chars().all(|ch| (' '..='~').contains(&ch)) {
            e.invalid(
                &join(&ep, "name"),
                &quote(n),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        if env
            .get("value")
            .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            && env.get("valueFrom").is_some()
        {
            e.invalid(
                &join(&ep, "valueFrom"),
                "\"\"",
                "may not be specified when `value` is not empty",
            );
        }
    }
    resources(c.get("resources"), &join(path, "resources"), e);
    for (i, m) in arr(Some(c), "volumeMounts").iter().enumerate() {
        let mp = idx(&join(path, "volumeMounts"), i);
        let n = str_at(m, "name");
        if n.is_empty() {
            e.required(&join(&mp, "name"), "");
        } else if !volumes.contains(n) {
            e.not_found(&join(&mp, "name"), &quote(n));
        }
        if str_at(m, "mountPath").is_empty() {
            e.required(&join(&mp, "mountPath"), "");
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe) {
            let pp = join(path, probe);
            if init && str_at(c, "restartPolicy") != "Always" {
                e.forbidden(
                    &pp,
                    "may not be set for init containers without restartPolicy=Always",
                );
                continue;
            }
            let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
                .iter()
                .filter(|h| p.get(**h).is_some())
                .count();
            if handlers == 0 {
                e.required(&pp, "must specify a handler type");
            } else if handlers > 1 {
                e.forbidden(&pp, "may not specify more than 1 handler type");
            }
            for key in [
                "initialDelaySeconds",
                "timeoutSeconds",
                "periodSeconds",
                "successThreshold",
                "failureThreshold",
            ] {
                e.non_negative(Some(p), key, &pp);
            }
            if probe != "readinessProbe" {
                if let Some(s) = p.get("successThreshold").and_then(Value::as_i64) {
                    if s != 1 {
                        e.invalid(&join(&pp, "successThreshold"), &s.to_string(), "must be 1");
                    }
                }
            }
        }
    }
}

/// ResourceRequirements: non-negative quantities and requests ≤ limits.
fn resources(r: Option<&Value>, path: &str, e: &mut Errs) {
    let Some(r) = r else { return };
    for kind in ["limits", "requests"] {
        if let Some(m) = r.get(kind).and_then(Value::as_object) {
            for (k, v) in m {
                let p = key_path(&join(path, kind), k);
                match quantity(v) {
                    Some(q) if q < 0.0 => e.invalid(&p, &repr(v), "must be greater than or equal to 0"),
                    Some(_) => {}
                    None => e.invalid(&p, &repr(v), "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                }
            }
        }
    }
    let (Some(limits), Some(requests)) = (
        r.get("limits").and_then(Value::as_object),
        r.get("requests").and_then(Value::as_object),
    ) else {
        return;
    };
    for (k, req) in requests {
        let Some(lim) = limits.get(k) else { continue };
        if let (Some(rq), Some(lq)) = (quantity(req), quantity(lim)) {
            if rq > lq {
                let lim_s = lim.as_str().map_or_else(|| lim.to_string(), str::to_string);
                let req_s = req.as_str().map_or_else(|| req.to_string(), str::to_string);
                e.invalid(
                    &key_path(&join(path, "requests"), k),
                    &quote(&req_s),
                    &format!("must be less than or equal to {k} limit of {lim_s}"),
                );
            }
        }
    }
}
