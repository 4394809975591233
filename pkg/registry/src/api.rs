//! The HTTP API of the distribution spec v1.1: routing, authorisation, blobs, uploads, manifests,
//! tags, referrers and the catalog.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use mini_rbac::UserInfo;

use crate::error::ApiError as E;
use crate::meta::{self, ManifestRecord, TagRecord, UploadRecord};
use crate::names::{self, Digest};
use crate::storage::{self, AppendError, RunningHash};
use crate::{manifest, Registry, RequestBody, ResponseBody};

type Result<T> = std::result::Result<T, E>;

/// What a `/v2/...` path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

/// Parses the path after `/v2`.
pub(crate) fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Route::Tags(name(2)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        if segs[n - 1].is_empty() {
            return Some(Route::UploadStart(name(3)));
        }
        return Some(Route::Upload(name(3), segs[n - 1].to_string()));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Route::UploadStart(name(2)));
    }
    if n >= 3 && segs[n - 2] == "manifests" {
        return Some(Route::Manifest(name(2), segs[n - 1].to_string()));
    }
    if n >= 3 && segs[n - 2] == "blobs" {
        return Some(Route::Blob(name(2), segs[n - 1].to_string()));
    }
    if n >= 3 && segs[n - 2] == "referrers" {
        return Some(Route::Referrers(name(2), segs[n - 1].to_string()));
    }
    None
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> ResponseBody {
    full(Bytes::new())
}

fn resp(status: StatusCode) -> http::response::Builder {
    Response::builder().status(status)
}

pub(crate) fn error_response(e: &E) -> Response<ResponseBody> {
    let mut r = Response::new(full(e.body()));
    *r.status_mut() = e.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mini\""),
        );
    }
    r
}

fn build(b: http::response::Builder, body: ResponseBody) -> Result<Response<ResponseBody>> {
    b.body(body)
        .map_err(|e| E::internal(format!("building the response: {e}")))
}

fn unauthorized(msg: &str) -> E {
    E::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", msg)
}

impl Registry {
    /// Serves one `/v2` request. The body is streamed into upload files, never collected.
    pub async fn handle(
        &self,
        req: Request<RequestBody>,
        peer: Option<UserInfo>,
    ) -> Response<ResponseBody> {
        let head_only = req.method() == Method::HEAD;
        let mut r = match self.dispatch(req, peer).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        if head_only {
            *r.body_mut() = empty();
        }
        r.headers_mut().insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        r
    }

    async fn dispatch(
        &self,
        req: Request<RequestBody>,
        peer: Option<UserInfo>,
    ) -> Result<Response<ResponseBody>> {
        let user = self
            .access
            .authenticate(req.headers(), peer.as_ref())
            .await
            .map_err(|m| unauthorized(&format!("authentication failed: {m}")))?;
        let path = req.uri().path().to_string();
        if path.split('/').any(|s| s == ".." || s == ".") {
            return Err(E::name_invalid(&path));
        }
        let route = route(&path).ok_or_else(|| {
            E::new(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                format!("no registry endpoint at {path}"),
            )
        })?;
        let params = query_params(req.uri().query());
        let method = req.method().clone();
        let name = match &route {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n.clone()),
        };
        if let Some(n) = &name {
            if !names::valid_repository(n) {
                return Err(E::name_invalid(n));
            }
        }
        let u = user.as_ref();
        match (route, method) {
            (Route::Base, Method::GET | Method::HEAD) => {
                if user.is_none() {
                    return Err(unauthorized("authentication required"));
                }
                build(
                    resp(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
                    full("{}"),
                )
            }
            (Route::Catalog, Method::GET) => self.catalog(u, &params).await,
            (Route::Tags(n), Method::GET) => {
                self.authorize(u, &["get"], &n).await?;
                self.tags_list(&n, &params).await
            }
            (Route::Manifest(n, r), Method::GET | Method::HEAD) => {
                self.authorize(u, &["get"], &n).await?;
                self.get_manifest(&n, &r, req.headers()).await
            }
            (Route::Manifest(n, r), Method::PUT) => {
                let verb = if Digest::parse(&r).is_none()
                    && self
                        .meta
                        .get::<TagRecord>(&meta::tag_key(&n, &r))
                        .await?
                        .is_some()
                {
                    "update"
                } else {
                    "create"
                };
                self.authorize(u, &[verb], &n).await?;
                self.put_manifest(&n, &r, req).await
            }
            (Route::Manifest(n, r), Method::DELETE) => {
                self.authorize(u, &["delete"], &n).await?;
                self.delete_manifest(&n, &r).await
            }
            (Route::Blob(n, d), Method::GET | Method::HEAD) => {
                self.authorize(u, &["get"], &n).await?;
                self.get_blob(&n, &d, req.headers()).await
            }
            (Route::Blob(n, d), Method::DELETE) => {
                self.authorize(u, &["delete"], &n).await?;
                self.delete_blob(&n, &d).await
            }
            (Route::UploadStart(n), Method::POST) => {
                self.authorize(u, &["create", "update"], &n).await?;
                self.start_upload(u, &n, &params, req).await
            }
            (Route::Upload(n, id), Method::GET) => {
                self.authorize(u, &["create", "update"], &n).await?;
                self.upload_status(&n, &id).await
            }
            (Route::Upload(n, id), Method::PATCH) => {
                self.authorize(u, &["create", "update"], &n).await?;
                self.patch_upload(&n, &id, req).await
            }
            (Route::Upload(n, id), Method::PUT) => {
                self.authorize(u, &["create", "update"], &n).await?;
                self.finish_upload(&n, &id, &params, req).await
            }
            (Route::Upload(n, id), Method::DELETE) => {
                self.authorize(u, &["create", "update"], &n).await?;
                self.cancel_upload(&n, &id).await
            }
            (Route::Referrers(n, d), Method::GET) => {
                self.authorize(u, &["get"], &n).await?;
                self.referrers(&n, &d, &params).await
            }
            (_, m) => Err(E::unsupported(format!(
                "method {m} is not supported on {path}"
            ))),
        }
    }

