//! A client for the cluster's registry (`https://<server>/v2/`) from a kubeconfig: the current
//! context's server URL, CA, and the user's client certificate, bearer token or basic credentials.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::auth::Credentials;
use crate::client::ClientConfig;
use crate::RegClientError;

/// The kubeconfig the CLI uses when none is given: `$KUBECONFIG` (its first entry), else the
/// server's admin kubeconfig under `data_dir`.
pub fn default_kubeconfig(env: Option<&str>, data_dir: &Path) -> PathBuf {
    env.and_then(|v| v.split(':').find(|p| !p.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("server").join("admin.kubeconfig"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    #[serde(default)]
    cluster: Cluster,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: Context,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    server: String,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

/// Reads the kubeconfig at `path` and returns the registry client config of its current context.
pub fn client_config_from_kubeconfig(path: &Path) -> Result<ClientConfig, RegClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegClientError::Kubeconfig {
        path: path.display().to_string(),
        reason: format!("{e}; pass --kubeconfig or set KUBECONFIG"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    client_config_from_yaml(&text, base).map_err(|reason| RegClientError::Kubeconfig {
        path: path.display().to_string(),
        reason,
    })
}

fn data_or_file(
    data: &Option<String>,
    file: &Option<String>,
    base: &Path,
    what: &str,
) -> Result<Option<String>, String> {
    if let Some(data) = data.as_deref().filter(|d| !d.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("{what}-data is not base64: {e}"))?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{what}-data is not PEM text"));
    }
    if let Some(file) = file.as_deref().filter(|f| !f.is_empty()) {
        let p = base.join(file);
        return std::fs::read_to_string(&p)
            .map(Some)
            .map_err(|e| format!("{what} {}: {e}", p.display()));
    }
    Ok(None)
}

/// Parses kubeconfig YAML; relative file names are relative to `base`.
pub(crate) fn client_config_from_yaml(text: &str, base: &Path) -> Result<ClientConfig, String> {
    let kc: Kubeconfig =
        serde_yaml_ng::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let context_name = kc
        .current_context
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or("no current-context")?;
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .map(|c| &c.context)
        .ok_or_else(|| format!("context {context_name:?} not found"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .map(|c| &c.cluster)
        .ok_or_else(|| format!("cluster {:?} not found", context.cluster))?;
    let user = match &context.user {
        Some(name) => Some(
            kc.users
                .iter()
                .find(|u| &u.name == name)
                .map(|u| &u.user)
                .ok_or_else(|| format!("user {name:?} not found"))?,
        ),
        None => None,
    };
    if cluster.server.is_empty() {
        return Err(format!("cluster {:?} has no server", context.cluster));
    }
    let mut config = ClientConfig::new(cluster.server.trim_end_matches('/'));
    config.ca_pem = data_or_file(
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
        base,
        "certificate-authority",
    )?;
    if let Some(user) = user {
        let cert = data_or_file(
            &user.client_certificate_data,
            &user.client_certificate,
            base,
            "client-certificate",
        )?;
        let key = data_or_file(&user.client_key_data, &user.client_key, base, "client-key")?;
        config.client_cert = match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Some(mini_certs::IssuedCert { cert_pem, key_pem }),
            (None, None) => None,
            _ => {
                return Err(
                    "the user has a client certificate without its key (or the reverse)".into(),
                )
            }
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) if !t.is_empty() => Some(t.trim().to_string()),
            (_, Some(f)) if !f.is_empty() => {
                let p = base.join(f);
                Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| format!("token-file {}: {e}", p.display()))?
                        .trim()
                        .to_string(),
                )
            }
            _ => None,
        };
        config.credentials = match (token, &user.username, &user.password) {
            (Some(t), _, _) => Credentials::Bearer(t),
            (None, Some(u), Some(p)) => Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            _ => Credentials::None,
        };
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn client_config_admin_kubeconfig_has_server_ca_and_client_cert() {
        let yaml = mini_certs::kubeconfig_yaml(
            "https://10.0.0.1:6443",
            "CA PEM",
            &mini_certs::IssuedCert {
                cert_pem: "CERT".into(),
                key_pem: "KEY".into(),
            },
        );
        let c = client_config_from_yaml(&yaml, Path::new("/")).unwrap();
        assert_eq!(c.base_url, "https://10.0.0.1:6443");
        assert_eq!(c.ca_pem.as_deref(), Some("CA PEM"));
        let cert = c.client_cert.unwrap();
        assert_eq!(
            (cert.cert_pem.as_str(), cert.key_pem.as_str()),
            ("CERT", "KEY")
        );
        assert_eq!(c.credentials, Credentials::None);
    }

    #[test]
    fn client_config_token_user_uses_bearer_and_ca_file_relative_to_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "FILE CA").unwrap();
        let yaml = "clusters:\n- name: c\n  cluster:\n    server: https://h:1/\n    certificate-authority: ca.crt\n\
users:\n- name: u\n  user:\n    token: abc\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
current-context: x\n";
        let c = client_config_from_yaml(yaml, dir.path()).unwrap();
        assert_eq!(c.base_url, "https://h:1");
        assert_eq!(c.ca_pem.as_deref(), Some("FILE CA"));
        assert_eq!(c.credentials, Credentials::Bearer("abc".into()));
        assert!(c.client_cert.is_none());
    }

    #[test]
    fn client_config_missing_context_is_error() {
        let yaml = format!(
            "clusters:\n- name: c\n  cluster:\n    server: https://h\n    certificate-authority-data: {}\ncurrent-context: nope\n",
            b64("x")
        );
        let err = client_config_from_yaml(&yaml, Path::new("/")).unwrap_err();
        assert!(err.contains("context \"nope\" not found"), "{err}");
    }

    #[test]
    fn default_kubeconfig_env_first_entry_wins_else_admin_kubeconfig() {
        assert_eq!(
            default_kubeconfig(Some("/a:/b"), Path::new("/var/lib/mini")),
            PathBuf::from("/a")
        );
        assert_eq!(
            default_kubeconfig(None, Path::new("/var/lib/mini")),
            PathBuf::from("/var/lib/mini/server/admin.kubeconfig")
        );
    }
}
