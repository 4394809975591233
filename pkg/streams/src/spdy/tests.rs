//! Session tests: a client and a server session joined by an in-memory duplex pipe.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pair() -> (Session, Incoming, Session, Incoming) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (client, client_in) = Session::new(a, Role::Client);
    let (server, server_in) = Session::new(b, Role::Server);
    (client, client_in, server, server_in)
}

fn hdrs(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn session_open_stream_exchanges_data_both_ways_with_half_close() {
    let (client, _ci, _server, mut si) = pair();
    let server_task = tokio::spawn(async move {
        let mut s = si.accept().await.expect("incoming stream");
        assert_eq!(s.header("streamType"), Some("stdin"));
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read to FIN");
        s.write_all(b"echo:").await.expect("write");
        s.write_all(&got).await.expect("write");
        s.shutdown().await.expect("fin");
    });
    let mut s = client
        .open_stream(hdrs(&[("streamtype", "stdin")]))
        .await
        .expect("open");
    assert_eq!(s.id(), 1);
    s.write_all(b"hello").await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, b"echo:hello");
    server_task.await.expect("server task");
}

#[tokio::test]
async fn session_large_payload_respects_flow_control_and_arrives_intact() {
    let (client, _ci, _server, mut si) = pair();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let reader = tokio::spawn(async move {
        let mut s = si.accept().await.expect("incoming");
        // Read slowly at first so the sender runs into the 64 KiB window.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        got
    });
    let mut s = client.open_stream(hdrs(&[("k", "v")])).await.expect("open");
    // Our peer does flow control (it sent SETTINGS), so the window must be enforced.
    let writer = tokio::spawn(async move {
        s.write_all(&payload).await.expect("write");
        s.shutdown().await.expect("fin");
        s
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    {
        let st = client.handle.shared.lock();
        assert!(st.peer_flow_control);
        assert!(
            st.session_send_window >= 0,
            "sender overran the session window"
        );
        let w = st.streams.get(&1).map(|s| s.send_window).unwrap_or(0);
        assert!(
            w <= 0 || st.session_send_window <= 0,
            "writer should be blocked on the window"
        );
    }
    let got = reader.await.expect("reader");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    let _s = writer.await.expect("writer");
}

#[tokio::test]
async fn session_peer_without_flow_control_is_not_throttled() {
    // A raw peer that never sends SETTINGS or WINDOW_UPDATE (like moby/spdystream).
    let (a, mut raw) = tokio::io::duplex(1 << 20);
    let (server, mut si) = Session::new(a, Role::Server);
    let mut enc = HeaderEncoder::new().expect("enc");
    let mut wire = BytesMut::new();
    encode_frame(
        &Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: hdrs(&[("streamtype", "stdout")]),
        },
        &mut enc,
        &mut wire,
    )
    .expect("encode");
    raw.write_all(&wire).await.expect("write syn");
    let mut s = si.accept().await.expect("stream");
    let big = vec![7u8; 200 * 1024];
    tokio::time::timeout(Duration::from_secs(5), s.write_all(&big))
        .await
        .expect("write must not stall on a peer that does no flow control")
        .expect("write");
    s.shutdown().await.expect("fin");
    drop(s);
    // Collect what the session sent: SETTINGS, SYN_REPLY, then 200 KiB of DATA and a FIN.
    let mut dec = HeaderDecoder::new();
    let mut data = 0usize;
    let mut saw_fin = false;
    while !saw_fin {
        match read_frame(&mut raw, &mut dec).await.expect("frame") {
            Some(Frame::Data {
                stream_id: 1,
                flags,
                data: d,
            }) => {
                data += d.len();
                saw_fin = flags & FLAG_FIN != 0;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(data, big.len());
    assert!(saw_fin);
    drop(server);
}

#[tokio::test]
async fn session_ping_is_echoed_by_peer() {
    let (client, _ci, server, _si) = pair();
    client.ping().await.expect("client ping");
    server.ping().await.expect("server ping");
}

#[tokio::test]
async fn session_many_streams_headers_survive_shared_compression_context() {
    let (client, _ci, _server, mut si) = pair();
    let accept = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let s = si.accept().await.expect("stream");
            seen.push((
                s.header("requestid").map(str::to_string),
                s.header("streamtype").map(str::to_string),
            ));
        }
        seen
    });
    let mut keep = Vec::new();
    for i in 0..100 {
        let t = if i % 2 == 0 { "error" } else { "data" };
        keep.push(
            client
                .open_stream(hdrs(&[
                    ("streamType", t),
                    ("port", "80"),
                    ("requestID", &i.to_string()),
                ]))
                .await
                .expect("open"),
        );
    }
    let seen = accept.await.expect("accept");
    for (i, (rid, t)) in seen.into_iter().enumerate() {
        assert_eq!(rid, Some(i.to_string()));
        assert_eq!(
            t.as_deref(),
            Some(if i % 2 == 0 { "error" } else { "data" })
        );
    }
}

#[tokio::test]
async fn session_reset_stream_fails_peer_reads() {
    let (client, _ci, _server, mut si) = pair();
    let mut s = client.open_stream(hdrs(&[("a", "b")])).await.expect("open");
    let peer = si.accept().await.expect("accept");
    peer.reset(rst::CANCEL);
    let mut buf = [0u8; 4];
    let err = s
        .read(&mut buf)
        .await
        .expect_err("reset must fail the read");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn session_peer_close_ends_streams_with_buffered_data_first() {
    let (client, _ci, server, mut si) = pair();
    let mut s = client.open_stream(hdrs(&[("a", "b")])).await.expect("open");
    let mut peer = si.accept().await.expect("accept");
    peer.write_all(b"last words").await.expect("write");
    server.shutdown().await;
    drop(peer);
    drop(server);
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"last words");
}
