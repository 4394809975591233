//! Authentication (client certificates, the bootstrap join token) and RBAC authorization.

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
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer {
        if let Some(secret) = &server.inner.config.join_secret {
            if let Ok(parsed) = mini_certs::JoinToken::parse(token) {
                if parsed.secret_matches(secret) {
                    return Ok(UserInfo {
                        name: BOOTSTRAP_USER.to_string(),
                        groups: vec![
                            "system:bootstrappers".to_string(),
                            "system:authenticated".to_string(),
                        ],
                    });
                }
            }
        }
        if let Some(user) = crate::serviceaccount::authenticate(server, token).await {
            return Ok(user);
        }
        return Err(ApiError::unauthorized());
    }
    peer_user.ok_or_else(ApiError::unauthorized)
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
        let policy = policy(server).await?;
        for a in &checks {
            if let Decision::Deny { .. } = mini_rbac::authorize(&policy, &user, a) {
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
            name: info.name.clone().unwrap_or_default(),
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
    let policy = policy(server).await?;
    match mini_rbac::authorize(&policy, user, &attrs) {
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
