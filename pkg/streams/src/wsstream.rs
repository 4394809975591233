//! WebSocket side of the streaming endpoints: the server handshake, the Kubernetes channel framing
//! (`v4.channel.k8s.io` / `v5.channel.k8s.io`: first byte of a binary message = channel), and an
//! adapter that turns binary messages into a byte stream (for SPDY tunnelled in WebSocket, as
//! `kubectl port-forward` does with `SPDY/3.1+portforward.k8s.io`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream as _};
use http::HeaderMap;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Remote command protocol with the stream-close signal (channel 255).
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
/// Remote command protocol: channels 0-4, status JSON on channel 3.
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// Port-forward: SPDY/3.1 frames carried in binary WebSocket messages.
pub const PORTFORWARD_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

pub const CHANNEL_STDIN: u8 = 0;
pub const CHANNEL_STDOUT: u8 = 1;
pub const CHANNEL_STDERR: u8 = 2;
pub const CHANNEL_ERROR: u8 = 3;
pub const CHANNEL_RESIZE: u8 = 4;
/// v5 only: `[255, channel]` means the sender closed that channel (stdin EOF).
pub const CHANNEL_CLOSE: u8 = 255;

/// A WebSocket over an upgraded hyper connection.
pub type UpgradedWebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// True when the request asks for `Upgrade: websocket`.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_tokens(headers, http::header::UPGRADE)
        .iter()
        .any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// All comma-separated tokens of every occurrence of a header, trimmed.
pub fn header_tokens(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Picks the first of `supported` (in our order of preference) that the client offered in
/// `Sec-WebSocket-Protocol`.
pub fn choose_protocol(headers: &HeaderMap, supported: &[&str]) -> Option<String> {
    let offered = header_tokens(headers, http::header::SEC_WEBSOCKET_PROTOCOL);
    supported
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .map(|p| p.to_string())
}

/// Builds the 101 answer to a WebSocket upgrade, echoing the chosen subprotocol. `None` when the
/// request lacks `Sec-WebSocket-Key`.
pub fn accept_response(
    headers: &HeaderMap,
    protocol: &str,
) -> Option<http::Response<http_body_util::Full<Bytes>>> {
    let key = headers.get(http::header::SEC_WEBSOCKET_KEY)?;
    let accept = derive_accept_key(key.as_bytes());
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(http_body_util::Full::new(Bytes::new()))
        .ok()
}

/// Wraps an upgraded connection as the server end of a WebSocket.
pub async fn server_websocket(upgraded: Upgraded) -> UpgradedWebSocket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
}

/// A binary message for `channel` carrying `data`.
pub fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// A Close message with code 1000 (normal closure): client-go reads only that as a clean end.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Splits a binary message into channel and payload; `None` for an empty message.
pub fn split_channel(msg: &[u8]) -> Option<(u8, &[u8])> {
    msg.split_first().map(|(c, rest)| (*c, rest))
}

/// Byte-stream view of a WebSocket: reads concatenate binary messages, each write becomes one
/// binary message, shutdown sends a Close frame. Pings are answered by tungstenite while reading.
pub struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    eof: bool,
    close_sent: bool,
}

impl<S> WsByteStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsByteStream {
            ws,
            pending: Bytes::new(),
            eof: false,
            close_sent: false,
        }
    }
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        tokio_tungstenite::tungstenite::Error::ConnectionClosed
        | tokio_tungstenite::tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket is closed")
        }
        other => io::Error::other(format!("websocket failed: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a binary websocket tunnel",
                    )))
                }
                Some(Ok(_)) => {} // ping/pong/raw frames: handled by tungstenite
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_err)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sent {
            match ready!(Pin::new(&mut self.ws).poll_ready(cx)) {
                Ok(()) => {
                    // Best effort: a failure here shows up again in poll_close below.
                    let _ = Pin::new(&mut self.ws).start_send(normal_close());
                }
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                    return Poll::Ready(Ok(()))
                }
                Err(e) => return Poll::Ready(Err(ws_err(e))),
            }
            self.close_sent = true;
        }
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn choose_protocol_prefers_our_order_over_the_clients() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v4.channel.k8s.io, v5.channel.k8s.io"
                .parse()
                .expect("value"),
        );
        assert_eq!(
            choose_protocol(&h, &[V5_PROTOCOL, V4_PROTOCOL]).as_deref(),
            Some(V5_PROTOCOL)
        );
        assert_eq!(choose_protocol(&h, &[PORTFORWARD_TUNNEL_PROTOCOL]), None);
    }

    #[test]
    fn channel_message_roundtrips_through_split_channel() {
        let m = channel_message(CHANNEL_STDERR, b"oops");
        let Message::Binary(b) = m else {
            panic!("want binary message")
        };
        assert_eq!(split_channel(&b), Some((CHANNEL_STDERR, &b"oops"[..])));
        assert_eq!(split_channel(&[]), None);
    }

    #[tokio::test]
    async fn ws_byte_stream_carries_bytes_across_messages_and_ends_on_close() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut s = WsByteStream::new(server);
        let mut c = WsByteStream::new(client);
        c.write_all(b"hello ").await.expect("write");
        c.write_all(b"world").await.expect("write");
        c.flush().await.expect("flush");
        let mut got = [0u8; 11];
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello world");
        c.shutdown().await.expect("close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }
}
