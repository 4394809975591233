//! `POST /v1-mini/snapshot/save[?name=N]` on the API port, for cluster administrators only:
//! the caller is authenticated like any API request and authorized by RBAC as a non-resource
//! URL (`cluster-admin` and `system:masters` may; others get 403). Answers the saved [`Entry`].

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use mini_apiserver::{
    admin_route_user, route_failure, route_json, ApiServer, Body, StreamingRoute,
};
use mini_rbac::UserInfo;

use crate::dir::Entry;
use crate::source::Snapshotter;
use crate::{SnapshotError, ON_DEMAND};

pub const SAVE_PATH: &str = "/v1-mini/snapshot/save";
const PREFIX: &str = "/v1-mini/snapshot/";

struct Route {
    api: ApiServer,
    snapshotter: Arc<Snapshotter>,
}

/// Serves the endpoint on `api`'s port.
pub fn install(api: &ApiServer, snapshotter: Arc<Snapshotter>) {
    api.add_streaming_route(Arc::new(Route {
        api: api.clone(),
        snapshotter,
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
        let snapshotter = self.snapshotter.clone();
        Box::pin(async move { answer(api, snapshotter, req, peer).await })
    }
}

fn saved(entry: &Entry) -> Response<Body> {
    match serde_json::to_vec(entry) {
        Ok(bytes) => route_json(StatusCode::OK, bytes),
        Err(e) => route_failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("encoding the answer: {e}"),
        ),
    }
}

/// The `name` query parameter, if any.
fn name_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "name")
        .map(|(_, value)| value.to_string())
}

async fn answer(
    api: ApiServer,
    snapshotter: Arc<Snapshotter>,
    req: Request<Body>,
    peer: Option<UserInfo>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Err(refused) = admin_route_user(
        &api,
        (req.headers(), &method, &path),
        peer.as_ref(),
        "snapshots need credentials: use the admin kubeconfig",
        "snapshots are for cluster administrators",
    )
    .await
    {
        return refused;
    }
    match (path.as_str(), method) {
        (SAVE_PATH, Method::POST) => {
            let name = name_param(req.uri().query()).unwrap_or_else(|| ON_DEMAND.to_string());
            match snapshotter.save(&name).await {
                Ok(entry) => saved(&entry),
                Err(e @ SnapshotError::BadName(_)) => {
                    route_failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
                }
                Err(e) => route_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &format!("saving the snapshot failed: {e}"),
                ),
            }
        }
        (SAVE_PATH, other) => route_failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{other} is not allowed on {path} (save is POST)"),
        ),
        _ => route_failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{path}: not an endpoint (save)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_param_finds_name_among_others() {
        assert_eq!(
            name_param(Some("a=1&name=nightly")),
            Some("nightly".to_string())
        );
        assert_eq!(name_param(Some("a=1")), None);
        assert_eq!(name_param(None), None);
    }
}
