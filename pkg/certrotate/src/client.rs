//! The client side of `mini certificate rotate` and `rotate-ca`: calls the running server's
//! endpoints with an admin kube client and renders the answer.

use std::fmt::Write;
use std::time::Duration;

use crate::{
    CertRotateError, CertStatus, RotateCaRequest, ROTATE_CA_PATH, ROTATE_PATH, STATUS_PATH,
};

async fn call(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<CertStatus, CertRotateError> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| CertRotateError::Client(format!("building the request: {e}")))?;
    let text = client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(status) => CertRotateError::Client(status.message),
        other => CertRotateError::Client(format!(
            "asking the server: {other} (is mini server running?)"
        )),
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CertRotateError::Client(format!(
            "the server's answer to {path} is not understood: {e}"
        ))
    })
}

/// The server's certificates and the rotation state.
pub async fn status(client: &kube::Client) -> Result<CertStatus, CertRotateError> {
    call(client, http::Method::GET, STATUS_PATH, Vec::new()).await
}

/// Renews every leaf of the server now; agents renew theirs when they next ask.
pub async fn rotate(client: &kube::Client) -> Result<CertStatus, CertRotateError> {
    call(client, http::Method::POST, ROTATE_PATH, Vec::new()).await
}

/// A new CA; the old one stays trusted for `overlap`.
pub async fn rotate_ca(
    client: &kube::Client,
    overlap: Duration,
) -> Result<CertStatus, CertRotateError> {
    let body = serde_json::to_vec(&RotateCaRequest {
        overlap_seconds: overlap.as_secs(),
    })
    .map_err(|e| CertRotateError::Client(format!("encoding the request: {e}")))?;
    call(client, http::Method::POST, ROTATE_CA_PATH, body).await
}

/// The status as text: one certificate per line, then the rotation state.
pub fn render(status: &CertStatus) -> String {
    let mut out = String::new();
    for c in &status.certificates {
        let _ = writeln!(
            out,
            "{}  subject={}  issuer={}  expires={}  renews={}",
            c.path,
            c.subject,
            c.issuer,
            mini_certs::format_unix(c.not_after),
            mini_certs::format_unix(c.renew_at),
        );
    }
    match status.ca_retires_at {
        Some(at) => {
            let _ = writeln!(
                out,
                "CA rotation: the previous CA stays trusted until {}",
                mini_certs::format_unix(at)
            );
        }
        None => out.push_str("CA rotation: none in progress\n"),
    }
    out
}
