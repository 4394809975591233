//! `mini commit`: a new image from a base image in the registry plus one gzip layer (a container's
//! filesystem diff), stored and tagged.

use std::io;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::StreamBody;

use crate::manifest::{self, DOCKER_MANIFEST, OCI_MANIFEST};
use crate::names::{self, Digest};
use crate::storage::{self, AppendError, RunningHash};
use crate::{Registry, RegistryError};

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What `Registry::commit` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRequest {
    /// The base image inside this registry: `repository:tag` or `repository@sha256:...`
    /// (an index is resolved to its linux manifest for the host's architecture).
    pub base_reference: String,
    /// Where the new image goes (`default/app`).
    pub target_repository: String,
    pub target_tag: String,
    /// sha256 of the uncompressed layer tar (appended to config.rootfs.diff_ids).
    pub diff_id: String,
    /// The gzip layer's digest when the sender knows it; verified against the streamed bytes.
    pub layer_digest: Option<String>,
}

/// Splits `repo:tag` / `repo@digest`.
fn split_reference(r: &str) -> Option<(&str, &str)> {
    if let Some((repo, d)) = r.split_once('@') {
        return Some((repo, d));
    }
    let slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = r[slash..].rfind(':')? + slash;
    Some((&r[..colon], &r[colon + 1..]))
}

impl Registry {
    /// Stores `layer` (gzip tar bytes, streamed) as a new layer on top of the base image and tags
    /// the result `target_repository:target_tag`; returns the new manifest digest.
    pub async fn commit(
        &self,
        req: CommitRequest,
        layer: impl Stream<Item = io::Result<Bytes>> + Send,
    ) -> Result<String, RegistryError> {
        let invalid = |m: String| RegistryError::Invalid(m);
        if !names::valid_repository(&req.target_repository) || !names::valid_tag(&req.target_tag) {
            return Err(invalid(format!(
                "invalid target {}:{}: use a repository like default/app and a tag like v1",
                req.target_repository, req.target_tag
            )));
        }
        if Digest::parse(&req.diff_id).is_none() {
            return Err(invalid(format!(
                "invalid diff id {:?}: want sha256:<64 hex>",
                req.diff_id
            )));
        }
        let (base_repo, base_ref) = split_reference(&req.base_reference).ok_or_else(|| {
            invalid(format!(
                "invalid base image {:?}: want repository:tag or repository@digest",
                req.base_reference
            ))
        })?;
        let not_found = || RegistryError::NotFound(format!("base image {}", req.base_reference));
        let (mut digest, mut record) = self
            .resolve(base_repo, base_ref)
            .await?
            .ok_or_else(not_found)?;
        if manifest::is_index(&record.media_type) {
            let index: serde_json::Value =
                serde_json::from_slice(&self.disk.read_blob(&digest).await?)
                    .map_err(|e| invalid(format!("base index is not JSON: {e}")))?;
            let arch = mini_images::layout::host_architecture();
            let child = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| {
                    invalid(format!(
                        "base image {} has no linux/{arch} manifest",
                        req.base_reference
                    ))
                })?
                .to_string();
            (digest, record) = self
                .resolve(base_repo, &child)
                .await?
                .ok_or_else(not_found)?;
        }
        if record.media_type != OCI_MANIFEST && record.media_type != DOCKER_MANIFEST {
            return Err(invalid(format!(
                "base image has media type {}, not an image manifest",
                record.media_type
            )));
        }
        let mut base: serde_json::Value =
            serde_json::from_slice(&self.disk.read_blob(&digest).await?)
                .map_err(|e| invalid(format!("base manifest is not JSON: {e}")))?;
        let config_digest = base["config"]["digest"]
            .as_str()
            .and_then(Digest::parse)
            .ok_or_else(|| invalid("base manifest has no config digest".into()))?;
        let mut config: serde_json::Value =
            serde_json::from_slice(&self.disk.read_blob(&config_digest).await?)
                .map_err(|e| invalid(format!("base config is not JSON: {e}")))?;

