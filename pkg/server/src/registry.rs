//! Wiring of the embedded image registry into the server: the cluster's identities and RBAC as
//! the registry's `Access`, the registry as the API server's `/v2/` streaming route and as the
//! catalog behind `registry.mini.dev`, the server's image directory imported into it, and (several
//! servers on one datastore) the other servers' registries as its peers for blobs it lacks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::StreamExt;
use mini_apiserver::{
    ApiServer, Body, ContainerCommit, ImageCatalog, RepositoryEntry, StreamingRoute, TagEntry,
    REGISTRY_GROUP,
};
use mini_rbac::UserInfo;
use mini_registry::{Registry, RegistryConfig};
use tokio_util::sync::CancellationToken;

use crate::{RegistrySettings, ServerError};

/// How often the server's image directory is looked at for new tarballs.
const IMAGE_DIR_RESCAN: Duration = Duration::from_secs(10);
/// Between replication passes when no push nudges one (a push anywhere starts one at once).
const REPLICATE_PERIOD: Duration = Duration::from_secs(30);

/// The other servers' registries: the servers with a live Lease (`mini_peers`), reached over
/// HTTPS with the cluster's CA bundle and this server's admin certificate (the CA is shared, so
/// every server accepts it). Clients are kept while the server stays live and the certificates
/// unchanged (a CA rotation makes new ones).
pub(crate) struct ServerPeers {
    pub client: kube::Client,
    /// This server's own endpoint (left out).
    pub own: SocketAddr,
    pub certs: Arc<mini_certrotate::ServerCerts>,
    clients: std::sync::Mutex<HashMap<SocketAddr, (String, Arc<mini_regclient::RegistryClient>)>>,
}

impl ServerPeers {
    pub fn new(
        client: kube::Client,
        own: SocketAddr,
        certs: Arc<mini_certrotate::ServerCerts>,
    ) -> Self {
        ServerPeers {
            client,
            own,
            certs,
            clients: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl mini_registry::Peers for ServerPeers {
    async fn registries(&self) -> Vec<Arc<mini_regclient::RegistryClient>> {
        let live = match mini_peers::live_servers(&self.client).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "registry: listing the other servers failed");
                return Vec::new();
            }
        };
        let admin = match self.certs.pki() {
            Ok(pki) => pki.admin,
            Err(e) => {
                tracing::warn!(error = %e, "registry: no client certificate for the other servers");
                return Vec::new();
            }
        };
        let ca = self.certs.bundle_pem();
        let stamp = format!("{ca}{}", admin.cert_pem);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|addr, _| live.contains(addr));
        let mut out = Vec::new();
        for addr in live.into_iter().filter(|a| *a != self.own) {
            if let Some((s, c)) = clients.get(&addr) {
                if *s == stamp {
                    out.push(c.clone());
                    continue;
                }
            }
            let mut config = mini_regclient::ClientConfig::new(format!("https://{addr}"));
            config.ca_pem = Some(ca.clone());
            config.client_cert = Some(admin.clone());
            config.timeout = Duration::from_secs(10);
            config.headers = vec![(mini_registry::PEER_HEADER.into(), "1".into())];
            match mini_regclient::RegistryClient::new(config) {
                Ok(c) => {
                    let c = Arc::new(c);
                    clients.insert(addr, (stamp.clone(), c.clone()));
                    out.push(c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, peer = %addr, "registry: no client for a peer server")
                }
            }
        }
        out
    }
}

/// The cluster's view of who may pull and push: authentication by the API server (client
/// certificates, ServiceAccount, join and bootstrap tokens), RBAC on `repositories`, and
/// anonymous pull where a namespace opted in.
struct ClusterAccess {
    api: ApiServer,
}

#[async_trait::async_trait]
impl mini_registry::Access for ClusterAccess {
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, String> {
        self.api.authenticate_credentials(headers, peer).await
    }

