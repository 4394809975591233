//! Validation of the non-workload built-in kinds.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use super::util::{
    arr, config_key, dns1035_label, dns1123_label, dns1123_subdomain, idx, int_or_percent, join,
    key_path, label_selector, labels, one_of, port_name, port_range, quantity, quote, repr, str_at,
    Errs,
};

/// Maximum size of ConfigMap and Secret data.
pub(crate) const MAX_DATA_SIZE: usize = 1024 * 1024;

pub(crate) fn validate(group: &str, _version: &str, kind: &str, obj: &Value, e: &mut Errs) {
    match (group, kind) {
        ("", "Service") => service(obj, e),
        ("", "ConfigMap") => config_map(obj, e),
        ("", "Secret") => secret(obj, e),
        ("", "PersistentVolumeClaim") => pvc(obj, e),
        ("", "PersistentVolume") => pv(obj, e),
        ("", "ResourceQuota") => {
            if let Some(hard) = obj
                .get("spec")
                .and_then(|s| s.get("hard"))
                .and_then(Value::as_object)
            {
                for (k, v) in hard {
                    if quantity(v).is_some_and(|q| q < 0.0) {
                        e.invalid(
                            &key_path("spec.hard", k),
                            &repr(v),
                            "must be greater than or equal to 0",
                        );
                    }
                }
            }
        }
        ("", "Endpoints") => endpoints(obj, e),
        ("", "Binding") if str_at(obj.get("target").unwrap_or(&Value::Null), "name").is_empty() => {
            e.required("target.name", "");
        }
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(obj, e),
        ("policy", "PodDisruptionBudget") => pdb(obj, e),
        ("networking.k8s.io", "Ingress") => ingress(obj, e),
        ("networking.k8s.io", "IngressClass") => {
            let c = obj
                .get("spec")
                .map(|s| str_at(s, "controller"))
                .unwrap_or("");
            if c.is_empty() {
                e.required("spec.controller", "");
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(ps) = obj.get("spec").and_then(|s| s.get("podSelector")) {
                label_selector(ps, "spec.podSelector", e);
            }
            if let Some(spec) = obj.get("spec") {
                for (i, t) in arr(Some(spec), "policyTypes").iter().enumerate() {
                    one_of(
                        Some(t),
                        &idx("spec.policyTypes", i),
                        &["Ingress", "Egress"],
                        e,
                    );
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => match obj.get("addressType") {
            None => e.required("addressType", ""),
            Some(t) => one_of(Some(t), "addressType", &["IPv4", "IPv6", "FQDN"], e),
        },
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            for (i, r) in arr(Some(obj), "rules").iter().enumerate() {
                let p = idx("rules", i);
                if arr(Some(r), "verbs").is_empty() {
                    e.required(&join(&p, "verbs"), "verbs must contain at least one value");
                }
                let non_resource = !arr(Some(r), "nonResourceURLs").is_empty();
                if non_resource && !arr(Some(r), "resources").is_empty() {
                    e.invalid(
                        &join(&p, "nonResourceURLs"),
                        &repr(&r["nonResourceURLs"]),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    );
                }
                if non_resource && kind == "Role" {
                    e.invalid(
                        &join(&p, "nonResourceURLs"),
                        &repr(&r["nonResourceURLs"]),
                        "namespaced rules cannot apply to non-resource URLs",
                    );
                }
                if !non_resource && r.get("apiGroups").is_none() {
                    e.required(
                        &join(&p, "apiGroups"),
                        "resource rules must supply at least one api group",
                    );
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            role_binding(kind, obj, e)
        }
        ("storage.k8s.io", "StorageClass") => {
            if str_at(obj, "provisioner").is_empty() {
                e.required("provisioner", "");
            }
            one_of(
                obj.get("reclaimPolicy"),
                "reclaimPolicy",
                &["Delete", "Retain"],
                e,
            );
            one_of(
                obj.get("volumeBindingMode"),
                "volumeBindingMode",
                &["Immediate", "WaitForFirstConsumer"],
                e,
            );
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let spec = obj.get("spec").unwrap_or(&Value::Null);
            if str_at(spec, "request").is_empty() {
                e.required("spec.request", "");
            }
            if str_at(spec, "signerName").is_empty() {
                e.required("spec.signerName", "");
            }
            if let Some(x) = spec.get("expirationSeconds").and_then(Value::as_i64) {
                if x < 600 {
                    e.invalid(
                        "spec.expirationSeconds",
                        &x.to_string(),
                        "may not specify a duration less than 600 seconds (10 minutes)",
                    );
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj, e),
        ("authentication.k8s.io", "TokenRequest") => {
            if let Some(x) = obj
                .get("spec")
                .and_then(|s| s.get("expirationSeconds"))
                .and_then(Value::as_i64)
            {
                if x < 600 {
                    e.invalid(
                        "spec.expirationSeconds",
                        &x.to_string(),
                        "may not specify a duration less than 10 minutes",
                    );
                } else if x > 1 << 32 {
                    e.invalid(
                        "spec.expirationSeconds",
                        &x.to_string(),
                        "may not specify a duration larger than 2^32 seconds",
                    );
                }
            }
        }
        (
            "authorization.k8s.io",
            "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview",
        ) => {
            let spec = obj.get("spec").unwrap_or(&Value::Null);
            let res = spec.get("resourceAttributes").is_some();
            let non = spec.get("nonResourceAttributes").is_some();
            if res == non {
                let detail = if res {
                    "cannot be specified in combination with resourceAttributes"
                } else {
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified"
                };
                let field = if res {
                    "spec.nonResourceAttributes"
                } else {
                    "spec.resourceAttributes"
                };
                e.invalid(field, "null", detail);
            }
            if kind != "SelfSubjectAccessReview"
                && str_at(spec, "user").is_empty()
                && arr(Some(spec), "groups").is_empty()
            {
                e.invalid(
                    "spec.user",
                    "\"\"",
                    "at least one of user or group must be specified",
                );
            }
        }
        _ => {}
    }
}

fn service(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else {
        e.required("spec", "");
        return;
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    one_of(
        spec.get("type"),
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        e,
    );
    let cluster_ip = str_at(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = arr(Some(spec), "ports");
    if ty == "ExternalName" {
        let name = str_at(spec, "externalName");
        if name.is_empty() {
            e.required("spec.externalName", "");
        } else {
            let trimmed = name.strip_suffix('.').unwrap_or(name);
            for msg in dns1123_subdomain(trimmed) {
                e.invalid("spec.externalName", &quote(name), &msg);
            }
        }
        if !cluster_ip.is_empty() {
            e.forbidden("spec.clusterIP", "may not be set for ExternalName services");
        }
    } else if ports.is_empty() && !headless {
        e.required("spec.ports", "");
    }
    if headless && ty != "ClusterIP" && ty != "ExternalName" {
        e.invalid(
            "spec.clusterIPs[0]",
            &quote(cluster_ip),
            &format!("may not be set to 'None' for {ty} services"),
        );
    }
    let ips: Vec<&str> = match spec.get("clusterIPs").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.iter().map(|v| v.as_str().unwrap_or("")).collect(),
        _ if !cluster_ip.is_empty() => vec![cluster_ip],
        _ => Vec::new(),
    };
    for (i, ip) in ips.iter().enumerate() {
        if *ip != "None" && ip.parse::<IpAddr>().is_err() {
            e.invalid(
                &idx("spec.clusterIPs", i),
                &quote(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            );
        }
    }
    one_of(
        spec.get("sessionAffinity"),
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        e,
    );
    one_of(
        spec.get("externalTrafficPolicy"),
        "spec.externalTrafficPolicy",
        &["Cluster", "Local"],
        e,
    );
    one_of(
        spec.get("internalTrafficPolicy"),
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
        e,
    );
    one_of(
        spec.get("ipFamilyPolicy"),
        "spec.ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
        e,
    );
    if spec.get("externalTrafficPolicy").is_some() && ty != "NodePort" && ty != "LoadBalancer" {
        e.invalid(
            "spec.externalTrafficPolicy",
            &repr(&spec["externalTrafficPolicy"]),
            "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
        );
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = idx("spec.ports", i);
        let name = str_at(p, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                e.required(&join(&pp, "name"), "");
            }
        } else {
            for msg in dns1123_label(name) {
                e.invalid(&join(&pp, "name"), &quote(name), &msg);
            }
            if !names.insert(name.to_string()) {
                e.duplicate(&join(&pp, "name"), &quote(name));
            }
        }
        match p.get("port") {
            Some(v) => port_range(v, &join(&pp, "port"), e),
            None => e.invalid(
                &join(&pp, "port"),
                "0",
                "must be between 1 and 65535, inclusive",
            ),
        }
        one_of(
            p.get("protocol"),
            &join(&pp, "protocol"),
            &["SCTP", "TCP", "UDP"],
            e,
        );
        match p.get("targetPort") {
            Some(Value::String(s)) => {
                for msg in port_name(s) {
                    e.invalid(&join(&pp, "targetPort"), &quote(s), &msg);
                }
            }
            Some(v @ Value::Number(_)) => port_range(v, &join(&pp, "targetPort"), e),
            _ => {}
        }
        if let Some(np) = p.get("nodePort").filter(|v| v.as_i64() != Some(0)) {
            if ty == "ClusterIP" || ty == "ExternalName" {
                e.forbidden(
                    &join(&pp, "nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                );
            } else if !np.as_i64().is_some_and(|n| (30000..=32767).contains(&n)) {
                e.invalid(
                    &join(&pp, "nodePort"),
                    &repr(np),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                );
            }
        }
    }
    labels(spec.get("selector"), "spec.selector", e);
}

fn data_keys(obj: &Value, key: &str, e: &mut Errs) -> usize {
    let mut size = 0;
    if let Some(m) = obj.get(key).and_then(Value::as_object) {
        for (k, v) in m {
            for msg in config_key(k) {
                e.invalid(&key_path(key, k), &quote(k), &msg);
            }
            size += v.as_str().map_or(0, str::len);
        }
    }
    size
}

fn config_map(obj: &Value, e: &mut Errs) {
    let mut size = data_keys(obj, "data", e) + data_keys(obj, "binaryData", e);
    if let (Some(data), Some(bin)) = (
        obj.get("data").and_then(Value::as_object),
        obj.get("binaryData").and_then(Value::as_object),
    ) {
        for k in data.keys().filter(|k| bin.contains_key(*k)) {
            e.invalid(
                &key_path("data", k),
                &quote(k),
                "duplicate of key present in binaryData",
            );
        }
    }
    // binaryData is base64 in JSON; count decoded bytes approximately.
    if let Some(bin) = obj.get("binaryData").and_then(Value::as_object) {
        let encoded: usize = bin.values().map(|v| v.as_str().map_or(0, str::len)).sum();
        size = size - encoded + encoded / 4 * 3;
    }
    if size > MAX_DATA_SIZE {
        // Upstream reports the whole object with an empty key path, printed as `[]`.
        e.too_long("[]", MAX_DATA_SIZE);
    }
}

fn secret(obj: &Value, e: &mut Errs) {
    let encoded = data_keys(obj, "data", e);
    let plain = data_keys(obj, "stringData", e);
    if encoded / 4 * 3 + plain > MAX_DATA_SIZE {
        e.too_long("data", MAX_DATA_SIZE);
    }
    let has = |k: &str| {
        obj.get("data").and_then(|d| d.get(k)).is_some()
            || obj.get("stringData").and_then(|d| d.get(k)).is_some()
    };
    match str_at(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let name = obj
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => e.required("data[.dockercfg]", ""),
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            e.required("data[.dockerconfigjson]", "")
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            e.required("data[username]", "");
            e.required("data[password]", "");
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            e.required("data[ssh-privatekey]", "")
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    e.required(&key_path("data", k), "");
                }
            }
        }
        _ => {}
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, path: &str, e: &mut Errs) {
    let modes = arr(Some(spec), "accessModes");
    if modes.is_empty() {
        e.required(path, "at least 1 access mode is required");
    }
    for m in modes {
        if !m.as_str().is_some_and(|s| ACCESS_MODES.contains(&s)) {
            e.not_supported(path, &repr(m), ACCESS_MODES);
        }
    }
}

fn pvc(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else {
        e.required("spec", "");
        return;
    };
    if spec.get("dataSourceRef").is_none() && spec.get("dataSource").is_none()
        || spec.get("accessModes").is_some()
    {
        access_modes(spec, "spec.accessModes", e);
    }
    let storage = spec
        .get("resources")
        .and_then(|r| r.get("requests"))
        .and_then(|r| r.get("storage"));
    match storage {
        None => e.required("spec.resources[storage]", ""),
        Some(q) => {
            if !quantity(q).is_some_and(|n| n > 0.0) {
                e.invalid(
                    "spec.resources[storage]",
                    &repr(q),
                    "must be greater than zero",
                );
            }
        }
    }
    one_of(
        spec.get("volumeMode"),
        "spec.volumeMode",
        &["Block", "Filesystem"],
        e,
    );
    if let Some(sel) = spec.get("selector") {
        label_selector(sel, "spec.selector", e);
    }
}

fn pv(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else {
        e.required("spec", "");
        return;
    };
    access_modes(spec, "spec.accessModes", e);
    if spec
        .get("capacity")
        .and_then(|c| c.get("storage"))
        .is_none()
    {
        e.required("spec.capacity", "");
    }
    one_of(
        spec.get("persistentVolumeReclaimPolicy"),
        "spec.persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        e,
    );
    const SOURCES: &[&str] = &[
        "hostPath",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "glusterfs",
        "nfs",
        "rbd",
        "quobyte",
        "iscsi",
        "cinder",
        "cephfs",
        "fc",
        "flocker",
        "flexVolume",
        "azureFile",
        "vsphereVolume",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "local",
        "storageos",
        "csi",
    ];
    let n = SOURCES.iter().filter(|s| spec.get(**s).is_some()).count();
    if n == 0 {
        e.required("spec", "must specify a volume type");
    } else if n > 1 {
        e.forbidden("spec", "may not specify more than 1 volume type");
    }
    one_of(
        spec.get("volumeMode"),
        "spec.volumeMode",
        &["Block", "Filesystem"],
        e,
    );
}

fn endpoints(obj: &Value, e: &mut Errs) {
    for (i, s) in arr(Some(obj), "subsets").iter().enumerate() {
        let sp = idx("subsets", i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(Some(s), key).iter().enumerate() {
                let ip = str_at(a, "ip");
                if ip.parse::<IpAddr>().is_err() {
                    e.invalid(
                        &join(&idx(&join(&sp, key), j), "ip"),
                        &quote(ip),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    );
                }
            }
        }
        for (j, p) in arr(Some(s), "ports").iter().enumerate() {
            let pp = idx(&join(&sp, "ports"), j);
            match p.get("port") {
                Some(v) => port_range(v, &join(&pp, "port"), e),
                None => e.invalid(
                    &join(&pp, "port"),
                    "0",
                    "must be between 1 and 65535, inclusive",
                ),
            }
            one_of(
                p.get("protocol"),
                &join(&pp, "protocol"),
                &["SCTP", "TCP", "UDP"],
                e,
            );
        }
    }
}

fn hpa(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else {
        e.required("spec", "");
        return;
    };
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    for key in ["kind", "name"] {
        if str_at(target, key).is_empty() {
            e.required(&format!("spec.scaleTargetRef.{key}"), "");
        }
    }
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    if let Some(m) = min {
        if m < 1 {
            e.invalid(
                "spec.minReplicas",
                &m.to_string(),
                "must be greater than or equal to 1",
            );
        }
    }
    match spec.get("maxReplicas").and_then(Value::as_i64) {
        Some(max) if max < 1 => e.invalid(
            "spec.maxReplicas",
            &max.to_string(),
            "must be greater than or equal to 1",
        ),
        Some(max) if min.is_some_and(|m| max < m) => e.invalid(
            "spec.maxReplicas",
            &max.to_string(),
            "must be greater than or equal to `minReplicas`",
        ),
        Some(_) => {}
        None => e.invalid(
            "spec.maxReplicas",
            "0",
            "must be greater than or equal to 1",
        ),
    }
    for (i, m) in arr(Some(spec), "metrics").iter().enumerate() {
        one_of(
            m.get("type"),
            &join(&idx("spec.metrics", i), "type"),
            &[
                "ContainerResource",
                "External",
                "Object",
                "Pods",
                "Resource",
            ],
            e,
        );
    }
}

fn pdb(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else { return };
    if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() {
        e.invalid(
            "spec",
            &repr(spec),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    int_or_percent(spec.get("minAvailable"), "spec.minAvailable", e);
    int_or_percent(spec.get("maxUnavailable"), "spec.maxUnavailable", e);
    if let Some(sel) = spec.get("selector") {
        label_selector(sel, "spec.selector", e);
    }
    one_of(
        spec.get("unhealthyPodEvictionPolicy"),
        "spec.unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
        e,
    );
}

fn backend(b: &Value, path: &str, e: &mut Errs) {
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => e.invalid(
            path,
            "\"\"",
            "cannot set both resource and service backends",
        ),
        (None, None) => e.invalid(path, "\"\"", "resource or service backend is required"),
        (Some(svc), None) => {
            let name = str_at(svc, "name");
            for msg in dns1035_label(name) {
                e.invalid(&join(path, "service.name"), &quote(name), &msg);
            }
            let port = svc.get("port").unwrap_or(&Value::Null);
            let has_name = !str_at(port, "name").is_empty();
            match (has_name, port.get("number")) {
                (true, Some(_)) => e.invalid(
                    &join(path, "service.port"),
                    &repr(port),
                    "cannot set both port name & port number",
                ),
                (true, None) => {
                    for msg in port_name(str_at(port, "name")) {
                        e.invalid(
                            &join(path, "service.port.name"),
                            &quote(str_at(port, "name")),
                            &msg,
                        );
                    }
                }
                (false, Some(n)) => port_range(n, &join(path, "service.port.number"), e),
                (false, None) => e.required(
                    &join(path, "service.port"),
                    "port name or number is required",
                ),
            }
        }
        (None, Some(_)) => {}
    }
}

fn ingress(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else { return };
    if let Some(b) = spec.get("defaultBackend") {
        backend(b, "spec.defaultBackend", e);
    }
    if spec.get("defaultBackend").is_none() && arr(Some(spec), "rules").is_empty() {
        e.invalid(
            "spec.rules",
            "[]networking.IngressRule(nil)",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (i, r) in arr(Some(spec), "rules").iter().enumerate() {
        let rp = idx("spec.rules", i);
        let host = str_at(r, "host");
        if !host.is_empty() {
            let h = host.strip_prefix("*.").unwrap_or(host);
            if host.parse::<IpAddr>().is_ok() {
                e.invalid(
                    &join(&rp, "host"),
                    &quote(host),
                    "must be a DNS name, not an IP address",
                );
            } else {
                for msg in dns1123_subdomain(h) {
                    e.invalid(&join(&rp, "host"), &quote(host), &msg);
                }
            }
        }
        let Some(http) = r.get("http") else { continue };
        let paths = arr(Some(http), "paths");
        if paths.is_empty() {
            e.required(&join(&rp, "http.paths"), "");
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = idx(&join(&rp, "http.paths"), j);
            let pt = p.get("pathType");
            match pt {
                None => e.required(&join(&pp, "pathType"), "pathType must be specified"),
                Some(v) => one_of(
                    Some(v),
                    &join(&pp, "pathType"),
                    &["Exact", "ImplementationSpecific", "Prefix"],
                    e,
                ),
            }
            let path = str_at(p, "path");
            let needs_abs = matches!(pt.and_then(Value::as_str), Some("Exact" | "Prefix"));
            if (needs_abs || !path.is_empty()) && !path.starts_with('/') {
                e.invalid(&join(&pp, "path"), &quote(path), "must be an absolute path");
            }
            match p.get("backend") {
                Some(b) => backend(b, &join(&pp, "backend"), e),
                None => e.required(&join(&pp, "backend"), ""),
            }
        }
    }
}

fn role_binding(kind: &str, obj: &Value, e: &mut Errs) {
    let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
    let supported: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    one_of(
        Some(
            role_ref
                .get("kind")
                .unwrap_or(&Value::String(String::new())),
        ),
        "roleRef.kind",
        supported,
        e,
    );
    if str_at(role_ref, "apiGroup") != "rbac.authorization.k8s.io" {
        e.not_supported(
            "roleRef.apiGroup",
            &quote(str_at(role_ref, "apiGroup")),
            &["rbac.authorization.k8s.io"],
        );
    }
    if str_at(role_ref, "name").is_empty() {
        e.required("roleRef.name", "");
    }
    for (i, s) in arr(Some(obj), "subjects").iter().enumerate() {
        let sp = idx("subjects", i);
        let name = str_at(s, "name");
        if name.is_empty() {
            e.required(&join(&sp, "name"), "");
        }
        match str_at(s, "kind") {
            "ServiceAccount" => {
                if !str_at(s, "apiGroup").is_empty() {
                    e.not_supported(&join(&sp, "apiGroup"), &quote(str_at(s, "apiGroup")), &[""]);
                }
                if kind == "ClusterRoleBinding" && str_at(s, "namespace").is_empty() {
                    e.required(&join(&sp, "namespace"), "");
                }
                if !name.is_empty() {
                    for msg in dns1123_subdomain(name) {
                        e.invalid(&join(&sp, "name"), &quote(name), &msg);
                    }
                }
            }
            "User" | "Group" => {
                if str_at(s, "apiGroup") != "rbac.authorization.k8s.io" {
                    e.not_supported(
                        &join(&sp, "apiGroup"),
                        &quote(str_at(s, "apiGroup")),
                        &["rbac.authorization.k8s.io"],
                    );
                }
            }
            other => e.not_supported(
                &join(&sp, "kind"),
                &quote(other),
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
}

fn crd(obj: &Value, e: &mut Errs) {
    let Some(spec) = obj.get("spec") else {
        e.required("spec", "");
        return;
    };
    let group = str_at(spec, "group");
    let names = spec.get("names").unwrap_or(&Value::Null);
    let plural = str_at(names, "plural");
    let name = obj.get("metadata").map(|m| str_at(m, "name")).unwrap_or("");
    if !name.is_empty() && name != format!("{plural}.{group}") {
        e.invalid(
            "metadata.name",
            &quote(name),
            "must be spec.names.plural+\".\"+spec.group",
        );
    }
    if group.is_empty() {
        e.required("spec.group", "");
    } else {
        for msg in dns1123_subdomain(group) {
            e.invalid("spec.group", &quote(group), &msg);
        }
        if !group.contains('.') {
            e.invalid(
                "spec.group",
                &quote(group),
                "should be a domain with at least one dot",
            );
        }
    }
    match spec.get("scope") {
        None => e.required("spec.scope", ""),
        Some(s) => one_of(Some(s), "spec.scope", &["Cluster", "Namespaced"], e),
    }
    for key in ["plural", "singular"] {
        let v = str_at(names, key);
        if v.is_empty() && key == "plural" {
            e.required("spec.names.plural", "");
        } else if !v.is_empty() {
            for msg in dns1035_label(v) {
                e.invalid(&format!("spec.names.{key}"), &quote(v), &msg);
            }
        }
    }
    if str_at(names, "kind").is_empty() {
        e.required("spec.names.kind", "");
    }
    let versions = arr(Some(spec), "versions");
    if versions.is_empty() {
        e.invalid(
            "spec.versions",
            "null",
            "must have exactly one version marked as storage version",
        );
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        e.invalid(
            "spec.versions",
            &repr(&spec["versions"]),
            "must have exactly one version marked as storage version",
        );
    }
    let mut seen = HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let vp = idx("spec.versions", i);
        let vn = str_at(v, "name");
        for msg in dns1035_label(vn) {
            e.invalid(&join(&vp, "name"), &quote(vn), &msg);
        }
        if !seen.insert(vn.to_string()) {
            e.invalid(&join(&vp, "name"), &quote(vn), "must be unique");
        }
        if v.get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
            .is_none()
        {
            e.required(&join(&vp, "schema.openAPIV3Schema"), "schemas are required");
        }
    }
    if let Some(c) = spec.get("conversion") {
        one_of(
            c.get("strategy"),
            "spec.conversion.strategy",
            &["None", "Webhook"],
            e,
        );
    }
}
