//! Defaulting, validation and strict field checks for built-in kinds and CRDs.
//!
//! Built-in kinds are checked by decoding into the k8s-openapi (v1_33) type and encoding
//! back: whatever the round trip loses is an unknown field. Defaulting follows upstream's
//! `SetDefaults_*` functions plus the admission defaults every pod gets (service account,
//! priority, not-ready/unreachable tolerations). Validation reproduces upstream field paths,
//! reasons and messages for the commonly hit rules; custom resources are handled against
//! their structural `openAPIV3Schema`.

mod builtin;
mod defaults;
mod dup;
mod schema;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_schema;
#[cfg(test)]
mod tests_validation;

use serde_json::Value;

/// One cause of a 422 Invalid, as upstream's StatusCause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`, `FieldValueTypeInvalid`.
    pub reason: String,
    /// Upstream wording, e.g. `Invalid value: -1: must be greater than or equal to 0`.
    pub message: String,
    /// e.g. `spec.replicas`, `spec.template.spec.containers[0].image`.
    pub field: String,
}

/// The body does not decode into the kind's type (→ 400 BadRequest).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// True when this crate knows the built-in type for the GVK.
pub fn is_builtin(group: &str, version: &str, kind: &str) -> bool {
    builtin::known(group, version, kind)
}

/// Paths of fields the built-in type does not have (e.g. `spec.foo`,
/// `spec.template.spec.containers[0].imagee`); a value of the wrong type is a DecodeError.
pub fn unknown_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    builtin::unknown_fields(group, version, kind, obj)
}

/// Paths of keys that appear twice in the raw JSON body (e.g. `metadata.name`).
pub fn duplicate_fields(raw_json: &[u8]) -> Vec<String> {
    dup::duplicate_fields(raw_json)
}

/// Upstream defaulting for built-in kinds (pods, pod templates, deployments, services, ...).
pub fn apply_defaults(group: &str, version: &str, kind: &str, obj: &mut Value) {
    defaults::apply(group, version, kind, obj)
}

/// Validation of a new object of a built-in kind, metadata included.
pub fn validate_create(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    validate::create(group, version, kind, obj)
}

/// Validation of an update, including immutable fields.
pub fn validate_update(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    old: &Value,
) -> Vec<FieldError> {
    validate::update(group, version, kind, obj, old)
}

/// Custom resources: paths not allowed by the structural `openAPIV3Schema` (honours
/// `x-kubernetes-preserve-unknown-fields`).
pub fn schema_unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    schema::unknown_fields(schema, obj)
}

/// Custom resources: removes fields the schema does not allow (upstream pruning).
pub fn prune(schema: &Value, obj: &mut Value) {
    schema::prune(schema, obj)
}

/// Custom resources: fills `default` values from the schema.
pub fn apply_schema_defaults(schema: &Value, obj: &mut Value) {
    schema::apply_defaults(schema, obj)
}

/// Custom resources: validates `obj` against the `openAPIV3Schema` (type, required, enum,
/// minimum/maximum, minLength/maxLength, pattern, minItems/maxItems, format where simple).
pub fn validate_against_schema(schema: &Value, obj: &Value) -> Vec<FieldError> {
    schema::validate(schema, obj)
}
