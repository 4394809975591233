//! `/v1-mini/secrets-encrypt/{status,rotate-keys,reencrypt}` on the API port, for cluster
//! administrators only: the caller is authenticated like any API request and authorized by
//! RBAC as a non-resource URL (`cluster-admin` and `system:masters` may; others get 403).

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use mini_apiserver::{
    admin_route_user, route_failure, route_json, ApiServer, Body, StreamingRoute,
};
use mini_rbac::UserInfo;

use crate::{Encryption, EncryptionError};

const PREFIX: &str = "/v1-mini/secrets-encrypt/";
pub const STATUS_PATH: &str = "/v1-mini/secrets-encrypt/status";
pub const ROTATE_PATH: &str = "/v1-mini/secrets-encrypt/rotate-keys";
pub const REENCRYPT_PATH: &str = "/v1-mini/secrets-encrypt/reencrypt";

struct Route {
    api: ApiServer,
    enc: Arc<Encryption>,
}

/// Serves the endpoints on `api`'s port.
pub fn install(api: &ApiServer, enc: Arc<Encryption>) {
    api.add_streaming_route(Arc::new(Route {
        api: api.clone(),
        enc,
    }));
}

impl StreamingRoute for Route {
    fn handles(&self, path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    fn handle(
        &self,
        req: Request<Body>,
        peer: Option<UserInfo>,
    ) -> BoxFuture<'static, Response<Body>> {
        let api = self.api.clone();
        let enc = self.enc.clone();
        Box::pin(async move { answer(api, enc, req, peer).await })
    }
}

fn error_response(e: EncryptionError) -> Response<Body> {
    let (status, reason) = match &e {
        EncryptionError::Busy(_) => (StatusCode::CONFLICT, "Conflict"),
        EncryptionError::Disabled | EncryptionError::NothingToRotate => {
            (StatusCode::BAD_REQUEST, "BadRequest")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    route_failure(status, reason, &e.to_string())
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

async fn answer(
    api: ApiServer,
    enc: Arc<Encryption>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Err(refused) = admin_route_user(
        &api,
        (req.headers(), &method, &path),
        peer.as_ref(),
        "secrets encryption needs credentials: use the admin kubeconfig",
        "secrets encryption is for cluster administrators",
    )
    .await
    {
        return refused;
    }
    match (path.as_str(), method) {
        (STATUS_PATH, Method::GET) => match enc.status().await {
            Ok(status) => ok(&status),
            Err(e) => error_response(e),
        },
        (ROTATE_PATH, Method::POST) => match enc.rotate_keys().await {
            Ok(started) => ok(&started),
            Err(e) => error_response(e),
        },
        (REENCRYPT_PATH, Method::POST) => match enc.begin_pass() {
            Ok(started) => ok(&started),
            Err(e) => error_response(e),
        },
        (STATUS_PATH | ROTATE_PATH | REENCRYPT_PATH, other) => route_failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{other} is not allowed on {path} (status is GET, rotate-keys and reencrypt are POST)"),
        ),
        _ => route_failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{path}: not an endpoint (status, rotate-keys, reencrypt)"),
        ),
    }
}
