//! The server's certificates while it runs: renewal at two thirds of their life, `mini
//! certificate rotate` (renew now) and CA rotation with an overlap, all swapped into the TLS
//! configurations in use and written to `<data-dir>/server/tls` (and the admin kubeconfig and
//! node token) so a restart finds them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mini_apiserver::ApiServer;
use mini_certs::{
    CertAuthority, CertHolder, CertInfo, IssuedCert, ServerPki, SubjectAltNames, TrustHolder,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{CertLine, CertRotateError, CertStatus};

/// How long the old CA stays trusted after `mini certificate rotate-ca` unless told.
pub const DEFAULT_CA_OVERLAP: Duration = Duration::from_secs(24 * 3600);

const PREVIOUS_CA_FILE: &str = "ca-previous.crt";
const CROSS_CA_FILE: &str = "ca-cross.crt";
const NEXT_CA_CERT_FILE: &str = "ca-next.crt";
const NEXT_CA_KEY_FILE: &str = "ca-next.key";
const STATE_FILE: &str = "rotation.json";
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Where the server's certificates live and how long leaves are issued for.
#[derive(Debug, Clone)]
pub struct ServerCertsConfig {
    /// `<data-dir>/server/tls`.
    pub tls_dir: PathBuf,
    /// The names the serving certificate covers.
    pub sans: SubjectAltNames,
    /// Leaf lifetime (one year unless `--cert-lifetime`).
    pub lifetime: Duration,
}

/// Files that carry the CA bundle or the admin certificate, rewritten when they change.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// The admin kubeconfig: path, server URL, file mode.
    pub kubeconfig: Option<(PathBuf, String, u32)>,
    /// The node token file and the join secret (`K10<bundle hash>::server:<secret>`).
    pub node_token: Option<(PathBuf, String)>,
}

/// What `rotation.json` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    #[serde(default)]
    renew_issued_before: i64,
    #[serde(default)]
    retire_ca_at: Option<i64>,
}

struct State {
    ca: Arc<CertAuthority>,
    /// The old CA during an overlap.
    previous: Option<String>,
    /// The signing CA cross-signed by the old one, during an overlap.
    cross: Option<String>,
    admin: IssuedCert,
    persisted: Persisted,
}

/// The server's certificates: the swappable serving and kubelet-client certificates, the
/// trusted bundle, the signing CA.
pub struct ServerCerts {
    config: ServerCertsConfig,
    serving: Arc<CertHolder>,
    kubelet_client: Arc<CertHolder>,
    trust: Arc<TrustHolder>,
    state: Mutex<State>,
    api: OnceLock<ApiServer>,
    publish: OnceLock<Publish>,
    /// Several servers: the CA and rotation state shared through the datastore.
    shared: OnceLock<Arc<mini_bootstrap::Shared>>,
}

fn read_persisted(dir: &Path) -> Result<Persisted, CertRotateError> {
    Ok(match mini_certs::read_optional(&dir.join(STATE_FILE))? {
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            file_err(
                &dir.join(STATE_FILE),
                format!("not understood ({e}); remove it to start afresh"),
            )
        })?,
        None => Persisted::default(),
    })
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCerts")
            .field("tls_dir", &self.config.tls_dir)
            .finish_non_exhaustive()
    }
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> CertRotateError {
    CertRotateError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn remove_file(path: &Path) -> Result<(), CertRotateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(path, e)),
    }
}

