//! clap types and dispatch of `mini check`, `mini status` and `mini killall`, and the quick
//! preflight run before `mini server` / `mini agent` start.

use std::net::IpAddr;
use std::path::PathBuf;

use mini_check::{CheckConfig, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Server,
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Role to check this host for.
    #[arg(long, value_enum, default_value = "server")]
    pub role: RoleArg,
    /// The data dir mini will use (its filesystem's free space is checked).
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// The server runs no node here (skips the node's checks and ports).
    #[arg(long, env = "MINI_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// Address the API server will listen on.
    #[arg(long, env = "MINI_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port of the API server.
    #[arg(long, env = "MINI_HTTPS_LISTEN_PORT", default_value_t = mini_check::API_PORT)]
    pub https_listen_port: u16,
    /// Port of the node API.
    #[arg(long, env = "MINI_KUBELET_PORT", default_value_t = mini_check::KUBELET_PORT)]
    pub kubelet_port: u16,
    /// CRI socket of an existing containerd (then containerd and runc are not looked for).
    #[arg(long, env = "MINI_CONTAINER_RUNTIME_ENDPOINT")]
    pub container_runtime_endpoint: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The data dir of the mini to report on.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Kubeconfig to ask the API with (default: the server's admin one, or the node's).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct KillallArgs {
    /// The data dir whose mini, containerd, pods, mounts and network state are removed;
    /// nothing of another data dir is touched.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
}

/// What the quick preflight before a start needs to know.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub role: Role,
    pub data_dir: PathBuf,
    /// `(bind address, port)` of the API server (servers only).
    pub api: Option<(IpAddr, u16)>,
    /// The node's kubelet port, when this process runs a node.
    pub node: Option<u16>,
    pub managed_containerd: bool,
}

fn check_config(p: &Preflight) -> CheckConfig {
    let mut config = CheckConfig::new(p.role, &p.data_dir);
    if let Some((address, port)) = p.api {
        config.set_api_port(address, port);
    }
    config = match p.node {
        Some(kubelet_port) => {
            config.set_node_ports(kubelet_port);
            config
        }
        None => config.without_node(),
    };
    config.managed_containerd = p.managed_containerd;
    config
}

/// The quick form of `mini check` run before every start: prints failures and warnings to
/// stderr and refuses to start only on failures that make the start certainly fail (see
/// `mini_check::Finding::blocks_start`: the API or node port taken, containerd missing for a
/// managed containerd, IP forwarding off and not settable).
pub fn preflight(p: &Preflight) -> anyhow::Result<()> {
    let mut config = check_config(p);
    config.quick = true;
    let report = mini_check::run(&mini_check::LinuxCheckHost, &config);
    for line in report.problems() {
        eprintln!("mini check: {line}");
    }
    let blocking = report.blocking();
    if let Some(first) = blocking.first() {
        anyhow::bail!(
            "not starting: {}: {}{} (run `mini check` for the whole report)",
            first.check,
            first.detail,
            first
                .fix
                .as_ref()
                .map(|f| format!("; {f}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`mini check | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

pub fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    let role = match args.role {
        RoleArg::Server => Role::Server,
        RoleArg::Agent => Role::Agent,
    };
    let config = check_config(&Preflight {
        role,
        data_dir: args.data_dir,
        api: (role == Role::Server).then_some((args.bind_address, args.https_listen_port)),
        node: (role == Role::Agent || !args.disable_agent).then_some(args.kubelet_port),
        managed_containerd: args.container_runtime_endpoint.is_none(),
    });
    let report = mini_check::run(&mini_check::LinuxCheckHost, &config);
    match args.output {
        OutputFormat::Table => out(&report.render_table()),
        OutputFormat::Json => out(&format!("{}\n", report.to_json())),
    }
    if report.has_failures() {
        anyhow::bail!(
            "{} check(s) failed: see the fix under each",
            report.count(mini_check::Level::Failure)
        );
    }
    Ok(())
}

pub fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let host = mini_check::LinuxCheckHost;
    let runtime = tokio::runtime::Runtime::new()?;
    let status = runtime.block_on(async {
        let role = if args.data_dir.join("server").exists() {
            Role::Server
        } else {
            Role::Agent
        };
        let kubeconfig = args
            .kubeconfig
            .clone()
            .unwrap_or_else(|| mini_check::status::kubeconfig_for(role, &args.data_dir));
        let cluster = mini_check::status::KubeCluster::from_kubeconfig(&kubeconfig)
            .await
            .map_err(|e| e.to_string());
        mini_check::status::gather(&host, &args.data_dir, cluster).await
    });
    match args.output {
        OutputFormat::Table => out(&status.render()),
        OutputFormat::Json => out(&format!("{}\n", status.to_json())),
    }
    if status.role.is_none() {
        anyhow::bail!("nothing to report: mini is not installed or has never run here");
    }
    if !status.healthy {
        anyhow::bail!("mini is not running or not healthy: see \"waiting\" above");
    }
    Ok(())
}

pub fn run_killall(args: KillallArgs) -> anyhow::Result<()> {
    let data_dir = if args.data_dir.is_absolute() {
        args.data_dir
    } else {
        std::env::current_dir()?.join(args.data_dir)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(mini_killall::killall_host(&data_dir))?;
    for line in &outcome.done {
        out(&format!("{line}\n"));
    }
    if outcome.done.is_empty() {
        out(&format!(
            "nothing of mini was running for {}\n",
            data_dir.display()
        ));
    }
    for line in &outcome.failed {
        eprintln!("mini killall: {line}");
    }
    if !outcome.failed.is_empty() {
        anyhow::bail!("{} step(s) failed (listed above)", outcome.failed.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(p: &Preflight) -> Vec<u16> {
        check_config(p)
            .ports
            .iter()
            .map(|p| p.address.port())
            .collect()
    }

    #[test]
    fn check_config_server_without_node_checks_only_its_api_port() {
        let p = Preflight {
            role: Role::Server,
            data_dir: PathBuf::from("/d"),
            api: Some(("127.0.0.1".parse().unwrap(), 7443)),
            node: None,
            managed_containerd: false,
        };
        assert_eq!(ports(&p), vec![7443]);
        assert!(!check_config(&p).node);
    }

    #[test]
    fn check_config_agent_uses_its_kubelet_port_and_no_api_port() {
        let p = Preflight {
            role: Role::Agent,
            data_dir: PathBuf::from("/d"),
            api: None,
            node: Some(11250),
            managed_containerd: true,
        };
        assert_eq!(ports(&p), vec![11250, 8472, 10053, 10053]);
    }

    #[test]
    fn check_config_server_port_zero_checks_no_api_port() {
        let p = Preflight {
            role: Role::Server,
            data_dir: PathBuf::from("/d"),
            api: Some(("0.0.0.0".parse().unwrap(), 0)),
            node: Some(10250),
            managed_containerd: true,
        };
        assert_eq!(ports(&p)[0], 10250);
    }
}
