//! The API benchmark: phases run in order against one fresh `mini server`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::objects;
use crate::report::{ApiBenchReport, MachineInfo, ReportConfig, Throughput, WatchResult};
use crate::rest::{admin_client, call, call_ok, request};
use crate::server::ServerProcess;
use crate::stats::{rate, LatencySummary};
use crate::{ApiBenchOptions, BenchError};

const NS: &str = "bench";
const WATCH_NS: &str = "bench-watch";
const WATCHED: &str = "watched";
const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one update may take to reach every watcher before it counts as missed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a fresh `mini server`, runs every phase, kills the server and removes its data
/// dir (on error too), and returns the figures.
pub async fn run_api_bench(opts: ApiBenchOptions) -> Result<ApiBenchReport, BenchError> {
    opts.validate()?;
    let machine = MachineInfo::detect();
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut server = ServerProcess::spawn(&opts.mini_bin, &opts.server_args, START_TIMEOUT).await?;
    tracing::info!(pid = server.pid(), url = %server.url, "mini server started");
    let result = phases(&opts, &mut server, machine, timestamp).await;
    let result = match result {
        Err(e) if server.exited() => Err(BenchError::Client(format!(
            "{e}\nthe server exited; log tail:\n{}",
            server.log_tail()
        ))),
        other => other,
    };
    let shutdown = server.shutdown().await;
    let report = result?;
    shutdown?;
    Ok(report)
}

