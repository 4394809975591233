//! The `mini` command line: clap types and dispatch to the `pkg/*` crates.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod certificate_cmd;
pub mod check_cmd;
pub mod datastore_cmd;
pub mod images_cmd;
pub mod install_cmd;
pub mod loadtest_cmd;
pub mod observe_cmd;
pub mod registry_cmd;
pub mod secrets_cmd;
pub mod snapshot_cmd;
pub mod token_cmd;
pub mod user_cmd;

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
    /// Run the control plane: API server over the embedded store, scheduler, controllers.
    Server(Box<ServerArgs>),
    /// Join a cluster as a node: run containerd and the kubelet, serve the node API.
    Agent(Box<AgentArgs>),
    /// Remove what the agent programmed into this host's network (the VXLAN device, the
    /// mini0 bridge, mini's nftables table); run after stopping the agent.
    Cleanup,
    /// Search the container logs the server keeps (`mini logs search`).
    #[command(subcommand)]
    Logs(observe_cmd::LogsCommand),
    /// Images in the cluster's registry (ls, push, rm, import), or this node's containerd.
    #[command(subcommand)]
    Images(images_cmd::ImagesCommand),
    /// Snapshot a running container's filesystem changes as a new image in the cluster's
    /// registry: `mini commit POD [-c CONTAINER] REPOSITORY:TAG`.
    Commit(registry_cmd::CommitArgs),
    /// Preflight of this host for the server or agent role: kernel modules, cgroups, swap,
    /// ports, containerd and runc, data dir space, time sync, IP forwarding.
    Check(check_cmd::CheckArgs),
    /// Role, health, datastore, certificate expiry, nodes and what is waiting.
    Status(check_cmd::StatusArgs),
    /// Stop mini and everything it runs on this host (its containerd, every pod), unmount,
    /// and remove its interfaces, nftables table, pod network namespaces and cgroups.
    Killall(check_cmd::KillallArgs),
    /// Load-testing tools.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Load tests of applications in the cluster: run, ls, report, cancel.
    #[command(subcommand)]
    Loadtest(loadtest_cmd::LoadtestCommand),
    /// Bootstrap join tokens (expiring, stored as bootstrap.kubernetes.io/token Secrets).
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Air-gap bundles: the binary, images and packages in one file.
    #[command(subcommand)]
    Bundle(token_cmd::BundleCommand),
    /// Secrets encryption at rest on the running server: status, rotate-keys, reencrypt.
    #[command(subcommand)]
    SecretsEncrypt(secrets_cmd::SecretsEncryptCommand),
    /// Install this binary as a systemd service (server, or agent with --server/--token) and
    /// wait until it is Ready; re-running changes only what differs.
    Install(install_cmd::InstallArgs),
    /// Stop mini (`mini killall`) and remove its binary, units, config and data.
    Uninstall(install_cmd::UninstallArgs),
    /// People's accounts (add, passwd, rm, ls): Kubernetes users with RBAC roles who log in
    /// with a password.
    #[command(subcommand)]
    User(user_cmd::UserCommand),
    /// Certificates: list them with their expiry (check), renew now (rotate), rotate the CA.
    #[command(subcommand)]
    Certificate(certificate_cmd::CertificateCommand),
    /// Datastore snapshots: save (from the running server), ls, delete, prune, restore (into
    /// a stopped cluster).
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
}

