//! The scheduler/controllers benchmark: scheduler throughput over simulated nodes, time from
//! scaling a Deployment to all its pods Running, and server RSS with many nodes and pods.
//! Two fresh `mini server` processes: one with `--disable controllers` (only the scheduler
//! acts) for throughput and RSS, one with everything on for the Deployment scale-up. The
//! simulated nodes run in this process (`mini_simnode::run`). Numbers are reported, never
//! asserted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::report::{MachineInfo, Measurement};
use crate::rest::{admin_client, call, call_ok, request};
use crate::server::{parse_cpu_ticks, parse_vm_rss};
use crate::stats::rate;
use crate::BenchError;

const NS: &str = "sched-bench";
const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const LISTENING: &str = "mini server listening on https://";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const DEPLOYMENT: &str = "scale-bench";
/// How often progress is sampled while waiting for bindings / Running / availability.
const POLL: Duration = Duration::from_millis(50);

/// What `run_scheduler_bench` does.
#[derive(Debug, Clone)]
pub struct SchedulerBenchOptions {
    /// The `mini` binary to run as `mini server`.
    pub mini_bin: PathBuf,
    /// Simulated nodes in both servers.
    pub nodes: usize,
    /// Pending pods created for the scheduler throughput measurement.
    pub pods: usize,
    /// Replicas the Deployment is scaled to (from 0).
    pub scale: usize,
    /// Total pods (bound and Running) in the first server when its RSS is read; the pods
    /// beyond `pods` are created after the throughput measurement. 0 skips this phase.
    pub rss_pods: usize,
    /// Concurrent pod creators.
    pub concurrency: usize,
    /// Lease renewal interval of the simulated nodes.
    pub lease_interval: Duration,
    pub node_cpu: String,
    pub node_memory: String,
    pub max_pods: u32,
    /// Longest wait for any one phase (nodes Ready, all bound, all Running, available).
    pub phase_timeout: Duration,
    /// Quiet time before each RSS reading.
    pub settle: Duration,
}

impl Default for SchedulerBenchOptions {
    fn default() -> Self {
        Self {
            mini_bin: PathBuf::from("target/release/mini"),
            nodes: 1_000,
            pods: 10_000,
            scale: 1_000,
            rss_pods: 30_000,
            concurrency: 16,
            lease_interval: Duration::from_secs(20),
            node_cpu: "8".into(),
            node_memory: "32Gi".into(),
            max_pods: 110,
            phase_timeout: Duration::from_secs(300),
            settle: Duration::from_secs(3),
        }
    }
}

impl SchedulerBenchOptions {
    /// `--quick`: 200 nodes, 2,000 pods, scale to 500, 6,000 pods for RSS.
    pub fn quick() -> Self {
        Self {
            nodes: 200,
            pods: 2_000,
            scale: 500,
            rss_pods: 6_000,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::InvalidOptions(m));
        if self.nodes == 0 || self.pods == 0 || self.scale == 0 || self.concurrency == 0 {
            return bad("nodes, pods, scale and concurrency must be at least 1".into());
        }
        if self.rss_pods != 0 && self.rss_pods < self.pods {
            return bad(format!(
                "rss-pods ({}) must be 0 or at least pods ({})",
                self.rss_pods, self.pods
            ));
        }
        let capacity = self.nodes * self.max_pods as usize;
        let most = self.pods.max(self.rss_pods).max(self.scale);
        if most > capacity {
            return bad(format!(
                "{most} pods do not fit on {} nodes × {} pods",
                self.nodes, self.max_pods
            ));
        }
        if !self.mini_bin.is_file() {
            return bad(format!(
                "mini binary {} not found (build it with `cargo build --release -p mini`)",
                self.mini_bin.display()
            ));
        }
        Ok(())
    }
}

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerBenchConfig {
    pub mini_bin: String,
    pub nodes: usize,
    pub pods: usize,
    pub scale: usize,
    pub rss_pods: usize,
    pub concurrency: usize,
    pub lease_interval_seconds: f64,
    pub node_cpu: String,
    pub node_memory: String,
    pub max_pods: u32,
    /// Requests of every benchmark pod.
    pub pod_requests: String,
    pub pod_json_bytes: usize,
    pub notes: Vec<&'static str>,
}

/// Registering the simulated nodes in one server.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSetup {
    pub nodes: usize,
    /// From starting the simulator to all nodes listed Ready.
    pub ready_seconds: f64,
    /// Server RSS right after `/readyz` answered (no nodes).
    pub rss_empty_bytes: u64,
    /// Server RSS once the nodes were Ready and the settle time passed.
    pub rss_nodes_idle_bytes: u64,
}

