//! `/v1-mini/certificates/` on the API port.
//!
//! - `GET /v1-mini/certificates` (cluster administrators): the server's certificates and the
//!   CA rotation state;
//! - `POST /v1-mini/certificates/rotate`, `POST /v1-mini/certificates/rotate-ca` (cluster
//!   administrators): renew now, rotate the CA;
//! - `GET`/`POST /v1-mini/certificates/node` (a node, authenticated by its current client
//!   certificate): what to trust and whether to renew; new certificates for its own identity
//!   (the rules are mini-nodeauthz's).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use mini_apiserver::{
    admin_route_user, route_failure, route_json, ApiServer, Body, StreamingRoute,
};
use mini_rbac::UserInfo;

use crate::{CertRotateError, NodeRenewRequest, NodeRenewResponse, RotateCaRequest, ServerCerts};

pub const STATUS_PATH: &str = "/v1-mini/certificates";
pub const ROTATE_PATH: &str = "/v1-mini/certificates/rotate";
pub const ROTATE_CA_PATH: &str = "/v1-mini/certificates/rotate-ca";
pub const NODE_PATH: &str = "/v1-mini/certificates/node";
const MAX_BODY: usize = 64 * 1024;

struct Route {
    api: ApiServer,
    certs: Arc<ServerCerts>,
}

pub(crate) fn install(api: &ApiServer, certs: Arc<ServerCerts>) {
    api.add_streaming_route(Arc::new(Route {
        api: api.clone(),
        certs,
    }));
}

impl StreamingRoute for Route {
    fn handles(&self, path: &str) -> bool {
        path == STATUS_PATH || path.starts_with("/v1-mini/certificates/")
    }

    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let api = self.api.clone();
        let certs = self.certs.clone();
        Box::pin(async move { answer(api, certs, req, peer).await })
    }
}

fn ok<T: serde::Serialize>(value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => route_json(StatusCode::OK, bytes),
        Err(e) => route_failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("encoding the answer: {e}"),
        ),
    }
}

fn error_response(e: CertRotateError) -> Response<Body> {
    let (status, reason) = match &e {
        CertRotateError::RotationInProgress { .. } => (StatusCode::CONFLICT, "Conflict"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    route_failure(status, reason, &e.to_string())
}

async fn read_body(req: Request<Body>) -> Result<bytes::Bytes, Response<Body>> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            route_failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the request body: {e}"),
            )
        })
}

async fn answer(
    api: ApiServer,
    certs: Arc<ServerCerts>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == NODE_PATH {
        return node(api, certs, req, peer).await;
    }
    let method = req.method().clone();
    let user = match admin_route_user(
        &api,
        (req.headers(), &method, &path),
        peer.as_ref(),
        "certificates need credentials: use the admin kubeconfig",
        "certificates are for cluster administrators",
    )
    .await
    {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    match (path.as_str(), method) {
        (STATUS_PATH, Method::GET) => match certs.status() {
            Ok(status) => ok(&status),
            Err(e) => error_response(e),
        },
        (ROTATE_PATH, Method::POST) => {
            tracing::info!(user = user.name, "certificate rotation asked");
            match certs.rotate() {
                Ok(status) => {
                    certs.publish_shared().await;
                    ok(&status)
                }
                Err(e) => error_response(e),
            }
        }
        (ROTATE_CA_PATH, Method::POST) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            let overlap = if body.is_empty() {
                crate::DEFAULT_CA_OVERLAP
            } else {
                match serde_json::from_slice::<RotateCaRequest>(&body) {
                    Ok(r) => Duration::from_secs(r.overlap_seconds),
                    Err(e) => {
                        return route_failure(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            &format!("invalid rotate-ca request: {e}"),
                        )
                    }
                }
            };
            tracing::info!(user = user.name, ?overlap, "CA rotation asked");
            match certs.rotate_ca(overlap) {
                Ok(status) => {
                    certs.publish_shared().await;
                    ok(&status)
                }
                Err(e) => error_response(e),
            }
        }
        (STATUS_PATH | ROTATE_PATH | ROTATE_CA_PATH, other) => route_failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{other} is not allowed on {path} (the status is GET, rotate and rotate-ca are POST)"),
        ),
        _ => route_failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{path}: not an endpoint (rotate, rotate-ca, node)"),
        ),
    }
}

/// A node's own certificates: only with its client certificate (no bearer token, no
/// impersonation), only for itself.
async fn node(
    api: ApiServer,
    certs: Arc<ServerCerts>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let Some(peer) = peer else {
        return route_failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "node certificates are renewed with the node's current client certificate",
        );
    };
    let node = match mini_nodeauthz::certificates::renewal_node(&peer) {
        Ok(node) => node.to_string(),
        Err(why) => return route_failure(StatusCode::FORBIDDEN, "Forbidden", &why),
    };
    match req.method().clone() {
        Method::GET => ok(&certs.node_policy()),
        Method::POST => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(response) => return response,
            };
            let request: NodeRenewRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return route_failure(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("invalid node certificate request: {e}"),
                    )
                }
            };
            renew_node(&api, &certs, &node, &request).await
        }
        other => route_failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{other} is not allowed on {NODE_PATH} (GET or POST)"),
        ),
    }
}

async fn renew_node(
    api: &ApiServer,
    certs: &ServerCerts,
    node: &str,
    request: &NodeRenewRequest,
) -> Response<Body> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        route_failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid {what}: {e}"),
        )
    };
    let sans = match mini_certs::CertAuthority::csr_sans(&request.serving_csr) {
        Ok(s) => s,
        Err(e) => return bad("servingCSR", &e),
    };
    let node_obj = match api
        .store()
        .get(&format!("/registry/core/nodes/{node}"))
        .await
    {
        Ok(kv) => kv.and_then(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok()),
        Err(e) => {
            return route_failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("reading node {node}: {e}"),
            )
        }
    };
    if let Err(why) = mini_nodeauthz::certificates::check_serving_names(
        node,
        node_obj.as_ref(),
        &sans.dns,
        &sans.ips,
    ) {
        return route_failure(StatusCode::FORBIDDEN, "Forbidden", &why);
    }
    let ca = certs.ca();
    let lifetime = certs.lifetime();
    let client_cert = match ca.sign_csr_as_client_for(
        &request.client_csr,
        &format!("{}{node}", mini_nodeauthz::NODE_USER_PREFIX),
        &[mini_nodeauthz::NODES_GROUP.to_string()],
        lifetime,
    ) {
        Ok(c) => c,
        Err(e) => return bad("clientCSR", &e),
    };
    let serving_cert = match ca.sign_server_csr_as(&request.serving_csr, node, lifetime) {
        Ok(c) => c,
        Err(e) => return bad("servingCSR", &e),
    };
    tracing::info!(node, "renewed the node's certificates");
    ok(&NodeRenewResponse {
        client_cert,
        serving_cert,
        ca_bundle: certs.bundle_pem(),
    })
}
