//! Authentication (client certificates, the server's join token, bootstrap tokens from
//! `bootstrap.kubernetes.io/token` Secrets, ServiceAccount tokens, then people's accounts
//! through the installed account authenticator) and authorization: the
//! Node authorizer (mini-nodeauthz), then RBAC, as upstream's `Node,RBAC` chain.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderMap};
use mini_api::{ApiError, ResourceInfo};
use mini_rbac::{Decision, PolicySnapshot, RequestAttributes, UserInfo};
use serde_json::Value;

use crate::request::RequestInfo;
use crate::ApiServer;

/// The user a bootstrap join token authenticates as.
pub const BOOTSTRAP_USER: &str = "system:bootstrap:mini";

/// Who is calling: a verified client certificate, or a bearer token; otherwise 401.
pub async fn authenticate(
    server: &ApiServer,
    headers: &HeaderMap,
    peer_user: Option<UserInfo>,
) -> Result<UserInfo, ApiError> {
    let Some(token) = bearer(headers) else {
        return peer_user.ok_or_else(ApiError::unauthorized);
    };
    if let Some(result) = authenticate_join_token(server, token).await {
        return result;
    }
    if let Some(user) = crate::serviceaccount::authenticate(server, token).await {
        return Ok(user);
    }
    if let Some(hook) = server.inner.account_authenticator.get() {
        if let Some(result) = hook.authenticate_token(token).await {
            return result;
        }
    }
    Err(ApiError::unauthorized())
}

/// [`authenticate`], and for a request with neither token nor client certificate the
/// account authenticator's session cookie (which checks CSRF and Origin on writes).
pub async fn authenticate_request(
    server: &ApiServer,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    peer_user: Option<UserInfo>,
) -> Result<UserInfo, ApiError> {
    if bearer(headers).is_none() && peer_user.is_none() {
        if let Some(hook) = server.inner.account_authenticator.get() {
            if let Some(result) = hook.authenticate_session(method, uri, headers).await {
                return result;
            }
        }
    }
    authenticate(server, headers, peer_user).await
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn bootstrap_user(groups: Vec<String>, name: String) -> UserInfo {
    let mut groups = groups;
    groups.push("system:authenticated".to_string());
    UserInfo { name, groups }
}

/// Authenticates a join token in any form (`K10<hash>::server:<secret>`,
/// `K10<hash>::<id>.<secret>`, a bare secret or `<id>.<secret>`): the server's permanent token
/// as [`BOOTSTRAP_USER`], a bootstrap token as `system:bootstrap:<id>` (groups
/// `system:bootstrappers` + its extra groups). `None` when `token` is no join token at all (a
/// ServiceAccount JWT, say); a bootstrap token that is expired, deleted or wrong, or a token
/// pinning another CA, is refused with a 401 saying why.
pub async fn authenticate_join_token(
    server: &ApiServer,
    token: &str,
) -> Option<Result<UserInfo, ApiError>> {
    let parsed = mini_certs::JoinToken::parse(token).ok()?;
    if let Some(secret) = &server.inner.config.join_secret {
        if parsed.secret_matches(secret) {
            if !parsed.ca_matches(&server.ca_bundle_pem()) {
                return Some(Err(wrong_ca()));
            }
            return Some(Ok(bootstrap_user(
                vec![mini_certs::BOOTSTRAPPERS_GROUP.to_string()],
                BOOTSTRAP_USER.to_string(),
            )));
        }
    }
    let id = parsed.bootstrap_id.as_deref()?;
    if !parsed.ca_matches(&server.ca_bundle_pem()) {
        return Some(Err(wrong_ca()));
    }
    let key = format!(
        "/registry/core/secrets/{}/{}",
        mini_certs::BOOTSTRAP_NAMESPACE,
        mini_certs::BootstrapToken::secret_name(id)
    );
    let stored = match server.inner.store.get(&key).await {
        Ok(kv) => kv,
        Err(e) => return Some(Err(ApiError::internal(e.to_string()))),
    };
    let data = stored
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|s| s["type"] == mini_certs::BOOTSTRAP_SECRET_TYPE)
        .map(|s| secret_data(&s))
        .unwrap_or_default();
    Some(
        match mini_certs::check_bootstrap_secret(
            &data,
            id,
            &parsed.secret,
            mini_certs::unix_time::now(),
        ) {
            Ok(groups) => Ok(bootstrap_user(
                groups,
                format!("{}{id}", mini_certs::BOOTSTRAP_USER_PREFIX),
            )),
            Err(refusal) => {
                tracing::info!(token_id = id, reason = %refusal, "bootstrap token refused");
                Err(ApiError::new(401, "Unauthorized", refusal.to_string()))
            }
        },
    )
}

