//! Join tokens (`K10<ca hash>::server:<secret>`) and the server's token file.

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

/// A join token: `K10<ca hash>::server:<secret>`, or a bare secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: Option<String>,
    pub secret: String,
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
            check_secret(token)?;
            return Ok(Self {
                ca_hash: None,
                secret: token.to_string(),
            });
        };
        let (hash, credentials) = rest
            .split_once("::")
            .ok_or_else(|| token_err("expected K10<ca hash>::server:<secret>"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(token_err("ca hash must be 64 hex digits"));
        }
        let (user, secret) = credentials
            .split_once(':')
            .ok_or_else(|| token_err("expected server:<secret> after the ca hash"))?;
        if user != TOKEN_SERVER_USER {
            return Err(token_err(format!(
                "unsupported token user {user:?}, expected \"server\""
            )));
        }
        check_secret(secret)?;
        Ok(Self {
            ca_hash: Some(hash.to_ascii_lowercase()),
            secret: secret.to_string(),
        })
    }

    pub fn format(ca_pem: &str, secret: &str) -> String {
        format!(
            "{TOKEN_PREFIX}{}::{TOKEN_SERVER_USER}:{secret}",
            ca_bundle_hash(ca_pem)
        )
    }

    /// Constant-time comparison of the secret.
    pub fn secret_matches(&self, secret: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), secret.as_bytes())
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
    let given = given.map(JoinToken::parse).transpose()?.map(|t| t.secret);
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
