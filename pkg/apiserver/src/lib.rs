//! The Kubernetes-compatible API server: routing, handlers, watch, discovery, authn/authz.
//!
//! `ApiServer::new` loads nothing from the network; `serve` takes a bound listener; the
//! in-process `LocalService` lets controllers and tests use kube-rs without TCP or TLS.

// `ApiError` is the failed request's answer, built once per error; boxing it would only add
// an allocation to every error path.
#![allow(clippy::result_large_err)]

mod admission;
mod auth;
mod body;
mod bootstrap;
mod crd;
mod discovery;
mod escalation;
mod events_alias;
mod extension;
mod handlers;
mod images_api;
mod install;
mod join;
mod metrics;
pub use metrics::MetricsSource;
mod nodeproxy;
mod quota;
mod request;
mod resource_metrics;
mod reviews;
mod serviceaccount;
mod table;
mod transport;
mod watch;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use mini_api::Registry;
use mini_rbac::{PolicySnapshot, UserInfo};
use mini_store::Store;

pub use body::Body;
pub use extension::{admin_route_user, route_failure, route_json};
pub use extension::{
    AccountAuthenticator, AuditRecord, AuditSink, ContainerCommit, ImageCatalog, RemoteAddr,
    RepositoryEntry, StreamingRoute, TagEntry, ANONYMOUS_PULL_ANNOTATION, REGISTRY_GROUP,
};
pub use transport::{serve, LocalService};

/// The Kubernetes version whose API types mini serves (k8s-openapi's `v1_33`).
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// An IPv4 CIDR such as `10.43.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid cidr {s:?}: expected address/prefix"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("invalid cidr {s:?}: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("invalid cidr {s:?}: prefix must be 8..30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// The offset of `ip` inside the range, if inside.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).wrapping_sub(u32::from(self.network));
        (u32::from(ip) >= u32::from(self.network) && off < self.size()).then_some(off)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What the API server needs to know; built by `mini server` from its flags.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    pub service_cidr: Ipv4Cidr,
    pub node_port_range: (u16, u16),
    /// Where clients reach the API server (the `kubernetes` Service endpoints).
    pub advertise_address: IpAddr,
    pub advertise_port: u16,
    /// The join token secret accepted as a bootstrap bearer token.
    pub join_secret: Option<String>,
    /// The cluster CA bundle served at `/cacerts`.
    pub ca_pem: String,
    /// The key that signs ServiceAccount tokens.
    pub service_account_key: mini_certs::SigningKey,
    /// The cluster CA, which signs node certificates at `/v1-mini/node-join`; without it
    /// joining is refused.
    pub ca: Option<Arc<mini_certs::CertAuthority>>,
    /// The client certificate presented to node agents (CN
    /// [`mini_certs::KUBELET_CLIENT_CN`]); without it logs, exec, port-forward, node proxy
    /// and resource metrics answer 503.
    pub kubelet_client: Option<mini_certs::IssuedCert>,
    /// The binary served at `/v1-mini/binary` (`/proc/self/exe` in `mini server`); `None`: 404.
    pub binary_path: Option<std::path::PathBuf>,
    /// The air-gap image tarballs re-served at `/v1-mini/images` (`<data-dir>/agent/images`).
    pub images_dir: Option<std::path::PathBuf>,
}

