//! containerd's registry host configuration for the node (`<containerd root>/certs.d/<host>/hosts.toml`,
//! read by containerd 1.6 on every pull, so no restart is needed): the cluster's embedded registry (the API
//! server's address) with the cluster CA and the node's client certificate, and the mirrored upstream hosts
//! (`docker.io`, `registry.k8s.io`, ...) sent to that registry first (`https://<registry>/v2/<host>` with
//! `override_path`), their own servers staying the fallback. Files are written atomically and only when their
//! content changes; files mini wrote for hosts no longer configured are removed. Also the check that the CRI
//! plugin is healthy and loaded this directory, from a verbose CRI `Status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::containerd::{toml_path, toml_str};
use crate::proto::StatusResponse;
use crate::ContainerdError;

/// Upstream hosts whose images are asked from the cluster registry first when no `--registry-mirror` is given.
pub const DEFAULT_MIRRORS: &[&str] = &["docker.io", "registry.k8s.io", "ghcr.io", "quay.io"];

/// The `--registry-mirror` value that turns mirroring off (only the cluster registry itself is configured).
pub const NO_MIRRORS: &str = "none";

/// First line of every hosts.toml mini writes; files without it belong to someone else and are left alone.
const HEADER: &str =
    "# Written by mini agent (cluster registry configuration); rewritten when it changes.";

/// What goes into `certs.d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHosts {
    /// The cluster registry: the API server's `host:port` as the agent reaches it.
    pub registry: String,
    /// Other names of the same registry (e.g. the server's advertised address when the agent joined over
    /// loopback); each gets a hosts.toml that trusts the cluster CA and sends the node's certificate.
    pub aliases: Vec<String>,
    /// Upstream hosts mirrored through the cluster registry.
    pub mirrors: Vec<String>,
    /// The cluster CA (PEM file).
    pub ca_file: PathBuf,
    /// The node's client certificate and key (PEM files).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// What [`RegistryHosts::write`] changed, host directory names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsWrite {
    /// hosts.toml files created or rewritten.
    pub written: Vec<String>,
    /// hosts.toml files of hosts no longer configured, removed.
    pub removed: Vec<String>,
}

impl HostsWrite {
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.removed.is_empty()
    }
}

/// Parses the repeatable `--registry-mirror HOST` flag: no value keeps [`DEFAULT_MIRRORS`], `none` alone
/// mirrors nothing, otherwise exactly the hosts given (`host` or `host:port`, de-duplicated, order kept).
pub fn parse_mirrors<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, String> {
    if values.is_empty() {
        return Ok(DEFAULT_MIRRORS.iter().map(|h| h.to_string()).collect());
    }
    let values: Vec<&str> = values.iter().map(|v| v.as_ref().trim()).collect();
    if values.contains(&NO_MIRRORS) {
        if values.len() > 1 {
            return Err(format!(
                "{NO_MIRRORS:?} turns mirroring off and cannot be combined with hosts"
            ));
        }
        return Ok(Vec::new());
    }
    let mut hosts: Vec<String> = Vec::new();
    for value in values {
        check_host(value)?;
        let host = value.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// A registry host as a hosts directory name: `name` or `name:port`, no scheme, path or spaces.
pub fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['.', '-'])
        && name != "..";
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a registry host (expected a name or IP with an optional :port, e.g. docker.io or 10.0.0.1:6443)"
        ))
    }
}

/// The default server of a mirrored host when the cluster registry cannot answer (containerd's own rule).
fn upstream_server(host: &str) -> String {
    match host {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        other => format!("https://{other}"),
    }
}

impl RegistryHosts {
    fn host_entry(&self, out: &mut String, url: &str, override_path: bool) {
        let _ = write!(
            out,
            "\n[host.{url}]\n\
             \x20 capabilities = [\"pull\", \"resolve\"]\n",
            url = toml_str(url),
        );
        if override_path {
            out.push_str("  override_path = true\n");
        }
        let _ = write!(
            out,
            "  ca = {ca}\n\
             \x20 client = [[{cert}, {key}]]\n",
            ca = toml_path(&self.ca_file),
            cert = toml_path(&self.client_cert),
            key = toml_path(&self.client_key),
        );
    }

