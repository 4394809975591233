//! Metadata records in the store under `/mini-registry/`: repositories, tags, manifests, blob links, uploads.

use std::sync::Arc;

use mini_store::{Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RegistryError;

pub const PREFIX: &str = "/mini-registry/";

/// A repository: when it was created and last pushed to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoRecord {
    pub created: i64,
    pub last_push: i64,
}

/// A tag → manifest digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub pushed: i64,
}

/// A manifest stored in a repository (its bytes live in the blob store under its digest).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// The subject manifest digest (referrers API).
    #[serde(default)]
    pub subject: Option<String>,
    /// artifactType, or the config media type of an image manifest.
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Config and layer blobs.
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Child manifests of an index / manifest list.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Total size: manifest + config + layers (for indexes, the manifest only).
    #[serde(default)]
    pub total_size: u64,
    pub pushed: i64,
}

/// A blob linked into a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkRecord {
    pub size: u64,
    pub linked: i64,
}

/// An upload session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    pub repository: String,
    pub started: i64,
    pub updated: i64,
    /// The instance id of the registry whose disk holds the upload file (several servers share
    /// these records); empty in records of older versions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
}

pub fn repo_key(repo: &str) -> String {
    format!("{PREFIX}repositories/{repo}")
}
pub fn repos_prefix() -> String {
    format!("{PREFIX}repositories/")
}
pub fn tag_key(repo: &str, tag: &str) -> String {
    format!("{PREFIX}tags/{repo}@{tag}")
}
pub fn tags_prefix(repo: &str) -> String {
    format!("{PREFIX}tags/{repo}@")
}
pub fn all_tags_prefix() -> String {
    format!("{PREFIX}tags/")
}
pub fn manifest_key(repo: &str, digest: &str) -> String {
    format!("{PREFIX}manifests/{repo}@{digest}")
}
pub fn manifests_prefix(repo: &str) -> String {
    format!("{PREFIX}manifests/{repo}@")
}
pub fn all_manifests_prefix() -> String {
    format!("{PREFIX}manifests/")
}
pub fn link_key(repo: &str, digest: &str) -> String {
    format!("{PREFIX}links/{repo}@{digest}")
}
pub fn links_prefix(repo: &str) -> String {
    format!("{PREFIX}links/{repo}@")
}
pub fn all_links_prefix() -> String {
    format!("{PREFIX}links/")
}
pub fn upload_key(id: &str) -> String {
    format!("{PREFIX}uploads/{id}")
}
pub fn uploads_prefix() -> String {
    format!("{PREFIX}uploads/")
}

/// Splits `<prefix><repo>@<rest>` keys (tags, manifests, links: `@` is in neither names nor tags).
pub fn split_key<'a>(key: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    key.strip_prefix(prefix)?.rsplit_once('@')
}

/// Typed access to the store.
#[derive(Clone)]
pub struct Meta {
    pub store: Arc<dyn Store>,
}

impl Meta {
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RegistryError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => decode(key, &kv.value).map(Some),
        }
    }

    /// Creates or replaces `key`.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RegistryError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        loop {
            match self.store.update(key, bytes.clone(), None).await {
                Ok(_) => return Ok(()),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match self.store.create(key, bytes.clone()).await {
                Ok(_) => return Ok(()),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes `key`; a missing key is fine. Returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, RegistryError> {
        match self.store.delete(key, None).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// All `(key, value)` under `prefix`, in key order, after `start_after`, at most `limit` (0 = all);
    /// the bool says whether more follow.
    pub async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, T)>, bool), RegistryError> {
        let mut out = Vec::new();
        let mut after = start_after.map(str::to_string);
        loop {
            let want = if limit == 0 { 500 } else { limit - out.len() };
            let page = self.store.list(prefix, after.as_deref(), want).await?;
            let n = page.items.len();
            for kv in page.items {
                let v = decode(&kv.key, &kv.value)?;
                after = Some(kv.key.clone());
                out.push((kv.key, v));
            }
            if !page.more || n == 0 {
                return Ok((out, false));
            }
            if limit != 0 && out.len() >= limit {
                return Ok((out, true));
            }
        }
    }

    /// Raw values under `prefix` (API objects for GC roots).
    pub async fn list_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(prefix, after.as_deref(), 500).await?;
            let n = page.items.len();
            for kv in page.items {
                after = Some(kv.key.clone());
                out.push((kv.key, kv.value));
            }
            if !page.more || n == 0 {
                return Ok(out);
            }
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_key_host_with_port_kept_in_repository_name() {
        let k = tag_key("localhost:5000/x", "v1");
        assert_eq!(
            split_key(&k, &all_tags_prefix()),
            Some(("localhost:5000/x", "v1"))
        );
        // A one-component repository's prefix does not cover a mirrored host with a port.
        assert!(!k.starts_with(&tags_prefix("localhost")));
        let d = format!("sha256:{}", "a".repeat(64));
        let k = manifest_key("a/b", &d);
        assert_eq!(
            split_key(&k, &all_manifests_prefix()),
            Some(("a/b", d.as_str()))
        );
    }
}
