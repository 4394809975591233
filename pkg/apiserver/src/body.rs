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

/// A JSON response from already-serialised bytes, ending in a newline as upstream's encoder does.
pub(crate) fn json_bytes(status: StatusCode, mut bytes: Vec<u8>, gzip: bool) -> Response<Body> {
    if bytes.last() != Some(&b'\n') {
        bytes.push(b'\n');
    }
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

/// Bytes per frame of a streamed list.
const LIST_CHUNK: usize = 256 * 1024;

/// A JSON list whose items are stored JSON spliced with their resourceVersion, produced
/// frame by frame as the connection writes it (no copy of the whole list), with an exact
/// length so the response keeps its `Content-Length`.
pub(crate) struct ListBody {
    prefix: Option<Vec<u8>>,
    items: std::vec::IntoIter<(mini_store::KeyValue, Option<Value>)>,
    first: bool,
    done: bool,
    remaining: u64,
}

impl ListBody {
    /// `prefix` is everything up to and including `"items":[`.
    pub(crate) fn new(
        prefix: Vec<u8>,
        items: Vec<(mini_store::KeyValue, Option<Value>)>,
    ) -> ListBody {
        let spliced: usize = items
            .iter()
            .map(|(kv, _)| mini_api::meta::spliced_len(&kv.value, kv.mod_revision))
            .sum();
        let commas = items.len().saturating_sub(1);
        let total = prefix.len() + spliced + commas + 3;
        ListBody {
            prefix: Some(prefix),
            items: items.into_iter(),
            first: true,
            done: false,
            remaining: total as u64,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut chunk = Vec::with_capacity(LIST_CHUNK + 8 * 1024);
        if let Some(p) = self.prefix.take() {
            chunk.extend_from_slice(&p);
        }
        while chunk.len() < LIST_CHUNK {
            match self.items.next() {
                Some((kv, _)) => {
                    if !self.first {
                        chunk.push(b',');
                    }
                    self.first = false;
                    mini_api::meta::splice_resource_version_into(
                        &mut chunk,
                        &kv.value,
                        kv.mod_revision,
                    );
                }
                None => {
                    chunk.extend_from_slice(b"]}\n");
                    self.done = true;
                    break;
                }
            }
        }
        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
        Some(Bytes::from(chunk))
    }
}

impl http_body::Body for ListBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .next_chunk()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// A list response streamed from stored items; gzipped in one piece when the client
/// accepts it and the list is large.
pub(crate) fn list_response(
    prefix: Vec<u8>,
    items: Vec<(mini_store::KeyValue, Option<Value>)>,
    gzip: bool,
) -> Response<Body> {
    let body = ListBody::new(prefix, items);
    if gzip && body.remaining >= GZIP_THRESHOLD as u64 {
        let mut body = body;
        let mut all = Vec::with_capacity(usize::try_from(body.remaining).unwrap_or(0));
        while let Some(chunk) = body.next_chunk() {
            all.extend_from_slice(&chunk);
        }
        return json_bytes(StatusCode::OK, all, true);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.boxed_unsync())
        .expect("valid response")
}

#[cfg(test)]
mod list_body_tests {
    use super::*;

    fn kv(key: &str, value: &str, rv: u64) -> (mini_store::KeyValue, Option<Value>) {
        (
            mini_store::KeyValue {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                create_revision: rv,
                mod_revision: rv,
            },
            None,
        )
    }

    #[test]
    fn list_body_is_the_spliced_list_with_an_exact_length() {
        let big = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"X\",\"metadata\":{{\"name\":\"b\"}},\"data\":\"{}\"}}",
            "x".repeat(LIST_CHUNK)
        );
        for items in [
            vec![],
            vec![kv(
                "a",
                r#"{"apiVersion":"v1","kind":"X","metadata":{}}"#,
                7,
            )],
            vec![
                kv(
                    "a",
                    r#"{"apiVersion":"v1","kind":"X","metadata":{"name":"a"}}"#,
                    9,
                ),
                kv("b", &big, 10),
                kv(
                    "c",
                    r#"{"apiVersion":"v1","kind":"X","metadata":{"name":"c"}}"#,
                    1234,
                ),
            ],
        ] {
            let expected_items: Vec<Value> = items
                .iter()
                .map(|(kv, _)| mini_api::meta::from_storage(&kv.value, kv.mod_revision).unwrap())
                .collect();
            let mut body = ListBody::new(b"{\"items\":[".to_vec(), items);
            let total = body.remaining;
            let mut all = Vec::new();
            while let Some(chunk) = body.next_chunk() {
                all.extend_from_slice(&chunk);
            }
            assert_eq!(all.len() as u64, total);
            assert_eq!(body.remaining, 0);
            let parsed: Value = serde_json::from_slice(&all).unwrap();
            assert_eq!(parsed["items"], Value::Array(expected_items));
        }
    }
}
