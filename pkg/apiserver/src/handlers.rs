//! Request handling: authentication, authorization, and the REST verbs over the store.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use mini_api::{meta, ApiError, Cause, FieldSelector, LabelSelector, ResourceInfo, Storage};
use mini_rbac::UserInfo;
use mini_store::{KeyValue, StoreError};
use serde_json::{json, Value};

use crate::admission::{self, WriteMode};
use crate::body::{self, Body};
use crate::request::{self, Query, RequestInfo};
use crate::{auth, discovery, reviews, table, watch, ApiServer};

/// Everything a resource handler needs about the request.
pub(crate) struct Ctx<'a> {
    pub server: &'a ApiServer,
    pub res: &'a ResourceInfo,
    pub info: &'a RequestInfo,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub user: &'a UserInfo,
}

impl Ctx<'_> {
    pub fn namespace(&self) -> Option<&str> {
        if self.res.namespaced {
            self.info.namespace.as_deref()
        } else {
            None
        }
    }

    pub fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> String {
        self.res.key(self.namespace(), self.name())
    }

    /// `?dryRun=All`, or `dryRun: ["All"]` in a DeleteOptions body.
    pub fn dry_run(&self) -> bool {
        if self.query.get("dryRun") == Some("All") {
            return true;
        }
        self.info.verb.starts_with("delete")
            && serde_json::from_slice::<Value>(self.body)
                .ok()
                .and_then(|b| b.get("dryRun").cloned())
                .and_then(|d| d.as_array().cloned())
                .is_some_and(|d| d.iter().any(|v| v == "All"))
    }

    pub fn gzip(&self) -> bool {
        body::wants_gzip(self.headers)
    }

    /// The field manager: `?fieldManager=`, else the user agent's program name.
    pub fn field_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        self.headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }

    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.res.group, &self.res.plural, self.name())
    }

    pub fn conflict(&self) -> ApiError {
        ApiError::conflict(&self.res.group, &self.res.plural, self.name())
    }
}

