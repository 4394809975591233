//! `POST /v1-mini/node-join`: a node agent holding a join token (the server's permanent token or
//! an unexpired bootstrap token) gets its client and serving
//! certificates signed, and its node name is bound to a node password so that two machines
//! can never silently share one node.
//!
//! The password's sha256 is kept in the Secret `kube-system/<node>.node-password.mini` (as k3s
//! does). A re-join with the same password (an agent restart) is always allowed. A different
//! password takes the name over only when the node is gone or its Lease has not been renewed
//! for [`STALE_AFTER`] (a re-installed machine); otherwise the join is refused with 409.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use mini_api::{meta, ApiError, Cause};
use mini_rbac::UserInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::handlers::store_error;
use crate::ApiServer;

/// The join endpoint's path.
pub const JOIN_PATH: &str = "/v1-mini/node-join";
/// A node whose Lease is older than this is considered dead and its name may be taken over.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// Node certificates are valid for one year (unless the server was started with another
/// certificate lifetime).
pub(crate) const NODE_CERT_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(365 * 86_400);
const NODE_PASSWORD_SUFFIX: &str = ".node-password.mini";
const NODE_PASSWORD_SECRET_TYPE: &str = "mini.io/node-password";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinRequest {
    node_name: String,
    node_password: String,
    #[serde(rename = "clientCSR")]
    client_csr: String,
    #[serde(rename = "servingCSR")]
    serving_csr: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    client_cert: String,
    serving_cert: String,
    ca_cert: String,
}

/// Answers a join request from an authenticated `user`.
pub(crate) async fn handle(
    server: &ApiServer,
    req: &Request<Bytes>,
    user: &UserInfo,
) -> Result<Response<Body>, ApiError> {
    if !crate::auth::is_join_token_user(user) {
        return Err(ApiError::forbidden(format!(
            "forbidden: User \"{}\" cannot join nodes: only a join token (the server's or a bootstrap token) may (path \"{JOIN_PATH}\")",
            user.name
        )));
    }
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "{JOIN_PATH} only accepts POST"
        )));
    }
    let join: JoinRequest = serde_json::from_slice(req.body())
        .map_err(|e| ApiError::bad_request(format!("invalid node join request: {e}")))?;
    if let Some(problem) = dns1123_subdomain_problem(&join.node_name) {
        return Err(ApiError::invalid(
            "",
            "Node",
            &join.node_name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {:?}: {problem}", join.node_name),
                field: "nodeName".into(),
            }],
        ));
    }
    if join.node_password.is_empty() {
        return Err(ApiError::bad_request(
            "invalid node join request: nodePassword must not be empty",
        ));
    }
    let Some(ca) = server.signing_ca() else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "this server has no cluster CA key and cannot sign node certificates",
        ));
    };
    // sign first: a bad CSR must not touch the node's identity
    let token_user = user.name.clone();
    let user = format!("system:node:{}", join.node_name);
    let lifetime = server.node_cert_lifetime();
    let client_cert = ca
        .sign_csr_as_client_for(
            &join.client_csr,
            &user,
            &["system:nodes".to_string()],
            lifetime,
        )
        .map_err(|e| ApiError::bad_request(format!("invalid clientCSR: {e}")))?;
    let serving_cert = ca
        .sign_csr_for(&join.serving_csr, true, lifetime)
        .map_err(|e| ApiError::bad_request(format!("invalid servingCSR: {e}")))?;
    claim_node_name(server, &join.node_name, &join.node_password).await?;
    tracing::info!(node = %join.node_name, %token_user, "node joined");
    Ok(body::json(
        StatusCode::OK,
        &serde_json::to_value(JoinResponse {
            client_cert,
            serving_cert,
            ca_cert: server.ca_bundle_pem(),
        })
        .unwrap_or_default(),
    ))
}

/// Why `name` is not a DNS-1123 subdomain, if it is not.
pub(crate) fn dns1123_subdomain_problem(name: &str) -> Option<&'static str> {
    const MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
    if name.is_empty() || name.len() > 253 {
        return Some("must be no more than 253 characters and not empty");
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    (!ok).then_some(MESSAGE)
}

fn password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn secret_key(node: &str) -> String {
    format!("/registry/core/secrets/kube-system/{node}{NODE_PASSWORD_SUFFIX}")
}

fn password_secret(node: &str, hash: &str) -> Value {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(hash);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": format!("{node}{NODE_PASSWORD_SUFFIX}"), "namespace": "kube-system",
                        "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
                        "labels": {"mini.io/node": node}},
           "type": NODE_PASSWORD_SECRET_TYPE,
           "immutable": false,
           "data": {"hash": encoded}})
}

