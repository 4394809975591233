//! kube-rs integration tests against an in-process mini API server (`local_service`, no TCP/TLS),
//! each test on its own temporary sled directory. Tests assert upstream Kubernetes behaviour;
//! ones that fail because of a server bug are `#[ignore]`d with the bug named.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, Status};
use kube::Client;
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_store::{SledStore, Store};
use serde_json::{json, Value};
use tempfile::TempDir;

const NS: &str = "default";

/// A server over a fresh temporary sled directory plus an admin client.
struct Harness {
    dir: TempDir,
    server: Option<ApiServer>,
    client: Client,
    store: Weak<dyn Store>,
}

async fn open_server(path: &Path) -> Result<(ApiServer, Client, Weak<dyn Store>)> {
    let sled = SledStore::open(path).context("opening sled")?;
    let store: Arc<dyn Store> = Arc::new(sled);
    let weak = Arc::downgrade(&store);
    let server = ApiServer::new(store, ApiServerConfig::for_tests())
        .await
        .context("starting api server")?;
    let client = Client::new(server.local_service(ApiServer::admin_user()), NS);
    Ok((server, client, weak))
}

async fn harness() -> Result<Harness> {
    let dir = tempfile::tempdir()?;
    let (server, client, store) = open_server(dir.path()).await?;
    Ok(Harness {
        dir,
        server: Some(server),
        client,
        store,
    })
}

fn from_json<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid literal object")
}

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": data,
    }))
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]}
                ]}
            }
        }
    }))
}

fn rv_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().resource_version.clone().unwrap_or_default()
}

fn rv_num(rv: &str) -> u64 {
    rv.parse()
        .unwrap_or_else(|_| panic!("resourceVersion {rv:?} is not numeric"))
}

/// The `Status` of a failed call; fails the test on success or another error kind.
fn api_error<T: std::fmt::Debug>(res: kube::Result<T>) -> Box<Status> {
    match res {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

/// Sends a raw request (method, path with query, optional content type, body) through `client`.
async fn raw_request(
    client: &Client,
    method: &str,
    path_and_query: &str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
) -> kube::Result<String> {
    let mut req = kube::core::Request::new("/")
        .list(&ListParams::default())
        .expect("request builds");
    *req.method_mut() = method.parse().expect("valid method");
    *req.uri_mut() = path_and_query.parse().expect("valid uri");
    if let Some(ct) = content_type {
        req.headers_mut()
            .insert("content-type", ct.parse().expect("valid header"));
    }
    *req.body_mut() = body;
    client.request_text(req).await
}

/// Runs a watch (with `timeoutSeconds`) to completion and returns its events.
async fn collect_watch(
    client: Client,
    url: String,
    rv: String,
    timeout_secs: u32,
) -> Result<Vec<(String, Value)>> {
    let wp = WatchParams::default().timeout(timeout_secs);
    let req = kube::core::Request::new(url).watch(&wp, &rv)?;
    let text = tokio::time::timeout(
        Duration::from_secs(u64::from(timeout_secs) + 10),
        client.request_text(req),
    )
    .await
    .map_err(|_| anyhow!("watch did not end after timeoutSeconds={timeout_secs}"))??;
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ev: Value = serde_json::from_str(line).with_context(|| format!("event {line}"))?;
        let ty = ev["type"].as_str().unwrap_or_default().to_string();
        events.push((ty, ev["object"].clone()));
    }
    Ok(events)
}

// ---------------------------------------------------------------- ConfigMaps

#[tokio::test]
async fn configmap_create_then_get_returns_same_data_and_server_fields() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let created = api
        .create(
            &PostParams::default(),
            &config_map("cm1", json!({"a": "1"}), json!({"k": "v"})),
        )
        .await?;
    assert!(!rv_of(&created).is_empty(), "resourceVersion set");
    assert!(created.metadata.uid.is_some(), "uid set");
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    let got = api.get("cm1").await?;
    assert_eq!(got.data, created.data);
    assert_eq!(rv_of(&got), rv_of(&created));
    assert_eq!(got.metadata.uid, created.metadata.uid);
    Ok(())
}

#[tokio::test]
async fn configmap_create_existing_name_returns_409_already_exists() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let cm = config_map("dup", json!({}), json!({"k": "v"}));
    api.create(&PostParams::default(), &cm).await?;
    let st = api_error(api.create(&PostParams::default(), &cm).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "AlreadyExists");
    assert_eq!(st.message, r#"configmaps "dup" already exists"#);
    Ok(())
}

#[tokio::test]
async fn configmap_get_missing_returns_404_not_found_status() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let st = api_error(api.get("nope").await);
    assert_eq!(st.code, 404);
    assert_eq!(st.reason, "NotFound");
    assert_eq!(st.message, r#"configmaps "nope" not found"#);
    let details = st.details.as_ref().expect("details");
    assert_eq!(details.name, "nope");
    assert_eq!(details.kind, "configmaps");
    Ok(())
}

#[tokio::test]
async fn configmap_replace_with_current_rv_bumps_resource_version() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let mut cm = api
        .create(
            &PostParams::default(),
            &config_map("r", json!({}), json!({"k": "v"})),
        )
        .await?;
    let before = rv_of(&cm);
    cm.data = Some([("k".to_string(), "v2".to_string())].into());
    let replaced = api.replace("r", &PostParams::default(), &cm).await?;
    assert_eq!(replaced.data.as_ref().unwrap()["k"], "v2");
    assert!(rv_num(&rv_of(&replaced)) > rv_num(&before));
    assert_eq!(api.get("r").await?.data.unwrap()["k"], "v2");
    Ok(())
}

#[tokio::test]
async fn configmap_replace_with_stale_rv_returns_409_conflict() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let stale = api
        .create(
            &PostParams::default(),
            &config_map("s", json!({}), json!({"k": "v"})),
        )
        .await?;
    let mut fresh = stale.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("s", &PostParams::default(), &fresh).await?;
    let mut stale = stale;
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    let st = api_error(api.replace("s", &PostParams::default(), &stale).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    assert!(
        st.message.contains("the object has been modified"),
        "message: {}",
        st.message
    );
    assert_eq!(api.get("s").await?.data.unwrap()["k"], "v2");
    Ok(())
}

#[tokio::test]
async fn configmap_replace_without_rv_is_unconditional() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("u", json!({}), json!({"k": "v"})),
    )
    .await?;
    let replaced = api
        .replace(
            "u",
            &PostParams::default(),
            &config_map("u", json!({}), json!({"k": "v9"})),
        )
        .await?;
    assert_eq!(replaced.data.unwrap()["k"], "v9");
    Ok(())
}

