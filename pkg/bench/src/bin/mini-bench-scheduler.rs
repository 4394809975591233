//! `mini-bench-scheduler`: scheduler throughput, Deployment scale-up and RSS over simulated
//! nodes against fresh `mini server`s; prints a table and writes the JSON report (default
//! `target/bench-results/scheduler-<timestamp>.json`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mini_bench::scheduler::{run_scheduler_bench, SchedulerBenchOptions};

const USAGE: &str = "usage: mini-bench-scheduler [--mini PATH] [--quick] [--nodes N] [--pods N] \
[--scale N] [--rss-pods N] [--concurrency N] [--lease-interval-secs N] [--timeout-secs N] \
[--settle-secs N] [--out FILE]

  defaults: 1,000 nodes, 10,000 pods, scale 0→1,000, 30,000 pods for RSS, 16 creators,
            leases renewed every 20 s (kubelet: 10 s; node grace period 40 s)
  --quick   200 nodes, 2,000 pods, scale 0→500, 6,000 pods for RSS
  --rss-pods 0 skips the fill-up and RSS reading";

fn parse_num(flag: &str, value: Option<String>) -> anyhow::Result<usize> {
    let v = value.with_context(|| format!("{flag} needs a value"))?;
    v.replace(['_', ','], "")
        .parse()
        .with_context(|| format!("{flag} {v:?} is not a number"))
}

fn main() -> anyhow::Result<()> {
    let mut opts = SchedulerBenchOptions::default();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mini" => opts.mini_bin = args.next().context("--mini needs a path")?.into(),
            "--quick" => {
                let q = SchedulerBenchOptions::quick();
                (opts.nodes, opts.pods, opts.scale, opts.rss_pods) =
                    (q.nodes, q.pods, q.scale, q.rss_pods);
            }
            "--nodes" => opts.nodes = parse_num(&arg, args.next())?,
            "--pods" => opts.pods = parse_num(&arg, args.next())?,
            "--scale" => opts.scale = parse_num(&arg, args.next())?,
            "--rss-pods" => opts.rss_pods = parse_num(&arg, args.next())?,
            "--concurrency" => opts.concurrency = parse_num(&arg, args.next())?,
            "--lease-interval-secs" => {
                opts.lease_interval = Duration::from_secs(parse_num(&arg, args.next())? as u64)
            }
            "--timeout-secs" => {
                opts.phase_timeout = Duration::from_secs(parse_num(&arg, args.next())? as u64)
            }
            "--settle-secs" => {
                opts.settle = Duration::from_secs(parse_num(&arg, args.next())? as u64)
            }
            "--out" => out = Some(args.next().context("--out needs a path")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    tracing_subscriber_init();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run_scheduler_bench(opts))?;
    report.print_human();
    let out = out.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        PathBuf::from(format!("target/bench-results/scheduler-{stamp}.json"))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json())?;
    std::fs::write(&out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!("\nJSON: {}", out.display());
    Ok(())
}

/// Progress lines on stderr (`MINI_BENCH_LOG`, default info; the simulated nodes log too).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINI_BENCH_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
