//! Account records and account tokens in the store: `/mini/accounts/<name>` holds the argon2id
//! hash, `/mini/account-tokens/<id>` the SHA-256 of each kubeconfig token (revoked when the
//! password changes or the account goes).

use std::sync::Arc;

use base64::Engine;
use mini_store::{KeyValue, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AccountsError;

pub const ACCOUNT_PREFIX: &str = "/mini/accounts/";
pub const TOKEN_PREFIX: &str = "/mini/account-tokens/";
/// How an account token starts: `mini-account_<id>_<secret>`.
pub const TOKEN_MARK: &str = "mini-account_";

/// One person's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Who created it (a user name).
    pub created_by: String,
    /// RFC 3339.
    pub created: String,
    pub password_changed: String,
}

/// One kubeconfig token of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub user: String,
    /// SHA-256 of the secret part, hex.
    pub secret_sha256: String,
    /// Unix seconds.
    pub expires: i64,
}

fn store_err(e: StoreError) -> AccountsError {
    AccountsError::Internal(format!("account store: {e}"))
}

/// Deletes the records under `prefix` whose `owner` (read from the stored value; `None` when it
/// does not parse) is `user` or unreadable; returns how many went.
pub(crate) async fn delete_owned_by(
    store: &dyn Store,
    prefix: &str,
    user: &str,
    owner: impl Fn(&[u8]) -> Option<String>,
) -> Result<usize, StoreError> {
    let page = store.list(prefix, None, 0).await?;
    let mut removed = 0;
    for kv in page.items {
        let owner = owner(&kv.value).unwrap_or_default();
        if owner == user || owner.is_empty() {
            match store.delete(&kv.key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => removed += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Account names: a DNS label-like name (lowercase letters, digits, `-`, `.`; at most 63),
/// so it is a valid user, label value and part of an object name.
pub fn check_name(name: &str) -> Result<(), AccountsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AccountsError::Invalid(format!(
            "invalid account name {name:?}: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 63 characters"
        )))
    }
}

/// Accounts and their tokens over the store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
}

impl Records {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Records { store }
    }

    pub async fn get(&self, name: &str) -> Result<Option<(Account, KeyValue)>, AccountsError> {
        let Some(kv) = self
            .store
            .get(&format!("{ACCOUNT_PREFIX}{name}"))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let account = serde_json::from_slice(&kv.value)
            .map_err(|e| AccountsError::Internal(format!("account {name}: {e}")))?;
        Ok(Some((account, kv)))
    }

    pub async fn list(&self) -> Result<Vec<Account>, AccountsError> {
        let page = self
            .store
            .list(ACCOUNT_PREFIX, None, 0)
            .await
            .map_err(store_err)?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// Creates `account`; `Conflict` when the name is taken.
    pub async fn create(&self, account: &Account) -> Result<(), AccountsError> {
        let bytes =
            serde_json::to_vec(account).map_err(|e| AccountsError::Internal(e.to_string()))?;
        match self
            .store
            .create(&format!("{ACCOUNT_PREFIX}{}", account.name), bytes)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => Err(AccountsError::Conflict(format!(
                "account {:?} already exists",
                account.name
            ))),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Replaces `account` (read at `kv`).
    pub async fn update(&self, account: &Account, kv: &KeyValue) -> Result<(), AccountsError> {
        let bytes =
            serde_json::to_vec(account).map_err(|e| AccountsError::Internal(e.to_string()))?;
        self.store
            .update(&kv.key, bytes, Some(kv.mod_revision))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Conflict { .. } => AccountsError::Conflict(format!(
                    "account {:?} changed meanwhile: try again",
                    account.name
                )),
                e => store_err(e),
            })
    }

    pub async fn delete(&self, name: &str) -> Result<(), AccountsError> {
        match self
            .store
            .delete(&format!("{ACCOUNT_PREFIX}{name}"), None)
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Issues a token for `user` valid until `expires` (unix seconds).
    pub async fn issue_token(&self, user: &str, expires: i64) -> Result<String, AccountsError> {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let record = TokenRecord {
            user: user.to_string(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            expires,
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| AccountsError::Internal(e.to_string()))?;
        self.store
            .create(&format!("{TOKEN_PREFIX}{id}"), bytes)
            .await
            .map_err(store_err)?;
        Ok(format!("{TOKEN_MARK}{id}_{secret}"))
    }

    /// The user of an account token valid at `now`; `None` if `token` is no account token,
    /// `Some(None)` if it is one but unknown, revoked or expired.
    pub async fn token_user(
        &self,
        token: &str,
        now: i64,
    ) -> Option<Result<Option<String>, AccountsError>> {
        let rest = token.strip_prefix(TOKEN_MARK)?;
        let Some((id, secret)) = rest.split_once('_') else {
            return Some(Ok(None));
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(Ok(None));
        }
        let kv = match self.store.get(&format!("{TOKEN_PREFIX}{id}")).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Some(Ok(None)),
            Err(e) => return Some(Err(store_err(e))),
        };
        let Ok(record) = serde_json::from_slice::<TokenRecord>(&kv.value) else {
            return Some(Ok(None));
        };
        let sent = hex::encode(Sha256::digest(secret.as_bytes()));
        let matches: bool = sent
            .as_bytes()
            .ct_eq(record.secret_sha256.as_bytes())
            .into();
        Some(Ok((matches && now < record.expires).then_some(record.user)))
    }

    /// Revokes every token of `user`.
    pub async fn revoke_tokens(&self, user: &str) -> Result<usize, AccountsError> {
        delete_owned_by(&*self.store, TOKEN_PREFIX, user, |value| {
            serde_json::from_slice::<TokenRecord>(value)
                .ok()
                .map(|t| t.user)
        })
        .await
        .map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_name_accepts_dns_like_names_only() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("dev-team.1").is_ok());
        for bad in ["", "Alice", "system:admin", "-a", "a-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn token_issued_authenticates_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(Arc::new(mini_store::SledStore::open(dir.path()).unwrap()));
        let token = records.issue_token("alice", 100).await.unwrap();
        assert!(token.starts_with(TOKEN_MARK));
        assert_eq!(
            records.token_user(&token, 10).await.unwrap().unwrap(),
            Some("alice".to_string())
        );
        assert_eq!(
            records.token_user(&token, 100).await.unwrap().unwrap(),
            None
        );
        let wrong = format!("{}x", &token[..token.len() - 1]);
        assert_eq!(records.token_user(&wrong, 10).await.unwrap().unwrap(), None);
        assert!(records.token_user("not-ours", 10).await.is_none());
        assert_eq!(records.revoke_tokens("alice").await.unwrap(), 1);
        assert_eq!(records.token_user(&token, 10).await.unwrap().unwrap(), None);
    }
}
