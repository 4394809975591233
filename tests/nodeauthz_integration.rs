//! Node isolation against an in-process API server: a node's credentials read only what its
//! pods use (Node authorizer) and write only its own Node, Lease and pods (NodeRestriction).

use anyhow::{Context as _, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_rbac::UserInfo;
use mini_store::SledStore;
use serde_json::{json, Value};
use std::sync::Arc;

const NS: &str = "default";

struct Env {
    server: ApiServer,
    admin: Client,
    _dir: tempfile::TempDir,
}

async fn env() -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path()).context("opening sled")?;
    let server = ApiServer::new(Arc::new(store), ApiServerConfig::for_tests()).await?;
    let admin = Client::new(server.local_service(ApiServer::admin_user()), NS);
    Ok(Env {
        server,
        admin,
        _dir: dir,
    })
}

impl Env {
    fn node(&self, name: &str) -> Client {
        let user = UserInfo {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        };
        Client::new(self.server.local_service(user), NS)
    }

    async fn create<K>(&self, api: &Api<K>, obj: Value) -> kube::Result<K>
    where
        K: kube::Resource
            + Clone
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(obj).expect("valid literal object");
        api.create(&PostParams::default(), &obj).await
    }

    /// Nodes `a` and `b`; on each a pod using secret `<node>-secret`, configmap
    /// `<node>-config` and service account `<node>-sa`.
    async fn two_nodes(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), NS);
        let configs: Api<ConfigMap> = Api::namespaced(self.admin.clone(), NS);
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), NS);
        for n in ["a", "b"] {
            self.create(&nodes, json!({"metadata": {"name": n}}))
                .await?;
            self.create(
                &secrets,
                json!({"metadata": {"name": format!("{n}-secret")}, "stringData": {"k": n}}),
            )
            .await?;
            self.create(
                &configs,
                json!({"metadata": {"name": format!("{n}-config")}, "data": {"k": n}}),
            )
            .await?;
            self.create(&accounts, json!({"metadata": {"name": format!("{n}-sa")}}))
                .await?;
            self.create(&pods, pod(&format!("{n}-pod"), Some(n), n))
                .await?;
        }
        Ok(())
    }
}

