//! Pushing an image tarball (OCI layout or docker-archive, plain, gzip or zstd) to a registry:
//! every image in it under the repository [`crate::repository_for`] gives its names — blobs first
//! (mounted across repositories when another name of the same image already has them), then the
//! manifest by digest, then its tags.

use std::path::Path;

use bytes::Bytes;
use mini_images::archive::{Backing, TarIndex};
use mini_images::layout::{BlobData, ImagePlan, PlannedBlob};

use crate::client::{BlobSource, RegistryClient};
use crate::reference::ImageReference;
use crate::RegClientError;

/// One image stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    pub repository: String,
    /// The tag, or the manifest digest when the name had no tag.
    pub tag: String,
    pub digest: String,
    /// Manifest + config + layer bytes.
    pub size: u64,
}

impl PushedImage {
    /// `host/repository:tag` as pods reference it.
    pub fn reference(&self, registry_host: &str) -> String {
        if self.tag.contains(':') {
            format!("{registry_host}/{}@{}", self.repository, self.tag)
        } else {
            format!("{registry_host}/{}:{}", self.repository, self.tag)
        }
    }
}

fn blob_source(tar: &TarIndex, blob: &PlannedBlob) -> BlobSource {
    match &blob.data {
        BlobData::Inline(bytes) => BlobSource::Bytes(Bytes::from(bytes.as_ref().clone())),
        BlobData::Member(member) => match &tar.backing {
            Backing::File(file) => BlobSource::File {
                file: file.clone(),
                offset: member.offset,
                len: member.size,
            },
            Backing::Memory(bytes) => {
                let start = member.offset as usize;
                let end = (start + member.size as usize).min(bytes.len());
                BlobSource::Bytes(Bytes::copy_from_slice(&bytes[start.min(end)..end]))
            }
        },
    }
}

/// Reads the tarball at `tarball` and pushes every image in it. Names map to repositories with
/// [`crate::repository_for`] against `registry_host` (the registry's own host: names under it
/// keep their path, other hosts become mirror repositories). Compressed tarballs are
/// decompressed into a temp file under the system temp dir. Returns what was pushed.
pub async fn push_archive(
    client: &RegistryClient,
    tarball: &Path,
    registry_host: &str,
) -> Result<Vec<PushedImage>, RegClientError> {
    let path = tarball.to_path_buf();
    let plan = tokio::task::spawn_blocking(move || {
        let backing = mini_images::archive::open_file(&path, &std::env::temp_dir())?;
        let index = TarIndex::build(backing, &path.display().to_string())?;
        mini_images::layout::plan(index)
    })
    .await
    .map_err(|e| RegClientError::io(tarball.display(), std::io::Error::other(e)))??;
    if plan.images.is_empty() {
        return Err(RegClientError::Protocol {
            what: tarball.display().to_string(),
            reason: "the tarball names no image (no RepoTags / ref.name annotations); tag it before saving".into(),
        });
    }
    let mut pushed = Vec::new();
    for image in &plan.images {
        pushed.extend(push_image(client, &plan.tar, image, registry_host).await?);
    }
    Ok(pushed)
}

/// Pushes one planned image under each of its names.
pub async fn push_image(
    client: &RegistryClient,
    tar: &TarIndex,
    image: &ImagePlan,
    registry_host: &str,
) -> Result<Vec<PushedImage>, RegClientError> {
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    for name in &image.names {
        let parsed = ImageReference::parse(name)?;
        let repo = parsed.repository(registry_host);
        let target = (repo, parsed.tag.clone());
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let manifest_digest = image.manifest.desc.digest.clone();
    let manifest_bytes = match &image.manifest.data {
        BlobData::Inline(b) => Bytes::from(b.as_ref().clone()),
        BlobData::Member(m) => Bytes::from(tar.read_member(*m)?),
    };
    let size = manifest_bytes.len() as u64
        + image.config.desc.size.max(0) as u64
        + image
            .layers
            .iter()
            .map(|l| l.desc.size.max(0) as u64)
            .sum::<u64>();
    let mut done_repos: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (repo, tag) in &targets {
        if !done_repos.contains(repo) {
            for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
                let digest = &blob.desc.digest;
                if client.blob_exists(repo, digest).await?.is_some() {
                    continue;
                }
                let mut mounted = false;
                if let Some(from) = done_repos.first() {
                    mounted = client.mount_blob(repo, digest, from).await?;
                }
                if !mounted {
                    client
                        .upload_blob(repo, digest, blob_source(tar, blob))
                        .await?;
                }
            }
            client
                .put_manifest(
                    repo,
                    &manifest_digest,
                    &image.manifest.desc.media_type,
                    manifest_bytes.clone(),
                )
                .await?;
            done_repos.push(repo.clone());
        }
        let tag_or_digest = match tag {
            Some(tag) => {
                client
                    .put_manifest(
                        repo,
                        tag,
                        &image.manifest.desc.media_type,
                        manifest_bytes.clone(),
                    )
                    .await?;
                tag.clone()
            }
            None => manifest_digest.clone(),
        };
        tracing::debug!(repository = %repo, tag = %tag_or_digest, digest = %manifest_digest, "pushed image");
        out.push(PushedImage {
            repository: repo.clone(),
            tag: tag_or_digest,
            digest: manifest_digest.clone(),
            size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_image_reference_with_tag_uses_colon() {
        let p = PushedImage {
            repository: "default/app".into(),
            tag: "v1".into(),
            digest: "sha256:aa".into(),
            size: 1,
        };
        assert_eq!(p.reference("10.0.0.1:6443"), "10.0.0.1:6443/default/app:v1");
    }

    #[test]
    fn pushed_image_reference_with_digest_uses_at() {
        let p = PushedImage {
            repository: "docker.io/library/x".into(),
            tag: "sha256:bb".into(),
            digest: "sha256:bb".into(),
            size: 1,
        };
        assert_eq!(p.reference("h:1"), "h:1/docker.io/library/x@sha256:bb");
    }
}
