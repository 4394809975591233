//! Proxying to node agents (the kubelet API on port 10250): `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`.
//!
//! Every request goes over a fresh HTTP/1.1 connection, TLS verified against the cluster CA
//! (the agent's serving certificate must name the node IP), presenting the kubelet client
//! certificate. Responses are streamed, never buffered. Upgrade requests (WebSocket or SPDY)
//! are forwarded with their headers; when the agent answers 101 the client gets the agent's
//! 101 and the bytes are copied both ways until either side closes.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mini_api::ApiError;
use serde_json::Value;

use crate::body::{self, Body};
use crate::handlers::{store_error, Ctx};
use crate::ApiServer;

/// The kubelet port when the node does not say.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How long dialing an agent (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Request headers never passed on to an agent: the caller's credentials stay here.
const STRIPPED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
    "proxy-authorization",
];

/// Where a node's agent listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeAddress {
    pub ip: IpAddr,
    pub port: u16,
}

/// The agent address of a Node object: its InternalIP (else ExternalIP) and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub(crate) fn node_address(node: &Value) -> Option<NodeAddress> {
    let addresses = node["status"]["addresses"].as_array()?;
    let find = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a["type"] == kind)
            .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
    };
    let ip = find("InternalIP").or_else(|| find("ExternalIP"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(NodeAddress { ip, port })
}

/// Reads a Node and resolves its agent address.
pub(crate) async fn lookup_node(server: &ApiServer, name: &str) -> Result<NodeAddress, ApiError> {
    let kv = server
        .inner
        .store
        .get(&format!("/registry/core/nodes/{name}"))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("", "nodes", name))?;
    let node: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("node {name}: {e}")))?;
    node_address(&node).ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("node {name:?} has no InternalIP address to reach its agent at"),
        )
    })
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(503, "ServiceUnavailable", message)
}

/// Sends `req` to the agent at `addr` over a new TLS connection. The connection lives as long
/// as the response body (and any upgrade) does.
pub(crate) async fn send(
    server: &ApiServer,
    addr: NodeAddress,
    mut req: Request<Full<Bytes>>,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let Some(tls) = server.node_tls() else {
        return Err(unavailable(
            "this API server has no kubelet client certificate; it cannot reach node agents"
                .to_string(),
        ));
    };
    let target = std::net::SocketAddr::new(addr.ip, addr.port);
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("dial tcp {target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip.into());
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls handshake with {target}: {e}"))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, dial)
        .await
        .map_err(|_| {
            unavailable(format!(
                "error dialing backend: dial tcp {target}: timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| unavailable(format!("error dialing backend: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(format!("error talking to the node agent at {target}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node agent connection ended with error");
        }
    });
    if let Ok(host) = HeaderValue::from_str(&target.to_string()) {
        req.headers_mut().insert(header::HOST, host);
    }
    sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(format!("error talking to the node agent at {target}: {e}")))
}

/// The agent's response as ours: status, headers, and a streamed body.
fn relay(resp: Response<hyper::body::Incoming>) -> Response<Body> {
    let (parts, incoming) = resp.into_parts();
    let body = incoming
        .map_err(|e| std::io::Error::other(e.to_string()))
        .boxed_unsync();
    let mut out = Response::from_parts(parts, body);
    strip_hop_by_hop(out.headers_mut());
    out
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    ] {
        headers.remove(h);
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The request to send to the agent: method, path and query, the caller's headers minus
/// credentials, and the body.
fn agent_request(
    original: &Request<Bytes>,
    path_and_query: &str,
    keep_upgrade: bool,
) -> Result<Request<Full<Bytes>>, ApiError> {
    let mut builder = Request::builder()
        .method(original.method().clone())
        .uri(path_and_query);
    for (name, value) in original.headers() {
        if STRIPPED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if !keep_upgrade && matches!(name.as_str(), "connection" | "upgrade") {
            continue;
        }
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(original.body().clone()))
        .map_err(|e| ApiError::bad_request(format!("cannot build the node request: {e}")))
}

/// Proxies a request, following an upgrade when both sides agree to one.
async fn forward(
    server: &ApiServer,
    addr: NodeAddress,
    original: &Request<Bytes>,
    path_and_query: &str,
) -> Result<Response<Body>, ApiError> {
    let upgrade = is_upgrade(original.headers());
    let client_upgrade = original
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .cloned();
    if upgrade && client_upgrade.is_none() {
        return Err(ApiError::bad_request(
            "this connection cannot be upgraded (use HTTP/1.1 for exec, attach and port-forward)",
        ));
    }
    let req = agent_request(original, path_and_query, upgrade)?;
    let mut resp = send(server, addr, req).await?;
    if !(upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS) {
        return Ok(relay(resp));
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    let Some(client_upgrade) = client_upgrade else {
        return Err(ApiError::internal("lost the client's upgrade"));
    };
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade to the node agent failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut agent = TokioIo::new(agent);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(error = %e, "upgraded stream to the node agent ended with error");
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, body::full(Bytes::new())))
}

/// The query string without the given keys, `?`-prefixed when not empty.
fn query_without(uri: &http::Uri, drop: &[&str]) -> String {
    let Some(q) = uri.query() else {
        return String::new();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && !drop.contains(&key)
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request addresses: `?container=`, else the only container, else the
/// `kubectl.kubernetes.io/default-container` annotation; 400 as upstream otherwise.
pub(crate) fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    let ephemeral = container_names(pod, "ephemeralContainers");
    if let Some(c) = requested.filter(|c| !c.is_empty()) {
        if containers
            .iter()
            .chain(&init)
            .chain(&ephemeral)
            .any(|n| n == c)
        {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    if containers.len() == 1 {
        return Ok(containers[0].clone());
    }
    if let Some(default) = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|d| containers.iter().any(|c| c == d))
    {
        return Ok(default.to_string());
    }
    let mut message = format!(
        "a container name must be specified for pod {name}, choose one of: [{}]",
        containers.join(" ")
    );
    if !init.is_empty() {
        message.push_str(&format!(
            " or one of the init containers: [{}]",
            init.join(" ")
        ));
    }
    Err(ApiError::bad_request(message))
}

/// The pod of a `pods/<sub>` request and the agent address of its node.
pub(crate) async fn pod_and_node(ctx: &Ctx<'_>) -> Result<(Value, NodeAddress), ApiError> {
    let (_, pod) = crate::handlers::read(ctx).await?;
    let name = ctx.name();
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let addr = lookup_node(ctx.server, node).await?;
    Ok((pod, addr))
}

/// `GET pods/<name>/log` → `/containerLogs/<ns>/<pod>/<container>?<query>`, streamed.
pub(crate) async fn pod_log(
    ctx: &Ctx<'_>,
    req: &Request<Bytes>,
) -> Result<Response<Body>, ApiError> {
    let (pod, addr) = pod_and_node(ctx).await?;
    let container = pick_container(&pod, ctx.query.get("container"))?;
    let ns = ctx.namespace().unwrap_or("default");
    let path = format!(
        "/containerLogs/{ns}/{}/{container}{}",
        ctx.name(),
        query_without(req.uri(), &["container", "pretty"])
    );
    forward(ctx.server, addr, req, &path).await
}

/// `pods/exec`, `pods/attach` and `pods/portforward` → the agent's `/exec`, `/attach` and
/// `/portForward` endpoints, upgraded.
pub(crate) async fn pod_stream(
    ctx: &Ctx<'_>,
    req: &Request<Bytes>,
    subresource: &str,
) -> Result<Response<Body>, ApiError> {
    let (pod, addr) = pod_and_node(ctx).await?;
    let ns = ctx.namespace().unwrap_or("default");
    let name = ctx.name();
    let path = if subresource == "portforward" {
        format!("/portForward/{ns}/{name}{}", query_without(req.uri(), &[]))
    } else {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot {subresource} into a container in a completed pod; current phase is {phase}"
            )));
        }
        let container = pick_container(&pod, ctx.query.get("container"))?;
        format!(
            "/{subresource}/{ns}/{name}/{container}{}",
            query_without(req.uri(), &["container"])
        )
    };
    forward(ctx.server, addr, req, &path).await
}

