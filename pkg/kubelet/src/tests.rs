//! Kubelet tests against the fake CRI runtime and an in-process API server: sandbox and
//! container configs, status, restarts with back-off, probes, image pull errors, deletion and
//! adoption after a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use mini_cri::fake::FakeRuntime;
use mini_cri::proto;
use mini_sys::FakeHost;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Kubelet, KubeletConfig, KubeletTiming, VolumeBackend};

struct FakeVolumes;

#[async_trait]
impl VolumeBackend for FakeVolumes {
    async fn setup(&self, pod: &Pod) -> Result<HashMap<String, Vec<proto::Mount>>, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        Ok(spec
            .containers
            .iter()
            .map(|c| {
                let mounts = c
                    .volume_mounts
                    .iter()
                    .flatten()
                    .map(|m| proto::Mount {
                        container_path: m.mount_path.clone(),
                        host_path: format!("/fake/{}", m.name),
                        ..Default::default()
                    })
                    .collect();
                (c.name.clone(), mounts)
            })
            .collect())
    }
    async fn teardown(&self, _pod_uid: &str) -> Result<(), String> {
        Ok(())
    }
}

struct Harness {
    _env: mini_testenv::TestEnv,
    _dir: tempfile::TempDir,
    client: kube::Client,
    runtime: Arc<FakeRuntime>,
    config: KubeletConfig,
    shutdown: CancellationToken,
    kubelet: Arc<Kubelet>,
}

fn timing() -> KubeletTiming {
    KubeletTiming {
        relist_interval: Duration::from_millis(20),
        resync_interval: Duration::from_millis(100),
        crash_backoff_initial: Duration::from_millis(300),
        crash_backoff_max: Duration::from_secs(2),
        crash_backoff_reset: Duration::from_secs(600),
        image_backoff_initial: Duration::from_millis(500),
        image_backoff_max: Duration::from_secs(2),
        image_pull_timeout: Duration::from_secs(2),
        volume_refresh: Duration::from_secs(60),
        housekeeping_interval: Duration::from_millis(200),
        orphan_grace: Duration::from_secs(0),
        probe_second: Duration::from_millis(50),
    }
}

impl Harness {
    async fn start() -> Harness {
        let env = mini_testenv::TestEnv::start().await;
        let client = env.admin_client();
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch example.org\n").expect("resolv");
        let config = KubeletConfig {
            node_name: "n1".into(),
            node_ip: "192.0.2.10".parse().expect("ip"),
            pods_dir: dir.path().join("pods"),
            logs_dir: dir.path().join("logs"),
            cluster_dns: vec!["10.43.0.10".parse().expect("ip")],
            cluster_domain: "cluster.local".into(),
            resolv_conf: resolv,
            pinned_ip_dir: Some(dir.path().join("pinned")),
        };
        let runtime = Arc::new(FakeRuntime::new());
        runtime.add_image("busybox:1");
        let shutdown = CancellationToken::new();
        let kubelet = start_kubelet(&client, &runtime, &config, shutdown.clone());
        Harness {
            _env: env,
            _dir: dir,
            client,
            runtime,
            config,
            shutdown,
            kubelet,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create(&self, pod: serde_json::Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).expect("pod literal");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("creating pod")
    }

    /// Watches the pod until `check` holds for some version of it (10 s at most); a watch
    /// sees every status the kubelet wrote, also short-lived ones.
    async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        use futures::StreamExt;
        use kube::runtime::{watcher, WatchStreamExt};
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(self.pods(), cfg).applied_objects().boxed();
        let mut last = None;
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                item = stream.next() => match item {
                    Some(Ok(p)) => {
                        if check(&p) {
                            return p;
                        }
                        last = Some(p);
                    }
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
        panic!(
            "pod {name} never reached: {what}; last: {:?}",
            last.and_then(|p| p.status)
        );
    }

    fn containers_named(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .runtime
            .calls_of("StartContainer")
            .into_iter()
            .filter(|id| {
                self.runtime
                    .container_config(id)
                    .and_then(|c| c.metadata)
                    .is_some_and(|m| m.name == name)
            })
            .collect();
        ids.dedup();
        ids
    }
}

fn start_kubelet(
    client: &kube::Client,
    runtime: &Arc<FakeRuntime>,
    config: &KubeletConfig,
    shutdown: CancellationToken,
) -> Arc<Kubelet> {
    let kubelet = Kubelet::with_parts(
        client.clone(),
        runtime.clone(),
        Arc::new(FakeHost::default()),
        config.clone(),
        timing(),
        Arc::new(FakeVolumes),
    );
    tokio::spawn(kubelet.clone().run(shutdown));
    kubelet
}

fn pod(name: &str, restart_policy: &str, container: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"nodeName": "n1", "restartPolicy": restart_policy, "containers": [container]},
    })
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for serde_json::Value {}