/// How this machine runs as a node: shared by `mini agent` and the agent inside `mini server`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Node name (default: the name of the last run, else the hostname).
    #[arg(long, env = "MINI_NODE_NAME")]
    pub node_name: Option<String>,
    /// Node IP (default: the address of the interface that routes to the server).
    #[arg(long, env = "MINI_NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Node label key=value (repeatable).
    #[arg(long = "node-label", env = "MINI_NODE_LABEL", value_delimiter = ',')]
    pub node_label: Vec<String>,
    /// Node taint key=value:Effect (repeatable).
    #[arg(long = "node-taint", env = "MINI_NODE_TAINT", value_delimiter = ',')]
    pub node_taint: Vec<String>,
    /// CRI socket of an existing containerd (default: run a private containerd).
    #[arg(long, env = "MINI_CONTAINER_RUNTIME_ENDPOINT")]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Cluster DNS service IP handed to pods.
    #[arg(long, env = "MINI_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,
    /// Cluster domain.
    #[arg(long, env = "MINI_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Port of the node API (logs, exec, port-forward, stats) the API server calls.
    #[arg(long, env = "MINI_KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Stop every pod when the agent stops (default: pods keep running).
    #[arg(long, env = "MINI_DRAIN_ON_STOP")]
    pub drain_on_stop: bool,
    /// resolv.conf for pods with dnsPolicy Default (default: /etc/resolv.conf).
    #[arg(long, env = "MINI_RESOLV_CONF")]
    pub resolv_conf: Option<PathBuf>,
    /// Upstream registry host (e.g. docker.io) whose images are pulled through the cluster registry
    /// first, its own server staying the fallback (repeatable; replaces the default docker.io,
    /// registry.k8s.io, ghcr.io, quay.io; `none` mirrors nothing).
    #[arg(
        long = "registry-mirror",
        env = "MINI_REGISTRY_MIRROR",
        value_delimiter = ','
    )]
    pub registry_mirror: Vec<String>,
    /// Do not enforce NetworkPolicies on this node (and remove mini's policy table).
    #[arg(long, env = "MINI_DISABLE_NETWORK_POLICY")]
    pub disable_network_policy: bool,
    /// Directory for local-path volumes (default: <data-dir>/storage).
    #[arg(long, env = "MINI_LOCAL_PATH_DIR")]
    pub local_path_dir: Option<PathBuf>,
    /// Port of the built-in ingress proxy for HTTP/1.1 and h2c (0: do not listen).
    #[arg(long, env = "MINI_INGRESS_HTTP_PORT", default_value_t = 80)]
    pub ingress_http_port: u16,
    /// Port of the built-in ingress proxy for HTTPS, HTTP/2 and HTTP/1.1 (0: do not listen).
    #[arg(long, env = "MINI_INGRESS_HTTPS_PORT", default_value_t = 443)]
    pub ingress_https_port: u16,
    /// Rotate a container's log file past this size (e.g. 10Mi), as the kubelet's
    /// containerLogMaxSize; the rotated files are shipped to the server first.
    #[arg(long, env = "MINI_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi", value_parser = observe_cmd::parse_size)]
    pub container_log_max_size: u64,
    /// Log files kept per container, the current one included (containerLogMaxFiles).
    #[arg(long, env = "MINI_CONTAINER_LOG_MAX_FILES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub container_log_max_files: u32,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// URL of the API server, e.g. https://10.0.0.1:6443 (the other servers are learned from
    /// the `kubernetes` Endpoints).
    #[arg(long, env = "MINI_URL")]
    pub server: String,
    /// Loopback port of the client-side load balancer every client of the agent goes through
    /// to reach the servers (0: any free port; taken, another one is used).
    #[arg(long, env = "MINI_LB_SERVER_PORT", default_value_t = mini_agent::DEFAULT_LB_PORT)]
    pub lb_server_port: u16,
    /// Join token (K10<ca hash>::server:<secret>, printed by `mini server`).
    #[arg(long, env = "MINI_TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the join token.
    #[arg(long, env = "MINI_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Where the agent keeps its certificates, containerd, pods and logs.
    #[arg(long, env = "MINI_DATA_DIR", default_value = "/var/lib/mini")]
    pub data_dir: PathBuf,
    /// Interface whose IPv4 address carries the VXLAN overlay (default: the node IP's).
    #[arg(long, env = "MINI_FLANNEL_IFACE")]
    pub flannel_iface: Option<String>,
    #[command(flatten)]
    pub config_file: install_cmd::ConfigFileArgs,
    /// Pod network of the cluster (must match the server's --cluster-cidr).
    #[arg(long, env = "MINI_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service network of the cluster (must match the server's --service-cidr).
    #[arg(long, env = "MINI_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Register simulated nodes (no containers run): they hold leases, report capacity and
    /// mark pods bound to them Running with made-up IPs. For scale tests only.
    Nodes(SimNodesArgs),
    /// Post the monitoring history simulated nodes and pods would have sent (for benchmarks of
    /// the metrics store): `mini sim samples --nodes 50 --pods 30 --history 24h`.
    Samples(SimSamplesArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimSamplesArgs {
    /// Kubeconfig of the cluster (an administrator's: it posts for nodes that do not exist).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 50)]
    pub nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// How far back the history starts (it ends now).
    #[arg(long, default_value = "24h", value_parser = token_cmd::parse_ttl)]
    pub history: std::time::Duration,
    /// Time between samples.
    #[arg(long, default_value = "10s", value_parser = token_cmd::parse_ttl)]
    pub interval: std::time::Duration,
    /// Node names are <prefix><index>.
    #[arg(long, default_value = "sim-node-")]
    pub prefix: String,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// After the history, keep sending every interval in real time for this long, as agents do.
    #[arg(long, default_value = "0", value_parser = token_cmd::parse_ttl)]
    pub live: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct SimNodesArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    pub count: usize,
    /// Node names are <prefix><index>.
    #[arg(long, default_value = "sim-node-")]
    pub prefix: String,
    /// First index (to run several groups side by side).
    #[arg(long, default_value_t = 0)]
    pub first_index: usize,
    /// Allocatable CPU per node.
    #[arg(long, default_value = "8")]
    pub cpu: String,
    /// Allocatable memory per node.
    #[arg(long, default_value = "32Gi")]
    pub memory: String,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Seconds between lease renewals.
    #[arg(long, default_value_t = 10)]
    pub lease_interval: u64,
    /// Extra node labels, key=value (repeatable).
    #[arg(long = "label", value_delimiter = ',')]
    pub labels: Vec<String>,
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
    /// Also serve the web console (and the API its pages call) on this HTTPS port.
    #[arg(long, env = "MINI_CONSOLE_PORT")]
    pub console_port: Option<u16>,
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
    /// Join the cluster of this server (https://FIRST:6443) as one more server: its CA, keys and
    /// keyring come from the shared datastore (--datastore-endpoint), opened with --token.
    #[arg(long = "server", env = "MINI_SERVER_URL")]
    pub join_server: Option<String>,
    /// Where to write the admin kubeconfig (default: <data-dir>/server/admin.kubeconfig).
    #[arg(long, env = "MINI_WRITE_KUBECONFIG")]
    pub write_kubeconfig: Option<PathBuf>,
    /// File mode of the kubeconfig, in octal.
    #[arg(long, env = "MINI_WRITE_KUBECONFIG_MODE", default_value = "600")]
    pub write_kubeconfig_mode: String,
    /// Components not to run: `scheduler`, `controllers`, `agent`, `registry`, `observe`,
    /// `console` (repeatable);
    /// any other NAME skips the manifest NAME.yaml of <data-dir>/server/manifests (bundled:
    /// `ingress`, `local-storage`), removing what it applied.
    #[arg(long, env = "MINI_DISABLE", value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Don't run the scheduler.
    #[arg(long, env = "MINI_DISABLE_SCHEDULER")]
    pub disable_scheduler: bool,
    /// Don't run a node agent (containerd, kubelet) in the server process.
    #[arg(long, env = "MINI_DISABLE_AGENT")]
    pub disable_agent: bool,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub datastore: datastore_cmd::DatastoreArgs,
    #[command(flatten)]
    pub registry: registry_cmd::RegistryArgs,
    #[command(flatten)]
    pub observe: observe_cmd::ObserveArgs,
    #[command(flatten)]
    pub sessions: user_cmd::SessionArgs,
    /// A controller not to run (repeatable), e.g. `deployment`, `garbagecollector`.
    #[arg(
        long = "disable-controller",
        env = "MINI_DISABLE_CONTROLLER",
        value_delimiter = ','
    )]
    pub disable_controller: Vec<String>,
    #[command(flatten)]
    pub config_file: install_cmd::ConfigFileArgs,
    /// Seal Secrets in the datastore (AES-GCM; keys in
    /// <data-dir>/server/cred/encryption-config.json); `--secrets-encryption=false` writes new
    /// values plain and still reads sealed ones.
    #[arg(
        long,
        env = "MINI_SECRETS_ENCRYPTION",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub secrets_encryption: bool,
    /// How long leaf certificates are issued for (e.g. 2m for tests, default one year); they
    /// are renewed online at two thirds of it.
    #[arg(long, env = "MINI_CERT_LIFETIME", default_value = "365d", value_parser = mini_certs::parse_lifetime)]
    pub cert_lifetime: std::time::Duration,
    #[command(flatten)]
    pub snapshots: snapshot_cmd::SnapshotServerArgs,
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
    config.console_port = args.console_port;
    config.advertise_address = args.advertise_address;
    config.tls_sans = args.tls_san;

    config.token = args.token;
    config.token_file = args.token_file;
    config.join_server = args.join_server;
    config.write_kubeconfig = args.write_kubeconfig;
    config.write_kubeconfig_mode = mode;
    let mut disable_agent = false;
    let mut disable_registry = false;
    let mut disable_observe = false;
    for component in &args.disable {
        match component.as_str() {
            "scheduler" => config.disable_scheduler = true,
            "controllers" => config.disable_controllers = true,
            "agent" => disable_agent = true,
            "registry" => disable_registry = true,
            "observe" => disable_observe = true,
            "console" => config.console = false,
            // like k3s: any other name is a manifest (`ingress`, `local-storage` or a user file)
            other if !other.is_empty() => config.disabled_manifests.push(other.to_string()),
            other => {
                anyhow::bail!(
                    "--disable {other:?}: known components are scheduler, controllers, agent, registry, observe, console, and manifest names such as ingress, local-storage"
                )
            }
        }
    }
    config.disable_scheduler |= args.disable_scheduler;
    if !(disable_agent || args.disable_agent) {
        // URL and token are filled in by the server once it listens
        let mut agent = mini_agent::AgentConfig::new(String::new(), String::new());
        agent.data_dir = config.data_dir.clone();
        agent.cluster_cidr = config.cluster_cidr.clone();
        agent.service_cidr = config.service_cidr.clone();
        apply_node_args(&mut agent, args.node)?;
        config.agent = Some(agent);
    }
    config.disabled_controllers = args.disable_controller;
    config.secrets_encryption = args.secrets_encryption;
    if args.cert_lifetime < std::time::Duration::from_secs(60) {
        anyhow::bail!("--cert-lifetime must be at least 1m");
    }
    config.cert_lifetime = args.cert_lifetime;
    config.snapshots = snapshot_cmd::snapshot_settings(&args.snapshots)?;
    config.datastore_compact_interval = args.snapshots.datastore_compact_interval;
    config.datastore = datastore_cmd::etcd_config(args.datastore)?;
    config.registry = if disable_registry {
        None
    } else {
        Some(registry_cmd::registry_settings(args.registry).map_err(anyhow::Error::msg)?)
    };
    config.observe = (!disable_observe).then(|| observe_cmd::retention(&args.observe));
    config.sessions = user_cmd::session_limits(&args.sessions)?;
    check_cmd::preflight(&check_cmd::Preflight {
        role: mini_check::Role::Server,
        data_dir: config.data_dir.clone(),
        api: Some((config.bind_address, config.https_port)),
        node: config.agent.as_ref().map(|a| a.kubelet_port),
        managed_containerd: config
            .agent
            .as_ref()
            .is_some_and(|a| a.container_runtime == mini_agent::ContainerRuntimeMode::Managed),
    })?;
    let notifier = std::sync::Arc::new(mini_install::SystemdNotifier::from_env());
    if let Some(agent) = config.agent.as_mut() {
        agent.progress = Some(status_hook(notifier.clone(), false));
    }
    // before the runtime's threads exist: large buffers back to the kernel when freed, one arena
    mini_sys::alloc::tune_allocator();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        mini_install::Notifier::status(notifier.as_ref(), "starting the API server");
        let (started, handle) = mini_server::start(config, shutdown.clone()).await?;
        mini_install::Notifier::ready(notifier.as_ref());
        tracing::info!(address = %started.address, kubeconfig = %started.kubeconfig.display(), "mini server ready");
        println!("mini server listening on https://{}", started.address);
        println!("kubeconfig: {}", started.kubeconfig.display());
        println!("join token: {}", started.join_token);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        handle.await??;
        Ok(())
    })
}