/// Creating pending pods and watching the scheduler bind them.
#[derive(Debug, Clone, Serialize)]
pub struct BindPhase {
    pub pods: usize,
    /// Pods (bound or not) already in the server when this batch started.
    pub pods_before: usize,
    pub create_seconds: f64,
    pub create_per_second: f64,
    /// From the first create request to the first binding seen.
    pub first_bind_ms: f64,
    /// Bindings seen over the interval from the first binding to the last.
    pub bind_window_seconds: f64,
    pub bind_per_second_window: f64,
    /// From the first create request to the last binding.
    pub end_to_end_seconds: f64,
    pub end_to_end_per_second: f64,
    /// Bindings per 1-second bucket from the first binding (the last bucket may be partial).
    pub bound_per_second: Vec<usize>,
    /// Mean of the full 1-second buckets (upstream scheduler_perf's SchedulingThroughput).
    pub bucket_mean_per_second: f64,
    /// Largest number of created-but-unbound pods seen; near 0 means the scheduler kept up
    /// with creation, so the rates are bounded by create throughput, not the scheduler.
    pub max_pending: usize,
    /// From the first create request to all pods Running (marked by the simulated nodes).
    pub all_running_seconds: f64,
    /// Server CPU (all threads) from the first create to all Running.
    pub server_cpu_seconds: f64,
    /// This process's CPU (creators, watch, simulated nodes) over the same interval.
    pub client_cpu_seconds: f64,
}

/// Server memory with the nodes and all pods bound and Running.
#[derive(Debug, Clone, Serialize)]
pub struct RssPhase {
    pub nodes: usize,
    pub pods: usize,
    pub rss_bytes: u64,
    /// Peak RSS of the server process over its whole life.
    pub hwm_bytes: u64,
}

/// A Deployment scaled from 0 with controllers and scheduler on.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePhase {
    pub replicas: usize,
    pub nodes: NodeSetup,
    /// From the scale PATCH to the n-th pod seen created / bound / Running.
    pub all_created_seconds: f64,
    pub all_bound_seconds: f64,
    pub all_running_seconds: f64,
    /// From the scale PATCH to `status.availableReplicas` = replicas.
    pub available_seconds: f64,
    pub server_cpu_seconds: f64,
    pub rss_after_bytes: u64,
}

/// Everything one `run_scheduler_bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerBenchReport {
    pub timestamp: String,
    pub machine: MachineInfo,
    pub config: SchedulerBenchConfig,
    pub setup: NodeSetup,
    pub throughput: BindPhase,
    /// The extra pods created to reach `rss_pods` (absent when `rss_pods` is 0).
    pub fill: Option<BindPhase>,
    pub rss: Option<RssPhase>,
    pub scale: ScalePhase,
    pub server_log_bytes: u64,
}

/// Starts the servers and simulated nodes, runs every phase, kills the servers and removes
/// their data dirs (on error too), and returns the figures.
pub async fn run_scheduler_bench(
    opts: SchedulerBenchOptions,
) -> Result<SchedulerBenchReport, BenchError> {
    opts.validate()?;
    let machine = MachineInfo::detect();
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pod_json_bytes = serde_json::to_vec(&bench_pod("sched-bench-000000"))
        .map(|b| b.len())
        .unwrap_or(0);

    tracing::info!("phase 1: scheduler only (mini server --disable controllers)");
    let mut server = BenchServer::spawn(&opts.mini_bin, &["--disable", "controllers"]).await?;
    let result = scheduler_phases(&opts, &mut server).await;
    let ((setup, throughput, fill, rss), log1) = server.finish(result).await?;

    tracing::info!("phase 2: everything on, Deployment scaled from 0");
    let mut server = BenchServer::spawn(&opts.mini_bin, &[]).await?;
    let result = scale_phase(&opts, &mut server).await;
    let (scale, log2) = server.finish(result).await?;

    Ok(SchedulerBenchReport {
        timestamp,
        machine,
        config: SchedulerBenchConfig {
            mini_bin: opts.mini_bin.display().to_string(),
            nodes: opts.nodes,
            pods: opts.pods,
            scale: opts.scale,
            rss_pods: opts.rss_pods,
            concurrency: opts.concurrency,
            lease_interval_seconds: opts.lease_interval.as_secs_f64(),
            node_cpu: opts.node_cpu.clone(),
            node_memory: opts.node_memory.clone(),
            max_pods: opts.max_pods,
            pod_requests: "cpu 10m, memory 16Mi".into(),
            pod_json_bytes,
            notes: vec![
                "server, this client and the simulated nodes share the machine",
                "simulated nodes renew their leases every lease_interval (a kubelet: 10 s) and post Ready every 6th renewal",
                "phase 1 server runs with --disable controllers (scheduler only); phase 2 with everything on",
                "bound/Running times are when this process's pod watch saw the change",
            ],
        },
        setup,
        throughput,
        fill,
        rss,
        scale,
        server_log_bytes: log1 + log2,
    })
}

type SchedulerPhases = (NodeSetup, BindPhase, Option<BindPhase>, Option<RssPhase>);

