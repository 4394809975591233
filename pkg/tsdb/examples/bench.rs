//! Benchmark of mini-tsdb on generated, realistic node and pod series (counters that grow, gauges that
//! wander, constants, on a 10 s interval — on the grid as mini's agents stamp them, or with
//! `--jitter-ms N` as a scraper that stamps read times would): bytes per stored sample, resident memory
//! after a day of 50 nodes × 30 pods, `select` of a day for one pod; and the same data for one node
//! through Prometheus' TSDB (`promtool tsdb create-blocks-from openmetrics`) side by side.
//!
//! `cargo run --release -p mini-tsdb --example bench -- [--nodes 50] [--pods 30] [--hours 24]
//!  [--jitter-ms 0] [--promtool /usr/bin/promtool] [--json FILE]`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use mini_tsdb::{MatchOp, Matcher, SeriesPoints, Tsdb, TsdbConfig};

const STEP_MS: i64 = 10_000;
const START_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Counter rounded to 1/100 (USER_HZ), growing by `a..a+b` per step.
    Centi(f64, f64),
    /// Counter in nanoseconds reported as seconds, growing by `a..a+b` s per step.
    Nanos(f64, f64),
    /// Integer counter growing by `a..a+b` per step.
    Bytes(f64, f64),
    /// Page-granular gauge that moves by up to `a` pages with probability `b`.
    Pages(f64, f64),
    /// Two-decimal gauge wandering by up to `a`.
    Load(f64),
    Constant,
}

struct Gen {
    labels: BTreeMap<String, String>,
    kind: Kind,
    value: f64,
}

impl Gen {
    fn step(&mut self, r: &mut Rng) -> f64 {
        match self.kind {
            Kind::Centi(a, b) => {
                self.value = ((self.value + a + b * r.f()) * 100.0).round() / 100.0
            }
            Kind::Nanos(a, b) => {
                let ns = (self.value * 1e9).round() + ((a + b * r.f()) * 1e9).round();
                self.value = ns / 1e9;
            }
            Kind::Bytes(a, b) => self.value += (a + b * r.f()).round(),
            Kind::Pages(a, b) => {
                if r.f() < b {
                    let pages = ((r.f() - 0.5) * 2.0 * a).round();
                    self.value = (self.value + pages * 4096.0).max(4096.0);
                }
            }
            Kind::Load(a) => {
                self.value = (((self.value + (r.f() - 0.5) * a) * 100.0).round() / 100.0).max(0.0)
            }
            Kind::Constant => {}
        }
        self.value
    }
}

