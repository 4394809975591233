//! Import of OCI-layout and docker-archive tarballs into the registry (`mini images import`): every
//! named image goes to the repository its name maps to (mirror rule for other hosts).

use std::io::{Read as _, Write as _};
use std::path::Path;

use sha2::Digest as _;

use mini_images::archive::{Backing, Member, TarIndex};
use mini_images::layout::{BlobData, PlannedBlob};

use crate::names::{self, Digest, Target};
use crate::{Registry, RegistryError};

const COPY_CHUNK: u64 = 1 << 20;

impl Registry {
    /// Puts the images of an OCI-layout or docker-archive tarball (optionally gzip/zstd compressed)
    /// into the registry; returns the references stored (`repository:tag` or `repository@digest`).
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<String>, RegistryError> {
        let path = path.to_path_buf();
        let scratch = self.config.root.join("uploads");
        let plan = tokio::task::spawn_blocking(move || {
            let backing = mini_images::archive::open_file(&path, &scratch)?;
            let tar = TarIndex::build(backing, &path.display().to_string())?;
            mini_images::layout::plan(tar)
        })
        .await
        .map_err(|e| RegistryError::io("import task", std::io::Error::other(e)))??;
        let mut refs = Vec::new();
        for image in &plan.images {
            let mut targets = Vec::new();
            for name in &image.names {
                let (repo, target) =
                    names::repository_for(name, &self.config.hosts).ok_or_else(|| {
                        RegistryError::Invalid(format!(
                        "image name {name:?} in the archive does not map to a valid repository name"
                    ))
                    })?;
                targets.push((repo, target));
            }
            if targets.is_empty() {
                return Err(RegistryError::Invalid(format!(
                    "image {} in the archive has no name: tag it (org.opencontainers.image.ref.name / RepoTags) before importing",
                    image.manifest.desc.digest
                )));
            }
            for (repo, target) in targets {
                for blob in std::iter::once(&image.config).chain(image.layers.iter()) {
                    self.import_blob(&plan.tar.backing, &repo, blob).await?;
                }
                let manifest = self
                    .planned_bytes(&plan.tar.backing, &image.manifest)
                    .await?;
                let reference = match &target {
                    Target::Tag(t) => t.clone(),
                    Target::Digest(d) => d.clone(),
                };
                self.store_manifest(
                    &repo,
                    &reference,
                    &image.manifest.desc.media_type,
                    &manifest,
                )
                .await
                .map_err(|e| {
                    RegistryError::Invalid(format!(
                        "storing the manifest of {repo}:{reference}: {}",
                        e.message
                    ))
                })?;
                refs.push(match target {
                    Target::Tag(t) => format!("{repo}:{t}"),
                    Target::Digest(d) => format!("{repo}@{d}"),
                });
            }
        }
        Ok(refs)
    }

    async fn planned_bytes(
        &self,
        backing: &Backing,
        blob: &PlannedBlob,
    ) -> Result<Vec<u8>, RegistryError> {
        match &blob.data {
            BlobData::Inline(bytes) => Ok(bytes.as_ref().clone()),
            BlobData::Member(m) => {
                let backing = backing.clone();
                let m: Member = *m;
                tokio::task::spawn_blocking(move || backing.read_range(m.offset, m.size))
                    .await
                    .map_err(|e| RegistryError::io("import task", std::io::Error::other(e)))?
                    .map_err(|e| RegistryError::io("reading the archive", e))
            }
        }
    }

    /// Copies one blob out of the archive (streamed, verified) and links it into `repo`.
    async fn import_blob(
        &self,
        backing: &Backing,
        repo: &str,
        blob: &PlannedBlob,
    ) -> Result<(), RegistryError> {
        let d = Digest::parse(&blob.desc.digest).ok_or_else(|| {
            RegistryError::Invalid(format!(
                "unsupported digest {} in the archive",
                blob.desc.digest
            ))
        })?;
        {
            let _guard = self.gc_lock.read().await;
            if let Some(size) = self.disk.blob_size(&d).await {
                return self.link_blob(repo, &d, size).await;
            }
        }
        {
            let tmp = self
                .disk
                .upload_path(&format!("tmp-{}", uuid::Uuid::new_v4()));
            let backing = backing.clone();
            let data = blob.data.clone();
            let tmp2 = tmp.clone();
            let hex = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                let mut out = std::fs::File::create(&tmp2)?;
                let mut hasher = sha2::Sha256::new();
                match data {
                    BlobData::Inline(bytes) => {
                        hasher.update(bytes.as_slice());
                        out.write_all(&bytes)?;
                    }
                    BlobData::Member(m) => {
                        let mut pos = 0;
                        while pos < m.size {
                            let n = COPY_CHUNK.min(m.size - pos);
                            let chunk = backing.read_range(m.offset + pos, n)?;
                            hasher.update(&chunk);
                            out.write_all(&chunk)?;
                            pos += n;
                        }
                    }
                }
                out.flush()?;
                Ok(hex::encode(hasher.finalize()))
            })
            .await
            .map_err(|e| RegistryError::io("import task", std::io::Error::other(e)))?;
            let hex = match hex {
                Ok(h) => h,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(RegistryError::io(
                        format!("copying blob {d} out of the archive"),
                        e,
                    ));
                }
            };
            let verified = match d.algorithm {
                names::Algorithm::Sha256 => hex == d.hex,
                names::Algorithm::Sha512 => {
                    let mut f =
                        std::fs::File::open(&tmp).map_err(|e| RegistryError::io("reopening", e))?;
                    let mut all = Vec::new();
                    f.read_to_end(&mut all)
                        .map_err(|e| RegistryError::io("reading", e))?;
                    d.matches(&all)
                }
            };
            if !verified {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(RegistryError::Invalid(format!(
                    "blob {d} in the archive does not match its digest: the archive is corrupt"
                )));
            }
            let _guard = self.gc_lock.read().await;
            self.disk.commit_file(&tmp, &d).await?;
            self.link_blob(repo, &d, blob.desc.size.max(0) as u64).await
        }
    }
}
