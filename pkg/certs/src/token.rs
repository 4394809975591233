//! Join tokens (`K10<ca hash>::server:<secret>` or the bootstrap form `K10<ca hash>::<id>.<secret>`),
//! the server's token file, and the rules for upstream `bootstrap.kubernetes.io/token` Secrets.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::fsutil::{ensure_parent, read_optional, write_atomic};
use crate::CertError;

/// Prefix of a full join token.
pub const TOKEN_PREFIX: &str = "K10";
/// The user part of a full join token.
pub const TOKEN_SERVER_USER: &str = "server";

const TOKEN_FILE_MODE: u32 = 0o600;

/// Lowercase hex SHA-256 of the CA bundle bytes as served by `/cacerts`.
pub fn ca_bundle_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// A join token: `K10<ca hash>::server:<secret>`, `K10<ca hash>::<id>.<secret>` (a bootstrap
/// token), or a bare secret (`<id>.<secret>` bare is a bootstrap token too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: Option<String>,
    /// The server's secret, or the bootstrap token's secret part.
    pub secret: String,
    /// The bootstrap token's id, when it is one.
    pub bootstrap_id: Option<String>,
}

fn token_err(msg: impl Into<String>) -> CertError {
    CertError::Token(msg.into())
}

fn check_secret(secret: &str) -> Result<(), CertError> {
    if secret.is_empty() {
        return Err(token_err("secret is empty"));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(token_err(
            "secret contains whitespace or control characters",
        ));
    }
    Ok(())
}

impl JoinToken {
    /// Parses `K10<64 hex digits>::server:<secret>` or a bare secret (surrounding whitespace
    /// is ignored).
    pub fn parse(token: &str) -> Result<Self, CertError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(token_err("token is empty"));
        }
        let Some(rest) = token.strip_prefix(TOKEN_PREFIX) else {
            if let Some((id, secret)) = BootstrapToken::split(token) {
                return Ok(Self {
                    ca_hash: None,
                    secret: secret.to_string(),
                    bootstrap_id: Some(id.to_string()),
                });
            }
            check_secret(token)?;
            return Ok(Self {
                ca_hash: None,
                secret: token.to_string(),
                bootstrap_id: None,
            });
        };
        let (hash, credentials) = rest.split_once("::").ok_or_else(|| {
            token_err("expected K10<ca hash>::server:<secret> or K10<ca hash>::<id>.<secret>")
        })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(token_err("ca hash must be 64 hex digits"));
        }
        if let Some((id, secret)) = BootstrapToken::split(credentials) {
            return Ok(Self {
                ca_hash: Some(hash.to_ascii_lowercase()),
                secret: secret.to_string(),
                bootstrap_id: Some(id.to_string()),
            });
        }
        let (user, secret) = credentials.split_once(':').ok_or_else(|| {
            token_err("expected server:<secret> or <id>.<secret> (6 and 16 characters [a-z0-9]) after the ca hash")
        })?;
        if user != TOKEN_SERVER_USER {
            return Err(token_err(format!(
                "unsupported token user {user:?}, expected \"server\""
            )));
        }
        check_secret(secret)?;
        Ok(Self {
            ca_hash: Some(hash.to_ascii_lowercase()),
            secret: secret.to_string(),
            bootstrap_id: None,
        })
    }

    /// What the agent sends as its bearer token: the server's secret, or `<id>.<secret>`.
    pub fn credential(&self) -> String {
        match &self.bootstrap_id {
            Some(id) => format!("{id}.{}", self.secret),
            None => self.secret.clone(),
        }
    }

    pub fn format(ca_pem: &str, secret: &str) -> String {
        format!(
            "{TOKEN_PREFIX}{}::{TOKEN_SERVER_USER}:{secret}",
            ca_bundle_hash(ca_pem)
        )
    }

    /// Constant-time comparison of the server's secret (a bootstrap token never matches it
    /// unless the server's secret is literally `<id>.<secret>`).
    pub fn secret_matches(&self, secret: &str) -> bool {
        constant_time_eq(self.credential().as_bytes(), secret.as_bytes())
    }

    /// Whether the token's CA hash (if it has one) matches the CA bundle `ca_pem`.
    pub fn ca_matches(&self, ca_pem: &str) -> bool {
        self.ca_hash
            .as_deref()
            .is_none_or(|h| constant_time_eq(h.as_bytes(), ca_bundle_hash(ca_pem).as_bytes()))
    }
}

