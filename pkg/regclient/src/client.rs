//! The HTTP client for one registry (hyper over rustls, or plain http for tests and upstreams on
//! loopback) and the distribution API operations: ping, blobs (exists, monolithic and chunked
//! upload, cross-repository mount, verified download), manifests (put, get, head, delete), tags
//! and the catalog with paging.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION,
    WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::auth::{basic_header, parse_challenge, Challenge, Credentials, TokenResponse};
use crate::RegClientError;

/// Media types a manifest GET accepts: OCI and docker manifests and indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DEFAULT_CHUNK_SIZE: usize = 16 << 20;
const PAGE_SIZE: usize = 1000;
/// Error bodies and manifests read into memory are bounded by this.
const MAX_SMALL_BODY: usize = 8 << 20;

/// Where a registry lives and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://10.0.0.1:6443` or `http://127.0.0.1:5000` (no path).
    pub base_url: String,
    /// CA bundle (PEM) to trust; `None` trusts the system's roots.
    pub ca_pem: Option<String>,
    /// Client certificate presented in the TLS handshake.
    pub client_cert: Option<mini_certs::IssuedCert>,
    pub credentials: Credentials,
    /// Blobs larger than this are uploaded in PATCH chunks of this size (default 16 MiB).
    pub chunk_size: usize,
    /// Bound on connecting and on waiting for each answer's head (default 60 s).
    pub timeout: Duration,
    /// Entries asked for per tags/catalog page (default 1000).
    pub page_size: usize,
    /// Headers sent with every request (e.g. the embedded registry's peer marker).
    pub headers: Vec<(String, String)>,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            ca_pem: None,
            client_cert: None,
            credentials: Credentials::None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            timeout: Duration::from_secs(60),
            page_size: PAGE_SIZE,
            headers: Vec::new(),
        }
    }
}

