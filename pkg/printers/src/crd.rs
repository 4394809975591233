//! Custom resources: columns from `additionalPrinterColumns`, cells by JSONPath.
//!
//! Follows apiextensions' table convertor: a value that is missing, `null`
//! or of the wrong type for the column becomes a `null` cell (kubectl shows
//! `<none>`); `date` columns render as a human duration since the time.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::jsonpath;
use crate::util::{name, parse_time, since_time, str_at};
use crate::{Column, NAME};

/// One printer column as read from the CRD.
struct Apc {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i32,
    json_path: String,
}

fn apcs(additional: &[Value]) -> Vec<Apc> {
    if additional.is_empty() {
        return vec![Apc {
            name: "Age".to_string(),
            ty: "date".to_string(),
            format: String::new(),
            description: crate::CREATED_AT.desc.to_string(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".to_string(),
        }];
    }
    additional
        .iter()
        .map(|c| {
            let json_path = str_at(c, &["jsonPath"]).to_string();
            let description = match str_at(c, &["description"]) {
                "" => {
                    format!("Custom resource definition column (in JSONPath format): {json_path}")
                }
                d => d.to_string(),
            };
            Apc {
                name: str_at(c, &["name"]).to_string(),
                ty: str_at(c, &["type"]).to_string(),
                format: str_at(c, &["format"]).to_string(),
                description,
                priority: c
                    .get("priority")
                    .and_then(Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(0),
                json_path,
            }
        })
        .collect()
}

pub(crate) fn columns(additional: &[Value]) -> Vec<Column> {
    let mut cols = vec![NAME.to_column()];
    cols.extend(apcs(additional).into_iter().map(|a| Column {
        name: a.name,
        type_: a.ty,
        format: a.format,
        description: a.description,
        priority: a.priority,
    }));
    cols
}

pub(crate) fn cells(additional: &[Value], obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut row = vec![name(obj)];
    for apc in apcs(additional) {
        let value = jsonpath::parse(&apc.json_path)
            .ok()
            .and_then(|segs| jsonpath::find(&segs, obj).first().copied().cloned());
        row.push(match value {
            Some(v) => cell_for(&apc.ty, &v, now),
            None => Value::Null,
        });
    }
    row
}

/// Converts one JSONPath result to a cell of the column's type.
fn cell_for(ty: &str, value: &Value, now: DateTime<Utc>) -> Value {
    match (ty, value) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(_)) => value.clone(),
        ("string", Value::Number(_) | Value::Bool(_)) => Value::from(value.to_string()),
        ("string", Value::Array(_) | Value::Object(_)) => Value::from(value.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, Value::from),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(_)) => value.clone(),
        ("date", Value::String(s)) => {
            if s.is_empty() || s == "null" {
                Value::from("<unknown>")
            } else {
                match parse_time(s) {
                    Some(t) => Value::from(since_time(t, now)),
                    None => Value::from("<invalid>"),
                }
            }
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    fn apc() -> Vec<Value> {
        vec![
            json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
            json!({"name": "Ready", "type": "string",
                   "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status",
                   "description": "Whether the widget is ready"}),
            json!({"name": "Image", "type": "string", "priority": 1, "jsonPath": ".spec.images[0]"}),
            json!({"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"}),
            json!({"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ]
    }

    fn widget() -> Value {
        json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "creationTimestamp": "2024-05-01T09:30:00Z"},
            "spec": {"replicas": 3, "images": ["busybox:1.36", "nginx"], "paused": false},
            "status": {"ratio": 0.5, "conditions": [
                {"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]}
        })
    }

    #[test]
    fn crd_columns_name_first_then_printer_columns() {
        let cols = columns(&apc());
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["Name", "Replicas", "Ready", "Image", "Paused", "Ratio", "Age"]
        );
        assert_eq!(cols[0].format, "name");
        assert_eq!(cols[1].type_, "integer");
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .spec.replicas"
        );
        assert_eq!(cols[2].description, "Whether the widget is ready");
        assert_eq!(cols[3].priority, 1);
        assert_eq!(cols[6].type_, "date");
    }

    #[test]
    fn crd_cells_evaluate_jsonpath_with_filter() {
        assert_eq!(
            cells(&apc(), &widget(), now()),
            vec![
                json!("w1"),
                json!(3),
                json!("False"),
                json!("busybox:1.36"),
                json!(false),
                json!(0.5),
                json!("150m")
            ]
        );
    }

    #[test]
    fn crd_cells_missing_values_are_null() {
        let bare = json!({"metadata": {"name": "w2"}});
        let row = cells(&apc(), &bare, now());
        assert_eq!(row.len(), columns(&apc()).len());
        assert_eq!(row[0], json!("w2"));
        assert!(row[1..].iter().all(Value::is_null), "{row:?}");
    }

    #[test]
    fn crd_cells_type_conversions() {
        let cols = vec![
            json!({"name": "N", "type": "string", "jsonPath": ".spec.replicas"}),
            json!({"name": "I", "type": "integer", "jsonPath": ".status.ratio"}),
            json!({"name": "B", "type": "boolean", "jsonPath": ".spec.replicas"}),
            json!({"name": "D", "type": "date", "jsonPath": ".spec.when"}),
            json!({"name": "S", "type": "string", "jsonPath": ".spec.images"}),
        ];
        let mut obj = widget();
        obj["spec"]["when"] = json!("yesterday");
        assert_eq!(
            cells(&cols, &obj, now()),
            vec![
                json!("w1"),
                json!("3"),
                json!(0),
                Value::Null,
                json!("<invalid>"),
                json!("[\"busybox:1.36\",\"nginx\"]")
            ]
        );
    }

    #[test]
    fn crd_without_printer_columns_gets_age() {
        let cols = columns(&[]);
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Age"]);
        assert_eq!(
            cells(&[], &widget(), now()),
            vec![json!("w1"), json!("150m")]
        );
        assert_eq!(
            cells(&[], &json!({"metadata": {"name": "n"}}), now()),
            vec![json!("n"), Value::Null]
        );
    }

    #[test]
    fn crd_column_count_matches_cells_via_public_api() {
        let c = crate::crd_columns(&apc());
        let r = crate::crd_cells(&apc(), &widget(), now());
        assert_eq!(c.len(), r.len());
    }
}
