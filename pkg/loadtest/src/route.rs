//! The results endpoint on the API server's port, under [`PREFIX`]:
//! - `GET  /loadtest/v1/namespaces/NS/loadtests/NAME/results?format=json|html|csv|hdr` — for
//!   people (the CLI, the console): any credential the API accepts (a client certificate, a
//!   bearer token or the console's session cookie), and RBAC `get loadtests`; with
//!   `format=json&since=SECOND` only the seconds from SECOND on and no histograms (what the
//!   console polls while a run goes on);
//! - `GET  /loadtest/v1/runs/UID/start` and `POST /loadtest/v1/runs/UID/reports` — for the
//!   generator pods of that run, with the run's own bearer token.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mini_apiserver::{route_failure, ApiServer, Body, StreamingRoute};
use mini_rbac::{RequestAttributes, UserInfo};
use serde_json::json;

use crate::report::{render, Format};
use crate::results::ReportBatch;
use crate::runs::{Refused, Runs};
use crate::spec::{GROUP, PLURAL};

/// Where the endpoint lives.
pub const PREFIX: &str = "/loadtest/v1/";
/// Largest report batch a generator may post.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// The route the server installs.
pub struct ResultsRoute {
    api: ApiServer,
    runs: Arc<Runs>,
}

impl ResultsRoute {
    pub fn new(api: ApiServer, runs: Arc<Runs>) -> Self {
        ResultsRoute { api, runs }
    }
}

fn body_of(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(body_of(body))
        .unwrap_or_default()
}

fn json_ok(value: &serde_json::Value) -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

fn refused(r: Refused) -> Response<Body> {
    match r {
        Refused::UnknownRun => route_failure(
            StatusCode::GONE,
            "Gone",
            "this load test run is over or was deleted; stop sending",
        ),
        Refused::BadToken => route_failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the run's token is wrong",
        ),
    }
}

fn bearer(headers: &http::HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl StreamingRoute for ResultsRoute {
    fn handles(&self, path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let (api, runs) = (self.api.clone(), self.runs.clone());
        Box::pin(async move { answer(api, runs, req, peer).await })
    }
}

async fn answer(
    api: ApiServer,
    runs: Arc<Runs>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["runs", uid, "start"]) => {
            match runs.start_of(uid, &bearer(&parts.headers)) {
                Ok((start, stop)) => json_ok(&json!({"startUnixMs": start, "stop": stop})),
                Err(r) => refused(r),
            }
        }
        (&Method::POST, ["runs", uid, "reports"]) => {
            let token = bearer(&parts.headers);
            // the token is checked before the body is read
            if let Err(r) = runs.start_of(uid, &token) {
                return refused(r);
            }
            let bytes = match Limited::new(body, MAX_BATCH_BYTES).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("reading the report: {e}"),
                    )
                }
            };
            let batch: ReportBatch = match serde_json::from_slice(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("the report is not a ReportBatch: {e}"),
                    )
                }
            };
            match runs.add_batch(uid, &token, &batch) {
                Ok(Ok(stop)) => json_ok(&json!({"stop": stop})),
                Ok(Err(e)) => route_failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
                Err(r) => refused(r),
            }
        }
        (&Method::GET, ["namespaces", ns, "loadtests", name, "results"]) => {
            let user = match api
                .authenticate_request(&parts.method, &parts.uri, &parts.headers, peer.as_ref())
                .await
            {
                Ok(Some(user)) => user,
                Ok(None) => {
                    return route_failure(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "authentication required: use a client certificate, a bearer token or a login session",
                    )
                }
                Err(e) => {
                    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::UNAUTHORIZED);
                    return route_failure(status, &e.reason, &e.message);
                }
            };
            let attrs = RequestAttributes {
                verb: "get".into(),
                resource_request: true,
                api_group: GROUP.into(),
                resource: PLURAL.into(),
                subresource: String::new(),
                namespace: ns.to_string(),
                name: name.to_string(),
                path: path.clone(),
            };
            if !api.allows(&user, &attrs).await {
                return route_failure(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    &format!(
                        "{} cannot get loadtests.{GROUP} {name:?} in the namespace {ns:?}",
                        user.name
                    ),
                );
            }
            let query = parts.uri.query().unwrap_or_default();
            let param = |key: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            };
            let format = match Format::parse(param("format").unwrap_or("json")) {
                Ok(f) => f,
                Err(e) => {
                    return route_failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
                }
            };
            let since = match param("since").map(str::parse::<u32>) {
                None => None,
                Some(Ok(s)) if format == Format::Json => Some(s),
                Some(Ok(_)) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "since= goes with format=json only",
                    )
                }
                Some(Err(_)) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "since= takes a whole number of seconds from the start of the run",
                    )
                }
            };
            let Some(mut results) = runs.results(ns, name) else {
                return route_failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("no results for the load test {ns}/{name} (yet)"),
                );
            };
            if let Some(second) = since {
                results = results.since(second);
            }
            match render(&results, format) {
                Ok(text) => respond(StatusCode::OK, format.content_type(), text),
                Err(e) => route_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e.to_string(),
                ),
            }
        }
        _ => route_failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {path}: not a load test endpoint", parts.method),
        ),
    }
}
