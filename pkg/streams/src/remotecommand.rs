//! exec/attach: answers kubectl's upgrade (WebSocket v5/v4 channel protocol, or SPDY/3.1 with
//! remotecommand v4), connects to the container runtime's streaming URL as a SPDY/3.1 client speaking
//! `v4.channel.k8s.io`, and bridges stdin (with EOF), stdout, stderr, resize and the exit status.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming as IncomingBody;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::spdy::{self, Role, Session, Stream};
use crate::wsstream::{self, UpgradedWebSocket};
use crate::{header_has_token, status_response, StreamsError};

/// Remote command protocol spoken over SPDY, both to kubectl and to the runtime.
pub const SPDY_V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long we wait for the runtime to answer, and for kubectl to open its SPDY streams.
const STREAM_SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// `{"metadata":{},"status":"Success"}`, sent when the runtime's error stream ends empty.
const SUCCESS_STATUS: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

/// Which streams an exec/attach carries (the request's stdin/stdout/stderr/tty parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// stderr is merged into stdout by a terminal, so no stderr stream exists with a TTY.
    fn stderr_stream(&self) -> bool {
        self.stderr && !self.tty
    }
}

enum Front {
    WebSocket { v5: bool, protocol: String },
    Spdy,
}

/// Serves an exec or attach request arriving from the API server (see the crate docs). Returns the
/// 101 answer and spawns the bridging; 400 when the upgrade is not one we speak, 500 when the
/// runtime's streaming server cannot be reached or refuses.
pub async fn serve_remotecommand(
    mut req: Request<IncomingBody>,
    opts: ExecOptions,
    runtime_url: String,
) -> Response<Full<Bytes>> {
    let front = match negotiate(req.headers()) {
        Ok(f) => f,
        Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    let response = match &front {
        Front::WebSocket { protocol, .. } => {
            match wsstream::accept_response(req.headers(), protocol) {
                Some(r) => r,
                None => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "websocket upgrade without Sec-WebSocket-Key",
                    )
                }
            }
        }
        Front::Spdy => spdy_upgrade_response(SPDY_V4_PROTOCOL),
    };
    let runtime = match tokio::time::timeout(
        STREAM_SETUP_TIMEOUT,
        RuntimeStreams::connect(&runtime_url, opts),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "exec/attach: runtime streaming connection failed");
            return status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            );
        }
        Err(_) => {
            return status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "timed out connecting to the runtime streaming server",
            )
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "exec/attach: client upgrade failed");
                return;
            }
        };
        let result = match front {
            Front::WebSocket { v5, .. } => {
                bridge_websocket(wsstream::server_websocket(upgraded).await, v5, runtime).await
            }
            Front::Spdy => bridge_spdy(upgraded, runtime, opts).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "exec/attach stream ended with an error");
        }
    });
    response
}

fn negotiate(headers: &http::HeaderMap) -> Result<Front, String> {
    if wsstream::is_websocket_upgrade(headers) {
        return match wsstream::choose_protocol(
            headers,
            &[wsstream::V5_PROTOCOL, wsstream::V4_PROTOCOL],
        ) {
            Some(p) => Ok(Front::WebSocket {
                v5: p == wsstream::V5_PROTOCOL,
                protocol: p,
            }),
            None => Err(format!(
                "no supported websocket subprotocol offered; want {} or {}",
                wsstream::V5_PROTOCOL,
                wsstream::V4_PROTOCOL
            )),
        };
    }
    if header_has_token(headers, http::header::UPGRADE, "SPDY/3.1") {
        if header_has_token(headers, "X-Stream-Protocol-Version", SPDY_V4_PROTOCOL) {
            return Ok(Front::Spdy);
        }
        return Err(format!(
            "no supported X-Stream-Protocol-Version offered; want {SPDY_V4_PROTOCOL}"
        ));
    }
    Err("exec/attach needs an upgrade to websocket or SPDY/3.1".into())
}

/// The 101 answer to a plain SPDY/3.1 upgrade.
pub(crate) fn spdy_upgrade_response(protocol: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("SPDY/3.1"),
    );
    if let Ok(v) = http::HeaderValue::from_str(protocol) {
        h.insert("X-Stream-Protocol-Version", v);
    }
    r
}

fn stream_headers(kind: &str) -> spdy::Headers {
    vec![("streamtype".to_string(), kind.to_string())]
}

