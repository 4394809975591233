//! The deployer against an in-process API server: files appear, change, break and disappear,
//! one `sync_once` pass at a time (no timing involved).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use mini_manifests::{Deployer, HostFiles, ManifestsConfig};
use mini_testenv::TestEnv;

fn config(dir: &Path, disabled: &[&str]) -> ManifestsConfig {
    ManifestsConfig {
        dir: dir.to_path_buf(),
        disabled: disabled.iter().map(|s| s.to_string()).collect(),
        poll_interval: Duration::from_secs(2),
    }
}

async fn deployer(client: &Client, dir: &Path, disabled: &[&str]) -> Deployer {
    let d = Deployer::new(client.clone(), Arc::new(HostFiles), &config(dir, disabled));
    d.write_bundled().expect("writing bundled manifests");
    d.ensure_crd().await.expect("creating the Addon CRD");
    d
}

fn addons(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("mini.dev", "v1", "Addon"),
        "addons",
    );
    Api::namespaced_with(client.clone(), "kube-system", &ar)
}

async fn warnings(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.message)
        .collect()
}

const APP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  colour: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: busybox}]
";

#[tokio::test]
async fn manifest_file_appears_changes_breaks_and_disappears() {
    let env = TestEnv::start().await;
    let client = env.admin_client();
    let dir = tempfile::tempdir().unwrap();
    let mut d = deployer(&client, dir.path(), &[]).await;

    // the bundled manifests are written and applied
    let report = d.sync_once().await.unwrap();
    assert_eq!(report.applied, vec!["ingress.yaml", "local-storage.yaml"]);
    let classes: Api<IngressClass> = Api::all(client.clone());
    assert!(classes.get_opt("mini").await.unwrap().is_some());
    let storage: Api<StorageClass> = Api::all(client.clone());
    assert!(storage.get_opt("local-path").await.unwrap().is_some());
    // nothing changed: nothing applied
    assert!(d.sync_once().await.unwrap().applied.is_empty());

    // a file appears: its objects land in default
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    assert_eq!(d.sync_once().await.unwrap().applied, vec!["app.yaml"]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        cms.get("app-config").await.unwrap().data.unwrap()["colour"],
        "blue"
    );
    assert!(deploys.get_opt("app").await.unwrap().is_some());
    let addon = addons(&client).get("app").await.unwrap();
    assert_eq!(addon.data["status"]["objectCount"], 2);
    assert_eq!(addon.data["spec"]["source"], app.display().to_string());

    // it changes: updated
    std::fs::write(&app, APP.replace("blue", "green")).unwrap();
    d.sync_once().await.unwrap();
    assert_eq!(
        cms.get("app-config").await.unwrap().data.unwrap()["colour"],
        "green"
    );

    // an object leaves the file: pruned
    let only_cm = APP.split("---").next().unwrap().replace("blue", "green");
    std::fs::write(&app, &only_cm).unwrap();
    d.sync_once().await.unwrap();
    assert!(deploys.get_opt("app").await.unwrap().is_none());
    assert!(cms.get_opt("app-config").await.unwrap().is_some());
    assert_eq!(
        addons(&client).get("app").await.unwrap().data["status"]["objectCount"],
        1
    );

    // broken documents: events name file and line, the rest still applies, nothing pruned
    let broken = format!(
        "{only_cm}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: [\n---\napiVersion: example.com/v1\nkind: Nothing\nmetadata: {{name: n}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: app-secret}}\nstringData: {{a: b}}\n"
    );
    std::fs::write(&app, &broken).unwrap();
    let report = d.sync_once().await.unwrap();
    assert_eq!(report.applied, vec!["app.yaml"]);
    let shown = app.display().to_string();
    let warns = warnings(&client).await;
    assert!(
        warns
            .iter()
            .any(|m| m.starts_with(&format!("{shown}:")) && m.contains("invalid YAML")),
        "{warns:?}"
    );
    assert!(
        warns
            .iter()
            .any(|m| m.starts_with(&format!("{shown}:")) && m.contains("unknown kind")),
        "{warns:?}"
    );
    assert!(cms.get_opt("app-config").await.unwrap().is_some());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    assert!(secrets.get_opt("app-secret").await.unwrap().is_some());
    let addon = addons(&client).get("app").await.unwrap();
    assert!(addon.data["status"]["lastError"]
        .as_str()
        .unwrap()
        .contains("invalid YAML"));

    // the file goes: its objects and Addon go
    std::fs::remove_file(&app).unwrap();
    let report = d.sync_once().await.unwrap();
    assert_eq!(report.removed, vec!["app"]);
    assert!(cms.get_opt("app-config").await.unwrap().is_none());
    assert!(secrets.get_opt("app-secret").await.unwrap().is_none());
    assert!(addons(&client).get_opt("app").await.unwrap().is_none());
}

