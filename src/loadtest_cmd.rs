//! `mini loadtest run | ls | report | cancel` and the generator entrypoints (`generate`,
//! `merge`, hidden): clap types and the mapping onto `mini_loadtest`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// Load tests of applications in the cluster.
#[derive(Debug, clap::Subcommand)]
pub enum LoadtestCommand {
    /// Drive a Service, Ingress or URL from generator pods spread over the nodes, print a line
    /// per second and a summary; exits non-zero when the run fails or a threshold is missed:
    /// `mini loadtest run --target svc/web --rate 2000 --duration 60s --generators 3`.
    Run(RunArgs),
    /// List load tests and their results.
    Ls(LsArgs),
    /// Export a run: a self-contained HTML report, JSON, CSV or the HDR histogram log.
    Report(ReportArgs),
    /// Stop a running load test (its generator pods are deleted).
    Cancel(NameArgs),
    /// Run one generator in this process (generator pods use --from-env).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Merge generators' JSON results exactly (the benchmark uses it).
    #[command(hide = true)]
    Merge(MergeArgs),
}

/// Where the cluster is.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig (default: $KUBECONFIG, else <data-dir>/server/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir, for the default kubeconfig.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Namespace of the load test.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// What to send: shared by `run` and `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Requests per second over all generators (open model; the default model).
    #[arg(long, conflicts_with = "users")]
    pub rate: Option<u64>,
    /// Concurrent users over all generators (closed model).
    #[arg(long)]
    pub users: Option<u32>,
    /// How long to send (e.g. 60s, 5m; at most 1h).
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Linear ramp to the full rate or user count.
    #[arg(long, default_value = "0s")]
    pub ramp_up: String,
    /// Per-request timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Connections per generator (open model); sized from the rate when unset.
    #[arg(long)]
    pub connections: Option<u32>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// svc/NAME[:PORT][/PATH], ingress/NAME[/PATH] or an http:// URL.
    #[arg(long)]
    pub target: String,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Generator pods, one per node.
    #[arg(long, default_value_t = 1)]
    pub generators: u32,
    /// A pass/fail threshold, e.g. 'p99<200ms' or 'errors<1%' (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// The LoadTest's name (default: lt-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// Create the LoadTest and return without following it.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    pub name: String,
    /// html, json, csv or hdr.
    #[arg(long, default_value = "html")]
    pub format: String,
    /// Write to this file (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Run as a generator pod: the plan, server and token come from MINI_LOADTEST_CONFIG.
    #[arg(long, conflicts_with = "url")]
    pub from_env: bool,
    /// The http:// URL to load.
    #[arg(long, required_unless_present = "from_env")]
    pub url: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Write this generator's results (JSON, with per-second histograms) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write every latency in microseconds, one per line, here.
    #[arg(long)]
    pub raw: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Results files of `generate --out`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the merged results (JSON) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn spec_of(args: &RunArgs) -> anyhow::Result<mini_loadtest::spec::LoadTestSpec> {
    let l = &args.load;
    Ok(mini_loadtest::spec::LoadTestSpec {
        target: args.target.clone(),
        method: Some(l.method.clone()),
        headers: mini_loadtest::worker::parse_headers(&l.headers)?,
        body: l.body.clone(),
        rate: l.rate,
        users: l.users,
        duration: Some(l.duration.clone()),
        ramp_up: Some(l.ramp_up.clone()),
        generators: Some(args.generators),
        timeout: Some(l.timeout.clone()),
        connections: l.connections,
        thresholds: args.thresholds.clone(),
        cancel: false,
    })
}

async fn client(cluster: &ClusterArgs) -> anyhow::Result<kube::Client> {
    let path = cluster.kubeconfig.clone().unwrap_or_else(|| {
        mini_regclient::kubeconfig::default_kubeconfig(
            std::env::var("KUBECONFIG").ok().as_deref(),
            &cluster.data_dir,
        )
    });
    crate::kube_client(&path, "; pass --kubeconfig or set KUBECONFIG").await
}

