//! port-forward serving against a kubectl-like client (WebSocket+SPDY and plain SPDY) dialing a
//! loopback TCP echo server.

use super::*;
use crate::spdy::Headers;
use crate::testutil::{serve_http, ws_connect};
use std::net::SocketAddr;

pub(crate) struct EchoDialer {
    pub(crate) echo: SocketAddr,
}

#[async_trait::async_trait]
impl PortDialer for EchoDialer {
    async fn dial(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        if port == 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ));
        }
        tokio::net::TcpStream::connect(self.echo).await
    }
}

pub(crate) async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn agent() -> SocketAddr {
    let echo = echo_server().await;
    serve_http(move |req| async move { serve_portforward(req, EchoDialer { echo }).await }).await
}

fn pf_headers(kind: &str, port: u16, request_id: u32) -> Headers {
    vec![
        ("streamType".into(), kind.into()),
        ("port".into(), port.to_string()),
        ("requestID".into(), request_id.to_string()),
    ]
}

/// What kubectl does per local connection: error stream (write side closed at once), data stream,
/// send, half-close, read the reply, then read the error stream to its end.
async fn kubectl_connection(
    session: &Session,
    port: u16,
    request_id: u32,
    payload: &[u8],
) -> (Vec<u8>, String) {
    let mut error = session
        .open_stream(pf_headers("error", port, request_id))
        .await
        .expect("error stream");
    error.shutdown().await.expect("close error write side");
    let mut data = session
        .open_stream(pf_headers("data", port, request_id))
        .await
        .expect("data stream");
    let mut reply = Vec::new();
    let send = async {
        data.write_all(payload).await.expect("send");
        data.shutdown().await.expect("fin");
        data.read_to_end(&mut reply).await.expect("reply");
    };
    tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("echo completes");
    let mut err = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), error.read_to_end(&mut err))
        .await
        .expect("error stream ends")
        .expect("error read");
    (reply, String::from_utf8_lossy(&err).into_owned())
}

#[tokio::test]
async fn portforward_websocket_tunnel_echoes_large_payload_over_two_connections() {
    let agent = agent().await;
    let ws = ws_connect(agent, "/portforward", "SPDY/3.1+portforward.k8s.io").await;
    let (session, _incoming) = Session::new(WsByteStream::new(ws), Role::Client);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (reply, err) = kubectl_connection(&session, 8080, 0, &payload).await;
    assert!(
        reply == payload,
        "echoed payload differs ({} bytes back)",
        reply.len()
    );
    assert_eq!(err, "");
    let (reply, err) = kubectl_connection(&session, 8080, 1, b"second").await;
    assert_eq!(reply, b"second");
    assert_eq!(err, "");
    session.ping().await.expect("ping through the tunnel");
}

#[tokio::test]
async fn portforward_dial_failure_is_reported_on_error_stream() {
    let agent = agent().await;
    let ws = ws_connect(agent, "/portforward", "SPDY/3.1+portforward.k8s.io").await;
    let (session, _incoming) = Session::new(WsByteStream::new(ws), Role::Client);
    let mut error = session
        .open_stream(pf_headers("error", 1, 0))
        .await
        .expect("error stream");
    error.shutdown().await.expect("close write");
    let _data = session
        .open_stream(pf_headers("data", 1, 0))
        .await
        .expect("data stream");
    let mut msg = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), error.read_to_end(&mut msg))
        .await
        .expect("error stream ends")
        .expect("read");
    let msg = String::from_utf8_lossy(&msg);
    assert!(msg.contains("error forwarding port 1"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
}

#[tokio::test]
async fn portforward_plain_spdy_upgrade_echoes() {
    let agent = agent().await;
    let upgraded = crate::remotecommand::spdy_upgrade_client(
        &format!("http://{agent}/portforward"),
        SPDY_PORTFORWARD_PROTOCOL,
    )
    .await
    .expect("upgrade");
    let (session, _incoming) = Session::new(TokioIo::new(upgraded), Role::Client);
    let (reply, err) = kubectl_connection(&session, 80, 7, b"plain spdy").await;
    assert_eq!(reply, b"plain spdy");
    assert_eq!(err, "");
}

#[tokio::test]
async fn portforward_without_upgrade_answers_400() {
    let agent = agent().await;
    let mut tcp = tokio::net::TcpStream::connect(agent)
        .await
        .expect("connect");
    tcp.write_all(b"GET /portforward HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut resp = Vec::new();
    tcp.read_to_end(&mut resp).await.expect("read");
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"kind\":\"Status\""), "{resp}");
}