pub(crate) fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Unavailable(_) => ApiError::new(503, "ServiceUnavailable", err.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// The single entry point for every request, from TLS connections and in-process clients.
pub(crate) async fn handle(
    server: &ApiServer,
    req: Request<Bytes>,
    peer_user: Option<UserInfo>,
) -> Response<Body> {
    let started = Instant::now();
    let query = Query::parse(req.uri().query());
    let info = request::parse(req.method(), req.uri().path(), &query);
    let mut caller = None;
    let response = match route(server, &req, &query, &info, peer_user, &mut caller).await {
        Ok(r) => r,
        Err(e) => body::error(&e),
    };
    if let (Some(sink), Some(user)) = (server.inner.audit_sink.get(), caller) {
        if matches!(
            info.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) {
            sink.record(crate::extension::AuditRecord {
                user,
                verb: info.verb.clone(),
                api_group: info.group.clone(),
                resource: info.resource.clone(),
                subresource: info.subresource.clone().unwrap_or_default(),
                namespace: info.namespace.clone().unwrap_or_default(),
                name: info.name.clone().unwrap_or_default(),
                request_uri: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                code: response.status().as_u16(),
                source_ip: req
                    .extensions()
                    .get::<crate::extension::RemoteAddr>()
                    .map(|a| a.0.ip()),
            });
        }
    }
    let resource = if info.resource_request {
        match &info.subresource {
            Some(s) => format!("{}/{s}", info.resource),
            None => info.resource.clone(),
        }
    } else {
        String::new()
    };
    server.inner.metrics.observe_request(
        &info.verb,
        &info.group,
        &resource,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn route(
    server: &ApiServer,
    req: &Request<Bytes>,
    query: &Query,
    info: &RequestInfo,
    peer_user: Option<UserInfo>,
    caller: &mut Option<UserInfo>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    // unauthenticated: health, version and the CA bundle the agent pins by hash
    match path {
        "/cacerts" => return Ok(body::text(StatusCode::OK, server.ca_bundle_pem())),
        "/readyz" => return Ok(readiness(server).await),
        "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" | "/readyz/ping" => {
            return Ok(body::text(StatusCode::OK, "ok"))
        }
        "/version" | "/version/" => return Ok(body::json(StatusCode::OK, &discovery::version())),
        _ => {}
    }
    if crate::install::handles(path) {
        return crate::install::handle(server, req).await;
    }
    let user =
        auth::authenticate_request(server, req.method(), req.uri(), req.headers(), peer_user)
            .await?;
    if path == crate::join::JOIN_PATH {
        // only the join token may join; no impersonation
        return crate::join::handle(server, req, &user).await;
    }
    let user = auth::impersonate(server, req.headers(), user).await?;
    *caller = Some(user.clone());
    if !info.resource_request {
        auth::authorize(server, &user, info, None).await?;
        return discovery::non_resource(server, req, query, path).await;
    }
    let registry = server.registry();
    let Some(res) = registry.lookup(&info.group, &info.version, &info.resource) else {
        return Err(ApiError::no_route());
    };
    if let Some(sub) = &info.subresource {
        if res.subresource(sub).is_none() {
            return Err(ApiError::no_route());
        }
    }
    if res.namespaced && info.namespace.is_none() && !matches!(info.verb.as_str(), "list" | "watch")
    {
        // cluster-wide paths of namespaced resources only list and watch
        return Err(ApiError::no_route());
    }
    if let Err(denied) = auth::authorize(server, &user, info, Some(res)).await {
        // exec, attach and port-forward over a WebSocket arrive as GET; upstream (1.30+)
        // authorizes them as `create`, older servers as `get`: either is enough here
        let streaming = matches!(
            info.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        );
        if !(streaming && info.verb == "get") {
            return Err(denied);
        }
        let as_create = RequestInfo {
            verb: "create".into(),
            ..info.clone()
        };
        auth::authorize(server, &user, &as_create, Some(res))
            .await
            .map_err(|_| denied)?;
    }
    let ctx = Ctx {
        server,
        res,
        info,
        query,
        headers: req.headers(),
        body: req.body(),
        user: &user,
    };
    if res.storage == Storage::Images {
        return crate::images_api::handle(&ctx).await;
    }
    if res.storage == Storage::Metrics {
        return crate::resource_metrics::handle(&ctx).await;
    }
    if res.storage == Storage::Review {
        if info.verb != "create" {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        return reviews::create(&ctx).await;
    }
    match (info.subresource.as_deref(), info.verb.as_str()) {
        (None, "get") => get(&ctx).await,
        (None, "list") => list(&ctx).await,
        (None, "watch") => watch::watch(&ctx).await,
        (None, "create") => create(&ctx).await,
        (None, "update") => update(&ctx, WriteMode::Main).await,
        (None, "patch") => patch(&ctx, WriteMode::Main).await,
        (None, "delete") => delete(&ctx).await,
        (None, "deletecollection") => delete_collection(&ctx).await,
        (Some("status"), "get") => get(&ctx).await,
        (Some("status"), "update") => update(&ctx, WriteMode::Status).await,
        (Some("status"), "patch") => patch(&ctx, WriteMode::Status).await,
        (Some("approval"), "get") => get(&ctx).await,
        (Some("approval"), "update") => update(&ctx, WriteMode::Approval).await,
        (Some("approval"), "patch") => patch(&ctx, WriteMode::Approval).await,
        (Some("finalize"), "update") => update(&ctx, WriteMode::Finalize).await,
        (Some("scale"), "get") => crate::reviews::scale_get(&ctx).await,
        (Some("scale"), "update") | (Some("scale"), "patch") => {
            crate::reviews::scale_write(&ctx).await
        }
        (Some("binding"), "create") => crate::reviews::bind_pod(&ctx).await,
        (Some("eviction"), "create") => crate::reviews::evict_pod(&ctx).await,
        (Some("token"), "create") => crate::serviceaccount::token_request(&ctx).await,
        (Some("log"), "get") if res.kind == "Pod" => crate::nodeproxy::pod_log(&ctx, req).await,
        (Some(sub @ ("exec" | "attach" | "portforward")), "get" | "create")
            if res.kind == "Pod" =>
        {
            crate::nodeproxy::pod_stream(&ctx, req, sub).await
        }
        (Some("commit"), "create") if res.kind == "Pod" => {
            crate::images_api::commit_container(&ctx).await
        }
        (Some("proxy"), _) if res.kind == "Node" => crate::nodeproxy::node_proxy(&ctx, req).await,
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// Reads one object; 404 when missing.
pub(crate) async fn read(ctx: &Ctx<'_>) -> Result<(KeyValue, Value), ApiError> {
    let kv = ctx
        .server
        .inner
        .store
        .get(&ctx.key())
        .await
        .map_err(store_error)?
        .ok_or_else(|| ctx.not_found())?;
    let obj = meta::from_storage(&kv.value, kv.mod_revision)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((kv, obj))
}

/// Answers with one object, as JSON or as a one-row Table.
pub(crate) fn respond_object(ctx: &Ctx<'_>, status: StatusCode, obj: &Value) -> Response<Body> {
    if table::wants_table(ctx.headers) {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return body::json(
            status,
            &table::table(ctx.res, std::slice::from_ref(obj), ctx.query, &rv, true),
        );
    }
    body::json_bytes(
        status,
        serde_json::to_vec(obj).unwrap_or_default(),
        ctx.gzip(),
    )
}

async fn get(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (_, obj) = read(ctx).await?;
    Ok(respond_object(ctx, StatusCode::OK, &obj))
}

/// The selectors of a list or watch, validated against the resource.
pub(crate) fn selectors(ctx: &Ctx<'_>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for r in &fields.requirements {
        if !ctx.res.supports_field(&r.field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                r.field
            )));
        }
    }
    Ok((labels, fields))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, start: &str) -> String {
    use base64::Engine;
    let raw = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_string(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))
}

/// Objects matching the request's selectors, plus the list revision and continue token.
pub(crate) struct Listed {
    pub items: Vec<(KeyValue, Option<Value>)>,
    pub revision: u64,
    pub continue_token: Option<String>,
    /// Items after this page, when the list was not filtered (`remainingItemCount`).
    pub remaining: Option<usize>,
}

/// Lists with selectors, `limit` and `continue`. Parsed objects are kept when the filter
/// needed them.
pub(crate) async fn list_matching(
    ctx: &Ctx<'_>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Result<Listed, ApiError> {
    let store = &ctx.server.inner.store;
    let limit: usize = ctx
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut start_after = match ctx.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?.start),
        None => None,
    };
    if let (Some("Exact"), Some(rv)) = (
        ctx.query.get("resourceVersionMatch"),
        ctx.query.get("resourceVersion"),
    ) {
        let rv: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if rv != store.current_revision() {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                store.current_revision()
            )));
        }
    }
    // a pinned name turns into a point read
    if let Some(name) = fields.exact_name() {
        if ctx.namespace().is_some() || !ctx.res.namespaced {
            let key = ctx.res.key(ctx.namespace(), name);
            let revision = store.current_revision();
            let mut items = Vec::new();
            if let Some(kv) = store.get(&key).await.map_err(store_error)? {
                let obj = meta::from_storage(&kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                if labels.matches_object(&obj) && fields.matches(&obj) {
                    items.push((kv, Some(obj)));
                }
            }
            return Ok(Listed {
                items,
                revision,
                continue_token: None,
                remaining: None,
            });
        }
    }
    let prefix = ctx.res.namespace_prefix(ctx.namespace());
    let filtering = !labels.is_empty() || !fields.is_empty();
    let page_size = if filtering { limit.max(500) } else { limit };
    let mut items = Vec::new();
    let mut revision = None;
    loop {
        let page = store
            .list(&prefix, start_after.as_deref(), page_size)
            .await
            .map_err(store_error)?;
        revision.get_or_insert(page.revision);
        let mut last_key = None;
        let mut hit_limit = false;
        let page_len = page.items.len();
        let mut consumed = 0;
        for kv in page.items {
            consumed += 1;
            last_key = Some(kv.key.clone());
            if filtering {
                let obj = meta::from_storage(&kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                if labels.matches_object(&obj) && fields.matches(&obj) {
                    items.push((kv, Some(obj)));
                }
            } else {
                items.push((kv, None));
            }
            if limit > 0 && items.len() >= limit {
                hit_limit = true;
                break;
            }
        }
        let more = page.more || consumed < page_len;
        let revision = revision.unwrap_or_default();
        if hit_limit && more {
            let remaining = if filtering {
                None
            } else {
                let rest = store
                    .list(&prefix, last_key.as_deref(), 0)
                    .await
                    .map_err(store_error)?;
                Some(rest.items.len())
            };
            let token = last_key.map(|k| encode_continue(revision, &k));
            return Ok(Listed {
                items,
                revision,
                continue_token: token,
                remaining,
            });
        }
        if hit_limit {
            return Ok(Listed {
                items,
                revision,
                continue_token: None,
                remaining: None,
            });
        }
        if !more || last_key.is_none() {
            return Ok(Listed {
                items,
                revision,
                continue_token: None,
                remaining: None,
            });
        }
        start_after = last_key;
    }
}

async fn list(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(ctx)?;
    let listed = list_matching(ctx, &labels, &fields).await?;
    let rv = listed.revision.to_string();
    if table::wants_table(ctx.headers) {
        let objects: Vec<Value> = listed
            .items
            .into_iter()
            .map(|(kv, obj)| match obj {
                Some(o) => Ok(o),
                None => meta::from_storage(&kv.value, kv.mod_revision),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut t = table::table(ctx.res, &objects, ctx.query, &rv, false);
        if let Some(c) = listed.continue_token {
            t["metadata"]["continue"] = json!(c);
        }
        if let Some(n) = listed.remaining {
            t["metadata"]["remainingItemCount"] = json!(n);
        }
        return Ok(body::json_bytes(
            StatusCode::OK,
            serde_json::to_vec(&t).unwrap_or_default(),
            ctx.gzip(),
        ));
    }
    // splice stored JSON straight into the list: no parse, no re-serialise, streamed
    let mut list_meta = json!({"resourceVersion": rv});
    if let Some(c) = &listed.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(n) = listed.remaining {
        list_meta["remainingItemCount"] = json!(n);
    }
    let prefix = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        ctx.res.list_kind(),
        ctx.res.api_version(),
        list_meta
    );
    Ok(body::list_response(
        prefix.into_bytes(),
        listed.items,
        ctx.gzip(),
    ))
}

/// Sets apiVersion/kind when absent; rejects a body of another kind.
fn check_kind(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    let expected_api = ctx.res.api_version();
    let api = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    if (!kind.is_empty() && kind != ctx.res.kind) || (!api.is_empty() && api != expected_api) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api}) does not match the expected API version ({expected_api}) or the kind ({kind}) does not match {}",
            ctx.res.kind
        )));
    }
    obj["apiVersion"] = json!(expected_api);
    obj["kind"] = json!(ctx.res.kind);
    Ok(())
}