#[tokio::test]
async fn configmap_merge_patch_sets_and_null_deletes_keys() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("m", json!({"x": "1"}), json!({"a": "1", "b": "2"})),
    )
    .await?;
    let patched = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"y": "2"}}, "data": {"a": null, "c": "3"}}),
            ),
        )
        .await?;
    let data = patched.data.unwrap();
    assert!(!data.contains_key("a"));
    assert_eq!(data["b"], "2");
    assert_eq!(data["c"], "3");
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(labels["x"], "1");
    assert_eq!(labels["y"], "2");
    Ok(())
}

#[tokio::test]
async fn configmap_json_patch_applies_add_replace_remove_and_test() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("j", json!({}), json!({"a": "1", "b": "2"})),
    )
    .await?;
    let ops = json!([
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/data/c", "value": "3"}
    ]);
    let text = raw_request(
        &h.client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/j",
        Some("application/json-patch+json"),
        serde_json::to_vec(&ops)?,
    )
    .await?;
    let patched: ConfigMap = serde_json::from_str(&text)?;
    let data = patched.data.unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data["a"], "10");
    assert_eq!(data["c"], "3");

    // A failing `test` op rejects the whole patch without changes.
    let bad = json!([
        {"op": "test", "path": "/data/a", "value": "nope"},
        {"op": "remove", "path": "/data/a"}
    ]);
    let res = raw_request(
        &h.client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/j",
        Some("application/json-patch+json"),
        serde_json::to_vec(&bad)?,
    )
    .await;
    let st = api_error(res);
    assert!(
        st.code == 422 || st.code == 400,
        "test op failure code {}",
        st.code
    );
    assert_eq!(api.get("j").await?.data.unwrap()["a"], "10");
    Ok(())
}

#[tokio::test]
async fn configmap_delete_then_get_returns_404() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("d", json!({}), json!({"k": "v"})),
    )
    .await?;
    api.delete("d", &DeleteParams::default()).await?;
    assert_eq!(api_error(api.get("d").await).code, 404);
    let st = api_error(api.delete("d", &DeleteParams::default()).await);
    assert_eq!(st.code, 404);
    assert_eq!(st.reason, "NotFound");
    Ok(())
}

#[tokio::test]
async fn configmap_delete_with_stale_uid_precondition_returns_409() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("pc", json!({}), json!({})),
    )
    .await?;
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let st = api_error(api.delete("pc", &dp).await);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    api.get("pc").await?;
    Ok(())
}

#[tokio::test]
async fn configmap_list_with_label_selectors_filters_items() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    for (name, labels) in [
        ("l1", json!({"app": "a", "tier": "web"})),
        ("l2", json!({"app": "b", "tier": "web"})),
        ("l3", json!({"app": "c"})),
    ] {
        api.create(&PostParams::default(), &config_map(name, labels, json!({})))
            .await?;
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        let mut v: Vec<String> = l
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| n.starts_with('l'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(api.list(&ListParams::default().labels("app=a")).await?),
        ["l1"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier=web,app!=a"))
                .await?
        ),
        ["l2"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (a,c)"))
                .await?
        ),
        ["l1", "l3"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("!tier")).await?),
        ["l3"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("tier")).await?),
        ["l1", "l2"]
    );
    Ok(())
}

#[tokio::test]
async fn configmap_list_with_field_selectors_filters_items() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    for name in ["f1", "f2"] {
        api.create(
            &PostParams::default(),
            &config_map(name, json!({}), json!({})),
        )
        .await?;
    }
    let l = api
        .list(&ListParams::default().fields("metadata.name=f2"))
        .await?;
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].metadata.name.as_deref(), Some("f2"));
    let l = api
        .list(&ListParams::default().fields("metadata.name!=f2"))
        .await?;
    assert!(l
        .items
        .iter()
        .all(|c| c.metadata.name.as_deref() != Some("f2")));
    assert!(l
        .items
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some("f1")));
    // Cluster-wide list filtered by namespace.
    let all: Api<ConfigMap> = Api::all(h.client.clone());
    let l = all
        .list(&ListParams::default().fields("metadata.namespace=default,metadata.name=f1"))
        .await?;
    assert_eq!(l.items.len(), 1);
    // An unsupported field selector is a 400.
    let st = api_error(
        api.list(&ListParams::default().fields("data.k=v"))
            .await
            .map(|l| l.items.len()),
    );
    assert_eq!(st.code, 400);
    Ok(())
}

#[tokio::test]
async fn configmap_list_with_limit_paginates_via_continue_token() -> Result<()> {
    let h = harness().await?;
    let ns_api: Api<Namespace> = Api::all(h.client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "pages"}})),
        )
        .await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), "pages");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("p{i}"), json!({}), json!({})),
        )
        .await?;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await?;
        pages += 1;
        assert!(page.items.len() <= 2, "page of {}", page.items.len());
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        seen.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    Ok(())
}

async fn namespace_with_config_maps(
    client: &Client,
    ns: &str,
    count: usize,
) -> Result<Api<ConfigMap>> {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": ns}})),
        )
        .await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..count {
        api.create(
            &PostParams::default(),
            &config_map(&format!("p{i}"), json!({}), json!({})),
        )
        .await?;
    }
    Ok(api)
}

#[tokio::test]
async fn configmap_list_last_page_ending_exactly_at_end_has_no_continue_token() -> Result<()> {
    let h = harness().await?;
    let api = namespace_with_config_maps(&h.client, "exact", 4).await?;
    let first = api.list(&ListParams::default().limit(2)).await?;
    let token = first.metadata.continue_.clone().filter(|t| !t.is_empty());
    let token = token.context("first page of 4 items with limit 2 has a continue token")?;
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await?;
    assert_eq!(second.items.len(), 2);
    assert_eq!(
        second.metadata.continue_.filter(|t| !t.is_empty()),
        None,
        "no more items after the second page"
    );
    Ok(())
}

#[tokio::test]
async fn configmap_list_with_limit_reports_remaining_item_count() -> Result<()> {
    let h = harness().await?;
    let api = namespace_with_config_maps(&h.client, "remaining", 5).await?;
    let first = api.list(&ListParams::default().limit(2)).await?;
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    Ok(())
}

#[tokio::test]
async fn configmap_dry_run_create_is_not_persisted() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let pp = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let out = api
        .create(&pp, &config_map("dry", json!({}), json!({"k": "v"})))
        .await?;
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_error(api.get("dry").await).code, 404);
    Ok(())
}