fn plan_of(url: &str, l: &LoadArgs) -> anyhow::Result<mini_loadtest::generator::Plan> {
    let spec = mini_loadtest::spec::LoadTestSpec {
        target: url.to_string(),
        method: Some(l.method.clone()),
        headers: mini_loadtest::worker::parse_headers(&l.headers)?,
        body: l.body.clone(),
        rate: l.rate,
        users: l.users,
        duration: Some(l.duration.clone()),
        ramp_up: Some(l.ramp_up.clone()),
        timeout: Some(l.timeout.clone()),
        connections: l.connections,
        ..Default::default()
    };
    let v = mini_loadtest::spec::validate(&spec)?;
    Ok(mini_loadtest::generator::Plan {
        url: url.to_string(),
        method: v.method.clone(),
        headers: v.headers.clone(),
        body: v.body.clone(),
        load: mini_loadtest::controller::share(&v, 0),
        duration_ms: v.duration.as_millis() as u64,
        ramp_up_ms: v.ramp_up.as_millis() as u64,
        timeout_ms: v.timeout.as_millis() as u64,
    })
}

fn print_local(results: &mini_loadtest::results::RunResults) {
    let s = &results.summary;
    let l = &s.latency;
    println!(
        "requests {} errors {} rate {:.1}/s p50 {:.3}ms p90 {:.3}ms p99 {:.3}ms p99.9 {:.3}ms max {:.3}ms",
        s.requests, s.errors, s.achieved_rate, l.p50, l.p90, l.p99, l.p999, l.max
    );
}

/// Runs `mini loadtest …`.
pub fn run_loadtest(command: LoadtestCommand) -> anyhow::Result<()> {
    match command {
        LoadtestCommand::Generate(args) if args.from_env => {
            Ok(mini_loadtest::worker::run_from_env()?)
        }
        LoadtestCommand::Generate(args) => {
            let plan = plan_of(args.url.as_deref().unwrap_or_default(), &args.load)?;
            let (results, raw) = mini_loadtest::worker::run_local(&plan, args.raw.is_some())?;
            if let Some(path) = &args.out {
                std::fs::write(path, serde_json::to_vec(&results)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = &args.raw {
                let mut text = String::with_capacity(raw.len() * 8);
                for v in raw {
                    text.push_str(&v.to_string());
                    text.push('\n');
                }
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print_local(&results);
            Ok(())
        }
        LoadtestCommand::Merge(args) => {
            let mut parts = Vec::new();
            for f in &args.files {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                parts
                    .push(serde_json::from_slice(&bytes).with_context(|| {
                        format!("{} is not a generator's results", f.display())
                    })?);
            }
            let merged = mini_loadtest::worker::merge_results(&parts)?;
            if let Some(path) = &args.out {
                std::fs::write(path, serde_json::to_vec(&merged)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print_local(&merged);
            Ok(())
        }
        LoadtestCommand::Run(args) => {
            let spec = spec_of(&args)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let client = client(&args.cluster).await?;
                let mut out = std::io::stdout();
                let outcome = mini_loadtest::cli::run(
                    &client,
                    &args.cluster.namespace,
                    args.name.as_deref(),
                    spec,
                    !args.detach,
                    &mut out,
                )
                .await?;
                let _ = out.flush();
                if !outcome.passed {
                    anyhow::bail!(
                        "loadtest {} ended {}: see the summary above (mini loadtest report {})",
                        outcome.name,
                        outcome.phase,
                        outcome.name
                    );
                }
                Ok(())
            })
        }
        LoadtestCommand::Ls(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let client = client(&args.cluster).await?;
                let ns = (!args.all_namespaces).then_some(args.cluster.namespace.as_str());
                print!("{}", mini_loadtest::cli::list(&client, ns).await?);
                Ok(())
            })
        }
        LoadtestCommand::Report(args) => {
            let format = mini_loadtest::report::Format::parse(&args.format)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let client = client(&args.cluster).await?;
                let text = mini_loadtest::cli::report(
                    &client,
                    &args.cluster.namespace,
                    &args.name,
                    format,
                )
                .await?;
                match &args.output {
                    Some(path) => std::fs::write(path, text)
                        .with_context(|| format!("writing {}", path.display()))?,
                    None => print!("{text}"),
                }
                Ok(())
            })
        }
        LoadtestCommand::Cancel(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let client = client(&args.cluster).await?;
                mini_loadtest::cli::cancel(&client, &args.cluster.namespace, &args.name).await?;
                println!(
                    "loadtest {}/{} cancelled",
                    args.cluster.namespace, args.name
                );
                Ok(())
            })
        }
    }
}
