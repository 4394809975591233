//! Strict field checks for built-in kinds: decode into the k8s-openapi type, encode back, diff.

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::DecodeError;

/// Failure of one decode attempt, with the path where it happened.
struct Failure {
    path: String,
    message: String,
}

fn round_trip<T: DeserializeOwned + Serialize>(input: &Value) -> Result<Value, Failure> {
    let decoded: T = serde_path_to_error::deserialize(input).map_err(|e| Failure {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    serde_json::to_value(&decoded).map_err(|e| Failure {
        path: String::new(),
        message: e.to_string(),
    })
}

/// Upstream notation (`spec.containers[0].imagee`) of a path serde_ignored reports.
fn ignored_path(path: &serde_ignored::Path<'_>, out: &mut String) {
    match path {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push('[');
            out.push_str(&index.to_string());
            out.push(']');
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_path(parent, out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent, out),
    }
}

/// The fields the typed decode of `input` ignores, i.e. what the encode-and-diff round
/// trip would report, without the copies and the encode. Top-level `apiVersion` and `kind`
/// are skipped, as the round trip removes them.
fn decode_ignored<T: DeserializeOwned>(input: &Map<String, Value>) -> Result<Vec<String>, ()> {
    use serde::de::value::MapDeserializer;
    let entries = input
        .iter()
        .filter(|(k, _)| k.as_str() != "apiVersion" && k.as_str() != "kind")
        .map(|(k, v)| (k.as_str(), v));
    let de = MapDeserializer::<_, serde_json::Error>::new(entries);
    let mut ignored = Vec::new();
    let decoded: Result<T, _> = serde_ignored::deserialize(de, |path| {
        let mut p = String::new();
        ignored_path(&path, &mut p);
        ignored.push(p);
    });
    decoded.map(|_| ignored).map_err(|_| ())
}

/// True when a `null` appears anywhere in `v` (those need the copying path).
fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().any(has_null),
        Value::Array(a) => a.iter().any(has_null),
        _ => false,
    }
}

