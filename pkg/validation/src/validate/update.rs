//! Update-only rules: immutable fields and restricted spec changes.

use serde_json::{Map, Value};

use super::util::{arr, at, quote, repr, selector_repr, str_at, Errs};

const IMMUTABLE: &str = "field is immutable";

fn immutable(new: Option<&Value>, old: Option<&Value>, field: &str, e: &mut Errs) {
    if new != old {
        e.invalid(field, &repr(new.unwrap_or(&Value::Null)), IMMUTABLE);
    }
}

fn spec(v: &Value) -> Option<&Value> {
    v.get("spec")
}

pub(crate) fn update(group: &str, kind: &str, obj: &Value, old: &Value, e: &mut Errs) {
    metadata(obj, old, e);
    match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            selector(obj, old, "spec.selector", e)
        }
        ("apps", "StatefulSet") => stateful_set(obj, old, e),
        ("batch", "Job") => job(obj, old, e),
        ("", "Pod") => pod(obj, old, e),
        ("", "Service") => service(obj, old, e),
        ("", "ConfigMap") => immutable_data(obj, old, &["data", "binaryData"], e),
        ("", "Secret") => {
            immutable_data(obj, old, &["data"], e);
            let (nt, ot) = (str_at(obj, "type"), str_at(old, "type"));
            if !ot.is_empty() && nt != ot {
                e.invalid("type", &quote(nt), IMMUTABLE);
            }
        }
        ("", "PersistentVolumeClaim") => pvc(obj, old, e),
        ("", "PersistentVolume") => {
            let strip = |v: &Value| {
                let mut s = spec(v)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for k in [
                    "accessModes",
                    "capacity",
                    "claimRef",
                    "mountOptions",
                    "nodeAffinity",
                    "persistentVolumeReclaimPolicy",
                    "storageClassName",
                    "volumeMode",
                    "volumeAttributesClassName",
                ] {
                    s.remove(k);
                }
                s
            };
            if strip(obj) != strip(old) {
                e.forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                );
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            if obj.get("roleRef") != old.get("roleRef") =>
        {
            e.invalid(
                "roleRef",
                &repr(obj.get("roleRef").unwrap_or(&Value::Null)),
                "cannot change roleRef",
            );
        }
        ("storage.k8s.io", "StorageClass") => {
            for key in ["parameters", "provisioner", "reclaimPolicy"] {
                if obj.get(key) != old.get(key) {
                    e.forbidden(key, &format!("updates to {key} are forbidden."));
                }
            }
            if obj.get("volumeBindingMode") != old.get("volumeBindingMode") {
                e.forbidden("volumeBindingMode", IMMUTABLE);
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            immutable(
                spec(obj).and_then(|s| s.get("group")),
                spec(old).and_then(|s| s.get("group")),
                "spec.group",
                e,
            );
        }
        ("apps", "ControllerRevision") if obj.get("data") != old.get("data") => {
            e.invalid(
                "data",
                &repr(obj.get("data").unwrap_or(&Value::Null)),
                IMMUTABLE,
            );
        }
        _ => {}
    }
}

fn metadata(obj: &Value, old: &Value, e: &mut Errs) {
    let (nm, om) = (
        obj.get("metadata").unwrap_or(&Value::Null),
        old.get("metadata").unwrap_or(&Value::Null),
    );
    for key in ["name", "namespace"] {
        let (n, o) = (str_at(nm, key), str_at(om, key));
        if n != o {
            e.invalid(&format!("metadata.{key}"), &quote(n), IMMUTABLE);
        }
    }
    let (n, o) = (str_at(nm, "uid"), str_at(om, "uid"));
    if !n.is_empty() && !o.is_empty() && n != o {
        e.invalid("metadata.uid", &quote(n), IMMUTABLE);
    }
}

fn selector(obj: &Value, old: &Value, field: &str, e: &mut Errs) {
    let (n, o) = (
        spec(obj).and_then(|s| s.get("selector")),
        spec(old).and_then(|s| s.get("selector")),
    );
    if n != o {
        let rendered = n.map_or_else(|| "null".to_string(), selector_repr);
        e.invalid(field, &rendered, IMMUTABLE);
    }
}

fn stateful_set(obj: &Value, old: &Value, e: &mut Errs) {
    let strip = |v: &Value| {
        let mut s = spec(v)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for k in [
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ] {
            s.remove(k);
        }
        s
    };
    if strip(obj) != strip(old) {
        e.forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
             'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
    }
}

