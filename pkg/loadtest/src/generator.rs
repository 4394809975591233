//! The HTTP load generator: HTTP/1.1 keep-alive connections ([`crate::http1`]) on one thread, the open
//! model (a timetable of intended send instants; latency counted from the intended instant, so a
//! stalled target is not hidden by waiting connections) or the closed model (N users in a loop),
//! and one HDR histogram per second handed to a sink as a [`SecondReport`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::http1::{Conn, Failure, Request};
use crate::results::{encode, new_hist, record, Hist, SecondReport};
use crate::schedule::{user_start, Schedule};
use crate::target::HttpUrl;

/// How one generator offers load (its share of the run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Load {
    /// Requests per second of this generator.
    Open { rate: f64, connections: u32 },
    /// Users of this generator.
    Closed { users: u32 },
}

/// Everything one generator needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub url: String,
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    pub load: Load,
    pub duration_ms: u64,
    #[serde(default)]
    pub ramp_up_ms: u64,
    pub timeout_ms: u64,
}

impl Plan {
    fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
    fn ramp_up(&self) -> Duration {
        Duration::from_millis(self.ramp_up_ms)
    }
}

const ERR_CONNECT: usize = 0;
const ERR_TIMEOUT: usize = 1;
const ERR_IO: usize = 2;
const ERROR_NAMES: [&str; 3] = ["connect", "timeout", "io"];

/// The current second's counters.
struct Bucket {
    second: u32,
    requests: u64,
    codes: Vec<u64>,
    errors: [u64; 3],
    hist: Hist,
    lag: Duration,
}

impl Bucket {
    fn new(second: u32) -> Self {
        Bucket {
            second,
            requests: 0,
            codes: vec![0; 600],
            errors: [0; 3],
            hist: new_hist(),
            lag: Duration::ZERO,
        }
    }

    fn report(&self) -> SecondReport {
        SecondReport {
            second: self.second,
            requests: self.requests,
            codes: self
                .codes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            errors: self
                .errors
                .iter()
                .zip(ERROR_NAMES)
                .filter(|(n, _)| **n > 0)
                .map(|(n, k)| (k.to_string(), *n))
                .collect(),
            histogram: encode(&self.hist),
            lag_ms: self.lag.as_secs_f64() * 1e3,
        }
    }
}

/// Per-second recording shared by the connections of one thread.
struct Recorder {
    start: Instant,
    bucket: RefCell<Bucket>,
    sink: UnboundedSender<SecondReport>,
    raw: Option<RefCell<Vec<u64>>>,
}

enum Outcome {
    Status(u16),
    Error(usize),
}

impl Recorder {
    fn second_of(&self, at: Instant) -> u32 {
        at.saturating_duration_since(self.start).as_secs() as u32
    }

    /// Sends every finished second before `second`.
    fn roll(&self, second: u32) {
        let mut b = self.bucket.borrow_mut();
        while b.second < second {
            let _ = self.sink.send(b.report());
            *b = Bucket::new(b.second + 1);
        }
    }

    fn record(&self, now: Instant, latency: Duration, lag: Duration, outcome: Outcome) {
        self.roll(self.second_of(now));
        let mut b = self.bucket.borrow_mut();
        b.requests += 1;
        b.lag = b.lag.max(lag);
        let micros = latency.as_micros() as u64;
        match outcome {
            Outcome::Status(code) => {
                let i = usize::from(code).min(b.codes.len() - 1);
                b.codes[i] += 1;
                record(&mut b.hist, micros);
                if let Some(raw) = &self.raw {
                    raw.borrow_mut().push(micros);
                }
            }
            Outcome::Error(kind) => {
                b.errors[kind] += 1;
                // a timed-out request took at least this long: it counts in the latencies
                if kind == ERR_TIMEOUT {
                    record(&mut b.hist, micros);
                    if let Some(raw) = &self.raw {
                        raw.borrow_mut().push(micros);
                    }
                }
            }
        }
    }

    fn finish(&self) {
        let b = self.bucket.borrow();
        let _ = self.sink.send(b.report());
    }
}

/// The plan's request, checked and encoded once.
fn request(plan: &Plan) -> Result<Request, crate::LoadTestError> {
    let bad = |m: String| crate::LoadTestError::Invalid(m);
    let url = HttpUrl::parse(&plan.url).map_err(bad)?;
    let authority = url.authority();
    http::HeaderValue::from_str(&authority).map_err(|e| bad(e.to_string()))?;
    for (k, v) in &plan.headers {
        http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| bad(format!("header {k:?}: {e}")))?;
        http::HeaderValue::from_str(v).map_err(|e| bad(format!("header {k:?}: {e}")))?;
    }
    http::Method::from_bytes(plan.method.as_bytes())
        .map_err(|e| bad(format!("method {:?}: {e}", plan.method)))?;
    url.path
        .parse::<http::uri::PathAndQuery>()
        .map_err(|e| bad(format!("path {:?}: {e}", url.path)))?;
    let addr = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    Ok(Request::new(
        addr,
        &plan.method,
        &url.path,
        &authority,
        plan.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        plan.body.as_deref().unwrap_or_default().as_bytes(),
        Duration::from_millis(plan.timeout_ms.max(1)),
    ))
}