macro_rules! builtin_kinds {
    ($( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
        /// True when the GVK has a k8s-openapi type here.
        pub(crate) fn known(group: &str, version: &str, kind: &str) -> bool {
            matches!((group, version, kind), $( ($g, $v, $k) )|*)
        }

        fn dispatch(group: &str, version: &str, kind: &str, input: &Value) -> Option<Result<Value, Failure>> {
            match (group, version, kind) {
                $( ($g, $v, $k) => Some(round_trip::<$t>(input)), )*
                _ => None,
            }
        }

        /// Decodes `input` (the object without `apiVersion` and `kind`) without copying it,
        /// reporting ignored fields; `None` for an unknown GVK, `Some(Err)` when it does
        /// not decode as is.
        fn dispatch_ignored(
            group: &str,
            version: &str,
            kind: &str,
            input: &Map<String, Value>,
        ) -> Option<Result<Vec<String>, ()>> {
            match (group, version, kind) {
                $( ($g, $v, $k) => Some(decode_ignored::<$t>(input)), )*
                _ => None,
            }
        }
    };
}

builtin_kinds! {
    ("", "v1", "Namespace") => api::core::v1::Namespace,
    ("", "v1", "Pod") => api::core::v1::Pod,
    ("", "v1", "Service") => api::core::v1::Service,
    ("", "v1", "Endpoints") => api::core::v1::Endpoints,
    ("", "v1", "ConfigMap") => api::core::v1::ConfigMap,
    ("", "v1", "Secret") => api::core::v1::Secret,
    ("", "v1", "ServiceAccount") => api::core::v1::ServiceAccount,
    ("", "v1", "Node") => api::core::v1::Node,
    ("", "v1", "Event") => api::core::v1::Event,
    ("", "v1", "PersistentVolume") => api::core::v1::PersistentVolume,
    ("", "v1", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaim,
    ("", "v1", "ResourceQuota") => api::core::v1::ResourceQuota,
    ("", "v1", "LimitRange") => api::core::v1::LimitRange,
    ("", "v1", "ReplicationController") => api::core::v1::ReplicationController,
    ("", "v1", "PodTemplate") => api::core::v1::PodTemplate,
    ("", "v1", "Binding") => api::core::v1::Binding,
    ("", "v1", "ComponentStatus") => api::core::v1::ComponentStatus,
    ("apps", "v1", "Deployment") => api::apps::v1::Deployment,
    ("apps", "v1", "ReplicaSet") => api::apps::v1::ReplicaSet,
    ("apps", "v1", "StatefulSet") => api::apps::v1::StatefulSet,
    ("apps", "v1", "DaemonSet") => api::apps::v1::DaemonSet,
    ("apps", "v1", "ControllerRevision") => api::apps::v1::ControllerRevision,
    ("batch", "v1", "Job") => api::batch::v1::Job,
    ("batch", "v1", "CronJob") => api::batch::v1::CronJob,
    ("autoscaling", "v2", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscaler,
    ("autoscaling", "v1", "HorizontalPodAutoscaler") => api::autoscaling::v1::HorizontalPodAutoscaler,
    ("autoscaling", "v1", "Scale") => api::autoscaling::v1::Scale,
    ("policy", "v1", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudget,
    ("policy", "v1", "Eviction") => api::policy::v1::Eviction,
    ("coordination.k8s.io", "v1", "Lease") => api::coordination::v1::Lease,
    ("discovery.k8s.io", "v1", "EndpointSlice") => api::discovery::v1::EndpointSlice,
    ("networking.k8s.io", "v1", "Ingress") => api::networking::v1::Ingress,
    ("networking.k8s.io", "v1", "IngressClass") => api::networking::v1::IngressClass,
    ("networking.k8s.io", "v1", "NetworkPolicy") => api::networking::v1::NetworkPolicy,
    ("rbac.authorization.k8s.io", "v1", "Role") => api::rbac::v1::Role,
    ("rbac.authorization.k8s.io", "v1", "RoleBinding") => api::rbac::v1::RoleBinding,
    ("rbac.authorization.k8s.io", "v1", "ClusterRole") => api::rbac::v1::ClusterRole,
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => api::rbac::v1::ClusterRoleBinding,
    ("storage.k8s.io", "v1", "StorageClass") => api::storage::v1::StorageClass,
    ("storage.k8s.io", "v1", "CSIDriver") => api::storage::v1::CSIDriver,
    ("storage.k8s.io", "v1", "CSINode") => api::storage::v1::CSINode,
    ("storage.k8s.io", "v1", "VolumeAttachment") => api::storage::v1::VolumeAttachment,
    ("scheduling.k8s.io", "v1", "PriorityClass") => api::scheduling::v1::PriorityClass,
    ("node.k8s.io", "v1", "RuntimeClass") => api::node::v1::RuntimeClass,
    ("events.k8s.io", "v1", "Event") => api::events::v1::Event,
    ("certificates.k8s.io", "v1", "CertificateSigningRequest") => api::certificates::v1::CertificateSigningRequest,
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => apiext::CustomResourceDefinition,
    ("apiregistration.k8s.io", "v1", "APIService") => apireg::APIService,
    ("authentication.k8s.io", "v1", "TokenRequest") => api::authentication::v1::TokenRequest,
    ("authentication.k8s.io", "v1", "TokenReview") => api::authentication::v1::TokenReview,
    ("authentication.k8s.io", "v1", "SelfSubjectReview") => api::authentication::v1::SelfSubjectReview,
    ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => api::authorization::v1::SelfSubjectAccessReview,
    ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => api::authorization::v1::SelfSubjectRulesReview,
    ("authorization.k8s.io", "v1", "SubjectAccessReview") => api::authorization::v1::SubjectAccessReview,
    ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => api::authorization::v1::LocalSubjectAccessReview,
}

/// Removes `null` object members recursively (Go decodes them as zero values).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Splits a serde_path_to_error path (`spec.containers[0].name`) into segments.
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !cur.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut cur)));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(Seg::Key(std::mem::take(&mut cur)));
                }
                let mut idx = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    idx.push(d);
                }
                out.push(Seg::Index(idx.parse().unwrap_or(0)));
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() && cur != "?" {
        out.push(Seg::Key(cur));
    }
    out
}

enum Seg {
    Key(String),
    Index(usize),
}

