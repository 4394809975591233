//! `mini status`: role, health (systemd unit state and status text, the API's /readyz),
//! datastore, certificate expiry, nodes and what is waiting. Host reads go through
//! `CheckHost`; the cluster is read through `ClusterView` (the real one is a kube client).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Node;

use crate::host::CheckHost;
use crate::Role;

/// Certificates expiring within this many days are flagged.
pub const EXPIRY_WARN_DAYS: i64 = 30;

/// A failure to read the cluster.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("asking the API server: {0}")]
    Api(String),
}

/// What the status reads from the cluster.
pub trait ClusterView {
    /// The body of `GET /readyz`.
    fn readyz(&self) -> impl Future<Output = Result<String, StatusError>> + Send;
    /// Every Node.
    fn nodes(&self) -> impl Future<Output = Result<Vec<Node>, StatusError>> + Send;
}

/// The real cluster, through a kubeconfig.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// A client for the kubeconfig at `path` (short timeouts: status must not hang).
    pub async fn from_kubeconfig(path: &Path) -> Result<KubeCluster, StatusError> {
        let err = |message: String| StatusError::Kubeconfig {
            path: path.display().to_string(),
            message,
        };
        let kubeconfig =
            kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| err(e.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(3));
        config.read_timeout = Some(Duration::from_secs(5));
        let client = kube::Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(KubeCluster { client })
    }
}

impl ClusterView for KubeCluster {
    async fn readyz(&self) -> Result<String, StatusError> {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| StatusError::Api(e.to_string()))?;
        self.client
            .request_text(request)
            .await
            .map_err(|e| StatusError::Api(e.to_string()))
    }

    async fn nodes(&self) -> Result<Vec<Node>, StatusError> {
        let api: kube::Api<Node> = kube::Api::all(self.client.clone());
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .map_err(|e| StatusError::Api(e.to_string()))
    }
}

/// A systemd unit's state (`systemctl show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub name: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub status_text: String,
    pub main_pid: u32,
}

/// The units mini installs.
pub const UNITS: [(&str, Role); 2] = [
    ("mini-server.service", Role::Server),
    ("mini-agent.service", Role::Agent),
];

/// Parses `systemctl show -p ...` output.
pub(crate) fn parse_unit_show(name: &str, text: &str) -> UnitState {
    let mut unit = UnitState {
        name: name.to_string(),
        ..Default::default()
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key {
            "LoadState" => unit.load_state = value,
            "ActiveState" => unit.active_state = value,
            "SubState" => unit.sub_state = value,
            "StatusText" => unit.status_text = value,
            "MainPID" => unit.main_pid = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    unit
}

/// The mini units systemd knows (LoadState `loaded`), when systemd runs this host.
pub fn installed_units(host: &dyn CheckHost) -> Vec<(UnitState, Role)> {
    if !host.exists(Path::new("/run/systemd/system")) {
        return Vec::new();
    }
    let Some(systemctl) = host.find_program("systemctl") else {
        return Vec::new();
    };
    UNITS
        .iter()
        .filter_map(|(name, role)| {
            let out = host
                .run(
                    &systemctl,
                    &[
                        "show",
                        "-p",
                        "LoadState,ActiveState,SubState,StatusText,MainPID",
                        name,
                    ],
                    Duration::from_secs(5),
                )
                .ok()?;
            let unit = parse_unit_show(name, &out.text);
            (unit.load_state == "loaded").then_some((unit, *role))
        })
        .collect()
}

/// A certificate's expiry (`mini status`, `mini certificate check`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertExpiry {
    pub path: PathBuf,
    pub subject: String,
    pub issuer: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// When mini renews it (two thirds of its life; a CA's own expiry, as CAs are rotated,
    /// not renewed), seconds since the epoch.
    pub renew_at: i64,
    pub is_ca: bool,
    pub days_left: i64,
}

impl CertExpiry {
    /// Whether renewal is overdue at `now`: a leaf past five sixths of its life (half-way from
    /// its renewal time to its expiry), or a CA within [`EXPIRY_WARN_DAYS`] of its expiry.
    pub fn overdue(&self, now: i64) -> bool {
        if self.is_ca {
            self.days_left < EXPIRY_WARN_DAYS
        } else {
            now >= self.renew_at + (self.not_after - self.renew_at) / 2
        }
    }

    /// One line: path, subject, issuer, expiry and renewal time (RFC 3339, UTC).
    pub fn line(&self) -> String {
        format!(
            "{}  subject={}  issuer={}  expires={}  renews={}",
            self.path.display(),
            self.subject,
            self.issuer,
            mini_certs::format_unix(self.not_after),
            if self.is_ca {
                "never (rotate the CA)".to_string()
            } else {
                mini_certs::format_unix(self.renew_at)
            }
        )
    }
}

/// Every `*.crt` in the server's and the agent's TLS dirs (the first certificate of each).
pub fn certificates(host: &dyn CheckHost, data_dir: &Path, now: i64) -> Vec<CertExpiry> {
    let mut out = Vec::new();
    for dir in [
        data_dir.join("server").join("tls"),
        data_dir.join("agent").join("tls"),
    ] {
        for name in host.read_dir(&dir).unwrap_or_default() {
            if !name.ends_with(".crt") {
                continue;
            }
            let path = dir.join(&name);
            let Some(info) = host
                .read_file(&path)
                .ok()
                .and_then(|pem| mini_certs::CertInfo::from_pem(&pem, &name).ok())
            else {
                continue;
            };
            out.push(CertExpiry {
                path,
                renew_at: if info.is_ca {
                    info.not_after
                } else {
                    info.renew_at()
                },
                subject: info.subject,
                issuer: info.issuer,
                not_before: info.not_before,
                not_after: info.not_after,
                is_ca: info.is_ca,
                days_left: (info.not_after - now).div_euclid(86_400),
            });
        }
    }
    out
}

/// One node line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeLine {
    pub name: String,
    pub ready: String,
    pub age: String,
    pub version: String,
    /// Not-Ready conditions: `Type=Status (Reason: message)`.
    pub waiting: Vec<String>,
}

