//! JSON patch, JSON merge patch, strategic merge patch and server-side apply.

mod fieldset;
mod managed_fields;
mod smp;
mod strategy;

pub use fieldset::{path_string, FieldSet, PathElement};

pub use strategy::is_builtin;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (→ 400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// The patch cannot be applied to this object (→ 422 Invalid / 400, e.g. a failed `test` op).
    #[error("{0}")]
    Apply(String),
    /// Server-side apply conflicts (→ 409 Conflict with FieldManagerConflict causes).
    #[error("Apply failed with {} conflict{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, conflict_summary(.0))]
    Conflicts(Vec<FieldConflict>),
}

/// One server-side apply conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The manager that owns the field now.
    pub manager: String,
    /// The apiVersion that manager used.
    pub api_version: String,
    /// The field path in upstream notation, e.g. `.spec.replicas`.
    pub field: String,
}

fn conflict_summary(conflicts: &[FieldConflict]) -> String {
    conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a list at some path is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced as a whole.
    Atomic,
    /// A list of objects merged by this key field.
    MergeByKey(&'static str),
    /// A set of primitives merged by value.
    MergePrimitives,
}

/// The list strategy of built-in kinds at `path` (field names from the object root, list
/// indices left out), e.g. (`apps`, `Deployment`, `["spec","template","spec","containers"]`).
/// Unknown kinds and paths are `Atomic`.
pub fn list_strategy(group: &str, kind: &str, path: &[&str]) -> ListStrategy {
    strategy::lookup(group, kind, path)
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| {
        let op = ops.0.get(e.operation);
        let op_name = match op {
            Some(json_patch::PatchOperation::Add(_)) => "add",
            Some(json_patch::PatchOperation::Remove(_)) => "remove",
            Some(json_patch::PatchOperation::Replace(_)) => "replace",
            Some(json_patch::PatchOperation::Move(_)) => "move",
            Some(json_patch::PatchOperation::Copy(_)) => "copy",
            Some(json_patch::PatchOperation::Test(_)) => "test",
            None => "unknown",
        };
        let path = e.path.to_string();
        PatchError::Apply(match e.kind {
            json_patch::PatchErrorKind::TestFailed => {
                format!("testing value {path} failed: test failed")
            }
            json_patch::PatchErrorKind::InvalidFromPointer => {
                format!("{op_name} operation does not apply: doc is missing from path: {path}")
            }
            _ => format!("{op_name} operation does not apply: doc is missing path: \"{path}\": missing value"),
        })
    })?;
    Ok(out)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Kubernetes strategic merge patch for a built-in kind.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    group: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    smp::apply(doc, patch, group, kind)
}

/// Server-side apply of `applied` by `manager` onto `live` (None = create). Returns the new
/// object with `metadata.managedFields` updated. Without `force`, fields owned by another
/// manager with a different value are `Conflicts`; with `force` ownership moves to `manager`.
/// `now` is an RFC 3339 timestamp for the managedFields entry.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    group: &str,
    kind: &str,
    now: &str,
) -> Result<Value, PatchError> {
    managed_fields::apply(live, applied, manager, force, group, kind, now)
}

/// Records an ordinary write (create/update/patch, operation `Update`) by `manager` in
/// `new.metadata.managedFields`: the fields it changed relative to `old` (all fields on create)
/// become owned by it and are taken from other managers. `subresource` is e.g. `Some("status")`.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    group: &str,
    kind: &str,
    now: &str,
) {
    managed_fields::update(old, new, manager, subresource, group, kind, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_replace_and_add_apply() {
        let doc = json!({"spec": {"replicas": 1}, "metadata": {"labels": {}}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/labels/a~1b", "value": "x"}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec": {"replicas": 3}, "metadata": {"labels": {"a/b": "x"}}})
        );
    }

    #[test]
    fn json_patch_malformed_document_is_malformed() {
        let err = json_patch(&json!({}), &json!({"op": "add"})).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)));
        let err = json_patch(&json!({}), &json!([{"op": "frobnicate", "path": "/a"}])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)));
    }

    #[test]
    fn json_patch_missing_path_and_failed_test_are_apply_errors() {
        let doc = json!({"spec": {"replicas": 1}});
        let err =
            json_patch(&doc, &json!([{"op": "remove", "path": "/spec/missing"}])).unwrap_err();
        assert!(matches!(err, PatchError::Apply(_)), "{err:?}");
        assert!(err.to_string().contains("/spec/missing"), "{err}");
        let err = json_patch(
            &doc,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Apply(_)));
        assert!(err.to_string().contains("test failed"), "{err}");
    }

    #[test]
    fn merge_patch_merges_and_null_deletes() {
        let doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = merge_patch(&doc, &json!({"a": {"b": null, "d": 4}, "l": [3]}));
        assert_eq!(out, json!({"a": {"c": 2, "d": 4}, "l": [3]}));
    }

    #[test]
    fn list_strategy_covers_pod_spec_locations() {
        let c = ListStrategy::MergeByKey("name");
        assert_eq!(list_strategy("", "Pod", &["spec", "containers"]), c);
        assert_eq!(
            list_strategy(
                "apps",
                "Deployment",
                &["spec", "template", "spec", "containers"]
            ),
            c
        );
        assert_eq!(
            list_strategy(
                "batch",
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "initContainers"
                ]
            ),
            c
        );
        assert_eq!(
            list_strategy("", "Pod", &["spec", "containers", "ports"]),
            ListStrategy::MergeByKey("containerPort")
        );
        assert_eq!(
            list_strategy("", "Pod", &["spec", "tolerations"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy("", "Pod", &["status", "containerStatuses"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy("", "Node", &["status", "conditions"]),
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            list_strategy("", "Node", &["spec", "taints"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy("", "Service", &["spec", "ports"]),
            ListStrategy::MergeByKey("port")
        );
        assert_eq!(
            list_strategy("", "ConfigMap", &["metadata", "finalizers"]),
            ListStrategy::MergePrimitives
        );
        assert_eq!(
            list_strategy("apps", "StatefulSet", &["spec", "volumeClaimTemplates"]),
            ListStrategy::Atomic
        );
        assert_eq!(
            list_strategy("example.com", "Widget", &["metadata", "finalizers"]),
            ListStrategy::Atomic
        );
    }
}