fn stored_hash(secret: &Value) -> Option<String> {
    use base64::Engine;
    let encoded = secret["data"]["hash"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Binds `node` to `password`, or checks that it already is; takes over a dead node's name.
async fn claim_node_name(server: &ApiServer, node: &str, password: &str) -> Result<(), ApiError> {
    let store = &server.inner.store;
    let key = secret_key(node);
    let wanted = password_hash(password);
    // two rounds: a concurrent first join may create the secret between our read and create
    for _ in 0..2 {
        match store.get(&key).await.map_err(store_error)? {
            None => {
                let obj = password_secret(node, &wanted);
                match store.create(&key, meta::to_storage_bytes(&obj)).await {
                    Ok(_) => return Ok(()),
                    Err(mini_store::StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            Some(kv) => {
                let mut secret: Value = serde_json::from_slice(&kv.value)
                    .map_err(|e| ApiError::internal(format!("node password secret: {e}")))?;
                if stored_hash(&secret).is_some_and(|h| constant_time_eq(&h, &wanted)) {
                    return Ok(());
                }
                if node_is_alive(server, node).await? {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "node name {node:?} is in use by another machine with a different node password; \
                             pick another --node-name, or delete the node first (kubectl delete node {node})"
                        ),
                    )
                    .with_details("", "nodes", node));
                }
                let fresh = password_secret(node, &wanted);
                secret["data"] = fresh["data"].clone();
                secret["type"] = fresh["type"].clone();
                match store
                    .update(&key, meta::to_storage_bytes(&secret), Some(kv.mod_revision))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(node, "a new machine took over the name of a dead node");
                        record_takeover_event(server, node).await;
                        return Ok(());
                    }
                    Err(mini_store::StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!("node name {node:?} is being joined concurrently; retry"),
    ))
}

/// Whether the Node exists and shows life: its Lease renewed within [`STALE_AFTER`], or, while
/// it has no Lease yet, the Node created within [`STALE_AFTER`].
async fn node_is_alive(server: &ApiServer, node: &str) -> Result<bool, ApiError> {
    let store = &server.inner.store;
    let Some(node_kv) = store
        .get(&format!("/registry/core/nodes/{node}"))
        .await
        .map_err(store_error)?
    else {
        return Ok(false);
    };
    let now = chrono::Utc::now();
    let recent = |t: Option<&str>| {
        t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| now.signed_duration_since(t) <= STALE_AFTER)
    };
    let lease = store
        .get(&format!(
            "/registry/coordination.k8s.io/leases/kube-node-lease/{node}"
        ))
        .await
        .map_err(store_error)?;
    Ok(match lease {
        Some(kv) => {
            let lease: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            recent(
                lease["spec"]["renewTime"]
                    .as_str()
                    .or(lease["spec"]["acquireTime"].as_str()),
            )
        }
        None => {
            let node_obj: Value = serde_json::from_slice(&node_kv.value).unwrap_or_default();
            recent(node_obj["metadata"]["creationTimestamp"].as_str())
        }
    })
}

/// A Warning event on the node saying its name was taken over; best effort.
async fn record_takeover_event(server: &ApiServer, node: &str) {
    let now = meta::now_rfc3339();
    let uid = meta::new_uid();
    let name = format!("{node}.{}", &uid.replace('-', "")[..16]);
    let node_uid = server
        .inner
        .store
        .get(&format!("/registry/core/nodes/{node}"))
        .await
        .ok()
        .flatten()
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .and_then(|n| n["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap_or_else(|| node.to_string());
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default", "uid": uid, "creationTimestamp": now},
        "involvedObject": {"kind": "Node", "name": node, "uid": node_uid, "apiVersion": "v1"},
        "reason": "NodePasswordTakeover",
        "message": format!("node {node} was not renewing its lease; a machine with a different node password took over its name"),
        "source": {"component": "mini-apiserver"},
        "reportingComponent": "mini-apiserver",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": "Warning"});
    let key = format!("/registry/core/events/default/{name}");
    if let Err(e) = server
        .inner
        .store
        .create(&key, meta::to_storage_bytes(&event))
        .await
    {
        tracing::warn!(node, error = %e, "recording the node takeover event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_subdomain_problem_accepts_hostnames_and_rejects_bad_names() {
        for good in ["node-1", "a", "n1.example.com", "10-0-0-1"] {
            assert_eq!(dns1123_subdomain_problem(good), None, "{good}");
        }
        for bad in ["", "Node1", "-a", "a-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(dns1123_subdomain_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn stored_hash_round_trips_the_password_hash() {
        let hash = password_hash("s3cret");
        assert_eq!(hash.len(), 64);
        let secret = password_secret("n1", &hash);
        assert_eq!(stored_hash(&secret).as_deref(), Some(hash.as_str()));
        assert!(constant_time_eq(&hash, &password_hash("s3cret")));
        assert!(!constant_time_eq(&hash, &password_hash("other")));
    }
}
