//! Decoding of Kubernetes protobuf request bodies into JSON.
//!
//! INTERFACE FIXED BY THE INTEGRATOR: keep these public names and signatures.

use serde_json::Value;

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
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> { todo!() }
