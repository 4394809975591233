//! tmp
use crate::FieldError;
use serde_json::Value;
pub(crate) fn unknown_fields(_s: &Value, _o: &Value) -> Vec<String> {
    Vec::new()
}
pub(crate) fn prune(_s: &Value, _o: &mut Value) {}
pub(crate) fn apply_defaults(_s: &Value, _o: &mut Value) {}
pub(crate) fn validate(_s: &Value, _o: &Value) -> Vec<FieldError> {
    Vec::new()
}
