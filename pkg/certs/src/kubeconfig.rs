//! Kubeconfig files with an embedded CA and client certificate.

use std::path::Path;

use base64::Engine;

use crate::fsutil::{ensure_parent, write_atomic};
use crate::{CertError, IssuedCert};

/// Quotes `s` as a YAML double-quoted scalar (JSON string escaping is valid YAML).
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A kubeconfig YAML with embedded CA and client certificate.
///
/// The cluster, user and context are all named `default`, and `default` is the current
/// context.
pub fn kubeconfig_yaml(server_url: &str, ca_pem: &str, client: &IssuedCert) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(ca_pem),
        server = yaml_quote(server_url),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Writes `kubeconfig_yaml` to `path` with the given file mode (e.g. 0o600).
///
/// Parent directories are created; the file is replaced atomically.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    client: &IssuedCert,
    mode: u32,
) -> Result<(), CertError> {
    ensure_parent(path)?;
    let yaml = kubeconfig_yaml(server_url, ca_pem, client);
    write_atomic(path, yaml.as_bytes(), mode)
}
