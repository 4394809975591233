//! Benchmark of the log store: ingest lines/s on one core, compression ratio on realistic generated lines
//! (nginx access logs, JSON app logs, Java stack traces) and search over the last hour of ~1 GB, next to
//! `grep -c` and `zstd -3` on the same raw file in the same run.
//!
//! `cargo run --release -p mini-logstore --example bench -- [--raw-mb 1024] [--dir DIR] [--json FILE]`

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mini_logship::wire::{LogBatch, LogEntry, LogStream};
use mini_logstore::{
    Direction, LabelMatcher, LineFilter, LogStore, LogStoreConfig, MatchOp, NamespaceScope,
    SearchQuery,
};

const NEEDLE: &str = "req-7f3a9c21";
const HOUR_NS: i64 = 3_600_000_000_000;
const SPAN_NS: i64 = 24 * HOUR_NS;
const BATCH_LINES: usize = 1000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
}

/// (year, month, day, hour, minute, second, millisecond) of a Unix nanosecond time.
fn civil(ns: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, ms)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Generates the lines of one kind of workload; a Java exception yields several lines.
fn generate(rng: &mut Rng, kind: usize, ts: i64, out: &mut Vec<String>) {
    let (y, mo, d, h, mi, s, ms) = civil(ts);
    let needle = rng.below(20_000) == 0;
    match kind {
        0 => {
            let ip = format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256));
            let method = rng.pick(&["GET", "GET", "GET", "POST", "PUT", "DELETE"]);
            let path = rng.pick(&[
                "/api/v1/products",
                "/api/v1/cart",
                "/api/v1/orders",
                "/static/js/app.min.js",
                "/static/css/site.css",
                "/healthz",
                "/api/v1/users/me",
                "/search",
            ]);
            let status = rng.pick(&[
                "200", "200", "200", "200", "304", "201", "404", "500", "302",
            ]);
            let ua = rng.pick(&[
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "kube-probe/1.33",
                "curl/8.5.0",
                "Go-http-client/1.1",
            ]);
            let q = if path.starts_with("/api/v1/products") || path == "/search" {
                format!(
                    "?page={}&q={}",
                    rng.below(20),
                    rng.pick(&["shoes", "jacket", "lamp", "phone", "desk"])
                )
            } else {
                String::new()
            };
            let rid = if needle {
                NEEDLE.to_string()
            } else {
                format!("req-{}", rng.hex(8))
            };
            out.push(format!(
                "{ip} - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"{method} {path}{q} HTTP/1.1\" {status} {} \"-\" \"{ua}\" rt={}.{:03} request_id={rid}",
                MONTHS[(mo - 1) as usize],
                rng.below(50_000) + 120,
                rng.below(2),
                rng.below(1000),
            ));
        }
        1 => {
            let level = rng.pick(&["info", "info", "info", "debug", "warn", "error"]);
            let (logger, msg) = [
                ("com.shop.cart.CartService", "item added to cart"),
                ("com.shop.cart.CartService", "cart loaded"),
                ("com.shop.payment.PaymentClient", "payment authorized"),
                ("com.shop.payment.PaymentClient", "payment provider slow"),
                ("com.shop.inventory.StockCache", "cache refreshed"),
                ("com.shop.order.OrderService", "order created"),
            ][rng.below(6) as usize];
            let trace = if needle {
                NEEDLE.to_string()
            } else {
                rng.hex(16)
            };
            out.push(format!(
                "{{\"ts\":\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"level\":\"{level}\",\"logger\":\"{logger}\",\"msg\":\"{msg}\",\"user_id\":{},\"cart_id\":\"c-{}\",\"items\":{},\"duration_ms\":{},\"trace_id\":\"{trace}\"}}",
                rng.below(100_000),
                rng.hex(6),
                rng.below(10),
                rng.below(400),
            ));
        }
        _ => {
            let thread = rng.below(16);
            let order = rng.below(1_000_000);
            let (exc, why) = [
                (
                    "java.lang.IllegalStateException",
                    "inventory unavailable for sku",
                ),
                (
                    "java.net.SocketTimeoutException",
                    "Read timed out after 3000 ms calling sku",
                ),
                (
                    "java.lang.NullPointerException",
                    "Cannot invoke \\\"Sku.getPrice()\\\" because \\\"sku\\\" is null for",
                ),
            ][rng.below(3) as usize];
            let tail = if needle {
                format!(" ({NEEDLE})")
            } else {
                String::new()
            };
            out.push(format!(
                "{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{ms:03} ERROR 1 --- [http-nio-8080-exec-{thread}] c.s.o.OrderController : Failed to process order {order}{tail}"
            ));
            out.push(format!("{exc}: {why} {}", rng.below(50_000)));
            let frames = [
                "\tat com.shop.order.OrderService.reserve(OrderService.java:142)",
                "\tat com.shop.order.OrderService.place(OrderService.java:88)",
                "\tat com.shop.order.OrderController.create(OrderController.java:57)",
                "\tat jdk.internal.reflect.GeneratedMethodAccessor212.invoke(Unknown Source)",
                "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)",
                "\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)",
                "\tat org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1791)",
                "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
            ];
            let n = 4 + rng.below(5) as usize;
            out.extend(frames[..n].iter().map(|f| f.to_string()));
        }
    }
}