    /// Every hosts.toml: host directory name -> file content. The cluster registry points at itself, its
    /// aliases at the registry first and themselves as the fallback; a mirrored host points at `https://<registry>/v2/<host>` (the repository `<host>/<path>`
    /// of the cluster registry) and falls back to its own server. A mirror equal to a registry name is
    /// skipped (the registry's own entry wins).
    pub fn render(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        let own: Vec<&String> = std::iter::once(&self.registry)
            .chain(self.aliases.iter())
            .collect();
        for host in &own {
            // the top-level settings configure containerd's fallback `server` entry, which is the same
            // registry: it must trust the cluster CA and send the node certificate as well
            let mut out = format!(
                "{HEADER}\nserver = {}\ncapabilities = [\"pull\", \"resolve\"]\nca = {}\nclient = [[{}, {}]]\n",
                toml_str(&format!("https://{host}")),
                toml_path(&self.ca_file),
                toml_path(&self.client_cert),
                toml_path(&self.client_key),
            );
            // an alias (the server address images name, the agent reaching the servers through
            // its load balancer) is asked through the registry first, so pulls fail over with the
            // balancer when that one server is gone; the alias itself stays the fallback
            self.host_entry(&mut out, &format!("https://{}", self.registry), false);
            files.insert(host.to_string(), out);
        }
        for mirror in &self.mirrors {
            if own.contains(&mirror) {
                continue;
            }
            let mut out = format!(
                "{HEADER}\nserver = {}\n",
                toml_str(&upstream_server(mirror))
            );
            self.host_entry(
                &mut out,
                &format!("https://{}/v2/{mirror}", self.registry),
                true,
            );
            files.insert(mirror.clone(), out);
        }
        files
    }

    /// Writes the files into `certs_dir` (temp file + fsync + rename, only those whose content differs) and
    /// removes the hosts.toml files mini wrote earlier for hosts no longer configured.
    pub fn write(&self, certs_dir: &Path) -> Result<HostsWrite, ContainerdError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| ContainerdError::Io { what, path, source }
        };
        let files = self.render();
        let mut report = HostsWrite::default();
        std::fs::create_dir_all(certs_dir).map_err(io("creating directory", certs_dir))?;
        for (host, text) in &files {
            let dir = certs_dir.join(host);
            let path = dir.join("hosts.toml");
            if std::fs::read_to_string(&path).is_ok_and(|old| old == *text) {
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
            write_atomic(&path, text.as_bytes())
                .map_err(io("writing registry hosts file", &path))?;
            report.written.push(host.clone());
        }
        let entries = std::fs::read_dir(certs_dir).map_err(io("reading directory", certs_dir))?;
        for entry in entries.flatten() {
            let host = entry.file_name().to_string_lossy().to_string();
            if files.contains_key(&host) {
                continue;
            }
            let path = entry.path().join("hosts.toml");
            let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(HEADER));
            if !ours {
                continue;
            }
            std::fs::remove_file(&path).map_err(io("removing registry hosts file", &path))?;
            // the directory goes too unless someone put certificates next to it
            let _ = std::fs::remove_dir(entry.path());
            report.removed.push(host);
        }
        Ok(report)
    }
}

/// Writes `path` through a temporary file in the same directory, fsynced, then renamed over it.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What a verbose CRI `Status` says about the runtime and its registry configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriRegistryStatus {
    pub runtime_ready: bool,
    pub network_ready: bool,
    /// Why a condition is false (`Type: reason message`), for logs.
    pub not_ready: Vec<String>,
    /// The CRI plugin's `registry.configPath` as it loaded it (`None`: not in the status).
    pub config_path: Option<String>,
}

