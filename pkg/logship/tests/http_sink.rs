//! The shipper through the real HTTP sink against a tiny local HTTP server on loopback:
//! `POST /v1-mini/logs`, zstd JSON body, 500 retried (the kube client itself retries 429/503/504), 200 stored, 400 refused for good.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use mini_logship::wire::LogBatch;
use mini_logship::{HttpSink, LogShipConfig, Round, Shipper, StaticPodLabels};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Answers each request with the next status of `statuses` (200 when they run out).
async fn serve(
    listener: tokio::net::TcpListener,
    statuses: Vec<u16>,
    seen: Arc<Mutex<Vec<Request>>>,
) {
    let mut statuses = statuses.into_iter();
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap().split(' ');
        let (method, path) = (
            first.next().unwrap().to_string(),
            first.next().unwrap().to_string(),
        );
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let len: usize = headers["content-length"].parse().unwrap();
        while buf.len() < header_end + len {
            let n = conn.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[header_end..header_end + len].to_vec();
        seen.lock().unwrap().push(Request {
            method,
            path,
            headers,
            body,
        });
        let status = statuses.next().unwrap_or(200);
        let text = if status == 200 { "{}" } else { "not now" };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        conn.write_all(response.as_bytes()).await.unwrap();
        conn.shutdown().await.ok();
    }
}

#[tokio::test]
async fn http_sink_posts_zstd_json_and_follows_status_codes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(listener, vec![500, 200, 400], seen.clone()));

    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/ns_web_u1/app/0.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut file = std::fs::File::create(&log).unwrap();
    file.write_all(b"2026-12-05T10:00:00Z stdout F hello\n")
        .unwrap();
    let config = LogShipConfig::new(
        "n1".into(),
        dir.path().join("logs"),
        dir.path().join("state"),
    );
    let mut shipper = Shipper::new(
        config,
        Arc::new(HttpSink::new(client, true)),
        Arc::new(NoReopen),
        Arc::new(StaticPodLabels::default()),
    )
    .unwrap();

    assert_eq!(shipper.round().await, Round::Failed, "500 is retried");
    assert!(matches!(
        shipper.round().await,
        Round::Shipped { entries: 1, .. }
    ));
    file.write_all(b"2026-12-05T10:00:01Z stdout F refused\n")
        .unwrap();
    assert_eq!(shipper.round().await, Round::Rejected { entries: 1 });
    assert_eq!(shipper.round().await, Round::Idle);
    server.abort();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let r = &seen[1];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1-mini/logs")
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["content-encoding"], "zstd");
    let batch: LogBatch = serde_json::from_slice(&zstd::decode_all(&r.body[..]).unwrap()).unwrap();
    assert_eq!(seen[0].body, r.body, "the retry sends the same batch");
    assert_eq!(batch.node, "n1");
    assert_eq!(batch.streams[0].source, "n1/u1/app/0/0");
    assert_eq!(batch.streams[0].entries[0].line, "hello");
    let stats = shipper.stats().snapshot();
    assert_eq!(
        (
            stats.batches_failed,
            stats.batches_sent,
            stats.batches_rejected
        ),
        (1, 1, 1)
    );
}

/// The file never grows past the rotation size here.
struct NoReopen;

#[async_trait::async_trait]
impl mini_logship::Reopener for NoReopen {
    async fn reopen(&self, _: &str, _: &str, _: u32) -> Result<mini_logship::Reopened, String> {
        Err("not expected".into())
    }
}