    async fn allowed(
        &self,
        user: Option<&UserInfo>,
        verb: &str,
        namespace: Option<&str>,
        _repository: &str,
    ) -> bool {
        match user {
            Some(user) => {
                self.api
                    .may(user, verb, REGISTRY_GROUP, "repositories", namespace, None)
                    .await
            }
            None => match namespace {
                Some(ns) if verb == "get" => self.api.namespace_allows_anonymous_pull(ns).await,
                _ => false,
            },
        }
    }
}

/// `/v2/` on the API port.
struct RegistryRoute {
    registry: Arc<Registry>,
}

impl StreamingRoute for RegistryRoute {
    fn handles(&self, path: &str) -> bool {
        Registry::handles(path)
    }

    fn handle(
        &self,
        req: http::Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, http::Response<Body>> {
        let registry = self.registry.clone();
        Box::pin(async move { registry.handle(req, peer).await })
    }
}

/// The registry's repositories and tags as `registry.mini.dev` shows them.
struct RegistryCatalog {
    registry: Arc<Registry>,
    hosts: Vec<String>,
}

fn time_of(unix: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    (unix > 0)
        .then(|| chrono::DateTime::from_timestamp(unix, 0))
        .flatten()
}

#[async_trait::async_trait]
impl ImageCatalog for RegistryCatalog {
    async fn repositories(&self, namespace: Option<&str>) -> Result<Vec<RepositoryEntry>, String> {
        let repos = self
            .registry
            .repositories(namespace)
            .await
            .map_err(|e| e.to_string())?;
        // a repository whose tags are all gone is only waiting for garbage collection
        Ok(repos
            .into_iter()
            .filter(|r| r.tag_count > 0)
            .map(|r| RepositoryEntry {
                repository: r.name,
                namespace: r.namespace,
                tags: r.tag_count,
                size: r.total_size,
                last_push: time_of(r.last_push),
            })
            .collect())
    }

    async fn tags(&self, namespace: Option<&str>) -> Result<Vec<TagEntry>, String> {
        let tags = self
            .registry
            .tags(None, namespace)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tags
            .into_iter()
            .map(|t| TagEntry {
                namespace: mini_registry::names::namespace_of(&t.repository).map(str::to_string),
                repository: t.repository,
                tag: t.tag,
                digest: t.digest,
                media_type: t.media_type,
                size: t.size,
                pushed: time_of(t.pushed),
            })
            .collect())
    }

    async fn delete_tag(&self, repository: &str, tag: &str) -> Result<(), String> {
        self.registry
            .delete_tag(repository, tag)
            .await
            .map_err(|e| e.to_string())
    }

