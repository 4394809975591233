//! metav1.LabelSelector matching, as used by ClusterRole aggregation rules.

use serde_json::Value;

use crate::rule::string_list;

/// Whether `labels` (an object of string values, or absent) satisfies `selector`
/// (`matchLabels` and `matchExpressions`, ANDed). An empty selector matches everything;
/// a malformed one (unknown operator, non-object) matches nothing, like upstream where
/// the conversion to a selector fails.
pub(crate) fn selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    let label =
        |key: &str| -> Option<&str> { labels.and_then(|l| l.get(key)).and_then(Value::as_str) };

    if let Some(match_labels) = selector.get("matchLabels") {
        match match_labels {
            Value::Null => {}
            Value::Object(wanted) => {
                for (key, value) in wanted {
                    let Some(value) = value.as_str() else {
                        return false;
                    };
                    if label(key) != Some(value) {
                        return false;
                    }
                }
            }
            _ => return false,
        }
    }

    if let Some(expressions) = selector.get("matchExpressions") {
        match expressions {
            Value::Null => {}
            Value::Array(expressions) => {
                for expr in expressions {
                    let Some(key) = expr.get("key").and_then(Value::as_str) else {
                        return false;
                    };
                    let values = string_list(expr, "values");
                    let current = label(key);
                    let ok = match expr.get("operator").and_then(Value::as_str) {
                        Some("In") => current.is_some_and(|c| values.iter().any(|v| v == c)),
                        Some("NotIn") => current.is_none_or(|c| values.iter().all(|v| v != c)),
                        Some("Exists") => current.is_some(),
                        Some("DoesNotExist") => current.is_none(),
                        _ => false,
                    };
                    if !ok {
                        return false;
                    }
                }
            }
            _ => return false,
        }
    }
    true
}
