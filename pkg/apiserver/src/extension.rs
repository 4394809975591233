//! Hooks for server features that live in other crates (the embedded image registry, the
//! monitoring and log endpoints): routes whose request bodies stream instead of being read into
//! memory, the catalog behind the `registry.mini.dev` API group, and the identity and
//! permission checks they need.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use http::{header, HeaderMap, Request, Response};
use mini_api::ApiError;
use mini_rbac::{Decision, RequestAttributes, UserInfo};
use serde_json::Value;

use crate::body::Body;
use crate::ApiServer;

/// A route served with a streaming request body (`/v2/` of the image registry).
pub trait StreamingRoute: Send + Sync + 'static {
    /// Whether this route answers `path`.
    fn handles(&self, path: &str) -> bool;
    /// Answers one request; `peer` is the verified TLS client certificate's identity.
    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>>;
}

/// A JSON response of a [`StreamingRoute`] from already-serialised bytes.
pub fn route_json(status: http::StatusCode, bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(crate::body::full(bytes))
        .unwrap_or_default()
}

/// A Kubernetes `Status` failure of a [`StreamingRoute`], as the rest of the API port answers.
pub fn route_failure(status: http::StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    route_json(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// The caller of an administrators' [`StreamingRoute`] (its headers, method and path),
/// authenticated (401 with
/// `unauthenticated` as the message) and allowed the request's verb on its path (403 ending in
/// `restricted`, e.g. "snapshots are for cluster administrators").
pub async fn admin_route_user(
    api: &ApiServer,
    request: (&HeaderMap, &http::Method, &str),
    peer: Option<&UserInfo>,
    unauthenticated: &str,
    restricted: &str,
) -> Result<UserInfo, Response<Body>> {
    let (headers, method, path) = request;
    let unauthorized = |m: &str| route_failure(http::StatusCode::UNAUTHORIZED, "Unauthorized", m);
    let user = match api.authenticate_credentials(headers, peer).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(unauthorized(unauthenticated)),
        Err(e) => return Err(unauthorized(&e)),
    };
    let verb = method.as_str().to_ascii_lowercase();
    if !api.may_path(&user, &verb, path).await {
        return Err(route_failure(
            http::StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "user {:?} cannot {verb} path {path:?}: {restricted}",
                user.name
            ),
        ));
    }
    Ok(user)
}

/// One repository of the image registry as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryEntry {
    /// The full repository name (`default/app`, `docker.io/library/busybox`).
    pub repository: String,
    /// The Kubernetes namespace; `None` for mirrored upstream repositories.
    pub namespace: Option<String>,
    pub tags: usize,
    /// Bytes of all blobs the repository's manifests reference (shared blobs counted once).
    pub size: u64,
    pub last_push: Option<DateTime<Utc>>,
}

/// One tag of a repository as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TagEntry {
    pub repository: String,
    pub namespace: Option<String>,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Manifest, config and layers.
    pub size: u64,
    pub pushed: Option<DateTime<Utc>>,
}

/// What the `registry.mini.dev` resources list and delete.
#[async_trait]
pub trait ImageCatalog: Send + Sync + 'static {
    /// Repositories in `namespace`; all (mirrored ones included) when `None`.
    async fn repositories(&self, namespace: Option<&str>) -> Result<Vec<RepositoryEntry>, String>;
    /// Tags of the repositories in `namespace`; all when `None`.
    async fn tags(&self, namespace: Option<&str>) -> Result<Vec<TagEntry>, String>;
    /// Deletes one tag (the manifest stays until garbage collection).
    async fn delete_tag(&self, repository: &str, tag: &str) -> Result<(), String>;
    /// Stores a container's filesystem changes (`layer`: a gzip tar, streamed from the node)
    /// on top of its image as `target_repository:target_tag`; returns the manifest digest.
    async fn commit(&self, commit: ContainerCommit, layer: Body) -> Result<String, String>;
}

/// A container snapshot on its way into the registry (`pods/commit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCommit {
    /// The container's image as its pod names it (`busybox`, `10.0.0.1:6443/default/app:v1`).
    pub image: String,
    /// The image's manifest digest as the node's containerd records it, when known.
    pub image_digest: Option<String>,
    /// sha256 of the uncompressed layer tar.
    pub diff_id: String,
    /// sha256 of the gzip layer as sent.
    pub layer_digest: Option<String>,
    pub layer_size: Option<u64>,
    pub target_repository: String,
    pub target_tag: String,
}

