//! What `mini loadtest run | ls | report | cancel` do against a cluster (the clap types live in
//! the binary's `src/`): create a LoadTest and follow it with a line per second and a summary,
//! list runs, download an export, cancel a run.

use std::io::Write;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::report::Format;
use crate::spec::{validate, LoadTest, LoadTestSpec, LoadTestStatus, Phase};
use crate::{api_err, LoadTestError};

/// How a followed run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub name: String,
    pub phase: Phase,
    /// Every threshold held and the run completed.
    pub passed: bool,
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}s", v / 1e3)
    } else {
        format!("{v:.2}ms")
    }
}

/// The summary printed at the end of a run.
pub fn summary_text(name: &str, status: &LoadTestStatus) -> String {
    let mut out = String::new();
    let phase = status.phase.map(|p| p.to_string()).unwrap_or_default();
    out.push_str(&format!(
        "loadtest {name}: {phase} ({}){}\n",
        status.reason.clone().unwrap_or_default(),
        status
            .message
            .as_ref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    ));
    let requested = status
        .requested_rate
        .map(|r| format!(" of {r:.1}/s requested"))
        .unwrap_or_default();
    out.push_str(&format!(
        "  requests {}  errors {}  rate {:.1}/s{requested}\n",
        status.requests, status.errors, status.achieved_rate
    ));
    if let Some(l) = status.latency {
        out.push_str(&format!(
            "  latency p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        ));
    }
    for v in &status.thresholds {
        out.push_str(&format!(
            "  threshold {:<16} actual {:>10.3}  {}\n",
            v.threshold,
            v.actual,
            if v.passed { "passed" } else { "FAILED" }
        ));
    }
    out
}

/// Creates a LoadTest (named `name`, else `lt-` and a generated suffix) and, with `follow`,
/// prints a line per second until it ends.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    name: Option<&str>,
    spec: LoadTestSpec,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, LoadTestError> {
    validate(&spec)?;
    let api: Api<LoadTest> = Api::namespaced(client.clone(), namespace);
    let mut lt = LoadTest {
        spec,
        ..Default::default()
    };
    match name {
        Some(n) => lt.metadata.name = Some(n.to_string()),
        None => lt.metadata.generate_name = Some("lt-".into()),
    }
    let created = api
        .create(&PostParams::default(), &lt)
        .await
        .map_err(api_err("creating the LoadTest"))?;
    let name = created.name_any();
    let _ = writeln!(out, "loadtest {namespace}/{name} created");
    if !follow {
        return Ok(Outcome {
            name,
            phase: Phase::Pending,
            passed: true,
        });
    }
    let mut last_requests = 0u64;
    let mut last_phase = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                cancel(client, namespace, &name).await?;
                let _ = writeln!(out, "interrupted: loadtest {name} cancelled");
            }
        }
        let lt = match api.get(&name).await {
            Ok(lt) => lt,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Err(LoadTestError::Http(format!(
                    "the LoadTest {namespace}/{name} was deleted during the run"
                )))
            }
            Err(e) => {
                let _ = writeln!(out, "  (reading the status failed: {e}; retrying)");
                continue;
            }
        };
        let status = lt.status.clone().unwrap_or_default();
        if status.phase != last_phase {
            if let Some(p) = status.phase {
                let _ = writeln!(out, "  {p}: {}", status.message.clone().unwrap_or_default());
            }
            last_phase = status.phase;
        }
        match status.phase {
            Some(p) if p.is_final() => {
                let _ = write!(out, "{}", summary_text(&name, &status));
                return Ok(Outcome {
                    name,
                    phase: p,
                    passed: p == Phase::Succeeded && status.passed.unwrap_or(false),
                });
            }
            Some(Phase::Running) => {
                let l = status.latency.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:>4}s  {:>8} req/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}  total {}",
                    started.elapsed().as_secs(),
                    status.requests.saturating_sub(last_requests),
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max),
                    status.errors,
                    status.requests
                );
                last_requests = status.requests;
            }
            _ => {}
        }
    }
}

/// Sets `spec.cancel`: the controller stops the generators and deletes their pods.
pub async fn cancel(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), LoadTestError> {
    let api: Api<LoadTest> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .map_err(api_err(format!(
        "cancelling the LoadTest {namespace}/{name}"
    )))?;
    Ok(())
}

/// The runs as a table.
pub async fn list(client: &kube::Client, namespace: Option<&str>) -> Result<String, LoadTestError> {
    let api: Api<LoadTest> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let items = api
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing LoadTests"))?
        .items;
    let mut out = format!(
        "{:<16} {:<24} {:<24} {:<10} {:>10} {:>10} {:>10} {:<6}\n",
        "NAMESPACE", "NAME", "TARGET", "PHASE", "REQUESTS", "RATE/S", "P99", "PASSED"
    );
    for lt in items {
        let s = lt.status.clone().unwrap_or_default();
        out.push_str(&format!(
            "{:<16} {:<24} {:<24} {:<10} {:>10} {:>10.1} {:>10} {:<6}\n",
            lt.namespace().unwrap_or_default(),
            lt.name_any(),
            lt.spec.target,
            s.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.requests,
            s.achieved_rate,
            s.latency.map(|l| ms(l.p99)).unwrap_or_else(|| "-".into()),
            s.passed
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
        ));
    }
    Ok(out)
}

/// Downloads a run's export.
pub async fn report(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    format: Format,
) -> Result<String, LoadTestError> {
    let format_name = match format {
        Format::Html => "html",
        Format::Json => "json",
        Format::Csv => "csv",
        Format::Hdr => "hdr",
    };
    let req = http::Request::get(format!(
        "{}namespaces/{namespace}/loadtests/{name}/results?format={format_name}",
        crate::route::PREFIX
    ))
    .body(Vec::new())
    .map_err(|e| LoadTestError::Http(e.to_string()))?;
    client.request_text(req).await.map_err(api_err(format!(
        "reading the results of {namespace}/{name}"
    )))
}