/// `fieldValidation`: Strict rejects unknown and duplicate fields, Warn (default) reports them
/// in `Warning` headers, Ignore does neither. Returns the warnings.
fn field_validation(
    ctx: &Ctx<'_>,
    obj: &mut Value,
    raw_json: Option<&[u8]>,
) -> Result<Vec<String>, ApiError> {
    let mode = ctx.query.get("fieldValidation").unwrap_or("Warn");
    let res = ctx.res;
    if mode == "Ignore" {
        if res.custom.is_none() {
            let unknown = mini_validation::unknown_fields(&res.group, &res.version, &res.kind, obj)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            for path in &unknown {
                remove_path(obj, path);
            }
        }
        return Ok(Vec::new());
    }
    let mut problems: Vec<String> = Vec::new();
    if let Some(raw) = raw_json {
        problems.extend(
            mini_validation::duplicate_fields(raw)
                .into_iter()
                .map(|f| format!("duplicate field \"{f}\"")),
        );
    }
    let unknown = match &res.custom {
        Some(c) => c
            .schema
            .as_ref()
            .map(|s| mini_validation::schema_unknown_fields(s, obj))
            .unwrap_or_default(),
        None => mini_validation::unknown_fields(&res.group, &res.version, &res.kind, obj)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    if res.custom.is_none() && mode != "Strict" {
        for path in &unknown {
            remove_path(obj, path);
        }
    }
    problems.extend(
        unknown
            .into_iter()
            .map(|f| format!("unknown field \"{f}\"")),
    );
    if problems.is_empty() {
        return Ok(problems);
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            problems.join(", ")
        )));
    }
    Ok(problems)
}