    /// Allows when the user may do any of `verbs`; else 401 (anonymous) or 403 DENIED.
    pub(crate) async fn authorize(
        &self,
        user: Option<&UserInfo>,
        verbs: &[&str],
        repo: &str,
    ) -> Result<()> {
        for verb in verbs {
            if self
                .access
                .allowed(user, verb, names::namespace_of(repo), repo)
                .await
            {
                return Ok(());
            }
        }
        Err(match user {
            None => unauthorized("authentication required"),
            Some(u) => E::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "user {} may not {} repository {repo}",
                    u.name,
                    verbs.join("/")
                ),
            ),
        })
    }

    async fn allowed(&self, user: Option<&UserInfo>, verb: &str, repo: &str) -> bool {
        self.access
            .allowed(user, verb, names::namespace_of(repo), repo)
            .await
    }

    async fn catalog(
        &self,
        user: Option<&UserInfo>,
        params: &[(String, String)],
    ) -> Result<Response<ResponseBody>> {
        if user.is_none() {
            return Err(unauthorized("authentication required"));
        }
        let n = page_size(params)?;
        let last = param(params, "last");
        let (repos, _) = self
            .meta
            .list::<meta::RepoRecord>(&meta::repos_prefix(), None, 0)
            .await?;
        let mut names_out = Vec::new();
        let mut more = false;
        for (key, _) in repos {
            let name = key.trim_start_matches(&meta::repos_prefix()).to_string();
            if last.is_some_and(|l| name.as_str() <= l) {
                continue;
            }
            let visible =
                self.allowed(user, "list", &name).await || self.allowed(user, "get", &name).await;
            if !visible {
                continue;
            }
            if n.is_some_and(|n| names_out.len() >= n) {
                more = true;
                break;
            }
            names_out.push(name);
        }
        let mut b = resp(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
        if let (true, Some(n), Some(last)) = (more, n, names_out.last()) {
            b = b.header(
                header::LINK,
                format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
            );
        }
        let body = serde_json::json!({ "repositories": names_out });
        build(b, full(body.to_string()))
    }

    async fn tags_list(
        &self,
        repo: &str,
        params: &[(String, String)],
    ) -> Result<Response<ResponseBody>> {
        let n = page_size(params)?;
        let prefix = meta::tags_prefix(repo);
        let start = param(params, "last").map(|l| format!("{prefix}{l}"));
        if n == Some(0) {
            return build(
                resp(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
                full(serde_json::json!({"name": repo, "tags": []}).to_string()),
            );
        }
        let (tags, more) = self
            .meta
            .list::<TagRecord>(&prefix, start.as_deref(), n.unwrap_or(0))
            .await?;
        if tags.is_empty()
            && start.is_none()
            && self
                .meta
                .get::<meta::RepoRecord>(&meta::repo_key(repo))
                .await?
                .is_none()
        {
            return Err(E::name_unknown(repo));
        }
        let names_out: Vec<String> = tags
            .into_iter()
            .map(|(k, _)| k.trim_start_matches(&prefix).to_string())
            .collect();
        let mut b = resp(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
        if let (true, Some(n), Some(last)) = (more, n, names_out.last()) {
            b = b.header(
                header::LINK,
                format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\""),
            );
        }
        build(
            b,
            full(serde_json::json!({"name": repo, "tags": names_out}).to_string()),
        )
    }

    async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        headers: &http::HeaderMap,
    ) -> Result<Response<ResponseBody>> {
        if Digest::parse(reference).is_none() && !names::valid_tag(reference) {
            return Err(E::manifest_unknown(reference));
        }
        let found = if self.tag_refresh_due(repo, reference).await? {
            // A cached tag of a mirrored repository: ask the upstream again, the cache answers
            // when the upstream cannot.
            match self.pull_manifest(repo, reference).await {
                Ok(Some(f)) => Some(f),
                Ok(None) => self.resolve(repo, reference).await?,
                Err(e) => {
                    tracing::info!(repository = repo, tag = reference, error = %e.message, "registry: upstream unavailable, serving the cached tag");
                    self.resolve(repo, reference).await?
                }
            }
        } else {
            match self.resolve(repo, reference).await? {
                Some(f) => Some(f),
                None => self.pull_manifest(repo, reference).await?,
            }
        };
        let (digest, rec) = found.ok_or_else(|| E::manifest_unknown(reference))?;
        if self.disk.blob_size(&digest).await.is_none() && !headers.contains_key(crate::PEER_HEADER)
        {
            // recorded (pushed through another server) but not on this disk
            self.manifest_from_peers(repo, &digest, &rec).await?;
        }
        let bytes = self
            .disk
            .read_blob(&digest)
            .await
            .map_err(|_| E::manifest_unknown(reference))?;
        build(
            resp(StatusCode::OK)
                .header(header::CONTENT_TYPE, rec.media_type)
                .header(header::CONTENT_LENGTH, bytes.len())
                .header("Docker-Content-Digest", digest.to_string()),
            full(bytes),
        )
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let limit = self.config.max_manifest_bytes;
        let too_large = || {
            E::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MANIFEST_INVALID",
                format!("manifest is larger than the registry's limit of {limit} bytes"),
            )
        };
        if req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|l| l > limit)
        {
            return Err(too_large());
        }
        let mut body = req.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| E::manifest_invalid(format!("reading the manifest: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        let (digest, parsed) = self
            .store_manifest(repo, reference, &content_type, &bytes)
            .await?;
        let mut b = resp(StatusCode::CREATED)
            .header(header::LOCATION, format!("/v2/{repo}/manifests/{digest}"))
            .header("Docker-Content-Digest", digest.to_string());
        if let Some(subject) = parsed.subject {
            b = b.header("OCI-Subject", subject);
        }
        build(b, empty())
    }

    async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<Response<ResponseBody>> {
        let _guard = self.gc_lock.read().await;
        if Digest::parse(reference).is_none() {
            if !self.meta.delete(&meta::tag_key(repo, reference)).await? {
                return Err(E::manifest_unknown(reference));
            }
            return build(resp(StatusCode::ACCEPTED), empty());
        }
        if !self
            .meta
            .delete(&meta::manifest_key(repo, reference))
            .await?
        {
            return Err(E::manifest_unknown(reference));
        }
        let prefix = meta::tags_prefix(repo);
        let (tags, _) = self.meta.list::<TagRecord>(&prefix, None, 0).await?;
        for (key, t) in tags {
            if t.digest == reference {
                self.meta.delete(&key).await?;
            }
        }
        build(resp(StatusCode::ACCEPTED), empty())
    }

    async fn get_blob(
        &self,
        repo: &str,
        digest: &str,
        headers: &http::HeaderMap,
    ) -> Result<Response<ResponseBody>> {
        let d = Digest::parse(digest)
            .ok_or_else(|| E::digest_invalid(format!("invalid digest {digest}")))?;
        let size = match self.blob_in_repo(repo, &d).await? {
            Some(s) => s,
            None => {
                // linked (pushed through another server) but not on this disk: from a peer,
                // unless a peer is asking
                let from_peer = if headers.contains_key(crate::PEER_HEADER) {
                    None
                } else {
                    self.blob_from_peers(repo, &d).await?
                };
                match from_peer {
                    Some(s) => s,
                    None => self
                        .pull_blob(repo, &d)
                        .await?
                        .ok_or_else(|| E::blob_unknown(digest))?,
                }
            }
        };
        let path = self.disk.blob_path(&d);
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| parse_range(r, size));
        let (start, end) = match (&range, headers.get(header::RANGE)) {
            (Some(r), _) => *r,
            (None, Some(_)) => {
                return build(
                    resp(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header(header::CONTENT_RANGE, format!("bytes */{size}")),
                    empty(),
                )
            }
            (None, None) => (0, size.saturating_sub(1)),
        };
        let len = if size == 0 { 0 } else { end - start + 1 };
        let body = if len == 0 {
            empty()
        } else {
            file_body(&path, start, len)
                .await
                .map_err(|_| E::blob_unknown(digest))?
        };
        let mut b = resp(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", d.to_string());
        if range.is_some() {
            b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
        }
        build(b, body)
    }

    async fn delete_blob(&self, repo: &str, digest: &str) -> Result<Response<ResponseBody>> {
        let d = Digest::parse(digest)
            .ok_or_else(|| E::digest_invalid(format!("invalid digest {digest}")))?;
        if !self
            .meta
            .delete(&meta::link_key(repo, &d.to_string()))
            .await?
        {
            return Err(E::blob_unknown(digest));
        }
        build(resp(StatusCode::ACCEPTED), empty())
    }

    async fn new_session(&self, repo: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.disk.upload_path(&id);
        tokio::fs::File::create(&path)
            .await
            .map_err(|e| crate::RegistryError::io(format!("creating {}", path.display()), e))?;
        let now = meta::now();
        self.meta
            .put(
                &meta::upload_key(&id),
                &UploadRecord {
                    repository: repo.to_string(),
                    started: now,
                    updated: now,
                    server: self.instance.clone(),
                },
            )
            .await?;
        *self.upload_state(&id).lock().await = Some(RunningHash::new());
        Ok(id)
    }

    async fn start_upload(
        &self,
        user: Option<&UserInfo>,
        repo: &str,
        params: &[(String, String)],
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>> {
        if let (Some(mount), from) = (param(params, "mount"), param(params, "from")) {
            if let Some(d) = Digest::parse(mount) {
                if let Some(r) = self.try_mount(user, repo, &d, from).await? {
                    return Ok(r);
                }
            }
        }
        let id = self.new_session(repo).await?;
        if let Some(digest) = param(params, "digest") {
            let d = Digest::parse(digest)
                .ok_or_else(|| E::digest_invalid(format!("invalid digest {digest}")))?;
            let result = self.complete(repo, &id, Some(d), req.into_body()).await;
            if result.is_err() {
                // The client never learnt the session: do not leave it behind.
                self.remove_upload(&id).await?;
            }
            return result;
        }
        let location = format!("/v2/{repo}/blobs/uploads/{id}");
        build(
            resp(StatusCode::ACCEPTED)
                .header(header::LOCATION, location)
                .header(header::RANGE, "0-0")
                .header("Docker-Upload-UUID", id),
            empty(),
        )
    }

    async fn try_mount(
        &self,
        user: Option<&UserInfo>,
        repo: &str,
        d: &Digest,
        from: Option<&str>,
    ) -> Result<Option<Response<ResponseBody>>> {
        let Some(from) = from.filter(|f| names::valid_repository(f)) else {
            return Ok(None);
        };
        if !self.allowed(user, "get", from).await {
            return Ok(None);
        }
        let _guard = self.gc_lock.read().await;
        let Some(size) = self.blob_in_repo(from, d).await? else {
            return Ok(None);
        };
        self.link_blob(repo, d, size).await?;
        Ok(Some(build(
            resp(StatusCode::CREATED)
                .header(header::LOCATION, format!("/v2/{repo}/blobs/{d}"))
                .header("Docker-Content-Digest", d.to_string()),
            empty(),
        )?))
    }

    async fn session(&self, repo: &str, id: &str) -> Result<UploadRecord> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(E::upload_unknown());
        }
        match self.meta.get::<UploadRecord>(&meta::upload_key(id)).await? {
            Some(r) if r.repository == repo => Ok(r),
            _ => Err(E::upload_unknown()),
        }
    }

    /// The session's running hash, recomputed from the file when missing or stale (after a restart
    /// or an interrupted write).
    async fn ensure_hash(&self, id: &str, slot: &mut Option<RunningHash>) -> Result<()> {
        let path = self.disk.upload_path(id);
        let len = tokio::fs::metadata(&path)
            .await
            .map_err(|_| E::upload_unknown())?
            .len();
        if slot.as_ref().map(|h| h.offset) != Some(len) {
            *slot =
                Some(RunningHash::from_file(&path).await.map_err(|e| {
                    crate::RegistryError::io(format!("reading {}", path.display()), e)
                })?);
        }
        Ok(())
    }

    async fn upload_status(&self, repo: &str, id: &str) -> Result<Response<ResponseBody>> {
        self.session(repo, id).await?;
        let state = self.upload_state(id);
        let mut slot = state.lock().await;
        self.ensure_hash(id, &mut slot).await?;
        let offset = slot.as_ref().map(|h| h.offset).unwrap_or(0);
        build(
            resp(StatusCode::NO_CONTENT)
                .header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
                .header(header::RANGE, format!("0-{}", offset.saturating_sub(1)))
                .header("Docker-Upload-UUID", id),
            empty(),
        )
    }

    async fn patch_upload(
        &self,
        repo: &str,
        id: &str,
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>> {
        let record = self.session(repo, id).await?;
        let state = self.upload_state(id);
        let mut slot = state.lock().await;
        self.ensure_hash(id, &mut slot).await?;
        let hash = slot.as_mut().ok_or_else(E::upload_unknown)?;
        if let Some(cr) = req.headers().get(header::CONTENT_RANGE) {
            let cr = cr.to_str().unwrap_or("");
            let start = cr
                .trim_start_matches("bytes ")
                .split(['-', '/'])
                .next()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match start {
                Some(s) if s == hash.offset => {}
                Some(_) => {
                    return build(
                        resp(StatusCode::RANGE_NOT_SATISFIABLE)
                            .header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
                            .header(
                                header::RANGE,
                                format!("0-{}", hash.offset.saturating_sub(1)),
                            )
                            .header("Docker-Upload-UUID", id),
                        full(
                            E::new(
                                StatusCode::RANGE_NOT_SATISFIABLE,
                                "BLOB_UPLOAD_INVALID",
                                "chunk out of order: continue at the offset in the Range header",
                            )
                            .body(),
                        ),
                    )
                }
                None => return Err(E::upload_invalid(format!("invalid Content-Range {cr:?}"))),
            }
        }
        self.append(id, hash, req.into_body()).await?;
        self.meta
            .put(
                &meta::upload_key(id),
                &UploadRecord {
                    updated: meta::now(),
                    ..record
                },
            )
            .await?;
        build(
            resp(StatusCode::ACCEPTED)
                .header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
                .header(
                    header::RANGE,
                    format!("0-{}", hash.offset.saturating_sub(1)),
                )
                .header("Docker-Upload-UUID", id),
            empty(),
        )
    }

    async fn append(&self, id: &str, hash: &mut RunningHash, body: RequestBody) -> Result<()> {
        let path = self.disk.upload_path(id);
        match storage::append_body(&path, hash, body).await {
            Ok(_) => Ok(()),
            Err(AppendError::Disk(e)) => {
                let err: E = crate::RegistryError::io(format!("writing upload {id}"), e).into();
                Err(err)
            }
            Err(AppendError::Body(e)) => Err(E::upload_invalid(format!(
                "reading the request body failed ({e}); resume the upload at its current offset"
            ))),
        }
    }

    async fn finish_upload(
        &self,
        repo: &str,
        id: &str,
        params: &[(String, String)],
        req: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>> {
        self.session(repo, id).await?;
        let digest = param(params, "digest").ok_or_else(|| {
            E::digest_invalid("the digest query parameter is required to finish an upload")
        })?;
        let d = Digest::parse(digest)
            .ok_or_else(|| E::digest_invalid(format!("invalid digest {digest}")))?;
        self.complete(repo, id, Some(d), req.into_body()).await
    }

    /// Appends the last chunk, verifies the digest and moves the blob into place.
    async fn complete(
        &self,
        repo: &str,
        id: &str,
        expected: Option<Digest>,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>> {
        let state = self.upload_state(id);
        let mut slot = state.lock().await;
        self.ensure_hash(id, &mut slot).await?;
        let hash = slot.as_mut().ok_or_else(E::upload_unknown)?;
        if let Err(e) = self.append(id, hash, body).await {
            if e.status == StatusCode::INSUFFICIENT_STORAGE {
                drop(slot);
                self.remove_upload(id).await?;
            }
            return Err(e);
        }
        let path = self.disk.upload_path(id);
        let size = hash.offset;
        let actual = hash.digest();
        let d = expected.unwrap_or_else(|| actual.clone());
        let verified = match d.algorithm {
            names::Algorithm::Sha256 => actual == d,
            names::Algorithm::Sha512 => {
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    crate::RegistryError::io(format!("reading {}", path.display()), e)
                })?;
                d.matches(&bytes)
            }
        };
        drop(slot);
        if !verified {
            self.remove_upload(id).await?;
            return Err(E::digest_invalid(format!(
                "uploaded content has digest {actual}, not {d}: nothing was stored"
            )));
        }
        {
            let _guard = self.gc_lock.read().await;
            self.disk.commit_file(&path, &d).await?;
            self.link_blob(repo, &d, size).await?;
        }
        self.remove_upload(id).await?;
        build(
            resp(StatusCode::CREATED)
                .header(header::LOCATION, format!("/v2/{repo}/blobs/{d}"))
                .header("Docker-Content-Digest", d.to_string()),
            empty(),
        )
    }

    async fn cancel_upload(&self, repo: &str, id: &str) -> Result<Response<ResponseBody>> {
        self.session(repo, id).await?;
        self.remove_upload(id).await?;
        build(resp(StatusCode::NO_CONTENT), empty())
    }

    async fn referrers(
        &self,
        repo: &str,
        digest: &str,
        params: &[(String, String)],
    ) -> Result<Response<ResponseBody>> {
        let d = Digest::parse(digest)
            .ok_or_else(|| E::digest_invalid(format!("invalid digest {digest}")))?;
        let subject = d.to_string();
        let filter = param(params, "artifactType").filter(|a| !a.is_empty());
        let (manifests, _) = self
            .meta
            .list::<ManifestRecord>(&meta::manifests_prefix(repo), None, 0)
            .await?;
        let mut out = Vec::new();
        for (key, m) in manifests {
            if m.subject.as_deref() != Some(subject.as_str()) {
                continue;
            }
            if filter.is_some() && m.artifact_type.as_deref() != filter {
                continue;
            }
            let digest = key.trim_start_matches(&meta::manifests_prefix(repo));
            let mut desc = serde_json::json!({
                "mediaType": m.media_type, "digest": digest, "size": m.size,
            });
            if let Some(a) = &m.artifact_type {
                desc["artifactType"] = a.clone().into();
            }
            if !m.annotations.is_empty() {
                desc["annotations"] = serde_json::to_value(&m.annotations).unwrap_or_default();
            }
            out.push(desc);
        }
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": out,
        });
        let mut b = resp(StatusCode::OK).header(header::CONTENT_TYPE, manifest::OCI_INDEX);
        if filter.is_some() {
            b = b.header("OCI-Filters-Applied", "artifactType");
        }
        build(b, full(body.to_string()))
    }
}