fn main_status(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    main_status(p)?.state?.waiting?.reason
}

fn phase(p: &Pod) -> Option<String> {
    p.status.as_ref()?.phase.clone()
}

fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn pod_runs_with_sandbox_and_container_config_from_spec() {
    let h = Harness::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
        "metadata": {"name": "cfg"}, "data": {"color": "blue", "size": "L"}}))
        .expect("cm"),
    )
    .await
    .expect("configmap");
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
        "metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}}))
            .expect("secret"),
        )
        .await
        .expect("secret");
    h.create(pod("web", "Always", json!({
        "name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c"], "args": ["echo $(GREETING)"], "workingDir": "/w",
        "env": [
            {"name": "NAME", "value": "world"},
            {"name": "GREETING", "value": "hello $(NAME)"},
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": true}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "ports": [{"containerPort": 80, "hostPort": 8080}],
    }))
    .pipe(|mut p| {
        p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        p
    }))
    .await;
    let p = h
        .wait_pod("web", "Running with a pod IP", |p| {
            phase(p).as_deref() == Some("Running")
                && p.status.as_ref().and_then(|s| s.pod_ip.clone()).is_some()
        })
        .await;
    let status = p.status.clone().expect("status");
    assert_eq!(status.host_ip.as_deref(), Some("192.0.2.10"));
    assert!(status.start_time.is_some());
    assert_eq!(condition(&p, "Ready").as_deref(), Some("True"));
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    let cs = main_status(&p).expect("container status");
    assert!(cs.ready);
    assert_eq!(cs.restart_count, 0);
    let id = cs.container_id.clone().expect("container id");
    assert!(id.starts_with("containerd://"));
    assert!(cs.image_id.starts_with("sha256:"));

    let ids = h.containers_named("app");
    assert_eq!(ids.len(), 1);
    let config = h.runtime.container_config(&ids[0]).expect("config");
    let env: HashMap<String, String> = config
        .envs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(env["GREETING"], "hello world");
    assert_eq!(env["COLOR"], "blue");
    assert_eq!(env["TOKEN"], "s3cret");
    assert_eq!(env["CFG_size"], "L");
    assert_eq!(env["POD_NAME"], "web");
    assert_eq!(env["POD_IP"], status.pod_ip.clone().expect("ip"));
    assert_eq!(env["MEM"], "64");
    assert!(!env.contains_key("MISSING"));
    assert_eq!(config.args, vec!["echo hello world"]);
    assert_eq!(config.working_dir, "/w");
    assert_eq!(config.log_path, "app/0.log");
    assert_eq!(config.labels["io.kubernetes.container.name"], "app");
    assert_eq!(config.labels["io.kubernetes.pod.name"], "web");
    assert_eq!(config.mounts[0].container_path, "/data");
    let res = config.linux.and_then(|l| l.resources).expect("resources");
    assert_eq!(
        (res.cpu_shares, res.cpu_quota, res.memory_limit_in_bytes),
        (102, 20_000, 64 << 20)
    );

    let sandboxes = h.runtime.calls_of("RunPodSandbox");
    assert_eq!(sandboxes, vec!["default/web"]);
    let list = mini_cri::Runtime::list_pod_sandbox(h.runtime.as_ref(), None)
        .await
        .expect("list");
    let sb = h
        .runtime
        .sandbox_config(&list[0].id)
        .expect("sandbox config");
    let dns = sb.dns_config.expect("dns");
    assert_eq!(dns.servers, vec!["10.43.0.10"]);
    assert_eq!(dns.searches[0], "default.svc.cluster.local");
    assert_eq!(sb.port_mappings[0].host_port, 8080);
    assert_eq!(
        sb.labels["io.kubernetes.pod.uid"],
        p.metadata.uid.clone().expect("uid")
    );
    assert!(sb.log_directory.ends_with(&format!(
        "default_web_{}",
        p.metadata.uid.clone().expect("uid")
    )));

    let log = h
        .kubelet
        .container_log_path("default", "web", "app", false)
        .await
        .expect("log path");
    assert!(log.ends_with("app/0.log"));
    assert!(h
        .kubelet
        .container_running("default", "web", "app")
        .await
        .expect("running"));
    assert!(matches!(
        h.kubelet
            .container_log_path("default", "nope", "app", false)
            .await,
        Err(crate::KubeletError::NotFound(_))
    ));
    assert_eq!(h.kubelet.running_pod_count(), 1);
    h.shutdown.cancel();
}