fn lbl(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The series one node ships: 31 node-level series and 10 per pod.
fn node_series(node: usize, pods: usize, r: &mut Rng) -> Vec<Gen> {
    let n = format!("node-{node}");
    let base = [("node", n.as_str()), ("instance", n.as_str())];
    let mut out = Vec::new();
    let mut add = |name: &str, extra: &[(&str, &str)], kind: Kind, value: f64| {
        let mut l = lbl(&base);
        l.insert("__name__".into(), name.into());
        l.extend(lbl(extra));
        out.push(Gen {
            labels: l,
            kind,
            value,
        });
    };
    for cpu in ["0", "1"] {
        for (mode, a, b) in [
            ("user", 0.5, 1.0),
            ("nice", 0.0, 0.02),
            ("system", 0.2, 0.3),
            ("idle", 7.0, 2.0),
            ("iowait", 0.0, 0.1),
            ("irq", 0.0, 0.01),
            ("softirq", 0.0, 0.05),
            ("steal", 0.0, 0.0),
        ] {
            add(
                "node_cpu_seconds_total",
                &[("cpu", cpu), ("mode", mode)],
                Kind::Centi(a, b),
                10_000.0 * r.f(),
            );
        }
    }
    add(
        "node_memory_MemTotal_bytes",
        &[],
        Kind::Constant,
        8_341_000.0 * 1024.0,
    );
    add(
        "node_memory_MemAvailable_bytes",
        &[],
        Kind::Pages(64.0, 0.9),
        5_000_000.0 * 1024.0,
    );
    add(
        "node_memory_MemFree_bytes",
        &[],
        Kind::Pages(64.0, 0.9),
        2_000_000.0 * 1024.0,
    );
    add(
        "node_memory_Buffers_bytes",
        &[],
        Kind::Pages(2.0, 0.1),
        120_000.0 * 1024.0,
    );
    add(
        "node_memory_Cached_bytes",
        &[],
        Kind::Pages(16.0, 0.5),
        2_500_000.0 * 1024.0,
    );
    for name in ["node_load1", "node_load5", "node_load15"] {
        add(name, &[], Kind::Load(0.2), 0.5);
    }
    for (dev, mp) in [("/dev/sda1", "/"), ("/dev/sdb1", "/var/lib/mini")] {
        let fs = [("device", dev), ("mountpoint", mp), ("fstype", "ext4")];
        add(
            "node_filesystem_size_bytes",
            &fs,
            Kind::Constant,
            100.0 * (1u64 << 30) as f64,
        );
        add(
            "node_filesystem_avail_bytes",
            &fs,
            Kind::Pages(8.0, 0.3),
            60.0 * (1u64 << 30) as f64,
        );
    }
    add(
        "node_network_receive_bytes_total",
        &[("device", "eth0")],
        Kind::Bytes(20_000.0, 500_000.0),
        1e9,
    );
    add(
        "node_network_transmit_bytes_total",
        &[("device", "eth0")],
        Kind::Bytes(10_000.0, 200_000.0),
        5e8,
    );
    add(
        "node_boot_time_seconds",
        &[],
        Kind::Constant,
        1_764_000_000.0,
    );
    for p in 0..pods {
        let ns = format!("ns-{}", p % 10);
        let pod = format!("pod-{node}-{p}");
        let pl = |c: &'static str| {
            [
                ("namespace", ns.clone()),
                ("pod", pod.clone()),
                ("container", c.to_string()),
            ]
        };
        let as_ref = |v: &[(&'static str, String); 3]| -> Vec<(&str, String)> {
            v.iter().map(|(k, s)| (*k, s.clone())).collect()
        };
        let pod_l = as_ref(&pl(""));
        let app_l = as_ref(&pl("app"));
        let pod_r: Vec<(&str, &str)> = pod_l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let app_r: Vec<(&str, &str)> = app_l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rate = 0.05 + r.f();
        add(
            "container_cpu_usage_seconds_total",
            &pod_r,
            Kind::Nanos(rate * 10.0, 0.5),
            100.0 * r.f(),
        );
        add(
            "container_cpu_usage_seconds_total",
            &app_r,
            Kind::Nanos(rate * 10.0, 0.5),
            100.0 * r.f(),
        );
        let mem = (50.0 + 500.0 * r.f()) * 1_048_576.0;
        add(
            "container_memory_working_set_bytes",
            &pod_r,
            Kind::Pages(32.0, 0.5),
            mem,
        );
        add(
            "container_memory_working_set_bytes",
            &app_r,
            Kind::Pages(32.0, 0.5),
            mem,
        );
        add(
            "container_memory_rss",
            &app_r,
            Kind::Pages(16.0, 0.3),
            mem * 0.8,
        );
        add(
            "container_memory_usage_bytes",
            &app_r,
            Kind::Pages(32.0, 0.5),
            mem * 1.2,
        );
        add(
            "kube_pod_container_status_restarts_total",
            &app_r,
            Kind::Constant,
            0.0,
        );
        let mut net = pod_r.clone();
        net.retain(|(k, _)| *k != "container");
        net.push(("container", ""));
        net.push(("interface", "eth0"));
        add(
            "container_network_receive_bytes_total",
            &net,
            Kind::Bytes(1_000.0, 50_000.0),
            1e7,
        );
        add(
            "container_network_transmit_bytes_total",
            &net,
            Kind::Bytes(500.0, 20_000.0),
            5e6,
        );
        add(
            "container_spec_memory_limit_bytes",
            &app_r,
            Kind::Constant,
            1024.0 * 1_048_576.0,
        );
    }
    out
}

/// Milliseconds of random delay added to each round's timestamp (`--jitter-ms`).
static JITTER_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One node's generators, stepped an hour at a time.
struct NodeGen {
    r: Rng,
    gens: Vec<Gen>,
}

impl NodeGen {
    fn new(node: usize, pods: usize) -> Self {
        let mut r =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (node as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let gens = node_series(node, pods, &mut r);
        NodeGen { r, gens }
    }

    /// Hour `h`'s samples of every series, in the order of `gens`.
    fn hour(&mut self, h: i64) -> Vec<Vec<(i64, f64)>> {
        self.window(h, 3_600_000 / STEP_MS)
    }

    /// Window `w` of `steps` samples of every series, in the order of `gens`.
    fn window(&mut self, w: i64, steps: i64) -> Vec<Vec<(i64, f64)>> {
        let mut batch: Vec<Vec<(i64, f64)>> =
            vec![Vec::with_capacity(steps as usize); self.gens.len()];
        for i in 0..steps {
            // mini's agents stamp each round with its 10 s grid time; a scraper that stamps
            // the read time adds a few ms of jitter (--jitter-ms)
            let jitter = JITTER_MS.load(std::sync::atomic::Ordering::Relaxed);
            let t = START_MS
                + (w * steps + i) * STEP_MS
                + if jitter > 0 {
                    (self.r.next() % jitter) as i64
                } else {
                    0
                };
            for (g, out) in self.gens.iter_mut().zip(batch.iter_mut()) {
                out.push((t, g.step(&mut self.r)));
            }
        }
        batch
    }

    fn with_labels(&self, batch: Vec<Vec<(i64, f64)>>) -> Vec<SeriesPoints> {
        self.gens
            .iter()
            .map(|g| g.labels.clone())
            .zip(batch)
            .collect()
    }
}

/// One node's samples for `hours`, an hour-long batch at a time.
fn generate(
    node: usize,
    pods: usize,
    hours: i64,
    mut each: impl FnMut(&[Gen], &[Vec<(i64, f64)>]),
) {
    let mut g = NodeGen::new(node, pods);
    for h in 0..hours {
        let batch = g.hour(h);
        each(&g.gens, &batch);
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let m = e.metadata().ok();
            match m {
                Some(m) if m.is_dir() => dir_bytes(&e.path()),
                Some(m) => m.len(),
                None => 0,
            }
        })
        .sum()
}

struct Args {
    nodes: usize,
    pods: usize,
    hours: i64,
    promtool: String,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 50,
        pods: 30,
        hours: 24,
        promtool: "promtool".into(),
        json: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--nodes" => a.nodes = v[i + 1].parse().expect("--nodes takes a number"),
            "--pods" => a.pods = v[i + 1].parse().expect("--pods takes a number"),
            "--hours" => a.hours = v[i + 1].parse().expect("--hours takes a number"),
            "--promtool" => a.promtool = v[i + 1].clone(),
            "--jitter-ms" => JITTER_MS.store(
                v[i + 1].parse().expect("--jitter-ms takes a number"),
                std::sync::atomic::Ordering::Relaxed,
            ),
            "--json" => a.json = Some(v[i + 1].clone()),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

/// Prometheus' TSDB on node 0's data: OpenMetrics file → promtool blocks → chunk bytes / samples.
fn prometheus_side(a: &Args, tmp: &Path) -> Option<(u64, u64, u64, f64)> {
    let om = tmp.join("node0.om");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&om).ok()?);
    let mut keys: Vec<String> = Vec::new();
    let mut batches: Vec<Vec<Vec<(i64, f64)>>> = Vec::new();
    generate(0, a.pods, a.hours, |gens, batch| {
        if keys.is_empty() {
            keys = gens
                .iter()
                .map(|g| {
                    let name = &g.labels["__name__"];
                    let rest: Vec<String> = g
                        .labels
                        .iter()
                        .filter(|(k, _)| *k != "__name__")
                        .map(|(k, v)| format!("{k}=\"{v}\""))
                        .collect();
                    format!("{name}{{{}}}", rest.join(","))
                })
                .collect();
        }
        batches.push(batch.to_vec());
    });
    for batch in &batches {
        for i in 0..batch[0].len() {
            for (key, series) in keys.iter().zip(batch) {
                let (t, v) = series[i];
                writeln!(f, "{key} {v} {}.{:03}", t / 1000, t % 1000).ok()?;
            }
        }
    }
    writeln!(f, "# EOF").ok()?;
    f.flush().ok()?;
    drop(f);
    let out = tmp.join("prom");
    let started = Instant::now();
    let status = Command::new(&a.promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&om);
    if !status.success() {
        eprintln!("bench: promtool failed ({status})");
        return None;
    }
    let (mut samples, mut chunk_bytes, mut total) = (0u64, 0u64, 0u64);
    for e in std::fs::read_dir(&out).ok()?.filter_map(|e| e.ok()) {
        let meta = std::fs::read_to_string(e.path().join("meta.json")).unwrap_or_default();
        if let Some(n) = meta
            .split("\"numSamples\":")
            .nth(1)
            .and_then(|s| {
                s.split(|c: char| !c.is_ascii_digit())
                    .find(|x| !x.is_empty())
            })
            .and_then(|s| s.parse::<u64>().ok())
        {
            samples += n;
        }
        chunk_bytes += dir_bytes(&e.path().join("chunks"));
        total += dir_bytes(&e.path());
    }
    Some((samples, chunk_bytes, total, secs))
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut json: Vec<String> = Vec::new();
    let mut row = |name: &str, mini: String, prom: String, key: &str, val: f64| {
        rows.push((name.to_string(), mini, prom));
        json.push(format!("\"{key}\": {val}"));
    };

    // 1. The same data (node 0) through both stores: bytes per sample.
    let one = tmp.path().join("one");
    let mini_one = {
        let db = Tsdb::open(&one, TsdbConfig::default()).expect("open");
        generate(0, a.pods, a.hours, |gens, batch| {
            let series: Vec<_> = gens
                .iter()
                .map(|g| g.labels.clone())
                .zip(batch.iter().cloned())
                .collect();
            db.append(&series).expect("append");
        });
        db.flush().expect("flush");
        let st = db.stats();
        drop(db);
        (st.samples.raw, st.chunk_bytes.raw, dir_bytes(&one), st)
    };
    let one_stats = mini_one.3.clone();
    let prom = prometheus_side(&a, tmp.path());
    let per = |b: u64, n: u64| if n == 0 { 0.0 } else { b as f64 / n as f64 };
    let mini_bps = per(mini_one.1, mini_one.0);
    let mini_disk_bps = per(mini_one.2, mini_one.0);
    row(
        "samples (node 0, 1 node)",
        mini_one.0.to_string(),
        prom.map(|p| p.0.to_string()).unwrap_or("n/a".into()),
        "one_node_samples",
        mini_one.0 as f64,
    );
    row(
        "chunk bytes / sample",
        format!("{mini_bps:.3}"),
        prom.map(|p| format!("{:.3}", per(p.1, p.0)))
            .unwrap_or("n/a".into()),
        "bytes_per_sample",
        mini_bps,
    );
    row(
        "disk bytes / sample (all files)",
        format!("{mini_disk_bps:.3}"),
        prom.map(|p| format!("{:.3}", per(p.2, p.0)))
            .unwrap_or("n/a".into()),
        "disk_bytes_per_sample",
        mini_disk_bps,
    );
    row(
        "  of which 1-minute tier: samples / chunk bytes per sample",
        format!(
            "{} / {:.2}",
            one_stats.samples.minute,
            per(one_stats.chunk_bytes.minute, one_stats.samples.minute)
        ),
        "-".into(),
        "minute_tier_bytes_per_sample",
        per(one_stats.chunk_bytes.minute, one_stats.samples.minute),
    );
    row(
        "  of which 1-hour tier: samples / chunk bytes per sample",
        format!(
            "{} / {:.2}",
            one_stats.samples.hour,
            per(one_stats.chunk_bytes.hour, one_stats.samples.hour)
        ),
        "-".into(),
        "hour_tier_bytes_per_sample",
        per(one_stats.chunk_bytes.hour, one_stats.samples.hour),
    );
    let mut extra_json = Vec::new();
    if let Some(p) = prom {
        extra_json.push(format!(
            "\"prometheus_bytes_per_sample\": {}",
            per(p.1, p.0)
        ));
        extra_json.push(format!(
            "\"prometheus_disk_bytes_per_sample\": {}",
            per(p.2, p.0)
        ));
        extra_json.push(format!("\"promtool_seconds\": {}", p.3));
    }

    // 2. The full cluster: memory after ingesting, select of one pod's day.
    let full = tmp.path().join("full");
    // The generators (the agents' side) exist before the baseline, so the growth is the store's.
    let mut nodes: Vec<NodeGen> = (0..a.nodes).map(|n| NodeGen::new(n, a.pods)).collect();
    let rss_before = rss_bytes();
    let db = Tsdb::open(&full, TsdbConfig::default()).expect("open");
    let started = Instant::now();
    let mut samples = 0u64;
    // Five minutes at a time across all nodes, as the server sees agents that were briefly away.
    for w in 0..a.hours * 12 {
        for g in nodes.iter_mut() {
            let batch = g.window(w, 30);
            let series = g.with_labels(batch);
            samples += series.iter().map(|s| s.1.len() as u64).sum::<u64>();
            db.append(&series).expect("append");
        }
    }
    drop(nodes);
    let ingest_secs = started.elapsed().as_secs_f64();
    let st = db.stats();
    let rss_after = rss_bytes();
    let end = START_MS + a.hours * 3_600_000;
    let matchers = [
        Matcher {
            name: "namespace".into(),
            op: MatchOp::Equal,
            value: "ns-3".into(),
        },
        Matcher {
            name: "pod".into(),
            op: MatchOp::Equal,
            value: format!("pod-{}-3", a.nodes / 2),
        },
    ];
    let mut times = Vec::new();
    let mut points = 0;
    let mut nseries = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let got = db.select(&matchers, end - 86_400_000, end).expect("select");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        nseries = got.len();
        points = got.iter().map(|s| s.samples.len()).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let label = format!(
        "cluster ({} nodes x {} pods, {} h)",
        a.nodes, a.pods, a.hours
    );
    row(
        &label,
        format!("{} series", st.series),
        "-".into(),
        "series",
        st.series as f64,
    );
    row(
        "  samples ingested",
        samples.to_string(),
        "-".into(),
        "samples",
        samples as f64,
    );
    row(
        "  ingest rate (samples/s)",
        format!("{:.0}", samples as f64 / ingest_secs),
        "-".into(),
        "ingest_samples_per_sec",
        samples as f64 / ingest_secs,
    );
    row(
        "  chunk bytes / sample (raw)",
        format!("{:.3}", st.bytes_per_sample),
        "-".into(),
        "cluster_bytes_per_sample",
        st.bytes_per_sample,
    );
    row(
        "  bytes on disk (MiB)",
        format!("{:.1}", st.bytes_on_disk as f64 / 1_048_576.0),
        "-".into(),
        "bytes_on_disk",
        st.bytes_on_disk as f64,
    );
    row(
        "  resident memory growth (MiB)",
        format!(
            "{:.1}",
            rss_after.saturating_sub(rss_before) as f64 / 1_048_576.0
        ),
        "-".into(),
        "rss_growth_bytes",
        rss_after.saturating_sub(rss_before) as f64,
    );
    row(
        "  process RSS (MiB)",
        format!("{:.1}", rss_after as f64 / 1_048_576.0),
        "-".into(),
        "rss_bytes",
        rss_after as f64,
    );
    row(
        "  store's own heap estimate (MiB)",
        format!("{:.1}", st.bytes_in_memory as f64 / 1_048_576.0),
        "-".into(),
        "heap_estimate_bytes",
        st.bytes_in_memory as f64,
    );
    row(
        &format!("  select 1 day, one pod ({nseries} series, {points} points), median ms"),
        format!("{median:.2}"),
        "-".into(),
        "select_day_pod_ms",
        median,
    );
    drop(db);

    println!(
        "{:<62} {:>16} {:>16}",
        "metric", "mini-tsdb", "prometheus 2.42"
    );
    for (name, m, p) in &rows {
        println!("{name:<62} {m:>16} {p:>16}");
    }
    println!("(prometheus column: promtool tsdb create-blocks-from openmetrics on node 0's identical samples)");
    if let Some(path) = &a.json {
        json.extend(extra_json);
        let body = format!("{{{}}}\n", json.join(", "));
        std::fs::write(path, body).expect("write json");
    }
}
