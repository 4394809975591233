//! exec bridging against an in-test SPDY "runtime streaming server" built on our server role,
//! driven by a kubectl-like WebSocket v5 client and by a SPDY v4 client.

use super::*;
use crate::testutil::{serve_http, ws_connect};
use std::net::SocketAddr;

const EXIT_3_STATUS: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

/// A fake runtime: upper-cases stdin to stdout, writes "warn" to stderr, and after stdin EOF
/// reports exit code 3 on the error stream, then tears the session down the way the kubelet's
/// streaming server does (reset every stream, close the connection).
pub(crate) async fn fake_runtime() -> SocketAddr {
    serve_http(|mut req: Request<IncomingBody>| async move {
        assert!(header_has_token(
            req.headers(),
            "X-Stream-Protocol-Version",
            SPDY_V4_PROTOCOL
        ));
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.expect("runtime upgrade");
            let (session, mut incoming) = Session::new(TokioIo::new(upgraded), Role::Server);
            let mut streams = std::collections::HashMap::new();
            while streams.len() < 4 {
                let s = incoming.accept().await.expect("runtime stream");
                streams.insert(s.header("streamtype").unwrap_or("").to_string(), s);
            }
            let mut stdin = streams.remove("stdin").expect("stdin");
            let mut stdout = streams.remove("stdout").expect("stdout");
            let mut stderr = streams.remove("stderr").expect("stderr");
            let mut error = streams.remove("error").expect("error");
            stderr.write_all(b"warn").await.expect("stderr");
            let mut input = Vec::new();
            stdin.read_to_end(&mut input).await.expect("stdin to EOF");
            stdout
                .write_all(&input.to_ascii_uppercase())
                .await
                .expect("stdout");
            error
                .write_all(EXIT_3_STATUS.as_bytes())
                .await
                .expect("status");
            for s in [&stdin, &stdout, &stderr, &error] {
                s.reset(spdy::rst::CANCEL);
            }
            session.shutdown().await;
        });
        spdy_upgrade_response(SPDY_V4_PROTOCOL)
    })
    .await
}

async fn agent(runtime: SocketAddr) -> SocketAddr {
    let url = format!("http://{runtime}/exec/token123");
    serve_http(move |req| {
        let url = url.clone();
        async move {
            serve_remotecommand(
                req,
                ExecOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: false,
                },
                url,
            )
            .await
        }
    })
    .await
}

#[tokio::test]
async fn exec_websocket_v5_bridges_stdin_eof_output_and_exit_code_without_empty_frames() {
    let agent = agent(fake_runtime().await).await;
    let mut ws = ws_connect(agent, "/exec", "v5.channel.k8s.io, v4.channel.k8s.io").await;
    ws.send(wsstream::channel_message(
        wsstream::CHANNEL_STDIN,
        b"hello ",
    ))
    .await
    .expect("stdin");
    ws.send(wsstream::channel_message(wsstream::CHANNEL_STDIN, b"world"))
        .await
        .expect("stdin");
    ws.send(Message::Binary(
        vec![wsstream::CHANNEL_CLOSE, wsstream::CHANNEL_STDIN].into(),
    ))
    .await
    .expect("close stdin");
    let mut out: [Vec<u8>; 4] = Default::default();
    let mut empty_frames = Vec::new();
    let collect = async {
        while let Some(msg) = ws.next().await {
            match msg.expect("message") {
                Message::Binary(b) => {
                    let (ch, data) = wsstream::split_channel(&b).expect("channel byte");
                    if data.is_empty() {
                        empty_frames.push(ch);
                    }
                    out[ch as usize].extend_from_slice(data);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("exec finishes");
    // client-go logs "Unknown stream id" for any frame that beats its stream registration.
    assert!(
        empty_frames.is_empty(),
        "empty frames on channels {empty_frames:?}"
    );
    assert_eq!(out[1], b"HELLO WORLD");
    assert_eq!(out[2], b"warn");
    let status: serde_json::Value = serde_json::from_slice(&out[3]).expect("status json");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_spdy_v4_client_bridges_streams_and_status() {
    let agent = agent(fake_runtime().await).await;
    let upgraded = spdy_upgrade_client(&format!("http://{agent}/exec"), SPDY_V4_PROTOCOL)
        .await
        .expect("upgrade to agent");
    let (session, _incoming) = Session::new(TokioIo::new(upgraded), Role::Client);
    let mut error = session
        .open_stream(stream_headers("error"))
        .await
        .expect("error");
    let mut stdin = session
        .open_stream(stream_headers("stdin"))
        .await
        .expect("stdin");
    let mut stdout = session
        .open_stream(stream_headers("stdout"))
        .await
        .expect("stdout");
    let mut stderr = session
        .open_stream(stream_headers("stderr"))
        .await
        .expect("stderr");
    stdin.write_all(b"spdy in").await.expect("write");
    stdin.shutdown().await.expect("stdin FIN");
    let run = async {
        let mut o = Vec::new();
        stdout.read_to_end(&mut o).await.expect("stdout");
        let mut e = Vec::new();
        stderr.read_to_end(&mut e).await.expect("stderr");
        let mut s = Vec::new();
        error.read_to_end(&mut s).await.expect("error");
        (o, e, s)
    };
    let (o, e, s) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("exec finishes");
    assert_eq!(o, b"SPDY IN");
    assert_eq!(e, b"warn");
    assert_eq!(String::from_utf8_lossy(&s), EXIT_3_STATUS);
}

#[tokio::test]
async fn exec_runtime_unreachable_answers_500_status() {
    // A port nothing listens on: bind, note it, close.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let agent = agent(dead).await;
    let err = spdy_upgrade_client(&format!("http://{agent}/exec"), SPDY_V4_PROTOCOL)
        .await
        .expect_err("upgrade must fail");
    match err {
        StreamsError::RuntimeRefused { status, body } => {
            assert_eq!(status, 500);
            assert!(
                body.contains("connecting to the runtime streaming server failed"),
                "{body}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn negotiate_rejects_unknown_websocket_protocol() {
    let mut h = http::HeaderMap::new();
    h.insert(http::header::UPGRADE, "websocket".parse().expect("v"));
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        "channel.k8s.io".parse().expect("v"),
    );
    assert!(negotiate(&h).is_err());
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        "v4.channel.k8s.io".parse().expect("v"),
    );
    assert!(matches!(
        negotiate(&h),
        Ok(Front::WebSocket { v5: false, .. })
    ));
}