async fn phases(
    opts: &ApiBenchOptions,
    server: &mut ServerProcess,
    machine: MachineInfo,
    timestamp: String,
) -> Result<ApiBenchReport, BenchError> {
    let client = admin_client(&server.kubeconfig).await?;
    wait_ready(&client).await?;

    tokio::time::sleep(opts.settle).await;
    let rss_idle_bytes = server.rss_bytes()?;
    tracing::info!(rss_idle_bytes, "idle");

    for ns in [NS, WATCH_NS] {
        create(&client, "/api/v1/namespaces", &objects::namespace(ns)).await?;
    }

    // Bodies are serialized up front so client-side JSON encoding is not timed.
    let pods_path = format!("/api/v1/namespaces/{NS}/pods");
    let bodies: Vec<Bytes> = (0..opts.pods)
        .map(|i| {
            serde_json::to_vec(&objects::pod(NS, &pod_name(i), i))
                .map(Bytes::from)
                .map_err(|e| BenchError::Parse(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let pod_json_bytes = bodies.first().map(|b| b.len()).unwrap_or(0);
    let bodies = Arc::new(bodies);

    tracing::info!(count = opts.creates, "sequential creates");
    let create_sequential =
        create_pods(server, &client, &pods_path, &bodies, 0..opts.creates, 1).await?;
    tracing::info!(
        count = opts.pods - opts.creates,
        concurrency = opts.concurrency,
        "concurrent creates"
    );
    let create_concurrent = create_pods(
        server,
        &client,
        &pods_path,
        &bodies,
        opts.creates..opts.pods,
        opts.concurrency,
    )
    .await?;

    tokio::time::sleep(opts.settle).await;
    let rss_loaded_bytes = server.rss_bytes()?;

    tracing::info!(samples = opts.samples, "GET");
    let mut get_samples = Vec::with_capacity(opts.samples);
    for i in 0..opts.samples {
        let path = format!("{pods_path}/{}", pod_name((i * 7919) % opts.pods));
        let t = Instant::now();
        call_ok(&client, request(Method::GET, &path, None)?).await?;
        get_samples.push(t.elapsed());
    }
    let get = summary(&get_samples, "GET")?;

    tracing::info!(samples = opts.list_samples(), "LIST");
    let t = Instant::now();
    let first = call_ok(&client, request(Method::GET, &pods_path, None)?).await?;
    let list_first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let items = count_items(&first)?;
    if items != opts.pods {
        return Err(BenchError::Parse(format!(
            "LIST returned {items} pods, expected {}",
            opts.pods
        )));
    }
    let list_response_bytes = first.len();
    drop(first);
    let mut list_samples = Vec::with_capacity(opts.list_samples());
    let cpu_before = server.cpu_time()?;
    for _ in 0..opts.list_samples() {
        let t = Instant::now();
        let body = call_ok(&client, request(Method::GET, &pods_path, None)?).await?;
        list_samples.push(t.elapsed());
        if body.len() < list_response_bytes / 2 {
            return Err(BenchError::Parse(format!(
                "LIST body shrank from {list_response_bytes} to {} bytes",
                body.len()
            )));
        }
    }
    let list_server_cpu_ms =
        (server.cpu_time()? - cpu_before).as_secs_f64() * 1000.0 / opts.list_samples() as f64;
    let list = summary(&list_samples, "LIST")?;
    let rss_after_list_bytes = server.rss_bytes()?;

    tracing::info!(
        watchers = opts.watchers,
        updates = opts.watch_updates,
        "watch"
    );
    let watch = watch_delivery(&client, opts.watchers, opts.watch_updates).await?;

    Ok(ApiBenchReport {
        timestamp,
        machine,
        config: ReportConfig {
            mini_bin: opts.mini_bin.display().to_string(),
            pods: opts.pods,
            sequential_creates: opts.creates,
            concurrent_creates: opts.pods - opts.creates,
            concurrency: opts.concurrency,
            watchers: opts.watchers,
            watch_updates: opts.watch_updates,
            get_samples: opts.samples,
            list_samples: opts.list_samples(),
            settle_seconds: opts.settle.as_secs_f64(),
            pod_json_bytes,
            client: "kube-rs 5 client, raw requests, pooled keep-alive HTTP/1.1 over TLS, \
                     Accept: application/json, bodies read fully but not decoded"
                .into(),
        },
        rss_idle_bytes,
        create_sequential,
        create_concurrent,
        rss_loaded_bytes,
        get,
        list,
        list_first_ms,
        list_response_bytes,
        list_server_cpu_ms,
        rss_after_list_bytes,
        watch,
        server_log_bytes: server.log_bytes(),
    })
}

fn pod_name(i: usize) -> String {
    format!("bench-web-{i:06}")
}

fn summary(samples: &[Duration], what: &str) -> Result<LatencySummary, BenchError> {
    LatencySummary::from_samples(samples)
        .ok_or_else(|| BenchError::Parse(format!("no {what} samples")))
}

async fn wait_ready(client: &kube::Client) -> Result<(), BenchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match call(client, request(Method::GET, "/readyz", None)?).await {
            Ok((StatusCode::OK, _)) => return Ok(()),
            Ok((status, body)) => format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "/readyz not ok within {START_TIMEOUT:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(
    client: &kube::Client,
    path: &str,
    obj: &serde_json::Value,
) -> Result<Bytes, BenchError> {
    let body = serde_json::to_vec(obj).map_err(|e| BenchError::Parse(e.to_string()))?;
    call_ok(client, request(Method::POST, path, Some((JSON, body)))?).await
}

/// Creates `bodies[range]` with `concurrency` requests in flight at once.
async fn create_pods(
    server: &ServerProcess,
    client: &kube::Client,
    path: &str,
    bodies: &Arc<Vec<Bytes>>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<Throughput, BenchError> {
    let count = range.len();
    let next = Arc::new(AtomicUsize::new(range.start));
    let cpu_before = server.cpu_time()?;
    let end = range.end;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let path = path.to_string();
        let bodies = bodies.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, BenchError>(latencies);
                }
                let req = request(Method::POST, &path, Some((JSON, bodies[i].to_vec())))?;
                let t = Instant::now();
                call_ok(&client, req).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        let part = task
            .await
            .map_err(|e| BenchError::Client(format!("create task: {e}")))??;
        latencies.extend(part);
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    Ok(Throughput {
        server_cpu_ms_per_object: cpu.as_secs_f64() * 1000.0 / count as f64,
        count,
        seconds: elapsed.as_secs_f64(),
        per_second: rate(count, elapsed),
        latency: summary(&latencies, "create")?,
    })
}

fn count_items(list: &[u8]) -> Result<usize, BenchError> {
    let v: serde_json::Value =
        serde_json::from_slice(list).map_err(|e| BenchError::Parse(format!("LIST body: {e}")))?;
    v.get("items")
        .and_then(|i| i.as_array())
        .map(|a| a.len())
        .ok_or_else(|| BenchError::Parse("LIST body has no items array".into()))
}

/// A watcher saw the update with this sequence number at this instant.
struct Delivery {
    seq: usize,
    at: Instant,
}

/// Opens `watchers` watches on one namespace's ConfigMaps, then makes `updates` merge
/// patches one after another, each waiting until every watcher saw it (or a timeout).
async fn watch_delivery(
    client: &kube::Client,
    watchers: usize,
    updates: usize,
) -> Result<WatchResult, BenchError> {
    let created = create(
        client,
        &format!("/api/v1/namespaces/{WATCH_NS}/configmaps"),
        &objects::config_map(WATCH_NS, WATCHED, 0),
    )
    .await?;
    let created: serde_json::Value =
        serde_json::from_slice(&created).map_err(|e| BenchError::Parse(e.to_string()))?;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| BenchError::Parse("created ConfigMap has no resourceVersion".into()))?
        .to_string();

    // Watching from the ConfigMap's resourceVersion: every later update is delivered no
    // matter when the server registers each watch.
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), BenchError>>(watchers);
    let watch_path = format!(
        "/api/v1/namespaces/{WATCH_NS}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=3600"
    );
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let client = client.clone();
        let path = watch_path.clone();
        let tx = tx.clone();
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            watcher(client, path, tx, ready_tx).await;
        }));
    }
    drop(tx);
    drop(ready_tx);
    let abort_all = |tasks: &[tokio::task::JoinHandle<()>]| tasks.iter().for_each(|t| t.abort());
    for _ in 0..watchers {
        match tokio::time::timeout(START_TIMEOUT, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => {
                abort_all(&tasks);
                return Err(e);
            }
            Ok(None) | Err(_) => {
                abort_all(&tasks);
                return Err(BenchError::Timeout("opening watches".into()));
            }
        }
    }

    let cm_path = format!("/api/v1/namespaces/{WATCH_NS}/configmaps/{WATCHED}");
    // (sent, acknowledged) per sequence number; index 0 unused.
    let mut writes: Vec<(Instant, Instant)> = Vec::with_capacity(updates + 1);
    let now = Instant::now();
    writes.push((now, now));
    let mut seen = vec![0usize; updates + 1];
    let mut from_ack = Vec::with_capacity(watchers * updates);
    let mut from_send = Vec::with_capacity(watchers * updates);
    let mut update_latency = Vec::with_capacity(updates);
    let mut before_ack = 0;
    // Deliveries are only read after the write's timestamps were recorded, so every
    // sequence number seen has its entry in `writes`.
    let mut record = |d: Delivery, writes: &[(Instant, Instant)], seen: &mut [usize]| {
        if d.seq == 0 || d.seq >= writes.len() {
            return;
        }
        let (sent, acked) = writes[d.seq];
        if d.at < acked {
            before_ack += 1;
        }
        from_ack.push(d.at.saturating_duration_since(acked));
        from_send.push(d.at.saturating_duration_since(sent));
        seen[d.seq] += 1;
    };
    let result = async {
        for seq in 1..=updates {
            let patch = serde_json::to_vec(&serde_json::json!({"data": {"seq": seq.to_string()}}))
                .map_err(|e| BenchError::Parse(e.to_string()))?;
            let req = request(Method::PATCH, &cm_path, Some((MERGE_PATCH, patch)))?;
            let sent = Instant::now();
            call_ok(client, req).await?;
            let acked = Instant::now();
            update_latency.push(acked - sent);
            writes.push((sent, acked));
            let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
            while seen[seq] < watchers {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(d)) => record(d, &writes, &mut seen),
                    Ok(None) => return Err(BenchError::Client("every watch stream ended".into())),
                    Err(_) => {
                        tracing::warn!(seq, seen = seen[seq], "watch delivery timed out");
                        break;
                    }
                }
            }
        }
        // Late deliveries of earlier updates still count (with their real latency).
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            record(d, &writes, &mut seen);
        }
        Ok(())
    }
    .await;
    abort_all(&tasks);
    result?;
    Ok(WatchResult {
        expected: watchers * updates,
        delivered: seen.iter().sum(),
        before_ack,
        from_ack: LatencySummary::from_samples(&from_ack),
        from_send: LatencySummary::from_samples(&from_send),
        update_latency: LatencySummary::from_samples(&update_latency),
    })
}

