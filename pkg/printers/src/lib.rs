//! Table columns and rows for `kubectl get`, per kind.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A `meta.k8s.io/v1` TableColumnDefinition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
}

/// Upstream's columns for a built-in kind; `Name`, `Age` for others.
pub fn columns(group: &str, kind: &str) -> Vec<Column> { todo!() }

/// The cells of one row, matching `columns(group, kind)`.
pub fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> { todo!() }

/// Columns for a custom resource from the CRD version's `additionalPrinterColumns`
/// (`Name` first; `Age` when the list is empty).
pub fn crd_columns(additional_printer_columns: &[Value]) -> Vec<Column> { todo!() }

/// Cells for a custom resource; JSONPath columns evaluated against `obj`.
pub fn crd_cells(additional_printer_columns: &[Value], obj: &Value, now: DateTime<Utc>) -> Vec<Value> { todo!() }

/// Upstream's short human duration (`5s`, `3m2s`, `4h`, `2d3h`, `45d`, `3y`).
pub fn human_duration(seconds: i64) -> String { todo!() }