/// Removes the field at an upstream-notation path such as `spec.containers[0].imagee`.
fn remove_path(obj: &mut Value, path: &str) {
    let mut segments: Vec<Result<usize, &str>> = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            segments.push(Err(name));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                segments.push(Ok(i));
            }
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = match seg {
            Ok(i) => cur.get_mut(*i),
            Err(k) => cur.get_mut(*k),
        };
        match next {
            Some(v) => cur = v,
            None => return,
        }
    }
    match (last, cur) {
        (Err(k), Value::Object(m)) => {
            m.remove(*k);
        }
        (Ok(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// Warning header text, in runes, after which upstream's recorder truncates each warning.
const WARNINGS_TOTAL_RUNES: usize = 4 * 1024;
/// The length, in runes, a warning is truncated to once the total is exceeded.
const WARNING_ITEM_RUNES: usize = 256;
/// At most this many `Warning` headers: Python's http.client refuses a response with more than
/// 100 headers in all, so a body with hundreds of unknown fields must not produce one each.
const MAX_WARNING_HEADERS: usize = 50;

/// The warnings as they go out: deduplicated; within 4096 runes in all as upstream's recorder
/// (past that, every warning is cut to 256 runes and the rest dropped), and at most 50.
fn capped_warnings(warnings: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&String> = warnings
        .iter()
        .filter(|w| !w.is_empty() && seen.insert(w.as_str()))
        .collect();
    let total: usize = unique.iter().map(|w| w.chars().count()).sum();
    let mut out = Vec::new();
    if total <= WARNINGS_TOTAL_RUNES {
        out.extend(unique.into_iter().cloned());
    } else {
        let mut written = 0;
        for w in unique {
            if written >= WARNINGS_TOTAL_RUNES {
                break;
            }
            let cut: String = w.chars().take(WARNING_ITEM_RUNES).collect();
            written += cut.chars().count();
            out.push(cut);
        }
    }
    out.truncate(MAX_WARNING_HEADERS);
    out
}

fn with_warnings(mut resp: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in capped_warnings(warnings) {
        let value = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// 422 from validation errors.
fn invalid(res: &ResourceInfo, name: &str, errors: Vec<mini_validation::FieldError>) -> ApiError {
    let causes = errors
        .into_iter()
        .map(|e| Cause {
            reason: e.reason,
            message: e.message,
            field: e.field,
        })
        .collect();
    ApiError::invalid(&res.group, &res.kind, name, causes)
}

fn validate_create(res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let errors = match &res.custom {
        Some(c) => {
            let mut errs = mini_validation::validate_create("", "", "", obj)
                .into_iter()
                .filter(|e| e.field.starts_with("metadata"))
                .collect::<Vec<_>>();
            if let Some(schema) = &c.schema {
                errs.extend(mini_validation::validate_against_schema(schema, obj));
            }
            errs
        }
        None => mini_validation::validate_create(&res.group, &res.version, &res.kind, obj),
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(res, meta::name(obj), errors))
    }
}

fn validate_update(res: &ResourceInfo, obj: &Value, old: &Value) -> Result<(), ApiError> {
    let errors = match &res.custom {
        Some(c) => c
            .schema
            .as_ref()
            .map(|s| mini_validation::validate_against_schema(s, obj))
            .unwrap_or_default(),
        None => mini_validation::validate_update(&res.group, &res.version, &res.kind, obj, old),
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(res, meta::name(obj), errors))
    }
}

/// Requires the object's namespace to exist and not be terminating.
async fn check_namespace(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<(), ApiError> {
    let kv = ctx
        .server
        .inner
        .store
        .get(&format!("/registry/core/namespaces/{ns}"))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
    let nsobj: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    if nsobj["metadata"].get("deletionTimestamp").is_some()
        || nsobj["status"]["phase"] == "Terminating"
    {
        let mut e = ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            ctx.res.qualified_plural(),
            name
        ));
        e.reason = "Forbidden".into();
        return Err(e);
    }
    Ok(())
}

/// Create, shared by POST and by apply-creates.
pub(crate) async fn create_object(
    ctx: &Ctx<'_>,
    mut obj: Value,
    raw_json: Option<&[u8]>,
    apply: Option<(String, bool)>,
) -> Result<Response<Body>, ApiError> {
    check_kind(ctx, &mut obj)?;
    let warnings = field_validation(ctx, &mut obj, raw_json)?;
    if let Some(c) = &ctx.res.custom {
        if let Some(schema) = &c.schema {
            mini_validation::prune(schema, &mut obj);
        }
    }
    // namespace: from the URL, and the body must agree
    if ctx.res.namespaced {
        let url_ns = ctx.info.namespace.clone().unwrap_or_default();
        let body_ns = meta::namespace(&obj).to_string();
        if !body_ns.is_empty() && body_ns != url_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta::metadata_mut(&mut obj).insert("namespace".into(), json!(url_ns));
    } else {
        meta::metadata_mut(&mut obj).remove("namespace");
    }
    if meta::name(&obj).is_empty() {
        let prefix = obj["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &ctx.res.group,
                &ctx.res.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        meta::metadata_mut(&mut obj).insert(
            "name".into(),
            json!(format!("{prefix}{}", meta::generate_name_suffix())),
        );
    }
    if let Some(url_name) = &ctx.info.name {
        if url_name != meta::name(&obj) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({url_name})",
                meta::name(&obj)
            )));
        }
    }
    if ctx.res.namespaced {
        check_namespace(ctx, meta::namespace(&obj), meta::name(&obj)).await?;
    }
    admission::node_restriction(ctx, mini_nodeauthz::Operation::Create, None, Some(&obj)).await?;
    crate::escalation::check(ctx, None, &obj).await?;
    crate::quota::apply_limit_ranges(ctx.server, ctx.res, &mut obj).await?;
    admission::prepare_create(ctx.res, &mut obj);
    validate_create(ctx.res, &obj)?;
    let _quota_guard = crate::quota::check_quota(ctx.server, ctx.res, &obj).await?;
    crate::crd::check_crd_create(ctx, &obj).await?;
    let now = meta::now_rfc3339();
    match &apply {
        Some((manager, force)) => {
            let status = obj.get("status").cloned();
            obj = mini_patch::server_side_apply(
                None,
                &obj,
                manager,
                *force,
                &ctx.res.group,
                &ctx.res.kind,
                &now,
            )
            .map_err(patch_error)?;
            // the status set by the create (a CRD's Established, a Pod's phase) survives an
            // apply that creates the object
            if let (Some(status), Some(map)) = (status, obj.as_object_mut()) {
                map.entry("status").or_insert(status);
            }
        }
        None => mini_patch::track_update(
            None,
            &mut obj,
            &ctx.field_manager(),
            None,
            &ctx.res.group,
            &ctx.res.kind,
            &now,
        ),
    }
    if ctx.res.group.is_empty() && ctx.res.kind == "PersistentVolumeClaim" {
        admission::default_storage_class(ctx.server, &mut obj).await?;
    }
    let _guard = if ctx.res.group.is_empty() && ctx.res.kind == "Service" {
        let guard = ctx.server.inner.allocation_lock.lock().await;
        admission::allocate_service(ctx.server, &mut obj, None).await?;
        Some(guard)
    } else {
        None
    };
    let key = ctx.res.key(ctx.namespace(), meta::name(&obj));
    if ctx.dry_run() {
        if ctx
            .server
            .inner
            .store
            .get(&key)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Err(ApiError::already_exists(
                &ctx.res.group,
                &ctx.res.plural,
                meta::name(&obj),
            ));
        }
        return Ok(with_warnings(
            respond_object(ctx, StatusCode::CREATED, &obj),
            &warnings,
        ));
    }
    let kv = match ctx
        .server
        .inner
        .store
        .create(&key, meta::to_storage_bytes(&obj))
        .await
    {
        Ok(kv) => kv,
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::already_exists(
                &ctx.res.group,
                &ctx.res.plural,
                meta::name(&obj),
            ))
        }
        Err(e) => return Err(store_error(e)),
    };
    meta::metadata_mut(&mut obj)
        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    after_write(ctx, &obj).await;
    Ok(with_warnings(
        respond_object(ctx, StatusCode::CREATED, &obj),
        &warnings,
    ))
}

