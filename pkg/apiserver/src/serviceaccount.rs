//! ServiceAccount tokens: signing (`serviceaccounts/token`, the TokenRequest API) and
//! authenticating bearer tokens as `system:serviceaccount:<ns>:<name>`.

use http::{Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use mini_api::{meta, ApiError};
use mini_rbac::UserInfo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::handlers::{read, Ctx};
use crate::ApiServer;

/// The issuer and default audience of every token, as upstream's default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceAccountClaims {
    namespace: String,
    serviceaccount: NamedRef,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pod: Option<NamedRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NamedRef {
    name: String,
    uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: ServiceAccountClaims,
}

/// Signs and verifies ServiceAccount tokens with the server's ES256 key.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenSigner {
    pub fn new(key: &mini_certs::SigningKey) -> Result<Self, String> {
        Ok(TokenSigner {
            encoding: EncodingKey::from_ec_pem(key.private_pem.as_bytes())
                .map_err(|e| format!("service account signing key: {e}"))?,
            decoding: DecodingKey::from_ec_pem(key.public_pem.as_bytes())
                .map_err(|e| format!("service account verification key: {e}"))?,
        })
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("signing token: {e}")))
    }

    fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.validate_aud = false;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
            .filter(|c| c.aud.iter().any(|a| a == ISSUER))
    }
}

/// A bearer token that is a valid ServiceAccount token for a ServiceAccount (and bound pod)
/// that still exists with the same uid.
pub async fn authenticate(server: &ApiServer, token: &str) -> Option<UserInfo> {
    let claims = server.inner.tokens.verify(token)?;
    let sa = &claims.kubernetes;
    let key = format!(
        "/registry/core/serviceaccounts/{}/{}",
        sa.namespace, sa.serviceaccount.name
    );
    let kv = server.inner.store.get(&key).await.ok()??;
    let stored: Value = serde_json::from_slice(&kv.value).ok()?;
    if stored["metadata"]["uid"].as_str() != Some(sa.serviceaccount.uid.as_str()) {
        return None;
    }
    if let Some(pod) = &sa.pod {
        let key = format!("/registry/core/pods/{}/{}", sa.namespace, pod.name);
        let kv = server.inner.store.get(&key).await.ok()??;
        let stored: Value = serde_json::from_slice(&kv.value).ok()?;
        if stored["metadata"]["uid"].as_str() != Some(pod.uid.as_str()) {
            return None;
        }
    }
    Some(UserInfo {
        name: claims.sub,
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", sa.namespace),
            "system:authenticated".to_string(),
        ],
    })
}

/// `POST .../serviceaccounts/<name>/token`: a TokenRequest answered with a signed token.
pub async fn token_request(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let (_, sa) = read(ctx).await?;
    let ct = body::content_type(ctx.headers);
    let mut req = if ctx.body.is_empty() {
        json!({})
    } else {
        body::decode_object(&ct, ctx.body)?
    };
    let namespace = ctx.info.namespace.clone().unwrap_or_default();
    if mini_nodeauthz::node_identity(ctx.user).is_some() {
        // NodeRestriction: only tokens bound to a pod on the asking node
        let pod = match mini_nodeauthz::admission::token_bound_pod(&req) {
            Some(pod) => ctx
                .server
                .inner
                .store
                .get(&format!("/registry/core/pods/{namespace}/{pod}"))
                .await
                .map_err(crate::handlers::store_error)?
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()),
            None => None,
        };
        let op = mini_nodeauthz::Operation::Create;
        crate::admission::node_restriction(ctx, op, pod.as_ref(), Some(&req)).await?;
    }
    let expiration = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            ctx.name(),
            vec![mini_api::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
                field: "spec.expirationSeconds".into(),
            }],
        ));
    }
    let mut audiences: Vec<String> = req["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(ISSUER.to_string());
    }
    let mut pod = None;
    let bound = &req["spec"]["boundObjectRef"];
    if bound["kind"] == "Pod" {
        let name = bound["name"].as_str().unwrap_or_default().to_string();
        let key = format!("/registry/core/pods/{namespace}/{name}");
        let kv = ctx
            .server
            .inner
            .store
            .get(&key)
            .await
            .map_err(crate::handlers::store_error)?
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let stored: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        let uid = stored["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        pod = Some(NamedRef { name, uid });
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: ISSUER.to_string(),
        sub: format!("system:serviceaccount:{namespace}:{}", ctx.name()),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: meta::new_uid(),
        kubernetes: ServiceAccountClaims {
            namespace: namespace.clone(),
            serviceaccount: NamedRef {
                name: ctx.name().to_string(),
                uid: sa["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            },
            pod,
        },
    };
    let token = ctx.server.inner.tokens.sign(&claims)?;
    let expires = chrono::DateTime::from_timestamp(now + expiration, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] =
        json!({"name": ctx.name(), "namespace": namespace, "creationTimestamp": null});
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(body::json(StatusCode::CREATED, &req))
}