#[tokio::test]
async fn crd_and_its_objects_in_one_file_apply_in_order() {
    let env = TestEnv::start().await;
    let client = env.admin_client();
    let dir = tempfile::tempdir().unwrap();
    let mut d = deployer(&client, dir.path(), &["ingress", "local-storage"]).await;
    // the object comes before its CRD and its namespace in the file
    let text = "apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: widgets}
spec: {size: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: v1
kind: Namespace
metadata: {name: widgets}
";
    std::fs::write(dir.path().join("widgets.yaml"), text).unwrap();
    d.sync_once().await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "widgets", &ar);
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    let addon = addons(&client).get("widgets").await.unwrap();
    assert_eq!(addon.data["status"]["lastError"], "");
    assert_eq!(addon.data["status"]["objectCount"], 3);
}

#[tokio::test]
async fn disabled_bundled_manifest_is_removed_with_its_objects() {
    let env = TestEnv::start().await;
    let client = env.admin_client();
    let dir = tempfile::tempdir().unwrap();
    let mut d = deployer(&client, dir.path(), &[]).await;
    d.sync_once().await.unwrap();
    let storage: Api<StorageClass> = Api::all(client.clone());
    assert!(storage.get_opt("local-path").await.unwrap().is_some());

    // the next start disables it
    let mut d = deployer(&client, dir.path(), &["local-storage"]).await;
    assert!(!dir.path().join("local-storage.yaml").exists());
    let report = d.sync_once().await.unwrap();
    assert_eq!(report.removed, vec!["local-storage"]);
    assert!(storage.get_opt("local-path").await.unwrap().is_none());
    let classes: Api<IngressClass> = Api::all(client.clone());
    assert!(classes.get_opt("mini").await.unwrap().is_some());

    // a disabled user file stays on disk but is not applied
    std::fs::write(
        dir.path().join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
    )
    .unwrap();
    let mut d = deployer(&client, dir.path(), &["extra"]).await;
    d.sync_once().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(cms.get_opt("extra").await.unwrap().is_none());
}

#[tokio::test]
async fn object_moved_to_another_file_is_not_deleted() {
    let env = TestEnv::start().await;
    let client = env.admin_client();
    let dir = tempfile::tempdir().unwrap();
    let mut d = deployer(&client, dir.path(), &["ingress", "local-storage"]).await;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: moving}\ndata: {v: \"1\"}\n";
    std::fs::write(dir.path().join("b-old.yaml"), cm).unwrap();
    d.sync_once().await.unwrap();
    // one pass sees the object leave b-old.yaml and appear in a-new.yaml (applied first)
    std::fs::write(dir.path().join("b-old.yaml"), "").unwrap();
    std::fs::write(dir.path().join("a-new.yaml"), cm).unwrap();
    let report = d.sync_once().await.unwrap();
    assert_eq!(report.applied, vec!["a-new.yaml", "b-old.yaml"]);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(cms.get_opt("moving").await.unwrap().is_some());
    assert_eq!(
        addons(&client).get("b-old").await.unwrap().data["status"]["objectCount"],
        0
    );
    // the new file's removal does delete it
    std::fs::remove_file(dir.path().join("a-new.yaml")).unwrap();
    d.sync_once().await.unwrap();
    assert!(cms.get_opt("moving").await.unwrap().is_none());
}
