//! The Loki HTTP API subset (`/loki/api/v1/...`) answered from the store, with Loki's parameters and JSON
//! shapes so Grafana's Loki data source works: `query_range` and `query` (log queries), `labels`,
//! `label/<name>/values`, `series`, `index/stats` and `status/buildinfo`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    parse_logql, Direction, LabelMatcher, LogStore, LogStoreError, NamespaceScope, SearchQuery,
};

/// Loki's default `limit` and its default `max_entries_limit_per_query`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 5000;
/// Time budget of one API query.
const QUERY_BUDGET: Duration = Duration::from_secs(10);
/// Default range when `start` is missing: Loki's one hour.
const DEFAULT_SINCE: Duration = Duration::from_secs(3600);

fn error(status: u16, message: impl Into<String>) -> (u16, Value) {
    let message = message.into();
    (
        status,
        json!({"code": status, "status": "error", "message": message}),
    )
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Loki's timestamp formats: integer nanoseconds (or seconds when at most 10 digits), float seconds, or
/// RFC 3339.
fn parse_time(v: &str) -> Option<i64> {
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            return Some((f * 1e9) as i64);
        }
    }
    if let Ok(n) = v.parse::<i64>() {
        return Some(if v.trim_start_matches('-').len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    chrono_like_rfc3339(v)
}

/// RFC 3339 (`2024-01-02T03:04:05.123Z`, `+01:00` offsets) to Unix nanoseconds.
fn chrono_like_rfc3339(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &v[19..];
    let mut frac_ns = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let mut padded = digits.clone();
        padded.truncate(9);
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
        rest = &r[digits.len()..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    Some(secs * 1_000_000_000 + frac_ns)
}

/// Go/Prometheus durations (`90s`, `1h30m`, `500ms`, `1d`, `1w`) or float seconds.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(f) = v.parse::<f64>() {
        return (f >= 0.0).then(|| Duration::from_secs_f64(f));
    }
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Some(Duration::from_secs_f64(total))
}

struct Range {
    start: i64,
    end: i64,
}

fn time_param(params: &[(String, String)], name: &str) -> Result<Option<i64>, (u16, Value)> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => parse_time(v).map(Some).ok_or_else(|| {
            error(
                400,
                format!("invalid parameter {name:?}: cannot parse {v:?} to a valid timestamp"),
            )
        }),
    }
}

/// `start`/`end`/`since` as Loki reads them: end defaults to now, start to end - since (1 h).
fn range(params: &[(String, String)], now_ns: i64) -> Result<Range, (u16, Value)> {
    let end = time_param(params, "end")?.unwrap_or(now_ns);
    let since = match param(params, "since") {
        None => DEFAULT_SINCE,
        Some(v) => parse_duration(v).ok_or_else(|| {
            error(
                400,
                format!("invalid parameter \"since\": cannot parse {v:?} to a valid duration"),
            )
        })?,
    };
    let start = time_param(params, "start")?.unwrap_or(end - since.as_nanos() as i64);
    if end < start {
        return Err(error(
            400,
            "end timestamp must not be before or equal to start time",
        ));
    }
    Ok(Range { start, end })
}

fn selector_matchers(q: &str) -> Result<Vec<LabelMatcher>, (u16, Value)> {
    match parse_logql(q) {
        Ok((m, f)) if f.is_empty() => Ok(m),
        Ok(_) => Err(error(
            400,
            "only a stream selector is allowed here (no line filters)",
        )),
        Err(e) => Err(error(400, e.to_string())),
    }
}

fn store_error(e: LogStoreError) -> (u16, Value) {
    match e {
        LogStoreError::InvalidQuery(m) => error(400, m),
        other => error(500, other.to_string()),
    }
}

/// Answers one Loki HTTP API request. `path` is what follows `/loki/api/v1/`; `params` are the URL query
/// and form parameters merged (repeated keys allowed, e.g. `match[]`); `scope` limits the namespaces
/// (RBAC). Returns the HTTP status and Loki's JSON body; errors are `{"code","status":"error","message"}`
/// with 400 for bad input (LogQL errors with line and column).
pub fn loki_api(
    path: &str,
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
) -> (u16, Value) {
    let path = path.trim_matches('/');
    let result = match path {
        "query_range" => query(params, store, scope, now_ns, false),
        "query" => query(params, store, scope, now_ns, true),
        "labels" | "label" => labels(params, store, scope, now_ns, None),
        "series" => series(params, store, scope, now_ns),
        "index/stats" => index_stats(params, store, scope, now_ns),
        "status/buildinfo" => Ok(json!({
            "version": "2.9.0",
            "revision": "mini",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })),
        p => match p
            .strip_prefix("label/")
            .and_then(|r| r.strip_suffix("/values"))
        {
            Some(name) if !name.is_empty() => labels(params, store, scope, now_ns, Some(name)),
            _ => Err(error(
                404,
                format!("unknown Loki API path /loki/api/v1/{p}"),
            )),
        },
    };
    match result {
        Ok(v) => (200, v),
        Err(e) => e,
    }
}

