//! Custom resources: unknown-field detection, pruning, defaulting and validation against a
//! CRD version's structural `openAPIV3Schema`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{Map, Value};

use crate::validate::Errs;
use crate::FieldError;

/// Fields of ObjectMeta, kept at the root (and in embedded resources).
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// What to do with the children of an object node: the schema for a known key.
enum Child<'a> {
    Schema(&'a Value),
    Allowed,
    Unknown,
}

fn child_schema<'a>(schema: &'a Value, key: &str) -> Child<'a> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Child::Schema(p);
    }
    match schema.get("additionalProperties") {
        Some(Value::Bool(true)) => return Child::Allowed,
        Some(s @ Value::Object(_)) => return Child::Schema(s),
        _ => {}
    }
    if flag(schema, "x-kubernetes-preserve-unknown-fields") {
        Child::Allowed
    } else {
        Child::Unknown
    }
}

/// Walks `value`, reporting (and when `remove`, deleting) fields the schema does not allow.
fn walk(
    schema: &Value,
    value: &mut Value,
    path: &str,
    meta_level: bool,
    remove: bool,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for key in keys {
                let p = join(path, &key);
                if meta_level && (key == "apiVersion" || key == "kind") {
                    continue;
                }
                if meta_level && key == "metadata" {
                    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                        let unknown: Vec<String> = meta
                            .keys()
                            .filter(|k| !OBJECT_META.contains(&k.as_str()))
                            .cloned()
                            .collect();
                        for k in unknown {
                            out.push(join(&p, &k));
                            if remove {
                                meta.shift_remove(&k);
                            }
                        }
                    }
                    continue;
                }
                match child_schema(schema, &key) {
                    Child::Schema(s) => {
                        let embedded = flag(s, "x-kubernetes-embedded-resource");
                        if let Some(v) = m.get_mut(&key) {
                            walk(s, v, &p, embedded, remove, out);
                        }
                    }
                    Child::Allowed => {}
                    Child::Unknown => {
                        out.push(p);
                        if remove {
                            m.shift_remove(&key);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                let embedded = flag(s, "x-kubernetes-embedded-resource");
                for (i, v) in items.iter_mut().enumerate() {
                    walk(s, v, &format!("{path}[{i}]"), embedded, remove, out);
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut copy = obj.clone();
    let mut out = Vec::new();
    walk(schema, &mut copy, "", true, false, &mut out);
    out
}

pub(crate) fn prune(schema: &Value, obj: &mut Value) {
    let mut out = Vec::new();
    walk(schema, obj, "", true, true, &mut out);
}

fn default_walk(schema: &Value, value: &mut Value, meta_level: bool) {
    match value {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, prop) in props {
                    if meta_level && (k == "metadata" || k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    match m.get(k) {
                        None => {
                            m.insert(k.clone(), default.clone());
                        }
                        Some(Value::Null) if !flag(prop, "nullable") => {
                            m.insert(k.clone(), default.clone());
                        }
                        _ => {}
                    }
                }
            }
            for (k, v) in m.iter_mut() {
                if meta_level && k == "metadata" {
                    continue;
                }
                if let Child::Schema(s) = child_schema(schema, k) {
                    default_walk(s, v, flag(s, "x-kubernetes-embedded-resource"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for v in items.iter_mut() {
                    if v.is_null() {
                        if let Some(d) = s.get("default").filter(|_| !flag(s, "nullable")) {
                            *v = d.clone();
                        }
                    }
                    default_walk(s, v, flag(s, "x-kubernetes-embedded-resource"));
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn apply_defaults(schema: &Value, obj: &mut Value) {
    default_walk(schema, obj, true);
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// Value rendering used in the error bodies (Go `%v`/`%q`-like).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "\"null\"".into(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => num(n.as_f64().unwrap_or(0.0), n),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn num(f: f64, n: &serde_json::Number) -> String {
    if n.is_f64() {
        f.to_string()
    } else {
        n.to_string()
    }
}

fn limit(v: &Value) -> String {
    match v {
        Value::Number(n) => num(n.as_f64().unwrap_or(0.0), n),
        other => other.to_string(),
    }
}

static PATTERNS: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn pattern_matches(pattern: &str, s: &str) -> bool {
    let mut cache = match PATTERNS.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    re.as_ref().is_none_or(|r| r.is_match(s))
}

fn is_date_time(s: &str) -> bool {
    static RFC3339: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$").ok()
    });
    RFC3339.as_ref().is_none_or(|r| r.is_match(s))
}

/// Name of the field in go-openapi messages (`spec.replicas`, root is `body`).
fn body_name(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

fn check(schema: &Value, v: &Value, path: &str, meta_level: bool, e: &mut Errs) {
    let name = body_name(path);
    if v.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            e.type_invalid(
                path,
                "\"null\"",
                &format!("{name} in body must be of type {ty}: \"null\""),
            );
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(is_integer(v) || v.is_string()) {
            e.type_invalid(
                path,
                &show(v),
                &format!(
                    "{name} in body must be of type integer,string: \"{}\"",
                    type_name(v)
                ),
            );
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(ty, v) {
            e.type_invalid(
                path,
                &show(v),
                &format!("{name} in body must be of type {ty}: \"{}\"", type_name(v)),
            );
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            let supported: Vec<String> = options
                .iter()
                .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                .collect();
            let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
            e.not_supported(path, &show(v), &refs);
        }
    }
    match v {
        Value::Number(n) => number(schema, n.as_f64().unwrap_or(0.0), v, path, e),
        Value::String(s) => string(schema, s, v, path, e),
        Value::Array(items) => array(schema, items, v, path, e),
        Value::Object(m) => object(schema, m, v, path, meta_level, e),
        _ => {}
    }
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(sub, v, path, meta_level, e);
    }
    for key in ["anyOf", "oneOf"] {
        let Some(subs) = schema.get(key).and_then(Value::as_array) else {
            continue;
        };
        let passing = subs
            .iter()
            .filter(|sub| {
                let mut inner = Errs::default();
                check(sub, v, path, meta_level, &mut inner);
                inner.into_vec().is_empty()
            })
            .count();
        let ok = if key == "anyOf" {
            passing > 0
        } else {
            passing == 1
        };
        // Integer-or-string fields carry anyOf [integer, string]; already handled above.
        if !ok && !flag(schema, "x-kubernetes-int-or-string") {
            let detail = if key == "anyOf" {
                format!("{name} in body must validate at least one schema (anyOf)")
            } else {
                format!("{name} in body must validate one and only one schema (oneOf)")
            };
            e.invalid(path, &show(v), &detail);
        }
    }
    if let Some(not) = schema.get("not").filter(|n| n.is_object()) {
        let mut inner = Errs::default();
        check(not, v, path, meta_level, &mut inner);
        if inner.into_vec().is_empty() {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should not validate the given schema"),
            );
        }
    }
}

fn number(schema: &Value, f: f64, v: &Value, path: &str, e: &mut Errs) {
    let name = body_name(path);
    if let Some(min) = schema.get("minimum") {
        let m = min.as_f64().unwrap_or(f64::MIN);
        if flag(schema, "exclusiveMinimum") {
            if f <= m {
                e.invalid(
                    path,
                    &show(v),
                    &format!("{name} in body should be greater than {}", limit(min)),
                );
            }
        } else if f < m {
            e.invalid(
                path,
                &show(v),
                &format!(
                    "{name} in body should be greater than or equal to {}",
                    limit(min)
                ),
            );
        }
    }
    if let Some(max) = schema.get("maximum") {
        let m = max.as_f64().unwrap_or(f64::MAX);
        if flag(schema, "exclusiveMaximum") {
            if f >= m {
                e.invalid(
                    path,
                    &show(v),
                    &format!("{name} in body should be less than {}", limit(max)),
                );
            }
        } else if f > m {
            e.invalid(
                path,
                &show(v),
                &format!(
                    "{name} in body should be less than or equal to {}",
                    limit(max)
                ),
            );
        }
    }
    if let Some(mo) = schema.get("multipleOf") {
        let d = mo.as_f64().unwrap_or(0.0);
        if d > 0.0 && ((f / d) - (f / d).round()).abs() > 1e-9 {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should be a multiple of {}", limit(mo)),
            );
        }
    }
}

fn string(schema: &Value, s: &str, v: &Value, path: &str, e: &mut Errs) {
    let name = body_name(path);
    let len = s.chars().count();
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len as u64 > max {
            e.too_long(path, usize::try_from(max).unwrap_or(usize::MAX));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if (len as u64) < min {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should be at least {min} chars long"),
            );
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if !pattern_matches(p, s) {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should match '{p}'"),
            );
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(s) {
        e.invalid(
            path,
            &show(v),
            &format!("{name} in body must be of type date-time: {}", show(v)),
        );
    }
}

fn array(schema: &Value, items: &[Value], v: &Value, path: &str, e: &mut Errs) {
    let name = body_name(path);
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            e.too_many(
                path,
                items.len(),
                usize::try_from(max).unwrap_or(usize::MAX),
            );
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should have at least {min} items"),
            );
        }
    }
    let set_like = flag(schema, "uniqueItems")
        || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
    if set_like {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                e.duplicate(&format!("{path}[{i}]"), &show(item));
            }
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !keys.is_empty() {
            let ids: Vec<Vec<Option<&Value>>> = items
                .iter()
                .map(|it| keys.iter().map(|k| it.get(*k)).collect())
                .collect();
            for i in 0..ids.len() {
                if ids[..i].contains(&ids[i]) {
                    let shown: Vec<String> = keys
                        .iter()
                        .zip(&ids[i])
                        .map(|(k, v)| {
                            format!(
                                "\"{k}\":{}",
                                v.map_or_else(|| "null".to_string(), Value::to_string)
                            )
                        })
                        .collect();
                    e.duplicate(
                        &format!("{path}[{i}]"),
                        &format!("map[string]interface {{}}{{{}}}", shown.join(", ")),
                    );
                }
            }
        }
    }
    if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
        let embedded = flag(s, "x-kubernetes-embedded-resource");
        for (i, item) in items.iter().enumerate() {
            check(s, item, &format!("{path}[{i}]"), embedded, e);
        }
    }
}

fn object(
    schema: &Value,
    m: &Map<String, Value>,
    v: &Value,
    path: &str,
    meta_level: bool,
    e: &mut Errs,
) {
    let name = body_name(path);
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(k) = req.as_str() else { continue };
        if !m.contains_key(k) {
            e.required(&join(path, k), "");
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if m.len() as u64 > max {
            e.too_many(path, m.len(), usize::try_from(max).unwrap_or(usize::MAX));
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if (m.len() as u64) < min {
            e.invalid(
                path,
                &show(v),
                &format!("{name} in body should have at least {min} properties"),
            );
        }
    }
    for (k, child) in m {
        if meta_level && (k == "apiVersion" || k == "kind" || k == "metadata") {
            if k != "metadata" {
                if let Some(s) = schema.get("properties").and_then(|p| p.get(k)) {
                    check(s, child, &join(path, k), false, e);
                }
            }
            continue;
        }
        if let Child::Schema(s) = child_schema(schema, k) {
            check(
                s,
                child,
                &join(path, k),
                flag(s, "x-kubernetes-embedded-resource"),
                e,
            );
        }
    }
}

pub(crate) fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    check(schema, obj, "", true, &mut e);
    e.into_vec()
}
