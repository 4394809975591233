//! Tests of the `VolumeManager` against an in-process API server and a `FakeHost`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use mini_sys::{FakeCall, FakeHost};
use serde_json::json;

use super::*;

struct Env {
    _api: mini_testenv::TestEnv,
    client: kube::Client,
    host: Arc<FakeHost>,
    dir: tempfile::TempDir,
    manager: VolumeManager,
}

async fn env() -> Env {
    let api = mini_testenv::TestEnv::start().await;
    let client = api.admin_client();
    let host = Arc::new(FakeHost::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let pods = std::fs::canonicalize(dir.path())
        .expect("canonical temp dir")
        .join("pods");
    let manager = VolumeManager::new(client.clone(), host.clone(), pods);
    Env {
        _api: api,
        client,
        host,
        dir,
        manager,
    }
}

async fn create<K>(client: &kube::Client, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(obj).expect("object json");
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

/// Creates the pod in the API (tokens are bound to it) and returns it with its uid.
async fn pod(client: &kube::Client, name: &str, volumes: serde_json::Value) -> Pod {
    create(
        client,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "nodeName": "node-a",
                // only the volumes under test (no admission-added token volume)
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "busybox",
                    "resources": {"limits": {"memory": "32Mi"}}}],
                "volumes": volumes,
            }
        }),
    )
    .await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn setup_config_map_with_items_writes_modes_links_and_refreshes_on_update() {
    let e = env().await;
    let _: ConfigMap = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
               "data": {"a.conf": "one", "b.conf": "two"}}),
    )
    .await;
    let p = pod(
        &e.client,
        "cm",
        json!([{"name": "config", "configMap": {"name": "cfg", "defaultMode": 0o640,
            "items": [{"key": "a.conf", "path": "conf/a"}, {"key": "b.conf", "path": "b", "mode": 0o600}]}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    let v = &vols.volumes["config"];
    assert_eq!(v.kind, VolumeKind::ConfigMap);
    assert!(v.read_only);
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let dir = e
        .dir
        .path()
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/config");
    assert_eq!(v.host_path, dir);
    assert_eq!(read(&dir.join("conf/a")), "one");
    assert_eq!(mode(&dir.join("conf/a")), 0o640);
    assert_eq!(read(&dir.join("b")), "two");
    assert_eq!(mode(&dir.join("b")), 0o600);
    assert_eq!(
        std::fs::read_link(dir.join("conf")).expect("user link"),
        Path::new("..data/conf")
    );
    let first_data = std::fs::read_link(dir.join("..data")).expect("..data");

    let api: Api<ConfigMap> = Api::namespaced(e.client.clone(), "default");
    let mut cm = api.get("cfg").await.expect("get");
    cm.data = Some(BTreeMap::from([
        ("a.conf".to_string(), "uno".to_string()),
        ("b.conf".to_string(), "two".to_string()),
    ]));
    api.replace("cfg", &PostParams::default(), &cm)
        .await
        .expect("update");
    e.manager.setup(&p).await.expect("refresh");
    assert_eq!(read(&dir.join("conf/a")), "uno");
    assert_ne!(
        std::fs::read_link(dir.join("..data")).expect("..data"),
        first_data
    );
}

#[tokio::test]
async fn setup_missing_config_map_fails_naming_it_unless_optional() {
    let e = env().await;
    let p = pod(
        &e.client,
        "missing",
        json!([{"name": "config", "configMap": {"name": "nope"}}]),
    )
    .await;
    let err = e.manager.setup(&p).await.expect_err("missing configmap");
    let msg = err.to_string();
    assert!(
        msg.contains("\"config\"") && msg.contains("configmap \"nope\" not found"),
        "{msg}"
    );

    let p = pod(
        &e.client,
        "optional",
        json!([{"name": "config", "configMap": {"name": "nope", "optional": true}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("optional configmap");
    assert!(vols.volumes["config"].host_path.join("..data").exists());
}

#[tokio::test]
async fn setup_config_map_item_with_unknown_key_fails() {
    let e = env().await;
    let _: ConfigMap = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}),
    )
    .await;
    let p = pod(
        &e.client,
        "badkey",
        json!([{"name": "config", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "zz"}]}}]),
    )
    .await;
    let msg = e.manager.setup(&p).await.expect_err("bad key").to_string();
    assert!(msg.contains("non-existent configmap key: zz"), "{msg}");
}

#[tokio::test]
async fn setup_secret_writes_decoded_values_with_default_mode() {
    let e = env().await;
    let _: Secret = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "data": {"password": "czNjcjN0"}}),
    )
    .await;
    let p = pod(
        &e.client,
        "sec",
        json!([{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    let dir = &vols.volumes["creds"].host_path;
    assert!(dir.ends_with("volumes/kubernetes.io~secret/creds"));
    assert_eq!(read(&dir.join("password")), "s3cr3t");
    assert_eq!(mode(&dir.join("password")), 0o400);
    // secrets live on tmpfs, never on disk, and go away with the pod
    assert_eq!(
        e.host.calls(),
        vec![FakeCall::MountTmpfs(dir.clone(), None)]
    );
    e.manager.setup(&p).await.expect("again");
    assert_eq!(e.host.calls().len(), 1, "mounted once");
    let uid = p.metadata.uid.clone().unwrap_or_default();
    e.manager.teardown(&uid).await.expect("teardown");
    assert_eq!(e.host.calls()[1], FakeCall::Unmount(dir.clone()));
}

#[tokio::test]
async fn setup_projected_service_account_volume_writes_accepted_token_ca_and_namespace() {
    let e = env().await;
    let _: ServiceAccount = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"}}),
    )
    .await;
    let _: ConfigMap = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
               "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}}),
    )
    .await;
    let mut p: Pod = create(
        &e.client,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sa", "namespace": "default"},
            "spec": {
                "serviceAccountName": "builder",
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [{"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}],
            }
        }),
    )
    .await;
    // admission may default serviceAccountName; make sure the manager uses ours
    if let Some(spec) = p.spec.as_mut() {
        spec.service_account_name = Some("builder".into());
    }
    let vols = e.manager.setup(&p).await.expect("setup");
    let dir = vols.volumes["kube-api-access-x1"].host_path.clone();
    assert!(dir.ends_with("volumes/kubernetes.io~projected/kube-api-access-x1"));
    assert_eq!(read(&dir.join("namespace")), "default");
    assert_eq!(read(&dir.join("ca.crt")), "-----BEGIN CERTIFICATE-----\n");
    assert_eq!(mode(&dir.join("token")), 0o644);
    let token = read(&dir.join("token"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let refresh_by = vols.refresh_tokens_by.expect("token refresh time");
    let until = refresh_by
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        until.as_secs() > 2800 && until.as_secs() <= 2886,
        "{until:?}"
    );

    let reviews: Api<TokenReview> = Api::all(e.client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("token review");
    let status = answer.status.expect("review status");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some("system:serviceaccount:default:builder")
    );

    // cached until 80% of the lifetime, then rotated
    e.manager.setup(&p).await.expect("again");
    assert_eq!(read(&dir.join("token")), token);
    for cached in e.manager.tokens.lock().expect("tokens").values_mut() {
        cached.refresh_at = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    }
    e.manager.setup(&p).await.expect("rotate");
    assert_ne!(read(&dir.join("token")), token);
}

#[tokio::test]
async fn setup_downward_api_volume_writes_labels_and_resources() {
    let e = env().await;
    e.manager.set_node_allocatable(BTreeMap::from([(
        "cpu".to_string(),
        Quantity("4".to_string()),
    )]));
    let p = pod(
        &e.client,
        "dw",
        json!([{"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}
        ]}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    let dir = &vols.volumes["info"].host_path;
    assert!(dir.ends_with("volumes/kubernetes.io~downward-api/info"));
    assert_eq!(read(&dir.join("labels")), "app=\"web\"");
    assert_eq!(read(&dir.join("name")), "dw");
    assert_eq!(read(&dir.join("cpu")), "4000");
    assert_eq!(read(&dir.join("mem")), "32");
}

#[tokio::test]
async fn setup_memory_empty_dir_mounts_tmpfs_and_teardown_unmounts_and_removes() {
    let e = env().await;
    let p = pod(
        &e.client,
        "mem",
        json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
               {"name": "scratch", "emptyDir": {}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    let cache = vols.volumes["cache"].host_path.clone();
    let scratch = vols.volumes["scratch"].host_path.clone();
    assert!(cache.ends_with("volumes/kubernetes.io~empty-dir/cache"));
    assert!(scratch.is_dir());
    assert_eq!(mode(&scratch), 0o777);
    assert_eq!(
        e.host.calls(),
        vec![FakeCall::MountTmpfs(cache.clone(), Some(64 << 20))]
    );
    // idempotent: no second mount
    e.manager.setup(&p).await.expect("again");
    assert_eq!(e.host.calls().len(), 1);

    let uid = p.metadata.uid.clone().unwrap_or_default();
    e.manager.teardown(&uid).await.expect("teardown");
    assert_eq!(e.host.calls()[1], FakeCall::Unmount(cache));
    assert!(!e.manager.pod_dir(&uid).exists());
    e.manager
        .teardown(&uid)
        .await
        .expect("teardown is idempotent");
    assert!(e.manager.teardown("../etc").await.is_err());
}

#[tokio::test]
async fn setup_host_path_types_create_or_check() {
    let e = env().await;
    let base = e.dir.path().join("host");
    std::fs::create_dir_all(&base).expect("mkdir");
    let made = base.join("made");
    let file = base.join("file.txt");
    let p = pod(
        &e.client,
        "hp",
        json!([
            {"name": "made", "hostPath": {"path": made, "type": "DirectoryOrCreate"}},
            {"name": "file", "hostPath": {"path": file, "type": "FileOrCreate"}},
            {"name": "any", "hostPath": {"path": base.join("whatever")}}
        ]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    assert!(made.is_dir());
    assert!(file.is_file());
    assert_eq!(vols.volumes["made"].host_path, made);
    assert!(!vols.volumes["made"].read_only);

    let p = pod(
        &e.client,
        "hp-bad",
        json!([{"name": "d", "hostPath": {"path": file, "type": "Directory"}}]),
    )
    .await;
    let msg = e
        .manager
        .setup(&p)
        .await
        .expect_err("file is no dir")
        .to_string();
    assert!(msg.contains("is not a directory"), "{msg}");
    let p = pod(
        &e.client,
        "hp-missing",
        json!([{"name": "f", "hostPath": {"path": base.join("absent"), "type": "File"}}]),
    )
    .await;
    let msg = e.manager.setup(&p).await.expect_err("absent").to_string();
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn setup_pvc_uses_bound_pv_path_and_refuses_unbound_claims() {
    let e = env().await;
    let data = e.dir.path().join("pv-data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let pvs: Api<PersistentVolume> = Api::all(e.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": data},
                 "claimRef": {"namespace": "default", "name": "bound"}}
    }))
    .expect("pv json");
    pvs.create(&PostParams::default(), &pv).await.expect("pv");
    for (name, volume_name) in [("bound", Some("pv1")), ("pending", None)] {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(v) = volume_name {
            spec["volumeName"] = json!(v);
        }
        let _: PersistentVolumeClaim = create(
            &e.client,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
    let p = pod(
        &e.client,
        "pvc",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "bound", "readOnly": true}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    assert_eq!(vols.volumes["data"].host_path, data);
    assert!(vols.volumes["data"].read_only);

    let p = pod(
        &e.client,
        "pvc-pending",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "pending"}}]),
    )
    .await;
    let msg = e.manager.setup(&p).await.expect_err("unbound").to_string();
    assert!(
        msg.contains("persistentvolumeclaim \"pending\" is not bound"),
        "{msg}"
    );
}

#[tokio::test]
async fn setup_pvc_of_local_path_pv_creates_its_directory_world_writable() {
    use std::os::unix::fs::PermissionsExt;
    let e = env().await;
    let data = e.dir.path().join("storage").join("pvc-1_default_lp");
    let pvs: Api<PersistentVolume> = Api::all(e.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-1", "annotations": {"pv.kubernetes.io/provisioned-by": "mini.dev/local-path"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": data, "type": "DirectoryOrCreate"},
                 "claimRef": {"namespace": "default", "name": "lp"}}
    }))
    .expect("pv json");
    pvs.create(&PostParams::default(), &pv).await.expect("pv");
    let _: PersistentVolumeClaim = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lp"},
               "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-1",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let p = pod(
        &e.client,
        "lp",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "lp"}}]),
    )
    .await;
    e.manager.setup(&p).await.expect("setup");
    let mode = std::fs::metadata(&data)
        .expect("created")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o777);
}

