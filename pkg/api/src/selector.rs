//! Label and field selectors: parsing the query-string forms and matching objects.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(key: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{key}: expected a parenthesised set")))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    for v in &values {
        if !valid_label_value(v) {
            return Err(SelectorError(format!("{key}: invalid value {v:?}")));
        }
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses `app=web,tier!=db,env in (a,b),!legacy,track`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                Requirement::NotExists(key.to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(idx) = part.find(" notin ") {
                let key = part[..idx].trim();
                Requirement::NotIn(key.to_string(), parse_set(key, &part[idx + 7..])?)
            } else if let Some(idx) = part.find(" in ") {
                let key = part[..idx].trim();
                Requirement::In(key.to_string(), parse_set(key, &part[idx + 4..])?)
            } else {
                Requirement::Exists(part.to_string())
            };
            let (key, value) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => (k, None),
            };
            if !valid_label_key(key) {
                return Err(SelectorError(format!("invalid label key {key:?}")));
            }
            if let Some(v) = value {
                if !valid_label_value(v) {
                    return Err(SelectorError(format!("invalid label value {v:?}")));
                }
            }
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object. `None` (absent) matches
    /// nothing in upstream controllers, so callers decide; this treats `{}` as everything.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for expr in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expr["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = expr["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let req = match expr["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                other => return Err(SelectorError(format!("{other:?} is not a valid operator"))),
            };
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches a labels map (`metadata.labels`).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj["metadata"]["labels"].as_object())
    }

    /// The string form (`app=web,env in (a,b)`), as Scale's `status.selector` wants.
    pub fn to_query(&self) -> String {
        self.requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `metadata.name=web,status.phase!=Failed`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector: {part:?}: expected field=value"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The exact `metadata.name` this selector pins, if any (lets GETs and watches narrow).
    pub fn exact_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negated)
            .map(|r| r.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negated
        })
    }
}

/// The string value of a selectable field: missing fields read as "" (as upstream),
/// booleans and numbers as their text.
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = match field {
        "source" => "source.component",
        other => other,
    };
    let mut cur = obj;
    for seg in path.split('.') {
        cur = match cur.get(seg) {
            Some(v) => v,
            None => {
                // upstream maps an unset spec.unschedulable to "false"
                return if field == "spec.unschedulable" || field == "spec.hostNetwork" {
                    "false".to_string()
                } else {
                    String::new()
                };
            }
        };
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Value {
        json!({"metadata":{"labels":v}})
    }

    #[test]
    fn label_selector_all_operators_match_like_upstream() {
        let obj = labels(json!({"app":"web","env":"prod","track":"stable"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "env in (prod,dev)",
            "env notin (dev)",
            "track",
            "!legacy",
            "app=web,env in (prod)",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches_object(&obj), "{s}");
        }
        let no = ["app=db", "env notin (prod)", "legacy", "!track", "x in (a)"];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches_object(&obj),
                "{s}"
            );
        }
    }

    #[test]
    fn label_selector_bad_syntax_is_an_error() {
        assert!(LabelSelector::parse("app=web,").is_err());
        assert!(LabelSelector::parse("env in prod").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn label_selector_from_json_round_trips_to_query() {
        let sel = LabelSelector::from_json(&json!({"matchLabels":{"app":"web"},
            "matchExpressions":[{"key":"env","operator":"In","values":["a","b"]}]}))
        .unwrap();
        assert_eq!(sel.to_query(), "app=web,env in (a,b)");
        assert_eq!(LabelSelector::parse(&sel.to_query()).unwrap(), sel);
    }

    #[test]
    fn field_selector_missing_field_reads_empty_and_negation_works() {
        let pod =
            json!({"metadata":{"name":"p"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        let sel = FieldSelector::parse("spec.nodeName=n1,status.phase!=Succeeded").unwrap();
        assert!(sel.matches(&pod));
        assert!(FieldSelector::parse("spec.schedulerName=")
            .unwrap()
            .matches(&pod));
        assert_eq!(
            FieldSelector::parse("metadata.name=p")
                .unwrap()
                .exact_name(),
            Some("p")
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn field_value_unschedulable_defaults_false() {
        assert_eq!(
            field_value(&json!({"spec":{}}), "spec.unschedulable"),
            "false"
        );
        assert_eq!(
            field_value(
                &json!({"spec":{"unschedulable":true}}),
                "spec.unschedulable"
            ),
            "true"
        );
    }
}
