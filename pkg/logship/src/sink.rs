//! Where batches go: the [`Sink`] trait and its HTTP implementation, `POST /v1-mini/logs` on the
//! API server with the node's client credentials (JSON body, optionally zstd-compressed).

use async_trait::async_trait;

use crate::wire::LogBatch;

/// The API path batches are posted to.
pub const LOGS_PATH: &str = "/v1-mini/logs";

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Not stored this time (server away, overloaded, full, or not ready): send again later.
    #[error("sending logs failed, will retry: {0}")]
    Retry(String),
    /// The server refused the batch itself (malformed, too large): sending it again cannot help.
    #[error("the server refused a log batch (status {status}): {message}")]
    Rejected { status: u16, message: String },
}

/// Receives log batches; `Ok` means stored (acknowledged).
#[async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, batch: &LogBatch) -> Result<(), SinkError>;
}

/// What an HTTP status means for a batch: 2xx stored, 400/413/422 refused for good, anything
/// else (401/403/404 while the server is being set up or upgraded, 408, 429, 5xx incl. 507 full)
/// is retried.
pub fn classify_status(status: u16, message: &str) -> Result<(), SinkError> {
    match status {
        200..=299 => Ok(()),
        400 | 413 | 422 => Err(SinkError::Rejected {
            status,
            message: message.to_string(),
        }),
        _ => Err(SinkError::Retry(format!("status {status}: {message}"))),
    }
}

/// Posts batches to the API server with the node's client.
#[derive(Clone)]
pub struct HttpSink {
    client: kube::Client,
    zstd: bool,
}

impl HttpSink {
    /// `zstd`: send the body with `Content-Encoding: zstd`.
    pub fn new(client: kube::Client, zstd: bool) -> HttpSink {
        HttpSink { client, zstd }
    }
}

/// The request body and its `Content-Encoding` (if any).
pub fn encode_body(
    batch: &LogBatch,
    zstd: bool,
) -> Result<(Vec<u8>, Option<&'static str>), SinkError> {
    let json = serde_json::to_vec(batch)
        .map_err(|e| SinkError::Retry(format!("encoding the batch: {e}")))?;
    if !zstd {
        return Ok((json, None));
    }
    let body = zstd::bulk::compress(&json, 1)
        .map_err(|e| SinkError::Retry(format!("compressing the batch: {e}")))?;
    Ok((body, Some("zstd")))
}

#[async_trait]
impl Sink for HttpSink {
    async fn send(&self, batch: &LogBatch) -> Result<(), SinkError> {
        let (body, encoding) = encode_body(batch, self.zstd)?;
        let mut request =
            http::Request::post(LOGS_PATH).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(encoding) = encoding {
            request = request.header(http::header::CONTENT_ENCODING, encoding);
        }
        let request = request
            .body(body)
            .map_err(|e| SinkError::Retry(format!("building the request: {e}")))?;
        match self.client.request_text(request).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) => classify_status(status.code, &status.message),
            Err(e) => Err(SinkError::Retry(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_status_2xx_is_stored() {
        assert!(classify_status(200, "").is_ok());
        assert!(classify_status(204, "").is_ok());
    }

    #[test]
    fn classify_status_bad_request_is_rejected() {
        assert!(matches!(
            classify_status(400, "bad json"),
            Err(SinkError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn classify_status_full_or_away_is_retried() {
        for s in [401, 403, 404, 429, 500, 503, 507] {
            assert!(
                matches!(classify_status(s, ""), Err(SinkError::Retry(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn encode_body_zstd_decodes_to_the_json() {
        let batch = LogBatch {
            node: "n1".into(),
            streams: vec![],
        };
        let (body, enc) = encode_body(&batch, true).unwrap();
        assert_eq!(enc, Some("zstd"));
        let json = zstd::decode_all(&body[..]).unwrap();
        assert_eq!(json, br#"{"node":"n1","streams":[]}"#);
    }
}