#[tokio::test]
async fn configmap_unknown_field_with_strict_validation_returns_400() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    // kube 5's PostParams has no fieldValidation: send the create raw.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "strict"}, "data": {"k": "v"}, "bogus": 1});
    let res = raw_request(
        &h.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        Some("application/json"),
        serde_json::to_vec(&body)?,
    )
    .await;
    let st = api_error(res);
    assert_eq!(st.code, 400);
    assert_eq!(st.reason, "BadRequest");
    assert!(st.message.contains("bogus"), "message: {}", st.message);
    assert_eq!(api_error(api.get("strict").await).code, 404);

    // PatchParams carries fieldValidation for any patch type.
    api.create(
        &PostParams::default(),
        &config_map("strict", json!({}), json!({})),
    )
    .await?;
    let st = api_error(
        api.patch(
            "strict",
            &PatchParams::default().validation_strict(),
            &Patch::Merge(json!({"bogus": 1})),
        )
        .await,
    );
    assert_eq!(st.code, 400);
    assert!(st.message.contains("bogus"), "message: {}", st.message);
    Ok(())
}

#[tokio::test]
async fn configmap_unknown_field_without_strict_is_dropped() -> Result<()> {
    let h = harness().await?;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lax"}, "bogus": 1});
    let text = raw_request(
        &h.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("application/json"),
        serde_json::to_vec(&body)?,
    )
    .await?;
    let v: Value = serde_json::from_str(&text)?;
    assert!(v.get("bogus").is_none(), "unknown field stored: {v}");
    Ok(())
}

#[tokio::test]
async fn configmap_create_in_missing_namespace_returns_404() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), "does-not-exist");
    let st = api_error(
        api.create(
            &PostParams::default(),
            &config_map("x", json!({}), json!({})),
        )
        .await,
    );
    assert_eq!(st.code, 404);
    assert_eq!(st.reason, "NotFound");
    assert!(
        st.message
            .contains(r#"namespaces "does-not-exist" not found"#),
        "message: {}",
        st.message
    );
    Ok(())
}

// ---------------------------------------------------------------- Deployments

#[tokio::test]
async fn deployment_create_applies_upstream_defaults_and_generation() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let d = api
        .create(&PostParams::default(), &deployment("web", 2))
        .await?;
    assert_eq!(d.metadata.generation, Some(1));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.as_ref().expect("strategy defaulted");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    let c = &pod.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    let got = api.get("web").await?;
    assert_eq!(rv_of(&got), rv_of(&d));
    Ok(())
}

#[tokio::test]
async fn deployment_negative_replicas_returns_422_invalid_with_field_cause() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let st = api_error(
        api.create(&PostParams::default(), &deployment("bad", -1))
            .await,
    );
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    let details = st.details.as_ref().expect("details");
    assert_eq!(details.kind, "Deployment");
    assert_eq!(details.name, "bad");
    assert_eq!(details.group, "apps");
    assert!(
        details.causes.iter().any(|c| c.field == "spec.replicas"),
        "causes: {:?}",
        details.causes
    );
    assert!(
        st.message
            .starts_with(r#"Deployment.apps "bad" is invalid"#),
        "message: {}",
        st.message
    );
    assert_eq!(api_error(api.get("bad").await).code, 404);
    Ok(())
}

#[tokio::test]
async fn deployment_strategic_merge_patch_updates_container_by_name() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let created = api
        .create(&PostParams::default(), &deployment("smp", 1))
        .await?;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.27"}
    ]}}}});
    let d = api
        .patch("smp", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let containers = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(containers.len(), 2, "sidecar kept by merge key");
    let web = containers.iter().find(|c| c.name == "web").unwrap();
    assert_eq!(web.image.as_deref(), Some("nginx:1.27"));
    let side = containers.iter().find(|c| c.name == "sidecar").unwrap();
    assert_eq!(side.image.as_deref(), Some("busybox:1.36"));
    assert_eq!(
        d.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    assert!(rv_num(&rv_of(&d)) > rv_num(&rv_of(&created)));

    // $patch: delete removes one element by merge key.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "$patch": "delete"}
    ]}}}});
    let d = api
        .patch("smp", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let containers = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].name, "web");
    Ok(())
}

#[tokio::test]
async fn deployment_server_side_apply_creates_then_updates_with_managed_fields() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let mut manifest = serde_json::to_value(deployment("ssa", 1))?;
    let d = api
        .patch("ssa", &PatchParams::apply("mgr"), &Patch::Apply(&manifest))
        .await?;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    let mf = d.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("mgr") && m.operation.as_deref() == Some("Apply")),
        "managedFields: {mf:?}"
    );
    manifest["spec"]["replicas"] = json!(4);
    let d = api
        .patch("ssa", &PatchParams::apply("mgr"), &Patch::Apply(&manifest))
        .await?;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));
    Ok(())
}

#[tokio::test]
async fn deployment_server_side_apply_conflicting_manager_returns_409_until_forced() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let manifest = serde_json::to_value(deployment("own", 2))?;
    api.patch(
        "own",
        &PatchParams::apply("mgr-a"),
        &Patch::Apply(&manifest),
    )
    .await?;
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "own"}, "spec": {"replicas": 3}});
    let st = api_error(
        api.patch("own", &PatchParams::apply("mgr-b"), &Patch::Apply(&other))
            .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    let causes = st
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.reason == "FieldManagerConflict" && c.field == ".spec.replicas"),
        "causes: {causes:?}"
    );
    assert!(st.message.contains("mgr-a"), "message: {}", st.message);
    assert_eq!(api.get("own").await?.spec.unwrap().replicas, Some(2));

    let d = api
        .patch(
            "own",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&other),
        )
        .await?;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    let mf = d.metadata.managed_fields.unwrap_or_default();
    let owns_replicas = |m: &str| {
        mf.iter().any(|e| {
            e.manager.as_deref() == Some(m)
                && e.fields_v1
                    .as_ref()
                    .map(|f| f.0.pointer("/f:spec/f:replicas").is_some())
                    .unwrap_or(false)
        })
    };
    assert!(owns_replicas("mgr-b"), "mgr-b owns replicas after force");
    assert!(!owns_replicas("mgr-a"), "mgr-a lost replicas after force");
    Ok(())
}