/// `nodes/<name>/proxy/<path>` → `/<path>` on the node's agent.
pub(crate) async fn node_proxy(
    ctx: &Ctx<'_>,
    req: &Request<Bytes>,
) -> Result<Response<Body>, ApiError> {
    let name = ctx.name();
    let addr = lookup_node(ctx.server, name).await?;
    let marker = format!("/nodes/{name}/proxy");
    let raw = req.uri().path();
    let rest = raw
        .find(&marker)
        .map(|i| &raw[i + marker.len()..])
        .unwrap_or_default();
    let rest = if rest.is_empty() { "/" } else { rest };
    let path = format!("{rest}{}", query_without(req.uri(), &[]));
    forward(ctx.server, addr, req, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_address_prefers_internal_ip_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "ExternalIP", "address": "1.2.3.4"},
                          {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}}}});
        assert_eq!(
            node_address(&node),
            Some(NodeAddress {
                ip: "10.0.0.5".parse().unwrap(),
                port: 11250
            })
        );
        let bare =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}]}});
        assert_eq!(
            node_address(&bare).map(|a| a.port),
            Some(DEFAULT_KUBELET_PORT)
        );
        assert_eq!(node_address(&json!({"status": {}})), None);
    }

    #[test]
    fn pick_container_defaults_like_upstream() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        let two = json!({"metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "i"}]}});
        let err = pick_container(&two, None).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&two, Some("i")).unwrap(), "i");
        assert_eq!(pick_container(&two, Some("zz")).unwrap_err().code, 400);
        let annotated = json!({"metadata": {"name": "p",
                               "annotations": {"kubectl.kubernetes.io/default-container": "b"}},
                               "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(pick_container(&annotated, None).unwrap(), "b");
    }

    #[test]
    fn query_without_drops_only_the_named_keys() {
        let uri: http::Uri = "/x?container=c&follow=true&tailLines=5".parse().unwrap();
        assert_eq!(
            query_without(&uri, &["container"]),
            "?follow=true&tailLines=5"
        );
        let uri: http::Uri = "/x?container=c".parse().unwrap();
        assert_eq!(query_without(&uri, &["container"]), "");
        assert_eq!(query_without(&"/x".parse().unwrap(), &[]), "");
    }

    #[test]
    fn is_upgrade_needs_connection_upgrade_and_upgrade_header() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