async fn create(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let obj = body::decode_object(&ct, ctx.body)?;
    let raw = (ct == "application/json").then_some(&ctx.body[..]);
    // POST to a collection names no object
    let ctx = Ctx {
        info: &RequestInfo {
            name: None,
            ..ctx.info.clone()
        },
        ..*ctx
    };
    create_object(&ctx, obj, raw, None).await
}

/// Side effects of a successful write: RBAC reload, CRD registry refresh.
pub(crate) async fn after_write(ctx: &Ctx<'_>, obj: &Value) {
    if ctx.res.group == "rbac.authorization.k8s.io" {
        ctx.server
            .inner
            .rbac_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    if ctx.res.group == "apiextensions.k8s.io" && ctx.res.kind == "CustomResourceDefinition" {
        if let Err(e) = ctx.server.reload_crds().await {
            tracing::warn!(error = %e, crd = meta::name(obj), "reloading custom resources failed");
        }
    }
}

/// Writes `new` over the stored object read at `kv`; finishes deletion when the last
/// finalizer goes. `incoming_rv` is the client's precondition.
pub(crate) async fn commit_update(
    ctx: &Ctx<'_>,
    kv: &KeyValue,
    old: &Value,
    mut new: Value,
    mode: WriteMode,
    apply: Option<(String, bool)>,
) -> Result<Result<Value, ()>, ApiError> {
    let now = meta::now_rfc3339();
    let manager = ctx.field_manager();
    let subresource = match mode {
        WriteMode::Status => Some("status"),
        _ => None,
    };
    if apply.is_none() {
        mini_patch::track_update(
            Some(old),
            &mut new,
            &manager,
            subresource,
            &ctx.res.group,
            &ctx.res.kind,
            &now,
        );
    }
    // deletions were checked by delete_object
    if !ctx.info.verb.starts_with("delete") {
        let op = mini_nodeauthz::Operation::Update;
        admission::node_restriction(ctx, op, Some(old), Some(&new)).await?;
        if mode == WriteMode::Main {
            crate::escalation::check(ctx, Some(old), &new).await?;
        }
    }
    validate_update(ctx.res, &new, old)?;
    if ctx.res.group.is_empty()
        && ctx.res.kind == "PersistentVolumeClaim"
        && mode == WriteMode::Main
    {
        admission::check_claim_resize(ctx.server, old, &new).await?;
    }
    let _guard = if ctx.res.group.is_empty() && ctx.res.kind == "Service" && mode == WriteMode::Main
    {
        let guard = ctx.server.inner.allocation_lock.lock().await;
        admission::allocate_service(ctx.server, &mut new, Some(old)).await?;
        Some(guard)
    } else {
        None
    };
    // unchanged: no write, same resourceVersion (kubectl apply of an unchanged file)
    let mut old_cmp = old.clone();
    meta::metadata_mut(&mut old_cmp).remove("resourceVersion");
    if without_managed_times(&old_cmp) == without_managed_times(&new) {
        return Ok(Ok(old.clone()));
    }
    if ctx.dry_run() {
        meta::metadata_mut(&mut new)
            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        return Ok(Ok(new));
    }
    let deleting = new["metadata"].get("deletionTimestamp").is_some();
    // the last finalizer gone: finish the deletion (graceful pod deletions wait for the node)
    let grace = new["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(0);
    // a namespace also waits for its spec.finalizers (the namespace controller's `kubernetes`)
    let spec_finalizers_left = ctx.res.group.is_empty()
        && ctx.res.kind == "Namespace"
        && new["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if deleting && grace == 0 && meta::finalizers(&new).is_empty() && !spec_finalizers_left {
        return match ctx
            .server
            .inner
            .store
            .delete(&kv.key, Some(kv.mod_revision))
            .await
        {
            Ok(d) => {
                meta::metadata_mut(&mut new)
                    .insert("resourceVersion".into(), json!(d.revision.to_string()));
                after_write(ctx, &new).await;
                Ok(Ok(new))
            }
            Err(StoreError::Conflict { .. }) => Ok(Err(())),
            Err(StoreError::NotFound { .. }) => Err(ctx.not_found()),
            Err(e) => Err(store_error(e)),
        };
    }
    match ctx
        .server
        .inner
        .store
        .update(&kv.key, meta::to_storage_bytes(&new), Some(kv.mod_revision))
        .await
    {
        Ok(stored) => {
            meta::metadata_mut(&mut new).insert(
                "resourceVersion".into(),
                json!(stored.mod_revision.to_string()),
            );
            after_write(ctx, &new).await;
            Ok(Ok(new))
        }
        Err(StoreError::Conflict { .. }) => Ok(Err(())),
        Err(StoreError::NotFound { .. }) => Err(ctx.not_found()),
        Err(e) => Err(store_error(e)),
    }
}

fn without_managed_times(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(list) = o["metadata"]["managedFields"].as_array_mut() {
        for e in list {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    o
}

const MAX_RETRIES: usize = 16;

async fn update(ctx: &Ctx<'_>, mode: WriteMode) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let mut incoming = body::decode_object(&ct, ctx.body)?;
    let raw = (ct == "application/json").then_some(&ctx.body[..]);
    check_kind(ctx, &mut incoming)?;
    let body_name = meta::name(&incoming).to_string();
    if !body_name.is_empty() && body_name != ctx.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            ctx.name()
        )));
    }
    if ctx.res.namespaced {
        let ns = meta::namespace(&incoming);
        if !ns.is_empty() && Some(ns) != ctx.namespace() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let warnings = field_validation(ctx, &mut incoming, raw)?;
    if let Some(schema) = ctx.res.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        mini_validation::prune(schema, &mut incoming);
    }
    let client_rv = meta::resource_version(&incoming).map_err(ApiError::bad_request)?;
    for _ in 0..MAX_RETRIES {
        let (kv, old) = read(ctx).await?;
        if client_rv.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ctx.conflict());
        }
        let new = admission::prepare_update(ctx.res, &old, incoming.clone(), mode);
        match commit_update(ctx, &kv, &old, new, mode, None).await? {
            Ok(obj) => {
                return Ok(with_warnings(
                    respond_object(ctx, StatusCode::OK, &obj),
                    &warnings,
                ))
            }
            Err(()) if client_rv.is_some() => return Err(ctx.conflict()),
            Err(()) => continue,
        }
    }
    Err(ctx.conflict())
}