/// What a manifest HEAD or GET told: its digest, media type and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// Where an uploaded blob's bytes come from; never a whole large blob in memory.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Bytes(Bytes),
    /// `len` bytes of `file` from `offset` (read with pread, so one file serves many blobs).
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl BlobSource {
    pub fn len(&self) -> u64 {
        match self {
            BlobSource::Bytes(b) => b.len() as u64,
            BlobSource::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes `[start, start + max)` (clipped to the end).
    async fn chunk(&self, start: u64, max: usize) -> Result<Bytes, std::io::Error> {
        let end = self.len().min(start + max as u64);
        match self {
            BlobSource::Bytes(b) => Ok(b.slice(start as usize..end as usize)),
            BlobSource::File { file, offset, .. } => {
                let file = file.clone();
                let at = offset + start;
                let len = (end - start) as usize;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, at)?;
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(std::io::Error::other)?
            }
        }
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one registry. Cheap to share (`Arc`); connections are pooled.
pub struct RegistryClient {
    base: Url,
    host: String,
    http: HttpClient,
    credentials: Credentials,
    /// Bearer tokens from the token flow, per repository ("" for registry-wide requests).
    tokens: Mutex<HashMap<String, String>>,
    chunk_size: usize,
    timeout: Duration,
    page_size: usize,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// One request: everything needed to send it again after an authentication challenge.
struct Req {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
    /// Repository the request is about (token cache key).
    repo: String,
    what: String,
}

impl Req {
    fn new(method: Method, url: Url, repo: &str, what: String) -> Req {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            repo: repo.to_string(),
            what,
        }
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: Bytes) -> Req {
        self.body = body;
        self
    }
}

fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, RegClientError> {
    let tls_err = |reason: String| RegClientError::Tls {
        url: config.base_url.clone(),
        reason,
    };
    let mut tls = match &config.ca_pem {
        Some(ca) => (*mini_certs::client_tls_config(ca, config.client_cert.as_ref())
            .map_err(|e| tls_err(e.to_string()))?)
        .clone(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_err(e.to_string()))?
                .with_root_certificates(roots);
            match &config.client_cert {
                Some(leaf) => {
                    let certs = rustls_pemfile_certs(&leaf.cert_pem).map_err(tls_err)?;
                    use rustls::pki_types::pem::PemObject as _;
                    let key =
                        rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
                            .map_err(|e| tls_err(format!("client key: {e}")))?;
                    builder
                        .with_client_auth_cert(certs, key)
                        .map_err(|e| tls_err(e.to_string()))?
                }
                None => builder.with_no_client_auth(),
            }
        }
    };
    // hyper-rustls sets ALPN itself (HTTP/1.1 only here).
    tls.alpn_protocols.clear();
    Ok(tls)
}

fn rustls_pemfile_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client certificate: {e}"))
}

/// The repository's path in a URL: each component as it is (the grammar allows no escapes).
fn v2(repo: &str, rest: &str) -> String {
    format!("/v2/{repo}/{rest}")
}

impl RegistryClient {
    /// A client for the registry at `config.base_url`.
    pub fn new(config: ClientConfig) -> Result<RegistryClient, RegClientError> {
        let url_err = |reason: &str| RegClientError::Url {
            url: config.base_url.clone(),
            reason: reason.to_string(),
        };
        let base = Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| url_err(&format!("{e}; expected e.g. https://10.0.0.1:6443")))?;
        if base.scheme() != "https" && base.scheme() != "http" {
            return Err(url_err("must start with https:// or http://"));
        }
        let host = base
            .host_str()
            .ok_or_else(|| url_err("no host"))?
            .to_string();
        let host = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&config)?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| url_err(&format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| url_err(&format!("header {name}: {e}")))?;
            headers.push((name, value));
        }
        Ok(RegistryClient {
            base,
            host,
            http,
            credentials: config.credentials,
            tokens: Mutex::new(HashMap::new()),
            chunk_size: config.chunk_size.max(1 << 16),
            timeout: config.timeout,
            page_size: config.page_size.max(1),
            headers,
        })
    }

    /// `host[:port]` of the registry, as image references name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path_and_query: &str) -> Result<Url, RegClientError> {
        self.base
            .join(path_and_query)
            .map_err(|e| RegClientError::Url {
                url: format!("{}{path_and_query}", self.base),
                reason: e.to_string(),
            })
    }

    fn cached_token(&self, repo: &str) -> Option<String> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .cloned()
    }

    async fn send_once(
        &self,
        req: &Req,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, RegClientError> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.url.as_str());
        if req.url.origin() == self.base.origin() {
            for (name, value) in &self.headers {
                builder = builder.header(name, value);
            }
        }
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some(auth) = authorization {
            builder = builder.header(AUTHORIZATION, auth);
        }
        if !req.body.is_empty() || req.method == Method::PUT || req.method == Method::PATCH {
            builder = builder.header(CONTENT_LENGTH, req.body.len());
        }
        let request =
            builder
                .body(Full::new(req.body.clone()))
                .map_err(|e| RegClientError::Protocol {
                    what: req.what.clone(),
                    reason: e.to_string(),
                })?;
        let unreachable = |reason: String| RegClientError::Unreachable {
            what: req.what.clone(),
            reason,
        };
        tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| {
                let reason = error_chain(&e);
                if reason.contains("certificate") || reason.contains("tls") {
                    RegClientError::TlsHandshake {
                        what: req.what.clone(),
                        reason,
                    }
                } else {
                    unreachable(reason)
                }
            })
    }

    /// Sends `req`; on a 401 challenge fetches a token (Bearer) or gives up (Basic already sent)
    /// and retries once.
    async fn send(&self, req: Req) -> Result<Response<Incoming>, RegClientError> {
        let auth = self
            .cached_token(&req.repo)
            .map(|t| format!("Bearer {t}"))
            .or_else(|| self.credentials.header());
        let response = self.send_once(&req, auth.as_deref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self
                    .fetch_token(&req, &realm, service.as_deref(), scope.as_deref())
                    .await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(req.repo.clone(), token.clone());
                self.send_once(&req, Some(&format!("Bearer {token}"))).await
            }
            Some(Challenge::Basic) if auth.is_none() => Err(RegClientError::Auth {
                what: req.what.clone(),
                reason: "the registry asks for credentials and none were given".into(),
            }),
            _ => Ok(response),
        }
    }

    async fn fetch_token(
        &self,
        req: &Req,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, RegClientError> {
        let what = format!("{} (token from {realm})", req.what);
        let mut url = Url::parse(realm).map_err(|e| RegClientError::Protocol {
            what: what.clone(),
            reason: format!("the challenge's realm is not a URL: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        let token_req = Req::new(Method::GET, url, "", what.clone());
        let auth = match &self.credentials {
            Credentials::Basic { username, password } => Some(basic_header(username, password)),
            _ => None,
        };
        let response = self.send_once(&token_req, auth.as_deref()).await?;
        let status = response.status();
        let body = read_small(response, &what).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegClientError::Auth {
                what,
                reason: format!(
                    "the token service refused ({status}): {}",
                    String::from_utf8_lossy(&body)
                ),
            });
        }
        if !status.is_success() {
            return Err(error_from(&what, status, &body));
        }
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| RegClientError::Protocol {
                what,
                reason: "the token service's answer holds no token".into(),
            })
    }

    /// Sends and turns any status outside `expected` into an error with the registry's message.
    async fn expect(
        &self,
        req: Req,
        expected: &[StatusCode],
    ) -> Result<Response<Incoming>, RegClientError> {
        let what = req.what.clone();
        let response = self.send(req).await?;
        let status = response.status();
        if expected.contains(&status) {
            return Ok(response);
        }
        let body = read_small(response, &what).await.unwrap_or_default();
        let err = error_from(&what, status, &body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(RegClientError::Auth {
                what,
                reason: err.to_string(),
            });
        }
        Err(err)
    }

    /// `GET /v2/`: the registry answers and accepts our credentials.
    pub async fn ping(&self) -> Result<(), RegClientError> {
        let req = Req::new(Method::GET, self.url("/v2/")?, "", "GET /v2/".into());
        self.expect(req, &[StatusCode::OK]).await?;
        Ok(())
    }

    /// The blob's size if `repo` has it.
    pub async fn blob_exists(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<u64>, RegClientError> {
        let path = v2(repo, &format!("blobs/{digest}"));
        let req = Req::new(Method::HEAD, self.url(&path)?, repo, format!("HEAD {path}"));
        let response = self
            .expect(req, &[StatusCode::OK, StatusCode::NOT_FOUND])
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(content_length(&response).unwrap_or(0)))
    }

    /// Asks the registry to link `digest` from `from` into `repo`. `Ok(true)` when mounted;
    /// `Ok(false)` when the registry opened an upload instead (it is cancelled: upload normally).
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &str,
        from: &str,
    ) -> Result<bool, RegClientError> {
        let path = format!("{}?mount={digest}&from={from}", v2(repo, "blobs/uploads/"));
        let req = Req::new(Method::POST, self.url(&path)?, repo, format!("POST {path}"));
        let response = self
            .expect(req, &[StatusCode::CREATED, StatusCode::ACCEPTED])
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(true);
        }
        if let Ok(location) = self.location(&response, "mount") {
            let cancel = Req::new(Method::DELETE, location, repo, "cancel upload".into());
            let _ = self.send(cancel).await;
        }
        Ok(false)
    }

    fn location(&self, response: &Response<Incoming>, what: &str) -> Result<Url, RegClientError> {
        let value = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegClientError::Protocol {
                what: what.to_string(),
                reason: "no Location header in the answer".into(),
            })?;
        self.base.join(value).map_err(|e| RegClientError::Protocol {
            what: what.to_string(),
            reason: format!("Location {value:?}: {e}"),
        })
    }

    async fn start_upload(&self, repo: &str) -> Result<Url, RegClientError> {
        let path = v2(repo, "blobs/uploads/");
        let what = format!("POST {path}");
        let req = Req::new(Method::POST, self.url(&path)?, repo, what.clone());
        let response = self.expect(req, &[StatusCode::ACCEPTED]).await?;
        self.location(&response, &what)
    }

    async fn finish_upload(
        &self,
        repo: &str,
        mut location: Url,
        digest: &str,
        body: Bytes,
    ) -> Result<(), RegClientError> {
        location.query_pairs_mut().append_pair("digest", digest);
        let what = format!("PUT blob {digest} into {repo}");
        let req = Req::new(Method::PUT, location, repo, what)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.expect(
            req,
            &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK],
        )
        .await?;
        Ok(())
    }

    async fn patch_chunk(
        &self,
        repo: &str,
        location: Url,
        start: u64,
        chunk: Bytes,
    ) -> Result<Url, RegClientError> {
        let end = start + chunk.len() as u64 - 1;
        let what = format!("PATCH upload of {repo} bytes {start}-{end}");
        let req = Req::new(Method::PATCH, location, repo, what.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(
                HeaderName::from_static("content-range"),
                format!("{start}-{end}"),
            )
            .body(chunk);
        let response = self.expect(req, &[StatusCode::ACCEPTED]).await?;
        self.location(&response, &what)
    }

    /// Uploads a blob of known digest: monolithic when it fits one chunk, else chunked PATCHes
    /// streamed from `source`. Skips the upload when the repository already has the blob.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        source: BlobSource,
    ) -> Result<(), RegClientError> {
        if self.blob_exists(repo, digest).await?.is_some() {
            return Ok(());
        }
        let mut location = self.start_upload(repo).await?;
        let len = source.len();
        let io_err = |e| RegClientError::io(format!("reading blob {digest}"), e);
        if len <= self.chunk_size as u64 {
            let body = source.chunk(0, len as usize).await.map_err(io_err)?;
            return self.finish_upload(repo, location, digest, body).await;
        }
        let mut offset = 0;
        while offset < len {
            let chunk = source
                .chunk(offset, self.chunk_size)
                .await
                .map_err(io_err)?;
            let n = chunk.len() as u64;
            location = self.patch_chunk(repo, location, offset, chunk).await?;
            offset += n;
        }
        self.finish_upload(repo, location, digest, Bytes::new())
            .await
    }

    /// Uploads whatever `reader` yields in chunks, hashing as it goes; returns `(digest, size)`.
    pub async fn upload_blob_reader<R: AsyncRead + Unpin + Send>(
        &self,
        repo: &str,
        mut reader: R,
    ) -> Result<(String, u64), RegClientError> {
        let mut location = self.start_upload(repo).await?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(self.chunk_size);
            while buf.len() < self.chunk_size {
                let n = (&mut reader)
                    .take((self.chunk_size - buf.len()) as u64)
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| RegClientError::io(format!("reading a blob for {repo}"), e))?;
                if n == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            hasher.update(&buf);
            let n = buf.len() as u64;
            location = self
                .patch_chunk(repo, location, offset, buf.freeze())
                .await?;
            offset += n;
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        self.finish_upload(repo, location, &digest, Bytes::new())
            .await?;
        Ok((digest, offset))
    }

    /// Stores a manifest under `reference` (a tag, or its digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
    ) -> Result<String, RegClientError> {
        let path = v2(repo, &format!("manifests/{reference}"));
        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        let req = Req::new(Method::PUT, self.url(&path)?, repo, format!("PUT {path}"))
            .header(CONTENT_TYPE, media_type)
            .body(manifest);
        let response = self
            .expect(
                req,
                &[StatusCode::CREATED, StatusCode::OK, StatusCode::ACCEPTED],
            )
            .await?;
        Ok(header_str(&response, &DOCKER_CONTENT_DIGEST).unwrap_or(computed))
    }

    /// The manifest's digest, media type and size, or `None` when the registry does not have it.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestInfo>, RegClientError> {
        let path = v2(repo, &format!("manifests/{reference}"));
        let req = Req::new(Method::HEAD, self.url(&path)?, repo, format!("HEAD {path}"))
            .header(ACCEPT, MANIFEST_ACCEPT);
        let response = self
            .expect(req, &[StatusCode::OK, StatusCode::NOT_FOUND])
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let digest = header_str(&response, &DOCKER_CONTENT_DIGEST)
            .or_else(|| {
                reference
                    .starts_with("sha256:")
                    .then(|| reference.to_string())
            })
            .ok_or_else(|| RegClientError::Protocol {
                what: format!("HEAD {path}"),
                reason: "no Docker-Content-Digest header".into(),
            })?;
        Ok(Some(ManifestInfo {
            digest,
            media_type: header_str(&response, &CONTENT_TYPE).unwrap_or_default(),
            size: content_length(&response).unwrap_or(0),
        }))
    }

    /// The manifest's bytes; checked against `reference` when it is a digest.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(ManifestInfo, Bytes), RegClientError> {
        let path = v2(repo, &format!("manifests/{reference}"));
        let what = format!("GET {path}");
        let req = Req::new(Method::GET, self.url(&path)?, repo, what.clone())
            .header(ACCEPT, MANIFEST_ACCEPT);
        let response = self.expect(req, &[StatusCode::OK]).await?;
        let media_type = header_str(&response, &CONTENT_TYPE).unwrap_or_default();
        let header_digest = header_str(&response, &DOCKER_CONTENT_DIGEST);
        let body = read_small(response, &what).await?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let expected = if reference.contains(':') {
            Some(reference.to_string())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegClientError::DigestMismatch {
                    what,
                    expected,
                    actual: digest,
                });
            }
        }
        let media_type = if media_type.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
                .unwrap_or_default()
        } else {
            media_type
        };
        Ok((
            ManifestInfo {
                digest,
                media_type,
                size: body.len() as u64,
            },
            body,
        ))
    }

    /// Deletes a manifest by digest, or a tag (registries following distribution spec 1.1).
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<(), RegClientError> {
        let path = v2(repo, &format!("manifests/{reference}"));
        let req = Req::new(
            Method::DELETE,
            self.url(&path)?,
            repo,
            format!("DELETE {path}"),
        );
        self.expect(
            req,
            &[StatusCode::ACCEPTED, StatusCode::OK, StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }

    /// Follows `Link: <...>; rel="next"` pages, collecting `key` (`tags` or `repositories`).
    async fn paged(
        &self,
        repo: &str,
        first: String,
        key: &str,
    ) -> Result<Vec<String>, RegClientError> {
        let mut out = Vec::new();
        let mut next = Some(self.url(&first)?);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let what = format!("GET {}", url.path());
            let req = Req::new(Method::GET, url.clone(), repo, what.clone());
            let response = self.expect(req, &[StatusCode::OK]).await?;
            let link = header_str(&response, &LINK);
            let body = read_small(response, &what).await?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| RegClientError::Protocol {
                    what: what.clone(),
                    reason: format!("not JSON: {e}"),
                })?;
            let items = value.get(key).and_then(|v| v.as_array());
            out.extend(
                items
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string)),
            );
            if let Some(link) = link.as_deref().and_then(next_link) {
                let url = url.join(&link).map_err(|e| RegClientError::Protocol {
                    what: what.clone(),
                    reason: format!("Link {link:?}: {e}"),
                })?;
                if pages < 100_000 {
                    next = Some(url);
                }
            }
        }
        Ok(out)
    }

    /// Every tag of `repo`, all pages.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegClientError> {
        let first = format!("{}?n={}", v2(repo, "tags/list"), self.page_size);
        self.paged(repo, first, "tags").await
    }

    /// Every repository of the registry, all pages.
    pub async fn catalog(&self) -> Result<Vec<String>, RegClientError> {
        self.paged(
            "",
            format!("/v2/_catalog?n={}", self.page_size),
            "repositories",
        )
        .await
    }

    /// `GET` a blob; the answer's body streams (not verified: hash it while reading, as
    /// [`RegistryClient::download_blob`] does). Storage redirects (S3 and friends) are followed,
    /// without credentials when they lead to another host.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Response<Incoming>, RegClientError> {
        const REDIRECTS: [StatusCode; 4] = [
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::FOUND,
            StatusCode::SEE_OTHER,
            StatusCode::PERMANENT_REDIRECT,
        ];
        let path = v2(repo, &format!("blobs/{digest}"));
        let what = format!("GET {path}");
        let mut url = self.url(&path)?;
        for _ in 0..5 {
            let req = Req::new(Method::GET, url.clone(), repo, what.clone());
            let response = if url.origin() == self.base.origin() {
                let mut expected = vec![StatusCode::OK];
                expected.extend(REDIRECTS);
                self.expect(req, &expected).await?
            } else {
                let r = self.send_once(&req, None).await?;
                if r.status() != StatusCode::OK && !REDIRECTS.contains(&r.status()) {
                    let status = r.status();
                    let body = read_small(r, &what).await.unwrap_or_default();
                    return Err(error_from(&what, status, &body));
                }
                r
            };
            if response.status() == StatusCode::OK {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegClientError::Protocol {
                    what: what.clone(),
                    reason: "redirect without a Location header".into(),
                })?;
            url = url.join(location).map_err(|e| RegClientError::Protocol {
                what: what.clone(),
                reason: format!("Location {location:?}: {e}"),
            })?;
        }
        Err(RegClientError::Protocol {
            what,
            reason: "too many redirects".into(),
        })
    }

    /// Downloads a blob into `dest`, hashing while streaming; the file is removed and an error
    /// returned when the content does not match `digest`. Returns the size.
    pub async fn download_blob(
        &self,
        repo: &str,
        digest: &str,
        dest: &Path,
    ) -> Result<u64, RegClientError> {
        let what = format!("GET {}", v2(repo, &format!("blobs/{digest}")));
        let response = self.get_blob(repo, digest).await?;
        let io_err = |e| RegClientError::io(dest.display(), e);
        let mut file = tokio::fs::File::create(dest).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| RegClientError::Unreachable {
                what: what.clone(),
                reason: error_chain(&e),
            })?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                size += data.len() as u64;
                file.write_all(&data).await.map_err(io_err)?;
            }
        }
        file.flush().await.map_err(io_err)?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
            return Err(RegClientError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(size)
    }
}