impl ApiServerConfig {
    /// A config for tests: service CIDR 10.43.0.0/16, loopback, no join token.
    pub fn for_tests() -> Self {
        ApiServerConfig {
            service_cidr: Ipv4Cidr::parse("10.43.0.0/16").expect("valid literal"),
            node_port_range: (30000, 32767),
            advertise_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_port: 6443,
            join_secret: None,
            ca_pem: String::new(),
            service_account_key: mini_certs::generate_signing_key()
                .expect("generating a signing key for tests"),
            ca: None,
            kubelet_client: None,
            binary_path: None,
            images_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("store: {0}")]
    Store(#[from] mini_store::StoreError),
    #[error("bootstrapping cluster objects failed: {0}")]
    Bootstrap(String),
    #[error("serving failed: {0}")]
    Serve(String),
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub config: ApiServerConfig,
    pub registry: RwLock<Arc<Registry>>,
    /// Bumped whenever the registry changes, so cached discovery/OpenAPI are rebuilt.
    pub registry_generation: AtomicU64,
    /// The RBAC snapshot and the `rbac_generation` it was loaded at.
    pub rbac: RwLock<(u64, Arc<PolicySnapshot>)>,
    /// Bumped by every RBAC write; a snapshot older than this is reloaded before use.
    pub rbac_generation: AtomicU64,
    pub rbac_reload: tokio::sync::Mutex<()>,
    pub openapi_cache: std::sync::Mutex<Option<(u64, Arc<discovery::OpenApiDocs>)>>,
    /// Serialises ClusterIP/NodePort allocation with the create that uses it.
    pub allocation_lock: tokio::sync::Mutex<()>,
    /// Serialises quota-checked creates with their writes, so two creates can't both fit.
    pub quota_lock: tokio::sync::Mutex<()>,
    pub metrics: metrics::Metrics,
    pub tokens: serviceaccount::TokenSigner,
    /// TLS towards node agents (cluster CA roots, kubelet client certificate); replaced by
    /// [`ApiServer::set_node_tls`] when certificates rotate online.
    pub node_tls: RwLock<Option<Arc<rustls::ClientConfig>>>,
    /// The signing CA and the trusted bundle (`/cacerts`) once set by
    /// [`ApiServer::set_cluster_ca`]; the config's until then.
    pub cluster_ca: RwLock<Option<ClusterCa>>,
    /// The last scrape of the agents' resource usage.
    pub resource_metrics: resource_metrics::Cache,
    /// The route whose request bodies stream (`/v2/`: the image registry), once installed.
    pub streaming_routes: std::sync::RwLock<Vec<Arc<dyn extension::StreamingRoute>>>,
    /// What `registry.mini.dev` lists, once installed.
    pub image_catalog: std::sync::OnceLock<Arc<dyn extension::ImageCatalog>>,
    /// The Node authorizer (first in the chain, before RBAC) and its graph of bound pods.
    pub node_authz: mini_nodeauthz::NodeAuthorizer,
    /// People's accounts: session cookies and account tokens (mini-accounts), once installed.
    pub account_authenticator: std::sync::OnceLock<Arc<dyn extension::AccountAuthenticator>>,
    /// Where mutating requests are reported once answered, once installed.
    pub audit_sink: std::sync::OnceLock<Arc<dyn extension::AuditSink>>,
}

/// The cluster CA as rotated online: what signs node certificates, for how long, and the
/// bundle clients trust.
#[derive(Clone)]
pub(crate) struct ClusterCa {
    pub ca: Arc<mini_certs::CertAuthority>,
    pub bundle_pem: String,
    pub node_cert_lifetime: std::time::Duration,
}

/// The API server. Cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) inner: Arc<Inner>,
}

impl ApiServer {
    /// Builds the server over `store` and creates the cluster's bootstrap objects (default
    /// namespaces, RBAC defaults, the `kubernetes` Service) when missing.
    pub async fn new(
        store: Arc<dyn Store>,
        config: ApiServerConfig,
    ) -> Result<Self, ApiServerError> {
        let metrics = metrics::Metrics::new();
        let tokens = serviceaccount::TokenSigner::new(&config.service_account_key)
            .map_err(ApiServerError::Bootstrap)?;
        let node_tls = match &config.kubelet_client {
            Some(client) if !config.ca_pem.is_empty() => Some(
                mini_certs::client_tls_config(&config.ca_pem, Some(client))
                    .map_err(|e| ApiServerError::Bootstrap(e.to_string()))?,
            ),
            _ => None,
        };
        let store: Arc<dyn Store> = Arc::new(metrics::MeteredStore::new(store, &metrics));
        let store: Arc<dyn Store> = Arc::new(events_alias::EventsAliasStore::new(store));
        let node_authz = mini_nodeauthz::NodeAuthorizer::start(store.clone());
        let server = ApiServer {
            inner: Arc::new(Inner {
                store,
                config,
                registry: RwLock::new(Arc::new(Registry::builtin())),
                registry_generation: AtomicU64::new(0),
                rbac: RwLock::new((0, Arc::new(PolicySnapshot::default()))),
                rbac_generation: AtomicU64::new(1),
                rbac_reload: tokio::sync::Mutex::new(()),
                openapi_cache: std::sync::Mutex::new(None),
                allocation_lock: tokio::sync::Mutex::new(()),
                quota_lock: tokio::sync::Mutex::new(()),
                metrics,
                tokens,
                node_tls: RwLock::new(node_tls),
                cluster_ca: RwLock::new(None),
                resource_metrics: resource_metrics::Cache::default(),
                streaming_routes: std::sync::RwLock::new(Vec::new()),
                image_catalog: std::sync::OnceLock::new(),
                node_authz,
                account_authenticator: std::sync::OnceLock::new(),
                audit_sink: std::sync::OnceLock::new(),
            }),
        };
        server.reload_crds().await?;
        bootstrap::ensure_cluster_objects(&server).await?;
        Ok(server)
    }

