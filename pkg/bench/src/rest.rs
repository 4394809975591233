//! Raw HTTP over `kube::Client` (pooled keep-alive HTTP/1.1 connections with the admin
//! client certificate): bodies are read to the last byte but not decoded, so timings are
//! the server's plus the transport's, not the client's JSON decoding.

use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;

use crate::BenchError;

/// A client for the admin kubeconfig the server wrote.
pub async fn admin_client(kubeconfig: &Path) -> Result<kube::Client, BenchError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| BenchError::Client(format!("reading {}: {e}", kubeconfig.display())))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| BenchError::Client(format!("kubeconfig: {e}")))?;
    kube::Client::try_from(config).map_err(|e| BenchError::Client(format!("client: {e}")))
}

/// A request with `Accept: application/json` and an optional body of `content_type`.
pub fn request(
    method: Method,
    path: &str,
    body: Option<(&'static str, Vec<u8>)>,
) -> Result<Request<Body>, BenchError> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::ACCEPT, "application/json");
    let req = match body {
        Some((content_type, bytes)) => builder
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Body::from(bytes)),
        None => builder.body(Body::from(Vec::new())),
    };
    req.map_err(|e| BenchError::Client(format!("building {path}: {e}")))
}

/// Sends a request and reads the whole response body.
pub async fn call(
    client: &kube::Client,
    req: Request<Body>,
) -> Result<(StatusCode, Bytes), BenchError> {
    let what = format!("{} {}", req.method(), req.uri());
    let resp = client
        .send(req)
        .await
        .map_err(|e| BenchError::Client(format!("{what}: {e}")))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| BenchError::Client(format!("{what}: reading body: {e}")))?
        .to_bytes();
    Ok((status, body))
}

/// Like [`call`], but a status outside 2xx is an error.
pub async fn call_ok(client: &kube::Client, req: Request<Body>) -> Result<Bytes, BenchError> {
    let what = format!("{} {}", req.method(), req.uri());
    let (status, body) = call(client, req).await?;
    if !status.is_success() {
        return Err(BenchError::Status {
            what,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
        });
    }
    Ok(body)
}