/// Our SPDY client session to the runtime's streaming server and the streams it carries.
struct RuntimeStreams {
    session: Session,
    error: Stream,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl RuntimeStreams {
    async fn connect(url: &str, opts: ExecOptions) -> Result<RuntimeStreams, StreamsError> {
        let upgraded = spdy_upgrade_client(url, SPDY_V4_PROTOCOL).await?;
        let (session, _incoming) = Session::new(TokioIo::new(upgraded), Role::Client);
        // The order client-go uses: error first, then stdin, stdout, stderr, resize.
        let error = session.open_stream(stream_headers("error")).await?;
        let stdin = if opts.stdin {
            Some(session.open_stream(stream_headers("stdin")).await?)
        } else {
            None
        };
        let stdout = if opts.stdout {
            Some(session.open_stream(stream_headers("stdout")).await?)
        } else {
            None
        };
        let stderr = if opts.stderr_stream() {
            Some(session.open_stream(stream_headers("stderr")).await?)
        } else {
            None
        };
        let resize = if opts.tty {
            Some(session.open_stream(stream_headers("resize")).await?)
        } else {
            None
        };
        Ok(RuntimeStreams {
            session,
            error,
            stdin,
            stdout,
            stderr,
            resize,
        })
    }
}

/// POSTs a SPDY/3.1 upgrade to an `http://` streaming URL and returns the upgraded connection.
pub(crate) async fn spdy_upgrade_client(
    url: &str,
    protocol: &str,
) -> Result<Upgraded, StreamsError> {
    let bad = |reason: &str| StreamsError::RuntimeUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// streaming URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.to_string());
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| StreamsError::RuntimeConnect(format!("connect {authority}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| {
            StreamsError::RuntimeConnect(format!("http handshake with {authority}: {e}"))
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "runtime streaming connection ended");
        }
    });
    let req = Request::post(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .header(http::header::CONTENT_LENGTH, "0")
        .body(Empty::<Bytes>::new())
        .map_err(|e| bad(&e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        StreamsError::RuntimeConnect(format!("upgrade request to {authority}: {e}"))
    })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status().as_u16();
        let body =
            match tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
                _ => String::new(),
            };
        return Err(StreamsError::RuntimeRefused { status, body });
    }
    let chosen = resp
        .headers()
        .get("X-Stream-Protocol-Version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if chosen != protocol {
        return Err(StreamsError::RuntimeConnect(format!(
            "runtime chose stream protocol {chosen:?}, we need {protocol}"
        )));
    }
    hyper::upgrade::on(resp)
        .await
        .map_err(|e| StreamsError::RuntimeConnect(format!("upgrade to SPDY/3.1: {e}")))
}