fn page_size(params: &[(String, String)]) -> Result<Option<usize>> {
    match param(params, "n") {
        None | Some("") => Ok(None),
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            E::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("invalid page size n={n}"),
            )
        }),
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` within `size` → inclusive (start, end).
pub(crate) fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?.trim();
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

async fn file_body(path: &std::path::Path, start: u64, len: u64) -> std::io::Result<ResponseBody> {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(start)).await?;
    let reader = f.take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10)
        .map(|r| r.map(http_body::Frame::data));
    Ok(StreamBody::new(stream).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_nested_names_parsed() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("/v2/a/b/c/manifests/v1"),
            Some(Route::Manifest("a/b/c".into(), "v1".into()))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a".into()))
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/xyz"),
            Some(Route::Upload("a/b".into(), "xyz".into()))
        );
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("/v2/docker.io/library/x/blobs/sha256:00"),
            Some(Route::Blob(
                "docker.io/library/x".into(),
                "sha256:00".into()
            ))
        );
        assert_eq!(route("/v2/x"), None);
    }

    #[test]
    fn parse_range_forms_resolved() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
    }

    #[test]
    fn query_params_percent_decoded() {
        let p = query_params(Some("n=2&last=a%2Fb&artifactType=application%2Fx"));
        assert_eq!(param(&p, "last"), Some("a/b"));
        assert_eq!(param(&p, "artifactType"), Some("application/x"));
    }
}
