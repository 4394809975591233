//! Evaluator cost on realistic shapes, measured over an in-memory series table (the store's own cost
//! is measured by mini-tsdb's bench): `cargo run --release -p mini-promql --example bench`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mini_promql::{api, Limits, MemorySource, Series};

const DAY_MS: i64 = 86_400_000;
const STEP_MS: i64 = 10_000;

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// 50 nodes × 30 pods, each with a pod-level and two container CPU counters; `span_ms` of samples
/// every 10 s ending at `end_ms`.
fn build(span_ms: i64, end_ms: i64) -> MemorySource {
    let mut series = Vec::new();
    for n in 0..50 {
        for p in 0..30 {
            for c in ["", "app", "sidecar"] {
                let rate = 0.01 + ((n * 31 + p * 7) % 100) as f64 / 100.0;
                let mut v = 0.0;
                let samples: Vec<(i64, f64)> = (0..=span_ms / STEP_MS)
                    .map(|i| {
                        v += rate * 10.0;
                        (end_ms - span_ms + i * STEP_MS, v)
                    })
                    .collect();
                series.push(Series {
                    labels: labels(&[
                        ("__name__", "container_cpu_usage_seconds_total".to_string()),
                        ("namespace", format!("ns-{}", p % 5)),
                        ("pod", format!("pod-{n}-{p}")),
                        ("container", c.to_string()),
                        ("node", format!("node-{n}")),
                        ("instance", format!("node-{n}")),
                    ]),
                    samples,
                });
            }
        }
    }
    MemorySource { series }
}

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = f();
    let start = Instant::now();
    for _ in 0..runs {
        out = f();
    }
    (start.elapsed() / runs, out)
}

fn params(p: &[(&str, String)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn main() {
    let end = 1_764_000_000_000i64;
    let limits = Limits::default();
    let mut rows: Vec<(String, f64, String)> = Vec::new();

    let day = build(DAY_MS, end);
    let q = "sum by (pod) (rate(container_cpu_usage_seconds_total{namespace=\"ns-1\",pod=\"pod-7-11\",container!=\"\"}[5m]))";
    let p = params(&[
        ("query", q.to_string()),
        ("start", ((end - DAY_MS) / 1000).to_string()),
        ("end", (end / 1000).to_string()),
        ("step", "60".to_string()),
    ]);
    let (d, (code, body)) = time(20, || api("query_range", &p, &day, &limits, end));
    assert_eq!(code, 200, "{body}");
    let points = body["data"]["result"][0]["values"]
        .as_array()
        .map_or(0, |v| v.len());
    rows.push((
        "query_range 1 day, one pod, rate[5m], step 60s".to_string(),
        d.as_secs_f64() * 1000.0,
        format!("ms ({points} points, 2 series × 8641 samples, 4500 series in table)"),
    ));

    let recent = build(10 * 60_000, end);
    let q = "topk(10, sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!=\"\"}[5m])))";
    let p = params(&[("query", q.to_string()), ("time", (end / 1000).to_string())]);
    let (d, (code, body)) = time(20, || api("query", &p, &recent, &limits, end));
    assert_eq!(code, 200, "{body}");
    rows.push((
        "query topk(10, sum by (namespace,pod) (rate[5m])) over 3000 series".to_string(),
        d.as_secs_f64() * 1000.0,
        "ms".to_string(),
    ));

    let q = "sum by (node) (rate(container_cpu_usage_seconds_total{container=\"\"}[5m]))";
    let p = params(&[
        ("query", q.to_string()),
        ("start", ((end - 3_600_000) / 1000).to_string()),
        ("end", (end / 1000).to_string()),
        ("step", "15".to_string()),
    ]);
    let hour = build(2 * 3_600_000, end);
    let (d, (code, body)) = time(3, || api("query_range", &p, &hour, &limits, end));
    assert_eq!(code, 200, "{body}");
    rows.push((
        "query_range 1 hour, sum by (node) over 1500 pods, step 15s".to_string(),
        d.as_secs_f64() * 1000.0,
        "ms (241 steps × 1500 series)".to_string(),
    ));

    let text = "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{namespace=~\"ns-.*\", container!=\"\"}[5m])) / on (namespace, pod) group_left kube_pod_info";
    let (d, _) = time(10_000, || mini_promql::parse(text).is_ok());
    rows.push((
        "parse a dashboard query".to_string(),
        d.as_secs_f64() * 1e6,
        "µs".to_string(),
    ));

    println!("{:<72} {:>12}  unit", "measurement", "value");
    for (name, value, unit) in &rows {
        println!("{name:<72} {value:>12.3}  {unit}");
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|(n, v, u)| serde_json::json!({"name": n, "value": v, "unit": u}))
        .collect();
    println!("{}", serde_json::Value::Array(json));
}