/// One message of Loki's live tail (`/loki/api/v1/tail`, a websocket of JSON messages) for records
/// from [`LogStore::tail`]: `{"streams":[{"stream":{…},"values":[["<ns>","line"]]}],"dropped_entries":[]}`.
pub fn loki_tail_message(records: &[crate::LogRecord]) -> Value {
    json!({"streams": streams_json(records), "dropped_entries": []})
}

/// Records grouped by stream (Loki labels) in the order they come, as Loki's `streams` results.
fn streams_json(records: &[crate::LogRecord]) -> Vec<Value> {
    let mut streams: Vec<(BTreeMap<String, String>, Vec<Value>)> = Vec::new();
    let mut index: BTreeMap<BTreeMap<String, String>, usize> = BTreeMap::new();
    for r in records {
        let def = crate::StreamDef {
            labels: r.labels.clone(),
            pod_labels: r.pod_labels.clone(),
        };
        let labels = def.loki_labels();
        let i = *index.entry(labels.clone()).or_insert_with(|| {
            streams.push((labels, Vec::new()));
            streams.len() - 1
        });
        streams[i]
            .1
            .push(json!([r.timestamp_ns.to_string(), r.line]));
    }
    streams
        .into_iter()
        .map(|(stream, values)| json!({"stream": stream, "values": values}))
        .collect()
}

fn query(
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
    instant: bool,
) -> Result<Value, (u16, Value)> {
    let q = param(params, "query").ok_or_else(|| error(400, "missing parameter \"query\""))?;
    if crate::metric::is_metric(q) {
        return metric_query(q, params, store, scope, now_ns, instant);
    }
    let (matchers, line_filters) = parse_logql(q).map_err(|e| error(400, e.to_string()))?;
    let limit = match param(params, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse::<usize>().map_err(|_| {
            error(
                400,
                format!("invalid parameter \"limit\": cannot parse {v:?} to a number"),
            )
        })?,
    };
    if limit > MAX_LIMIT {
        return Err(error(400, format!("max entries limit per query exceeded, limit > max_entries_limit ({limit} > {MAX_LIMIT})")));
    }
    let direction = match param(params, "direction")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("backward") => Direction::Backward,
        Some("forward") => Direction::Forward,
        Some(d) => {
            return Err(error(
                400,
                format!("invalid parameter \"direction\": {d:?} is not forward or backward"),
            ))
        }
    };
    let (start, end) = if instant {
        let t = time_param(params, "time")?.unwrap_or(now_ns);
        (t - DEFAULT_SINCE.as_nanos() as i64, t + 1)
    } else {
        let r = range(params, now_ns)?;
        // Loki treats `end` as exclusive except when start == end.
        (r.start, if r.end == r.start { r.end + 1 } else { r.end })
    };
    let started = Instant::now();
    let page = store
        .search(&SearchQuery {
            start_ns: start,
            end_ns: end,
            matchers,
            line_filters,
            direction,
            limit,
            cursor: None,
            namespaces: scope.clone(),
            time_budget: QUERY_BUDGET,
        })
        .map_err(store_error)?;
    let exec = started.elapsed().as_secs_f64();
    let result = streams_json(&page.records);
    let lines = page.records.len();
    let per_sec = |n: f64| if exec > 0.0 { (n / exec) as u64 } else { 0 };
    let mut body = json!({
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": result,
            "stats": {
                "summary": {
                    "bytesProcessedPerSecond": per_sec(page.scanned_bytes as f64),
                    "linesProcessedPerSecond": per_sec(lines as f64),
                    "totalBytesProcessed": page.scanned_bytes,
                    "totalLinesProcessed": lines,
                    "execTime": exec,
                    "queueTime": 0,
                    "subqueries": 0,
                    "totalEntriesReturned": lines,
                    "splits": 0,
                    "shards": 0,
                }
            }
        }
    });
    if page.truncated_by_budget {
        body["warnings"] = json!([format!(
            "the query ran out of its time budget ({}s): results are partial; narrow the time range or add label matchers",
            QUERY_BUDGET.as_secs()
        )]);
    }
    Ok(body)
}