fn wrong_ca() -> ApiError {
    ApiError::new(
        401,
        "Unauthorized",
        "the token's CA hash does not match this server's CA: the token belongs to another cluster",
    )
}

/// A Secret's `data` (base64) and `stringData`, decoded to strings.
fn secret_data(secret: &Value) -> BTreeMap<String, String> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    if let Some(data) = secret["data"].as_object() {
        for (k, v) in data {
            if let Some(text) = v
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
            {
                out.insert(k.clone(), text);
            }
        }
    }
    if let Some(data) = secret["stringData"].as_object() {
        for (k, v) in data {
            if let Some(v) = v.as_str() {
                out.insert(k.clone(), v.to_string());
            }
        }
    }
    out
}

/// Whether `user` came in with a join token (the server's or a bootstrap token).
pub fn is_join_token_user(user: &UserInfo) -> bool {
    user.name == BOOTSTRAP_USER
        || (user.name.starts_with(mini_certs::BOOTSTRAP_USER_PREFIX)
            && user
                .groups
                .iter()
                .any(|g| g == mini_certs::BOOTSTRAPPERS_GROUP))
}

/// Applies `Impersonate-User` / `Impersonate-Group` headers: the caller must be allowed the
/// `impersonate` verb on `users` (or `serviceaccounts`) and `groups`, as upstream.
pub async fn impersonate(
    server: &ApiServer,
    headers: &HeaderMap,
    user: UserInfo,
) -> Result<UserInfo, ApiError> {
    let Some(target) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        if headers.contains_key("impersonate-group") {
            return Err(ApiError::bad_request(
                "requested [{Kind=Group ...}] without impersonating a user",
            ));
        }
        return Ok(user);
    };
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let mut checks: Vec<RequestAttributes> = Vec::new();
    if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
        checks.push(RequestAttributes {
            verb: "impersonate".into(),
            resource_request: true,
            resource: "serviceaccounts".into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        });
    } else {
        checks.push(RequestAttributes {
            verb: "impersonate".into(),
            resource_request: true,
            resource: "users".into(),
            name: target.clone(),
            ..Default::default()
        });
    }
    for g in &groups {
        checks.push(RequestAttributes {
            verb: "impersonate".into(),
            resource_request: true,
            resource: "groups".into(),
            name: g.clone(),
            ..Default::default()
        });
    }
    if !user.groups.iter().any(|g| g == "system:masters") {
        for a in &checks {
            if let Decision::Deny { .. } = decide(server, &user, a).await? {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: User \"{}\" cannot impersonate resource \"{}\" in API group \"\" at the cluster scope",
                    a.resource, a.name, user.name, a.resource
                )));
            }
        }
    }
    let mut groups = groups;
    if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        let ns = rest.split(':').next().unwrap_or_default();
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    if target != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: target,
        groups,
    })
}

/// The RBAC objects in force, reloaded from the store after RBAC writes.
pub async fn policy(server: &ApiServer) -> Result<Arc<PolicySnapshot>, ApiError> {
    let wanted = server.inner.rbac_generation.load(Ordering::SeqCst);
    {
        let (loaded, snapshot) = &*server.inner.rbac.read().expect("rbac lock poisoned");
        if *loaded >= wanted {
            return Ok(snapshot.clone());
        }
    }
    // one reload at a time; callers arriving meanwhile wait and then see the fresh snapshot
    let _reloading = server.inner.rbac_reload.lock().await;
    let wanted = server.inner.rbac_generation.load(Ordering::SeqCst);
    if server.inner.rbac.read().expect("rbac lock poisoned").0 < wanted {
        let snapshot = reload_policy(server).await?;
        *server.inner.rbac.write().expect("rbac lock poisoned") = (wanted, snapshot);
    }
    Ok(server
        .inner
        .rbac
        .read()
        .expect("rbac lock poisoned")
        .1
        .clone())
}

