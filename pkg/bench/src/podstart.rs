//! Pod start latency on a real node: pods created through the API (create -> `Running` seen
//! through a watch), next to the raw CRI time (RunPodSandbox + CreateContainer + StartContainer
//! straight on the node's containerd) measured in the same run, and the agent's idle RSS and CPU.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use mini_cri::proto;
use mini_cri::Runtime;
use serde_json::{json, Value};

use crate::server::{parse_cpu_ticks, parse_vm_rss};
use crate::stats::LatencySummary;
use crate::BenchError;

/// What `run_pod_start_bench` measures against.
#[derive(Debug, Clone)]
pub struct PodStartOptions {
    pub kubeconfig: PathBuf,
    /// The node the pods are pinned to (by `nodeSelector`, so the scheduler is on the path).
    pub node: String,
    /// That node's containerd socket, for the raw CRI measurement.
    pub cri_socket: PathBuf,
    /// PID of the node's `mini agent`, for idle RSS/CPU.
    pub agent_pid: u32,
    pub image: String,
    pub pods: usize,
    /// How long the agent's CPU time is sampled while idle.
    pub idle_window: Duration,
    pub namespace: String,
}

/// The numbers `run_pod_start_bench` prints.
#[derive(Debug, Clone)]
pub struct PodStartReport {
    pub options: PodStartOptions,
    pub api: LatencySummary,
    pub raw_cri: LatencySummary,
    pub agent_idle_rss_bytes: u64,
    pub agent_idle_cpu_percent: f64,
}

impl PodStartReport {
    pub fn print_human(&self) {
        let o = &self.options;
        println!(
            "pod start on node {} ({} pods, image {}, one at a time):",
            o.node, o.pods, o.image
        );
        println!(
            "  create -> Running via watch : p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
            self.api.p50_ms, self.api.p99_ms, self.api.max_ms
        );
        println!(
            "  raw CRI sandbox+create+start: p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
            self.raw_cri.p50_ms, self.raw_cri.p99_ms, self.raw_cri.max_ms
        );
        println!(
            "  ratio p50 api/raw           : {:.2}x   (target <= 2x; p99 target <= 1500 ms)",
            self.api.p50_ms / self.raw_cri.p50_ms.max(0.001)
        );
        println!(
            "agent idle: RSS {:.1} MiB (target <= 30), CPU {:.2}% of a core over {} s (target <= 0.5%)",
            self.agent_idle_rss_bytes as f64 / (1024.0 * 1024.0),
            self.agent_idle_cpu_percent,
            o.idle_window.as_secs()
        );
    }

    pub fn to_json(&self) -> Value {
        let o = &self.options;
        json!({
            "benchmark": "pod-start",
            "config": {"node": o.node, "pods": o.pods, "image": o.image,
                        "idle_window_s": o.idle_window.as_secs()},
            "api_create_to_running_ms": self.api,
            "raw_cri_ms": self.raw_cri,
            "ratio_p50": self.api.p50_ms / self.raw_cri.p50_ms.max(0.001),
            "agent_idle_rss_bytes": self.agent_idle_rss_bytes,
            "agent_idle_cpu_percent": self.agent_idle_cpu_percent,
        })
    }
}

fn client_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Client(e.to_string())
}

/// Runs the whole measurement: raw CRI first (its sandboxes are removed again), then pods
/// through the API, then the agent idle window.
pub async fn run_pod_start_bench(options: PodStartOptions) -> Result<PodStartReport, BenchError> {
    let raw = raw_cri_starts(&options).await?;
    let api = api_pod_starts(&options).await?;
    let (rss, cpu) = agent_idle(options.agent_pid, options.idle_window).await?;
    Ok(PodStartReport {
        api: LatencySummary::from_samples(&api)
            .ok_or_else(|| BenchError::InvalidOptions("no pods measured".into()))?,
        raw_cri: LatencySummary::from_samples(&raw)
            .ok_or_else(|| BenchError::InvalidOptions("no raw CRI samples".into()))?,
        agent_idle_rss_bytes: rss,
        agent_idle_cpu_percent: cpu,
        options,
    })
}

