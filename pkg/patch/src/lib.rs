//! JSON patch, JSON merge patch, strategic merge patch and server-side apply.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

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
        .map(|c| format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.field))
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
pub fn list_strategy(group: &str, kind: &str, path: &[&str]) -> ListStrategy { todo!() }

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> { todo!() }

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value { todo!() }

/// Kubernetes strategic merge patch for a built-in kind.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, group: &str, kind: &str) -> Result<Value, PatchError> { todo!() }

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
) -> Result<Value, PatchError> { todo!() }

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
) { todo!() }
