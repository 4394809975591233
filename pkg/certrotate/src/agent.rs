//! A node agent's certificates while it runs: its client certificate (towards the API
//! server) and its serving certificate (the kubelet port), renewed through the API at two
//! thirds of their life or when the server asks (`mini certificate rotate`, a CA rotation),
//! and swapped into the agent's API client and listener without a restart; the trusted CA
//! bundle follows the server's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mini_certs::{CertHolder, CertInfo, IssuedCert, SubjectAltNames, TrustHolder};
use tokio_util::sync::CancellationToken;

use crate::{CertRotateError, NodeCertPolicy, NodeRenewRequest, NodeRenewResponse, NODE_PATH};

const KEY_MODE: u32 = 0o600;

/// Where the agent keeps its certificates (the files of its join) and who it is.
#[derive(Debug, Clone)]
pub struct AgentCertsConfig {
    pub server_url: String,
    pub node_name: String,
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    pub serving_cert_file: PathBuf,
    pub serving_key_file: PathBuf,
    /// `<data>/agent/kubelet.kubeconfig`, rewritten with the renewed client certificate.
    pub kubeconfig_file: PathBuf,
}

/// The agent's swappable certificates and trusted bundle.
pub struct AgentCerts {
    config: AgentCertsConfig,
    client: Arc<CertHolder>,
    serving: Arc<CertHolder>,
    trust: Arc<TrustHolder>,
}

impl std::fmt::Debug for AgentCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCerts")
            .field("node_name", &self.config.node_name)
            .finish_non_exhaustive()
    }
}

fn client_err(what: &str, e: impl std::fmt::Display) -> CertRotateError {
    CertRotateError::Client(format!("{what}: {e}"))
}

impl AgentCerts {
    /// Holds the certificates of the join.
    pub fn new(
        config: AgentCertsConfig,
        ca_pem: &str,
        client: &IssuedCert,
        serving: &IssuedCert,
    ) -> Result<Arc<Self>, CertRotateError> {
        Ok(Arc::new(AgentCerts {
            client: CertHolder::new(client)?,
            serving: CertHolder::new(serving)?,
            trust: TrustHolder::new(ca_pem)?,
            config,
        }))
    }

    /// The CAs trusted now.
    pub fn ca_pem(&self) -> String {
        self.trust.pem()
    }

    /// The client certificate presented now.
    pub fn client_cert(&self) -> IssuedCert {
        self.client.current()
    }

    /// The kubelet port's TLS: serving certificate and trusted CAs, swapped online.
    pub fn kubelet_tls(&self) -> Result<Arc<rustls::ServerConfig>, CertRotateError> {
        Ok(mini_certs::kubelet_server_tls_config_dynamic(
            self.serving.clone(),
            self.trust.clone(),
        )?)
    }

    /// A kube client with the node's identity whose TLS reads the current client certificate
    /// and trusted CAs at every new connection.
    pub fn kube_client(&self) -> Result<kube::Client, CertRotateError> {
        use kube::client::ConfigExt;
        let url: http::Uri = self
            .config
            .server_url
            .parse()
            .map_err(|e| client_err("the server URL", e))?;
        let config = kube::Config::new(url);
        // hyper-rustls sets the ALPN protocols itself (HTTP/1.1 only)
        let tls =
            mini_certs::client_tls_config_dynamic(self.trust.clone(), Some(self.client.clone()))?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let mut connector = hyper_timeout::TimeoutConnector::new(https);
        connector.set_connect_timeout(config.connect_timeout);
        connector.set_read_timeout(config.read_timeout);
        connector.set_write_timeout(config.write_timeout);
        let http_client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .service(http_client);
        Ok(kube::Client::new(service, "default"))
    }