fn run_sim_nodes(args: SimNodesArgs) -> anyhow::Result<()> {
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {l:?}: expected key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let config = mini_simnode::SimConfig {
        prefix: args.prefix,
        first_index: args.first_index,
        count: args.count,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        lease_interval: std::time::Duration::from_secs(args.lease_interval.max(1)),
        labels,
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube_client(&args.kubeconfig, "").await?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        mini_simnode::run(client, config, shutdown).await?;
        Ok(())
    })
}

fn run_sim_samples(args: SimSamplesArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be more than 0s");
    }
    let load = mini_simnode::samples::SampleLoad {
        prefix: args.prefix,
        nodes: args.nodes,
        pods_per_node: args.pods,
        history: args.history,
        interval: args.interval,
        concurrency: args.concurrency,
        live: args.live,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube_client(&args.kubeconfig, "").await?;
        let report = mini_simnode::samples::post_history(&client, &load).await?;
        println!(
            "series={} samples={} requests={} seconds={:.1} samples_per_second={:.0}",
            report.series,
            report.samples,
            report.requests,
            report.elapsed.as_secs_f64(),
            report.samples as f64 / report.elapsed.as_secs_f64().max(1e-9)
        );
        Ok(())
    })
}

/// Copies the node flags into an agent config.
fn apply_node_args(config: &mut mini_agent::AgentConfig, args: NodeArgs) -> anyhow::Result<()> {
    config.node_name = args.node_name;
    config.node_ip = args.node_ip;
    config.node_labels = mini_agent::parse_node_labels(&args.node_label)?;
    config.node_taints = mini_agent::parse_node_taints(&args.node_taint)?;
    if let Some(socket) = args.container_runtime_endpoint {
        let socket = socket
            .to_str()
            .and_then(|s| s.strip_prefix("unix://"))
            .map(PathBuf::from)
            .unwrap_or(socket);
        config.container_runtime = mini_agent::ContainerRuntimeMode::External(socket);
    }
    config.cluster_dns = args.cluster_dns;
    config.cluster_domain = args.cluster_domain;
    config.kubelet_port = args.kubelet_port;
    config.drain_on_stop = args.drain_on_stop;
    config.resolv_conf = args.resolv_conf;
    config.registry_mirrors = mini_agent::parse_registry_mirrors(&args.registry_mirror)?;
    config.disable_network_policy = args.disable_network_policy;
    config.local_path_dir = args.local_path_dir;
    config.ingress_http_port = args.ingress_http_port;
    config.ingress_https_port = args.ingress_https_port;
    config.container_log_max_bytes = args.container_log_max_size;
    config.container_log_max_files = args.container_log_max_files as usize;

    Ok(())
}

fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let token = match (args.token, args.token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("--token or --token-file is required to join"),
    };
    let mut config = mini_agent::AgentConfig::new(args.server, token);
    config.data_dir = args.data_dir;
    apply_node_args(&mut config, args.node)?;
    config.cluster_cidr = args.cluster_cidr;
    config.service_cidr = args.service_cidr;
    config.flannel_iface = args.flannel_iface;
    config.load_balancer = Some(args.lb_server_port);
    check_cmd::preflight(&check_cmd::Preflight {
        role: mini_check::Role::Agent,
        data_dir: config.data_dir.clone(),
        api: None,
        node: Some(config.kubelet_port),
        managed_containerd: config.container_runtime == mini_agent::ContainerRuntimeMode::Managed,
    })?;
    let notifier = std::sync::Arc::new(mini_install::SystemdNotifier::from_env());
    config.progress = Some(status_hook(notifier, true));
    // before the runtime's threads exist: large buffers back to the kernel when freed, one arena
    mini_sys::alloc::tune_allocator();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        mini_agent::run(config, shutdown).await?;
        Ok(())
    })
}

/// Agent start-up steps as systemd `STATUS=` lines; with `ready`, `READY=1` once the node is
/// up (`mini server` sends its own READY when its API answers).
fn status_hook(
    notifier: std::sync::Arc<mini_install::SystemdNotifier>,
    ready: bool,
) -> mini_agent::ProgressHook {
    use mini_install::Notifier;
    mini_agent::ProgressHook(std::sync::Arc::new(move |step| match step {
        mini_agent::AgentProgress::Ready if ready => notifier.ready(),
        step => notifier.status(&step.to_string()),
    }))
}

