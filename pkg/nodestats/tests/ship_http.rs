//! Shipping over real HTTP: the agent's sink (a `kube::Client`) posting to a tiny local
//! server on loopback that answers 500 while "away" and 200 after, and the shipping loop
//! delivering the queued batches in order, once each.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mini_nodestats::{
    ApiSink, FakeFs, NodeStatsConfig, NodeStatsError, SampleBatch, SampleSink, Sampler,
    SAMPLES_PATH,
};
use tokio_util::sync::CancellationToken;

/// What the local server saw: (path, content type, body, answered status).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>, u16)>>>;

/// Serves on loopback; request i gets `statuses[i]`, later ones 200 (refusals use 500, not
/// 503: the kube client retries 429/503/504 itself before reporting a failure).
async fn sink_server(statuses: Vec<u16>) -> (String, Seen, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = stop2.cancelled() => return,
                a = listener.accept() => match a { Ok((t, _)) => t, Err(_) => continue },
            };
            let (seen, statuses) = (seen2.clone(), statuses.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (seen, statuses) = (seen.clone(), statuses.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let ctype = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let mut seen = seen.lock().expect("lock");
                            let status = statuses.get(seen.len()).copied().unwrap_or(200);
                            seen.push((path, ctype, body, status));
                            let reply = http::Response::builder()
                                .status(status)
                                .header(http::header::CONTENT_TYPE, "application/json")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .expect("response");
                            Ok::<_, Infallible>(reply)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, seen, stop)
}

fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

fn sampler(interval: Duration) -> Arc<Sampler> {
    let fs = Arc::new(FakeFs::new());
    fs.set(
        "/proc/stat",
        "cpu  1 0 1 10 0 0 0 0 0 0\ncpu0 1 0 1 10 0 0 0 0 0 0\n",
    );
    fs.set("/proc/meminfo", "MemTotal: 100 kB\nMemAvailable: 50 kB\n");
    let mut config = NodeStatsConfig::new("n1", std::path::Path::new("/data"));
    config.interval = interval;
    config.queue_capacity = 1000;
    Sampler::new(config, fs, None)
}

#[tokio::test]
async fn api_sink_posts_json_batches_and_reports_refusals() {
    let (url, seen, stop) = sink_server(vec![500, 400]).await;
    let sink = ApiSink::new(client(&url));
    let batch = sampler(Duration::from_secs(10))
        .sample(1_700_000_000_000)
        .await
        .expect("round");
    assert!(
        matches!(sink.send(&batch).await, Err(NodeStatsError::Ship(_))),
        "500: try again later"
    );
    assert!(
        matches!(sink.send(&batch).await, Err(NodeStatsError::Rejected(_))),
        "400: refused for good"
    );
    sink.send(&batch).await.expect("accepted");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    let (path, ctype, body, _) = &seen[2];
    assert_eq!(path, SAMPLES_PATH);
    assert_eq!(ctype, "application/json");
    assert_eq!(&SampleBatch::from_json(body).expect("decodes"), &batch);
    stop.cancel();
}

#[tokio::test]
async fn run_server_away_then_back_delivers_every_round_once_in_order() {
    let (url, seen, stop) = sink_server(vec![500; 5]).await;
    let sampler = sampler(Duration::from_millis(20));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(mini_nodestats::run(
        sampler.clone(),
        Arc::new(ApiSink::new(client(&url))),
        shutdown.clone(),
    ));
    // wait (generously) for ten accepted batches
    for _ in 0..3000 {
        let accepted = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.3 == 200)
            .count();
        if accepted >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.expect("loop ends");
    stop.cancel();
    let seen = seen.lock().expect("lock").clone();
    let time = |body: &[u8]| {
        let batch = SampleBatch::from_json(body).expect("decodes");
        let t = batch.series[0].samples[0].0;
        assert!(batch
            .series
            .iter()
            .all(|s| s.samples.len() == 1 && s.samples[0].0 == t));
        t
    };
    let refused: Vec<i64> = seen
        .iter()
        .filter(|s| s.3 == 500)
        .map(|s| time(&s.2))
        .collect();
    let accepted: Vec<i64> = seen
        .iter()
        .filter(|s| s.3 == 200)
        .map(|s| time(&s.2))
        .collect();
    assert_eq!(refused.len(), 5);
    assert!(accepted.len() >= 10, "accepted {accepted:?}");
    // the first refused round is the first one accepted: kept, not lost
    assert_eq!(accepted[0], refused[0]);
    assert!(
        accepted.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {accepted:?}"
    );
    let counts = sampler.shipping_counts();
    assert_eq!(counts.batches_failed, 5);
    assert_eq!(counts.batches_dropped, 0);
    assert_eq!(counts.batches_sent as usize, accepted.len());
}