#[tokio::test]
async fn mounts_for_applies_read_only_sub_path_and_propagation() {
    let e = env().await;
    let _: ConfigMap = create(
        &e.client,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}}),
    )
    .await;
    let p = pod(
        &e.client,
        "mounts",
        json!([{"name": "config", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}]),
    )
    .await;
    let vols = e.manager.setup(&p).await.expect("setup");
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let container = Container {
        name: "app".into(),
        env: Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "POD".into(),
            value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        volume_mounts: Some(vec![
            mount("config", "/etc/cfg"),
            VolumeMount {
                sub_path: Some("logs/app".into()),
                mount_propagation: Some("HostToContainer".into()),
                ..mount("scratch", "/var/log/app")
            },
            VolumeMount {
                sub_path_expr: Some("per-pod/$(POD)".into()),
                read_only: Some(true),
                ..mount("scratch", "/data")
            },
        ]),
        ..Default::default()
    };
    let mounts = e.manager.mounts_for(&p, &container, &vols).expect("mounts");
    assert_eq!(mounts.len(), 3);
    assert_eq!(mounts[0].container_path, "/etc/cfg");
    assert!(mounts[0].readonly, "configMap volumes are read-only");
    assert_eq!(
        mounts[0].host_path,
        vols.volumes["config"].host_path.to_string_lossy()
    );
    let scratch = std::fs::canonicalize(&vols.volumes["scratch"].host_path).expect("canon");
    assert_eq!(
        mounts[1].host_path,
        scratch.join("logs/app").to_string_lossy()
    );
    assert!(scratch.join("logs/app").is_dir(), "subPath created");
    assert!(!mounts[1].readonly);
    assert_eq!(
        mounts[1].propagation,
        mini_proto::cri::v1::MountPropagation::PropagationHostToContainer as i32
    );
    assert_eq!(
        mounts[2].host_path,
        scratch.join("per-pod/mounts").to_string_lossy()
    );
    assert!(mounts[2].readonly);

    // a symlink planted in the volume may not lead outside it
    std::os::unix::fs::symlink("/etc", scratch.join("escape")).expect("symlink");
    let bad = Container {
        volume_mounts: Some(vec![VolumeMount {
            sub_path: Some("escape".into()),
            ..mount("scratch", "/x")
        }]),
        ..container.clone()
    };
    let msg = e
        .manager
        .mounts_for(&p, &bad, &vols)
        .expect_err("escape")
        .to_string();
    assert!(msg.contains("outside the volume"), "{msg}");
    let unknown = Container {
        volume_mounts: Some(vec![mount("nope", "/x")]),
        ..container
    };
    assert!(matches!(
        e.manager.mounts_for(&p, &unknown, &vols),
        Err(VolumeError::UnknownVolume { .. })
    ));
}

#[tokio::test]
#[ignore = "needs root: mounts a real tmpfs (run by hand with --ignored as root)"]
async fn setup_memory_empty_dir_on_linux_host_mounts_real_tmpfs_and_teardown_removes_it() {
    let api = mini_testenv::TestEnv::start().await;
    let client = api.admin_client();
    let dir = tempfile::tempdir().expect("temp dir");
    let host = Arc::new(mini_sys::LinuxHost);
    let manager = VolumeManager::new(client.clone(), host.clone(), dir.path().join("pods"));
    let p = pod(
        &client,
        "real",
        json!([{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]),
    )
    .await;
    let vols = manager.setup(&p).await.expect("setup");
    let cache = vols.volumes["cache"].host_path.clone();
    assert!(mini_sys::Host::is_mount_point(host.as_ref(), &cache).expect("mountinfo"));
    let uid = p.metadata.uid.clone().unwrap_or_default();
    manager.teardown(&uid).await.expect("teardown");
    assert!(!mini_sys::Host::is_mount_point(host.as_ref(), &cache).expect("mountinfo"));
    assert!(!manager.pod_dir(&uid).exists());
}