fn lookup_mut<'a>(root: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = root;
    for s in segs {
        cur = match s {
            Seg::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Seg::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// Go-ish name of the JSON type of a value named in a serde "invalid type" message.
fn go_json_type(unexpected: &str) -> &'static str {
    if unexpected.starts_with("string") {
        "string"
    } else if unexpected.starts_with("integer") || unexpected.starts_with("floating") {
        "number"
    } else if unexpected.starts_with("boolean") {
        "bool"
    } else if unexpected.starts_with("map") {
        "object"
    } else if unexpected.starts_with("sequence") {
        "array"
    } else {
        "value"
    }
}

fn go_type(expected: &str) -> String {
    match expected {
        "i32" => "int32".into(),
        "i64" => "int64".into(),
        "u32" => "uint32".into(),
        "f64" => "float64".into(),
        "a boolean" | "bool" => "bool".into(),
        "a string" | "string" => "string".into(),
        "a sequence" | "a vector" => "[]interface {}".into(),
        "a map" => "map[string]string".into(),
        "IntOrString" => "intstr.IntOrString".into(),
        "Quantity" => "resource.Quantity".into(),
        other => {
            if let Some(s) = other.strip_prefix("struct ") {
                format!("v1.{s}")
            } else {
                other.to_string()
            }
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Best-effort name of the Go struct holding the last field of `segs`.
fn parent_struct(kind: &str, segs: &[Seg]) -> String {
    let keys: Vec<&str> = segs
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    if keys.len() < 2 {
        return kind.to_string();
    }
    let parent = keys[keys.len() - 2];
    let grand = if keys.len() >= 3 {
        Some(keys[keys.len() - 3])
    } else {
        None
    };
    match (grand, parent) {
        (_, "metadata") => "ObjectMeta".into(),
        (None, "spec") => format!("{kind}Spec"),
        (None, "status") => format!("{kind}Status"),
        (Some("template"), "spec") => "PodSpec".into(),
        (Some("jobTemplate"), "spec") => "JobSpec".into(),
        (_, "template") => "PodTemplateSpec".into(),
        (_, "selector") => "LabelSelector".into(),
        (_, "containers" | "initContainers") => "Container".into(),
        (_, "ephemeralContainers") => "EphemeralContainer".into(),
        (_, "ports") => "ContainerPort".into(),
        (_, p) => {
            let singular = p.strip_suffix('s').unwrap_or(p);
            capitalize(singular)
        }
    }
}

fn go_message(kind: &str, f: &Failure) -> String {
    let segs = segments(&f.path);
    let dotted: Vec<&str> = segs
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    if let Some(rest) = f.message.strip_prefix("invalid type: ") {
        let (unexpected, expected) = rest.split_once(", expected ").unwrap_or((rest, "value"));
        let expected = expected.split(" at line").next().unwrap_or(expected);
        if dotted.is_empty() {
            return format!(
                "json: cannot unmarshal {} into Go value of type {}",
                go_json_type(unexpected),
                go_type(expected)
            );
        }
        return format!(
            "json: cannot unmarshal {} into Go struct field {}.{} of type {}",
            go_json_type(unexpected),
            parent_struct(kind, &segs),
            dotted.join("."),
            go_type(expected)
        );
    }
    if dotted.is_empty() {
        format!("json: {}", f.message)
    } else {
        format!("json: {} (field {})", f.message, dotted.join("."))
    }
}

/// Collects paths present (non-null) in `input` but absent from `output`.
fn diff(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => diff(v, ov, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, v) in i.iter().enumerate() {
                if let Some(ov) = o.get(n) {
                    diff(v, ov, &format!("{path}[{n}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Placeholder values tried in turn for a required field the input lacks.
fn placeholders() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::Object(Map::new()),
        Value::from(0),
        Value::Array(Vec::new()),
        Value::Bool(false),
    ]
}

pub(crate) fn unknown_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    // Fast path: a null-free object that decodes as is. Anything else (nulls to strip,
    // required fields to fill, decode errors to word like upstream) takes the round trip.
    if let Value::Object(m) = obj {
        if !has_null(obj) {
            match dispatch_ignored(group, version, kind, m) {
                None => return Ok(Vec::new()),
                Some(Ok(ignored)) => return Ok(ignored),
                Some(Err(())) => {}
            }
        }
    }
    round_trip_unknown_fields(group, version, kind, obj)
}

/// [`unknown_fields`] by decoding into the k8s-openapi type, encoding back and diffing.
pub(crate) fn round_trip_unknown_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    let mut input = obj.clone();
    strip_nulls(&mut input);
    if let Value::Object(m) = &mut input {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    } else {
        return Err(DecodeError(format!(
            "json: cannot unmarshal {} into Go value of type v1.{kind}",
            match obj {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "value",
            }
        )));
    }
    // Required fields may be missing: upstream decodes them as zero values and leaves
    // the complaint to validation. Fill placeholders until the decode succeeds.
    let mut attempts = 0usize;
    let mut placed: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let candidates = placeholders();
    let output = loop {
        let res = match dispatch(group, version, kind, &input) {
            Some(r) => r,
            None => return Ok(Vec::new()),
        };
        let f = match res {
            Ok(v) => break v,
            Err(f) => f,
        };
        attempts += 1;
        if attempts > 500 {
            return Err(DecodeError(go_message(kind, &f)));
        }
        let missing = f
            .message
            .strip_prefix("missing field `")
            .and_then(|s| s.split('`').next())
            .map(str::to_string);
        let (target, field, idx) = if let Some(field) = missing {
            let full = if f.path == "." || f.path.is_empty() {
                field.clone()
            } else {
                format!("{}.{field}", f.path)
            };
            (segments(&f.path), field, (full, 0))
        } else if let Some(&n) = placed.get(&f.path) {
            let mut segs = segments(&f.path);
            let Some(Seg::Key(field)) = segs.pop() else {
                return Err(DecodeError(go_message(kind, &f)));
            };
            (segs, field, (f.path.clone(), n + 1))
        } else {
            return Err(DecodeError(go_message(kind, &f)));
        };
        let Some(candidate) = candidates.get(idx.1).cloned() else {
            return Err(DecodeError(go_message(kind, &f)));
        };
        match lookup_mut(&mut input, &target).and_then(Value::as_object_mut) {
            Some(m) => {
                m.insert(field, candidate);
            }
            None => return Err(DecodeError(go_message(kind, &f))),
        }
        placed.insert(idx.0, idx.1);
    };
    let mut out = Vec::new();
    let mut original = obj.clone();
    if let Value::Object(m) = &mut original {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    diff(&original, &output, "", &mut out);
    Ok(out)
}
