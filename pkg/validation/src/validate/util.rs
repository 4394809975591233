//! Error construction with upstream wording, name/label syntax checks and small helpers.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::FieldError;

/// Collected field errors.
#[derive(Debug, Default)]
pub(crate) struct Errs(Vec<FieldError>);

fn push(e: &mut Errs, reason: &str, field: &str, message: String) {
    e.0.push(FieldError {
        reason: reason.to_string(),
        message,
        field: field.to_string(),
    });
}

impl Errs {
    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// `Invalid value: <value>: <detail>`; `value` is already rendered (see [`repr`]).
    pub(crate) fn invalid(&mut self, field: &str, value: &str, detail: &str) {
        push(
            self,
            "FieldValueInvalid",
            field,
            format!("Invalid value: {value}: {detail}"),
        );
    }

    pub(crate) fn type_invalid(&mut self, field: &str, value: &str, detail: &str) {
        push(
            self,
            "FieldValueTypeInvalid",
            field,
            format!("Invalid value: {value}: {detail}"),
        );
    }

    pub(crate) fn required(&mut self, field: &str, detail: &str) {
        let msg = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        push(self, "FieldValueRequired", field, msg);
    }

    pub(crate) fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        let msg = if list.is_empty() {
            format!("Unsupported value: {value}")
        } else {
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            )
        };
        push(self, "FieldValueNotSupported", field, msg);
    }

    pub(crate) fn duplicate(&mut self, field: &str, value: &str) {
        push(
            self,
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value}"),
        );
    }

    pub(crate) fn forbidden(&mut self, field: &str, detail: &str) {
        let msg = if detail.is_empty() {
            "Forbidden".to_string()
        } else {
            format!("Forbidden: {detail}")
        };
        push(self, "FieldValueForbidden", field, msg);
    }

    pub(crate) fn not_found(&mut self, field: &str, value: &str) {
        push(
            self,
            "FieldValueNotFound",
            field,
            format!("Not found: {value}"),
        );
    }

    pub(crate) fn too_long(&mut self, field: &str, max: usize) {
        push(
            self,
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        );
    }

    pub(crate) fn too_many(&mut self, field: &str, actual: usize, max: usize) {
        push(
            self,
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {max} items"),
        );
    }

    /// `must be greater than or equal to 0` for a present integer field below zero.
    pub(crate) fn non_negative(&mut self, obj: Option<&Value>, key: &str, base: &str) {
        if let Some(n) = obj.and_then(|o| o.get(key)).and_then(Value::as_i64) {
            if n < 0 {
                self.invalid(
                    &join(base, key),
                    &n.to_string(),
                    "must be greater than or equal to 0",
                );
            }
        }
    }
}

/// Go `%q` of a string (JSON escaping is close enough).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Renders a JSON value as upstream's error bodies print Go values.
pub(crate) fn repr(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(m) if m.values().all(Value::is_string) => string_map(Some(m)),
        other => other.to_string(),
    }
}