/// Sandbox + container straight on containerd, one at a time, like the kubelet would (same
/// image, same CNI network); each is stopped and removed after its sample.
async fn raw_cri_starts(options: &PodStartOptions) -> Result<Vec<Duration>, BenchError> {
    let runtime = mini_cri::grpc::GrpcRuntime::connect(&options.cri_socket).map_err(client_err)?;
    let image = proto::ImageSpec {
        image: options.image.clone(),
        ..Default::default()
    };
    let mut samples = Vec::with_capacity(options.pods);
    for i in 0..options.pods {
        let name = format!("raw-cri-bench-{i}");
        let uid = format!("raw-cri-bench-{}-{i}", std::process::id());
        let sandbox_config = proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: "mini-bench-raw".into(),
                attempt: 0,
            }),
            hostname: name.clone(),
            labels: BTreeMap::from([("mini.dev/bench".to_string(), "raw-cri".to_string())])
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let started = Instant::now();
        let sandbox_id = runtime
            .run_pod_sandbox(proto::RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                ..Default::default()
            })
            .await
            .map_err(client_err)?;
        let container_id = runtime
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(proto::ContainerConfig {
                    metadata: Some(proto::ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(image.clone()),
                    command: vec!["sleep".into(), "3600".into()],
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(client_err)?;
        runtime
            .start_container(&container_id)
            .await
            .map_err(client_err)?;
        samples.push(started.elapsed());
        runtime
            .stop_pod_sandbox(&sandbox_id)
            .await
            .map_err(client_err)?;
        runtime
            .remove_pod_sandbox(&sandbox_id)
            .await
            .map_err(client_err)?;
    }
    Ok(samples)
}

/// Pods through the API server, one at a time: the clock runs from just before the create
/// request to the watch event that shows the pod `Running`.
async fn api_pod_starts(options: &PodStartOptions) -> Result<Vec<Duration>, BenchError> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&options.kubeconfig).map_err(client_err)?,
        &Default::default(),
    )
    .await
    .map_err(client_err)?;
    let client = kube::Client::try_from(config).map_err(client_err)?;
    let pods: Api<Pod> = Api::namespaced(client, &options.namespace);
    let mut samples = Vec::with_capacity(options.pods);
    for i in 0..options.pods {
        let name = format!("pod-start-bench-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "pod-start-bench"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": options.node},
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": options.image,
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["sleep", "3600"]}]
            }
        }))
        .map_err(client_err)?;
        let watch_params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(120);
        let mut stream = pods
            .watch(&watch_params, "0")
            .await
            .map_err(client_err)?
            .boxed();
        let started = Instant::now();
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(client_err)?;
        let mut running = None;
        while let Some(event) = stream.next().await {
            match event.map_err(client_err)? {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    if phase == Some("Running") {
                        running = Some(started.elapsed());
                        break;
                    }
                }
                _ => {}
            }
        }
        samples.push(
            running.ok_or_else(|| {
                BenchError::Timeout(format!("pod {name} not Running within 120 s"))
            })?,
        );
    }
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("app=pod-start-bench"),
    )
    .await
    .map_err(client_err)?;
    Ok(samples)
}

/// The agent's RSS and CPU share while nothing happens: waits for the deletions to settle,
/// then samples `/proc/<pid>` over the window.
async fn agent_idle(pid: u32, window: Duration) -> Result<(u64, f64), BenchError> {
    let read = |file: &str| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
            context: path,
            source,
        })
    };
    tokio::time::sleep(Duration::from_secs(15)).await;
    let ticks_per_second = 100.0;
    let before = parse_cpu_ticks(&read("stat")?)
        .ok_or_else(|| BenchError::Client("cannot parse agent /proc stat".into()))?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = parse_cpu_ticks(&read("stat")?)
        .ok_or_else(|| BenchError::Client("cannot parse agent /proc stat".into()))?;
    let cpu_seconds = (after.saturating_sub(before)) as f64 / ticks_per_second;
    let percent = 100.0 * cpu_seconds / started.elapsed().as_secs_f64();
    let rss = parse_vm_rss(&read("status")?)
        .ok_or_else(|| BenchError::Client("cannot parse agent VmRSS".into()))?;
    Ok((rss, percent))
}