/// Nodes, scheduler throughput, then the fill to `rss_pods` and the RSS reading.
async fn scheduler_phases(
    opts: &SchedulerBenchOptions,
    server: &mut BenchServer,
) -> Result<SchedulerPhases, BenchError> {
    let client = admin_client(&server.kubeconfig).await?;
    wait_ready(&client).await?;
    let (sim, setup) = start_nodes(opts, server, &client).await?;
    let result = async {
        create(&client, "/api/v1/namespaces", &namespace(NS)).await?;
        let tracker = PodTracker::start(client.clone(), NS).await?;

        tracing::info!(
            pods = opts.pods,
            concurrency = opts.concurrency,
            "throughput"
        );
        let throughput = bind_batch(opts, server, &client, &tracker, "tp", opts.pods, 0).await?;
        let mut fill = None;
        let mut rss = None;
        if opts.rss_pods > opts.pods {
            let extra = opts.rss_pods - opts.pods;
            tracing::info!(pods = extra, "filling up for the RSS reading");
            fill =
                Some(bind_batch(opts, server, &client, &tracker, "fill", extra, opts.pods).await?);
        }
        if opts.rss_pods > 0 {
            tokio::time::sleep(opts.settle).await;
            let (rss_bytes, hwm_bytes) = server.memory()?;
            tracing::info!(rss_bytes, hwm_bytes, "rss with all pods Running");
            rss = Some(RssPhase {
                nodes: opts.nodes,
                pods: opts.rss_pods,
                rss_bytes,
                hwm_bytes,
            });
        }
        tracker.stop();
        Ok((setup, throughput, fill, rss))
    }
    .await;
    sim.stop().await;
    result
}

/// Creates `count` pods named `<batch>-NNNNNN` with `opts.concurrency` creators and waits
/// until all are bound and Running.
async fn bind_batch(
    opts: &SchedulerBenchOptions,
    server: &BenchServer,
    client: &kube::Client,
    tracker: &PodTracker,
    batch: &str,
    count: usize,
    pods_before: usize,
) -> Result<BindPhase, BenchError> {
    let bodies: Vec<Bytes> = (0..count)
        .map(|i| {
            serde_json::to_vec(&bench_pod(&format!("{batch}-{i:06}")))
                .map(Bytes::from)
                .map_err(|e| BenchError::Parse(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let bodies = Arc::new(bodies);
    let path = format!("/api/v1/namespaces/{NS}/pods");
    let cpu_before = server.cpu_time()?;
    let self_cpu_before = self_cpu_time()?;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        let (client, path, bodies, next) =
            (client.clone(), path.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() {
                    return Ok::<_, BenchError>(());
                }
                let req = request(Method::POST, &path, Some((JSON, bodies[i].to_vec())))?;
                call_ok(&client, req).await?;
            }
        }));
    }
    // Sample the backlog while the creators run, then until everything is bound.
    let mut max_pending = 0usize;
    let deadline = started + opts.phase_timeout;
    let mut create_elapsed = None;
    loop {
        let c = tracker.counts(batch);
        max_pending = max_pending.max(c.seen.saturating_sub(c.bound));
        if create_elapsed.is_none() && tasks.iter().all(|t| t.is_finished()) {
            create_elapsed = Some(started.elapsed());
            for task in tasks.drain(..) {
                task.await
                    .map_err(|e| BenchError::Client(format!("create task: {e}")))??;
            }
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "created");
        }
        if create_elapsed.is_some() && c.bound >= count {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "{batch}: {} of {count} pods seen, {} bound after {:?}",
                c.seen, c.bound, opts.phase_timeout
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let create_elapsed = create_elapsed.unwrap_or_default();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "all bound");
    wait_counts(tracker, batch, count, deadline, |c| c.running, "Running").await?;
    let all_running = started.elapsed();
    let server_cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let self_cpu = self_cpu_time()?.saturating_sub(self_cpu_before);
    tracing::info!(seconds = all_running.as_secs_f64(), "all Running");

    let offsets: Vec<Duration> = tracker
        .bound_times(batch)
        .into_iter()
        .map(|t| t.saturating_duration_since(started))
        .collect();
    let stats = BindStats::from_offsets(&offsets)
        .ok_or_else(|| BenchError::Parse(format!("{batch}: no binding times recorded")))?;
    Ok(BindPhase {
        pods: count,
        pods_before,
        create_seconds: create_elapsed.as_secs_f64(),
        create_per_second: rate(count, create_elapsed),
        first_bind_ms: stats.first.as_secs_f64() * 1000.0,
        bind_window_seconds: stats.window().as_secs_f64(),
        bind_per_second_window: stats.window_rate(),
        end_to_end_seconds: stats.last.as_secs_f64(),
        end_to_end_per_second: rate(stats.count, stats.last),
        bucket_mean_per_second: mean_full_buckets(&stats.buckets),
        bound_per_second: stats.buckets,
        max_pending,
        all_running_seconds: all_running.as_secs_f64(),
        server_cpu_seconds: server_cpu.as_secs_f64(),
        client_cpu_seconds: self_cpu.as_secs_f64(),
    })
}