struct Pod {
    labels: BTreeMap<String, String>,
    pod_labels: BTreeMap<String, String>,
    source: String,
    kind: usize,
    offset: u64,
}

fn pods() -> Vec<Pod> {
    let mut out = Vec::new();
    let apps = [
        ("web", 0usize),
        ("cart", 1),
        ("orders", 2),
        ("payments", 1),
        ("gateway", 0),
    ];
    for (n, ns) in ["prod", "staging", "dev", "shop"].iter().enumerate() {
        for (app, kind) in apps {
            for replica in 0..3 {
                let node = format!("node-{}", (n * 7 + replica * 3) % 10);
                let pod = format!("{app}-6d8f9c{n}b7-{replica}x{}", app.len());
                let labels: BTreeMap<String, String> = [
                    ("namespace", ns.to_string()),
                    ("pod", pod.clone()),
                    ("container", app.to_string()),
                    ("node", node.clone()),
                    (
                        "stream",
                        if kind == 2 { "stderr" } else { "stdout" }.to_string(),
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let pod_labels: BTreeMap<String, String> = [
                    ("app.kubernetes.io/name".to_string(), app.to_string()),
                    ("pod-template-hash".to_string(), format!("6d8f9c{n}b7")),
                ]
                .into();
                out.push(Pod {
                    labels,
                    pod_labels,
                    source: format!("{node}/uid-{ns}-{pod}/{app}/0/0"),
                    kind,
                    offset: 0,
                });
            }
        }
    }
    out
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_mb() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn main() {
    let mut raw_mb: u64 = 1024;
    let mut dir: Option<PathBuf> = None;
    let mut json_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--raw-mb" => {
                raw_mb = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--raw-mb takes a number")
            }
            "--dir" => dir = args.next().map(PathBuf::from),
            "--json" => json_out = args.next().map(PathBuf::from),
            other => panic!("unknown argument {other}; use --raw-mb N, --dir DIR, --json FILE"),
        }
    }
    // A given --dir is kept afterwards (raw.log, raw.log.zst, store/) for further comparisons.
    let keep = dir.is_some();
    let work = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mini-logstore-bench-{}", std::process::id()))
    });
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("create the bench directory");
    let store_dir = work.join("store");
    let raw_path = work.join("raw.log");
    let config = LogStoreConfig {
        retention: Duration::from_secs(30 * 24 * 3600),
        max_bytes: 64 << 30,
        min_free_bytes: 1 << 30,
    };
    let store = LogStore::open(&store_dir, config).expect("open the store");

    let target = raw_mb << 20;
    // Time grows with the bytes written: the raw data spans the 24 hours ending now evenly.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let start = now - SPAN_NS;
    let ts_at = |bytes: u64| start + (bytes as f64 / target as f64 * SPAN_NS as f64) as i64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pods = pods();
    let mut raw = BufWriter::with_capacity(
        1 << 20,
        File::create(&raw_path).expect("create the raw file"),
    );
    let (mut raw_bytes, mut lines, mut ts) = (0u64, 0u64, start);
    let (mut ingest_wall, mut ingest_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut generated = Vec::new();
    let mut last_hour_lines = 0u64;
    while raw_bytes < target {
        // One agent batch: ~BATCH_LINES lines from 10 pods.
        let mut streams = Vec::new();
        let first = rng.below(pods.len() as u64) as usize;
        for k in 0..10 {
            let p = &mut pods[(first + k * 7) % 60];
            let mut entries = Vec::new();
            while entries.len() < BATCH_LINES / 10 {
                generated.clear();
                generate(&mut rng, p.kind, ts, &mut generated);
                for line in generated.drain(..) {
                    raw.write_all(line.as_bytes()).unwrap();
                    raw.write_all(b"\n").unwrap();
                    raw_bytes += line.len() as u64 + 1;
                    p.offset += line.len() as u64 + 40;
                    if ts >= now - HOUR_NS {
                        last_hour_lines += 1;
                    }
                    entries.push(LogEntry {
                        offset: p.offset,
                        timestamp_ns: ts,
                        line,
                    });
                }
                ts = ts_at(raw_bytes).max(ts + 1);
            }
            lines += entries.len() as u64;
            streams.push(LogStream {
                labels: p.labels.clone(),
                pod_labels: p.pod_labels.clone(),
                source: p.source.clone(),
                entries,
            });
        }
        let batch = LogBatch {
            node: "bench".into(),
            streams,
        };
        let cpu0 = thread_cpu();
        let (res, wall) = timed(|| store.ingest(&batch));
        ingest_cpu += thread_cpu().saturating_sub(cpu0);
        ingest_wall += wall;
        res.expect("ingest");
    }
    raw.flush().unwrap();
    drop(raw);
    let (_, flush_wall) = timed(|| store.flush().expect("flush"));
    let stats = store.stats();
    let rss = rss_mb();
    let raw_file_bytes = fs::metadata(&raw_path).unwrap().len();

    let search =
        |start_ns: i64, matchers: Vec<LabelMatcher>, filters: Vec<LineFilter>, limit: usize| {
            let q = SearchQuery {
                start_ns,
                end_ns: now + HOUR_NS,
                matchers,
                line_filters: filters,
                direction: Direction::Backward,
                limit,
                cursor: None,
                namespaces: NamespaceScope::All,
                time_budget: Duration::from_secs(60),
            };
            // Once to warm the page cache like grep below gets it warm, then measured.
            let _ = store.search(&q).expect("search");
            timed(|| store.search(&q).expect("search"))
        };
    let hour = now - HOUR_NS;
    let (s1, t1) = search(
        hour,
        vec![],
        vec![LineFilter::Contains(NEEDLE.into())],
        1_000_000,
    );
    let (s2, t2) = search(
        hour,
        vec![],
        vec![LineFilter::Contains("OrderController".into())],
        100,
    );
    let (s3, t3) = search(
        hour,
        vec![LabelMatcher {
            name: "namespace".into(),
            op: MatchOp::Equal,
            value: "dev".into(),
        }],
        vec![LineFilter::Regex(r#"" 5\d\d "#.into())],
        1_000_000,
    );
    let (s4, t4) = search(
        start - 1,
        vec![],
        vec![LineFilter::Contains(NEEDLE.into())],
        1_000_000,
    );

    // The peers on the same raw file: grep -c (page cache warmed by a first run) and zstd -3.
    let grep = |pat: &str| {
        let _ = Command::new("grep")
            .args(["-c", "-F", pat])
            .arg(&raw_path)
            .output();
        let (out, t) = timed(|| {
            Command::new("grep")
                .args(["-c", "-F", pat])
                .arg(&raw_path)
                .output()
        });
        let n = out
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        (n, t)
    };
    let (grep_n, grep_t) = grep(NEEDLE);
    let zst = work.join("raw.log.zst");
    let (zstd_ok, zstd_t) = timed(|| {
        Command::new("zstd")
            .args(["-3", "-T1", "-q", "-f", "-o"])
            .arg(&zst)
            .arg(&raw_path)
            .status()
            .is_ok_and(|s| s.success())
    });
    let zstd_bytes = if zstd_ok {
        fs::metadata(&zst).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };

    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let ingest_lps = lines as f64 / ingest_wall.as_secs_f64();
    let ingest_lps_cpu = lines as f64 / ingest_cpu.as_secs_f64().max(1e-9);
    let our_ratio = stats.bytes_raw as f64 / stats.bytes_stored as f64;
    let zstd_ratio = if zstd_bytes > 0 {
        raw_file_bytes as f64 / zstd_bytes as f64
    } else {
        0.0
    };
    println!("mini-logstore bench: {} lines, {:.0} MiB raw over 24 h, batches of {BATCH_LINES} lines from 10 of 60 pods", lines, mb(raw_file_bytes));
    println!("{:<58} {:>14} {:<10}", "measure", "value", "unit");
    let row = |name: &str, v: String, unit: &str| println!("{name:<58} {v:>14} {unit:<10}");
    row(
        "ingest (wall, one thread, fsync per batch)",
        format!("{ingest_lps:.0}"),
        "lines/s",
    );
    row(
        "ingest (thread CPU time)",
        format!("{ingest_lps_cpu:.0}"),
        "lines/s/core",
    );
    row(
        "final segment close (flush)",
        format!("{:.3}", flush_wall.as_secs_f64()),
        "s",
    );
    row(
        "stored bytes (segment files)",
        format!("{:.1}", mb(stats.bytes_stored)),
        "MiB",
    );
    row(
        "compression ratio mini (raw / stored, incl. index)",
        format!("{our_ratio:.2}"),
        "x",
    );
    row(
        "compression ratio zstd -3 (whole file)",
        format!("{zstd_ratio:.2}"),
        "x",
    );
    row(
        "zstd -3 -T1 time (whole file)",
        format!("{:.2}", zstd_t.as_secs_f64()),
        "s",
    );
    row("segments", stats.segments.to_string(), "");
    row("process RSS after ingest", format!("{rss:.0}"), "MiB");
    row(
        "lines in the last hour",
        last_hour_lines.to_string(),
        "lines",
    );
    row(
        &format!(
            "search last 1h |= \"{NEEDLE}\" (all {} hits)",
            s1.records.len()
        ),
        format!("{:.1}", t1.as_secs_f64() * 1e3),
        "ms",
    );
    row("  scanned", format!("{:.1}", mb(s1.scanned_bytes)), "MiB");
    row(
        &format!(
            "search last 1h |= \"OrderController\" limit 100 ({})",
            s2.records.len()
        ),
        format!("{:.1}", t2.as_secs_f64() * 1e3),
        "ms",
    );
    row(
        &format!(
            "search last 1h {{namespace=\"dev\"}} |~ 5xx ({} hits)",
            s3.records.len()
        ),
        format!("{:.1}", t3.as_secs_f64() * 1e3),
        "ms",
    );
    row(
        &format!("search all 24h |= \"{NEEDLE}\" ({} hits)", s4.records.len()),
        format!("{:.1}", t4.as_secs_f64() * 1e3),
        "ms",
    );
    row("  scanned", format!("{:.1}", mb(s4.scanned_bytes)), "MiB");
    row(
        &format!(
            "grep -c -F \"{NEEDLE}\" whole raw file ({} hits)",
            grep_n.map_or("?".into(), |n| n.to_string())
        ),
        format!("{:.1}", grep_t.as_secs_f64() * 1e3),
        "ms",
    );
    let json = serde_json::json!({
        "bench": "logstore",
        "lines": lines,
        "raw_bytes": raw_file_bytes,
        "ingest_lines_per_s": ingest_lps,
        "ingest_lines_per_cpu_s": ingest_lps_cpu,
        "stored_bytes": stats.bytes_stored,
        "compression_ratio": our_ratio,
        "zstd3_ratio": zstd_ratio,
        "zstd3_seconds": zstd_t.as_secs_f64(),
        "rss_mb": rss,
        "search_last_hour_needle_ms": t1.as_secs_f64() * 1e3,
        "search_last_hour_needle_hits": s1.records.len(),
        "search_last_hour_limit100_ms": t2.as_secs_f64() * 1e3,
        "search_last_hour_label_regex_ms": t3.as_secs_f64() * 1e3,
        "search_24h_needle_ms": t4.as_secs_f64() * 1e3,
        "search_24h_needle_hits": s4.records.len(),
        "grep_c_ms": grep_t.as_secs_f64() * 1e3,
        "grep_c_hits": grep_n,
    });
    if let Some(p) = json_out {
        fs::write(&p, serde_json::to_vec_pretty(&json).unwrap()).expect("write the JSON result");
    }
    drop(store);
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
}
