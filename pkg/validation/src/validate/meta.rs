//! ObjectMeta validation (ValidateObjectMeta): name syntax per kind, labels, annotations.

use serde_json::Value;

use super::util::{
    dns1035_label, dns1123_label, dns1123_subdomain, idx, join, labels, path_segment_name,
    qualified_name, quote, str_at, Errs,
};

/// Upstream's limit on the total size of annotations.
pub(crate) const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

type NameFn = fn(&str) -> Vec<String>;

/// The name validation of a kind; None for kinds without a stored name to check.
fn name_fn(group: &str, kind: &str) -> Option<NameFn> {
    match (group, kind) {
        ("", "Namespace") => Some(dns1123_label),
        ("", "Service") => Some(dns1035_label),
        ("rbac.authorization.k8s.io", _) => Some(path_segment_name),
        ("", "Binding") | ("autoscaling", "Scale") | ("policy", "Eviction") => None,
        ("authentication.k8s.io" | "authorization.k8s.io", _) => None,
        ("", "Event") | ("events.k8s.io", _) => Some(path_segment_name),
        _ => Some(dns1123_subdomain),
    }
}

pub(crate) fn object_meta(group: &str, kind: &str, obj: &Value, e: &mut Errs) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    if let Some(name_fn) = name_fn(group, kind) {
        let name = str_at(meta, "name");
        let generate = str_at(meta, "generateName");
        if !generate.is_empty() {
            let trimmed = generate.strip_suffix('-').unwrap_or(generate);
            for msg in name_fn(trimmed) {
                e.invalid("metadata.generateName", &quote(generate), &msg);
            }
        }
        if name.is_empty() {
            e.required("metadata.name", "name or generateName is required");
        } else {
            for msg in name_fn(name) {
                e.invalid("metadata.name", &quote(name), &msg);
            }
        }
        if group == "batch" && kind == "CronJob" && name.len() > 52 {
            e.invalid(
                "metadata.name",
                &quote(name),
                "must be no more than 52 characters",
            );
        }
    }
    let ns = str_at(meta, "namespace");
    if !ns.is_empty() {
        for msg in dns1123_label(ns) {
            e.invalid("metadata.namespace", &quote(ns), &msg);
        }
    }
    if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
        if g < 0 {
            e.invalid(
                "metadata.generation",
                &g.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
    labels(meta.get("labels"), "metadata.labels", e);
    annotations(meta.get("annotations"), "metadata.annotations", e);
    for (i, f) in meta
        .get("finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = f.as_str().unwrap_or("");
        let msgs = qualified_name(f);
        for msg in &msgs {
            e.invalid(&idx("metadata.finalizers", i), &quote(f), msg);
        }
        // Built-in kinds only accept the standard unqualified names; custom resources
        // (called with an empty kind) only get a warning upstream.
        let standard = matches!(f, "kubernetes" | "orphan" | "foregroundDeletion");
        if msgs.is_empty() && !kind.is_empty() && !f.contains('/') && !standard {
            e.invalid(
                &idx("metadata.finalizers", i),
                &quote(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            );
        }
    }
    for (i, r) in meta
        .get("ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = idx("metadata.ownerReferences", i);
        for key in ["apiVersion", "kind", "name", "uid"] {
            if str_at(r, key).is_empty() {
                let detail = match key {
                    "apiVersion" => "version must not be empty",
                    "kind" => "kind must not be empty",
                    "name" => "name must not be empty",
                    _ => "uid must not be empty",
                };
                e.invalid(&join(&p, key), "\"\"", detail);
            }
        }
    }
}

/// ValidateAnnotations: qualified-name keys (lower-cased) and total size.
pub(crate) fn annotations(v: Option<&Value>, path: &str, e: &mut Errs) {
    let Some(m) = v.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, val) in m {
        for msg in qualified_name(&k.to_lowercase()) {
            e.invalid(path, &quote(k), &msg);
        }
        total += k.len() + val.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        e.too_long(path, TOTAL_ANNOTATION_SIZE);
    }
}