/// A Deployment with 0 replicas, scaled through `/scale` to `opts.scale`, timed until its
/// pods are Running and the Deployment reports them available.
async fn scale_phase(
    opts: &SchedulerBenchOptions,
    server: &mut BenchServer,
) -> Result<ScalePhase, BenchError> {
    let client = admin_client(&server.kubeconfig).await?;
    wait_ready(&client).await?;
    let (sim, nodes) = start_nodes(opts, server, &client).await?;
    let result = async {
        create(&client, "/api/v1/namespaces", &namespace(NS)).await?;
        let tracker = PodTracker::start(client.clone(), NS).await?;
        let deploy_path = format!("/apis/apps/v1/namespaces/{NS}/deployments");
        create(&client, &deploy_path, &deployment(DEPLOYMENT, 0)).await?;
        let one = format!("{deploy_path}/{DEPLOYMENT}");
        // Let the deployment controller create the (empty) ReplicaSet first; go on without
        // it after a while (the scale-up then includes creating it).
        let rs_path = format!("/apis/apps/v1/namespaces/{NS}/replicasets");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rs = get_json(&client, &rs_path).await?;
            if rs["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
            {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "no ReplicaSet for the 0-replica Deployment after 20s; scaling anyway"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = opts.scale;
        let cpu_before = server.cpu_time()?;
        let started = Instant::now();
        let patch = serde_json::to_vec(&json!({"spec": {"replicas": n}}))
            .map_err(|e| BenchError::Parse(e.to_string()))?;
        call_ok(
            &client,
            request(
                Method::PATCH,
                &format!("{one}/scale"),
                Some((MERGE_PATCH, patch)),
            )?,
        )
        .await?;
        tracing::info!(replicas = n, "scaled");
        let deadline = started + opts.phase_timeout;
        let mut created = None;
        let mut bound = None;
        let mut running = None;
        let mut available = None;
        let mut last_poll = Instant::now() - Duration::from_secs(1);
        while available.is_none() || running.is_none() {
            let c = tracker.totals();
            if created.is_none() && c.seen >= n {
                created = Some(started.elapsed());
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "all created");
            }
            if bound.is_none() && c.bound >= n {
                bound = Some(started.elapsed());
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "all bound");
            }
            if running.is_none() && c.running >= n {
                running = Some(started.elapsed());
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "all Running");
            }
            if available.is_none() && last_poll.elapsed() >= Duration::from_millis(200) {
                last_poll = Instant::now();
                let d = get_json(&client, &one).await?;
                if d["status"]["availableReplicas"].as_u64().unwrap_or(0) >= n as u64 {
                    available = Some(started.elapsed());
                    tracing::info!(seconds = started.elapsed().as_secs_f64(), "available");
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "scale to {n}: {} pods seen, {} bound, {} Running after {:?}",
                    c.seen, c.bound, c.running, opts.phase_timeout
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        let server_cpu = server.cpu_time()?.saturating_sub(cpu_before);
        tracker.stop();
        let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64();
        Ok(ScalePhase {
            replicas: n,
            nodes,
            all_created_seconds: secs(created),
            all_bound_seconds: secs(bound),
            all_running_seconds: secs(running),
            available_seconds: secs(available),
            server_cpu_seconds: server_cpu.as_secs_f64(),
            rss_after_bytes: server.memory()?.0,
        })
    }
    .await;
    sim.stop().await;
    result
}

/// Starts the simulated nodes in this process and waits until all are listed Ready.
async fn start_nodes(
    opts: &SchedulerBenchOptions,
    server: &BenchServer,
    client: &kube::Client,
) -> Result<(SimNodes, NodeSetup), BenchError> {
    tokio::time::sleep(opts.settle).await;
    let rss_empty_bytes = server.memory()?.0;
    let config = mini_simnode::SimConfig {
        prefix: "sim-node-".into(),
        count: opts.nodes,
        cpu: opts.node_cpu.clone(),
        memory: opts.node_memory.clone(),
        max_pods: opts.max_pods,
        lease_interval: opts.lease_interval,
        ..Default::default()
    };
    // Its own client (own connection pool), as a separate kubelet fleet would have.
    let sim_client = admin_client(&server.kubeconfig).await?;
    let token = CancellationToken::new();
    let started = Instant::now();
    let handle = tokio::spawn(mini_simnode::run(sim_client, config, token.clone()));
    let sim = SimNodes {
        token,
        handle: Some(handle),
    };
    tracing::info!(nodes = opts.nodes, "simulated nodes starting");
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("{}=true", mini_simnode::SIMULATED_LABEL);
    let deadline = started + opts.phase_timeout;
    loop {
        if let Some(why) = sim.finished_early() {
            sim.stop().await;
            return Err(BenchError::Client(why));
        }
        let list = nodes
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| BenchError::Client(format!("listing nodes: {e}")))?;
        let ready = list.items.iter().filter(|n| node_ready(n)).count();
        if ready >= opts.nodes {
            break;
        }
        if Instant::now() > deadline {
            sim.stop().await;
            return Err(BenchError::Timeout(format!(
                "{ready} of {} nodes Ready after {:?}",
                opts.nodes, opts.phase_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready_seconds = started.elapsed().as_secs_f64();
    tracing::info!(seconds = ready_seconds, "nodes Ready");
    tokio::time::sleep(opts.settle).await;
    let rss_nodes_idle_bytes = server.memory()?.0;
    Ok((
        sim,
        NodeSetup {
            nodes: opts.nodes,
            ready_seconds,
            rss_empty_bytes,
            rss_nodes_idle_bytes,
        },
    ))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The in-process simulated nodes; cancelled and awaited by `stop`, cancelled on drop.
struct SimNodes {
    token: CancellationToken,
    handle: Option<tokio::task::JoinHandle<Result<(), mini_simnode::SimError>>>,
}

impl SimNodes {
    /// Why the simulator task ended early, if it did.
    fn finished_early(&self) -> Option<String> {
        let handle = self.handle.as_ref()?;
        handle
            .is_finished()
            .then(|| "the simulated nodes stopped".to_string())
    }

    async fn stop(mut self) {
        self.token.cancel();
        if let Some(handle) = self.handle.take() {
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Err(_) => tracing::warn!("simulated nodes did not stop within 10s"),
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "simulated nodes failed"),
                Ok(_) => {}
            }
        }
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Pods seen / bound / Running in one batch (or over all batches).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    seen: usize,
    bound: usize,
    running: usize,
}

#[derive(Debug, Default)]
struct PodTimes {
    bound: Option<Instant>,
    running: Option<Instant>,
}

#[derive(Debug, Default)]
struct TrackerState {
    pods: HashMap<String, PodTimes>,
    /// Per batch: the pod name up to its last `-`.
    counts: HashMap<String, Counts>,
}

/// The batch a pod name belongs to: `tp-000012` → `tp`, `web-7d9c-x2b4q` → `web-7d9c`.
fn batch_of(name: &str) -> &str {
    name.rsplit_once('-').map(|(b, _)| b).unwrap_or(name)
}

impl TrackerState {
    /// Records what a watch event shows about a pod; first sightings only.
    fn observe(&mut self, name: &str, bound: bool, running: bool, now: Instant) {
        let counts = self.counts.entry(batch_of(name).to_string()).or_default();
        if !self.pods.contains_key(name) {
            counts.seen += 1;
        }
        let times = self.pods.entry(name.to_string()).or_default();
        if bound && times.bound.is_none() {
            times.bound = Some(now);
            counts.bound += 1;
        }
        if running && times.running.is_none() {
            times.running = Some(now);
            counts.running += 1;
        }
    }
}

/// Watches the pods of one namespace and records when each was first seen bound and
/// Running.
struct PodTracker {
    state: Arc<Mutex<TrackerState>>,
    stop: CancellationToken,
}

impl PodTracker {
    /// Starts the watch and returns once its initial list is done.
    async fn start(client: kube::Client, namespace: &str) -> Result<Self, BenchError> {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let state = Arc::new(Mutex::new(TrackerState::default()));
        let stop = CancellationToken::new();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
        let (st, token) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            loop {
                let event = tokio::select! {
                    _ = token.cancelled() => return,
                    e = events.next() => e,
                };
                let pod = match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "benchmark pod watch failed; retrying");
                        continue;
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
                    Some(Ok(_)) => continue,
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
                let running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                let now = Instant::now();
                st.lock()
                    .expect("tracker lock")
                    .observe(&name, bound, running, now);
            }
        });
        tokio::time::timeout(START_TIMEOUT, synced_rx)
            .await
            .map_err(|_| BenchError::Timeout("initial pod list of the watch".into()))?
            .map_err(|_| {
                BenchError::Client("the pod watch ended before its initial list".into())
            })?;
        Ok(Self { state, stop })
    }

    fn counts(&self, batch: &str) -> Counts {
        let st = self.state.lock().expect("tracker lock");
        st.counts.get(batch).copied().unwrap_or_default()
    }

    fn totals(&self) -> Counts {
        let st = self.state.lock().expect("tracker lock");
        st.counts.values().fold(Counts::default(), |a, c| Counts {
            seen: a.seen + c.seen,
            bound: a.bound + c.bound,
            running: a.running + c.running,
        })
    }

    fn bound_times(&self, batch: &str) -> Vec<Instant> {
        let st = self.state.lock().expect("tracker lock");
        st.pods
            .iter()
            .filter(|(name, _)| batch_of(name) == batch)
            .filter_map(|(_, t)| t.bound)
            .collect()
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for PodTracker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn wait_counts(
    tracker: &PodTracker,
    batch: &str,
    want: usize,
    deadline: Instant,
    pick: impl Fn(&Counts) -> usize,
    what: &str,
) -> Result<(), BenchError> {
    loop {
        let c = tracker.counts(batch);
        if pick(&c) >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "{batch}: {} of {want} pods {what} ({} seen, {} bound)",
                pick(&c),
                c.seen,
                c.bound
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Binding times of a batch, as offsets from its first create request.
#[derive(Debug, Clone, PartialEq)]
struct BindStats {
    count: usize,
    first: Duration,
    last: Duration,
    /// Bindings per 1-second bucket counted from `first`.
    buckets: Vec<usize>,
}

impl BindStats {
    fn from_offsets(offsets: &[Duration]) -> Option<Self> {
        let first = *offsets.iter().min()?;
        let last = *offsets.iter().max()?;
        let n_buckets = (last - first).as_secs() as usize + 1;
        let mut buckets = vec![0usize; n_buckets];
        for o in offsets {
            buckets[(*o - first).as_secs() as usize] += 1;
        }
        Some(Self {
            count: offsets.len(),
            first,
            last,
            buckets,
        })
    }

    /// From the first binding to the last.
    fn window(&self) -> Duration {
        self.last - self.first
    }

    /// Bindings over the window from the first binding to the last (all of them when the
    /// window is empty, i.e. a single binding, counts as 0).
    fn window_rate(&self) -> f64 {
        rate(self.count, self.window())
    }
}

/// Mean of all but the last (partial) bucket; the only bucket when there is one.
fn mean_full_buckets(buckets: &[usize]) -> f64 {
    let full = match buckets.len() {
        0 => return 0.0,
        1 => buckets,
        n => &buckets[..n - 1],
    };
    full.iter().sum::<usize>() as f64 / full.len() as f64
}

/// The benchmark pod: one container with small requests, so 110 fit a simulated node.
fn bench_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": "sched-bench", "batch": batch_of(name)}
        },
        "spec": pod_spec()
    })
}

fn pod_spec() -> Value {
    json!({
        "containers": [{
            "name": "app",
            "image": "registry.example.com/bench/app:1.0",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"}
            }
        }],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "terminationGracePeriodSeconds": 30
    })
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec()
            }
        }
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn create(client: &kube::Client, path: &str, obj: &Value) -> Result<Bytes, BenchError> {
    let body = serde_json::to_vec(obj).map_err(|e| BenchError::Parse(e.to_string()))?;
    call_ok(client, request(Method::POST, path, Some((JSON, body)))?).await
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, BenchError> {
    let body = call_ok(client, request(Method::GET, path, None)?).await?;
    serde_json::from_slice(&body).map_err(|e| BenchError::Parse(format!("{path}: {e}")))
}

async fn wait_ready(client: &kube::Client) -> Result<(), BenchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match call(client, request(Method::GET, "/readyz", None)?).await {
            Ok((StatusCode::OK, _)) => return Ok(()),
            Ok((status, body)) => format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "/readyz not ok within {START_TIMEOUT:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU time (user + system) this benchmark process used so far.
fn self_cpu_time() -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| BenchError::io("reading /proc/self/stat", e))?;
    let ticks = parse_cpu_ticks(&stat)
        .ok_or_else(|| BenchError::Parse("no utime/stime in /proc/self/stat".into()))?;
    Ok(Duration::from_millis(ticks * 10))
}

/// `VmHWM` (peak RSS) of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => Some(value * 1024),
        _ => None,
    }
}

