//! OpenAPI v3 documents for the served resources.
//!
//! One document per group-version (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`) with
//! upstream-shaped `paths` (what kubectl's `fieldValidation` probe looks for) and
//! `components.schemas` (what `kubectl explain` walks). Built-in schemas come from
//! k8s-openapi's `schemars::JsonSchema` implementations, whose schema names are already
//! upstream's (`io.k8s.api.apps.v1.Deployment`); custom resources use their CRD's
//! `openAPIV3Schema`. The `/openapi/v3` index points at each document with a content hash.
//! `v2` derives the Swagger 2.0 document (`/openapi/v2`, JSON or gnostic protobuf) from them.

mod builtin;
mod crd;
mod paths;
pub mod v2;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use crate::paths::{Gvk, ResourcePaths, Subresource, SubresourceShape};

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

/// The Kubernetes version the documents describe.
const KUBERNETES_VERSION: &str = "v1.33.0";

/// The schemas of one document being built.
struct Schemas {
    generator: schemars::SchemaGenerator,
    /// Schemas not produced by the generator (custom resources, unknown kinds).
    extra: BTreeMap<String, Value>,
    /// `x-kubernetes-group-version-kind` entries to attach, by schema name.
    gvks: BTreeMap<String, Vec<Gvk>>,
}

impl Schemas {
    fn new() -> Self {
        Schemas {
            generator: SchemaSettings::openapi3().into_generator(),
            extra: BTreeMap::new(),
            gvks: BTreeMap::new(),
        }
    }

    fn tag(&mut self, schema_name: &str, gvk: Gvk) {
        let entry = self.gvks.entry(schema_name.to_string()).or_default();
        if !entry.contains(&gvk) {
            entry.push(gvk);
        }
    }

    /// Registers a built-in kind's schema; returns its name, or `None` when the kind has
    /// no k8s-openapi type.
    fn builtin(&mut self, group: &str, version: &str, kind: &str) -> Option<String> {
        let b = builtin::lookup(group, version, kind)?;
        (b.register)(&mut self.generator);
        let name = (b.schema_name)().into_owned();
        self.tag(&name, Gvk::new(group, version, kind));
        Some(name)
    }

    /// Registers the schema of a served resource; returns its name.
    fn resource(&mut self, group: &str, version: &str, r: &ResourceDoc) -> String {
        let gvk = Gvk::new(group, version, &r.kind);
        if let Some(crd_schema) = &r.crd_schema {
            let name = crd::schema_name(group, version, &r.kind);
            self.generator.subschema_for::<ObjectMeta>();
            self.extra
                .insert(name.clone(), crd::kind_schema(crd_schema));
            self.tag(&name, gvk);
            return name;
        }
        if let Some(name) = self.builtin(group, version, &r.kind) {
            return name;
        }
        // A served kind without a known schema: an open object with the standard fields,
        // so that paths still resolve and `kubectl explain` shows something.
        let name = crd::fallback_schema_name(group, version, &r.kind);
        self.generator.subschema_for::<ObjectMeta>();
        self.extra.insert(
            name.clone(),
            crd::kind_schema(&json!({
                "description": format!("{} is served by this cluster without a published schema.", r.kind),
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true
            })),
        );
        self.tag(&name, gvk);
        name
    }

    /// Resolves one subresource of a resource whose kind schema is `schema_name`.
    fn subresource(
        &mut self,
        group: &str,
        version: &str,
        r: &ResourceDoc,
        schema_name: &str,
        sub: &str,
    ) -> Subresource {
        let own = || Some(Gvk::new(group, version, &r.kind));
        let (shape, gvk, schema) = match sub {
            "status" | "approval" | "ephemeralcontainers" | "resize" => (
                SubresourceShape::ReadWrite,
                own(),
                Some(schema_name.to_string()),
            ),
            "scale" => (
                SubresourceShape::ReadWrite,
                Some(Gvk::new("autoscaling", "v1", "Scale")),
                self.builtin("autoscaling", "v1", "Scale"),
            ),
            "eviction" => (
                SubresourceShape::CreateOnly,
                Some(Gvk::new("policy", "v1", "Eviction")),
                self.builtin("policy", "v1", "Eviction"),
            ),
            "binding" => (
                SubresourceShape::CreateOnly,
                Some(Gvk::new("", "v1", "Binding")),
                self.builtin("", "v1", "Binding"),
            ),
            "token" => (
                SubresourceShape::CreateOnly,
                Some(Gvk::new("authentication.k8s.io", "v1", "TokenRequest")),
                self.builtin("authentication.k8s.io", "v1", "TokenRequest"),
            ),
            _ => (SubresourceShape::Connect, None, None),
        };
        Subresource {
            name: sub.to_string(),
            shape,
            gvk,
            schema_name: schema,
        }
    }

    /// All schemas, sorted by name, with the GVK extensions attached.
    fn finish(mut self) -> Map<String, Value> {
        let mut all: BTreeMap<String, Value> =
            self.generator.take_definitions(true).into_iter().collect();
        all.append(&mut self.extra);
        for (name, gvks) in self.gvks {
            if let Some(Value::Object(schema)) = all.get_mut(&name) {
                schema.insert(
                    "x-kubernetes-group-version-kind".into(),
                    Value::Array(gvks.iter().map(Gvk::to_value).collect()),
                );
            }
        }
        all.into_iter().collect()
    }
}

/// The document of one group-version (`/openapi/v3/api/v1`, `/openapi/v3/apis/apps/v1`):
/// paths with a PATCH operation per resource carrying `x-kubernetes-group-version-kind` and
/// the `fieldValidation` query parameter (no `requestBody`), and `components.schemas` good
/// enough for `kubectl explain` (descriptions, types, properties, `$ref`s resolvable).
pub fn group_version_document(group: &str, version: &str, resources: &[ResourceDoc]) -> Value {
    let mut schemas = Schemas::new();
    let mut paths = BTreeMap::new();
    for r in resources {
        let schema_name = schemas.resource(group, version, r);
        let subresources = r
            .subresources
            .iter()
            .map(|sub| schemas.subresource(group, version, r, &schema_name, sub))
            .collect();
        paths::add_resource(
            &mut paths,
            &ResourcePaths {
                group,
                version,
                plural: &r.plural,
                namespaced: r.namespaced,
                create_only: r.crd_schema.is_none() && builtin::is_create_only(group, &r.kind),
                gvk: Gvk::new(group, version, &r.kind),
                schema_name,
                subresources,
            },
        );
    }
    let paths: Map<String, Value> = paths.into_iter().collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas.finish(),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header"
                }
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// The `/openapi/v3` index for documents already built: `(group, version, document)`;
/// `serverRelativeURL` carries a content hash of each document.
pub fn index(documents: &[(String, String, Value)]) -> Value {
    let mut entries = BTreeMap::new();
    for (group, version, document) in documents {
        let key = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let url = format!("/openapi/v3/{key}?hash={}", document_hash(document));
        entries.insert(key, json!({"serverRelativeURL": url}));
    }
    let paths: Map<String, Value> = entries.into_iter().collect();
    json!({ "paths": paths })
}

/// The content hash used in `serverRelativeURL` (uppercase hex is fine).
pub fn document_hash(document: &Value) -> String {
    let mut hasher = Sha512::new();
    // Serializing a `Value` cannot fail (its map keys are strings).
    let bytes = serde_json::to_vec(document).unwrap_or_default();
    hasher.update(&bytes);
    hex::encode_upper(hasher.finalize())
}

#[cfg(test)]
mod tests;
