//! Bootstrap tokens as upstream `bootstrap.kubernetes.io/token` Secrets in kube-system: the
//! token cleaner (deletes the Secrets of expired tokens, as kube-controller-manager's
//! tokencleaner does) and what `mini token create|list|delete` do through the API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::ResourceExt;
use mini_certs::{
    unix_time, BootstrapToken, BOOTSTRAP_NAMESPACE, BOOTSTRAP_SECRET_PREFIX, BOOTSTRAP_SECRET_TYPE,
};

use crate::{Context, ControllerError};

/// How often the cleaner looks for expired tokens.
const CLEAN_PERIOD: Duration = Duration::from_secs(10);

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), BOOTSTRAP_NAMESPACE);
    loop {
        match clean_expired(&api, unix_time::now()).await {
            Ok(deleted) => {
                for id in deleted {
                    tracing::info!(token_id = id, "deleted an expired bootstrap token");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cleaning expired bootstrap tokens failed"),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(CLEAN_PERIOD) => {}
        }
    }
}

/// Deletes the bootstrap-token Secrets expired at `now`; returns their token ids.
pub async fn clean_expired(api: &Api<Secret>, now: i64) -> Result<Vec<String>, ControllerError> {
    let mut deleted = Vec::new();
    for secret in api.list(&ListParams::default()).await?.items {
        let Some(token) = TokenInfo::from_secret(&secret) else {
            continue;
        };
        if !mini_certs::bootstrap_expired(token.expiration.as_deref(), now) {
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&secret.name_any(), &dp).await {
            Ok(_) => deleted.push(token.id),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(deleted)
}

/// What `mini token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// How long the token lives; `None` = never expires.
    pub ttl: Option<Duration>,
    pub description: String,
    /// Extra groups (each `system:bootstrappers:...`).
    pub groups: Vec<String>,
}

/// A bootstrap token as `mini token list` shows it (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    /// RFC 3339, `None` = never expires.
    pub expiration: Option<String>,
    pub description: String,
    /// `authentication`, `signing`, from the `usage-bootstrap-*` keys set to "true".
    pub usages: Vec<String>,
    pub groups: Vec<String>,
}

fn decoded(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|v| (k.clone(), v)))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

