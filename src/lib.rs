//! The `mini` command line: clap types and dispatch to the `pkg/*` crates.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mini",
    version,
    about = "a single-binary Kubernetes distribution"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: API server over the embedded store.
    Server(ServerArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the server keeps its store, certificates and token.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "MINI_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, env = "MINI_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address other nodes use to reach this server.
    #[arg(long, env = "MINI_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,
    /// Extra names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san", env = "MINI_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Pod network (node podCIDRs are carved from it).
    #[arg(long, env = "MINI_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service ClusterIP range.
    #[arg(long, env = "MINI_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Join token secret (default: generated once and kept in the data dir).
    #[arg(long, env = "MINI_TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the join token secret.
    #[arg(long, env = "MINI_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Where to write the admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "MINI_WRITE_KUBECONFIG")]
    pub write_kubeconfig: Option<PathBuf>,
    /// File mode of the kubeconfig, in octal.
    #[arg(long, env = "MINI_WRITE_KUBECONFIG_MODE", default_value = "600")]
    pub write_kubeconfig_mode: String,
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let mode = u32::from_str_radix(&args.write_kubeconfig_mode, 8).map_err(|_| {
        anyhow::anyhow!(
            "--write-kubeconfig-mode {:?} is not an octal file mode",
            args.write_kubeconfig_mode
        )
    })?;
    let mut config = mini_server::ServerConfig::new(args.data_dir);
    config.bind_address = args.bind_address;
    config.https_port = args.https_listen_port;
    config.advertise_address = args.advertise_address;
    config.tls_sans = args.tls_san;
    config.cluster_cidr = args.cluster_cidr;
    config.service_cidr = args.service_cidr;
    config.token = args.token;
    config.token_file = args.token_file;
    config.write_kubeconfig = args.write_kubeconfig;
    config.write_kubeconfig_mode = mode;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (started, handle) = mini_server::start(config, shutdown.clone()).await?;
        tracing::info!(address = %started.address, kubeconfig = %started.kubeconfig.display(), "mini server ready");
        println!("mini server listening on https://{}", started.address);
        println!("kubeconfig: {}", started.kubeconfig.display());
        println!("join token: {}", started.join_token);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            stop.cancel();
        });
        handle.await??;
        Ok(())
    })
}

/// Runs `mini` with the given arguments and returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Server(args) => run_server(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mini: {e:#}");
            ExitCode::FAILURE
        }
    }
}
