//! The Prometheus HTTP API (`/api/v1/...`): parameter parsing, status codes, error types and the JSON
//! shapes exactly as Prometheus writes them, so Grafana's Prometheus data source works unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::ast::ValueType;
use crate::eval::{instant_query, range_query, valid_label_name, EvalError, QueryValue};
use crate::lexer::parse_duration_ms;
use crate::parser::{parse, parse_selector};
use crate::{Limits, Matcher, SeriesSource};

/// The most points one series of a range query may have (Prometheus' limit).
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// The version `status/buildinfo` reports: the Prometheus release whose query semantics mini follows
/// (left-open range and lookback windows, as Prometheus 3).
pub const COMPATIBLE_VERSION: &str = "3.0.0";

/// Facts about the serving process for `status/runtimeinfo` and `status/buildinfo`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerInfo {
    /// When the server started (unix ms); 0 when unknown.
    pub start_time_ms: i64,
    /// The server's working directory.
    pub cwd: String,
    /// How long raw samples are kept, as a duration text (e.g. `3d`).
    pub storage_retention: String,
    /// mini's own version, reported as the build revision.
    pub revision: String,
}

/// Answers one Prometheus HTTP API request (see [`api_with_info`]), with no process facts.
pub fn api(
    path: &str,
    params: &[(String, String)],
    source: &dyn SeriesSource,
    limits: &Limits,
    now_ms: i64,
) -> (u16, Value) {
    api_with_info(path, params, source, limits, now_ms, &ServerInfo::default())
}

/// Answers one Prometheus HTTP API request: `path` is what follows `/api/v1/`, `params` the URL
/// query and form body parameters merged. Returns the HTTP status and the JSON body.
pub fn api_with_info(
    path: &str,
    params: &[(String, String)],
    source: &dyn SeriesSource,
    limits: &Limits,
    now_ms: i64,
    info: &ServerInfo,
) -> (u16, Value) {
    let path = path.trim_matches('/');
    let p = Params(params);
    let result = match path {
        "query" => query(&p, source, limits, now_ms),
        "query_range" => query_range(&p, source, limits),
        "series" => series(&p, source, limits),
        "labels" => labels(&p, source),
        "status/buildinfo" => Ok(json!({
            "version": COMPATIBLE_VERSION,
            "revision": info.revision,
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })),
        "status/runtimeinfo" => Ok(json!({
            "startTime": if info.start_time_ms > 0 { rfc3339(info.start_time_ms) } else { String::new() },
            "CWD": info.cwd,
            "reloadConfigSuccess": true,
            "lastConfigTime": if info.start_time_ms > 0 { rfc3339(info.start_time_ms) } else { String::new() },
            "corruptionCount": 0,
            "goroutineCount": 0,
            "GOMAXPROCS": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "GOMEMLIMIT": i64::MAX,
            "GOGC": "",
            "GODEBUG": "",
            "storageRetention": info.storage_retention,
        })),
        "metadata" => metadata(&p, source),
        "format_query" => format_query(&p),
        "query_exemplars" => query_exemplars(&p),
        _ => match path
            .strip_prefix("label/")
            .and_then(|r| r.strip_suffix("/values"))
        {
            Some(name) => label_values(name, &p, source),
            None => Err(ApiError::new(
                404,
                "not_found",
                format!("unknown api endpoint {path:?}"),
            )),
        },
    };
    match result {
        Ok(data) => (200, json!({"status": "success", "data": data})),
        Err(e) => (
            e.status,
            json!({"status": "error", "errorType": e.error_type, "error": e.message}),
        ),
    }
}

struct ApiError {
    status: u16,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: u16, error_type: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            error_type,
            message,
        }
    }

    fn bad_data(message: String) -> ApiError {
        ApiError::new(400, "bad_data", message)
    }

    fn bad_param(name: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::bad_data(format!("invalid parameter {name:?}: {message}"))
    }
}

impl From<EvalError> for ApiError {
    fn from(e: EvalError) -> ApiError {
        match e {
            EvalError::Timeout => ApiError::new(503, "timeout", e.to_string()),
            EvalError::Source(_) => ApiError::new(500, "internal", e.to_string()),
            _ => ApiError::new(422, "execution", e.to_string()),
        }
    }
}