    /// Signs node certificates with `ca`, valid for `node_cert_lifetime`, and serves
    /// `bundle_pem` (the CAs clients trust, more than one during a CA rotation) at `/cacerts`
    /// from now on.
    pub fn set_cluster_ca(
        &self,
        ca: Arc<mini_certs::CertAuthority>,
        bundle_pem: String,
        node_cert_lifetime: std::time::Duration,
    ) {
        *self
            .inner
            .cluster_ca
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ClusterCa {
            ca,
            bundle_pem,
            node_cert_lifetime,
        });
    }

    fn cluster_ca(&self) -> Option<ClusterCa> {
        self.inner
            .cluster_ca
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How long node certificates signed at join are valid.
    pub(crate) fn node_cert_lifetime(&self) -> std::time::Duration {
        self.cluster_ca()
            .map_or(crate::join::NODE_CERT_LIFETIME, |c| c.node_cert_lifetime)
    }

    /// Uses `tls` towards node agents from now on (a config whose certificates swap online).
    pub fn set_node_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self
            .inner
            .node_tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tls);
    }

    /// The CA that signs node certificates now.
    pub(crate) fn signing_ca(&self) -> Option<Arc<mini_certs::CertAuthority>> {
        self.cluster_ca()
            .map(|c| c.ca)
            .or_else(|| self.inner.config.ca.clone())
    }

    /// The CA bundle served at `/cacerts`, which join tokens pin.
    pub fn ca_bundle_pem(&self) -> String {
        self.cluster_ca()
            .map(|c| c.bundle_pem)
            .unwrap_or_else(|| self.inner.config.ca_pem.clone())
    }

    pub(crate) fn node_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.inner
            .node_tls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.inner
            .registry
            .read()
            .expect("registry lock poisoned")
            .clone()
    }

    /// A tower service answering requests in-process as `user` (no TCP, no TLS).
    pub fn local_service(&self, user: UserInfo) -> LocalService {
        LocalService::new(self.clone(), user)
    }

    /// The identity the in-process controllers use.
    pub fn controllers_user() -> UserInfo {
        UserInfo {
            name: bootstrap::CONTROLLERS_USER.to_string(),
            groups: vec!["system:authenticated".to_string()],
        }
    }

    /// The identity the in-process scheduler uses.
    pub fn scheduler_user() -> UserInfo {
        UserInfo {
            name: bootstrap::SCHEDULER_USER.to_string(),
            groups: vec!["system:authenticated".to_string()],
        }
    }

    /// The identity of the cluster admin (`system:admin` in `system:masters`).
    pub fn admin_user() -> UserInfo {
        UserInfo {
            name: "system:admin".to_string(),
            groups: vec![
                "system:masters".to_string(),
                "system:authenticated".to_string(),
            ],
        }
    }
}
