//! The server's PKI directory: CA, serving certificate and the built-in client certificates.

use std::path::Path;

use time::{Duration, OffsetDateTime};

use crate::ca::{cert_sans, first_cert_der, key_matches_cert, parse_cert, parse_key};
use crate::fsutil::{ensure_dir, io_err, read_optional, write_atomic};
use crate::identity::identity_from_der;
use crate::{CertAuthority, CertError, ClientIdentity, IssuedCert, SubjectAltNames};

/// File names inside the PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const SERVING_CERT_FILE: &str = "serving.crt";
pub const SERVING_KEY_FILE: &str = "serving.key";
pub const ADMIN_CERT_FILE: &str = "admin.crt";
pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const APISERVER_CLIENT_CERT_FILE: &str = "apiserver-kubelet-client.crt";
pub const APISERVER_CLIENT_KEY_FILE: &str = "apiserver-kubelet-client.key";

/// Common name of the API server's serving certificate.
pub const SERVING_COMMON_NAME: &str = "kube-apiserver";
/// The cluster-admin identity.
pub const ADMIN_USER: &str = "system:admin";
/// The identity the API server presents to node agents (port 10250); agents accept only
/// client certificates signed by the cluster CA with exactly this common name.
pub const KUBELET_CLIENT_CN: &str = "system:kube-apiserver-kubelet-client";
/// The identity the API server uses towards kubelets (the same as [`KUBELET_CLIENT_CN`]).
pub const APISERVER_CLIENT_USER: &str = KUBELET_CLIENT_CN;
/// The group that bypasses authorization.
pub const MASTERS_GROUP: &str = "system:masters";

/// Leaf certificates expiring sooner than this are re-issued.
const RENEW_BEFORE: Duration = Duration::days(30);

const DIR_MODE: u32 = 0o700;
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Everything `mini server` keeps under `<data-dir>/server/tls`.
#[derive(Debug)]
pub struct ServerPki {
    pub ca: CertAuthority,
    pub serving: IssuedCert,
    /// CN `system:admin`, O `system:masters`.
    pub admin: IssuedCert,
    /// CN [`KUBELET_CLIENT_CN`], O `system:masters`: the API server's client certificate
    /// towards node agents (logs, exec, port-forward, stats).
    pub apiserver_client: IssuedCert,
}

/// Loads the PKI from `dir`, creating what is missing; re-issues the serving certificate when
/// it does not cover `sans`. Keys are written 0600.
///
/// The CA is never regenerated once its certificate exists. Leaf certificates are re-issued
/// when missing, not signed by the CA, not matching their key, for another identity, or
/// expiring within 30 days. Files that cannot be parsed are an error naming the file.
pub fn ensure_server_pki(dir: &Path, sans: &SubjectAltNames) -> Result<ServerPki, CertError> {
    ensure_dir(dir, DIR_MODE)?;
    let ca = load_or_create_ca(dir)?;

    let serving_paths = (dir.join(SERVING_CERT_FILE), dir.join(SERVING_KEY_FILE));
    let serving = match load_leaf(&ca, &serving_paths.0, &serving_paths.1)? {
        Some((leaf, have)) if covers(&have, sans) => leaf,
        existing => {
            let mut wanted = existing.map(|(_, have)| have).unwrap_or_default();
            merge_sans(&mut wanted, sans);
            let leaf = ca.issue_server(SERVING_COMMON_NAME, &wanted)?;
            write_leaf(&leaf, &serving_paths.0, &serving_paths.1)?;
            leaf
        }
    };

    let admin = ensure_client(&ca, dir, ADMIN_CERT_FILE, ADMIN_KEY_FILE, ADMIN_USER)?;
    let apiserver_client = ensure_client(
        &ca,
        dir,
        APISERVER_CLIENT_CERT_FILE,
        APISERVER_CLIENT_KEY_FILE,
        APISERVER_CLIENT_USER,
    )?;
    Ok(ServerPki {
        ca,
        serving,
        admin,
        apiserver_client,
    })
}

fn load_or_create_ca(dir: &Path) -> Result<CertAuthority, CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let cert_pem = read_optional(&cert_path)?;
    let key_pem = read_optional(&key_path)?;
    match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) => CertAuthority::from_pem_named(
            &cert_pem,
            &key_pem,
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
        ),
        (Some(_), None) => Err(io_err(
            &key_path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "ca certificate exists but its key is missing; refusing to regenerate the ca",
            ),
        )),
        // Without a certificate the CA was never handed out: (re)generating is safe.
        (None, _) => {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let ca = CertAuthority::generate(&format!("mini-ca@{now}"))?;
            write_atomic(&key_path, ca.key_pem().as_bytes(), KEY_MODE)?;
            write_atomic(&cert_path, ca.cert_pem().as_bytes(), CERT_MODE)?;
            Ok(ca)
        }
    }
}

/// Loads a leaf pair; `None` when it is missing or must be re-issued.
fn load_leaf(
    ca: &CertAuthority,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Option<(IssuedCert, SubjectAltNames)>, CertError> {
    let (Some(cert_pem), Some(key_pem)) = (read_optional(cert_path)?, read_optional(key_path)?)
    else {
        return Ok(None);
    };
    let cert_what = cert_path.display().to_string();
    let der = first_cert_der(&cert_pem, &cert_what)?;
    let cert = parse_cert(&der, &cert_what)?;
    let key = parse_key(&key_pem, &key_path.display().to_string())?;
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    let usable = key_matches_cert(&key, &cert)
        && ca.signed(&der)
        && cert.validity().not_after.to_datetime() > renew_at;
    if !usable {
        return Ok(None);
    }
    let sans = cert_sans(&cert);
    Ok(Some((IssuedCert { cert_pem, key_pem }, sans)))
}

fn ensure_client(
    ca: &CertAuthority,
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    user: &str,
) -> Result<IssuedCert, CertError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    let groups = vec![MASTERS_GROUP.to_string()];
    let wanted = ClientIdentity {
        user: user.to_string(),
        groups: groups.clone(),
    };
    if let Some((leaf, _)) = load_leaf(ca, &cert_path, &key_path)? {
        let der = first_cert_der(&leaf.cert_pem, &cert_path.display().to_string())?;
        if identity_from_der(&der).ok().as_ref() == Some(&wanted) {
            return Ok(leaf);
        }
    }
    let leaf = ca.issue_client(user, &groups)?;
    write_leaf(&leaf, &cert_path, &key_path)?;
    Ok(leaf)
}

fn write_leaf(leaf: &IssuedCert, cert_path: &Path, key_path: &Path) -> Result<(), CertError> {
    write_atomic(key_path, leaf.key_pem.as_bytes(), KEY_MODE)?;
    write_atomic(cert_path, leaf.cert_pem.as_bytes(), CERT_MODE)
}

/// Whether `have` includes every DNS name (case-insensitively) and IP of `want`.
fn covers(have: &SubjectAltNames, want: &SubjectAltNames) -> bool {
    want.dns
        .iter()
        .all(|d| have.dns.iter().any(|h| h.eq_ignore_ascii_case(d)))
        && want.ips.iter().all(|ip| have.ips.contains(ip))
}

/// Adds the names of `extra` missing from `into`, keeping order.
fn merge_sans(into: &mut SubjectAltNames, extra: &SubjectAltNames) {
    for d in &extra.dns {
        if !into.dns.iter().any(|h| h.eq_ignore_ascii_case(d)) {
            into.dns.push(d.clone());
        }
    }
    for ip in &extra.ips {
        if !into.ips.contains(ip) {
            into.ips.push(*ip);
        }
    }
}