struct Params<'a>(&'a [(String, String)]);

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| {
                ApiError::bad_param(name, format!("cannot parse {v:?} to a valid timestamp"))
            }),
        }
    }

    fn required_time(&self, name: &str) -> Result<i64, ApiError> {
        let v = self.get(name).unwrap_or("");
        parse_time(v).ok_or_else(|| {
            ApiError::bad_param(name, format!("cannot parse {v:?} to a valid timestamp"))
        })
    }

    fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            None | Some("") => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                Ok(_) => Ok(None),
                Err(_) => Err(ApiError::bad_data("limit must be a number".to_string())),
            },
        }
    }

    fn matchers(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        self.all("match[]")
            .into_iter()
            .map(|m| parse_selector(m).map_err(|e| ApiError::bad_param("match[]", e)))
            .collect()
    }

    /// The query's time budget: the configured one, shortened by a `timeout` parameter.
    fn limits(&self, limits: &Limits) -> Result<Limits, ApiError> {
        let mut l = limits.clone();
        if let Some(v) = self.get("timeout").filter(|v| !v.is_empty()) {
            let ms = parse_duration(v).ok_or_else(|| {
                ApiError::bad_param("timeout", format!("cannot parse {v:?} to a valid duration"))
            })?;
            l.timeout = l.timeout.min(Duration::from_millis(ms.max(0) as u64));
        }
        Ok(l)
    }
}

/// A timestamp parameter: unix seconds (float) or RFC 3339; returns unix ms.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return None;
        }
        return Some((f * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A duration parameter: seconds (float) or a Prometheus duration (`1h30m`); returns ms.
pub fn parse_duration(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() > (i64::MAX / 1_000_000) as f64 {
            return None;
        }
        return Some((f * 1000.0).round() as i64);
    }
    parse_duration_ms(s)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A sample value as Prometheus writes it in JSON (`"1.5"`, `"+Inf"`, `"NaN"`).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// A timestamp as Prometheus writes it in JSON: unix seconds, with milliseconds when not whole.
pub fn format_time(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        let text = format!(
            "{}{}.{:03}",
            if ms < 0 { "-" } else { "" },
            (ms / 1000).abs(),
            (ms % 1000).abs()
        );
        let text = text.trim_end_matches('0');
        serde_json::from_str(text).unwrap_or_else(|_| json!(ms as f64 / 1000.0))
    }
}

fn point(ms: i64, v: f64) -> Value {
    json!([format_time(ms), format_value(v)])
}

fn metric(labels: &BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>(),
    )
}

fn parse_query(p: &Params<'_>) -> Result<crate::Expr, ApiError> {
    parse(p.get("query").unwrap_or("")).map_err(|e| ApiError::bad_param("query", e))
}

fn query(
    p: &Params<'_>,
    source: &dyn SeriesSource,
    limits: &Limits,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let t = p.time("time", now_ms)?;
    let limits = p.limits(limits)?;
    let expr = parse_query(p)?;
    let value = instant_query(&expr, source, &limits, t)?;
    let (kind, result) = match value {
        QueryValue::Scalar(v) => ("scalar", point(t, v)),
        QueryValue::String(s) => ("string", json!([format_time(t), s])),
        QueryValue::Vector(samples) => (
            "vector",
            Value::Array(
                samples
                    .iter()
                    .map(|s| json!({"metric": metric(&s.labels), "value": point(t, s.value)}))
                    .collect(),
            ),
        ),
        QueryValue::Matrix(series) => ("matrix", matrix_json(&series)),
    };
    Ok(json!({"resultType": kind, "result": result}))
}