/// Authenticates people's accounts (mini-accounts): their session cookies and the tokens of
/// their downloaded kubeconfigs. Installed once; the API server asks it after its own
/// authenticators found nothing.
#[async_trait]
pub trait AccountAuthenticator: Send + Sync + 'static {
    /// The user of a bearer token; `None` when the token is not an account token.
    async fn authenticate_token(&self, token: &str) -> Option<Result<UserInfo, ApiError>>;
    /// The user of a request carrying a session cookie; `None` without one. A write (any
    /// method but GET/HEAD/OPTIONS) must pass the CSRF and Origin checks, else `Err` (403).
    /// `uri` gives the server's own origin when HTTP/2 sends no `Host` header.
    async fn authenticate_session(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Option<Result<UserInfo, ApiError>>;
}

/// One request as the audit log sees it (a subset of upstream's `audit.k8s.io/v1` Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub user: UserInfo,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub request_uri: String,
    pub code: u16,
    pub source_ip: Option<std::net::IpAddr>,
}

/// Receives every mutating request once its answer is known; decides itself what to keep.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);
}

/// The client's address, set on each request by the TLS listener (absent in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// The annotation on a Namespace that lets anonymous clients pull its repositories.
pub const ANONYMOUS_PULL_ANNOTATION: &str = "registry.mini.dev/anonymous-pull";
/// The API group of the registry's resources.
pub const REGISTRY_GROUP: &str = "registry.mini.dev";

impl ApiServer {
    /// Adds a streaming route; a request goes to the first added route that handles its path.
    pub fn add_streaming_route(&self, route: Arc<dyn StreamingRoute>) {
        self.inner
            .streaming_routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(route);
    }

    /// Adds metric families another crate renders to the server's `/metrics`.
    pub fn add_metrics_source(&self, source: crate::metrics::MetricsSource) {
        self.inner.metrics.add_source(source);
    }

    /// Installs the image catalog behind `registry.mini.dev` (once).
    pub fn set_image_catalog(&self, catalog: Arc<dyn ImageCatalog>) {
        let _ = self.inner.image_catalog.set(catalog);
    }

    /// Installs the account authenticator (once).
    pub fn set_account_authenticator(&self, authenticator: Arc<dyn AccountAuthenticator>) {
        let _ = self.inner.account_authenticator.set(authenticator);
    }

    /// Installs the audit sink (once).
    pub fn set_audit_sink(&self, sink: Arc<dyn AuditSink>) {
        let _ = self.inner.audit_sink.set(sink);
    }

    /// The caller of a request outside the Kubernetes API, including session cookies (with
    /// their CSRF and Origin checks for writes): as [`ApiServer::authenticate_credentials`],
    /// then the account authenticator. `Ok(None)`: no credentials at all.
    pub async fn authenticate_request(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, ApiError> {
        if credential(headers).ok().flatten().is_none() && peer.is_none() {
            if let Some(hook) = self.inner.account_authenticator.get() {
                if let Some(result) = hook.authenticate_session(method, uri, headers).await {
                    return result.map(Some);
                }
            }
        }
        self.authenticate_credentials(headers, peer)
            .await
            .map_err(|m| ApiError::new(401, "Unauthorized", m))
    }

    /// Whether `user` may do what `attrs` says (the authorizer chain).
    pub async fn allows(&self, user: &UserInfo, attrs: &RequestAttributes) -> bool {
        matches!(
            crate::auth::decide(self, user, attrs).await,
            Ok(Decision::Allow)
        )
    }

    pub(crate) fn streaming_route(&self, path: &str) -> Option<Arc<dyn StreamingRoute>> {
        self.inner
            .streaming_routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|r| r.handles(path))
            .cloned()
    }

    pub(crate) fn image_catalog(&self) -> Option<Arc<dyn ImageCatalog>> {
        self.inner.image_catalog.get().cloned()
    }