impl TokenInfo {
    /// The token a bootstrap-token Secret holds, if it is one.
    pub fn from_secret(secret: &Secret) -> Option<TokenInfo> {
        if secret.type_.as_deref() != Some(BOOTSTRAP_SECRET_TYPE) {
            return None;
        }
        let data = decoded(secret);
        let id = data.get("token-id")?.clone();
        if secret.name_any() != BootstrapToken::secret_name(&id) {
            return None;
        }
        let usages = data
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("usage-bootstrap-")
                    .filter(|_| v == "true")
                    .map(str::to_string)
            })
            .collect();
        Some(TokenInfo {
            id,
            expiration: data.get("expiration").filter(|e| !e.is_empty()).cloned(),
            description: data.get("description").cloned().unwrap_or_default(),
            usages,
            groups: data
                .get("auth-extra-groups")
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Time left as `23h59m`, `<invalid>` once expired, `<forever>` without expiration.
    pub fn ttl_at(&self, now: i64) -> String {
        let Some(at) = self
            .expiration
            .as_deref()
            .and_then(unix_time::parse_rfc3339)
        else {
            return "<forever>".into();
        };
        let left = at - now;
        if left <= 0 {
            return "<invalid>".into();
        }
        let (d, h, m, s) = (
            left / 86_400,
            left % 86_400 / 3_600,
            left % 3_600 / 60,
            left % 60,
        );
        match (d, h, m) {
            (0, 0, 0) => format!("{s}s"),
            (0, 0, _) => format!("{m}m"),
            (0, _, _) => format!("{h}h{m}m"),
            _ => format!("{d}d{h}h"),
        }
    }
}

/// Checks `--groups` values: each must start with `system:bootstrappers:` (as upstream).
pub fn check_groups(groups: &[String]) -> Result<(), ControllerError> {
    for g in groups {
        if !g.starts_with("system:bootstrappers:") || g.len() <= "system:bootstrappers:".len() {
            return Err(ControllerError::Invalid {
                object: format!("group {g:?}"),
                reason: "extra groups must start with system:bootstrappers: (e.g. system:bootstrappers:workers)".into(),
            });
        }
    }
    Ok(())
}

/// The Secret for `token`, expiring at `expiration` (RFC 3339) if any.
pub fn token_secret(
    token: &BootstrapToken,
    request: &TokenRequest,
    expiration: Option<&str>,
) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put("token-id", &token.id);
    put("token-secret", &token.secret);
    if let Some(e) = expiration {
        put("expiration", e);
    }
    if !request.description.is_empty() {
        put("description", &request.description);
    }
    put("usage-bootstrap-authentication", "true");
    put("usage-bootstrap-signing", "true");
    if !request.groups.is_empty() {
        put("auth-extra-groups", &request.groups.join(","));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(BootstrapToken::secret_name(&token.id)),
            namespace: Some(BOOTSTRAP_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        type_: Some(BOOTSTRAP_SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Creates a new bootstrap token; returns it and its expiration (RFC 3339) if any. The CA-pinned
/// form is `token.format(<the CA bundle of /cacerts>)`.
pub async fn create_token(
    client: &kube::Client,
    request: &TokenRequest,
) -> Result<(BootstrapToken, Option<String>), ControllerError> {
    check_groups(&request.groups)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
    let expiration = request
        .ttl
        .filter(|t| !t.is_zero())
        .map(|ttl| unix_time::format_rfc3339(unix_time::now() + ttl.as_secs() as i64));
    // a random id collides with an existing one only by bad luck: try a few
    for _ in 0..5 {
        let token = BootstrapToken::generate();
        let secret = token_secret(&token, request, expiration.as_deref());
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok((token, expiration)),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControllerError::Other(
        "could not find an unused token id after 5 tries".into(),
    ))
}

/// Every bootstrap token, by id.
pub async fn list_tokens(client: &kube::Client) -> Result<Vec<TokenInfo>, ControllerError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
    let mut out: Vec<TokenInfo> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(TokenInfo::from_secret)
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Deletes the token `id` (a bare id, `<id>.<secret>` or a full `K10...` token).
pub async fn delete_token(client: &kube::Client, id: &str) -> Result<String, ControllerError> {
    let id = match mini_certs::JoinToken::parse(id) {
        Ok(t) if t.bootstrap_id.is_some() => t.bootstrap_id.unwrap_or_default(),
        _ => id.trim().to_string(),
    };
    if !BootstrapToken::valid_id(&id) {
        return Err(ControllerError::Invalid {
            object: format!("token id {id:?}"),
            reason: "a token id is 6 characters [a-z0-9] (see mini token list)".into(),
        });
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
    match api
        .delete(
            &format!("{BOOTSTRAP_SECRET_PREFIX}{id}"),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => Ok(id),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(ControllerError::Invalid {
            object: format!("token {id}"),
            reason: "no such bootstrap token (see mini token list)".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BootstrapToken {
        BootstrapToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn token_secret_round_trips_through_token_info() {
        let req = TokenRequest {
            ttl: None,
            description: "workers".into(),
            groups: vec!["system:bootstrappers:workers".into()],
        };
        let secret = token_secret(&token(), &req, Some("2099-01-01T00:00:00Z"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("bootstrap-token-abcdef")
        );
        let info = TokenInfo::from_secret(&secret).unwrap();
        assert_eq!(info.id, "abcdef");
        assert_eq!(info.expiration.as_deref(), Some("2099-01-01T00:00:00Z"));
        assert_eq!(info.description, "workers");
        assert_eq!(info.usages, ["authentication", "signing"]);
        assert_eq!(info.groups, ["system:bootstrappers:workers"]);
    }

    #[test]
    fn ttl_at_formats_remaining_time_expired_and_forever() {
        let req = TokenRequest::default();
        let never = TokenInfo::from_secret(&token_secret(&token(), &req, None)).unwrap();
        assert_eq!(never.ttl_at(0), "<forever>");
        let at = unix_time::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let info =
            TokenInfo::from_secret(&token_secret(&token(), &req, Some("2030-01-01T00:00:00Z")))
                .unwrap();
        assert_eq!(info.ttl_at(at - 3_600 * 23 - 120), "23h2m");
        assert_eq!(info.ttl_at(at - 90), "1m");
        assert_eq!(info.ttl_at(at - 86_400 * 2), "2d0h");
        assert_eq!(info.ttl_at(at + 1), "<invalid>");
    }

    #[test]
    fn check_groups_rejects_groups_outside_bootstrappers() {
        assert!(check_groups(&["system:bootstrappers:x".into()]).is_ok());
        assert!(check_groups(&["system:masters".into()]).is_err());
        assert!(check_groups(&["system:bootstrappers:".into()]).is_err());
    }

    #[tokio::test]
    async fn clean_expired_deletes_only_expired_bootstrap_tokens() {
        let env = mini_testenv::TestEnv::start().await;
        let client = env.controllers_client();
        let api: Api<Secret> = Api::namespaced(client.clone(), BOOTSTRAP_NAMESPACE);
        let old = BootstrapToken {
            id: "old000".into(),
            secret: "0123456789abcdef".into(),
        };
        api.create(
            &PostParams::default(),
            &token_secret(&old, &TokenRequest::default(), Some("2020-01-01T00:00:00Z")),
        )
        .await
        .unwrap();
        let request = TokenRequest {
            ttl: Some(Duration::from_secs(3600)),
            ..TokenRequest::default()
        };
        let (fresh, expiration) = create_token(&client, &request).await.unwrap();
        assert!(expiration.is_some());
        let (forever, never) = create_token(&client, &TokenRequest::default())
            .await
            .unwrap();
        assert_eq!(never, None);
        let deleted = clean_expired(&api, unix_time::now()).await.unwrap();
        assert_eq!(deleted, ["old000"]);
        let left: Vec<String> = list_tokens(&client)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        let mut want = vec![fresh.id.clone(), forever.id.clone()];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(delete_token(&client, &fresh.id).await.unwrap(), fresh.id);
        assert!(delete_token(&client, &fresh.id).await.is_err());
        assert!(delete_token(&client, "NOT-AN-ID").await.is_err());
    }

    #[test]
    fn from_secret_ignores_other_secret_types() {
        let mut s = token_secret(&token(), &TokenRequest::default(), None);
        s.type_ = Some("Opaque".into());
        assert_eq!(TokenInfo::from_secret(&s), None);
    }
}
