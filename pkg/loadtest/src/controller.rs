//! The controller the server runs: every second it looks at each LoadTest and moves it along
//! `Pending → Running → Succeeded | Failed | Cancelled`. It validates the spec, resolves the
//! target, creates one generator pod per node (required pod anti-affinity, mini's own loadtest
//! image, nothing pulled), chooses the common start instant once all of them run, samples the
//! target pods' and nodes' CPU and memory every second, judges the thresholds, and deletes the
//! generator pods when the run ends, is cancelled, or its LoadTest is deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use mini_runtime::{EventRecorder, EventType};
use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::generator::{Load, Plan};
use crate::runs::{RunInfo, Runs};
use crate::schedule::{default_connections, Schedule};
use crate::spec::{validate, LoadTest, LoadTestStatus, Model, Phase, Validated};
use crate::target::{HttpUrl, Target};
use crate::worker::{WorkerConfig, CONFIG_ENV};
use crate::{api_err, LoadTestError};

/// The label every generator pod carries: the run's uid.
pub const RUN_LABEL: &str = "loadtest.mini.dev/run";
/// The label with the LoadTest's name.
pub const NAME_LABEL: &str = "loadtest.mini.dev/name";
/// How long generator pods may take to run before the run fails (a node imports the
/// generator image, built from its binary, when its first generator pod lands).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Delay between all generators running and the common start.
const START_DELAY: Duration = Duration::from_secs(2);
/// Achieved below this share of the requested rate is reported as not reached.
const RATE_TOLERANCE: f64 = 0.95;

/// What the controller needs to know about the server.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The API server's URL as pods reach it (`https://<advertise>:<port>`).
    pub server_url: String,
    /// The cluster CA (the generators verify the server with it).
    pub ca_pem: String,
    /// The generator image ([`crate::image::LOADTEST_IMAGE`]).
    pub image: String,
}

/// What the controller remembers about a live run.
struct Live {
    namespace: String,
    name: String,
    created: Instant,
    started: Option<Instant>,
    validated: Validated,
    /// The target's pods (for resource samples): their namespace and label selector.
    selector: Option<BTreeMap<String, String>>,
    /// The task sampling the target's CPU and memory every second; stops when dropped.
    sampler: Option<DropGuard>,
}

/// Runs the controller until `stop`.
pub async fn run(
    client: kube::Client,
    runs: Arc<Runs>,
    config: ControllerConfig,
    stop: CancellationToken,
) -> Result<(), LoadTestError> {
    crate::crd::ensure(&client).await?;
    let mut c = Controller {
        client: client.clone(),
        runs,
        config,
        events: EventRecorder::new(client, "loadtest-controller"),
        live: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = c.pass().await {
            tracing::debug!(error = %e, "load test controller pass failed; retrying");
        }
    }
    // the server stops: its generators would report to nobody
    let uids: Vec<String> = c.live.keys().cloned().collect();
    for uid in uids {
        c.runs.stop(&uid);
        let _ = c.delete_pods_of(&uid).await;
    }
    Ok(())
}

/// Between passes of [`tidy_results`].
const TIDY_PERIOD: Duration = Duration::from_secs(10);

/// Removes the stored results of deleted LoadTests until `stop`. Every server runs it (each
/// keeps copies of finished runs), not only the one running the controller.
pub async fn tidy_results(client: kube::Client, runs: Arc<Runs>, stop: CancellationToken) {
    let api: Api<LoadTest> = Api::all(client);
    let mut every = tokio::time::interval(TIDY_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let stored = runs.stored();
        if stored.is_empty() {
            continue;
        }
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, "listing LoadTests to tidy their results failed; retrying");
                continue;
            }
        };
        let names: HashSet<(String, String)> = list
            .items
            .iter()
            .map(|lt| (lt.namespace().unwrap_or_default(), lt.name_any()))
            .collect();
        for (ns, name) in stored {
            if !names.contains(&(ns.clone(), name.clone())) {
                runs.remove(&ns, &name);
                tracing::debug!(namespace = %ns, %name, "results of a deleted load test removed");
            }
        }
    }
}