/// `5d`, `3h`, `12m`, `40s`, as kubectl prints ages.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub(crate) fn node_line(node: &Node, now: i64) -> NodeLine {
    let name = node.metadata.name.clone().unwrap_or_default();
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(now);
    let status = node.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into());
    let waiting = conditions
        .iter()
        .filter(|c| {
            (c.type_ == "Ready" && c.status != "True") || (c.type_ != "Ready" && c.status == "True")
        })
        .map(|c| {
            format!(
                "{}={} ({}: {})",
                c.type_,
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .collect();
    NodeLine {
        name,
        ready: if ready == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        },
        age: age(now - created),
        version: status
            .node_info
            .map(|i| i.kubelet_version)
            .unwrap_or_default(),
        waiting,
    }
}

/// The API server's answer to `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiHealth {
    pub ready: bool,
    /// `ok`, or why it is not ready.
    pub detail: String,
}

/// The sled store of a server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Datastore {
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// Everything `mini status` says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub role: Option<Role>,
    pub data_dir: PathBuf,
    pub units: Vec<UnitState>,
    /// Whether `/readyz` answered `ok`; `None` when there was nothing to ask.
    pub api: Option<ApiHealth>,
    pub datastore: Option<Datastore>,
    pub certificates: Vec<CertExpiry>,
    pub nodes: Vec<NodeLine>,
    pub waiting: Vec<String>,
    /// Whether everything answers: unit active (when there is one), API ready, nodes Ready.
    pub healthy: bool,
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The kubeconfig status uses: the admin one of a server, the node's of an agent.
pub fn kubeconfig_for(role: Role, data_dir: &Path) -> PathBuf {
    match role {
        Role::Server => data_dir.join("server").join("admin.kubeconfig"),
        Role::Agent => data_dir.join("agent").join("kubelet.kubeconfig"),
    }
}

