//! OpenAPI v3 documents for the served resources.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

use serde_json::Value;

/// One served resource of a group-version.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDoc {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Subresource names served (`status`, `scale`, ...).
    pub subresources: Vec<String>,
    /// For custom resources: the version's `openAPIV3Schema`; `None` for built-in kinds,
    /// whose schemas come from k8s-openapi.
    pub crd_schema: Option<Value>,
}

/// The document of one group-version (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`):
/// paths with a PATCH operation per resource carrying `x-kubernetes-group-version-kind` and
/// the `fieldValidation` query parameter (no `requestBody`), and `components.schemas` good
/// enough for `kubectl explain` (descriptions, types, properties, `$ref`s resolvable).
pub fn group_version_document(group: &str, version: &str, resources: &[ResourceDoc]) -> Value { todo!() }

/// The `/openapi/v3` index for documents already built: `(group, version, document)`;
/// `serverRelativeURL` carries a content hash of each document.
pub fn index(documents: &[(String, String, Value)]) -> Value { todo!() }

/// The content hash used in `serverRelativeURL` (uppercase hex is fine).
pub fn document_hash(document: &Value) -> String { todo!() }
