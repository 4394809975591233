//! The result of a run: typed figures, a flat name/value/unit list, a human table and JSON.

use serde::Serialize;
use serde_json::{json, Value};

use crate::stats::LatencySummary;

/// The machine the run happened on (the server and the client share it).
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub mem_total_bytes: Option<u64>,
    /// 1-minute load average when the run started (other work on the machine skews figures).
    pub load_avg_1m_at_start: Option<f64>,
    pub kernel: Option<String>,
}

impl MachineInfo {
    pub fn detect() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024);
        let load_avg_1m_at_start = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total_bytes,
            load_avg_1m_at_start,
            kernel,
        }
    }
}

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    pub mini_bin: String,
    pub pods: usize,
    pub sequential_creates: usize,
    pub concurrent_creates: usize,
    pub concurrency: usize,
    pub watchers: usize,
    pub watch_updates: usize,
    pub get_samples: usize,
    pub list_samples: usize,
    pub settle_seconds: f64,
    /// Approximate size of one created pod as sent, in bytes.
    pub pod_json_bytes: usize,
    pub client: String,
}

/// A create phase.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub count: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Per-request latency seen by the client.
    pub latency: LatencySummary,
    /// Server CPU time (all threads) during the phase, per object created.
    pub server_cpu_ms_per_object: f64,
}

/// Watch delivery: time from a write to each watcher receiving its event.
#[derive(Debug, Clone, Serialize)]
pub struct WatchResult {
    /// Events expected: watchers × updates.
    pub expected: usize,
    pub delivered: usize,
    /// Deliveries that arrived before the write's response did (counted as 0 ms from ack).
    pub before_ack: usize,
    /// From the write's response (acknowledgement) to receipt.
    pub from_ack: Option<LatencySummary>,
    /// From sending the write to receipt (includes the write itself).
    pub from_send: Option<LatencySummary>,
    /// Latency of the updates themselves (merge PATCH).
    pub update_latency: Option<LatencySummary>,
}

/// Everything one `run_api_bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub machine: MachineInfo,
    pub config: ReportConfig,
    pub rss_idle_bytes: u64,
    pub create_sequential: Throughput,
    pub create_concurrent: Throughput,
    /// RSS after all pods were created (and the settle time).
    pub rss_loaded_bytes: u64,
    pub get: LatencySummary,
    pub list: LatencySummary,
    /// The unmeasured warm-up LIST (first full list after the creates).
    pub list_first_ms: f64,
    pub list_response_bytes: usize,
    /// Server CPU time (all threads) per measured LIST.
    pub list_server_cpu_ms: f64,
    /// RSS right after the LIST samples.
    pub rss_after_list_bytes: u64,
    pub watch: WatchResult,
    /// Bytes the server logged to stderr over the whole run.
    pub server_log_bytes: u64,
}

/// One figure: name, value, unit, and the target where there is one.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meets_target: Option<bool>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn m(name: &str, value: f64, unit: &'static str) -> Measurement {
    Measurement {
        name: name.to_string(),
        value,
        unit,
        target: None,
        meets_target: None,
    }
}

fn target(mut x: Measurement, text: &'static str, met: bool) -> Measurement {
    x.target = Some(text);
    x.meets_target = Some(met);
    x
}

fn latency(out: &mut Vec<Measurement>, name: &str, s: &LatencySummary) {
    out.push(m(&format!("{name}.p50"), s.p50_ms, "ms"));
    out.push(m(&format!("{name}.p99"), s.p99_ms, "ms"));
}