/// Gathers the status. `cluster` is `None` when no kubeconfig could be loaded (`why` says why).
pub async fn gather<C: ClusterView>(
    host: &dyn CheckHost,
    data_dir: &Path,
    cluster: Result<C, String>,
) -> Status {
    let now = now_seconds();
    let units = installed_units(host);
    let role = units.first().map(|(_, r)| *r).or_else(|| {
        if host.exists(&data_dir.join("server")) {
            Some(Role::Server)
        } else if host.exists(&data_dir.join("agent")) {
            Some(Role::Agent)
        } else {
            None
        }
    });
    let mut status = Status {
        role,
        data_dir: data_dir.to_path_buf(),
        units: units.into_iter().map(|(u, _)| u).collect(),
        api: None,
        datastore: None,
        certificates: Vec::new(),
        nodes: Vec::new(),
        waiting: Vec::new(),
        healthy: false,
    };
    let Some(role) = role else {
        return status;
    };
    for unit in &status.units {
        if !unit.status_text.is_empty() && unit.active_state != "inactive" {
            status
                .waiting
                .push(format!("{}: {}", unit.name, unit.status_text));
        }
    }
    if role == Role::Server {
        let db = data_dir.join("server").join("db");
        if let Ok(size_bytes) = host.tree_size(&db) {
            status.datastore = Some(Datastore {
                path: db,
                size_bytes,
            });
        }
    }
    status.certificates = certificates(host, data_dir, now);
    for cert in &status.certificates {
        if cert.overdue(now) {
            status.waiting.push(if cert.is_ca {
                format!(
                    "CA certificate {} expires in {} days: rotate it with `mini certificate rotate-ca`",
                    cert.path.display(),
                    cert.days_left
                )
            } else {
                format!(
                    "certificate {} is overdue for renewal (expires {}): is mini running? `mini certificate rotate` renews it now",
                    cert.path.display(),
                    mini_certs::format_unix(cert.not_after)
                )
            });
        }
    }
    match cluster {
        Err(why) => {
            status.api = Some(ApiHealth {
                ready: false,
                detail: why,
            })
        }
        Ok(cluster) => {
            let (ready, detail) = match cluster.readyz().await {
                Ok(body) if body.trim() == "ok" => (true, "ok".to_string()),
                Ok(body) => (false, body.trim().to_string()),
                Err(e) => (false, e.to_string()),
            };
            status.api = Some(ApiHealth { ready, detail });
            match cluster.nodes().await {
                Ok(nodes) => {
                    status.nodes = nodes.iter().map(|n| node_line(n, now)).collect();
                    for n in &status.nodes {
                        for w in &n.waiting {
                            status.waiting.push(format!("node {}: {w}", n.name));
                        }
                    }
                }
                // an API that does not answer is already reported once
                Err(e) if ready => status.waiting.push(format!("listing nodes: {e}")),
                Err(_) => {}
            }
        }
    }
    let units_active = status.units.iter().all(|u| u.active_state == "active");
    let api_ok = status.api.as_ref().is_some_and(|a| a.ready);
    let nodes_ready = status.nodes.iter().all(|n| n.ready == "Ready");
    status.healthy = units_active && api_ok && nodes_ready;
    status
}

impl Status {
    /// The JSON form (`--output json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Human-readable form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Some(role) = self.role else {
            out.push_str(&format!(
                "mini is not installed here: no mini-server or mini-agent unit and no data in {}\n",
                self.data_dir.display()
            ));
            return out;
        };
        let role = match role {
            Role::Server => "server",
            Role::Agent => "agent",
        };
        out.push_str(&format!(
            "role:        {role} (data dir {})\n",
            self.data_dir.display()
        ));
        if self.units.is_empty() {
            out.push_str("unit:        none (not run by systemd)\n");
        }
        for u in &self.units {
            out.push_str(&format!(
                "unit:        {} {} ({}), pid {}{}\n",
                u.name,
                u.active_state,
                u.sub_state,
                u.main_pid,
                if u.status_text.is_empty() {
                    String::new()
                } else {
                    format!(", status: {}", u.status_text)
                }
            ));
        }
        match &self.api {
            Some(a) if a.ready => out.push_str("api:         ready (/readyz ok)\n"),
            Some(a) => out.push_str(&format!("api:         not ready: {}\n", a.detail)),
            None => {}
        }
        if let Some(d) = &self.datastore {
            out.push_str(&format!(
                "datastore:   sled at {} ({:.1} MiB)\n",
                d.path.display(),
                d.size_bytes as f64 / (1u64 << 20) as f64
            ));
        }
        if !self.certificates.is_empty() {
            out.push_str("certificates:\n");
            let width = self
                .certificates
                .iter()
                .map(|c| c.path.display().to_string().len())
                .max()
                .unwrap_or(0);
            for c in &self.certificates {
                out.push_str(&format!(
                    "  {:<width$}  {} days left (expires {})\n",
                    c.path.display().to_string(),
                    c.days_left,
                    mini_certs::format_unix(c.not_after)
                ));
            }
        }
        if !self.nodes.is_empty() {
            out.push_str(&format!(
                "nodes:\n  {:<24} {:<9} {:<6} VERSION\n",
                "NAME", "STATUS", "AGE"
            ));
            for n in &self.nodes {
                out.push_str(&format!(
                    "  {:<24} {:<9} {:<6} {}\n",
                    n.name, n.ready, n.age, n.version
                ));
            }
        }
        if !self.waiting.is_empty() {
            out.push_str("waiting:\n");
            for w in &self.waiting {
                out.push_str(&format!("  {w}\n"));
            }
        }
        out.push_str(if self.healthy {
            "healthy\n"
        } else {
            "not healthy\n"
        });
        out
    }
}
