//! RBAC escalation prevention through the REST path, as upstream: a (Cluster)RoleBinding needs
//! `bind` on its role or every permission of it in the binding's scope; a (Cluster)Role needs
//! `escalate` or every rule it grants; an `aggregationRule` needs full authority; an update
//! that leaves roleRef and subjects alone passes.

use std::sync::Arc;

use http::{Method, Request};
use kube::Client;
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_rbac::UserInfo;
use serde_json::{json, Value};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

struct Env {
    _dir: tempfile::TempDir,
    server: ApiServer,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = mini_store::SledStore::open(dir.path()).unwrap();
    let server = ApiServer::new(Arc::new(store), ApiServerConfig::for_tests())
        .await
        .unwrap();
    let env = Env { _dir: dir, server };
    let admin = env.admin();
    call(
        &admin,
        Method::POST,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
    )
    .await
    .unwrap();
    // "lead" administers namespace a
    call(
        &admin,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        binding("lead-admin", "ClusterRole", "admin", "lead"),
    )
    .await
    .unwrap();
    env
}

impl Env {
    fn admin(&self) -> Client {
        Client::new(
            self.server.local_service(ApiServer::admin_user()),
            "default",
        )
    }

    fn user(&self, name: &str) -> Client {
        let user = UserInfo {
            name: name.into(),
            groups: vec!["system:authenticated".into()],
        };
        Client::new(self.server.local_service(user), "default")
    }
}

fn binding(name: &str, kind: &str, role: &str, user: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    })
}

fn role(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name}, "rules": rules
    })
}

/// A request; `Err((code, message))` on a refusal.
async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Value, (u16, String)> {
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.to_string().into_bytes())
        .unwrap();
    match client.request_text(req).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(s)) => Err((s.code, s.message)),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn binding_a_role_held_is_allowed_and_cluster_admin_refused() {
    let env = env().await;
    let lead = env.user("lead");
    let path = format!("{RBAC}/namespaces/a/rolebindings");
    call(
        &lead,
        Method::POST,
        &path,
        binding("dev-edit", "ClusterRole", "edit", "dev"),
    )
    .await
    .unwrap();
    let (code, message) = call(
        &lead,
        Method::POST,
        &path,
        binding("root", "ClusterRole", "cluster-admin", "lead"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
    assert!(message.contains("not currently held"), "{message}");
    let (code, _) = call(
        &lead,
        Method::POST,
        &path,
        binding("missing", "ClusterRole", "no-such-role", "lead"),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
}

#[tokio::test]
async fn bind_verb_allows_binding_a_role_not_held() {
    let env = env().await;
    let admin = env.admin();
    call(&admin, Method::POST, &format!("{RBAC}/namespaces/a/roles"), role("binder", json!([
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]}
    ])))
    .await
    .unwrap();
    call(
        &admin,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        binding("lead-binder", "Role", "binder", "lead"),
    )
    .await
    .unwrap();
    call(
        &env.user("lead"),
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        binding("ok", "ClusterRole", "cluster-admin", "lead"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn role_with_rules_not_held_is_refused_and_escalate_allows_it() {
    let env = env().await;
    let lead = env.user("lead");
    let path = format!("{RBAC}/namespaces/a/roles");
    call(
        &lead,
        Method::POST,
        &path,
        role(
            "pods",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}]),
        ),
    )
    .await
    .unwrap();
    let nodes = role(
        "nodes",
        json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}]),
    );
    let (code, _) = call(&lead, Method::POST, &path, nodes.clone())
        .await
        .unwrap_err();
    assert_eq!(code, 403);
    let (code, _) = call(
        &lead,
        Method::POST,
        &path,
        role(
            "all",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
    let admin = env.admin();
    call(&admin, Method::POST, &path, role("escalator", json!([
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}
    ])))
    .await
    .unwrap();
    call(
        &admin,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        binding("lead-escalator", "Role", "escalator", "lead"),
    )
    .await
    .unwrap();
    call(&lead, Method::POST, &path, nodes).await.unwrap();
}

#[tokio::test]
async fn aggregation_rule_needs_full_authority() {
    let env = env().await;
    let admin = env.admin();
    // "ops" may create ClusterRoles and holds edit cluster-wide, but not everything
    call(&admin, Method::POST, &format!("{RBAC}/clusterroles"), json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "role-writer"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]
    }))
    .await
    .unwrap();
    for (name, role) in [("ops-writer", "role-writer"), ("ops-edit", "edit")] {
        call(&admin, Method::POST, &format!("{RBAC}/clusterrolebindings"), json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ops"}]
        }))
        .await
        .unwrap();
    }
    let (code, message) = call(
        &env.user("ops"),
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "gatherer"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]},
            "rules": []
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
    assert!(message.contains("aggregationRule"), "{message}");
}

#[tokio::test]
async fn update_leaving_role_ref_and_subjects_alone_passes() {
    let env = env().await;
    let path = format!("{RBAC}/namespaces/a/rolebindings");
    call(
        &env.admin(),
        Method::POST,
        &path,
        binding("root", "ClusterRole", "cluster-admin", "someone"),
    )
    .await
    .unwrap();
    let lead = env.user("lead");
    call(
        &lead,
        Method::PATCH,
        &format!("{path}/root"),
        json!({"metadata": {"labels": {"team": "x"}}}),
    )
    .await
    .map_err(|e| e.1)
    .unwrap_or_else(|m| panic!("labels-only patch refused: {m}"));
    let (code, _) = call(&lead, Method::PATCH, &format!("{path}/root"), json!({"subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "lead"}]}))
        .await
        .unwrap_err();
    assert_eq!(code, 403);
}
