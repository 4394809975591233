//! The client side of mini's log search, for `mini logs search`: one page, or a live tail.

use std::collections::BTreeMap;

use futures::{AsyncBufReadExt, TryStreamExt};
use serde::Deserialize;

use crate::route::{LOG_SEARCH_PATH, LOG_TAIL_PATH};
use crate::ObserveError;

/// What to search for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSearchRequest {
    /// A LogQL stream selector with line filters; empty: every stream the caller may read.
    pub query: String,
    /// A duration back from `end` (`15m`), unless `start` is given.
    pub since: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<usize>,
    /// Oldest first instead of newest first.
    pub forward: bool,
    pub cursor: Option<String>,
}

impl LogSearchRequest {
    fn url(&self, path: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.query.is_empty() {
            query.append_pair("query", &self.query);
        }
        for (name, value) in [
            ("since", &self.since),
            ("start", &self.start),
            ("end", &self.end),
            ("cursor", &self.cursor),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        if let Some(limit) = self.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if self.forward {
            query.append_pair("direction", "forward");
        }
        format!("{path}?{}", query.finish())
    }
}

/// One log line found.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchedRecord {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    pub line: String,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSearchResponse {
    pub records: Vec<SearchedRecord>,
    pub next_cursor: Option<String>,
    #[serde(default)]
    pub truncated_by_time_budget: bool,
}

fn client_error(e: kube::Error) -> ObserveError {
    match e {
        kube::Error::Api(status) => ObserveError::Client(status.message),
        other => ObserveError::Client(format!("asking the server: {other}")),
    }
}

/// Searches the cluster's logs once.
pub async fn search_logs(
    client: &kube::Client,
    request: &LogSearchRequest,
) -> Result<LogSearchResponse, ObserveError> {
    let http = http::Request::get(request.url(LOG_SEARCH_PATH))
        .body(Vec::new())
        .map_err(|e| ObserveError::Client(format!("building the request: {e}")))?;
    let text = client.request_text(http).await.map_err(client_error)?;
    serde_json::from_str(&text).map_err(|e| {
        ObserveError::Client(format!("the server's answer is not a search result: {e}"))
    })
}

/// Follows new lines matching `request` until the server ends the stream, calling `each`.
pub async fn tail_logs(
    client: &kube::Client,
    request: &LogSearchRequest,
    mut each: impl FnMut(SearchedRecord),
) -> Result<(), ObserveError> {
    let http = http::Request::get(request.url(LOG_TAIL_PATH))
        .body(Vec::new())
        .map_err(|e| ObserveError::Client(format!("building the request: {e}")))?;
    let reader = client.request_stream(http).await.map_err(client_error)?;
    let mut lines = reader.lines();
    while let Some(line) = lines
        .try_next()
        .await
        .map_err(|e| ObserveError::Client(format!("reading the tail: {e}")))?
    {
        if line.trim().is_empty() {
            continue;
        }
        let record: SearchedRecord = serde_json::from_str(&line).map_err(|e| {
            ObserveError::Client(format!("the server sent a line that is not a record: {e}"))
        })?;
        each(record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_query_and_options() {
        let request = LogSearchRequest {
            query: r#"{namespace="web"} |= "GET /""#.to_string(),
            since: Some("15m".to_string()),
            limit: Some(20),
            forward: true,
            ..Default::default()
        };
        assert_eq!(
            request.url(LOG_SEARCH_PATH),
            "/v1-mini/logs/search?query=%7Bnamespace%3D%22web%22%7D+%7C%3D+%22GET+%2F%22&since=15m&limit=20&direction=forward"
        );
    }

    #[test]
    fn url_without_options_is_bare() {
        assert_eq!(
            LogSearchRequest::default().url(LOG_TAIL_PATH),
            "/v1-mini/logs/tail?"
        );
    }
}
