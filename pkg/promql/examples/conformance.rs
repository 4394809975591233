//! Differential conformance check against a real Prometheus: generates series (counters with
//! resets and gaps, gauges, histogram buckets), loads them into Prometheus with `promtool tsdb
//! create-blocks-from openmetrics`, starts Prometheus on loopback, and compares the answers of
//! `query` and `query_range` for a table of dashboard-style queries with mini-promql's over the same
//! data. Sample times are off the whole second and evaluation times are chosen so that no sample
//! lies on a window boundary, where Prometheus 2.x (closed windows) and 3.x (left-open) differ.
//!
//! Run: `cargo run -p mini-promql --example conformance [-- /usr/bin/prometheus /usr/bin/promtool]`
//! (Debian package `prometheus`). Prints `ok - ...`/`not ok - ...` per query and `N passed, M failed`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mini_promql::{api, Limits, MemorySource, Series};
use serde_json::Value;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

/// Stops the Prometheus this program started when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator (no randomness between runs).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> Series {
    Series {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        samples,
    }
}

/// Two hours of data every 10 s; each series' samples are 7 ms + its index off the whole second.
fn generate() -> Vec<Series> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let mut idx = 0i64;
    let mut times = |from_min: i64, to_min: i64, gap: Option<(i64, i64)>| {
        idx += 1;
        let jitter = 7 + idx;
        (0..720)
            .map(move |i| T0 + i * 10_000 + jitter)
            .filter(move |t| *t >= T0 + from_min * MIN && *t < T0 + to_min * MIN)
            .filter(move |t| gap.is_none_or(|(a, b)| *t < T0 + a * MIN || *t >= T0 + b * MIN))
            .collect::<Vec<i64>>()
    };
    for node in ["n1", "n2"] {
        for cpu in ["0", "1"] {
            for mode in ["user", "idle"] {
                let reset = node == "n2" && cpu == "1" && mode == "user";
                let gap = (node == "n1" && cpu == "1" && mode == "idle").then_some((40, 52));
                let start = if node == "n2" && cpu == "0" && mode == "idle" {
                    33
                } else {
                    0
                };
                let mut v = 0.0;
                let samples = times(start, 120, gap)
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| {
                        // Fractional increments: exact ties between series would make topk's
                        // choice depend on Prometheus' (randomised) internal series order.
                        v += (rng.next() * 20_000.0).floor() / 1000.0;
                        if reset && (i == 300 || i == 500) {
                            v = (rng.next() * 5.0).floor();
                        }
                        (t, v)
                    })
                    .collect();
                out.push(series(
                    &[
                        ("__name__", "c_total"),
                        ("node", node),
                        ("cpu", cpu),
                        ("mode", mode),
                    ],
                    samples,
                ));
            }
        }
        for pod in ["p-1", "p-2", "p-3"] {
            let mut v = 50.0;
            let samples = times(0, 120, None)
                .into_iter()
                .map(|t| {
                    v = (v + (rng.next() - 0.5) * 20.0).clamp(0.0, 100.0);
                    (t, v)
                })
                .collect();
            out.push(series(
                &[("__name__", "g"), ("node", node), ("pod", pod)],
                samples,
            ));
        }
        let ts = times(0, 120, None);
        let mut counts = [0.0f64; 4];
        let mut bucket_samples: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        for t in ts {
            let obs = (rng.next() * 10.0).floor();
            for _ in 0..obs as usize {
                let x = rng.next() * 1.5;
                for (b, le) in [0.1, 0.5, 1.0, f64::INFINITY].iter().enumerate() {
                    if x <= *le {
                        counts[b] += 1.0;
                    }
                }
            }
            for b in 0..4 {
                bucket_samples[b].push((t, counts[b]));
            }
        }
        for (b, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
            out.push(series(
                &[("__name__", "h_bucket"), ("node", node), ("le", le)],
                std::mem::take(&mut bucket_samples[b]),
            ));
        }
    }
    out
}

