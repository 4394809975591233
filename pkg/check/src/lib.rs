//! `mini check`: a preflight of this host for the server and agent roles (kernel and modules,
//! cgroups, swap, ports, containerd and runc, data dir space, time sync, IP forwarding), each
//! result ok / warning / failure with a one-line fix; and `mini status` (see `status`).
//! Every OS read goes through `host::CheckHost`, so every rule is tested on a fake host.

pub mod host;
mod rules;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use host::{CheckHost, LinuxCheckHost, Proto};

/// How bad a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Failure,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Failure => "failure",
        })
    }
}

/// One result: what was checked, how it went, what was found and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub check: String,
    pub result: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// A failure that makes `mini server`/`mini agent` certainly fail to start (a port taken,
    /// containerd missing, IP forwarding neither on nor settable): the start is aborted.
    #[serde(skip)]
    pub blocks_start: bool,
}

impl Finding {
    pub(crate) fn ok(check: impl Into<String>, detail: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            result: Level::Ok,
            detail: detail.into(),
            fix: None,
            blocks_start: false,
        }
    }

    pub(crate) fn warning(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            result: Level::Warning,
            fix: Some(fix.into()),
            ..Finding::ok(check, detail)
        }
    }

    pub(crate) fn failure(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            result: Level::Failure,
            fix: Some(fix.into()),
            ..Finding::ok(check, detail)
        }
    }

    pub(crate) fn blocking(mut self) -> Finding {
        self.blocks_start = self.result == Level::Failure;
        self
    }
}

/// Which role the host is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

/// A port the role listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub proto: Proto,
    pub address: SocketAddr,
    pub purpose: &'static str,
    /// Whether the start certainly fails when it is taken.
    pub required_to_start: bool,
}

/// Port of the API server.
pub const API_PORT: u16 = 6443;
/// Port of the node API (the kubelet's).
pub const KUBELET_PORT: u16 = 10250;
/// UDP port of the VXLAN overlay.
pub const VXLAN_PORT: u16 = 8472;
/// Port of the node's cluster DNS server.
pub const DNS_PORT: u16 = 10053;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub role: Role,
    pub data_dir: PathBuf,
    /// Whether this host runs a node (the agent, or the server's in-process agent).
    pub node: bool,
    /// The node runs its own containerd (not `--container-runtime-endpoint`).
    pub managed_containerd: bool,
    pub ports: Vec<Port>,
    /// The quick form run before every start: no programs are run (no `containerd --version`,
    /// no `timedatectl`), so no time-sync check and no version checks.
    pub quick: bool,
}

impl CheckConfig {
    /// The defaults of a role: the server runs its own node; its ports and the node's.
    pub fn new(role: Role, data_dir: impl Into<PathBuf>) -> CheckConfig {
        let mut config = CheckConfig {
            role,
            data_dir: data_dir.into(),
            node: true,
            managed_containerd: true,
            ports: Vec::new(),
            quick: false,
        };
        if role == Role::Server {
            config.set_api_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED), API_PORT);
        }
        config.set_node_ports(KUBELET_PORT);
        config
    }

    /// The API server listens on `address:port` (port 0: a free one, nothing to check).
    pub fn set_api_port(&mut self, address: IpAddr, port: u16) {
        self.ports.retain(|p| p.purpose != "API server");
        if port != 0 {
            self.ports.insert(
                0,
                Port {
                    proto: Proto::Tcp,
                    address: SocketAddr::new(address, port),
                    purpose: "API server",
                    required_to_start: true,
                },
            );
        }
    }

    /// The node listens on the kubelet port, the VXLAN port and the DNS port.
    pub fn set_node_ports(&mut self, kubelet_port: u16) {
        self.ports.retain(|p| p.purpose == "API server");
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        if kubelet_port != 0 {
            self.ports.push(Port {
                proto: Proto::Tcp,
                address: SocketAddr::new(any, kubelet_port),
                purpose: "node API",
                required_to_start: true,
            });
        }
        for (proto, port, purpose) in [
            (Proto::Udp, VXLAN_PORT, "VXLAN overlay"),
            (Proto::Udp, DNS_PORT, "cluster DNS"),
            (Proto::Tcp, DNS_PORT, "cluster DNS"),
        ] {
            self.ports.push(Port {
                proto,
                address: SocketAddr::new(any, port),
                purpose,
                required_to_start: false,
            });
        }
    }

    /// No node on this host (`mini server --disable-agent`): drops the node's checks and ports.
    pub fn without_node(mut self) -> CheckConfig {
        self.node = false;
        self.ports.retain(|p| p.purpose == "API server");
        self
    }
}

/// Every result of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub role: Role,
    pub results: Vec<Finding>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.results.iter().filter(|f| f.result == level).count()
    }

    pub fn has_failures(&self) -> bool {
        self.count(Level::Failure) > 0
    }

    /// The failures that make a start certainly fail.
    pub fn blocking(&self) -> Vec<&Finding> {
        self.results.iter().filter(|f| f.blocks_start).collect()
    }

    /// A table: one line per check, the fix indented under it, and a summary line.
    pub fn render_table(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!("{:<width$}  {:<8} DETAIL\n", "CHECK", "RESULT");
        for f in &self.results {
            out.push_str(&format!(
                "{:<width$}  {:<8} {}\n",
                f.check,
                f.result.to_string(),
                f.detail
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("{:<width$}  {:<8} fix: {fix}\n", "", ""));
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `N ok, N warnings, N failures`.
    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} warning(s), {} failure(s)",
            self.count(Level::Ok),
            self.count(Level::Warning),
            self.count(Level::Failure)
        )
    }

    /// The JSON form (`--output json`).
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "role": self.role,
            "results": self.results,
            "summary": {
                "ok": self.count(Level::Ok),
                "warnings": self.count(Level::Warning),
                "failures": self.count(Level::Failure),
            },
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// The quick form's lines for stderr: warnings and failures only.
    pub fn problems(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|f| f.result != Level::Ok)
            .map(|f| match &f.fix {
                Some(fix) => format!("{} {}: {} ({fix})", f.result, f.check, f.detail),
                None => format!("{} {}: {}", f.result, f.check, f.detail),
            })
            .collect()
    }
}

/// Runs every check of `config` on `host`.
pub fn run(host: &dyn CheckHost, config: &CheckConfig) -> Report {
    let mut results = Vec::new();
    results.push(rules::kernel_version(host));
    if config.node {
        results.extend(rules::kernel_modules(host));
        results.extend(rules::cgroups(host));
        results.push(rules::swap(host));
    }
    for port in &config.ports {
        results.push(rules::port(host, port));
    }
    if config.node && config.managed_containerd {
        results.push(rules::program(host, "containerd", config.quick));
        results.push(rules::program(host, "runc", config.quick));
    }
    results.push(rules::data_dir_space(host, &config.data_dir));
    if !config.quick {
        results.push(rules::time_sync(host));
    }
    if config.node {
        results.extend(rules::forwarding(host));
    }
    Report {
        role: config.role,
        results,
    }
}

#[cfg(test)]
mod tests;