#[tokio::test]
async fn deployment_scale_subresource_gets_and_patches_replicas() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.create(&PostParams::default(), &deployment("sc", 2))
        .await?;
    let scale = api.get_scale("sc").await?;
    assert_eq!(scale.metadata.name.as_deref(), Some("sc"));
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(
        scale.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app=sc")
    );
    let scale = api
        .patch_scale(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(api.get("sc").await?.spec.unwrap().replicas, Some(5));

    // PUT of a Scale with a stale resourceVersion is a conflict.
    let mut stale = api.get_scale("sc").await?;
    api.patch_scale(
        "sc",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 6}})),
    )
    .await?;
    stale.spec.as_mut().unwrap().replicas = Some(1);
    let st = api_error(
        api.replace_scale("sc", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(st.code, 409);
    Ok(())
}

#[tokio::test]
async fn deployment_status_subresource_ignores_spec_changes() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.create(&PostParams::default(), &deployment("st", 2))
        .await?;
    let d = api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 4, "observedGeneration": 1}})),
        )
        .await?;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2), "spec unchanged");
    assert_eq!(d.status.as_ref().unwrap().replicas, Some(4));
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "status write keeps generation"
    );
    let got = api.get("st").await?;
    assert_eq!(got.spec.unwrap().replicas, Some(2));
    assert_eq!(got.status.unwrap().replicas, Some(4));
    Ok(())
}

#[tokio::test]
async fn deployment_main_endpoint_ignores_status_changes() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.create(&PostParams::default(), &deployment("ms", 2))
        .await?;
    api.patch_status(
        "ms",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 4}})),
    )
    .await?;
    let mut d = api.get("ms").await?;
    d.spec.as_mut().unwrap().replicas = Some(3);
    d.status.as_mut().unwrap().replicas = Some(99);
    let out = api.replace("ms", &PostParams::default(), &d).await?;
    assert_eq!(out.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(out.status.as_ref().unwrap().replicas, Some(4));
    let out = api
        .patch(
            "ms",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 77}})),
        )
        .await?;
    assert_eq!(out.status.unwrap().replicas, Some(4));
    // Status set on create is dropped too.
    let mut fresh = deployment("ms2", 1);
    fresh.status = Some(from_json(json!({"replicas": 5})));
    let out = api.create(&PostParams::default(), &fresh).await?;
    assert_eq!(out.status.and_then(|s| s.replicas), None);
    Ok(())
}

#[tokio::test]
async fn deployment_delete_returns_object_then_get_returns_404() -> Result<()> {
    let h = harness().await?;
    let api: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    api.create(&PostParams::default(), &deployment("del", 1))
        .await?;
    let res = api.delete("del", &DeleteParams::background()).await?;
    assert!(res.is_left() || res.is_right());
    let st = api_error(api.get("del").await);
    assert_eq!(st.code, 404);
    assert_eq!(st.message, r#"deployments.apps "del" not found"#);
    Ok(())
}

// ---------------------------------------------------------------- Namespaces

#[tokio::test]
async fn namespace_create_get_list_patch_delete() -> Result<()> {
    let h = harness().await?;
    let api: Api<Namespace> = Api::all(h.client.clone());
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for builtin in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == builtin), "{builtin} in {names:?}");
    }
    let ns = api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}})),
        )
        .await?;
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert!(ns
        .spec
        .and_then(|s| s.finalizers)
        .unwrap_or_default()
        .iter()
        .any(|f| f == "kubernetes"));
    let got = api.get("team-a").await?;
    assert_eq!(
        got.metadata.labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "team-a"
    );
    let l = api.list(&ListParams::default().labels("team=a")).await?;
    assert_eq!(l.items.len(), 1);
    let patched = api
        .patch(
            "team-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"owner": "me"}}})),
        )
        .await?;
    assert_eq!(patched.metadata.annotations.unwrap()["owner"], "me");
    let st = api_error(
        api.create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "team-a"}})),
        )
        .await,
    );
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "AlreadyExists");
    api.delete("team-a", &DeleteParams::default()).await?;
    // Upstream: either gone, or Terminating until the namespace controller finalizes it.
    match api.get("team-a").await {
        Err(kube::Error::Api(st)) => assert_eq!(st.code, 404),
        Ok(ns) => {
            assert!(ns.metadata.deletion_timestamp.is_some());
            assert_eq!(
                ns.status.and_then(|s| s.phase).as_deref(),
                Some("Terminating")
            );
            // New objects are refused in a terminating namespace.
            let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "team-a");
            let st = api_error(
                cms.create(
                    &PostParams::default(),
                    &config_map("late", json!({}), json!({})),
                )
                .await,
            );
            assert_eq!(st.code, 403);
        }
        Err(e) => bail!("unexpected error {e}"),
    }
    Ok(())
}

#[tokio::test]
async fn namespace_invalid_name_returns_422() -> Result<()> {
    let h = harness().await?;
    let api: Api<Namespace> = Api::all(h.client.clone());
    let st = api_error(
        api.create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "Not_Valid"}})),
        )
        .await,
    );
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    Ok(())
}

// ---------------------------------------------------------------- Watch