fn matrix_json(series: &[crate::RangeSeries]) -> Value {
    Value::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "values": s.points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn query_range(
    p: &Params<'_>,
    source: &dyn SeriesSource,
    limits: &Limits,
) -> Result<Value, ApiError> {
    let start = p.required_time("start")?;
    let end = p.required_time("end")?;
    if end < start {
        return Err(ApiError::bad_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step_text = p.get("step").unwrap_or("");
    let step = parse_duration(step_text).ok_or_else(|| {
        ApiError::bad_param(
            "step",
            format!("cannot parse {step_text:?} to a valid duration"),
        )
    })?;
    if step <= 0 {
        return Err(ApiError::bad_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".to_string(),
        ));
    }
    let limits = p.limits(limits)?;
    let expr = parse_query(p)?;
    let t = expr.value_type();
    if t != ValueType::Scalar && t != ValueType::Vector {
        return Err(ApiError::bad_param(
            "query",
            format!(
                "invalid expression type {:?} for range query, must be Scalar or instant Vector",
                t.name()
            ),
        ));
    }
    let series = range_query(&expr, source, &limits, start, end, step)?;
    Ok(json!({"resultType": "matrix", "result": matrix_json(&series)}))
}

/// The time range of a metadata request (`start`/`end`, all time by default).
fn meta_range(p: &Params<'_>) -> Result<(i64, i64), ApiError> {
    Ok((p.time("start", i64::MIN)?, p.time("end", i64::MAX)?))
}

fn series(p: &Params<'_>, source: &dyn SeriesSource, limits: &Limits) -> Result<Value, ApiError> {
    let sets = p.matchers()?;
    if sets.is_empty() {
        return Err(ApiError::bad_data(
            "no match[] parameter provided".to_string(),
        ));
    }
    let (start, end) = meta_range(p)?;
    let limit = p.limit()?;
    let mut all: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
    for m in &sets {
        let found = source
            .select(m, start, end)
            .map_err(|e| ApiError::new(500, "internal", format!("reading series failed: {e}")))?;
        all.extend(found.into_iter().map(|s| s.labels));
        if all.len() > limits.max_series {
            return Err(EvalError::TooManySeries(limits.max_series).into());
        }
    }
    let n = limit.unwrap_or(usize::MAX);
    Ok(Value::Array(all.iter().take(n).map(metric).collect()))
}

fn labels(p: &Params<'_>, source: &dyn SeriesSource) -> Result<Value, ApiError> {
    let (start, end) = meta_range(p)?;
    let mut sets = p.matchers()?;
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let mut names = BTreeSet::new();
    for m in &sets {
        names.extend(
            source.label_names(m, start, end).map_err(|e| {
                ApiError::new(500, "internal", format!("reading labels failed: {e}"))
            })?,
        );
    }
    let n = p.limit()?.unwrap_or(usize::MAX);
    Ok(json!(names.into_iter().take(n).collect::<Vec<_>>()))
}

fn label_values(name: &str, p: &Params<'_>, source: &dyn SeriesSource) -> Result<Value, ApiError> {
    if !valid_label_name(name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let (start, end) = meta_range(p)?;
    let mut sets = p.matchers()?;
    if sets.is_empty() {
        sets.push(Vec::new());
    }
    let mut values = BTreeSet::new();
    for m in &sets {
        values.extend(source.label_values(name, m, start, end).map_err(|e| {
            ApiError::new(500, "internal", format!("reading label values failed: {e}"))
        })?);
    }
    let n = p.limit()?.unwrap_or(usize::MAX);
    Ok(json!(values.into_iter().take(n).collect::<Vec<_>>()))
}

/// Help texts and types of the metrics mini's agents record (names as cAdvisor, the kubelet and
/// node_exporter use them).
const KNOWN_METRICS: &[(&str, &str, &str)] = &[
    (
        "node_cpu_seconds_total",
        "counter",
        "Seconds the CPUs spent in each mode.",
    ),
    (
        "node_memory_MemTotal_bytes",
        "gauge",
        "Memory information field MemTotal_bytes.",
    ),
    (
        "node_memory_MemAvailable_bytes",
        "gauge",
        "Memory information field MemAvailable_bytes.",
    ),
    (
        "node_memory_MemFree_bytes",
        "gauge",
        "Memory information field MemFree_bytes.",
    ),
    (
        "node_memory_Buffers_bytes",
        "gauge",
        "Memory information field Buffers_bytes.",
    ),
    (
        "node_memory_Cached_bytes",
        "gauge",
        "Memory information field Cached_bytes.",
    ),
    ("node_load1", "gauge", "1m load average."),
    ("node_load5", "gauge", "5m load average."),
    ("node_load15", "gauge", "15m load average."),
    (
        "node_filesystem_size_bytes",
        "gauge",
        "Filesystem size in bytes.",
    ),
    (
        "node_filesystem_avail_bytes",
        "gauge",
        "Filesystem space available to non-root users in bytes.",
    ),
    (
        "node_network_receive_bytes_total",
        "counter",
        "Network device statistic receive_bytes.",
    ),
    (
        "node_network_transmit_bytes_total",
        "counter",
        "Network device statistic transmit_bytes.",
    ),
    (
        "node_boot_time_seconds",
        "gauge",
        "Node boot time, in unixtime.",
    ),
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
    ),
    ("container_memory_rss", "gauge", "Size of RSS in bytes."),
    (
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    ),
    (
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
    ),
    (
        "container_network_receive_bytes_total",
        "counter",
        "Cumulative count of bytes received.",
    ),
    (
        "container_network_transmit_bytes_total",
        "counter",
        "Cumulative count of bytes transmitted.",
    ),
    (
        "kube_pod_container_status_restarts_total",
        "counter",
        "The number of container restarts per container.",
    ),
];

fn metadata(p: &Params<'_>, source: &dyn SeriesSource) -> Result<Value, ApiError> {
    let names: Vec<String> = match p.get("metric").filter(|m| !m.is_empty()) {
        Some(m) => vec![m.to_string()],
        None => source
            .label_values("__name__", &[], i64::MIN, i64::MAX)
            .map_err(|e| {
                ApiError::new(500, "internal", format!("reading metric names failed: {e}"))
            })?,
    };
    let limit = p.limit()?.unwrap_or(usize::MAX);
    let mut out = Map::new();
    for name in names {
        if out.len() >= limit {
            break;
        }
        if let Some((_, kind, help)) = KNOWN_METRICS.iter().find(|(n, _, _)| *n == name) {
            out.insert(name, json!([{"type": kind, "help": help, "unit": ""}]));
        }
    }
    Ok(Value::Object(out))
}

fn format_query(p: &Params<'_>) -> Result<Value, ApiError> {
    Ok(Value::String(parse_query(p)?.to_string()))
}

fn query_exemplars(p: &Params<'_>) -> Result<Value, ApiError> {
    parse_query(p)?;
    Ok(json!([]))
}