/// The first certificate of a PEM chain, re-encoded.
fn first_cert(pem: &str) -> Result<String, CertRotateError> {
    Ok(mini_certs::split_bundle(pem)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// `leaf` with `cross` (if any) appended to its chain.
fn with_chain(leaf: IssuedCert, cross: Option<&str>) -> Result<IssuedCert, CertRotateError> {
    let mut cert_pem = first_cert(&leaf.cert_pem)?;
    if let Some(cross) = cross {
        cert_pem.push_str(cross);
    }
    Ok(IssuedCert {
        cert_pem,
        key_pem: leaf.key_pem,
    })
}

impl ServerCerts {
    /// Loads (or creates) the PKI in `config.tls_dir`, re-issuing what is due, and the state
    /// of a CA rotation in progress.
    pub fn open(config: ServerCertsConfig) -> Result<Arc<Self>, CertRotateError> {
        let dir = &config.tls_dir;
        let pki = mini_certs::ensure_server_pki_for(dir, &config.sans, config.lifetime)?;
        let previous = mini_certs::read_optional(&dir.join(PREVIOUS_CA_FILE))?;
        let cross = mini_certs::read_optional(&dir.join(CROSS_CA_FILE))?;
        let persisted = read_persisted(dir)?;
        // an old CA is trusted only during an overlap (the cluster's bootstrap data may still
        // carry one retired since)
        let (previous, cross) = match (previous, cross, persisted.retire_ca_at) {
            (Some(p), Some(c), Some(_)) => (Some(p), Some(c)),
            _ => (None, None),
        };
        let ServerPki {
            ca,
            serving,
            admin,
            apiserver_client,
        } = pki;
        let bundle = bundle(&ca, previous.as_deref())?;
        let serving = with_chain(serving, cross.as_deref())?;
        let apiserver_client = with_chain(apiserver_client, cross.as_deref())?;
        let admin = with_chain(admin, cross.as_deref())?;
        let certs = ServerCerts {
            serving: CertHolder::new(&serving)?,
            kubelet_client: CertHolder::new(&apiserver_client)?,
            trust: TrustHolder::new(&bundle)?,
            state: Mutex::new(State {
                ca: Arc::new(ca),
                previous,
                cross,
                admin: admin.clone(),
                persisted,
            }),
            api: OnceLock::new(),
            publish: OnceLock::new(),
            shared: OnceLock::new(),
            config,
        };
        certs.write_leaf(
            mini_certs::SERVING_CERT_FILE,
            mini_certs::SERVING_KEY_FILE,
            &serving,
        )?;
        certs.write_leaf(
            mini_certs::APISERVER_CLIENT_CERT_FILE,
            mini_certs::APISERVER_CLIENT_KEY_FILE,
            &apiserver_client,
        )?;
        certs.write_leaf(
            mini_certs::ADMIN_CERT_FILE,
            mini_certs::ADMIN_KEY_FILE,
            &admin,
        )?;
        Ok(Arc::new(certs))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The PKI as loaded now (for the server's start: the CA, the admin certificate...).
    pub fn pki(&self) -> Result<ServerPki, CertRotateError> {
        let state = self.lock();
        Ok(ServerPki {
            ca: CertAuthority::from_pem(state.ca.cert_pem(), &state.ca.key_pem())?,
            serving: self.serving.current(),
            admin: state.admin.clone(),
            apiserver_client: self.kubelet_client.current(),
        })
    }

    /// The CAs trusted now (`/cacerts`, kubeconfigs, the join token's hash).
    pub fn bundle_pem(&self) -> String {
        self.trust.pem()
    }

    /// The CA that signs now.
    pub fn ca(&self) -> Arc<CertAuthority> {
        self.lock().ca.clone()
    }

    /// How long leaves are issued for.
    pub fn lifetime(&self) -> Duration {
        self.config.lifetime
    }

    /// The API server's TLS: serving certificate and client trust, both swapped online.
    pub fn server_tls(&self) -> Result<Arc<rustls::ServerConfig>, CertRotateError> {
        Ok(mini_certs::server_tls_config_dynamic(
            self.serving.clone(),
            self.trust.clone(),
        )?)
    }

    /// TLS towards node agents: the kubelet client certificate and the trusted bundle.
    pub fn node_tls(&self) -> Result<Arc<rustls::ClientConfig>, CertRotateError> {
        let mut config = mini_certs::client_tls_config_dynamic(
            self.trust.clone(),
            Some(self.kubelet_client.clone()),
        )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Wires the certificates into the running API server (signing CA and `/cacerts`, node
    /// TLS, the `/v1-mini/certificates/` endpoints), keeps `publish` up to date, and renews
    /// in the background until `shutdown`.
    pub fn attach(
        self: &Arc<Self>,
        api: &ApiServer,
        publish: Publish,
        shutdown: CancellationToken,
    ) -> Result<(), CertRotateError> {
        let _ = self.api.set(api.clone());
        let _ = self.publish.set(publish);
        api.set_node_tls(self.node_tls()?);
        self.publish_bundle(&self.lock())?;
        crate::route::install(api, self.clone());
        let certs = self.clone();
        tokio::spawn(async move { certs.run(shutdown).await });
        Ok(())
    }

    /// Several servers: a CA rotation or `mini certificate rotate` made here is published at
    /// once, and one another server made is taken as soon as the bootstrap data brings its
    /// files (the new CA signs, both are trusted, every leaf is re-issued). Until `shutdown`.
    pub fn share(
        self: &Arc<Self>,
        shared: Arc<mini_bootstrap::Shared>,
        shutdown: CancellationToken,
    ) {
        let mut changes = shared.subscribe();
        if self.shared.set(shared).is_err() {
            return;
        }
        let certs = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                if let Err(e) = certs.reload_shared() {
                    tracing::error!(error = %e, "taking another server's certificate rotation failed");
                }
            }
        });
    }

    /// Shares a rotation made here with the other servers (a no-op on a server of its own).
    pub(crate) async fn publish_shared(&self) {
        if let Some(shared) = self.shared.get() {
            if let Err(e) = shared.publish().await {
                tracing::warn!(error = %e, "sharing the rotation with the other servers failed; retried within a minute");
            }
        }
    }

    /// Takes the CA files and rotation state as they are on disk now (written from another
    /// server's rotation): a new CA signs and is trusted beside the old one, every leaf is
    /// re-issued. Returns whether anything changed.
    pub fn reload_shared(&self) -> Result<bool, CertRotateError> {
        let dir = &self.config.tls_dir;
        let (Some(ca_pem), Some(key_pem)) = (
            mini_certs::read_optional(&dir.join(mini_certs::CA_CERT_FILE))?,
            mini_certs::read_optional(&dir.join(mini_certs::CA_KEY_FILE))?,
        ) else {
            return Ok(false);
        };
        let persisted = read_persisted(dir)?;
        let mut state = self.lock();
        let ca_changed = ca_pem != state.ca.cert_pem();
        if !ca_changed && persisted == state.persisted {
            return Ok(false);
        }
        if ca_changed {
            let ca = CertAuthority::from_pem(&ca_pem, &key_pem)?;
            let (previous, cross) = match persisted.retire_ca_at {
                Some(_) => (
                    mini_certs::read_optional(&dir.join(PREVIOUS_CA_FILE))?,
                    mini_certs::read_optional(&dir.join(CROSS_CA_FILE))?,
                ),
                None => (None, None),
            };
            state.ca = Arc::new(ca);
            state.previous = previous;
            state.cross = cross;
            self.trust
                .swap(&bundle(&state.ca, state.previous.as_deref())?)?;
            tracing::info!("took the CA another server rotated: the new CA signs, the old one stays trusted until it retires");
        }
        state.persisted = persisted;
        self.renew(&mut state, mini_certs::now_unix(), ca_changed)?;
        Ok(true)
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let every = crate::check_interval(self.config.lifetime);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.tick(mini_certs::now_unix()) {
                tracing::error!(error = %e, "renewing the server's certificates failed; retrying");
            }
        }
    }

    /// Renews what is due at `now` and retires an old CA whose overlap is over.
    pub fn tick(&self, now: i64) -> Result<(), CertRotateError> {
        let mut state = self.lock();
        let retire = state.persisted.retire_ca_at.is_some_and(|at| at <= now);
        if retire {
            self.retire(&mut state)?;
        }
        self.renew(&mut state, now, retire)
    }

    /// `mini certificate rotate`: every leaf of the server now; agents renew theirs when they
    /// next ask (within a twentieth of their certificates' life, at most a minute).
    pub fn rotate(&self) -> Result<CertStatus, CertRotateError> {
        let now = mini_certs::now_unix();
        let mut state = self.lock();
        state.persisted.renew_issued_before = now;
        self.save(&state)?;
        self.renew(&mut state, now, true)?;
        drop(state);
        self.status()
    }

    /// `mini certificate rotate-ca`: a new CA signs from now on; the old one stays trusted for
    /// `overlap`, then is retired. Every leaf is re-issued at once (carrying the new CA
    /// cross-signed by the old), agents renew when they next ask.
    pub fn rotate_ca(&self, overlap: Duration) -> Result<CertStatus, CertRotateError> {
        let now = mini_certs::now_unix();
        let mut state = self.lock();
        if let Some(at) = state.persisted.retire_ca_at {
            return Err(CertRotateError::RotationInProgress {
                retire_at: rfc3339(at),
            });
        }
        let dir = &self.config.tls_dir;
        let new = CertAuthority::generate(&format!("mini-ca@{now}"))?;
        let cross = state.ca.cross_sign(&new)?;
        let old_pem = state.ca.cert_pem().to_string();
        // the old CA and the cross certificate first: a crash before the switch leaves a
        // complete old PKI, one after it a complete new one
        mini_certs::write_atomic(&dir.join(PREVIOUS_CA_FILE), old_pem.as_bytes(), CERT_MODE)?;
        mini_certs::write_atomic(&dir.join(CROSS_CA_FILE), cross.as_bytes(), CERT_MODE)?;
        mini_certs::write_atomic(
            &dir.join(NEXT_CA_KEY_FILE),
            new.key_pem().as_bytes(),
            KEY_MODE,
        )?;
        mini_certs::write_atomic(
            &dir.join(NEXT_CA_CERT_FILE),
            new.cert_pem().as_bytes(),
            CERT_MODE,
        )?;
        for (from, to) in [
            (NEXT_CA_KEY_FILE, mini_certs::CA_KEY_FILE),
            (NEXT_CA_CERT_FILE, mini_certs::CA_CERT_FILE),
        ] {
            std::fs::rename(dir.join(from), dir.join(to))
                .map_err(|e| file_err(&dir.join(to), e))?;
        }
        state.ca = Arc::new(new);
        state.previous = Some(old_pem);
        state.cross = Some(cross);
        let overlap = i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX / 2);
        state.persisted.retire_ca_at = Some(now.saturating_add(overlap));
        state.persisted.renew_issued_before = now;
        self.save(&state)?;
        self.trust
            .swap(&bundle(&state.ca, state.previous.as_deref())?)?;
        tracing::info!(
            retire_at = rfc3339(now.saturating_add(overlap)),
            "CA rotated: the new CA signs, the old one stays trusted until it retires"
        );
        self.renew(&mut state, now, true)?;
        drop(state);
        self.status()
    }

    /// The old CA leaves every bundle; leaves drop the cross certificate.
    fn retire(&self, state: &mut State) -> Result<(), CertRotateError> {
        let dir = &self.config.tls_dir;
        state.previous = None;
        state.cross = None;
        state.persisted.retire_ca_at = None;
        self.save(state)?;
        remove_file(&dir.join(PREVIOUS_CA_FILE))?;
        remove_file(&dir.join(CROSS_CA_FILE))?;
        self.trust.swap(&bundle(&state.ca, None)?)?;
        tracing::info!("the previous CA is retired: only the current CA is trusted");
        Ok(())
    }

    /// Re-issues the leaves that are due (all with `all`) and publishes what changed.
    fn renew(&self, state: &mut State, now: i64, all: bool) -> Result<(), CertRotateError> {
        let before = state.persisted.renew_issued_before;
        let due = |holder: &IssuedCert| all || crate::leaf_due(&holder.cert_pem, before, now);
        let lifetime = self.config.lifetime;
        let cross = state.cross.clone();
        let serving = self.serving.current();
        if due(&serving) {
            let mut sans = cert_sans(&serving.cert_pem).unwrap_or_default();
            merge(&mut sans, &self.config.sans);
            let leaf =
                state
                    .ca
                    .issue_server_for(mini_certs::SERVING_COMMON_NAME, &sans, lifetime)?;
            let leaf = with_chain(leaf, cross.as_deref())?;
            self.write_leaf(
                mini_certs::SERVING_CERT_FILE,
                mini_certs::SERVING_KEY_FILE,
                &leaf,
            )?;
            self.serving.swap(&leaf)?;
            tracing::info!(expires = expiry(&leaf), "renewed the serving certificate");
        }
        let client = self.kubelet_client.current();
        if due(&client) {
            let leaf = state.ca.issue_client_for(
                mini_certs::APISERVER_CLIENT_USER,
                &[mini_certs::MASTERS_GROUP.to_string()],
                lifetime,
            )?;
            let leaf = with_chain(leaf, cross.as_deref())?;
            self.write_leaf(
                mini_certs::APISERVER_CLIENT_CERT_FILE,
                mini_certs::APISERVER_CLIENT_KEY_FILE,
                &leaf,
            )?;
            self.kubelet_client.swap(&leaf)?;
            tracing::info!(
                expires = expiry(&leaf),
                "renewed the kubelet client certificate"
            );
        }
        if due(&state.admin) {
            let leaf = state.ca.issue_client_for(
                mini_certs::ADMIN_USER,
                &[mini_certs::MASTERS_GROUP.to_string()],
                lifetime,
            )?;
            let leaf = with_chain(leaf, cross.as_deref())?;
            self.write_leaf(
                mini_certs::ADMIN_CERT_FILE,
                mini_certs::ADMIN_KEY_FILE,
                &leaf,
            )?;
            state.admin = leaf;
            tracing::info!(
                expires = expiry(&state.admin),
                "renewed the admin certificate"
            );
            self.publish_bundle(state)?;
        } else if all {
            self.publish_bundle(state)?;
        }
        Ok(())
    }

    /// Hands the signing CA and the bundle to the API server and rewrites the admin
    /// kubeconfig and the node token.
    fn publish_bundle(&self, state: &State) -> Result<(), CertRotateError> {
        let bundle = self.trust.pem();
        if let Some(api) = self.api.get() {
            api.set_cluster_ca(state.ca.clone(), bundle.clone(), self.config.lifetime);
        }
        let Some(publish) = self.publish.get() else {
            return Ok(());
        };
        if let Some((path, url, mode)) = &publish.kubeconfig {
            mini_certs::write_kubeconfig(path, url, &bundle, &state.admin, *mode)?;
        }
        if let Some((path, secret)) = &publish.node_token {
            let token = mini_certs::JoinToken::format(&bundle, secret);
            mini_certs::write_atomic(path, token.as_bytes(), KEY_MODE)?;
        }
        Ok(())
    }

    fn save(&self, state: &State) -> Result<(), CertRotateError> {
        let path = self.config.tls_dir.join(STATE_FILE);
        let text = serde_json::to_string(&state.persisted).map_err(|e| file_err(&path, e))?;
        Ok(mini_certs::write_atomic(&path, text.as_bytes(), CERT_MODE)?)
    }

    fn write_leaf(
        &self,
        cert_file: &str,
        key_file: &str,
        leaf: &IssuedCert,
    ) -> Result<(), CertRotateError> {
        let dir = &self.config.tls_dir;
        mini_certs::write_atomic(&dir.join(key_file), leaf.key_pem.as_bytes(), KEY_MODE)?;
        Ok(mini_certs::write_atomic(
            &dir.join(cert_file),
            leaf.cert_pem.as_bytes(),
            CERT_MODE,
        )?)
    }

    /// Every certificate the server holds now, and the rotation state.
    pub fn status(&self) -> Result<CertStatus, CertRotateError> {
        let state = self.lock();
        let dir = &self.config.tls_dir;
        let mut certificates = Vec::new();
        let mut add = |file: &str, pem: &str| -> Result<(), CertRotateError> {
            let info = CertInfo::from_pem(pem, file)?;
            certificates.push(CertLine {
                path: dir.join(file).display().to_string(),
                renew_at: if info.is_ca {
                    info.not_after
                } else {
                    info.renew_at()
                },
                subject: info.subject,
                issuer: info.issuer,
                not_before: info.not_before,
                not_after: info.not_after,
            });
            Ok(())
        };
        add(mini_certs::CA_CERT_FILE, state.ca.cert_pem())?;
        if let Some(previous) = &state.previous {
            add(PREVIOUS_CA_FILE, previous)?;
        }
        if let Some(cross) = &state.cross {
            add(CROSS_CA_FILE, cross)?;
        }
        add(
            mini_certs::SERVING_CERT_FILE,
            &self.serving.current().cert_pem,
        )?;
        add(
            mini_certs::APISERVER_CLIENT_CERT_FILE,
            &self.kubelet_client.current().cert_pem,
        )?;
        add(mini_certs::ADMIN_CERT_FILE, &state.admin.cert_pem)?;
        Ok(CertStatus {
            certificates,
            ca_retires_at: state.persisted.retire_ca_at,
            renew_issued_before: state.persisted.renew_issued_before,
            lifetime_seconds: self.config.lifetime.as_secs(),
        })
    }

    /// What a node should trust now and whether it must renew at once.
    pub fn node_policy(&self) -> crate::NodeCertPolicy {
        let state = self.lock();
        crate::NodeCertPolicy {
            ca_bundle: self.trust.pem(),
            renew_issued_before: state.persisted.renew_issued_before,
        }
    }
}

/// The trust bundle: the signing CA first, then the old one during an overlap.
fn bundle(ca: &CertAuthority, previous: Option<&str>) -> Result<String, CertRotateError> {
    let mut parts = vec![ca.cert_pem()];
    parts.extend(previous);
    Ok(mini_certs::join_bundle(parts)?)
}

/// The DNS and IP names of a PEM certificate.
fn cert_sans(pem: &str) -> Option<SubjectAltNames> {
    mini_certs::cert_sans_of_pem(pem).ok()
}

fn merge(into: &mut SubjectAltNames, extra: &SubjectAltNames) {
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

fn expiry(leaf: &IssuedCert) -> String {
    CertInfo::from_pem(&leaf.cert_pem, "certificate")
        .map(|i| rfc3339(i.not_after))
        .unwrap_or_default()
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(unix: i64) -> String {
    mini_certs::format_unix(unix)
}