impl CriRegistryStatus {
    /// Reads the conditions and the loaded configuration (the `config` JSON of a verbose `Status`).
    pub fn from_status(status: &StatusResponse) -> CriRegistryStatus {
        let conditions = status
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let is_true = |kind: &str| conditions.iter().any(|c| c.r#type == kind && c.status);
        let config_path = status
            .info
            .get("config")
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .and_then(|c| {
                c.pointer("/registry/configPath")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
            });
        CriRegistryStatus {
            runtime_ready: is_true("RuntimeReady"),
            network_ready: is_true("NetworkReady"),
            not_ready: conditions
                .iter()
                .filter(|c| !c.status)
                .map(|c| format!("{}: {} {}", c.r#type, c.reason, c.message))
                .collect(),
            config_path,
        }
    }

    /// Fails when the runtime is not ready or containerd did not load `certs_dir` as its registry config
    /// path (NetworkReady is reported, not required: it stays false until the node has its pod CIDR).
    pub fn check(&self, certs_dir: &Path) -> Result<(), String> {
        if !self.runtime_ready {
            return Err(format!(
                "the CRI plugin is not ready ({}); see the containerd log",
                self.not_ready.join("; ")
            ));
        }
        let expected = certs_dir.to_string_lossy();
        match &self.config_path {
            Some(path) if path.split(':').any(|p| p == expected) => Ok(()),
            Some(path) => Err(format!(
                "containerd's CRI registry config_path is {path:?}, not {expected:?}: its config.toml is not mini's \
                 (external containerd? set [plugins.\"io.containerd.grpc.v1.cri\".registry] config_path = {expected:?})"
            )),
            None => Err(
                "the CRI status does not show a registry config_path: containerd did not load mini's config.toml"
                    .to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RuntimeCondition, RuntimeStatus};

    fn hosts() -> RegistryHosts {
        RegistryHosts {
            registry: "10.0.0.1:6443".into(),
            aliases: vec!["mini.example:6443".into()],
            mirrors: parse_mirrors::<&str>(&[]).expect("defaults"),
            ca_file: "/var/lib/mini/agent/tls/ca.crt".into(),
            client_cert: "/var/lib/mini/agent/tls/client.crt".into(),
            client_key: "/var/lib/mini/agent/tls/client.key".into(),
        }
    }

    fn parse(text: &str) -> toml::Table {
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("invalid TOML ({e}):\n{text}"))
    }

    fn host_table<'a>(doc: &'a toml::Table, url: &str) -> &'a toml::Table {
        doc["host"]
            .as_table()
            .and_then(|h| h.get(url))
            .and_then(|h| h.as_table())
            .unwrap_or_else(|| panic!("no [host.{url:?}] in {doc:?}"))
    }

    fn assert_credentials(entry: &toml::Table) {
        let caps: Vec<&str> = entry["capabilities"]
            .as_array()
            .expect("capabilities")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(caps, ["pull", "resolve"]);
        assert_eq!(entry["ca"].as_str(), Some("/var/lib/mini/agent/tls/ca.crt"));
        let client = entry["client"].as_array().expect("client");
        assert_eq!(client.len(), 1);
        let pair: Vec<&str> = client[0]
            .as_array()
            .expect("pair")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(
            pair,
            [
                "/var/lib/mini/agent/tls/client.crt",
                "/var/lib/mini/agent/tls/client.key"
            ]
        );
    }

    #[test]
    fn render_registry_host_trusts_cluster_ca_and_sends_node_certificate() {
        let files = hosts().render();
        let doc = parse(&files["10.0.0.1:6443"]);
        assert_eq!(doc["server"].as_str(), Some("https://10.0.0.1:6443"));
        assert_credentials(&doc);
        let entry = host_table(&doc, "https://10.0.0.1:6443");
        assert_credentials(entry);
        assert!(entry.get("override_path").is_none());
        let alias = parse(&files["mini.example:6443"]);
        assert_credentials(host_table(&alias, "https://10.0.0.1:6443"));
    }

    #[test]
    fn render_alias_asks_registry_first_and_itself_as_fallback() {
        let files = hosts().render();
        let alias = parse(&files["mini.example:6443"]);
        assert_eq!(alias["server"].as_str(), Some("https://mini.example:6443"));
        assert_credentials(&alias);
        let hosts: Vec<&String> = alias["host"].as_table().expect("hosts").keys().collect();
        assert_eq!(hosts, ["https://10.0.0.1:6443"]);
        assert_credentials(host_table(&alias, "https://10.0.0.1:6443"));
    }

    #[test]
    fn render_mirrors_point_at_registry_path_with_upstream_fallback() {
        let files = hosts().render();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "10.0.0.1:6443",
                "docker.io",
                "ghcr.io",
                "mini.example:6443",
                "quay.io",
                "registry.k8s.io"
            ]
        );
        for (mirror, server) in [
            ("docker.io", "https://registry-1.docker.io"),
            ("registry.k8s.io", "https://registry.k8s.io"),
            ("ghcr.io", "https://ghcr.io"),
            ("quay.io", "https://quay.io"),
        ] {
            let doc = parse(&files[mirror]);
            assert_eq!(doc["server"].as_str(), Some(server), "{mirror}");
            let entry = host_table(&doc, &format!("https://10.0.0.1:6443/v2/{mirror}"));
            assert_eq!(entry["override_path"].as_bool(), Some(true), "{mirror}");
            assert_credentials(entry);
            assert_eq!(doc["host"].as_table().map(|h| h.len()), Some(1));
        }
    }

