//! Account management as the caller: an account's role bindings are created and deleted
//! through the API server with the caller's own identity, so RBAC and its escalation check
//! decide who may give (or take) which rights; the record itself is written by the server
//! only after those writes succeeded.

use std::collections::BTreeMap;

use mini_rbac::UserInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::Accounts;
use crate::record::{check_name, Account};
use crate::{
    account_user, password, AccountsError, ACCOUNTS_GROUP, ACCOUNT_LABEL, CREATED_BY_ANNOTATION,
    ROLES,
};

const RBAC: &str = "rbac.authorization.k8s.io";

/// `POST /v1-mini/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddRequest {
    pub name: String,
    pub password: String,
    /// `cluster-admin`, `admin`, `edit` or `view` (default `view`).
    #[serde(default)]
    pub role: Option<String>,
    /// Namespaces the role applies in; none: cluster-wide.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// `PUT /v1-mini/accounts/NAME/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordRequest {
    pub password: String,
    /// Required when people change their own password.
    #[serde(default)]
    pub current_password: Option<String>,
}

/// One role of an account: a binding to a ClusterRole, cluster-wide or in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleGrant {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// An account as `GET /v1-mini/accounts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    pub name: String,
    pub created_by: String,
    pub created: String,
    pub roles: Vec<RoleGrant>,
}

/// The name of an account's binding (one per scope).
pub fn binding_name(account: &str) -> String {
    format!("mini-account-{account}")
}

fn binding_path(namespace: Option<&str>, name: Option<&str>) -> String {
    let base = match namespace {
        Some(ns) => format!("/apis/{RBAC}/v1/namespaces/{ns}/rolebindings"),
        None => format!("/apis/{RBAC}/v1/clusterrolebindings"),
    };
    match name {
        Some(n) => format!("{base}/{n}"),
        None => base,
    }
}

fn binding(account: &str, role: &str, namespace: Option<&str>, creator: &str) -> Value {
    let mut metadata = json!({
        "name": binding_name(account),
        "labels": {ACCOUNT_LABEL: account},
        "annotations": {CREATED_BY_ANNOTATION: creator},
    });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": format!("{RBAC}/v1"),
        "kind": if namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" },
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": account}],
    })
}

/// A request through the API server as `client`'s user; a refusal keeps its code and message.
pub(crate) async fn call(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, AccountsError> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .map_err(|e| AccountsError::Internal(e.to_string()))?;
    match client.request_text(request).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(status)) => Err(AccountsError::Api {
            code: status.code,
            message: status.message,
        }),
        Err(e) => Err(AccountsError::Internal(format!("api request {path}: {e}"))),
    }
}

impl Accounts {
    fn client_as(&self, user: &UserInfo) -> kube::Client {
        kube::Client::new(self.api().local_service(user.clone()), "default")
    }

    fn admin_client(&self) -> kube::Client {
        self.client_as(&mini_apiserver::ApiServer::admin_user())
    }

