//! The results endpoint on the API server's port, under [`PREFIX`]:
//! - `GET  /loadtest/v1/namespaces/NS/loadtests/NAME/results?format=json|html|csv|hdr` — for
//!   people (the CLI, the console): any credential the API accepts (a client certificate, a
//!   bearer token or the console's session cookie), and RBAC `get loadtests`; with
//!   `format=json&since=SECOND` only the seconds from SECOND on and no histograms (what the
//!   console polls while a run goes on);
//! - `GET  /loadtest/v1/runs/UID/start` and `POST /loadtest/v1/runs/UID/reports` — for the
//!   generator pods of that run, with the run's own bearer token;
//! - `GET|PUT /loadtest/v1/peer/namespaces/NS/loadtests/NAME/results` — for the other servers
//!   only ([`crate::peers`]): this server's own results document, and copies of finished runs.
//!
//! Results this server does not hold (another server runs the LoadTest, or took its results
//! while this one was away) are asked of the other servers.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use mini_apiserver::{route_failure, ApiServer, Body, StreamingRoute};
use mini_rbac::{RequestAttributes, UserInfo};
use serde_json::json;

use crate::peers::{is_object_name, is_server, MAX_RESULTS_BYTES};
use crate::report::{render, Format};
use crate::results::{ReportBatch, RunResults};
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

/// The request's user, or the answer refusing it.
async fn authenticate(
    api: &ApiServer,
    parts: &http::request::Parts,
    peer: Option<&UserInfo>,
) -> Result<UserInfo, Response<Body>> {
    match api
        .authenticate_request(&parts.method, &parts.uri, &parts.headers, peer)
        .await
    {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(route_failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "authentication required: use a client certificate, a bearer token or a login session",
        )),
        Err(e) => {
            let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::UNAUTHORIZED);
            Err(route_failure(status, &e.reason, &e.message))
        }
    }
}

/// The request's user when it is another server of the cluster, or the answer refusing it.
async fn authenticate_server(
    api: &ApiServer,
    parts: &http::request::Parts,
    peer: Option<&UserInfo>,
) -> Result<UserInfo, Response<Body>> {
    let user = authenticate(api, parts, peer).await?;
    if !is_server(&user) {
        return Err(route_failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{} is not a server of this cluster; these paths are for the servers only",
                user.name
            ),
        ));
    }
    Ok(user)
}

/// The `since=` parameter: a whole number of seconds from the start of the run; the error says
/// how to write it.
fn parse_since(value: Option<&str>) -> Result<Option<u32>, &'static str> {
    match value.map(str::parse::<u32>) {
        None => Ok(None),
        Some(Ok(s)) => Ok(Some(s)),
        Some(Err(_)) => Err("since= takes a whole number of seconds from the start of the run"),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `namespace/name`'s results: this server's, else the first other server's that holds them
/// (a finished run's are kept here from then on).
async fn results_anywhere(
    runs: &Runs,
    namespace: &str,
    name: &str,
    since: Option<u32>,
) -> Option<RunResults> {
    if let Some(results) = runs.results(namespace, name) {
        return Some(results.since_maybe(since));
    }
    let fetched = runs.other_servers()?.fetch(namespace, name, since).await?;
    if since.is_none() && fetched.namespace == namespace && fetched.name == name {
        // a copy of a finished run; a run still going on is refused here
        let _ = runs.store_copy(&fetched);
    }
    Some(fetched)
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
        (&Method::GET, ["peer", "namespaces", ns, "loadtests", name, "results"]) => {
            if let Err(refusal) = authenticate_server(&api, &parts, peer.as_ref()).await {
                return refusal;
            }
            let query = parts.uri.query().unwrap_or_default();
            let since = match parse_since(query_param(query, "since")) {
                Ok(since) => since,
                Err(message) => {
                    return route_failure(StatusCode::BAD_REQUEST, "BadRequest", message)
                }
            };
            // only what this server holds: servers never ask further
            match runs.results(ns, name) {
                Some(results) => respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&results.since_maybe(since)).unwrap_or_default(),
                ),
                None => route_failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("this server holds no results for the load test {ns}/{name}"),
                ),
            }
        }
        (&Method::PUT, ["peer", "namespaces", ns, "loadtests", name, "results"]) => {
            if let Err(refusal) = authenticate_server(&api, &parts, peer.as_ref()).await {
                return refusal;
            }
            if !is_object_name(ns) || !is_object_name(name) {
                return route_failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("{ns:?}/{name:?} does not name a LoadTest"),
                );
            }
            let bytes = match Limited::new(body, MAX_RESULTS_BYTES).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return route_failure(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        &format!("reading the results: {e}"),
                    )
                }
            };
            let results: RunResults = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("the body is not a load test results document: {e}"),
                    )
                }
            };
            if results.namespace != *ns || results.name != *name {
                return route_failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!(
                        "the results are of {}/{}, not of {ns}/{name}",
                        results.namespace, results.name
                    ),
                );
            }
            match runs.store_copy(&results) {
                Ok(()) => json_ok(&json!({"stored": true})),
                Err(crate::LoadTestError::Invalid(message)) => {
                    route_failure(StatusCode::CONFLICT, "Conflict", &message)
                }
                Err(e) => route_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e.to_string(),
                ),
            }
        }
        (&Method::GET, ["namespaces", ns, "loadtests", name, "results"]) => {
            let user = match authenticate(&api, &parts, peer.as_ref()).await {
                Ok(user) => user,
                Err(refusal) => return refusal,
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
            let format = match Format::parse(query_param(query, "format").unwrap_or("json")) {
                Ok(f) => f,
                Err(e) => {
                    return route_failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
                }
            };
            let since = match parse_since(query_param(query, "since")) {
                Ok(Some(_)) if format != Format::Json => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "since= goes with format=json only",
                    )
                }
                Ok(since) => since,
                Err(message) => {
                    return route_failure(StatusCode::BAD_REQUEST, "BadRequest", message)
                }
            };
            let Some(results) = results_anywhere(&runs, ns, name, since).await else {
                return route_failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("no results for the load test {ns}/{name} (yet)"),
                );
            };
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
