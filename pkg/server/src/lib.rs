//! `mini server`: reads its config, ensures the PKI and join token, opens the store, and runs
//! the API server. The start order below is the order of this file's `run`.

mod compaction;
mod registry;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mini_apiserver::{ApiServer, ApiServerConfig, Ipv4Cidr};
use mini_certs::SubjectAltNames;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything `mini server` is told by its flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port (tests).
    pub https_port: u16,
    pub advertise_address: Option<IpAddr>,
    pub tls_sans: Vec<String>,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub write_kubeconfig: Option<PathBuf>,
    pub write_kubeconfig_mode: u32,
    /// Don't run the scheduler.
    pub disable_scheduler: bool,
    /// Don't run any controller.
    pub disable_controllers: bool,
    /// Controllers (names from `mini_controllers::CONTROLLERS`) not to run.
    pub disabled_controllers: Vec<String>,
    /// The node agent run in the same process (`None`: `--disable-agent`). Its server URL and
    /// token are filled in here once the API server listens; everything else comes from flags.
    pub agent: Option<mini_agent::AgentConfig>,
    /// The embedded image registry under `/v2/` (`None`: `--disable registry`).
    pub registry: Option<RegistrySettings>,
    /// Monitoring history and log search (`None`: `--disable observe`).
    pub observe: Option<mini_observe::Retention>,
    /// Manifests of `<data-dir>/server/manifests` not to apply (`--disable NAME` skips
    /// `NAME.yaml`; bundled ones, `ingress` and `local-storage`, are then not written either).
    pub disabled_manifests: Vec<String>,
    /// Seal Secrets at rest (`--secrets-encryption`, on by default); off still reads sealed
    /// values with the keys of an existing configuration.
    pub secrets_encryption: bool,
    /// How long people's login sessions last (`--session-idle-timeout`, `--session-lifetime`).
    pub sessions: mini_accounts::SessionLimits,
    /// An external etcd cluster as the store (`--datastore-endpoint`); `None`: sled in the
    /// data directory.
    pub datastore: Option<mini_etcdstore::EtcdConfig>,
    /// `--server https://FIRST:6443`: join the cluster whose bootstrap data (CA, keys, keyring)
    /// the datastore holds, instead of starting a new one; needs `datastore` and `token`.
    pub join_server: Option<String>,
    /// The web console under `/console/` (`false`: `--disable console`).
    pub console: bool,
    /// `--console-port`: the console (and the API its pages call) also on this HTTPS port of
    /// the bind address, e.g. a port a firewall opens to people but not to nodes.
    pub console_port: Option<u16>,
    /// How long leaf certificates are issued for (`--cert-lifetime`); renewed online at two
    /// thirds of it.
    pub cert_lifetime: std::time::Duration,
    /// Snapshots of the datastore: where they go and when the server takes them.
    pub snapshots: SnapshotSettings,
    /// How often the datastore's disk space is reclaimed (sled rewrite, etcd compaction and
    /// defragmentation).
    pub datastore_compact_interval: std::time::Duration,
}

/// Where snapshots go and the schedule of `scheduled` ones (`None`: none are taken).
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// Default: `<data-dir>/server/db/snapshots`.
    pub dir: Option<PathBuf>,
    pub schedule: Option<mini_snapshot::Schedule>,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            dir: None,
            schedule: mini_snapshot::parse_cron(
                mini_snapshot::DEFAULT_CRON,
                mini_snapshot::DEFAULT_KEEP,
            )
            .ok(),
        }
    }
}

/// An upstream the registry pulls through from for mirrored hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUpstream {
    /// The mirrored host it serves (`docker.io`).
    pub host: String,
    /// Its base URL, credentials inside (`https://user:password@harbor.example`).
    pub url: String,
}