    /// Every account's role bindings, by account name.
    async fn grants(&self) -> Result<BTreeMap<String, Vec<RoleGrant>>, AccountsError> {
        let admin = self.admin_client();
        let mut out: BTreeMap<String, Vec<RoleGrant>> = BTreeMap::new();
        for path in [
            format!("/apis/{RBAC}/v1/clusterrolebindings?labelSelector={ACCOUNT_LABEL}"),
            format!("/apis/{RBAC}/v1/rolebindings?labelSelector={ACCOUNT_LABEL}"),
        ] {
            let list = call(&admin, http::Method::GET, &path, None).await?;
            for item in list["items"].as_array().into_iter().flatten() {
                let Some(account) = item["metadata"]["labels"][ACCOUNT_LABEL].as_str() else {
                    continue;
                };
                out.entry(account.to_string()).or_default().push(RoleGrant {
                    role: item["roleRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    namespace: item["metadata"]["namespace"].as_str().map(str::to_string),
                });
            }
        }
        for grants in out.values_mut() {
            grants.sort();
        }
        Ok(out)
    }

    /// Whether `caller` may remove every one of `grants` (and, with none, is a cluster admin
    /// of bindings): who may manage an account.
    async fn may_manage(&self, caller: &UserInfo, grants: &[RoleGrant]) -> bool {
        if grants.is_empty() {
            return self
                .api()
                .may(caller, "delete", RBAC, "clusterrolebindings", None, None)
                .await;
        }
        for g in grants {
            let resource = if g.namespace.is_some() {
                "rolebindings"
            } else {
                "clusterrolebindings"
            };
            if !self
                .api()
                .may(
                    caller,
                    "delete",
                    RBAC,
                    resource,
                    g.namespace.as_deref(),
                    None,
                )
                .await
            {
                return false;
            }
        }
        true
    }

    /// The accounts `caller` may see: all for whoever may list ClusterRoleBindings; otherwise
    /// its own and those whose every binding is in a namespace where it may list RoleBindings.
    pub async fn list(&self, caller: &UserInfo) -> Result<Vec<AccountInfo>, AccountsError> {
        let all = self
            .api()
            .may(caller, "list", RBAC, "clusterrolebindings", None, None)
            .await;
        let grants = self.grants().await?;
        let mut out = Vec::new();
        for account in self.records().list().await? {
            let roles = grants.get(&account.name).cloned().unwrap_or_default();
            let visible = all
                || account.name == caller.name && is_account(caller)
                || (!roles.is_empty() && {
                    let mut ok = true;
                    for g in &roles {
                        ok = ok
                            && match &g.namespace {
                                Some(ns) => {
                                    self.api()
                                        .may(caller, "list", RBAC, "rolebindings", Some(ns), None)
                                        .await
                                }
                                None => false,
                            };
                    }
                    ok
                });
            if visible {
                out.push(AccountInfo {
                    name: account.name,
                    created_by: account.created_by,
                    created: account.created,
                    roles,
                });
            }
        }
        Ok(out)
    }

    /// Creates an account: its bindings as `caller` (RBAC and the escalation check decide),
    /// then its record; a refused binding undoes the ones made.
    pub async fn add(
        &self,
        caller: &UserInfo,
        req: AddRequest,
    ) -> Result<AccountInfo, AccountsError> {
        check_name(&req.name)?;
        password::check_rules(&req.password)?;
        let role = req.role.clone().unwrap_or_else(|| "view".to_string());
        if !ROLES.contains(&role.as_str()) {
            return Err(AccountsError::Invalid(format!(
                "unknown role {role:?}: use one of {}",
                ROLES.join(", ")
            )));
        }
        if role == "cluster-admin" && !req.namespaces.is_empty() {
            return Err(AccountsError::Invalid(
                "cluster-admin is cluster-wide: give no --namespace".into(),
            ));
        }
        let mut namespaces = req.namespaces.clone();
        namespaces.sort();
        namespaces.dedup();
        if self.records().get(&req.name).await?.is_some() {
            return Err(AccountsError::Conflict(format!(
                "account {:?} already exists",
                req.name
            )));
        }
        let hash = {
            let password = req.password.clone();
            tokio::task::spawn_blocking(move || password::hash(&password))
                .await
                .map_err(|e| AccountsError::Internal(e.to_string()))??
        };
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let client = self.client_as(caller);
        let mut made: Vec<Option<&str>> = Vec::new();
        for scope in &scopes {
            let body = binding(&req.name, &role, *scope, &caller.name);
            let result = call(
                &client,
                http::Method::POST,
                &binding_path(*scope, None),
                Some(&body),
            )
            .await;
            if let Err(e) = result {
                self.undo_bindings(&req.name, &made).await;
                return Err(e);
            }
            made.push(*scope);
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let account = Account {
            name: req.name.clone(),
            password_hash: hash,
            created_by: caller.name.clone(),
            created: now.clone(),
            password_changed: now,
        };
        if let Err(e) = self.records().create(&account).await {
            self.undo_bindings(&req.name, &made).await;
            return Err(e);
        }
        Ok(AccountInfo {
            name: account.name,
            created_by: account.created_by,
            created: account.created,
            roles: scopes
                .iter()
                .map(|s| RoleGrant {
                    role: role.clone(),
                    namespace: s.map(str::to_string),
                })
                .collect(),
        })
    }

    async fn undo_bindings(&self, account: &str, scopes: &[Option<&str>]) {
        let admin = self.admin_client();
        for scope in scopes {
            let name = binding_name(account);
            let path = binding_path(*scope, Some(&name));
            if let Err(e) = call(&admin, http::Method::DELETE, &path, None).await {
                tracing::warn!(account, path, error = %e, "undoing an account binding failed");
            }
        }
    }

    /// Removes an account: its bindings as `caller`, then its record, sessions and tokens.
    pub async fn remove(&self, caller: &UserInfo, name: &str) -> Result<(), AccountsError> {
        check_name(name)?;
        if self.records().get(name).await?.is_none() {
            return Err(AccountsError::NotFound(format!(
                "account {name:?} not found"
            )));
        }
        let grants = self.grants().await?.remove(name).unwrap_or_default();
        if !self.may_manage(caller, &grants).await {
            return Err(forbidden(caller, "remove", name));
        }
        let client = self.client_as(caller);
        for g in &grants {
            let path = binding_path(g.namespace.as_deref(), Some(&binding_name(name)));
            match call(&client, http::Method::DELETE, &path, None).await {
                Ok(_) | Err(AccountsError::Api { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.records().delete(name).await?;
        self.sessions().remove_user(name).await?;
        self.records().revoke_tokens(name).await?;
        Ok(())
    }

    /// Sets a new password: people for themselves (with their current password), or whoever
    /// may manage the account. Ends its sessions and revokes its tokens.
    pub async fn set_password(
        &self,
        caller: &UserInfo,
        name: &str,
        req: PasswordRequest,
    ) -> Result<(), AccountsError> {
        check_name(name)?;
        password::check_rules(&req.password)?;
        let Some((mut account, kv)) = self.records().get(name).await? else {
            return Err(AccountsError::NotFound(format!(
                "account {name:?} not found"
            )));
        };
        if is_account(caller) && caller.name == name {
            let current = req.current_password.clone().unwrap_or_default();
            let phc = account.password_hash.clone();
            let ok = tokio::task::spawn_blocking(move || password::verify(&phc, &current))
                .await
                .map_err(|e| AccountsError::Internal(e.to_string()))?;
            if !ok {
                return Err(AccountsError::Forbidden(
                    "the current password is wrong".into(),
                ));
            }
        } else {
            let grants = self.grants().await?.remove(name).unwrap_or_default();
            if !self.may_manage(caller, &grants).await {
                return Err(forbidden(caller, "change the password of", name));
            }
        }
        let password = req.password.clone();
        account.password_hash = tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|e| AccountsError::Internal(e.to_string()))??;
        account.password_changed =
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.records().update(&account, &kv).await?;
        self.sessions().remove_user(name).await?;
        self.records().revoke_tokens(name).await?;
        Ok(())
    }
}

/// Whether `user` is one of the accounts (not a certificate, token or ServiceAccount user).
pub fn is_account(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == ACCOUNTS_GROUP) && *user == account_user(&user.name)
}

fn forbidden(caller: &UserInfo, what: &str, name: &str) -> AccountsError {
    AccountsError::Forbidden(format!(
        "User \"{}\" cannot {what} account \"{name}\": it may not delete all of the account's role bindings",
        caller.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_namespaced_is_a_rolebinding_to_the_clusterrole() {
        let b = binding("bob", "edit", Some("a"), "alice");
        assert_eq!(b["kind"], "RoleBinding");
        assert_eq!(b["metadata"]["namespace"], "a");
        assert_eq!(b["roleRef"]["kind"], "ClusterRole");
        assert_eq!(b["roleRef"]["name"], "edit");
        assert_eq!(b["subjects"][0]["name"], "bob");
        assert_eq!(b["metadata"]["labels"][ACCOUNT_LABEL], "bob");
        let c = binding("bob", "view", None, "alice");
        assert_eq!(c["kind"], "ClusterRoleBinding");
        assert!(c["metadata"].get("namespace").is_none());
    }

    #[test]
    fn is_account_requires_the_exact_account_groups() {
        assert!(is_account(&account_user("bob")));
        let mut forged = account_user("bob");
        forged.groups.push("system:masters".into());
        assert!(!is_account(&forged));
    }
}
