//! `mini-bench-podstart`: pod start latency through the API next to raw CRI time on one real
//! node, and the node agent's idle RSS/CPU; prints a table and writes the JSON report. Run by
//! `scripts/bench.sh agent`, which sets up the node (network namespace, server, agent).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mini_bench::podstart::{run_pod_start_bench, PodStartOptions};

const USAGE: &str = "usage: mini-bench-podstart --kubeconfig FILE --node NAME --cri-socket SOCK \
--agent-pid PID [--image IMAGE] [--pods N] [--idle-secs N] [--out FILE]";

fn main() -> anyhow::Result<()> {
    let mut kubeconfig = None;
    let mut node = None;
    let mut cri_socket = None;
    let mut agent_pid = None;
    let mut image = "mini.local/busybox:1.0".to_string();
    let mut pods = 20usize;
    let mut idle_secs = 30u64;
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--node" => node = Some(value()?),
            "--cri-socket" => cri_socket = Some(PathBuf::from(value()?)),
            "--agent-pid" => agent_pid = Some(value()?.parse::<u32>().context("--agent-pid")?),
            "--image" => image = value()?,
            "--pods" => pods = value()?.parse().context("--pods")?,
            "--idle-secs" => idle_secs = value()?.parse().context("--idle-secs")?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let options = PodStartOptions {
        kubeconfig: kubeconfig.context("--kubeconfig is required")?,
        node: node.context("--node is required")?,
        cri_socket: cri_socket.context("--cri-socket is required")?,
        agent_pid: agent_pid.context("--agent-pid is required")?,
        image,
        pods,
        idle_window: Duration::from_secs(idle_secs),
        namespace: "default".into(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run_pod_start_bench(options))?;
    report.print_human();
    let out = out.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        PathBuf::from(format!("target/bench-results/podstart-{stamp}.json"))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json())?;
    std::fs::write(&out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!("\nJSON: {}", out.display());
    Ok(())
}