    #[test]
    fn render_escapes_paths() {
        let mut h = hosts();
        h.ca_file = PathBuf::from("/data \"x\"/ca.crt");
        let doc = parse(&h.render()["docker.io"]);
        let entry = host_table(&doc, "https://10.0.0.1:6443/v2/docker.io");
        assert_eq!(entry["ca"].as_str(), Some("/data \"x\"/ca.crt"));
    }

    #[test]
    fn write_twice_second_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs.d");
        let first = hosts().write(&certs).expect("write");
        assert_eq!(first.written.len(), 6, "{first:?}");
        let path = certs.join("docker.io").join("hosts.toml");
        let before = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let second = hosts().write(&certs).expect("write again");
        assert!(!second.changed(), "{second:?}");
        let after = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after);
        let leftovers: Vec<_> = std::fs::read_dir(certs.join("docker.io"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["hosts.toml"], "temp files left behind");
    }

    #[test]
    fn write_changed_mirrors_rewrites_and_removes_only_mini_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs.d");
        hosts().write(&certs).expect("write");
        // someone else's hosts file is kept
        std::fs::create_dir_all(certs.join("example.com")).expect("mkdir");
        std::fs::write(
            certs.join("example.com").join("hosts.toml"),
            "server = \"https://example.com\"\n",
        )
        .expect("write foreign");
        let mut changed = hosts();
        changed.mirrors = parse_mirrors(&["quay.io", "harbor.local:8443"]).expect("mirrors");
        changed.client_key = PathBuf::from("/elsewhere/client.key");
        let report = changed.write(&certs).expect("rewrite");
        let mut removed = report.removed.clone();
        removed.sort();
        assert_eq!(removed, ["docker.io", "ghcr.io", "registry.k8s.io"]);
        assert!(report.written.contains(&"harbor.local:8443".to_string()));
        assert!(report.written.contains(&"quay.io".to_string()));
        assert!(!certs.join("docker.io").exists());
        assert!(certs.join("example.com").join("hosts.toml").is_file());
        let doc = parse(
            &std::fs::read_to_string(certs.join("harbor.local:8443").join("hosts.toml"))
                .expect("read"),
        );
        assert_eq!(doc["server"].as_str(), Some("https://harbor.local:8443"));
        host_table(&doc, "https://10.0.0.1:6443/v2/harbor.local:8443");
    }

    #[test]
    fn parse_mirrors_defaults_none_and_explicit_hosts() {
        assert_eq!(
            parse_mirrors::<&str>(&[]).expect("defaults"),
            DEFAULT_MIRRORS
        );
        assert!(parse_mirrors(&["none"]).expect("none").is_empty());
        assert_eq!(
            parse_mirrors(&["Docker.io", "docker.io", "r.local:5000"]).expect("hosts"),
            ["docker.io", "r.local:5000"]
        );
        assert!(parse_mirrors(&["none", "docker.io"]).is_err());
        for bad in [
            "https://docker.io",
            "docker.io/library",
            "",
            "a b",
            "h:0",
            "h:x",
        ] {
            assert!(parse_mirrors(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    fn status(runtime: bool, network: bool, config: Option<&str>) -> StatusResponse {
        let condition = |kind: &str, ok: bool| RuntimeCondition {
            r#type: kind.to_string(),
            status: ok,
            reason: if ok { String::new() } else { "NotReady".into() },
            message: String::new(),
        };
        StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", runtime),
                    condition("NetworkReady", network),
                ],
            }),
            info: config
                .map(|c| {
                    [("config".to_string(), c.to_string())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn cri_registry_status_check_requires_runtime_ready_and_config_path() {
        let certs = Path::new("/var/lib/mini/agent/containerd/certs.d");
        let loaded = r#"{"registry":{"configPath":"/var/lib/mini/agent/containerd/certs.d"}}"#;
        let ok = CriRegistryStatus::from_status(&status(true, false, Some(loaded)));
        assert!(ok.runtime_ready && !ok.network_ready);
        ok.check(certs).expect("healthy without network");
        let down = CriRegistryStatus::from_status(&status(false, true, Some(loaded)));
        assert!(down
            .check(certs)
            .expect_err("not ready")
            .contains("RuntimeReady"));
        let other = CriRegistryStatus::from_status(&status(
            true,
            true,
            Some(r#"{"registry":{"configPath":"/etc/containerd/certs.d"}}"#),
        ));
        assert!(other
            .check(certs)
            .expect_err("other path")
            .contains("config_path"));
        let unknown = CriRegistryStatus::from_status(&status(true, true, None));
        assert!(unknown.check(certs).is_err());
    }
}
