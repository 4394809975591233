//! Container probes (startup, liveness, readiness): one task per probe of a running container,
//! running exec (CRI ExecSync), httpGet (plain HTTP to the pod IP) or tcpSocket checks with
//! upstream's timing fields and thresholds, publishing the result for the pod worker.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mini_cri::Runtime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure(String),
}

/// What a probe task publishes: `None` until a threshold is crossed.
#[derive(Debug, Default)]
pub(crate) struct ProbeState {
    pub result: Option<bool>,
    /// The message of the last failure (for the Unhealthy event and the Killing message).
    pub last_failure: String,
}

/// Where and how to probe one container.
#[derive(Clone)]
pub(crate) struct ProbeTarget {
    pub runtime: Arc<dyn Runtime>,
    pub container_id: String,
    pub container: Container,
    pub pod_ip: Option<IpAddr>,
}

/// Runs one probe action once.
pub(crate) async fn run_once(target: &ProbeTarget, probe: &Probe, timeout: Duration) -> Outcome {
    let run = async {
        if let Some(exec) = &probe.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            match target
                .runtime
                .exec_sync(
                    &target.container_id,
                    cmd.clone(),
                    timeout.as_secs().max(1) as i64,
                )
                .await
            {
                Ok(r) if r.exit_code == 0 => Outcome::Success,
                Ok(r) => {
                    let out = String::from_utf8_lossy(&r.stdout).trim().to_string();
                    let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
                    Outcome::Failure(format!(
                        "command {cmd:?} exited with {}: {out}{}{err}",
                        r.exit_code,
                        if out.is_empty() || err.is_empty() {
                            ""
                        } else {
                            " "
                        }
                    ))
                }
                Err(e) => Outcome::Failure(format!("exec {cmd:?}: {e}")),
            }
        } else if let Some(get) = &probe.http_get {
            http_get(target, get).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = match resolve_port(&target.container, &tcp.port) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let host = match tcp
                .host
                .as_deref()
                .and_then(|h| h.parse().ok())
                .or(target.pod_ip)
            {
                Some(h) => h,
                None => return Outcome::Failure("pod has no IP for tcp probe".into()),
            };
            match tokio::net::TcpStream::connect(SocketAddr::new(host, port)).await {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            }
        } else if probe.grpc.is_some() {
            Outcome::Failure("grpc probes are not supported by this kubelet".into())
        } else {
            Outcome::Failure("probe has no handler".into())
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failure(format!("probe timed out after {timeout:?}")),
    }
}

/// A named or numbered container port.
pub(crate) fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {name:?} not found in container {:?}", container.name))
        }
    }
}

/// An HTTP GET to the pod (or `host`), success on 200..=399, as upstream.
pub(crate) async fn http_get(target: &ProbeTarget, get: &HTTPGetAction) -> Outcome {
    let port = match resolve_port(&target.container, &get.port) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    if get.scheme.as_deref() == Some("HTTPS") {
        return Outcome::Failure("https probes are not supported by this kubelet".into());
    }
    let host: IpAddr = match get
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .and_then(|h| h.parse().ok())
        .or(target.pod_ip)
    {
        Some(h) => h,
        None => return Outcome::Failure("pod has no IP for http probe".into()),
    };
    let path = get
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let addr = SocketAddr::new(host, port);
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(e) => return Outcome::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::get(&path).header(http::header::HOST, addr.to_string());
    req = req.header(http::header::USER_AGENT, "kube-probe/1.33");
    for h in get.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = match req.body(Empty::<bytes::Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(format!("building probe request: {e}")),
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            if (200..400).contains(&code) {
                Outcome::Success
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        Err(e) => Outcome::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    }
}

/// Timing of a probe in the kubelet's time unit (seconds in production).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub(crate) fn of(probe: &Probe, kind: ProbeKind, unit: Duration) -> ProbeTiming {
        let secs = |v: Option<i32>, default: i32| unit * v.unwrap_or(default).max(0) as u32;
        ProbeTiming {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(unit),
            timeout: secs(probe.timeout_seconds, 1).max(unit),
            // Liveness and startup probes must have successThreshold 1.
            success_threshold: match kind {
                ProbeKind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
                _ => 1,
            },
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Called for every failed run (the worker records an `Unhealthy` event).
pub(crate) type FailureHook = Arc<dyn Fn(ProbeKind, &str) + Send + Sync>;

/// Runs a probe until cancelled; startup probes stop after their first success.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn probe_loop(
    target: ProbeTarget,
    probe: Probe,
    kind: ProbeKind,
    timing: ProbeTiming,
    state: Arc<Mutex<ProbeState>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    on_failure: FailureHook,
) {
    if !timing.initial_delay.is_zero() {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(timing.initial_delay) => {}
        }
    }
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = run_once(&target, &probe, timing.timeout) => o,
        };
        let changed = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match &outcome {
                Outcome::Success => {
                    successes += 1;
                    failures = 0;
                    if successes >= timing.success_threshold && s.result != Some(true) {
                        s.result = Some(true);
                        true
                    } else {
                        false
                    }
                }
                Outcome::Failure(message) => {
                    failures += 1;
                    successes = 0;
                    s.last_failure = message.clone();
                    if failures >= timing.failure_threshold && s.result != Some(false) {
                        s.result = Some(false);
                        true
                    } else {
                        false
                    }
                }
            }
        };
        if let Outcome::Failure(message) = &outcome {
            on_failure(kind, message);
        }
        if changed {
            wake.notify_one();
        }
        if kind == ProbeKind::Startup && outcome == Outcome::Success && changed {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(timing.period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}]}))
        .expect("container")
    }

    #[test]
    fn resolve_port_accepts_numbers_and_names() {
        let c = container();
        assert_eq!(resolve_port(&c, &IntOrString::Int(80)), Ok(80));
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Ok(8080)
        );
        assert!(resolve_port(&c, &IntOrString::String("nope".into())).is_err());
    }

    #[tokio::test]
    async fn http_get_reports_status_codes_like_upstream() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let target = ProbeTarget {
            runtime: Arc::new(mini_cri::fake::FakeRuntime::new()),
            container_id: "x".into(),
            container: container(),
            pod_ip: Some("127.0.0.1".parse().expect("ip")),
        };
        let get = HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some("/healthz".into()),
            ..Default::default()
        };
        assert_eq!(http_get(&target, &get).await, Outcome::Success);
        assert!(matches!(http_get(&target, &get).await, Outcome::Failure(m) if m.contains("503")));
    }

    #[test]
    fn probe_timing_defaults_match_upstream() {
        let t = ProbeTiming::of(
            &Probe::default(),
            ProbeKind::Liveness,
            Duration::from_secs(1),
        );
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }
}