    /// The caller of a request outside the Kubernetes API: the verified client certificate
    /// `peer`, or the token in `Authorization: Bearer <token>` or `Basic base64(user:token)` (a
    /// ServiceAccount token, a join or bootstrap token; the user name is ignored, as with
    /// `docker login`). `Ok(None)`: no credentials at all; `Err`: credentials that are invalid.
    pub async fn authenticate_credentials(
        &self,
        headers: &HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, String> {
        let token = match credential(headers)? {
            Some(token) => token,
            None => return Ok(peer.cloned()),
        };
        let mut bearer_headers = HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the credentials contain characters a token cannot have".to_string())?;
        bearer_headers.insert(header::AUTHORIZATION, value);
        match crate::auth::authenticate(self, &bearer_headers, None).await {
            Ok(user) => Ok(Some(user)),
            Err(e) => Err(e.message),
        }
    }

    /// Whether `user` may do `verb` on `resource` (`pods`, or with a subresource `pods/log`) of
    /// `group` in `namespace` (`None`: cluster scope), by the authorizer chain (Node
    /// authorizer, then RBAC).
    pub async fn may(
        &self,
        user: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let attrs = RequestAttributes {
            verb: verb.to_string(),
            resource_request: true,
            api_group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.unwrap_or_default().to_string(),
            ..Default::default()
        };
        matches!(
            crate::auth::decide(self, user, &attrs).await,
            Ok(Decision::Allow)
        )
    }

    /// Whether `user` may `verb` (the lowercase HTTP method) the non-resource URL `path`, by
    /// the authorizer chain (RBAC `nonResourceURLs`; cluster admins may everything).
    pub async fn may_path(&self, user: &UserInfo, verb: &str, path: &str) -> bool {
        let attrs = RequestAttributes {
            verb: verb.to_string(),
            resource_request: false,
            path: path.to_string(),
            ..Default::default()
        };
        matches!(
            crate::auth::decide(self, user, &attrs).await,
            Ok(Decision::Allow)
        )
    }

    /// Whether the Namespace `namespace` carries [`ANONYMOUS_PULL_ANNOTATION`]`: "true"`.
    pub async fn namespace_allows_anonymous_pull(&self, namespace: &str) -> bool {
        let key = format!("/registry/core/namespaces/{namespace}");
        let Ok(Some(kv)) = self.inner.store.get(&key).await else {
            return false;
        };
        serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|ns| {
                ns["metadata"]["annotations"][ANONYMOUS_PULL_ANNOTATION]
                    .as_str()
                    .map(|v| v.eq_ignore_ascii_case("true"))
            })
            .unwrap_or(false)
    }
}

/// The token of an `Authorization` header: `Bearer <token>` or `Basic base64(user:token)`.
fn credential(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text".to_string())?
        .trim();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Ok(Some(token.trim().to_string()));
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "the Basic credentials are not base64".to_string())?;
        let text = String::from_utf8(decoded)
            .map_err(|_| "the Basic credentials are not UTF-8".to_string())?;
        let (_, password) = text
            .split_once(':')
            .ok_or_else(|| "the Basic credentials have no user:password form".to_string())?;
        if password.is_empty() {
            return Err("the Basic password is empty: log in with a token as the password".into());
        }
        return Ok(Some(password.to_string()));
    }
    Err("unsupported Authorization scheme: use Basic (token as password) or Bearer".into())
}

/// A catalog error as an API error.
pub(crate) fn catalog_error(message: String) -> ApiError {
    ApiError::internal(format!("image registry: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn credential_basic_with_token_password_yields_token() {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("anyone:tok.en");
        assert_eq!(
            credential(&headers(&format!("Basic {encoded}"))).unwrap(),
            Some("tok.en".to_string())
        );
    }

    #[test]
    fn credential_bearer_yields_token() {
        assert_eq!(
            credential(&headers("Bearer abc")).unwrap(),
            Some("abc".to_string())
        );
    }

    #[test]
    fn credential_none_yields_none() {
        assert_eq!(credential(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn credential_malformed_basic_is_an_error() {
        assert!(credential(&headers("Basic !!!")).is_err());
        use base64::Engine;
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(credential(&headers(&format!("Basic {no_colon}"))).is_err());
        let empty = base64::engine::general_purpose::STANDARD.encode("user:");
        assert!(credential(&headers(&format!("Basic {empty}"))).is_err());
        assert!(credential(&headers("Digest x")).is_err());
    }
}