#[tokio::test]
async fn watch_from_resource_version_reports_added_modified_deleted_with_rvs() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let start = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    assert!(!start.is_empty(), "list carries a resourceVersion");
    let watch = tokio::spawn(collect_watch(
        h.client.clone(),
        api.resource_url().to_string(),
        start.clone(),
        3,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = api
        .create(
            &PostParams::default(),
            &config_map("w", json!({}), json!({"k": "v"})),
        )
        .await?;
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v2"}})),
        )
        .await?;
    api.delete("w", &DeleteParams::default()).await?;
    let events: Vec<(String, Value)> = watch
        .await??
        .into_iter()
        .filter(|(t, o)| t != "BOOKMARK" && o["metadata"]["name"] == "w")
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    let rv = |i: usize| {
        events[i].1["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(rv(0), rv_of(&created));
    assert_eq!(rv(1), rv_of(&patched));
    assert!(
        rv_num(&rv(2)) > rv_num(&rv(1)),
        "DELETED carries the deletion revision"
    );
    assert_eq!(events[1].1["data"]["k"], "v2");
    assert_eq!(events[0].1["kind"], "ConfigMap");
    assert_eq!(events[0].1["apiVersion"], "v1");

    // Replaying from the same resourceVersion after the fact gives the same history.
    let replay: Vec<(String, Value)> =
        collect_watch(h.client.clone(), api.resource_url().to_string(), start, 1)
            .await?
            .into_iter()
            .filter(|(t, o)| t != "BOOKMARK" && o["metadata"]["name"] == "w")
            .collect();
    let replay_types: Vec<&str> = replay.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(replay_types, ["ADDED", "MODIFIED", "DELETED"]);
    Ok(())
}

#[tokio::test]
async fn watch_from_resource_version_zero_starts_with_added_for_existing() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let cm = api
        .create(
            &PostParams::default(),
            &config_map("pre", json!({"w": "yes"}), json!({})),
        )
        .await?;
    api.create(
        &PostParams::default(),
        &config_map("other", json!({"w": "no"}), json!({})),
    )
    .await?;
    let wp = WatchParams::default().timeout(1).labels("w=yes");
    let req = kube::core::Request::new(api.resource_url()).watch(&wp, "0")?;
    let text = tokio::time::timeout(Duration::from_secs(10), h.client.request_text(req))
        .await
        .map_err(|_| anyhow!("watch did not end"))??;
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let added: Vec<&Value> = events.iter().filter(|e| e["type"] == "ADDED").collect();
    assert_eq!(added.len(), 1, "events: {events:?}");
    assert_eq!(added[0]["object"]["metadata"]["name"], "pre");
    assert_eq!(
        added[0]["object"]["metadata"]["resourceVersion"],
        json!(rv_of(&cm))
    );
    Ok(())
}

#[tokio::test]
async fn watch_with_label_selector_reports_deleted_when_object_stops_matching() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let start = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = WatchParams::default().timeout(2).labels("sel=yes");
    let req = kube::core::Request::new(api.resource_url()).watch(&wp, &start)?;
    let client = h.client.clone();
    let watch = tokio::spawn(async move { client.request_text(req).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.create(
        &PostParams::default(),
        &config_map("sel", json!({"sel": "yes"}), json!({})),
    )
    .await?;
    api.create(
        &PostParams::default(),
        &config_map("unsel", json!({"sel": "no"}), json!({})),
    )
    .await?;
    let moved = api
        .patch(
            "sel",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
        )
        .await?;
    let text = tokio::time::timeout(Duration::from_secs(15), watch)
        .await
        .map_err(|_| anyhow!("watch did not end"))???;
    let events: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let seen: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".to_string(), "sel".to_string()),
            ("DELETED".to_string(), "sel".to_string())
        ]
    );
    let last = events.iter().rfind(|e| e["type"] == "DELETED").unwrap();
    assert_eq!(
        last["object"]["metadata"]["resourceVersion"],
        json!(rv_of(&moved))
    );
    Ok(())
}

#[tokio::test]
async fn dry_run_patch_is_not_persisted() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let cm = api
        .create(
            &PostParams::default(),
            &config_map("dr", json!({}), json!({"k": "v"})),
        )
        .await?;
    let out = api
        .patch(
            "dr",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await?;
    assert_eq!(out.data.unwrap()["k"], "changed");
    let got = api.get("dr").await?;
    assert_eq!(rv_of(&got), rv_of(&cm));
    assert_eq!(got.data.unwrap()["k"], "v");
    Ok(())
}

#[tokio::test]
async fn dry_run_delete_via_query_parameter_is_not_persisted() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("drq", json!({}), json!({})),
    )
    .await?;
    raw_request(
        &h.client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/drq?dryRun=All",
        None,
        Vec::new(),
    )
    .await?;
    api.get("drq").await?;
    Ok(())
}

#[tokio::test]
async fn dry_run_delete_via_delete_options_body_is_not_persisted() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("drb", json!({}), json!({})),
    )
    .await?;
    // kube-rs (like client-go) sends dryRun inside the DeleteOptions body.
    let dp = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    api.delete("drb", &dp).await?;
    api.get("drb").await?;
    Ok(())
}

// ---------------------------------------------------------------- CRDs

fn widget_crd() -> CustomResourceDefinition {
    from_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "minimum": 0},
                        "color": {"type": "string"}
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                }}}
            }]
        }
    }))
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

async fn create_widget_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd()).await?;
    for _ in 0..50 {
        let crd = crds.get("widgets.example.com").await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("CRD never became Established")
}

#[tokio::test]
async fn crd_custom_objects_support_crud_via_dynamic_object() -> Result<()> {
    let h = harness().await?;
    create_widget_crd(&h.client).await?;
    let ar = widget_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &ar);
    let obj = DynamicObject::new("w1", &ar).data(json!({"spec": {"size": 3, "color": "red"}}));
    let created = api.create(&PostParams::default(), &obj).await?;
    assert_eq!(created.data["spec"]["size"], 3);
    assert_eq!(created.types.as_ref().unwrap().kind, "Widget");
    assert_eq!(created.metadata.generation, Some(1));

    let got = api.get("w1").await?;
    assert_eq!(got.data["spec"]["color"], "red");
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );

    let list = api.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);

    let patched = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await?;
    assert_eq!(patched.data["spec"]["size"], 5);
    assert_eq!(patched.data["spec"]["color"], "red");
    assert_eq!(patched.metadata.generation, Some(2));

    let mut replaced = patched.clone();
    replaced.data["spec"]["color"] = json!("blue");
    let replaced = api.replace("w1", &PostParams::default(), &replaced).await?;
    assert_eq!(replaced.data["spec"]["color"], "blue");

    // Strategic merge patch is not supported for custom resources (415).
    let st = api_error(
        api.patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 1}})),
        )
        .await,
    );
    assert_eq!(st.code, 415);

    // Server-side apply works on custom objects.
    let applied = api
        .patch(
            "w1",
            &PatchParams::apply("mgr").force(),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w1"}, "spec": {"size": 8}})),
        )
        .await?;
    assert_eq!(applied.data["spec"]["size"], 8);

    api.delete("w1", &DeleteParams::default()).await?;
    let st = api_error(api.get("w1").await);
    assert_eq!(st.code, 404);
    assert_eq!(st.message, r#"widgets.example.com "w1" not found"#);
    Ok(())
}

#[tokio::test]
async fn crd_custom_object_schema_violation_returns_422_and_unknown_fields_are_pruned() -> Result<()>
{
    let h = harness().await?;
    create_widget_crd(&h.client).await?;
    let ar = widget_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &ar);
    let bad = DynamicObject::new("neg", &ar).data(json!({"spec": {"size": -1}}));
    let st = api_error(api.create(&PostParams::default(), &bad).await);
    assert_eq!(st.code, 422);
    assert_eq!(st.reason, "Invalid");
    let bad = DynamicObject::new("str", &ar).data(json!({"spec": {"size": "big"}}));
    assert_eq!(
        api_error(api.create(&PostParams::default(), &bad).await).code,
        422
    );

    let extra = DynamicObject::new("extra", &ar).data(json!({"spec": {"size": 1, "junk": true}}));
    let created = api.create(&PostParams::default(), &extra).await?;
    assert!(
        created.data["spec"].get("junk").is_none(),
        "unknown field kept: {}",
        created.data
    );
    Ok(())
}