impl ApiBenchReport {
    /// The figures as a flat list (what the human table and `results` in JSON show).
    pub fn measurements(&self) -> Vec<Measurement> {
        let mut out = Vec::new();
        let seq = &self.create_sequential;
        out.push(m("create.sequential", seq.per_second, "objects/s"));
        latency(&mut out, "create.sequential.latency", &seq.latency);
        out.push(m(
            "create.sequential.server_cpu",
            seq.server_cpu_ms_per_object,
            "ms/object",
        ));
        let conc = &self.create_concurrent;
        out.push(target(
            m(
                &format!("create.concurrent_{}", self.config.concurrency),
                conc.per_second,
                "objects/s",
            ),
            ">= 3000",
            conc.per_second >= 3000.0,
        ));
        latency(&mut out, "create.concurrent.latency", &conc.latency);
        out.push(m(
            "create.concurrent.server_cpu",
            conc.server_cpu_ms_per_object,
            "ms/object",
        ));
        latency(&mut out, "get.pod", &self.get);
        let pods = self.config.pods;
        out.push(m(&format!("list.pods_{pods}.p50"), self.list.p50_ms, "ms"));
        out.push(target(
            m(&format!("list.pods_{pods}.p99"), self.list.p99_ms, "ms"),
            "<= 200 (10k pods)",
            self.list.p99_ms <= 200.0,
        ));
        out.push(m(
            &format!("list.pods_{pods}.first"),
            self.list_first_ms,
            "ms",
        ));
        out.push(m(
            &format!("list.pods_{pods}.server_cpu"),
            self.list_server_cpu_ms,
            "ms/list",
        ));
        out.push(m(
            &format!("list.pods_{pods}.response"),
            mib(self.list_response_bytes as u64),
            "MiB",
        ));
        let w = self.config.watchers;
        if let Some(s) = &self.watch.from_ack {
            latency(&mut out, &format!("watch.delivery_{w}_watchers"), s);
        }
        if let Some(s) = &self.watch.from_send {
            latency(
                &mut out,
                &format!("watch.write_to_delivery_{w}_watchers"),
                s,
            );
        }
        out.push(m(
            "watch.missed",
            (self.watch.expected - self.watch.delivered) as f64,
            "events",
        ));
        out.push(target(
            m("rss.idle", mib(self.rss_idle_bytes), "MiB"),
            "<= 40",
            mib(self.rss_idle_bytes) <= 40.0,
        ));
        out.push(m(
            &format!("rss.pods_{pods}"),
            mib(self.rss_loaded_bytes),
            "MiB",
        ));
        out.push(m(
            &format!("rss.pods_{pods}.after_list"),
            mib(self.rss_after_list_bytes),
            "MiB",
        ));
        out.push(m(
            "server.log",
            self.server_log_bytes as f64 / 1024.0,
            "KiB",
        ));
        out
    }

    /// A table a person can read and compare.
    pub fn print_human(&self) {
        let c = &self.config;
        let mc = &self.machine;
        println!("mini API benchmark  {}", self.timestamp);
        println!(
            "machine: {} cpus, {} RAM, load {} at start, kernel {} (client and server share it)",
            mc.cpus,
            mc.mem_total_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / (1 << 30) as f64))
                .unwrap_or_else(|| "?".into()),
            mc.load_avg_1m_at_start
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "?".into()),
            mc.kernel.as_deref().unwrap_or("?"),
        );
        println!(
            "config: pods={} sequential={} concurrent={} clients={} watchers={} updates={} GETs={} LISTs={} pod≈{}B",
            c.pods,
            c.sequential_creates,
            c.concurrent_creates,
            c.concurrency,
            c.watchers,
            c.watch_updates,
            c.get_samples,
            c.list_samples,
            c.pod_json_bytes,
        );
        println!("client: {}", c.client);
        println!();
        println!("{:<40} {:>12}  {:<10} target", "name", "value", "unit");
        for x in self.measurements() {
            let t = match (x.target, x.meets_target) {
                (Some(t), Some(true)) => format!("{t}  ok"),
                (Some(t), Some(false)) => format!("{t}  MISSED"),
                _ => String::new(),
            };
            println!("{:<40} {:>12.2}  {:<10} {}", x.name, x.value, x.unit, t);
        }
    }

    /// Stable JSON for comparing runs: `results` is the flat list, `details` everything.
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "api",
            "timestamp": self.timestamp,
            "machine": self.machine,
            "config": self.config,
            "results": self.measurements(),
            "details": self,
        })
    }
}
