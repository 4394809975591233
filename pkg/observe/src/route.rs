//! The endpoints on the API port: authentication, bounded and decompressed request bodies,
//! and the dispatch to ingestion, the Prometheus and Loki APIs and mini's log search.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mini_apiserver::{Body, StreamingRoute};
use mini_rbac::UserInfo;
use serde_json::{json, Value};

use crate::scope::{self, Scope};
use crate::{ingest, replicate, search, Observe};

/// Where agents post their samples.
pub const SAMPLES_PATH: &str = "/v1-mini/samples";
/// Where agents post their containers' log lines.
pub const LOGS_PATH: &str = "/v1-mini/logs";
/// mini's log search (JSON) and live tail (one JSON record per line).
pub const LOG_SEARCH_PATH: &str = "/v1-mini/logs/search";
pub const LOG_TAIL_PATH: &str = "/v1-mini/logs/tail";
const PROMETHEUS_PREFIX: &str = "/prometheus/api/v1/";
const LOKI_PREFIX: &str = "/loki/api/v1/";

/// Largest ingestion body (after decompression).
const MAX_INGEST_BYTES: usize = 64 << 20;
/// Largest query body (Grafana's form posts).
const MAX_QUERY_BYTES: usize = 1 << 20;

pub(crate) struct ObserveRoute {
    pub(crate) observe: Arc<Observe>,
}

impl StreamingRoute for ObserveRoute {
    fn handles(&self, path: &str) -> bool {
        path.starts_with("/prometheus/")
            || path.starts_with("/loki/")
            || path == SAMPLES_PATH
            || path == LOGS_PATH
            || path.starts_with("/v1-mini/logs/")
    }

    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let observe = self.observe.clone();
        Box::pin(async move { answer(observe, req, peer).await })
    }
}

pub(crate) fn body_of(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// A JSON response ending in a newline.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body_of(bytes))
        .expect("valid response")
}

/// A Kubernetes `Status` failure, as the rest of the API port answers.
pub(crate) fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status.as_u16(),
        }),
    )
}

/// A failure in the format of the API that was asked: Prometheus' and Loki's own shapes, or a
/// Kubernetes `Status` for mini's endpoints.
fn failure(path: &str, status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    if path.starts_with("/prometheus/") {
        let error_type = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "bad_data",
            _ => "internal",
        };
        return json_response(
            status,
            &json!({"status": "error", "errorType": error_type, "error": message}),
        );
    }
    if path.starts_with("/loki/") {
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body_of(format!("{message}\n")))
            .expect("valid response");
    }
    status_response(status, reason, message)
}

/// Reads a whole request body of at most `limit` bytes, decompressed per `Content-Encoding`
/// (gzip, zstd) and still at most `limit` bytes.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes; send smaller batches"),
        )
    };
    let raw = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                )
            }
        })?
        .to_bytes();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let decoded: Box<dyn Read> = match encoding.as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(raw))),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(std::io::Cursor::new(raw))
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("reading zstd: {e}")))?,
        ),
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported (use gzip or zstd)"),
            ))
        }
    };
    let mut out = Vec::new();
    decoded
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("decompressing the request body ({encoding}): {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

pub(crate) async fn answer(
    observe: Arc<Observe>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // client certificates, bearer tokens, or a console session cookie (with its CSRF checks)
    let user = match observe
        .api
        .authenticate_request(&parts.method, &parts.uri, &parts.headers, peer.as_ref())
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return failure(
            &path,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "authentication required: use a client certificate, a bearer token or a login session",
        ),
        Err(e) => {
            let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::UNAUTHORIZED);
            return failure(&path, status, &e.reason, &e.message);
        }
    };
    let ingest_path = path == SAMPLES_PATH || path == LOGS_PATH;
    if ingest_path && parts.method != Method::POST {
        return failure(
            &path,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only POST is allowed here",
        );
    }
    if !ingest_path && parts.method != Method::GET && parts.method != Method::POST {
        return failure(
            &path,
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET and POST are allowed here",
        );
    }
    let limit = if ingest_path {
        MAX_INGEST_BYTES
    } else {
        MAX_QUERY_BYTES
    };
    let bytes = match read_body(&parts.headers, body, limit).await {
        Ok(bytes) => bytes,
        Err((status, message)) => return failure(&path, status, "BadRequest", &message),
    };
    if ingest_path {
        // a batch another server stored and forwards: stored here, not forwarded again
        let replica = parts.headers.contains_key(replicate::REPLICA_HEADER);
        if replica && !replicate::may_replicate(&user) {
            return failure(
                &path,
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{} may not post replicas: only the servers of this cluster may",
                    user.name
                ),
            );
        }
        if path == SAMPLES_PATH {
            return ingest::samples(&observe, &user, bytes, replica).await;
        }
        return ingest::logs(&observe, &user, bytes, replica).await;
    }
    let form = (parts.method == Method::POST && is_form(&parts.headers)).then_some(&bytes[..]);
    let pairs = mini_promql::request_params(parts.uri.query(), form.unwrap_or_default());
    if let Some(rest) = path.strip_prefix(PROMETHEUS_PREFIX) {
        let scope = scope::metrics_scope(&observe.api, &user).await;
        return prometheus(&observe, rest.to_string(), pairs, scope).await;
    }
    if let Some(rest) = path.strip_prefix(LOKI_PREFIX) {
        if rest == "tail" {
            return failure(
                &path,
                StatusCode::NOT_FOUND,
                "NotFound",
                "live tail over websocket is not served; use /v1-mini/logs/tail (or `mini logs search --follow`)",
            );
        }
        let scope = scope::logs_scope(&observe.api, &user).await;
        return loki(&observe, rest.to_string(), pairs, scope).await;
    }
    if path == LOG_SEARCH_PATH {
        let scope = scope::logs_scope(&observe.api, &user).await;
        return search::search(&observe, &pairs, &scope).await;
    }
    if path == LOG_TAIL_PATH {
        let scope = scope::logs_scope(&observe.api, &user).await;
        return search::tail(&observe, &pairs, &scope);
    }
    failure(
        &path,
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{path} is not an endpoint of mini's metrics or logs"),
    )
}