#[tokio::test]
async fn crd_custom_object_status_subresource_ignores_spec_changes() -> Result<()> {
    let h = harness().await?;
    create_widget_crd(&h.client).await?;
    let ar = widget_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &ar);
    api.create(
        &PostParams::default(),
        &DynamicObject::new("s1", &ar).data(json!({"spec": {"size": 1}})),
    )
    .await?;
    let out = api
        .patch_status(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 9}, "status": {"ready": true}})),
        )
        .await?;
    assert_eq!(out.data["spec"]["size"], 1);
    assert_eq!(out.data["status"]["ready"], true);
    let out = api
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": false}})),
        )
        .await?;
    assert_eq!(out.data["status"]["ready"], true);
    Ok(())
}

#[tokio::test]
async fn crd_unknown_resource_before_creation_returns_404() -> Result<()> {
    let h = harness().await?;
    let ar = widget_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(h.client.clone(), NS, &ar);
    let st = api_error(
        api.list(&ListParams::default())
            .await
            .map(|l| l.items.len()),
    );
    assert_eq!(st.code, 404);
    Ok(())
}

// ---------------------------------------------------------------- Restart

#[tokio::test]
async fn restart_reopening_same_sled_dir_keeps_objects_and_resource_versions() -> Result<()> {
    let mut h = harness().await?;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let deps: Api<Deployment> = Api::namespaced(h.client.clone(), NS);
    let nss: Api<Namespace> = Api::all(h.client.clone());
    let cm = cms
        .create(
            &PostParams::default(),
            &config_map("keep", json!({}), json!({"k": "v"})),
        )
        .await?;
    let dep = deps
        .create(&PostParams::default(), &deployment("keep", 3))
        .await?;
    let ns = nss
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "kept"}})),
        )
        .await?;
    let default_ns = nss.get("default").await?;
    let list_rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();

    drop((cms, deps, nss));
    h.server.take();
    let store = h.store.clone();
    let path = h.dir.path().to_path_buf();
    let Harness { dir, client, .. } = h;
    drop(client);
    for _ in 0..100 {
        if store.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.upgrade().is_none(),
        "store still referenced after dropping server and client"
    );

    let (_server, client, _) = open_server(&path).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let nss: Api<Namespace> = Api::all(client.clone());
    let cm2 = cms.get("keep").await?;
    assert_eq!(rv_of(&cm2), rv_of(&cm));
    assert_eq!(cm2.metadata.uid, cm.metadata.uid);
    assert_eq!(cm2.data, cm.data);
    let dep2 = deps.get("keep").await?;
    assert_eq!(rv_of(&dep2), rv_of(&dep));
    assert_eq!(dep2.spec.unwrap().replicas, Some(3));
    assert_eq!(rv_of(&nss.get("kept").await?), rv_of(&ns));
    assert_eq!(
        rv_of(&nss.get("default").await?),
        rv_of(&default_ns),
        "bootstrap does not rewrite existing objects"
    );
    // New writes continue after the old revisions.
    let after = cms
        .create(
            &PostParams::default(),
            &config_map("new", json!({}), json!({})),
        )
        .await?;
    assert!(rv_num(&rv_of(&after)) > rv_num(&list_rv));
    drop(dir);
    Ok(())
}

// ---- node side: join, node proxy and resource metrics without agents ----
// (the TLS and fake-agent tests live in pkg/apiserver/tests/node_agent.rs, which can use rustls)

#[tokio::test]
async fn node_join_as_a_non_token_user_returns_403() -> Result<()> {
    let h = harness().await?;
    let res = raw_request(
        &h.client,
        "POST",
        "/v1-mini/node-join",
        Some("application/json"),
        br#"{"nodeName":"n1"}"#.to_vec(),
    )
    .await;
    assert_eq!(api_error(res).code, 403);
    Ok(())
}

#[tokio::test]
async fn metrics_api_is_discoverable_and_lists_nothing_without_nodes() -> Result<()> {
    let h = harness().await?;
    let resources: Value = serde_json::from_str(
        &raw_request(
            &h.client,
            "GET",
            "/apis/metrics.k8s.io/v1beta1",
            None,
            Vec::new(),
        )
        .await?,
    )?;
    let names: Vec<&str> = resources["resources"]
        .as_array()
        .context("resources")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["nodes", "pods"]);
    let list: Value = serde_json::from_str(
        &raw_request(
            &h.client,
            "GET",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            None,
            Vec::new(),
        )
        .await?,
    )?;
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"], json!([]));
    let res = raw_request(
        &h.client,
        "DELETE",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(api_error(res).code, 405);
    Ok(())
}

async fn create_raw(client: &Client, path: &str, obj: Value) -> Result<()> {
    raw_request(
        client,
        "POST",
        path,
        Some("application/json"),
        serde_json::to_vec(&obj)?,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn pod_log_of_unbound_pod_returns_400_no_host() -> Result<()> {
    let h = harness().await?;
    create_raw(
        &h.client,
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await?;
    let res = raw_request(
        &h.client,
        "GET",
        "/api/v1/namespaces/default/pods/pending/log",
        None,
        Vec::new(),
    )
    .await;
    let status = api_error(res);
    assert_eq!(status.code, 400);
    assert_eq!(status.message, "pod pending does not have a host assigned");
    Ok(())
}

#[tokio::test]
async fn pod_log_with_two_containers_and_no_choice_returns_400_listing_them() -> Result<()> {
    let h = harness().await?;
    create_raw(
        &h.client,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
               "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}),
    )
    .await?;
    create_raw(
        &h.client,
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two"},
               "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "busybox"},
                                                          {"name": "b", "image": "busybox"}]}}),
    )
    .await?;
    let res = raw_request(
        &h.client,
        "GET",
        "/api/v1/namespaces/default/pods/two/log",
        None,
        Vec::new(),
    )
    .await;
    let status = api_error(res);
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    // with a container named, the test server (no kubelet client certificate) cannot reach it
    let res = raw_request(
        &h.client,
        "GET",
        "/api/v1/namespaces/default/pods/two/log?container=a",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(api_error(res).code, 503);
    Ok(())
}

