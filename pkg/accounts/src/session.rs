//! Login sessions: a random secret in the cookie, only its SHA-256 in the store (so sessions
//! survive a restart and a copy of the store logs nobody in), an idle timeout and an absolute
//! lifetime. Last use is kept in memory and written back at most every `persist_every`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use mini_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AccountsError;

/// Where sessions live in the store (outside `/registry/`: not an API object).
pub const SESSION_PREFIX: &str = "/mini/sessions/";
/// The session cookie's name.
pub const COOKIE_NAME: &str = "mini_session";

/// One stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user: String,
    pub groups: Vec<String>,
    /// The token writes must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// Unix seconds.
    pub created: i64,
    pub last_used: i64,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Unused this long (seconds): expired.
    pub idle: i64,
    /// This long after login (seconds): expired however busy.
    pub lifetime: i64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            idle: 30 * 60,
            lifetime: 12 * 3600,
        }
    }
}

impl Session {
    /// Whether the session is still valid at `now` (unix seconds).
    pub fn valid_at(&self, now: i64, limits: SessionLimits) -> bool {
        now - self.last_used < limits.idle && now - self.created < limits.lifetime
    }
}

/// A fresh random secret, URL-safe base64 of 32 bytes.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The store key of the session whose cookie holds `secret`.
pub fn key_of(secret: &str) -> String {
    format!(
        "{SESSION_PREFIX}{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

/// The session cookie's value from a `Cookie` header.
pub fn cookie_secret(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that stores `secret` (HttpOnly, Secure, SameSite=Strict).
pub fn set_cookie(secret: &str, max_age: i64) -> String {
    format!("{COOKIE_NAME}={secret}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}")
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[derive(Debug, Clone)]
struct Cached {
    session: Session,
    /// `last_used` as last written to the store.
    persisted: i64,
}

/// Sessions in the store, with an in-memory cache of the ones in use.
pub struct Sessions {
    store: Arc<dyn Store>,
    limits: SessionLimits,
    persist_every: i64,
    cache: Mutex<HashMap<String, Cached>>,
}

fn store_err(e: StoreError) -> AccountsError {
    AccountsError::Internal(format!("session store: {e}"))
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, limits: SessionLimits) -> Self {
        Sessions {
            store,
            limits,
            persist_every: (limits.idle / 4).clamp(1, 60),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a session for `user`; returns the cookie secret and the session.
    pub async fn create(
        &self,
        user: &str,
        groups: Vec<String>,
        now: i64,
    ) -> Result<(String, Session), AccountsError> {
        let secret = random_secret();
        let session = Session {
            user: user.to_string(),
            groups,
            csrf: random_secret(),
            created: now,
            last_used: now,
        };
        let key = key_of(&secret);
        let bytes =
            serde_json::to_vec(&session).map_err(|e| AccountsError::Internal(e.to_string()))?;
        self.store.create(&key, bytes).await.map_err(store_err)?;
        self.cache().insert(
            key,
            Cached {
                session: session.clone(),
                persisted: now,
            },
        );
        Ok((secret, session))
    }

    /// The valid session of cookie `secret` at `now`, its last use moved to `now`; an expired
    /// one is deleted.
    pub async fn touch(&self, secret: &str, now: i64) -> Result<Option<Session>, AccountsError> {
        let key = key_of(secret);
        let cached = self.cache().get(&key).cloned();
        let mut entry = match cached {
            Some(c) => c,
            None => {
                let Some(kv) = self.store.get(&key).await.map_err(store_err)? else {
                    return Ok(None);
                };
                let Ok(session) = serde_json::from_slice::<Session>(&kv.value) else {
                    let _ = self.store.delete(&key, None).await;
                    return Ok(None);
                };
                let persisted = session.last_used;
                Cached { session, persisted }
            }
        };
        if !entry.session.valid_at(now, self.limits) {
            self.cache().remove(&key);
            let _ = self.store.delete(&key, None).await;
            return Ok(None);
        }
        entry.session.last_used = now;
        let write = now - entry.persisted >= self.persist_every;
        if write {
            entry.persisted = now;
        }
        self.cache().insert(key.clone(), entry.clone());
        if write {
            let bytes = serde_json::to_vec(&entry.session)
                .map_err(|e| AccountsError::Internal(e.to_string()))?;
            match self.store.update(&key, bytes, None).await {
                Ok(_) => {}
                // deleted meanwhile (logout, password change): gone
                Err(StoreError::NotFound { .. }) => {
                    self.cache().remove(&key);
                    return Ok(None);
                }
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(Some(entry.session))
    }

    /// Ends the session of cookie `secret`.
    pub async fn remove(&self, secret: &str) -> Result<(), AccountsError> {
        let key = key_of(secret);
        self.cache().remove(&key);
        match self.store.delete(&key, None).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Ends every session of `user` (password changed, account removed); returns how many.
    pub async fn remove_user(&self, user: &str) -> Result<usize, AccountsError> {
        self.cache().retain(|_, c| c.session.user != user);
        crate::record::delete_owned_by(&*self.store, SESSION_PREFIX, user, |value| {
            serde_json::from_slice::<Session>(value)
                .ok()
                .map(|s| s.user)
        })
        .await
        .map_err(store_err)
    }

    /// Deletes expired sessions from the store (run now and then).
    pub async fn sweep(&self, now: i64) -> Result<usize, AccountsError> {
        let page = self
            .store
            .list(SESSION_PREFIX, None, 0)
            .await
            .map_err(store_err)?;
        let mut removed = 0;
        for kv in page.items {
            let cached = self.cache().get(&kv.key).map(|c| c.session.clone());
            let session = cached.or_else(|| serde_json::from_slice::<Session>(&kv.value).ok());
            if session.is_none_or(|s| !s.valid_at(now, self.limits)) {
                self.cache().remove(&kv.key);
                if self.store.delete(&kv.key, None).await.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            idle: 100,
            lifetime: 1000,
        }
    }

    fn session(created: i64, last_used: i64) -> Session {
        Session {
            user: "u".into(),
            groups: vec![],
            csrf: "c".into(),
            created,
            last_used,
        }
    }

    #[test]
    fn valid_at_idle_too_long_is_expired() {
        assert!(session(0, 0).valid_at(99, limits()));
        assert!(!session(0, 0).valid_at(100, limits()));
    }

    #[test]
    fn valid_at_busy_but_past_lifetime_is_expired() {
        assert!(session(0, 990).valid_at(999, limits()));
        assert!(!session(0, 995).valid_at(1000, limits()));
    }

    #[test]
    fn cookie_secret_found_among_other_cookies() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; mini_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_secret(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_secret(&http::HeaderMap::new()), None);
    }

    #[test]
    fn set_cookie_has_secure_attributes() {
        let c = set_cookie("s", 60);
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
    }

    #[test]
    fn key_of_hides_the_secret() {
        let k = key_of("secret");
        assert!(k.starts_with(SESSION_PREFIX));
        assert!(!k.contains("secret"));
    }

    fn temp_store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = mini_store::SledStore::open(dir.path()).unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn touch_after_idle_timeout_is_none_and_deleted() {
        let (_dir, store) = temp_store();
        let sessions = Sessions::new(store.clone(), limits());
        let (secret, _) = sessions.create("u", vec![], 0).await.unwrap();
        assert!(sessions.touch(&secret, 50).await.unwrap().is_some());
        assert!(sessions.touch(&secret, 140).await.unwrap().is_some());
        assert!(sessions.touch(&secret, 240).await.unwrap().is_none());
        assert!(store.get(&key_of(&secret)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn touch_from_a_fresh_cache_reads_the_store() {
        let (_dir, store) = temp_store();
        let first = Sessions::new(store.clone(), limits());
        let (secret, _) = first.create("u", vec!["g".into()], 0).await.unwrap();
        let second = Sessions::new(store, limits());
        let s = second.touch(&secret, 10).await.unwrap().unwrap();
        assert_eq!(s.user, "u");
        assert_eq!(s.groups, vec!["g".to_string()]);
    }

    #[tokio::test]
    async fn remove_user_ends_only_that_users_sessions() {
        let (_dir, store) = temp_store();
        let sessions = Sessions::new(store, limits());
        let (a, _) = sessions.create("a", vec![], 0).await.unwrap();
        let (b, _) = sessions.create("b", vec![], 0).await.unwrap();
        assert_eq!(sessions.remove_user("a").await.unwrap(), 1);
        assert!(sessions.touch(&a, 1).await.unwrap().is_none());
        assert!(sessions.touch(&b, 1).await.unwrap().is_some());
    }
}