/// Runs one synchronous query API answer (`(status, JSON)`) off the async threads.
async fn blocking_answer(
    path: &'static str,
    answer: impl FnOnce() -> (u16, Value) + Send + 'static,
) -> Response<Body> {
    match tokio::task::spawn_blocking(answer).await {
        Ok((status, body)) => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &body,
        ),
        Err(e) => failure(
            path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("the query failed: {e}"),
        ),
    }
}

async fn prometheus(
    observe: &Arc<Observe>,
    rest: String,
    pairs: Vec<(String, String)>,
    scope: Scope,
) -> Response<Body> {
    let observe = observe.clone();
    blocking_answer("/prometheus/", move || {
        let source = ScopedSeries {
            tsdb: &observe.tsdb,
            scope: &scope,
        };
        mini_promql::api_with_info(
            &rest,
            &pairs,
            &source,
            &observe.config.query_limits,
            crate::now_ns() / 1_000_000,
            &observe.info,
        )
    })
    .await
}

async fn loki(
    observe: &Arc<Observe>,
    rest: String,
    pairs: Vec<(String, String)>,
    scope: Scope,
) -> Response<Body> {
    let observe = observe.clone();
    blocking_answer("/loki/", move || {
        mini_logstore::loki_api(
            &rest,
            &pairs,
            &observe.logs,
            &scope.log_scope(),
            crate::now_ns(),
        )
    })
    .await
}

/// The time-series store as PromQL sees it, narrowed to one caller's scope.
pub(crate) struct ScopedSeries<'a> {
    pub(crate) tsdb: &'a mini_tsdb::Tsdb,
    pub(crate) scope: &'a Scope,
}

fn tsdb_matcher(m: &mini_promql::Matcher) -> mini_tsdb::Matcher {
    mini_tsdb::Matcher {
        name: m.name.clone(),
        op: match m.op {
            mini_promql::MatchOp::Equal => mini_tsdb::MatchOp::Equal,
            mini_promql::MatchOp::NotEqual => mini_tsdb::MatchOp::NotEqual,
            mini_promql::MatchOp::Regex => mini_tsdb::MatchOp::Regex,
            mini_promql::MatchOp::NotRegex => mini_tsdb::MatchOp::NotRegex,
        },
        value: m.value.clone(),
    }
}

impl ScopedSeries<'_> {
    fn matchers(&self, matchers: &[mini_promql::Matcher]) -> Vec<mini_tsdb::Matcher> {
        let mut out: Vec<mini_tsdb::Matcher> = matchers.iter().map(tsdb_matcher).collect();
        if let Some(regex) = self.scope.series_regex() {
            out.push(mini_tsdb::Matcher {
                name: scope::SERIES_NAMESPACE_LABEL.to_string(),
                op: mini_tsdb::MatchOp::Regex,
                value: regex,
            });
        }
        out
    }
}

impl mini_promql::SeriesSource for ScopedSeries<'_> {
    fn select(
        &self,
        matchers: &[mini_promql::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<mini_promql::Series>, String> {
        if self.scope.is_empty() {
            return Ok(Vec::new());
        }
        let series = self
            .tsdb
            .select(&self.matchers(matchers), start_ms, end_ms)
            .map_err(|e| e.to_string())?;
        Ok(series
            .into_iter()
            .filter(|s| self.scope.allows(&s.labels))
            .map(|s| mini_promql::Series {
                labels: s.labels,
                samples: s.samples,
            })
            .collect())
    }

    fn label_names(
        &self,
        matchers: &[mini_promql::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, String> {
        if self.scope.is_empty() {
            return Ok(Vec::new());
        }
        self.tsdb
            .label_names(&self.matchers(matchers), start_ms, end_ms)
            .map_err(|e| e.to_string())
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[mini_promql::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, String> {
        if self.scope.is_empty() {
            return Ok(Vec::new());
        }
        self.tsdb
            .label_values(name, &self.matchers(matchers), start_ms, end_ms)
            .map_err(|e| e.to_string())
    }
}