pub(crate) fn patch_error(e: mini_patch::PatchError) -> ApiError {
    match e {
        mini_patch::PatchError::Malformed(m) => ApiError::bad_request(m),
        mini_patch::PatchError::Apply(m) => ApiError::new(422, "Invalid", m),
        mini_patch::PatchError::Conflicts(conflicts) => {
            let mut err = ApiError::new(
                409,
                "Conflict",
                mini_patch::PatchError::Conflicts(conflicts.clone()).to_string(),
            );
            err.causes = conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                    field: c.field.clone(),
                })
                .collect();
            err
        }
    }
}

async fn patch(ctx: &Ctx<'_>, mode: WriteMode) -> Result<Response<Body>, ApiError> {
    let ct = body::content_type(ctx.headers);
    let is_apply = ct == "application/apply-patch+yaml";
    let mut patch_doc = body::decode_patch(&ct, ctx.body)?;
    if ct == "application/strategic-merge-patch+json" && ctx.res.custom.is_some() {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    let force = ctx.query.flag("force");
    if is_apply {
        if ctx.query.get("fieldManager").is_none() {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        let mut applied = patch_doc.clone();
        check_kind(ctx, &mut applied)?;
    }
    let mut warnings = Vec::new();
    if is_apply {
        warnings = field_validation(ctx, &mut patch_doc, None)?;
    }
    for _ in 0..MAX_RETRIES {
        let read_result = read(ctx).await;
        let (kv, old) = match read_result {
            Ok(x) => x,
            Err(e) if e.code == 404 && is_apply && mode == WriteMode::Main => {
                let mut obj = patch_doc.clone();
                if meta::name(&obj).is_empty() {
                    meta::metadata_mut(&mut obj).insert("name".into(), json!(ctx.name()));
                }
                let manager = ctx.field_manager();
                return create_object(ctx, obj, None, Some((manager, force))).await;
            }
            Err(e) => return Err(e),
        };
        let (g, k) = (&ctx.res.group, &ctx.res.kind);
        let mut patched = match ct.as_str() {
            "application/json-patch+json" => {
                mini_patch::json_patch(&old, &patch_doc).map_err(patch_error)?
            }
            "application/merge-patch+json" => mini_patch::merge_patch(&old, &patch_doc),
            "application/strategic-merge-patch+json" => {
                mini_patch::strategic_merge_patch(&old, &patch_doc, g, k).map_err(patch_error)?
            }
            _ => {
                let mut applied = patch_doc.clone();
                check_kind(ctx, &mut applied)?;
                mini_patch::server_side_apply(
                    Some(&old),
                    &applied,
                    &ctx.field_manager(),
                    force,
                    g,
                    k,
                    &meta::now_rfc3339(),
                )
                .map_err(patch_error)?
            }
        };
        let patched_rv = meta::resource_version(&patched).map_err(ApiError::bad_request)?;
        let client_rv = if patched_rv == Some(kv.mod_revision) || patched_rv.is_none() {
            None
        } else {
            patched_rv
        };
        if client_rv.is_some() {
            return Err(ctx.conflict());
        }
        if !is_apply && mode == WriteMode::Main {
            warnings = field_validation(ctx, &mut patched, None)?;
        }
        if meta::name(&patched) != ctx.name() {
            return Err(ApiError::bad_request(
                "metadata.name: Invalid value: the name cannot be changed by a patch",
            ));
        }
        if let Some(schema) = ctx.res.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            mini_validation::prune(schema, &mut patched);
        }
        let new = admission::prepare_update(ctx.res, &old, patched, mode);
        let apply = is_apply.then(|| (ctx.field_manager(), force));
        match commit_update(ctx, &kv, &old, new, mode, apply).await? {
            Ok(obj) => {
                return Ok(with_warnings(
                    respond_object(ctx, StatusCode::OK, &obj),
                    &warnings,
                ))
            }
            Err(()) => continue,
        }
    }
    Err(ctx.conflict())
}

/// DeleteOptions from the body or the query string.
pub(crate) struct DeleteOptions {
    propagation: Option<String>,
    grace_period: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

pub(crate) fn delete_options(ctx: &Ctx<'_>) -> Result<DeleteOptions, ApiError> {
    let body: Value = if ctx.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(ctx.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let q = |k: &str| ctx.query.get(k).map(str::to_string);
    Ok(DeleteOptions {
        propagation: body["propagationPolicy"]
            .as_str()
            .map(str::to_string)
            .or_else(|| q("propagationPolicy"))
            .or_else(|| {
                match body["orphanDependents"]
                    .as_bool()
                    .or_else(|| q("orphanDependents").map(|v| v == "true"))
                {
                    Some(true) => Some("Orphan".into()),
                    Some(false) => Some("Background".into()),
                    None => None,
                }
            }),
        grace_period: body["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| q("gracePeriodSeconds").and_then(|g| g.parse().ok())),
        uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

/// Deletes one object: graceful for bound pods, deferred while finalizers remain.
pub(crate) async fn delete_object(
    ctx: &Ctx<'_>,
    opts: &DeleteOptions,
) -> Result<(StatusCode, Value), ApiError> {
    for _ in 0..MAX_RETRIES {
        let (kv, obj) = read(ctx).await?;
        admission::node_restriction(ctx, mini_nodeauthz::Operation::Delete, Some(&obj), None)
            .await?;
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| Some(u) != obj["metadata"]["uid"].as_str())
        {
            return Err(
                ApiError::conflict(&ctx.res.group, &ctx.res.plural, ctx.name()).with_message(
                    format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        opts.uid.clone().unwrap_or_default(),
                        obj["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ),
            );
        }
        if opts
            .resource_version
            .as_deref()
            .is_some_and(|rv| rv != kv.mod_revision.to_string())
        {
            return Err(ctx.conflict());
        }
        let mut new = obj.clone();
        let mut deferred = false;
        let is_pod = ctx.res.group.is_empty() && ctx.res.kind == "Pod";
        let is_namespace = ctx.res.group.is_empty() && ctx.res.kind == "Namespace";
        let already_deleting = obj["metadata"].get("deletionTimestamp").is_some();
        // graceful pod deletion: the node's agent finishes it
        if is_pod
            && new["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && !is_finished_pod(&obj)
        {
            let grace = opts.grace_period.unwrap_or_else(|| {
                obj["spec"]["terminationGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(30)
            });
            if grace > 0 {
                let prior = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
                if !already_deleting || prior.is_some_and(|p| grace < p) {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    let m = meta::metadata_mut(&mut new);
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                deferred = true;
            }
        }
        if is_namespace {
            if !already_deleting {
                meta::metadata_mut(&mut new)
                    .insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                meta::metadata_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            new["status"]["phase"] = json!("Terminating");
            deferred = deferred
                || new["spec"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
        }
        let mut finalizers = meta::finalizers(&new);
        match opts.propagation.as_deref() {
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            _ => {}
        }
        if !finalizers.is_empty() {
            let m = meta::metadata_mut(&mut new);
            m.insert("finalizers".into(), json!(finalizers));
            if !already_deleting {
                m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                m.entry("deletionGracePeriodSeconds").or_insert(json!(0));
            }
            deferred = true;
        }
        if ctx.dry_run() {
            return Ok((StatusCode::OK, if deferred { new } else { obj }));
        }
        if deferred {
            if without_managed_times(&new) == without_managed_times(&obj) {
                return Ok((StatusCode::OK, obj));
            }
            match ctx
                .server
                .inner
                .store
                .update(&kv.key, meta::to_storage_bytes(&new), Some(kv.mod_revision))
                .await
            {
                Ok(stored) => {
                    meta::metadata_mut(&mut new).insert(
                        "resourceVersion".into(),
                        json!(stored.mod_revision.to_string()),
                    );
                    let code = if opts.propagation.as_deref() == Some("Foreground") {
                        StatusCode::ACCEPTED
                    } else {
                        StatusCode::OK
                    };
                    return Ok((code, new));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(ctx.not_found()),
                Err(e) => return Err(store_error(e)),
            }
        }
        match ctx
            .server
            .inner
            .store
            .delete(&kv.key, Some(kv.mod_revision))
            .await
        {
            Ok(_) => {
                after_write(ctx, &obj).await;
                let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
                let answer = if ctx.res.returns_deleted_object() {
                    obj.clone()
                } else {
                    mini_api::status::success_status(
                        &ctx.res.group,
                        &ctx.res.plural,
                        ctx.name(),
                        uid,
                    )
                };
                return Ok((StatusCode::OK, answer));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(ctx.not_found()),
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ctx.conflict())
}

fn is_finished_pod(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

async fn delete(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(ctx)?;
    let (code, obj) = delete_object(ctx, &opts).await?;
    if obj["kind"] == "Status" {
        return Ok(body::json(code, &obj));
    }
    Ok(respond_object(ctx, code, &obj))
}

/// Objects a DeleteCollection deletes at the same time. One after another, every delete waited
/// for its own flush of the store (100 pods took about 2 s on a busy machine, and watchers saw
/// them go one by one); concurrent deletes share the store's group commits.
const DELETE_COLLECTION_WORKERS: usize = 16;

async fn delete_collection(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    use futures::stream::{self, StreamExt, TryStreamExt};

    let opts = delete_options(ctx)?;
    let (labels, fields) = selectors(ctx)?;
    let listed = list_matching(ctx, &labels, &fields).await?;
    let opts = &opts;
    // In list order; the first failure (other than an object already gone) ends the request.
    let deleted: Vec<Option<Value>> = stream::iter(listed.items)
        .map(|(kv, obj)| async move {
            let obj = match obj {
                Some(o) => o,
                None => meta::from_storage(&kv.value, kv.mod_revision)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            };
            let info = RequestInfo {
                name: Some(meta::name(&obj).to_string()),
                namespace: Some(meta::namespace(&obj).to_string()).filter(|n| !n.is_empty()),
                ..ctx.info.clone()
            };
            let one = Ctx {
                info: &info,
                ..*ctx
            };
            match delete_object(&one, opts).await {
                Ok((_, o)) => Ok(Some(if o["kind"] == "Status" { obj } else { o })),
                Err(e) if e.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffered(DELETE_COLLECTION_WORKERS)
        .try_collect()
        .await?;
    let deleted: Vec<Value> = deleted.into_iter().flatten().collect();
    let list = json!({
        "kind": ctx.res.list_kind(),
        "apiVersion": ctx.res.api_version(),
        "metadata": {"resourceVersion": ctx.server.inner.store.current_revision().to_string()},
        "items": deleted,
    });
    Ok(body::json(StatusCode::OK, &list))
}

/// How long `/readyz` waits for the datastore.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `/readyz`: ok while the datastore answers with its current state (a linearizable read on
/// etcd: not while etcd has no quorum, though reads are then served from a member's copy); 500 with
/// upstream's `[-]etcd failed` otherwise, so agents' balancers skip a server that lost its
/// datastore.
async fn readiness(server: &ApiServer) -> Response<Body> {
    let read = tokio::time::timeout(READY_TIMEOUT, server.store().check_ready()).await;
    match read {
        Ok(Ok(_)) => body::text(StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "readyz: the datastore read failed");
            body::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "[-]etcd failed: the datastore read failed\nreadyz check failed",
            )
        }
        Err(_) => body::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "[-]etcd failed: the datastore did not answer within 3s\nreadyz check failed",
        ),
    }
}

#[cfg(test)]
mod warning_tests {
    use super::*;

    #[test]
    fn capped_warnings_many_unknown_fields_stay_under_the_header_limit() {
        let warnings: Vec<String> = (0..300)
            .map(|i| format!("unknown field \"spec.field{i}\""))
            .collect();
        let out = capped_warnings(&warnings);
        assert_eq!(out.len(), MAX_WARNING_HEADERS);
        assert_eq!(out[0], warnings[0]);
    }

    #[test]
    fn capped_warnings_duplicates_are_sent_once() {
        let warnings = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        assert_eq!(capped_warnings(&warnings), vec!["a", "b"]);
    }

    #[test]
    fn capped_warnings_over_total_runes_are_truncated_per_item() {
        let long = "x".repeat(3000);
        let warnings = vec![long.clone(), format!("{long}y"), "short".to_string()];
        let out = capped_warnings(&warnings);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|w| w.chars().count() <= WARNING_ITEM_RUNES));
    }
}
