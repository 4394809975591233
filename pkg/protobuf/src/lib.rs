//! Decoding of Kubernetes protobuf request bodies into JSON.

use serde_json::Value;

#[cfg(test)]
mod generate;
mod json;
mod policy;
mod schema;
#[cfg(test)]
mod tests;
mod wire;

use prost::Message as _;

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The content type kubectl sends.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the k8s magic prefix")]
    NoMagic,
    #[error("decoding protobuf failed: {0}")]
    Decode(String),
    #[error("protobuf decoding of {api_version}/{kind} is not supported")]
    UnsupportedKind { api_version: String, kind: String },
}

/// Decodes `k8s\0` + runtime.Unknown into the JSON form of the wrapped object, with
/// `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let payload = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::NoMagic)?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(payload)
        .map_err(|e| ProtobufError::Decode(e.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::Decode(format!(
            "unsupported content encoding {encoding:?}"
        )));
    }
    let content_type = unknown.content_type.unwrap_or_default();
    let mut object = if content_type.is_empty() || content_type.starts_with(CONTENT_TYPE) {
        let schema = schema::Schema::get();
        let message =
            schema
                .for_kind(&api_version, &kind)
                .ok_or_else(|| ProtobufError::UnsupportedKind {
                    api_version: api_version.clone(),
                    kind: kind.clone(),
                })?;
        json::message_to_json(schema, message, &raw)?
    } else if content_type.starts_with("application/json") {
        serde_json::from_slice(&raw).map_err(|e| ProtobufError::Decode(e.to_string()))?
    } else {
        return Err(ProtobufError::Decode(format!(
            "unsupported content type {content_type:?}"
        )));
    };
    let Value::Object(fields) = &mut object else {
        return Err(ProtobufError::Decode(format!(
            "{api_version}/{kind} does not decode to an object"
        )));
    };
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".to_string(), Value::String(api_version));
    out.insert("kind".to_string(), Value::String(kind));
    for (key, value) in std::mem::take(fields) {
        if key != "apiVersion" && key != "kind" {
            out.insert(key, value);
        }
    }
    Ok(Value::Object(out))
}