/// Reads a runtime stream to its end (FIN, reset or session close), keeping what arrived.
async fn read_all_lenient(s: &mut Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn bridge_websocket(
    ws: UpgradedWebSocket,
    v5: bool,
    runtime: RuntimeStreams,
) -> Result<(), StreamsError> {
    let RuntimeStreams {
        session,
        mut error,
        stdin,
        stdout,
        stderr,
        resize,
    } = runtime;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        // kubectl treats only a 1000 (normal closure) close as the end of its streams.
        let _ = sink.send(wsstream::normal_close()).await;
        let _ = sink.close().await;
    });

    // No empty "connection is up" message on the lowest writable channel (the kubelet sends one):
    // client-go registers its streams only after the handshake and logs "Unknown stream id 1,
    // discarding message" on stderr when that message wins the race.

    let mut outputs = Vec::new();
    for (stream, channel) in [
        (stdout, wsstream::CHANNEL_STDOUT),
        (stderr, wsstream::CHANNEL_STDERR),
    ] {
        if let Some(s) = stream {
            outputs.push(tokio::spawn(pump_to_channel(s, channel, out_tx.clone())));
        }
    }

    // Client -> runtime: stdin, resize, and the v5 close signal.
    let mut client_in = tokio::spawn(async move {
        let mut stdin = stdin;
        let mut resize = resize;
        while let Some(msg) = source.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match wsstream::split_channel(&data) {
                Some((wsstream::CHANNEL_STDIN, payload)) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(payload).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some((wsstream::CHANNEL_RESIZE, payload)) => {
                    if let Some(s) = resize.as_mut() {
                        let _ = s.write_all(payload).await;
                    }
                }
                Some((wsstream::CHANNEL_CLOSE, rest))
                    if v5 && rest.first() == Some(&wsstream::CHANNEL_STDIN) =>
                {
                    if let Some(mut s) = stdin.take() {
                        let _ = s.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });

    let outputs_done = async {
        for o in outputs {
            let _ = o.await;
        }
        read_all_lenient(&mut error).await
    };
    let status = tokio::select! {
        status = outputs_done => Some(status),
        _ = &mut client_in => None,
    };
    match status {
        Some(mut status) => {
            if status.is_empty() {
                status = SUCCESS_STATUS.to_vec();
            }
            let _ = out_tx
                .send(wsstream::channel_message(wsstream::CHANNEL_ERROR, &status))
                .await;
            drop(out_tx);
            let _ = writer.await;
            client_in.abort();
        }
        None => {
            // The client went away: drop everything, which closes the runtime connection.
            drop(out_tx);
            writer.abort();
        }
    }
    session.shutdown().await;
    Ok(())
}

async fn pump_to_channel(mut s: Stream, channel: u8, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send(wsstream::channel_message(channel, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Copies `from` into `to` until `from` ends, then half-closes `to`.
async fn copy_then_fin<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

async fn bridge_spdy(
    upgraded: Upgraded,
    runtime: RuntimeStreams,
    opts: ExecOptions,
) -> Result<(), StreamsError> {
    let (client, mut incoming) = Session::new(TokioIo::new(upgraded), Role::Server);
    let mut c_error = None;
    let mut c_stdin = None;
    let mut c_stdout = None;
    let mut c_stderr = None;
    let mut c_resize = None;
    let all_there = |e: &Option<Stream>,
                     i: &Option<Stream>,
                     o: &Option<Stream>,
                     r: &Option<Stream>,
                     z: &Option<Stream>| {
        e.is_some()
            && (i.is_some() || !opts.stdin)
            && (o.is_some() || !opts.stdout)
            && (r.is_some() || !opts.stderr_stream())
            && (z.is_some() || !opts.tty)
    };
    let setup = async {
        while !all_there(&c_error, &c_stdin, &c_stdout, &c_stderr, &c_resize) {
            let Some(s) = incoming.accept().await else {
                return Err(StreamsError::BadRequest(
                    "client closed the connection before opening its streams".into(),
                ));
            };
            let kind = s.header("streamtype").unwrap_or("").to_string();
            match kind.as_str() {
                "error" => c_error = Some(s),
                "stdin" => c_stdin = Some(s),
                "stdout" => c_stdout = Some(s),
                "stderr" => c_stderr = Some(s),
                "resize" => c_resize = Some(s),
                other => {
                    tracing::debug!(stream_type = other, "exec: ignoring unknown stream");
                    s.reset(spdy::rst::REFUSED_STREAM);
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(STREAM_SETUP_TIMEOUT, setup).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(StreamsError::BadRequest(
                "timed out waiting for the client's streams".into(),
            ))
        }
    }
    let RuntimeStreams {
        session,
        mut error,
        stdin,
        stdout,
        stderr,
        resize,
    } = runtime;
    let mut tasks = Vec::new();
    if let (Some(from), Some(to)) = (c_stdin, stdin) {
        tokio::spawn(copy_then_fin(from, to));
    }
    if let (Some(from), Some(to)) = (c_resize, resize) {
        tokio::spawn(copy_then_fin(from, to));
    }
    if let (Some(from), Some(to)) = (stdout, c_stdout) {
        tasks.push(tokio::spawn(copy_then_fin(from, to)));
    }
    if let (Some(from), Some(to)) = (stderr, c_stderr) {
        tasks.push(tokio::spawn(copy_then_fin(from, to)));
    }
    let done = async {
        for t in tasks {
            let _ = t.await;
        }
        read_all_lenient(&mut error).await
    };
    let status = tokio::select! {
        s = done => Some(s),
        _ = client.closed() => None,
    };
    if let (Some(status), Some(mut c_error)) = (status, c_error) {
        if !status.is_empty() {
            let _ = c_error.write_all(&status).await;
        }
        let _ = c_error.shutdown().await;
        drop(c_error);
        client.shutdown().await;
    }
    session.shutdown().await;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
