//! The HTTP side: `/v1-mini/session` (login, who am I, logout, kubeconfig download) and
//! `/v1-mini/accounts` (list, add, remove, set password), plus the authenticator the API
//! server asks about session cookies and account tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use mini_api::ApiError;
use mini_apiserver::{AccountAuthenticator, ApiServer, Body, RemoteAddr, StreamingRoute};
use mini_rbac::UserInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::AuditLog;
use crate::manage::{is_account, AddRequest, PasswordRequest};
use crate::ratelimit::RateLimiter;
use crate::record::Records;
use crate::session::{self, Sessions};
use crate::{account_user, csrf, now_unix, password, AccountsConfig, AccountsError};

/// Where the session endpoints live.
pub const SESSION_PATH: &str = "/v1-mini/session";
/// Where the account endpoints live.
pub const ACCOUNTS_PATH: &str = "/v1-mini/accounts";
/// The largest request body the endpoints read.
const MAX_BODY: usize = 64 * 1024;

/// `POST /v1-mini/session/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

/// Everything accounts need at run time.
pub struct Accounts {
    api: ApiServer,
    config: AccountsConfig,
    records: Records,
    sessions: Sessions,
    limiter: RateLimiter,
    audit: Arc<AuditLog>,
}

impl Accounts {
    pub fn new(api: ApiServer, config: AccountsConfig) -> Self {
        let store = api.store().clone();
        Accounts {
            records: Records::new(store.clone()),
            sessions: Sessions::new(store, config.sessions),
            limiter: RateLimiter::new(config.max_failures, config.failure_window),
            audit: Arc::new(AuditLog::new(config.audit.clone())),
            api,
            config,
        }
    }

    pub fn api(&self) -> &ApiServer {
        &self.api
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn audit_log(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    /// Answers one request under [`SESSION_PATH`] or [`ACCOUNTS_PATH`].
    pub async fn handle(&self, req: Request<Body>, peer: Option<UserInfo>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let source_ip = parts.extensions.get::<RemoteAddr>().map(|a| a.0.ip());
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return error(&AccountsError::Invalid(format!(
                    "the request body is unreadable or larger than {MAX_BODY} bytes"
                )))
            }
        };
        let path = parts.uri.path().trim_end_matches('/').to_string();
        let ctx = Call {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            body: &body,
            peer: peer.as_ref(),
            source_ip,
        };
        let result = match (parts.method.clone(), path.as_str()) {
            (Method::POST, p) if p == format!("{SESSION_PATH}/login") => self.login(&ctx).await,
            (Method::GET, SESSION_PATH) => self.whoami(&ctx).await,
            (Method::POST, p) if p == format!("{SESSION_PATH}/logout") => self.logout(&ctx).await,
            (Method::GET, p) if p == format!("{SESSION_PATH}/kubeconfig") => {
                self.kubeconfig(&ctx).await
            }
            (method, p) if p == ACCOUNTS_PATH || p.starts_with(&format!("{ACCOUNTS_PATH}/")) => {
                self.accounts(&ctx, method, &p[ACCOUNTS_PATH.len()..]).await
            }
            _ => Err(AccountsError::NotFound(format!(
                "no such endpoint: {} {}",
                parts.method, parts.uri
            ))),
        };
        result.unwrap_or_else(|e| error(&e))
    }

    fn audit_event(
        &self,
        ctx: &Call<'_>,
        user: UserInfo,
        verb: &str,
        resource: &str,
        name: &str,
        code: u16,
    ) {
        self.audit.write(&mini_apiserver::AuditRecord {
            user,
            verb: verb.to_string(),
            api_group: "accounts.mini.dev".to_string(),
            resource: resource.to_string(),
            subresource: String::new(),
            namespace: String::new(),
            name: name.to_string(),
            request_uri: ctx
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            code,
            source_ip: ctx.source_ip,
        });
    }