fn pod(name: &str, node: Option<&str>, uses: &str) -> Value {
    let mut p = json!({"metadata": {"name": name}, "spec": {
        "serviceAccountName": format!("{uses}-sa"),
        "containers": [{"name": "c", "image": "busybox",
            "envFrom": [{"configMapRef": {"name": format!("{uses}-config")}}]}],
        "volumes": [{"name": "s", "secret": {"secretName": format!("{uses}-secret")}}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn status_code<T: std::fmt::Debug>(r: kube::Result<T>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected client error: {e}"),
    }
}

#[tokio::test]
async fn node_reads_only_what_its_pods_use() -> Result<()> {
    let env = env().await?;
    env.two_nodes().await?;
    let a = env.node("a");
    let secrets: Api<Secret> = Api::namespaced(a.clone(), NS);
    let configs: Api<ConfigMap> = Api::namespaced(a.clone(), NS);
    secrets.get("a-secret").await.context("own pod's secret")?;
    configs
        .get("a-config")
        .await
        .context("own pod's configmap")?;
    match secrets.get("b-secret").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("no relationship found between node 'a' and this object"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert_eq!(status_code(configs.get("b-config").await), 403);
    assert_eq!(status_code(secrets.list(&ListParams::default()).await), 403);
    // a list naming its object by field selector is authorized as a get of it
    let pinned = ListParams::default().fields("metadata.name=a-secret");
    assert_eq!(secrets.list(&pinned).await?.items.len(), 1);
    let other = ListParams::default().fields("metadata.name=b-secret");
    assert_eq!(status_code(secrets.list(&other).await), 403);
    // pods and nodes stay readable (overlay, DNS)
    let pods: Api<Pod> = Api::all(a.clone());
    assert_eq!(pods.list(&ListParams::default()).await?.items.len(), 2);
    Ok(())
}

#[tokio::test]
async fn node_reads_a_secret_right_after_its_pod_is_bound() -> Result<()> {
    let env = env().await?;
    env.two_nodes().await?;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(env.node("b").clone(), NS);
    for i in 0..20 {
        let name = format!("late-{i}");
        env.create(&pods, pod(&name, None, "a")).await?;
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": "b"}});
        let req = http::Request::post(format!("/api/v1/namespaces/{NS}/pods/{name}/binding"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding)?)?;
        env.admin.request_text(req).await?;
        // no wait: the graph may not have seen the binding yet
        secrets
            .get("a-secret")
            .await
            .with_context(|| format!("secret right after binding pod {name}"))?;
        pods.delete(&name, &Default::default()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn node_writes_only_its_own_node_lease_and_pods() -> Result<()> {
    let env = env().await?;
    env.two_nodes().await?;
    let a = env.node("a");
    let nodes: Api<Node> = Api::all(a.clone());
    let pp = PatchParams::default();
    let label = |k: &str| json!({"metadata": {"labels": {k: "x"}}});
    assert_eq!(
        status_code(
            nodes
                .patch("b", &pp, &Patch::Merge(label("example.com/x")))
                .await
        ),
        403
    );
    nodes
        .patch("a", &pp, &Patch::Merge(label("example.com/x")))
        .await
        .context("own plain label")?;
    assert_eq!(
        status_code(
            nodes
                .patch(
                    "a",
                    &pp,
                    &Patch::Merge(label("node-restriction.kubernetes.io/x"))
                )
                .await
        ),
        403
    );
    let taint = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    assert_eq!(
        status_code(nodes.patch("a", &pp, &Patch::Merge(taint)).await),
        403
    );
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    nodes
        .patch_status("a", &pp, &Patch::Merge(status.clone()))
        .await
        .context("own node status")?;
    assert_eq!(
        status_code(nodes.patch_status("b", &pp, &Patch::Merge(status)).await),
        403
    );

    let pods: Api<Pod> = Api::namespaced(a.clone(), NS);
    let pod_status = json!({"status": {"phase": "Running"}});
    pods.patch_status("a-pod", &pp, &Patch::Merge(pod_status.clone()))
        .await
        .context("own pod status")?;
    assert_eq!(
        status_code(
            pods.patch_status("b-pod", &pp, &Patch::Merge(pod_status))
                .await
        ),
        403
    );
    assert_eq!(
        status_code(pods.delete("b-pod", &Default::default()).await),
        403
    );
    assert_eq!(
        status_code(env.create(&pods, pod("sneaky", Some("a"), "b")).await),
        403
    );

    let leases: Api<Lease> = Api::namespaced(a.clone(), "kube-node-lease");
    env.create(&leases, json!({"metadata": {"name": "a"}}))
        .await
        .context("own lease")?;
    assert_eq!(
        status_code(
            env.create(&leases, json!({"metadata": {"name": "b"}}))
                .await
        ),
        403
    );
    let elsewhere: Api<Lease> = Api::namespaced(a.clone(), "kube-system");
    assert_eq!(
        status_code(
            env.create(&elsewhere, json!({"metadata": {"name": "a"}}))
                .await
        ),
        403
    );
    Ok(())
}

#[tokio::test]
async fn node_gets_tokens_only_for_its_pods() -> Result<()> {
    let env = env().await?;
    env.two_nodes().await?;
    let admin_pods: Api<Pod> = Api::namespaced(env.admin.clone(), NS);
    let accounts: Api<ServiceAccount> = Api::namespaced(env.node("a"), NS);
    let request = |pod: &Pod| -> Result<TokenRequest> {
        Ok(serde_json::from_value(json!({"spec": {"audiences": [],
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid}}}))?)
    };
    let own = admin_pods.get("a-pod").await?;
    let theirs = admin_pods.get("b-pod").await?;
    accounts
        .create_token_request("a-sa", &PostParams::default(), &request(&own)?)
        .await
        .context("token for own pod's account")?;
    assert_eq!(
        status_code(
            accounts
                .create_token_request("b-sa", &PostParams::default(), &request(&theirs)?)
                .await
        ),
        403
    );
    // the right account, bound to another node's pod
    assert_eq!(
        status_code(
            accounts
                .create_token_request("a-sa", &PostParams::default(), &request(&theirs)?)
                .await
        ),
        403
    );
    Ok(())
}

#[tokio::test]
async fn node_access_review_reflects_the_node_authorizer() -> Result<()> {
    let env = env().await?;
    env.two_nodes().await?;
    let review = |name: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"verb": "get", "resource": "secrets",
                        "namespace": NS, "name": name}}})
    };
    let a = env.node("a");
    for (name, allowed) in [("a-secret", true), ("b-secret", false)] {
        let req = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review(name))?)?;
        let out: Value = serde_json::from_str(&a.request_text(req).await?)?;
        assert_eq!(out["status"]["allowed"], allowed, "{name}: {out}");
    }
    Ok(())
}

#[tokio::test]
async fn server_takes_back_the_node_grants_an_older_mini_wrote() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn mini_store::Store> = Arc::new(SledStore::open(dir.path())?);
    let rbac = "/registry/rbac.authorization.k8s.io";
    let old_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:node"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]});
    let old_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
    "metadata": {"name": "mini:node"},
    "rules": [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]}
    ]});
    for (key, obj) in [
        (
            format!("{rbac}/clusterrolebindings/system:node"),
            old_binding,
        ),
        (format!("{rbac}/clusterroles/mini:node"), old_role),
    ] {
        store.create(&key, serde_json::to_vec(&obj)?).await?;
    }
    let server = ApiServer::new(store, ApiServerConfig::for_tests()).await?;
    let admin = Client::new(server.local_service(ApiServer::admin_user()), NS);
    let get = |path: &str| {
        let admin = admin.clone();
        let path = path.to_string();
        async move {
            let req = http::Request::get(path).body(Vec::new())?;
            Ok::<Value, anyhow::Error>(serde_json::from_str(&admin.request_text(req).await?)?)
        }
    };
    let binding = get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:node").await?;
    assert!(
        binding["subjects"].as_array().is_none_or(Vec::is_empty),
        "{binding}"
    );
    let role = get("/apis/rbac.authorization.k8s.io/v1/clusterroles/mini:node").await?;
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
    Ok(())
}
