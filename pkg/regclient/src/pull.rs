//! Pulling an image (manifest or index with every child) from a registry into an OCI image
//! layout directory or a tarball of one; every blob is verified against its digest while it
//! streams to disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::client::{ManifestInfo, RegistryClient};
use crate::RegClientError;

/// What [`pull`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFormat {
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).
    Layout,
    /// A tar of an OCI image layout, which `mini images push` and `ctr import` read.
    Archive,
}

const MAX_DEPTH: u32 = 4;

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, RegClientError> {
    let (algo, hex) = digest
        .split_once(':')
        .filter(|(a, h)| {
            !a.is_empty()
                && !h.is_empty()
                && a.bytes().all(|b| b.is_ascii_alphanumeric())
                && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| RegClientError::Protocol {
            what: "pull".into(),
            reason: format!("malformed digest {digest:?}"),
        })?;
    Ok(layout.join("blobs").join(algo).join(hex))
}

async fn write_file(path: &Path, data: &[u8]) -> Result<(), RegClientError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| RegClientError::io(parent.display(), e))?;
    }
    tokio::fs::write(path, data)
        .await
        .map_err(|e| RegClientError::io(path.display(), e))
}

/// Fetches the manifest at `reference` and everything it references into `layout`.
fn fetch_tree<'a>(
    client: &'a RegistryClient,
    repo: &'a str,
    reference: &'a str,
    layout: &'a Path,
    depth: u32,
) -> futures::future::BoxFuture<'a, Result<ManifestInfo, RegClientError>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(RegClientError::Protocol {
                what: format!("pull {repo}"),
                reason: "indexes nested too deeply".into(),
            });
        }
        let (info, body) = client.get_manifest(repo, reference).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegClientError::Protocol {
                what: format!("manifest {}", info.digest),
                reason: format!("not JSON: {e}"),
            })?;
        let bad = |e: oci_spec::OciSpecError| RegClientError::Protocol {
            what: format!("manifest {}", info.digest),
            reason: e.to_string(),
        };
        if value.get("manifests").is_some() {
            let index = ImageIndex::from_reader(&body[..]).map_err(bad)?;
            for child in index.manifests() {
                fetch_tree(client, repo, child.digest().as_ref(), layout, depth + 1).await?;
            }
        } else {
            let manifest = ImageManifest::from_reader(&body[..]).map_err(bad)?;
            for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
                let digest = desc.digest().to_string();
                let dest = blob_path(layout, &digest)?;
                if tokio::fs::metadata(&dest).await.is_ok() {
                    continue;
                }
                let parent = dest.parent().unwrap_or(layout).to_path_buf();
                tokio::fs::create_dir_all(&parent)
                    .await
                    .map_err(|e| RegClientError::io(parent.display(), e))?;
                let partial = dest.with_extension("partial");
                client.download_blob(repo, &digest, &partial).await?;
                tokio::fs::rename(&partial, &dest)
                    .await
                    .map_err(|e| RegClientError::io(dest.display(), e))?;
            }
        }
        write_file(&blob_path(layout, &info.digest)?, &body).await?;
        Ok(info)
    })
}

/// Pulls `repo` at `reference` (tag or digest) into `dest`: a layout directory (created, or
/// added to) or a tarball. The image is named `<registry host>/<repo>:<tag>` in `index.json`.
/// Returns the top manifest's digest, media type and size.
pub async fn pull(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    dest: &Path,
    format: PullFormat,
) -> Result<ManifestInfo, RegClientError> {
    let scratch;
    let layout = match format {
        PullFormat::Layout => dest.to_path_buf(),
        PullFormat::Archive => {
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            scratch = tempfile::Builder::new()
                .prefix(".mini-pull-")
                .tempdir_in(parent)
                .map_err(|e| RegClientError::io(parent.display(), e))?;
            scratch.path().to_path_buf()
        }
    };
    let info = fetch_tree(client, repo, reference, &layout, 0).await?;
    let name = if reference.contains(':') {
        format!("{}/{repo}@{reference}", client.host())
    } else {
        format!("{}/{repo}:{reference}", client.host())
    };
    write_index(&layout, &info, &name, reference).await?;
    if format == PullFormat::Archive {
        let layout = layout.clone();
        let out = dest.to_path_buf();
        tokio::task::spawn_blocking(move || tar_dir(&layout, &out))
            .await
            .map_err(|e| RegClientError::io(dest.display(), std::io::Error::other(e)))??;
    }
    Ok(info)
}

/// Writes `oci-layout` and adds (or replaces) the image's entry in `index.json`.
async fn write_index(
    layout: &Path,
    info: &ManifestInfo,
    name: &str,
    reference: &str,
) -> Result<(), RegClientError> {
    write_file(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .await?;
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = match tokio::fs::read(&index_path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegClientError::Protocol {
            what: index_path.display().to_string(),
            reason: format!("existing index.json is not JSON: {e}"),
        })?,
        Err(_) => serde_json::json!({"schemaVersion": 2, "manifests": []}),
    };
    let mut annotations = BTreeMap::new();
    annotations.insert("io.containerd.image.name", name.to_string());
    if !reference.contains(':') {
        annotations.insert("org.opencontainers.image.ref.name", reference.to_string());
    }
    let entry = serde_json::json!({
        "mediaType": info.media_type,
        "digest": info.digest,
        "size": info.size,
        "annotations": annotations,
    });
    let manifests = index
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| RegClientError::Protocol {
            what: index_path.display().to_string(),
            reason: "existing index.json has no manifests list".into(),
        })?;
    manifests.retain(|m| {
        m.pointer("/annotations/io.containerd.image.name")
            .and_then(|v| v.as_str())
            != Some(name)
    });
    manifests.push(entry);
    let text = serde_json::to_vec_pretty(&index).map_err(|e| RegClientError::Protocol {
        what: index_path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_file(&index_path, &text).await
}

fn tar_dir(dir: &Path, out: &Path) -> Result<(), RegClientError> {
    let io_err = |e| RegClientError::io(out.display(), e);
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io_err)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir_all(".", dir).map_err(io_err)?;
    let writer = builder.into_inner().map_err(io_err)?;
    writer
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    std::fs::rename(&partial, out).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_path_sha256_digest_is_under_blobs() {
        assert_eq!(
            blob_path(Path::new("/l"), "sha256:abcd").unwrap(),
            PathBuf::from("/l/blobs/sha256/abcd")
        );
    }

    #[test]
    fn blob_path_traversal_digest_is_rejected() {
        assert!(blob_path(Path::new("/l"), "sha256:../../etc").is_err());
    }

    #[tokio::test]
    async fn write_index_same_name_twice_keeps_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let info = ManifestInfo {
            digest: "sha256:aa".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 3,
        };
        write_index(dir.path(), &info, "h/r:v1", "v1")
            .await
            .unwrap();
        write_index(dir.path(), &info, "h/r:v1", "v1")
            .await
            .unwrap();
        write_index(dir.path(), &info, "h/r:v2", "v2")
            .await
            .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
    }
}