/// Compares without an early exit on the first differing byte (only the length leaks).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Reads the secret from `path`, or writes `given` (or a new random one) there (0600).
///
/// `given` may be a bare secret or a full token; only the secret is stored. When the file
/// exists and `given` differs from it, `given` wins and is written.
pub fn ensure_token_file(path: &Path, given: Option<&str>) -> Result<String, CertError> {
    let given = given
        .map(JoinToken::parse)
        .transpose()?
        .map(|t| t.credential());
    let existing = read_optional(path)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let secret = match (existing, given) {
        (Some(existing), None) => return Ok(existing),
        (Some(existing), Some(given)) if existing == given => return Ok(existing),
        (_, Some(given)) => given,
        (None, None) => hex::encode(rand::random::<[u8; 16]>()),
    };
    ensure_parent(path)?;
    write_atomic(path, format!("{secret}\n").as_bytes(), TOKEN_FILE_MODE)?;
    Ok(secret)
}

/// Type of upstream bootstrap-token Secrets.
pub const BOOTSTRAP_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Bootstrap-token Secrets are named `bootstrap-token-<id>` in this namespace.
pub const BOOTSTRAP_NAMESPACE: &str = "kube-system";
/// Name prefix of bootstrap-token Secrets.
pub const BOOTSTRAP_SECRET_PREFIX: &str = "bootstrap-token-";
/// The group every bootstrap token authenticates into.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// User name prefix of bootstrap tokens (`system:bootstrap:<id>`).
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token `<id>.<secret>`: id 6 and secret 16 characters of `[a-z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())] as char)
                .collect()
        };
        BootstrapToken {
            id: pick(ID_LEN),
            secret: pick(SECRET_LEN),
        }
    }

    /// `(id, secret)` when `s` is `<id>.<secret>` in the bootstrap-token shape.
    pub fn split(s: &str) -> Option<(&str, &str)> {
        let (id, secret) = s.split_once('.')?;
        (is_token_part(id, ID_LEN) && is_token_part(secret, SECRET_LEN)).then_some((id, secret))
    }

    /// Whether `id` has the shape of a token id.
    pub fn valid_id(id: &str) -> bool {
        is_token_part(id, ID_LEN)
    }

    /// The name of the Secret holding the token with this id.
    pub fn secret_name(id: &str) -> String {
        format!("{BOOTSTRAP_SECRET_PREFIX}{id}")
    }

    /// The CA-pinned form `K10<sha256 of the CA>::<id>.<secret>`.
    pub fn format(&self, ca_pem: &str) -> String {
        format!(
            "{TOKEN_PREFIX}{}::{}.{}",
            ca_bundle_hash(ca_pem),
            self.id,
            self.secret
        )
    }
}

/// Why a bootstrap token was refused; the message is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapRefusal {
    #[error("bootstrap token {id} does not exist (deleted, or never created); create one with `mini token create`")]
    Unknown { id: String },
    #[error(
        "bootstrap token {id} expired at {expiration}; create a new one with `mini token create`"
    )]
    Expired { id: String, expiration: String },
    #[error("bootstrap token {id} is not valid: {reason}")]
    Invalid { id: String, reason: String },
}

/// Checks a presented bootstrap token against the decoded `data` of its Secret (keys
/// token-id, token-secret, expiration, usage-bootstrap-authentication, auth-extra-groups) at
/// `now`; returns the groups it authenticates into (`system:bootstrappers` + extra groups).
pub fn check_bootstrap_secret(
    data: &std::collections::BTreeMap<String, String>,
    id: &str,
    secret: &str,
    now: unix_time::UnixSeconds,
) -> Result<Vec<String>, BootstrapRefusal> {
    let invalid = |reason: &str| BootstrapRefusal::Invalid {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if data.get("token-id").map(String::as_str) != Some(id) {
        return Err(BootstrapRefusal::Unknown { id: id.to_string() });
    }
    let stored = data.get("token-secret").map(String::as_str).unwrap_or("");
    if !constant_time_eq(stored.as_bytes(), secret.as_bytes()) {
        return Err(BootstrapRefusal::Unknown { id: id.to_string() });
    }
    if let Some(expiration) = data.get("expiration").filter(|e| !e.is_empty()) {
        let at = unix_time::parse_rfc3339(expiration)
            .ok_or_else(|| invalid("its expiration is not an RFC 3339 time"))?;
        if at <= now {
            return Err(BootstrapRefusal::Expired {
                id: id.to_string(),
                expiration: expiration.clone(),
            });
        }
    }
    if data
        .get("usage-bootstrap-authentication")
        .map(String::as_str)
        != Some("true")
    {
        return Err(invalid("usage-bootstrap-authentication is not \"true\""));
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    for g in data
        .get("auth-extra-groups")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !g.starts_with("system:bootstrappers:") {
            return Err(invalid(
                "auth-extra-groups may only name groups starting with system:bootstrappers:",
            ));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(groups)
}

/// Whether a token whose Secret has this `expiration` (RFC 3339, empty = never) is expired at `now`.
pub fn bootstrap_expired(expiration: Option<&str>, now: unix_time::UnixSeconds) -> bool {
    expiration
        .filter(|e| !e.is_empty())
        .and_then(unix_time::parse_rfc3339)
        .is_some_and(|at| at <= now)
}

/// RFC 3339 times as Unix seconds, through the `time` crate.
pub mod unix_time {
    /// Seconds since the Unix epoch.
    pub type UnixSeconds = i64;

    /// Now.
    pub fn now() -> UnixSeconds {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Parses an RFC 3339 time.
    pub fn parse_rfc3339(s: &str) -> Option<UnixSeconds> {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    }

    /// Formats Unix seconds as RFC 3339 in UTC (`2026-01-02T03:04:05Z`).
    pub fn format_rfc3339(t: UnixSeconds) -> String {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn data(expiration: &str, groups: &str) -> BTreeMap<String, String> {
        [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("expiration", expiration),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
            ("auth-extra-groups", groups),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn parse_bootstrap_token_with_ca_hash_yields_id_and_secret() {
        let t = JoinToken::parse(&format!("K10{HASH}::abcdef.0123456789abcdef")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(HASH));
        assert_eq!(t.bootstrap_id.as_deref(), Some("abcdef"));
        assert_eq!(t.secret, "0123456789abcdef");
        assert_eq!(t.credential(), "abcdef.0123456789abcdef");
    }

    #[test]
    fn parse_bare_bootstrap_token_is_a_bootstrap_token() {
        let t = JoinToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(t.bootstrap_id.as_deref(), Some("abcdef"));
    }

    #[test]
    fn parse_server_token_keeps_working() {
        let t = JoinToken::parse(&format!("K10{HASH}::server:s3cret")).unwrap();
        assert_eq!(t.bootstrap_id, None);
        assert_eq!(t.credential(), "s3cret");
        assert!(t.secret_matches("s3cret"));
        let bare = JoinToken::parse("plainsecret").unwrap();
        assert_eq!(bare.credential(), "plainsecret");
    }

    #[test]
    fn parse_malformed_bootstrap_credentials_is_rejected() {
        for bad in [
            format!("K10{HASH}::ABCDEF.0123456789abcdef"),
            format!("K10{HASH}::abcde.0123456789abcdef"),
            format!("K10{HASH}::abcdef.0123456789abcde"),
            format!("K10{HASH}::nouser"),
        ] {
            assert!(JoinToken::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bootstrap_token_generate_and_format_round_trip() {
        let t = BootstrapToken::generate();
        assert!(BootstrapToken::valid_id(&t.id));
        assert_eq!(t.secret.len(), 16);
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let full = t.format(ca);
        let parsed = JoinToken::parse(&full).unwrap();
        assert!(parsed.ca_matches(ca));
        assert_eq!(parsed.bootstrap_id.as_deref(), Some(t.id.as_str()));
        assert_eq!(parsed.secret, t.secret);
        assert_eq!(
            BootstrapToken::secret_name(&t.id),
            format!("bootstrap-token-{}", t.id)
        );
    }

    #[test]
    fn check_bootstrap_secret_valid_token_yields_groups() {
        let groups = check_bootstrap_secret(
            &data("2099-01-01T00:00:00Z", "system:bootstrappers:mini:agents"),
            "abcdef",
            "0123456789abcdef",
            unix_time::now(),
        )
        .unwrap();
        assert_eq!(
            groups,
            ["system:bootstrappers", "system:bootstrappers:mini:agents"]
        );
        // no expiration = never expires
        assert!(check_bootstrap_secret(
            &data("", ""),
            "abcdef",
            "0123456789abcdef",
            unix_time::now()
        )
        .is_ok());
    }

    #[test]
    fn check_bootstrap_secret_expired_token_says_expired() {
        let err = check_bootstrap_secret(
            &data("2020-01-01T00:00:00Z", ""),
            "abcdef",
            "0123456789abcdef",
            unix_time::now(),
        )
        .unwrap_err();
        assert!(matches!(err, BootstrapRefusal::Expired { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(bootstrap_expired(
            Some("2020-01-01T00:00:00Z"),
            unix_time::now()
        ));
        assert!(!bootstrap_expired(Some(""), unix_time::now()));
        assert!(!bootstrap_expired(None, unix_time::now()));
    }

    #[test]
    fn check_bootstrap_secret_wrong_secret_or_bad_groups_is_refused() {
        let d = data("", "");
        assert!(matches!(
            check_bootstrap_secret(&d, "abcdef", "ffffffffffffffff", unix_time::now()),
            Err(BootstrapRefusal::Unknown { .. })
        ));
        let d = data("", "system:masters");
        assert!(matches!(
            check_bootstrap_secret(&d, "abcdef", "0123456789abcdef", unix_time::now()),
            Err(BootstrapRefusal::Invalid { .. })
        ));
    }

    #[test]
    fn rfc3339_format_and_parse_round_trip() {
        let s = unix_time::format_rfc3339(1_700_000_000);
        assert_eq!(s, "2023-11-14T22:13:20Z");
        assert_eq!(unix_time::parse_rfc3339(&s), Some(1_700_000_000));
    }
}
