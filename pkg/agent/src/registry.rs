//! The node's side of the cluster registry: containerd's `certs.d/<host>/hosts.toml` files for the server's
//! registry (the API server's `host:port`, the cluster CA, the node's client certificate) and the mirrored
//! upstream hosts, written after joining and checked against a verbose CRI `Status` once containerd runs.

use std::path::Path;

use mini_cri::{CriRegistryStatus, GrpcRuntime, HostsWrite, RegistryHosts};

use crate::config::AgentConfig;
use crate::join::{CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE};
use crate::AgentError;

/// The cluster registry's host as image references name it: the `host:port` of the server URL
/// (`https://10.0.0.1:6443` -> `10.0.0.1:6443`; without a port, the host alone).
pub fn registry_host(server_url: &str) -> Result<String, AgentError> {
    let bad = |reason: String| AgentError::Config {
        flag: "--server",
        value: server_url.to_string(),
        reason,
    };
    let uri: http::Uri = server_url
        .parse()
        .map_err(|e| bad(format!("not a URL: {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| bad("no host".into()))?
        .as_str();
    // user info never belongs in a registry host
    let host = authority.rsplit('@').next().unwrap_or(authority);
    Ok(host.to_ascii_lowercase())
}

/// The hosts files for this agent: the server URL's registry host, the configured aliases and mirrors, and
/// the certificates the join stored under `<data>/agent/tls/`.
pub fn registry_hosts(config: &AgentConfig) -> Result<RegistryHosts, AgentError> {
    let tls = config.tls_dir();
    let registry = registry_host(&config.server_url)?;
    Ok(RegistryHosts {
        aliases: config
            .registry_aliases
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .filter(|a| *a != registry)
            .collect(),
        registry,
        mirrors: config.registry_mirrors.clone(),
        ca_file: tls.join(CA_FILE),
        client_cert: tls.join(CLIENT_CERT_FILE),
        client_key: tls.join(CLIENT_KEY_FILE),
    })
}

/// Writes the hosts files into `certs_dir` (only those that changed) and logs what changed.
pub fn write_hosts(config: &AgentConfig, certs_dir: &Path) -> Result<HostsWrite, AgentError> {
    let hosts = registry_hosts(config)?;
    let report = hosts
        .write(certs_dir)
        .map_err(|e| AgentError::Runtime(format!("writing the registry hosts files: {e}")))?;
    if report.changed() {
        tracing::info!(
            registry = hosts.registry,
            mirrors = ?hosts.mirrors,
            written = ?report.written,
            removed = ?report.removed,
            dir = %certs_dir.display(),
            "containerd registry hosts updated"
        );
    }
    Ok(report)
}

/// Asks containerd (verbose CRI `Status`) whether the runtime is ready and loaded `certs_dir` as its
/// registry config path; `Err` says what is wrong and what to do.
pub async fn check_runtime(
    runtime: &GrpcRuntime,
    certs_dir: &Path,
) -> Result<CriRegistryStatus, String> {
    let status = runtime.verbose_status().await.map_err(|e| {
        format!("the CRI Status call failed after writing the registry hosts files: {e}")
    })?;
    let parsed = CriRegistryStatus::from_status(&status);
    parsed.check(certs_dir)?;
    Ok(parsed)
}

/// Checks (see [`check_runtime`]) after the hosts files were written and logs the outcome: problems are
/// errors in the log (pulls through the cluster registry will fail) but do not stop the agent.
pub async fn log_runtime_check(runtime: &GrpcRuntime, certs_dir: &Path) {
    match check_runtime(runtime, certs_dir).await {
        Ok(status) => tracing::info!(
            config_path = status.config_path.as_deref().unwrap_or_default(),
            network_ready = status.network_ready,
            "containerd uses the cluster registry hosts configuration"
        ),
        Err(message) => tracing::error!(
            dir = %certs_dir.display(),
            "containerd registry configuration not in effect: {message}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_is_the_server_url_authority() {
        assert_eq!(
            registry_host("https://10.0.0.1:6443").expect("host"),
            "10.0.0.1:6443"
        );
        assert_eq!(
            registry_host("https://Mini.Example:6443/").expect("host"),
            "mini.example:6443"
        );
        assert_eq!(
            registry_host("https://mini.example").expect("host"),
            "mini.example"
        );
        assert!(registry_host("not a url").is_err());
    }

    #[test]
    fn write_hosts_uses_joined_certificates_and_config_mirrors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = AgentConfig::new("https://10.0.0.1:6443", "t");
        config.data_dir = dir.path().to_path_buf();
        config.registry_mirrors = vec!["docker.io".into()];
        config.registry_aliases = vec!["192.168.1.5:6443".into(), "10.0.0.1:6443".into()];
        let certs = config.registry_certs_dir();
        let report = write_hosts(&config, &certs).expect("write");
        let mut written = report.written.clone();
        written.sort();
        assert_eq!(written, ["10.0.0.1:6443", "192.168.1.5:6443", "docker.io"]);
        let text = std::fs::read_to_string(certs.join("docker.io").join("hosts.toml"))
            .expect("docker.io hosts");
        let tls = config.tls_dir();
        assert!(
            text.contains("[host.\"https://10.0.0.1:6443/v2/docker.io\"]"),
            "{text}"
        );
        assert!(
            text.contains(&format!("ca = \"{}\"", tls.join("ca.crt").display())),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "client = [[\"{}\", \"{}\"]]",
                tls.join("client.crt").display(),
                tls.join("client.key").display()
            )),
            "{text}"
        );
        assert!(!write_hosts(&config, &certs).expect("again").changed());
    }
}