fn run_cleanup() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(mini_agent::cleanup_network())?;
    println!("removed mini.1, mini0 and the mini nftables table");
    Ok(())
}

/// A client for the cluster of the kubeconfig at `path`; `hint` (empty, or `; what to do`)
/// follows the message when the file cannot be read.
/// A client with `kubeconfig`, else the server's admin kubeconfig under `data_dir` (the
/// administration commands: `mini token`, `mini user`, `mini secrets-encrypt`).
pub(crate) async fn admin_client(
    kubeconfig: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<kube::Client> {
    let path = kubeconfig
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join("server").join("admin.kubeconfig"));
    kube_client(
        &path,
        "; pass --kubeconfig or run on the server (the admin kubeconfig)",
    )
    .await
}

pub(crate) async fn kube_client(
    path: &std::path::Path,
    hint: &str,
) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}{hint}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// Runs `mini` with the given arguments and returns the process exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match install_cmd::with_config_files(args.into_iter().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("mini: {e:#}");
            return ExitCode::FAILURE;
        }
    };
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
    // the host tools print their own report: only their warnings are logged
    let default_log = match cli.command {
        Command::Check(_)
        | Command::Status(_)
        | Command::Killall(_)
        | Command::Logs(_)
        | Command::Loadtest(_) => "warn,kube_client=off",
        _ => "info,hickory_server=warn,hickory_proto=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINI_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Agent(args) => run_agent(*args),
        Command::Cleanup => run_cleanup(),
        Command::Images(cmd) => images_cmd::run_images(cmd),
        Command::Commit(args) => registry_cmd::run_commit(args),
        Command::Sim(SimCommand::Nodes(args)) => run_sim_nodes(args),
        Command::Sim(SimCommand::Samples(args)) => run_sim_samples(args),
        Command::Install(args) => install_cmd::run_install(args),
        Command::Uninstall(args) => install_cmd::run_uninstall(args),
        Command::Check(args) => check_cmd::run_check(args),
        Command::Status(args) => check_cmd::run_status(args),
        Command::Killall(args) => check_cmd::run_killall(args),
        Command::Token(cmd) => token_cmd::run_token(cmd),
        Command::Bundle(cmd) => token_cmd::run_bundle(cmd),
        Command::SecretsEncrypt(cmd) => secrets_cmd::run_secrets_encrypt(cmd),
        Command::Certificate(cmd) => certificate_cmd::run_certificate(cmd),
        Command::Logs(cmd) => observe_cmd::run_logs(cmd),
        Command::User(cmd) => user_cmd::run_user(cmd),
        Command::Snapshot(cmd) => snapshot_cmd::run_snapshot(cmd),
        Command::Loadtest(cmd) => loadtest_cmd::run_loadtest(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mini: {e:#}");
            ExitCode::FAILURE
        }
    }
}
