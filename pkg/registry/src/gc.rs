//! Garbage collection and retention: roots from the cluster's objects, tag retention, unreferenced
//! manifests, then unreferenced blobs, online (pushes wait on the GC lock only while it sweeps).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use crate::meta::{self, LinkRecord, ManifestRecord, TagRecord};
use crate::names::{self, Digest, Target};
use crate::{Registry, RegistryError};

/// Where the API objects holding image references live.
const ROOT_PREFIXES: &[&str] = &[
    "/registry/core/pods/",
    "/registry/apps/",
    "/registry/batch/",
];

/// What a GC run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub tags_deleted: usize,
    pub manifests_deleted: usize,
    pub links_deleted: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
}

/// Every string under an `image` key of a JSON document (containers, init and ephemeral containers,
/// pod templates, ControllerRevision `data`).
pub(crate) fn images_in(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "image" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                        continue;
                    }
                }
                images_in(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| images_in(v, out)),
        _ => {}
    }
}

impl Registry {
    /// The (repository, tag or digest) pairs the cluster's objects use.
    pub(crate) async fn gc_roots(&self) -> Result<HashSet<(String, Target)>, RegistryError> {
        let mut roots = HashSet::new();
        for prefix in ROOT_PREFIXES {
            for (_, bytes) in self.meta.list_raw(prefix).await? {
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                    continue;
                };
                let mut images = Vec::new();
                images_in(&value, &mut images);
                for image in images {
                    if let Some(root) = names::repository_for(&image, &self.config.hosts) {
                        roots.insert(root);
                    }
                }
            }
        }
        Ok(roots)
    }

    /// Runs retention and garbage collection once, online.
    pub async fn gc(&self) -> Result<GcReport, RegistryError> {
        let roots = self.gc_roots().await?;
        let _sweep = self.gc_lock.write().await;
        let mut report = GcReport::default();
        let now = meta::now();
        let grace = self.config.gc_grace.as_secs() as i64;
        let young = |t: i64| now - t < grace;

        // Tags, with retention.
        let (tags, _) = self
            .meta
            .list::<TagRecord>(&meta::all_tags_prefix(), None, 0)
            .await?;
        let mut by_repo: BTreeMap<String, Vec<(String, String, TagRecord)>> = BTreeMap::new();
        for (key, t) in tags {
            if let Some((repo, tag)) = meta::split_key(&key, &meta::all_tags_prefix()) {
                by_repo.entry(repo.to_string()).or_default().push((
                    key.clone(),
                    tag.to_string(),
                    t,
                ));
            }
        }
        let retention = &self.config.retention;
        let mut kept: HashSet<(String, String)> = HashSet::new();
        for (repo, mut tags) in by_repo {
            tags.sort_by(|a, b| b.2.pushed.cmp(&a.2.pushed).then(a.1.cmp(&b.1)));
            for (i, (key, tag, t)) in tags.into_iter().enumerate() {
                let is_root = roots.contains(&(repo.clone(), Target::Tag(tag.clone())))
                    || roots.contains(&(repo.clone(), Target::Digest(t.digest.clone())));
                let too_many = retention.keep_last_tags.is_some_and(|n| i >= n);
                let too_old = retention
                    .keep_newer_than
                    .is_some_and(|d| now - t.pushed > d.as_secs() as i64);
                if !is_root && (too_many || too_old) {
                    self.meta.delete(&key).await?;
                    report.tags_deleted += 1;
                } else {
                    kept.insert((repo.clone(), t.digest));
                }
            }
        }

        // Manifests: kept from tags, roots, young ones; then children and referrers.
        let (manifests, _) = self
            .meta
            .list::<ManifestRecord>(&meta::all_manifests_prefix(), None, 0)
            .await?;
        let mut all: HashMap<(String, String), ManifestRecord> = HashMap::new();
        for (key, m) in manifests {
            if let Some((repo, digest)) = meta::split_key(&key, &meta::all_manifests_prefix()) {
                all.insert((repo.to_string(), digest.to_string()), m);
            }
        }
        for (repo, target) in &roots {
            if let Target::Digest(d) = target {
                kept.insert((repo.clone(), d.clone()));
            }
        }
        for ((repo, digest), m) in &all {
            if young(m.pushed) {
                kept.insert((repo.clone(), digest.clone()));
            }
        }
        kept.retain(|k| all.contains_key(k));
        loop {
            let mut added = Vec::new();
            for (repo, digest) in &kept {
                if let Some(m) = all.get(&(repo.clone(), digest.clone())) {
                    for child in &m.manifests {
                        let k = (repo.clone(), child.clone());
                        if all.contains_key(&k) && !kept.contains(&k) {
                            added.push(k);
                        }
                    }
                }
            }
            for ((repo, digest), m) in &all {
                if let Some(subject) = &m.subject {
                    let k = (repo.clone(), digest.clone());
                    if kept.contains(&(repo.clone(), subject.clone())) && !kept.contains(&k) {
                        added.push(k);
                    }
                }
            }
            if added.is_empty() {
                break;
            }
            kept.extend(added);
        }
        let mut needed_links: HashSet<(String, String)> = HashSet::new();
        let mut needed_blobs: HashSet<String> = HashSet::new();
        for ((repo, digest), m) in &all {
            if kept.contains(&(repo.clone(), digest.clone())) {
                needed_blobs.insert(digest.clone());
                for b in &m.blobs {
                    needed_links.insert((repo.clone(), b.clone()));
                }
            } else {
                self.meta.delete(&meta::manifest_key(repo, digest)).await?;
                report.manifests_deleted += 1;
            }
        }

        // Repositories with an upload in progress: a push is under way, its blobs stay.
        let (uploads, _) = self
            .meta
            .list::<meta::UploadRecord>(&meta::uploads_prefix(), None, 0)
            .await?;
        let pushing: HashSet<String> = uploads.into_iter().map(|(_, u)| u.repository).collect();

        // Blob links no kept manifest needs (young links stay: a push in progress).
        let (links, _) = self
            .meta
            .list::<LinkRecord>(&meta::all_links_prefix(), None, 0)
            .await?;
        for (key, l) in links {
            let Some((repo, digest)) = meta::split_key(&key, &meta::all_links_prefix()) else {
                continue;
            };
            if needed_links.contains(&(repo.to_string(), digest.to_string()))
                || young(l.linked)
                || pushing.contains(repo)
            {
                needed_blobs.insert(digest.to_string());
            } else {
                self.meta.delete(&key).await?;
                report.links_deleted += 1;
            }
        }

        // Blob files nothing needs, older than the grace period.
        let grace_cutoff = SystemTime::now()
            .checked_sub(self.config.gc_grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (digest, path) in self.disk.list_blobs().await? {
            if needed_blobs.contains(&digest.to_string()) {
                continue;
            }
            let Ok(md) = tokio::fs::metadata(&path).await else {
                continue;
            };
            if md.modified().is_ok_and(|m| m > grace_cutoff) {
                continue;
            }
            if tokio::fs::remove_file(&path).await.is_ok() {
                report.blobs_deleted += 1;
                report.bytes_freed += md.len();
            }
        }

        // Repositories left empty.
        let (repos, _) = self
            .meta
            .list::<meta::RepoRecord>(&meta::repos_prefix(), None, 0)
            .await?;
        for (key, r) in repos {
            let repo = key.trim_start_matches(&meta::repos_prefix());
            if young(r.last_push) {
                continue;
            }
            let empty = self
                .meta
                .store
                .list(&meta::tags_prefix(repo), None, 1)
                .await?
                .items
                .is_empty()
                && self
                    .meta
                    .store
                    .list(&meta::manifests_prefix(repo), None, 1)
                    .await?
                    .items
                    .is_empty()
                && self
                    .meta
                    .store
                    .list(&meta::links_prefix(repo), None, 1)
                    .await?
                    .items
                    .is_empty();
            if empty {
                self.meta.delete(&key).await?;
            }
        }
        Ok(report)
    }
}

impl crate::storage::Disk {
    /// Every stored blob with its path.
    pub async fn list_blobs(&self) -> Result<Vec<(Digest, std::path::PathBuf)>, RegistryError> {
        let root = self.root.join("blobs");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for algo in ["sha256", "sha512"] {
                let Ok(prefixes) = std::fs::read_dir(root.join(algo)) else {
                    continue;
                };
                for p in prefixes.flatten() {
                    let Ok(files) = std::fs::read_dir(p.path()) else {
                        continue;
                    };
                    for f in files.flatten() {
                        let name = f.file_name().to_string_lossy().to_string();
                        if let Some(d) = Digest::parse(&format!("{algo}:{name}")) {
                            out.push((d, f.path()));
                        }
                    }
                }
            }
            out
        })
        .await
        .map_err(|e| RegistryError::io("listing blobs", std::io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_in_finds_template_and_init_containers() {
        let rs = serde_json::json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "i", "image": "busybox:1"}],
            "containers": [{"name": "c", "image": "10.0.0.1:6443/default/app:v1"}]}}}});
        let mut out = Vec::new();
        images_in(&rs, &mut out);
        out.sort();
        assert_eq!(out, vec!["10.0.0.1:6443/default/app:v1", "busybox:1"]);
    }
}