struct Controller {
    client: kube::Client,
    runs: Arc<Runs>,
    config: ControllerConfig,
    events: EventRecorder,
    live: HashMap<String, Live>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The model as a report shows it.
fn model_text(v: &Validated) -> String {
    match v.model {
        Model::Open { rate } => format!("open {rate}/s"),
        Model::Closed { users } => format!("closed {users} users"),
    }
}

/// Generator `i`'s share of the load.
pub fn share(v: &Validated, i: u32) -> Load {
    let g = v.generators.max(1);
    match v.model {
        Model::Open { rate } => {
            let rate = rate / f64::from(g);
            Load::Open {
                rate,
                connections: v.connections.unwrap_or_else(|| default_connections(rate)),
            }
        }
        Model::Closed { users } => Load::Closed {
            users: users / g + u32::from(i < users % g),
        },
    }
}

impl Controller {
    async fn pass(&mut self) -> Result<(), LoadTestError> {
        let api: Api<LoadTest> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(api_err("listing LoadTests"))?;
        let present: HashSet<String> = list.items.iter().filter_map(|lt| lt.uid()).collect();
        // deleted LoadTests: stop their runs and forget their results
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(l) = self.live.remove(&uid) {
                self.runs.stop(&uid);
                let _ = self.runs.finish(&uid, "Cancelled");
                self.runs.remove(&l.namespace, &l.name);
                tracing::info!(namespace = %l.namespace, name = %l.name, "load test deleted; its generators are stopped");
            }
            self.delete_pods_of(&uid).await?;
        }
        self.delete_orphan_pods(&present).await;
        for lt in list.items {
            if let Err(e) = self.reconcile(&lt).await {
                tracing::warn!(namespace = ?lt.namespace(), name = %lt.name_any(), error = %e, "load test reconcile failed");
            }
        }
        Ok(())
    }

    /// Generator pods whose LoadTest is gone (the server restarted meanwhile).
    async fn delete_orphan_pods(&self, present: &HashSet<String>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let Ok(list) = pods.list(&ListParams::default().labels(RUN_LABEL)).await else {
            return;
        };
        for pod in list.items {
            let uid = pod.labels().get(RUN_LABEL).cloned().unwrap_or_default();
            if !present.contains(&uid) || !self.live.contains_key(&uid) {
                let api: Api<Pod> =
                    Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
                let _ = api.delete(&pod.name_any(), &DeleteParams::default()).await;
            }
        }
    }

    async fn reconcile(&mut self, lt: &LoadTest) -> Result<(), LoadTestError> {
        let uid = lt.uid().unwrap_or_default();
        let status = lt.status.clone().unwrap_or_default();
        let phase = status.phase;
        if phase.is_some_and(Phase::is_final) {
            return Ok(());
        }
        if lt.spec.cancel {
            return self.cancel(lt, &uid).await;
        }
        match phase {
            None => self.begin(lt, &uid).await,
            Some(_) if !self.live.contains_key(&uid) => {
                self.delete_pods_of(&uid).await?;
                self.fail(
                    lt,
                    "ServerRestarted",
                    "the server that ran it stopped or restarted during the run and its results are lost; create the LoadTest again".into(),
                )
                .await
            }
            Some(Phase::Pending) => self.pending(lt, &uid).await,
            Some(_) => self.running(lt, &uid, status).await,
        }
    }

