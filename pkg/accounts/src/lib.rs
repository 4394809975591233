//! People's accounts (mini-accounts): argon2id passwords in the store, roles as ordinary RBAC
//! bindings to the `admin`/`edit`/`view` ClusterRoles written as the caller (so Kubernetes'
//! escalation check applies), login sessions in a cookie with CSRF and Origin checks, account
//! tokens for downloaded kubeconfigs, failed-login rate limiting and the audit log.
//!
//! [`install`] hooks it all into the API server: the `/v1-mini/accounts` and
//! `/v1-mini/session` routes, the authenticator of session cookies and account tokens, and
//! the audit sink.

pub mod api;
pub mod audit;
pub mod client;
pub mod csrf;
pub mod manage;
pub mod password;
pub mod ratelimit;
pub mod record;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use mini_apiserver::ApiServer;
use mini_rbac::UserInfo;
use tokio_util::sync::CancellationToken;

pub use audit::{AuditConfig, AuditLog};
pub use session::SessionLimits;

/// The group every account's user is in (besides `system:authenticated`).
pub const ACCOUNTS_GROUP: &str = "mini:accounts";
/// The label on the role bindings of an account, naming it.
pub const ACCOUNT_LABEL: &str = "accounts.mini.dev/user";
/// The annotation on an account's role bindings naming who created them.
pub const CREATED_BY_ANNOTATION: &str = "accounts.mini.dev/created-by";
/// The roles an account may be given.
pub const ROLES: &[&str] = &["cluster-admin", "admin", "edit", "view"];

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many failed logins: try again in {retry_after} seconds")]
    TooManyRequests { retry_after: u64 },
    /// An answer of the API server to a write done as the caller.
    #[error("{message}")]
    Api { code: u16, message: String },
    #[error("{0}")]
    Internal(String),
    /// The client side (`mini user`): the request could not be made.
    #[error("{0}")]
    Client(String),
}

impl AccountsError {
    /// The HTTP status this error answers with.
    pub fn code(&self) -> u16 {
        match self {
            AccountsError::Invalid(_) => 422,
            AccountsError::NotFound(_) => 404,
            AccountsError::Conflict(_) => 409,
            AccountsError::Unauthorized(_) => 401,
            AccountsError::Forbidden(_) => 403,
            AccountsError::TooManyRequests { .. } => 429,
            AccountsError::Api { code, .. } => *code,
            AccountsError::Internal(_) | AccountsError::Client(_) => 500,
        }
    }
}

/// How accounts behave; built by `mini server` from its flags.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub sessions: SessionLimits,
    /// How long a downloaded kubeconfig's token is valid.
    pub token_lifetime: Duration,
    /// Failed logins per account name, and per client address, within `failure_window`.
    pub max_failures: usize,
    pub failure_window: Duration,
    pub audit: AuditConfig,
    /// The cluster CA bundle written into downloaded kubeconfigs.
    pub ca_pem: String,
}

impl AccountsConfig {
    /// Defaults: 30 min idle, 12 h lifetime, 30-day tokens, 5 failures a minute, the audit
    /// log in `server_dir`.
    pub fn new(server_dir: &std::path::Path, ca_pem: String) -> Self {
        AccountsConfig {
            sessions: SessionLimits::default(),
            token_lifetime: Duration::from_secs(30 * 24 * 3600),
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            audit: AuditConfig::in_dir(server_dir),
            ca_pem,
        }
    }
}

/// The user an account is.
pub fn account_user(name: &str) -> UserInfo {
    UserInfo {
        name: name.to_string(),
        groups: vec![
            ACCOUNTS_GROUP.to_string(),
            "system:authenticated".to_string(),
        ],
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Builds the accounts service over `api` and installs its routes, authenticator and audit
/// sink; expired sessions are swept every few minutes until `shutdown`.
pub fn install(
    api: &ApiServer,
    config: AccountsConfig,
    shutdown: CancellationToken,
) -> Arc<api::Accounts> {
    let accounts = Arc::new(api::Accounts::new(api.clone(), config));
    api.add_streaming_route(Arc::new(api::Route(accounts.clone())));
    api.set_account_authenticator(accounts.clone());
    api.set_audit_sink(accounts.audit_log());
    let sweeper = accounts.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = sweeper.sessions().sweep(now_unix()).await {
                        tracing::warn!(error = %e, "sweeping expired sessions failed");
                    }
                }
            }
        }
    });
    accounts
}
