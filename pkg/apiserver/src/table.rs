//! `meta.k8s.io/v1` Table responses for `kubectl get`.

use http::{header, HeaderMap};
use mini_api::ResourceInfo;
use serde_json::{json, Value};

use crate::request::Query;

/// The client asked for `as=Table`.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// The column definitions of a resource.
pub fn columns(res: &ResourceInfo) -> Value {
    match &res.custom {
        Some(c) => json!(mini_printers::crd_columns(&c.printer_columns)),
        None => json!(mini_printers::columns(&res.group, &res.kind)),
    }
}

/// One table row for `obj`, with the object embedded per `includeObject`.
pub fn row(
    res: &ResourceInfo,
    obj: &Value,
    query: &Query,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let cells = match &res.custom {
        Some(c) => mini_printers::crd_cells(&c.printer_columns, obj, now),
        None => mini_printers::cells(&res.group, &res.kind, obj, now),
    };
    let object = match query.get("includeObject") {
        Some("None") => Value::Null,
        Some("Object") => obj.clone(),
        _ => {
            let mut metadata = obj["metadata"].clone();
            if let Some(m) = metadata.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
        }
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table of `objects`. `with_columns` false leaves column definitions out (later watch events).
pub fn table_with(
    res: &ResourceInfo,
    objects: &[Value],
    query: &Query,
    rv: &str,
    with_columns: bool,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects.iter().map(|o| row(res, o, query, now)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": if with_columns { columns(res) } else { json!([]) },
        "rows": rows,
    });
    if !with_columns {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    query: &Query,
    rv: &str,
    _single: bool,
) -> Value {
    table_with(res, objects, query, rv, true)
}