    async fn set_status(
        &self,
        lt: &LoadTest,
        status: &LoadTestStatus,
    ) -> Result<(), LoadTestError> {
        let api: Api<LoadTest> =
            Api::namespaced(self.client.clone(), &lt.namespace().unwrap_or_default());
        api.patch_status(
            &lt.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(api_err(format!(
            "updating the status of the LoadTest {}",
            lt.name_any()
        )))?;
        Ok(())
    }

    async fn event(&self, lt: &LoadTest, kind: EventType, reason: &str, message: &str) {
        let reference = lt.object_ref(&());
        if let Err(e) = self.events.record(&reference, kind, reason, message).await {
            tracing::debug!(error = %e, "recording a load test event failed");
        }
    }

    /// Ends the run as Failed with `reason`, deleting what it started.
    async fn fail(
        &mut self,
        lt: &LoadTest,
        reason: &str,
        message: String,
    ) -> Result<(), LoadTestError> {
        let uid = lt.uid().unwrap_or_default();
        self.runs.stop(&uid);
        self.delete_pods_of(&uid).await?;
        let mut status = lt.status.clone().unwrap_or_default();
        if let Some(Ok(results)) = self.runs.finish(&uid, "Failed") {
            fill(&mut status, &results);
        }
        self.live.remove(&uid);
        status.phase = Some(Phase::Failed);
        status.reason = Some(reason.into());
        status.message = Some(message.clone());
        status.passed = Some(false);
        status.completion_time = Some(now_rfc3339());
        self.set_status(lt, &status).await?;
        self.event(lt, EventType::Warning, reason, &message).await;
        Ok(())
    }

    async fn cancel(&mut self, lt: &LoadTest, uid: &str) -> Result<(), LoadTestError> {
        self.runs.stop(uid);
        self.delete_pods_of(uid).await?;
        let mut status = lt.status.clone().unwrap_or_default();
        if let Some(Ok(results)) = self.runs.finish(uid, "Cancelled") {
            fill(&mut status, &results);
        }
        self.live.remove(uid);
        status.phase = Some(Phase::Cancelled);
        status.reason = Some("Cancelled".into());
        status.message = Some("cancelled; the generator pods are deleted".into());
        status.completion_time = Some(now_rfc3339());
        self.set_status(lt, &status).await?;
        self.event(
            lt,
            EventType::Normal,
            "Cancelled",
            "the run was cancelled; its generator pods are deleted",
        )
        .await;
        Ok(())
    }

    /// A new LoadTest: validate, resolve, create the generators.
    async fn begin(&mut self, lt: &LoadTest, uid: &str) -> Result<(), LoadTestError> {
        let ns = lt.namespace().unwrap_or_default();
        let v = match validate(&lt.spec) {
            Ok(v) => v,
            Err(e) => return self.fail(lt, "InvalidSpec", e.to_string()).await,
        };
        let (url, selector, extra_headers) = match self.resolve(&ns, &v.target).await {
            Ok(r) => r,
            Err((reason, message)) => return self.fail(lt, reason, message).await,
        };
        let nodes = self.ready_nodes().await?;
        if (nodes as u32) < v.generators {
            let message = format!(
                "{} generators need {} Ready nodes (one generator per node); the cluster has {nodes}",
                v.generators, v.generators
            );
            return self.fail(lt, "NotEnoughNodes", message).await;
        }
        let schedule_rate = match v.model {
            Model::Open { rate } => Some(
                Schedule {
                    rate,
                    ramp_up: v.ramp_up,
                    duration: v.duration,
                }
                .mean_rate(),
            ),
            Model::Closed { .. } => None,
        };
        let token = random_token();
        self.runs.register(
            RunInfo {
                namespace: ns.clone(),
                name: lt.name_any(),
                uid: uid.to_string(),
                target: v.target.clone(),
                url: url.to_string(),
                model: model_text(&v),
                generators: v.generators,
                duration_seconds: v.duration.as_secs_f64(),
                ramp_up_seconds: v.ramp_up.as_secs_f64(),
                requested_rate: schedule_rate,
                thresholds: v.thresholds.clone(),
            },
            token.clone(),
        );
        let mut headers = v.headers.clone();
        for (k, val) in extra_headers {
            headers.entry(k).or_insert(val);
        }
        for i in 0..v.generators {
            let plan = Plan {
                url: url.to_string(),
                method: v.method.clone(),
                headers: headers.clone(),
                body: v.body.clone(),
                load: share(&v, i),
                duration_ms: v.duration.as_millis() as u64,
                ramp_up_ms: v.ramp_up.as_millis() as u64,
                timeout_ms: v.timeout.as_millis() as u64,
            };
            let worker = WorkerConfig {
                plan,
                generator: i,
                server: self.config.server_url.clone(),
                uid: uid.to_string(),
                token: token.clone(),
                ca_pem: self.config.ca_pem.clone(),
            };
            let pod = self.generator_pod(lt, uid, i, &worker)?;
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = pods.create(&PostParams::default(), &pod).await {
                let message = format!("creating the generator pod {i}: {e}");
                self.live.insert(
                    uid.to_string(),
                    Live {
                        namespace: ns.clone(),
                        name: lt.name_any(),
                        created: Instant::now(),
                        started: None,
                        validated: v.clone(),
                        selector: None,
                        sampler: None,
                    },
                );
                return self.fail(lt, "GeneratorsNotCreated", message).await;
            }
        }
        self.live.insert(
            uid.to_string(),
            Live {
                namespace: ns.clone(),
                name: lt.name_any(),
                created: Instant::now(),
                started: None,
                validated: v.clone(),
                selector,
                sampler: None,
            },
        );
        let status = LoadTestStatus {
            phase: Some(Phase::Pending),
            reason: Some("Starting".into()),
            message: Some(format!(
                "waiting for {} generator pods to run",
                v.generators
            )),
            url: Some(url.to_string()),
            requested_rate: schedule_rate,
            ..Default::default()
        };
        self.set_status(lt, &status).await?;
        self.event(
            lt,
            EventType::Normal,
            "GeneratorsCreated",
            &format!("created {} generator pods for {url}", v.generators),
        )
        .await;
        Ok(())
    }

    fn generator_pod(
        &self,
        lt: &LoadTest,
        uid: &str,
        i: u32,
        worker: &WorkerConfig,
    ) -> Result<Pod, LoadTestError> {
        let config =
            serde_json::to_string(worker).map_err(|e| LoadTestError::Report(e.to_string()))?;
        let name = format!("{}-gen-{i}", lt.name_any());
        let owner = json!({
            "apiVersion": format!("{}/{}", crate::spec::GROUP, crate::spec::VERSION),
            "kind": "LoadTest", "name": lt.name_any(), "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        });
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {RUN_LABEL: uid, NAME_LABEL: lt.name_any()},
                "ownerReferences": [owner],
            },
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "enableServiceLinks": false,
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {RUN_LABEL: uid}},
                    "topologyKey": "kubernetes.io/hostname",
                }]}},
                "containers": [{
                    "name": "generator",
                    "image": self.config.image,
                    "imagePullPolicy": "Never",
                    "args": ["loadtest", "generate", "--from-env"],
                    "env": [{"name": CONFIG_ENV, "value": config}],
                }],
            },
        }))
        .map_err(|e| LoadTestError::Report(format!("building the generator pod: {e}")))
    }

    async fn ready_nodes(&self) -> Result<usize, LoadTestError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(api_err("listing nodes"))?;
        Ok(list
            .items
            .iter()
            .filter(|n| {
                !n.spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
                    && n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            })
            .count())
    }

    /// The URL to send to, the target pods' selector, and headers the target needs (`Host`).
    async fn resolve(
        &self,
        ns: &str,
        target: &str,
    ) -> Result<
        (
            HttpUrl,
            Option<BTreeMap<String, String>>,
            Vec<(String, String)>,
        ),
        (&'static str, String),
    > {
        let target = Target::parse(target).map_err(|e| ("InvalidSpec", e))?;
        match target {
            Target::Url(url) => Ok((url, None, Vec::new())),
            Target::Service { name, port, path } => {
                let (url, selector) = self.service_url(ns, &name, port.as_deref(), &path).await?;
                Ok((url, selector, Vec::new()))
            }
            Target::Ingress { name, path } => {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
                let ing = api.get_opt(&name).await.ok().flatten().ok_or((
                    "TargetNotFound",
                    format!("the Ingress {ns}/{name} does not exist"),
                ))?;
                let status_ip = ing
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .and_then(|i| i.first())
                    .and_then(|i| i.ip.clone())
                    .ok_or((
                        "TargetNotFound",
                        format!("the Ingress {ns}/{name} has no address yet (status.loadBalancer is empty)"),
                    ))?;
                let rule = ing
                    .spec
                    .as_ref()
                    .and_then(|s| s.rules.as_ref())
                    .and_then(|r| r.first())
                    .cloned();
                let host = rule.as_ref().and_then(|r| r.host.clone());
                let backend = rule
                    .as_ref()
                    .and_then(|r| r.http.as_ref())
                    .and_then(|h| h.paths.first())
                    .and_then(|p| p.backend.service.as_ref())
                    .map(|s| s.name.clone());
                let selector = match backend {
                    Some(svc) => self
                        .service_url(ns, &svc, None, "/")
                        .await
                        .ok()
                        .and_then(|r| r.1),
                    None => None,
                };
                let url = HttpUrl {
                    host: status_ip,
                    port: 80,
                    path,
                };
                let headers = host
                    .map(|h| vec![("host".to_string(), h)])
                    .unwrap_or_default();
                Ok((url, selector, headers))
            }
        }
    }

    async fn service_url(
        &self,
        ns: &str,
        name: &str,
        port: Option<&str>,
        path: &str,
    ) -> Result<(HttpUrl, Option<BTreeMap<String, String>>), (&'static str, String)> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let svc = api.get_opt(name).await.ok().flatten().ok_or((
            "TargetNotFound",
            format!("the Service {ns}/{name} does not exist"),
        ))?;
        let spec = svc.spec.clone().unwrap_or_default();
        let ip = spec
            .cluster_ip
            .clone()
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or((
                "TargetNotFound",
                format!("the Service {ns}/{name} has no cluster IP (headless); target a pod URL instead"),
            ))?;
        let ports = spec.ports.clone().unwrap_or_default();
        let chosen = match port {
            None => ports.first(),
            Some(p) => ports
                .iter()
                .find(|sp| sp.name.as_deref() == Some(p) || sp.port.to_string() == p),
        }
        .ok_or((
            "TargetNotFound",
            format!(
                "the Service {ns}/{name} has no port {}",
                port.unwrap_or("at all")
            ),
        ))?;
        let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let ready = eps
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|e| e.subsets)
            .unwrap_or_default()
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        if ready == 0 {
            return Err((
                "NoEndpoints",
                format!("the Service {ns}/{name} resolves to nothing: no ready pods back it (check its selector and the pods)"),
            ));
        }
        Ok((
            HttpUrl {
                host: ip,
                port: chosen.port as u16,
                path: path.to_string(),
            },
            spec.selector.clone().filter(|s| !s.is_empty()),
        ))
    }

    async fn pods_of(&self, uid: &str, ns: &str) -> Result<Vec<Pod>, LoadTestError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(api
            .list(&ListParams::default().labels(&format!("{RUN_LABEL}={uid}")))
            .await
            .map_err(api_err("listing generator pods"))?
            .items)
    }

    async fn delete_pods_of(&self, uid: &str) -> Result<(), LoadTestError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().labels(&format!("{RUN_LABEL}={uid}")))
            .await
            .map_err(api_err("listing generator pods"))?;
        for pod in list.items {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(1),
                ..Default::default()
            };
            if let Err(e) = api.delete(&pod.name_any(), &dp).await {
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    return Err(api_err(format!(
                        "deleting the generator pod {}",
                        pod.name_any()
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// Why a generator pod cannot run, if it cannot.
    fn pod_problem(pod: &Pod) -> Option<String> {
        let status = pod.status.as_ref()?;
        let name = pod.name_any();
        if status.phase.as_deref() == Some("Failed") {
            let detail = status
                .container_statuses
                .as_ref()
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        "exit code {}{}",
                        t.exit_code,
                        t.message
                            .as_ref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )
                })
                .or_else(|| status.message.clone())
                .unwrap_or_else(|| "no reason given".into());
            return Some(format!("the generator pod {name} failed ({detail})"));
        }
        let waiting = status
            .container_statuses
            .as_ref()
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if [
                "CreateContainerError",
                "CrashLoopBackOff",
                "RunContainerError",
            ]
            .contains(&reason.as_str())
            {
                return Some(format!(
                    "the generator pod {name} cannot start: {reason}{}",
                    w.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
        None
    }

    async fn pending(&mut self, lt: &LoadTest, uid: &str) -> Result<(), LoadTestError> {
        let Some(live) = self.live.get(uid) else {
            return Ok(());
        };
        let (ns, generators, created) = (
            live.namespace.clone(),
            live.validated.generators,
            live.created,
        );
        let pods = self.pods_of(uid, &ns).await?;
        for pod in &pods {
            if let Some(problem) = Self::pod_problem(pod) {
                return self.fail(lt, "GeneratorFailed", problem).await;
            }
        }
        let running = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count() as u32;
        if running < generators {
            if created.elapsed() > START_TIMEOUT {
                let why = pods
                    .iter()
                    .filter_map(|p| {
                        let s = p.status.as_ref()?;
                        let unscheduled = s.conditions.as_ref().and_then(|cs| {
                            cs.iter()
                                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                        });
                        if let Some(c) = unscheduled {
                            return Some(format!(
                                "{}: {}",
                                p.name_any(),
                                c.message.clone().unwrap_or_default()
                            ));
                        }
                        let w = s
                            .container_statuses
                            .as_ref()?
                            .first()?
                            .state
                            .as_ref()?
                            .waiting
                            .as_ref()?;
                        Some(format!(
                            "{}: {}",
                            p.name_any(),
                            w.reason.clone().unwrap_or_default()
                        ))
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let message = format!(
                    "only {running} of {generators} generator pods ran within {}s{}",
                    START_TIMEOUT.as_secs(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
                return self.fail(lt, "GeneratorsNotStarted", message).await;
            }
            if pods.len() < generators as usize && created.elapsed() > Duration::from_secs(5) {
                return self
                    .fail(
                        lt,
                        "GeneratorFailed",
                        format!(
                            "only {} of {generators} generator pods exist; one was deleted",
                            pods.len()
                        ),
                    )
                    .await;
            }
            return Ok(());
        }
        let start = chrono::Utc::now() + START_DELAY;
        self.runs.set_start(uid, start.timestamp_millis());
        if let Some(live) = self.live.get_mut(uid) {
            let started = Instant::now() + START_DELAY;
            live.started = Some(started);
            live.sampler = live.selector.clone().map(|selector| {
                crate::resources::spawn_sampler(
                    self.client.clone(),
                    self.runs.clone(),
                    uid.to_string(),
                    live.namespace.clone(),
                    selector,
                    started,
                )
            });
        }
        let mut status = lt.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Running);
        status.reason = Some("Running".into());
        status.message = Some(format!("{generators} generators start together"));
        status.generators = running;
        status.start_time = Some(start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        self.set_status(lt, &status).await?;
        self.event(
            lt,
            EventType::Normal,
            "Started",
            &format!(
                "{generators} generators start at {}",
                status.start_time.clone().unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    async fn running(
        &mut self,
        lt: &LoadTest,
        uid: &str,
        mut status: LoadTestStatus,
    ) -> Result<(), LoadTestError> {
        let Some(live) = self.live.get(uid) else {
            return Ok(());
        };
        let (ns, v, started) = (live.namespace.clone(), live.validated.clone(), live.started);
        let Some(started) = started else {
            return Ok(());
        };
        let now = Instant::now();
        if now < started {
            return Ok(());
        }
        let elapsed = now - started;
        let (done, _, connect_errors, requests) = self.runs.progress(uid).unwrap_or_default();
        // generators that died
        let pods = self.pods_of(uid, &ns).await?;
        for pod in &pods {
            if let Some(problem) = Self::pod_problem(pod) {
                return self.fail(lt, "GeneratorFailed", problem).await;
            }
        }
        let exited = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
            .count();
        if (pods.len() as u32) < v.generators && (done as u32) < v.generators {
            return self
                .fail(
                    lt,
                    "GeneratorFailed",
                    format!(
                        "a generator pod was deleted during the run ({} of {} left)",
                        pods.len(),
                        v.generators
                    ),
                )
                .await;
        }
        if elapsed > Duration::from_secs(5) && requests > 0 && connect_errors == requests {
            let url = status.url.clone().unwrap_or_default();
            return self
                .fail(lt, "TargetUnreachable", format!("no connection to {url} succeeded in the first {}s ({connect_errors} refused or unreachable)", elapsed.as_secs()))
                .await;
        }
        let grace = v.timeout + Duration::from_secs(15);
        let all_done = done as u32 >= v.generators;
        if !all_done && elapsed < v.duration + grace {
            if exited as u32 >= v.generators && elapsed > v.duration + Duration::from_secs(5) {
                // exited without their last report: treat as done
            } else {
                if let Some(snapshot) = self.runs.snapshot(uid) {
                    fill(&mut status, &snapshot);
                    let secs = elapsed.as_secs_f64().min(v.duration.as_secs_f64()).max(1.0);
                    status.achieved_rate = snapshot.summary.requests as f64 / secs;
                    self.set_status(lt, &status).await?;
                }
                return Ok(());
            }
        }
        // the run is over
        self.runs.stop(uid);
        let results = match self.runs.finish(uid, "Succeeded") {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "writing load test results failed");
                return self.fail(lt, "ResultsNotStored", e.to_string()).await;
            }
            None => return Ok(()),
        };
        self.live.remove(uid);
        self.delete_pods_of(uid).await?;
        fill(&mut status, &results);
        status.completion_time = Some(now_rfc3339());
        let failed: Vec<String> = results
            .thresholds
            .iter()
            .filter(|t| !t.passed)
            .map(|t| format!("{} (actual {:.3})", t.threshold, t.actual))
            .collect();
        let short_rate = results
            .summary
            .requested_rate
            .filter(|req| results.summary.achieved_rate < req * RATE_TOLERANCE);
        let (phase, reason, message, kind) = if !all_done {
            (
                Phase::Failed,
                "GeneratorsLost",
                format!(
                    "only {done} of {} generators reported their end",
                    v.generators
                ),
                EventType::Warning,
            )
        } else if !failed.is_empty() {
            (
                Phase::Failed,
                "ThresholdsFailed",
                format!("failed thresholds: {}", failed.join(", ")),
                EventType::Warning,
            )
        } else if let Some(req) = short_rate {
            (
                Phase::Failed,
                "RateNotReached",
                format!(
                    "achieved {:.1} requests/s of the requested {req:.1}/s (generators lagged up to {:.0} ms behind their schedule); add generators or lower the rate",
                    results.summary.achieved_rate, results.summary.max_lag_ms
                ),
                EventType::Warning,
            )
        } else {
            (
                Phase::Succeeded,
                "Completed",
                format!(
                    "{} requests, {:.1}/s, p99 {:.2} ms, {} errors",
                    results.summary.requests,
                    results.summary.achieved_rate,
                    results.summary.latency.p99,
                    results.summary.errors
                ),
                EventType::Normal,
            )
        };
        status.phase = Some(phase);
        status.reason = Some(reason.into());
        status.message = Some(message.clone());
        status.passed = Some(phase == Phase::Succeeded);
        self.set_status(lt, &status).await?;
        self.event(lt, kind, reason, &message).await;
        Ok(())
    }
}

/// Copies a results document's totals into a status.
fn fill(status: &mut LoadTestStatus, r: &crate::results::RunResults) {
    status.requests = r.summary.requests;
    status.errors = r.summary.errors;
    status.achieved_rate = (r.summary.achieved_rate * 10.0).round() / 10.0;
    status.latency = Some(r.summary.latency);
    status.thresholds = r.thresholds.clone();
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::LoadTestSpec;

    #[test]
    fn share_splits_rate_and_users_over_generators() {
        let v = validate(&LoadTestSpec {
            target: "svc/web".into(),
            users: Some(5),
            generators: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(share(&v, 0), Load::Closed { users: 3 });
        assert_eq!(share(&v, 1), Load::Closed { users: 2 });
        let v = validate(&LoadTestSpec {
            target: "svc/web".into(),
            rate: Some(3000),
            generators: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            share(&v, 2),
            Load::Open {
                rate: 1000.0,
                connections: 50
            }
        );
    }
}
