//! port-forward: answers kubectl's upgrade (WebSocket tunnel `SPDY/3.1+portforward.k8s.io`, or plain
//! SPDY/3.1 with `portforward.k8s.io`), then serves SPDY: for every (error, data) stream pair the
//! client opens, dials the port into the pod and copies both ways; dial errors go to the error stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::remotecommand::spdy_upgrade_response;
use crate::spdy::{Role, Session, Stream};
use crate::wsstream::{self, WsByteStream};
use crate::{header_has_token, status_response};

/// `X-Stream-Protocol-Version` of plain SPDY port-forwarding.
pub const SPDY_PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// How long we wait for the client to finish sending after the pod closed its side.
const CLIENT_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Opens connections into a pod for port-forward.
#[async_trait::async_trait]
pub trait PortDialer: Send + Sync + 'static {
    async fn dial(&self, port: u16) -> std::io::Result<tokio::net::TcpStream>;
}

/// Serves a port-forward request (see the module docs): 101 and a spawned session, or 400 when the
/// upgrade is not one we speak.
pub async fn serve_portforward<D: PortDialer>(
    mut req: Request<IncomingBody>,
    dialer: D,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let websocket = if wsstream::is_websocket_upgrade(headers) {
        if wsstream::choose_protocol(headers, &[wsstream::PORTFORWARD_TUNNEL_PROTOCOL]).is_none() {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "no supported websocket subprotocol offered; want {}",
                    wsstream::PORTFORWARD_TUNNEL_PROTOCOL
                ),
            );
        }
        true
    } else if header_has_token(headers, http::header::UPGRADE, "SPDY/3.1") {
        if !header_has_token(
            headers,
            "X-Stream-Protocol-Version",
            SPDY_PORTFORWARD_PROTOCOL,
        ) {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("no supported X-Stream-Protocol-Version offered; want {SPDY_PORTFORWARD_PROTOCOL}"),
            );
        }
        false
    } else {
        return status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "port-forward needs an upgrade to websocket or SPDY/3.1",
        );
    };
    let response = if websocket {
        match wsstream::accept_response(headers, wsstream::PORTFORWARD_TUNNEL_PROTOCOL) {
            Some(r) => r,
            None => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "websocket upgrade without Sec-WebSocket-Key",
                )
            }
        }
    } else {
        spdy_upgrade_response(SPDY_PORTFORWARD_PROTOCOL)
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let dialer = Arc::new(dialer);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "port-forward: client upgrade failed");
                return;
            }
        };
        if websocket {
            let ws = wsstream::server_websocket(upgraded).await;
            serve_session(WsByteStream::new(ws), dialer).await;
        } else {
            serve_session(TokioIo::new(upgraded), dialer).await;
        }
    });
    response
}

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves the SPDY side of port-forwarding over an upgraded byte stream until the client closes it.
pub async fn serve_session<T, D>(io: T, dialer: Arc<D>)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
    D: PortDialer,
{
    let (session, mut incoming) = Session::new(io, Role::Server);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = incoming.accept().await {
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        // Clients older than the requestID header pair streams by id: data = error + 2.
        let request_id = match stream.header("requestid") {
            Some(id) => id.to_string(),
            None if kind == "data" => stream.id().saturating_sub(2).to_string(),
            None => stream.id().to_string(),
        };
        let entry = pairs.entry(request_id.clone()).or_default();
        match kind.as_str() {
            "error" => entry.error = Some(stream),
            "data" => entry.data = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "port-forward: refusing unknown stream");
                stream.reset(crate::spdy::rst::REFUSED_STREAM);
                continue;
            }
        }
        if entry.error.is_some() && entry.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request_id)
            {
                tokio::spawn(forward(error, data, dialer.clone()));
            }
        }
    }
    drop(session);
}

async fn forward<D: PortDialer>(mut error: Stream, data: Stream, dialer: Arc<D>) {
    let port = match data.header("port").map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => p,
        other => {
            let msg = format!(
                "invalid port header {:?}",
                other.map(|_| data.header("port").unwrap_or(""))
            );
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = error.shutdown().await;
            data.reset(crate::spdy::rst::CANCEL);
            return;
        }
    };
    let tcp = match dialer.dial(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod: {e}");
            tracing::debug!(%msg, "port-forward dial failed");
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = error.shutdown().await;
            drop(data);
            return;
        }
    };
    let (tcp_read, tcp_write) = tcp.into_split();
    let (data_read, data_write) = tokio::io::split(data);
    let mut up = tokio::spawn(copy_then_fin(data_read, tcp_write));
    let mut down = tokio::spawn(copy_then_fin(tcp_read, data_write));
    tokio::select! {
        clean = &mut up => {
            if matches!(clean, Ok(true)) {
                let _ = down.await;
            } else {
                down.abort();
            }
        }
        _ = &mut down => {
            // The pod closed its side; kubectl only finishes sending once it saw the error stream end.
            if tokio::time::timeout(CLIENT_DRAIN_GRACE, &mut up).await.is_err() {
                up.abort();
            }
        }
    }
    let _ = error.shutdown().await;
}

/// Copies until `from` ends, then half-closes `to`. True when `from` ended cleanly (EOF).
async fn copy_then_fin<R, W>(mut from: R, mut to: W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    let clean = loop {
        match from.read(&mut buf).await {
            Ok(0) => break true,
            Err(_) => break false,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return false;
                }
            }
        }
    };
    let _ = to.shutdown().await;
    clean
}

#[cfg(test)]
pub(crate) mod tests;