/// Sends one request on `conn`: the status, or the kind of failure.
async fn send(conn: &mut Conn, req: &Request) -> Outcome {
    match conn.send(req).await {
        Ok(status) => Outcome::Status(status),
        Err(Failure::Connect) => Outcome::Error(ERR_CONNECT),
        Err(Failure::Timeout) => Outcome::Error(ERR_TIMEOUT),
        Err(Failure::Io) => Outcome::Error(ERR_IO),
    }
}

/// Runs `plan` from `start` on the current thread (inside a [`tokio::task::LocalSet`]); every
/// finished second goes to `sink`, the last one when the run ends. With `raw`, every latency
/// (µs) is also kept and returned (the benchmark compares merged histograms with them).
pub async fn run(
    plan: &Plan,
    start: Instant,
    sink: UnboundedSender<SecondReport>,
    keep_raw: bool,
) -> Result<Vec<u64>, crate::LoadTestError> {
    let req = Rc::new(request(plan)?);
    let rec = Rc::new(Recorder {
        start,
        bucket: RefCell::new(Bucket::new(0)),
        sink,
        raw: keep_raw.then(|| RefCell::new(Vec::new())),
    });
    tokio::time::sleep_until(start).await;
    let end = start + plan.duration();
    // quiet seconds are reported too
    let ticker = {
        let rec = rec.clone();
        tokio::task::spawn_local(async move {
            let mut s = 1u32;
            loop {
                tokio::time::sleep_until(start + Duration::from_secs(u64::from(s))).await;
                rec.roll(s);
                s += 1;
            }
        })
    };
    let mut workers = Vec::new();
    match plan.load {
        Load::Open { rate, connections } => {
            let schedule = Rc::new(Schedule {
                rate,
                ramp_up: plan.ramp_up(),
                duration: plan.duration(),
            });
            let next = Rc::new(Cell::new(0u64));
            for _ in 0..connections.max(1) {
                let (req, rec, schedule, next) =
                    (req.clone(), rec.clone(), schedule.clone(), next.clone());
                workers.push(tokio::task::spawn_local(async move {
                    let mut conn = Conn::new();
                    loop {
                        let i = next.get();
                        next.set(i + 1);
                        let Some(offset) = schedule.send_time(i) else {
                            break;
                        };
                        let intended = start + offset;
                        let now = Instant::now();
                        if intended > now {
                            tokio::time::sleep_until(intended).await;
                        }
                        let lag = Instant::now().saturating_duration_since(intended);
                        let outcome = send(&mut conn, &req).await;
                        let done = Instant::now();
                        rec.record(done, done - intended, lag, outcome);
                    }
                }));
            }
        }
        Load::Closed { users } => {
            for u in 0..users.max(1) {
                let (req, rec) = (req.clone(), rec.clone());
                let begin = start + user_start(u, users, plan.ramp_up());
                workers.push(tokio::task::spawn_local(async move {
                    tokio::time::sleep_until(begin).await;
                    let mut conn = Conn::new();
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            break;
                        }
                        let outcome = send(&mut conn, &req).await;
                        let done = Instant::now();
                        rec.record(done, done - sent, Duration::ZERO, outcome);
                    }
                }));
            }
        }
    }
    for w in workers {
        let _ = w.await;
    }
    ticker.abort();
    rec.finish();
    Ok(rec
        .raw
        .as_ref()
        .map(|r| std::mem::take(&mut *r.borrow_mut()))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{decode, Merger, ReportBatch};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tiny keep-alive HTTP server on loopback answering every request with 200.
    async fn serve_ok() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let requests =
                                    buf[..n].windows(4).filter(|w| w == b"\r\n\r\n").count();
                                for _ in 0..requests {
                                    if s.write_all(
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                                    )
                                    .await
                                    .is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn plan(url: String, load: Load) -> Plan {
        Plan {
            url,
            method: "GET".into(),
            headers: BTreeMap::new(),
            body: None,
            load,
            duration_ms: 1000,
            ramp_up_ms: 0,
            timeout_ms: 2000,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_open_model_sends_the_scheduled_count() {
        let addr = serve_ok().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let p = plan(
            format!("http://{addr}/"),
            Load::Open {
                rate: 200.0,
                connections: 4,
            },
        );
        let local = tokio::task::LocalSet::new();
        let raw = local
            .run_until(run(&p, Instant::now(), tx, true))
            .await
            .unwrap();
        assert_eq!(raw.len(), 200);
        let mut merger = Merger::default();
        while let Ok(s) = rx.try_recv() {
            decode(&s.histogram).unwrap();
            merger
                .add(&ReportBatch {
                    generator: 0,
                    seconds: vec![s],
                    done: false,
                })
                .unwrap();
        }
        let summary = merger.summary(1.0, Some(200.0));
        assert_eq!(summary.requests, 200);
        assert_eq!(summary.codes.get("200"), Some(&200));
        assert_eq!(summary.errors, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_refused_target_counts_connect_errors() {
        // a port nobody listens on: bind, read the port, close
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let p = plan(
            format!("http://127.0.0.1:{port}/"),
            Load::Open {
                rate: 20.0,
                connections: 2,
            },
        );
        let local = tokio::task::LocalSet::new();
        local
            .run_until(run(&p, Instant::now(), tx, false))
            .await
            .unwrap();
        let mut errors = 0;
        while let Ok(s) = rx.try_recv() {
            errors += s.errors.get("connect").copied().unwrap_or(0);
        }
        assert_eq!(errors, 20);
    }
}