/// The URL in a `Link: <url>; rel="next"` header.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

fn header_str(response: &Response<Incoming>, name: &HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

fn content_length(response: &Response<Incoming>) -> Option<u64> {
    header_str(response, &CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

async fn read_small(response: Response<Incoming>, what: &str) -> Result<Bytes, RegClientError> {
    let limited = http_body_util::Limited::new(response.into_body(), MAX_SMALL_BODY);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| RegClientError::Unreachable {
            what: what.to_string(),
            reason: format!("reading the answer: {e}"),
        })
}

/// The distribution spec's error body.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// `{"errors":[{"code":"DENIED","message":"..."}]}` → "registry answered DENIED: ...".
pub(crate) fn error_from(what: &str, status: StatusCode, body: &[u8]) -> RegClientError {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if let Some(first) = parsed.errors.first() {
            let mut message = parsed
                .errors
                .iter()
                .map(|e| {
                    let mut m = if e.message.is_empty() {
                        e.code.to_lowercase().replace('_', " ")
                    } else {
                        e.message.clone()
                    };
                    if let Some(d) = e.detail.as_ref().filter(|d| !d.is_null()) {
                        m.push_str(&format!(" ({d})"));
                    }
                    m
                })
                .collect::<Vec<_>>()
                .join("; ");
            if message.is_empty() {
                message = status.to_string();
            }
            return RegClientError::Registry {
                what: what.to_string(),
                status: status.as_u16(),
                code: first.code.clone(),
                message,
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let body = if text.is_empty() {
        status.canonical_reason().unwrap_or("").to_lowercase()
    } else {
        text.chars().take(300).collect()
    };
    RegClientError::Http {
        what: what.to_string(),
        status: status.as_u16(),
        body,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_from_registry_json_names_code_and_message() {
        let err = error_from(
            "PUT /v2/a/manifests/v1",
            StatusCode::FORBIDDEN,
            br#"{"errors":[{"code":"DENIED","message":"push to default/app not allowed"}]}"#,
        );
        assert_eq!(
            err.to_string(),
            "PUT /v2/a/manifests/v1: registry answered DENIED: push to default/app not allowed"
        );
        assert_eq!(err.status(), Some(403));
        assert_eq!(err.code(), Some("DENIED"));
    }

    #[test]
    fn error_from_registry_json_with_detail_appends_detail() {
        let err = error_from(
            "x",
            StatusCode::NOT_FOUND,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#,
        );
        assert!(
            err.to_string()
                .contains(r#"manifest unknown ({"Tag":"v9"})"#),
            "{err}"
        );
    }

    #[test]
    fn error_from_plain_text_body_is_http_error() {
        let err = error_from("x", StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(
            err.to_string(),
            "x: registry answered HTTP 502: upstream down"
        );
    }

    #[test]
    fn error_from_empty_body_uses_reason_phrase() {
        let err = error_from("x", StatusCode::NOT_FOUND, b"");
        assert_eq!(err.to_string(), "x: registry answered HTTP 404: not found");
    }

    #[test]
    fn next_link_relative_url_with_rel_next_is_returned() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn client_new_rejects_url_without_scheme() {
        let err = RegistryClient::new(ClientConfig::new("ftp://x")).unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn client_host_includes_port() {
        let c = RegistryClient::new(ClientConfig::new("http://127.0.0.1:5000/")).unwrap();
        assert_eq!(c.host(), "127.0.0.1:5000");
    }

    #[tokio::test]
    async fn blob_source_file_chunk_reads_range() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let src = BlobSource::File {
            file: Arc::new(f),
            offset: 2,
            len: 6,
        };
        assert_eq!(&src.chunk(0, 4).await.unwrap()[..], b"2345");
        assert_eq!(&src.chunk(4, 4).await.unwrap()[..], b"67");
    }
}
