//! What a generator process does: in a generator pod (`mini loadtest generate --from-env`) it
//! reads its [`WorkerConfig`], waits for the server's common start instant, runs its share of
//! the load on one thread and posts each finished second to the server; on a workstation
//! (`mini loadtest generate --url …`, the benchmark) it runs a [`Plan`] and returns the merged
//! results, and [`merge_results`] adds several generators' result files exactly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::generator::{run, Load, Plan};
use crate::results::{encode, Merger, ReportBatch, RunResults, SecondReport};
use crate::LoadTestError;

/// The environment variable holding a generator pod's [`WorkerConfig`] as JSON.
pub const CONFIG_ENV: &str = "MINI_LOADTEST_CONFIG";

/// A generator pod's instructions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerConfig {
    pub plan: Plan,
    pub generator: u32,
    /// The API server, `https://host:port`.
    pub server: String,
    pub uid: String,
    /// The run's bearer token for the results endpoint.
    pub token: String,
    pub ca_pem: String,
}

fn http_err(what: &str) -> impl Fn(String) -> LoadTestError + '_ {
    move |e| LoadTestError::Http(format!("{what}: {e}"))
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn https_client(ca_pem: &str) -> Result<HttpsClient, LoadTestError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| http_err("reading the cluster CA")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| http_err("adding the cluster CA")(e.to_string()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| http_err("configuring TLS")(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

struct Server {
    client: HttpsClient,
    base: String,
    token: String,
}

impl Server {
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, LoadTestError> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{}{path}", self.base, crate::route::PREFIX))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| http_err("building a request")(e.to_string()))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| http_err("reaching the server")(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http_err("reading the server's answer")(e.to_string()))?
            .to_bytes();
        if status == http::StatusCode::GONE {
            return Ok(serde_json::json!({"stop": true, "gone": true}));
        }
        if !status.is_success() {
            return Err(LoadTestError::Http(format!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| http_err("the server's answer")(e.to_string()))
    }
}

/// Runs a generator pod from [`CONFIG_ENV`]; returns when the run is over or the server says
/// stop.
pub fn run_from_env() -> Result<(), LoadTestError> {
    let text = std::env::var(CONFIG_ENV).map_err(|_| {
        LoadTestError::Invalid(format!(
            "{CONFIG_ENV} is not set: this command runs inside the generator pods the load test controller creates"
        ))
    })?;
    let config: WorkerConfig = serde_json::from_str(&text).map_err(|e| {
        LoadTestError::Invalid(format!("{CONFIG_ENV} is not a generator config: {e}"))
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadTestError::Http(format!("starting the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, work(config))
}

async fn work(config: WorkerConfig) -> Result<(), LoadTestError> {
    let server = Server {
        client: https_client(&config.ca_pem)?,
        base: config.server.trim_end_matches('/').to_string(),
        token: config.token.clone(),
    };
    let start_path = format!("runs/{}/start", config.uid);
    let start_ms = loop {
        match server
            .call(http::Method::GET, &start_path, Vec::new())
            .await
        {
            Ok(v) if v["stop"].as_bool() == Some(true) => return Ok(()),
            Ok(v) => {
                if let Some(ms) = v["startUnixMs"].as_i64() {
                    break ms;
                }
            }
            Err(e) => eprintln!("mini loadtest generator: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let start = Instant::now() + Duration::from_millis((start_ms - now_ms).max(0) as u64);
    let (tx, mut rx) = mpsc::unbounded_channel::<SecondReport>();
    let plan = config.plan.clone();
    let generator = tokio::task::spawn_local(async move { run(&plan, start, tx, false).await });
    let reports_path = format!("runs/{}/reports", config.uid);
    let mut pending: Vec<SecondReport> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut closed = false;
    loop {
        tokio::select! {
            msg = rx.recv(), if !closed => match msg {
                Some(s) => { pending.push(s); continue; }
                None => closed = true,
            },
            _ = tick.tick() => {}
        }
        if pending.is_empty() && !closed {
            continue;
        }
        let batch = ReportBatch {
            generator: config.generator,
            seconds: pending.clone(),
            done: closed,
        };
        let body = serde_json::to_vec(&batch).map_err(|e| LoadTestError::Report(e.to_string()))?;
        match server.call(http::Method::POST, &reports_path, body).await {
            Ok(v) => {
                pending.clear();
                if v["stop"].as_bool() == Some(true) || closed {
                    generator.abort();
                    return Ok(());
                }
            }
            // kept and sent again with the next batch (the server counts each second once)
            Err(e) => eprintln!("mini loadtest generator: sending results: {e}"),
        }
    }
}

/// Runs `plan` here, now, and returns its results (and every latency in µs with `keep_raw`).
pub fn run_local(plan: &Plan, keep_raw: bool) -> Result<(RunResults, Vec<u64>), LoadTestError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadTestError::Http(format!("starting the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = chrono::Utc::now();
    let raw = local.block_on(&rt, run(plan, Instant::now(), tx, keep_raw))?;
    let mut merger = Merger::default();
    let mut seconds = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seconds.push(s);
    }
    merger.add(&ReportBatch {
        generator: 0,
        seconds,
        done: true,
    })?;
    let duration = plan.duration_ms as f64 / 1e3;
    let requested = match plan.load {
        Load::Open { rate, .. } => Some(
            crate::schedule::Schedule {
                rate,
                ramp_up: Duration::from_millis(plan.ramp_up_ms),
                duration: Duration::from_millis(plan.duration_ms),
            }
            .mean_rate(),
        ),
        Load::Closed { .. } => None,
    };
    let model = match plan.load {
        Load::Open { rate, connections } => format!("open {rate}/s, {connections} connections"),
        Load::Closed { users } => format!("closed {users} users"),
    };
    Ok((
        RunResults {
            namespace: String::new(),
            name: "local".into(),
            target: plan.url.clone(),
            url: plan.url.clone(),
            model,
            generators: 1,
            duration_seconds: duration,
            ramp_up_seconds: plan.ramp_up_ms as f64 / 1e3,
            start_time: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            phase: "Succeeded".into(),
            summary: merger.summary(duration, requested),
            seconds: merger.rows(),
            histogram: encode(merger.total()),
            ..Default::default()
        },
        raw,
    ))
}

/// Adds the results of several generators (each a [`RunResults`] of one generator) exactly:
/// their per-second histograms are summed, never their percentiles averaged.
pub fn merge_results(parts: &[RunResults]) -> Result<RunResults, LoadTestError> {
    let mut merger = Merger::default();
    for (i, part) in parts.iter().enumerate() {
        merger.add(&ReportBatch {
            generator: i as u32,
            seconds: part
                .seconds
                .iter()
                .map(|row| SecondReport {
                    second: row.second,
                    requests: row.requests,
                    codes: row.codes.clone(),
                    errors: row.error_kinds.clone(),
                    histogram: row.histogram.clone(),
                    lag_ms: 0.0,
                })
                .collect(),
            done: true,
        })?;
    }
    let first = parts.first().cloned().unwrap_or_default();
    let duration = first.duration_seconds;
    let requested: Option<f64> = parts
        .iter()
        .map(|p| p.summary.requested_rate)
        .sum::<Option<f64>>();
    Ok(RunResults {
        generators: parts.len() as u32,
        summary: merger.summary(duration, requested),
        seconds: merger.rows(),
        histogram: encode(merger.total()),
        thresholds: Vec::new(),
        resources: Vec::new(),
        ..first
    })
}

/// Headers given as `Name: value` strings.
pub fn parse_headers(list: &[String]) -> Result<BTreeMap<String, String>, LoadTestError> {
    list.iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    LoadTestError::Invalid(format!("header {h:?}: write it as 'Name: value'"))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{new_hist, record, SecondRow};

    #[test]
    fn merge_results_sums_histograms_of_generators() {
        let part = |values: &[u64]| {
            let mut h = new_hist();
            for v in values {
                record(&mut h, *v);
            }
            RunResults {
                duration_seconds: 1.0,
                seconds: vec![SecondRow {
                    second: 0,
                    requests: values.len() as u64,
                    codes: [("200".to_string(), values.len() as u64)].into(),
                    histogram: encode(&h),
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        let merged = merge_results(&[part(&[1000; 99]), part(&[100_000])]).unwrap();
        assert_eq!(merged.summary.requests, 100);
        assert_eq!(merged.generators, 2);
        assert!((merged.summary.latency.max - 100.0).abs() < 0.2);
        // p99 of the union: the 99th of 100 values is still 1 ms
        assert!((merged.summary.latency.p99 - 1.0).abs() < 0.01);
    }

    #[test]
    fn parse_headers_splits_on_the_first_colon() {
        let h = parse_headers(&["X-A: b:c".into()]).unwrap();
        assert_eq!(h.get("X-A").map(String::as_str), Some("b:c"));
        assert!(parse_headers(&["nocolon".into()]).is_err());
    }
}