async fn reload_policy(server: &ApiServer) -> Result<Arc<PolicySnapshot>, ApiError> {
    let load = |prefix: &'static str| async move {
        let page = server
            .inner
            .store
            .list(prefix, None, 0)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok::<Vec<Value>, ApiError>(
            page.items
                .iter()
                .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                .collect(),
        )
    };
    let snapshot = Arc::new(PolicySnapshot {
        roles: load("/registry/rbac.authorization.k8s.io/roles/").await?,
        cluster_roles: load("/registry/rbac.authorization.k8s.io/clusterroles/").await?,
        role_bindings: load("/registry/rbac.authorization.k8s.io/rolebindings/").await?,
        cluster_role_bindings: load("/registry/rbac.authorization.k8s.io/clusterrolebindings/")
            .await?,
    });
    Ok(snapshot)
}

/// The RBAC attributes of a request.
pub fn attributes(info: &RequestInfo, res: Option<&ResourceInfo>) -> RequestAttributes {
    match res {
        Some(_) => RequestAttributes {
            verb: info.verb.clone(),
            resource_request: true,
            api_group: info.group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone().unwrap_or_default(),
            namespace: info.namespace.clone().unwrap_or_default(),
            name: info
                .name
                .clone()
                .or_else(|| info.selector_name.clone())
                .unwrap_or_default(),
            path: info.path.clone(),
        },
        None => RequestAttributes {
            verb: info.verb.clone(),
            resource_request: false,
            path: info.path.clone(),
            ..Default::default()
        },
    }
}

/// Upstream's 403 wording.
pub fn forbidden_message(user: &UserInfo, a: &RequestAttributes, reason: &str) -> String {
    let mut msg = if a.resource_request {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let qualified = if a.api_group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.api_group)
        };
        let subject = if a.name.is_empty() {
            format!("{qualified} is forbidden")
        } else {
            format!("{qualified} \"{}\" is forbidden", a.name)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", a.namespace)
        };
        format!(
            "{subject}: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            user.name, a.verb, a.api_group
        )
    } else {
        format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            user.name, a.verb, a.path
        )
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    msg
}

/// The authorizer chain: members of `system:masters` always; then the Node authorizer
/// (which has no opinion on users that are not nodes), then RBAC. A denial's reason joins
/// what each authorizer said, as upstream's union authorizer does.
pub async fn decide(
    server: &ApiServer,
    user: &UserInfo,
    attrs: &RequestAttributes,
) -> Result<Decision, ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(Decision::Allow);
    }
    let node_reason = match server.inner.node_authz.authorize(user, attrs).await {
        mini_nodeauthz::Decision::Allow => return Ok(Decision::Allow),
        mini_nodeauthz::Decision::NoOpinion { reason } => reason,
    };
    let policy = policy(server).await?;
    Ok(match mini_rbac::authorize(&policy, user, attrs) {
        Decision::Allow => Decision::Allow,
        Decision::Deny { reason } => Decision::Deny {
            reason: [node_reason, reason]
                .into_iter()
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
        },
    })
}

pub async fn authorize(
    server: &ApiServer,
    user: &UserInfo,
    info: &RequestInfo,
    res: Option<&ResourceInfo>,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let attrs = attributes(info, res);
    match decide(server, user, &attrs).await? {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => {
            let mut e = ApiError::forbidden(forbidden_message(user, &attrs, &reason));
            if let Some(r) = res {
                e.group = r.group.clone();
                e.kind = r.plural.clone();
                e.name = info.name.clone().unwrap_or_default();
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_for_namespaced_list_matches_upstream() {
        let user = UserInfo {
            name: "bob".into(),
            groups: vec![],
        };
        let a = RequestAttributes {
            verb: "list".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&user, &a, ""),
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }
}