/// How the embedded registry keeps images (from `--registry-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    pub upstreams: Vec<RegistryUpstream>,
    /// Keep the newest N tags per repository (plus every tag the cluster uses).
    pub keep_tags: Option<usize>,
    /// Drop tags older than this (unless the cluster uses them).
    pub keep_for: Option<std::time::Duration>,
    /// Online garbage collection period; `None`: never on its own.
    pub gc_interval: Option<std::time::Duration>,
    /// Content younger than this is never collected.
    pub gc_grace: std::time::Duration,
    /// Interrupted uploads are deleted after this.
    pub upload_timeout: std::time::Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        let hour = std::time::Duration::from_secs(3600);
        RegistrySettings {
            upstreams: Vec::new(),
            keep_tags: None,
            keep_for: None,
            gc_interval: Some(hour),
            gc_grace: hour,
            upload_timeout: hour,
        }
    }
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            https_port: 6443,
            advertise_address: None,
            tls_sans: Vec::new(),
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            token: None,
            token_file: None,
            write_kubeconfig: None,
            write_kubeconfig_mode: 0o600,
            disable_scheduler: false,
            disable_controllers: false,
            disabled_controllers: Vec::new(),
            agent: None,
            registry: Some(RegistrySettings::default()),
            observe: Some(mini_observe::Retention::default()),
            disabled_manifests: Vec::new(),
            secrets_encryption: true,
            sessions: mini_accounts::SessionLimits::default(),
            datastore: None,
            join_server: None,
            console: true,
            console_port: None,
            cert_lifetime: std::time::Duration::from_secs(365 * 86_400),
            snapshots: SnapshotSettings::default(),
            datastore_compact_interval: std::time::Duration::from_secs(300),
        }
    }

    /// Where the admin kubeconfig goes.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.write_kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server").join("admin.kubeconfig"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Certs(#[from] mini_certs::CertError),
    #[error(transparent)]
    CertRotate(#[from] mini_certrotate::CertRotateError),
    #[error("monitoring and logs: {0}")]
    Observe(#[from] mini_observe::ObserveError),
    #[error("store: {0}")]
    Store(#[from] mini_store::StoreError),
    #[error("secrets encryption: {0}")]
    Encryption(#[from] mini_encryption::EncryptionError),
    #[error(transparent)]
    Etcd(#[from] mini_etcdstore::EtcdError),
    #[error(transparent)]
    Bootstrap(#[from] mini_bootstrap::BootstrapError),
    #[error("api server: {0}")]
    ApiServer(#[from] mini_apiserver::ApiServerError),
    #[error("node agent: {0} (run with --disable-agent for a control plane without a node)")]
    Agent(#[from] mini_agent::AgentError),
}

/// What a started server tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    pub address: SocketAddr,
    pub kubeconfig: PathBuf,
    /// `K10<ca hash>::server:<secret>`.
    pub join_token: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// This server's candidate identity in leader elections: `<hostname>_<id>`, the id made once
/// and kept in `<server dir>/server-id`, so a restarted server takes its own Leases back at once.
fn server_identity(server_dir: &Path) -> Result<String, ServerError> {
    let path = server_dir.join("server-id");
    let id = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            std::fs::write(&path, format!("{id}\n")).map_err(io_err(&path))?;
            id
        }
    };
    Ok(format!("{}_{id}", hostname()))
}

/// The controllers, the IP pool allocator, the PV binder with the local-path provisioner and the
/// ingress status writer: the work the `kube-controller-manager` Lease's holder does, until `stop`.
async fn run_controllers(
    client: kube::Client,
    config: mini_controllers::ControllerConfig,
    ippool: mini_ippool::AllocatorConfig,
    loadtest: (
        std::sync::Arc<mini_loadtest::runs::Runs>,
        mini_loadtest::controller::ControllerConfig,
    ),
    stop: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(mini_controllers::run(client.clone(), config, stop.clone()));
    // static pod IPs: the IPPool/IPAllocation CRDs and their allocator
    let (ippool_client, ippool_stop) = (client.clone(), stop.clone());
    tasks.spawn(async move {
        if let Err(e) = mini_ippool::run(ippool_client, ippool, ippool_stop).await {
            tracing::error!(error = %e, "the ip pool allocator stopped");
        }
    });
    // the PV binder and the built-in local-path provisioner, as the controllers' identity
    let (localpath_client, localpath_stop) = (client.clone(), stop.clone());
    tasks.spawn(async move {
        if let Err(e) = mini_localpath::run(localpath_client, localpath_stop).await {
            tracing::error!(error = %e, "local-path provisioner failed");
        }
    });
    // load tests: the LoadTest CRD and its controller (generator pods, results, verdicts)
    let (loadtest_client, loadtest_stop) = (client.clone(), stop.clone());
    tasks.spawn(async move {
        let (runs, config) = loadtest;
        if let Err(e) =
            mini_loadtest::controller::run(loadtest_client, runs, config, loadtest_stop).await
        {
            tracing::error!(error = %e, "the load test controller stopped");
        }
    });
    // the ingress status: every mini-class Ingress answers on every node's address
    tasks.spawn(mini_ingress::run_status(client, stop));
    while tasks.join_next().await.is_some() {}
}

/// The Lease timings of the scheduler's and controllers' elections: a 10 s lease (renew deadline
/// 7 s, retries every 2 s), so another server takes over within 12 s of the holder's death —
/// upstream's 15 s lease plus a retry period would let it take up to 17 s.
fn election_config(name: &str, identity: &str) -> mini_leader::ElectionConfig {
    let mut election = mini_leader::ElectionConfig::new(name, identity);
    election.lease_duration = std::time::Duration::from_secs(10);
    election.renew_deadline = std::time::Duration::from_secs(7);
    election.retry_period = std::time::Duration::from_secs(2);
    election
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The first non-loopback IPv4 address of this host, as the default advertise address.
fn default_advertise_address() -> IpAddr {
    // a UDP "connect" picks the outbound interface without sending anything
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:1").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Starts the server; returns once it listens. The returned future serves until `shutdown`.
pub async fn start(
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(Started, tokio::task::JoinHandle<Result<(), ServerError>>), ServerError> {
    let service_cidr = Ipv4Cidr::parse(&config.service_cidr).map_err(ServerError::Config)?;
    for name in &config.disabled_controllers {
        if !mini_controllers::CONTROLLERS.contains(&name.as_str()) {
            return Err(ServerError::Config(format!(
                "unknown controller {name:?}; known: {}",
                mini_controllers::CONTROLLERS.join(", ")
            )));
        }
    }
    Ipv4Cidr::parse(&config.cluster_cidr).map_err(ServerError::Config)?;
    if let Some(first) = &config.join_server {
        if config.datastore.is_none() {
            return Err(ServerError::Config(format!(
                "--server {first}: servers share a cluster through its datastore; give --datastore-endpoint (the first server's etcd) too — a server on its own sled store cannot join another"
            )));
        }
        if config.token.is_none() && config.token_file.is_none() {
            return Err(ServerError::Config(format!(
                "--server {first}: joining needs the cluster's token (--token or --token-file; the first server's <data-dir>/server/token)"
            )));
        }
    }
    let server_dir = config.data_dir.join("server");
    std::fs::create_dir_all(&server_dir).map_err(io_err(&server_dir))?;

    // 1. listener first, so the real port is known for the kubeconfig
    let listener = TcpListener::bind((config.bind_address, config.https_port))
        .await
        .map_err(|e| ServerError::Io {
            path: format!("{}:{}", config.bind_address, config.https_port),
            source: e,
        })?;
    let address = listener.local_addr().map_err(io_err(&server_dir))?;
    let console_listener = match config.console_port {
        Some(_) if !config.console => {
            return Err(ServerError::Config(
                "--console-port serves the web console, which --disable console turns off: drop one of them".into(),
            ))
        }
        Some(port) => Some(
            TcpListener::bind((config.bind_address, port))
                .await
                .map_err(|e| ServerError::Io {
                    path: format!("{}:{port} (--console-port)", config.bind_address),
                    source: e,
                })?,
        ),
        None => None,
    };
    let advertise = config.advertise_address.unwrap_or_else(|| {
        if config.bind_address.is_unspecified() {
            default_advertise_address()
        } else {
            config.bind_address
        }
    });

    // 2. join token secret: on disk (it also opens the cluster's bootstrap data)
    let token_path = config
        .token_file
        .clone()
        .unwrap_or_else(|| server_dir.join("token"));
    let secret = mini_certs::ensure_token_file(&token_path, config.token.as_deref())?;
    // 3. store
    let (store, closing_store, reclaimable): (Arc<dyn mini_store::Store>, _, _) =
        match &config.datastore {
            Some(etcd) => {
                let etcd = Arc::new(mini_etcdstore::EtcdStore::connect(etcd.clone()).await?);
                (
                    etcd.clone() as Arc<dyn mini_store::Store>,
                    None,
                    compaction::Reclaimable::Etcd(etcd),
                )
            }
            None => {
                let sled = Arc::new(mini_store::SledStore::open(&server_dir.join("db"))?);
                (
                    sled.clone() as Arc<dyn mini_store::Store>,
                    Some(sled.clone()),
                    compaction::Reclaimable::Sled(sled),
                )
            }
        };
    // 3a. several servers: the CA, service-account key and keyring every server of this
    // cluster shares come from the datastore (sealed with the token), before the PKI is made
    if config.datastore.is_some() {
        let loaded = mini_bootstrap::load(
            store.as_ref(),
            &server_dir,
            &secret,
            config.join_server.is_some(),
        )
        .await?;
        if loaded.found {
            tracing::info!(written = ?loaded.written, "joined the cluster held by the datastore");
        }
    }

    // 4. PKI: CA, serving cert for every name clients use (this server's own), admin cert
    let mut sans = SubjectAltNames {
        dns: vec![
            hostname(),
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ],
        ips: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(service_cidr.nth(1)),
            advertise,
        ],
    };
    if !config.bind_address.is_unspecified() {
        sans.ips.push(config.bind_address);
    }
    for san in &config.tls_sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => sans.ips.push(ip),
            Err(_) => sans.dns.push(san.clone()),
        }
    }
    sans.ips.dedup();
    // renewed online at two thirds of their life; the CA bundle may hold two CAs (rotation)
    let certs = mini_certrotate::ServerCerts::open(mini_certrotate::ServerCertsConfig {
        tls_dir: server_dir.join("tls"),
        sans,
        lifetime: config.cert_lifetime,
    })?;
    let pki = certs.pki()?;
    let ca_bundle = certs.bundle_pem();
    let service_account_key =
        mini_certs::ensure_signing_key(&server_dir.join("tls").join("service-account.key"))?;

    // 4b. the full join token (pinning the CA) beside the secret
    if let (Some(given), Some(_)) = (config.token.as_deref(), &config.join_server) {
        if !mini_certs::JoinToken::parse(given)?.ca_matches(&ca_bundle) {
            return Err(ServerError::Config(
                "the token's CA hash does not match this cluster's CA: use the token the first server printed (<data-dir>/server/node-token on it)".into(),
            ));
        }
    }
    let join_token = mini_certs::JoinToken::format(&ca_bundle, &secret);
    let node_token = server_dir.join("node-token");
    write_private(&node_token, &join_token)?;

    // 4a. the datastore's disk use stays bounded: old revisions and deleted keys' space go
    tokio::spawn(compaction::run(
        reclaimable,
        config.datastore_compact_interval,
        shutdown.clone(),
    ));
    // snapshots read the store below the encryption layer (the keyring travels with them)
    let snapshot_source = match &closing_store {
        Some(sled) => mini_snapshot::Source::Sled(sled.clone()),
        None => mini_snapshot::Source::Etcd(store.clone()),
    };
    // 4b. encryption at rest: values of Secrets sealed with the keyring in cred/
    let encryption =
        mini_encryption::Encryption::open(&server_dir, store.clone(), config.secrets_encryption)?;
    // 4c. share what this server holds (the first server creates the record), then follow
    // it online: a keyring or CA rotated on any server reaches every other one at once
    let identity = server_identity(&server_dir)?;
    let shared = match &config.datastore {
        Some(_) => {
            mini_bootstrap::save(store.as_ref(), &server_dir, &secret).await?;
            let shared = mini_bootstrap::Shared::new(
                store.clone(),
                server_dir.clone(),
                secret.clone(),
                identity.clone(),
            );
            tokio::spawn(shared.clone().run(shutdown.clone()));
            encryption.share(shared.clone(), shutdown.clone());
            Some(shared)
        }
        None => None,
    };

    // 5. API server over the store
    let api = ApiServer::new(
        encryption.store(),
        ApiServerConfig {
            service_cidr,
            node_port_range: (30000, 32767),
            advertise_address: advertise,
            advertise_port: address.port(),
            join_secret: Some(secret.clone()),
            ca_pem: ca_bundle.clone(),
            service_account_key,
            // node certificates are signed at join; the kubelet client cert reaches agents
            ca: Some(Arc::new(mini_certs::CertAuthority::from_pem(
                pki.ca.cert_pem(),
                &pki.ca.key_pem(),
            )?)),
            kubelet_client: Some(pki.apiserver_client.clone()),
            binary_path: Some("/proc/self/exe".into()),
            images_dir: Some(config.data_dir.join("agent").join("images")),
        },
    )
    .await?;
    mini_encryption::install(&api, encryption.clone());
    encryption.start(shutdown.clone());
    let closing_encryption = encryption.clone();

    // 5a. snapshots: POST /v1-mini/snapshot/save, and the scheduled ones
    let snapshot_dir = config
        .snapshots
        .dir
        .clone()
        .unwrap_or_else(|| mini_snapshot::default_dir(&config.data_dir));
    let snapshotter = Arc::new(mini_snapshot::Snapshotter::new(
        snapshot_source,
        &server_dir,
        &snapshot_dir,
    ));
    mini_snapshot::install(&api, snapshotter.clone());
    if let Some(schedule) = config.snapshots.schedule.clone() {
        tokio::spawn(mini_snapshot::run_schedule(
            snapshotter,
            schedule,
            shutdown.clone(),
        ));
    }

    // 5b. the embedded image registry under /v2/, pulled from by every node
    let registry_hosts = vec![
        SocketAddr::new(advertise, address.port()).to_string(),
        format!("127.0.0.1:{}", address.port()),
        format!("localhost:{}", address.port()),
    ];
    if let Some(settings) = &config.registry {
        registry::start(
            &api,
            settings,
            &config.data_dir,
            registry_hosts.clone(),
            config.data_dir.join("agent").join("images"),
            // several servers: blobs pushed through another one come from it
            config.datastore.as_ref().map(|_| {
                registry::ServerPeers::new(
                    kube::Client::new(api.local_service(ApiServer::admin_user()), "default"),
                    SocketAddr::new(advertise, address.port()),
                    certs.clone(),
                )
            }),
            shutdown.clone(),
        )
        .await?;
    }

    // 5c. monitoring history and log search: every node's samples and container logs
    let observe = match &config.observe {
        Some(retention) => Some(
            mini_observe::start(
                &api,
                mini_observe::ObserveConfig::new(&config.data_dir, retention),
                shutdown.clone(),
            )
            .await?,
        ),
        None => None,
    };
    // ... and replicated to the other servers, so each holds the whole history
    if let Some(observe) = &observe {
        let own = SocketAddr::new(advertise, address.port());
        mini_observe::replicate(observe, own, &certs.node_tls()?, shutdown.clone());
    }
    // loading the metrics history (blocks, head state, log replay) freed far more than it keeps
    mini_sys::alloc::release_free_memory();

    // 5d. people's accounts: login sessions, account tokens, the audit log
    let mut accounts = mini_accounts::AccountsConfig::new(&server_dir, ca_bundle.clone());
    accounts.sessions = config.sessions;
    mini_accounts::install(&api, accounts, shutdown.clone());

    // 5e. the web console's assets under /console/ (its data comes through the API as the person)
    if config.console {
        mini_console::install(&api);
    }

    // 5f. load tests: the results endpoint (generators post, people read) and the run store
    let loadtest_runs = mini_loadtest::install(&api, &server_dir);
    // ... with several servers, results are asked of and copied to the others; every server
    // removes its copies of deleted LoadTests' results
    {
        let own = SocketAddr::new(advertise, address.port());
        let client = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");
        let tls = certs.node_tls()?;
        loadtest_runs.set_other_servers(mini_loadtest::peers::HttpServers::new(
            client.clone(),
            own,
            &tls,
        ));
        tokio::spawn(mini_loadtest::controller::tidy_results(
            client,
            loadtest_runs.clone(),
            shutdown.clone(),
        ));
    }

    // 6. admin kubeconfig
    let kubeconfig = config.kubeconfig_path();
    let host = if config.bind_address.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        config.bind_address
    };
    let url = format!("https://{}", SocketAddr::new(host, address.port()));
    mini_certs::write_kubeconfig(
        &kubeconfig,
        &url,
        &ca_bundle,
        &pki.admin,
        config.write_kubeconfig_mode,
    )?;
    // 6b. certificates renewed and rotated online: /cacerts, node TLS, kubeconfig, node token
    certs.attach(
        &api,
        mini_certrotate::Publish {
            kubeconfig: Some((
                kubeconfig.clone(),
                url.clone(),
                config.write_kubeconfig_mode,
            )),
            node_token: Some((node_token.clone(), secret.clone())),
        },
        shutdown.clone(),
    )?;
    if let Some(shared) = &shared {
        certs.share(shared.clone(), shutdown.clone());
    }

    // 7. controllers and scheduler: in-process API clients (no TCP, no TLS), through RBAC; each
    // group runs on one server at a time, while this server holds its coordination.k8s.io Lease
    let mut background = tokio::task::JoinSet::new();
    // 7a. this server's own Lease, and the kubernetes Endpoints listing every live server
    {
        let client = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");
        let peer =
            mini_peers::PeerConfig::new(&identity, SocketAddr::new(advertise, address.port()));
        background.spawn(mini_peers::run(client, peer, shutdown.clone()));
    }
    if !config.disable_controllers {
        let client = kube::Client::new(api.local_service(ApiServer::controllers_user()), "default");
        let controller_config = mini_controllers::ControllerConfig {
            cluster_cidr: config.cluster_cidr.clone(),
            disabled: config.disabled_controllers.clone(),
            root_ca_pem: ca_bundle.clone(),
            ..Default::default()
        };
        let ippool = mini_ippool::AllocatorConfig::new(&config.cluster_cidr, &config.service_cidr);
        let loadtest = mini_loadtest::controller::ControllerConfig {
            server_url: format!("https://{}", SocketAddr::new(advertise, address.port())),
            ca_pem: ca_bundle.clone(),
            image: mini_images::loadtest_image().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "fingerprinting this binary for the load test image failed");
                format!("{}:unknown", mini_images::LOADTEST_REPOSITORY)
            }),
        };
        let election = election_config("kube-controller-manager", &identity);
        background.spawn(mini_leader::run_while_leader(
            client.clone(),
            election,
            shutdown.clone(),
            move |stop| {
                run_controllers(
                    client.clone(),
                    controller_config.clone(),
                    ippool.clone(),
                    (loadtest_runs.clone(), loadtest.clone()),
                    stop,
                )
            },
        ));
    }
    if !config.disable_scheduler {
        let client = kube::Client::new(api.local_service(ApiServer::scheduler_user()), "default");
        let election = election_config("kube-scheduler", &identity);
        let server_stop = shutdown.clone();
        background.spawn(mini_leader::run_while_leader(
            client.clone(),
            election,
            shutdown.clone(),
            move |stop| {
                let client = client.clone();
                let server_stop = server_stop.clone();
                async move {
                    // a failed scheduler asks the whole server to stop rather than limping on
                    if let Err(e) = mini_scheduler::run(
                        client,
                        mini_scheduler::SchedulerConfig::default(),
                        stop,
                    )
                    .await
                    {
                        tracing::error!(error = %e, "scheduler failed; shutting down");
                        server_stop.cancel();
                    }
                }
            },
        ));
    }

    // 7b. auto-deployed manifests: the files of <data-dir>/server/manifests, applied as the
    // cluster admin (they may hold any kind, CRDs and RBAC included)
    for name in &config.disabled_manifests {
        if !mini_manifests::bundled_names().contains(&name.as_str()) {
            tracing::info!(
                name,
                "--disable {name}: not a component or bundled manifest; {name}.yaml in the manifests directory is skipped"
            );
        }
    }
    {
        let client = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");
        let manifests = mini_manifests::ManifestsConfig::for_data_dir(
            &config.data_dir,
            config.disabled_manifests.clone(),
        );
        background.spawn(mini_manifests::run(client, manifests, shutdown.clone()));
    }
    // the server's own node gets its control-plane label from the server, as k3s does
    // (NodeRestriction forbids a node to set node-role labels on itself)
    let admin_client = kube::Client::new(api.local_service(ApiServer::admin_user()), "default");

    // 7c. once startup is over: the code only startup ran leaves the resident set, freed heap
    // pages go back to the kernel (then whenever enough piled up)
    background.spawn(mini_sys::alloc::keep_lean(
        shutdown.clone().cancelled_owned(),
    ));

    // 8. serve (and the console's own port, with the same handler and certificate)
    let tls = certs.server_tls()?;
    let serve_shutdown = shutdown.clone();
    if let Some(console_listener) = console_listener {
        let (api, tls, stop) = (api.clone(), tls.clone(), shutdown.clone());
        background.spawn(async move {
            if let Err(e) = mini_apiserver::serve(api, console_listener, tls, stop).await {
                tracing::error!(error = %e, "serving the console port failed");
            }
        });
    }
    let mut handle = tokio::spawn(async move {
        let served = mini_apiserver::serve(api, listener, tls, serve_shutdown.clone()).await;
        serve_shutdown.cancel();
        while background.join_next().await.is_some() {}
        // tasks outside `background` may still hold the store: close it here so every
        // applied write is on disk and the next start knows the stop was clean
        if let Some(observe) = &observe {
            observe.close();
        }
        closing_encryption.stopped().await;
        if let Some(Err(e)) = closing_store.map(|sled| sled.close()) {
            tracing::warn!(error = %e, "closing the store failed");
        }
        served?;
        Ok(())
    });

    // 9. this machine's own node: an agent joining over loopback like any other node
    if let Some(mut agent_config) = config.agent.clone() {
        agent_config.server_url = format!("https://127.0.0.1:{}", address.port());
        agent_config.token = join_token.clone();
        agent_config.control_plane = true;
        if agent_config.node_ip.is_none() {
            agent_config.node_ip = Some(advertise);
        }
        // pods name the registry by the address other nodes use, not this agent's loopback
        agent_config.registry_aliases = registry_hosts
            .iter()
            .filter(|h| !h.starts_with("127.0.0.1:"))
            .cloned()
            .collect();
        if agent_config.data_dir.as_os_str().is_empty() {
            agent_config.data_dir = config.data_dir.clone();
        }
        let agent_shutdown = shutdown.clone();
        let agent = match mini_agent::start(
            agent_config,
            std::sync::Arc::new(mini_sys::LinuxHost),
            agent_shutdown.clone(),
        )
        .await
        {
            Ok(agent) => agent,
            Err(e) => {
                shutdown.cancel();
                let _ = (&mut handle).await;
                return Err(e.into());
            }
        };
        label_control_plane(&admin_client, &agent.node_name).await;
        let served = handle;
        handle = tokio::spawn(async move {
            if let Err(e) = agent.wait().await {
                tracing::error!(error = %e, "node agent failed");
            }
            served.await.unwrap_or_else(|e| {
                Err(ServerError::Config(format!(
                    "api server task panicked: {e}"
                )))
            })
        });
    }
    Ok((
        Started {
            address,
            kubeconfig,
            join_token,
        },
        handle,
    ))
}

/// Merge-patches [`mini_agent::node::CONTROL_PLANE_LABEL`] onto the server's own Node; a
/// failure is logged (the node works without it; `kubectl get nodes` shows no role).
async fn label_control_plane(client: &kube::Client, node: &str) {
    let body = format!(
        r#"{{"metadata":{{"labels":{{"{}":"true"}}}}}}"#,
        mini_agent::node::CONTROL_PLANE_LABEL
    );
    let request = http::Request::patch(format!("/api/v1/nodes/{node}?fieldManager=mini"))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(body.into_bytes());
    let result = match request {
        Ok(request) => client.request_text(request).await.map(|_| ()),
        Err(e) => Err(kube::Error::HttpError(e)),
    };
    if let Err(e) = result {
        tracing::warn!(node, error = %e, "labelling the server's node control-plane failed");
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}