/// One watch stream: reports readiness once the response headers arrived, then the
/// sequence number of every event as it is read off the wire.
async fn watcher(
    client: kube::Client,
    path: String,
    tx: mpsc::UnboundedSender<Delivery>,
    ready: mpsc::Sender<Result<(), BenchError>>,
) {
    let resp = match request(Method::GET, &path, None) {
        Ok(req) => client
            .send(req)
            .await
            .map_err(|e| BenchError::Client(format!("watch: {e}"))),
        Err(e) => Err(e),
    };
    let resp = match resp {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let _ = ready
                .send(Err(BenchError::Status {
                    what: format!("GET {path}"),
                    status: r.status().as_u16(),
                    body: String::new(),
                }))
                .await;
            return;
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return;
        }
    };
    let _ = ready.send(Ok(())).await;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        let at = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if let Some(seq) = event_seq(&line) {
                if tx.send(Delivery { seq, at }).is_err() {
                    return;
                }
            }
        }
    }
}

/// The `data.seq` of a watch event line, for ADDED/MODIFIED events.
fn event_seq(line: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    match v.get("type")?.as_str()? {
        "ADDED" | "MODIFIED" => {}
        _ => return None,
    }
    v.get("object")?
        .get("data")?
        .get("seq")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_seq_modified_event_returns_seq() {
        let line = br#"{"type":"MODIFIED","object":{"kind":"ConfigMap","data":{"seq":"12"}}}"#;
        assert_eq!(event_seq(line), Some(12));
    }

    #[test]
    fn event_seq_bookmark_or_garbage_is_none() {
        assert_eq!(
            event_seq(br#"{"type":"BOOKMARK","object":{"data":{"seq":"1"}}}"#),
            None
        );
        assert_eq!(event_seq(b"not json"), None);
    }

    #[test]
    fn count_items_list_body_counts_items() {
        assert_eq!(
            count_items(br#"{"kind":"PodList","items":[{},{},{}]}"#).unwrap(),
            3
        );
        assert!(count_items(br#"{"kind":"Status"}"#).is_err());
    }

    #[test]
    fn pod_name_is_zero_padded() {
        assert_eq!(pod_name(42), "bench-web-000042");
    }
}
