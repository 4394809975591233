//! Who may do what: the `Access` trait the API server implements with the cluster's identities and RBAC.

use mini_rbac::UserInfo;

/// Who may do what; mini-apiserver implements it with the cluster's identities and RBAC.
#[async_trait::async_trait]
pub trait Access: Send + Sync + 'static {
    /// The request's user: from `peer` (the TLS client certificate's identity, already verified) or the
    /// `Authorization` header (`Bearer <token>` or `Basic base64(user:token)`, the token being a
    /// ServiceAccount token, a join/bootstrap token, ...). `Ok(None)` = anonymous; `Err(message)` = the
    /// credentials were given but are invalid (the registry answers 401 UNAUTHORIZED).
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Result<Option<UserInfo>, String>;
    /// Whether `user` (None = anonymous) may do `verb` on the `repositories` resource of API group
    /// `registry.mini.dev` in `namespace` (None = cluster scope, for mirrored repositories and the catalog).
    /// verbs: pull = "get", push = "create" (new repository or tag) / "update" (existing tag), delete = "delete",
    /// catalog = "list". Anonymous users get false unless the namespace opted in to anonymous pull.
    async fn allowed(
        &self,
        user: Option<&UserInfo>,
        verb: &str,
        namespace: Option<&str>,
        repository: &str,
    ) -> bool;
}