/// A `mini server` child with extra flags (the shared `ServerProcess` takes none): spawned
/// on a free loopback port in a temp dir, killed by PID and its dir removed by `finish`
/// (killed on drop too).
struct BenchServer {
    child: Child,
    pid: u32,
    kubeconfig: PathBuf,
    log: PathBuf,
    // Declared last so it is removed after the child was killed.
    dir: tempfile::TempDir,
}

impl BenchServer {
    async fn spawn(mini_bin: &Path, extra: &[&str]) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("mini-bench-sched-")
            .tempdir()
            .map_err(|e| BenchError::io("creating the temp data dir", e))?;
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::io("creating the server log", e))?;
        let mut child = Command::new(mini_bin)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port", "0"])
            // no node agent: these benchmarks use simulated nodes (or none)
            .arg("--disable-agent")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {}", mini_bin.display()), e))?;
        let exited = || BenchError::ServerExited {
            log_tail: String::new(),
        };
        let pid = child.id().ok_or_else(exited)?;
        let stdout = child.stdout.take().ok_or_else(exited)?;
        let server = Self {
            child,
            pid,
            kubeconfig: data_dir.join("server").join("admin.kubeconfig"),
            log,
            dir,
        };
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, lines.next_line()).await {
                Err(_) => {
                    return Err(BenchError::Timeout(format!(
                        "mini server did not print its address within {START_TIMEOUT:?}; log:\n{}",
                        server.log_tail()
                    )))
                }
                Ok(Ok(Some(line))) if line.starts_with(LISTENING) => break,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Err(BenchError::ServerExited {
                        log_tail: server.log_tail(),
                    })
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if !server.kubeconfig.exists() {
            return Err(BenchError::Timeout(format!(
                "{} missing after the server started",
                server.kubeconfig.display()
            )));
        }
        tracing::info!(pid, args = ?extra, "mini server started");
        Ok(server)
    }

    fn status(&self, file: &str) -> Result<String, BenchError> {
        let path = format!("/proc/{}/{file}", self.pid);
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))
    }

    /// (VmRSS, VmHWM) in bytes.
    fn memory(&self) -> Result<(u64, u64), BenchError> {
        let status = self.status("status")?;
        let rss = parse_vm_rss(&status)
            .ok_or_else(|| BenchError::Parse("no VmRSS in the server's status".into()))?;
        let hwm = parse_vm_hwm(&status)
            .ok_or_else(|| BenchError::Parse("no VmHWM in the server's status".into()))?;
        Ok((rss, hwm))
    }

    fn cpu_time(&self) -> Result<Duration, BenchError> {
        let ticks = parse_cpu_ticks(&self.status("stat")?)
            .ok_or_else(|| BenchError::Parse("no utime/stime in the server's stat".into()))?;
        Ok(Duration::from_millis(ticks * 10))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the server by PID, removes its dir, and returns `result` (with the log tail if
    /// the server had died) and the bytes it logged.
    async fn finish<T>(mut self, result: Result<T, BenchError>) -> Result<(T, u64), BenchError> {
        let died = !matches!(self.child.try_wait(), Ok(None));
        let result = match result {
            Err(e) if died => Err(BenchError::Client(format!(
                "{e}\nthe server exited; log tail:\n{}",
                self.log_tail()
            ))),
            other => other,
        };
        let log_bytes = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let killed = self.child.kill().await;
        let dir = self.dir.path().to_path_buf();
        drop(self);
        let value = result?;
        killed.map_err(|e| BenchError::io("killing mini server", e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| BenchError::io(format!("removing {}", dir.display()), e))?;
        }
        Ok((value, log_bytes))
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn m(name: String, value: f64, unit: &'static str) -> Measurement {
    Measurement {
        name,
        value,
        unit,
        target: None,
        meets_target: None,
    }
}

fn with_target(mut x: Measurement, text: &'static str, met: bool) -> Measurement {
    x.target = Some(text);
    x.meets_target = Some(met);
    x
}

fn bind_figures(out: &mut Vec<Measurement>, prefix: &str, b: &BindPhase) {
    out.push(m(format!("{prefix}.create"), b.create_per_second, "pods/s"));
    out.push(m(format!("{prefix}.first_bind"), b.first_bind_ms, "ms"));
    out.push(m(
        format!("{prefix}.bind_rate_first_to_last"),
        b.bind_per_second_window,
        "pods/s",
    ));
    out.push(m(
        format!("{prefix}.bind_rate_1s_bucket_mean"),
        b.bucket_mean_per_second,
        "pods/s",
    ));
    out.push(m(
        format!("{prefix}.create_to_all_bound"),
        b.end_to_end_seconds,
        "s",
    ));
    out.push(m(
        format!("{prefix}.max_pending"),
        b.max_pending as f64,
        "pods",
    ));
    out.push(m(
        format!("{prefix}.create_to_all_running"),
        b.all_running_seconds,
        "s",
    ));
    out.push(m(
        format!("{prefix}.server_cpu"),
        b.server_cpu_seconds * 1000.0 / b.pods.max(1) as f64,
        "ms/pod",
    ));
}

impl SchedulerBenchReport {
    /// The figures as a flat list (what the human table and `results` in JSON show).
    pub fn measurements(&self) -> Vec<Measurement> {
        let mut out = Vec::new();
        let (n, p) = (self.config.nodes, self.throughput.pods);
        let s = &self.setup;
        out.push(m(format!("nodes_{n}.ready"), s.ready_seconds, "s"));
        out.push(m("rss.empty".into(), mib(s.rss_empty_bytes), "MiB"));
        out.push(m(
            format!("rss.nodes_{n}.idle"),
            mib(s.rss_nodes_idle_bytes),
            "MiB",
        ));
        let t = &self.throughput;
        out.push(with_target(
            m(
                format!("scheduler.nodes_{n}.pods_{p}.end_to_end"),
                t.end_to_end_per_second,
                "pods/s",
            ),
            ">= 1500 (1k nodes, 10k pods)",
            t.end_to_end_per_second >= 1500.0,
        ));
        bind_figures(&mut out, &format!("scheduler.pods_{p}"), t);
        if let Some(f) = &self.fill {
            bind_figures(
                &mut out,
                &format!("scheduler.fill_{}_on_{}", f.pods, f.pods_before),
                f,
            );
        }
        if let Some(r) = &self.rss {
            out.push(with_target(
                m(
                    format!("rss.nodes_{}.pods_{}", r.nodes, r.pods),
                    mib(r.rss_bytes),
                    "MiB",
                ),
                "<= 2048 (1k nodes, 30k pods)",
                mib(r.rss_bytes) <= 2048.0,
            ));
            out.push(m(
                format!("rss.nodes_{}.pods_{}.peak", r.nodes, r.pods),
                mib(r.hwm_bytes),
                "MiB",
            ));
        }
        let sc = &self.scale;
        let r = sc.replicas;
        out.push(m(
            format!("scale_0_to_{r}.all_created"),
            sc.all_created_seconds,
            "s",
        ));
        out.push(m(
            format!("scale_0_to_{r}.all_bound"),
            sc.all_bound_seconds,
            "s",
        ));
        out.push(m(
            format!("scale_0_to_{r}.all_running"),
            sc.all_running_seconds,
            "s",
        ));
        out.push(m(
            format!("scale_0_to_{r}.deployment_available"),
            sc.available_seconds,
            "s",
        ));
        out.push(m(
            format!("scale_0_to_{r}.server_cpu"),
            sc.server_cpu_seconds,
            "s",
        ));
        out.push(m(
            format!("scale_0_to_{r}.rss_after"),
            mib(sc.rss_after_bytes),
            "MiB",
        ));
        out.push(m(
            "server.log".into(),
            self.server_log_bytes as f64 / 1024.0,
            "KiB",
        ));
        out
    }

    /// A table a person can read and compare.
    pub fn print_human(&self) {
        let c = &self.config;
        let mc = &self.machine;
        println!("mini scheduler/controllers benchmark  {}", self.timestamp);
        println!(
            "machine: {} cpus, {} RAM, load {} at start (server, client and simulated nodes share it)",
            mc.cpus,
            mc.mem_total_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_else(|| "?".into()),
            mc.load_avg_1m_at_start
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "?".into()),
        );
        println!(
            "config: nodes={} ({} cpu, {}, {} pods, lease every {}s) pods={} rss-pods={} scale=0→{} creators={} pod≈{}B requests {}",
            c.nodes,
            c.node_cpu,
            c.node_memory,
            c.max_pods,
            c.lease_interval_seconds,
            c.pods,
            c.rss_pods,
            c.scale,
            c.concurrency,
            c.pod_json_bytes,
            c.pod_requests,
        );
        println!(
            "phase 1: mini server --disable controllers (scheduler only); phase 2: everything on"
        );
        println!();
        println!("{:<52} {:>10}  {:<7} target", "name", "value", "unit");
        for x in self.measurements() {
            let t = match (x.target, x.meets_target) {
                (Some(t), Some(true)) => format!("{t}  ok"),
                (Some(t), Some(false)) => format!("{t}  MISSED"),
                _ => String::new(),
            };
            println!("{:<52} {:>10.2}  {:<7} {}", x.name, x.value, x.unit, t);
        }
        println!();
        println!(
            "bindings per second (phase 1, from the first binding): {:?}",
            self.throughput.bound_per_second
        );
    }

    /// Stable JSON for comparing runs: `results` is the flat list, `details` everything.
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "scheduler",
            "timestamp": self.timestamp,
            "machine": self.machine,
            "config": self.config,
            "results": self.measurements(),
            "details": self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn bind_stats_offsets_bucket_from_first_binding() {
        let s = BindStats::from_offsets(&secs(&[0.5, 0.7, 1.4, 1.6, 3.5])).unwrap();
        assert_eq!(s.count, 5);
        assert_eq!(s.first, Duration::from_secs_f64(0.5));
        assert_eq!(s.last, Duration::from_secs_f64(3.5));
        assert_eq!(s.buckets, vec![3, 1, 0, 1]);
        assert_eq!(s.window(), Duration::from_secs(3));
    }

    #[test]
    fn bind_stats_window_rate_counts_over_first_to_last() {
        let s = BindStats::from_offsets(&secs(&[1.0, 1.5, 2.0, 3.0])).unwrap();
        assert_eq!(s.window_rate(), 2.0);
    }

    #[test]
    fn bind_stats_empty_is_none() {
        assert!(BindStats::from_offsets(&[]).is_none());
    }

    #[test]
    fn bind_stats_single_binding_has_one_bucket_and_zero_rate() {
        let s = BindStats::from_offsets(&secs(&[2.0])).unwrap();
        assert_eq!(s.buckets, vec![1]);
        assert_eq!(s.window_rate(), 0.0);
    }

    #[test]
    fn mean_full_buckets_drops_partial_last_bucket() {
        assert_eq!(mean_full_buckets(&[100, 200, 3]), 150.0);
        assert_eq!(mean_full_buckets(&[7]), 7.0);
        assert_eq!(mean_full_buckets(&[]), 0.0);
    }

    #[test]
    fn batch_of_pod_names_strips_last_segment() {
        assert_eq!(batch_of("tp-000012"), "tp");
        assert_eq!(batch_of("scale-bench-7d9c-x2b4q"), "scale-bench-7d9c");
        assert_eq!(batch_of("plain"), "plain");
    }

    #[test]
    fn tracker_state_repeated_events_count_first_sightings_once() {
        let mut st = TrackerState::default();
        let t = Instant::now();
        st.observe("tp-000001", false, false, t);
        st.observe("tp-000001", true, false, t);
        st.observe("tp-000001", true, true, t);
        st.observe("tp-000001", true, true, t);
        st.observe("tp-000002", true, false, t);
        st.observe("fill-000001", false, false, t);
        let tp = st.counts["tp"];
        assert_eq!(
            tp,
            Counts {
                seen: 2,
                bound: 2,
                running: 1
            }
        );
        assert_eq!(st.counts["fill"].seen, 1);
    }

    #[test]
    fn parse_vm_hwm_status_text_returns_bytes() {
        let status = "VmPeak:\t 9 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   31232 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(40960 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t 1 kB\n"), None);
    }

    #[test]
    fn options_more_pods_than_capacity_are_invalid() {
        let opts = SchedulerBenchOptions {
            nodes: 10,
            max_pods: 110,
            rss_pods: 2_000,
            pods: 1_000,
            ..SchedulerBenchOptions::default()
        };
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }

    #[test]
    fn options_rss_pods_below_pods_are_invalid() {
        let opts = SchedulerBenchOptions {
            pods: 1_000,
            rss_pods: 500,
            ..SchedulerBenchOptions::default()
        };
        assert!(opts.validate().is_err());
    }

    #[test]
    fn bench_pod_fits_110_per_simulated_node() {
        let pod = bench_pod("tp-000001");
        assert_eq!(pod["metadata"]["labels"]["batch"], "tp");
        let req = &pod["spec"]["containers"][0]["resources"]["requests"];
        // 110 × 10m = 1.1 cpu of 8; 110 × 16Mi ≈ 1.7Gi of 32Gi
        assert_eq!(req["cpu"], "10m");
        assert_eq!(req["memory"], "16Mi");
    }
}