    async fn commit(&self, commit: ContainerCommit, layer: Body) -> Result<String, String> {
        let (repository, target) = mini_registry::repository_for(&commit.image, &self.hosts)
            .ok_or_else(|| {
                format!(
                    "the container's image {:?} is no valid image reference",
                    commit.image
                )
            })?;
        let base_reference = match (&commit.image_digest, target) {
            (Some(digest), _) => format!("{repository}@{digest}"),
            (None, mini_registry::Target::Digest(d)) => format!("{repository}@{d}"),
            (None, mini_registry::Target::Tag(t)) => format!("{repository}:{t}"),
        };
        let request = mini_registry::CommitRequest {
            base_reference,
            target_repository: commit.target_repository,
            target_tag: commit.target_tag,
            diff_id: commit.diff_id,
            layer_digest: commit.layer_digest,
        };
        let stream = http_body_util::BodyDataStream::new(layer).boxed();
        self.registry
            .commit(request, stream)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Opens the registry under `<data-dir>/server/registry`, mounts it on the API server and
/// starts its maintenance and the import of `images_dir`; with `peers` (several servers), the
/// replication of what the other servers took.
pub(crate) async fn start(
    api: &ApiServer,
    settings: &RegistrySettings,
    data_dir: &Path,
    hosts: Vec<String>,
    images_dir: PathBuf,
    peers: Option<ServerPeers>,
    shutdown: CancellationToken,
) -> Result<Arc<Registry>, ServerError> {
    let config = RegistryConfig {
        root: data_dir.join("server").join("registry"),
        upload_timeout: settings.upload_timeout,
        gc_interval: settings.gc_interval,
        gc_grace: settings.gc_grace,
        retention: mini_registry::Retention {
            keep_last_tags: settings.keep_tags,
            keep_newer_than: settings.keep_for,
        },
        upstreams: settings
            .upstreams
            .iter()
            .map(|u| upstream(&u.host, &u.url))
            .collect::<Result<_, _>>()?,
        hosts: hosts.clone(),
        ..RegistryConfig::default()
    };
    let access = Arc::new(ClusterAccess { api: api.clone() });
    let registry = Registry::open(config, api.store().clone(), access)
        .await
        .map_err(|e| ServerError::Config(format!("opening the image registry: {e}")))?;
    api.add_streaming_route(Arc::new(RegistryRoute {
        registry: registry.clone(),
    }));
    api.set_image_catalog(Arc::new(RegistryCatalog {
        registry: registry.clone(),
        hosts,
    }));
    registry.run_background(shutdown.clone());
    if let Some(peers) = peers {
        registry.set_peers(Arc::new(peers));
        registry.run_replicator(REPLICATE_PERIOD, shutdown.clone());
    }
    tokio::spawn(import_image_dir(registry.clone(), images_dir, shutdown));
    Ok(registry)
}

/// An upstream from `URL` with optional `user:password@` credentials.
fn upstream(host: &str, url: &str) -> Result<mini_registry::Upstream, ServerError> {
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| ServerError::Config(format!("--registry-upstream {url:?}: {e}")))?;
    let authority = parsed
        .authority()
        .ok_or_else(|| ServerError::Config(format!("--registry-upstream {url:?}: no host")))?;
    let (username, password, bare_host) = match authority.as_str().rsplit_once('@') {
        Some((userinfo, host_port)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                Some(user.to_string()),
                Some(pass.to_string()),
                host_port.to_string(),
            )
        }
        None => (None, None, authority.as_str().to_string()),
    };
    let scheme = parsed.scheme_str().unwrap_or("https");
    let path = parsed.path().trim_end_matches('/');
    Ok(mini_registry::Upstream {
        host: host.to_string(),
        url: format!("{scheme}://{bare_host}{path}"),
        username,
        password,
    })
}

/// Imports every tarball dropped into the server's image directory (air-gap bundles, images
/// copied by hand) into the registry, and again whenever a file changes.
async fn import_image_dir(registry: Arc<Registry>, dir: PathBuf, shutdown: CancellationToken) {
    let mut seen: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
    loop {
        for (path, stamp) in image_files(&dir) {
            if seen.get(&path) == Some(&stamp) {
                continue;
            }
            match registry.import_archive(&path).await {
                Ok(refs) => {
                    tracing::info!(file = %path.display(), images = ?refs, "image tarball imported into the registry");
                    seen.insert(path, stamp);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "importing an image tarball into the registry failed");
                    // retried when the file changes
                    seen.insert(path, stamp);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(IMAGE_DIR_RESCAN) => {}
        }
    }
}

/// Tarballs (not hidden, regular files) in `dir` with their size and mtime.
fn image_files(dir: &Path) -> Vec<(PathBuf, (u64, SystemTime))> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    e.path(),
                    (
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ),
                )
            })
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_with_credentials_splits_them_out() {
        let u = upstream("docker.io", "https://bob:s3cret@harbor.example:8443/proxy/").unwrap();
        assert_eq!(u.url, "https://harbor.example:8443/proxy");
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn upstream_without_credentials_keeps_url() {
        let u = upstream("quay.io", "http://127.0.0.1:5000").unwrap();
        assert_eq!(u.url, "http://127.0.0.1:5000");
        assert_eq!(u.username, None);
    }

    #[test]
    fn image_files_skips_hidden_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), b"x").unwrap();
        std::fs::write(dir.path().join(".a.tar.part"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let files = image_files(dir.path());
        assert_eq!(files.len(), 1);
        assert!(files[0].0.ends_with("a.tar"));
    }
}