fn metric_query(
    q: &str,
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
    instant: bool,
) -> Result<Value, (u16, Value)> {
    let m = crate::metric::parse_metric(q).map_err(|e| error(400, e.to_string()))?;
    let (start, end, step) = if instant {
        let t = time_param(params, "time")?.unwrap_or(now_ns);
        (t, t, 1)
    } else {
        let r = range(params, now_ns)?;
        let step = match param(params, "step") {
            Some(v) => parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    error(
                        400,
                        format!(
                            "invalid parameter \"step\": cannot parse {v:?} to a valid duration"
                        ),
                    )
                })?
                .as_nanos() as i64,
            // Loki's default: the range split into ~250 steps, at least 1 s.
            None => ((r.end - r.start) / 250).max(1_000_000_000),
        };
        if (r.end - r.start) / step > 11_000 {
            return Err(error(400, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"));
        }
        (r.start, r.end, step)
    };
    let mut ev = crate::metric::Evaluator::new(m, start, end, step);
    let search = SearchQuery {
        start_ns: start - ev.range_ns() + 1,
        end_ns: end + 1,
        matchers: ev.matchers().to_vec(),
        line_filters: ev.filters().to_vec(),
        direction: Direction::Forward,
        limit: 0,
        cursor: None,
        namespaces: scope.clone(),
        time_budget: QUERY_BUDGET,
    };
    let started = Instant::now();
    let (scanned, truncated) = store
        .visit_matches(&search, |labels, ts, len| ev.add(labels, ts, len))
        .map_err(store_error)?;
    let exec = started.elapsed().as_secs_f64();
    let secs = |t: i64| json!(t as f64 / 1e9);
    let series = ev.finish();
    let result: Vec<Value> = if instant {
        series
            .into_iter()
            .filter_map(|(l, pts)| {
                pts.last()
                    .map(|(t, v)| json!({"metric": l, "value": [secs(*t), v.to_string()]}))
            })
            .collect()
    } else {
        series
            .into_iter()
            .map(|(l, pts)| {
                let values: Vec<Value> = pts
                    .iter()
                    .map(|(t, v)| json!([secs(*t), v.to_string()]))
                    .collect();
                json!({"metric": l, "values": values})
            })
            .collect()
    };
    let mut body = json!({
        "status": "success",
        "data": {
            "resultType": if instant { "vector" } else { "matrix" },
            "result": result,
            "stats": {"summary": {"totalBytesProcessed": scanned, "execTime": exec, "queueTime": 0, "subqueries": 0, "totalEntriesReturned": 0}}
        }
    });
    if truncated {
        body["warnings"] = json!([format!(
            "the query ran out of its time budget ({}s): results are partial; narrow the time range or add label matchers",
            QUERY_BUDGET.as_secs()
        )]);
    }
    Ok(body)
}

fn labels(
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
    name: Option<&str>,
) -> Result<Value, (u16, Value)> {
    let r = range(params, now_ns)?;
    let matchers = match param(params, "query") {
        Some(q) => selector_matchers(q)?,
        None => Vec::new(),
    };
    let streams = store
        .streams(&matchers, r.start, r.end + 1, scope)
        .map_err(store_error)?;
    let mut out = std::collections::BTreeSet::new();
    for s in streams {
        match name {
            None => out.extend(s.into_keys()),
            Some(n) => {
                if let Some(v) = s.get(n) {
                    out.insert(v.clone());
                }
            }
        }
    }
    Ok(json!({"status": "success", "data": out.into_iter().collect::<Vec<_>>()}))
}

fn series(
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
) -> Result<Value, (u16, Value)> {
    let r = range(params, now_ns)?;
    let selectors: Vec<&str> = params
        .iter()
        .filter(|(k, v)| (k == "match[]" || k == "match") && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    if selectors.is_empty() {
        return Err(error(
            400,
            "missing parameter \"match[]\": give at least one stream selector",
        ));
    }
    let mut out = std::collections::BTreeSet::new();
    for sel in selectors {
        let matchers = selector_matchers(sel)?;
        out.extend(
            store
                .streams(&matchers, r.start, r.end + 1, scope)
                .map_err(store_error)?,
        );
    }
    Ok(json!({"status": "success", "data": out.into_iter().collect::<Vec<_>>()}))
}

fn index_stats(
    params: &[(String, String)],
    store: &LogStore,
    scope: &NamespaceScope,
    now_ns: i64,
) -> Result<Value, (u16, Value)> {
    let r = range(params, now_ns)?;
    let q = param(params, "query").ok_or_else(|| error(400, "missing parameter \"query\""))?;
    let (matchers, _) = parse_logql(q).map_err(|e| error(400, e.to_string()))?;
    let s = store
        .index_stats(&matchers, r.start, r.end + 1, scope)
        .map_err(store_error)?;
    Ok(json!({"streams": s.streams, "chunks": s.chunks, "entries": s.entries, "bytes": s.bytes}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_time_accepts_loki_formats() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("1700000000000000001"),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.25+01:00"),
            Some(1_700_000_000_250_000_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn parse_duration_accepts_go_and_prometheus_units() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5x"), None);
    }
}
