//! tmp
use crate::FieldError;
use serde_json::Value;
pub(crate) fn create(_g: &str, _v: &str, _k: &str, _o: &Value) -> Vec<FieldError> {
    Vec::new()
}
pub(crate) fn update(_g: &str, _v: &str, _k: &str, _o: &Value, _old: &Value) -> Vec<FieldError> {
    Vec::new()
}