#[tokio::test]
async fn container_exit_restarts_with_backoff_and_last_state() {
    let h = Harness::start().await;
    h.create(pod(
        "crash",
        "Always",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    ))
    .await;
    h.wait_pod("crash", "Running", |p| {
        phase(p).as_deref() == Some("Running")
    })
    .await;
    let first = h.containers_named("app")[0].clone();
    h.runtime.exit_container(&first, 1, "");
    let p = h
        .wait_pod("crash", "restarted once", |p| {
            main_status(p).is_some_and(|c| {
                c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
        .await;
    let last = main_status(&p)
        .and_then(|c| c.last_state)
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let second = h.containers_named("app")[1].clone();
    h.runtime.exit_container(&second, 2, "OOMKilled");
    let p = h
        .wait_pod("crash", "CrashLoopBackOff", |p| {
            waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let last = main_status(&p)
        .and_then(|c| c.last_state)
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
    h.wait_pod("crash", "restarted after back-off", |p| {
        main_status(p).is_some_and(|c| c.restart_count == 2)
    })
    .await;
    let log = h
        .kubelet
        .container_log_path("default", "crash", "app", true)
        .await
        .expect("previous log");
    assert!(log.ends_with("app/1.log"));
    h.shutdown.cancel();
}

#[tokio::test]
async fn restart_policy_never_ends_in_succeeded_or_failed() {
    let h = Harness::start().await;
    h.create(pod(
        "ok",
        "Never",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    ))
    .await;
    h.create(pod(
        "bad",
        "Never",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    ))
    .await;
    h.wait_pod("ok", "Running", |p| phase(p).as_deref() == Some("Running"))
        .await;
    h.wait_pod("bad", "Running", |p| phase(p).as_deref() == Some("Running"))
        .await;
    let ids = h.containers_named("app");
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let config = h.runtime.container_config(id).expect("config");
        let code = if config.labels["io.kubernetes.pod.name"] == "ok" {
            0
        } else {
            3
        };
        h.runtime.exit_container(id, code, "");
    }
    h.wait_pod("ok", "Succeeded", |p| {
        phase(p).as_deref() == Some("Succeeded")
    })
    .await;
    let p = h
        .wait_pod("bad", "Failed", |p| phase(p).as_deref() == Some("Failed"))
        .await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(
        h.containers_named("app").len(),
        2,
        "no restarts with restartPolicy Never"
    );
    h.shutdown.cancel();
}

#[tokio::test]
async fn liveness_failure_restarts_and_readiness_failure_flips_ready() {
    let h = Harness::start().await;
    h.runtime.set_exec_result(&["live"], 1, "", "dead");
    h.runtime.set_exec_result(&["ready"], 1, "", "not yet");
    h.create(pod("probed", "Always", json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent",
        "livenessProbe": {"exec": {"command": ["live"]}, "periodSeconds": 1, "failureThreshold": 2}}))).await;
    h.create(pod(
        "unready",
        "Always",
        json!({"name": "web", "image": "busybox:1", "imagePullPolicy": "IfNotPresent",
        "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1}}),
    ))
    .await;
    h.wait_pod("probed", "restarted by liveness", |p| {
        main_status(p).is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    assert!(!h.runtime.calls_of("StopContainer").is_empty());
    let p = h
        .wait_pod("unready", "Running but not Ready", |p| {
            phase(p).as_deref() == Some("Running")
        })
        .await;
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(main_status(&p).map(|c| c.ready), Some(false));
    h.runtime.set_exec_result(&["ready"], 0, "", "");
    h.wait_pod("unready", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    h.shutdown.cancel();
}

#[tokio::test]
async fn missing_image_shows_err_image_pull_then_backoff() {
    let h = Harness::start().await;
    h.runtime.fail_pulls("ghost:1", "no registry reachable");
    h.create(pod(
        "ghost",
        "Always",
        json!({"name": "app", "image": "ghost:1"}),
    ))
    .await;
    let p = h
        .wait_pod("ghost", "ErrImagePull", |p| {
            waiting_reason(p).as_deref() == Some("ErrImagePull")
        })
        .await;
    let message = main_status(&p)
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    assert!(message.contains("ghost:1"), "{message}");
    h.wait_pod("ghost", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&p).as_deref(), Some("Pending"));
    h.create(pod(
        "never",
        "Always",
        json!({"name": "app", "image": "absent:2", "imagePullPolicy": "Never"}),
    ))
    .await;
    h.wait_pod("never", "ErrImageNeverPull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    h.shutdown.cancel();
}

#[tokio::test]
async fn deletion_stops_containers_and_removes_the_pod_object() {
    let h = Harness::start().await;
    h.create(pod(
        "gone",
        "Always",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent",
        "lifecycle": {"preStop": {"exec": {"command": ["cleanup"]}}}}),
    ))
    .await;
    h.wait_pod("gone", "Running", |p| {
        phase(p).as_deref() == Some("Running")
    })
    .await;
    let id = h.containers_named("app")[0].clone();
    h.pods()
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete");
    for _ in 0..200 {
        if h.pods().get_opt("gone").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        h.pods().get_opt("gone").await.expect("get").is_none(),
        "pod object deleted by the kubelet"
    );
    assert!(h.runtime.calls_of("ExecSync").contains(&id), "preStop ran");
    assert!(h.runtime.calls_of("StopContainer").contains(&id));
    assert_eq!(h.runtime.sandbox_count(), 0);
    assert_eq!(h.runtime.container_count(), 0);
    h.shutdown.cancel();
}

#[tokio::test]
async fn restarted_kubelet_adopts_running_containers() {
    let h = Harness::start().await;
    h.create(pod(
        "stay",
        "Always",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    ))
    .await;
    let before = h
        .wait_pod("stay", "Running", |p| {
            phase(p).as_deref() == Some("Running")
        })
        .await;
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.runtime.clear_calls();
    let shutdown = CancellationToken::new();
    let _second = start_kubelet(&h.client, &h.runtime, &h.config, shutdown.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(h.runtime.calls_of("CreateContainer").is_empty());
    assert!(h.runtime.calls_of("RunPodSandbox").is_empty());
    assert!(h.runtime.calls_of("StopContainer").is_empty());
    let after = h.pods().get("stay").await.expect("pod");
    assert_eq!(
        main_status(&after).and_then(|c| c.container_id),
        main_status(&before).and_then(|c| c.container_id)
    );
    shutdown.cancel();
}

#[tokio::test]
async fn pods_gone_from_the_api_are_cleaned_up_from_cri() {
    let h = Harness::start().await;
    h.create(pod(
        "orphan",
        "Always",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    ))
    .await;
    h.wait_pod("orphan", "Running", |p| {
        phase(p).as_deref() == Some("Running")
    })
    .await;
    h.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.pods()
        .delete(
            "orphan",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("delete");
    assert_eq!(h.runtime.sandbox_count(), 1);
    let shutdown = CancellationToken::new();
    let _second = start_kubelet(&h.client, &h.runtime, &h.config, shutdown.clone());
    for _ in 0..100 {
        if h.runtime.sandbox_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.runtime.sandbox_count(), 0);
    shutdown.cancel();
}

#[tokio::test]
async fn commit_container_answers_runtime_layer_with_spec_image() {
    use futures::StreamExt;
    let h = Harness::start().await;
    h.create(pod(
        "snap",
        "Always",
        json!({"name": "app", "image": "busybox:1", "command": ["sleep", "3600"]}),
    ))
    .await;
    h.wait_pod("snap", "running", |p| {
        main_status(p)
            .and_then(|s| s.state)
            .is_some_and(|s| s.running.is_some())
    })
    .await;
    let ids = h.containers_named("app");
    assert_eq!(ids.len(), 1);
    h.runtime.set_container_layer(
        &ids[0],
        mini_cri::FakeLayer {
            content: b"layer bytes".to_vec(),
            layer_digest: "sha256:11".into(),
            diff_id: "sha256:22".into(),
            image_digest: Some("sha256:33".into()),
        },
    );
    let layer = h
        .kubelet
        .commit_container("default", "snap", "app")
        .await
        .expect("commit");
    assert_eq!(layer.image_ref, "docker.io/library/busybox:1");
    assert_eq!(layer.image_digest.as_deref(), Some("sha256:33"));
    assert_eq!(
        (layer.layer_digest.as_str(), layer.diff_id.as_str()),
        ("sha256:11", "sha256:22")
    );
    let chunks: Vec<_> = layer.content.collect().await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].as_ref().expect("chunk").as_ref(), b"layer bytes");
    assert_eq!(h.runtime.calls_of("ContainerLayer"), vec![ids[0].clone()]);
    assert!(matches!(
        h.kubelet.commit_container("default", "snap", "nope").await,
        Err(crate::KubeletError::NotFound(_))
    ));
    h.shutdown.cancel();
}

#[tokio::test]
async fn pool_pod_waits_for_its_address_then_leaves_it_for_the_ipam() {
    let h = Harness::start().await;
    let mut p = pod(
        "db",
        "Always",
        json!({"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}),
    );
    p["metadata"]["annotations"] = json!({"ipam.mini.dev/pool": "db"});
    let created = h.create(p).await;
    h.wait_pod("db", "waiting for its pool address", |p| {
        main_status(p)
            .and_then(|s| s.state)
            .and_then(|s| s.waiting)
            .and_then(|w| w.message)
            .is_some_and(|m| m.contains("ipam.mini.dev/allocated"))
    })
    .await;
    assert!(h.runtime.calls_of("RunPodSandbox").is_empty());
    let patch = json!({"metadata": {"annotations": {"ipam.mini.dev/allocated": "10.99.0.5"}}});
    h.pods()
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("annotate");
    h.wait_pod("db", "running", |p| phase(p).as_deref() == Some("Running"))
        .await;
    let dir = h.config.pinned_ip_dir.clone().expect("dir");
    let request = mini_ippool::pinned::read_request(&dir, "default", "db", None)
        .expect("read")
        .expect("a request");
    assert_eq!(request.address.to_string(), "10.99.0.5");
    assert_eq!(Some(request.uid), created.metadata.uid);
}
