//! Pull-through for mirrored repositories: manifests and blobs missing locally are fetched from the
//! configured upstream registry (anonymous, Basic, or the Bearer token challenge flow), verified,
//! stored and then served from the local copy.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::ApiError as E;
use crate::manifest;
use crate::meta::{self, ManifestRecord, TagRecord};
use crate::names::Digest;
use crate::storage::{self, AppendError, RunningHash};
use crate::{Registry, Upstream};

type HttpClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const MAX_REDIRECTS: usize = 5;
/// A cached tag of a mirrored repository is checked against the upstream after this long.
const TAG_REFRESH_SECS: i64 = 300;
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Until the upstream's answer headers arrive.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Upstream registries by mirrored host, with an HTTP(S) client and cached bearer tokens.
pub(crate) struct Client {
    upstreams: Vec<Upstream>,
    http: Option<HttpClient>,
    /// Bearer tokens by upstream URL + scope.
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
}

fn http_client() -> Result<HttpClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector))
}

/// The parameters of a `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` challenge.
pub(crate) fn parse_bearer_challenge(value: &str) -> Option<HashMap<String, String>> {
    let rest = value
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| value.trim().strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let v = std::iter::from_fn(|| chars.next_if(|c| *c != '"')).collect();
            chars.next();
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect()
        };
        out.insert(key.trim().to_lowercase(), value);
    }
    out.contains_key("realm").then_some(out)
}

impl Client {
    pub fn new(upstreams: &[Upstream]) -> Client {
        let http = if upstreams.is_empty() {
            None
        } else {
            match http_client() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "registry: no TLS client for upstream registries; pull-through is off");
                    None
                }
            }
        };
        Client {
            upstreams: upstreams.to_vec(),
            http,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn for_repo(&self, repo: &str) -> Option<(&Upstream, String)> {
        let (host, path) = repo.split_once('/')?;
        let u = self.upstreams.iter().find(|u| u.host == host)?;
        Some((u, path.to_string()))
    }

    fn basic(u: &Upstream) -> Option<String> {
        let user = u.username.as_deref()?;
        let pass = u.password.as_deref().unwrap_or("");
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        ))
    }

    /// GET with auth (cached bearer token, else Basic), answering a Bearer challenge once, and
    /// following redirects (credentials dropped when the host changes).
    async fn get(
        &self,
        u: &Upstream,
        path: &str,
        accept: Option<&str>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let http = self
            .http
            .as_ref()
            .ok_or("no HTTP client for upstream registries")?;
        let base = u.url.trim_end_matches('/');
        let mut url = format!("{base}{path}");
        let token_key = format!(
            "{base}{}",
            path.split("/manifests/")
                .next()
                .unwrap_or(path)
                .split("/blobs/")
                .next()
                .unwrap_or(path)
        );
        let mut challenged = false;
        let mut hops = 0;
        let mut same_host = true;
        loop {
            let mut b = Request::get(&url).header(header::USER_AGENT, "mini-registry");
            if let Some(a) = accept {
                b = b.header(header::ACCEPT, a);
            }
            if same_host {
                if let Some(t) = self.tokens.lock().await.get(&token_key) {
                    b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
                } else if let Some(basic) = Self::basic(u) {
                    b = b.header(header::AUTHORIZATION, basic);
                }
            }
            let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(RESPONSE_TIMEOUT, http.request(req))
                .await
                .map_err(|_| format!("GET {url}: no answer within {RESPONSE_TIMEOUT:?}"))?
                .map_err(|e| format!("GET {url}: {e}"))?;
            if resp.status().is_redirection() {
                hops += 1;
                let loc = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("GET {url}: redirect without Location"))?;
                if hops > MAX_REDIRECTS {
                    return Err(format!("GET {url}: too many redirects"));
                }
                let next = if loc.starts_with("http://") || loc.starts_with("https://") {
                    loc.to_string()
                } else {
                    let origin: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
                    format!(
                        "{}://{}{loc}",
                        origin.scheme_str().unwrap_or("https"),
                        origin.authority().map(|a| a.as_str()).unwrap_or("")
                    )
                };
                let host = |s: &str| {
                    s.parse::<http::Uri>()
                        .ok()
                        .and_then(|u| u.authority().map(|a| a.to_string()))
                };
                same_host = same_host && host(&next) == host(&url);
                url = next;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged && same_host {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_bearer_challenge);
                let Some(params) = challenge else {
                    return Ok(resp);
                };
                let token = self.fetch_token(u, &params).await?;
                self.tokens.lock().await.insert(token_key.clone(), token);
                continue;
            }
            return Ok(resp);
        }
    }

    async fn fetch_token(
        &self,
        u: &Upstream,
        params: &HashMap<String, String>,
    ) -> Result<String, String> {
        let http = self.http.as_ref().ok_or("no HTTP client")?;
        let realm = &params["realm"];
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(v) = params.get(key) {
                query.push(format!("{key}={}", encode_query(v)));
            }
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = if query.is_empty() {
            realm.clone()
        } else {
            format!("{realm}{sep}{}", query.join("&"))
        };
        let mut b = Request::get(&url).header(header::USER_AGENT, "mini-registry");
        if let Some(basic) = Self::basic(u) {
            b = b.header(header::AUTHORIZATION, basic);
        }
        let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(RESPONSE_TIMEOUT, http.request(req))
            .await
            .map_err(|_| format!("token request {url}: no answer within {RESPONSE_TIMEOUT:?}"))?
            .map_err(|e| format!("token request {url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "token request {url} answered {status}: check the upstream credentials"
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("token answer: {e}"))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| "token answer has no token".to_string())
    }
}

fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn upstream_err(msg: String) -> E {
    E::new(
        StatusCode::BAD_GATEWAY,
        "UNKNOWN",
        format!("upstream registry: {msg}"),
    )
}

impl Registry {
    /// Whether `reference` is a tag of a mirrored repository with an upstream, cached longer ago
    /// than the refresh period.
    pub(crate) async fn tag_refresh_due(&self, repo: &str, reference: &str) -> Result<bool, E> {
        if Digest::parse(reference).is_some() || self.upstream.for_repo(repo).is_none() {
            return Ok(false);
        }
        let tag = self
            .meta
            .get::<TagRecord>(&meta::tag_key(repo, reference))
            .await?;
        Ok(tag.is_some_and(|t| meta::now() - t.pushed > TAG_REFRESH_SECS))
    }

    /// Fetches a manifest of a mirrored repository from its upstream and caches it (with the tag);
    /// `None` without an upstream or when the upstream does not have it.
    pub(crate) async fn pull_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Digest, ManifestRecord)>, E> {
        let Some((u, path)) = self.upstream.for_repo(repo) else {
            return Ok(None);
        };
        let resp = self
            .upstream
            .get(
                u,
                &format!("/v2/{path}/manifests/{reference}"),
                Some(ACCEPT_MANIFESTS),
            )
            .await
            .map_err(upstream_err)?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => {
                return Err(upstream_err(format!(
                    "{} answered {s} for {path}:{reference}",
                    u.url
                )))
            }
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(Digest::parse);
        let limit = self.config.max_manifest_bytes;
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| upstream_err(format!("reading the manifest of {path}:{reference}: {e}")))?
            .to_bytes();
        let digest = match Digest::parse(reference) {
            Some(d) => d,
            None => announced.unwrap_or_else(|| Digest::sha256_of(&body)),
        };
        if !digest.matches(&body) {
            return Err(upstream_err(format!(
                "the manifest of {path}:{reference} does not match digest {digest}"
            )));
        }
        let parsed = manifest::parse(&content_type, &body)?;
        let _guard = self.gc_lock.read().await;
        let total = body.len() as u64 + parsed.blob_sizes;
        let record = self
            .record_manifest(repo, reference, &digest, &body, &parsed, total)
            .await?;
        Ok(Some((digest, record)))
    }

    /// Fetches a blob of a mirrored repository from its upstream (streamed to disk, verified) and
    /// links it; its size when stored.
    pub(crate) async fn pull_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, E> {
        let Some((u, path)) = self.upstream.for_repo(repo) else {
            return Ok(None);
        };
        let resp = self
            .upstream
            .get(u, &format!("/v2/{path}/blobs/{digest}"), None)
            .await
            .map_err(upstream_err)?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => {
                return Err(upstream_err(format!(
                    "{} answered {s} for blob {digest} of {path}",
                    u.url
                )))
            }
        }
        let tmp = self
            .disk
            .upload_path(&format!("tmp-{}", uuid::Uuid::new_v4()));
        let mut hash = RunningHash::new();
        let body = resp.into_body().map_err(std::io::Error::other);
        if let Err(e) = storage::append_body(&tmp, &mut hash, body).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(match e {
                AppendError::Disk(e) => {
                    crate::RegistryError::io(format!("storing blob {digest}"), e).into()
                }
                AppendError::Body(e) => upstream_err(format!("reading blob {digest}: {e}")),
            });
        }
        let ok = match digest.algorithm {
            crate::names::Algorithm::Sha256 => hash.digest() == *digest,
            crate::names::Algorithm::Sha512 => tokio::fs::read(&tmp)
                .await
                .is_ok_and(|b| digest.matches(&b)),
        };
        if !ok {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(upstream_err(format!(
                "blob {digest} from {} does not match its digest",
                u.url
            )));
        }
        let _guard = self.gc_lock.read().await;
        self.disk.commit_file(&tmp, digest).await?;
        self.link_blob(repo, digest, hash.offset).await?;
        Ok(Some(hash.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bearer_challenge_docker_hub_form() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn encode_query_scope_escaped() {
        assert_eq!(
            encode_query("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