    async fn login(&self, ctx: &Call<'_>) -> Result<Response<Body>, AccountsError> {
        let req: LoginRequest = parse(ctx.body)?;
        if ctx.headers.contains_key(header::ORIGIN) && !csrf::origin_matches(ctx.uri, ctx.headers) {
            return Err(AccountsError::Forbidden(
                "the request's Origin is not this server: cross-site logins are refused".into(),
            ));
        }
        let attempted = UserInfo {
            name: req.name.clone(),
            groups: Vec::new(),
        };
        let name_key = format!("name:{}", req.name);
        let ip_key = format!(
            "ip:{}",
            ctx.source_ip.map(|ip| ip.to_string()).unwrap_or_default()
        );
        let now = Instant::now();
        for key in [&name_key, &ip_key] {
            if let Err(wait) = self.limiter.check(key, now) {
                self.audit_event(ctx, attempted.clone(), "create", "sessions", &req.name, 429);
                return Err(AccountsError::TooManyRequests {
                    retry_after: wait.as_secs().max(1),
                });
            }
        }
        let account = if crate::record::check_name(&req.name).is_ok() {
            self.records.get(&req.name).await?
        } else {
            None
        };
        let password = req.password.clone();
        let ok = match account {
            Some((account, _)) => tokio::task::spawn_blocking(move || {
                password::verify(&account.password_hash, &password)
            })
            .await
            .unwrap_or(false),
            None => {
                let _ =
                    tokio::task::spawn_blocking(move || password::verify_dummy(&password)).await;
                false
            }
        };
        if !ok {
            self.limiter.record_failure(&name_key, now);
            self.limiter.record_failure(&ip_key, now);
            self.audit_event(ctx, attempted, "create", "sessions", &req.name, 401);
            return Err(AccountsError::Unauthorized(
                "invalid name or password".into(),
            ));
        }
        self.limiter.reset(&name_key);
        let user = account_user(&req.name);
        let (secret, session) = self
            .sessions
            .create(&user.name, user.groups.clone(), now_unix())
            .await?;
        self.audit_event(ctx, user, "create", "sessions", &req.name, 200);
        let mut response = json_response(
            StatusCode::OK,
            &session_json(&session, self.config.sessions),
        );
        set_header(
            &mut response,
            header::SET_COOKIE,
            &session::set_cookie(&secret, self.config.sessions.lifetime),
        );
        Ok(response)
    }

    /// The session of the request's cookie, or 401.
    async fn session_of(
        &self,
        ctx: &Call<'_>,
    ) -> Result<(String, session::Session), AccountsError> {
        let secret = session::cookie_secret(ctx.headers)
            .ok_or_else(|| AccountsError::Unauthorized("not logged in".into()))?;
        let session = self
            .sessions
            .touch(&secret, now_unix())
            .await?
            .ok_or_else(|| {
                AccountsError::Unauthorized("the session expired or was ended: log in again".into())
            })?;
        Ok((secret, session))
    }

    async fn whoami(&self, ctx: &Call<'_>) -> Result<Response<Body>, AccountsError> {
        let (_, session) = self.session_of(ctx).await?;
        Ok(json_response(
            StatusCode::OK,
            &session_json(&session, self.config.sessions),
        ))
    }

    async fn logout(&self, ctx: &Call<'_>) -> Result<Response<Body>, AccountsError> {
        let (secret, session) = self.session_of(ctx).await?;
        if let Some(reason) = csrf::refusal(ctx.method, ctx.uri, ctx.headers, &session.csrf) {
            return Err(AccountsError::Forbidden(reason.into()));
        }
        self.sessions.remove(&secret).await?;
        self.audit_event(
            ctx,
            account_user(&session.user),
            "delete",
            "sessions",
            &session.user,
            200,
        );
        let mut response = json_response(StatusCode::OK, &json!({"loggedOut": session.user}));
        set_header(&mut response, header::SET_COOKIE, &session::clear_cookie());
        Ok(response)
    }

    /// A kubeconfig for the calling account with a fresh token (revoked by `user passwd` and
    /// `user rm`, expiring after the configured token lifetime).
    async fn kubeconfig(&self, ctx: &Call<'_>) -> Result<Response<Body>, AccountsError> {
        let caller = self.caller(ctx).await?;
        if !is_account(&caller) {
            return Err(AccountsError::Forbidden(format!(
                "User \"{}\" is no account: only accounts download a kubeconfig here",
                caller.name
            )));
        }
        if self.records.get(&caller.name).await?.is_none() {
            return Err(AccountsError::Unauthorized(
                "the account no longer exists".into(),
            ));
        }
        let expires = now_unix() + self.config.token_lifetime.as_secs() as i64;
        let token = self.records.issue_token(&caller.name, expires).await?;
        let server = csrf::own_origin(ctx.uri, ctx.headers)
            .ok_or_else(|| AccountsError::Invalid("the request names no Host".into()))?;
        let yaml = kubeconfig_yaml(&server, &self.config.ca_pem, &caller.name, &token);
        self.audit_event(
            ctx,
            caller.clone(),
            "create",
            "kubeconfigs",
            &caller.name,
            200,
        );
        let mut response = Response::new(full(yaml));
        set_header(&mut response, header::CONTENT_TYPE, "application/yaml");
        set_header(
            &mut response,
            header::CONTENT_DISPOSITION,
            &format!("attachment; filename=\"{}.kubeconfig\"", caller.name),
        );
        set_header(&mut response, header::CACHE_CONTROL, "no-store");
        Ok(response)
    }

    /// Who calls: a client certificate, a bearer token, or a session cookie (writes checked
    /// for CSRF and Origin); 401 without any.
    async fn caller(&self, ctx: &Call<'_>) -> Result<UserInfo, AccountsError> {
        match self
            .api
            .authenticate_request(ctx.method, ctx.uri, ctx.headers, ctx.peer)
            .await
        {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(AccountsError::Unauthorized("not logged in".into())),
            Err(e) if e.code == 403 => Err(AccountsError::Forbidden(e.message)),
            Err(e) => Err(AccountsError::Unauthorized(e.message)),
        }
    }

