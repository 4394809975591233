//! Schemas of custom resources (from their CRD's `openAPIV3Schema`) and of served kinds
//! that have no published schema.

use serde_json::{json, Map, Value};

/// The `$ref` target of `ObjectMeta`.
pub(crate) const OBJECT_META_REF: &str =
    "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Upstream's name for a custom resource's schema: the group reversed, then version and
/// kind (`stable.example.com`, `v1`, `CronTab` → `com.example.stable.v1.CronTab`).
pub(crate) fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').filter(|p| !p.is_empty()).collect();
    parts.reverse();
    parts.push(version);
    parts.push(kind);
    parts.join(".")
}

/// A name for a served kind that has no schema: upstream's convention for built-in groups
/// (`io.k8s.api.<group>.<version>.<Kind>`), the custom resource one otherwise.
pub(crate) fn fallback_schema_name(group: &str, version: &str, kind: &str) -> String {
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}.{kind}");
    }
    if !group.contains('.') || group.ends_with(".k8s.io") {
        let short = group.split('.').next().unwrap_or(group);
        return format!("io.k8s.api.{short}.{version}.{kind}");
    }
    schema_name(group, version, kind)
}

/// The kind's schema: the CRD schema with `apiVersion` and `kind` added when absent and
/// `metadata` pointing at `ObjectMeta`.
pub(crate) fn kind_schema(crd_schema: &Value) -> Value {
    let mut schema = match crd_schema {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !properties.is_object() {
        *properties = Value::Object(Map::new());
    }
    if let Value::Object(properties) = properties {
        properties
            .entry("apiVersion")
            .or_insert_with(|| json!({"description": API_VERSION_DESCRIPTION, "type": "string"}));
        properties
            .entry("kind")
            .or_insert_with(|| json!({"description": KIND_DESCRIPTION, "type": "string"}));
        let metadata_ref = json!({
            "description": METADATA_DESCRIPTION,
            "allOf": [{"$ref": OBJECT_META_REF}]
        });
        // Like upstream: metadata always points at ObjectMeta (CRDs may only restrict
        // metadata.name/generateName, which explain has no use for).
        properties.insert("metadata".into(), metadata_ref);
    }
    Value::Object(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_name_reverses_the_group() {
        assert_eq!(
            schema_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
    }

    #[test]
    fn fallback_schema_name_uses_upstream_convention_for_k8s_groups() {
        assert_eq!(
            fallback_schema_name("", "v1", "Foo"),
            "io.k8s.api.core.v1.Foo"
        );
        assert_eq!(
            fallback_schema_name("resource.k8s.io", "v1beta1", "DeviceClass"),
            "io.k8s.api.resource.v1beta1.DeviceClass"
        );
        assert_eq!(
            fallback_schema_name("example.com", "v1", "Foo"),
            "com.example.v1.Foo"
        );
    }

    #[test]
    fn kind_schema_adds_standard_fields_and_keeps_existing_ones() {
        let out = kind_schema(&json!({
            "type": "object",
            "properties": {
                "kind": {"type": "string", "description": "mine"},
                "metadata": {"type": "object"},
                "spec": {"type": "object"}
            }
        }));
        assert_eq!(out["properties"]["kind"]["description"], "mine");
        assert_eq!(out["properties"]["apiVersion"]["type"], "string");
        assert_eq!(
            out["properties"]["metadata"]["allOf"][0]["$ref"],
            OBJECT_META_REF
        );
        assert_eq!(out["properties"]["spec"]["type"], "object");
    }
}
