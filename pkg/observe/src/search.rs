//! mini's log search (`GET /v1-mini/logs/search`: a page of records as JSON, with a cursor)
//! and live tail (`GET /v1-mini/logs/tail`: one JSON record per line as lines arrive), both
//! taking a LogQL stream selector with line filters in `query`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use mini_apiserver::Body;
use mini_logstore::{Direction, LogRecord, SearchQuery};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::route::{json_response, status_response};
use crate::scope::Scope;
use crate::{params, Observe};

/// Records per page unless `limit` says otherwise, and the most one page may hold.
pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 5000;
/// The window searched when neither `start` nor `since` is given.
const DEFAULT_SINCE: std::time::Duration = std::time::Duration::from_secs(3600);

/// One record as the search and tail endpoints answer it.
pub(crate) fn record_json(record: &LogRecord) -> Value {
    let time = chrono::DateTime::from_timestamp_nanos(record.timestamp_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    json!({
        "time": time,
        "timestampNs": record.timestamp_ns.to_string(),
        "labels": record.labels,
        "podLabels": record.pod_labels,
        "line": record.line,
    })
}

fn bad(message: String) -> Response<Body> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", &message)
}

/// The search a request asks for, within `scope`.
pub(crate) fn query_from(
    pairs: &[(String, String)],
    scope: &Scope,
    budget: std::time::Duration,
    now_ns: i64,
) -> Result<SearchQuery, String> {
    let (matchers, line_filters) = match params::get(pairs, "query") {
        Some(q) => mini_logstore::parse_logql(q).map_err(|e| format!("query: {e}"))?,
        None => (Vec::new(), Vec::new()),
    };
    let end_ns = match params::get(pairs, "end") {
        Some(t) => params::time_ns(t).map_err(|e| format!("end: {e}"))?,
        None => now_ns,
    };
    let start_ns = match (params::get(pairs, "start"), params::get(pairs, "since")) {
        (Some(t), _) => params::time_ns(t).map_err(|e| format!("start: {e}"))?,
        (None, Some(d)) => {
            let since = params::duration(d).map_err(|e| format!("since: {e}"))?;
            end_ns.saturating_sub(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
        }
        (None, None) => end_ns.saturating_sub(DEFAULT_SINCE.as_nanos() as i64),
    };
    if start_ns > end_ns {
        return Err("start is after end".to_string());
    }
    let limit = match params::get(pairs, "limit") {
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit {l:?} is not a number from 1 to {MAX_LIMIT}")),
        },
        None => DEFAULT_LIMIT,
    };
    let direction = match params::get(pairs, "direction") {
        None | Some("backward") => Direction::Backward,
        Some("forward") => Direction::Forward,
        Some(other) => {
            return Err(format!(
                "direction {other:?} is neither backward (newest first) nor forward (oldest first)"
            ))
        }
    };
    Ok(SearchQuery {
        start_ns,
        end_ns,
        matchers,
        line_filters,
        direction,
        limit,
        cursor: params::get(pairs, "cursor").map(str::to_string),
        namespaces: scope.log_scope(),
        time_budget: budget,
    })
}

pub(crate) async fn search(
    observe: &Arc<Observe>,
    pairs: &[(String, String)],
    scope: &Scope,
) -> Response<Body> {
    let query = match query_from(pairs, scope, observe.config.search_budget, crate::now_ns()) {
        Ok(query) => query,
        Err(message) => return bad(message),
    };
    let store = observe.logs.clone();
    let searched = tokio::task::spawn_blocking(move || store.search(&query)).await;
    match searched {
        Ok(Ok(page)) => json_response(
            StatusCode::OK,
            &json!({
                "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
                "nextCursor": page.next_cursor,
                "truncatedByTimeBudget": page.truncated_by_budget,
                "scannedBytes": page.scanned_bytes,
            }),
        ),
        Ok(Err(e)) => bad(format!("searching the logs failed: {e}")),
        Err(e) => status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("searching the logs panicked: {e}"),
        ),
    }
}

pub(crate) fn tail(
    observe: &Arc<Observe>,
    pairs: &[(String, String)],
    scope: &Scope,
) -> Response<Body> {
    let query = match query_from(pairs, scope, observe.config.search_budget, crate::now_ns()) {
        Ok(query) => query,
        Err(message) => return bad(message),
    };
    let records = observe.logs.tail(&query);
    let lines = ReceiverStream::new(records).map(|record| {
        let mut line = serde_json::to_vec(&record_json(&record)).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(line)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(lines).boxed_unsync())
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn query_from_defaults_to_last_hour_newest_first() {
        let q = query_from(&[], &Scope::all(), std::time::Duration::from_secs(5), NOW).unwrap();
        assert_eq!(q.end_ns, NOW);
        assert_eq!(q.start_ns, NOW - 3_600_000_000_000);
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert!(matches!(q.direction, Direction::Backward));
    }

    #[test]
    fn query_from_since_and_forward() {
        let q = query_from(
            &pairs(&[("since", "15m"), ("direction", "forward"), ("limit", "7")]),
            &Scope::all(),
            std::time::Duration::from_secs(5),
            NOW,
        )
        .unwrap();
        assert_eq!(q.start_ns, NOW - 900_000_000_000);
        assert!(matches!(q.direction, Direction::Forward));
        assert_eq!(q.limit, 7);
    }

    #[test]
    fn query_from_bad_values_are_refused_with_the_parameter_named() {
        let budget = std::time::Duration::from_secs(5);
        for (list, word) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "99999")], "limit"),
            (vec![("direction", "up")], "direction"),
            (vec![("since", "soon")], "since"),
            (
                vec![("start", "2030-01-01T00:00:00Z")],
                "start is after end",
            ),
            (vec![("query", "{pod=}")], "query"),
        ] {
            let err = query_from(&pairs(&list), &Scope::all(), budget, NOW).unwrap_err();
            assert!(err.contains(word), "{list:?}: {err}");
        }
    }
}