    /// Renews when due until `shutdown`: looks every twentieth of the certificates' life
    /// (1 s..60 s) at their age and at the server's policy (a `mini certificate rotate`, a new
    /// CA bundle).
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        loop {
            let every = self.interval();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.tick(&client, mini_certs::now_unix()).await {
                tracing::warn!(node = self.config.node_name, error = %e, "renewing the node certificates failed; retrying");
            }
        }
    }

    fn interval(&self) -> Duration {
        let life = CertInfo::from_pem(&self.client.current().cert_pem, "client certificate")
            .map(|i| Duration::from_secs(u64::try_from(i.not_after - i.not_before).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(60));
        crate::check_interval(life)
    }

    /// One look: follows the server's bundle and renews what is due.
    pub async fn tick(&self, client: &kube::Client, now: i64) -> Result<(), CertRotateError> {
        let policy: NodeCertPolicy = call(client, http::Method::GET, NODE_PATH, Vec::new()).await?;
        let bundle_changed = policy.ca_bundle.trim() != self.trust.pem().trim();
        let before = policy.renew_issued_before;
        let due = bundle_changed
            || crate::leaf_due(&self.client.current().cert_pem, before, now)
            || crate::leaf_due(&self.serving.current().cert_pem, before, now);
        if bundle_changed {
            // trust the new bundle first: the server's leaves may already come from a new CA
            self.trust.swap(&policy.ca_bundle)?;
            mini_certs::write_atomic(&self.config.ca_file, policy.ca_bundle.as_bytes(), KEY_MODE)?;
            tracing::info!(
                node = self.config.node_name,
                "the cluster CA bundle changed; trusting the new one"
            );
        }
        if due {
            self.renew(client).await?;
        }
        Ok(())
    }

    /// New client and serving certificates for the same names, signed through the API.
    pub async fn renew(&self, client: &kube::Client) -> Result<(), CertRotateError> {
        let node = &self.config.node_name;
        let serving_sans = mini_certs::cert_sans_of_pem(&self.serving.current().cert_pem)
            .unwrap_or_else(|_| SubjectAltNames {
                dns: vec![node.clone()],
                ips: Vec::new(),
            });
        let (client_csr, client_key) = mini_certs::generate_csr(
            &format!("{}{node}", mini_nodeauthz::NODE_USER_PREFIX),
            &SubjectAltNames::default(),
        )?;
        let (serving_csr, serving_key) = mini_certs::generate_csr(node, &serving_sans)?;
        let body = serde_json::to_vec(&NodeRenewRequest {
            client_csr,
            serving_csr,
        })
        .map_err(|e| client_err("encoding the request", e))?;
        let reply: NodeRenewResponse = call(client, http::Method::POST, NODE_PATH, body).await?;
        let new_client = IssuedCert {
            cert_pem: reply.client_cert,
            key_pem: client_key,
        };
        let new_serving = IssuedCert {
            cert_pem: reply.serving_cert,
            key_pem: serving_key,
        };
        // the bundle first, so the new certificates are trusted wherever they are checked
        if reply.ca_bundle.trim() != self.trust.pem().trim() {
            self.trust.swap(&reply.ca_bundle)?;
            mini_certs::write_atomic(&self.config.ca_file, reply.ca_bundle.as_bytes(), KEY_MODE)?;
        }
        let c = &self.config;
        for (path, data) in [
            (&c.client_key_file, &new_client.key_pem),
            (&c.client_cert_file, &new_client.cert_pem),
            (&c.serving_key_file, &new_serving.key_pem),
            (&c.serving_cert_file, &new_serving.cert_pem),
        ] {
            mini_certs::write_atomic(path, data.as_bytes(), KEY_MODE)?;
        }
        self.client.swap(&new_client)?;
        self.serving.swap(&new_serving)?;
        let yaml = mini_certs::kubeconfig_yaml(&c.server_url, &self.trust.pem(), &new_client);
        mini_certs::write_atomic(&c.kubeconfig_file, yaml.as_bytes(), KEY_MODE)?;
        let expires = CertInfo::from_pem(&new_client.cert_pem, "client certificate")
            .map(|i| mini_certs::format_unix(i.not_after))
            .unwrap_or_default();
        tracing::info!(
            node,
            expires,
            "renewed the node's client and serving certificates"
        );
        Ok(())
    }
}

async fn call<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<T, CertRotateError> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| client_err("building the request", e))?;
    let text = client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(status) => CertRotateError::Renew(status.message),
        other => CertRotateError::Renew(format!("asking the server ({path}): {other}")),
    })?;
    serde_json::from_str(&text).map_err(|e| client_err(&format!("the answer of {path}"), e))
}
