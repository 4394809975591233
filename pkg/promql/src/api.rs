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
        // mini evaluates no recording or alerting rules: the lists are empty (Grafana's alerting
        // views ask for them).
        "rules" => Ok(json!({"groups": []})),
        "alerts" => Ok(json!({"alerts": []})),
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

/// The parameters of a request as [`api`] takes them: the URL-encoded form body (POST with
/// `application/x-www-form-urlencoded`) first, then the URL query, so body values win as in Go's
/// `Request.ParseForm` that Prometheus uses.
pub fn request_params(url_query: Option<&str>, form_body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = form_urlencoded::parse(form_body).into_owned().collect();
    if let Some(q) = url_query {
        out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySource as MemSource;

    fn src() -> MemSource {
        let mut s = MemSource::default();
        s.add(
            &[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("namespace", "a"),
                ("pod", "web"),
            ],
            &[(0, 0.0), (15, 1.5), (30, 3.0), (45, 4.5), (60, 6.0)],
        );
        s.add(
            &[
                ("__name__", "node_load1"),
                ("node", "n1"),
                ("instance", "n1"),
            ],
            &[(0, 0.5), (30, 0.25)],
        );
        s
    }

    fn call(path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        api(path, &params, &src(), &Limits::default(), 100_000)
    }

    #[test]
    fn api_query_vector_has_prometheus_shape() {
        let (code, body) = call(
            "query",
            &[
                ("query", "rate(container_cpu_usage_seconds_total[1m])"),
                ("time", "60"),
            ],
        );
        assert_eq!(code, 200);
        // 4.5 × (60 / 45) / 60 in the order Prometheus multiplies: not exactly 0.1 in float64.
        assert_eq!(
            body,
            json!({"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"namespace":"a","pod":"web"},"value":[60,"0.09999999999999999"]}
            ]}})
        );
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"a","pod":"web"},"value":[60,"0.09999999999999999"]}]}}"#
        );
    }

    #[test]
    fn api_query_scalar_string_and_matrix_shapes() {
        let (_, body) = call("query", &[("query", "1+1"), ("time", "1.5")]);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#
        );
        let (_, body) = call("query", &[("query", "\"hi\""), ("time", "2")]);
        assert_eq!(
            body,
            json!({"status":"success","data":{"resultType":"string","result":[2,"hi"]}})
        );
        let (_, body) = call("query", &[("query", "node_load1[1m]"), ("time", "60")]);
        assert_eq!(
            body,
            json!({"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"__name__":"node_load1","instance":"n1","node":"n1"},"values":[[30,"0.25"]]}
            ]}})
        );
        // Default time is now; special values are spelled as Prometheus does.
        let (_, body) = call("query", &[("query", "vector(1/0) or vector(-1/0)")]);
        assert_eq!(body["data"]["result"][0]["value"], json!([100, "+Inf"]));
    }

    #[test]
    fn api_query_range_matrix_with_rfc3339_and_duration_step() {
        let (code, body) = call(
            "query_range",
            &[
                ("query", "node_load1"),
                ("start", "1970-01-01T00:00:00Z"),
                ("end", "1970-01-01T00:01:00.000Z"),
                ("step", "30s"),
            ],
        );
        assert_eq!(code, 200);
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"node_load1","instance":"n1","node":"n1"},"values":[[0,"0.5"],[30,"0.25"],[60,"0.25"]]}]}}"#
        );
        let (_, body) = call(
            "query_range",
            &[
                ("query", "time()"),
                ("start", "0.5"),
                ("end", "1.5"),
                ("step", "0.5"),
            ],
        );
        assert_eq!(
            body,
            json!({"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{},"values":[[0.5,"0.5"],[1,"1"],[1.5,"1.5"]]}
            ]}})
        );
    }

    #[test]
    fn api_errors_have_prometheus_types_and_codes() {
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, Value);
        let cases: Vec<Case> = vec![
            (
                "query",
                vec![("query", "sum(rate(x[5m])")],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:16: parse error: unclosed left parenthesis"}),
            ),
            (
                "query",
                vec![("query", "up"), ("time", "yesterday")],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp"}),
            ),
            (
                "query_range",
                vec![
                    ("query", "up"),
                    ("start", "10"),
                    ("end", "5"),
                    ("step", "1"),
                ],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"end\": end timestamp must not be before start time"}),
            ),
            (
                "query_range",
                vec![("query", "up"), ("start", "0"), ("end", "5"), ("step", "0")],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"}),
            ),
            (
                "query_range",
                vec![("query", "up"), ("start", "0"), ("end", "5"), ("step", "x")],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"step\": cannot parse \"x\" to a valid duration"}),
            ),
            (
                "query_range",
                vec![
                    ("query", "up"),
                    ("start", "0"),
                    ("end", "100000"),
                    ("step", "1"),
                ],
                400,
                json!({"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}),
            ),
            (
                "query_range",
                vec![
                    ("query", "up[5m]"),
                    ("start", "0"),
                    ("end", "5"),
                    ("step", "1"),
                ],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"}),
            ),
            (
                "series",
                vec![],
                400,
                json!({"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}),
            ),
            (
                "label/1x/values",
                vec![],
                400,
                json!({"status":"error","errorType":"bad_data","error":"invalid label name: \"1x\""}),
            ),
            (
                "nope",
                vec![],
                404,
                json!({"status":"error","errorType":"not_found","error":"unknown api endpoint \"nope\""}),
            ),
        ];
        for (path, params, code, want) in cases {
            assert_eq!(call(path, &params), (code, want), "{path} {params:?}");
        }
    }

    #[test]
    fn api_limits_answer_422_and_503() {
        let params = vec![("query".to_string(), "node_load1".to_string())];
        let few = Limits {
            max_samples: 1,
            ..Limits::default()
        };
        assert_eq!(
            api("query", &params, &src(), &few, 60_000),
            (
                422,
                json!({"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"})
            )
        );
        let no_time = Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(
            api("query", &params, &src(), &no_time, 60_000),
            (
                503,
                json!({"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"})
            )
        );
        // A timeout parameter can only shorten the configured budget.
        let mut p = params.clone();
        p.push(("timeout".to_string(), "0s".to_string()));
        assert_eq!(api("query", &p, &src(), &Limits::default(), 60_000).0, 503);
    }

    #[test]
    fn api_series_labels_and_values_shapes() {
        let (code, body) = call(
            "series",
            &[
                ("match[]", "{__name__=~\"node.*\"}"),
                ("start", "0"),
                ("end", "60"),
            ],
        );
        assert_eq!(code, 200);
        assert_eq!(
            body,
            json!({"status":"success","data":[{"__name__":"node_load1","instance":"n1","node":"n1"}]})
        );
        assert_eq!(
            call("labels", &[]),
            (
                200,
                json!({"status":"success","data":["__name__","instance","namespace","node","pod"]})
            )
        );
        assert_eq!(
            call("labels", &[("match[]", "node_load1")]),
            (
                200,
                json!({"status":"success","data":["__name__","instance","node"]})
            )
        );
        assert_eq!(
            call("label/__name__/values", &[]),
            (
                200,
                json!({"status":"success","data":["container_cpu_usage_seconds_total","node_load1"]})
            )
        );
        assert_eq!(
            call("label/pod/values", &[("match[]", "node_load1")]),
            (200, json!({"status":"success","data":[]}))
        );
        let (code, body) = call("series", &[("match[]", "up{")]);
        assert_eq!(code, 400);
        assert_eq!(body["errorType"], "bad_data");
    }

    #[test]
    fn api_status_metadata_format_and_exemplars_shapes() {
        assert_eq!(
            call("status/buildinfo", &[]),
            (
                200,
                json!({"status":"success","data":{"version":"3.0.0","revision":"","branch":"","buildUser":"","buildDate":"","goVersion":""}})
            )
        );
        assert_eq!(
            call("metadata", &[]),
            (
                200,
                json!({"status":"success","data":{
                    "container_cpu_usage_seconds_total":[{"type":"counter","help":"Cumulative cpu time consumed in seconds.","unit":""}],
                    "node_load1":[{"type":"gauge","help":"1m load average.","unit":""}]
                }})
            )
        );
        assert_eq!(
            call("metadata", &[("metric", "node_load1")]),
            (
                200,
                json!({"status":"success","data":{"node_load1":[{"type":"gauge","help":"1m load average.","unit":""}]}})
            )
        );
        assert_eq!(
            call(
                "format_query",
                &[("query", "sum(rate(x{a=\"b\"}[5m]))by(pod)")]
            ),
            (
                200,
                json!({"status":"success","data":"sum by (pod) (rate(x{a=\"b\"}[5m]))"})
            )
        );
        assert_eq!(
            call(
                "query_exemplars",
                &[("query", "up"), ("start", "0"), ("end", "1")]
            ),
            (200, json!({"status":"success","data":[]}))
        );
        let info = ServerInfo {
            start_time_ms: 1_000,
            cwd: "/".to_string(),
            storage_retention: "3d".to_string(),
            revision: "0.1.0".to_string(),
        };
        let (code, body) = api_with_info(
            "status/runtimeinfo",
            &[],
            &src(),
            &Limits::default(),
            0,
            &info,
        );
        assert_eq!(code, 200);
        assert_eq!(body["data"]["startTime"], "1970-01-01T00:00:01.000Z");
        assert_eq!(body["data"]["storageRetention"], "3d");
        assert_eq!(body["data"]["reloadConfigSuccess"], true);
    }

    #[test]
    fn api_series_over_the_series_limit_is_422() {
        let few = Limits {
            max_series: 1,
            ..Limits::default()
        };
        let params = vec![("match[]".to_string(), "{__name__=~\".+\"}".to_string())];
        assert_eq!(
            api("series", &params, &src(), &few, 0),
            (
                422,
                json!({"status":"error","errorType":"execution","error":"query selects more than 1 series; narrow the selectors or shorten the time range"})
            )
        );
        assert_eq!(
            call("rules", &[]),
            (200, json!({"status":"success","data":{"groups":[]}}))
        );
        assert_eq!(
            call("alerts", &[]),
            (200, json!({"status":"success","data":{"alerts":[]}}))
        );
    }

    #[test]
    fn api_request_params_body_wins_over_url() {
        let p = request_params(Some("query=up&time=1"), b"query=sum%28up%29&match%5B%5D=a");
        assert_eq!(Params(&p).get("query"), Some("sum(up)"));
        assert_eq!(Params(&p).get("time"), Some("1"));
        assert_eq!(Params(&p).all("match[]"), vec!["a"]);
    }

    #[test]
    fn api_time_and_duration_formats() {
        assert_eq!(format_time(1_435_781_451_781), json!(1435781451.781));
        assert_eq!(serde_json::to_string(&format_time(1_500)).unwrap(), "1.5");
        assert_eq!(serde_json::to_string(&format_time(2_000)).unwrap(), "2");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Some(1_435_781_451_781)
        );
        assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("15"), Some(15_000));
        assert_eq!(parse_duration("0.5"), Some(500));
    }
}
