//! The server's PKI directory: CA, serving certificate and the built-in client certificates.

use std::path::Path;

use time::OffsetDateTime;

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

/// Whether the user `name` in `groups` is one of the cluster's servers: the API server's own
/// client certificate ([`APISERVER_CLIENT_USER`] in [`MASTERS_GROUP`]), which the servers present
/// to each other (monitoring and log replicas, load test results).
pub fn is_server_identity(name: &str, groups: &[String]) -> bool {
    name == APISERVER_CLIENT_USER && groups.iter().any(|g| g == MASTERS_GROUP)
}

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
    ensure_server_pki_for(
        dir,
        sans,
        std::time::Duration::from_secs(86_400 * u64::from(crate::LEAF_VALIDITY_DAYS)),
    )
}

/// [`ensure_server_pki`] issuing leaf certificates valid for `lifetime`; a leaf is also
/// re-issued once two thirds of its life are over or when it lives longer than `lifetime`.
pub fn ensure_server_pki_for(
    dir: &Path,
    sans: &SubjectAltNames,
    lifetime: std::time::Duration,
) -> Result<ServerPki, CertError> {
    ensure_dir(dir, DIR_MODE)?;
    let ca = load_or_create_ca(dir)?;
    let leaf = Leaf { ca: &ca, lifetime };

    let serving_paths = (dir.join(SERVING_CERT_FILE), dir.join(SERVING_KEY_FILE));
    let serving = match leaf.load(&serving_paths.0, &serving_paths.1)? {
        Some((leaf, have)) if covers(&have, sans) => leaf,
        existing => {
            let mut wanted = existing.map(|(_, have)| have).unwrap_or_default();
            merge_sans(&mut wanted, sans);
            let issued = ca.issue_server_for(SERVING_COMMON_NAME, &wanted, lifetime)?;
            write_leaf(&issued, &serving_paths.0, &serving_paths.1)?;
            issued
        }
    };

    let admin = ensure_client(&leaf, dir, ADMIN_CERT_FILE, ADMIN_KEY_FILE, ADMIN_USER)?;
    let apiserver_client = ensure_client(
        &leaf,
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

/// The CA and lifetime leaves are checked against and issued with.
struct Leaf<'a> {
    ca: &'a CertAuthority,
    lifetime: std::time::Duration,
}

impl Leaf<'_> {
    fn load(
        &self,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Option<(IssuedCert, SubjectAltNames)>, CertError> {
        load_leaf(self.ca, self.lifetime, cert_path, key_path)
    }
}

/// Loads a leaf pair; `None` when it is missing or must be re-issued.
fn load_leaf(
    ca: &CertAuthority,
    lifetime: std::time::Duration,
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
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    // a leaf living longer than the configured lifetime (plus its back-dating) is re-issued
    let max_life = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX) / 10 * 11 + 2;
    let usable = key_matches_cert(&key, &cert)
        && ca.signed(&der)
        && crate::renew_at(not_before, not_after) > now
        && not_after - not_before <= max_life;
    if !usable {
        return Ok(None);
    }
    let sans = cert_sans(&cert);
    Ok(Some((IssuedCert { cert_pem, key_pem }, sans)))
}

fn ensure_client(
    leaf: &Leaf<'_>,
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
    if let Some((existing, _)) = leaf.load(&cert_path, &key_path)? {
        let der = first_cert_der(&existing.cert_pem, &cert_path.display().to_string())?;
        if identity_from_der(&der).ok().as_ref() == Some(&wanted) {
            return Ok(existing);
        }
    }
    let issued = leaf.ca.issue_client_for(user, &groups, leaf.lifetime)?;
    write_leaf(&issued, &cert_path, &key_path)?;
    Ok(issued)
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
