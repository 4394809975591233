//! `mini-bench-api`: runs the API benchmark against a fresh `mini server`, prints a table
//! and writes the JSON report (default `target/bench-results/api-<timestamp>.json`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mini_bench::{run_api_bench, ApiBenchOptions};

const USAGE: &str = "usage: mini-bench-api [--mini PATH] [--quick] [--pods N] [--creates N] \
[--concurrency N] [--watchers N] [--samples N] [--watch-updates N] [--settle-secs N] [--out FILE]
[--server-arg ARG]...

  --quick        2,000 pods, 500 sequential creates, 100 GETs, 20 watch updates
  --server-arg   an extra `mini server` flag (repeatable), e.g. --server-arg=--datastore-endpoint=URL";

fn parse_num(flag: &str, value: Option<String>) -> anyhow::Result<usize> {
    let v = value.with_context(|| format!("{flag} needs a value"))?;
    v.replace('_', "")
        .parse()
        .with_context(|| format!("{flag} {v:?} is not a number"))
}

fn main() -> anyhow::Result<()> {
    let mut opts = ApiBenchOptions::default();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mini" => opts.mini_bin = args.next().context("--mini needs a path")?.into(),
            "--quick" => {
                opts.pods = 2_000;
                opts.creates = 500;
                opts.samples = 100;
                opts.watch_updates = 20;
            }
            "--pods" => opts.pods = parse_num(&arg, args.next())?,
            "--creates" => opts.creates = parse_num(&arg, args.next())?,
            "--concurrency" => opts.concurrency = parse_num(&arg, args.next())?,
            "--watchers" => opts.watchers = parse_num(&arg, args.next())?,
            "--samples" => opts.samples = parse_num(&arg, args.next())?,
            "--watch-updates" => opts.watch_updates = parse_num(&arg, args.next())?,
            "--settle-secs" => {
                opts.settle = Duration::from_secs(parse_num(&arg, args.next())? as u64)
            }
            "--out" => out = Some(args.next().context("--out needs a path")?.into()),
            "--server-arg" => opts
                .server_args
                .push(args.next().context("--server-arg needs a value")?),
            other if other.starts_with("--server-arg=") => opts
                .server_args
                .push(other["--server-arg=".len()..].to_string()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    tracing_subscriber_init();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run_api_bench(opts))?;
    report.print_human();
    let out = out.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        PathBuf::from(format!("target/bench-results/api-{stamp}.json"))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json())?;
    std::fs::write(&out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!("\nJSON: {}", out.display());
    Ok(())
}

/// Progress lines on stderr (`MINI_BENCH_LOG`, default info).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINI_BENCH_LOG")
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