        // The layer, streamed to an upload file and verified.
        let id = format!("tmp-{}", uuid::Uuid::new_v4());
        let path = self.disk.upload_path(&id);
        let mut hash = RunningHash::new();
        let body = StreamBody::new(Box::pin(layer.map(|r| r.map(http_body::Frame::data))));
        if let Err(e) = storage::append_body(&path, &mut hash, body).await {
            let _ = tokio::fs::remove_file(&path).await;
            let e = match e {
                AppendError::Disk(e) => e,
                AppendError::Body(e) => e,
            };
            return Err(RegistryError::io("writing the committed layer", e));
        }
        let layer_digest = hash.digest();
        if let Some(want) = &req.layer_digest {
            if *want != layer_digest.to_string() {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(invalid(format!(
                    "committed layer has digest {layer_digest}, the sender said {want}: nothing was stored"
                )));
            }
        }
        let layer_size = hash.offset;
        let target = req.target_repository.as_str();
        {
            let _guard = self.gc_lock.read().await;
            self.disk.commit_file(&path, &layer_digest).await?;
            self.link_blob(target, &layer_digest, layer_size).await?;
            // The base's blobs, linked into the target repository.
            for b in &record.blobs {
                let d = Digest::parse(b).ok_or_else(|| invalid(format!("bad digest {b}")))?;
                let size = self.disk.blob_size(&d).await.ok_or_else(not_found)?;
                self.link_blob(target, &d, size).await?;
            }
        }

        // Config: one more diff id and a history entry.
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rootfs = config
            .as_object_mut()
            .ok_or_else(|| invalid("base config is not a JSON object".into()))?
            .entry("rootfs")
            .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
        match rootfs["diff_ids"].as_array_mut() {
            Some(ids) => ids.push(req.diff_id.clone().into()),
            None => rootfs["diff_ids"] = serde_json::json!([req.diff_id]),
        }
        let entry = serde_json::json!({"created": now, "created_by": "mini commit"});
        match config["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => config["history"] = serde_json::json!([entry]),
        }
        config["created"] = now.into();
        let config_bytes = serde_json::to_vec(&config)
            .map_err(|e| invalid(format!("serializing the config: {e}")))?;
        let new_config = Digest::sha256_of(&config_bytes);
        {
            let _guard = self.gc_lock.read().await;
            self.disk.write_blob(&new_config, &config_bytes).await?;
            self.link_blob(target, &new_config, config_bytes.len() as u64)
                .await?;
        }

        // Manifest: same kind as the base, new config, one more layer.
        let layer_type = if record.media_type == DOCKER_MANIFEST {
            DOCKER_LAYER_GZIP
        } else {
            OCI_LAYER_GZIP
        };
        base["config"]["digest"] = new_config.to_string().into();
        base["config"]["size"] = config_bytes.len().into();
        let layer_desc = serde_json::json!({
            "mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer_size,
        });
        match base["layers"].as_array_mut() {
            Some(l) => l.push(layer_desc),
            None => base["layers"] = serde_json::json!([layer_desc]),
        }
        if let Some(obj) = base.as_object_mut() {
            obj.remove("subject");
        }
        let manifest_bytes = serde_json::to_vec(&base)
            .map_err(|e| invalid(format!("serializing the manifest: {e}")))?;
        let (digest, _) = self
            .store_manifest(target, &req.target_tag, &record.media_type, &manifest_bytes)
            .await
            .map_err(|e| invalid(format!("storing the committed manifest: {}", e.message)))?;
        Ok(digest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reference_tag_digest_and_port() {
        assert_eq!(
            split_reference("default/app:v1"),
            Some(("default/app", "v1"))
        );
        assert_eq!(split_reference("a/b@sha256:00"), Some(("a/b", "sha256:00")));
        assert_eq!(
            split_reference("localhost:5000/x:1"),
            Some(("localhost:5000/x", "1"))
        );
        assert_eq!(split_reference("default/app"), None);
    }
}