fn openmetrics(all: &[Series]) -> String {
    let mut by_name: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in all {
        by_name.entry(&s.labels["__name__"]).or_default().push(s);
    }
    let mut out = String::new();
    for (name, list) in by_name {
        out.push_str(&format!("# TYPE {name} unknown\n"));
        for s in list {
            let labels: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            for (t, v) in &s.samples {
                out.push_str(&format!(
                    "{name}{{{}}} {v} {}.{:03}\n",
                    labels.join(","),
                    t / 1000,
                    t % 1000
                ));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn http_get(port: u16, path_and_query: &str) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no http body")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok((code, json))
}

fn encode(params: &[(String, String)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-12),
        _ => false,
    }
}

/// Compares two API answers: same status, result type, series (by labels) and values within a
/// relative 1e-9 (summation order may differ).
fn same(a: &Value, b: &Value) -> Result<(), String> {
    if a["status"] != b["status"] {
        return Err(format!("status {} vs {}", a["status"], b["status"]));
    }
    let (da, db) = (&a["data"], &b["data"]);
    if da["resultType"] != db["resultType"] {
        return Err(format!(
            "resultType {} vs {}",
            da["resultType"], db["resultType"]
        ));
    }
    let points = |v: &Value| -> Vec<(String, String)> {
        let list = if v.is_array() && v.get(0).is_some_and(|x| x.is_array()) {
            v.as_array().cloned().unwrap_or_default()
        } else if v.is_array()
            && v.as_array()
                .is_some_and(|x| x.len() == 2 && !x[0].is_object())
        {
            vec![v.clone()]
        } else {
            v.as_array().cloned().unwrap_or_default()
        };
        list.iter()
            .map(|p| (p[0].to_string(), p[1].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let keyed = |d: &Value| -> BTreeMap<String, Vec<(String, String)>> {
        match d["result"].as_array() {
            Some(items) if items.iter().all(|i| i.is_object()) => items
                .iter()
                .map(|i| {
                    let pts = if i.get("values").is_some() {
                        points(&i["values"])
                    } else {
                        points(&i["value"])
                    };
                    (i["metric"].to_string(), pts)
                })
                .collect(),
            _ => BTreeMap::from([("scalar".to_string(), points(&d["result"]))]),
        }
    };
    let (ka, kb) = (keyed(da), keyed(db));
    let names_a: Vec<&String> = ka.keys().collect();
    let names_b: Vec<&String> = kb.keys().collect();
    if names_a != names_b {
        return Err(format!(
            "series differ:\n  mini: {names_a:?}\n  prom: {names_b:?}"
        ));
    }
    for (k, pa) in &ka {
        let pb = &kb[k];
        if pa.len() != pb.len() {
            let ta: Vec<&String> = pa.iter().map(|p| &p.0).collect();
            let tb: Vec<&String> = pb.iter().map(|p| &p.0).collect();
            let only_a: Vec<&&String> = ta.iter().filter(|t| !tb.contains(t)).take(3).collect();
            let only_b: Vec<&&String> = tb.iter().filter(|t| !ta.contains(t)).take(3).collect();
            return Err(format!(
                "{k}: {} points vs {} (only mini at {only_a:?}, only prometheus at {only_b:?})",
                pa.len(),
                pb.len()
            ));
        }
        for (x, y) in pa.iter().zip(pb) {
            if x.0 != y.0 || !close(&x.1, &y.1) {
                return Err(format!("{k}: point {x:?} vs {y:?}"));
            }
        }
    }
    Ok(())
}

const QUERIES: &[&str] = &[
    "c_total",
    "rate(c_total[1m])",
    "rate(c_total[5m])",
    "increase(c_total[2m])",
    "irate(c_total[1m])",
    "delta(g[2m])",
    "idelta(g[1m])",
    "deriv(g[5m])",
    "changes(g[5m])",
    "resets(c_total[10m])",
    "sum by (node) (rate(c_total[5m]))",
    "sum without (cpu) (rate(c_total[1m]))",
    "avg by (mode) (rate(c_total[2m]))",
    "max by (node) (g)",
    "min without (pod) (g)",
    "count by (node) (g)",
    "topk(2, g)",
    "bottomk by (node) (1, g)",
    "quantile(0.9, g)",
    "stddev by (node) (g)",
    "stdvar(g)",
    "count_values(\"v\", round(g / 25))",
    "g * 2 - 1",
    "2 ^ g / 1e20",
    "g % 7",
    "-g",
    "g > 50",
    "g > bool 50",
    "60 < g",
    "g == bool g",
    "g / on (node) group_left sum by (node) (g)",
    "sum by (node) (g) / on (node) group_right g",
    "g / ignoring (pod) group_left sum by (node) (g)",
    "rate(c_total{mode=\"user\"}[5m]) / ignoring (mode) rate(c_total{mode=\"idle\"}[5m])",
    "g and on (node) g{pod=\"p-1\"} > 40",
    "g or c_total",
    "g unless on (node) (g{node=\"n1\"})",
    "avg_over_time(g[2m])",
    "max_over_time(g[3m])",
    "min_over_time(g[3m])",
    "sum_over_time(g[1m])",
    "count_over_time(c_total[5m])",
    "last_over_time(g[1m])",
    "stddev_over_time(g[5m])",
    "quantile_over_time(0.5, g[5m])",
    "present_over_time(c_total[1m])",
    "label_replace(g, \"idx\", \"$1\", \"pod\", \"p-(.*)\")",
    "label_join(g, \"np\", \"/\", \"node\", \"pod\")",
    "g offset 7m",
    "rate(c_total[5m] offset 10m)",
    "abs(g - 50)",
    "ceil(g)",
    "floor(g)",
    "round(g, 5)",
    "clamp_min(g, 40)",
    "clamp_max(g, 60)",
    "clamp(g, 30, 70)",
    "sqrt(g)",
    "exp(g / 50)",
    "ln(g + 1)",
    "sgn(g - 50)",
    "time()",
    "vector(1)",
    "scalar(sum(g))",
    "time() - scalar(max(g))",
    "1 + 2 * 3",
    "g * 1e6 + 123456 - 1234567 + 0.0001 + 0.00001 + 1e20 + 1e21 + 1.5e-7",
    "sort_desc(g)",
    "timestamp(g)",
    "absent(nonexistent{job=\"x\"})",
    "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
    "histogram_quantile(0.5, rate(h_bucket[5m]))",
    "max_over_time(rate(c_total[1m])[5m:30s])",
    "avg_over_time(g[10m:1m] offset 2m)",
    "g @ 1700003000.5",
    "sum(rate(c_total[5m] @ 1700004000))",
    "sum by (node) (rate(c_total[5m])) > bool 5",
    "topk(1, sum by (node, mode) (rate(c_total[5m])))",
    "count(count by (node) (g))",
    "g != g",
    "-(g)",
    "+g",
    "max(g) - min(g)",
    "avg(g) by (node)",
    "sum without (pod, node) (g)",
    "rate(c_total[1m]) * on (node, cpu, mode) c_total",
    "g unless g",
    "group by (node) (g)",
    "absent(g)",
    "vector(time())",
    "time() % 3600",
    "ceil(rate(c_total[5m]))",
    "label_replace(g, \"node\", \"\", \"node\", \".*\")",
    "sum by (pod) (g) / ignoring (pod) group_left sum(g)",
    "quantile by (node) (0.5, g)",
    "stddev_over_time(c_total[1m])",
    "irate(g[30s])",
    "g offset -1m",
    "1 - avg by (node) (rate(c_total{mode=\"idle\"}[5m]))",
    "histogram_quantile(0.99, sum by (le, node) (rate(h_bucket[5m])))",
    "timestamp(vector(1))",
    "scalar(g)",
    "count_over_time(g[1m:15s])",
    "c_total{mode=~\"us.*\", cpu!=\"1\", node!~\"n2\"}",
    "{__name__=~\"g|c_total\", node=\"n1\"}",
    "sum by (__name__) ({__name__=~\"g|c_total\"})",
    "bottomk(2, rate(c_total[5m])) or topk(1, g)",
    "g > on (node) group_left avg by (node) (g)",
    "count by (le) (h_bucket)",
    "predict_linear(g[10m], 3600)",
    "predict_linear(c_total[5m] offset 1m, 600)",
    "absent_over_time(g{pod=\"p-1\"}[1m])",
    "absent_over_time(nope{job=\"x\"}[1m])",
    "hour()",
    "minute(vector(time()))",
    "day_of_week()",
    "days_in_month(g * 1e7)",
    "year(g * 1e7) + month(g * 1e7) + day_of_year(g * 1e7) + day_of_month(g * 1e7)",
];

/// Malformed queries: Prometheus' answer (status, type, message with position) is the reference.
/// (Invalid regexes are left out: the position matches, but Go's regexp words its errors unlike
/// Rust's `regex`.)
const BAD_QUERIES: &[&str] = &[
    "",
    "sum(rate(c_total[5m])",
    "rate(g)",
    "g{node=\"n1\" pod=\"p-1\"}",
    "nosuch(g)",
    "1 > 2",
    "g[5m] + 1",
    "{node=\"\"}",
    "sum(g) by (",
    "g offset",
    "rate(g[5m]",
    "g )",
    "topk(g)",
    "g $",
    "\"unterminated",
    "g and 1",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prometheus = args.get(1).map_or("/usr/bin/prometheus", |s| s.as_str());
    let promtool = args.get(2).map_or("/usr/bin/promtool", |s| s.as_str());
    if !Path::new(prometheus).exists() || !Path::new(promtool).exists() {
        eprintln!("prometheus/promtool not found: install the Debian package prometheus (and stop its service) or pass their paths");
        return ExitCode::from(2);
    }
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let data = generate();
    let om = dir.path().join("data.om");
    std::fs::write(&om, openmetrics(&data)).expect("write openmetrics");
    let tsdb = dir.path().join("tsdb");
    let st = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .stdout(Stdio::null())
        .status()
        .expect("run promtool");
    assert!(st.success(), "promtool create-blocks-from failed");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a port")
        .port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(port, "/-/ready") {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, info) = http_get(port, "/api/v1/status/buildinfo").expect("buildinfo");
    println!("# against Prometheus {}", info["data"]["version"]);

    let source = MemorySource { series: data };
    let limits = Limits::default();
    let s = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    // Evaluation times 1 s past multiples of 15 s: never on a sample or subquery step boundary.
    let range = [
        ("start", s(T0 + 30 * MIN + 1000)),
        ("end", s(T0 + 125 * MIN + 1000)),
        ("step", "15".to_string()),
    ];
    let instants = [T0 + 45 * MIN + 1000, T0 + 123 * MIN + 1000];
    let (mut passed, mut failed) = (0, 0);
    for q in QUERIES {
        let mut requests: Vec<(&str, Vec<(String, String)>)> = Vec::new();
        let mut p: Vec<(String, String)> = vec![("query".into(), q.to_string())];
        p.extend(range.iter().map(|(k, v)| (k.to_string(), v.clone())));
        requests.push(("query_range", p));
        for t in instants {
            requests.push((
                "query",
                vec![("query".into(), q.to_string()), ("time".into(), s(t))],
            ));
        }
        for (path, params) in requests {
            let name = format!("{path} {q} {}", params.last().map_or("", |p| p.1.as_str()));
            let (_, mine) = api(path, &params, &source, &limits, T0);
            let theirs = http_get(port, &format!("/api/v1/{path}?{}", encode(&params)));
            let verdict = match theirs {
                Ok((_, theirs)) => same(&mine, &theirs),
                Err(e) => Err(format!("prometheus: {e}")),
            };
            match verdict {
                Ok(()) => {
                    passed += 1;
                    println!("ok - {name}");
                }
                Err(e) => {
                    failed += 1;
                    println!("not ok - {name}: {e}");
                }
            }
        }
    }
    // Metadata endpoints, the canonical text of every query, and errors (type, code, message).
    let mut extra: Vec<(&str, Vec<(String, String)>)> = vec![
        ("labels", vec![]),
        ("labels", vec![("match[]".into(), "g".into())]),
        ("label/node/values", vec![]),
        (
            "label/__name__/values",
            vec![("match[]".into(), "{node=\"n1\"}".into())],
        ),
        (
            "series",
            vec![
                ("match[]".into(), "g".into()),
                ("match[]".into(), "c_total{mode=\"user\"}".into()),
            ],
        ),
        ("series", vec![]),
        ("label/1x/values", vec![]),
        ("rules", vec![]),
        ("alerts", vec![]),
        (
            "query_exemplars",
            vec![
                ("query".into(), "g".into()),
                ("start".into(), s(T0)),
                ("end".into(), s(T0 + MIN)),
            ],
        ),
    ];
    for q in QUERIES {
        extra.push(("format_query", vec![("query".into(), q.to_string())]));
    }
    for q in BAD_QUERIES {
        extra.push((
            "query",
            vec![
                ("query".into(), q.to_string()),
                ("time".into(), s(instants[0])),
            ],
        ));
    }
    for (path, params) in extra {
        let name = format!("{path} {params:?}");
        let (code, mine) = api(path, &params, &source, &limits, T0);
        let verdict = match http_get(port, &format!("/api/v1/{path}?{}", encode(&params))) {
            Ok((their_code, theirs)) if their_code != code => {
                Err(format!("status {code} vs {their_code}: {mine} vs {theirs}"))
            }
            Ok((_, theirs)) if mine["status"] == "error" || !mine["data"].is_object() => {
                if mine == theirs {
                    Ok(())
                } else {
                    Err(format!("\n  mini: {mine}\n  prom: {theirs}"))
                }
            }
            Ok((_, theirs)) => same(&mine, &theirs),
            Err(e) => Err(format!("prometheus: {e}")),
        };
        match verdict {
            Ok(()) => {
                passed += 1;
                println!("ok - {name}");
            }
            Err(e) => {
                failed += 1;
                println!("not ok - {name}: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