/// An image catalog with fixed content that records deletes and commits.
#[derive(Default)]
struct FakeCatalog {
    deleted: std::sync::Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl mini_apiserver::ImageCatalog for FakeCatalog {
    async fn repositories(
        &self,
        namespace: Option<&str>,
    ) -> std::result::Result<Vec<mini_apiserver::RepositoryEntry>, String> {
        let all = vec![
            mini_apiserver::RepositoryEntry {
                repository: "default/web/app".into(),
                namespace: Some("default".into()),
                tags: 2,
                size: 3 * 1024 * 1024,
                last_push: chrono::DateTime::from_timestamp(1_700_000_000, 0),
            },
            mini_apiserver::RepositoryEntry {
                repository: "docker.io/library/busybox".into(),
                namespace: None,
                tags: 1,
                size: 1024,
                last_push: None,
            },
        ];
        Ok(all
            .into_iter()
            .filter(|r| namespace.is_none() || r.namespace.as_deref() == namespace)
            .collect())
    }

    async fn tags(
        &self,
        namespace: Option<&str>,
    ) -> std::result::Result<Vec<mini_apiserver::TagEntry>, String> {
        let deleted = self.deleted.lock().unwrap().clone();
        Ok(["v1", "v2"]
            .iter()
            .map(|t| mini_apiserver::TagEntry {
                repository: "default/web/app".into(),
                namespace: Some("default".into()),
                tag: t.to_string(),
                digest: format!("sha256:{}", "ab".repeat(32)),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 4096,
                pushed: chrono::DateTime::from_timestamp(1_700_000_000, 0),
            })
            .filter(|t| namespace.is_none() || t.namespace.as_deref() == namespace)
            .filter(|t| !deleted.contains(&(t.repository.clone(), t.tag.clone())))
            .collect())
    }

    async fn delete_tag(&self, repository: &str, tag: &str) -> std::result::Result<(), String> {
        self.deleted
            .lock()
            .unwrap()
            .push((repository.to_string(), tag.to_string()));
        Ok(())
    }

    async fn commit(
        &self,
        _commit: mini_apiserver::ContainerCommit,
        _layer: mini_apiserver::Body,
    ) -> std::result::Result<String, String> {
        Err("the fake catalog does not commit".into())
    }
}

fn image_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("registry.mini.dev", "v1", kind),
        plural,
    )
}

#[tokio::test]
async fn registry_repositories_list_shows_catalog_with_size_and_push_time() -> Result<()> {
    let h = harness().await?;
    let catalog = Arc::new(FakeCatalog::default());
    h.server.as_ref().unwrap().set_image_catalog(catalog);
    let repos: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &image_resource("Repository", "repositories"),
    );
    let list = repos.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    let app = &list.items[0];
    assert_eq!(app.metadata.name.as_deref(), Some("web.app"));
    assert_eq!(app.data["spec"]["repository"], "default/web/app");
    assert_eq!(app.data["status"]["size"], 3 * 1024 * 1024);
    assert_eq!(app.data["status"]["lastPush"], "2023-11-14T22:13:20Z");
    let all: Api<DynamicObject> = Api::all_with(
        h.client.clone(),
        &image_resource("Repository", "repositories"),
    );
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 2);
    assert_eq!(
        api_error(repos.get("missing").await).code,
        404,
        "an unknown repository is 404"
    );
    Ok(())
}

#[tokio::test]
async fn registry_imagetags_delete_removes_the_tag_through_the_catalog() -> Result<()> {
    let h = harness().await?;
    let catalog = Arc::new(FakeCatalog::default());
    h.server
        .as_ref()
        .unwrap()
        .set_image_catalog(catalog.clone());
    let tags: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &image_resource("ImageTag", "imagetags"),
    );
    let v1 = tags.get("web.app:v1").await?;
    assert_eq!(v1.data["status"]["size"], 4096);
    tags.delete("web.app:v1", &DeleteParams::default()).await?;
    assert_eq!(
        catalog.deleted.lock().unwrap().clone(),
        vec![("default/web/app".to_string(), "v1".to_string())]
    );
    assert_eq!(tags.list(&ListParams::default()).await?.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn registry_imagetags_create_is_method_not_allowed() -> Result<()> {
    let h = harness().await?;
    h.server
        .as_ref()
        .unwrap()
        .set_image_catalog(Arc::new(FakeCatalog::default()));
    let tags: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &image_resource("ImageTag", "imagetags"),
    );
    let mut obj = DynamicObject::new("x:y", &image_resource("ImageTag", "imagetags"));
    obj.data = json!({});
    let err = api_error(tags.create(&PostParams::default(), &obj).await);
    assert_eq!(err.code, 405);
    Ok(())
}

#[tokio::test]
async fn registry_resources_without_catalog_list_empty_and_get_404() -> Result<()> {
    let h = harness().await?;
    let repos: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &image_resource("Repository", "repositories"),
    );
    assert!(repos.list(&ListParams::default()).await?.items.is_empty());
    let err = api_error(repos.get("app").await);
    assert_eq!(err.code, 404);
    assert!(err.message.contains("not running"), "{}", err.message);
    Ok(())
}

#[tokio::test]
async fn registry_repositories_list_needs_rbac_view() -> Result<()> {
    let h = harness().await?;
    let server = h.server.as_ref().unwrap();
    server.set_image_catalog(Arc::new(FakeCatalog::default()));
    let nobody = mini_rbac::UserInfo {
        name: "nobody".into(),
        groups: vec!["system:authenticated".into()],
    };
    let client = Client::new(server.local_service(nobody.clone()), NS);
    let repos: Api<DynamicObject> =
        Api::namespaced_with(client, NS, &image_resource("Repository", "repositories"));
    assert_eq!(
        api_error(repos.list(&ListParams::default()).await).code,
        403
    );
    // the `view` role grants pull (get) and `edit` push (create/update) on repositories
    assert!(
        !server
            .may(
                &nobody,
                "get",
                "registry.mini.dev",
                "repositories",
                Some(NS),
                None
            )
            .await
    );
    let bindings: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            "rolebindings",
        ),
    );
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "nobody-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}],
    }))?;
    bindings.create(&PostParams::default(), &binding).await?;
    let mut allowed = false;
    for _ in 0..50 {
        if server
            .may(
                &nobody,
                "get",
                "registry.mini.dev",
                "repositories",
                Some(NS),
                None,
            )
            .await
        {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "view must grant pull");
    assert!(
        !server
            .may(
                &nobody,
                "create",
                "registry.mini.dev",
                "repositories",
                Some(NS),
                None
            )
            .await,
        "view must not grant push"
    );
    Ok(())
}

/// A streaming route that echoes the request body's length and the caller.
struct EchoRoute;

impl mini_apiserver::StreamingRoute for EchoRoute {
    fn handles(&self, path: &str) -> bool {
        path.starts_with("/v2/")
    }