    async fn accounts(
        &self,
        ctx: &Call<'_>,
        method: Method,
        rest: &str,
    ) -> Result<Response<Body>, AccountsError> {
        let caller = self.caller(ctx).await?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (verb, name, result) = match (method, segments.as_slice()) {
            (Method::GET, []) => {
                let list = self.list(&caller).await?;
                return Ok(json_response(StatusCode::OK, &json!({"items": list})));
            }
            (Method::POST, []) => {
                let req: AddRequest = parse(ctx.body)?;
                let name = req.name.clone();
                let result = self.add(&caller, req).await.map(|info| {
                    json_response(
                        StatusCode::CREATED,
                        &serde_json::to_value(info).unwrap_or(Value::Null),
                    )
                });
                ("create", name, result)
            }
            (Method::DELETE, [name]) => {
                let result = self
                    .remove(&caller, name)
                    .await
                    .map(|()| json_response(StatusCode::OK, &json!({"removed": name})));
                ("delete", name.to_string(), result)
            }
            (Method::PUT, [name, "password"]) => {
                let req: PasswordRequest = parse(ctx.body)?;
                let result = self
                    .set_password(&caller, name, req)
                    .await
                    .map(|()| json_response(StatusCode::OK, &json!({"passwordChanged": name})));
                ("update", name.to_string(), result)
            }
            (method, _) => {
                return Err(AccountsError::NotFound(format!(
                    "no such endpoint: {method} {}",
                    ctx.uri
                )))
            }
        };
        let code = match &result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.code(),
        };
        self.audit_event(ctx, caller, verb, "accounts", &name, code);
        result
    }
}

#[async_trait]
impl AccountAuthenticator for Accounts {
    async fn authenticate_token(&self, token: &str) -> Option<Result<UserInfo, ApiError>> {
        let found = self.records.token_user(token, now_unix()).await?;
        Some(match found {
            Ok(Some(name)) => Ok(account_user(&name)),
            Ok(None) => Err(ApiError::new(
                401,
                "Unauthorized",
                "the account token is unknown, revoked or expired: download a new kubeconfig",
            )),
            Err(e) => Err(ApiError::internal(e.to_string())),
        })
    }

    async fn authenticate_session(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Result<UserInfo, ApiError>> {
        let secret = session::cookie_secret(headers)?;
        Some(match self.sessions.touch(&secret, now_unix()).await {
            Ok(Some(s)) => match csrf::refusal(method, uri, headers, &s.csrf) {
                None => Ok(UserInfo {
                    name: s.user,
                    groups: s.groups,
                }),
                Some(reason) => Err(ApiError::forbidden(reason)),
            },
            Ok(None) => Err(ApiError::new(
                401,
                "Unauthorized",
                "the session expired or was ended: log in again",
            )),
            Err(e) => Err(ApiError::internal(e.to_string())),
        })
    }
}

/// The streaming route that hands requests to [`Accounts::handle`].
pub struct Route(pub Arc<Accounts>);

impl StreamingRoute for Route {
    fn handles(&self, path: &str) -> bool {
        let under = |base: &str| {
            path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
        };
        under(SESSION_PATH) || under(ACCOUNTS_PATH)
    }

    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let accounts = self.0.clone();
        Box::pin(async move { accounts.handle(req, peer).await })
    }
}

struct Call<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    peer: Option<&'a UserInfo>,
    source_ip: Option<IpAddr>,
}

fn session_json(s: &session::Session, limits: crate::SessionLimits) -> Value {
    json!({
        "user": s.user,
        "groups": s.groups,
        "csrfToken": s.csrf,
        "idleTimeoutSeconds": limits.idle,
        "expiresAt": chrono::DateTime::from_timestamp(s.created + limits.lifetime, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    })
}

/// A kubeconfig logging in as `user` with `token`.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: mini
contexts:
- context:
    cluster: mini
    user: {user}
  name: {user}@mini
current-context: {user}@mini
users:
- name: {user}
  user:
    token: {token}
"
    )
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, AccountsError> {
    serde_json::from_slice(body).map_err(|e| {
        AccountsError::Invalid(format!("the request body is not the expected JSON: {e}"))
    })
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn set_header(response: &mut Response<Body>, name: header::HeaderName, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    set_header(&mut response, header::CONTENT_TYPE, "application/json");
    set_header(&mut response, header::CACHE_CONTROL, "no-store");
    response
}

/// An error as a Kubernetes `Status` body (with `Retry-After` for 429).
pub fn error(e: &AccountsError) -> Response<Body> {
    let code = e.code();
    let reason = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        429 => "TooManyRequests",
        _ => "InternalError",
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(
        status,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": reason,
            "code": code,
        }),
    );
    if let AccountsError::TooManyRequests { retry_after } = e {
        set_header(&mut response, header::RETRY_AFTER, &retry_after.to_string());
    }
    response
}
