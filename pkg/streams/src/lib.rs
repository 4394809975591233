//! Agent-side streaming protocols: SPDY/3.1, the Kubernetes WebSocket channel framing, and the
//! exec/attach (remotecommand) and port-forward bridges behind the agent's streaming endpoints.
//!
//! The API server proxies kubectl's upgrade requests to the agent byte-for-byte; the agent hands
//! them to [`serve_remotecommand`] or [`serve_portforward`], which answer the upgrade (101) and do
//! the protocol work on a spawned task. The agent's hyper server must serve connections with
//! upgrades enabled (`serve_connection(..).with_upgrades()`).

pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod wsstream;

#[cfg(test)]
mod kubectl_tests;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

pub use portforward::{serve_portforward, PortDialer};
pub use remotecommand::{serve_remotecommand, ExecOptions};

/// What failed while setting up a streaming session.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("bad streaming request: {0}")]
    BadRequest(String),
    #[error("runtime streaming url {url:?} is unusable: {reason}")]
    RuntimeUrl { url: String, reason: String },
    #[error("connecting to the runtime streaming server failed: {0}")]
    RuntimeConnect(String),
    #[error("runtime streaming server refused the upgrade (HTTP {status}): {body}")]
    RuntimeRefused { status: u16, body: String },
    #[error(transparent)]
    Spdy(#[from] spdy::SpdyError),
}

/// A Kubernetes `Status` failure body with the given HTTP code.
pub(crate) fn status_response(
    code: StatusCode,
    reason: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// True when any comma-separated token of header `name` equals `token` (case-insensitively).
pub(crate) fn header_has_token(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName,
    token: &str,
) -> bool {
    wsstream::header_tokens(headers, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Test harness: a loopback HTTP/1.1 server with upgrades, and a WebSocket client.

    use std::convert::Infallible;
    use std::future::Future;
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    /// Serves `handler` on 127.0.0.1:0 until the test ends; returns the address.
    pub async fn serve_http<F, Fut>(handler: F) -> SocketAddr
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    /// Opens a WebSocket to `ws://addr/path` offering `protocols`.
    pub async fn ws_connect(
        addr: SocketAddr,
        path: &str,
        protocols: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
        let mut req = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            protocols.parse().expect("protocol header"),
        );
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("websocket handshake");
        assert_eq!(
            resp.headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok()),
            Some(protocols.split(',').next().unwrap_or("").trim())
        );
        ws
    }
}