    fn handle(
        &self,
        req: http::Request<mini_apiserver::Body>,
        peer: Option<mini_rbac::UserInfo>,
    ) -> futures::future::BoxFuture<'static, http::Response<mini_apiserver::Body>> {
        use http_body_util::BodyExt;
        Box::pin(async move {
            let len = req.into_body().collect().await.unwrap().to_bytes().len();
            let text = format!(
                "{len} {}",
                peer.map(|p| p.name).unwrap_or_else(|| "anonymous".into())
            );
            http::Response::new(
                http_body_util::Full::new(bytes::Bytes::from(text))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
        })
    }
}

#[tokio::test]
async fn streaming_route_gets_requests_under_its_prefix_with_the_caller() -> Result<()> {
    let h = harness().await?;
    h.server
        .as_ref()
        .unwrap()
        .add_streaming_route(Arc::new(EchoRoute));
    let out = raw_request(&h.client, "PUT", "/v2/x/blobs", None, vec![7u8; 1000]).await?;
    assert_eq!(out, "1000 system:admin");
    // other paths still reach the Kubernetes API
    let ns: Api<Namespace> = Api::all(h.client.clone());
    ns.get("default").await?;
    Ok(())
}

#[tokio::test]
async fn authenticate_credentials_rejects_bad_tokens_and_accepts_none() -> Result<()> {
    let h = harness().await?;
    let server = h.server.as_ref().unwrap();
    let none = server
        .authenticate_credentials(&http::HeaderMap::new(), None)
        .await;
    assert_eq!(none, Ok(None));
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", "Bearer not-a-token".parse()?);
    assert!(server
        .authenticate_credentials(&headers, None)
        .await
        .is_err());
    Ok(())
}

/// Sends a raw request and returns the status code, `Warning` headers and the body bytes,
/// whatever the status.
async fn raw_response(
    client: &Client,
    method: &str,
    path_and_query: &str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
) -> Result<(u16, Vec<String>, Vec<u8>)> {
    use http_body_util::BodyExt;
    let mut req = http::Request::builder().method(method).uri(path_and_query);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = client
        .send(req.body(kube::client::Body::from(body))?)
        .await?;
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((code, warnings, bytes))
}

#[tokio::test]
async fn status_not_found_body_matches_upstream_bytes() -> Result<()> {
    let h = harness().await?;
    let (code, _, body) = raw_response(
        &h.client,
        "GET",
        "/api/v1/namespaces/default/configmaps/missing",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 404);
    assert_eq!(
        String::from_utf8(body)?,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"missing\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"missing\",\"kind\":\"configmaps\"},\"code\":404}\n"
    );
    Ok(())
}

#[tokio::test]
async fn service_delete_returns_the_deleted_service() -> Result<()> {
    let h = harness().await?;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                     "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}});
    let (code, _, _) = raw_response(
        &h.client,
        "POST",
        "/api/v1/namespaces/default/services",
        Some("application/json"),
        serde_json::to_vec(&svc)?,
    )
    .await?;
    assert_eq!(code, 201);
    let (code, _, body) = raw_response(
        &h.client,
        "DELETE",
        "/api/v1/namespaces/default/services/web",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 200);
    let deleted: Value = serde_json::from_slice(&body)?;
    assert_eq!(deleted["kind"], "Service", "{deleted}");
    assert_eq!(deleted["metadata"]["name"], "web");
    Ok(())
}

#[tokio::test]
async fn configmap_delete_returns_success_status_without_group() -> Result<()> {
    let h = harness().await?;
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &config_map("s", json!({}), json!({})),
    )
    .await?;
    let (code, _, body) = raw_response(
        &h.client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/s",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_slice(&body)?;
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Success");
    assert!(status["details"].get("group").is_none(), "{status}");
    Ok(())
}

#[tokio::test]
async fn create_with_hundreds_of_unknown_fields_caps_warning_headers() -> Result<()> {
    let h = harness().await?;
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}});
    for i in 0..300 {
        cm[format!("bogus{i}")] = json!(i);
    }
    let (code, warnings, _) = raw_response(
        &h.client,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Warn",
        Some("application/json"),
        serde_json::to_vec(&cm)?,
    )
    .await?;
    assert_eq!(code, 201);
    assert!(!warnings.is_empty());
    assert!(warnings.len() <= 50, "{} warning headers", warnings.len());
    Ok(())
}

#[tokio::test]
async fn apiservices_list_local_builtin_group_versions_as_available() -> Result<()> {
    let h = harness().await?;
    let (code, _, body) = raw_response(
        &h.client,
        "GET",
        "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let svc: Value = serde_json::from_slice(&body)?;
    assert_eq!(svc["spec"]["group"], "apps");
    assert_eq!(svc["status"]["conditions"][0]["status"], "True");
    assert_eq!(svc["status"]["conditions"][0]["reason"], "Local");
    Ok(())
}

#[tokio::test]
async fn apiservice_with_service_is_stored_and_reported_unavailable() -> Result<()> {
    let h = harness().await?;
    let obj = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                     "metadata": {"name": "v1beta1.custom.example.com"},
                     "spec": {"group": "custom.example.com", "version": "v1beta1",
                              "service": {"namespace": "default", "name": "custom-api"},
                              "groupPriorityMinimum": 100, "versionPriority": 10,
                              "insecureSkipTLSVerify": true}});
    let (code, _, body) = raw_response(
        &h.client,
        "POST",
        "/apis/apiregistration.k8s.io/v1/apiservices",
        Some("application/json"),
        serde_json::to_vec(&obj)?,
    )
    .await?;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body)?;
    assert_eq!(created["status"]["conditions"][0]["status"], "False");
    assert_eq!(
        created["status"]["conditions"][0]["reason"],
        "AggregationNotSupported"
    );
    Ok(())
}

#[tokio::test]
async fn openapi_v2_is_served_as_json_and_protobuf() -> Result<()> {
    let h = harness().await?;
    let (code, _, body) = raw_response(&h.client, "GET", "/openapi/v2", None, Vec::new()).await?;
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_slice(&body)?;
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let req = http::Request::builder()
        .uri("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(kube::client::Body::empty())?;
    let resp = h.client.send(req).await?;
    assert_eq!(
        resp.headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    use http_body_util::BodyExt;
    let pb = resp.into_body().collect().await?.to_bytes();
    // field 1 (swagger), length-delimited: "2.0"
    assert_eq!(&pb[..5], b"\x0a\x032.0");
    Ok(())
}