fn job(obj: &Value, old: &Value, e: &mut Errs) {
    selector(obj, old, "spec.selector", e);
    let (n, o) = (spec(obj), spec(old));
    let get = |s: Option<&Value>, k: &str| s.and_then(|s| s.get(k)).cloned();
    let (nt, ot) = (get(n, "template"), get(o, "template"));
    if nt != ot {
        // Upstream lets suspended jobs that never started change scheduling directives only.
        let suspended = get(o, "suspend").and_then(|v| v.as_bool()).unwrap_or(false);
        let scheduling_only = suspended && {
            let strip = |t: &Option<Value>| {
                let mut t = t.clone().unwrap_or(Value::Null);
                if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    for k in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                        s.remove(k);
                    }
                }
                if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("labels");
                    m.remove("annotations");
                }
                t
            };
            strip(&nt) == strip(&ot)
        };
        if !scheduling_only {
            e.invalid(
                "spec.template",
                &repr(nt.as_ref().unwrap_or(&Value::Null)),
                IMMUTABLE,
            );
        }
    }
    for key in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex"] {
        let (nv, ov) = (get(n, key), get(o, key));
        if nv != ov {
            e.invalid(
                &format!("spec.{key}"),
                &repr(nv.as_ref().unwrap_or(&Value::Null)),
                IMMUTABLE,
            );
        }
    }
    let (nc, oc) = (get(n, "completions"), get(o, "completions"));
    if nc != oc {
        let indexed = n.map(|s| str_at(s, "completionMode")) == Some("Indexed");
        let elastic = indexed && nc.is_some() && nc == get(n, "parallelism");
        if !elastic {
            e.invalid(
                "spec.completions",
                &repr(nc.as_ref().unwrap_or(&Value::Null)),
                IMMUTABLE,
            );
        }
    }
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,\
`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing \
tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn pod(obj: &Value, old: &Value, e: &mut Errs) {
    let (Some(ns), Some(os)) = (spec(obj), spec(old)) else {
        return;
    };
    let mut n = ns.clone();
    let mut o = os.clone();
    // Images may change: copy the old images into the new spec before comparing.
    for key in ["containers", "initContainers"] {
        let old_list = arr(Some(os), key);
        if let Some(Value::Array(list)) = n.get_mut(key) {
            for (i, c) in list.iter_mut().enumerate() {
                if let (Some(c), Some(oc)) = (c.as_object_mut(), old_list.get(i)) {
                    match oc.get("image") {
                        Some(img) => {
                            c.insert("image".into(), img.clone());
                        }
                        None => {
                            c.remove("image");
                        }
                    }
                }
            }
        }
    }
    // activeDeadlineSeconds may be set or lowered, never unset or raised.
    let (na, oa) = (
        ns.get("activeDeadlineSeconds").and_then(Value::as_i64),
        os.get("activeDeadlineSeconds").and_then(Value::as_i64),
    );
    let ads_ok = match (na, oa) {
        (Some(n), Some(o)) => n <= o,
        (Some(_), None) | (None, None) => true,
        (None, Some(_)) => false,
    };
    if ads_ok {
        for s in [&mut n, &mut o] {
            if let Some(m) = s.as_object_mut() {
                m.remove("activeDeadlineSeconds");
            }
        }
    }
    // Tolerations may only be added.
    let old_tol = arr(Some(os), "tolerations");
    let new_tol = arr(Some(ns), "tolerations");
    if old_tol.iter().all(|t| new_tol.contains(t)) {
        for s in [&mut n, &mut o] {
            if let Some(m) = s.as_object_mut() {
                m.remove("tolerations");
            }
        }
    }
    let (ng, og) = (
        ns.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64),
        os.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64),
    );
    if og.is_some_and(|g| g < 0) && ng == Some(1) {
        for s in [&mut n, &mut o] {
            if let Some(m) = s.as_object_mut() {
                m.remove("terminationGracePeriodSeconds");
            }
        }
    }
    // nodeName may be set once by binding.
    if os.get("nodeName").is_none() {
        for s in [&mut n, &mut o] {
            if let Some(m) = s.as_object_mut() {
                m.remove("nodeName");
            }
        }
    }
    if n != o {
        e.forbidden("spec", POD_UPDATE_MSG);
    }
}

fn service(obj: &Value, old: &Value, e: &mut Errs) {
    let (Some(ns), Some(os)) = (spec(obj), spec(old)) else {
        return;
    };
    if str_at(ns, "type") == "ExternalName" || str_at(os, "type") == "ExternalName" {
        return;
    }
    let first = |s: &Value| -> String {
        at(s, &["clusterIPs"])
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| str_at(s, "clusterIP").to_string())
    };
    let (n, o) = (first(ns), first(os));
    if !o.is_empty() && !n.is_empty() && n != o {
        e.invalid("spec.clusterIPs[0]", &quote(&n), "may not change once set");
    }
}

fn immutable_data(obj: &Value, old: &Value, keys: &[&str], e: &mut Errs) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        e.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    let empty = Value::Object(Map::new());
    for key in keys {
        let n = obj.get(*key).filter(|v| !v.is_null()).unwrap_or(&empty);
        let o = old.get(*key).filter(|v| !v.is_null()).unwrap_or(&empty);
        if n != o {
            e.forbidden(key, "field is immutable when `immutable` is set");
        }
    }
}

fn pvc(obj: &Value, old: &Value, e: &mut Errs) {
    let strip = |v: &Value, bound: bool| {
        let mut s = spec(v)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(r) = s.get_mut("resources").and_then(Value::as_object_mut) {
            r.remove("requests");
        }
        s.remove("volumeAttributesClassName");
        if !bound {
            s.remove("volumeName");
        }
        s
    };
    let bound = spec(old).is_some_and(|s| !str_at(s, "volumeName").is_empty());
    if strip(obj, bound) != strip(old, bound) {
        e.forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        );
    }
}
