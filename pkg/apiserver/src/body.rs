//! Request body decoding (JSON, YAML, Kubernetes protobuf) and response building.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use mini_api::ApiError;
use serde_json::Value;

/// The response body type of every handler.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Responses at least this large are gzipped when the client accepts it (as upstream).
const GZIP_THRESHOLD: usize = 128 * 1024;

pub(crate) fn wants_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

/// A JSON response from already-serialised bytes.
pub(crate) fn json_bytes(status: StatusCode, bytes: Vec<u8>, gzip: bool) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    let body = if gzip && bytes.len() >= GZIP_THRESHOLD {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(&bytes).is_ok() {
            if let Ok(zipped) = enc.finish() {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                return builder.body(full(zipped)).expect("valid response");
            }
        }
        bytes
    } else {
        bytes
    };
    builder.body(full(body)).expect("valid response")
}

pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_default(), false)
}

pub(crate) fn error(err: &ApiError) -> Response<Body> {
    let mut resp = json(
        StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &err.to_status(),
    );
    // upstream sends Retry-After only for a positive delay; client-go retries by itself on it
    if let Some(s) = err.retry_after_seconds.filter(|s| *s > 0) {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

pub(crate) fn text(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(text.into()))
        .expect("valid response")
}

/// The media type of the request body, lowercased, without parameters.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body: JSON, YAML or Kubernetes protobuf.
pub(crate) fn decode_object(content_type: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = match content_type {
        "application/vnd.kubernetes.protobuf" => {
            mini_protobuf::decode(raw).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_yaml_ng::from_slice(raw)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
        _ => serde_json::from_slice(raw).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Decodes a patch body (JSON, or YAML for apply patches).
pub(crate) fn decode_patch(content_type: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if content_type == "application/apply-patch+yaml" {
        return serde_yaml_ng::from_slice(raw)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}
