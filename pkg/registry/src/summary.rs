//! Summaries of repositories and tags for the API server's `registry.mini.dev` group, and tag deletion.

use crate::meta::{self, ManifestRecord, RepoRecord, TagRecord};
use crate::names;
use crate::{Registry, RegistryError};

/// One repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: String,
    /// None for mirrored (cluster-scoped) repositories.
    pub namespace: Option<String>,
    pub tag_count: usize,
    /// Bytes of the repository's distinct manifests and blobs.
    pub total_size: u64,
    /// Seconds since the epoch.
    pub last_push: i64,
}

/// One tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Manifest + config + layers (for an index: the manifest plus its children's totals).
    pub size: u64,
    /// Seconds since the epoch.
    pub pushed: i64,
}

impl Registry {
    /// Repositories, all or those of one namespace (`Some(ns)`).
    pub async fn repositories(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<RepositorySummary>, RegistryError> {
        let (repos, _) = self
            .meta
            .list::<RepoRecord>(&meta::repos_prefix(), None, 0)
            .await?;
        let mut out = Vec::new();
        for (key, r) in repos {
            let name = key.trim_start_matches(&meta::repos_prefix()).to_string();
            let ns = names::namespace_of(&name).map(str::to_string);
            if namespace.is_some() && namespace != ns.as_deref() {
                continue;
            }
            let (tags, _) = self
                .meta
                .list::<TagRecord>(&meta::tags_prefix(&name), None, 0)
                .await?;
            let (links, _) = self
                .meta
                .list::<meta::LinkRecord>(&meta::links_prefix(&name), None, 0)
                .await?;
            let (manifests, _) = self
                .meta
                .list::<ManifestRecord>(&meta::manifests_prefix(&name), None, 0)
                .await?;
            let total_size = links.iter().map(|(_, l)| l.size).sum::<u64>()
                + manifests.iter().map(|(_, m)| m.size).sum::<u64>();
            out.push(RepositorySummary {
                name,
                namespace: ns,
                tag_count: tags.len(),
                total_size,
                last_push: r.last_push,
            });
        }
        Ok(out)
    }

    /// Tags of one repository, or of all repositories (of `namespace` when given).
    pub async fn tags(
        &self,
        repository: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<TagSummary>, RegistryError> {
        let prefix = match repository {
            Some(r) => meta::tags_prefix(r),
            None => meta::all_tags_prefix(),
        };
        let (tags, _) = self.meta.list::<TagRecord>(&prefix, None, 0).await?;
        let mut out = Vec::new();
        for (key, t) in tags {
            let Some((repo, tag)) = meta::split_key(&key, &meta::all_tags_prefix()) else {
                continue;
            };
            if namespace.is_some() && names::namespace_of(repo) != namespace {
                continue;
            }
            let size = self.manifest_total(repo, &t.digest).await?;
            out.push(TagSummary {
                repository: repo.to_string(),
                tag: tag.to_string(),
                digest: t.digest,
                media_type: t.media_type,
                size,
                pushed: t.pushed,
            });
        }
        Ok(out)
    }

    async fn manifest_total(&self, repo: &str, digest: &str) -> Result<u64, RegistryError> {
        let Some(m) = self
            .meta
            .get::<ManifestRecord>(&meta::manifest_key(repo, digest))
            .await?
        else {
            return Ok(0);
        };
        let mut total = m.total_size;
        for child in &m.manifests {
            if let Some(c) = self
                .meta
                .get::<ManifestRecord>(&meta::manifest_key(repo, child))
                .await?
            {
                total += c.total_size;
            }
        }
        Ok(total)
    }

    /// Deletes a tag (the manifest stays until GC finds it unreferenced).
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<(), RegistryError> {
        if !self.meta.delete(&meta::tag_key(repository, tag)).await? {
            return Err(RegistryError::NotFound(format!("tag {repository}:{tag}")));
        }
        Ok(())
    }
}