/// Go `%#v` of a `map[string]string`.
pub(crate) fn string_map(m: Option<&Map<String, Value>>) -> String {
    match m {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", quote(k), quote(m[*k].as_str().unwrap_or(""))))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go `%#v` of a `metav1.LabelSelector`.
pub(crate) fn selector_repr(sel: &Value) -> String {
    let labels = sel.get("matchLabels").and_then(Value::as_object);
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|r| {
                    let values = match r.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => format!(
                            "[]string{{{}}}",
                            vs.iter()
                                .map(|v| quote(v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        quote(str_at(r, "key")),
                        quote(str_at(r, "operator"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        string_map(labels)
    )
}

pub(crate) fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

pub(crate) fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

pub(crate) fn key_path(base: &str, key: &str) -> String {
    format!("{base}[{key}]")
}

pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn arr<'a>(v: Option<&'a Value>, key: &str) -> &'a [Value] {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|_| Regex::new("^$").unwrap_or_else(|_| unreachable!()))
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
static DNS1035_LABEL: LazyLock<Regex> = LazyLock::new(|| re("^[a-z]([-a-z0-9]*[a-z0-9])?$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| re("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| re("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"));
static CONFIG_KEY: LazyLock<Regex> = LazyLock::new(|| re("^[-._a-zA-Z0-9]+$"));
static PERCENT: LazyLock<Regex> = LazyLock::new(|| re("^[0-9]+%$"));

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_FMT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

pub(crate) fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !DNS1123_LABEL.is_match(s) {
        out.push(DNS1123_LABEL_MSG.to_string());
    }
    out
}

pub(crate) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !DNS1123_SUBDOMAIN.is_match(s) {
        out.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    out
}

pub(crate) fn dns1035_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !DNS1035_LABEL.is_match(s) {
        out.push(DNS1035_LABEL_MSG.to_string());
    }
    out
}

pub(crate) fn path_segment_name(s: &str) -> Vec<String> {
    match s {
        "." | ".." => vec![format!("may not be '{s}'")],
        _ => ["/", "%"]
            .iter()
            .filter(|c| s.contains(**c))
            .map(|c| format!("may not contain '{c}'"))
            .collect(),
    }
}

pub(crate) fn qualified_name(s: &str) -> Vec<String> {
    let parts: Vec<&str> = s.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_FMT} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    let mut out = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            out.push("prefix part must be non-empty".to_string());
        } else {
            out.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !QUALIFIED_NAME.is_match(name) {
        out.push(format!("name part {QUALIFIED_NAME_FMT}"));
    }
    out
}

pub(crate) fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !LABEL_VALUE.is_match(s) {
        out.push(LABEL_VALUE_MSG.to_string());
    }
    out
}

pub(crate) fn config_key(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !CONFIG_KEY.is_match(s) {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        out.push("must not be '.'".to_string());
    } else if s == ".." {
        out.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

/// Labels map: keys are qualified names, values label values.
pub(crate) fn labels(v: Option<&Value>, path: &str, e: &mut Errs) {
    let Some(m) = v.and_then(Value::as_object) else {
        return;
    };
    for (k, val) in m {
        for msg in qualified_name(k) {
            e.invalid(path, &quote(k), &msg);
        }
        match val.as_str() {
            Some(s) => {
                for msg in label_value(s) {
                    e.invalid(path, &quote(s), &msg);
                }
            }
            None => e.invalid(path, &repr(val), "must be a string"),
        }
    }
}

/// IANA service (port) name syntax.
pub(crate) fn port_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters".to_string());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        out.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".to_string());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_string());
    }
    out
}

pub(crate) fn port_range(v: &Value, path: &str, e: &mut Errs) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        _ => e.invalid(path, &repr(v), "must be between 1 and 65535, inclusive"),
    }
}

/// Int-or-percent field (maxSurge, maxUnavailable, minAvailable): non-negative int or `N%`.
pub(crate) fn int_or_percent(v: Option<&Value>, path: &str, e: &mut Errs) {
    match v {
        Some(Value::String(s)) if !PERCENT.is_match(s) => e.invalid(path, &quote(s), PERCENT_MSG),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            e.invalid(path, &n.to_string(), "must be greater than or equal to 0");
        }
        _ => {}
    }
}

/// Integer value of an int-or-percent (percent as its number), None when absent.
pub(crate) fn int_or_percent_value(v: Option<&Value>) -> Option<(i64, bool)> {
    match v? {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .map(|n| (n, true)),
        _ => None,
    }
}

/// Parses a resource quantity into a number (enough to compare requests and limits).
pub(crate) fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_quantity(s.trim()),
        _ => None,
    }
}

fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mult) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suffix) {
            if !num.is_empty() && !num.ends_with(['e', 'E']) {
                return num.parse::<f64>().ok().map(|n| n * mult);
            }
        }
    }
    s.parse::<f64>().ok()
}

/// Does a LabelSelector (JSON) select `labels`? Unknown operators select nothing.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        if ml.iter().any(|(k, v)| get(k) != v.as_str()) {
            return false;
        }
    }
    for r in arr(Some(sel), "matchExpressions") {
        let key = str_at(r, "key");
        let values: Vec<&str> = arr(Some(r), "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match str_at(r, "operator") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// ValidateLabelSelector: matchLabels syntax and matchExpressions operators/values.
pub(crate) fn label_selector(sel: &Value, path: &str, e: &mut Errs) {
    labels(sel.get("matchLabels"), &join(path, "matchLabels"), e);
    for (i, r) in arr(Some(sel), "matchExpressions").iter().enumerate() {
        let p = idx(&join(path, "matchExpressions"), i);
        let op = str_at(r, "operator");
        let has_values = !arr(Some(r), "values").is_empty();
        match op {
            "In" | "NotIn" => {
                if !has_values {
                    e.required(
                        &join(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if has_values {
                    e.forbidden(
                        &join(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            _ => e.invalid(
                &join(&p, "operator"),
                &quote(op),
                "not a valid selector operator",
            ),
        }
        for msg in qualified_name(str_at(r, "key")) {
            e.invalid(&join(&p, "key"), &quote(str_at(r, "key")), &msg);
        }
    }
}

/// Enum check with upstream's NotSupported wording; absent values are not checked.
pub(crate) fn one_of(v: Option<&Value>, path: &str, supported: &[&str], e: &mut Errs) {
    if let Some(val) = v {
        if !val.as_str().is_some_and(|s| supported.contains(&s)) {
            e.not_supported(path, &repr(val), supported);
        }
    }
}
